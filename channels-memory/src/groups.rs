//! [`Groups`]: group memberships, each member holding its channel's mailbox,
//! so a broadcast pushes straight into mailboxes with no lookup by name.
//!
//! The map from group name to [`Group`] is sharded; each group has its own
//! read-write lock, held for reading while a broadcast fans out (concurrent
//! broadcasts to one group run in parallel) and for writing while members
//! join or leave. Lock order, everywhere: group, then channel shard, then
//! mailbox.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use channels_core::{Mailbox, Message, Offered, lock};
use foldhash::fast::RandomState;
use indexmap::IndexMap;
use tokio::time::Instant;

use crate::channels::Channels;

/// Shards of the group map.
const SHARDS: usize = 16;

/// One member: its mailbox and when its membership expires.
#[derive(Debug)]
struct Member {
    mailbox: Arc<Mailbox>,
    expires_at: Instant,
}

#[derive(Debug, Default)]
struct Members {
    /// Members in join order; swap-removal keeps leaving O(1).
    by_channel: IndexMap<Arc<str>, Member, RandomState>,
    /// Set when the group was taken out of the map (it emptied): a join that
    /// raced with that must look the group up again.
    removed: bool,
}

/// One group.
#[derive(Debug, Default)]
pub(crate) struct Group {
    members: RwLock<Members>,
}

impl Group {
    fn read(&self) -> RwLockReadGuard<'_, Members> {
        channels_core::sync::read(&self.members)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Members> {
        channels_core::sync::write(&self.members)
    }
}

/// What a broadcast did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Broadcast {
    pub(crate) delivered: usize,
    pub(crate) over_capacity: usize,
}

type Shard = HashMap<Box<str>, Arc<Group>, RandomState>;

/// Every group of the layer.
#[derive(Debug)]
pub(crate) struct Groups {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
}

impl Groups {
    pub(crate) fn new() -> Self {
        let hasher = RandomState::default();
        Self {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(HashMap::with_hasher(hasher.clone())))
                .collect(),
            hasher,
        }
    }

    fn shard(&self, group: &str) -> &Mutex<Shard> {
        let index = usize::try_from(self.hasher.hash_one(group)).unwrap_or_default() % SHARDS;
        &self.shards[index]
    }

    fn get(&self, group: &str) -> Option<Arc<Group>> {
        lock(self.shard(group)).get(group).cloned()
    }

    fn get_or_create(&self, group: &str) -> Arc<Group> {
        let mut shard = lock(self.shard(group));
        if let Some(found) = shard.get(group) {
            return found.clone();
        }
        let created = Arc::new(Group::default());
        shard.insert(group.into(), created.clone());
        created
    }

    /// Takes `group` out of the map if it is (still) empty.
    fn remove_if_empty(&self, name: &str, group: &Arc<Group>) {
        let mut shard = lock(self.shard(name));
        if !shard
            .get(name)
            .is_some_and(|found| Arc::ptr_eq(found, group))
        {
            return;
        }
        let mut members = group.write();
        if members.by_channel.is_empty() {
            members.removed = true;
            shard.remove(name);
        }
    }

    /// Adds `channel` to `group` until `expires_at`, or renews it.
    pub(crate) fn add(&self, group: &str, channel: &str, expires_at: Instant, channels: &Channels) {
        loop {
            let found = self.get_or_create(group);
            let mut members = found.write();
            if members.removed {
                continue; // emptied and removed meanwhile: look it up again
            }
            if let Some(member) = members.by_channel.get_mut(channel) {
                member.expires_at = expires_at;
                return;
            }
            let mut locked = channels.lock(channel);
            let entry = locked.entry(channel);
            entry.memberships += 1;
            let mailbox = entry.mailbox.clone();
            drop(locked);
            members.by_channel.insert(
                mailbox.channel_arc().clone(),
                Member {
                    mailbox,
                    expires_at,
                },
            );
            return;
        }
    }

    /// Removes `channel` from `group`; a non-member is fine.
    pub(crate) fn discard(&self, group: &str, channel: &str, channels: &Channels) {
        let Some(found) = self.get(group) else {
            return;
        };
        let emptied = {
            let mut members = found.write();
            let Some(member) = members.by_channel.swap_remove(channel) else {
                return;
            };
            channels.lock(channel).leave_group(&member.mailbox);
            members.by_channel.is_empty()
        };
        if emptied {
            self.remove_if_empty(group, &found);
        }
    }

    /// Queues one shared copy of `message` on every live member of `group`;
    /// full members are skipped (and counted by their mailbox).
    pub(crate) fn send(
        &self,
        group: &str,
        message: &Message,
        now: Instant,
        expires_at: Instant,
        channels: &Channels,
    ) -> Broadcast {
        let mut outcome = Broadcast::default();
        let Some(found) = self.get(group) else {
            return outcome;
        };
        let mut expired = false;
        {
            let members = found.read();
            for member in members.by_channel.values() {
                if member.expires_at <= now {
                    expired = true;
                    continue;
                }
                match member.mailbox.offer(message.clone(), expires_at) {
                    Offered::Queued => outcome.delivered += 1,
                    Offered::Full | Offered::Closed => outcome.over_capacity += 1,
                }
            }
        }
        if expired {
            self.purge_group(group, &found, now, channels);
        }
        outcome
    }

    /// Drops the expired memberships of one group.
    fn purge_group(&self, name: &str, group: &Arc<Group>, now: Instant, channels: &Channels) {
        let emptied = {
            let mut members = group.write();
            members.by_channel.retain(|channel, member| {
                let live = member.expires_at > now;
                if !live {
                    channels.lock(channel).leave_group(&member.mailbox);
                }
                live
            });
            members.by_channel.is_empty()
        };
        if emptied {
            self.remove_if_empty(name, group);
        }
    }

    /// Drops expired memberships of every group (the periodic sweep).
    pub(crate) fn sweep(&self, now: Instant, channels: &Channels) {
        for (name, group) in self.all() {
            self.purge_group(&name, &group, now, channels);
        }
    }

    /// Forgets every group and membership (`flush`).
    pub(crate) fn clear(&self, channels: &Channels) {
        for (name, group) in self.all() {
            {
                let mut members = group.write();
                for (channel, member) in members.by_channel.drain(..) {
                    channels.lock(&channel).leave_group(&member.mailbox);
                }
            }
            self.remove_if_empty(&name, &group);
        }
    }

    fn all(&self) -> Vec<(Box<str>, Arc<Group>)> {
        self.shards
            .iter()
            .flat_map(|shard| {
                lock(shard)
                    .iter()
                    .map(|(name, group)| (name.clone(), group.clone()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// How many groups exist.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|shard| lock(shard).len()).sum()
    }
}
