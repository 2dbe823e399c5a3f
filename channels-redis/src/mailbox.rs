//! [`Mailboxes`]: the in-process buffers that received messages wait in until
//! a `receive` takes them. Bounded per channel (dropping the oldest, counted),
//! cancel-safe (a message stays queued until a receive returns it).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use channels_core::Message;
use tokio::sync::Notify;

use crate::connection::lock;

#[derive(Debug, Default)]
struct Mailbox {
    /// (Redis score = send time in seconds, message), oldest first.
    queue: VecDeque<(f64, Message)>,
    notify: Arc<Notify>,
    receivers: usize,
}

/// Per-channel bounded buffers plus a failure signal for waiting receivers.
#[derive(Debug, Default)]
pub(crate) struct Mailboxes {
    boxes: Mutex<HashMap<String, Mailbox>>,
    expiry_secs: u64,
    failure: Mutex<Failure>,
    dropped: AtomicU64,
}

#[derive(Debug, Default, Clone)]
struct Failure {
    epoch: u64,
    /// `None` with a newer epoch: the layer was closed.
    reason: Option<Arc<str>>,
}

/// What a wait ended with.
pub(crate) enum Wake {
    /// A message for this channel.
    Message(Message),
    /// The source feeding the mailboxes failed after the wait began.
    Failed(Arc<str>),
    /// The layer was closed after the wait began.
    Closed,
}

/// Counts a receiver for as long as it waits, and tidies up after it.
pub(crate) struct ReceiverGuard<'a> {
    mailboxes: &'a Mailboxes,
    name: String,
}

impl Drop for ReceiverGuard<'_> {
    fn drop(&mut self) {
        let mut boxes = lock(&self.mailboxes.boxes);
        if let Some(mailbox) = boxes.get_mut(&self.name) {
            mailbox.receivers = mailbox.receivers.saturating_sub(1);
            if mailbox.receivers == 0 && mailbox.queue.is_empty() {
                boxes.remove(&self.name);
            }
        }
    }
}

