//! # channels-server
//!
//! The axum side of rust-channels: the gateway that `channels-server` runs
//! by default ([`App::gateway`], docs/protocol.md: clients at `/ws` with JWT
//! or Django-signed tokens, subscribe and publish, layer messages pushed to
//! them, other frames forwarded to a backend worker, a console page at `/`),
//! WebSocket routes that run your own [`channels_core::consumer`] consumers,
//! middleware (allowed origins, authentication, connection limit, tracing),
//! the HTTP API for backends, health and Prometheus metrics, graceful shutdown,
//! and the `channels-server` binary with its shared clap [`Args`] and TOML
//! config file.
//!
//! ```no_run
//! use std::sync::Arc;
//! use channels_core::consumer::{ConsumerContext, ConsumerError, ConsumerRouter, Frame, WebsocketConsumer};
//! use channels_core::async_trait;
//! use channels_server::{App, ServerConfig};
//!
//! struct Echo;
//!
//! #[async_trait]
//! impl WebsocketConsumer for Echo {
//!     async fn receive(&mut self, ctx: &mut ConsumerContext, frame: Frame) -> Result<(), ConsumerError> {
//!         ctx.send(frame)
//!     }
//! }
//!
//! # #[tokio::main] async fn main() -> Result<(), channels_server::ServerError> {
//! let layer = Arc::new(channels_memory::InMemoryChannelLayer::new());
//! let app = App::new(layer, ServerConfig::default())
//!     .consumers(ConsumerRouter::new().route("/ws/echo", |_| Echo));
//! let router: axum::Router = app.router(); // mount it in your own axum app, or:
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
//! app.serve(listener, channels_server::shutdown::signal()).await
//! # }
//! ```

mod api;
mod app;
mod config;
mod connection;
pub mod control;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod gateway;
mod health;
pub mod history;
mod http;
pub mod metrics;
mod middleware;
mod presence;
mod proxy;
mod rate;
pub mod shutdown;
mod telemetry;
mod ws;

pub use app::{App, run};

/// The README's Rust examples, compiled and run as doc tests.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
pub use config::{
    Args, DEFAULT_BIND, DEFAULT_CHANNEL_CAPACITY, DEFAULT_CLIENT_RATE_LIMIT, DEFAULT_DJANGO_SALT,
    DEFAULT_DRAIN_TIMEOUT, DEFAULT_HEADER_TIMEOUT, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_FRAME_BYTES, DEFAULT_REDIS_PREFIX, DEFAULT_REDIS_URL, DEFAULT_SHUTDOWN_CLOSE_CODE,
    GatewayConfig, LISTEN_BACKLOG, LayerKind, LayerSettings, LogFormat, REGEX_PATTERN_PREFIX,
    ServerConfig, Settings,
};
pub use error::ServerError;
pub use gateway::WS_PATH;
pub use middleware::{AuthRejection, Authenticator, TokenAuthenticator};
pub use presence::Presence;
pub use telemetry::Telemetry;

/// The Redis host type of [`LayerSettings::hosts`].
pub use channels_redis::{RedisHost, SentinelHost};

/// Re-exported so embedders register metrics with the same version.
pub use prometheus_client;
