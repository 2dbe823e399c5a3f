//! The real `notifications` binary (started through `test-support`), real WebSocket clients
//! and `test-support`'s HTTP client. Every wait has a deadline; the server is killed on drop.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use test_support::ServerProcess;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The admin token the test servers run with.
pub(crate) const ADMIN: &str = "test-admin-token";
/// How long one wait may take.
pub(crate) const WAIT: Duration = Duration::from_secs(5);

/// A client socket.
pub(crate) type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A running `notifications` process (killed on drop).
pub(crate) struct Server {
    _process: ServerProcess,
    /// `127.0.0.1:PORT`.
    pub(crate) addr: String,
}

impl Server {
    /// Starts `notifications --bind 127.0.0.1:0 --admin-token ADMIN <args>`.
    pub(crate) fn start(args: &[&str]) -> Self {
        let mut all = vec!["--bind", "127.0.0.1:0", "--admin-token", ADMIN];
        all.extend_from_slice(args);
        let process = ServerProcess::start(
            env!("CARGO_BIN_EXE_notifications"),
            &all,
            &[("RUST_LOG", "warn")],
        );
        let addr = process.addr().to_string();
        Self {
            _process: process,
            addr,
        }
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

    /// One HTTP exchange; returns the status and the body.
    pub(crate) async fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &str,
    ) -> (u16, String) {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("content-type", "application/json")];
        if let Some(auth) = &auth {
            headers.push(("authorization", auth.as_str()));
        }
        let addr = self.addr.parse().expect("the server address parses");
        let response =
            test_support::http::request(addr, method, path, &headers, body.to_owned()).await;
        (response.status, response.body)
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
