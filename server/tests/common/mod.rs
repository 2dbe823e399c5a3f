//! Shared helpers: start a server on 127.0.0.1:0, connect real
//! tokio-tungstenite clients; binaries, ports and HTTP come from the
//! `test-support` crate. Every wait has a timeout.

// Not every test file uses every helper; a panic is how tests report failure.
#![allow(
    dead_code,
    unused_imports,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use channels_core::SharedLayer;
use channels_memory::InMemoryChannelLayer;
use channels_server::{App, ServerConfig, ServerError};
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub use test_support::ServerProcess;
pub use test_support::http::HttpResponse;
pub use test_support::metric_value;

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
pub async fn start_binary(args: &[&str], envs: &[(&str, &str)]) -> (ServerProcess, SocketAddr) {
    let server = ServerProcess::start(env!("CARGO_BIN_EXE_channels-server"), args, envs);
    let address = server.addr();
    (server, address)
}

/// Sends SIGTERM to a server started by [`start_binary`].
pub fn sigterm(child: &ServerProcess) {
    child.sigterm();
}

/// Waits up to 15 s for a server to exit after SIGTERM.
pub fn wait_exit(child: &mut ServerProcess) -> std::process::ExitStatus {
    child
        .wait(Duration::from_secs(15))
        .unwrap_or_else(|| panic!("the server did not exit; its output:\n{}", child.output()))
}

/// Sends one HTTP request and reads the whole answer.
pub async fn http(
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    test_support::http::request(address, method, path, headers, body.to_vec()).await
}
