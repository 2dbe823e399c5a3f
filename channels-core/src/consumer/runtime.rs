//! The per-connection runtime: [`Connection::open`] runs the handshake
//! (`groups`, `connect`, and for [`Connect::Defer`] the wait for the
//! decision), then [`Connection::run`] is the connection's one
//! task, selecting over inbound frames, the connection's channel and shutdown.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};
use tracing::Instrument;

use super::context::{ConsumerContext, Decision, WakeRequest};
use super::error::ConsumerError;
use super::frame::{Inbound, Outbound, close_code};
use super::outbox::{Outbox, OutboxReceiver};
use super::scope::Scope;
use super::shutdown::ShutdownSignal;
use super::stats::ConsumerStats;
use super::{Accept, Connect, WebsocketConsumer};
use crate::backoff::Backoff;
use crate::config::DEFAULT_NEW_CHANNEL_PREFIX;
use crate::error::LayerError;
use crate::layer::SharedLayer;
use crate::message::Message;
use crate::receiver::Receiver;

/// Frames a connection may have queued for its client before it counts as
/// slow and is closed with 1013. Large enough for bursts of broadcasts (a
/// busy room can send dozens at once), small enough to bound a stalled
/// client's memory at 1024 frames. The queue grows only while it holds
/// frames: an idle connection keeps no buffer.
pub const DEFAULT_OUTBOUND_QUEUE: usize = 1024;

/// Bytes of frames a connection may have queued for its client before it
/// counts as slow and is closed with 1013 (Centrifugo's default client queue
/// is the same 1 MiB). A single frame larger than this still goes out when
/// the queue is empty.
pub const DEFAULT_OUTBOUND_BYTES: usize = 1024 * 1024;

/// How long a connection may stay silent (no frame, no pong) before it is
/// closed with 1001.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How often a silent connection is pinged.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(20);

/// The longest a deferred connect ([`Connect::Defer`]) waits for its
/// decision before the upgrade is answered 504: a safety net for consumers
/// that set no deadline of their own with
/// [`wake_at`](ConsumerContext::wake_at).
pub const MAX_DEFER: Duration = Duration::from_secs(60);

/// The longest the runtime waits for one group discard on disconnect.
const DISCARD_TIMEOUT: Duration = Duration::from_secs(5);

/// Layer messages dispatched per wake-up before inbound frames get a turn:
/// draining a burst in one go saves wake-ups, the bound keeps a hot group
/// from starving the client's own frames. Above the default channel capacity
/// (100), so a full mailbox drains in one turn: with 32, a server pushed past
/// its rate spent twice the CPU per delivery (more wake-ups, each touching
/// messages gone cold) and delivered half as much.
const DISPATCH_BATCH: usize = 128;

/// How often a connection without a ping or idle timeout still ticks, to give
/// the buffers of drained queues back.
const TIDY_PERIOD: Duration = Duration::from_secs(30);

/// Pauses between layer receive attempts after an error (see [`Backoff`]).
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Receive errors further apart than this are separate outages (during one
/// outage, retries fail at least every `Backoff::longest_delay(BACKOFF_MAX)`).
const OUTAGE_GAP: Duration = Duration::from_secs(12);

/// Settings of the per-connection runtime.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConnectionSettings {
    /// Frames queued per client before it is closed with 1013 (default
    /// [`DEFAULT_OUTBOUND_QUEUE`]).
    pub outbound_queue: usize,
    /// Bytes of frames queued per client before it is closed with 1013
    /// (default [`DEFAULT_OUTBOUND_BYTES`]).
    pub outbound_bytes: usize,
    /// The close code sent to every client at shutdown (default 1001, going
    /// away; 1012, service restart, tells clients to reconnect at once).
    pub shutdown_close_code: u16,
    /// Frames per second a client may send, with bursts of twice as many;
    /// `None` (the default here; the server sets one) means no limit. A frame
    /// over the limit is dropped and counted; a client that keeps sending
    /// after a burst's worth of drops is closed with 4029.
    pub inbound_rate: Option<u32>,
    /// Silence allowed before closing with 1001; `None` never times out
    /// (default [`DEFAULT_IDLE_TIMEOUT`]).
    pub idle_timeout: Option<Duration>,
    /// How often a silent connection is pinged; `None` sends no pings
    /// (default [`DEFAULT_PING_INTERVAL`]).
    pub ping_interval: Option<Duration>,
    /// The prefix of each connection's channel name (default `specific`).
    pub channel_prefix: String,
    /// Counters shared by all connections using these settings.
    pub stats: Arc<ConsumerStats>,
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        Self {
            outbound_queue: DEFAULT_OUTBOUND_QUEUE,
            outbound_bytes: DEFAULT_OUTBOUND_BYTES,
            shutdown_close_code: close_code::GOING_AWAY,
            inbound_rate: None,
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            ping_interval: Some(DEFAULT_PING_INTERVAL),
            channel_prefix: DEFAULT_NEW_CHANNEL_PREFIX.to_owned(),
            stats: Arc::default(),
        }
    }
}

