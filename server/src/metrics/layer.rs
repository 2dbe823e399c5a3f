//! [`MeteredLayer`]: the layer wrapper that counts every layer operation,
//! its errors and its latency into [`Metrics`].

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use channels_core::{ChannelLayer, LayerError, LayerStats, Message, Receiver, SharedLayer};

use super::{Metrics, Op};

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
        self.metrics.observe_op(op, started.elapsed());
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

    async fn open(&self, channel: &str) -> Result<Receiver, LayerError> {
        let result = self.inner.open(channel).await;
        self.metrics.record_op(Op::Receive, result.is_err());
        result
    }

    async fn new_receiver(&self, prefix: &str) -> Result<Receiver, LayerError> {
        let started = Instant::now();
        let result = self.inner.new_receiver(prefix).await;
        self.timed(Op::NewChannel, started, result)
    }

    fn extensions(&self) -> &[&'static str] {
        self.inner.extensions()
    }

    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn stats(&self) -> LayerStats {
        self.inner.stats()
    }

    fn history(&self) -> Option<std::sync::Arc<dyn channels_core::HistoryStore>> {
        self.inner.history()
    }
}
