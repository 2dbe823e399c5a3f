//! Shared helpers of the chat tests: the chat app on 127.0.0.1:0 in this
//! process, the `chat` binary, and the chat protocol's `say`. WebSocket and
//! HTTP clients come from `test-support`. Every wait has a timeout.

// Not every test file uses every helper; a panic is how tests report failure.
#![allow(dead_code, unused_imports, unreachable_pub, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use channels_core::SharedLayer;
use channels_server::{App, ServerConfig, ServerError};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use test_support::ServerProcess;
pub use test_support::http::HttpResponse;
pub use test_support::ws::{
    Client, WAIT, connect, expect_close, expect_quiet, next_json, send_text, try_connect,
};

/// The chat app (consumers and page) served in this process.
pub struct Server {
    pub address: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServerError>>,
}

impl Server {
    /// Serves the chat on a fresh memory layer with `config`.
    pub async fn start(config: ServerConfig) -> Self {
        let layer: SharedLayer = Arc::new(channels_memory::InMemoryChannelLayer::new());
        let app = App::new(layer, config)
            .consumers(chat::consumers())
            .merge(chat::page());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app.serve(listener, async move {
            let _ = stopped.await;
        }));
        Self {
            address,
            stop: Some(stop),
            task,
        }
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{}", self.address, path)
    }

    /// Triggers graceful shutdown and waits for the server to return.
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

/// Sends `{"message": text}` as the chat expects.
pub async fn say(client: &mut Client, text: &str) {
    send_text(client, &serde_json::json!({ "message": text }).to_string()).await;
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

/// Starts the `chat` binary with `args` and `envs`; returns it and its address.
pub async fn start_binary(args: &[&str], envs: &[(&str, &str)]) -> (ServerProcess, SocketAddr) {
    let server = ServerProcess::start(env!("CARGO_BIN_EXE_chat"), args, envs);
    let address = server.addr();
    (server, address)
}
