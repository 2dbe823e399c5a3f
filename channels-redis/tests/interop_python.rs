//! X8 for the core layer: `RedisChannelLayer` and Python's
//! `channels_redis.core.RedisChannelLayer` 4.3 on the same Redis, in both
//! directions, for group_send, for send to the other side's new_channel and
//! for plain names, with a message holding every msgpack type; sharded over two
//! servers, encrypted, and the stored ZSET members compared byte for byte.
//!
//! Needs the Python venv (`bash scripts/install-deps.sh`); fails without it.

mod python_peer;
mod support;

use std::time::Duration;

use channels_core::{ChannelLayer, Message, non_local_name};
use channels_redis::testing::{RedisServer, unique_prefix};
use channels_redis::wire::{Route, pack};
use channels_redis::{
    RedisChannelLayer, RedisConfig, Serializer, SerializerFormat, consistent_hash,
};
use python_peer::{PythonPeer, all_types_message, assert_identical, hex};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);

fn start_server() -> RedisServer {
    RedisServer::start().unwrap_or_else(|error| panic!("cannot start redis-server: {error}"))
}

fn rust_layer(urls: &[String], prefix: &str, keys: &[&str]) -> RedisChannelLayer {
    let mut config = RedisConfig::new()
        .hosts_from(urls.iter().map(String::as_str))
        .prefix(prefix);
    if !keys.is_empty() {
        config = config.symmetric_encryption_keys(keys);
    }
    RedisChannelLayer::new(config).unwrap_or_else(|error| panic!("bad config: {error}"))
}

async fn rust_receive(layer: &RedisChannelLayer, channel: &str) -> Message {
    match timeout(WAIT, layer.receive(channel)).await {
        Ok(Ok(message)) => message,
        Ok(Err(error)) => panic!("Rust receive on {channel} failed: {error}"),
        Err(_) => panic!("nothing reached Rust on {channel} within {WAIT:?}"),
    }
}

async fn raw_members(url: &str, key: &str) -> Vec<Vec<u8>> {
    let mut connection = channels_redis::testing::connect(url)
        .await
        .unwrap_or_else(|error| panic!("cannot connect to {url}: {error}"));
    redis::cmd("ZRANGE")
        .arg(key)
        .arg(0)
        .arg(-1)
        .query_async(&mut connection)
        .await
        .unwrap_or_else(|error| panic!("ZRANGE {key} failed: {error}"))
}

