//! X8 for the pub/sub layer: `RedisPubSubChannelLayer` and Python's
//! `channels_redis.pubsub.RedisPubSubChannelLayer` 4.3 on the same Redis, in
//! both directions, for group_send and for send to the other side's
//! new_channel, with a message holding every msgpack type; also sharded over
//! two servers, encrypted, and the payload bytes compared exactly.
//!
//! Needs the Python venv (`bash scripts/install-deps.sh`); fails without it.

mod python_peer;
mod support;

use std::sync::Arc;
use std::time::Duration;

use channels_core::{ChannelLayer, Message, SharedLayer};
use channels_redis::testing::RedisServer;
use channels_redis::wire::{Route, pack};
use channels_redis::{RedisConfig, RedisPubSubChannelLayer};
use python_peer::{PythonPeer, all_types_message, assert_identical, hex};
use serde_json::json;
use tokio::time::{sleep, timeout};

const WAIT: Duration = Duration::from_secs(5);

fn start_server() -> RedisServer {
    RedisServer::start().unwrap_or_else(|error| panic!("cannot start redis-server: {error}"))
}

fn rust_layer(urls: &[String], keys: &[&str]) -> RedisPubSubChannelLayer {
    let mut config = RedisConfig::new().hosts_from(urls.iter().map(String::as_str));
    if !keys.is_empty() {
        config = config.symmetric_encryption_keys(keys);
    }
    RedisPubSubChannelLayer::new(config).unwrap_or_else(|error| panic!("bad config: {error}"))
}

async fn rust_receive(layer: &RedisPubSubChannelLayer, channel: &str) -> Message {
    match timeout(WAIT, layer.receive(channel)).await {
        Ok(Ok(message)) => message,
        Ok(Err(error)) => panic!("Rust receive on {channel} failed: {error}"),
        Err(_) => panic!("nothing reached Rust on {channel} within {WAIT:?}"),
    }
}

/// Runs all four directions between one Rust layer and one Python peer.
async fn exchange_both_ways(urls: &[String], keys: &[&str], groups: &[&str]) {
    let layer = rust_layer(urls, keys);
    let mut python = PythonPeer::start("pubsub", urls, "asgi", keys).await;
    let message = all_types_message();

    for group in groups {
        // Python group_send → Rust receive.
        let rust_channel = layer
            .new_channel("specific")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        layer
            .group_add(group, &rust_channel)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        python.group_send(group, &message).await;
        let received = rust_receive(&layer, &rust_channel).await;
        assert_identical(&received, &message, "Python group_send → Rust receive");

        // Rust group_send → Python receive.
        let python_channel = python.new_channel().await;
        assert!(
            python_channel.starts_with("asgispecific."),
            "{python_channel}"
        );
        python.group_add(group, &python_channel).await;
        layer
            .group_send(group, message.clone())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let received = python.receive(&python_channel, 5.0).await;
        assert_identical(&received, &message, "Rust group_send → Python receive");
        // The Rust member got its copy of Rust's own group_send too.
        assert_identical(
            &rust_receive(&layer, &rust_channel).await,
            &message,
            "Rust member",
        );

        // Rust send → Python new_channel.
        layer
            .send(&python_channel, message.clone())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let received = python.receive(&python_channel, 5.0).await;
        assert_identical(&received, &message, "Rust send → Python new_channel");

        // Python send → Rust new_channel.
        python.send(&rust_channel, &message).await;
        let received = rust_receive(&layer, &rust_channel).await;
        assert_identical(&received, &message, "Python send → Rust new_channel");
    }
    python.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x8_pubsub_send_and_group_send_both_ways() {
    let server = start_server();
    exchange_both_ways(&[server.url()], &[], &["chat"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x8_pubsub_sharded_over_two_servers() {
    let servers = [start_server(), start_server()];
    let urls: Vec<String> = servers.iter().map(RedisServer::url).collect();
    // `chat` → asgi__group__chat is on shard 1 of 2, `lobby`'s topic elsewhere:
    // several groups so both shards carry traffic.
    exchange_both_ways(&urls, &[], &["chat", "lobby", "room.1", "room.2"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x8_pubsub_with_symmetric_encryption() {
    let server = start_server();
    exchange_both_ways(&[server.url()], &["interop-secret"], &["secret-chat"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p1_payload_bytes_match_python_exactly() {
    let server = start_server();
    let mut python = PythonPeer::start("pubsub", &[server.url()], "asgi", &[]).await;
    let message = all_types_message();
    let python_bytes = python.serialize(&message).await;
    let rust_bytes = pack(&message, Route::None).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        hex(&rust_bytes),
        hex(&python_bytes),
        "msgpack payload differs from Python's"
    );
    let decoded = python.deserialize(&rust_bytes).await;
    assert_identical(&decoded, &message, "Rust bytes → Python deserialize");
    python.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p3_plain_names_both_ways() {
    let server = start_server();
    let layer: SharedLayer = Arc::new(rust_layer(&[server.url()], &[]));
    let mut python = PythonPeer::start("pubsub", &[server.url()], "asgi", &[]).await;
    let message = all_types_message();

    // Rust receives on a plain name (subscribing it); Python sends to it.
    let pending = tokio::spawn({
        let layer = Arc::clone(&layer);
        async move { layer.receive("interop.plain.rust").await }
    });
    sleep(Duration::from_millis(200)).await;
    python.send("interop.plain.rust", &message).await;
    let received = timeout(WAIT, pending)
        .await
        .unwrap_or_else(|_| panic!("Python's send to a plain name never reached Rust"))
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_identical(
        &received,
        &message,
        "Python send → Rust receive on a plain name",
    );

    // Python receives on a plain name (subscribing it lazily); Rust publishes
    // until the blocked Python receive answers.
    python
        .request(json!({"op": "receive", "channel": "interop.plain.python", "timeout": 5.0}))
        .await;
    let answer = {
        let layer = Arc::clone(&layer);
        let message = message.clone();
        let publisher = tokio::spawn(async move {
            for _ in 0..40 {
                sleep(Duration::from_millis(100)).await;
                layer
                    .send("interop.plain.python", message.clone())
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
            }
        });
        let answer = python.answer().await;
        publisher.abort();
        answer
    };
    let received = python_peer::untag_message(
        &answer.unwrap_or_else(|error| panic!("Python receive on a plain name failed: {error:?}")),
    );
    assert_identical(
        &received,
        &message,
        "Rust send → Python receive on a plain name",
    );
    python.quit().await;
}