impl ConnectionSettings {
    /// Sets the outbound queue length.
    #[must_use]
    pub fn outbound_queue(mut self, frames: usize) -> Self {
        self.outbound_queue = frames;
        self
    }

    /// Sets the bound in bytes of the outbound queue.
    #[must_use]
    pub fn outbound_bytes(mut self, bytes: usize) -> Self {
        self.outbound_bytes = bytes;
        self
    }

    /// Sets the close code sent to every client at shutdown.
    #[must_use]
    pub fn shutdown_close_code(mut self, code: u16) -> Self {
        self.shutdown_close_code = code;
        self
    }

    /// Sets the frames per second a client may send (`None`: no limit).
    #[must_use]
    pub fn inbound_rate(mut self, frames_per_second: Option<u32>) -> Self {
        self.inbound_rate = frames_per_second;
        self
    }

    /// Sets the idle timeout (`None`: never).
    #[must_use]
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Sets the ping interval (`None`: no pings).
    #[must_use]
    pub fn ping_interval(mut self, interval: Option<Duration>) -> Self {
        self.ping_interval = interval;
        self
    }

    /// Shares these counters.
    #[must_use]
    pub fn stats(mut self, stats: Arc<ConsumerStats>) -> Self {
        self.stats = stats;
        self
    }
}

