//! The load run: connect N clients, drive echoes or broadcasts, drain, count, report.
//!
//! Every phase is bounded: connects by `connect_timeout`, sending by `warmup + duration`, the
//! drain by `drain`, and the final close by a second per client. Four shapes share the phases:
//! one measured run ([`single`]), a ladder of rising rates ([`ladder`]), an idle probe (connect,
//! read RSS, one broadcast, read RSS again: [`Pace::Once`]), and any of the first and the last
//! spread over several processes ([`multi`] in the parent, [`child`] in each child).

mod child;
pub(crate) mod client;
mod driver;
mod ladder;
mod multi;
mod session;
mod single;
mod socket;
mod stats;

use std::net::IpAddr;
use std::time::Duration;

use crate::LoadError;
use crate::cpu::{per_million, total_cpu_seconds};
use crate::report::{LadderReport, LatencyMs, Report, per_sec};
use crate::rss::total_rss_bytes;
use crate::target::check_targets;
pub use child::run as run_child;
pub(crate) use client::connect;
pub use stats::{Senders, Totals};

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
    /// One frame in all (from sender 0), for the idle probe.
    Once,
}

/// A ladder of rising broadcast rates: each step runs `step_time` at its rate and passes when
/// its p99 is below `p99_limit` and nothing was lost or duplicated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LadderSpec {
    /// First rate (broadcasts/s).
    pub start: f64,
    /// Increment between steps.
    pub step: f64,
    /// Highest rate tried.
    pub max: f64,
    /// Length of each step.
    pub step_time: Duration,
    /// A step passes with a p99 below this.
    pub p99_limit: Duration,
}

/// Everything a load run needs; the `loadgen` binary builds it from its flags.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Server URLs; client `i` connects to `urls[i % urls.len()]`.
    pub urls: Vec<String>,
    /// Clients to connect (in all processes).
    pub clients: usize,
    /// Index of this process's first client (for URL and source address spreading).
    pub first_client: usize,
    /// Handshakes in progress at once.
    pub connect_concurrency: usize,
    /// Time allowed for one handshake.
    pub connect_timeout: Duration,
    /// Echo or broadcast.
    pub mode: Mode,
    /// Rate, in-flight bound, or one broadcast.
    pub pace: Pace,
    /// Unmeasured traffic before the measured window.
    pub warmup: Duration,
    /// Measured send window.
    pub duration: Duration,
    /// Longest wait for in-flight deliveries after the send window.
    pub drain: Duration,
    /// Minimum payload size in bytes.
    pub payload_bytes: usize,
    /// Server processes whose RSS and CPU time are reported.
    pub pids: Vec<u32>,
    /// Local addresses to connect from, round-robin over clients (empty: the kernel picks).
    pub source_ips: Vec<IpAddr>,
    /// Load generator processes (`--procs`); above 1 this process spawns and merges children.
    pub procs: usize,
    /// Run a ladder of rates instead of one measured window.
    pub ladder: Option<LadderSpec>,
    /// Allow non-loopback targets.
    pub allow_remote: bool,
    /// The command line, copied into the report.
    pub command: String,
}

/// Runs one load run (in one process, or in `procs` child processes) and returns its report.
///
/// # Errors
///
/// Invalid URLs or options, unreadable `/proc/<pid>` files, a child process that fails, or no
/// client connecting at all. Lost or duplicated deliveries are not errors: they are in the
/// report.
pub async fn run(config: LoadConfig) -> Result<Report, LoadError> {
    validate(&config)?;
    if config.procs > 1 {
        return multi::run(config).await;
    }
    match config.ladder {
        Some(spec) => ladder::run(config, spec).await,
        None => single::run(config).await,
    }
}

