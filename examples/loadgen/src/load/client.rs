//! One simulated client: a task that owns its socket, writes what the driver asks and checks
//! every frame that arrives.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};

use super::Mode;
use super::stats::{ClientStats, LatencyBuffer, Seen, Shared};
use crate::protocol::{Incoming, Kind, Payload, client_frame};

/// What the driver asks a client to write.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Command {
    /// Send broadcast number `id`.
    Broadcast { id: u64, warm: bool },
    /// Send the next echo of this client's own sequence.
    Echo { warm: bool },
}

/// How long a client waits for the server's reply to its close frame.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Initial read buffer per client; tungstenite's 128 KiB default would cost 2.5 GiB at 20k
/// clients. It grows when a frame needs more.
const READ_BUFFER: usize = 4096;

/// Everything a client task needs; the task runs [`ClientTask::run`] to completion.
#[derive(Debug)]
pub(crate) struct ClientTask {
    pub(crate) index: usize,
    pub(crate) url: String,
    pub(crate) shared: Arc<Shared>,
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) stop: watch::Receiver<bool>,
    pub(crate) connect_permits: Arc<Semaphore>,
    pub(crate) connect_timeout: Duration,
}

impl ClientTask {
    /// Connects, then serves commands and incoming frames until the driver says stop.
    pub(crate) async fn run(mut self) -> ClientStats {
        let mut stats = ClientStats::default();
        let connected = {
            // The permit bounds concurrent handshakes; it is released once connected.
            let _permit = self.connect_permits.acquire().await;
            timeout(
                self.connect_timeout,
                tokio_tungstenite::connect_async_with_config(
                    self.url.as_str(),
                    Some(WebSocketConfig::default().read_buffer_size(READ_BUFFER)),
                    true,
                ),
            )
            .await
        };
        self.shared.connect_finished.fetch_add(1, Ordering::Release);
        let mut ws = match connected {
            Ok(Ok((ws, _response))) => ws,
            Ok(Err(e)) => {
                tracing::debug!(client = self.index, error = %e, "connect failed");
                return stats;
            }
            Err(_) => {
                tracing::debug!(client = self.index, "connect timed out");
                return stats;
            }
        };
        self.shared.connected.fetch_add(1, Ordering::Release);
        stats.connected = true;

        let mut checker = Checker {
            shared: &self.shared,
            seen: Seen::default(),
            latency: LatencyBuffer::new(self.index),
            echo_seq: 0,
            stats: &mut stats,
        };
        let mut open = true;
        while open {
            tokio::select! {
                biased;
                _ = self.stop.changed() => break,
                command = self.commands.recv() => {
                    let Some(command) = command else { break };
                    let frame = checker.frame_for(command);
                    open = ws.send(Message::Text(frame.into())).await.is_ok();
                    if open && !command_is_warm(command) {
                        checker.stats.sent += 1;
                    }
                }
                message = ws.next() => match message {
                    Some(Ok(Message::Text(text))) => checker.check(&text),
                    Some(Ok(Message::Close(_)) | Err(_)) | None => open = false,
                    Some(Ok(_)) => {}
                },
            }
        }
        checker.latency.flush(&self.shared);
        drop(checker);
        if open {
            let close = CloseFrame {
                code: CloseCode::Normal,
                reason: "run finished".into(),
            };
            // The run is over either way; a server that does not answer is not our problem.
            let _closed = timeout(CLOSE_TIMEOUT, ws.close(Some(close))).await;
        } else {
            stats.disconnected = true;
        }
        stats
    }
}

fn command_is_warm(command: Command) -> bool {
    match command {
        Command::Broadcast { warm, .. } | Command::Echo { warm } => warm,
    }
}

/// Builds this client's frames and checks the ones that arrive.
struct Checker<'a> {
    shared: &'a Shared,
    seen: Seen,
    latency: LatencyBuffer,
    /// Measured echoes sent so far; echo keys at or above it are unexpected.
    echo_seq: u64,
    stats: &'a mut ClientStats,
}

impl Checker<'_> {
    fn frame_for(&mut self, command: Command) -> String {
        let t = self.shared.now_us();
        let r = self.shared.run_id;
        let (kind, k, w) = match command {
            Command::Broadcast { id, warm } => ("broadcast", id, warm),
            Command::Echo { warm: true } => ("echo", 0, true),
            Command::Echo { warm: false } => {
                self.echo_seq += 1;
                ("echo", self.echo_seq - 1, false)
            }
        };
        client_frame(kind, &Payload { r, k, t, w }, self.shared.payload_bytes)
    }

    fn check(&mut self, text: &str) {
        let Some(Incoming {
            kind,
            payload: Some(payload),
        }) = Incoming::parse(text)
        else {
            self.stats.unexpected += 1;
            return;
        };
        if payload.r != self.shared.run_id {
            self.stats.unexpected += 1;
            return;
        }
        let limit = match (kind, self.shared.mode) {
            (Kind::Broadcast, Mode::Broadcast) => self.shared.issued_ids.load(Ordering::Acquire),
            (Kind::Echo, Mode::Echo) => self.echo_seq,
            (Kind::BroadcastResult, Mode::Broadcast) => {
                if !payload.w {
                    self.stats.results += 1;
                }
                return;
            }
            _ => {
                self.stats.unexpected += 1;
                return;
            }
        };
        self.shared.count_arrival();
        if payload.w {
            return;
        }
        if payload.k >= limit {
            self.stats.unexpected += 1;
        } else if self.seen.insert(payload.k) {
            let now = self.shared.now_us();
            self.stats.received += 1;
            self.stats.last_delivery_us = now;
            self.latency
                .record(self.shared, now.saturating_sub(payload.t));
        } else {
            self.stats.duplicated += 1;
        }
    }
}
