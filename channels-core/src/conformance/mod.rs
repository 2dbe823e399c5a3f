//! The conformance suite: every behaviour of `CONFORMANCE.md` that a channel
//! layer must show, as one `pub async fn` per check, named by its ID
//! (`n1_valid_names`, `g1_groups_basic`, ...). Each check takes a
//! [`LayerFactory`], creates fresh layers from it and panics with a message
//! naming the check when the layer misbehaves.
//!
//! # Hooking a backend in
//!
//! Implement [`LayerFactory`] for a small factory type and call the macros from
//! the backend's `tests/conformance.rs`. Each macro generates one `#[test]` per
//! check, named exactly like the check function, running on a multi-threaded
//! tokio runtime with two workers ([`test_runtime`]). The factory expression is
//! evaluated inside each test, on that runtime; a backend that needs async setup
//! (a server, a connection) does it lazily inside [`LayerFactory::create`].
//!
//! ```ignore
//! // channels-memory/tests/conformance.rs
//! use std::time::Duration;
//! use channels_core::conformance::LayerFactory;
//! use channels_core::{LayerConfig, SharedLayer};
//! use channels_memory::InMemoryChannelLayer;
//!
//! struct MemoryFactory;
//!
//! #[channels_core::async_trait]
//! impl LayerFactory for MemoryFactory {
//!     async fn create(&self, config: LayerConfig) -> SharedLayer {
//!         std::sync::Arc::new(InMemoryChannelLayer::with_config(config))
//!     }
//!     fn time_unit(&self) -> Duration {
//!         Duration::from_millis(100)
//!     }
//! }
//!
//! channels_core::conformance_general!(MemoryFactory); // every [G] check
//! channels_core::conformance_queue!(MemoryFactory); // every [Q] check
//! ```
//!
//! The backend's `Cargo.toml` needs
//! `channels-core = { workspace = true, features = ["conformance"] }` under
//! `[dev-dependencies]` and nothing else: the generated tests build their own
//! runtime, so no `tokio` dev-dependency is required. Run the suite with
//! `cargo test -p <backend> --test conformance` (or `cargo nextest run`, which
//! runs the checks in parallel; the slowest wait about 5 time units).
//!
//! \[G\] checks (every layer, pub/sub included) only receive on names from
//! `new_channel()`; \[Q\] checks (queue layers: memory and Redis core) also use
//! plain names, capacities and expiry. Expiry checks scale by
//! [`LayerFactory::time_unit`]. "Nothing in 1 s" means a `receive` still pending
//! after one second, then cancelled: layers must be cancel-safe.

use std::future::Future;
use std::time::Duration;

use futures_util::future::join_all;
use tokio::task::JoinHandle;

use crate::config::LayerConfig;
use crate::error::LayerError;
use crate::layer::{ChannelLayer, SharedLayer};
use crate::message::{Message, RESERVED_CHANNEL_KEY, Value};

mod capacity;
mod concurrency;
mod expiry;
mod flush;
mod groups;
mod handles;
mod macros;
mod messages;
mod names;
mod process_local;
mod send_receive;
mod values;

pub use capacity::*;
pub use concurrency::*;
pub use expiry::*;
pub use flush::*;
pub use groups::*;
pub use handles::*;
pub use messages::*;
pub use names::*;
pub use process_local::*;
pub use send_receive::*;
pub use values::*;

/// Makes fresh layers for the conformance checks.
#[async_trait::async_trait]
pub trait LayerFactory: Send + Sync + 'static {
    /// A fresh, empty layer configured with `config` (networked layers use a
    /// unique key prefix per call).
    async fn create(&self, config: LayerConfig) -> SharedLayer;

    /// Smallest expiry step the backend can represent: 100 ms for memory, 1 s
    /// for Redis (whole seconds).
    fn time_unit(&self) -> std::time::Duration;
}

/// How long "nothing arrives" checks wait (CONFORMANCE.md: "nothing in 1 s").
pub const NOTHING_WAIT: Duration = Duration::from_secs(1);

