//! [`Registry`]: what this layer instance listens to (its channels, each a
//! [`Mailbox`], and its local group memberships) and the fan-out of arriving
//! payloads into those mailboxes.
//!
//! Group membership is process-local, as in channels_redis: Redis only knows
//! that this process SUBSCRIBEd to `{prefix}__group__{group}`; which local
//! channels belong to the group lives here. The registry is the one list of
//! topics this instance wants: a topic is wanted while a channel of that
//! name or a group of that topic is registered. Changes that may leave a
//! topic unwanted mark it in its shard's [`DirtyTopics`], and the shard's
//! worker UNSUBSCRIBEs it if it is still unwanted when it looks.
//!
//! A channel lives while something holds it: a receiver handle, a `receive`
//! in progress, or a pin (`new_channel`, or a `receive` that registered the
//! name: Django's names stay subscribed until `delete_channel` or `close`).
//! Releasing it takes it out of its groups too.
//!
//! Locks: one read-write lock over the maps (writes are short map updates;
//! a delivery holds it for reading only to look its topic up), then each
//! group's own (see `group.rs`), then a mailbox's.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use channels_core::{ChannelCapacities, DropCounters, Mailbox, Message, Receiver, Release};
use tokio::time::Instant;

use crate::serializer::Serializer;
use crate::shard::consistent_hash;

use super::dirty::DirtyTopics;
use super::group::Group;

/// Pub/sub messages never expire locally (channels_redis keeps them until
/// read); mailboxes get an expiry this far away.
const NO_EXPIRY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Channels and groups of one layer instance, keyed by Redis pub/sub topic.
#[derive(Debug)]
pub(super) struct Registry {
    local: RwLock<Local>,
    capacities: ChannelCapacities,
    drops: Arc<DropCounters>,
    /// The expiry given to every queued message: never, in practice.
    no_expiry: Instant,
    /// Per shard: topics to look at again, and its worker's wake-up.
    dirty: Box<[DirtyTopics]>,
}

#[derive(Debug, Default)]
struct Local {
    /// Channel name (= its topic) → what is kept for it.
    channels: HashMap<Arc<str>, Entry>,
    /// Group topic (`{prefix}__group__{group}`) → its local members.
    groups: HashMap<Arc<str>, Arc<Group>>,
}

/// One registered channel.
#[derive(Debug)]
struct Entry {
    mailbox: Arc<Mailbox>,
    /// Kept with no holder (until `delete_channel` or `close`).
    pinned: bool,
    /// A SUBSCRIBE of the channel succeeded while this entry lived (see
    /// [`Group`]'s flag of the same name).
    confirmed: AtomicBool,
    /// The group topics it is a member of, kept in step with the groups so
    /// a release can leave them without scanning every group.
    groups: Vec<Arc<str>>,
}

/// Whether [`Registry::upsert`] pins the channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pin {
    /// Never (a receiver handle holds it instead).
    Never,
    /// Only a channel it registers (a `receive` by name).
    IfCreated,
    /// Always (`new_channel`).
    Always,
}

/// A channel's mailbox as [`Registry::hold`] and [`Registry::pin`] found or
/// created it.
#[derive(Debug)]
pub(super) struct Registered {
    /// The channel's mailbox.
    pub(super) mailbox: Arc<Mailbox>,
    /// Whether it was created by this call.
    pub(super) created: bool,
    /// Whether its topic is known to be subscribed already.
    pub(super) confirmed: bool,
}

