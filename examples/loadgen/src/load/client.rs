//! One simulated client: a task that owns its socket, writes what the driver asks and checks
//! every frame that arrives.
//!
//! The receive path is the load generator's hot loop (one pass per delivery, a million times a
//! second): it scans the frame in place ([`Incoming::parse`] slices the fixed layout, no JSON
//! tree, no allocation), updates plain single-writer counters, and batches latency samples.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::timeout;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::http::Uri;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::Mode;
use super::socket;
use super::stats::{ClientCounters, LatencyBuffer, Seen, Shared};
use crate::protocol::{Incoming, Kind, Payload, client_frame};

/// What the driver asks a client to do.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Command {
    /// Send broadcast number `id`.
    Broadcast { id: u64, warm: bool },
    /// Send the next echo of this client's own sequence.
    Echo { warm: bool },
    /// Hand the buffered latency samples to the shared histogram and count the flush.
    Flush,
}

/// How long a client waits for the server's reply to its close frame.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Initial read buffer of a [`connect`]ed socket; tungstenite's 128 KiB default would cost
/// 2.5 GiB at 20k connections. It grows when a frame needs more.
const READ_BUFFER: usize = 4096;

/// Everything a client task needs; the task runs [`ClientTask::run`] to completion.
#[derive(Debug)]
pub(crate) struct ClientTask {
    pub(crate) index: usize,
    pub(crate) url: String,
    /// Local address to connect from (spreads ports over several 127.0.0.x).
    pub(crate) source_ip: Option<IpAddr>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) counters: Arc<ClientCounters>,
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) stop: watch::Receiver<bool>,
    pub(crate) connect_permits: Arc<Semaphore>,
    pub(crate) connect_timeout: Duration,
}

pub(crate) type Socket = WebSocketStream<TcpStream>;

/// Opens a `tokio_tungstenite` connection (from `source_ip` when given), for the load
/// generator's tools other than the load clients (those use [`socket::connect`]).
pub(crate) async fn connect(url: &str, source_ip: Option<IpAddr>) -> Result<Socket, String> {
    let uri: Uri = url.parse().map_err(|e| format!("bad url: {e}"))?;
    let stream = socket::open_tcp(&uri, source_ip).await?;
    let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
    let (ws, _response) = tokio_tungstenite::client_async_with_config(url, stream, Some(config))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    Ok(ws)
}

impl ClientTask {
    /// Connects, then serves commands and incoming frames until the driver says stop.
    pub(crate) async fn run(mut self) {
        let connected = {
            // The permit bounds concurrent handshakes; it is released once connected.
            let _permit = self.connect_permits.acquire().await;
            timeout(
                self.connect_timeout,
                socket::connect(&self.url, self.source_ip),
            )
            .await
        };
        self.shared.connect_finished.fetch_add(1, Ordering::Release);
        let mut ws = match connected {
            Ok(Ok(ws)) => ws,
            Ok(Err(e)) => {
                tracing::debug!(client = self.index, error = %e, "connect failed");
                return;
            }
            Err(_) => {
                tracing::debug!(client = self.index, "connect timed out");
                return;
            }
        };
        self.shared.connected.fetch_add(1, Ordering::Release);

        let mut checker = Checker {
            shared: &self.shared,
            counters: &self.counters,
            seen: (0..self.shared.senders.count)
                .map(|_| Seen::default())
                .collect(),
            latency: LatencyBuffer::new(self.index),
            echo_seq: 0,
        };
        let mut open = true;
        while open {
            tokio::select! {
                biased;
                _ = self.stop.changed() => break,
                command = self.commands.recv() => {
                    let Some(command) = command else { break };
                    let Some((frame, warm)) = checker.frame_for(command) else { continue };
                    open = ws.send_text(&frame).await.is_ok();
                    if open && !warm {
                        checker.counters.sent.incr(1);
                    }
                }
                read = ws.read() => {
                    // Every frame of one read arrived at the same time: one clock read for all.
                    let now = self.shared.now_us();
                    open = read.is_ok()
                        && ws.frames(|text| checker.check(text, now)).is_ok()
                        && ws.flush_pongs().await.is_ok();
                }
            }
        }
        if !open {
            // Counted now: a client still closing when the run ends was not disconnected.
            self.counters.disconnected.incr(1);
        }
        checker.finish();
        if open {
            // The run is over either way; a server that does not answer is not our problem.
            let _closed = timeout(CLOSE_TIMEOUT, ws.close(1000, "run finished")).await;
        }
    }
}

