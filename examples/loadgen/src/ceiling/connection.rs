//! One WebSocket connection of a ceiling server: a single task that reads requests and writes
//! its outbound queue in batches.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, close_code};
use futures::SinkExt;
use tokio::sync::mpsc;
use tokio::time::timeout;

use super::State;
use crate::protocol::{Kind, Request, server_frame};

/// Frames written before one flush; bounds the work per wake-up.
const WRITE_BATCH: usize = 64;
/// How long a closing connection waits for its close frame to be written.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Serves one upgraded connection until it closes, the hub drops it, or the server shuts down.
pub(crate) async fn serve(mut socket: WebSocket, state: State) {
    if !state.join_delay.is_zero() {
        tokio::time::sleep(state.join_delay).await;
    }
    let (tx, mut outbound) = mpsc::channel(state.outbound_queue);
    let id = state.hub.join(tx);
    let mut shutdown = state.shutdown.clone();
    let close = loop {
        tokio::select! {
            biased;
            _ = shutdown.changed() => break Some((close_code::AWAY, "server shutting down")),
            frame = outbound.recv() => {
                let Some(frame) = frame else {
                    break Some((close_code::AGAIN, "outbound queue full; read faster"));
                };
                if write_batch(&mut socket, frame, &mut outbound).await.is_err() {
                    break None;
                }
            }
            message = socket.recv() => match message {
                Some(Ok(Message::Text(text))) => {
                    if let Err(reason) = handle(&mut socket, &state, text).await {
                        break Some((close_code::ERROR, reason));
                    }
                }
                Some(Ok(Message::Close(_)) | Err(_)) | None => break None,
                Some(Ok(_)) => {}
            },
        }
    };
    state.hub.leave(id);
    if let Some((code, reason)) = close {
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        // The connection is ending either way; a peer that stopped reading gets no close frame.
        let _written = timeout(CLOSE_TIMEOUT, socket.send(Message::Close(Some(frame)))).await;
    }
}

/// Writes `first` and whatever else is queued, then flushes once.
async fn write_batch(
    socket: &mut WebSocket,
    first: Utf8Bytes,
    outbound: &mut mpsc::Receiver<Utf8Bytes>,
) -> Result<(), axum::Error> {
    socket.feed(Message::Text(first)).await?;
    for _ in 1..WRITE_BATCH {
        match outbound.try_recv() {
            Ok(frame) => socket.feed(Message::Text(frame)).await?,
            Err(_) => break,
        }
    }
    socket.flush().await
}

/// Answers one request frame; an `Err` closes the connection with 1011.
async fn handle(
    socket: &mut WebSocket,
    state: &State,
    text: Utf8Bytes,
) -> Result<(), &'static str> {
    let Some(request) = Request::parse(&text) else {
        return Ok(());
    };
    match request.kind {
        // The echo reply is the request itself: no parse of the payload, no copy.
        Kind::Echo => socket
            .send(Message::Text(text))
            .await
            .map_err(|_| "write failed"),
        Kind::Broadcast => {
            let frame = server_frame("broadcast", request.payload);
            state.fanout.publish(&state.hub, frame).await?;
            let result = server_frame("broadcastResult", request.payload);
            socket
                .send(Message::Text(result.into()))
                .await
                .map_err(|_| "write failed")
        }
        Kind::BroadcastResult | Kind::Other => Ok(()),
    }
}