impl Registry {
    /// An empty registry for a layer of `shards` shards; mailboxes get their
    /// capacity from `capacities` and count their drops in `drops`.
    pub(super) fn new(
        shards: usize,
        capacities: ChannelCapacities,
        drops: Arc<DropCounters>,
    ) -> Self {
        let now = Instant::now();
        Self {
            local: RwLock::new(Local::default()),
            capacities,
            drops,
            no_expiry: now.checked_add(NO_EXPIRY).unwrap_or(now),
            dirty: (0..shards.max(1)).map(|_| DirtyTopics::default()).collect(),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Local> {
        channels_core::sync::read(&self.local)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Local> {
        channels_core::sync::write(&self.local)
    }

    /// The marks and wake-up of shard `index`'s worker.
    pub(super) fn dirty(&self, index: usize) -> &DirtyTopics {
        &self.dirty[index]
    }

    fn mark_dirty(&self, topic: &Arc<str>) {
        self.dirty[consistent_hash(topic, self.dirty.len())].mark(topic);
    }

    /// The layer's drop counters.
    pub(super) fn drops(&self) -> &DropCounters {
        &self.drops
    }

    /// How many channels are registered.
    pub(super) fn channel_count(&self) -> usize {
        self.read().channels.len()
    }

    fn new_entry(&self, channel: &str, pinned: bool) -> (Arc<str>, Entry) {
        let name: Arc<str> = Arc::from(channel);
        let mailbox = Mailbox::new(
            Arc::clone(&name),
            self.capacities.capacity_for(channel),
            Arc::clone(&self.drops),
        );
        let entry = Entry {
            mailbox: Arc::new(mailbox),
            pinned,
            confirmed: AtomicBool::new(false),
            groups: Vec::new(),
        };
        (name, entry)
    }

    /// Finds or creates `channel`'s entry, pins it as `pin` says, runs
    /// `with` on its mailbox under the lock and reports what it found. Takes
    /// the write lock only when something changes.
    fn upsert(&self, channel: &str, pin: Pin, with: impl FnOnce(&Arc<Mailbox>)) -> Registered {
        if let Some(entry) = self.read().channels.get(channel)
            && (entry.pinned || pin != Pin::Always)
        {
            with(&entry.mailbox);
            return entry.registered(false);
        }
        let mut local = self.write();
        let created = !local.channels.contains_key(channel);
        if created {
            let (name, entry) = self.new_entry(channel, pin != Pin::Never);
            local.channels.insert(name, entry);
        }
        let entry = local
            .channels
            .get_mut(channel)
            .expect("the entry exists or was inserted just above");
        entry.pinned |= pin == Pin::Always;
        with(&entry.mailbox);
        entry.registered(created)
    }

    /// A receiver handle on `channel` (registered if new, not pinned), and
    /// whether its topic is known to be subscribed. The handle is made under
    /// the lock, so no release can forget the entry in between.
    pub(super) fn open(self: &Arc<Self>, channel: &str) -> (Receiver, Registered) {
        let mut receiver = None;
        let registered = self.upsert(channel, Pin::Never, |mailbox| {
            let owner: Arc<dyn Release> = Arc::clone(self) as Arc<dyn Release>;
            receiver = Some(Receiver::new(Arc::clone(mailbox), owner));
        });
        let receiver = receiver.expect("upsert runs its closure");
        (receiver, registered)
    }

    /// Holds `channel`'s mailbox for a `receive` (the caller must call
    /// [`Mailbox::remove_holder`] and then [`Release::release`] when done);
    /// a name not registered yet is registered pinned.
    pub(super) fn hold(&self, channel: &str) -> Registered {
        self.upsert(channel, Pin::IfCreated, |mailbox| mailbox.add_holder())
    }

    /// Registers `channel` pinned (`new_channel`).
    pub(super) fn pin(&self, channel: &str) -> Registered {
        self.upsert(channel, Pin::Always, |_| {})
    }

    /// Undoes [`Registry::pin`] (the SUBSCRIBE failed): the channel is
    /// released unless something else holds it.
    pub(super) fn unpin(&self, mailbox: &Arc<Mailbox>) {
        if let Some(entry) = self.write().channels.get_mut(mailbox.channel())
            && Arc::ptr_eq(&entry.mailbox, mailbox)
        {
            entry.pinned = false;
        }
        self.forget(mailbox, false);
    }

    /// Records that `mailbox`'s channel was subscribed.
    pub(super) fn confirm(&self, mailbox: &Arc<Mailbox>) {
        if let Some(entry) = self.read().channels.get(mailbox.channel())
            && Arc::ptr_eq(&entry.mailbox, mailbox)
        {
            entry.confirmed.store(true, Ordering::Release);
        }
    }

    /// Forgets `channel` whoever holds it (`delete_channel`): its mailbox is
    /// closed (handles and pending receives get `Closed`) and it leaves its
    /// groups. Returns whether it was registered.
    pub(super) fn remove_channel(&self, channel: &str) -> bool {
        let mailbox = self
            .read()
            .channels
            .get(channel)
            .map(|entry| Arc::clone(&entry.mailbox));
        mailbox.is_some_and(|mailbox| self.forget(&mailbox, true))
    }

    /// Forgets `mailbox`'s channel if it is still registered with it and,
    /// unless `force`, nothing holds it. Returns whether it did.
    fn forget(&self, mailbox: &Arc<Mailbox>, force: bool) -> bool {
        let releasable = |entry: &Entry| {
            Arc::ptr_eq(&entry.mailbox, mailbox)
                && (force || (!entry.pinned && mailbox.holders() == 0))
        };
        // Most releases (the end of a receive on a pinned name) change
        // nothing: look under the read lock first.
        if !self
            .read()
            .channels
            .get(mailbox.channel())
            .is_some_and(releasable)
        {
            return false;
        }
        let groups = {
            let mut local = self.write();
            if !local
                .channels
                .get(mailbox.channel())
                .is_some_and(releasable)
            {
                return false;
            }
            let entry = local
                .channels
                .remove(mailbox.channel())
                .expect("the entry was found just above");
            entry
                .groups
                .into_iter()
                .filter_map(|topic| {
                    let group = local.groups.get(&topic).map(Arc::clone)?;
                    Some((topic, group))
                })
                .collect::<Vec<_>>()
        };
        // Closed: a delivery that looked the channel up before it was
        // forgotten now pushes into nothing.
        mailbox.close();
        self.mark_dirty(mailbox.channel_arc());
        for (topic, group) in groups {
            if let Some((_, true)) = group.remove(mailbox.channel(), Some(mailbox)) {
                self.retire_group(&topic, &group);
            }
        }
        true
    }

    /// Keeps only the topics this instance wants.
    pub(super) fn retain_wanted(&self, topics: &mut Vec<Arc<str>>) {
        let local = self.read();
        topics.retain(|topic| local.wants(topic));
    }

    /// Keeps only the topics this instance does not want.
    pub(super) fn retain_unwanted(&self, topics: &mut Vec<Arc<str>>) {
        let local = self.read();
        topics.retain(|topic| !local.wants(topic));
    }

    /// Every wanted topic living on shard `index` (to subscribe a new
    /// connection).
    pub(super) fn topics_on_shard(&self, index: usize) -> Vec<Arc<str>> {
        let shards = self.dirty.len();
        let local = self.read();
        local
            .channels
            .keys()
            .chain(local.groups.keys())
            .filter(|topic| consistent_hash(topic, shards) == index)
            .map(Arc::clone)
            .collect()
    }

    /// Empties every mailbox and dissolves every group (marking its topic);
    /// channels and handles stay.
    pub(super) fn flush(&self) {
        let groups = {
            let mut local = self.write();
            for entry in local.channels.values_mut() {
                entry.groups = Vec::new();
                entry.mailbox.clear();
            }
            let groups = std::mem::take(&mut local.groups);
            for group in groups.values() {
                group.dissolve();
            }
            groups
        };
        for topic in groups.keys() {
            self.mark_dirty(topic);
        }
    }

    /// Forgets everything and closes every mailbox (handles and pending
    /// receives get `LayerError::Closed`).
    pub(super) fn close(&self) {
        let (channels, groups) = {
            let mut local = self.write();
            (
                std::mem::take(&mut local.channels),
                std::mem::take(&mut local.groups),
            )
        };
        for group in groups.values() {
            group.dissolve();
        }
        for entry in channels.into_values() {
            entry.mailbox.close();
        }
    }

    /// Delivers a payload that arrived on `topic` to the channel of that name
    /// and to every local member of the group of that topic: decoded once,
    /// the same message (shared, not copied) pushed into each mailbox, with
    /// no allocation per member.
    pub(super) fn deliver(&self, topic: &str, payload: &[u8], serializer: &Serializer) {
        let (channel, group) = {
            let local = self.read();
            (
                local
                    .channels
                    .get(topic)
                    .map(|entry| Arc::clone(&entry.mailbox)),
                local.groups.get(topic).map(Arc::clone),
            )
        };
        if channel.is_none() && group.is_none() {
            return;
        }
        let message = match serializer.deserialize(payload) {
            Ok(unpacked) => unpacked.message,
            Err(error) => {
                self.drops.count_undecodable();
                tracing::warn!(%topic, %error, bytes = payload.len(), "dropping an undecodable pub/sub message");
                return;
            }
        };
        if let Some(mailbox) = channel {
            self.push(&mailbox, &message);
        }
        if let Some(group) = group {
            group.for_each_member(|mailbox| self.push(mailbox, &message));
        }
    }

    /// Queues `message`, evicting the oldest when the mailbox is full (it was
    /// published already; channels_redis keeps the newest too).
    fn push(&self, mailbox: &Mailbox, message: &Message) {
        // A closed mailbox (its channel deleted) takes nothing, as intended.
        if matches!(
            mailbox.push_evicting(message.clone(), self.no_expiry),
            Ok(true)
        ) {
            let dropped = self.drops.full();
            // Log the first drop and then every 1,000th, not a line per message.
            if dropped == 1 || dropped.is_multiple_of(1_000) {
                tracing::warn!(
                    channel = mailbox.channel(),
                    dropped,
                    "channel buffer full: dropped its oldest message; receive faster or raise the capacity"
                );
            }
        }
    }
}

impl Entry {
    fn registered(&self, created: bool) -> Registered {
        Registered {
            mailbox: Arc::clone(&self.mailbox),
            created,
            confirmed: self.confirmed.load(Ordering::Acquire),
        }
    }
}

impl Local {
    fn wants(&self, topic: &str) -> bool {
        self.channels.contains_key(topic) || self.groups.contains_key(topic)
    }
}

impl Release for Registry {
    /// The last holder of a channel let go: forget it unless it is pinned or
    /// was held again meanwhile; its topics are unsubscribed by the worker.
    fn release(&self, mailbox: &Arc<Mailbox>) {
        self.forget(mailbox, false);
    }
}

mod membership;
#[cfg(test)]
mod tests;
