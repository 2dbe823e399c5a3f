//! Pub/sub layer hot paths against a real redis-server (started by the bench
//! via `channels_redis::testing::RedisServer`, or `$CHANNELS_BENCH_REDIS_URL`):
//! a send + receive round trip on a channel from `new_channel`, and a
//! group_send to 1,000 members of one process (time until all 1,000 have
//! received it). Each runs on a two-worker multi-threaded runtime (as the
//! server does) and on a current-thread runtime (like Python's one asyncio
//! loop). `interop/bench_channels_redis.py --layer pubsub` measures the same
//! with Python channels_redis.
//!
//! `cargo bench -p channels-redis --bench pubsub_layer -- --warm-up-time 1 --measurement-time 3`

use std::time::Duration;

use channels_core::{ChannelLayer, Message};
use channels_redis::testing::RedisServer;
use channels_redis::{RedisConfig, RedisPubSubChannelLayer};
use criterion::{Criterion, criterion_group, criterion_main};
use tokio::runtime::{Builder, Runtime};

const MEMBERS: usize = 1_000;

fn runtimes() -> [(&'static str, Runtime); 2] {
    let multi = Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let current = Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    [("multi_thread", multi), ("current_thread", current)]
}

fn benches(c: &mut Criterion) {
    let (server, url) = match std::env::var("CHANNELS_BENCH_REDIS_URL") {
        Ok(url) => (None, url),
        Err(_) => {
            let server = RedisServer::start().expect("redis-server must be on PATH");
            let url = server.url();
            (Some(server), url)
        }
    };
    let message = Message::new("chat.message").with("text", "hello, world");

    for (flavour, runtime) in runtimes() {
        // One layer per runtime: its subscriber worker is spawned on the
        // runtime of its first subscription.
        let layer =
            RedisPubSubChannelLayer::new(RedisConfig::new().host(url.as_str()).prefix("bench"))
                .expect("valid config");
        let channel = runtime
            .block_on(layer.new_channel("specific"))
            .expect("new_channel");
        c.bench_function(&format!("pubsub_send_receive/{flavour}"), |b| {
            b.to_async(&runtime).iter(|| async {
                layer.send(&channel, message.clone()).await.expect("send");
                tokio::time::timeout(Duration::from_secs(5), layer.receive(&channel))
                    .await
                    .expect("delivered in time")
                    .expect("receive");
            });
        });

        let members: Vec<String> = runtime.block_on(async {
            let mut members = Vec::with_capacity(MEMBERS);
            for _ in 0..MEMBERS {
                let channel = layer.new_channel("specific").await.expect("new_channel");
                layer
                    .group_add(&format!("bench-{flavour}"), &channel)
                    .await
                    .expect("group_add");
                members.push(channel);
            }
            members
        });
        let mut grouped = c.benchmark_group("pubsub_group_send_1000_members_all_delivered");
        grouped.sample_size(20);
        grouped.bench_function(flavour, |b| {
            b.to_async(&runtime).iter(|| async {
                layer
                    .group_send(&format!("bench-{flavour}"), message.clone())
                    .await
                    .expect("group_send");
                for member in &members {
                    tokio::time::timeout(Duration::from_secs(5), layer.receive(member))
                        .await
                        .expect("delivered in time")
                        .expect("receive");
                }
            });
        });
        grouped.finish();
        runtime.block_on(layer.close()).expect("close");
    }
    drop(server);
}

criterion_group!(pubsub_layer, benches);
criterion_main!(pubsub_layer);