/// A source of [`Inbound`] events from the client (the server's WebSocket
/// reader, or the [`Communicator`](super::Communicator)'s queue).
///
/// Poll-based, so the runtime's wait on it holds no state between events
/// (it is asked again after every layer message, many times a second).
pub trait InboundStream: Send {
    /// The next event, `Ready(None)` when the client is gone. Like
    /// `Stream::poll_next`: registers the task to be woken when not ready.
    fn poll_inbound(&mut self, cx: &mut Context<'_>) -> Poll<Option<Inbound>>;
}

impl<S: InboundStream> InboundStream for &mut S {
    fn poll_inbound(&mut self, cx: &mut Context<'_>) -> Poll<Option<Inbound>> {
        (**self).poll_inbound(cx)
    }
}

impl InboundStream for mpsc::Receiver<Inbound> {
    fn poll_inbound(&mut self, cx: &mut Context<'_>) -> Poll<Option<Inbound>> {
        self.poll_recv(cx)
    }
}

/// Waits for the next event of `inbound`.
pub async fn next_inbound(inbound: &mut impl InboundStream) -> Option<Inbound> {
    std::future::poll_fn(|cx| inbound.poll_inbound(cx)).await
}

/// Checks a channel-layer message's `type` as Django's `get_handler_name`
/// does, returning it.
///
/// # Errors
/// [`LayerError::InvalidMessage`] when the type is missing or not a string,
/// or starts with `_` (private handlers cannot be reached by messages).
pub fn check_message_type(message: &Message) -> Result<&str, LayerError> {
    let Some(message_type) = message.message_type() else {
        return Err(LayerError::invalid_message(
            "a message needs a string `type` field to be dispatched",
        ));
    };
    if message_type.starts_with('_') {
        return Err(LayerError::invalid_message(format!(
            "message type `{message_type}` starts with `_`; such types are private and never dispatched"
        )));
    }
    Ok(message_type)
}

/// What the handshake decided.
#[derive(Debug)]
pub enum Handshake {
    /// `connect` accepted: answer the upgrade with [`Accepted::accept`], drain
    /// [`Accepted::outbox`] into the socket, and run [`Accepted::connection`].
    Accepted(Box<Accepted>),
    /// `connect` rejected (or failed), or a deferred connect was closed
    /// before it accepted: answer HTTP 403.
    Rejected,
    /// A deferred connect ended without accepting and without a plain
    /// close: answer HTTP `status` (504: undecided after [`MAX_DEFER`], 503:
    /// shutdown began, or what the consumer gave
    /// [`ConsumerContext::fail_handshake`]).
    Failed {
        /// The HTTP status to answer the upgrade with.
        status: u16,
    },
}

/// How a deferred connect ended.
enum Deferred {
    Accepted(Accept),
    /// Not accepted: answer `status`, call `disconnect(code)`.
    Refused {
        status: u16,
        code: u16,
    },
    /// Receiving from the connection's channel failed.
    LayerFailed(LayerError),
}

/// The HTTP status of a plain rejection.
const FORBIDDEN: u16 = 403;

/// An accepted connection, ready to run.
#[derive(Debug)]
pub struct Accepted {
    /// The subprotocol and headers to answer the upgrade with.
    pub accept: Accept,
    /// The outbound queue to drain into the socket.
    pub outbox: OutboxReceiver,
    /// The runtime; call [`Connection::run`] once the socket is open.
    pub connection: Connection,
}

/// One connection's consumer and context, run by one task.
pub struct Connection {
    consumer: Box<dyn WebsocketConsumer>,
    ctx: ConsumerContext,
    /// Shared by every connection of a server (one `Arc`, not a copy each).
    settings: Arc<ConnectionSettings>,
    /// The connection's channel; dropping it releases the channel.
    receiver: Receiver,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("channel", &self.ctx.channel_name())
            .field("path", &self.ctx.scope().path)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Runs the handshake: creates the connection's channel (a receiver
    /// handle), joins the consumer's `groups`, and calls `connect`; when
    /// `connect` defers ([`Connect::Defer`]), waits for the decision, or for
    /// `shutdown`.
    ///
    /// # Errors
    /// [`ConsumerError::Layer`] when the channel cannot be created, a group
    /// joined, or (deferred) a message received (the server answers 503);
    /// groups joined so far are left.
    pub async fn open(
        layer: SharedLayer,
        scope: Scope,
        mut consumer: Box<dyn WebsocketConsumer>,
        settings: Arc<ConnectionSettings>,
        shutdown: &ShutdownSignal,
    ) -> Result<Handshake, ConsumerError> {
        let stats = settings.stats.clone();
        let receiver = layer.new_receiver(&settings.channel_prefix).await?;
        let (outbox, outbox_receiver) = Outbox::new(
            settings.outbound_queue,
            settings.outbound_bytes,
            stats.clone(),
        );
        let mut ctx = ConsumerContext::new(
            layer,
            receiver.channel_arc(),
            receiver.local_sender(),
            Arc::new(scope),
            outbox,
        );
        for group in consumer.groups() {
            if let Err(error) = ctx.group_add(&group).await {
                ConsumerStats::incr(&stats.layer_errors);
                discard_groups(&mut ctx, &stats).await;
                return Err(error);
            }
        }
        let decision = consumer.connect(&mut ctx).await;
        let accept = match decision {
            Ok(Connect::Accept(accept)) => accept,
            Ok(Connect::Defer) => {
                // Boxed: only deferring consumers pay for the wait's state.
                let outcome = Box::pin(await_decision(
                    &mut *consumer,
                    &mut ctx,
                    &receiver,
                    &settings,
                    shutdown,
                ))
                .await;
                match outcome {
                    Deferred::Accepted(accept) => accept,
                    Deferred::Refused { status, code } => {
                        ConsumerStats::incr(&stats.connections_rejected);
                        leave(&mut *consumer, &mut ctx, &stats, code).await;
                        return Ok(if status == FORBIDDEN {
                            Handshake::Rejected
                        } else {
                            Handshake::Failed { status }
                        });
                    }
                    Deferred::LayerFailed(error) => {
                        ConsumerStats::incr(&stats.layer_errors);
                        leave(&mut *consumer, &mut ctx, &stats, close_code::INTERNAL_ERROR).await;
                        return Err(error.into());
                    }
                }
            }
            Ok(Connect::Reject) => {
                ConsumerStats::incr(&stats.connections_rejected);
                discard_groups(&mut ctx, &stats).await;
                return Ok(Handshake::Rejected);
            }
            Err(error) => {
                ConsumerStats::incr(&stats.consumer_errors);
                ConsumerStats::incr(&stats.connections_rejected);
                tracing::error!(path = %ctx.scope().path, %error, "consumer connect failed; rejecting");
                discard_groups(&mut ctx, &stats).await;
                return Ok(Handshake::Rejected);
            }
        };
        Ok(Handshake::Accepted(Box::new(Accepted {
            accept,
            outbox: outbox_receiver,
            connection: Self {
                consumer,
                ctx,
                settings,
                receiver,
            },
        })))
    }

