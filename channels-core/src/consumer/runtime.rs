//! The per-connection runtime: [`Connection::open`] runs the handshake
//! (`groups`, `connect`), then [`Connection::run`] is the connection's one
//! task, selecting over inbound frames, the connection's channel and shutdown.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior, Sleep};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::context::ConsumerContext;
use super::error::ConsumerError;
use super::frame::{Inbound, Outbound, close_code};
use super::outbox::{Outbox, OutboxReceiver};
use super::scope::Scope;
use super::stats::ConsumerStats;
use super::{Accept, Connect, WebsocketConsumer};
use crate::config::DEFAULT_NEW_CHANNEL_PREFIX;
use crate::error::LayerError;
use crate::layer::SharedLayer;
use crate::message::Message;

/// Frames a connection may have queued for its client before it counts as
/// slow and is closed with 1013. Large enough for bursts of broadcasts (a
/// busy room can send dozens at once), small enough to bound a stalled
/// client's memory at 1024 frames. The queue grows only while it holds
/// frames: an idle connection keeps no buffer.
pub const DEFAULT_OUTBOUND_QUEUE: usize = 1024;

/// How long a connection may stay silent (no frame, no pong) before it is
/// closed with 1001.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How often a silent connection is pinged.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(20);

/// The longest the runtime waits for one group discard on disconnect.
const DISCARD_TIMEOUT: Duration = Duration::from_secs(5);

/// Pauses between layer receive attempts after an error (capped doubling).
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Receive errors further apart than this are separate outages (during one
/// outage, retries fail at least every `BACKOFF_MAX`).
const OUTAGE_GAP: Duration = Duration::from_secs(12);

/// Settings of the per-connection runtime.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConnectionSettings {
    /// Frames queued per client before it is closed with 1013 (default
    /// [`DEFAULT_OUTBOUND_QUEUE`]).
    pub outbound_queue: usize,
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
    /// The close code sent to clients when the server shuts down (default
    /// 1001 going away; 1012 service restart suits rolling deploys).
    pub shutdown_close_code: u16,
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        Self {
            outbound_queue: DEFAULT_OUTBOUND_QUEUE,
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            ping_interval: Some(DEFAULT_PING_INTERVAL),
            channel_prefix: DEFAULT_NEW_CHANNEL_PREFIX.to_owned(),
            stats: Arc::default(),
            shutdown_close_code: close_code::GOING_AWAY,
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

    /// Sets the close code sent on server shutdown.
    #[must_use]
    pub fn shutdown_close_code(mut self, code: u16) -> Self {
        self.shutdown_close_code = code;
        self
    }
}

/// A source of [`Inbound`] events from the client (the server's WebSocket
/// reader, or the [`Communicator`](super::Communicator)'s queue).
pub trait InboundStream: Send {
    /// The next event, or `None` when the client is gone. Must be cancel-safe:
    /// dropping the future loses no event.
    fn next_inbound(&mut self) -> impl Future<Output = Option<Inbound>> + Send;
}

impl<S: InboundStream> InboundStream for &mut S {
    fn next_inbound(&mut self) -> impl Future<Output = Option<Inbound>> + Send {
        (**self).next_inbound()
    }
}

impl InboundStream for mpsc::Receiver<Inbound> {
    fn next_inbound(&mut self) -> impl Future<Output = Option<Inbound>> + Send {
        self.recv()
    }
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
    /// `connect` rejected (or failed): answer HTTP 403.
    Rejected,
}

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
    settings: ConnectionSettings,
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
    /// Runs the handshake: creates the connection's channel, joins the
    /// consumer's `groups`, and calls `connect`.
    ///
    /// # Errors
    /// [`ConsumerError::Layer`] when the channel cannot be created or a group
    /// joined (the server answers 503); groups joined so far are left.
    pub async fn open(
        layer: SharedLayer,
        scope: Scope,
        mut consumer: Box<dyn WebsocketConsumer>,
        settings: ConnectionSettings,
    ) -> Result<Handshake, ConsumerError> {
        let stats = settings.stats.clone();
        let channel = layer.new_channel(&settings.channel_prefix).await?;
        let (outbox, receiver) = Outbox::new(settings.outbound_queue, stats.clone());
        let mut ctx = ConsumerContext::new(layer, channel, Arc::new(scope), outbox);
        for group in consumer.groups() {
            if let Err(error) = ctx.group_add(&group).await {
                ConsumerStats::incr(&stats.layer_errors);
                discard_groups(&mut ctx, &stats).await;
                release_channel(&ctx, &stats).await;
                return Err(error);
            }
        }
        let decision = consumer.connect(&mut ctx).await;
        let accept = match decision {
            Ok(Connect::Accept(accept)) => accept,
            Ok(Connect::Reject) => {
                ConsumerStats::incr(&stats.connections_rejected);
                discard_groups(&mut ctx, &stats).await;
                release_channel(&ctx, &stats).await;
                return Ok(Handshake::Rejected);
            }
            Err(error) => {
                ConsumerStats::incr(&stats.consumer_errors);
                ConsumerStats::incr(&stats.connections_rejected);
                tracing::error!(path = %ctx.scope().path, %error, "consumer connect failed; rejecting");
                discard_groups(&mut ctx, &stats).await;
                release_channel(&ctx, &stats).await;
                return Ok(Handshake::Rejected);
            }
        };
        Ok(Handshake::Accepted(Box::new(Accepted {
            accept,
            outbox: receiver,
            connection: Self {
                consumer,
                ctx,
                settings,
            },
        })))
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
        } = self;
        discard_groups(&mut ctx, &settings.stats).await;
        if let Err(error) = consumer.disconnect(&mut ctx, close_code::ABNORMAL).await {
            ConsumerStats::incr(&settings.stats.consumer_errors);
            tracing::error!(%error, "consumer disconnect failed");
        }
        release_channel(&ctx, &settings.stats).await;
    }

    /// Runs the connection until the client leaves, the consumer closes it,
    /// it idles out, its client is too slow, or `shutdown` fires (close 1001).
    /// On the way out it leaves every group, then calls `disconnect`. Returns
    /// the close code the connection ended with.
    pub fn run(
        self,
        inbound: impl InboundStream,
        shutdown: CancellationToken,
    ) -> impl Future<Output = u16> + Send {
        let span = tracing::debug_span!(
            "connection",
            channel = %self.ctx.channel_name(),
            path = %self.ctx.scope().path
        );
        // A plain function taking the parts, so the task stores each once.
        run_connection(self.consumer, self.ctx, self.settings, inbound, shutdown).instrument(span)
    }
}

