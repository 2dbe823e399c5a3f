//! The load run: connect N clients, drive echoes or broadcasts, drain, count, report.
//!
//! Every phase is bounded: connects by `connect_timeout`, sending by `warmup + duration`, the
//! drain by `drain`, and the final close by a second per client.

mod client;
mod driver;
mod stats;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::timeout_at;

use crate::LoadError;
use crate::report::{LatencyMs, Report, per_sec};
use crate::rss::total_rss_bytes;
use crate::target::check_target;
use client::{ClientTask, Command};
use driver::Driver;
use stats::{ClientStats, Shared};

/// Commands queued per client; the driver skips a client whose queue is full.
const COMMAND_QUEUE: usize = 64;
/// How often the connect and drain phases look at the counters.
const POLL: Duration = Duration::from_millis(10);

/// Which half of the shootout protocol a run exercises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Each frame comes back to its sender only.
    Echo,
    /// Each frame goes to every connected client; the sender also gets `broadcastResult`.
    Broadcast,
}

impl Mode {
    /// The mode's name as it appears in the report.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Echo => "echo",
            Self::Broadcast => "broadcast",
        }
    }
}

/// How fast the driver sends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// A fixed number of frames per second over all clients.
    Rate(f64),
    /// As fast as possible with at most this many frames in flight (not yet fully delivered).
    Max(u64),
}

/// Everything a load run needs; the `loadgen` binary builds it from its flags.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Server URLs; client `i` connects to `urls[i % urls.len()]`.
    pub urls: Vec<String>,
    /// Clients to connect.
    pub clients: usize,
    /// Handshakes in progress at once.
    pub connect_concurrency: usize,
    /// Time allowed for one handshake.
    pub connect_timeout: Duration,
    /// Echo or broadcast.
    pub mode: Mode,
    /// Rate or in-flight bound.
    pub pace: Pace,
    /// Unmeasured traffic before the measured window.
    pub warmup: Duration,
    /// Measured send window.
    pub duration: Duration,
    /// Longest wait for in-flight deliveries after the send window.
    pub drain: Duration,
    /// Minimum payload size in bytes.
    pub payload_bytes: usize,
    /// Server processes whose RSS growth per connection is reported.
    pub pids: Vec<u32>,
    /// Allow non-loopback targets.
    pub allow_remote: bool,
    /// The command line, copied into the report.
    pub command: String,
}

