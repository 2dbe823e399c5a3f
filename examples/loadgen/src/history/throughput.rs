//! `throughput`: the cost of history on a broadcast. C subscribers of one group, one publisher
//! keeping W publishes in flight; deliveries/s, latency, loss and duplicates per client, offset
//! gaps (with history), and server (and Redis) CPU-seconds per million deliveries.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

use super::gateway::{Socket, open, scan_push, subscribe};
use super::publisher::publish_range;
use crate::cpu::{per_million, total_cpu_seconds};
use crate::report::{LatencyMs, per_sec};

/// What a throughput run does.
#[derive(Debug, Clone)]
pub struct ThroughputConfig {
    /// Server URLs; subscribers are spread round-robin, the publisher uses the first.
    pub urls: Vec<String>,
    /// Subscribers.
    pub clients: usize,
    /// Measured messages.
    pub messages: u64,
    /// Warm-up messages before them (delivered and checked, not timed).
    pub warmup: u64,
    /// Publishes without their `published` answer at most.
    pub in_flight: u64,
    /// Size of each message's `data` in bytes.
    pub data_bytes: usize,
    /// The group.
    pub group: String,
    /// Handshakes in progress at once.
    pub connect_concurrency: usize,
    /// Server processes whose CPU is measured.
    pub pids: Vec<u32>,
    /// The redis-server process, measured apart.
    pub redis_pid: Option<u32>,
    /// How long to wait for the last deliveries after the last `published`.
    pub drain: Duration,
}

/// The result of a throughput run, printed as one JSON line.
#[derive(Debug, Clone, Serialize)]
pub struct ThroughputReport {
    /// Subscribers that connected and subscribed.
    pub clients: u64,
    /// Subscribers that failed to connect or subscribe.
    pub connect_failures: u64,
    /// Measured messages published.
    pub messages: u64,
    /// `clients × messages`.
    pub expected: u64,
    /// Distinct measured deliveries.
    pub received: u64,
    /// Deliveries missing, warm-up included (must be 0).
    pub lost: u64,
    /// Extra copies, warm-up included (must be 0).
    pub duplicated: u64,
    /// Pushes whose offset was not the previous one plus one (must be 0 with history).
    pub offset_gaps: u64,
    /// Pushes that carried an offset (0 without history).
    pub with_offset: u64,
    /// `lost` notices: the server says a subscriber may have missed messages (with history,
    /// `overflow` when its mailbox was full; the server then stops its pushes of the group,
    /// and this client does not recover, so the rest count as lost). Must be 0.
    pub lost_notices: u64,
    /// The first `lost` notice, for the record.
    pub first_lost_notice: Option<String>,
    /// Frames that were not bench pushes or `lost` notices.
    pub unexpected: u64,
    /// Subscribers whose socket ended before the run did (e.g. closed with 1013 when their
    /// outbound queue was full). Must be 0.
    pub disconnects: u64,
    /// Publish-to-delivery latency of the measured messages.
    pub latency_ms: LatencyMs,
    /// `received` over the time from the first measured publish to the last delivery.
    pub deliveries_per_sec: f64,
    /// Measured publishes per second over the same window.
    pub publishes_per_sec: f64,
    /// That window in seconds.
    pub duration_s: f64,
    /// CPU seconds of the server processes over the window.
    pub server_cpu_s: Option<f64>,
    /// `server_cpu_s` per million deliveries.
    pub server_cpu_s_per_m_deliveries: Option<f64>,
    /// CPU seconds of redis-server over the window.
    pub redis_cpu_s: Option<f64>,
    /// `redis_cpu_s` per million deliveries.
    pub redis_cpu_s_per_m_deliveries: Option<f64>,
}

/// One subscriber's progress, written by its task only, summed by the driver.
#[derive(Debug, Default)]
struct Progress {
    warm: AtomicU64,
    measured: AtomicU64,
    last_us: AtomicU64,
}

