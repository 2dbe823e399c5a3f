//! One WebSocket connection on axum: its reader feeds the core runtime
//! ([`Connection::run`]) and its writer drains the runtime's bounded outbound
//! queue into the socket. Both run in the connection's one task.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::extract::ws::{self, Message as WsMessage, Utf8Bytes, WebSocket};
use channels_core::consumer::{
    CloseFrame, Connection, ConsumerStats, Frame, Inbound, InboundStream, Outbound, OutboxReceiver,
    Text, close_code, next_inbound,
};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio_util::sync::CancellationToken;

use crate::middleware::ConnectionPermit;

/// The longest one socket write may take; a client that does not read for
/// that long while we have data for it is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Frames written before one flush, so a burst goes out in few syscalls.
const WRITE_BATCH: usize = 32;

/// After the server sends a close, how long it keeps reading for the client's
/// close reply (RFC 6455 7.1.1) before dropping the TCP connection.
const CLOSE_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(1);

/// Runs `connection` on a socket (split by the caller) until it ends and its
/// last frames (the close included) are written, or the hard-stop token
/// fires.
///
/// The arguments of an async fn stay in its state for its whole life, so
/// they are kept small: the socket comes already split, the connection boxed
/// (moving it out frees the box).
#[allow(clippy::too_many_arguments)] // one call site, each argument a different concern
pub(crate) async fn serve(
    sink: SplitSink<WebSocket, WsMessage>,
    stream: SplitStream<WebSocket>,
    connection: Box<Connection>,
    outbox: OutboxReceiver,
    shutdown: CancellationToken,
    hard_stop: CancellationToken,
    max_frame_bytes: usize,
    permit: Option<ConnectionPermit>,
) {
    // Holds a slot of the connection limit until the connection is over.
    let _permit = permit;
    // Out of its box at once: the box is freed now, not when this ends.
    let connection: Connection = {
        let boxed = connection;
        *boxed
    };
    let stats = connection.stats();
    // Set when the writer gives up on the socket, so the reader stops too.
    let writer_gone = AtomicBool::new(false);
    let mut inbound = SocketInbound {
        stream,
        max_frame_bytes,
        writer_gone: &writer_gone,
        ended: false,
    };
    // Both halves progress together in this task; the writer finishes after
    // the runtime drops its side of the queue (or sends a close). The futures
    // are built inside `join!` so the task does not store them twice.
    let (code, clean) = tokio::join!(connection.run(&mut inbound, shutdown), async {
        let clean = write_loop(sink, outbox, hard_stop.clone(), &stats).await;
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

/// Reads the socket, mapping axum's messages and errors to [`Inbound`].
struct SocketInbound<'a> {
    stream: SplitStream<WebSocket>,
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
        Poll::Ready(Some(match message {
            // tungstenite checked the UTF-8; the bytes move over unchanged.
            WsMessage::Text(text) => match Text::from_utf8(text.into()) {
                Ok(text) => Inbound::Frame(Frame::Text(text)),
                Err(_) => Inbound::Invalid(CloseFrame::invalid_utf8()),
            },
            WsMessage::Binary(bytes) => Inbound::Frame(Frame::Binary(bytes)),
            WsMessage::Ping(bytes) => Inbound::Ping(bytes),
            WsMessage::Pong(bytes) => Inbound::Pong(bytes),
            WsMessage::Close(frame) => {
                Inbound::Close(frame.map(|f| CloseFrame::new(f.code, f.reason.as_str())))
            }
        }))
    }
}

/// Maps a read error to the close the client earned, or `None` when the
/// socket is simply gone. Told apart by tungstenite's error type (axum keeps
/// it as the error's source).
fn classify_error(error: &axum::Error, max_frame_bytes: usize) -> Option<Inbound> {
    use tungstenite::error::{CapacityError, Error as WsError};
    let kind = std::error::Error::source(error).and_then(|source| source.downcast_ref::<WsError>());
    match kind {
        Some(WsError::Capacity(CapacityError::MessageTooLong { .. })) => {
            Some(Inbound::Invalid(CloseFrame::too_big(max_frame_bytes)))
        }
        Some(WsError::Utf8(_)) => Some(Inbound::Invalid(CloseFrame::invalid_utf8())),
        Some(WsError::Protocol(problem)) => Some(Inbound::Invalid(CloseFrame::new(
            close_code::PROTOCOL_ERROR,
            format!("protocol error: {problem}"),
        ))),
        Some(WsError::Capacity(problem)) => Some(Inbound::Invalid(CloseFrame::new(
            close_code::POLICY_VIOLATION,
            format!("{problem}"),
        ))),
        _ => {
            tracing::debug!(%error, "websocket read failed; treating the client as gone");
            None
        }
    }
}

/// The socket message for an outbound item. Text payloads are shared
/// buffers: converting checks their UTF-8 again (axum offers no unchecked
/// conversion), which costs far less than the copy it replaces.
fn to_ws(item: Outbound) -> Option<WsMessage> {
    Some(match item {
        Outbound::Frame(Frame::Text(text)) => match Utf8Bytes::try_from(text.into_bytes()) {
            Ok(text) => WsMessage::Text(text),
            Err(error) => {
                tracing::error!(%error, "dropping a text frame that is not UTF-8");
                return None;
            }
        },
        Outbound::Frame(Frame::Binary(bytes)) => WsMessage::Binary(bytes),
        Outbound::Ping(bytes) => WsMessage::Ping(bytes),
        Outbound::Close(frame) => WsMessage::Close(Some(ws::CloseFrame {
            code: frame.code,
            reason: frame.reason.into(),
        })),
    })
}

/// Drains the outbound queue into the socket: writes what is ready (up to a
/// batch), flushes, repeats; stops after a close, when the queue ends, on a
/// write error or timeout, or on hard stop. Returns `false` when it gave up
/// on the socket.
///
/// A write timer is armed only when the socket is backed up: a batch is
/// first tried once, and only if that cannot finish does it wait, for at most
/// [`WRITE_TIMEOUT`]. Most batches go out at once and cost no timer.
async fn write_loop(
    mut sink: SplitSink<WebSocket, WsMessage>,
    mut outbox: OutboxReceiver,
    hard_stop: CancellationToken,
    stats: &ConsumerStats,
) -> bool {
    let socket = outbox.socket_state();
    loop {
        let first = tokio::select! {
            () = hard_stop.cancelled() => return false,
            item = outbox.recv() => item,
        };
        let Some(first) = first else { break };
        let write = write_batch(&mut sink, &mut outbox, first);
        let mut write = std::pin::pin!(write);
        let written = match std::future::poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await {
            Poll::Ready(written) => Ok(written),
            // The socket is backed up: only now arm a timer (boxed, so an
            // idle connection's state does not carry one).
            // The queue knows, so a full queue is blamed on the client only
            // while its socket is stuck.
            Poll::Pending => {
                socket.set_backed_up(true);
                let timed = Box::pin(tokio::time::timeout(WRITE_TIMEOUT, write));
                let written = tokio::select! {
                    () = hard_stop.cancelled() => return false,
                    written = timed => written,
                };
                socket.set_backed_up(false);
                written
            }
        };
        let closing = match written {
            Ok(Ok(closing)) => closing,
            Ok(Err(error)) => {
                tracing::debug!(%error, "websocket write failed");
                return false;
            }
            Err(_) => {
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
    let closed = Box::pin(tokio::time::timeout(Duration::from_secs(1), sink.close()));
    tokio::select! {
        () = hard_stop.cancelled() => {}
        _ = closed => {}
    }
    true
}

/// Writes `first` and whatever else is queued now (up to [`WRITE_BATCH`]
/// frames, stopping after a close), then flushes once. Returns whether a
/// close was written.
async fn write_batch(
    sink: &mut SplitSink<WebSocket, WsMessage>,
    outbox: &mut OutboxReceiver,
    first: Outbound,
) -> Result<bool, axum::Error> {
    let mut closing = matches!(first, Outbound::Close(_));
    if let Some(message) = to_ws(first) {
        sink.feed(message).await?;
    }
    let mut written = 1;
    while !closing && written < WRITE_BATCH {
        let Some(item) = outbox.try_recv() else { break };
        closing = matches!(item, Outbound::Close(_));
        if let Some(message) = to_ws(item) {
            sink.feed(message).await?;
        }
        written += 1;
    }
    sink.flush().await?;
    Ok(closing)
}