/// Seconds since the Unix epoch, as Python's `time.time()`.
pub(crate) fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Messages with a score at or below this are expired (channels_redis prunes
/// `0 .. int(now) - expiry`).
pub(crate) fn expiry_cutoff(expiry_secs: u64) -> f64 {
    #[allow(clippy::cast_precision_loss)] // expiry is far below 2^52 seconds
    let expiry = expiry_secs as f64;
    now_secs().floor() - expiry
}

impl Mailboxes {
    /// Empty mailboxes whose messages expire like Redis' (by send time).
    pub(crate) fn new(expiry: Duration) -> Self {
        Self {
            expiry_secs: expiry.as_secs(),
            ..Self::default()
        }
    }

    /// Queues `message` (sent at `score`) for `channel`, dropping the oldest
    /// beyond `capacity`. Returns how many were dropped (0 or 1).
    pub(crate) fn push(&self, channel: &str, score: f64, message: Message, capacity: usize) -> u64 {
        let mut boxes = lock(&self.boxes);
        let mailbox = boxes.entry(channel.to_owned()).or_default();
        let mut dropped = 0;
        while mailbox.queue.len() >= capacity.max(1) {
            mailbox.queue.pop_front();
            dropped += 1;
        }
        mailbox.queue.push_back((score, message));
        mailbox.notify.notify_one();
        if dropped > 0 {
            self.dropped.fetch_add(dropped, Ordering::Relaxed);
        }
        dropped
    }

    /// Messages dropped because a buffer was full, since the layer started.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Messages buffered for `channel` right now.
    #[cfg(test)]
    pub(crate) fn len(&self, channel: &str) -> usize {
        lock(&self.boxes).get(channel).map_or(0, |m| m.queue.len())
    }

    /// How many receivers currently wait on `channel`.
    pub(crate) fn receivers(&self, channel: &str) -> usize {
        lock(&self.boxes).get(channel).map_or(0, |m| m.receivers)
    }

    /// Registers a receiver of `channel` until the guard drops.
    pub(crate) fn register(&self, channel: &str) -> ReceiverGuard<'_> {
        lock(&self.boxes)
            .entry(channel.to_owned())
            .or_default()
            .receivers += 1;
        ReceiverGuard {
            mailboxes: self,
            name: channel.to_owned(),
        }
    }

    /// The current failure epoch, to pass to [`Mailboxes::wait`].
    pub(crate) fn failure_epoch(&self) -> u64 {
        lock(&self.failure).epoch
    }

    /// Takes the oldest unexpired message for `channel` without waiting.
    pub(crate) fn try_take(&self, channel: &str) -> Option<Message> {
        let cutoff = expiry_cutoff(self.expiry_secs);
        let mut boxes = lock(&self.boxes);
        let mailbox = boxes.get_mut(channel)?;
        let message = loop {
            let (score, message) = mailbox.queue.pop_front()?;
            if score > cutoff {
                break message;
            }
        };
        if !mailbox.queue.is_empty() {
            // Pass the wake-up on to another receiver of the same channel.
            mailbox.notify.notify_one();
        }
        Some(message)
    }

    /// The notifier of `channel` (registered receivers keep it alive).
    pub(crate) fn notifier(&self, channel: &str) -> Arc<Notify> {
        lock(&self.boxes)
            .entry(channel.to_owned())
            .or_default()
            .notify
            .clone()
    }

    /// Waits for a message for `channel`, or for a failure newer than `epoch`.
    /// The caller must hold a [`ReceiverGuard`] for `channel`.
    pub(crate) async fn wait(&self, channel: &str, epoch: u64) -> Wake {
        let notify = self.notifier(channel);
        loop {
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(message) = self.try_take(channel) {
                return Wake::Message(message);
            }
            {
                let failure = lock(&self.failure);
                if failure.epoch > epoch {
                    return match &failure.reason {
                        Some(reason) => Wake::Failed(reason.clone()),
                        None => Wake::Closed,
                    };
                }
            }
            notified.await;
        }
    }

    /// Wakes every waiting receiver with a failure.
    pub(crate) fn fail_all(&self, reason: &str) {
        {
            let mut failure = lock(&self.failure);
            failure.epoch += 1;
            failure.reason = Some(Arc::from(reason));
        }
        self.wake_all();
    }

    /// Wakes every waiting receiver with [`Wake::Closed`].
    pub(crate) fn close_all(&self) {
        {
            let mut failure = lock(&self.failure);
            failure.epoch += 1;
            failure.reason = None;
        }
        self.wake_all();
    }

    /// Wakes every waiting receiver so it re-checks its state.
    pub(crate) fn wake_all(&self) {
        for mailbox in lock(&self.boxes).values() {
            mailbox.notify.notify_waiters();
        }
    }

    /// Drops expired messages and empty mailboxes nobody waits on. Returns how
    /// many messages expired.
    pub(crate) fn sweep(&self) -> usize {
        let cutoff = expiry_cutoff(self.expiry_secs);
        let mut expired = 0;
        lock(&self.boxes).retain(|_, mailbox| {
            while mailbox
                .queue
                .front()
                .is_some_and(|(score, _)| *score <= cutoff)
            {
                mailbox.queue.pop_front();
                expired += 1;
            }
            mailbox.receivers > 0 || !mailbox.queue.is_empty()
        });
        expired
    }

    /// Forgets `channel`'s buffered messages, unless a receive waits on it.
    #[allow(dead_code)] // TEMPORARY: the receive-handle port replaces this file
    pub(crate) fn release(&self, channel: &str) {
        let mut boxes = lock(&self.boxes);
        if boxes
            .get(channel)
            .is_some_and(|mailbox| mailbox.receivers == 0)
        {
            boxes.remove(channel);
        }
    }

    /// Forgets every buffered message (`flush`).
    pub(crate) fn clear(&self) {
        lock(&self.boxes).retain(|_, mailbox| {
            mailbox.queue.clear();
            mailbox.receivers > 0
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn k4_buffer_keeps_the_newest_capacity_messages() {
        let mailboxes = Mailboxes::new(Duration::from_secs(60));
        for i in 0..10_000 {
            mailboxes.push("c!x", now_secs(), Message::new("m").with("i", i), 100);
        }
        assert_eq!(mailboxes.len("c!x"), 100);
        assert_eq!(mailboxes.dropped(), 9_900);
        let first = mailboxes.try_take("c!x").unwrap();
        assert_eq!(first.get("i").and_then(|v| v.as_i64()), Some(9_900));
    }

    #[tokio::test]
    async fn wait_returns_queued_messages_and_failures() {
        let mailboxes = Arc::new(Mailboxes::new(Duration::from_secs(60)));
        let _guard = mailboxes.register("a!b");
        let epoch = mailboxes.failure_epoch();
        mailboxes.push("a!b", now_secs(), Message::new("one"), 10);
        assert!(
            matches!(mailboxes.wait("a!b", epoch).await, Wake::Message(m) if m.message_type() == Some("one"))
        );
        let waiter = {
            let mailboxes = mailboxes.clone();
            tokio::spawn(async move {
                let _guard = mailboxes.register("a!b");
                matches!(mailboxes.wait("a!b", epoch).await, Wake::Failed(_))
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        mailboxes.fail_all("redis down");
        let failed = tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .unwrap()
            .unwrap();
        assert!(failed);
    }

    #[test]
    fn expired_messages_are_skipped_and_swept() {
        let mailboxes = Mailboxes::new(Duration::from_secs(10));
        mailboxes.push("x", now_secs() - 30.0, Message::new("old"), 10);
        mailboxes.push("x", now_secs(), Message::new("new"), 10);
        assert_eq!(
            mailboxes
                .try_take("x")
                .and_then(|m| m.message_type().map(str::to_owned))
                .as_deref(),
            Some("new")
        );
        mailboxes.push("y", now_secs() - 30.0, Message::new("old"), 10);
        mailboxes.push("z", now_secs(), Message::new("fresh"), 10);
        assert_eq!(mailboxes.sweep(), 1);
        assert_eq!(mailboxes.len("y"), 0);
        assert_eq!(mailboxes.len("z"), 1);
        assert!(!lock(&mailboxes.boxes).contains_key("y"));
    }
}
