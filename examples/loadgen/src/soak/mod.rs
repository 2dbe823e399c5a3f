//! The soak run: many clients on one group with history, churning and recovering, one steady
//! publisher, server processes sampled every few seconds, while someone restarts Redis; at the
//! end, exactly what was lost, when, and whether anyone was told.
//!
//! Phases: [`Phase::Run`] (publish, churn) for `duration`; [`Phase::Settle`] (no more
//! publishes or churn; disconnected clients come back and recover) for `drain`;
//! [`Phase::Stop`]. Every client checks each push against its position (a non-consecutive
//! offset with no `lost` or `recovered: false` in between is a silent gap), and
//! [`summary`] compares what each client got with what the publisher saw acknowledged.

mod client;
mod frame;
mod ledger;
mod publisher;
mod sample;
mod summary;
mod track;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Semaphore, watch};
use tokio::time::{Instant, MissedTickBehavior, interval_at, sleep, timeout};

use crate::LoadError;
use crate::target::check_targets;
use client::Client;
use ledger::{Ledger, Outcome};
use publisher::Publisher;
use sample::ProcessSeries;
pub use sample::count_fds;
use track::{Shared, lock};

/// Where the run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Publishing and churning.
    Run,
    /// No publishes, no churn: clients reconnect and catch up.
    Settle,
    /// Clients close.
    Stop,
}

/// Everything a soak run needs; the `soak` binary builds it from its flags.
#[derive(Debug, Clone)]
pub struct SoakConfig {
    /// Server URLs; client `i` connects to `urls[i % urls.len()]`, the publisher to the first.
    pub urls: Vec<String>,
    /// Local addresses to connect from, round-robin over clients (empty: the kernel picks).
    pub source_ips: Vec<IpAddr>,
    /// Subscribing clients.
    pub clients: usize,
    /// The group everyone subscribes to.
    pub group: String,
    /// Publishes per second.
    pub rate: f64,
    /// Client reconnects per second over all clients (0: no churn); each connection lives an
    /// exponentially distributed time with mean `clients / churn`.
    pub churn: f64,
    /// Length of the publishing phase.
    pub duration: Duration,
    /// Catch-up time after the last publish.
    pub drain: Duration,
    /// Handshakes in progress at once.
    pub connect_concurrency: usize,
    /// Server processes to sample.
    pub pids: Vec<u32>,
    /// Time between samples.
    pub sample_every: Duration,
    /// Samples from this time on are past the warm-up (the summary's `warm` RSS and fds).
    pub warmup: Duration,
    /// Outage windows given up front (seconds since the start).
    pub outage_windows: Vec<(f64, f64)>,
    /// A file of `START END` lines (seconds since the start) read at the end, for windows
    /// that a script records while the run goes on.
    pub outage_file: Option<PathBuf>,
    /// Seconds after a window's end (and before its start) still counted inside it.
    pub outage_grace: f64,
}

/// Runs a soak, printing a JSON sample line every `sample_every`; returns the summary and
/// whether the run was clean (no silent gap, duplicate, loss outside the outage windows, or
/// dead server, and everyone at the head at the end).
///
/// # Errors
///
/// Invalid URLs or options.
pub async fn run(config: SoakConfig) -> Result<(serde_json::Value, bool), LoadError> {
    validate(&config)?;
    let shared = Arc::new(Shared::new());
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let (phase_tx, phase_rx) = watch::channel(Phase::Run);
    let group: Arc<str> = config.group.as_str().into();
    let permits = Arc::new(Semaphore::new(config.connect_concurrency));
    let mean_lifetime = (config.churn > 0.0).then(|| config.clients as f64 / config.churn);
    let clients: Vec<_> = (0..config.clients)
        .map(|index| {
            let client = Client {
                index,
                url: config.urls[index % config.urls.len()].clone(),
                source_ip: (!config.source_ips.is_empty())
                    .then(|| config.source_ips[index % config.source_ips.len()]),
                group: Arc::clone(&group),
                mean_lifetime,
                shared: Arc::clone(&shared),
                connect_permits: Arc::clone(&permits),
                phase: phase_rx.clone(),
            };
            tokio::spawn(client.run())
        })
        .collect();
    let publisher = tokio::spawn(
        Publisher {
            urls: config.urls.clone(),
            group: Arc::clone(&group),
            rate: config.rate,
            shared: Arc::clone(&shared),
            ledger: Arc::clone(&ledger),
            phase: phase_rx.clone(),
        }
        .run(),
    );

    let mut series: Vec<ProcessSeries> =
        config.pids.iter().map(|p| ProcessSeries::new(*p)).collect();
    let end = Instant::now() + config.duration;
    let mut ticks = interval_at(Instant::now(), config.sample_every);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => print_sample(&shared, &ledger, &mut series, config.warmup),
            () = tokio::time::sleep_until(end) => break,
        }
    }
    let _sent = phase_tx.send(Phase::Settle);
    // The publisher drains its last answers for at most 5 s.
    let _done = timeout(Duration::from_secs(15), publisher).await;
    sleep(config.drain).await;
    print_sample(&shared, &ledger, &mut series, config.warmup);
    let _sent = phase_tx.send(Phase::Stop);
    let mut trackers = Vec::with_capacity(clients.len());
    for handle in clients {
        if let Ok(Ok(tracker)) = timeout(Duration::from_secs(10), handle).await {
            trackers.push(tracker);
        }
    }
    for s in &mut series {
        s.sample(shared.now_s(), true);
    }
    let declared = declared_windows(&config)?;
    let ledger = std::mem::take(&mut *lock(&ledger));
    Ok(summary::summarize(summary::Input {
        config: &config,
        shared: &shared,
        ledger: &ledger,
        trackers: &trackers,
        series: &series,
        declared,
    }))
}

