//! Prometheus metrics: [`Metrics`] (counters and histograms, rendered as the
//! text exposition format at `GET /metrics`) and [`MeteredLayer`], the layer
//! wrapper that counts every layer operation, its errors and its latency.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use async_trait::async_trait;
use channels_core::consumer::{ConsumerStats, Histogram};
use channels_core::{ChannelLayer, LayerError, Message, SharedLayer};

/// The layer operations counted, in [`Metrics`] order.
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
pub enum Refusal {
    /// The origin is not allowed (403).
    Origin = 0,
    /// The connection limit is reached (503).
    Limit = 1,
    /// Authentication failed (401).
    Auth = 2,
}

const REFUSALS: [&str; 3] = ["origin", "limit", "auth"];
const PUBLISH_STATUSES: [u16; 6] = [202, 400, 401, 413, 503, 500];

/// Every metric the server exports. One per [`crate::App`].
#[derive(Debug, Default)]
pub struct Metrics {
    /// The per-connection runtime's counters.
    pub consumers: Arc<ConsumerStats>,
    layer_ops: [AtomicU64; OPS.len()],
    layer_errors: [AtomicU64; OPS.len()],
    layer_latency: Histogram,
    refusals: [AtomicU64; REFUSALS.len()],
    publish: [AtomicU64; PUBLISH_STATUSES.len()],
    publish_latency: Histogram,
}

impl Metrics {
    fn record_op(&self, op: Op, failed: bool) {
        self.layer_ops[op as usize].fetch_add(1, Ordering::Relaxed);
        if failed {
            self.layer_errors[op as usize].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a refused WebSocket.
    pub fn refuse(&self, why: Refusal) {
        self.refusals[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a publish API answer and its latency.
    pub fn published(&self, status: u16, started: Instant) {
        if let Some(index) = PUBLISH_STATUSES.iter().position(|s| *s == status) {
            self.publish[index].fetch_add(1, Ordering::Relaxed);
        }
        self.publish_latency.observe(started.elapsed());
    }

    /// Renders every metric in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let c = &self.consumers;
        let gauge = |out: &mut String, name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        };
        let counter = |out: &mut String, name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        };
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        gauge(
            &mut out,
            "channels_connections_open",
            "WebSocket connections open now.",
            get(&c.connections_open),
        );
        counter(
            &mut out,
            "channels_connections_accepted_total",
            "WebSocket connections accepted.",
            get(&c.connections_accepted),
        );
        counter(
            &mut out,
            "channels_connections_rejected_total",
            "WebSocket connections rejected by a consumer (403).",
            get(&c.connections_rejected),
        );
        let _ = writeln!(
            out,
            "# HELP channels_connections_refused_total WebSocket upgrades refused before a consumer ran.\n# TYPE channels_connections_refused_total counter"
        );
        for (reason, value) in REFUSALS.iter().zip(&self.refusals) {
            let _ = writeln!(
                out,
                "channels_connections_refused_total{{reason=\"{reason}\"}} {}",
                get(value)
            );
        }
        counter(
            &mut out,
            "channels_frames_in_total",
            "Data frames received from clients.",
            get(&c.frames_in),
        );
        counter(
            &mut out,
            "channels_frames_out_total",
            "Data frames queued to clients.",
            get(&c.frames_out),
        );
        counter(
            &mut out,
            "channels_messages_in_total",
            "Channel-layer messages dispatched to consumers.",
            get(&c.messages_in),
        );
        counter(
            &mut out,
            "channels_messages_invalid_total",
            "Layer messages dropped for a missing or private type.",
            get(&c.messages_invalid),
        );
        counter(
            &mut out,
            "channels_queue_drops_total",
            "Frames dropped because a client's outbound queue was full (each closed with 1013).",
            get(&c.queue_drops),
        );
        counter(
            &mut out,
            "channels_consumer_errors_total",
            "Consumer methods that failed.",
            get(&c.consumer_errors),
        );
        counter(
            &mut out,
            "channels_runtime_layer_errors_total",
            "Layer errors seen by connection runtimes.",
            get(&c.layer_errors),
        );
        let _ = writeln!(
            out,
            "# HELP channels_layer_ops_total Channel layer operations.\n# TYPE channels_layer_ops_total counter"
        );
        for (op, value) in OPS.iter().zip(&self.layer_ops) {
            let _ = writeln!(
                out,
                "channels_layer_ops_total{{op=\"{op}\"}} {}",
                get(value)
            );
        }
        let _ = writeln!(
            out,
            "# HELP channels_layer_errors_total Channel layer operations that failed.\n# TYPE channels_layer_errors_total counter"
        );
        for (op, value) in OPS.iter().zip(&self.layer_errors) {
            let _ = writeln!(
                out,
                "channels_layer_errors_total{{op=\"{op}\"}} {}",
                get(value)
            );
        }
        let _ = writeln!(
            out,
            "# HELP channels_publish_requests_total Publish API requests by status.\n# TYPE channels_publish_requests_total counter"
        );
        for (status, value) in PUBLISH_STATUSES.iter().zip(&self.publish) {
            let _ = writeln!(
                out,
                "channels_publish_requests_total{{status=\"{status}\"}} {}",
                get(value)
            );
        }
        histogram(
            &mut out,
            "channels_layer_op_duration_seconds",
            "Latency of layer operations other than receive.",
            &self.layer_latency,
        );
        histogram(
            &mut out,
            "channels_handle_duration_seconds",
            "Time a consumer takes to handle one frame or message.",
            &c.handle_latency,
        );
        histogram(
            &mut out,
            "channels_publish_duration_seconds",
            "Latency of publish API requests.",
            &self.publish_latency,
        );
        out
    }
}

fn histogram(out: &mut String, name: &str, help: &str, histogram: &Histogram) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (bound, count) in histogram.cumulative_buckets() {
        let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {count}");
    }
    let count = histogram.count();
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
    let _ = writeln!(out, "{name}_sum {}", histogram.sum_seconds());
    let _ = writeln!(out, "{name}_count {count}");
}

