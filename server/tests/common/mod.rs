//! Shared helpers: start a server on 127.0.0.1:0, connect real
//! tokio-tungstenite clients and speak the gateway protocol; binaries, ports,
//! HTTP and WebSocket clients come from the `test-support` crate. Every wait
//! has a timeout.

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
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use test_support::ServerProcess;
pub use test_support::http::HttpResponse;
pub use test_support::metric_value;
pub use test_support::ws::{
    Client, WAIT, connect, expect_close, expect_quiet, next_json, next_message, send_json,
    send_text, try_connect,
};

/// A running server; dropping it without `stop` leaves the task to the runtime.
pub struct Server {
    pub address: SocketAddr,
    pub layer: SharedLayer,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServerError>>,
}

impl Server {
    /// Serves the default app (`channels_server::run`: the gateway, in
    /// development mode unless `config` sets a verifier) on a fresh memory
    /// layer.
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

/// Connects to the gateway at `/ws` anonymously (development mode): sends
/// `connect` and returns the client with its `connected` frame.
pub async fn gateway(address: SocketAddr) -> (Client, serde_json::Value) {
    gateway_at(&format!("ws://{address}/ws")).await
}

/// Like [`gateway`], at a full URL (e.g. with `?token=`, which answers
/// `connected` without a `connect` frame).
pub async fn gateway_at(url: &str) -> (Client, serde_json::Value) {
    let mut client = connect(url).await;
    if !url.contains("token=") {
        send_json(&mut client, &serde_json::json!({"type": "connect"})).await;
    }
    let connected = next_json(&mut client).await;
    assert_eq!(connected["type"], "connected", "{connected}");
    (client, connected)
}

/// Sends `request` with `id` and returns the next frame, which must be its
/// answer (or an error for it).
pub async fn ask(client: &mut Client, mut request: serde_json::Value) -> serde_json::Value {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    request["id"] = id.into();
    send_json(client, &request).await;
    let answer = next_json(client).await;
    assert_eq!(answer["id"], id, "not the answer to {request}: {answer}");
    answer
}

/// Subscribes to `group`, which must succeed.
pub async fn subscribe(client: &mut Client, group: &str) {
    let answer = ask(
        client,
        serde_json::json!({"type": "subscribe", "group": group}),
    )
    .await;
    assert_eq!(answer["type"], "subscribed", "{answer}");
}

/// Publishes `{"type": "chat.message", "text": text}` to `group`, which must
/// succeed.
pub async fn say(client: &mut Client, group: &str, text: &str) {
    let data = serde_json::json!({"type": "chat.message", "text": text});
    let answer = ask(
        client,
        serde_json::json!({"type": "publish", "group": group, "data": data}),
    )
    .await;
    assert_eq!(answer["type"], "published", "{answer}");
}

/// The next frame, which must be a `message` push; returns it whole.
pub async fn next_push(client: &mut Client) -> serde_json::Value {
    let push = next_json(client).await;
    assert_eq!(push["type"], "message", "{push}");
    push
}

/// The `text` of the next push.
pub async fn next_text(client: &mut Client) -> String {
    let push = next_push(client).await;
    push["data"]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no data.text in {push}"))
        .to_owned()
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

/// The workspace's root directory.
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The interop venv's python: `$CHANNELS_INTEROP_PYTHON` (set by
/// `scripts/test.sh`), else `target/interop-venv/bin/python` (made by
/// `scripts/install-deps.sh`, with channels, channels_redis and Django).
pub fn python() -> std::path::PathBuf {
    let path = std::env::var_os("CHANNELS_INTEROP_PYTHON").map_or_else(
        || workspace_root().join("target/interop-venv/bin/python"),
        std::path::PathBuf::from,
    );
    assert!(
        path.exists(),
        "the Python interop venv is missing ({}): run `bash scripts/install-deps.sh`",
        path.display()
    );
    path
}

/// The `channels-server` binary: `$CHANNELS_SERVER_BIN`, else the one cargo built.
pub fn server_bin() -> std::path::PathBuf {
    std::env::var_os("CHANNELS_SERVER_BIN").map_or_else(
        || std::path::PathBuf::from(env!("CARGO_BIN_EXE_channels-server")),
        std::path::PathBuf::from,
    )
}
