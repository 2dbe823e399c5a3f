//! [`Group`]: this instance's members of one group topic, each holding its
//! channel's mailbox, so a delivery pushes into mailboxes with no lookup by
//! name.
//!
//! Each group has its own read-write lock: held for reading while a payload
//! fans out (no other lock is held then), for writing while a member joins
//! or leaves. Lock order, everywhere: the registry's map, then a group, then
//! a mailbox; nobody holding a group's lock takes the registry's.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use channels_core::Mailbox;

/// The local members of one group topic.
#[derive(Debug, Default)]
pub(super) struct Group {
    members: RwLock<Members>,
    /// A SUBSCRIBE of the topic succeeded while this group lived. It stays
    /// subscribed while the group lives (reconnects resubscribe it), so
    /// later joins need not ask the worker again.
    confirmed: AtomicBool,
}

#[derive(Debug, Default)]
struct Members {
    by_channel: HashMap<Arc<str>, Arc<Mailbox>>,
    /// Set when the group was taken out of the registry: a join that raced
    /// with that must look the group up again.
    removed: bool,
}

use channels_core::sync::{read, write};

impl Group {
    /// Whether the topic is known to be subscribed.
    pub(super) fn is_confirmed(&self) -> bool {
        self.confirmed.load(Ordering::Acquire)
    }

    /// Records that the topic was subscribed.
    pub(super) fn confirm(&self) {
        self.confirmed.store(true, Ordering::Release);
    }

    /// Adds (or replaces) the member of `mailbox`'s channel. False when the
    /// group was removed meanwhile (the caller looks it up again).
    pub(super) fn insert(&self, mailbox: &Arc<Mailbox>) -> bool {
        let mut members = write(&self.members);
        if members.removed {
            return false;
        }
        members
            .by_channel
            .insert(Arc::clone(mailbox.channel_arc()), Arc::clone(mailbox));
        true
    }

    /// Removes `channel`, if its member is `mailbox` (any member when
    /// `None`). Returns the removed member's mailbox and whether the group
    /// is now empty.
    pub(super) fn remove(
        &self,
        channel: &str,
        mailbox: Option<&Arc<Mailbox>>,
    ) -> Option<(Arc<Mailbox>, bool)> {
        let mut members = write(&self.members);
        let current = members.by_channel.get(channel)?;
        if mailbox.is_some_and(|mailbox| !Arc::ptr_eq(current, mailbox)) {
            return None;
        }
        let removed = members.by_channel.remove(channel)?;
        Some((removed, members.by_channel.is_empty()))
    }

    /// Whether `mailbox` is a member (of a group still in the registry).
    pub(super) fn has_member(&self, mailbox: &Arc<Mailbox>) -> bool {
        let members = read(&self.members);
        !members.removed
            && members
                .by_channel
                .get(mailbox.channel())
                .is_some_and(|current| Arc::ptr_eq(current, mailbox))
    }

    /// Takes the group out of use if it has no member; returns whether it did.
    /// Call it under the registry's write lock, then remove it from the map.
    pub(super) fn retire_if_empty(&self) -> bool {
        let mut members = write(&self.members);
        if members.by_channel.is_empty() {
            members.removed = true;
        }
        members.removed
    }

    /// Takes the group out of use, dropping every member (`flush`, `close`).
    pub(super) fn dissolve(&self) {
        let mut members = write(&self.members);
        members.removed = true;
        members.by_channel = HashMap::new();
    }

    /// Calls `push` with every member's mailbox, under the read lock (so
    /// nothing is collected or allocated per delivery).
    pub(super) fn for_each_member(&self, mut push: impl FnMut(&Mailbox)) {
        let members = read(&self.members);
        for mailbox in members.by_channel.values() {
            push(mailbox);
        }
    }

    /// How many members there are.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        read(&self.members).by_channel.len()
    }
}
