//! The one publisher: a connection that publishes seq-numbered soak messages at a steady
//! rate, writes each into the [`Ledger`] and records the server's answer; it reconnects when
//! the connection drops.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior, interval, sleep, timeout};
use tokio_tungstenite::tungstenite::Message;

use super::Phase;
use super::frame::{self, Frame};
use super::ledger::{Ledger, Outcome};
use super::track::{Shared, incr, lock};
use crate::load::client::{Socket, connect};

/// Time allowed for connecting and for `connected`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause before reconnecting.
const RECONNECT_PAUSE: Duration = Duration::from_millis(200);
/// After the last publish, the longest wait for its answer.
const ANSWER_DRAIN: Duration = Duration::from_secs(15);
/// Publishes sent and not yet answered at most; a tick that finds this many is skipped (and
/// counted). Unbounded, a server that answers slower than the rate piles the publishes up in
/// its socket: a soak with 5,000 clients on 2 busy cores had 1,900 waiting (95 s), so the
/// send time no longer said when the server took a publish.
const MAX_IN_FLIGHT: usize = 40;

/// The publisher's settings.
#[derive(Debug)]
pub(crate) struct Publisher {
    pub(crate) urls: Vec<String>,
    pub(crate) group: Arc<str>,
    /// Publishes per second.
    pub(crate) rate: f64,
    pub(crate) shared: Arc<Shared>,
    pub(crate) ledger: Arc<Mutex<Ledger>>,
    /// Sends while [`Phase::Run`]; stops sending at anything else.
    pub(crate) phase: watch::Receiver<Phase>,
}

impl Publisher {
    /// Publishes until the phase leaves [`Phase::Run`], then waits briefly for the last answers.
    pub(crate) async fn run(mut self) {
        let mut attempt = 0usize;
        while *self.phase.borrow() == Phase::Run {
            let url = &self.urls[attempt % self.urls.len()];
            attempt += 1;
            match timeout(CONNECT_TIMEOUT, self.open(url)).await {
                Ok(Some(mut ws)) => {
                    self.publish(&mut ws).await;
                    lock(&self.ledger).abandon_pending();
                    let _closed = timeout(Duration::from_secs(1), ws.close(None)).await;
                }
                _ => incr(&self.shared.counters.connect_failures),
            }
            if *self.phase.borrow() == Phase::Run {
                self.shared.event("dropped", "publisher");
                sleep(RECONNECT_PAUSE).await;
            }
        }
    }

    /// Connects and waits for `connected`.
    async fn open(&self, url: &str) -> Option<Socket> {
        let mut ws = connect(url, None).await.ok()?;
        ws.send(Message::text(frame::CONNECT)).await.ok()?;
        while let Some(Ok(message)) = ws.next().await {
            if let Message::Text(text) = message
                && Frame::parse(&text).is_some_and(|f| f.kind == "connected")
            {
                return Some(ws);
            }
        }
        None
    }

    /// Publishes on one connection until it fails or the run stops sending.
    async fn publish(&mut self, ws: &mut Socket) {
        let mut ticks = interval(Duration::from_secs_f64(1.0 / self.rate));
        // Burst: a tick the runtime ran late is made up at once, so the average rate holds on a
        // busy machine (with Delay, 5,000 clients on 2 shared cores made 20/s into 12/s).
        ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
        let mut drain_until: Option<Instant> = None;
        let mut in_flight = 0usize;
        loop {
            let sending = drain_until.is_none();
            tokio::select! {
                changed = self.phase.changed(), if sending => {
                    if changed.is_err() || *self.phase.borrow() != Phase::Run {
                        drain_until = Some(Instant::now() + ANSWER_DRAIN);
                    }
                }
                () = async { tokio::time::sleep_until(drain_until.unwrap_or_else(Instant::now)).await },
                    if !sending => return,
                _ = ticks.tick(), if sending => {
                    if in_flight >= MAX_IN_FLIGHT {
                        incr(&self.shared.counters.skipped_publishes);
                        continue;
                    }
                    in_flight += 1;
                    let now = self.shared.now_s();
                    let seq = lock(&self.ledger).sent(now);
                    let text = frame::publish(&self.group, seq, (now * 1000.0) as u64);
                    if ws.send(Message::text(text)).await.is_err() {
                        return;
                    }
                }
                message = ws.next() => match message {
                    Some(Ok(Message::Text(text))) => {
                        if self.on_frame(&text) {
                            in_flight = in_flight.saturating_sub(1);
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => return,
                },
            }
            if !sending
                && !lock(&self.ledger)
                    .entries
                    .iter()
                    .rev()
                    .take(64)
                    .any(|e| e.outcome == Outcome::Pending)
            {
                return;
            }
        }
    }

    /// Takes in one frame; true when it answered a publish.
    fn on_frame(&self, text: &str) -> bool {
        let Some(f) = Frame::parse(text) else {
            incr(&self.shared.counters.unexpected_frames);
            return false;
        };
        let now = self.shared.now_s();
        match (f.kind.as_ref(), f.id) {
            ("published", Some(seq)) => lock(&self.ledger).settle(seq, Outcome::Acked(now)),
            ("error", Some(seq)) => {
                lock(&self.ledger).settle(seq, Outcome::Refused(now));
                let code = f.code.as_deref().unwrap_or("none");
                self.shared.event("refused", code);
            }
            ("error", None) => {
                incr(&self.shared.counters.unavailable_frames);
                return false;
            }
            _ => {
                incr(&self.shared.counters.unexpected_frames);
                return false;
            }
        }
        true
    }
}
