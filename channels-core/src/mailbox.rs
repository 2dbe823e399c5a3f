//! [`Mailbox`]: the one bounded message queue of every layer. A channel's
//! messages wait in its mailbox until a receiver takes them.
//!
//! The rule for "full" (every layer follows it): a mailbox holds at most
//! `capacity` messages. When it is full, a new message is
//! - **refused** by [`Mailbox::try_push`]: the caller keeps it and reports
//!   `ChannelFull` (a layer's `send`);
//! - **dropped and counted** by [`Mailbox::offer`] (a layer's `group_send`,
//!   which skips full members as Django does);
//! - or it **evicts the oldest** message, counted, with
//!   [`Mailbox::push_evicting`] (messages relayed from Redis, which were
//!   already accepted there: channels_redis's receive buffer keeps the newest).
//!
//! Expired messages are dropped, and counted, when they reach the front.
//! Every drop lands in the layer's [`DropCounters`], which `/metrics` shows.
//!
//! Receiving is cancel-safe: a message leaves the queue only in the same
//! synchronous step that returns it. One short lock per mailbox (never held
//! across an `.await`), no allocation per message, and a receiver is woken
//! only when its mailbox goes from empty to non-empty.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::sync::lock;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::error::LayerError;
use crate::message::Message;

/// Counters of messages a layer could not deliver, shared by all its mailboxes.
#[derive(Debug, Default)]
pub struct DropCounters {
    full: AtomicU64,
    expired: AtomicU64,
    undecodable: AtomicU64,
}

impl DropCounters {
    /// Counts a message dropped because its mailbox was full.
    pub fn count_full(&self, messages: u64) {
        self.full.fetch_add(messages, Ordering::Relaxed);
    }

    /// Counts messages that expired unread.
    pub fn count_expired(&self, messages: u64) {
        self.expired.fetch_add(messages, Ordering::Relaxed);
    }

    /// Counts a message that could not be decoded (wrong key, not msgpack).
    pub fn count_undecodable(&self) {
        self.undecodable.fetch_add(1, Ordering::Relaxed);
    }

    /// Messages dropped because a mailbox was full.
    pub fn full(&self) -> u64 {
        self.full.load(Ordering::Relaxed)
    }

    /// Messages that expired unread.
    pub fn expired(&self) -> u64 {
        self.expired.load(Ordering::Relaxed)
    }

    /// Messages that could not be decoded.
    pub fn undecodable(&self) -> u64 {
        self.undecodable.load(Ordering::Relaxed)
    }
}

/// A queued message and the moment it stops being deliverable.
#[derive(Debug)]
struct Entry {
    message: Message,
    expires_at: Instant,
}

/// Why a mailbox no longer delivers.
#[derive(Debug, Clone)]
enum Stop {
    /// The layer was closed: receives get [`LayerError::Closed`].
    Closed,
    /// The source feeding the mailbox is down (Redis went away); receives of
    /// an empty mailbox get [`LayerError::Backend`] with an [`OutageError`]
    /// until [`Mailbox::recover`].
    Outage(Arc<str>),
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Entry>,
    /// Receives parked on `ready`, waiting for the queue to fill.
    parked: usize,
    /// Holders: live [`crate::Receiver`] handles, and whatever else a layer
    /// pins the mailbox for (a `receive` in progress).
    holders: usize,
    stop: Option<Stop>,
}

impl State {
    /// No message, no holder, no receive waiting.
    fn is_unused(&self) -> bool {
        self.queue.is_empty() && self.holders == 0 && self.parked == 0
    }
}

/// The receive side failed for a while; found inside [`LayerError::Backend`].
#[derive(Debug, Clone, thiserror::Error)]
#[error("the channel layer cannot receive right now: {reason}")]
pub struct OutageError {
    reason: Arc<str>,
}

