//! [`ServerProcess`]: a child binary that prints `listening on ADDR`.

use std::ffi::OsStr;
use std::io::{BufRead as _, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long a binary may take to print its `listening on` line.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The address in a `listening on ADDR` line (plain, or inside a log line
/// such as `INFO channels_server::app: listening on 127.0.0.1:8000`).
pub fn listening_addr(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find("listening on ")? + "listening on ".len()..];
    let address: String = rest
        .chars()
        .take_while(|c| c.is_ascii_hexdigit() || matches!(c, '.' | ':' | '[' | ']'))
        .collect();
    address.parse().ok()
}

/// A running binary whose stdout and stderr are read line by line (so it
/// never blocks on a full pipe). Killed on drop.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    addr: SocketAddr,
    lines: Receiver<String>,
    /// Every line so far, for failure messages.
    log: Arc<Mutex<Vec<String>>>,
}

impl ServerProcess {
    /// Starts `program` with `args` and `envs` (and `RUST_LOG=info` unless
    /// `envs` sets it) and waits for its `listening on ADDR` line.
    ///
    /// # Panics
    /// When it cannot start, exits, or prints no such line within
    /// [`START_TIMEOUT`]; the message holds its output.
    pub fn start(program: impl AsRef<OsStr>, args: &[&str], envs: &[(&str, &str)]) -> Self {
        let program = program.as_ref();
        let mut command = Command::new(program);
        command
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (name, value) in envs {
            command.env(name, value);
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|error| panic!("cannot run {}: {error}", program.display()));
        let (tx, lines) = mpsc::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        forward(stdout, tx.clone(), log.clone());
        forward(stderr, tx, log.clone());
        let mut process = Self {
            child,
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            lines,
            log,
        };
        let Some(line) = process.wait_for_line("listening on ", START_TIMEOUT) else {
            let status = process.child.try_wait().ok().flatten();
            let _ = process.child.kill();
            panic!(
                "{} {args:?} printed no `listening on ADDR` within {START_TIMEOUT:?} \
                 (exit: {status:?}); its output:\n{}",
                program.display(),
                process.output()
            );
        };
        process.addr =
            listening_addr(&line).unwrap_or_else(|| panic!("no address in the line {line:?}"));
        process
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the next output line containing `needle` (lines already
    /// read past are not seen again); `None` after `timeout` or at exit.
    pub fn wait_for_line(&self, needle: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return Some(line),
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// Everything it printed so far.
    pub fn output(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .join("\n")
    }

    /// Sends SIGTERM.
    ///
    /// # Panics
    /// When `kill` cannot be run.
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {} failed", self.child.id());
    }

    /// Kills it (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits up to `timeout` for it to exit.
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads `pipe` line by line on a thread, into `tx` and `log`.
fn forward(
    pipe: impl Read + Send + 'static,
    tx: mpsc::Sender<String>,
    log: Arc<Mutex<Vec<String>>>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { return };
            log.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(line.clone());
            // Nobody listening any more is fine: keep draining the pipe.
            let _ = tx.send(line);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_address_in_plain_and_log_lines() {
        assert_eq!(
            listening_addr("listening on 127.0.0.1:8000"),
            Some("127.0.0.1:8000".parse().unwrap())
        );
        assert_eq!(
            listening_addr(
                "2025-01-01T00:00:00Z  INFO channels_server::app: listening on 127.0.0.1:41234 address=127.0.0.1:41234"
            ),
            Some("127.0.0.1:41234".parse().unwrap())
        );
        assert_eq!(
            listening_addr("listening on [::1]:9"),
            Some("[::1]:9".parse().unwrap())
        );
        assert_eq!(listening_addr("admin listener on 127.0.0.1:1"), None);
    }

    #[test]
    fn start_reads_the_line_and_kills_on_drop() {
        let mut server = ServerProcess::start(
            "sh",
            &[
                "-c",
                // `ready` on the same pipe as `listening on`, so it comes after
                // it; the stderr line may come at any point.
                "echo booting; echo 'listening on 127.0.0.1:4321'; echo ready; echo oops >&2; sleep 30",
            ],
            &[],
        );
        assert_eq!(server.addr().port(), 4321);
        assert!(
            server
                .wait_for_line("ready", Duration::from_secs(5))
                .is_some()
        );
        assert!(server.output().contains("booting"));
        let deadline = Instant::now() + Duration::from_secs(5);
        while !server.output().contains("oops") {
            assert!(Instant::now() < deadline, "stderr is captured too");
            std::thread::sleep(Duration::from_millis(10));
        }
        server.sigterm();
        assert!(server.wait(Duration::from_secs(5)).is_some());
    }
}
