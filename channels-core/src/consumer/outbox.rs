//! The bounded outbound queue of one connection: [`Outbox`] (fed by the
//! consumer without waiting) and [`OutboxReceiver`] (drained by the
//! transport).
//!
//! A `VecDeque` behind a mutex plus one waker per side, rather than a tokio
//! `mpsc`: an idle connection's queue then holds no buffer at all (tokio's
//! channel allocates a 32-slot block up front), and each side has exactly one
//! waiter, so waiting costs no `Notified` future in the connection's state;
//! both matter at 100,000 connections. The lock is never held across an
//! `.await`.
//!
//! The queue is bounded twice: in frames and in bytes (payloads are shared
//! buffers, so a broadcast counts against every member that holds it, which
//! bounds what one slow client can keep alive).
//!
//! A full queue means one of two things. If the writer is stuck on the
//! socket (the client does not read), the client is slow: it is closed with
//! 1013. If the socket has room and the writer simply has not run yet (the
//! server itself is behind), the client is healthy: the frame is taken
//! anyway, up to twice the bounds, and the queue reports
//! [`Outbox::is_over`], so the runtime stops taking layer messages until the
//! writer catches up (back-pressure into the layer channel, whose drops are
//! counted there). A queue that is over its bounds when the writer finds the
//! socket stuck is a slow client after all.

use std::sync::atomic::{AtomicBool, Ordering};

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;

use super::error::ConsumerError;
use super::frame::{CloseFrame, Outbound, close_code};
use super::stats::ConsumerStats;

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Outbound>,
    /// Payload bytes of the queued frames.
    bytes: usize,
    /// A close (1013, slow client) jumps the queue. A flag, not the frame:
    /// every connection's queue carries it, and the frame is always the same.
    urgent: bool,
    /// The sending side is gone: after the queue, nothing more comes.
    sender_gone: bool,
    /// The receiving side is gone: nobody reads any more.
    receiver_gone: bool,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Wakes the receiver (the one writer task), registered before it
    /// checks the queue a last time, so no push is missed.
    ready: AtomicWaker,
    /// Wakes the sender's runtime when an over-full queue is back under its
    /// bounds (or the connection is being closed).
    space: AtomicWaker,
    /// The queue holds more than its bounds (the server was behind).
    over: AtomicBool,
    /// The writer is waiting for the socket to take a write.
    backed_up: AtomicBool,
    /// An urgent close (slow client) was queued: nothing more is taken.
    slow: AtomicBool,
    capacity: usize,
    max_bytes: usize,
    stats: Arc<ConsumerStats>,
}

impl Drop for Shared {
    /// A connection that ends while held back no longer counts as one.
    fn drop(&mut self) {
        if *self.over.get_mut() {
            self.stats.held_back.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        crate::sync::lock(&self.state)
    }

    /// Whether `state` plus one frame of `len` bytes goes past the bounds.
    fn is_full(&self, state: &State, len: usize, factor: usize) -> bool {
        state.queue.len() >= self.capacity.saturating_mul(factor)
            || (!state.queue.is_empty()
                && state.bytes.saturating_add(len) > self.max_bytes.saturating_mul(factor))
    }

    /// Queues the urgent 1013 (the caller holds the lock), counts it and
    /// wakes both sides.
    fn close_slow(&self, state: &mut State) {
        state.urgent = true;
        self.slow.store(true, Ordering::Release);
        self.ready.wake();
        self.space.wake();
        ConsumerStats::incr(&self.stats.queue_drops);
        tracing::warn!(
            capacity = self.capacity,
            max_bytes = self.max_bytes,
            "client too slow: outbound queue full, closing with 1013"
        );
    }
}

/// How far past its bounds a queue may grow while the socket has room (the
/// server, not the client, is behind).
const OVER_FACTOR: usize = 2;

/// The sending side. Never waits: when the queue is full the client is too
/// slow, so the frame is dropped, the drop counted, and an urgent close
/// (1013) jumps the queue.
#[derive(Debug)]
pub(crate) struct Outbox {
    shared: Arc<Shared>,
    closed: bool,
    /// Frames queued since the shared counter was last updated: one atomic
    /// add per wake-up of the connection, not one per frame.
    uncounted: u64,
}

impl Outbox {
    /// Creates a queue holding at most `capacity` frames (at least 1) and
    /// `max_bytes` bytes of payload (a single larger frame still fits into
    /// an empty queue).
    pub(crate) fn new(
        capacity: usize,
        max_bytes: usize,
        stats: Arc<ConsumerStats>,
    ) -> (Self, OutboxReceiver) {
        let shared = Arc::new(Shared {
            state: Mutex::default(),
            ready: AtomicWaker::new(),
            space: AtomicWaker::new(),
            over: AtomicBool::new(false),
            backed_up: AtomicBool::new(false),
            slow: AtomicBool::new(false),
            capacity: capacity.max(1),
            max_bytes,
            stats,
        });
        let outbox = Self {
            shared: shared.clone(),
            closed: false,
            uncounted: 0,
        };
        let receiver = OutboxReceiver {
            shared,
            done: false,
        };
        (outbox, receiver)
    }

