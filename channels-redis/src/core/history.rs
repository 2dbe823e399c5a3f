//! [`RedisHistory`]: group histories kept in Redis (the core layer's
//! [`HistoryStore`]), so a client recovers through any server process.
//!
//! Keys, on the shard that owns the group's history channel (where
//! `group_send` queues its copy, channels_redis's consistent hash):
//! - `{prefix}history.{group}`: the history channel's ZSET, written by
//!   `group_send` (ours and channels_redis's own Lua, unchanged);
//! - `…$log`: a LIST of `<ms>|<member>` entries, oldest first;
//! - `…$meta`: a HASH with `epoch` and `top` (the newest offset).
//!
//! [`HistoryStore::sync`] is one Lua script ([`lua::HISTORY_SYNC`]): move,
//! number, trim, read. Atomic, so several processes syncing the same group
//! number every message once. A Redis that lost the keys (restarted empty,
//! flushed) gets a new epoch on the next sync.

use std::sync::Arc;

use async_trait::async_trait;
use channels_core::{
    DropCounters, HistoryLimits, HistorySnapshot, HistoryStore, LayerError, history_channel,
    validate_group_name,
};
use redis::Value;
use tracing::warn;

use super::groups::add_membership;
use super::settings::{Settings, Shards};
use crate::lua;

/// Meta hashes outlive the log by this long, so a client back after the
/// window hears `too_old` (its epoch is still known) rather than a new epoch.
const META_GRACE_SECS: u64 = 24 * 60 * 60;

/// The core layer's histories. Get it with
/// [`ChannelLayer::history`](channels_core::ChannelLayer::history).
#[derive(Debug)]
pub(crate) struct RedisHistory {
    settings: Arc<Settings>,
    shards: Arc<Shards>,
    drops: Arc<DropCounters>,
}

impl RedisHistory {
    pub(crate) fn new(
        settings: Arc<Settings>,
        shards: Arc<Shards>,
        drops: Arc<DropCounters>,
    ) -> Self {
        Self {
            settings,
            shards,
            drops,
        }
    }
}

#[async_trait]
impl HistoryStore for RedisHistory {
    async fn track(&self, group: &str) -> Result<(), LayerError> {
        validate_group_name(group)?;
        add_membership(&self.settings, &self.shards, group, &history_channel(group)).await
    }

    async fn sync(
        &self,
        group: &str,
        after: u64,
        limits: HistoryLimits,
    ) -> Result<HistorySnapshot, LayerError> {
        validate_group_name(group)?;
        let channel = history_channel(group);
        let key = self.settings.channel_key(&channel);
        let shard = self.shards.get(self.shards.index_for_local(&channel));
        let mut connection = shard.commands("history").await?;
        let ttl_ms = u64::try_from(limits.ttl.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let reply: Value = lua::HISTORY_SYNC
            .key(&key)
            .key(format!("{key}$log"))
            .key(format!("{key}$meta"))
            .arg(after)
            .arg(limits.size.max(1))
            .arg(ttl_ms)
            .arg(uuid::Uuid::new_v4().simple().to_string())
            .arg(limits.ttl.as_secs() + META_GRACE_SECS)
            .invoke_async(&mut connection)
            .await
            .map_err(|e| shard.error("history", e))?;
        self.snapshot(group, reply)
    }
}

impl RedisHistory {
    /// Reads the script's `{epoch, top, first, entries}`.
    fn snapshot(&self, group: &str, reply: Value) -> Result<HistorySnapshot, LayerError> {
        let unexpected = || LayerError::backend(format!("unexpected history reply for `{group}`"));
        let Value::Array(mut parts) = reply else {
            return Err(unexpected());
        };
        if parts.len() != 4 {
            return Err(unexpected());
        }
        let entries = parts.pop().ok_or_else(unexpected)?;
        let first = integer(parts.pop().ok_or_else(unexpected)?).ok_or_else(unexpected)?;
        let top = integer(parts.pop().ok_or_else(unexpected)?).ok_or_else(unexpected)?;
        let epoch = match parts.pop() {
            Some(Value::BulkString(bytes)) => String::from_utf8(bytes).map_err(|_| unexpected())?,
            _ => return Err(unexpected()),
        };
        let Value::Array(entries) = entries else {
            return Err(unexpected());
        };
        let from = top + 1 - entries.len() as u64;
        let mut decoded = Vec::with_capacity(entries.len());
        for (offset, entry) in (from..).zip(entries) {
            let Value::BulkString(bytes) = entry else {
                return Err(unexpected());
            };
            let member = bytes
                .iter()
                .position(|&byte| byte == b'|')
                .and_then(|bar| bytes.get(bar + 1..));
            match member.map(|member| self.settings.history_serializer.deserialize(member)) {
                Some(Ok(unpacked)) => decoded.push((offset, unpacked.message)),
                Some(Err(error)) => {
                    self.drops.count_undecodable();
                    warn!(%group, offset, %error, "skipping an undecodable history entry");
                }
                None => {
                    self.drops.count_undecodable();
                    warn!(%group, offset, "skipping a malformed history entry");
                }
            }
        }
        Ok(HistorySnapshot {
            epoch: Arc::from(epoch.as_str()),
            top,
            first,
            entries: decoded,
        })
    }
}

/// A non-negative integer reply.
fn integer(value: Value) -> Option<u64> {
    match value {
        Value::Int(n) => u64::try_from(n).ok(),
        _ => None,
    }
}
