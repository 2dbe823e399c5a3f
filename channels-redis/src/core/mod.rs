//! The core layer: [`RedisChannelLayer`], byte-compatible with Python's
//! `channels_redis.core.RedisChannelLayer` 4.3 (WIRE.md §2).
//!
//! Layout: `layer.rs` (the `ChannelLayer`), `settings.rs` (fixed settings,
//! shard choice), `local.rs` (mailboxes of process-local channels, the loop's
//! health), `receive_loop.rs` (the worker popping the shared key),
//! `plain.rs` (named channels, popped on demand), `groups.rs` (group sends
//! and membership writes), `memberships.rs` (what to write again after an
//! outage, and the gate holding group sends until then), `shared_reads.rs`
//! (concurrent group sends share one read of the group), `group_cache.rs`
//! (group members kept while Redis's client tracking vouches for them), `history.rs` (group
//! histories: the history channel moved into a numbered log by one script).

mod group_cache;
mod groups;
mod history;
mod layer;
mod local;
mod memberships;
mod plain;
mod receive_loop;
mod settings;
mod shared_reads;

pub use layer::RedisChannelLayer;
