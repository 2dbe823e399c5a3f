//! # channels-redis
//!
//! Redis channel layers for rust-channels, byte-compatible with Python
//! `channels_redis` 4.3: [`RedisChannelLayer`] (sorted sets + Lua, like
//! `channels_redis.core.RedisChannelLayer`). Python and Rust processes can
//! share one Redis and exchange messages both ways.
//!
//! The building blocks are public for the pub/sub layer and for tools: the
//! msgpack codec ([`wire`]), the member codec with random prefix and Fernet
//! encryption ([`Serializer`]), the consistent hash ([`consistent_hash`]) and
//! host parsing ([`RedisHost`]).
//!
//! ```no_run
//! use channels_core::{ChannelLayer, Message};
//! use channels_redis::{RedisChannelLayer, RedisConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), channels_core::LayerError> {
//! let layer = RedisChannelLayer::new(RedisConfig::new().host("redis://127.0.0.1:6379"))?;
//! layer.send("jobs", Message::new("job.run").with("id", 1)).await?;
//! let job = layer.receive("jobs").await?;
//! assert_eq!(job.get("id").and_then(|v| v.as_i64()), Some(1));
//! # Ok(()) }
//! ```
//!
//! Differences from Python, on purpose: `send` to a `!` channel hashes the
//! non-local part (Python hashes the full name and loses messages on two or
//! more hosts, django/channels#1492); `group_send` prunes each key on its own
//! shard; a cancelled `receive` never loses a message.

mod config;
mod connection;
mod core;
#[cfg(feature = "encryption")]
mod crypto;
mod error;
mod hosts;
mod json;
mod keys;
mod lua;
mod presence;
mod pubsub;
mod serializer;
mod shard;
mod target;
#[cfg(feature = "testing")]
pub mod testing;
pub mod wire;

pub use config::{
    DEFAULT_BLOCKING_POOL_SIZE, DEFAULT_BRPOP_TIMEOUT, DEFAULT_COMMAND_TIMEOUT,
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_PREFIX, DEFAULT_RANDOM_PREFIX_LENGTH, RedisConfig,
};
pub use core::RedisChannelLayer;
#[cfg(feature = "encryption")]
pub use crypto::{Crypter, fernet_key};
pub use error::{BackendError, RestoringMemberships};
pub use hosts::{DEFAULT_HOST_URL, RedisHost, SentinelHost};
pub use presence::{DEFAULT_PRESENCE_GROUP_TTL, RedisPresence};
pub use pubsub::RedisPubSubChannelLayer;
pub use serializer::{Serializer, SerializerFormat};
pub use shard::consistent_hash;
