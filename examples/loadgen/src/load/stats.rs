//! What each client counts, and the few counters all clients share.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use hdrhistogram::Histogram;
use tokio::sync::Notify;

use super::Mode;

/// Latency histograms are sharded so clients rarely wait for each other's lock.
const LATENCY_SHARDS: usize = 8;
/// Samples a client buffers before taking a shard lock.
const LATENCY_BATCH: usize = 128;
/// Highest latency recorded exactly: 60 s in microseconds; slower samples saturate.
const LATENCY_MAX_US: u64 = 60_000_000;

/// State shared by the driver and every client of one run.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Time base of the payload timestamps.
    pub(crate) base: Instant,
    /// Random id of this run; frames of other runs are not measured.
    pub(crate) run_id: u64,
    pub(crate) mode: Mode,
    pub(crate) payload_bytes: usize,
    /// Broadcast ids below this were issued; a higher key is unexpected.
    pub(crate) issued_ids: AtomicU64,
    /// Echo or broadcast frames of this run that arrived (warm-up included, duplicates included).
    pub(crate) arrivals: AtomicU64,
    /// Connected clients, fixed after the connect phase.
    pub(crate) clients: AtomicU64,
    /// Connection attempts finished (either way) and how many succeeded.
    pub(crate) connect_finished: AtomicU64,
    pub(crate) connected: AtomicU64,
    /// Wakes a `--max` driver waiting for in-flight work to complete.
    pub(crate) progress: Notify,
    pub(crate) latency: Box<[Mutex<Histogram<u64>>]>,
}

impl Shared {
    pub(crate) fn new(mode: Mode, payload_bytes: usize) -> Self {
        let latency = (0..LATENCY_SHARDS)
            .map(|_| Mutex::new(new_histogram()))
            .collect();
        Self {
            base: Instant::now(),
            run_id: random_run_id(),
            mode,
            payload_bytes,
            issued_ids: AtomicU64::new(0),
            arrivals: AtomicU64::new(0),
            clients: AtomicU64::new(0),
            connect_finished: AtomicU64::new(0),
            connected: AtomicU64::new(0),
            progress: Notify::new(),
            latency,
        }
    }

    /// Microseconds since the run's time base.
    pub(crate) fn now_us(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Counts one arrival and wakes the driver once per completed broadcast (or per echo).
    pub(crate) fn count_arrival(&self) {
        let n = self.arrivals.fetch_add(1, Ordering::Relaxed) + 1;
        let per_completion = match self.mode {
            Mode::Echo => 1,
            Mode::Broadcast => self.clients.load(Ordering::Relaxed).max(1),
        };
        if n.is_multiple_of(per_completion) {
            self.progress.notify_one();
        }
    }

    /// Merges all latency shards into one histogram of microseconds.
    pub(crate) fn merged_latency(&self) -> Histogram<u64> {
        let mut all = new_histogram();
        for shard in &self.latency {
            let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            all.add(&*shard)
                .expect("shards share the bounds of the merged histogram");
        }
        all
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).expect("constant bounds are valid")
}

/// A run id that differs between load generator processes started at the same time.
fn random_run_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish()
}

/// One client's latency samples, flushed to a shared shard in batches.
#[derive(Debug)]
pub(crate) struct LatencyBuffer {
    shard: usize,
    samples: Vec<u64>,
}

impl LatencyBuffer {
    pub(crate) fn new(client: usize) -> Self {
        Self {
            shard: client % LATENCY_SHARDS,
            samples: Vec::with_capacity(LATENCY_BATCH),
        }
    }

    pub(crate) fn record(&mut self, shared: &Shared, micros: u64) {
        self.samples.push(micros);
        if self.samples.len() >= LATENCY_BATCH {
            self.flush(shared);
        }
    }

    pub(crate) fn flush(&mut self, shared: &Shared) {
        if self.samples.is_empty() {
            return;
        }
        let mut hist = shared.latency[self.shard]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for us in self.samples.drain(..) {
            hist.saturating_record(us.max(1));
        }
    }
}

/// The set of keys a client has seen, to tell first deliveries from duplicates.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    words: Vec<u64>,
}

impl Seen {
    /// Records `key`; true when it was not seen before. Callers bound `key` first.
    pub(crate) fn insert(&mut self, key: u64) -> bool {
        let word = usize::try_from(key / 64).expect("keys are bounded by the ids issued");
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }
        let bit = 1u64 << (key % 64);
        let fresh = self.words[word] & bit == 0;
        self.words[word] |= bit;
        fresh
    }
}

/// What one client counted over the run.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ClientStats {
    pub(crate) connected: bool,
    /// The connection ended before the run did.
    pub(crate) disconnected: bool,
    pub(crate) sent: u64,
    pub(crate) received: u64,
    pub(crate) duplicated: u64,
    pub(crate) results: u64,
    pub(crate) unexpected: u64,
    /// Microseconds since the time base of the last measured delivery.
    pub(crate) last_delivery_us: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_detects_duplicates_across_words() {
        let mut seen = Seen::default();
        assert!(seen.insert(0));
        assert!(seen.insert(63));
        assert!(seen.insert(64));
        assert!(seen.insert(1000));
        assert!(!seen.insert(63));
        assert!(!seen.insert(1000));
        assert!(seen.insert(999));
    }

    #[test]
    fn latency_batches_reach_the_merged_histogram() {
        let shared = Shared::new(Mode::Echo, 0);
        let mut a = LatencyBuffer::new(0);
        let mut b = LatencyBuffer::new(1);
        for us in 0..300 {
            a.record(&shared, us);
            b.record(&shared, us + 1000);
        }
        a.flush(&shared);
        b.flush(&shared);
        let merged = shared.merged_latency();
        assert_eq!(merged.len(), 600);
        assert!(merged.max() >= 1299);
    }
}
