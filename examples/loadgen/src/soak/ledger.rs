//! The publisher's ledger (when each seq was sent and what the server answered) and the
//! outage windows a missing seq is judged against.

use serde::Serialize;

/// What the server answered to one publish.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Outcome {
    /// No answer yet.
    Pending,
    /// `published`, at this time.
    Acked(f64),
    /// An `error` answer (`unavailable` while Redis is away), at this time.
    Refused(f64),
    /// The connection ended before an answer: maybe sent, maybe not.
    Unanswered,
}

/// One publish: its send time (seconds since the start) and outcome.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry {
    pub(crate) sent_s: f64,
    pub(crate) outcome: Outcome,
}

/// Every publish of the run, indexed by seq.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    pub(crate) entries: Vec<Entry>,
}

impl Ledger {
    /// Allocates the next seq, sent at `sent_s`.
    pub(crate) fn sent(&mut self, sent_s: f64) -> u64 {
        self.entries.push(Entry {
            sent_s,
            outcome: Outcome::Pending,
        });
        self.entries.len() as u64 - 1
    }

    /// Sets the outcome of a pending `seq`; answers to unknown or settled seqs are ignored.
    pub(crate) fn settle(&mut self, seq: u64, outcome: Outcome) {
        if let Some(entry) = usize::try_from(seq)
            .ok()
            .and_then(|i| self.entries.get_mut(i))
            && entry.outcome == Outcome::Pending
        {
            entry.outcome = outcome;
        }
    }

    /// Marks every pending seq unanswered (its connection is gone).
    pub(crate) fn abandon_pending(&mut self) {
        for entry in &mut self.entries {
            if entry.outcome == Outcome::Pending {
                entry.outcome = Outcome::Unanswered;
            }
        }
    }
}

/// A span of the run, in seconds since its start.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(crate) struct Window {
    pub(crate) start: f64,
    pub(crate) end: f64,
}

impl Window {
    /// Parses `START,END`.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let (start, end) = text.split_once(',')?;
        let (start, end) = (start.trim().parse().ok()?, end.trim().parse().ok()?);
        (start <= end).then_some(Self { start, end })
    }

    /// Whether `t` is inside, with `before` seconds of margin before and `after` after.
    pub(crate) fn contains(&self, t: f64, before: f64, after: f64) -> bool {
        t >= self.start - before && t <= self.end + after
    }
}

/// Groups `times` (sorted or not) into windows: times closer than `gap` seconds share one.
pub(crate) fn cluster(mut times: Vec<f64>, gap: f64) -> Vec<(Window, usize)> {
    times.sort_by(f64::total_cmp);
    let mut windows: Vec<(Window, usize)> = Vec::new();
    for t in times {
        match windows.last_mut() {
            Some((w, n)) if t - w.end <= gap => {
                w.end = t;
                *n += 1;
            }
            _ => windows.push((Window { start: t, end: t }, 1)),
        }
    }
    windows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_settles_once() {
        let mut ledger = Ledger::default();
        let a = ledger.sent(1.0);
        let b = ledger.sent(2.0);
        ledger.settle(a, Outcome::Acked(1.1));
        ledger.settle(a, Outcome::Refused(1.2));
        ledger.settle(99, Outcome::Acked(0.0));
        ledger.abandon_pending();
        assert_eq!(ledger.entries[a as usize].outcome, Outcome::Acked(1.1));
        assert_eq!(ledger.entries[b as usize].outcome, Outcome::Unanswered);
    }

    #[test]
    fn windows_parse_and_cluster() {
        assert_eq!(
            Window::parse("600, 612.5"),
            Some(Window {
                start: 600.0,
                end: 612.5
            })
        );
        assert_eq!(Window::parse("5,1"), None);
        let w = cluster(vec![10.0, 1.0, 2.0, 11.5, 3.0], 5.0);
        assert_eq!(w.len(), 2);
        assert_eq!(
            w[0].0,
            Window {
                start: 1.0,
                end: 3.0
            }
        );
        assert_eq!(w[1].1, 2);
        assert!(w[1].0.contains(9.5, 1.0, 0.0) && !w[1].0.contains(12.0, 0.0, 0.4));
    }
}
