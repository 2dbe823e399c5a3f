//! What every part of the core layer reads and nobody changes after start
//! ([`Settings`]), and the shards with the rules that pick one ([`Shards`]).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use channels_core::{LayerConfig, is_process_local, non_local_name};

use crate::connection::Shard;
use crate::keys;
use crate::serializer::Serializer;
use crate::shard::consistent_hash;

/// The layer's fixed settings.
#[derive(Debug)]
pub(crate) struct Settings {
    /// Key prefix (channels_redis `prefix`).
    pub(crate) prefix: String,
    /// Capacities, expiry, group expiry.
    pub(crate) layer: LayerConfig,
    /// Member codec (random prefix, Fernet, msgpack or JSON).
    pub(crate) serializer: Serializer,
    /// The same codec for history entries, which outlive the message expiry
    /// (Fernet tokens are checked without a TTL).
    pub(crate) history_serializer: Serializer,
    /// This instance's `<cp>` in `specific.<cp>!<local>` names.
    pub(crate) client_prefix: String,
    /// How long one blocking pop waits (channels_redis `brpop_timeout`).
    pub(crate) brpop_timeout: Duration,
}

impl Settings {
    /// The ZSET of `channel`'s messages.
    pub(crate) fn channel_key(&self, channel: &str) -> String {
        keys::channel_key(&self.prefix, channel)
    }

    /// The ZSET of `group`'s members.
    pub(crate) fn group_key(&self, group: &str) -> String {
        keys::group_key(&self.prefix, group)
    }

    /// Whether `channel` is one of this instance's process-local channels.
    pub(crate) fn owns(&self, channel: &str) -> bool {
        is_process_local(channel)
            && non_local_name(channel)
                .strip_suffix('!')
                .is_some_and(|head| head.ends_with(self.client_prefix.as_str()))
    }

    /// Message expiry in whole seconds, as Redis `EXPIRE` takes it.
    pub(crate) fn expiry_secs(&self) -> u64 {
        self.layer.expiry.as_secs()
    }

    /// Group membership expiry in whole seconds.
    pub(crate) fn group_expiry_secs(&self) -> u64 {
        self.layer.group_expiry.as_secs()
    }
}

/// `int(now) - expiry`, the highest score that counts as expired.
pub(crate) fn prune_before(now: f64, expiry: Duration) -> i64 {
    #[allow(clippy::cast_possible_truncation)] // Unix seconds fit in i64
    let whole = now.floor() as i64;
    whole - i64::try_from(expiry.as_secs()).unwrap_or(i64::MAX)
}

/// Seconds since the Unix epoch, as Python's `time.time()`.
pub(crate) fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The configured hosts, and which one each operation goes to (WIRE.md §5).
#[derive(Debug)]
pub(crate) struct Shards {
    shards: Vec<Shard>,
    send_counter: AtomicUsize,
    receive_counter: AtomicUsize,
}

impl Shards {
    pub(crate) fn new(shards: Vec<Shard>) -> Self {
        Self {
            shards,
            send_counter: AtomicUsize::new(0),
            receive_counter: AtomicUsize::new(0),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.shards.len()
    }

    pub(crate) fn get(&self, index: usize) -> &Shard {
        &self.shards[index]
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Shard> {
        self.shards.iter()
    }

    /// The shard of a group (hash of the bare group name).
    pub(crate) fn index_for_group(&self, group: &str) -> usize {
        consistent_hash(group, self.shards.len())
    }

    /// The shard of a process-local channel's key (hash of its non-local
    /// part, for send and receive alike; Python's send hashes the full name
    /// and loses messages on two or more hosts, django/channels#1492).
    pub(crate) fn index_for_local(&self, channel: &str) -> usize {
        consistent_hash(non_local_name(channel), self.shards.len())
    }

    /// The shard a `send` to `channel` goes to: process-local by hash, plain
    /// names round-robin.
    pub(crate) fn index_for_send(&self, channel: &str) -> usize {
        if is_process_local(channel) {
            self.index_for_local(channel)
        } else {
            self.send_counter.fetch_add(1, Ordering::Relaxed) % self.shards.len()
        }
    }

    /// The shard the next pop of a plain channel polls (round-robin).
    pub(crate) fn next_receive(&self) -> usize {
        self.receive_counter.fetch_add(1, Ordering::Relaxed) % self.shards.len()
    }

    /// Drops every cached connection (`close()`).
    pub(crate) fn reset(&self) {
        for shard in &self.shards {
            shard.reset();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prune_uses_whole_seconds() {
        assert_eq!(prune_before(1000.9, Duration::from_secs(60)), 940);
        assert_eq!(prune_before(1000.1, Duration::from_millis(500)), 1000);
    }
}
