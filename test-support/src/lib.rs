//! Test helpers shared by the workspace's integration tests (not published):
//!
//! - [`ServerProcess`]: start a binary and read the address from its
//!   `listening on ADDR` line; SIGTERM it, wait for it, read its output.
//! - [`free_port`], [`free_port_block`]: loopback ports for tests.
//! - [`redis`]: the Redis fixture, `channels_redis::testing` re-exported.
//! - [`http`]: an HTTP client (`reqwest` with rustls, no OpenSSL) and the
//!   response type the tests assert on; [`metric_value`] reads `/metrics`.
//! - [`ws`]: WebSocket clients (connect, send, next JSON or close frame).
//! - [`cdp`]: a headless Chromium driven over the DevTools protocol.
//!
//! Every wait has a deadline; children are killed on drop.
//!
//! ```no_run
//! use test_support::{ServerProcess, http};
//! # async fn demo() {
//! let server = ServerProcess::start(env!("CARGO_MANIFEST_DIR"), &["--bind", "127.0.0.1:0"], &[]);
//! let ready = http::get(server.addr(), "/readyz").await;
//! assert_eq!(ready.status, 200);
//! # }
//! ```

pub mod cdp;
pub mod http;
mod metrics;
mod ports;
mod process;
pub mod ws;

pub use metrics::metric_value;
pub use ports::{free_port, free_port_block};
pub use process::{START_TIMEOUT, ServerProcess, listening_addr};

/// The Redis fixture: a real `redis-server` (and Sentinel) on a free port,
/// and unique key prefixes (`channels_redis::testing`).
pub mod redis {
    pub use channels_redis::testing::{RedisSentinel, RedisServer, free_port, unique_prefix};

    /// Starts a private `redis-server` from async code (off the runtime's
    /// threads: starting waits for its port); panics when it cannot start.
    pub async fn start() -> RedisServer {
        tokio::task::spawn_blocking(RedisServer::start)
            .await
            .expect("start task")
            .expect("redis-server starts (is it installed?)")
    }
}

/// Polls `check` every 20 ms until it returns true or `timeout` passes;
/// returns whether it did: the way tests wait on a condition.
pub async fn eventually<F, Fut>(timeout: std::time::Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