    /// Returns whether a close was queued (nothing more will be sent).
    pub(crate) fn is_closed(&self) -> bool {
        self.closed || self.shared.slow.load(Ordering::Acquire)
    }

    /// Returns whether the queue holds more than its bounds: the server fell
    /// behind, and the runtime should take no more layer messages until
    /// [`Outbox::space`] says the writer caught up.
    pub(crate) fn is_over(&self) -> bool {
        self.shared.over.load(Ordering::Acquire)
    }

    /// Resolves when an over-full queue is back under its bounds, or the
    /// connection is being closed as slow.
    pub(crate) async fn space(&self) {
        std::future::poll_fn(|cx| self.poll_space(cx)).await;
    }

    /// [`Outbox::space`] as a poll: ready when not over its bounds or closing.
    fn poll_space(&self, cx: &mut Context<'_>) -> Poll<()> {
        let has_space = || !self.is_over() || self.is_closed();
        if has_space() {
            return Poll::Ready(());
        }
        // Registered before the last check, so a writer catching up right
        // now still wakes us.
        self.shared.space.register(cx.waker());
        if has_space() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// The stats this queue counts into.
    pub(crate) fn stats(&self) -> &Arc<ConsumerStats> {
        &self.shared.stats
    }

    /// Queues a frame or ping.
    pub(crate) fn push(&mut self, item: Outbound) -> Result<(), ConsumerError> {
        if self.closed {
            return Err(ConsumerError::Closed);
        }
        let bytes = match &item {
            Outbound::Frame(frame) => Some(frame.len()),
            Outbound::Ping(_) | Outbound::Close(_) => None,
        };
        let shared = &*self.shared;
        let mut state = shared.lock();
        if state.receiver_gone || state.urgent {
            drop(state);
            self.closed = true;
            return Err(ConsumerError::Closed);
        }
        let len = bytes.unwrap_or(0);
        // Pings and closes go past the bounds: they are tiny and rare.
        if bytes.is_some() && shared.is_full(&state, len, 1) {
            // Stuck on the socket, or over even the server-behind allowance:
            // the client is too slow.
            if shared.backed_up.load(Ordering::Acquire) || shared.is_full(&state, len, OVER_FACTOR)
            {
                shared.close_slow(&mut state);
                drop(state);
                self.closed = true;
                return Err(ConsumerError::SlowClient {
                    capacity: shared.capacity,
                });
            }
            if !shared.over.swap(true, Ordering::AcqRel) {
                shared.stats.held_back.fetch_add(1, Ordering::Relaxed);
            }
        }
        let was_empty = state.queue.is_empty();
        state.bytes += bytes.unwrap_or(0);
        crate::mailbox::push_back_lean(&mut state.queue, item);
        drop(state);
        // The writer drains everything once awake: wake it only when the
        // queue fills from empty.
        if was_empty {
            self.shared.ready.wake();
        }
        if bytes.is_some() {
            self.uncounted += 1;
        }
        Ok(())
    }

    /// Gives back the queue's buffer if it is empty (the runtime calls it on
    /// its periodic tick; a drained queue keeps the size its last burst
    /// needed, so steady traffic does not reallocate it on every wake-up).
    pub(crate) fn shrink_if_empty(&self) {
        let mut state = self.shared.lock();
        if state.queue.is_empty() && state.queue.capacity() > 0 {
            state.queue = VecDeque::new();
        }
    }

    /// Adds the frames queued since the last call to the shared counter.
    pub(crate) fn publish_counts(&mut self) {
        if self.uncounted > 0 {
            self.shared
                .stats
                .frames_out
                .fetch_add(self.uncounted, std::sync::atomic::Ordering::Relaxed);
            self.uncounted = 0;
        }
    }

    /// Queues a close after the frames already queued. Later calls do
    /// nothing.
    pub(crate) fn close(&mut self, frame: CloseFrame) {
        if self.closed {
            return;
        }
        self.closed = true;
        // A close always fits: it is the last item, at most one past the
        // capacity, since pushes stop at the capacity.
        self.shared.lock().queue.push_back(Outbound::Close(frame));
        self.shared.ready.wake();
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        self.publish_counts();
        self.shared.lock().sender_gone = true;
        self.shared.ready.wake();
    }
}

/// The receiving side, drained by the transport's writer: frames in order,
/// then a close; an urgent close (slow client) comes before anything queued.
/// `recv` returns `None` after a close, or when the connection is gone.
#[derive(Debug)]
pub struct OutboxReceiver {
    shared: Arc<Shared>,
    done: bool,
}

/// Where the writer tells the queue whether the socket is stuck (see
/// [`OutboxReceiver::socket_state`]).
#[derive(Debug)]
pub struct SocketState {
    shared: Arc<Shared>,
}

impl SocketState {
    /// The writer says whether it is waiting for the socket to take a write
    /// (`true` while stuck, `false` once the write went through). Stuck with
    /// a queue past its bounds means the client is slow: it is closed with
    /// 1013.
    pub fn set_backed_up(&self, backed_up: bool) {
        let shared = &*self.shared;
        shared.backed_up.store(backed_up, Ordering::Release);
        if backed_up && shared.over.load(Ordering::Acquire) {
            let mut state = shared.lock();
            if !state.urgent && shared.is_full(&state, 0, 1) {
                shared.close_slow(&mut state);
            }
        }
    }
}

impl OutboxReceiver {
    /// The handle through which the writer reports a stuck socket.
    pub fn socket_state(&self) -> SocketState {
        SocketState {
            shared: self.shared.clone(),
        }
    }

