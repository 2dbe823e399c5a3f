//! The server under attack: the real binary, its `/proc` figures, its metrics.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use test_support::ServerProcess;

/// The `channels-server` binary: `$CHANNELS_SERVER_BIN`, else
/// `target/debug/channels-server` of this workspace (or of `$CARGO_TARGET_DIR`).
///
/// # Panics
/// When neither exists (build it with `cargo build -p channels-server --bins`).
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("CHANNELS_SERVER_BIN") {
        return PathBuf::from(path);
    }
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace.join("target"), PathBuf::from);
    let path = target.join("debug").join("channels-server");
    assert!(
        path.exists(),
        "no server binary at {}: run `cargo build -p channels-server --bins` \
         or set CHANNELS_SERVER_BIN",
        path.display()
    );
    path
}

/// Starts the server on a free loopback port with `args` (after `--bind`).
///
/// # Panics
/// When it does not print its `listening on` line in time.
pub fn start(args: &[&str]) -> ServerProcess {
    start_with_env(args, &[])
}

/// Like [`start`], with environment variables.
///
/// # Panics
/// As [`start`].
pub fn start_with_env(args: &[&str], envs: &[(&str, &str)]) -> ServerProcess {
    let mut all = vec!["--bind", "127.0.0.1:0"];
    all.extend_from_slice(args);
    ServerProcess::start(binary(), &all, envs)
}

/// Starts the server under `prlimit --nofile=LIMIT` (same pid: prlimit
/// execs it), so a test can drive it to its file descriptor limit.
///
/// # Panics
/// As [`start`].
pub fn start_with_fd_limit(limit: u32, args: &[&str]) -> ServerProcess {
    let nofile = format!("--nofile={limit}:{limit}");
    let bin = binary();
    let bin = bin.to_string_lossy();
    let mut all = vec![nofile.as_str(), "--", &bin, "--bind", "127.0.0.1:0"];
    all.extend_from_slice(args);
    ServerProcess::start("prlimit", &all, &[])
}

/// The resident set size of process `pid`, in bytes (`VmRSS` of
/// `/proc/PID/status`); `None` once it is gone.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// How many file descriptors process `pid` has open (`/proc/PID/fd`).
///
/// # Panics
/// When the directory cannot be read (the process is gone).
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("cannot read /proc/{pid}/fd: {e}"))
        .count()
}

/// Samples the RSS of `pid` every 50 ms on a thread until the returned
/// guard is stopped; [`RssPeak::stop`] gives the highest sample.
#[derive(Debug)]
pub struct RssPeak {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl RssPeak {
    /// Starts sampling.
    pub fn start(pid: u32) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = 0;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(rss_bytes(pid).unwrap_or(0));
                std::thread::sleep(Duration::from_millis(50));
            }
            peak.max(rss_bytes(pid).unwrap_or(0))
        });
        Self { stop, thread }
    }

    /// Stops sampling and returns the peak, in bytes.
    pub fn stop(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap_or(0)
    }
}

/// The `/metrics` page of the server at `addr`.
///
/// # Panics
/// When it cannot be fetched.
pub async fn metrics(addr: SocketAddr) -> String {
    let page = test_support::http::get(addr, "/metrics").await;
    assert_eq!(page.status, 200, "{page:?}");
    page.body
}

/// The value of one series on `/metrics` (0 when it is absent).
///
/// # Panics
/// As [`metrics`].
pub async fn metric(addr: SocketAddr, series: &str) -> f64 {
    test_support::metric_value(&metrics(addr).await, series).unwrap_or(0.0)
}

pub use test_support::eventually;

/// Runs the heavy cases one at a time across test processes (nextest runs
/// each test in its own process): their RSS bounds and delivery counts
/// assume the server is not starved of CPU by another flood on this
/// machine. Hold the returned lock for the whole test.
///
/// # Panics
/// When the lock file cannot be opened or locked.
pub fn exclusive() -> std::fs::File {
    let path = std::env::temp_dir().join("channels-hostile-heavy.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    file.lock()
        .unwrap_or_else(|e| panic!("cannot lock {}: {e}", path.display()));
    file
}

/// MiB, for messages.
#[allow(clippy::cast_precision_loss)]
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
