//! Group membership of the [`Registry`]'s channels: joining and leaving,
//! with each channel's list of groups kept in step with the groups (so a
//! release leaves them without scanning every group), and empty groups
//! retired (their topic marked for UNSUBSCRIBE).
//!
//! A membership change takes the registry's write lock and a group's lock
//! one after the other, never one inside the other except in the order of
//! `registry.rs` (map, then group), so a delivery fanning out under a group's
//! read lock never holds up joins to other groups or opens.

use std::sync::Arc;

use channels_core::Mailbox;

use super::Registry;
use crate::pubsub::group::Group;

impl Registry {
    /// Adds `channel` to the group of `topic`. `None` when the channel is not
    /// registered here (it cannot join, WIRE §3).
    pub(in crate::pubsub) fn join(&self, topic: &Arc<str>, channel: &str) -> Option<Arc<Group>> {
        loop {
            let (mailbox, group) = {
                let mut local = self.write();
                let mailbox = Arc::clone(&local.channels.get(channel)?.mailbox);
                let group = local.groups.entry(Arc::clone(topic)).or_default();
                (mailbox, Arc::clone(group))
            };
            if !group.insert(&mailbox) {
                continue; // emptied and removed meanwhile: look it up again
            }
            if self.record_membership(topic, &mailbox) {
                return Some(group);
            }
            // The channel was released before the release could see this
            // membership: undo it, then look the channel up again.
            if let Some((_, true)) = group.remove(channel, Some(&mailbox)) {
                self.retire_group(topic, &group);
            }
        }
    }

    /// Removes `channel` from the group of `topic`; a non-member is fine.
    pub(in crate::pubsub) fn leave(&self, topic: &str, channel: &str) {
        let Some(group) = self.read().groups.get(topic).map(Arc::clone) else {
            return;
        };
        let Some((mailbox, emptied)) = group.remove(channel, None) else {
            return;
        };
        self.record_membership(topic, &mailbox);
        if emptied {
            self.retire_group(topic, &group);
        }
    }

    /// Brings the entry's list of groups in step with whether the group now
    /// registered for `topic` has `mailbox` as a member. Each membership
    /// change calls it afterwards, under the write lock, so the last call
    /// sees the last change. False when the channel is no longer registered
    /// with `mailbox`.
    fn record_membership(&self, topic: &str, mailbox: &Arc<Mailbox>) -> bool {
        let mut local = self.write();
        let member_of = local
            .groups
            .get_key_value(topic)
            .filter(|(_, group)| group.has_member(mailbox))
            .map(|(topic, _)| Arc::clone(topic));
        let Some(entry) = local.channels.get_mut(mailbox.channel()) else {
            return false;
        };
        if !Arc::ptr_eq(&entry.mailbox, mailbox) {
            return false;
        }
        let known = entry.groups.iter().position(|known| **known == *topic);
        match (member_of, known) {
            (Some(topic), None) => entry.groups.push(topic),
            (None, Some(index)) => {
                entry.groups.swap_remove(index);
            }
            _ => {}
        }
        true
    }

    /// Takes `group` out of the map if it is (still) registered and empty,
    /// and marks its topic for UNSUBSCRIBE.
    pub(super) fn retire_group(&self, topic: &str, group: &Arc<Group>) {
        let retired = {
            let mut local = self.write();
            let current = local
                .groups
                .get_key_value(topic)
                .filter(|(_, current)| Arc::ptr_eq(current, group))
                .map(|(topic, _)| Arc::clone(topic));
            match current {
                Some(topic) if group.retire_if_empty() => {
                    local.groups.remove(&topic);
                    Some(topic)
                }
                _ => None,
            }
        };
        if let Some(topic) = retired {
            self.mark_dirty(&topic);
        }
    }
}
