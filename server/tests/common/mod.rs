//! Shared helpers: start a server on 127.0.0.1:0, connect real
//! tokio-tungstenite clients, and speak minimal HTTP/1.1. Every wait has a
//! timeout.

// Not every test file uses every helper; a panic is how tests report failure.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use channels_core::SharedLayer;
use channels_memory::InMemoryChannelLayer;
use channels_server::{App, ServerConfig, ServerError};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long any single wait in a test may take.
pub const WAIT: Duration = Duration::from_secs(5);

pub type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A running server; dropping it without `stop` leaves the task to the runtime.
pub struct Server {
    pub address: SocketAddr,
    pub layer: SharedLayer,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServerError>>,
}

impl Server {
    /// Serves the default app (`channels_server::run`) on a fresh memory layer.
    pub async fn start(config: ServerConfig) -> Self {
        let layer: SharedLayer = Arc::new(InMemoryChannelLayer::new());
        Self::start_with(layer.clone(), move |stop| {
            Box::pin(async move {
                let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
                let address = listener.local_addr().unwrap();
                let task = tokio::spawn(channels_server::run(listener, layer, config, stop));
                (address, task)
            })
        })
        .await
    }

    /// Serves `app` (built on `layer`) on port 0.
    pub async fn start_app(layer: SharedLayer, app: App) -> Self {
        Self::start_with(layer, move |stop| {
            Box::pin(async move {
                let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
                let address = listener.local_addr().unwrap();
                let task = tokio::spawn(app.serve(listener, stop));
                (address, task)
            })
        })
        .await
    }

    async fn start_with<F>(layer: SharedLayer, spawn: F) -> Self
    where
        F: FnOnce(
            std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
        ) -> std::pin::Pin<
            Box<dyn Future<Output = (SocketAddr, JoinHandle<Result<(), ServerError>>)> + Send>,
        >,
    {
        let (stop, stopped) = oneshot::channel::<()>();
        let (address, task) = spawn(Box::pin(async move {
            let _ = stopped.await;
        }))
        .await;
        Self {
            address,
            layer,
            stop: Some(stop),
            task,
        }
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{}", self.address, path)
    }

    /// Triggers graceful shutdown and waits for `run` to return.
    pub async fn stop(mut self) -> Result<(), ServerError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(15), &mut self.task)
            .await
            .expect("server stops within its drain time")
            .expect("server task did not panic")
    }
}

/// Connects a WebSocket client, panicking on failure.
pub async fn connect(url: &str) -> Client {
    let (client, response) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .expect("connect timed out")
        .unwrap_or_else(|e| panic!("connect to {url} failed: {e}"));
    assert_eq!(response.status(), 101);
    client
}

/// Tries to connect with extra request headers; returns the HTTP status of a
/// refusal, or the client.
pub async fn try_connect(url: &str, headers: &[(&str, &str)]) -> Result<Client, u16> {
    let mut request = url.into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(
            tungstenite::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
        .await
        .expect("connect timed out")
    {
        Ok((client, _)) => Ok(client),
        Err(tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(other) => panic!("unexpected connect error: {other}"),
    }
}

/// Sends a text frame.
pub async fn send_text(client: &mut Client, text: &str) {
    tokio::time::timeout(WAIT, client.send(Message::text(text)))
        .await
        .expect("send timed out")
        .unwrap();
}

/// Sends `{"message": text}` as the chat demo expects.
pub async fn say(client: &mut Client, text: &str) {
    send_text(client, &serde_json::json!({ "message": text }).to_string()).await;
}

/// The next text or close message, skipping pings and pongs.
pub async fn next_message(client: &mut Client) -> Message {
    loop {
        let message = tokio::time::timeout(WAIT, client.next())
            .await
            .expect("timed out waiting for a message")
            .expect("stream ended")
            .expect("websocket error");
        if !matches!(message, Message::Ping(_) | Message::Pong(_)) {
            return message;
        }
    }
}

/// The next text frame parsed as JSON.
pub async fn next_json(client: &mut Client) -> serde_json::Value {
    match next_message(client).await {
        Message::Text(text) => serde_json::from_str(&text).unwrap(),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

/// Reads until the close frame and returns it (frames before it are skipped).
pub async fn expect_close(client: &mut Client) -> CloseFrame {
    loop {
        let next = tokio::time::timeout(WAIT, client.next())
            .await
            .expect("timed out waiting for the close frame");
        match next {
            Some(Ok(Message::Close(Some(frame)))) => return frame,
            Some(Ok(Message::Close(None))) => panic!("close without a code"),
            Some(Ok(_)) => {}
            Some(Err(error)) => panic!("websocket error before the close frame: {error}"),
            None => panic!("stream ended without a close frame"),
        }
    }
}

/// Checks that no text frame arrives within `wait`.
pub async fn expect_quiet(client: &mut Client, wait: Duration) {
    if let Ok(Some(Ok(message))) = tokio::time::timeout(wait, client.next()).await {
        assert!(
            matches!(message, Message::Ping(_) | Message::Pong(_)),
            "expected nothing, got {message:?}"
        );
    }
}

/// Starts the binary with `args` and `envs`; returns it and the address it
/// logged.
pub async fn start_binary(args: &[&str], envs: &[(&str, &str)]) -> (Child, SocketAddr) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_channels-server"));
    command
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    for (name, value) in envs {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("spawn channels-server");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let find = async {
        while let Some(line) = lines.next_line().await.expect("read stdout") {
            if !line.contains("listening") {
                continue;
            }
            let start = line
                .find("127.0.0.1:")
                .expect("address in the listening line");
            let address: String = line[start..]
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                .collect();
            return address.parse::<SocketAddr>().expect("parse address");
        }
        panic!("channels-server exited before listening");
    };
    let address = tokio::time::timeout(Duration::from_secs(10), find)
        .await
        .expect("channels-server did not start listening");
    // Keep draining stdout so the server never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, address)
}

pub fn sigterm(child: &Child) {
    let pid = child.id().expect("child still running");
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
}

/// A minimal HTTP/1.1 response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body {:?} is not JSON: {e}", self.body))
    }
}

/// Sends one HTTP/1.1 request with `Connection: close` and reads the answer.
pub async fn http(
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    let exchange = async {
        let mut stream = TcpStream::connect(address).await.unwrap();
        let mut request =
            format!("{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        stream.write_all(request.as_bytes()).await.unwrap();
        stream.write_all(body).await.unwrap();
        let mut raw = Vec::new();
        // The server may answer early (413) and close while we still write;
        // what it sent is still readable.
        let _ = stream.read_to_end(&mut raw).await;
        raw
    };
    let raw = tokio::time::timeout(WAIT, exchange)
        .await
        .expect("http request timed out");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    HttpResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}
