//! [`Mailbox`]: the bounded in-memory buffer of one subscribed channel.

use std::collections::VecDeque;
use std::sync::Mutex;

use channels_core::{LayerError, Message};
use tokio::sync::Notify;

/// Messages that arrived for one channel and wait for a `receive`.
///
/// Bounded: when full, the oldest message is dropped to make room (the
/// caller counts and logs it). Receiving is cancel-safe: a message leaves the
/// buffer only in the same synchronous step that hands it to the caller.
#[derive(Debug)]
pub(super) struct Mailbox {
    channel: String,
    state: Mutex<MailboxState>,
    notify: Notify,
    capacity: usize,
}

#[derive(Debug, Default)]
struct MailboxState {
    queue: VecDeque<Message>,
    closed: bool,
    dropped: u64,
}

/// What happened to a pushed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pushed {
    /// Queued; nothing was lost.
    Queued,
    /// Queued after dropping the oldest message, because the buffer was full;
    /// holds how many this mailbox has dropped so far.
    DroppedOldest(u64),
    /// Not queued: the mailbox was closed.
    Closed,
}

impl Mailbox {
    /// An empty mailbox for `channel` holding at most `capacity` messages
    /// (at least one).
    pub(super) fn new(channel: String, capacity: usize) -> Self {
        Self {
            channel,
            state: Mutex::new(MailboxState::default()),
            notify: Notify::new(),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MailboxState> {
        // A panic while holding this lock cannot leave the queue inconsistent
        // (every critical section is a single VecDeque call), so a poisoned
        // lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues `message`, dropping the oldest one when the buffer is full.
    pub(super) fn push(&self, message: Message) -> Pushed {
        let pushed = {
            let mut state = self.lock();
            if state.closed {
                return Pushed::Closed;
            }
            let pushed = if state.queue.len() >= self.capacity {
                state.queue.pop_front();
                state.dropped += 1;
                Pushed::DroppedOldest(state.dropped)
            } else {
                Pushed::Queued
            };
            state.queue.push_back(message);
            pushed
        };
        self.notify.notify_one();
        pushed
    }

    /// The channel this mailbox belongs to.
    pub(super) fn channel(&self) -> &str {
        &self.channel
    }

    /// Waits for the next message. Cancel-safe.
    ///
    /// # Errors
    /// [`LayerError::Closed`] once the mailbox is closed and empty.
    pub(super) async fn recv(&self) -> Result<Message, LayerError> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Register before looking, so a push between the look and the
            // wait still wakes us.
            notified.as_mut().enable();
            {
                let mut state = self.lock();
                if let Some(message) = state.queue.pop_front() {
                    return Ok(message);
                }
                if state.closed {
                    return Err(LayerError::Closed);
                }
            }
            notified.await;
        }
    }

    /// Drops every queued message; returns how many there were.
    pub(super) fn clear(&self) -> usize {
        let mut state = self.lock();
        let count = state.queue.len();
        state.queue.clear();
        count
    }

    /// Closes the mailbox: queued messages are dropped, pending and later
    /// receives get [`LayerError::Closed`].
    pub(super) fn close(&self) {
        {
            let mut state = self.lock();
            state.closed = true;
            state.queue.clear();
        }
        self.notify.notify_waiters();
    }

    /// How many messages wait.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.lock().queue.len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    fn numbered(n: u64) -> Message {
        Message::new("m").with("n", n)
    }

    fn number(message: &Message) -> u64 {
        message
            .get("n")
            .and_then(channels_core::Value::as_u64)
            .unwrap()
    }

    #[test]
    fn full_mailbox_drops_the_oldest() {
        let mailbox = Mailbox::new("c".into(), 3);
        for n in 0..3 {
            assert_eq!(mailbox.push(numbered(n)), Pushed::Queued);
        }
        assert_eq!(mailbox.push(numbered(3)), Pushed::DroppedOldest(1));
        assert_eq!(mailbox.len(), 3);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let got: Vec<u64> = rt.block_on(async {
            let mut got = Vec::new();
            for _ in 0..3 {
                got.push(number(&mailbox.recv().await.unwrap()));
            }
            got
        });
        assert_eq!(got, vec![1, 2, 3]);
    }

    #[tokio::test]
    async fn cancelled_receive_loses_nothing() {
        let mailbox = Arc::new(Mailbox::new("c".into(), 100));
        for round in 0..200u64 {
            // A receive cancelled while waiting, then a push: the next receive gets it.
            let cancelled =
                tokio::time::timeout(Duration::from_micros(round % 7 * 50), mailbox.recv()).await;
            if let Ok(result) = cancelled {
                panic!("nothing was queued, yet receive returned {result:?}");
            }
            mailbox.push(numbered(round));
            let got = tokio::time::timeout(Duration::from_secs(1), mailbox.recv())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(number(&got), round);
        }
    }

    #[tokio::test]
    async fn two_receivers_share_without_duplicates() {
        let mailbox = Arc::new(Mailbox::new("c".into(), 1_000));
        let spawn_receiver = |mailbox: Arc<Mailbox>| {
            tokio::spawn(async move {
                let mut got = Vec::new();
                while let Ok(Ok(message)) =
                    tokio::time::timeout(Duration::from_millis(200), mailbox.recv()).await
                {
                    got.push(number(&message));
                }
                got
            })
        };
        let a = spawn_receiver(Arc::clone(&mailbox));
        let b = spawn_receiver(Arc::clone(&mailbox));
        for n in 0..500 {
            mailbox.push(numbered(n));
            if n % 50 == 0 {
                tokio::task::yield_now().await;
            }
        }
        let mut all = a.await.unwrap();
        all.extend(b.await.unwrap());
        all.sort_unstable();
        assert_eq!(all, (0..500).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn close_wakes_pending_receivers() {
        let mailbox = Arc::new(Mailbox::new("c".into(), 10));
        let pending = tokio::spawn({
            let mailbox = Arc::clone(&mailbox);
            async move { mailbox.recv().await }
        });
        tokio::task::yield_now().await;
        mailbox.close();
        let result = tokio::time::timeout(Duration::from_secs(1), pending)
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(result, Err(LayerError::Closed)));
        assert_eq!(mailbox.push(numbered(1)), Pushed::Closed);
    }
}
