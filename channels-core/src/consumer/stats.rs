//! [`ConsumerStats`]: counters the runtime keeps, for the server's metrics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the [`Histogram`] buckets: 0.1 ms to 2.5 s.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// A lock-free latency histogram with the fixed [`LATENCY_BUCKETS`], in the
/// shape Prometheus expects (cumulative buckets, sum, count).
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        if let Some(index) = LATENCY_BUCKETS.iter().position(|bound| seconds <= *bound) {
            self.buckets[index].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Returns `(upper bound, cumulative count)` per bucket (without `+Inf`).
    pub fn cumulative_buckets(&self) -> Vec<(f64, u64)> {
        let mut total = 0;
        LATENCY_BUCKETS
            .iter()
            .zip(&self.buckets)
            .map(|(bound, count)| {
                total += count.load(Ordering::Relaxed);
                (*bound, total)
            })
            .collect()
    }

    /// Returns the number of observations.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Returns the sum of all observations in seconds.
    pub fn sum_seconds(&self) -> f64 {
        // Microsecond totals stay far below 2^53, so the cast is exact.
        #[allow(clippy::cast_precision_loss)]
        let micros = self.sum_micros.load(Ordering::Relaxed) as f64;
        micros / 1_000_000.0
    }
}

/// Counters shared by every connection of a server (one `Arc` each).
#[derive(Debug, Default)]
pub struct ConsumerStats {
    /// Connections accepted since start.
    pub connections_accepted: AtomicU64,
    /// Connections rejected by `connect` (HTTP 403).
    pub connections_rejected: AtomicU64,
    /// Connections open now.
    pub connections_open: AtomicU64,
    /// Data frames received from clients.
    pub frames_in: AtomicU64,
    /// Data frames written to clients.
    pub frames_out: AtomicU64,
    /// Channel-layer messages dispatched to consumers.
    pub messages_in: AtomicU64,
    /// Messages dropped for a missing or private (`_`) type.
    pub messages_invalid: AtomicU64,
    /// Frames dropped because a client's outbound queue was full (each closes
    /// that client with 1013).
    pub queue_drops: AtomicU64,
    /// Client frames dropped for going over the per-client rate limit.
    pub frames_rate_limited: AtomicU64,
    /// Connections closed with 4029 for flooding.
    pub flood_closes: AtomicU64,
    /// Connections dropped because a socket write took longer than the write
    /// timeout (a client that stopped reading); their close frame may not
    /// have reached them.
    pub write_timeouts: AtomicU64,
    /// Connections whose outbound queue is past its bounds while their
    /// socket has room: the server is behind for them, and their runtime
    /// takes no layer messages until the writer catches up (a gauge).
    pub held_back: AtomicU64,
    /// Group sends from consumers that waited because the server was
    /// overloaded ([`ConsumerStats::is_overloaded`]).
    pub backpressure_waits: AtomicU64,
    /// Of those, the ones still overloaded after the longest wait (sent
    /// anyway).
    pub backpressure_timeouts: AtomicU64,
    /// Consumer methods that returned an error.
    pub consumer_errors: AtomicU64,
    /// Layer errors seen by the runtime (receive, group add/discard).
    pub layer_errors: AtomicU64,
    /// Time a consumer takes to handle one event: every client frame, and
    /// one in 16 layer messages per connection (sampled: the clock reads
    /// would cost more than the dispatch itself).
    pub handle_latency: Histogram,
}

impl ConsumerStats {
    /// Adds one to a counter.
    pub fn incr(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Whether the server is overloaded: at least one connection in eight
    /// is held back ([`ConsumerStats::held_back`]), so more messages now
    /// would only queue up (or, in the layer, be dropped for full channels).
    pub fn is_overloaded(&self) -> bool {
        let held = Self::get(&self.held_back);
        held > 0 && held.saturating_mul(8) >= Self::get(&self.connections_open)
    }

    /// Back-pressure for whoever publishes: waits while the server is
    /// overloaded, up to `longest`, checking every few milliseconds.
    /// Returns whether it had to wait, and whether the overload was still
    /// there at the end (both counted).
    pub async fn wait_while_overloaded(&self, longest: Duration) -> Backpressure {
        if !self.is_overloaded() {
            return Backpressure::None;
        }
        Self::incr(&self.backpressure_waits);
        let deadline = tokio::time::Instant::now() + longest;
        while self.is_overloaded() {
            if tokio::time::Instant::now() >= deadline {
                Self::incr(&self.backpressure_timeouts);
                return Backpressure::TimedOut;
            }
            tokio::time::sleep(BACKPRESSURE_POLL).await;
        }
        Backpressure::Waited
    }
}

/// How often [`ConsumerStats::wait_while_overloaded`] looks again.
const BACKPRESSURE_POLL: Duration = Duration::from_millis(5);

/// What [`ConsumerStats::wait_while_overloaded`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backpressure {
    /// The server was not overloaded.
    None,
    /// It was, and stopped being within the wait.
    Waited,
    /// It still was when the wait ended.
    TimedOut,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative() {
        let histogram = Histogram::default();
        histogram.observe(Duration::from_micros(50));
        histogram.observe(Duration::from_millis(3));
        histogram.observe(Duration::from_secs(10));
        let buckets = histogram.cumulative_buckets();
        assert_eq!(buckets[0], (0.0001, 1));
        assert_eq!(buckets.last().map(|b| b.1), Some(2));
        assert_eq!(histogram.count(), 3);
        assert!((histogram.sum_seconds() - 10.00305).abs() < 1e-9);
    }

    #[tokio::test(start_paused = true)]
    async fn publishers_wait_while_an_eighth_of_the_connections_are_held_back() {
        let stats = std::sync::Arc::new(ConsumerStats::default());
        stats.connections_open.store(16, Ordering::Relaxed);
        assert!(!stats.is_overloaded());
        stats.held_back.store(1, Ordering::Relaxed);
        assert!(!stats.is_overloaded());
        stats.held_back.store(2, Ordering::Relaxed);
        assert!(stats.is_overloaded());
        let longest = Duration::from_secs(1);
        assert_eq!(
            stats.wait_while_overloaded(longest).await,
            Backpressure::TimedOut
        );
        let relief = {
            let stats = stats.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                stats.held_back.store(0, Ordering::Relaxed);
            })
        };
        let started = tokio::time::Instant::now();
        assert_eq!(
            stats.wait_while_overloaded(longest).await,
            Backpressure::Waited
        );
        assert!(started.elapsed() >= Duration::from_millis(300));
        relief.await.unwrap();
        assert_eq!(
            stats.wait_while_overloaded(longest).await,
            Backpressure::None
        );
        assert_eq!(ConsumerStats::get(&stats.backpressure_waits), 2);
        assert_eq!(ConsumerStats::get(&stats.backpressure_timeouts), 1);
    }
}
