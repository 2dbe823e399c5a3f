//! What each client counts, and the few counters all clients of one process share.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use tokio::sync::Notify;

use super::Mode;

/// Latency histograms are sharded so clients rarely wait for each other's lock.
const LATENCY_SHARDS: usize = 8;
/// Samples a client buffers before taking a shard lock.
const LATENCY_BATCH: usize = 128;
/// Highest latency recorded exactly: 60 s in microseconds; slower samples saturate.
const LATENCY_MAX_US: u64 = 60_000_000;

/// Who sends in a run: one load generator process, or one of several (`--procs`).
///
/// Each sending process writes run id `base + index` into its payloads, so a client tells
/// the frames of its own run (any of its processes) from other runs, and keeps the keys of
/// each sender apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Senders {
    /// Run id of sender 0.
    pub base: u64,
    /// This process's sender index.
    pub index: usize,
    /// Sending processes in the run.
    pub count: usize,
}

impl Senders {
    /// A run with one process and a fresh random run id.
    pub fn single() -> Self {
        Self {
            base: random_run_id(),
            index: 0,
            count: 1,
        }
    }

    /// The sender index of run id `r`, when `r` belongs to this run.
    pub(crate) fn index_of(&self, r: u64) -> Option<usize> {
        let index = r.wrapping_sub(self.base);
        (index < self.count as u64).then_some(index as usize)
    }
}

/// State shared by the driver and every client of one process.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) senders: Senders,
    pub(crate) mode: Mode,
    pub(crate) payload_bytes: usize,
    /// Broadcast ids below this were issued by this process; a higher own key is unexpected.
    pub(crate) issued_ids: AtomicU64,
    /// Echo or broadcast frames that arrived here, per sender (warm-up and duplicates included).
    pub(crate) arrivals: Box<[AtomicU64]>,
    /// Connected clients of this process, fixed after the connect phase.
    pub(crate) clients: AtomicU64,
    /// Connection attempts finished (either way) and how many succeeded.
    pub(crate) connect_finished: AtomicU64,
    pub(crate) connected: AtomicU64,
    /// Clients that have flushed their latency samples on request.
    pub(crate) flushed: AtomicU64,
    /// Clients whose readiness echo came back ([`super::session::Session::ready`]).
    pub(crate) ready: AtomicU64,
    /// Final ids issued per sender, known at the end of a multi-process run: keys at or above
    /// them are moved from `received` to `unexpected` when the clients finish.
    pub(crate) final_limits: OnceLock<Vec<u64>>,
    /// Wakes a `--max` driver waiting for in-flight work to complete.
    pub(crate) progress: Notify,
    latency: Box<[Mutex<Histogram<u64>>]>,
}

impl Shared {
    pub(crate) fn new(mode: Mode, payload_bytes: usize, senders: Senders) -> Self {
        let latency = (0..LATENCY_SHARDS)
            .map(|_| Mutex::new(new_histogram()))
            .collect();
        Self {
            senders,
            mode,
            payload_bytes,
            issued_ids: AtomicU64::new(0),
            arrivals: (0..senders.count).map(|_| AtomicU64::new(0)).collect(),
            clients: AtomicU64::new(0),
            connect_finished: AtomicU64::new(0),
            connected: AtomicU64::new(0),
            flushed: AtomicU64::new(0),
            ready: AtomicU64::new(0),
            final_limits: OnceLock::new(),
            progress: Notify::new(),
            latency,
        }
    }

    /// Wall-clock microseconds since the Unix epoch: the payload time base, shared by every
    /// load generator process on the machine.
    pub(crate) fn now_us(&self) -> u64 {
        now_us()
    }

    /// The run id this process writes into its payloads.
    pub(crate) fn run_id(&self) -> u64 {
        self.senders.base.wrapping_add(self.senders.index as u64)
    }

    /// Arrivals of this process's own frames (what its `--max` bound waits for).
    pub(crate) fn own_arrivals(&self) -> u64 {
        self.arrivals[self.senders.index].load(Ordering::Acquire)
    }

    /// Arrivals of every sender's frames.
    pub(crate) fn all_arrivals(&self) -> u64 {
        self.arrivals
            .iter()
            .map(|a| a.load(Ordering::Acquire))
            .sum()
    }

    /// Counts one arrival from `sender` and, for this process's own frames, wakes the driver
    /// once per completed broadcast (or per echo).
    pub(crate) fn count_arrival(&self, sender: usize) {
        let n = self.arrivals[sender].fetch_add(1, Ordering::Relaxed) + 1;
        if sender != self.senders.index {
            return;
        }
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

    /// Empties every latency shard (between ladder steps).
    pub(crate) fn reset_latency(&self) {
        for shard in &self.latency {
            shard.lock().unwrap_or_else(PoisonError::into_inner).reset();
        }
    }
}

/// Wall-clock microseconds since the Unix epoch.
pub(crate) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// An empty latency histogram with the bounds every shard and merge uses.
pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).expect("constant bounds are valid")
}

