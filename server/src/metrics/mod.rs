//! Prometheus metrics with `prometheus-client`: [`Metrics`] (what the server
//! counts), registered into one [`Registry`] per [`crate::App`] and rendered
//! at `GET /metrics`, plus [`MeteredLayer`], the layer wrapper that counts
//! every layer operation, its errors and its latency.
//!
//! The hot-path counters (per connection, per layer operation) stay plain
//! atomics and lock-free [`Histogram`]s that a collector reads at scrape
//! time; rarely touched ones (refusals, publish statuses) are
//! `prometheus-client` families. `benches/histogram.rs` measures why (on
//! the 2-core dev machine): one observation takes 12 ns in the lock-free
//! histogram against 23 ns in `prometheus-client`'s mutex-guarded one, and
//! 26 ns against 45 ns with two threads recording at once.

mod asgi;
mod collector;
mod gateway;
mod history;
mod layer;
mod presence;
mod process;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use channels_core::SharedLayer;
use channels_core::consumer::{ConsumerStats, Histogram};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

pub use asgi::AsgiMetrics;
pub use gateway::GatewayMetrics;
pub use history::HistoryMetrics;
pub use layer::MeteredLayer;
pub use presence::PresenceMetrics;
pub use process::ProcessCollector;

use collector::ServerCollector;

/// The layer operations counted, in [`Op`] order.
const OPS: [&str; 8] = [
    "send",
    "receive",
    "new_channel",
    "group_add",
    "group_discard",
    "group_send",
    "flush",
    "close",
];

/// A layer operation, an index into [`OPS`].
#[derive(Debug, Clone, Copy)]
enum Op {
    Send = 0,
    Receive = 1,
    NewChannel = 2,
    GroupAdd = 3,
    GroupDiscard = 4,
    GroupSend = 5,
    Flush = 6,
    Close = 7,
}

/// Why the server refused a WebSocket before it reached a consumer.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Refusal {
    /// The origin is not allowed (403).
    Origin,
    /// The connection limit is reached (503).
    Limit,
    /// Authentication failed (401).
    Auth,
    /// The client address opened connections faster than `--connection-rate` (429).
    Rate,
}

impl Refusal {
    const ALL: [Self; 4] = [Self::Origin, Self::Limit, Self::Auth, Self::Rate];

    fn label(self) -> &'static str {
        match self {
            Self::Origin => "origin",
            Self::Limit => "limit",
            Self::Auth => "auth",
            Self::Rate => "rate",
        }
    }
}

