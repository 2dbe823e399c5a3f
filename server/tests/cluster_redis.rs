//! Two real `channels-server` processes over one private `redis-server`: a
//! message published on one reaches gateway clients on the other, and the
//! publish API of either reaches both. Once for the core layer, once for
//! pub/sub.
//!
//! Needs `redis-server` on the PATH (or `REDIS_SERVER=/path/to/redis-server`).

// Helpers outside #[test] fns unwrap too: a panic is how a test reports failure.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use std::sync::Arc;

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

use channels_core::SharedLayer;
use channels_redis::testing::{RedisServer, unique_prefix};
use channels_redis::{RedisChannelLayer, RedisConfig, RedisPubSubChannelLayer};
use channels_server::{App, ServerConfig};
use common::{
    Server, ask, expect_close, expect_quiet, gateway, http, next_json, next_text, say, send_json,
    sigterm, start_binary, subscribe,
};

async fn two_processes_share_rooms(layer: &str) {
    let redis = test_support::redis::start().await;
    let prefix = unique_prefix();
    let url = redis.url();
    let envs = [
        ("CHANNELS_LAYER", layer),
        ("CHANNELS_REDIS_URL", url.as_str()),
        ("CHANNELS_REDIS_PREFIX", prefix.as_str()),
        ("CHANNELS_PUBLISH_TOKEN", "cluster-token"),
    ];
    let (mut one, one_address) = start_binary(&["--bind", "127.0.0.1:0"], &envs).await;
    let (mut two, two_address) = start_binary(&["--bind", "127.0.0.1:0"], &envs).await;

    for address in [one_address, two_address] {
        let ready = http(address, "GET", "/readyz", &[], b"").await;
        assert_eq!(ready.status, 200, "{layer}: {ready:?}");
    }

    let (mut alice, _) = gateway(one_address).await;
    let (mut bob, _) = gateway(two_address).await;
    let (mut carol, _) = gateway(two_address).await;
    // `subscribed` comes after the membership is set up, so this is not racy.
    subscribe(&mut alice, "cluster").await;
    subscribe(&mut bob, "cluster").await;
    subscribe(&mut carol, "elsewhere").await;
    say(&mut alice, "cluster", "across processes").await;
    let push = next_json(&mut alice).await;
    assert_eq!(push["group"], "cluster", "{push}");
    assert_eq!(push["data"]["text"], "across processes", "{push}");
    assert_eq!(next_text(&mut bob).await, "across processes");
    say(&mut bob, "cluster", "and back").await;
    assert_eq!(next_text(&mut alice).await, "and back");
    assert_eq!(next_text(&mut bob).await, "and back");

    let published = http(
        two_address,
        "POST",
        "/api/groups/cluster",
        &[("Authorization", "Bearer cluster-token")],
        br#"{"type": "chat.message", "text": "from process two's API"}"#,
    )
    .await;
    assert_eq!(published.status, 202, "{published:?}");
    assert_eq!(next_text(&mut alice).await, "from process two's API");
    assert_eq!(next_text(&mut bob).await, "from process two's API");
    expect_quiet(&mut carol, Duration::from_millis(100)).await;

    for (child, client) in [(&mut one, &mut alice), (&mut two, &mut bob)] {
        sigterm(child);
        assert_eq!(u16::from(expect_close(client).await.code), 1001);
        let status = common::wait_exit(child);
        assert!(status.success(), "exit status {status}");
    }
    drop(redis);
}

#[tokio::test]
async fn core_redis_layer_connects_two_processes() {
    two_processes_share_rooms("redis").await;
}

#[tokio::test]
async fn pubsub_redis_layer_connects_two_processes() {
    two_processes_share_rooms("redis-pubsub").await;
}