impl OutageError {
    /// Why receiving fails.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// A channel's bounded queue of messages (see the module docs for the rule
/// when it is full). Layers keep one per channel they hold messages for and
/// hand it out in [`crate::Receiver`] handles.
#[derive(Debug)]
pub struct Mailbox {
    channel: Arc<str>,
    capacity: usize,
    state: Mutex<State>,
    ready: Notify,
    /// Only for mailboxes filled on demand ([`Mailbox::on_demand`]): woken
    /// when a receive parks on the empty queue.
    demand: Option<Box<Notify>>,
    drops: Arc<DropCounters>,
}

/// What [`Mailbox::offer`] did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offered {
    /// Queued.
    Queued,
    /// Dropped (and counted): the mailbox was full.
    Full,
    /// Not queued: the mailbox is closed.
    Closed,
}

impl Mailbox {
    /// An empty mailbox for `channel` holding at most `capacity` messages (at
    /// least one), counting its drops in `drops`.
    pub fn new(channel: Arc<str>, capacity: usize, drops: Arc<DropCounters>) -> Self {
        Self {
            channel,
            capacity: capacity.max(1),
            state: Mutex::new(State::default()),
            ready: Notify::new(),
            demand: None,
            drops,
        }
    }

    /// An empty mailbox filled on demand: whatever fills it waits in
    /// [`Mailbox::demanded`] until a receive is waiting on the empty queue
    /// (the Redis core layer pops a shared named channel only then, so other
    /// processes' receivers get their share).
    pub fn on_demand(channel: Arc<str>, capacity: usize, drops: Arc<DropCounters>) -> Self {
        Self {
            demand: Some(Box::new(Notify::new())),
            ..Self::new(channel, capacity, drops)
        }
    }