/// Group_send both ways and send to the other side's new_channel both ways.
async fn exchange_both_ways(urls: &[String], keys: &[&str], groups: &[&str]) {
    let prefix = unique_prefix();
    let layer = rust_layer(urls, &prefix, keys);
    let mut python = PythonPeer::start("core", urls, &prefix, keys).await;
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

        // Rust group_send → Python receive (and the Rust member's copy).
        let python_channel = python.new_channel().await;
        assert!(python_channel.starts_with("specific.") && python_channel.contains('!'));
        python.group_add(group, &python_channel).await;
        layer
            .group_send(group, message.clone())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let received = python.receive(&python_channel, 10.0).await;
        assert_identical(&received, &message, "Rust group_send → Python receive");
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
        let received = python.receive(&python_channel, 10.0).await;
        assert_identical(&received, &message, "Rust send → Python new_channel");

        // Python send → Rust new_channel (one host only: see the sharded test).
        if urls.len() == 1 {
            python.send(&rust_channel, &message).await;
            let received = rust_receive(&layer, &rust_channel).await;
            assert_identical(&received, &message, "Python send → Rust new_channel");
        }
    }
    python.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x8_core_send_and_group_send_both_ways() {
    let server = start_server();
    exchange_both_ways(&[server.url()], &[], &["chat"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x8_core_plain_names_both_ways() {
    let server = start_server();
    let prefix = unique_prefix();
    let layer = rust_layer(&[server.url()], &prefix, &[]);
    let mut python = PythonPeer::start("core", &[server.url()], &prefix, &[]).await;
    let message = all_types_message();
    layer
        .send("interop.to-python", message.clone())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let received = python.receive("interop.to-python", 10.0).await;
    assert_identical(
        &received,
        &message,
        "Rust send → Python receive (plain name)",
    );
    python.send("interop.to-rust", &message).await;
    let received = rust_receive(&layer, "interop.to-rust").await;
    assert_identical(
        &received,
        &message,
        "Python send → Rust receive (plain name)",
    );
    python.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x8_core_sharded_over_two_servers() {
    let servers = [start_server(), start_server()];
    let urls: Vec<String> = servers.iter().map(RedisServer::url).collect();
    // Group keys hash by bare group name: chat → 0, room.1 → 1 (WIRE §5).
    exchange_both_ways(&urls, &[], &["chat", "room.1", "lobby", "room.2"]).await;
}

/// Python's send() to a `!` channel hashes the full name (django/channels#1492,
/// unfixed in 4.3.0) while every receiver, Python's own included, reads the
/// shard of the non-local part. With two hosts the message reaches Rust when
/// both hashes agree, and otherwise sits on the other shard, which this test
/// shows on the raw keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x8_core_sharded_python_send_to_rust_channel_follows_upstream_hash() {
    let servers = [start_server(), start_server()];
    let urls: Vec<String> = servers.iter().map(RedisServer::url).collect();
    let prefix = unique_prefix();
    let layer = rust_layer(&urls, &prefix, &[]);
    let mut python = PythonPeer::start("core", &urls, &prefix, &[]).await;
    let message = all_types_message();
    let (mut agreeing, mut disagreeing) = (None, None);
    while agreeing.is_none() || disagreeing.is_none() {
        let channel = layer
            .new_channel("specific")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let same = consistent_hash(&channel, 2) == consistent_hash(non_local_name(&channel), 2);
        if same && agreeing.is_none() {
            agreeing = Some(channel);
        } else if !same && disagreeing.is_none() {
            disagreeing = Some(channel);
        }
    }
    let (agreeing, disagreeing) = (
        agreeing.unwrap_or_else(|| panic!("loop ended without a channel")),
        disagreeing.unwrap_or_else(|| panic!("loop ended without a channel")),
    );

    python.send(&agreeing, &message).await;
    let received = rust_receive(&layer, &agreeing).await;
    assert_identical(
        &received,
        &message,
        "Python send → Rust new_channel (same shard)",
    );

    python.send(&disagreeing, &message).await;
    let key = format!("{prefix}{}", non_local_name(&disagreeing));
    let python_shard = consistent_hash(&disagreeing, 2);
    let members = raw_members(&urls[python_shard], &key).await;
    assert_eq!(
        members.len(),
        1,
        "Python put the message on shard {python_shard} ({key})"
    );
    let expected = pack(&message, Route::Channel(&disagreeing)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(hex(&members[0][12..]), hex(&expected));
    assert!(raw_members(&urls[1 - python_shard], &key).await.is_empty());
    python.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x8_core_with_symmetric_encryption() {
    let server = start_server();
    exchange_both_ways(
        &[server.url()],
        &["interop-secret", "older-secret"],
        &["secret-chat"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zset_members_are_byte_compatible_both_ways() {
    let server = start_server();
    let prefix = unique_prefix();
    let layer = rust_layer(&[server.url()], &prefix, &[]);
    let mut python = PythonPeer::start("core", &[server.url()], &prefix, &[]).await;
    let message = all_types_message();
    let serializer = Serializer::new(SerializerFormat::Msgpack, 12);

    // Python-written member: 12 random bytes, then exactly Rust's msgpack.
    python.send("raw.from-python", &message).await;
    let members = raw_members(&server.url(), &format!("{prefix}raw.from-python")).await;
    assert_eq!(members.len(), 1);
    let body = pack(&message, Route::None).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        hex(&members[0][12..]),
        hex(&body),
        "Python's member body differs from Rust's msgpack"
    );
    let decoded = serializer
        .deserialize(&members[0])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_identical(
        &decoded.message,
        &message,
        "Python ZSET member → Rust decode",
    );

    // Rust-written member, read raw by redis-py and decoded by channels_redis.
    layer
        .send("raw.from-rust", message.clone())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let members = python.zrange(&format!("{prefix}raw.from-rust")).await;
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].len(), 12 + body.len());
    assert_eq!(hex(&members[0][12..]), hex(&body));
    let decoded = python.deserialize(&members[0]).await;
    assert_identical(&decoded, &message, "Rust ZSET member → Python decode");

    // Routed member: a Python group_send to a process-local channel that no
    // receive loop drains carries `__asgi_channel__` as a one-element list.
    let channel = "specific.0123456789abcdef0123456789abcdef!interop";
    python
        .call_ok(serde_json::json!({"op": "group_add", "group": "raw", "channel": channel}))
        .await;
    python.group_send("raw", &message).await;
    let key = format!("{prefix}{}", non_local_name(channel));
    let members = raw_members(&server.url(), &key).await;
    assert_eq!(members.len(), 1, "the group message is in {key}");
    let routed = pack(&message, Route::Channels(&[channel])).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(hex(&members[0][12..]), hex(&routed));
    let decoded = serializer
        .deserialize(&members[0])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_identical(&decoded.message, &message, "routed member → Rust decode");
    assert_eq!(decoded.route, Some(vec![channel.to_owned()]));
    python.quit().await;
}