/// How long a check waits for a message that must arrive "within 1 s".
pub const DELIVERY_WAIT: Duration = Duration::from_secs(1);

/// How long a check waits for a message whose latency the checklist does not
/// bound (bulk and stress checks); generous so a loaded machine does not flake.
pub const SLOW_DELIVERY_WAIT: Duration = Duration::from_secs(10);

/// The runtime every generated conformance test runs on: multi-threaded, two
/// workers, timers and I/O enabled (what
/// `#[tokio::test(flavor = "multi_thread", worker_threads = 2)]` builds).
pub fn test_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("building a tokio runtime for a conformance test cannot fail on a normal machine")
}

/// Creates a layer with Django's default configuration.
pub async fn default_layer(factory: &dyn LayerFactory) -> SharedLayer {
    factory.create(LayerConfig::default()).await
}

/// A message of type `message_type` and nothing else.
pub fn typed(message_type: &str) -> Message {
    Message::new(message_type)
}

/// A `message.<n>` message that also carries `n`, for ordering checks.
pub fn numbered(n: u64) -> Message {
    Message::new(format!("message.{n}")).with("n", n)
}

/// The `n` of a [`numbered`] message.
///
/// # Panics
/// When the message has no integer `n`.
pub fn number_of(message: &Message) -> u64 {
    message
        .get("n")
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("expected a numbered message, got {message:?}"))
}

/// Receives from `channel`, panicking if nothing arrives within `wait` or the
/// receive fails.
pub async fn receive_within(layer: &dyn ChannelLayer, channel: &str, wait: Duration) -> Message {
    match tokio::time::timeout(wait, layer.receive(channel)).await {
        Ok(Ok(message)) => {
            assert!(
                message.get(RESERVED_CHANNEL_KEY).is_none(),
                "a message received on `{channel}` still carries the layer's routing key \
                 `{RESERVED_CHANNEL_KEY}`: {message:?}"
            );
            message
        }
        Ok(Err(error)) => panic!("receive on `{channel}` failed: {error}"),
        Err(_) => panic!("nothing arrived on `{channel}` within {wait:?}"),
    }
}

/// Receives from `channel` within `wait` and checks the message's `type`.
pub async fn receive_type(
    layer: &dyn ChannelLayer,
    channel: &str,
    wait: Duration,
    expected_type: &str,
) -> Message {
    let message = receive_within(layer, channel, wait).await;
    assert_eq!(
        message.message_type(),
        Some(expected_type),
        "wrong message on `{channel}`: {message:?}"
    );
    message
}

/// Asserts that a `receive` on `channel` is still pending after `wait` (it is
/// then cancelled).
pub async fn assert_nothing_within(layer: &dyn ChannelLayer, channel: &str, wait: Duration) {
    match tokio::time::timeout(wait, layer.receive(channel)).await {
        Err(_) => {}
        Ok(Ok(message)) => {
            panic!("expected nothing on `{channel}` for {wait:?}, but received {message:?}")
        }
        Ok(Err(error)) => {
            panic!("expected a pending receive on `{channel}`, but it failed: {error}")
        }
    }
}

/// [`assert_nothing_within`] on several channels at once (one wait in all).
pub async fn assert_nothing_within_all(
    layer: &dyn ChannelLayer,
    channels: &[&str],
    wait: Duration,
) {
    join_all(
        channels
            .iter()
            .map(|channel| assert_nothing_within(layer, channel, wait)),
    )
    .await;
}

/// Asserts that two messages hold the same fields with equal values (in any
/// order: a message is a map).
pub fn assert_same_message(received: &Message, sent: &Message) {
    assert_eq!(
        received.len(),
        sent.len(),
        "received {received:?}, sent {sent:?}: different fields"
    );
    for (key, value) in sent.iter() {
        assert_eq!(
            received.get(key),
            Some(value),
            "field `{key}` changed in transit: received {received:?}, sent {sent:?}"
        );
    }
}