async fn readyz_follows_redis(layer: SharedLayer, redis: &mut RedisServer) {
    let server = Server::start_app(layer.clone(), App::new(layer, ServerConfig::default())).await;
    let ready = http(server.address, "GET", "/readyz", &[], b"").await;
    assert_eq!(ready.status, 200, "{ready:?}");
    redis.kill();
    let down = http(server.address, "GET", "/readyz", &[], b"").await;
    assert_eq!(down.status, 503, "{down:?}");
    assert_eq!(
        http(server.address, "GET", "/healthz", &[], b"")
            .await
            .status,
        200
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn readyz_is_503_while_redis_is_down() {
    for pubsub in [false, true] {
        let mut redis = test_support::redis::start().await;
        let config = RedisConfig::new().host(redis.url()).prefix(unique_prefix());
        let layer: SharedLayer = if pubsub {
            Arc::new(RedisPubSubChannelLayer::new(config).unwrap())
        } else {
            Arc::new(RedisChannelLayer::new(config).unwrap())
        };
        readyz_follows_redis(layer, &mut redis).await;
    }
}

#[tokio::test]
async fn the_gateway_survives_a_redis_restart() {
    let mut redis = test_support::redis::start().await;
    let config = RedisConfig::new().host(redis.url()).prefix(unique_prefix());
    let layer: SharedLayer = Arc::new(RedisChannelLayer::new(config).unwrap());
    let app = App::new(layer.clone(), ServerConfig::default())
        .gateway()
        .unwrap();
    let server = Server::start_app(layer, app).await;
    let (mut alice, _) = gateway(server.address).await;
    let (mut bob, _) = gateway(server.address).await;
    subscribe(&mut alice, "outage").await;
    subscribe(&mut bob, "outage").await;
    say(&mut alice, "outage", "before").await;
    assert_eq!(next_text(&mut bob).await, "before");
    assert_eq!(next_text(&mut alice).await, "before");

    redis.kill();
    // Each client is told, and the server stays up.
    for client in [&mut alice, &mut bob] {
        let told = next_json(client).await;
        assert_eq!(
            (told["type"].as_str(), told["code"].as_str()),
            (Some("error"), Some("unavailable")),
            "{told}"
        );
    }
    assert_eq!(
        http(server.address, "GET", "/healthz", &[], b"")
            .await
            .status,
        200
    );
    // Publishing now fails politely instead of dropping the client.
    let data = serde_json::json!({"type": "chat.message", "text": "during"});
    let answer = ask(
        &mut alice,
        serde_json::json!({"type": "publish", "group": "outage", "data": data}),
    )
    .await;
    assert_eq!(answer["code"], "unavailable", "{answer}");

    let redis = tokio::task::spawn_blocking(move || redis.restart().map(|()| redis))
        .await
        .expect("restart task")
        .expect("redis-server restarts");
    // Memberships come back: a message said after recovery reaches bob.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    'recovered: loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no delivery within 20 s of Redis coming back"
        );
        let data = serde_json::json!({"type": "chat.message", "text": "after"});
        // Answered `published` or `unavailable` while Redis comes back;
        // alice's answers are not read.
        send_json(
            &mut alice,
            &serde_json::json!({"type": "publish", "group": "outage", "data": data}),
        )
        .await;
        let round = tokio::time::Instant::now() + Duration::from_secs(1);
        while let Ok(Some(Ok(message))) = tokio::time::timeout_at(round, bob.next()).await {
            if let Message::Text(text) = message {
                let value: serde_json::Value = serde_json::from_str(&text).unwrap();
                if value["data"]["text"] == "after" {
                    break 'recovered;
                }
            }
        }
    }
    server.stop().await.unwrap();
    drop(redis);
}

/// The Redis pub/sub channels a server is subscribed to (`PUBSUB CHANNELS`),
/// asked over a raw RESP connection.
async fn pubsub_channels(redis_url: &str) -> Vec<String> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let address = redis_url
        .trim_start_matches("redis://")
        .trim_end_matches('/');
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let mut stream = BufReader::new(stream);
    stream
        .get_mut()
        .write_all(b"PUBSUB CHANNELS\r\n")
        .await
        .unwrap();
    let mut line = String::new();
    stream.read_line(&mut line).await.unwrap();
    let count: usize = line.trim().trim_start_matches('*').parse().unwrap();
    let mut channels = Vec::with_capacity(count);
    for _ in 0..count {
        line.clear();
        stream.read_line(&mut line).await.unwrap(); // $<len>
        line.clear();
        stream.read_line(&mut line).await.unwrap();
        channels.push(line.trim_end().to_owned());
    }
    channels
}

#[tokio::test]
async fn pubsub_subscriptions_end_with_their_connection() {
    let redis = test_support::redis::start().await;
    let url = redis.url();
    let envs = [
        ("CHANNELS_LAYER", "redis-pubsub"),
        ("CHANNELS_REDIS_URL", url.as_str()),
    ];
    let (child, address) = start_binary(&["--bind", "127.0.0.1:0"], &envs).await;
    let (mut alice, _) = gateway(address).await;
    subscribe(&mut alice, "leaky").await;
    say(&mut alice, "leaky", "hello").await;
    assert_eq!(next_text(&mut alice).await, "hello");
    let during = pubsub_channels(&url).await;
    assert!(
        during.iter().any(|c| c.ends_with("__group__leaky")),
        "the room's group topic is subscribed while alice is connected: {during:?}"
    );
    assert!(
        during.len() >= 2,
        "alice's own channel is subscribed too: {during:?}"
    );
    drop(alice);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let after = pubsub_channels(&url).await;
        if after.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "subscriptions outlived the connection: {after:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sigterm(&child);
}