/// A run id that differs between load generator runs started at the same time.
fn random_run_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u64(now_us());
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

/// The set of keys a client has seen from one sender, to tell first deliveries from duplicates.
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

    /// How many keys at or above `limit` were seen.
    pub(crate) fn count_from(&self, limit: u64) -> u64 {
        let mut count = 0;
        for (i, word) in self.words.iter().enumerate() {
            let first = i as u64 * 64;
            let mask = if first >= limit {
                u64::MAX
            } else if limit - first >= 64 {
                0
            } else {
                u64::MAX << (limit - first)
            };
            count += u64::from((word & mask).count_ones());
        }
        count
    }
}

/// A counter with one writer (its client task) and readers anywhere: a plain load and store,
/// no locked read-modify-write on the delivery path.
#[derive(Debug, Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    pub(crate) fn incr(&self, n: u64) {
        self.0
            .store(self.0.load(Ordering::Relaxed) + n, Ordering::Relaxed);
    }

    pub(crate) fn decr(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).saturating_sub(n),
            Ordering::Relaxed,
        );
    }

    pub(crate) fn set_max(&self, n: u64) {
        if n > self.0.load(Ordering::Relaxed) {
            self.0.store(n, Ordering::Relaxed);
        }
    }

    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// What one client counts; the driver reads it at any time (ladder steps, the final report).
#[derive(Debug, Default)]
pub(crate) struct ClientCounters {
    pub(crate) sent: Counter,
    pub(crate) received: Counter,
    pub(crate) duplicated: Counter,
    pub(crate) results: Counter,
    pub(crate) unexpected: Counter,
    /// Wall-clock microseconds of the last measured delivery.
    pub(crate) last_delivery_us: Counter,
    /// 1 once the connection ended before the run told the client to stop.
    pub(crate) disconnected: Counter,
}

/// The sum of many clients' counters at one moment.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Totals {
    /// Measured frames written.
    pub sent: u64,
    /// Distinct measured deliveries.
    pub received: u64,
    /// Extra copies of measured deliveries.
    pub duplicated: u64,
    /// `broadcastResult` frames for measured broadcasts.
    pub results: u64,
    /// Frames that were not ours or made no sense.
    pub unexpected: u64,
    /// Wall-clock microseconds of the last measured delivery.
    pub last_delivery_us: u64,
}

impl Totals {
    /// Sums `counters` now.
    pub(crate) fn read<'a>(counters: impl IntoIterator<Item = &'a ClientCounters>) -> Self {
        let mut t = Self::default();
        for c in counters {
            t.add(&Self {
                sent: c.sent.get(),
                received: c.received.get(),
                duplicated: c.duplicated.get(),
                results: c.results.get(),
                unexpected: c.unexpected.get(),
                last_delivery_us: c.last_delivery_us.get(),
            });
        }
        t
    }

    /// Adds another process's or client's totals.
    pub fn add(&mut self, other: &Self) {
        self.sent += other.sent;
        self.received += other.received;
        self.duplicated += other.duplicated;
        self.results += other.results;
        self.unexpected += other.unexpected;
        self.last_delivery_us = self.last_delivery_us.max(other.last_delivery_us);
    }

    /// What happened between `earlier` and `self` (the last delivery time is kept).
    pub(crate) fn since(&self, earlier: &Self) -> Self {
        Self {
            sent: self.sent - earlier.sent,
            received: self.received - earlier.received,
            duplicated: self.duplicated - earlier.duplicated,
            results: self.results - earlier.results,
            unexpected: self.unexpected - earlier.unexpected,
            last_delivery_us: self.last_delivery_us,
        }
    }
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
        assert_eq!(seen.count_from(0), 5);
        assert_eq!(seen.count_from(63), 4);
        assert_eq!(seen.count_from(64), 3);
        assert_eq!(seen.count_from(1000), 1);
        assert_eq!(seen.count_from(1001), 0);
    }

    #[test]
    fn senders_map_run_ids_to_indices() {
        let s = Senders {
            base: u64::MAX - 1,
            index: 0,
            count: 3,
        };
        assert_eq!(s.index_of(u64::MAX - 1), Some(0));
        assert_eq!(s.index_of(0), Some(2));
        assert_eq!(s.index_of(1), None);
        assert_eq!(s.index_of(5), None);
    }

    #[test]
    fn latency_batches_reach_the_merged_histogram() {
        let shared = Shared::new(Mode::Echo, 0, Senders::single());
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
        shared.reset_latency();
        assert_eq!(shared.merged_latency().len(), 0);
    }
}