/// Creates a process-local channel with the given prefix, panicking on error.
pub async fn new_channel(layer: &dyn ChannelLayer, prefix: &str) -> String {
    layer
        .new_channel(prefix)
        .await
        .unwrap_or_else(|error| panic!("new_channel({prefix:?}) failed: {error}"))
}

/// Sends, panicking with the channel and error on failure.
pub async fn send_ok(layer: &dyn ChannelLayer, channel: &str, message: Message) {
    if let Err(error) = layer.send(channel, message).await {
        panic!("send to `{channel}` failed: {error}");
    }
}

/// Sends to a group, panicking with the group and error on failure.
pub async fn group_send_ok(layer: &dyn ChannelLayer, group: &str, message: Message) {
    if let Err(error) = layer.group_send(group, message).await {
        panic!("group_send to `{group}` failed: {error}");
    }
}

/// Adds `channel` to `group`, panicking on error.
pub async fn group_add_ok(layer: &dyn ChannelLayer, group: &str, channel: &str) {
    if let Err(error) = layer.group_add(group, channel).await {
        panic!("group_add({group:?}, {channel:?}) failed: {error}");
    }
}

/// Removes `channel` from `group`, panicking on error.
pub async fn group_discard_ok(layer: &dyn ChannelLayer, group: &str, channel: &str) {
    if let Err(error) = layer.group_discard(group, channel).await {
        panic!("group_discard({group:?}, {channel:?}) failed: {error}");
    }
}

/// Flushes and closes a layer at the end of a check, so networked backends
/// leave no keys or connections behind.
pub async fn finish(layer: &dyn ChannelLayer) {
    if let Err(error) = layer.flush().await {
        panic!("flush at the end of the check failed: {error}");
    }
    if let Err(error) = layer.close().await {
        panic!("close at the end of the check failed: {error}");
    }
}

/// Spawns `future` on the runtime, so it makes progress while the check does
/// something else.
pub(crate) fn spawn<T: Send + 'static>(
    future: impl Future<Output = T> + Send + 'static,
) -> JoinHandle<T> {
    tokio::spawn(future)
}

/// Awaits a spawned task, re-raising its panic so the check fails with the
/// task's own message.
pub(crate) async fn join<T>(handle: JoinHandle<T>) -> T {
    match handle.await {
        Ok(value) => value,
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Err(error) => panic!("a check task was cancelled: {error}"),
    }
}

/// Spawns a `receive` on `channel` of a shared layer.
pub(crate) fn spawn_receive(
    layer: &SharedLayer,
    channel: &str,
) -> JoinHandle<Result<Message, LayerError>> {
    let layer = SharedLayer::clone(layer);
    let channel = channel.to_owned();
    spawn(async move { layer.receive(&channel).await })
}

/// Awaits a spawned receive for at most `wait`, panicking on timeout or error.
pub(crate) async fn finish_receive(
    handle: JoinHandle<Result<Message, LayerError>>,
    channel: &str,
    wait: Duration,
) -> Message {
    match tokio::time::timeout(wait, join(handle)).await {
        Ok(Ok(message)) => message,
        Ok(Err(error)) => panic!("receive on `{channel}` failed: {error}"),
        Err(_) => panic!("nothing arrived on `{channel}` within {wait:?}"),
    }
}

/// Receives on `channel` through a receive started 0.1 s before the send, so
/// layers that only hear subscribed channels (pub/sub) can deliver it.
pub async fn round_trip(layer: &SharedLayer, channel: &str, message: Message) -> Message {
    let pending = spawn_receive(layer, channel);
    tokio::time::sleep(Duration::from_millis(100)).await;
    send_ok(&**layer, channel, message).await;
    finish_receive(pending, channel, DELIVERY_WAIT).await
}

/// Scales `units` time units of `factory` (e.g. 2.5 units).
pub fn units(factory: &dyn LayerFactory, units: f64) -> Duration {
    factory.time_unit().mul_f64(units)
}