/// Runs one load run and returns its report.
///
/// # Errors
///
/// Invalid URLs or options, unreadable `/proc/<pid>/status`, or no client connecting at all.
/// Lost or duplicated deliveries are not errors: they are in the report.
pub async fn run(config: LoadConfig) -> Result<Report, LoadError> {
    validate(&config)?;
    let rss_before = read_rss(&config.pids)?;
    let shared = Arc::new(Shared::new(config.mode, config.payload_bytes));
    let permits = Arc::new(Semaphore::new(config.connect_concurrency));
    let (stop_tx, stop_rx) = watch::channel(false);
    let connect_start = Instant::now();
    let mut senders = Vec::with_capacity(config.clients);
    let mut handles = Vec::with_capacity(config.clients);
    for index in 0..config.clients {
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let task = ClientTask {
            index,
            url: config.urls[index % config.urls.len()].clone(),
            shared: Arc::clone(&shared),
            commands: rx,
            stop: stop_rx.clone(),
            connect_permits: Arc::clone(&permits),
            connect_timeout: config.connect_timeout,
        };
        senders.push(tx);
        handles.push(tokio::spawn(task.run()));
    }
    // Every attempt ends within connect_timeout of getting its permit, so this loop ends.
    while shared.connect_finished.load(Ordering::Acquire) < config.clients as u64 {
        tokio::time::sleep(POLL).await;
    }
    let connect_s = connect_start.elapsed().as_secs_f64();
    let connected = shared.connected.load(Ordering::Acquire);
    let connect_failures = config.clients as u64 - connected;
    tracing::info!(connected, connect_failures, connect_s, "connect phase done");
    if connected == 0 {
        return Err(LoadError::NoClients {
            failures: connect_failures,
        });
    }
    let rss_after = read_rss(&config.pids)?;
    shared.clients.store(connected, Ordering::Release);
    let live: Vec<mpsc::Sender<Command>> =
        senders.into_iter().filter(|tx| !tx.is_closed()).collect();

    let mut driver = Driver::new(Arc::clone(&shared), live, config.pace);
    if !config.warmup.is_zero() {
        tracing::info!(secs = config.warmup.as_secs_f64(), "warm-up");
        driver.drive(true, Instant::now() + config.warmup).await;
    }
    tracing::info!(secs = config.duration.as_secs_f64(), "measuring");
    let measure_start = Instant::now();
    let measure_start_us = shared.now_us();
    driver.drive(false, measure_start + config.duration).await;
    let send_window = measure_start.elapsed().as_secs_f64();
    let drain_deadline = Instant::now() + config.drain;
    while shared.arrivals.load(Ordering::Acquire) < driver.expected_arrivals()
        && Instant::now() < drain_deadline
    {
        tokio::time::sleep(POLL).await;
    }
    drop(driver);
    // Every client selects on `stop` first, then closes within CLOSE_TIMEOUT.
    stop_tx.send_replace(true);

    let mut total = ClientStats::default();
    let mut disconnects = 0u64;
    let join_deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    for mut handle in handles {
        match timeout_at(join_deadline, &mut handle).await {
            Ok(Ok(s)) => {
                total.sent += s.sent;
                total.received += s.received;
                total.duplicated += s.duplicated;
                total.results += s.results;
                total.unexpected += s.unexpected;
                total.last_delivery_us = total.last_delivery_us.max(s.last_delivery_us);
                disconnects += u64::from(s.connected && s.disconnected);
            }
            Ok(Err(_)) | Err(_) => {
                handle.abort();
                disconnects += 1;
            }
        }
    }

    let expected = match config.mode {
        Mode::Broadcast => total.sent * connected,
        Mode::Echo => total.sent,
    };
    let delivery_window = (total.last_delivery_us.saturating_sub(measure_start_us)) as f64 / 1e6;
    let rss_per_connection_bytes = match (rss_before, rss_after) {
        (Some(before), Some(after)) => {
            Some((after as i64 - before as i64) / i64::try_from(connected).unwrap_or(i64::MAX))
        }
        _ => None,
    };
    Ok(Report {
        mode: config.mode.as_str(),
        clients: connected,
        requested_clients: config.clients as u64,
        connect_failures,
        disconnects,
        sent: total.sent,
        expected,
        received: total.received,
        lost: expected.saturating_sub(total.received),
        duplicated: total.duplicated,
        broadcast_results: total.results,
        unexpected: total.unexpected,
        latency_ms: LatencyMs::from_micros(&shared.merged_latency()),
        deliveries_per_sec: per_sec(total.received, send_window.max(delivery_window)),
        broadcasts_per_sec: per_sec(total.sent, send_window),
        rss_per_connection_bytes,
        rss_before_bytes: rss_before,
        rss_after_bytes: rss_after,
        duration_s: (send_window * 1000.0).round() / 1000.0,
        connect_s: (connect_s * 1000.0).round() / 1000.0,
        command: config.command,
    })
}

fn validate(config: &LoadConfig) -> Result<(), LoadError> {
    let invalid = |reason: &str| {
        Err(LoadError::InvalidOption {
            reason: reason.to_owned(),
        })
    };
    if config.urls.is_empty() {
        return invalid("give at least one --url");
    }
    for url in &config.urls {
        check_target(url, config.allow_remote)?;
    }
    if config.clients == 0 {
        return invalid("--clients must be at least 1");
    }
    if config.connect_concurrency == 0 {
        return invalid("--connect-concurrency must be at least 1");
    }
    match config.pace {
        Pace::Rate(r) if !(r > 0.0 && r.is_finite()) => invalid("--rate must be positive"),
        Pace::Max(0) => invalid("--max must be at least 1"),
        _ if config.duration.is_zero() => invalid("--duration must be positive"),
        _ => Ok(()),
    }
}

fn read_rss(pids: &[u32]) -> Result<Option<u64>, LoadError> {
    if pids.is_empty() {
        return Ok(None);
    }
    Ok(Some(total_rss_bytes(pids)?))
}
