//! [`Registry`]: what this layer instance listens to (its channels and local
//! group memberships) and the fan-out of arriving payloads to mailboxes.
//!
//! Group membership is process-local, as in channels_redis: Redis only knows
//! that this process SUBSCRIBEd to `{prefix}__group__{group}`; which local
//! channels belong to the group lives here.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::serializer::Serializer;
use crate::shard::consistent_hash;

use super::mailbox::{Mailbox, Pushed};

/// Channels and groups of one layer instance, keyed by Redis pub/sub topic.
#[derive(Debug, Default)]
pub(super) struct Registry {
    local: Mutex<Local>,
    dropped: AtomicU64,
    undecodable: AtomicU64,
}

#[derive(Debug, Default)]
struct Local {
    /// Channel name (= its topic) → its buffer.
    channels: HashMap<String, Arc<Mailbox>>,
    /// Group topic (`{prefix}__group__{group}`) → member channel names.
    groups: HashMap<String, HashSet<String>>,
}

/// The outcome of [`Registry::join`].
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Joined {
    /// The channel is now a member.
    Member,
    /// The channel is not one of ours, so it cannot join.
    NotOwned,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, Local> {
        // Every critical section leaves the maps consistent, so a lock
        // poisoned by a panicking thread is still safe to use.
        self.local.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The mailbox of `channel`, if this instance listens to it.
    pub(super) fn channel(&self, channel: &str) -> Option<Arc<Mailbox>> {
        self.lock().channels.get(channel).cloned()
    }

    /// Returns the mailbox of `channel`, creating it with `capacity` if needed.
    pub(super) fn add_channel(&self, channel: &str, capacity: usize) -> Arc<Mailbox> {
        let mut local = self.lock();
        Arc::clone(
            local
                .channels
                .entry(channel.to_owned())
                .or_insert_with(|| Arc::new(Mailbox::new(channel.to_owned(), capacity))),
        )
    }

    /// Forgets `channel` and its memberships; closes its mailbox. Returns the
    /// group topics left without members (to UNSUBSCRIBE).
    pub(super) fn remove_channel(&self, channel: &str) -> Vec<String> {
        let (mailbox, emptied) = {
            let mut local = self.lock();
            let mailbox = local.channels.remove(channel);
            let mut emptied = Vec::new();
            local.groups.retain(|topic, members| {
                if members.remove(channel) && members.is_empty() {
                    emptied.push(topic.clone());
                    return false;
                }
                true
            });
            (mailbox, emptied)
        };
        if let Some(mailbox) = mailbox {
            mailbox.close();
        }
        emptied
    }

    /// Adds `channel` to the group listening on `topic`.
    pub(super) fn join(&self, topic: &str, channel: &str) -> Joined {
        let mut local = self.lock();
        if !local.channels.contains_key(channel) {
            return Joined::NotOwned;
        }
        local
            .groups
            .entry(topic.to_owned())
            .or_default()
            .insert(channel.to_owned());
        Joined::Member
    }

    /// Removes `channel` from the group on `topic`; returns whether the group
    /// is now empty here (so its topic can be UNSUBSCRIBEd).
    pub(super) fn leave(&self, topic: &str, channel: &str) -> bool {
        let mut local = self.lock();
        let Some(members) = local.groups.get_mut(topic) else {
            return false;
        };
        if !members.remove(channel) || !members.is_empty() {
            return false;
        }
        local.groups.remove(topic);
        true
    }

    /// Whether this instance still needs to be subscribed to `topic`.
    pub(super) fn wants(&self, topic: &str) -> bool {
        let local = self.lock();
        local.channels.contains_key(topic) || local.groups.contains_key(topic)
    }

    /// Every topic living on shard `index` of `shards` (for resubscribing).
    pub(super) fn topics_on_shard(&self, index: usize, shards: usize) -> Vec<String> {
        let local = self.lock();
        local
            .channels
            .keys()
            .chain(local.groups.keys())
            .filter(|topic| consistent_hash(topic, shards) == index)
            .cloned()
            .collect()
    }

    /// Empties every mailbox and forgets every group; returns the group
    /// topics that are no longer needed.
    pub(super) fn flush(&self) -> Vec<String> {
        let (mailboxes, topics) = {
            let mut local = self.lock();
            let groups = std::mem::take(&mut local.groups);
            let topics = groups
                .into_keys()
                .filter(|topic| !local.channels.contains_key(topic))
                .collect::<Vec<_>>();
            (local.channels.values().cloned().collect::<Vec<_>>(), topics)
        };
        for mailbox in mailboxes {
            mailbox.clear();
        }
        topics
    }

    /// Forgets everything and closes every mailbox (pending receives get
    /// `LayerError::Closed`).
    pub(super) fn close(&self) {
        let channels = {
            let mut local = self.lock();
            local.groups.clear();
            std::mem::take(&mut local.channels)
        };
        for mailbox in channels.into_values() {
            mailbox.close();
        }
    }

    /// Delivers a payload that arrived on `topic` to the channel of that name
    /// and to every local member of the group of that topic. Decodes it once.
    pub(super) fn deliver(&self, topic: &str, payload: &[u8], serializer: &Serializer) {
        let targets = {
            let local = self.lock();
            let mut targets: Vec<Arc<Mailbox>> = Vec::new();
            if let Some(mailbox) = local.channels.get(topic) {
                targets.push(Arc::clone(mailbox));
            }
            if let Some(members) = local.groups.get(topic) {
                targets.extend(
                    members
                        .iter()
                        .filter_map(|member| local.channels.get(member).cloned()),
                );
            }
            targets
        };
        if targets.is_empty() {
            return;
        }
        let message = match serializer.deserialize(payload) {
            Ok(unpacked) => unpacked.message,
            Err(error) => {
                self.undecodable.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%topic, %error, bytes = payload.len(), "dropping an undecodable pub/sub message");
                return;
            }
        };
        for mailbox in targets {
            if let Pushed::DroppedOldest(count) = mailbox.push(message.clone()) {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                // Log the first drop and then every 1,000th, not a line per message.
                if count == 1 || count.is_multiple_of(1_000) {
                    tracing::warn!(
                        channel = mailbox.channel(),
                        dropped = count,
                        "channel buffer full: dropped its oldest message; receive faster or raise the capacity"
                    );
                }
            }
        }
    }

    /// Messages dropped because a channel's buffer was full.
    pub(super) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Payloads that could not be decoded (wrong key, not msgpack, ...).
    pub(super) fn undecodable(&self) -> u64 {
        self.undecodable.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use channels_core::Message;

    use super::*;
    use crate::serializer::SerializerFormat;
    use crate::wire::{Route, pack};

    fn payload(message_type: &str) -> Vec<u8> {
        pack(&Message::new(message_type), Route::None).unwrap()
    }

    #[test]
    fn group_payload_fans_out_to_local_members_only() {
        let registry = Registry::default();
        let serializer = Serializer::new(SerializerFormat::Msgpack, 0);
        let a = registry.add_channel("asgispecific.a", 10);
        let b = registry.add_channel("asgispecific.b", 10);
        let c = registry.add_channel("asgispecific.c", 10);
        assert_eq!(
            registry.join("asgi__group__g", "asgispecific.a"),
            Joined::Member
        );
        assert_eq!(
            registry.join("asgi__group__g", "asgispecific.b"),
            Joined::Member
        );
        assert_eq!(
            registry.join("asgi__group__g", "asgispecific.zz"),
            Joined::NotOwned
        );
        registry.deliver("asgi__group__g", &payload("m.1"), &serializer);
        assert_eq!((a.len(), b.len(), c.len()), (1, 1, 0));
        assert!(!registry.leave("asgi__group__g", "asgispecific.a"));
        assert!(registry.leave("asgi__group__g", "asgispecific.b"));
        assert!(!registry.wants("asgi__group__g"));
        registry.deliver("asgi__group__g", &payload("m.2"), &serializer);
        assert_eq!((a.len(), b.len()), (1, 1));
    }

    #[test]
    fn full_buffers_count_drops_and_bad_payloads_are_counted() {
        let registry = Registry::default();
        let serializer = Serializer::new(SerializerFormat::Msgpack, 0);
        registry.add_channel("ch", 2);
        for _ in 0..5 {
            registry.deliver("ch", &payload("m"), &serializer);
        }
        assert_eq!(registry.dropped(), 3);
        registry.deliver("ch", b"\xc1 not msgpack", &serializer);
        assert_eq!(registry.undecodable(), 1);
    }

    #[test]
    fn removing_a_channel_empties_its_groups() {
        let registry = Registry::default();
        registry.add_channel("x", 1);
        registry.join("t1", "x");
        assert_eq!(registry.remove_channel("x"), vec!["t1".to_owned()]);
        assert!(!registry.wants("x"));
        assert!(!registry.wants("t1"));
    }

    #[test]
    fn topics_are_split_by_the_consistent_hash() {
        let registry = Registry::default();
        registry.add_channel("asgi__group__chat", 1);
        registry.add_channel("chat", 1);
        // WIRE §5: `asgi__group__chat` → shard 1 of 2, `chat` → shard 0.
        assert_eq!(
            registry.topics_on_shard(1, 2),
            vec!["asgi__group__chat".to_owned()]
        );
        assert_eq!(registry.topics_on_shard(0, 2), vec!["chat".to_owned()]);
    }
}