/// One subscriber's counts, handed back when its task ends.
#[derive(Debug)]
struct Tally {
    seen: Vec<bool>,
    duplicated: u64,
    offset_gaps: u64,
    with_offset: u64,
    lost_notices: u64,
    first_lost_notice: Option<String>,
    unexpected: u64,
    disconnected: bool,
    latency: Histogram<u64>,
}

/// Runs one throughput measurement.
///
/// # Errors
///
/// The publisher could not connect or publish, or no subscriber connected.
pub async fn run(config: ThroughputConfig) -> Result<ThroughputReport, String> {
    let base = Instant::now();
    let (warmup, total) = (config.warmup, config.warmup + config.messages);
    let (stop_tx, stop_rx) = watch::channel(false);
    let permits = Arc::new(Semaphore::new(config.connect_concurrency.max(1)));
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(config.clients.max(1));
    let mut tasks = JoinSet::new();
    let mut progress = Vec::with_capacity(config.clients);
    for index in 0..config.clients {
        let url = config.urls[index % config.urls.len()].clone();
        let (group, permits, ready, stop) = (
            config.group.clone(),
            permits.clone(),
            ready_tx.clone(),
            stop_rx.clone(),
        );
        let mine = Arc::new(Progress::default());
        progress.push(mine.clone());
        tasks.spawn(async move {
            let socket = {
                let _permit = permits.acquire().await;
                subscriber(&url, &group).await
            };
            let ok = socket.is_ok();
            let _ = ready.send(ok).await;
            match socket {
                Ok(ws) => Some(receive(ws, total, warmup, base, &mine, stop).await),
                Err(e) => {
                    tracing::debug!(client = index, error = %e, "subscriber failed");
                    None
                }
            }
        });
    }
    drop(ready_tx);
    let mut clients = 0u64;
    for _ in 0..config.clients {
        if let Some(true) = ready_rx.recv().await {
            clients += 1;
        }
    }
    if clients == 0 {
        return Err("no subscriber connected; is the server running?".to_owned());
    }
    let mut publisher = open(&config.urls[0]).await?;
    let wait_for = |field: fn(&Progress) -> u64, want: u64, deadline: Instant| {
        let progress = &progress;
        async move {
            loop {
                let got: u64 = progress.iter().map(|p| field(p)).sum();
                if got >= want || Instant::now() >= deadline {
                    return got;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    };

    publish_range(
        &mut publisher,
        &config.group,
        0..config.warmup,
        config.in_flight,
        config.data_bytes,
        base,
    )
    .await?;
    let warm_want = clients * config.warmup;
    let warm_deadline = Instant::now() + config.drain;
    wait_for(|p| p.warm.load(Ordering::Acquire), warm_want, warm_deadline).await;

    let cpu_before = total_cpu_seconds(&config.pids).ok();
    let redis_before = config.redis_pid.and_then(|p| total_cpu_seconds(&[p]).ok());
    let start_us = base.elapsed().as_micros() as u64;
    publish_range(
        &mut publisher,
        &config.group,
        config.warmup..total,
        config.in_flight,
        config.data_bytes,
        base,
    )
    .await?;
    let expected = clients * config.messages;
    let drain_deadline = Instant::now() + config.drain;
    wait_for(
        |p| p.measured.load(Ordering::Acquire),
        expected,
        drain_deadline,
    )
    .await;
    let cpu_after = total_cpu_seconds(&config.pids).ok();
    let redis_after = config.redis_pid.and_then(|p| total_cpu_seconds(&[p]).ok());
    let _ = stop_tx.send(true);

    let last_us = progress
        .iter()
        .map(|p| p.last_us.load(Ordering::Acquire))
        .max()
        .unwrap_or(start_us);
    let mut latency = Histogram::new_with_bounds(1, 60_000_000, 3).expect("constant bounds");
    let (mut received, mut seen_all, mut duplicated, mut gaps, mut with_offset, mut unexpected) =
        (0, 0, 0, 0, 0, 0);
    let (mut lost_notices, mut first_lost_notice, mut disconnects) = (0, None, 0);
    while let Some(joined) = tasks.join_next().await {
        let Ok(Some(tally)) = joined else { continue };
        let measured = tally.seen[config.warmup as usize..]
            .iter()
            .filter(|s| **s)
            .count() as u64;
        received += measured;
        seen_all += tally.seen.iter().filter(|s| **s).count() as u64;
        duplicated += tally.duplicated;
        gaps += tally.offset_gaps;
        with_offset += tally.with_offset;
        unexpected += tally.unexpected;
        lost_notices += tally.lost_notices;
        disconnects += u64::from(tally.disconnected);
        first_lost_notice = first_lost_notice.or(tally.first_lost_notice);
        latency.add(&tally.latency).expect("same bounds");
    }
    let secs = last_us.saturating_sub(start_us) as f64 / 1e6;
    let diff = |a: Option<f64>, b: Option<f64>| Some(b? - a?);
    let server_cpu_s = diff(cpu_before, cpu_after);
    let redis_cpu_s = diff(redis_before, redis_after);
    Ok(ThroughputReport {
        clients,
        connect_failures: config.clients as u64 - clients,
        messages: config.messages,
        expected,
        received,
        lost: clients * total - seen_all,
        duplicated,
        offset_gaps: gaps,
        with_offset,
        lost_notices,
        first_lost_notice,
        unexpected,
        disconnects,
        latency_ms: LatencyMs::from_micros(&latency),
        deliveries_per_sec: per_sec(received, secs),
        publishes_per_sec: per_sec(config.messages, secs),
        duration_s: secs,
        server_cpu_s,
        server_cpu_s_per_m_deliveries: server_cpu_s.and_then(|c| per_million(c, received)),
        redis_cpu_s,
        redis_cpu_s_per_m_deliveries: redis_cpu_s.and_then(|c| per_million(c, received)),
    })
}

/// Connects and subscribes one subscriber.
async fn subscriber(url: &str, group: &str) -> Result<Socket, String> {
    let mut ws = open(url).await?;
    subscribe(&mut ws, 1, group, None).await?;
    Ok(ws)
}

/// Reads pushes until told to stop or the socket ends, checking each one.
async fn receive(
    mut ws: Socket,
    total: u64,
    warmup: u64,
    base: Instant,
    progress: &Progress,
    mut stop: watch::Receiver<bool>,
) -> Tally {
    let mut tally = Tally {
        seen: vec![false; total as usize],
        duplicated: 0,
        offset_gaps: 0,
        with_offset: 0,
        lost_notices: 0,
        first_lost_notice: None,
        unexpected: 0,
        disconnected: false,
        latency: Histogram::new_with_bounds(1, 60_000_000, 3).expect("constant bounds"),
    };
    let (mut warm, mut measured, mut last_offset) = (0u64, 0u64, None::<u64>);
    loop {
        let frame = tokio::select! {
            _ = stop.changed() => break,
            frame = ws.next() => frame,
        };
        let text = match frame {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                tally.disconnected = true;
                break;
            }
            Some(Ok(_)) => continue,
        };
        let Some(push) = scan_push(text.as_str()) else {
            if text.as_str().starts_with("{\"type\":\"lost\"") {
                tally.lost_notices += 1;
                tally
                    .first_lost_notice
                    .get_or_insert_with(|| text.as_str().to_owned());
            } else {
                tally.unexpected += 1;
            }
            continue;
        };
        if let Some(offset) = push.offset {
            tally.with_offset += 1;
            if last_offset.is_some_and(|last| offset != last + 1) {
                tally.offset_gaps += 1;
            }
            last_offset = Some(offset);
        }
        let Some(seen) = tally.seen.get_mut(push.seq as usize) else {
            tally.unexpected += 1;
            continue;
        };
        if std::mem::replace(seen, true) {
            tally.duplicated += 1;
            continue;
        }
        if push.seq < warmup {
            warm += 1;
            progress.warm.store(warm, Ordering::Release);
        } else {
            let now_us = base.elapsed().as_micros() as u64;
            measured += 1;
            tally
                .latency
                .saturating_record(now_us.saturating_sub(push.sent_us).max(1));
            progress.last_us.store(now_us, Ordering::Release);
            progress.measured.store(measured, Ordering::Release);
        }
    }
    tally
}
