//! Redis layer hot paths against a real redis-server started by the bench
//! (`channels_redis::testing::RedisServer`, needs `redis-server` on PATH):
//! a send + receive round trip on a process-local channel and on a plain
//! channel, and a group_send to 1,000 process-local members of one process
//! (time until all 1,000 have received it).
//!
//! The round trips run inside a task of the runtime, as a consumer calls the
//! layer in the server; a future driven by `block_on` from the bench's own
//! thread would add a hand-over between threads at every `.await` that no
//! caller in a server pays.
//!
//! `cargo bench -p channels-redis --bench redis_layer -- --warm-up-time 1 --measurement-time 3`

use std::sync::Arc;
use std::time::{Duration, Instant};

use channels_core::{ChannelLayer, Message};
use channels_redis::testing::{RedisServer, unique_prefix};
use channels_redis::{RedisChannelLayer, RedisConfig};
use criterion::{Criterion, criterion_group, criterion_main};

const MEMBERS: usize = 1_000;

fn layer(server: &RedisServer) -> Arc<RedisChannelLayer> {
    let config = RedisConfig::new()
        .host(server.url())
        .prefix(unique_prefix());
    Arc::new(RedisChannelLayer::new(config).expect("valid config"))
}

fn benches(c: &mut Criterion) {
    let server = RedisServer::start().expect("redis-server must be on PATH");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let message = Message::new("chat.message").with("text", "hello, world");

    let local = layer(&server);
    let channel = runtime
        .block_on(local.new_channel("specific"))
        .expect("new_channel");
    c.bench_function("process_local_send_receive", |b| {
        b.iter_custom(|iters| in_task(&runtime, &local, &message, iters, channel.clone()));
    });

    let plain = layer(&server);
    c.bench_function("plain_send_receive", |b| {
        b.iter_custom(|iters| in_task(&runtime, &plain, &message, iters, "bench.plain".to_owned()));
    });

    let group = layer(&server);
    let members: Vec<String> = runtime.block_on(async {
        let mut members = Vec::with_capacity(MEMBERS);
        for _ in 0..MEMBERS {
            let channel = group.new_channel("specific").await.expect("new_channel");
            group.group_add("bench", &channel).await.expect("group_add");
            members.push(channel);
        }
        members
    });
    let mut grouped = c.benchmark_group("group_send");
    grouped.sample_size(20);
    grouped.bench_function("1000_members_all_delivered", |b| {
        b.to_async(&runtime).iter(|| async {
            group
                .group_send("bench", message.clone())
                .await
                .expect("group_send");
            for member in &members {
                tokio::time::timeout(Duration::from_secs(5), group.receive(member))
                    .await
                    .expect("delivered in time")
                    .expect("receive");
            }
        });
    });
    grouped.finish();
    drop(server);
}

/// Times `iters` sends to `channel`, each followed by its receive, in a task
/// spawned on `runtime`.
fn in_task(
    runtime: &tokio::runtime::Runtime,
    layer: &Arc<RedisChannelLayer>,
    message: &Message,
    iters: u64,
    channel: String,
) -> Duration {
    let (layer, message) = (layer.clone(), message.clone());
    let task = runtime.spawn(async move {
        let started = Instant::now();
        for _ in 0..iters {
            layer.send(&channel, message.clone()).await.expect("send");
            tokio::time::timeout(Duration::from_secs(5), layer.receive(&channel))
                .await
                .expect("delivered in time")
                .expect("receive");
        }
        started.elapsed()
    });
    runtime.block_on(task).expect("the round trips ran")
}

criterion_group!(redis_layer, benches);
criterion_main!(redis_layer);