    /// Waits for the next item to send. Cancel-safe: an item is only taken
    /// from the queue when it is returned.
    pub async fn recv(&mut self) -> Option<Outbound> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// [`OutboxReceiver::recv`] as a poll.
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Outbound>> {
        if let Some(next) = self.poll_state() {
            return Poll::Ready(next);
        }
        // Registered before the last look, so a push in between still wakes
        // this task.
        self.shared.ready.register(cx.waker());
        match self.poll_state() {
            Some(next) => Poll::Ready(next),
            None => Poll::Pending,
        }
    }

    /// Returns the next item if one is ready now.
    pub fn try_recv(&mut self) -> Option<Outbound> {
        self.poll_state().flatten()
    }

    /// `Some(item)` when the answer is known now (`Some(None)`: finished),
    /// `None` when the caller must wait.
    fn poll_state(&mut self) -> Option<Option<Outbound>> {
        if self.done {
            return Some(None);
        }
        let mut state = self.shared.lock();
        if std::mem::take(&mut state.urgent) {
            state.queue = VecDeque::new();
            state.bytes = 0;
            self.done = true;
            return Some(Some(Outbound::Close(CloseFrame::new(
                close_code::TRY_AGAIN_LATER,
                "outbound queue full: client too slow",
            ))));
        }
        if let Some(item) = state.queue.pop_front() {
            if let Outbound::Frame(frame) = &item {
                state.bytes -= frame.len();
            }
            if self.shared.over.load(Ordering::Relaxed)
                && !self.shared.is_full(&state, 0, 1)
                && self.shared.over.swap(false, Ordering::AcqRel)
            {
                self.shared.stats.held_back.fetch_sub(1, Ordering::Relaxed);
                self.shared.space.wake();
            }
            if matches!(item, Outbound::Close(_)) {
                self.done = true;
            }
            return Some(Some(item));
        }
        if state.sender_gone {
            self.done = true;
            return Some(None);
        }
        None
    }
}

impl Drop for OutboxReceiver {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.receiver_gone = true;
        state.queue = VecDeque::new();
        state.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consumer::Frame;

