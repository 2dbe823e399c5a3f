//! [`HistoryStore`]: a layer's bounded, ordered record of what was sent to a
//! group, so a reader that was away can ask for what it missed.
//!
//! The store learns a group's messages the way any member does: a history
//! channel ([`history_channel`]) is added to the group, so every
//! `group_send` (from this process, another one, or Python
//! `channels_redis`) queues one copy there. [`HistoryStore::sync`] moves
//! those copies into the group's log in the order the channel holds them,
//! numbering them: each kept message has an **offset** (one more than the
//! one before), and the log an **epoch** that changes whenever the log is
//! lost (Redis restarted empty or flushed, the group idle past its window),
//! so a position `(offset, epoch)` never names two different messages.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::LayerError;
use crate::message::Message;
use crate::names::MAX_NAME_LENGTH;

/// The prefix of history channel names.
pub const HISTORY_CHANNEL_PREFIX: &str = "history.";

/// How much of a group's history is kept: the newest `size` messages, none
/// older than `ttl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    /// The most messages kept (at least 1).
    pub size: usize,
    /// How long a message is kept.
    pub ttl: Duration,
}

/// What [`HistoryStore::sync`] found: the log's epoch and bounds, and the
/// kept messages after the offset asked for, oldest first.
#[derive(Debug, Clone)]
pub struct HistorySnapshot {
    /// The log's epoch.
    pub epoch: Arc<str>,
    /// The offset of the newest message ever appended in this epoch (0 when
    /// none was).
    pub top: u64,
    /// The offset of the oldest message still kept (`top + 1` when none is).
    pub first: u64,
    /// `(offset, message)` for every kept message after the asked-for
    /// offset, in order.
    pub entries: Vec<(u64, Message)>,
}

impl HistorySnapshot {
    /// Whether every message after `offset` in this epoch is still kept (or
    /// there was none).
    pub fn covers(&self, offset: u64) -> bool {
        offset <= self.top && offset + 1 >= self.first
    }
}

/// A backend's store of group histories (see the module docs).
#[async_trait]
pub trait HistoryStore: Send + Sync + Debug + 'static {
    /// Starts (or renews) keeping `group`'s history: adds its history
    /// channel to the group. Call it before the first [`Self::sync`] and
    /// again after the epoch changed (the membership may be gone with it).
    ///
    /// # Errors
    /// [`LayerError::InvalidGroupName`], [`LayerError::Backend`].
    async fn track(&self, group: &str) -> Result<(), LayerError>;

    /// Appends what reached the group's history channel since the last call
    /// (by any process) to the log, trims the log to `limits`, and returns
    /// it from `after` on (`after` is an offset; entries with a greater one
    /// are returned). A log that does not exist is created with a new epoch.
    ///
    /// # Errors
    /// [`LayerError::InvalidGroupName`], [`LayerError::Backend`].
    async fn sync(
        &self,
        group: &str,
        after: u64,
        limits: HistoryLimits,
    ) -> Result<HistorySnapshot, LayerError>;
}

/// The history channel of `group`: `history.<group>`, or, when that would
/// break the name length rule, `history.x` and 32 hex digits of a hash of
/// the group name. A plain (not process-local) channel, so the copy a
/// `group_send` queues there waits for whichever process syncs first.
pub fn history_channel(group: &str) -> String {
    if HISTORY_CHANNEL_PREFIX.len() + group.len() < MAX_NAME_LENGTH {
        return format!("{HISTORY_CHANNEL_PREFIX}{group}");
    }
    // Two independent 64-bit FNV-1a hashes: stable across processes and
    // versions (unlike the standard hasher), no dependency.
    let hash = |seed: u64| {
        group.bytes().fold(seed, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        })
    };
    format!(
        "{HISTORY_CHANNEL_PREFIX}x{:016x}{:016x}",
        hash(0xcbf2_9ce4_8422_2325),
        hash(0x84222325_cbf29ce4)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::validate_channel_name;

    #[test]
    fn history_channels_are_valid_names_for_any_valid_group() {
        assert_eq!(history_channel("chat.lobby"), "history.chat.lobby");
        let long = "g".repeat(99);
        let channel = history_channel(&long);
        assert!(channel.starts_with("history.x"));
        assert_eq!(channel.len(), "history.x".len() + 32);
        validate_channel_name(&channel).unwrap();
        assert_ne!(channel, history_channel(&"h".repeat(99)));
        assert_eq!(channel, history_channel(&long));
    }

    #[test]
    fn a_snapshot_covers_positions_inside_its_window() {
        let snapshot = HistorySnapshot {
            epoch: Arc::from("e"),
            top: 10,
            first: 6,
            entries: Vec::new(),
        };
        assert!(snapshot.covers(5));
        assert!(snapshot.covers(10));
        assert!(!snapshot.covers(4));
        assert!(!snapshot.covers(11));
        let empty = HistorySnapshot {
            first: 11,
            ..snapshot
        };
        assert!(empty.covers(10));
        assert!(!empty.covers(9));
    }
}
