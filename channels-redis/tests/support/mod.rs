//! Shared test setup: one redis-server per test binary, unique prefixes.
#![allow(dead_code, unreachable_pub)] // each test binary uses a different subset

use std::sync::OnceLock;
use std::time::Duration;

use channels_core::{Message, Value};
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
    channels_redis::testing::connect(url)
        .await
        .expect("connect to test redis")
}

/// One second: the usual bound on a wait in these tests.
pub const WAIT: Duration = Duration::from_secs(1);

/// Polls `check` every 10 ms until it holds, failing (naming `what`) once
/// `within` has passed: the way these tests wait on a condition.
pub async fn wait_until<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    loop {
        tick.tick().await;
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} did not happen within {within:?}"
        );
    }
}

/// WIRE.md §8 message M.
pub fn wire_message() -> Message {
    Message::new("chat.message")
        .with("text", "hi")
        .with("n", -3)
        .with("f", 1.5)
        .with("b", vec![0u8, 0xff])
        .with(
            "l",
            Value::Array(vec![Value::from(1), Value::Nil, Value::from(true)]),
        )
        .with("m", Value::Map(vec![(Value::from("k"), Value::from("v"))]))
}

/// `packb(M)` after its map header (`87`, or `88` once `__asgi_channel__` is added), in hex.
pub const WIRE_BODY: &str = "a474797065ac636861742e6d657373616765a474657874a26869a16efda166cb3ff8000000000000a162c40200ffa16c9301c0c3a16d81a16ba176";

/// `packb(M)` in hex: what Python's pub/sub layer publishes for M.
pub fn wire_packed() -> String {
    format!("87{WIRE_BODY}")
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes of a hex string.
pub fn unhex(hex: &str) -> Vec<u8> {
    assert!(hex.len().is_multiple_of(2), "odd-length hex {hex:?}");
    (0..hex.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&hex[i..i + 2], 16)
                .unwrap_or_else(|error| panic!("bad hex {hex:?}: {error}"))
        })
        .collect()
}