    #[tokio::test]
    async fn a_first_frame_takes_room_for_one() {
        let stats = Arc::new(ConsumerStats::default());
        let (mut outbox, mut receiver) = Outbox::new(100, usize::MAX, stats);
        outbox.push(Outbound::Frame(Frame::from("a"))).unwrap();
        assert_eq!(outbox.shared.lock().queue.capacity(), 1);
        outbox.push(Outbound::Frame(Frame::from("b"))).unwrap();
        assert!(outbox.shared.lock().queue.capacity() >= 2);
        for text in ["a", "b"] {
            let frame = Outbound::Frame(Frame::from(text));
            assert_eq!(receiver.recv().await, Some(frame));
        }
    }

    #[tokio::test]
    async fn full_queue_closes_urgently_and_counts() {
        let stats = Arc::new(ConsumerStats::default());
        let (mut outbox, mut receiver) = Outbox::new(2, usize::MAX, stats.clone());
        // The writer is stuck on the socket: the client does not read.
        receiver.socket_state().set_backed_up(true);
        outbox.push(Outbound::Frame(Frame::from("a"))).unwrap();
        outbox.push(Outbound::Frame(Frame::from("b"))).unwrap();
        let error = outbox.push(Outbound::Frame(Frame::from("c"))).unwrap_err();
        assert!(matches!(error, ConsumerError::SlowClient { capacity: 2 }));
        assert!(outbox.is_closed());
        assert!(matches!(
            outbox.push(Outbound::Frame(Frame::from("d"))),
            Err(ConsumerError::Closed)
        ));
        assert_eq!(
            receiver.recv().await,
            Some(Outbound::Close(CloseFrame::new(
                close_code::TRY_AGAIN_LATER,
                "outbound queue full: client too slow"
            )))
        );
        assert_eq!(receiver.recv().await, None);
        assert_eq!(ConsumerStats::get(&stats.queue_drops), 1);
        outbox.publish_counts();
        assert_eq!(ConsumerStats::get(&stats.frames_out), 2);
    }

    #[tokio::test]
    async fn a_full_queue_with_a_free_socket_holds_the_sender_back_instead_of_closing() {
        let stats = Arc::new(ConsumerStats::default());
        let (mut outbox, mut receiver) = Outbox::new(2, usize::MAX, stats.clone());
        for text in ["a", "b", "c"] {
            outbox.push(Outbound::Frame(Frame::from(text))).unwrap();
        }
        // Past the bound, but the socket has room: the server is behind.
        assert!(outbox.is_over());
        assert!(!outbox.is_closed());
        assert_eq!(ConsumerStats::get(&stats.held_back), 1);
        {
            let waiting = outbox.space();
            let mut waiting = std::pin::pin!(waiting);
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            assert!(std::future::Future::poll(waiting.as_mut(), &mut cx).is_pending());
            // The writer catches up: back under the bound, the sender may go on.
            assert_eq!(
                receiver.recv().await,
                Some(Outbound::Frame(Frame::from("a")))
            );
            assert_eq!(
                receiver.recv().await,
                Some(Outbound::Frame(Frame::from("b")))
            );
            tokio::time::timeout(std::time::Duration::from_secs(1), waiting)
                .await
                .unwrap();
        }
        assert!(!outbox.is_over());
        assert_eq!(ConsumerStats::get(&stats.held_back), 0);
        assert_eq!(ConsumerStats::get(&stats.queue_drops), 0);
        // Twice the bound is the most a free socket buys.
        for text in ["d", "e", "f"] {
            outbox.push(Outbound::Frame(Frame::from(text))).unwrap();
        }
        assert!(matches!(
            outbox.push(Outbound::Frame(Frame::from("g"))),
            Err(ConsumerError::SlowClient { capacity: 2 })
        ));
        assert_eq!(ConsumerStats::get(&stats.queue_drops), 1);
        assert_eq!(ConsumerStats::get(&stats.held_back), 1, "counted once");
        // A connection that ends held back no longer counts.
        drop((outbox, receiver));
        assert_eq!(ConsumerStats::get(&stats.held_back), 0);
    }