    /// The counters this connection reports into (for the transport's own:
    /// a write that timed out, for example).
    pub fn stats(&self) -> Arc<ConsumerStats> {
        self.settings.stats.clone()
    }

    /// The connection's channel name.
    pub fn channel_name(&self) -> &str {
        self.ctx.channel_name()
    }

    /// Ends a connection whose socket never opened (the upgrade failed after
    /// `connect` accepted): leaves its groups and calls `disconnect(1006)`.
    pub async fn abandon(self) {
        let Self {
            mut consumer,
            mut ctx,
            settings,
            receiver,
        } = self;
        discard_groups(&mut ctx, &settings.stats).await;
        if let Err(error) = consumer.disconnect(&mut ctx, close_code::ABNORMAL).await {
            ConsumerStats::incr(&settings.stats.consumer_errors);
            tracing::error!(%error, "consumer disconnect failed");
        }
        drop(receiver);
    }

    /// Runs the connection until the client leaves, the consumer closes it,
    /// it idles out, its client is too slow, or `shutdown` fires (close 1001).
    /// On the way out it leaves every group, then calls `disconnect`. Returns
    /// the close code the connection ended with.
    pub fn run(
        self,
        inbound: impl InboundStream,
        shutdown: ShutdownSignal,
    ) -> impl Future<Output = u16> + Send {
        let span = tracing::debug_span!(
            "connection",
            channel = %self.ctx.channel_name(),
            path = %self.ctx.scope().path
        );
        // A plain function taking the parts, so the task stores each once.
        run_connection(
            self.consumer,
            self.ctx,
            self.settings,
            self.receiver,
            inbound,
            shutdown,
        )
        .instrument(span)
    }
}

#[allow(clippy::manual_async_fn)] // an async fn would store its arguments twice
fn run_connection(
    mut consumer: Box<dyn WebsocketConsumer>,
    mut ctx: ConsumerContext,
    settings: Arc<ConnectionSettings>,
    receiver: Receiver,
    mut inbound: impl InboundStream,
    shutdown: ShutdownSignal,
) -> impl Future<Output = u16> + Send {
    // An async block, not an async fn: an async fn's arguments would be
    // stored twice in the connection's state (as arguments, then as locals).
    async move {
        let _open = OpenGuard::new(settings.stats.clone());
        let code = serve_events(
            &mut *consumer,
            &mut ctx,
            &settings,
            &receiver,
            &mut inbound,
            &shutdown,
        )
        .await;
        // Boxed: the way out runs once, and its timeouts would otherwise sit in
        // every live connection's state.
        Box::pin(leave(&mut *consumer, &mut ctx, &settings.stats, code)).await;
        // Releases the channel.
        drop(receiver);
        tracing::debug!(code, "connection ended");
        code
    }
}

/// Waits for a deferred connect's decision ([`Connect::Defer`]): dispatches
/// each message on the connection's channel and wakes the consumer at its
/// time, until it accepts, closes or fails the handshake, [`MAX_DEFER`]
/// passes, or shutdown begins. Messages after the decision stay in the
/// channel for the running connection, in order.
async fn await_decision(
    consumer: &mut dyn WebsocketConsumer,
    ctx: &mut ConsumerContext,
    receiver: &Receiver,
    settings: &ConnectionSettings,
    shutdown: &ShutdownSignal,
) -> Deferred {
    let stats = &*settings.stats;
    let give_up = Instant::now() + MAX_DEFER;
    let mut wake: Option<Instant> = None;
    let mut dispatched: u32 = 0;
    ctx.set_deferring(true);
    let outcome = loop {
        match ctx.take_wake_request() {
            Some(WakeRequest::At(at)) => wake = Some(at),
            Some(WakeRequest::Cancel) => wake = None,
            None => {}
        }
        match ctx.take_decision() {
            Some(Decision::Accept(accept)) => break Deferred::Accepted(accept),
            Some(Decision::Fail(status)) => {
                let code = ctx
                    .take_close_request()
                    .map_or(close_code::ABNORMAL, |frame| frame.code);
                break Deferred::Refused { status, code };
            }
            None => {}
        }
        if let Some(frame) = ctx.take_close_request() {
            break Deferred::Refused {
                status: FORBIDDEN,
                code: frame.code,
            };
        }
        if ctx.outbox_mut().is_closed() {
            // Frames sent before the decision overflowed the queue.
            break Deferred::Refused {
                status: FORBIDDEN,
                code: close_code::TRY_AGAIN_LATER,
            };
        }
        let woken = async {
            match wake {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            () = shutdown.watch() => {
                break Deferred::Refused { status: 503, code: settings.shutdown_close_code };
            }
            () = tokio::time::sleep_until(give_up) => {
                tracing::warn!(path = %ctx.scope().path, after = ?MAX_DEFER, "deferred connect undecided; answering 504");
                break Deferred::Refused { status: 504, code: close_code::ABNORMAL };
            }
            () = woken => {
                wake = None;
                let result = consumer.wake(ctx).await;
                handle_result(ctx, stats, "wake", result);
            }
            result = receiver.recv() => match result {
                Ok(message) => {
                    ConsumerStats::incr(&stats.messages_in);
                    dispatch(consumer, ctx, stats, message, &mut dispatched).await;
                }
                Err(error) => break Deferred::LayerFailed(error),
            },
        }
    };
    ctx.set_deferring(false);
    // A timer still set carries over to the running connection.
    if let (Deferred::Accepted(_), Some(at)) = (&outcome, wake)
        && !ctx.has_wake_request()
    {
        ctx.wake_at(at);
    }
    outcome
}

/// Leaves every group, then tells the consumer.
async fn leave(
    consumer: &mut dyn WebsocketConsumer,
    ctx: &mut ConsumerContext,
    stats: &ConsumerStats,
    code: u16,
) {
    discard_groups(ctx, stats).await;
    if let Err(error) = consumer.disconnect(ctx, code).await {
        ConsumerStats::incr(&stats.consumer_errors);
        tracing::error!(%error, "consumer disconnect failed");
    }
}

/// The connection's event loop; returns the close code it ended with.
///
/// Every future it waits on lives across iterations (receive, shutdown, the
/// housekeeping timer) or holds no state (inbound), so an iteration after a
/// layer message costs no registration with the mailbox, the shutdown token
/// or a timer. The order is biased: shutdown, then the client's own frames,
/// then layer messages (at most [`DISPATCH_BATCH`] per turn), so a hot group
/// cannot starve the client.
///
/// Its state is what every live connection keeps, so each `.await` is placed
/// to keep it small: a local kept across two of them takes room in every
/// state (a test, `a_running_connection_keeps_little_state`, bounds it).
#[allow(clippy::manual_async_fn)] // an async fn would store its arguments twice
fn serve_events<'a>(
    consumer: &'a mut dyn WebsocketConsumer,
    ctx: &'a mut ConsumerContext,
    settings: &'a ConnectionSettings,
    receiver: &'a Receiver,
    inbound: &'a mut impl InboundStream,
    shutdown: &'a ShutdownSignal,
) -> impl Future<Output = u16> + Send + 'a {
    // An async block, not an async fn: arguments are stored once.
    async move {
        // One receive future for the whole connection, replaced only after it
        // completes: a pending receive stays registered with the mailbox.
        let mut receive = std::pin::pin!(receiver.recv());
        // Polled on every wake-up: after the first, one atomic load.
        let mut shutting_down = std::pin::pin!(shutdown.watch());
        let mut shutdown_seen = false;
        // Only made when receiving fails: an idle connection carries no backoff.
        let mut outage: Option<Box<Outage>> = None;
        // Boxed and only while paused: an idle connection should not carry a
        // timer it does not use.
        let mut pause: Option<Pin<Box<Sleep>>> = None;
        // The consumer's own timer (`ConsumerContext::wake_at`), boxed and only
        // while set.
        let mut wake: Option<Pin<Box<Sleep>>> = None;
        let mut dispatched: u32 = 0;

        // Boxed, as an `Interval` would box it, but without keeping the
        // period: it is read from the settings at each tick.
        let mut tidy = Box::pin(tokio::time::sleep(tidy_period(settings)));
        let mut last_seen = Instant::now();
        let mut limiter = settings
            .inbound_rate
            .map(|rate| RateLimiter::new(rate, last_seen));

        loop {
            ctx.outbox_mut().publish_counts();
            match ctx.take_wake_request() {
                Some(WakeRequest::At(at)) => match &mut wake {
                    Some(sleep) => sleep.as_mut().reset(at),
                    None => wake = Some(Box::pin(tokio::time::sleep_until(at))),
                },
                Some(WakeRequest::Cancel) => wake = None,
                None => {}
            }
            if let Some(frame) = ctx.take_close_request() {
                let code = frame.code;
                ctx.outbox_mut().close(frame);
                return code;
            }
            if ctx.outbox_mut().is_closed() {
                // A slow-client close already jumped the queue.
                return close_code::TRY_AGAIN_LATER;
            }
            // The client's queue is past its bounds while its socket has room:
            // the server is behind, so take no layer messages until the writer
            // catches up (they wait in the layer channel, bounded there).
            let held_back = ctx.outbox_mut().is_over();
            // Each branch only says what happened; the handling, which may
            // wait, comes after the `select!`. Handled inside it, what woke
            // the loop was kept in the connection's state two or three times
            // over (the select's output, the branch's binding, a scrutinee).
            let event = tokio::select! {
                biased;
                () = &mut shutting_down, if !shutdown_seen => Event::Shutdown,
                event = next_inbound(inbound) => Event::Inbound(event),
                () = ctx.outbox_mut().space(), if held_back => Event::Space,
                result = &mut receive, if pause.is_none() && !held_back => {
                    receive.set(receiver.recv());
                    Event::Received(result)
                }
                () = wait_pause(&mut pause), if pause.is_some() => Event::Resume,
                () = wait_pause(&mut wake), if wake.is_some() => Event::Wake,
                () = &mut tidy => Event::Tick,
            };
            match event {
                Event::Shutdown => {
                    shutdown_seen = true;
                    ctx.close(settings.shutdown_close_code, "server shutting down");
                }
                Event::Inbound(None) => return close_code::ABNORMAL,
                Event::Inbound(Some(Inbound::Frame(frame))) => {
                    last_seen = Instant::now();
                    ConsumerStats::incr(&settings.stats.frames_in);
                    if !rate_limit(&mut limiter, last_seen, ctx, &settings.stats) {
                        continue;
                    }
                    let result = consumer.receive(ctx, frame).await;
                    settings.stats.handle_latency.observe(last_seen.elapsed());
                    handle_result(ctx, &settings.stats, "receive", result);
                }
                Event::Inbound(Some(Inbound::Ping(_))) => {
                    // Pings count against the same rate limit as frames: the
                    // transport answers each with a pong, so a client that
                    // pings without reading would keep the connection busy
                    // (and alive) for ever.
                    last_seen = Instant::now();
                    rate_limit(&mut limiter, last_seen, ctx, &settings.stats);
                }
                Event::Inbound(Some(Inbound::Pong(_))) => last_seen = Instant::now(),
                Event::Inbound(Some(Inbound::Close(frame))) => {
                    return frame.map_or(close_code::NO_STATUS, |f| f.code);
                }
                Event::Inbound(Some(Inbound::Invalid(frame))) => {
                    tracing::debug!(code = frame.code, reason = %frame.reason, "client broke a transport rule");
                    ctx.close(frame.code, frame.reason);
                }
                Event::Space => {}
                Event::Received(Ok(message)) => {
                    outage = None;
                    // One clock read for the drain's expiry checks: a
                    // message that expires during the drain (at most
                    // DISPATCH_BATCH dispatches) is still delivered.
                    let now = Instant::now();
                    let mut handled = 0;
                    let mut next = Some(message);
                    // Drain what else is queued now, in one wake-up. One
                    // `.await` for all: what the drain keeps then shares no
                    // room with the rest of the connection's state.
                    while let Some(message) = next {
                        handled += 1;
                        dispatch(consumer, ctx, &settings.stats, message, &mut dispatched).await;
                        next = if handled < DISPATCH_BATCH
                            && !ctx.is_closing()
                            && !ctx.outbox_mut().is_over()
                        {
                            // An error shows up again on the next receive.
                            receiver.try_recv_at(now).ok().flatten()
                        } else {
                            None
                        };
                    }
                    settings
                        .stats
                        .messages_in
                        .fetch_add(handled as u64, std::sync::atomic::Ordering::Relaxed);
                }
                Event::Received(Err(LayerError::Closed)) => {
                    ConsumerStats::incr(&settings.stats.layer_errors);
                    ctx.close(close_code::GOING_AWAY, "channel layer closed");
                }
                Event::Received(Err(error)) => {
                    ConsumerStats::incr(&settings.stats.layer_errors);
                    let now = Instant::now();
                    let is_new = outage
                        .as_ref()
                        .is_none_or(|outage| now - outage.last_error > OUTAGE_GAP);
                    let outage = outage.get_or_insert_with(|| {
                        Box::new(Outage {
                            backoff: Backoff::new(BACKOFF_MIN, BACKOFF_MAX),
                            last_error: now,
                        })
                    });
                    if is_new {
                        // A new outage: start the backoff over and tell
                        // the consumer, once.
                        outage.backoff.reset();
                        static LIMIT: crate::LogLimiter = crate::LogLimiter::per_second();
                        if let Some(held_back) = LIMIT.allow() {
                            tracing::warn!(held_back, %error, "layer receive failed; retrying with backoff");
                        }
                        let result = consumer.layer_error(ctx, &error).await;
                        handle_result(ctx, &settings.stats, "layer_error", result);
                    }
                    outage.last_error = now;
                    pause = Some(Box::pin(tokio::time::sleep(outage.backoff.next_delay())));
                }
                Event::Resume => pause = None,
                Event::Wake => {
                    wake = None;
                    let result = consumer.wake(ctx).await;
                    handle_result(ctx, &settings.stats, "wake", result);
                }
                Event::Tick => {
                    tidy.as_mut().reset(Instant::now() + tidy_period(settings));
                    // Idle memory: drained queues give their buffers back.
                    receiver.shrink_if_empty();
                    ctx.outbox_mut().shrink_if_empty();
                    let silent = last_seen.elapsed();
                    if settings.idle_timeout.is_some_and(|idle| silent >= idle) {
                        ctx.close(close_code::GOING_AWAY, "idle timeout");
                    } else if settings.ping_interval.is_some_and(|ping| silent >= ping) {
                        // A full queue closes the connection; that is handled above.
                        let _ = ctx.push_outbound(Outbound::Ping(bytes::Bytes::new()));
                    }
                }
            }
        }
    }
}

