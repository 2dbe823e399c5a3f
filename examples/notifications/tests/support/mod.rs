//! The real `notifications` binary, real WebSocket clients and a minimal HTTP client. Every
//! wait has a deadline; the server is killed on drop.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The admin token the test servers run with.
pub(crate) const ADMIN: &str = "test-admin-token";
/// How long one wait may take.
pub(crate) const WAIT: Duration = Duration::from_secs(5);

/// A client socket.
pub(crate) type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A running `notifications` process.
pub(crate) struct Server {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub(crate) addr: String,
}

impl Server {
    /// Starts `notifications --bind 127.0.0.1:0 --admin-token ADMIN <args>`.
    pub(crate) fn start(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_notifications"))
            .args(["--bind", "127.0.0.1:0", "--admin-token", ADMIN])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the notifications binary starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            for line in lines.by_ref() {
                let Ok(line) = line else { return };
                if let Some(addr) = line.strip_prefix("listening on ") {
                    let _sent = tx.send(addr.to_owned());
                    break;
                }
            }
            // Keep draining, so logs never block the server on a full pipe.
            for _ in lines {}
        });
        let Ok(addr) = rx.recv_timeout(Duration::from_secs(20)) else {
            let _killed = child.kill();
            panic!("notifications {args:?} did not print `listening on ADDR` within 20 s");
        };
        Self { child, addr }
    }

    /// Opens a user socket with `?token=`.
    pub(crate) async fn connect(&self, token: Option<&str>) -> Result<Socket, tungstenite::Error> {
        let mut url = format!("ws://{}/ws/notifications", self.addr);
        if let Some(token) = token {
            url.push_str("?token=");
            url.push_str(token);
        }
        let (socket, _response) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .expect("the handshake finishes in time")?;
        Ok(socket)
    }

    /// Opens the socket of user `id` (token `demo-token-<id>`) and reads its unread greeting.
    pub(crate) async fn user(&self, id: &str) -> (Socket, u64) {
        let mut socket = self
            .connect(Some(&format!("demo-token-{id}")))
            .await
            .expect("a known user connects");
        let greeting = next_json(&mut socket).await;
        assert_eq!(greeting["type"], "unread", "{greeting}");
        let count = greeting["count"].as_u64().expect("count is a number");
        (socket, count)
    }

    /// `POST path` with a JSON body and `token` as bearer, returning the status and the JSON
    /// answer.
    pub(crate) async fn post(
        &self,
        path: &str,
        token: Option<&str>,
        body: &str,
    ) -> (u16, serde_json::Value) {
        let (status, body) = self.request("POST", path, token, body).await;
        let json = serde_json::from_str(&body).unwrap_or_else(|_| panic!("not JSON: {body:?}"));
        (status, json)
    }

    /// One HTTP/1.1 exchange; returns the status and the body.
    pub(crate) async fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &str,
    ) -> (u16, String) {
        let exchange = async {
            let mut stream = TcpStream::connect(&self.addr).await?;
            let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
            let request = format!(
                "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\n{auth}Connection: close\r\n\r\n{body}",
                self.addr,
                body.len()
            );
            stream.write_all(request.as_bytes()).await?;
            let mut response = Vec::new();
            stream.read_to_end(&mut response).await?;
            Ok::<_, std::io::Error>(String::from_utf8_lossy(&response).into_owned())
        };
        let response = tokio::time::timeout(WAIT, exchange)
            .await
            .expect("the HTTP exchange finishes in time")
            .expect("the HTTP exchange works");
        let status = response
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status in {response:?}"));
        let (_, body) = response
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("no body in {response:?}"));
        (status, body.to_owned())
    }

    /// Sends a notification to user `id` and returns its id.
    pub(crate) async fn notify(&self, id: &str, title: &str) -> String {
        let body = serde_json::json!({ "title": title }).to_string();
        let (status, answer) = self
            .post(&format!("/notify/{id}"), Some(ADMIN), &body)
            .await;
        assert_eq!(status, 202, "{answer}");
        answer["id"].as_str().expect("an id").to_owned()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _killed = self.child.kill();
        let _reaped = self.child.wait();
    }
}

/// The next text frame, as JSON (pings and pongs skipped).
pub(crate) async fn next_json(socket: &mut Socket) -> serde_json::Value {
    loop {
        let frame = tokio::time::timeout(WAIT, socket.next())
            .await
            .expect("a frame arrives in time")
            .expect("the socket is open")
            .expect("the frame reads");
        match frame {
            Message::Text(text) => return serde_json::from_str(&text).expect("a JSON frame"),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

/// Sends `value` as a text frame.
pub(crate) async fn send_json(socket: &mut Socket, value: serde_json::Value) {
    tokio::time::timeout(WAIT, socket.send(Message::text(value.to_string())))
        .await
        .expect("the send finishes in time")
        .expect("the send works");
}

/// Closes a socket cleanly.
pub(crate) async fn close(mut socket: Socket) {
    let _closed = tokio::time::timeout(WAIT, socket.close(None)).await;
}

/// The HTTP status of a refused handshake.
pub(crate) fn refused_status(result: Result<Socket, tungstenite::Error>) -> u16 {
    match result {
        Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
        Ok(_) => panic!("expected an HTTP refusal, the socket opened"),
    }
}
