//! Real child processes for the tests: the shootout server and the loadgen binary (built from
//! the workspace on first use). Every wait has a deadline; every child is killed on drop.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{OnceLock, mpsc};
use std::time::{Duration, Instant};

use test_support::ServerProcess;

/// A running `shootout` process (killed on drop).
pub(crate) struct Shootout {
    _process: ServerProcess,
    /// `ws://127.0.0.1:PORT/ws`.
    pub(crate) url: String,
}

impl Shootout {
    /// Starts `shootout --bind 127.0.0.1:0 <args>` and waits for its `listening on` line.
    pub(crate) fn start(args: &[&str]) -> Self {
        let mut all = vec!["--bind", "127.0.0.1:0"];
        all.extend_from_slice(args);
        let process = ServerProcess::start(
            env!("CARGO_BIN_EXE_shootout"),
            &all,
            &[("RUST_LOG", "warn")],
        );
        let url = format!("ws://{}/ws", process.addr());
        Self {
            _process: process,
            url,
        }
    }
}

/// Waits for `child` until `limit`, killing it then.
fn wait_with_deadline(child: &mut Child, what: &str, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("waitpid works") {
            return status;
        }
        if Instant::now() > deadline {
            let _killed = child.kill();
            let _reaped = child.wait();
            panic!("{what} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The loadgen binary, built once per test process with `cargo build -p loadgen` into the
/// target directory this test runs from.
fn loadgen_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            let own = PathBuf::from(env!("CARGO_BIN_EXE_shootout"));
            let dir = own.parent().expect("a binary lives in a directory");
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
            let mut command = Command::new(cargo);
            command.args(["build", "--quiet", "-p", "loadgen", "--bin", "loadgen"]);
            if dir.ends_with("release") {
                command.arg("--release");
            }
            let mut child = command.stdin(Stdio::null()).spawn().expect("cargo starts");
            let status = wait_with_deadline(
                &mut child,
                "cargo build -p loadgen",
                Duration::from_secs(600),
            );
            assert!(status.success(), "cargo build -p loadgen failed: {status}");
            let binary = dir.join("loadgen");
            assert!(binary.exists(), "{} was not built", binary.display());
            binary
        })
        .clone()
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

/// Runs `loadgen <args> --json-only`, asserts it succeeded with one line, and parses it.
pub(crate) fn run_loadgen(args: &[&str], limit: Duration) -> serde_json::Value {
    let mut child = Command::new(loadgen_binary())
        .args(args)
        .arg("--json-only")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("loadgen starts");
    let stdout = read_in_thread(child.stdout.take().expect("stdout is piped"));
    let stderr = read_in_thread(child.stderr.take().expect("stderr is piped"));
    let status = wait_with_deadline(&mut child, "loadgen", limit);
    let collect = |rx: mpsc::Receiver<String>| {
        rx.recv_timeout(Duration::from_secs(5))
            .expect("the pipe closes when loadgen exits")
    };
    let (stdout, stderr) = (collect(stdout), collect(stderr));
    assert!(
        status.success(),
        "loadgen {args:?} failed: {status}\n{stderr}"
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one JSON line expected, got {stdout:?}");
    serde_json::from_str(lines[0]).expect("the line is JSON")
}

/// Field `name` of a report as u64.
pub(crate) fn field(report: &serde_json::Value, name: &str) -> u64 {
    report[name]
        .as_u64()
        .unwrap_or_else(|| panic!("`{name}` is a number in {report}"))
}

/// Asserts a broadcast run delivered every broadcast to every client exactly once.
pub(crate) fn assert_perfect_broadcast(report: &serde_json::Value, clients: u64) {
    eprintln!("loadgen report: {report}");
    assert_eq!(field(report, "clients"), clients, "{report}");
    assert_eq!(field(report, "connect_failures"), 0, "{report}");
    let sent = field(report, "sent");
    assert!(sent > 0, "nothing was sent: {report}");
    assert_eq!(field(report, "expected"), sent * clients, "{report}");
    assert_eq!(field(report, "received"), sent * clients, "{report}");
    assert_eq!(field(report, "lost"), 0, "{report}");
    assert_eq!(field(report, "duplicated"), 0, "{report}");
    assert_eq!(field(report, "broadcast_results"), sent, "{report}");
}