    /// Completes when a receive waits on this mailbox's empty queue. Only
    /// for mailboxes made with [`Mailbox::on_demand`] (others never
    /// complete).
    pub async fn demanded(&self) {
        let Some(demand) = &self.demand else {
            return std::future::pending().await;
        };
        loop {
            let notified = demand.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let state = self.lock();
                if state.parked > 0 && state.queue.is_empty() && state.stop.is_none() {
                    return;
                }
            }
            notified.await;
        }
    }

    /// The channel this mailbox belongs to.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// The channel name as a cheap-to-clone handle.
    pub fn channel_arc(&self) -> &Arc<str> {
        &self.channel
    }

    /// The most messages it holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Queues `message` unless the mailbox is full; a full mailbox hands it
    /// back (the caller reports `ChannelFull`). Expired messages at the front
    /// are dropped first, so they do not count against the capacity.
    ///
    /// # Errors
    /// The message itself, when the mailbox is full or closed.
    pub fn try_push(&self, message: Message, expires_at: Instant) -> Result<(), Message> {
        let wake = {
            let mut state = self.lock();
            if matches!(state.stop, Some(Stop::Closed)) {
                return Err(message);
            }
            if state.queue.len() >= self.capacity {
                // Only a full queue reads the clock: expired messages make
                // room before the new one is refused.
                self.purge_expired(&mut state, Instant::now());
                if state.queue.len() >= self.capacity {
                    return Err(message);
                }
            }
            self.enqueue(&mut state, message, expires_at)
        };
        self.wake(wake);
        Ok(())
    }

    /// Queues `message`, or drops and counts it when the mailbox is full (a
    /// `group_send` skipping a full member).
    pub fn offer(&self, message: Message, expires_at: Instant) -> Offered {
        match self.try_push(message, expires_at) {
            Ok(()) => Offered::Queued,
            Err(_) if self.is_closed() => Offered::Closed,
            Err(_) => {
                self.drops.count_full(1);
                Offered::Full
            }
        }
    }

    /// Queues `message`, evicting (and counting) the oldest one when the
    /// mailbox is full. Returns whether a message was evicted.
    ///
    /// # Errors
    /// The message itself when the mailbox is closed (also one a layer
    /// retired with [`Mailbox::close_if_unused`]): whoever still held it
    /// must find the channel's current mailbox.
    pub fn push_evicting(&self, message: Message, expires_at: Instant) -> Result<bool, Message> {
        let (evicted, wake) = {
            let mut state = self.lock();
            if matches!(state.stop, Some(Stop::Closed)) {
                return Err(message);
            }
            if state.queue.len() >= self.capacity {
                self.purge_expired(&mut state, Instant::now());
            }
            let evicted = state.queue.len() >= self.capacity;
            if evicted {
                state.queue.pop_front();
            }
            (evicted, self.enqueue(&mut state, message, expires_at))
        };
        if evicted {
            self.drops.count_full(1);
        }
        self.wake(wake);
        Ok(evicted)
    }

    /// Pushes and says whether a parked receiver must be woken: only when the
    /// queue was empty (a receiver that is awake drains what follows).
    fn enqueue(&self, state: &mut State, message: Message, expires_at: Instant) -> bool {
        let was_empty = state.queue.is_empty();
        push_back_lean(
            &mut state.queue,
            Entry {
                message,
                expires_at,
            },
        );
        was_empty && state.parked > 0
    }

    fn wake(&self, wake: bool) {
        if wake {
            self.ready.notify_one();
        }
    }

    /// Drops expired messages from the front (expiry times grow along the
    /// queue, so it never scans past the first live one).
    fn purge_expired(&self, state: &mut State, now: Instant) {
        let mut expired = 0;
        while state
            .queue
            .front()
            .is_some_and(|entry| entry.expires_at <= now)
        {
            state.queue.pop_front();
            expired += 1;
        }
        if expired > 0 {
            self.drops.count_expired(expired);
        }
    }

    /// Takes the oldest live message without waiting.
    ///
    /// # Errors
    /// [`LayerError::Closed`] when the mailbox is closed, [`LayerError::Backend`]
    /// during an outage, both only once the queue is empty.
    pub fn try_recv(&self) -> Result<Option<Message>, LayerError> {
        let mut state = self.lock();
        self.take(&mut state, false, Instant::now)
    }

    /// [`Mailbox::try_recv`] with the caller's reading of the clock, for a
    /// receiver draining several messages in one go (one clock read for all
    /// of them, not one per message). Expiry is judged at `now`: a message
    /// that expires after it (while the drain runs) is still returned.
    ///
    /// # Errors
    /// As [`Mailbox::try_recv`].
    pub fn try_recv_at(&self, now: Instant) -> Result<Option<Message>, LayerError> {
        let mut state = self.lock();
        self.take(&mut state, false, || now)
    }

    /// Pops under the lock; `parked` says whether the caller was counted as
    /// parked (it is no longer, once it returns something). The buffer keeps
    /// its size when the queue drains, so steady traffic does not reallocate
    /// it on every wake-up; [`Mailbox::shrink_if_empty`] gives it back.
    fn take(
        &self,
        state: &mut State,
        parked: bool,
        now: impl FnOnce() -> Instant,
    ) -> Result<Option<Message>, LayerError> {
        if !state.queue.is_empty() {
            // Reading the clock only when there is something to expire.
            self.purge_expired(state, now());
        }
        if let Some(entry) = state.queue.pop_front() {
            if parked {
                state.parked -= 1;
            }
            if !state.queue.is_empty() && state.parked > 0 {
                // More is queued and someone else waits: pass the wake-up on.
                self.ready.notify_one();
            }
            return Ok(Some(entry.message));
        }
        match &state.stop {
            Some(stop) => {
                if parked {
                    state.parked -= 1;
                }
                Err(stop_error(stop))
            }
            None => Ok(None),
        }
    }

    /// Waits for the next message. Cancel-safe: dropping the future loses no
    /// message.
    ///
    /// # Errors
    /// [`LayerError::Closed`] once the mailbox is closed and empty;
    /// [`LayerError::Backend`] while the source feeding it is down and it is
    /// empty.
    pub async fn recv(&self) -> Result<Message, LayerError> {
        if let Some(message) = self.try_recv()? {
            return Ok(message);
        }
        let mut parked = Parked {
            mailbox: self,
            counted: false,
        };
        loop {
            let notified = self.ready.notified();
            tokio::pin!(notified);
            {
                let mut state = self.lock();
                match self.take(&mut state, parked.counted, Instant::now) {
                    Ok(Some(message)) => {
                        parked.counted = false;
                        return Ok(message);
                    }
                    Err(error) => {
                        parked.counted = false;
                        return Err(error);
                    }
                    Ok(None) => {}
                }
                if !parked.counted {
                    state.parked += 1;
                    parked.counted = true;
                    if let Some(demand) = &self.demand {
                        demand.notify_one();
                    }
                }
                // Registered before the lock is released, so a push right
                // after it still wakes this receive.
                notified.as_mut().enable();
            }
            notified.await;
        }
    }

    /// How many messages wait (expired ones included until they are purged).
    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    /// Whether no message waits.
    pub fn is_empty(&self) -> bool {
        self.lock().queue.is_empty()
    }

    /// Whether nothing needs this mailbox: no message, no handle, no receive
    /// waiting, nobody holding it. A layer may then forget it.
    pub fn is_unused(&self) -> bool {
        self.lock().is_unused()
    }

    /// How many receives wait on the empty queue right now.
    pub fn waiting(&self) -> usize {
        self.lock().parked
    }

    /// How many hold the mailbox (receiver handles, receives in progress).
    pub fn holders(&self) -> usize {
        self.lock().holders
    }

    /// Pins the mailbox ([`Mailbox::is_unused`] is false until the matching
    /// [`Mailbox::remove_holder`]). [`crate::Receiver`] does it; a layer does
    /// it for a `receive` in progress, under the lock that guards its map.
    pub fn add_holder(&self) {
        self.lock().holders += 1;
    }

    /// Unpins the mailbox; returns whether that was the last holder.
    pub fn remove_holder(&self) -> bool {
        let mut state = self.lock();
        state.holders = state.holders.saturating_sub(1);
        state.holders == 0
    }

    /// Drops every queued message (a `flush`, or a channel released while
    /// nobody waits on it). Not counted: nobody will ask for them.
    pub fn clear(&self) {
        let mut state = self.lock();
        state.queue = VecDeque::new();
    }

    /// Gives back the queue's buffer if it is empty (an idle receiver's
    /// periodic tidy-up: a drained queue keeps the size its last burst
    /// needed, at most its capacity).
    pub fn shrink_if_empty(&self) {
        let mut state = self.lock();
        if state.queue.is_empty() && state.queue.capacity() > 0 {
            state.queue = VecDeque::new();
        }
    }

    /// Drops expired messages now (layers call it from their periodic sweep,
    /// so a channel nobody reads does not hold them until its next use).
    pub fn purge(&self) {
        let mut state = self.lock();
        self.purge_expired(&mut state, Instant::now());
    }

    /// Closes the mailbox: queued messages are dropped, pending and later
    /// receives get [`LayerError::Closed`], pushes are refused.
    pub fn close(&self) {
        {
            let mut state = self.lock();
            state.stop = Some(Stop::Closed);
            state.queue = VecDeque::new();
        }
        self.ready.notify_waiters();
    }

    /// Closes the mailbox if nothing needs it ([`Mailbox::is_unused`]), in
    /// one step under its lock, and says whether it did. A layer that
    /// forgets an unused mailbox retires it this way, so a push through a
    /// reference kept elsewhere is refused instead of landing where nobody
    /// will look.
    pub fn close_if_unused(&self) -> bool {
        let mut state = self.lock();
        let unused = state.is_unused();
        if unused {
            state.stop = Some(Stop::Closed);
        }
        unused
    }

    /// Whether [`Mailbox::close`] was called.
    pub fn is_closed(&self) -> bool {
        matches!(self.lock().stop, Some(Stop::Closed))
    }

    /// The source feeding this mailbox is down: receives of an empty mailbox
    /// fail with `reason` until [`Mailbox::recover`]. Queued messages are
    /// still delivered first.
    pub fn fail(&self, reason: &Arc<str>) {
        {
            let mut state = self.lock();
            if matches!(state.stop, Some(Stop::Closed)) {
                return;
            }
            state.stop = Some(Stop::Outage(reason.clone()));
        }
        self.ready.notify_waiters();
    }

    /// The source is back: receives wait for messages again.
    pub fn recover(&self) {
        let mut state = self.lock();
        if matches!(state.stop, Some(Stop::Outage(_))) {
            state.stop = None;
        }
    }
}

