//! Hot paths of the in-memory layer.
//!
//! Run: `cargo bench -p channels-memory --bench memory_layer`
//!
//! - `send_receive`: one send and one receive on a process-local channel.
//! - `group_send/N`: one group_send to N members (delivery into N queues),
//!   timed alone; the queues are drained outside the timed section.
//! - `group_send_and_drain/N`: one group_send plus the N receives that deliver
//!   it, i.e. the full cost of a broadcast through the layer.

use std::time::{Duration, Instant};

use channels_core::{ChannelLayer, LayerConfig, Message};
use channels_memory::InMemoryChannelLayer;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a tokio runtime for the benchmark")
}

fn chat_message() -> Message {
    Message::new("chat.message")
        .with("user", "alice")
        .with("text", "hello, everyone in the room")
}

fn send_receive(c: &mut Criterion) {
    let rt = runtime();
    let layer = InMemoryChannelLayer::new();
    let channel = rt
        .block_on(layer.new_channel("specific"))
        .expect("new_channel");
    let message = chat_message();
    c.bench_function("send_receive", |b| {
        b.to_async(&rt).iter(|| async {
            layer.send(&channel, message.clone()).await.expect("send");
            layer.receive(&channel).await.expect("receive")
        });
    });
}

async fn members(layer: &InMemoryChannelLayer, group: &str, count: usize) -> Vec<String> {
    let mut channels = Vec::with_capacity(count);
    for _ in 0..count {
        let channel = layer.new_channel("specific").await.expect("new_channel");
        layer.group_add(group, &channel).await.expect("group_add");
        channels.push(channel);
    }
    channels
}

fn group_send(c: &mut Criterion) {
    let rt = runtime();
    let mut bench = c.benchmark_group("group_send");
    for count in [10, 1_000, 10_000] {
        let layer = InMemoryChannelLayer::with_config(LayerConfig::default().capacity(1_000_000));
        let channels = rt.block_on(members(&layer, "room", count));
        let message = chat_message();
        bench.throughput(Throughput::Elements(count as u64));
        bench.bench_with_input(BenchmarkId::from_parameter(count), &count, |b, _| {
            b.to_async(&rt).iter_custom(|iters| {
                let layer = layer.clone();
                let channels = channels.clone();
                let message = message.clone();
                async move {
                    let mut timed = Duration::ZERO;
                    for _ in 0..iters {
                        let start = Instant::now();
                        layer
                            .group_send("room", message.clone())
                            .await
                            .expect("group_send");
                        timed += start.elapsed();
                        for channel in &channels {
                            layer.receive(channel).await.expect("receive");
                        }
                    }
                    timed
                }
            });
        });
    }
    bench.finish();

    let mut bench = c.benchmark_group("group_send_and_drain");
    for count in [10, 1_000, 10_000] {
        let layer = InMemoryChannelLayer::new();
        let channels = rt.block_on(members(&layer, "room", count));
        let message = chat_message();
        bench.throughput(Throughput::Elements(count as u64));
        bench.bench_with_input(BenchmarkId::from_parameter(count), &count, |b, _| {
            b.to_async(&rt).iter(|| async {
                layer
                    .group_send("room", message.clone())
                    .await
                    .expect("group_send");
                for channel in &channels {
                    layer.receive(channel).await.expect("receive");
                }
            });
        });
    }
    bench.finish();
}

criterion_group!(benches, send_receive, group_send);
criterion_main!(benches);
