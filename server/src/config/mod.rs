//! Configuration: the clap [`Args`] every binary shares (each flag also read
//! from `CHANNELS_<FLAG>`), the TOML file they may name (`--config`), and
//! what they resolve to: [`Settings`] (process-level: bind address, logging,
//! the [`LayerSettings`]) holding the [`ServerConfig`] an [`crate::App`] runs with.
//!
//! Precedence, per setting: flag > env var > file > default.

mod args;
pub(crate) mod file;
mod gateway;
mod layer;
mod server;
mod settings;

pub use args::Args;
pub use gateway::{DEFAULT_DJANGO_SALT, GatewayConfig};
pub use layer::{LayerSettings, REGEX_PATTERN_PREFIX};
pub use server::{DEFAULT_CLIENT_RATE_LIMIT, DEFAULT_HEADER_TIMEOUT, ServerConfig};
pub use settings::Settings;
pub(crate) use settings::bind_listener;

use std::time::Duration;

/// The default listen address.
pub const DEFAULT_BIND: &str = "127.0.0.1:8000";
/// The default Redis URL when a Redis layer is chosen without hosts.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
/// The default Redis key prefix (channels_redis's `asgi`).
pub const DEFAULT_REDIS_PREFIX: &str = "asgi";
/// The capacity the server gives every channel (Django's default is 100).
/// Higher because of broadcast bursts: the Redis core layer counts one
/// process's connections together against it (they share one key), and the
/// layers' local buffers drop the oldest message past it.
pub const DEFAULT_CHANNEL_CAPACITY: usize = 1000;
/// The default limit of open WebSocket connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// The default largest WebSocket frame (and publish body) accepted, in bytes.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 64 * 1024;
/// How long shutdown waits for connections to finish before dropping them.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// The close code sockets get on shutdown: 1001 "going away". Rolling
/// deploys use 1012 "service restart", which tells clients to reconnect.
pub const DEFAULT_SHUTDOWN_CLOSE_CODE: u16 = 1001;

/// [`channels_core::consumer::DEFAULT_IDLE_TIMEOUT`] in whole seconds.
pub(crate) const DEFAULT_IDLE_TIMEOUT_SECS: u64 =
    channels_core::consumer::DEFAULT_IDLE_TIMEOUT.as_secs();

/// Pending connections the listener queues before `accept` (the OS default
/// of 128 overflows when a thousand clients connect at once, and each
/// overflowed client waits a full second to retry its SYN).
pub const LISTEN_BACKLOG: u32 = 4096;

/// Which channel layer backs the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LayerKind {
    /// In this process only (no setup; one process).
    Memory,
    /// Redis lists and sorted sets, compatible with Python `channels_redis`.
    Redis,
    /// Redis pub/sub, compatible with `channels_redis.pubsub`.
    RedisPubsub,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Checks a close code a server may send (RFC 6455 7.4: 1000-1003,
/// 1007-1014, or the registered and private ranges 3000-4999).
pub(crate) fn check_close_code(code: u16) -> Result<u16, String> {
    match code {
        1000..=1003 | 1007..=1014 | 3000..=4999 => Ok(code),
        _ => Err(format!(
            "close code {code} cannot be sent; use 1000-1003, 1007-1014 or 3000-4999 \
             (1001 going away, 1012 service restart)"
        )),
    }
}