    #[tokio::test]
    async fn an_over_full_queue_whose_socket_then_sticks_is_a_slow_client() {
        let stats = Arc::new(ConsumerStats::default());
        let (mut outbox, mut receiver) = Outbox::new(2, usize::MAX, stats.clone());
        for text in ["a", "b", "c"] {
            outbox.push(Outbound::Frame(Frame::from(text))).unwrap();
        }
        assert!(outbox.is_over());
        let socket = receiver.socket_state();
        socket.set_backed_up(true);
        // The held-back sender wakes and sees the close.
        tokio::time::timeout(std::time::Duration::from_secs(1), outbox.space())
            .await
            .unwrap();
        assert!(outbox.is_closed());
        assert!(matches!(
            outbox.push(Outbound::Frame(Frame::from("d"))),
            Err(ConsumerError::Closed)
        ));
        assert_eq!(
            receiver.recv().await,
            Some(Outbound::Close(CloseFrame::new(
                close_code::TRY_AGAIN_LATER,
                "outbound queue full: client too slow"
            )))
        );
        assert_eq!(ConsumerStats::get(&stats.queue_drops), 1);
        // A stuck socket with a queue within its bounds is not slow yet.
        let (mut outbox, receiver) = Outbox::new(2, usize::MAX, Arc::default());
        outbox.push(Outbound::Frame(Frame::from("a"))).unwrap();
        receiver.socket_state().set_backed_up(true);
        assert!(!outbox.is_closed());
    }

    #[tokio::test]
    async fn close_follows_queued_frames_and_ends() {
        let (mut outbox, mut receiver) = Outbox::new(4, usize::MAX, Arc::default());
        outbox.push(Outbound::Frame(Frame::from("a"))).unwrap();
        outbox.close(CloseFrame::new(1000, "bye"));
        drop(outbox);
        assert_eq!(
            receiver.recv().await,
            Some(Outbound::Frame(Frame::from("a")))
        );
        assert_eq!(
            receiver.recv().await,
            Some(Outbound::Close(CloseFrame::new(1000, "bye")))
        );
        assert_eq!(receiver.recv().await, None);
    }

    #[tokio::test]
    async fn receiver_wakes_for_items_pushed_while_it_waits() {
        let (mut outbox, mut receiver) = Outbox::new(4, usize::MAX, Arc::default());
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(item) = receiver.recv().await {
                got.push(item);
            }
            got
        });
        for text in ["a", "b", "c"] {
            tokio::task::yield_now().await;
            outbox.push(Outbound::Frame(Frame::from(text))).unwrap();
        }
        drop(outbox);
        let got = tokio::time::timeout(std::time::Duration::from_secs(1), reader)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.len(), 3);
    }

    #[tokio::test]
    async fn the_byte_bound_closes_a_client_holding_too_much() {
        let stats = Arc::new(ConsumerStats::default());
        let (mut outbox, mut receiver) = Outbox::new(100, 10, stats.clone());
        // A single frame over the bound still goes out when the queue is empty.
        outbox
            .push(Outbound::Frame(Frame::from("0123456789ab")))
            .unwrap();
        assert!(receiver.recv().await.is_some());
        // The client does not read.
        receiver.socket_state().set_backed_up(true);
        outbox.push(Outbound::Frame(Frame::from("0123"))).unwrap();
        outbox.push(Outbound::Frame(Frame::from("4567"))).unwrap();
        let error = outbox
            .push(Outbound::Frame(Frame::from("89ab")))
            .unwrap_err();
        assert!(matches!(error, ConsumerError::SlowClient { .. }));
        assert_eq!(ConsumerStats::get(&stats.queue_drops), 1);
    }

    #[test]
    fn a_gone_receiver_makes_sends_fail() {
        let (mut outbox, receiver) = Outbox::new(4, usize::MAX, Arc::default());
        drop(receiver);
        assert!(matches!(
            outbox.push(Outbound::Frame(Frame::from("a"))),
            Err(ConsumerError::Closed)
        ));
    }
}
