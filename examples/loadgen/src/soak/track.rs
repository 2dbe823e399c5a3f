//! What one soak client checks across all its connections: its position in the group's
//! history, the seqs it got, and every way the stream may break (a silent gap, a duplicate,
//! an epoch change nobody announced), plus the counters and events all clients share.

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Instant;

use super::frame::Frame;

/// Silent gaps described in full in the summary; more are only counted.
const GAP_DETAILS: usize = 50;

/// Counters every client and the publisher add to.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) deliveries: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    pub(crate) churn_closes: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) connect_failures: AtomicU64,
    pub(crate) answer_timeouts: AtomicU64,
    pub(crate) subscribe_errors: AtomicU64,
    pub(crate) recoveries: AtomicU64,
    pub(crate) recovered_publications: AtomicU64,
    pub(crate) overflow_resubscribes: AtomicU64,
    pub(crate) silent_gaps: AtomicU64,
    pub(crate) unannounced_epoch_changes: AtomicU64,
    pub(crate) duplicates: AtomicU64,
    pub(crate) unavailable_frames: AtomicU64,
    pub(crate) unexpected_frames: AtomicU64,
    /// Publisher ticks skipped because too many publishes were unanswered.
    pub(crate) skipped_publishes: AtomicU64,
    /// Clients connected and subscribed right now.
    pub(crate) subscribed: AtomicI64,
}

/// Adds one to a counter.
pub(crate) fn incr(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// A notice that messages may be missing, or a dropped connection, with its time.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    /// Seconds since the run started.
    pub(crate) t: f64,
    /// `lost`, `not_recovered` or `dropped`.
    pub(crate) kind: &'static str,
    pub(crate) reason: String,
}

/// A push whose offset did not follow the one before with nothing said in between.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Gap {
    pub(crate) client: usize,
    pub(crate) t: f64,
    pub(crate) last_offset: u64,
    pub(crate) last_epoch: String,
    pub(crate) offset: u64,
    pub(crate) epoch: String,
}

/// State all soak tasks share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) start: Instant,
    pub(crate) counters: Counters,
    pub(crate) events: Mutex<Vec<Event>>,
    pub(crate) gaps: Mutex<Vec<Gap>>,
}

impl Shared {
    pub(crate) fn new() -> Self {
        Self {
            start: Instant::now(),
            counters: Counters::default(),
            events: Mutex::new(Vec::new()),
            gaps: Mutex::new(Vec::new()),
        }
    }

    /// Seconds since the run started.
    pub(crate) fn now_s(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    pub(crate) fn event(&self, kind: &'static str, reason: &str) {
        let event = Event {
            t: self.now_s(),
            kind,
            reason: reason.to_owned(),
        };
        lock(&self.events).push(event);
    }
}

/// Locks a mutex whose holder cannot leave it half-updated (every critical section is one push).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One client's record over the whole run.
#[derive(Debug)]
pub(crate) struct Tracker {
    pub(crate) index: usize,
    /// Last offset seen and its epoch.
    pub(crate) position: Option<(u64, String)>,
    /// When the first `subscribed` arrived: every seq published after it is owed to this client.
    pub(crate) first_subscribed_s: Option<f64>,
    pub(crate) subscribed: bool,
    /// Whether it was connected and subscribed when the run stopped.
    pub(crate) subscribed_at_stop: bool,
    /// Notices that messages may be missing (`lost` other than overflow, `recovered: false`
    /// other than a first `no_position`): when, and the highest seq received before it.
    pub(crate) notices: Vec<(f64, Option<u64>)>,
    max_seq: Option<u64>,
    /// Seqs received, as a bit set.
    seqs: Vec<u64>,
}

impl Tracker {
    pub(crate) fn new(index: usize) -> Self {
        Self {
            index,
            position: None,
            first_subscribed_s: None,
            subscribed: false,
            subscribed_at_stop: false,
            notices: Vec::new(),
            max_seq: None,
            seqs: Vec::new(),
        }
    }

    /// Whether a notice told this client that `seq` (published at `sent_s`) may be missing: one
    /// came after it was published and before the client got anything newer.
    pub(crate) fn was_told(&self, seq: u64, sent_s: f64) -> bool {
        self.notices
            .iter()
            .any(|(t, max)| *t >= sent_s && max.is_none_or(|m| m < seq))
    }

    fn notice(&mut self, shared: &Shared, kind: &'static str, reason: &str) {
        shared.event(kind, reason);
        self.notices.push((shared.now_s(), self.max_seq));
    }

    pub(crate) fn has_seq(&self, seq: u64) -> bool {
        let word = (seq / 64) as usize;
        self.seqs
            .get(word)
            .is_some_and(|w| w & (1 << (seq % 64)) != 0)
    }

    /// Records `seq`; false when it was already there.
    fn insert_seq(&mut self, seq: u64) -> bool {
        let word = (seq / 64) as usize;
        if self.seqs.len() <= word {
            self.seqs.resize(word + 1, 0);
        }
        let bit = 1 << (seq % 64);
        let fresh = self.seqs[word] & bit == 0;
        self.seqs[word] |= bit;
        fresh
    }