fn stop_error(stop: &Stop) -> LayerError {
    match stop {
        Stop::Closed => LayerError::Closed,
        Stop::Outage(reason) => LayerError::backend(OutageError {
            reason: reason.clone(),
        }),
    }
}

/// Un-counts a parked receive that ends without taking anything (cancelled).
struct Parked<'a> {
    mailbox: &'a Mailbox,
    counted: bool,
}

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        if self.counted {
            let mut state = self.mailbox.lock();
            state.parked -= 1;
            // A wake-up meant for this receive is passed on by `Notified`'s
            // own drop; if messages wait, make sure another parked receive
            // looks (this one may have been woken and then cancelled).
            if !state.queue.is_empty() && state.parked > 0 {
                self.mailbox.ready.notify_one();
            }
        }
    }
}

/// Pushes onto a queue that gets room for exactly one item when it has none
/// (its first item, or the first since its buffer was given back), and grows
/// as usual from there. A plain `push_back` makes room for four, which a
/// connection that hears one message now and then keeps until its next tick
/// gives the buffer back: measured with heaptrack, the mailbox and outbox
/// buffers were about 0.25 KB of the 0.39 KB an idle connection grew by
/// after its first broadcast.
pub(crate) fn push_back_lean<T>(queue: &mut VecDeque<T>, item: T) {
    if queue.capacity() == 0 {
        queue.reserve_exact(1);
    }
    queue.push_back(item);
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn mailbox(capacity: usize) -> (Arc<Mailbox>, Arc<DropCounters>) {
        let drops = Arc::new(DropCounters::default());
        (
            Arc::new(Mailbox::new("c".into(), capacity, drops.clone())),
            drops,
        )
    }

    fn later() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    fn numbered(n: u64) -> Message {
        Message::new("m").with("n", n)
    }

    fn number(message: &Message) -> u64 {
        message.get("n").and_then(rmpv::Value::as_u64).unwrap()
    }

    #[tokio::test]
    async fn try_push_refuses_when_full_and_offer_counts() {
        let (mailbox, drops) = mailbox(2);
        mailbox.try_push(numbered(1), later()).unwrap();
        mailbox.try_push(numbered(2), later()).unwrap();
        let refused = mailbox.try_push(numbered(3), later()).unwrap_err();
        assert_eq!(number(&refused), 3);
        assert_eq!(
            drops.full(),
            0,
            "a refused send is the caller's error, not a drop"
        );
        assert_eq!(mailbox.offer(numbered(4), later()), Offered::Full);
        assert_eq!(drops.full(), 1);
        assert_eq!(number(&mailbox.recv().await.unwrap()), 1);
        assert_eq!(number(&mailbox.recv().await.unwrap()), 2);
    }

    #[tokio::test]
    async fn push_evicting_keeps_the_newest() {
        let (mailbox, drops) = mailbox(100);
        for n in 0..10_000 {
            mailbox.push_evicting(numbered(n), later()).unwrap();
        }
        assert_eq!(mailbox.len(), 100);
        assert_eq!(drops.full(), 9_900);
        assert_eq!(number(&mailbox.recv().await.unwrap()), 9_900);
    }

    #[tokio::test]
    async fn only_an_unused_mailbox_retires_and_then_refuses_pushes() {
        let (mailbox, _) = mailbox(10);
        mailbox.push_evicting(numbered(1), later()).unwrap();
        assert!(!mailbox.close_if_unused(), "a queued message keeps it");
        mailbox.add_holder();
        assert_eq!(number(&mailbox.try_recv().unwrap().unwrap()), 1);
        assert!(!mailbox.close_if_unused(), "a holder keeps it");
        assert!(mailbox.remove_holder());
        assert!(mailbox.close_if_unused());
        let refused = mailbox.push_evicting(numbered(2), later());
        assert_eq!(refused.map_err(|message| number(&message)), Err(2));
        assert!(mailbox.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn expired_messages_are_skipped_and_counted() {
        let (mailbox, drops) = mailbox(10);
        mailbox
            .try_push(numbered(1), Instant::now() + Duration::from_secs(1))
            .unwrap();
        mailbox
            .try_push(numbered(2), Instant::now() + Duration::from_secs(5))
            .unwrap();
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(number(&mailbox.try_recv().unwrap().unwrap()), 2);
        assert_eq!(drops.expired(), 1);
        assert!(mailbox.try_recv().unwrap().is_none());
    }

    #[tokio::test]
    async fn cancelled_receive_loses_nothing() {
        let (mailbox, _) = mailbox(100);
        for round in 0..300u64 {
            let cancelled =
                tokio::time::timeout(Duration::from_micros(round % 7 * 50), mailbox.recv()).await;
            assert!(cancelled.is_err(), "nothing was queued");
            mailbox.try_push(numbered(round), later()).unwrap();
            let got = tokio::time::timeout(Duration::from_secs(1), mailbox.recv())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(number(&got), round);
        }
        assert!(mailbox.is_unused(), "no parked receive is left counted");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_receivers_share_without_duplicates_or_stalls() {
        let (mailbox, _) = mailbox(1_000);
        let spawn_receiver = |mailbox: Arc<Mailbox>| {
            tokio::spawn(async move {
                let mut got = Vec::new();
                while let Ok(Ok(message)) =
                    tokio::time::timeout(Duration::from_millis(300), mailbox.recv()).await
                {
                    got.push(number(&message));
                }
                got
            })
        };
        let a = spawn_receiver(Arc::clone(&mailbox));
        let b = spawn_receiver(Arc::clone(&mailbox));
        for n in 0..2_000 {
            while mailbox.try_push(numbered(n), later()).is_err() {
                tokio::task::yield_now().await;
            }
            if n % 37 == 0 {
                tokio::task::yield_now().await;
            }
        }
        let mut all = a.await.unwrap();
        all.extend(b.await.unwrap());
        all.sort_unstable();
        assert_eq!(all, (0..2_000).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn close_and_outage_wake_pending_receivers() {
        let (mailbox, _) = mailbox(10);
        let pending = tokio::spawn({
            let mailbox = Arc::clone(&mailbox);
            async move { mailbox.recv().await }
        });
        tokio::task::yield_now().await;
        mailbox.fail(&Arc::from("redis down"));
        let error = tokio::time::timeout(Duration::from_secs(1), pending)
            .await
            .unwrap()
            .unwrap()
            .unwrap_err();
        let outage = std::error::Error::source(&error)
            .and_then(|source| source.downcast_ref::<OutageError>())
            .expect("an outage error inside Backend");
        assert_eq!(outage.reason(), "redis down");
        // Queued messages still come first during an outage.
        mailbox.try_push(numbered(1), later()).unwrap();
        assert_eq!(number(&mailbox.recv().await.unwrap()), 1);
        mailbox.recover();
        assert!(
            tokio::time::timeout(Duration::from_millis(20), mailbox.recv())
                .await
                .is_err()
        );
        mailbox.close();
        assert!(matches!(mailbox.recv().await, Err(LayerError::Closed)));
        assert!(mailbox.try_push(numbered(2), later()).is_err());
    }

    #[test]
    fn a_first_message_takes_room_for_one_and_a_burst_grows_as_usual() {
        let (mailbox, _) = mailbox(100);
        mailbox.try_push(numbered(1), later()).unwrap();
        assert_eq!(mailbox.lock().queue.capacity(), 1);
        for n in 2..=10 {
            mailbox.try_push(numbered(n), later()).unwrap();
        }
        assert!(mailbox.lock().queue.capacity() >= 10);
        for n in 1..=10 {
            assert_eq!(number(&mailbox.try_recv().unwrap().unwrap()), n);
        }
        mailbox.shrink_if_empty();
        mailbox.try_push(numbered(11), later()).unwrap();
        assert_eq!(
            mailbox.lock().queue.capacity(),
            1,
            "after the buffer was given back, the next message again takes room for one"
        );
    }
}