/// How often a connection does its housekeeping: pings, the idle timeout,
/// and giving drained buffers back (so it runs without a ping or idle
/// timeout too).
fn tidy_period(settings: &ConnectionSettings) -> Duration {
    let period = match (settings.ping_interval, settings.idle_timeout) {
        (Some(ping), Some(idle)) => ping.min(idle),
        (ping, idle) => ping.or(idle).unwrap_or(TIDY_PERIOD),
    };
    period.max(Duration::from_millis(10))
}

/// A failing receive's state, made only while receives fail.
struct Outage {
    backoff: Backoff,
    /// When the last receive error happened: errors closer together than
    /// `OUTAGE_GAP` belong to one outage, which the consumer hears about once.
    last_error: Instant,
}

/// What woke [`serve_events`]'s loop.
enum Event {
    Shutdown,
    Inbound(Option<Inbound>),
    /// The outbound queue is back under its bounds.
    Space,
    Received(Result<Message, LayerError>),
    /// The pause after a failed receive is over.
    Resume,
    /// The consumer's own timer fired.
    Wake,
    Tick,
}

/// A token bucket over a client's frames: `rate` per second, bursts of
/// `2 * rate`. Kept small: it sits in every connection's state.
#[derive(Debug)]
struct RateLimiter {
    rate: u32,
    /// Frames dropped since the last one admitted.
    dropped: u32,
    tokens: f64,
    refilled: Instant,
}

