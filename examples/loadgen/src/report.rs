//! The one JSON line a load run prints.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Delivery latency percentiles in milliseconds (from the payload's send time to its arrival).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
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

/// The result of one load run; printed as exactly one JSON line.
///
/// A run is valid only when `lost` and `duplicated` are both zero.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// `echo` or `broadcast`.
    pub mode: &'static str,
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
    /// Delivery latency percentiles.
    pub latency_ms: LatencyMs,
    /// `received` per second over the measured window (until the last delivery).
    pub deliveries_per_sec: f64,
    /// `sent` per second over the send window (echoes per second in echo mode).
    pub broadcasts_per_sec: f64,
    /// Server RSS growth per connected client in bytes, when `--pid` was given.
    pub rss_per_connection_bytes: Option<i64>,
    /// Summed server RSS before connecting, when `--pid` was given.
    pub rss_before_bytes: Option<u64>,
    /// Summed server RSS with all clients connected, when `--pid` was given.
    pub rss_after_bytes: Option<u64>,
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
