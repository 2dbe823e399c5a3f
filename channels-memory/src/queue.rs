//! One channel's mailbox: a bounded FIFO of messages with expiry times, and
//! the wake-up handle its waiting receivers sleep on.

use std::collections::VecDeque;
use std::sync::Arc;

use channels_core::Message;
use tokio::sync::Notify;
use tokio::time::Instant;

/// A queued message and the moment it stops being deliverable.
#[derive(Debug)]
struct Queued {
    message: Message,
    expires_at: Instant,
}

/// A channel's messages in arrival order. Expiry times only grow along the
/// queue (one expiry for the whole layer), so expired messages are always at
/// the front and purging never scans past the first live one.
#[derive(Debug)]
pub(crate) struct ChannelQueue {
    messages: VecDeque<Queued>,
    capacity: usize,
    notify: Arc<Notify>,
    waiters: usize,
}

impl ChannelQueue {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            messages: VecDeque::new(),
            capacity,
            notify: Arc::new(Notify::new()),
            waiters: 0,
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Drops messages whose expiry has passed.
    pub(crate) fn purge_expired(&mut self, now: Instant) {
        while self
            .messages
            .front()
            .is_some_and(|queued| queued.expires_at <= now)
        {
            self.messages.pop_front();
        }
    }

    /// Queues a message unless the channel is full; returns whether it was queued.
    pub(crate) fn try_push(&mut self, message: Message, expires_at: Instant) -> bool {
        if self.messages.len() >= self.capacity {
            return false;
        }
        self.messages.push_back(Queued {
            message,
            expires_at,
        });
        if self.waiters > 0 {
            self.notify.notify_one();
        }
        true
    }

    pub(crate) fn pop(&mut self) -> Option<Message> {
        self.messages.pop_front().map(|queued| queued.message)
    }

    pub(crate) fn clear(&mut self) {
        self.messages.clear();
    }

    /// Whether nobody needs this entry any more (no messages, no receiver waiting).
    pub(crate) fn is_idle(&self) -> bool {
        self.messages.is_empty() && self.waiters == 0
    }

    /// Registers a waiting receiver and returns the handle it sleeps on.
    pub(crate) fn add_waiter(&mut self) -> Arc<Notify> {
        self.waiters += 1;
        Arc::clone(&self.notify)
    }

    /// The handle an already registered receiver sleeps on.
    pub(crate) fn notify_handle(&self) -> Arc<Notify> {
        Arc::clone(&self.notify)
    }

    pub(crate) fn remove_waiter(&mut self) {
        self.waiters = self.waiters.saturating_sub(1);
    }
}
