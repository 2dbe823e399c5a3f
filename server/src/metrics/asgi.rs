//! [`AsgiMetrics`]: what the ASGI pass-through counts (docs/protocol.md,
//! "ASGI workers"): live workers, events sent to them, the connections
//! closed because a worker was missing, gone or busy, and the upgrades
//! refused because the application was slow to accept or refused.

use std::sync::atomic::AtomicI64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The ASGI pass-through's counters.
#[derive(Debug, Default)]
pub struct AsgiMetrics {
    workers: Gauge<i64, AtomicI64>,
    events_sent: Counter,
    events_failed: Counter,
    worker_busy: Counter,
    worker_lost: Counter,
    no_worker: Counter,
    accept_timeouts: Counter,
    rejected: Counter,
}

impl AsgiMetrics {
    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register(
            "channels_asgi_workers",
            "Live ASGI workers this process has heard heartbeats from",
            self.workers.clone(),
        );
        registry.register(
            "channels_asgi_events",
            "ASGI events and dispatched layer messages sent to ASGI workers",
            self.events_sent.clone(),
        );
        registry.register(
            "channels_asgi_events_failed",
            "ASGI events not sent to a worker because the channel layer failed (closed with 1011)",
            self.events_failed.clone(),
        );
        registry.register(
            "channels_asgi_worker_busy",
            "Connections closed with 4009 because their worker's channel was full",
            self.worker_busy.clone(),
        );
        registry.register(
            "channels_asgi_worker_lost",
            "Connections closed with 4005 because their worker went away",
            self.worker_lost.clone(),
        );
        registry.register(
            "channels_asgi_no_worker",
            "Connections closed with 4006 because no worker was live",
            self.no_worker.clone(),
        );
        registry.register(
            "channels_asgi_accept_timeouts",
            "Upgrades answered 504 because the application did not accept in time",
            self.accept_timeouts.clone(),
        );
        registry.register(
            "channels_asgi_rejected",
            "Upgrades refused because the application closed before accepting (403), raised (500) \
             or chose a subprotocol the client did not offer (500)",
            self.rejected.clone(),
        );
    }

    pub(crate) fn set_workers(&self, live: usize) {
        self.workers.set(i64::try_from(live).unwrap_or(i64::MAX));
    }

    pub(crate) fn event_sent(&self) {
        self.events_sent.inc();
    }

    pub(crate) fn event_failed(&self) {
        self.events_failed.inc();
    }

    pub(crate) fn worker_busy(&self) {
        self.worker_busy.inc();
    }

    pub(crate) fn worker_lost(&self) {
        self.worker_lost.inc();
    }

    pub(crate) fn no_worker(&self) {
        self.no_worker.inc();
    }

    pub(crate) fn accept_timed_out(&self) {
        self.accept_timeouts.inc();
    }

    pub(crate) fn rejected(&self) {
        self.rejected.inc();
    }
}
