//! [`Channels`]: every channel the layer holds messages for, as a sharded map
//! from name to [`Mailbox`].
//!
//! An entry lives while anything needs it: queued messages, a holder (a
//! receiver handle or a `receive` in progress) or a group membership. Group
//! members point at the entry's mailbox directly, so the entry must outlive
//! its memberships: a later `send` to the name then reaches the same mailbox
//! the group does. Every change that can leave an entry unused re-checks it
//! under its shard's lock, and so does every lookup, so a message is never
//! pushed into a mailbox the map has forgotten.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard};

use channels_core::{ChannelCapacities, DropCounters, Mailbox, lock};
use foldhash::fast::RandomState;

/// Shards of the channel map: enough that two cores rarely meet on one lock.
const SHARDS: usize = 16;

/// One channel: its mailbox and how many groups it belongs to.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) mailbox: Arc<Mailbox>,
    pub(crate) memberships: usize,
}

impl Entry {
    fn is_unused(&self) -> bool {
        self.memberships == 0 && self.mailbox.is_unused()
    }
}

type Shard = HashMap<Arc<str>, Entry, RandomState>;

/// The sharded map of channels.
#[derive(Debug)]
pub(crate) struct Channels {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    capacities: ChannelCapacities,
    drops: Arc<DropCounters>,
}

/// A locked shard, with what creating an entry needs.
pub(crate) struct Locked<'a> {
    shard: MutexGuard<'a, Shard>,
    channels: &'a Channels,
}

impl Channels {
    /// An empty map; new mailboxes get their capacity from `capacities`.
    pub(crate) fn new(capacities: ChannelCapacities, drops: Arc<DropCounters>) -> Self {
        let hasher = RandomState::default();
        Self {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(HashMap::with_hasher(hasher.clone())))
                .collect(),
            hasher,
            capacities,
            drops,
        }
    }

    /// Locks the shard holding `channel`.
    pub(crate) fn lock(&self, channel: &str) -> Locked<'_> {
        let index = usize::try_from(self.hasher.hash_one(channel)).unwrap_or_default() % SHARDS;
        Locked {
            shard: lock(&self.shards[index]),
            channels: self,
        }
    }

    /// How many channels are held.
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|shard| lock(shard).len()).sum()
    }

    /// Drops expired messages everywhere and forgets unused entries.
    pub(crate) fn sweep(&self) {
        for shard in self.shards.iter() {
            lock(shard).retain(|_, entry| {
                entry.mailbox.purge();
                !entry.is_unused()
            });
        }
    }

    /// Empties every mailbox and forgets what is then unused (`flush`). The
    /// caller has dropped every membership first.
    pub(crate) fn clear(&self) {
        for shard in self.shards.iter() {
            lock(shard).retain(|_, entry| {
                entry.mailbox.clear();
                !entry.is_unused()
            });
        }
    }
}

impl Locked<'_> {
    /// The entry of `channel`, created (with its configured capacity) if
    /// needed. Looks up before allocating, so the common case allocates nothing.
    pub(crate) fn entry(&mut self, channel: &str) -> &mut Entry {
        if !self.shard.contains_key(channel) {
            let name: Arc<str> = Arc::from(channel);
            let mailbox = Mailbox::new(
                name.clone(),
                self.channels.capacities.capacity_for(channel),
                self.channels.drops.clone(),
            );
            self.shard.insert(
                name,
                Entry {
                    mailbox: Arc::new(mailbox),
                    memberships: 0,
                },
            );
        }
        self.shard
            .get_mut(channel)
            .expect("the entry was inserted just above")
    }

    /// Forgets `channel` if its entry is still `mailbox` and nothing needs it.
    pub(crate) fn forget_if_unused(&mut self, mailbox: &Arc<Mailbox>) {
        let channel = mailbox.channel();
        if self
            .shard
            .get(channel)
            .is_some_and(|entry| Arc::ptr_eq(&entry.mailbox, mailbox) && entry.is_unused())
        {
            self.shard.remove(channel);
        }
    }

    /// One membership fewer for `mailbox`; forgets it if it is then unused.
    pub(crate) fn leave_group(&mut self, mailbox: &Arc<Mailbox>) {
        if let Some(entry) = self.shard.get_mut(mailbox.channel())
            && Arc::ptr_eq(&entry.mailbox, mailbox)
        {
            entry.memberships = entry.memberships.saturating_sub(1);
        }
        self.forget_if_unused(mailbox);
    }

    /// Releases `mailbox` after its last holder let go: drops its messages
    /// (nobody will read them) unless a holder came back meanwhile, and
    /// forgets the entry when no group still points at it.
    pub(crate) fn release(&mut self, mailbox: &Arc<Mailbox>) {
        let Some(entry) = self.shard.get(mailbox.channel()) else {
            return;
        };
        if !Arc::ptr_eq(&entry.mailbox, mailbox) || mailbox.holders() > 0 {
            return;
        }
        mailbox.clear();
        self.forget_if_unused(mailbox);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channels() -> Channels {
        Channels::new(ChannelCapacities::new(10), Arc::default())
    }

    #[test]
    fn entries_live_while_needed() {
        let channels = channels();
        let mailbox = channels.lock("a").entry("a").mailbox.clone();
        assert_eq!(channels.len(), 1);
        channels.lock("a").forget_if_unused(&mailbox);
        assert_eq!(channels.len(), 0, "an empty, unheld entry is forgotten");

        let mut locked = channels.lock("b");
        let entry = locked.entry("b");
        entry.memberships += 1;
        let member = entry.mailbox.clone();
        locked.forget_if_unused(&member);
        drop(locked);
        assert_eq!(channels.len(), 1, "a group member stays");
        channels.lock("b").leave_group(&member);
        assert_eq!(channels.len(), 0);
    }

    #[test]
    fn a_stale_mailbox_never_removes_a_newer_entry() {
        let channels = channels();
        let old = channels.lock("a").entry("a").mailbox.clone();
        channels.lock("a").forget_if_unused(&old);
        let new = channels.lock("a").entry("a").mailbox.clone();
        new.add_holder();
        channels.lock("a").release(&old);
        assert_eq!(channels.len(), 1);
        assert!(Arc::ptr_eq(&channels.lock("a").entry("a").mailbox, &new));
    }
}
