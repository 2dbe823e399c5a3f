//! One WebSocket connection on axum: its reader feeds the core runtime
//! ([`Connection::run`]) and its writer drains the runtime's bounded outbound
//! queue into the socket. Both run in the connection's one task.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::ws::{self, Message as WsMessage, Utf8Bytes, WebSocket};
use channels_core::consumer::{
    CloseFrame, Connection, Frame, Inbound, InboundStream, Outbound, OutboxReceiver, Text,
    close_code,
};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::Notify;
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

/// Runs `connection` on `socket` until it ends and its last frames (the close
/// included) are written, or the hard-stop token fires.
#[allow(clippy::too_many_arguments)] // one call site, each argument a different concern
pub(crate) async fn serve(
    socket: WebSocket,
    connection: Connection,
    outbox: OutboxReceiver,
    shutdown: CancellationToken,
    hard_stop: CancellationToken,
    max_frame_bytes: usize,
    permit: Option<ConnectionPermit>,
) {
    // Holds a slot of the connection limit until the connection is over.
    let _permit = permit;
    let (sink, stream) = socket.split();
    // Set when the writer gives up on the socket, so the reader stops too.
    let writer_gone = WriterGone::default();
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
        let clean = write_loop(sink, outbox, hard_stop.clone()).await;
        if !clean {
            writer_gone.set();
        }
        clean
    });
    if clean && !inbound.ended {
        // We closed: read (and discard) until the client's close reply, so the
        // client sees a clean close handshake rather than a reset.
        let reply = async {
            while let Some(event) = inbound.next_inbound().await {
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
    tracing::debug!(code, "websocket finished");
}

/// Set when the writer gives up on the socket, so the reader stops too. A
/// local of the connection's task (no allocation), unlike a token.
#[derive(Debug, Default)]
struct WriterGone {
    gone: AtomicBool,
    notify: Notify,
}

impl WriterGone {
    fn set(&self) {
        self.gone.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            if self.gone.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }
}

/// Reads the socket, mapping axum's messages and errors to [`Inbound`].
struct SocketInbound<'a> {
    stream: SplitStream<WebSocket>,
    max_frame_bytes: usize,
    writer_gone: &'a WriterGone,
    /// The client closed or the socket ended: nothing more will come.
    ended: bool,
}

impl InboundStream for SocketInbound<'_> {
    async fn next_inbound(&mut self) -> Option<Inbound> {
        // Both branches are cancel-safe.
        let next = tokio::select! {
            biased;
            () = self.writer_gone.wait() => return None,
            next = self.stream.next() => next,
        };
        let message = match next {
            Some(Ok(message)) => message,
            Some(Err(error)) => {
                let event = classify_error(&error, self.max_frame_bytes);
                self.ended |= event.is_none();
                return event;
            }
            None => {
                self.ended = true;
                return None;
            }
        };
        self.ended |= matches!(message, WsMessage::Close(_));
        Some(match message {
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
        })
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
async fn write_loop(
    mut sink: SplitSink<WebSocket, WsMessage>,
    mut outbox: OutboxReceiver,
    hard_stop: CancellationToken,
) -> bool {
    loop {
        let first = tokio::select! {
            () = hard_stop.cancelled() => return false,
            item = outbox.recv() => item,
        };
        let Some(first) = first else { break };
        let mut closing = matches!(first, Outbound::Close(_));
        let mut batch = Vec::with_capacity(WRITE_BATCH);
        batch.extend(to_ws(first));
        while !closing && batch.len() < WRITE_BATCH {
            let Some(item) = outbox.try_recv() else { break };
            closing = matches!(item, Outbound::Close(_));
            batch.extend(to_ws(item));
        }
        let write = async {
            for message in batch {
                sink.feed(message).await?;
            }
            sink.flush().await
        };
        // Boxed: the timer exists only while a batch is being written, so an
        // idle connection's task stays small.
        let write = Box::pin(tokio::time::timeout(WRITE_TIMEOUT, write));
        let written = tokio::select! {
            () = hard_stop.cancelled() => return false,
            written = write => written,
        };
        match written {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::debug!(%error, "websocket write failed");
                return false;
            }
            Err(_) => {
                tracing::warn!(timeout = ?WRITE_TIMEOUT, "websocket write timed out; dropping the client");
                return false;
            }
        }
        if closing {
            break;
        }
    }
    // Flush a close reply tungstenite may have queued, then end the stream;
    // bounded, since the client may have stopped reading.
    tokio::select! {
        () = hard_stop.cancelled() => {}
        _ = tokio::time::timeout(Duration::from_secs(1), sink.close()) => {}
    }
    true
}