/// The statuses the HTTP API answers with.
const PUBLISH_STATUSES: [u16; 11] = [200, 202, 400, 401, 404, 405, 413, 415, 503, 500, 501];

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct EndpointLabel {
    endpoint: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StatusLabel {
    status: u16,
}

/// Every metric the server records. One per [`crate::App`]; two apps in one
/// process share nothing.
#[derive(Debug, Default)]
pub struct Metrics {
    /// The per-connection runtime's counters.
    pub consumers: Arc<ConsumerStats>,
    layer_ops: [AtomicU64; OPS.len()],
    layer_errors: [AtomicU64; OPS.len()],
    layer_latency: [Histogram; OPS.len()],
    refusals: Family<ReasonLabel, Counter>,
    publish: Family<StatusLabel, Counter>,
    publish_latency: Histogram,
    api_calls: Family<EndpointLabel, Counter>,
    /// The gateway's counters.
    pub gateway: GatewayMetrics,
    /// The ASGI pass-through's counters.
    pub asgi: Arc<AsgiMetrics>,
    /// Presence's counters (`--presence`).
    pub presence: PresenceMetrics,
    /// The history relay's counters.
    pub history: Arc<HistoryMetrics>,
}

impl Metrics {
    /// Fresh metrics, every labelled series present at 0.
    pub fn new() -> Self {
        let reasons = crate::gateway::AUTH_FAILURE_REASONS;
        let codes = crate::gateway::ERROR_CODES;
        let metrics = Self {
            gateway: GatewayMetrics::new(&reasons, &codes),
            presence: PresenceMetrics::new(),
            history: Arc::new(HistoryMetrics::new()),
            ..Self::default()
        };
        for refusal in Refusal::ALL {
            drop(metrics.refusals.get_or_create(&ReasonLabel {
                reason: refusal.label(),
            }));
        }
        for status in PUBLISH_STATUSES {
            drop(metrics.publish.get_or_create(&StatusLabel { status }));
        }
        metrics
    }

    /// Registers every server metric into `registry`: these counters, the
    /// drop counters of `layer` (read from [`channels_core::ChannelLayer::stats`]
    /// at scrape time), process metrics and `channels_build_info`.
    pub fn register(self: &Arc<Self>, registry: &mut Registry, layer: SharedLayer) {
        registry.register(
            "channels_connections_refused",
            "WebSocket upgrades refused before a consumer ran",
            self.refusals.clone(),
        );
        registry.register(
            "channels_publish_requests",
            "HTTP API (publish and control) answers by status",
            self.publish.clone(),
        );
        registry.register(
            "channels_api_requests",
            "HTTP API calls by endpoint (route)",
            self.api_calls.clone(),
        );
        registry.register(
            "channels_build",
            "The channels-server version",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        self.gateway.register(registry);
        self.asgi.register(registry);
        self.presence.register(registry);
        self.history.register(registry);
        registry.register_collector(Box::new(ServerCollector::new(self.clone(), layer)));
        registry.register_collector(Box::new(ProcessCollector));
    }

    fn record_op(&self, op: Op, failed: bool) {
        self.layer_ops[op as usize].fetch_add(1, Ordering::Relaxed);
        if failed {
            self.layer_errors[op as usize].fetch_add(1, Ordering::Relaxed);
        }
    }

    fn observe_op(&self, op: Op, elapsed: Duration) {
        self.layer_latency[op as usize].observe(elapsed);
    }

    /// Counts a refused WebSocket.
    pub fn refuse(&self, why: Refusal) {
        self.refusals
            .get_or_create(&ReasonLabel {
                reason: why.label(),
            })
            .inc();
    }

    /// Counts a publish API answer and its latency.
    pub fn published(&self, status: u16, started: Instant) {
        self.publish.get_or_create(&StatusLabel { status }).inc();
        self.publish_latency.observe(started.elapsed());
    }

    /// Counts an HTTP API answer: by status (with its latency, as
    /// [`Metrics::published`]) and by endpoint (its route, or `other`).
    pub(crate) fn api_answered(&self, endpoint: &'static str, status: u16, started: Instant) {
        self.published(status, started);
        self.api_calls
            .get_or_create(&EndpointLabel { endpoint })
            .inc();
    }

    /// Makes the per-endpoint series of `endpoints` present at 0.
    pub(crate) fn api_endpoints(&self, endpoints: &[&'static str]) {
        for &endpoint in endpoints {
            drop(self.api_calls.get_or_create(&EndpointLabel { endpoint }));
        }
    }
}

/// Renders `registry` in the Prometheus text format (version 0.0.4).
pub(crate) fn render(registry: &Registry) -> String {
    let mut out = String::with_capacity(8192);
    // Writing into a String cannot fail; an encoder error would be a bug in
    // a collector, and a partial page is still better than none.
    if let Err(error) = prometheus_client::encoding::prometheus_text::encode(&mut out, registry) {
        tracing::error!(%error, "encoding /metrics failed");
    }
    out
}

/// The `Content-Type` of [`render`]'s output.
pub(crate) const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

#[cfg(test)]
mod tests {
    use super::*;

    fn page(metrics: &Arc<Metrics>) -> String {
        let mut registry = Registry::default();
        let layer: SharedLayer = Arc::new(channels_memory::InMemoryChannelLayer::new());
        metrics.register(&mut registry, layer);
        render(&registry)
    }

    #[test]
    fn every_series_is_present_from_the_start() {
        let text = page(&Arc::new(Metrics::new()));
        for line in [
            "channels_connections_open 0",
            "channels_connections_refused_total{reason=\"rate\"} 0",
            "channels_publish_requests_total{status=\"413\"} 0",
            "channels_layer_ops_total{op=\"group_send\"} 0",
            "channels_layer_dropped_total{reason=\"expired\"} 0",
            "channels_layer_op_duration_seconds_count{op=\"send\"} 0",
            "channels_handle_duration_seconds_bucket{le=\"+Inf\"} 0",
            "channels_gateway_auth_failures_total{reason=\"expired\"} 0",
            "channels_gateway_errors_total{code=\"forbidden\"} 0",
            "channels_gateway_closes_total{code=\"1009\"} 0",
            "channels_gateway_subscriptions_total 0",
            "channels_forward_dropped_total 0",
            "channels_presence_reaped_total 0",
            "channels_presence_errors_total{operation=\"join\"} 0",
        ] {
            assert!(text.contains(line), "`{line}` missing from\n{text}");
        }
        assert!(text.contains(&format!(
            "channels_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )));
    }

    #[test]
    fn two_apps_do_not_share_counters() {
        let one = Arc::new(Metrics::new());
        let two = Arc::new(Metrics::new());
        one.refuse(Refusal::Origin);
        one.record_op(Op::Send, true);
        assert!(page(&one).contains("channels_connections_refused_total{reason=\"origin\"} 1"));
        assert!(page(&one).contains("channels_layer_errors_total{op=\"send\"} 1"));
        assert!(page(&two).contains("channels_connections_refused_total{reason=\"origin\"} 0"));
        assert!(page(&two).contains("channels_layer_errors_total{op=\"send\"} 0"));
    }

    #[test]
    fn latency_is_kept_per_operation() {
        let metrics = Arc::new(Metrics::new());
        metrics.observe_op(Op::GroupSend, Duration::from_millis(3));
        let text = page(&metrics);
        assert!(text.contains("channels_layer_op_duration_seconds_count{op=\"group_send\"} 1"));
        assert!(text.contains("channels_layer_op_duration_seconds_count{op=\"send\"} 0"));
        assert!(
            text.contains(
                "channels_layer_op_duration_seconds_bucket{le=\"0.005\",op=\"group_send\"} 1"
            ) || text.contains(
                "channels_layer_op_duration_seconds_bucket{op=\"group_send\",le=\"0.005\"} 1"
            )
        );
    }
}
