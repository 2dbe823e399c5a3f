//! One WebSocket connection: its task waits for hyper to hand over the
//! upgraded socket, then its reader feeds the core runtime
//! ([`Connection::run`]) and its writer drains the runtime's bounded outbound
//! queue into the socket. Everything runs in the connection's one task.
//!
//! The socket is tungstenite's, driven directly rather than through axum's
//! `WebSocketUpgrade`, whose task wraps the handler's future (boxed, to keep
//! it small): every idle connection paid about 0.8 KB more for the wrapper's
//! state and the second allocation.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use channels_core::consumer::{
    CloseFrame, Connection, ConsumerStats, Frame, Inbound, InboundStream, Outbound, OutboxReceiver,
    ShutdownSignal, Text, close_code, next_inbound,
};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tungstenite::Message as WsMessage;
use tungstenite::protocol::frame::coding::{Data as OpData, OpCode};
use tungstenite::protocol::frame::{CloseFrame as WsCloseFrame, Frame as WsFrame};
use tungstenite::protocol::{Role, WebSocketConfig};

use crate::middleware::ConnectionPermit;

/// The longest one socket write may take; a client that does not read for
/// that long while we have data for it is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Frames written before one flush, so a burst goes out in few syscalls (as
/// many as the ceiling-server's; 32, with a 4 KiB buffer, capped every write
/// at about 40 small frames: at a fixed 2,900 broadcasts/s to 1,000 clients
/// the in-memory layer then fell behind where it now keeps up at 3,300/s).
const WRITE_BATCH: usize = 64;

/// After the server sends a close, how long it keeps reading for the client's
/// close reply (RFC 6455 7.1.1) before dropping the TCP connection.
const CLOSE_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(1);

/// Initial read buffer per socket. tungstenite's default, 128 KiB, would
/// dominate an idle connection's memory; it grows the buffer to fit a larger
/// frame when one comes. (Measured: 15.4 KB of RSS per idle connection
/// before this and the other per-connection trims, 7.9 KB after.)
const READ_BUFFER_BYTES: usize = 256;

/// Bytes of frames collected before a socket write. The writer flushes after
/// each batch anyway; this lets a batch of [`WRITE_BATCH`] small frames (up
/// to 128 bytes) go out in one syscall while bounding what tungstenite's
/// buffer grows to, and keeps, once a connection has had a burst of small
/// frames: at most about twice this (its `Vec` doubles past it by one
/// frame). A connection that only ever gets one frame at a time keeps about
/// one frame's worth.
const WRITE_BUFFER_BYTES: usize = 8 * 1024;

/// The upgraded socket.
type Socket = WebSocketStream<TokioIo<Upgraded>>;
type SocketSink = SplitSink<Socket, WsMessage>;

/// What one socket may take and hold.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SocketLimits {
    /// The largest frame (and message) a client may send.
    pub(crate) max_frame_bytes: usize,
    /// Bound of tungstenite's write buffer: a batch of queued frames plus the
    /// pongs it answers by itself. A client that pings and never reads fills
    /// it and is dropped, instead of growing it without end.
    pub(crate) max_write_buffer: usize,
}

impl SocketLimits {
    fn config(self) -> WebSocketConfig {
        WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER_BYTES)
            .write_buffer_size(WRITE_BUFFER_BYTES)
            .max_write_buffer_size(self.max_write_buffer)
            .max_frame_size(Some(self.max_frame_bytes))
            .max_message_size(Some(self.max_frame_bytes))
    }
}