/// What [`RateLimiter::admit`] decided.
enum Admit {
    Yes,
    /// Over the limit: drop this frame.
    Drop,
    /// Still sending after a whole burst was dropped: close the connection.
    Close,
}

impl RateLimiter {
    fn new(rate: u32, now: Instant) -> Self {
        let rate = rate.max(1);
        Self {
            rate,
            dropped: 0,
            tokens: Self::burst_of(rate),
            refilled: now,
        }
    }

    fn burst_of(rate: u32) -> f64 {
        f64::from(rate) * 2.0
    }

    fn admit(&mut self, now: Instant) -> Admit {
        let burst = Self::burst_of(self.rate);
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * f64::from(self.rate)).min(burst);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.dropped = 0;
            return Admit::Yes;
        }
        self.dropped = self.dropped.saturating_add(1);
        if f64::from(self.dropped) > burst {
            Admit::Close
        } else {
            Admit::Drop
        }
    }
}

/// Runs one frame or ping through the client's rate limit (if any): counts
/// what is over it and closes a client that keeps flooding with 4029.
/// Returns whether the frame is admitted.
fn rate_limit(
    limiter: &mut Option<RateLimiter>,
    now: Instant,
    ctx: &mut ConsumerContext,
    stats: &ConsumerStats,
) -> bool {
    let Some(limiter) = limiter else { return true };
    match limiter.admit(now) {
        Admit::Yes => true,
        Admit::Drop => {
            ConsumerStats::incr(&stats.frames_rate_limited);
            false
        }
        Admit::Close => {
            ConsumerStats::incr(&stats.frames_rate_limited);
            ConsumerStats::incr(&stats.flood_closes);
            ctx.close(close_code::FLOOD, "sending too fast");
            false
        }
    }
}

