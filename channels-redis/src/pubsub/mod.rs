//! The pub/sub layer: [`RedisPubSubChannelLayer`], byte-compatible with
//! Python's `channels_redis.pubsub.RedisPubSubChannelLayer` 4.3 (WIRE.md §3).
//!
//! Layout: `layer.rs` (the `ChannelLayer`), `registry.rs` (local channels and
//! group memberships, fan-out), `mailbox.rs` (bounded per-channel buffers),
//! `shard.rs` (one Redis server: publishing connection, subscriber link),
//! `subscriber.rs` (the worker keeping a shard's subscriber connection up),
//! `target.rs` (a fixed server or the master Sentinel names), `backoff.rs`,
//! `error.rs`.

mod backoff;
mod error;
mod layer;
mod mailbox;
mod registry;
mod shard;
mod subscriber;

pub use layer::RedisPubSubChannelLayer;
