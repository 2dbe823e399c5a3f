//! One soak client: connect, subscribe (recovering from its last position), read pushes,
//! and after a random lifetime close and do it all again, until the run says stop.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::sync::{Semaphore, watch};
use tokio::time::{Instant, sleep_until, timeout};
use tokio_tungstenite::tungstenite::Message;

use super::Phase;
use super::frame::{self, Frame, Rng};
use super::track::{Shared, Tracker, incr};
use crate::load::client::{Socket, connect};

/// Time allowed for a TCP connect plus the WebSocket handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for `connected` or `subscribed` to come back.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause before retrying a subscribe the server refused (Redis away).
const SUBSCRIBE_RETRY: Duration = Duration::from_millis(500);
/// Reconnect backoff after a failure: doubles from the first to the last.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_LAST: Duration = Duration::from_secs(5);
/// Time a closing client waits for the server's close reply.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Everything one client task needs.
#[derive(Debug)]
pub(crate) struct Client {
    pub(crate) index: usize,
    pub(crate) url: String,
    pub(crate) source_ip: Option<IpAddr>,
    pub(crate) group: Arc<str>,
    /// Mean connection lifetime; `None`: no churn.
    pub(crate) mean_lifetime: Option<f64>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) connect_permits: Arc<Semaphore>,
    pub(crate) phase: watch::Receiver<Phase>,
}

/// Why one connection ended.
enum End {
    /// The run is over.
    Stop,
    /// Its lifetime ran out: close and reconnect.
    Churn,
    /// The server closed it, or it failed.
    Dropped(String),
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Client {
    /// Runs connections until the phase is [`Phase::Stop`]; returns the client's record.
    pub(crate) async fn run(mut self) -> Tracker {
        let mut tracker = Tracker::new(self.index);
        let mut rng = Rng::new(self.index as u64 + 1);
        let mut backoff = BACKOFF_FIRST;
        let mut first = true;
        while *self.phase.borrow() != Phase::Stop {
            let connected = {
                let _permit = self.connect_permits.acquire().await;
                timeout(CONNECT_TIMEOUT, connect(&self.url, self.source_ip)).await
            };
            let Ok(Ok(mut ws)) = connected else {
                incr(&self.shared.counters.connect_failures);
                if self.pause(jitter(&mut rng, backoff)).await {
                    break;
                }
                backoff = (backoff * 2).min(BACKOFF_LAST);
                continue;
            };
            if !first {
                incr(&self.shared.counters.reconnects);
            }
            first = false;
            let end = self.serve(&mut ws, &mut tracker, &mut rng).await;
            tracker.subscribed_at_stop = matches!(end, End::Stop) && tracker.subscribed;
            tracker.on_disconnect(&self.shared);
            match end {
                End::Stop => {
                    let _closed = timeout(CLOSE_TIMEOUT, ws.close(None)).await;
                    break;
                }
                End::Churn => {
                    incr(&self.shared.counters.churn_closes);
                    let _closed = timeout(CLOSE_TIMEOUT, ws.close(None)).await;
                    backoff = BACKOFF_FIRST;
                }
                End::Dropped(reason) => {
                    incr(&self.shared.counters.dropped);
                    self.shared.event("dropped", &reason);
                    if self.pause(jitter(&mut rng, backoff)).await {
                        break;
                    }
                    backoff = (backoff * 2).min(BACKOFF_LAST);
                }
            }
        }
        tracker.on_disconnect(&self.shared);
        tracker
    }

    /// Waits `delay`; true when the run stopped meanwhile.
    async fn pause(&mut self, delay: Duration) -> bool {
        let until = Instant::now() + delay;
        loop {
            tokio::select! {
                _ = sleep_until(until) => return *self.phase.borrow() == Phase::Stop,
                changed = self.phase.changed() => {
                    if changed.is_err() || *self.phase.borrow() == Phase::Stop {
                        return true;
                    }
                }
            }
        }
    }

    /// One connection, from the `connect` frame to its end.
    async fn serve(&mut self, ws: &mut Socket, tracker: &mut Tracker, rng: &mut Rng) -> End {
        let shared = Arc::clone(&self.shared);
        let c = &shared.counters;
        if ws.send(Message::text(frame::CONNECT)).await.is_err() {
            return End::Dropped("send connect".into());
        }
        let mut answer_by = Some(Instant::now() + ANSWER_TIMEOUT);
        let mut retry_at = None;
        let mut close_at = self.lifetime(rng);
        let mut next_id = 0u64;
        loop {
            if *self.phase.borrow() != Phase::Run {
                close_at = None;
            }
            let mut request = None;
            tokio::select! {
                changed = self.phase.changed() => {
                    if changed.is_err() || *self.phase.borrow() == Phase::Stop {
                        return End::Stop;
                    }
                }
                () = sleep_until_some(close_at) => return End::Churn,
                () = sleep_until_some(answer_by) => {
                    incr(&c.answer_timeouts);
                    return End::Dropped("answer timeout".into());
                }
                () = sleep_until_some(retry_at) => {
                    retry_at = None;
                    request = Some(());
                }
                message = ws.next() => match message {
                    Some(Ok(Message::Text(text))) => {
                        let Some(f) = Frame::parse(&text) else {
                            incr(&c.unexpected_frames);
                            continue;
                        };
                        match f.kind.as_ref() {
                            "connected" => request = Some(()),
                            "subscribed" => {
                                answer_by = None;
                                tracker.on_subscribed(&shared, f);
                            }
                            "message" => match (f.offset, f.epoch.as_deref()) {
                                (Some(offset), Some(epoch)) => {
                                    let seq = f.data.as_ref().and_then(|d| d.seq);
                                    tracker.on_push(&shared, offset, epoch, seq);
                                }
                                _ => incr(&c.unexpected_frames),
                            },
                            "lost" => {
                                if tracker.on_lost(&shared, f) {
                                    request = Some(());
                                }
                            }
                            "error" if f.id.is_some() => {
                                // The subscribe failed (Redis away): try again shortly.
                                incr(&c.subscribe_errors);
                                answer_by = None;
                                retry_at = Some(Instant::now() + jitter(rng, SUBSCRIBE_RETRY));
                            }
                            "error" if f.code.as_deref() == Some("unavailable") => {
                                incr(&c.unavailable_frames);
                            }
                            _ => incr(&c.unexpected_frames),
                        }
                    }
                    Some(Ok(Message::Close(close))) => {
                        let code = close.map_or(1005, |f| u16::from(f.code));
                        return End::Dropped(format!("closed {code}"));
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return End::Dropped(format!("error: {e}")),
                    None => return End::Dropped("eof".into()),
                },
            }
            if request.is_some() {
                next_id += 1;
                let position = tracker.position.as_ref().map(|(o, e)| (*o, e.as_str()));
                let text = frame::subscribe(next_id, &self.group, position);
                if ws.send(Message::text(text)).await.is_err() {
                    return End::Dropped("send subscribe".into());
                }
                answer_by = Some(Instant::now() + ANSWER_TIMEOUT);
            }
        }
    }

    /// When this connection closes by itself, if the run churns.
    fn lifetime(&self, rng: &mut Rng) -> Option<Instant> {
        let mean = self.mean_lifetime?;
        Some(Instant::now() + Duration::from_secs_f64(rng.exponential(mean)))
    }
}

/// `delay` scaled by a random factor in [0.5, 1.5), so clients do not retry in lockstep.
fn jitter(rng: &mut Rng, delay: Duration) -> Duration {
    delay.mul_f64(0.5 + rng.unit())
}
