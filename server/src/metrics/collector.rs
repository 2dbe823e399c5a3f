//! [`ServerCollector`]: encodes the atomics and lock-free histograms of
//! [`Metrics`] and the layer's drop counters at scrape time.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use channels_core::SharedLayer;
use channels_core::consumer::Histogram;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use super::{Metrics, OPS};

/// Reads [`Metrics`] and the layer's [`channels_core::LayerStats`] on every scrape.
#[derive(Debug)]
pub(super) struct ServerCollector {
    metrics: Arc<Metrics>,
    layer: SharedLayer,
}

impl ServerCollector {
    pub(super) fn new(metrics: Arc<Metrics>, layer: SharedLayer) -> Self {
        Self { metrics, layer }
    }
}

fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// One unlabelled counter (`name` without `_total`; the encoder adds it).
fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), fmt::Error> {
    encoder
        .encode_descriptor(name, help, None, MetricType::Counter)?
        .encode_counter::<NoLabelSet, _, u64>(&value, None)
}

/// A counter with one label, a series per `(label value, count)`.
fn counter_family<'a>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    series: impl IntoIterator<Item = (&'a str, u64)>,
) -> Result<(), fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value, count) in series {
        let labels: &[(&str, &str)] = &[(label, value)];
        family
            .encode_family(&labels)?
            .encode_counter::<NoLabelSet, _, u64>(&count, None)?;
    }
    Ok(())
}

/// A lock-free [`Histogram`]'s buckets as the encoder wants them: per bucket
/// (not cumulative), `+Inf` last.
fn buckets(histogram: &Histogram) -> (f64, u64, Vec<(f64, u64)>) {
    let count = histogram.count();
    let mut previous = 0;
    let mut buckets: Vec<(f64, u64)> = histogram
        .cumulative_buckets()
        .into_iter()
        .map(|(bound, cumulative)| {
            let here = cumulative.saturating_sub(previous);
            previous = cumulative;
            (bound, here)
        })
        .collect();
    buckets.push((f64::INFINITY, count.saturating_sub(previous)));
    (histogram.sum_seconds(), count, buckets)
}

fn histogram(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    histogram: &Histogram,
) -> Result<(), fmt::Error> {
    let (sum, count, buckets) = buckets(histogram);
    encoder
        .encode_descriptor(name, help, None, MetricType::Histogram)?
        .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
}

impl Collector for ServerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let c = &self.metrics.consumers;
        let e = &mut encoder;
        e.encode_descriptor(
            "channels_connections_open",
            "WebSocket connections open now",
            None,
            MetricType::Gauge,
        )?
        .encode_gauge(&get(&c.connections_open))?;
        e.encode_descriptor(
            "channels_connections_held_back",
            "Connections the server is behind for (outbound queue past its bounds with a free socket): their layer messages wait",
            None,
            MetricType::Gauge,
        )?
        .encode_gauge(&get(&c.held_back))?;
        counter_family(
            e,
            "channels_publish_backpressure",
            "Publishes (consumer group_send, HTTP API) that waited for an overloaded server, by outcome (timed_out: still overloaded after the wait; the API then answered 503)",
            "outcome",
            [
                (
                    "waited",
                    get(&c.backpressure_waits).saturating_sub(get(&c.backpressure_timeouts)),
                ),
                ("timed_out", get(&c.backpressure_timeouts)),
            ],
        )?;
        counter(
            e,
            "channels_connections_accepted",
            "WebSocket connections accepted",
            get(&c.connections_accepted),
        )?;
        counter(
            e,
            "channels_connections_rejected",
            "WebSocket connections rejected by a consumer (403)",
            get(&c.connections_rejected),
        )?;
        counter(
            e,
            "channels_frames_in",
            "Data frames received from clients",
            get(&c.frames_in),
        )?;
        counter(
            e,
            "channels_frames_out",
            "Data frames queued to clients (counted once per connection wake-up)",
            get(&c.frames_out),
        )?;
        counter(
            e,
            "channels_messages_in",
            "Channel-layer messages dispatched to consumers",
            get(&c.messages_in),
        )?;
        counter(
            e,
            "channels_messages_invalid",
            "Layer messages dropped for a missing or private type",
            get(&c.messages_invalid),
        )?;
        counter(
            e,
            "channels_queue_drops",
            "Frames dropped because a client's outbound queue was full (each closed with 1013)",
            get(&c.queue_drops),
        )?;
        counter(
            e,
            "channels_frames_rate_limited",
            "Client frames dropped for going over the per-client rate limit",
            get(&c.frames_rate_limited),
        )?;
        counter_family(
            e,
            "channels_slow_client_closes",
            "Connections ended because the client read too slowly: its outbound queue filled (close 1013 when its socket had room) or a write timed out (the TCP connection dropped)",
            "reason",
            [
                ("queue_full", get(&c.queue_drops)),
                ("write_timeout", get(&c.write_timeouts)),
            ],
        )?;
        counter(
            e,
            "channels_flood_closes",
            "Connections closed with 4029 for sending far over the rate limit",
            get(&c.flood_closes),
        )?;
        counter(
            e,
            "channels_consumer_errors",
            "Consumer methods that failed",
            get(&c.consumer_errors),
        )?;
        counter(
            e,
            "channels_runtime_layer_errors",
            "Layer errors seen by connection runtimes",
            get(&c.layer_errors),
        )?;
        let m = &self.metrics;
        counter_family(
            e,
            "channels_layer_ops",
            "Channel layer operations",
            "op",
            OPS.iter().zip(&m.layer_ops).map(|(op, n)| (*op, get(n))),
        )?;
        counter_family(
            e,
            "channels_layer_errors",
            "Channel layer operations that failed",
            "op",
            OPS.iter().zip(&m.layer_errors).map(|(op, n)| (*op, get(n))),
        )?;
        let stats = self.layer.stats();
        counter_family(
            e,
            "channels_layer_dropped",
            "Messages the channel layer could not deliver, by reason",
            "reason",
            [
                ("full", stats.dropped_full),
                ("expired", stats.dropped_expired),
                ("undecodable", stats.undecodable),
            ],
        )?;
        {
            let mut family = e.encode_descriptor(
                "channels_layer_op_duration_seconds",
                "Latency of layer operations by operation (receive, which waits by design, is not timed)",
                None,
                MetricType::Histogram,
            )?;
            for (op, latency) in OPS.iter().zip(&m.layer_latency) {
                if *op == "receive" {
                    continue;
                }
                let (sum, count, buckets) = buckets(latency);
                let labels: &[(&str, &str)] = &[("op", op)];
                family
                    .encode_family(&labels)?
                    .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
            }
        }
        histogram(
            e,
            "channels_handle_duration_seconds",
            "Time a consumer takes to handle one frame or message",
            &c.handle_latency,
        )?;
        histogram(
            e,
            "channels_publish_duration_seconds",
            "Latency of publish API requests",
            &m.publish_latency,
        )
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn buckets_are_per_bucket_with_inf_last() {
        let histogram = Histogram::default();
        histogram.observe(Duration::from_micros(50));
        histogram.observe(Duration::from_millis(3));
        histogram.observe(Duration::from_secs(10));
        let (sum, count, buckets) = buckets(&histogram);
        assert_eq!(count, 3);
        assert!((sum - 10.00305).abs() < 1e-9);
        assert_eq!(buckets.iter().map(|b| b.1).sum::<u64>(), 3);
        assert_eq!(buckets.last(), Some(&(f64::INFINITY, 1)));
        assert_eq!(buckets[0], (0.0001, 1));
    }
}
