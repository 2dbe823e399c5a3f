//! Presence (`--presence`, docs/protocol.md "Presence"): who is in a group,
//! across real `channels-server` processes on one private `redis-server`
//! (core and pub/sub layers), in one process on the memory layer, and the
//! documented error when it is off.
//!
//! The cluster test kills a server with SIGKILL and measures how long its
//! entries outlive it: the stated bound is the node TTL, 15 s.
//!
//! Needs `redis-server` on the PATH (or `REDIS_SERVER=/path/to/redis-server`).

// Helpers outside #[test] fns unwrap too: a panic is how a test reports failure.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use channels_core::presence::{DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_NODE_TTL, PresenceStore as _};
use channels_redis::testing::unique_prefix;
use channels_redis::{RedisConfig, RedisPresence};
use channels_server::{GatewayConfig, ServerConfig};
use common::{
    Client, Server, ask, expect_quiet, gateway, gateway_at, http, metric_value, next_json, sigterm,
    start_binary, wait_exit,
};
use futures_util::StreamExt;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Value as Json, json};
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "presence-test-secret";
const API: &str = "presence-token";
const AUTH: (&str, &str) = ("Authorization", "Bearer presence-token");

/// A token for `sub` that may subscribe to `room` and is joined to `groups`.
fn token(sub: &str, groups: &[&str]) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let claims = json!({"sub": sub, "exp": exp, "allow": ["room"], "groups": groups});
    jsonwebtoken::encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
    )
    .unwrap()
}

async fn client(address: SocketAddr, sub: &str, groups: &[&str]) -> (Client, String) {
    let url = format!("ws://{address}/ws?token={}", token(sub, groups));
    let (client, connected) = gateway_at(&url).await;
    let channel = connected["channel"].as_str().unwrap().to_owned();
    (client, channel)
}

async fn subscribe(client: &mut Client, group: &str, presence: bool) -> Json {
    let answer = ask(
        client,
        json!({"type": "subscribe", "group": group, "presence": presence}),
    )
    .await;
    assert_eq!(answer["type"], "subscribed", "{answer}");
    answer
}

async fn get(address: SocketAddr, path: &str) -> Json {
    let answer = http(address, "GET", path, &[AUTH], b"").await;
    assert_eq!(answer.status, 200, "{path}: {answer:?}");
    answer.json()
}

