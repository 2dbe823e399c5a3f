//! [`PresenceMetrics`]: what presence (`--presence`) counts: entries of dead
//! processes removed, entries written again after this process's liveness
//! was lost, store operations that failed (by operation), and
//! join/leave events that could not be published.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// The operations of `channels_presence_errors_total`.
pub(crate) const OPERATIONS: [&str; 5] = ["join", "leave", "read", "heartbeat", "close"];

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OperationLabel {
    operation: &'static str,
}

/// Presence's counters; every series present at 0 from the start.
#[derive(Debug, Default)]
pub struct PresenceMetrics {
    reaped: Counter,
    restored: Counter,
    errors: Family<OperationLabel, Counter>,
    events_failed: Counter,
}

impl PresenceMetrics {
    /// Fresh counters, every operation's error series at 0.
    pub(crate) fn new() -> Self {
        let metrics = Self::default();
        for operation in OPERATIONS {
            drop(metrics.errors.get_or_create(&OperationLabel { operation }));
        }
        metrics
    }

    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register(
            "channels_presence_reaped",
            "Presence entries of dead processes (liveness expired) removed by this process",
            self.reaped.clone(),
        );
        registry.register(
            "channels_presence_restored",
            "This process's presence entries written again after the store lost its liveness (Redis away over 15 s, restarted or flushed)",
            self.restored.clone(),
        );
        registry.register(
            "channels_presence_errors",
            "Presence store operations that failed (the join or leave itself went on), by operation",
            self.errors.clone(),
        );
        registry.register(
            "channels_presence_events_failed",
            "Presence join/leave events the channel layer did not take",
            self.events_failed.clone(),
        );
    }

    /// Counts `count` entries of dead processes removed.
    pub(crate) fn reaped(&self, count: usize) {
        self.reaped.inc_by(count as u64);
    }

    /// Counts `count` entries written again after a lost liveness.
    pub(crate) fn restored(&self, count: usize) {
        self.restored.inc_by(count as u64);
    }

    /// Counts a failed store operation (one of [`OPERATIONS`]).
    pub(crate) fn failed(&self, operation: &'static str) {
        self.errors
            .get_or_create(&OperationLabel { operation })
            .inc();
    }

    /// Counts an event the layer did not take.
    pub(crate) fn event_failed(&self) {
        self.events_failed.inc();
    }
}
