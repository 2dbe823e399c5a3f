//! The real `ws-client` binary against a real shootout server (the loadgen crate's ceiling
//! server, in-process on a free port): stdin lines go out, echoes come back on stdout, stdin EOF
//! and Ctrl-C close cleanly with status 0, and a server that is not there yet is retried.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use loadgen::ceiling::{Ceiling, CeilingConfig, FanoutMode, Hub};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::TcpListener;
use tokio::process::{Child, ChildStderr, ChildStdout, Command};
use tokio::sync::oneshot;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(5);

struct Server {
    hub: Arc<Hub>,
    _stop: oneshot::Sender<()>,
}

async fn serve_on(listener: TcpListener) -> Server {
    let config = CeilingConfig {
        mode: FanoutMode::Local,
        redis_url: String::new(),
        redis_channel: String::new(),
        outbound_queue: 64,
        read_buffer_bytes: 4096,
        join_delay: std::time::Duration::ZERO,
    };
    let ceiling = Ceiling::start(&config)
        .await
        .expect("local mode needs nothing");
    let hub = Arc::clone(ceiling.hub());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(ceiling.serve(listener, async move {
        let _ = stopped.await;
    }));
    Server { hub, _stop: stop }
}

async fn start_server() -> (Server, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("ws://{}/ws", listener.local_addr().expect("addr"));
    (serve_on(listener).await, url)
}

struct Client {
    child: Child,
    stdout: Lines<BufReader<ChildStdout>>,
    stderr: Lines<BufReader<ChildStderr>>,
}

fn spawn_client(args: &[&str]) -> Client {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ws-client"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("ws-client starts");
    let stdout = BufReader::new(child.stdout.take().expect("piped")).lines();
    let stderr = BufReader::new(child.stderr.take().expect("piped")).lines();
    Client {
        child,
        stdout,
        stderr,
    }
}

impl Client {
    async fn send_line(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().expect("stdin is open");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("write stdin");
        stdin.flush().await.expect("flush stdin");
    }

    async fn next_stdout(&mut self) -> String {
        timeout(WAIT, self.stdout.next_line())
            .await
            .expect("a frame is printed in time")
            .expect("stdout readable")
            .expect("stdout open")
    }

    /// Reads stderr until a line contains `needle`.
    async fn wait_stderr(&mut self, needle: &str) {
        let found = timeout(WAIT, async {
            while let Ok(Some(line)) = self.stderr.next_line().await {
                if line.contains(needle) {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(found, Ok(true), "stderr never said {needle:?}");
    }

    async fn exit_code(&mut self) -> Option<i32> {
        timeout(WAIT, self.child.wait())
            .await
            .expect("ws-client exits in time")
            .expect("wait works")
            .code()
    }
}

async fn wait_no_connections(hub: &Hub) {
    timeout(WAIT, async {
        while hub.connections() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the server saw the connection close");
}

#[tokio::test]
async fn echoes_a_line_and_exits_cleanly_on_stdin_eof() {
    let (server, url) = start_server().await;
    let mut client = spawn_client(&[&url]);
    client.wait_stderr("connected").await;
    let frame = r#"{"type":"echo","payload":{"n":1}}"#;
    client.send_line(frame).await;
    assert_eq!(client.next_stdout().await, frame);
    drop(client.child.stdin.take());
    assert_eq!(client.exit_code().await, Some(0));
    wait_no_connections(&server.hub).await;
}

#[tokio::test]
async fn template_escapes_the_line() {
    let (_server, url) = start_server().await;
    let template = r#"{"type":"echo","payload":"{line}"}"#;
    let mut client = spawn_client(&[&url, "--template", template]);
    let line = r#"he said "hi" \o/"#;
    client.send_line(line).await;
    let echoed: serde_json::Value =
        serde_json::from_str(&client.next_stdout().await).expect("the echo is JSON");
    assert_eq!(echoed["payload"], line);
    drop(client.child.stdin.take());
    assert_eq!(client.exit_code().await, Some(0));
}

#[tokio::test]
async fn ctrl_c_closes_cleanly() {
    let (server, url) = start_server().await;
    let mut client = spawn_client(&[&url]);
    client.wait_stderr("connected").await;
    assert_eq!(server.hub.connections(), 1);
    let pid = client.child.id().expect("running").to_string();
    let status = Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .await
        .expect("kill runs");
    assert!(status.success());
    assert_eq!(client.exit_code().await, Some(0));
    wait_no_connections(&server.hub).await;
}

#[tokio::test]
async fn retries_until_the_server_is_up() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let url = format!("ws://{addr}/ws");
    let mut client = spawn_client(&[&url]);
    client.wait_stderr("reconnecting in").await;
    let _server = serve_on(TcpListener::bind(addr).await.expect("rebind the same port")).await;
    client.wait_stderr("connected").await;
    let frame = r#"{"type":"echo","payload":"late"}"#;
    client.send_line(frame).await;
    assert_eq!(client.next_stdout().await, frame);
    drop(client.child.stdin.take());
    assert_eq!(client.exit_code().await, Some(0));
}

#[tokio::test]
async fn gives_up_after_max_retries() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("ws://{}/ws", listener.local_addr().expect("addr"));
    drop(listener);
    let mut client = spawn_client(&[&url, "--max-retries", "2"]);
    client
        .wait_stderr("giving up after 2 failed attempts")
        .await;
    assert_eq!(client.exit_code().await, Some(1));
}

#[tokio::test]
async fn refuses_a_remote_server() {
    let mut client = spawn_client(&["ws://192.0.2.1:8000/ws"]);
    client.wait_stderr("--allow-remote").await;
    assert_eq!(client.exit_code().await, Some(2));
}