async fn run_connection(
    mut consumer: Box<dyn WebsocketConsumer>,
    mut ctx: ConsumerContext,
    settings: ConnectionSettings,
    mut inbound: impl InboundStream,
    shutdown: CancellationToken,
) -> u16 {
    let stats = settings.stats.clone();
    let _open = OpenGuard::new(stats.clone());
    let layer = ctx.layer().clone();
    let channel = ctx.channel_arc();

    let mut receive = layer.receive(&channel);
    let mut backoff = BACKOFF_MIN;
    // When the last receive error happened: errors closer together than
    // `OUTAGE_GAP` belong to one outage, which the consumer hears about once.
    let mut last_error: Option<Instant> = None;
    // Boxed and only while paused: an idle connection should not carry a
    // timer it does not use.
    let mut pause: Option<Pin<Box<Sleep>>> = None;

    let tick_period = match (settings.ping_interval, settings.idle_timeout) {
        (Some(ping), Some(idle)) => Some(ping.min(idle)),
        (ping, idle) => ping.or(idle),
    };
    let period = tick_period
        .unwrap_or(Duration::from_secs(3600))
        .max(Duration::from_millis(10));
    let mut ticker = tokio::time::interval_at(Instant::now() + period, period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_seen = Instant::now();

    let code = loop {
        if let Some(frame) = ctx.take_close_request() {
            let code = frame.code;
            ctx.outbox_mut().close(frame);
            break code;
        }
        if ctx.outbox_mut().is_closed() {
            // A slow-client close already jumped the queue.
            break close_code::TRY_AGAIN_LATER;
        }
        tokio::select! {
            () = shutdown.cancelled() => {
                ctx.close(settings.shutdown_close_code, "server shutting down");
            }
            event = inbound.next_inbound() => match event {
                None => break close_code::ABNORMAL,
                Some(Inbound::Frame(frame)) => {
                    last_seen = Instant::now();
                    ConsumerStats::incr(&stats.frames_in);
                    let result = consumer.receive(&mut ctx, frame).await;
                    stats.handle_latency.observe(last_seen.elapsed());
                    handle_result(&mut ctx, &stats, "receive", result);
                }
                Some(Inbound::Ping(_) | Inbound::Pong(_)) => last_seen = Instant::now(),
                Some(Inbound::Close(frame)) => {
                    break frame.map_or(close_code::NO_STATUS, |f| f.code);
                }
                Some(Inbound::Invalid(frame)) => {
                    tracing::debug!(code = frame.code, reason = %frame.reason, "client broke a transport rule");
                    ctx.close(frame.code, frame.reason);
                }
            },
            result = &mut receive, if pause.is_none() => {
                receive = layer.receive(&channel);
                match result {
                    Ok(message) => {
                        backoff = BACKOFF_MIN;
                        last_error = None;
                        dispatch(&mut *consumer, &mut ctx, &stats, message).await;
                    }
                    Err(LayerError::Closed) => {
                        ConsumerStats::incr(&stats.layer_errors);
                        ctx.close(close_code::GOING_AWAY, "channel layer closed");
                    }
                    Err(error) => {
                        ConsumerStats::incr(&stats.layer_errors);
                        tracing::warn!(%error, retry_in = ?backoff, "layer receive failed");
                        let now = Instant::now();
                        if last_error.is_none_or(|at| now - at > OUTAGE_GAP) {
                            // A new outage: start the backoff over and tell
                            // the consumer, once.
                            backoff = BACKOFF_MIN;
                            let result = consumer.layer_error(&mut ctx, &error).await;
                            handle_result(&mut ctx, &stats, "layer_error", result);
                        }
                        last_error = Some(now);
                        pause = Some(Box::pin(tokio::time::sleep(backoff)));
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                    }
                }
            }
            () = wait_pause(&mut pause), if pause.is_some() => pause = None,
            _ = ticker.tick(), if tick_period.is_some() => {
                let silent = last_seen.elapsed();
                if settings.idle_timeout.is_some_and(|idle| silent >= idle) {
                    ctx.close(close_code::GOING_AWAY, "idle timeout");
                } else if settings.ping_interval.is_some_and(|ping| silent >= ping) {
                    // A full queue closes the connection; that is handled above.
                    let _ = ctx.push_outbound(Outbound::Ping(bytes::Bytes::new()));
                }
            }
        }
    };
    drop(receive);
    discard_groups(&mut ctx, &stats).await;
    if let Err(error) = consumer.disconnect(&mut ctx, code).await {
        ConsumerStats::incr(&stats.consumer_errors);
        tracing::error!(%error, "consumer disconnect failed");
    }
    release_channel(&ctx, &stats).await;
    tracing::debug!(code, "connection ended");
    code
}

/// Completes when the receive pause is over (never, when there is none).
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

async fn dispatch(
    consumer: &mut dyn WebsocketConsumer,
    ctx: &mut ConsumerContext,
    stats: &ConsumerStats,
    message: Message,
) {
    ConsumerStats::incr(&stats.messages_in);
    let message_type = match check_message_type(&message) {
        Ok(message_type) => message_type.to_owned(),
        Err(error) => {
            ConsumerStats::incr(&stats.messages_invalid);
            tracing::warn!(%error, "dropping layer message");
            return;
        }
    };
    let started = Instant::now();
    let result = consumer.dispatch(ctx, &message_type, message).await;
    stats.handle_latency.observe(started.elapsed());
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

/// Lets the layer free what it keeps for the connection's channel (buffers,
/// a pub/sub subscription) once nothing will receive from it again.
async fn release_channel(ctx: &ConsumerContext, stats: &ConsumerStats) {
    let channel = ctx.channel_name();
    match tokio::time::timeout(DISCARD_TIMEOUT, ctx.layer().release_channel(channel)).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            ConsumerStats::incr(&stats.layer_errors);
            tracing::warn!(%channel, %error, "releasing the channel failed");
        }
        Err(_) => {
            ConsumerStats::incr(&stats.layer_errors);
            tracing::warn!(%channel, "releasing the channel timed out");
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
