//! [`HistoryMetrics`]: what group histories count (docs/protocol.md,
//! "History and recovery"): groups relayed by this process, recoveries by
//! result, `lost` notices by reason, and failed syncs.

use std::sync::atomic::AtomicI64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Every `result` of `channels_history_recoveries_total`.
pub(crate) const RECOVERY_RESULTS: [&str; 5] = [
    "recovered",
    "no_position",
    "epoch_changed",
    "too_old",
    "failed",
];

/// Every `reason` of `channels_history_lost_total`.
pub(crate) const LOST_REASONS: [&str; 3] = ["epoch_changed", "too_old", "overflow"];

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// The history relay's counters.
#[derive(Debug, Default)]
pub struct HistoryMetrics {
    groups: Gauge<i64, AtomicI64>,
    recoveries: Family<ResultLabel, Counter>,
    lost: Family<ReasonLabel, Counter>,
    delivered: Counter,
    sync_errors: Counter,
}

impl HistoryMetrics {
    /// Fresh counters, every labelled series present at 0.
    pub(crate) fn new() -> Self {
        let metrics = Self::default();
        for result in RECOVERY_RESULTS {
            drop(metrics.recoveries.get_or_create(&ResultLabel { result }));
        }
        for reason in LOST_REASONS {
            drop(metrics.lost.get_or_create(&ReasonLabel { reason }));
        }
        metrics
    }

    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register(
            "channels_history_groups",
            "Groups with history this process relays to its connections",
            self.groups.clone(),
        );
        registry.register(
            "channels_history_recoveries",
            "Subscribes to a group with history, by result (recovered, or why not)",
            self.recoveries.clone(),
        );
        registry.register(
            "channels_history_lost",
            "`lost` notices sent to connections (they may have missed messages), by reason",
            self.lost.clone(),
        );
        registry.register(
            "channels_history_delivered",
            "Kept messages handed to connections (live, after their offset was assigned)",
            self.delivered.clone(),
        );
        registry.register(
            "channels_history_sync_errors",
            "Failed history syncs (the channel layer failed; retried)",
            self.sync_errors.clone(),
        );
    }

    pub(crate) fn set_groups(&self, groups: usize) {
        self.groups.set(i64::try_from(groups).unwrap_or(i64::MAX));
    }

    pub(crate) fn recovery(&self, result: &'static str) {
        self.recoveries.get_or_create(&ResultLabel { result }).inc();
    }

    pub(crate) fn lost(&self, reason: &'static str) {
        self.lost.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// `lost` notices counted for `reason` (for tests).
    #[cfg(test)]
    pub(crate) fn lost_count(&self, reason: &'static str) -> u64 {
        self.lost.get_or_create(&ReasonLabel { reason }).get()
    }

    pub(crate) fn delivered(&self, messages: u64) {
        self.delivered.inc_by(messages);
    }

    pub(crate) fn sync_error(&self) {
        self.sync_errors.inc();
    }
}