fn validate(config: &SoakConfig) -> Result<(), LoadError> {
    let invalid = |reason: &str| {
        Err(LoadError::InvalidOption {
            reason: reason.to_owned(),
        })
    };
    check_targets(&config.urls, false)?;
    if config.clients == 0 || config.connect_concurrency == 0 {
        return invalid("--clients and --connect-concurrency must be at least 1");
    }
    if !(config.rate > 0.0 && config.rate.is_finite()) {
        return invalid("--rate must be positive");
    }
    if !(config.churn >= 0.0 && config.churn.is_finite()) {
        return invalid("--churn must be 0 or more");
    }
    if config.duration.is_zero() || config.sample_every.is_zero() {
        return invalid("--duration and --sample-seconds must be positive");
    }
    Ok(())
}

/// `--outage-window`s plus the lines of `--outage-file` (missing file: none yet).
fn declared_windows(config: &SoakConfig) -> Result<Vec<ledger::Window>, LoadError> {
    let mut windows: Vec<_> = config
        .outage_windows
        .iter()
        .map(|(start, end)| ledger::Window {
            start: *start,
            end: *end,
        })
        .collect();
    if let Some(path) = &config.outage_file {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e.into()),
        };
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let window =
                ledger::Window::parse(&line.split_whitespace().collect::<Vec<_>>().join(","))
                    .ok_or_else(|| LoadError::InvalidOption {
                        reason: format!("{}: `{line}` is not `START END`", path.display()),
                    })?;
            windows.push(window);
        }
    }
    Ok(windows)
}

/// Prints one sample line: each server's RSS and fds, and the run's counters so far.
fn print_sample(
    shared: &Shared,
    ledger: &Mutex<Ledger>,
    series: &mut [ProcessSeries],
    warmup: Duration,
) {
    let t = shared.now_s();
    let warm = t >= warmup.as_secs_f64();
    let processes: Vec<_> = series
        .iter_mut()
        .map(|s| match s.sample(t, warm) {
            Some((rss, fds)) => serde_json::json!({"pid": s.pid, "rss_bytes": rss, "fds": fds}),
            None => serde_json::json!({"pid": s.pid, "gone": true}),
        })
        .collect();
    let (published, acked, refused) = {
        let ledger = lock(ledger);
        let acked = ledger
            .entries
            .iter()
            .filter(|e| matches!(e.outcome, Outcome::Acked(_)))
            .count();
        let refused = ledger
            .entries
            .iter()
            .filter(|e| matches!(e.outcome, Outcome::Refused(_)))
            .count();
        (ledger.entries.len(), acked, refused)
    };
    let c = &shared.counters;
    let get = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    let line = serde_json::json!({
        "kind": "sample",
        "t": (t * 10.0).round() / 10.0,
        "processes": processes,
        "subscribed": c.subscribed.load(std::sync::atomic::Ordering::Relaxed),
        "published": published,
        "acked": acked,
        "refused": refused,
        "deliveries": get(&c.deliveries),
        "reconnects": get(&c.reconnects),
        "recoveries": get(&c.recoveries),
        "dropped": get(&c.dropped),
        "lost_notices": lock(&shared.events).iter().filter(|e| e.kind == "lost").count(),
        "silent_gaps": get(&c.silent_gaps) + get(&c.unannounced_epoch_changes),
        "duplicates": get(&c.duplicates),
    });
    println!("{line}");
}