/// A layer that forwards to another and counts each operation, its errors,
/// and (except `receive`, which waits by design) its latency.
#[derive(Debug)]
pub struct MeteredLayer {
    inner: SharedLayer,
    metrics: Arc<Metrics>,
}

impl MeteredLayer {
    /// Wraps `inner`, recording into `metrics`.
    pub fn new(inner: SharedLayer, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }

    fn timed<T>(
        &self,
        op: Op,
        started: Instant,
        result: Result<T, LayerError>,
    ) -> Result<T, LayerError> {
        self.metrics.layer_latency.observe(started.elapsed());
        self.metrics.record_op(op, result.is_err());
        result
    }
}

#[async_trait]
impl ChannelLayer for MeteredLayer {
    async fn send(&self, channel: &str, message: Message) -> Result<(), LayerError> {
        let started = Instant::now();
        let result = self.inner.send(channel, message).await;
        self.timed(Op::Send, started, result)
    }

    async fn receive(&self, channel: &str) -> Result<Message, LayerError> {
        // Cancel-safe: if this future is dropped mid-wait, so is the inner one,
        // which is cancel-safe itself, and nothing is recorded.
        let result = self.inner.receive(channel).await;
        self.metrics.record_op(Op::Receive, result.is_err());
        result
    }

    async fn new_channel(&self, prefix: &str) -> Result<String, LayerError> {
        let started = Instant::now();
        let result = self.inner.new_channel(prefix).await;
        self.timed(Op::NewChannel, started, result)
    }

    async fn group_add(&self, group: &str, channel: &str) -> Result<(), LayerError> {
        let started = Instant::now();
        let result = self.inner.group_add(group, channel).await;
        self.timed(Op::GroupAdd, started, result)
    }

    async fn group_discard(&self, group: &str, channel: &str) -> Result<(), LayerError> {
        let started = Instant::now();
        let result = self.inner.group_discard(group, channel).await;
        self.timed(Op::GroupDiscard, started, result)
    }

    async fn group_send(&self, group: &str, message: Message) -> Result<(), LayerError> {
        let started = Instant::now();
        let result = self.inner.group_send(group, message).await;
        self.timed(Op::GroupSend, started, result)
    }

    async fn flush(&self) -> Result<(), LayerError> {
        let started = Instant::now();
        let result = self.inner.flush().await;
        self.timed(Op::Flush, started, result)
    }

    async fn close(&self) -> Result<(), LayerError> {
        let started = Instant::now();
        let result = self.inner.close().await;
        self.timed(Op::Close, started, result)
    }

    async fn release_channel(&self, channel: &str) -> Result<(), LayerError> {
        self.inner.release_channel(channel).await
    }

    fn extensions(&self) -> &[&'static str] {
        self.inner.extensions()
    }
}
