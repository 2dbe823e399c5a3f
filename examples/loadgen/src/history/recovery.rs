//! `recovery`: C clients subscribed to a group with history record their last offset and close;
//! P messages are published while they are away; then all of them reconnect at once (to the
//! next server process when there are several) and subscribe with `recover`. Measures the time
//! from the start of the reconnect to each client's `subscribed`, and checks that every answer
//! is `recovered: true` with exactly the P missed messages, in order.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::timeout;

use super::gateway::{ANSWER_TIMEOUT, Socket, next_json, open, subscribe};
use super::publisher::publish_range;
use crate::cpu::total_cpu_seconds;
use crate::report::LatencyMs;

/// What a recovery run does.
#[derive(Debug, Clone)]
pub struct RecoveryConfig {
    /// Server URLs; client `i` first connects to `urls[i % n]`, and reconnects to
    /// `urls[(i + 1) % n]`. The publisher uses the first, a watcher the last.
    pub urls: Vec<String>,
    /// Clients.
    pub clients: usize,
    /// Messages published before the clients leave; the last one is their recorded position.
    pub before: u64,
    /// Messages published while they are away (P).
    pub publications: u64,
    /// Size of each message's `data` in bytes.
    pub data_bytes: usize,
    /// Publishes without their answer at most.
    pub in_flight: u64,
    /// The group (the server needs `--history-size` at least `publications`).
    pub group: String,
    /// Handshakes in progress at once for the first connect (the reconnect has no limit).
    pub connect_concurrency: usize,
    /// Server processes whose CPU is measured.
    pub pids: Vec<u32>,
    /// The redis-server process, measured apart.
    pub redis_pid: Option<u32>,
}

/// The result of a recovery run, printed as one JSON line.
#[derive(Debug, Clone, Serialize)]
pub struct RecoveryReport {
    /// Clients that subscribed and recorded a position.
    pub clients: u64,
    /// Server processes.
    pub servers: usize,
    /// Messages published while the clients were away.
    pub publications: u64,
    /// Answers `recovered: true` with exactly the missed messages, in order.
    pub recovered: u64,
    /// Answers `recovered: false` (must be 0).
    pub not_recovered: u64,
    /// Answers `recovered: true` whose publications were not exactly the missed ones (must be 0).
    pub wrong_publications: u64,
    /// Reconnects that failed (connect, handshake or subscribe error; must be 0).
    pub failed: u64,
    /// The first problem seen, for the record.
    pub first_problem: Option<String>,
    /// Time from the start of the reconnect to each client's `subscribed`.
    pub latency_ms: LatencyMs,
    /// Time until the last client had its `subscribed`.
    pub total_s: f64,
    /// CPU seconds of the server processes over the reconnect.
    pub server_cpu_s: Option<f64>,
    /// CPU seconds of redis-server over the reconnect.
    pub redis_cpu_s: Option<f64>,
}

/// How one reconnect ended.
#[derive(Debug)]
enum Outcome {
    Recovered(u64),
    NotRecovered(String),
    Wrong(String),
    Failed(String),
}

