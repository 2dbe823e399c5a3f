//! Shared test setup: one redis-server per test binary, unique prefixes.
#![allow(dead_code, unreachable_pub)] // each test binary uses a different subset

use std::sync::OnceLock;
use std::time::Duration;

use channels_redis::testing::{RedisServer, unique_prefix};
use channels_redis::{RedisChannelLayer, RedisConfig};

/// The redis-server shared by every test of this binary (started lazily).
pub fn shared_server() -> &'static RedisServer {
    static SERVER: OnceLock<RedisServer> = OnceLock::new();
    SERVER
        .get_or_init(|| RedisServer::start().expect("redis-server must be on PATH for these tests"))
}

/// A config on the shared server with a fresh prefix.
pub fn config() -> RedisConfig {
    RedisConfig::new()
        .host(shared_server().url())
        .prefix(unique_prefix())
}

/// A layer on the shared server with a fresh prefix.
pub fn layer() -> RedisChannelLayer {
    RedisChannelLayer::new(config()).expect("valid config")
}

/// A raw connection to `url` for inspecting keys.
pub async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect to test redis")
}

/// One second: the usual bound on a wait in these tests.
pub const WAIT: Duration = Duration::from_secs(1);
