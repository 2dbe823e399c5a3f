//! Real child processes for the integration tests: ceiling servers and a private redis-server
//! (from `test-support`), and the loadgen binary. Every wait has a deadline; every child is
//! killed on drop.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use test_support::ServerProcess;

/// A running `ceiling-server` process (killed on drop).
pub(crate) struct CeilingServer {
    process: ServerProcess,
    /// `ws://127.0.0.1:PORT/ws`.
    pub(crate) url: String,
}

impl CeilingServer {
    /// Starts `ceiling-server --bind 127.0.0.1:0 <extra>` and waits for its `listening on` line.
    pub(crate) fn start(extra: &[&str]) -> Self {
        let mut args = vec!["--bind", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        let process = ServerProcess::start(
            env!("CARGO_BIN_EXE_ceiling-server"),
            &args,
            &[("RUST_LOG", "warn")],
        );
        let url = format!("ws://{}/ws", process.addr());
        Self { process, url }
    }

    /// The server's process id, for `--pid`.
    pub(crate) fn pid(&self) -> u32 {
        self.process.pid()
    }
}

/// A private `redis-server` on a free port (the shared fixture).
pub(crate) struct RedisServer {
    _server: test_support::redis::RedisServer,
    /// `redis://127.0.0.1:PORT`.
    pub(crate) url: String,
}

impl RedisServer {
    /// Starts redis-server and waits until it answers PING.
    pub(crate) fn start() -> Self {
        let server = test_support::redis::RedisServer::start()
            .expect("redis-server is installed (apt-get install redis-server)");
        let url = server.url();
        Self {
            _server: server,
            url,
        }
    }
}

/// Output of one `loadgen` run.
pub(crate) struct LoadgenRun {
    pub(crate) status: std::process::ExitStatus,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

/// Runs the loadgen binary with `args`, killing it after `limit`.
pub(crate) fn run_loadgen(args: &[&str], limit: Duration) -> LoadgenRun {
    let mut child = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("loadgen starts");
    let stdout = read_in_thread(child.stdout.take().expect("stdout is piped"));
    let stderr = read_in_thread(child.stderr.take().expect("stderr is piped"));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waitpid works") {
            break status;
        }
        if Instant::now() > deadline {
            let _killed = child.kill();
            let _reaped = child.wait();
            panic!("loadgen {args:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let collect = |rx: mpsc::Receiver<String>| {
        rx.recv_timeout(Duration::from_secs(5))
            .expect("the pipe closes when loadgen exits")
    };
    LoadgenRun {
        status,
        stdout: collect(stdout),
        stderr: collect(stderr),
    }
}

/// Runs loadgen with `--json-only`, asserts it succeeded with exactly one line, and parses it.
pub(crate) fn run_loadgen_json(args: &[&str], limit: Duration) -> serde_json::Value {
    let mut all = args.to_vec();
    all.push("--json-only");
    let run = run_loadgen(&all, limit);
    assert!(
        run.status.success(),
        "loadgen failed: {:?}\n{}",
        run.status,
        run.stderr
    );
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "exactly one JSON line, got {:?}",
        run.stdout
    );
    serde_json::from_str(lines[0]).expect("the line is JSON")
}

fn read_in_thread(mut pipe: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _read = pipe.read_to_string(&mut text);
        let _sent = tx.send(text);
    });
    rx
}

/// Field `name` of a report as u64.
pub(crate) fn field(report: &serde_json::Value, name: &str) -> u64 {
    report[name]
        .as_u64()
        .unwrap_or_else(|| panic!("`{name}` is a number in {report}"))
}