/// Completes when the timer is over (never, when there is none).
async fn wait_pause(pause: &mut Option<Pin<Box<Sleep>>>) {
    match pause {
        Some(sleep) => sleep.as_mut().await,
        None => std::future::pending().await,
    }
}

/// Keeps `connections_open` right even if the task is aborted.
struct OpenGuard(Arc<ConsumerStats>);

impl OpenGuard {
    fn new(stats: Arc<ConsumerStats>) -> Self {
        ConsumerStats::incr(&stats.connections_accepted);
        ConsumerStats::incr(&stats.connections_open);
        Self(stats)
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0
            .connections_open
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// How often a layer message's handling time is measured: one in this many
/// per connection (reading the clock twice per message costs more than the
/// rest of the dispatch).
const LATENCY_SAMPLE: u32 = 16;

async fn dispatch(
    consumer: &mut dyn WebsocketConsumer,
    ctx: &mut ConsumerContext,
    stats: &ConsumerStats,
    message: Message,
    dispatched: &mut u32,
) {
    // The type is read from a second handle on the same message (one
    // reference count), so it needs no copy of its own.
    let typed = message.clone();
    let message_type = match check_message_type(&typed) {
        Ok(message_type) => message_type,
        Err(error) => {
            ConsumerStats::incr(&stats.messages_invalid);
            tracing::warn!(%error, "dropping layer message");
            return;
        }
    };
    *dispatched = dispatched.wrapping_add(1);
    let result = if dispatched.is_multiple_of(LATENCY_SAMPLE) {
        let started = Instant::now();
        let result = consumer.dispatch(ctx, message_type, message).await;
        stats.handle_latency.observe(started.elapsed());
        result
    } else {
        consumer.dispatch(ctx, message_type, message).await
    };
    handle_result(ctx, stats, "dispatch", result);
}

fn handle_result(
    ctx: &mut ConsumerContext,
    stats: &ConsumerStats,
    method: &'static str,
    result: Result<(), ConsumerError>,
) {
    match result {
        // The runtime already knows: the loop closes the connection.
        Ok(()) | Err(ConsumerError::SlowClient { .. } | ConsumerError::Closed) => {}
        Err(error) => {
            ConsumerStats::incr(&stats.consumer_errors);
            tracing::error!(method, %error, "consumer failed; closing with 1011");
            ctx.close(close_code::INTERNAL_ERROR, "internal error");
        }
    }
}

async fn discard_groups(ctx: &mut ConsumerContext, stats: &ConsumerStats) {
    let layer = ctx.layer().clone();
    let channel = ctx.channel_name().to_owned();
    for group in ctx.take_groups() {
        match tokio::time::timeout(DISCARD_TIMEOUT, layer.group_discard(&group, &channel)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                ConsumerStats::incr(&stats.layer_errors);
                tracing::warn!(%group, %error, "group discard failed");
            }
            Err(_) => {
                ConsumerStats::incr(&stats.layer_errors);
                tracing::warn!(%group, "group discard timed out");
            }
        }
    }
}