    /// A message at `offset` in `epoch`: checks it follows the position, then takes it.
    pub(crate) fn on_push(&mut self, shared: &Shared, offset: u64, epoch: &str, seq: Option<u64>) {
        let c = &shared.counters;
        let mut duplicate = false;
        match &self.position {
            Some((last, e)) if e == epoch => {
                if offset <= *last {
                    duplicate = true;
                } else if offset != last + 1 {
                    incr(&c.silent_gaps);
                    self.record_gap(shared, offset, epoch);
                }
            }
            Some(_) => {
                incr(&c.unannounced_epoch_changes);
                self.record_gap(shared, offset, epoch);
            }
            None => incr(&c.unexpected_frames),
        }
        if let Some(seq) = seq {
            duplicate |= !self.insert_seq(seq);
            self.max_seq = self.max_seq.max(Some(seq));
        }
        if duplicate {
            incr(&c.duplicates);
            return;
        }
        incr(&c.deliveries);
        self.position = Some((offset, epoch.to_owned()));
    }

    fn record_gap(&self, shared: &Shared, offset: u64, epoch: &str) {
        let (last_offset, last_epoch) = self.position.clone().unwrap_or_default();
        let mut gaps = lock(&shared.gaps);
        if gaps.len() < GAP_DETAILS {
            gaps.push(Gap {
                client: self.index,
                t: shared.now_s(),
                last_offset,
                last_epoch,
                offset,
                epoch: epoch.to_owned(),
            });
        }
    }

    /// A `subscribed` answer: recovered messages are checked like pushes, then the answer's
    /// position becomes this client's.
    pub(crate) fn on_subscribed(&mut self, shared: &Shared, frame: Frame<'_>) {
        let c = &shared.counters;
        let (Some(offset), Some(epoch)) = (frame.offset, frame.epoch.as_deref()) else {
            incr(&c.unexpected_frames);
            return;
        };
        if frame.recovered == Some(true) {
            incr(&c.recoveries);
            for publication in frame.publications.unwrap_or_default() {
                c.recovered_publications.fetch_add(1, Ordering::Relaxed);
                self.on_push(shared, publication.offset, epoch, publication.data.seq);
            }
            // Recovered means nothing is missing up to the answer's offset.
            if let Some((last, e)) = &self.position
                && e == epoch
                && *last < offset
            {
                incr(&c.silent_gaps);
                self.record_gap(shared, offset, epoch);
            }
        } else {
            let reason = frame.reason.as_deref().unwrap_or("none");
            if self.position.is_some() || reason != "no_position" {
                self.notice(shared, "not_recovered", reason);
            }
        }
        self.position = Some((offset, epoch.to_owned()));
        self.first_subscribed_s
            .get_or_insert_with(|| shared.now_s());
        if !self.subscribed {
            self.subscribed = true;
            c.subscribed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A `lost` notice; returns true when the client must subscribe again with recover.
    pub(crate) fn on_lost(&mut self, shared: &Shared, frame: Frame<'_>) -> bool {
        let reason = frame.reason.as_deref().unwrap_or("none");
        if reason == "overflow" {
            // Not a loss yet: the resubscribe recovers, or answers `recovered: false`.
            shared.event("lost", reason);
            incr(&shared.counters.overflow_resubscribes);
            return true;
        }
        self.notice(shared, "lost", reason);
        if let (Some(offset), Some(epoch)) = (frame.offset, frame.epoch.as_deref()) {
            self.position = Some((offset, epoch.to_owned()));
        }
        false
    }

    pub(crate) fn on_disconnect(&mut self, shared: &Shared) {
        if self.subscribed {
            self.subscribed = false;
            shared.counters.subscribed.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(text: &str) -> Frame<'_> {
        Frame::parse(text).expect("test frames parse")
    }

    #[test]
    fn gaps_duplicates_and_recoveries_are_told_apart() {
        let shared = Shared::new();
        let mut t = Tracker::new(0);
        t.on_subscribed(
            &shared,
            frame(r#"{"type":"subscribed","recovered":false,"reason":"no_position","offset":5,"epoch":"a"}"#),
        );
        t.on_push(&shared, 6, "a", Some(1));
        t.on_push(&shared, 6, "a", Some(1));
        t.on_push(&shared, 8, "a", Some(3));
        let c = &shared.counters;
        assert_eq!(c.duplicates.load(Ordering::Relaxed), 1);
        assert_eq!(c.silent_gaps.load(Ordering::Relaxed), 1);
        t.on_subscribed(
            &shared,
            frame(r#"{"type":"subscribed","recovered":true,"offset":10,"epoch":"a","publications":[{"offset":9,"data":{"seq":4}},{"offset":10,"data":{"seq":5}}]}"#),
        );
        assert!(t.has_seq(5) && !t.has_seq(2));
        assert!(!t.was_told(2, 0.0));
        assert!(!t.on_lost(
            &shared,
            frame(r#"{"type":"lost","reason":"epoch_changed","offset":0,"epoch":"b"}"#)
        ));
        assert!(t.was_told(6, 0.0) && !t.was_told(5, 0.0) && !t.was_told(6, 1e9));
        t.on_push(&shared, 1, "b", Some(6));
        t.on_push(&shared, 2, "c", Some(7));
        assert_eq!(c.silent_gaps.load(Ordering::Relaxed), 1);
        assert_eq!(c.unannounced_epoch_changes.load(Ordering::Relaxed), 1);
        assert_eq!(c.deliveries.load(Ordering::Relaxed), 6);
        assert!(t.on_lost(
            &shared,
            frame(r#"{"type":"lost","reason":"overflow","offset":2,"epoch":"c"}"#)
        ));
    }
}