async fn node_id(address: SocketAddr) -> String {
    get(address, "/api/info").await["node_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The channels of a presence answer, with each one's user and node.
fn connections(body: &Json) -> BTreeSet<(String, Option<String>, String)> {
    body["connections"]
        .as_array()
        .unwrap_or_else(|| panic!("no connections in {body}"))
        .iter()
        .map(|c| {
            (
                c["channel"].as_str().unwrap().to_owned(),
                c["user"].as_str().map(str::to_owned),
                c["node"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The next text frame within `wait` (longer than the helpers' 5 s).
async fn next_json_within(client: &mut Client, wait: Duration) -> Json {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let message = tokio::time::timeout_at(deadline, client.next())
            .await
            .unwrap_or_else(|_| panic!("no frame within {wait:?}"))
            .expect("stream ended")
            .unwrap();
        if let Message::Text(text) = message {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

/// The next `presence` event frame: (event, channel, user).
async fn next_event(client: &mut Client, wait: Duration) -> (String, String, Json) {
    let frame = next_json_within(client, wait).await;
    assert_eq!(frame["type"], "presence", "{frame}");
    assert_eq!(frame["group"], "room", "{frame}");
    (
        frame["event"].as_str().unwrap().to_owned(),
        frame["channel"].as_str().unwrap().to_owned(),
        frame["user"].clone(),
    )
}

/// Who notices the killed process's entries first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reaper {
    /// The HTTP API, polled until they are gone.
    Api,
    /// Process one's sweep of the group its watcher watches (no API read).
    Sweep,
}

async fn two_processes_share_presence(layer: &str, reaper: Reaper) {
    let redis = test_support::redis::start().await;
    let prefix = unique_prefix();
    let url = redis.url();
    let envs = [
        ("CHANNELS_LAYER", layer),
        ("CHANNELS_REDIS_URL", url.as_str()),
        ("CHANNELS_REDIS_PREFIX", prefix.as_str()),
        ("CHANNELS_PUBLISH_TOKEN", API),
        ("CHANNELS_JWT_SECRET", SECRET),
    ];
    let (mut one, one_address) =
        start_binary(&["--bind", "127.0.0.1:0", "--presence"], &envs).await;
    let (mut two, two_address) =
        start_binary(&["--bind", "127.0.0.1:0", "--presence"], &envs).await;
    let (node_one, node_two) = (node_id(one_address).await, node_id(two_address).await);
    assert_ne!(node_one, node_two);

    // The watcher asks for events and gets the members first: itself.
    let (mut watcher, watcher_channel) = client(one_address, "watcher", &[]).await;
    subscribe(&mut watcher, "room", true).await;
    let members = next_json(&mut watcher).await;
    assert_eq!(members["type"], "presence", "{members}");
    assert_eq!(members["event"], "members", "{members}");
    assert_eq!(members["members"][0]["channel"], watcher_channel.as_str());
    assert_eq!(members["members"][0]["user"], "watcher");

    // Ann twice (one connection per process), Bob joined by his token.
    let (mut ann_one, ann_one_channel) = client(one_address, "ann", &[]).await;
    subscribe(&mut ann_one, "room", false).await;
    let seen = next_event(&mut watcher, Duration::from_secs(5)).await;
    assert_eq!(seen, ("join".into(), ann_one_channel.clone(), json!("ann")));
    let (mut ann_two, ann_two_channel) = client(two_address, "ann", &[]).await;
    subscribe(&mut ann_two, "room", false).await;
    let seen = next_event(&mut watcher, Duration::from_secs(5)).await;
    assert_eq!(seen, ("join".into(), ann_two_channel.clone(), json!("ann")));
    let (_bob, bob_channel) = client(two_address, "bob", &["room"]).await;
    let seen = next_event(&mut watcher, Duration::from_secs(5)).await;
    assert_eq!(seen, ("join".into(), bob_channel.clone(), json!("bob")));

    let everyone: BTreeSet<_> = [
        (
            watcher_channel.clone(),
            Some("watcher".into()),
            node_one.clone(),
        ),
        (
            ann_one_channel.clone(),
            Some("ann".into()),
            node_one.clone(),
        ),
        (
            ann_two_channel.clone(),
            Some("ann".into()),
            node_two.clone(),
        ),
        (bob_channel.clone(), Some("bob".into()), node_two.clone()),
    ]
    .into();
    for address in [one_address, two_address] {
        let body = get(address, "/api/groups/room/presence").await;
        assert_eq!(body["group"], "room");
        assert_eq!(connections(&body), everyone, "{layer}: {body}");
        assert_eq!(body["users"], json!(["ann", "bob", "watcher"]), "{body}");
        let count = get(address, "/api/groups/room/presence/count").await;
        assert_eq!(
            count,
            json!({"group": "room", "connections": 4, "users": 3})
        );
    }
    // Bob's `user.bob` group is recorded too.
    let bob_group = get(one_address, "/api/groups/user.bob/presence").await;
    assert_eq!(bob_group["users"], json!(["bob"]), "{bob_group}");

    // Ann leaves on process one: gone everywhere, and the watcher hears it.
    let answer = ask(
        &mut ann_one,
        json!({"type": "unsubscribe", "group": "room"}),
    )
    .await;
    assert_eq!(answer["type"], "unsubscribed", "{answer}");
    let seen = next_event(&mut watcher, Duration::from_secs(5)).await;
    assert_eq!(
        seen,
        ("leave".into(), ann_one_channel.clone(), json!("ann"))
    );
    let count = get(two_address, "/api/groups/room/presence/count").await;
    assert_eq!(count["connections"], 3, "{count}");
    assert_eq!(count["users"], 3, "{count}");

    // SIGKILL process two: no clean shutdown, its entries must expire.
    let killed = Instant::now();
    two.kill();
    if reaper == Reaper::Api {
        let bound = DEFAULT_NODE_TTL + Duration::from_secs(1);
        let gone = test_support::eventually(bound.saturating_sub(killed.elapsed()), || async {
            get(one_address, "/api/groups/room/presence/count").await["connections"] == 1
        })
        .await;
        let count = get(one_address, "/api/groups/room/presence/count").await;
        assert!(
            gone,
            "{layer}: a killed process's entries outlived {bound:?}: {count}"
        );
        eprintln!(
            "{layer}: a SIGKILLed process's entries were gone after {:?}",
            killed.elapsed()
        );
    }
    // Whoever reaped them published their leaves: the watcher hears both,
    // within the TTL and one sweep when nobody else reads the group.
    let bound = DEFAULT_NODE_TTL + DEFAULT_HEARTBEAT_INTERVAL + Duration::from_secs(2);
    let mut left = BTreeSet::new();
    for _ in 0..2 {
        let wait = bound.saturating_sub(killed.elapsed());
        let (event, channel, _) = next_event(&mut watcher, wait).await;
        assert_eq!(event, "leave");
        left.insert(channel);
    }
    eprintln!(
        "{layer}: the watcher heard the killed process's leaves after {:?}",
        killed.elapsed()
    );
    assert_eq!(left, [ann_two_channel, bob_channel].into());
    let body = get(one_address, "/api/groups/room/presence").await;
    assert_eq!(body["users"], json!(["watcher"]), "{body}");
    let metrics = http(one_address, "GET", "/metrics", &[], b"").await.body;
    assert_eq!(
        metric_value(&metrics, "channels_presence_reaped_total"),
        Some(2.0),
        "{metrics}"
    );

    // A clean shutdown leaves nothing of process one behind, not even
    // entries to reap (`user.ann` still holds the killed process's entry).
    sigterm(&one);
    let status = wait_exit(&mut one);
    assert!(status.success(), "exit status {status}");
    let reader =
        RedisPresence::new(&RedisConfig::new().host(url).prefix(prefix), "reader").unwrap();
    for group in ["room", "user.ann", "user.watcher"] {
        let snapshot = reader.read(group).await.unwrap();
        assert!(snapshot.members.is_empty(), "{group}: {snapshot:?}");
        assert!(
            snapshot.reaped.iter().all(|entry| entry.node == node_two),
            "{group}: {snapshot:?}"
        );
    }
    drop(redis);
}

#[tokio::test]
async fn core_redis_layer_presence_spans_processes_and_outlives_no_killed_one() {
    two_processes_share_presence("redis", Reaper::Api).await;
}

#[tokio::test]
async fn pubsub_redis_layer_presence_spans_processes_and_outlives_no_killed_one() {
    two_processes_share_presence("redis-pubsub", Reaper::Sweep).await;
}

#[tokio::test]
async fn memory_layer_presence_in_one_process() {
    let server = Server::start(ServerConfig::default().publish_token(API).presence(true)).await;
    let (mut watcher, watcher_channel) = gateway(server.address).await;
    let watcher_channel = watcher_channel["channel"].as_str().unwrap().to_owned();
    subscribe(&mut watcher, "room", true).await;
    let members = next_json(&mut watcher).await;
    assert_eq!(members["event"], "members", "{members}");
    assert_eq!(members["members"][0]["user"], Json::Null, "{members}");

    let (mut guest, connected) = gateway(server.address).await;
    let guest_channel = connected["channel"].as_str().unwrap().to_owned();
    subscribe(&mut guest, "room", false).await;
    let seen = next_event(&mut watcher, Duration::from_secs(5)).await;
    assert_eq!(seen, ("join".into(), guest_channel.clone(), Json::Null));

    let body = get(server.address, "/api/groups/room/presence").await;
    let channels: BTreeSet<_> = connections(&body).into_iter().map(|c| c.0).collect();
    assert_eq!(channels, [watcher_channel, guest_channel.clone()].into());
    assert_eq!(body["users"], json!([]), "anonymous users are not counted");
    let count = get(server.address, "/api/groups/room/presence/count").await;
    assert_eq!(
        count,
        json!({"group": "room", "connections": 2, "users": 0})
    );

    // Closing the socket removes the entry and tells the watcher.
    drop(guest);
    let seen = next_event(&mut watcher, Duration::from_secs(5)).await;
    assert_eq!(seen, ("leave".into(), guest_channel, Json::Null));
    let count = get(server.address, "/api/groups/room/presence/count").await;
    assert_eq!(count["connections"], 1, "{count}");
    // An unwatched group's events do not reach the watcher.
    let (mut other, _) = gateway(server.address).await;
    subscribe(&mut other, "elsewhere", false).await;
    expect_quiet(&mut watcher, Duration::from_millis(200)).await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn presence_off_is_a_documented_error() {
    let config = ServerConfig::default()
        .publish_token(API)
        .gateway(GatewayConfig::default());
    let server = Server::start(config).await;
    for path in [
        "/api/groups/room/presence",
        "/api/groups/room/presence/count",
    ] {
        let answer = http(server.address, "GET", path, &[AUTH], b"").await;
        assert_eq!(answer.status, 501, "{path}: {answer:?}");
        let error = answer.json()["error"].as_str().unwrap().to_owned();
        assert!(error.contains("--presence"), "{error}");
    }
    let (mut client, _) = gateway(server.address).await;
    let answer = ask(
        &mut client,
        json!({"type": "subscribe", "group": "room", "presence": true}),
    )
    .await;
    assert_eq!(answer["type"], "error", "{answer}");
    assert_eq!(answer["code"], "bad_request", "{answer}");
    assert!(
        answer["message"].as_str().unwrap().contains("--presence"),
        "{answer}"
    );
    server.stop().await.unwrap();
}