fn validate(config: &LoadConfig) -> Result<(), LoadError> {
    let invalid = |reason: &str| {
        Err(LoadError::InvalidOption {
            reason: reason.to_owned(),
        })
    };
    check_targets(&config.urls, config.allow_remote)?;
    if config.clients == 0 {
        return invalid("--clients must be at least 1");
    }
    if config.connect_concurrency == 0 {
        return invalid("--connect-concurrency must be at least 1");
    }
    if config.procs == 0 || config.procs > config.clients {
        return invalid("--procs must be between 1 and --clients");
    }
    if config.procs > 1 && config.ladder.is_some() {
        return invalid("--ladder runs in one process; drop --procs");
    }
    if let Some(l) = config.ladder {
        let positive = |x: f64| x > 0.0 && x.is_finite();
        if !(positive(l.start) && positive(l.step) && positive(l.max) && l.start <= l.max) {
            return invalid("--ladder START,STEP,MAX needs 0 < START <= MAX and STEP > 0");
        }
        if l.step_time.is_zero() {
            return invalid("--step-seconds must be positive");
        }
        if config.mode != Mode::Broadcast {
            return invalid("--ladder needs --mode broadcast");
        }
    }
    match config.pace {
        Pace::Rate(r) if !(r > 0.0 && r.is_finite()) => invalid("--rate must be positive"),
        Pace::Max(0) => invalid("--max must be at least 1"),
        Pace::Once if config.mode != Mode::Broadcast => invalid("--idle needs --mode broadcast"),
        Pace::Once => Ok(()),
        _ if config.duration.is_zero() && config.ladder.is_none() => {
            invalid("--duration must be positive")
        }
        _ => Ok(()),
    }
}

/// Summed RSS of `pids`, `None` without pids.
fn read_rss(pids: &[u32]) -> Result<Option<u64>, LoadError> {
    if pids.is_empty() {
        return Ok(None);
    }
    Ok(Some(total_rss_bytes(pids)?))
}

/// Summed CPU seconds of `pids`, `None` without pids.
fn read_cpu(pids: &[u32]) -> Result<Option<f64>, LoadError> {
    if pids.is_empty() {
        return Ok(None);
    }
    Ok(Some(total_cpu_seconds(pids)?))
}

/// Everything measured in one run, in whatever shape; [`Measured::report`] makes the line.
#[derive(Debug, Default)]
struct Measured {
    procs: usize,
    connected: u64,
    connect_failures: u64,
    disconnects: u64,
    connect_s: f64,
    totals: Totals,
    latency: LatencyMs,
    /// Length of the send window (the longest of all processes).
    send_window_s: f64,
    /// Wall-clock microseconds when the measured window started (the earliest process).
    measure_start_us: u64,
    rss_before: Option<u64>,
    rss_after: Option<u64>,
    rss_after_traffic: Option<u64>,
    /// Server CPU seconds over the measured window.
    server_cpu_s: Option<f64>,
    /// Load generator CPU seconds over the measured window (all processes).
    client_cpu_s: f64,
    ladder: Option<LadderReport>,
}

impl Measured {
    fn report(self, config: &LoadConfig) -> Report {
        let t = self.totals;
        let expected = match config.mode {
            Mode::Broadcast => t.sent * self.connected,
            Mode::Echo => t.sent,
        };
        let delivery_window = t.last_delivery_us.saturating_sub(self.measure_start_us) as f64 / 1e6;
        let per_connection = |rss: Option<u64>| match (self.rss_before, rss) {
            (Some(before), Some(after)) if self.connected > 0 => Some(
                (after as i64 - before as i64) / i64::try_from(self.connected).unwrap_or(i64::MAX),
            ),
            _ => None,
        };
        let round3 = |x: f64| (x * 1000.0).round() / 1000.0;
        Report {
            mode: config.mode.as_str(),
            procs: self.procs as u64,
            clients: self.connected,
            requested_clients: config.clients as u64,
            connect_failures: self.connect_failures,
            disconnects: self.disconnects,
            sent: t.sent,
            expected,
            received: t.received,
            lost: expected.saturating_sub(t.received),
            duplicated: t.duplicated,
            broadcast_results: t.results,
            unexpected: t.unexpected,
            latency_ms: self.latency,
            deliveries_per_sec: per_sec(t.received, self.send_window_s.max(delivery_window)),
            broadcasts_per_sec: per_sec(t.sent, self.send_window_s),
            server_cpu_s: self.server_cpu_s.map(round3),
            server_cpu_s_per_m_deliveries: self
                .server_cpu_s
                .and_then(|cpu| per_million(cpu, t.received)),
            client_cpu_s: round3(self.client_cpu_s),
            client_cpu_s_per_m_deliveries: per_million(self.client_cpu_s, t.received),
            rss_per_connection_bytes: per_connection(self.rss_after),
            rss_per_connection_after_traffic_bytes: per_connection(self.rss_after_traffic),
            rss_before_bytes: self.rss_before,
            rss_after_bytes: self.rss_after,
            rss_after_traffic_bytes: self.rss_after_traffic,
            ladder: self.ladder,
            duration_s: round3(self.send_window_s),
            connect_s: round3(self.connect_s),
            command: config.command.clone(),
        }
    }
}
