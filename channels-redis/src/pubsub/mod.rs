//! The pub/sub layer: [`RedisPubSubChannelLayer`], byte-compatible with
//! Python's `channels_redis.pubsub.RedisPubSubChannelLayer` 4.3 (WIRE.md §3).
//!
//! Layout: `layer.rs` (the `ChannelLayer`), `registry.rs` (local channels,
//! each a `channels_core::Mailbox`, and group memberships; fan-out) with
//! `group.rs` (one group's members) and `dirty.rs` (topics a release may
//! have left unwanted); `shard.rs` (one Redis server: publishing connection,
//! the handle of its worker), `command.rs` (what callers ask the worker),
//! `worker.rs` (owns the subscriber connection: SUBSCRIBE, UNSUBSCRIBE,
//! delivery, reconnects); `error.rs`.

mod command;
mod dirty;
mod error;
mod group;
mod layer;
mod registry;
mod shard;
mod worker;

pub use layer::RedisPubSubChannelLayer;