/// The connection's task: waits for the upgrade, then runs `connection` on
/// the socket until it ends and its last frames (the close included) are
/// written, or the hard-stop token fires. If the upgrade fails, the
/// connection still leaves its groups and hears `disconnect`.
///
/// The arguments stay in the task's state for its whole life, so they are
/// kept small: the connection boxed (moving it out frees the box).
#[allow(clippy::too_many_arguments)] // one call site, each argument a different concern
#[allow(clippy::manual_async_fn)] // an async fn would store its arguments twice
pub(crate) fn serve(
    on_upgrade: OnUpgrade,
    connection: Box<Connection>,
    mut outbox: OutboxReceiver,
    shutdown: ShutdownSignal,
    hard_stop: CancellationToken,
    limits: SocketLimits,
    permit: Option<ConnectionPermit>,
) -> impl Future<Output = ()> + Send {
    let stats = connection.stats();
    // An async block, not an async fn: an async fn would store its arguments
    // twice in the connection's state.
    async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(error) => {
                tracing::debug!(%error, "websocket upgrade failed");
                // Boxed: rare, and its state would otherwise sit in every
                // connection's.
                Box::pin(unbox(connection).abandon()).await;
                return;
            }
        };
        let (mut sink, stream) = WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            Role::Server,
            Some(limits.config()),
        )
        .await
        .split();
        // Set when the writer gives up on the socket, so the reader stops too.
        let writer_gone = AtomicBool::new(false);
        let mut inbound = SocketInbound {
            stream,
            max_frame_bytes: limits.max_frame_bytes,
            writer_gone: &writer_gone,
            ended: false,
        };
        // Both halves progress together in this task; the writer finishes after
        // the runtime drops its side of the queue (or sends a close). The futures
        // are built inside `join!` so the task does not store them twice, and
        // the connection goes straight from its box into the runtime (freeing
        // the box now, not when this ends).
        let (code, clean) = tokio::join!(unbox(connection).run(&mut inbound, shutdown), async {
            let clean = write_loop(&mut sink, &mut outbox, &hard_stop, &stats).await;
            if !clean {
                writer_gone.store(true, Ordering::Release);
                // The reader runs in this same task: wake it, so it sees the flag.
                std::future::poll_fn(|cx| {
                    cx.waker().wake_by_ref();
                    Poll::Ready(())
                })
                .await;
            }
            clean
        });
        if clean && !inbound.ended {
            // Boxed: needed once, at the end, so the connection's state does not
            // carry its timers while it lives.
            Box::pin(await_close_reply(&mut inbound, &hard_stop)).await;
        }
        tracing::debug!(code, "websocket finished");
        // A slot of the connection limit, held until here. (Moved into a
        // local instead, it would take room twice in the connection's state.)
        drop(permit);
    }
}

/// Moves the connection out of its box, freeing the box.
fn unbox(connection: Box<Connection>) -> Connection {
    *connection
}

/// We closed: reads (and discards) until the client's close reply, so the
/// client sees a clean close handshake rather than a reset; bounded.
async fn await_close_reply(inbound: &mut SocketInbound<'_>, hard_stop: &CancellationToken) {
    let reply = async {
        while let Some(event) = next_inbound(inbound).await {
            if matches!(event, Inbound::Close(_) | Inbound::Invalid(_)) {
                break;
            }
        }
    };
    tokio::select! {
        () = hard_stop.cancelled() => {}
        _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, reply) => {}
    }
}

/// Reads the socket, mapping tungstenite's messages and errors to
/// [`Inbound`].
struct SocketInbound<'a> {
    stream: SplitStream<Socket>,
    max_frame_bytes: usize,
    /// Set when the writer gave up on the socket: nothing more is read.
    writer_gone: &'a AtomicBool,
    /// The client closed or the socket ended: nothing more will come.
    ended: bool,
}

