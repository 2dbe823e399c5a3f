//! [`GatewayMetrics`]: what the gateway counts (docs/protocol.md): refused
//! tokens by reason, error frames by code, the closes it decides, client
//! subscriptions and publishes, and the events forwarded to a backend
//! worker (sent, and dropped because its channel was full).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// The close codes counted in `channels_gateway_closes_total`: those the
/// gateway decides (bad frames, tokens, backend disconnects).
pub(crate) const COUNTED_CLOSES: [u16; 5] = [1007, 1009, 4001, 4002, 4004];

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CodeLabel {
    code: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CloseLabel {
    code: u16,
}

/// The gateway's counters (cheap atomics; the labelled ones have a fixed set
/// of label values, all present from the start).
#[derive(Debug, Default)]
pub struct GatewayMetrics {
    auth_failures: Family<ReasonLabel, Counter>,
    errors: Family<CodeLabel, Counter>,
    closes: Family<CloseLabel, Counter>,
    subscriptions: Counter,
    publishes: Counter,
    forward_sent: Counter,
    forward_dropped: Counter,
}

impl GatewayMetrics {
    /// Every labelled series at 0: `reasons` and `codes` are the label values.
    pub(crate) fn new(reasons: &[&'static str], codes: &[&'static str]) -> Self {
        let metrics = Self::default();
        for reason in reasons {
            drop(metrics.auth_failures.get_or_create(&ReasonLabel { reason }));
        }
        for code in codes {
            drop(metrics.errors.get_or_create(&CodeLabel { code }));
        }
        for code in COUNTED_CLOSES {
            drop(metrics.closes.get_or_create(&CloseLabel { code }));
        }
        metrics
    }

    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register(
            "channels_gateway_auth_failures",
            "Tokens the gateway refused, by reason",
            self.auth_failures.clone(),
        );
        registry.register(
            "channels_gateway_errors",
            "Error frames the gateway sent, by protocol error code",
            self.errors.clone(),
        );
        registry.register(
            "channels_gateway_closes",
            "Connections the gateway closed for bad frames (1007, 1009), tokens (4001, 4002) or the backend (4004), by code",
            self.closes.clone(),
        );
        registry.register(
            "channels_gateway_subscriptions",
            "Client subscribe requests that joined a group",
            self.subscriptions.clone(),
        );
        registry.register(
            "channels_gateway_publishes",
            "Client publish requests sent to a group",
            self.publishes.clone(),
        );
        registry.register(
            "channels_forward_events",
            "ASGI events sent to the forward channel",
            self.forward_sent.clone(),
        );
        registry.register(
            "channels_forward_dropped",
            "ASGI events not delivered to the forward channel (full, or the layer failed)",
            self.forward_dropped.clone(),
        );
    }

    /// Counts a refused token.
    pub(crate) fn auth_failed(&self, reason: &'static str) {
        self.auth_failures
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// Counts an error frame.
    pub(crate) fn error_sent(&self, code: &'static str) {
        self.errors.get_or_create(&CodeLabel { code }).inc();
    }

    /// Counts a close, when its code is one of [`COUNTED_CLOSES`].
    pub(crate) fn closed(&self, code: u16) {
        if COUNTED_CLOSES.contains(&code) {
            self.closes.get_or_create(&CloseLabel { code }).inc();
        }
    }

    /// Counts a subscription.
    pub(crate) fn subscribed(&self) {
        self.subscriptions.inc();
    }

    /// Counts a publish.
    pub(crate) fn published(&self) {
        self.publishes.inc();
    }

    /// Counts a forwarded event.
    pub(crate) fn forwarded(&self) {
        self.forward_sent.inc();
    }

    /// Counts an event the forward channel did not take.
    pub(crate) fn forward_dropped(&self) {
        self.forward_dropped.inc();
    }
}
