//! `chat`: mount rust-channels in your own axum app.
//!
//! Teaches: rust-channels is an axum [`Router`] you merge into yours. This app has routes of
//! its own (`/hello`, `/api/rooms`) and merges in the multi-room chat demo of this crate's
//! library (its page at `/`, its consumer at `/ws/chat/{room}`; the protocol is in the
//! library's docs) together with `/healthz`, `/readyz`, `/metrics` and the publish API, all
//! built by [`App`]. You keep `axum::serve`; the [`App`]'s shutdown handle
//! closes the sockets (1001) when you stop, and its drain waits for the consumers to leave
//! their rooms. The shared server flags choose the layer, so several processes on one Redis
//! make one chat.
//!
//! ```text
//! cargo run -p chat                                     # open http://127.0.0.1:8000/
//! curl http://127.0.0.1:8000/hello
//! # two processes, one chat (open both in a browser, same room)
//! cargo run -p chat -- --bind 127.0.0.1:8001 --layer redis --redis-url redis://127.0.0.1:6379
//! cargo run -p chat -- --bind 127.0.0.1:8002 --layer redis --redis-url redis://127.0.0.1:6379
//! # a terminal member of room lobby, nickname cli
//! cargo run -p ws-client -- 'ws://127.0.0.1:8000/ws/chat/lobby?nick=cli' --json-field message
//! ```
//!
//! The first line on stdout is `listening on ADDR` (handy with `--bind 127.0.0.1:0`).

use std::net::SocketAddr;
use std::process::ExitCode;

use axum::Router;
use axum::routing::get;
use channels_server::{App, Args, ServerError, Settings, shutdown};
use clap::Parser;

/// Your own axum app, with the rust-channels chat mounted in it.
#[derive(Debug, Parser)]
#[command(name = "chat", version)]
struct Cli {
    #[command(flatten)]
    server: Args,
}

/// The rooms the page suggests; a room exists as soon as someone joins it.
const SUGGESTED_ROOMS: &[&str] = &["lobby", "rust", "random"];

/// One of your own routes, next to the sockets.
async fn hello() -> &'static str {
    "hello from your own axum route\n"
}

/// Another: plain JSON, nothing to do with channels.
async fn rooms() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({ "rooms": SUGGESTED_ROOMS }))
}

async fn serve(settings: &Settings) -> Result<(), ServerError> {
    let layer = settings.build_layer().await?;
    let config = settings.server.clone();
    let drain_timeout = config.drain_timeout;
    // rust-channels' part: consumers, the page, health, metrics, publish API.
    let channels = App::new(layer.clone(), config)
        .consumers(chat::consumers())
        .merge(chat::page());
    let sockets = channels.shutdown_handle();
    // Your app: your routes, with rust-channels merged in.
    let app = Router::new()
        .route("/hello", get(hello))
        .route("/api/rooms", get(rooms))
        .merge(channels.router());

    let listener = settings.listen()?;
    println!("listening on {}", listener.local_addr()?);
    let stop = {
        let sockets = sockets.clone();
        async move {
            shutdown::signal().await;
            // Close every socket with 1001, so axum's graceful shutdown can finish.
            sockets.trigger();
        }
    };
    let served = axum::serve(
        listener,
        // Consumers see the client address in their scope.
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(stop)
    .await;
    let remaining = sockets.drain(drain_timeout).await;
    if remaining > 0 {
        tracing::warn!(remaining, "connections still open after the drain");
    }
    if let Err(error) = layer.close().await {
        tracing::warn!(%error, "closing the channel layer failed");
    }
    served.map_err(ServerError::Io)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match cli.server.load() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("chat: {error}");
            return ExitCode::from(2);
        }
    };
    let _telemetry = settings.init_logging();
    match serve(&settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("chat: {error}");
            ExitCode::FAILURE
        }
    }
}