/// Builds this client's frames and checks the ones that arrive.
struct Checker<'a> {
    shared: &'a Shared,
    counters: &'a ClientCounters,
    /// Keys seen, per sending process.
    seen: Box<[Seen]>,
    latency: LatencyBuffer,
    /// Measured echoes sent so far; echo keys at or above it are unexpected.
    echo_seq: u64,
}

impl Checker<'_> {
    /// The frame a command writes and whether it is warm-up; `None` for a flush.
    fn frame_for(&mut self, command: Command) -> Option<(String, bool)> {
        let (kind, k, w) = match command {
            Command::Broadcast { id, warm } => ("broadcast", id, warm),
            Command::Echo { warm: true } => ("echo", 0, true),
            Command::Echo { warm: false } => {
                self.echo_seq += 1;
                ("echo", self.echo_seq - 1, false)
            }
            Command::Flush => {
                self.latency.flush(self.shared);
                self.shared.flushed.fetch_add(1, Ordering::Release);
                return None;
            }
        };
        let payload = Payload {
            r: self.shared.run_id(),
            k,
            t: self.shared.now_us(),
            w,
        };
        Some((client_frame(kind, &payload, self.shared.payload_bytes), w))
    }

    /// Checks one frame that arrived at `now` (microseconds, [`Shared::now_us`]).
    fn check(&mut self, text: &str, now: u64) {
        let Some(Incoming {
            kind,
            payload: Some(payload),
        }) = Incoming::parse(text)
        else {
            self.counters.unexpected.incr(1);
            return;
        };
        let Some(sender) = self.shared.senders.index_of(payload.r) else {
            self.counters.unexpected.incr(1);
            return;
        };
        let own = sender == self.shared.senders.index;
        let limit = match (kind, self.shared.mode) {
            // Another process's issued count is not known here until the end (`finish`).
            (Kind::Broadcast, Mode::Broadcast) if !own => u64::MAX,
            (Kind::Broadcast, Mode::Broadcast) => self.shared.issued_ids.load(Ordering::Acquire),
            (Kind::Echo, Mode::Echo) if own => self.echo_seq,
            (Kind::Echo, Mode::Broadcast) if own && payload.w => {
                // The answer to `Session::ready`'s echo: the server serves this connection.
                self.shared.ready.fetch_add(1, Ordering::Release);
                return;
            }
            (Kind::BroadcastResult, Mode::Broadcast) if own => {
                if !payload.w {
                    self.counters.results.incr(1);
                }
                return;
            }
            _ => {
                self.counters.unexpected.incr(1);
                return;
            }
        };
        self.shared.count_arrival(sender);
        if payload.w {
            return;
        }
        if payload.k >= limit {
            self.counters.unexpected.incr(1);
        } else if self.seen[sender].insert(payload.k) {
            self.counters.received.incr(1);
            self.counters.last_delivery_us.set_max(now);
            self.latency
                .record(self.shared, now.saturating_sub(payload.t));
        } else {
            self.counters.duplicated.incr(1);
        }
    }

    /// Flushes latency samples and moves keys no sender issued from `received` to `unexpected`.
    fn finish(&mut self) {
        self.latency.flush(self.shared);
        if let Some(limits) = self.shared.final_limits.get() {
            for (seen, limit) in self.seen.iter().zip(limits) {
                let bogus = seen.count_from(*limit);
                self.counters.received.decr(bogus);
                self.counters.unexpected.incr(bogus);
            }
        }
    }
}