/// Runs one recovery measurement.
///
/// # Errors
///
/// Setting up (clients, publisher, watcher) failed.
pub async fn run(config: RecoveryConfig) -> Result<RecoveryReport, String> {
    let base = Instant::now();
    let n = config.urls.len();
    let mut watcher = open(&config.urls[n - 1]).await?;
    subscribe(&mut watcher, 1, &config.group, None).await?;

    // Everyone subscribes, hears the `before` messages and leaves with its last position.
    let permits = Arc::new(Semaphore::new(config.connect_concurrency.max(1)));
    let (heard_tx, heard_rx) = watch::channel(false);
    let mut first = JoinSet::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(config.clients.max(1));
    for index in 0..config.clients {
        let (url, group, permits) = (
            config.urls[index % n].clone(),
            config.group.clone(),
            permits.clone(),
        );
        let (ready, mut published, before) = (ready_tx.clone(), heard_rx.clone(), config.before);
        first.spawn(async move {
            let ws = {
                let _permit = permits.acquire().await;
                let ws = open(&url).await;
                match ws {
                    Ok(mut ws) => subscribe(&mut ws, 1, &group, None).await.map(|_| ws),
                    Err(e) => Err(e),
                }
            };
            let _ = ready.send(()).await;
            drop(ready);
            let mut ws = ws?;
            let _ = published.wait_for(|p| *p).await;
            let position = last_position(&mut ws, before).await?;
            let _ = ws.close(None).await;
            while let Ok(Some(Ok(_))) = timeout(Duration::from_secs(2), ws.next()).await {}
            Ok::<_, String>((index, position))
        });
    }
    drop(ready_tx);
    while ready_rx.recv().await.is_some() {}
    let mut publisher = open(&config.urls[0]).await?;
    let group = &config.group;
    publish_range(
        &mut publisher,
        group,
        0..config.before,
        1,
        config.data_bytes,
        base,
    )
    .await?;
    let _ = heard_tx.send(true);
    last_position(&mut watcher, config.before).await?;
    let mut positions = Vec::with_capacity(config.clients);
    while let Some(joined) = first.join_next().await {
        match joined {
            Ok(Ok(position)) => positions.push(position),
            Ok(Err(e)) => tracing::warn!(error = %e, "client did not get its position"),
            Err(e) => tracing::warn!(error = %e, "client task failed"),
        }
    }
    if positions.is_empty() {
        return Err("no client got a position; is the server running?".to_owned());
    }

    // Away: P messages, in the log before anyone comes back (the watcher has them all).
    let missed = config.before..config.before + config.publications;
    publish_range(
        &mut publisher,
        group,
        missed.clone(),
        config.in_flight,
        config.data_bytes,
        base,
    )
    .await?;
    last_position(&mut watcher, config.publications).await?;

    // Back, all at once.
    let (go_tx, go_rx) = watch::channel(None::<Instant>);
    let mut back = JoinSet::new();
    for (index, (offset, epoch)) in positions.iter().cloned() {
        let (url, group, missed, mut go) = (
            config.urls[(index + 1) % n].clone(),
            config.group.clone(),
            missed.clone(),
            go_rx.clone(),
        );
        back.spawn(async move {
            let Ok(start) = go
                .wait_for(Option::is_some)
                .await
                .map(|s| s.expect("is some"))
            else {
                return Outcome::Failed("never started".to_owned());
            };
            let answer = match open(&url).await {
                Ok(mut ws) => subscribe(&mut ws, 3, &group, Some((offset, &epoch))).await,
                Err(e) => Err(e),
            };
            let elapsed_us = start.elapsed().as_micros() as u64;
            match answer {
                Ok(answer) => check(&answer, offset, missed, elapsed_us),
                Err(e) => Outcome::Failed(e),
            }
        });
    }
    let cpu_before = total_cpu_seconds(&config.pids).ok();
    let redis_before = config.redis_pid.and_then(|p| total_cpu_seconds(&[p]).ok());
    let start = Instant::now();
    let _ = go_tx.send(Some(start));
    let mut latency = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("bounds");
    let (mut recovered, mut not_recovered, mut wrong, mut failed) = (0, 0, 0, 0);
    let mut first_problem = None;
    while let Some(joined) = back.join_next().await {
        let outcome = joined.unwrap_or_else(|e| Outcome::Failed(format!("task: {e}")));
        let problem = match outcome {
            Outcome::Recovered(us) => {
                recovered += 1;
                latency.saturating_record(us.max(1));
                continue;
            }
            Outcome::NotRecovered(why) => (&mut not_recovered, why),
            Outcome::Wrong(why) => (&mut wrong, why),
            Outcome::Failed(why) => (&mut failed, why),
        };
        *problem.0 += 1;
        first_problem.get_or_insert(problem.1);
    }
    let total_s = start.elapsed().as_secs_f64();
    let cpu_after = total_cpu_seconds(&config.pids).ok();
    let redis_after = config.redis_pid.and_then(|p| total_cpu_seconds(&[p]).ok());
    let diff = |a: Option<f64>, b: Option<f64>| Some(((b? - a?) * 100.0).round() / 100.0);
    Ok(RecoveryReport {
        clients: positions.len() as u64,
        servers: n,
        publications: config.publications,
        recovered,
        not_recovered,
        wrong_publications: wrong,
        failed,
        first_problem,
        latency_ms: LatencyMs::from_micros(&latency),
        total_s: (total_s * 1000.0).round() / 1000.0,
        server_cpu_s: diff(cpu_before, cpu_after),
        redis_cpu_s: diff(redis_before, redis_after),
    })
}

/// Reads `count` pushes and returns the position of the last one: `(offset, epoch)`.
async fn last_position(ws: &mut Socket, count: u64) -> Result<(u64, String), String> {
    let mut position = None;
    for _ in 0..count {
        let push = loop {
            let frame = next_json(ws, ANSWER_TIMEOUT).await?;
            if frame["type"] == "message" {
                break frame;
            }
        };
        let offset = push["offset"]
            .as_u64()
            .ok_or(format!("no offset: {push}"))?;
        let epoch = push["epoch"].as_str().ok_or(format!("no epoch: {push}"))?;
        position = Some((offset, epoch.to_owned()));
    }
    position.ok_or_else(|| "no push to take a position from".to_owned())
}

/// Checks a `subscribed` answer to a `recover` from `offset`: recovered, with the messages of
/// `missed` (by `seq`) at offsets `offset + 1, offset + 2, …`.
fn check(answer: &Value, offset: u64, missed: std::ops::Range<u64>, elapsed_us: u64) -> Outcome {
    if answer["recovered"] != true {
        return Outcome::NotRecovered(format!("not recovered: {answer}"));
    }
    let Some(publications) = answer["publications"].as_array() else {
        return Outcome::Wrong(format!("no publications: {answer}"));
    };
    let got: Vec<(Option<u64>, Option<u64>)> = publications
        .iter()
        .map(|p| (p["offset"].as_u64(), p["data"]["seq"].as_u64()))
        .collect();
    let want: Vec<(Option<u64>, Option<u64>)> = missed
        .enumerate()
        .map(|(k, seq)| (Some(offset + 1 + k as u64), Some(seq)))
        .collect();
    if got != want {
        return Outcome::Wrong(format!(
            "from offset {offset}: got {} publications, first {:?}, want {} from {:?}",
            got.len(),
            got.first(),
            want.len(),
            want.first()
        ));
    }
    Outcome::Recovered(elapsed_us)
}
