//! The one JSON line a load run prints.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Delivery latency percentiles in milliseconds (from the payload's send time to its arrival).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencyMs {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Slowest delivery.
    pub max: f64,
}

impl LatencyMs {
    /// Summarizes a histogram of microsecond samples; all zero when it is empty.
    pub fn from_micros(hist: &Histogram<u64>) -> Self {
        if hist.is_empty() {
            return Self::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            p50: ms(hist.value_at_quantile(0.50)),
            p90: ms(hist.value_at_quantile(0.90)),
            p99: ms(hist.value_at_quantile(0.99)),
            max: ms(hist.max()),
        }
    }
}

/// One rung of a ladder run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LadderStep {
    /// Broadcasts per second asked for.
    pub rate: f64,
    /// Broadcasts sent in the step.
    pub sent: u64,
    /// Broadcasts per second achieved.
    pub broadcasts_per_sec: f64,
    /// `sent × clients`.
    pub expected: u64,
    /// Distinct deliveries that arrived (by the end of the step's drain).
    pub received: u64,
    /// `expected - received`.
    pub lost: u64,
    /// Extra copies.
    pub duplicated: u64,
    /// The step's latency percentiles.
    pub latency_ms: LatencyMs,
    /// Deliveries per second over the step.
    pub deliveries_per_sec: f64,
    /// p99 under the limit, nothing lost, nothing duplicated.
    pub passed: bool,
}

/// The ladder part of a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LadderReport {
    /// A step passes with a p99 below this (milliseconds).
    pub p99_limit_ms: f64,
    /// Seconds per step.
    pub step_s: f64,
    /// The highest rate whose step (and every step before it) passed.
    pub highest_passing_rate: Option<f64>,
    /// Every step run, up to and including the first that failed.
    pub steps: Vec<LadderStep>,
}

/// The result of one load run; printed as exactly one JSON line.
///
/// A run is valid only when `lost` and `duplicated` are both zero.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// `echo` or `broadcast`.
    pub mode: &'static str,
    /// Load generator processes that ran the clients.
    pub procs: u64,
    /// Clients that connected.
    pub clients: u64,
    /// Clients that were asked for.
    pub requested_clients: u64,
    /// Connection attempts that failed or timed out.
    pub connect_failures: u64,
    /// Clients whose connection ended before the run did (each one's missing deliveries are lost).
    pub disconnects: u64,
    /// Measured echo or broadcast frames written by the clients.
    pub sent: u64,
    /// Deliveries that should have arrived: `sent × clients` for broadcast, `sent` for echo.
    pub expected: u64,
    /// Distinct measured deliveries that arrived.
    pub received: u64,
    /// `expected - received`.
    pub lost: u64,
    /// Deliveries that arrived more than once (each extra copy counts).
    pub duplicated: u64,
    /// `broadcastResult` frames the senders got for measured broadcasts.
    pub broadcast_results: u64,
    /// Frames that were not ours or made no sense (unknown type, unknown key, other runs).
    pub unexpected: u64,
    /// Delivery latency percentiles (in idle mode, `max` is the time the one broadcast took
    /// to reach every client).
    pub latency_ms: LatencyMs,
    /// `received` per second over the measured window (until the last delivery).
    pub deliveries_per_sec: f64,
    /// `sent` per second over the send window (echoes per second in echo mode).
    pub broadcasts_per_sec: f64,
    /// CPU seconds (user + system) the `--pid` processes used over the measured window.
    pub server_cpu_s: Option<f64>,
    /// `server_cpu_s` per million received deliveries: the server's cost per delivery, which
    /// does not depend on how fast the load generator is.
    pub server_cpu_s_per_m_deliveries: Option<f64>,
    /// CPU seconds the load generator processes used over the measured window.
    pub client_cpu_s: f64,
    /// `client_cpu_s` per million received deliveries.
    pub client_cpu_s_per_m_deliveries: Option<f64>,
    /// Server RSS growth per connected client in bytes before any traffic, when `--pid` was given.
    pub rss_per_connection_bytes: Option<i64>,
    /// Server RSS growth per connected client in bytes after the traffic (in idle mode: after
    /// the one broadcast), when `--pid` was given.
    pub rss_per_connection_after_traffic_bytes: Option<i64>,
    /// Summed server RSS before connecting, when `--pid` was given.
    pub rss_before_bytes: Option<u64>,
    /// Summed server RSS with all clients connected, when `--pid` was given.
    pub rss_after_bytes: Option<u64>,
    /// Summed server RSS after the traffic, when `--pid` was given.
    pub rss_after_traffic_bytes: Option<u64>,
    /// The ladder's steps, in ladder mode.
    pub ladder: Option<LadderReport>,
    /// Length of the measured send window in seconds.
    pub duration_s: f64,
    /// Seconds taken to connect all clients.
    pub connect_s: f64,
    /// The command line that produced this report.
    pub command: String,
}

impl Report {
    /// True when nothing was lost and nothing duplicated.
    pub fn is_valid(&self) -> bool {
        self.lost == 0 && self.duplicated == 0
    }
}

/// Renders a rate rounded to one decimal.
pub(crate) fn per_sec(count: u64, secs: f64) -> f64 {
    if secs <= 0.0 {
        return 0.0;
    }
    (count as f64 / secs * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_percentiles_come_from_the_histogram() {
        let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
        for us in 1..=1000u64 {
            hist.record(us * 10).expect("in range");
        }
        let l = LatencyMs::from_micros(&hist);
        assert!((l.p50 - 5.0).abs() < 0.01, "{l:?}");
        assert!((l.p99 - 9.9).abs() < 0.02, "{l:?}");
        assert!((l.max - 10.0).abs() < 0.01, "{l:?}");
        assert_eq!(
            LatencyMs::from_micros(&Histogram::new(3).expect("sigfig")),
            LatencyMs::default()
        );
    }

    #[test]
    fn rates_round_and_guard_zero() {
        assert_eq!(per_sec(10, 4.0), 2.5);
        assert_eq!(per_sec(10, 0.0), 0.0);
    }
}