impl InboundStream for SocketInbound<'_> {
    fn poll_inbound(&mut self, cx: &mut Context<'_>) -> Poll<Option<Inbound>> {
        if self.writer_gone.load(Ordering::Acquire) {
            return Poll::Ready(None);
        }
        loop {
            let message = match ready!(self.stream.poll_next_unpin(cx)) {
                Some(Ok(message)) => message,
                Some(Err(error)) => {
                    let event = classify_error(&error, self.max_frame_bytes);
                    self.ended |= event.is_none();
                    return Poll::Ready(event);
                }
                None => {
                    self.ended = true;
                    return Poll::Ready(None);
                }
            };
            self.ended |= matches!(message, WsMessage::Close(_));
            return Poll::Ready(Some(match message {
                // tungstenite checked the UTF-8; the bytes move over unchanged.
                WsMessage::Text(text) => match Text::from_utf8(text.into()) {
                    Ok(text) => Inbound::Frame(Frame::Text(text)),
                    Err(_) => Inbound::Invalid(CloseFrame::invalid_utf8()),
                },
                WsMessage::Binary(bytes) => Inbound::Frame(Frame::Binary(bytes)),
                WsMessage::Ping(bytes) => Inbound::Ping(bytes),
                WsMessage::Pong(bytes) => Inbound::Pong(bytes),
                WsMessage::Close(frame) => Inbound::Close(
                    frame.map(|f| CloseFrame::new(u16::from(f.code), f.reason.as_str())),
                ),
                // Raw frames are only ever written, never read.
                WsMessage::Frame(_) => continue,
            }));
        }
    }
}

/// Maps a read error to the close the client earned, or `None` when the
/// socket is simply gone.
fn classify_error(error: &tungstenite::Error, max_frame_bytes: usize) -> Option<Inbound> {
    use tungstenite::error::{CapacityError, Error as WsError};
    match error {
        WsError::Capacity(CapacityError::MessageTooLong { .. }) => {
            Some(Inbound::Invalid(CloseFrame::too_big(max_frame_bytes)))
        }
        WsError::Utf8(_) => Some(Inbound::Invalid(CloseFrame::invalid_utf8())),
        WsError::Protocol(problem) => Some(Inbound::Invalid(CloseFrame::new(
            close_code::PROTOCOL_ERROR,
            format!("protocol error: {problem}"),
        ))),
        WsError::Capacity(problem) => Some(Inbound::Invalid(CloseFrame::new(
            close_code::POLICY_VIOLATION,
            format!("{problem}"),
        ))),
        _ => {
            tracing::debug!(%error, "websocket read failed; treating the client as gone");
            None
        }
    }
}

/// The socket message for an outbound item. A text payload goes out as a
/// raw text frame around the shared buffer: core's `Text` is UTF-8 by
/// construction, so tungstenite's `Utf8Bytes` would only check it again, for
/// every member of a broadcast.
fn to_ws(item: Outbound) -> WsMessage {
    match item {
        Outbound::Frame(Frame::Text(text)) => WsMessage::Frame(WsFrame::message(
            text.into_bytes(),
            OpCode::Data(OpData::Text),
            true,
        )),
        Outbound::Frame(Frame::Binary(bytes)) => WsMessage::Binary(bytes),
        Outbound::Ping(bytes) => WsMessage::Ping(bytes),
        Outbound::Close(frame) => WsMessage::Close(Some(WsCloseFrame {
            code: frame.code.into(),
            reason: frame.reason.into(),
        })),
    }
}

