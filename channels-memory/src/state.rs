//! Everything the in-memory layer stores, behind one lock: channels, groups,
//! and the time of the next sweep for entries nobody touches.

use std::collections::HashMap;
use std::time::Duration;

use channels_core::{ChannelCapacities, Message};
use tokio::time::Instant;

use crate::queue::ChannelQueue;

/// The layer's data. Every method is synchronous and short: the lock around
/// it is never held across an `.await`.
#[derive(Debug)]
pub(crate) struct State {
    channels: HashMap<Box<str>, ChannelQueue>,
    /// group -> (channel -> membership expiry)
    groups: HashMap<Box<str>, HashMap<Box<str>, Instant>>,
    next_sweep: Instant,
}

/// What a group broadcast did, for logging.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Broadcast {
    pub(crate) delivered: usize,
    pub(crate) over_capacity: usize,
}

impl State {
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            channels: HashMap::new(),
            groups: HashMap::new(),
            next_sweep: now,
        }
    }

    /// The queue of `channel`, created with its configured capacity if needed.
    /// Looks up before allocating, so the common case allocates nothing.
    pub(crate) fn queue(
        &mut self,
        channel: &str,
        capacities: &ChannelCapacities,
    ) -> &mut ChannelQueue {
        if !self.channels.contains_key(channel) {
            self.channels.insert(
                channel.into(),
                ChannelQueue::new(capacities.capacity_for(channel)),
            );
        }
        self.channels
            .get_mut(channel)
            .expect("the queue was inserted just above")
    }

    pub(crate) fn existing_queue(&mut self, channel: &str) -> Option<&mut ChannelQueue> {
        self.channels.get_mut(channel)
    }

    /// Drops the channel's entry if it holds nothing and nobody waits on it,
    /// so short-lived connections leave no trace.
    pub(crate) fn forget_if_idle(&mut self, channel: &str) {
        if self
            .channels
            .get(channel)
            .is_some_and(ChannelQueue::is_idle)
        {
            self.channels.remove(channel);
        }
    }

    /// Forgets the channel's messages, unless a receiver waits on it.
    pub(crate) fn release(&mut self, channel: &str) {
        if let Some(queue) = self.channels.get_mut(channel) {
            queue.clear();
        }
        self.forget_if_idle(channel);
    }

    pub(crate) fn group_add(&mut self, group: &str, channel: &str, expires_at: Instant) {
        let members = match self.groups.get_mut(group) {
            Some(members) => members,
            None => self.groups.entry(group.into()).or_default(),
        };
        match members.get_mut(channel) {
            Some(expiry) => *expiry = expires_at,
            None => {
                members.insert(channel.into(), expires_at);
            }
        }
    }

    pub(crate) fn group_discard(&mut self, group: &str, channel: &str) {
        if let Some(members) = self.groups.get_mut(group) {
            members.remove(channel);
            if members.is_empty() {
                self.groups.remove(group);
            }
        }
    }

    /// Queues one shared copy of `message` on every live member of `group`,
    /// skipping members that are full.
    pub(crate) fn group_send(
        &mut self,
        group: &str,
        message: &Message,
        now: Instant,
        expires_at: Instant,
        capacities: &ChannelCapacities,
    ) -> Broadcast {
        let mut outcome = Broadcast::default();
        let Some(members) = self.groups.get_mut(group) else {
            return outcome;
        };
        members.retain(|_, expiry| *expiry > now);
        if members.is_empty() {
            self.groups.remove(group);
            return outcome;
        }
        let channels = &mut self.channels;
        for channel in members.keys() {
            // Inline rather than `Self::queue`: this match needs one lookup per
            // member on a hit, and a function returning the borrow cannot
            // (today's borrow checker), so `queue` pays `contains_key` first.
            let queue = match channels.get_mut(&**channel) {
                Some(queue) => queue,
                None => channels
                    .entry(channel.clone())
                    .or_insert_with(|| ChannelQueue::new(capacities.capacity_for(channel))),
            };
            queue.purge_expired(now);
            if queue.try_push(message.clone(), expires_at) {
                outcome.delivered += 1;
            } else {
                outcome.over_capacity += 1;
            }
        }
        outcome
    }

    pub(crate) fn flush(&mut self) {
        self.groups.clear();
        // Receivers may be waiting on some queues: keep those entries, empty.
        self.channels.retain(|_, queue| {
            queue.clear();
            !queue.is_idle()
        });
    }

    /// Every `interval`, drops expired messages, idle channels and expired
    /// memberships that no call has touched. Amortized: one pass per interval,
    /// not one per call.
    pub(crate) fn sweep_if_due(&mut self, now: Instant, interval: Duration) {
        if now < self.next_sweep {
            return;
        }
        self.next_sweep = now + interval;
        self.channels.retain(|_, queue| {
            queue.purge_expired(now);
            !queue.is_idle()
        });
        self.groups.retain(|_, members| {
            members.retain(|_, expiry| *expiry > now);
            !members.is_empty()
        });
    }

    #[cfg(test)]
    pub(crate) fn channel_count(&self) -> usize {
        self.channels.len()
    }

    #[cfg(test)]
    pub(crate) fn group_count(&self) -> usize {
        self.groups.len()
    }
}
