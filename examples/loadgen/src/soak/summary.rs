//! The final summary: what every client got against what the publisher saw acknowledged,
//! each missing seq judged inside or outside an outage window, and the servers' RSS and fds.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};

use super::SoakConfig;
use super::ledger::{Entry, Ledger, Outcome, Window, cluster};
use super::sample::ProcessSeries;
use super::track::{Shared, Tracker, lock};

/// Events closer than this many seconds belong to one window.
const EVENT_GAP_S: f64 = 10.0;
/// Missing seqs outside the windows listed one by one in the summary.
const MISSING_DETAILS: usize = 20;
/// A window also covers this many seconds before its start (a publish acknowledged just
/// before Redis died may not have reached the history yet).
const BEFORE_S: f64 = 1.0;

/// What the summary is made from.
pub(crate) struct Input<'a> {
    pub(crate) config: &'a SoakConfig,
    pub(crate) shared: &'a Shared,
    pub(crate) ledger: &'a Ledger,
    pub(crate) trackers: &'a [Tracker],
    pub(crate) series: &'a [ProcessSeries],
    pub(crate) declared: Vec<Window>,
}

/// Builds the summary; the flag says whether the run was clean.
pub(crate) fn summarize(input: Input<'_>) -> (Value, bool) {
    let Input {
        config,
        shared,
        ledger,
        trackers,
        series,
        declared,
    } = input;
    let entries = &ledger.entries;
    let events = lock(&shared.events).clone();
    // Derived windows: refused publishes and epoch_changed notices, clustered.
    let outage_times: Vec<f64> = events
        .iter()
        .filter(|e| e.kind == "refused" || e.reason == "epoch_changed")
        .map(|e| e.t)
        .collect();
    let derived: Vec<Window> = cluster(outage_times, EVENT_GAP_S)
        .into_iter()
        .map(|(w, _)| w)
        .collect();
    let grace = config.outage_grace;
    let inside =
        |windows: &[Window], t: f64| windows.iter().any(|w| w.contains(t, BEFORE_S, grace));
    let (windows, windows_source) = if declared.is_empty() {
        (&derived, "derived")
    } else {
        (&declared, "declared")
    };

    // Per seq: how many clients owed it did not get it, and how many of those were never
    // told (no `lost` or `recovered: false` after it was published and before anything newer).
    let mut missing_by_seq = vec![(0u64, 0u64); entries.len()];
    let mut refused_but_delivered = 0u64;
    for tracker in trackers {
        let Some(since) = tracker.first_subscribed_s else {
            continue;
        };
        for (seq, entry) in entries.iter().enumerate() {
            let got = tracker.has_seq(seq as u64);
            match entry.outcome {
                Outcome::Acked(_) if entry.sent_s >= since && !got => {
                    missing_by_seq[seq].0 += 1;
                    if !tracker.was_told(seq as u64, entry.sent_s) {
                        missing_by_seq[seq].1 += 1;
                    }
                }
                Outcome::Refused(_) if got => refused_but_delivered += 1,
                _ => {}
            }
        }
    }
    let mut missing: BTreeMap<&str, u64> = BTreeMap::new();
    let mut outside_details = Vec::new();
    // Missing (client x seq) per whole second of the time the server took the publish.
    let mut missing_per_second: BTreeMap<u64, u64> = BTreeMap::new();
    for (seq, (&(count, untold), entry)) in missing_by_seq.iter().zip(entries).enumerate() {
        if count == 0 {
            continue;
        }
        // Judged by when the server answered (it took the publish then), not when it was sent.
        let taken = match entry.outcome {
            Outcome::Acked(t) => t,
            _ => entry.sent_s,
        };
        *missing_per_second.entry(taken as u64).or_default() += count;
        let key = if inside(windows, taken) {
            "inside"
        } else {
            "outside"
        };
        *missing.entry(key).or_default() += count;
        *missing.entry("untold").or_default() += untold;
        if key == "outside" {
            *missing.entry("untold_outside").or_default() += untold;
        }
        if !inside(&derived, taken) {
            *missing.entry("outside_derived").or_default() += count;
        }
        if key == "outside" && outside_details.len() < MISSING_DETAILS {
            outside_details.push(describe(seq, entry, count, untold));
        }
    }
    let missing = |key: &str| missing.get(key).copied().unwrap_or(0);

    let head = head_check(trackers);
    let c = &shared.counters;
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let count_outcome = |f: fn(&Outcome) -> bool| entries.iter().filter(|e| f(&e.outcome)).count();
    let mut by_reason: BTreeMap<&str, BTreeMap<&str, u64>> = BTreeMap::new();
    for e in &events {
        *by_reason
            .entry(e.kind)
            .or_default()
            .entry(&e.reason)
            .or_default() += 1;
    }
    // Per kind and reason: events per whole second of the run (only seconds with any).
    let mut per_second: BTreeMap<String, BTreeMap<u64, u64>> = BTreeMap::new();
    for e in &events {
        let key = format!("{}.{}", e.kind, e.reason);
        *per_second
            .entry(key)
            .or_default()
            .entry(e.t as u64)
            .or_default() += 1;
    }
    let mut event_windows = Vec::new();
    for (kind, reasons) in &by_reason {
        for reason in reasons.keys() {
            let times = events
                .iter()
                .filter(|e| e.kind == *kind && e.reason == *reason)
                .map(|e| e.t)
                .collect();
            for (w, n) in cluster(times, EVENT_GAP_S) {
                event_windows.push(json!({"kind": kind, "reason": reason,
                    "from": round1(w.start), "to": round1(w.end), "count": n}));
            }
        }
    }
    let silent = get(&c.silent_gaps) + get(&c.unannounced_epoch_changes);
    let gone = series.iter().any(|s| s.gone_at.is_some());
    let clean = silent == 0
        && get(&c.duplicates) == 0
        && missing("outside") == 0
        && missing("untold") == 0
        && !gone
        && head.1 == trackers.len() as u64;
    let summary = json!({
        "kind": "summary",
        "clean": clean,
        "duration_s": config.duration.as_secs_f64(),
        "clients": config.clients,
        "rate": config.rate,
        "churn_per_s": config.churn,
        "processes": series,
        "totals": {
            "published": entries.len(),
            "acked": count_outcome(|o| matches!(o, Outcome::Acked(_))),
            "refused": count_outcome(|o| matches!(o, Outcome::Refused(_))),
            "unanswered": count_outcome(|o| matches!(o, Outcome::Unanswered | Outcome::Pending)),
            "deliveries": get(&c.deliveries),
            "recovered_publications": get(&c.recovered_publications),
            "reconnects": get(&c.reconnects),
            "churn_closes": get(&c.churn_closes),
            "dropped": get(&c.dropped),
            "connect_failures": get(&c.connect_failures),
            "answer_timeouts": get(&c.answer_timeouts),
            "subscribe_errors": get(&c.subscribe_errors),
            "recoveries": get(&c.recoveries),
            "overflow_resubscribes": get(&c.overflow_resubscribes),
            "unavailable_frames": get(&c.unavailable_frames),
            "unexpected_frames": get(&c.unexpected_frames),
            "skipped_publishes": get(&c.skipped_publishes),
            "publish_rate": round1(entries.len() as f64 / config.duration.as_secs_f64()),
        },
        "events": by_reason,
        "event_windows": event_windows,
        "events_per_second": per_second,
        "silent_gaps": get(&c.silent_gaps),
        "unannounced_epoch_changes": get(&c.unannounced_epoch_changes),
        "gap_details": *lock(&shared.gaps),
        "duplicates": get(&c.duplicates),
        "refused_but_delivered": refused_but_delivered,
        "missing": {
            "inside_windows": missing("inside"),
            "outside_windows": missing("outside"),
            "untold": missing("untold"),
            "untold_outside_windows": missing("untold_outside"),
            "outside_derived_windows": missing("outside_derived"),
            "windows_source": windows_source,
            "declared_windows": declared,
            "derived_windows": derived,
            "grace_s": grace,
            "before_s": BEFORE_S,
            "outside_details": outside_details,
            "per_second_acked": missing_per_second,
        },
        "end": {
            "clients_returned": trackers.len(),
            "subscribed_at_stop": head.0,
            "at_head": head.1,
            "head": head.2,
            "behind": head.3,
        },
    });
    (summary, clean)
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn describe(seq: usize, entry: &Entry, clients: u64, untold: u64) -> Value {
    let acked = match entry.outcome {
        Outcome::Acked(t) => Some(round1(t)),
        _ => None,
    };
    json!({"seq": seq, "sent_s": round1(entry.sent_s), "acked_s": acked,
        "clients_missing": clients, "clients_not_told": untold})
}

/// `(subscribed at stop, at the head, head position, a few behind)`: the head is the highest
/// offset in the epoch most clients ended in.
fn head_check(trackers: &[Tracker]) -> (u64, u64, Value, Vec<Value>) {
    let mut per_epoch: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for t in trackers.iter().filter(|t| t.subscribed_at_stop) {
        if let Some((offset, epoch)) = &t.position {
            let e = per_epoch.entry(epoch).or_default();
            e.0 += 1;
            e.1 = e.1.max(*offset);
        }
    }
    let Some((epoch, (_, head))) = per_epoch.iter().max_by_key(|(_, (n, _))| *n) else {
        return (0, 0, Value::Null, Vec::new());
    };
    let subscribed = trackers.iter().filter(|t| t.subscribed_at_stop).count() as u64;
    let mut at_head = 0;
    let mut behind = Vec::new();
    for t in trackers {
        match &t.position {
            Some((o, e)) if t.subscribed_at_stop && o == head && e == epoch => at_head += 1,
            position if behind.len() < 10 => behind.push(json!({
                "client": t.index, "subscribed": t.subscribed_at_stop, "position": position,
            })),
            _ => {}
        }
    }
    (
        subscribed,
        at_head,
        json!({"offset": head, "epoch": epoch}),
        behind,
    )
}