/// Drains the outbound queue into the socket: writes what is ready (up to a
/// batch), flushes, repeats; stops after a close, when the queue ends, on a
/// write error or timeout, or on hard stop. Returns `false` when it gave up
/// on the socket.
///
/// Waiting for the queue watches nothing else: the runtime ends the queue
/// (or queues a close) at shutdown, so only a write can outlast it. A batch
/// is first tried once; only if the socket is backed up does it wait, boxed
/// with its timer and the hard stop, for at most [`WRITE_TIMEOUT`]. Most
/// batches go out at once, and an idle connection's state carries only the
/// queue's wait.
async fn write_loop(
    sink: &mut SocketSink,
    outbox: &mut OutboxReceiver,
    hard_stop: &CancellationToken,
    stats: &ConsumerStats,
) -> bool {
    loop {
        // Not `while let`: its future would stay in the state for the body.
        let Some(first) = outbox.recv().await else {
            break;
        };
        let mut write = WriteBatch::new(sink, outbox, first);
        let written =
            match std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut write).poll(cx))).await {
                Poll::Ready(written) => written,
                Poll::Pending => Box::pin(finish_backed_up(write, hard_stop)).await,
            };
        let closing = match written {
            Ok(closing) => closing,
            Err(WriteError::HardStop) => return false,
            Err(WriteError::Socket(error)) => {
                tracing::debug!(%error, "websocket write failed");
                return false;
            }
            Err(WriteError::TimedOut) => {
                ConsumerStats::incr(&stats.write_timeouts);
                tracing::debug!(timeout = ?WRITE_TIMEOUT, "websocket write timed out; dropping the client");
                return false;
            }
        };
        if closing {
            break;
        }
    }
    // Flush a close reply tungstenite may have queued, then end the stream;
    // bounded, since the client may have stopped reading. Boxed: once per
    // connection.
    Box::pin(async {
        tokio::select! {
            () = hard_stop.cancelled() => {}
            _ = tokio::time::timeout(Duration::from_secs(1), sink.close()) => {}
        }
    })
    .await;
    true
}

/// Why a batch was not written.
enum WriteError {
    Socket(tungstenite::Error),
    TimedOut,
    HardStop,
}

/// Waits for a batch whose socket is backed up: at most [`WRITE_TIMEOUT`],
/// and not past the hard stop. The queue knows meanwhile, so a full queue is
/// blamed on the client only while its socket is stuck.
async fn finish_backed_up(
    write: WriteBatch<'_>,
    hard_stop: &CancellationToken,
) -> Result<bool, WriteError> {
    let socket = write.outbox.socket_state();
    socket.set_backed_up(true);
    let written = tokio::select! {
        () = hard_stop.cancelled() => Err(WriteError::HardStop),
        written = tokio::time::timeout(WRITE_TIMEOUT, write) => match written {
            Ok(written) => written,
            Err(_) => Err(WriteError::TimedOut),
        },
    };
    socket.set_backed_up(false);
    written
}

/// Writes one item and whatever else is queued now (up to [`WRITE_BATCH`]
/// frames, stopping after a close), then flushes once; resolves to whether
/// a close was written. Hand-written rather than an async fn so it holds
/// only the one message in flight.
struct WriteBatch<'a> {
    sink: &'a mut SocketSink,
    outbox: &'a mut OutboxReceiver,
    /// The message waiting for room in the sink.
    pending: Option<WsMessage>,
    taken: usize,
    closing: bool,
}

impl<'a> WriteBatch<'a> {
    fn new(sink: &'a mut SocketSink, outbox: &'a mut OutboxReceiver, first: Outbound) -> Self {
        Self {
            sink,
            outbox,
            closing: matches!(first, Outbound::Close(_)),
            pending: Some(to_ws(first)),
            taken: 1,
        }
    }
}

impl Future for WriteBatch<'_> {
    type Output = Result<bool, WriteError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            if let Some(message) = this.pending.take() {
                match this.sink.poll_ready_unpin(cx) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(error)) => return Poll::Ready(Err(WriteError::Socket(error))),
                    Poll::Pending => {
                        this.pending = Some(message);
                        return Poll::Pending;
                    }
                }
                this.sink
                    .start_send_unpin(message)
                    .map_err(WriteError::Socket)?;
            }
            if this.closing || this.taken >= WRITE_BATCH {
                break;
            }
            let Some(item) = this.outbox.try_recv() else {
                break;
            };
            this.taken += 1;
            this.closing = matches!(item, Outbound::Close(_));
            this.pending = Some(to_ws(item));
        }
        ready!(this.sink.poll_flush_unpin(cx)).map_err(WriteError::Socket)?;
        Poll::Ready(Ok(this.closing))
    }
}
