//! Real child processes for the integration tests: ceiling servers, a private redis-server and
//! the loadgen binary. Every wait has a deadline; every child is killed on drop.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A running `ceiling-server` process.
pub(crate) struct CeilingServer {
    child: Child,
    /// `ws://127.0.0.1:PORT/ws`.
    pub(crate) url: String,
}

impl CeilingServer {
    /// Starts `ceiling-server --bind 127.0.0.1:0 <extra>` and waits for its `listening on` line.
    pub(crate) fn start(extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ceiling-server"))
            .args(["--bind", "127.0.0.1:0"])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("ceiling-server starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let read = BufReader::new(stdout).read_line(&mut line);
            let _sent = tx.send(read.map(|_| line));
        });
        let line = match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(line)) => line,
            other => {
                let _killed = child.kill();
                panic!("ceiling-server did not report its address: {other:?}");
            }
        };
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        Self {
            child,
            url: format!("ws://{addr}/ws"),
        }
    }

    /// The server's process id, for `--pid`.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for CeilingServer {
    fn drop(&mut self) {
        let _killed = self.child.kill();
        let _reaped = self.child.wait();
    }
}

/// A private `redis-server` on a free port, without persistence.
pub(crate) struct RedisServer {
    child: Child,
    /// `redis://127.0.0.1:PORT`.
    pub(crate) url: String,
}

impl RedisServer {
    /// Starts redis-server and waits until it answers PING.
    pub(crate) fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("redis-server is installed (apt-get install redis-server)");
        let server = Self {
            child,
            url: format!("redis://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ping(port) {
            assert!(
                Instant::now() < deadline,
                "redis-server did not start on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _killed = self.child.kill();
        let _reaped = self.child.wait();
    }
}

fn ping(port: u16) -> bool {
    use std::io::Write;
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let timeout = Some(Duration::from_millis(500));
    if stream.set_read_timeout(timeout).is_err() || stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
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
