//! Group histories and recovery (docs/protocol.md, "History and recovery"):
//! on the memory layer in process, and on the Redis core layer with real
//! server processes, a real redis-server (killed and restarted empty) and
//! Python `channels_redis` sending with its own `group_send`.

// A panic is how a test reports failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use channels_server::ServerConfig;
use channels_server::history::HistoryConfig;
use common::{Client, Server, ask, gateway, http, next_json, python, start_binary};
use serde_json::{Value, json};

const TOKEN: &str = "history-token";

/// Publishes `{"type": "news.item", "n": n}` to `group` through the API.
async fn publish(address: SocketAddr, group: &str, n: u64) -> u16 {
    let body = json!({"type": "news.item", "n": n}).to_string();
    let auth = format!("Bearer {TOKEN}");
    let headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    http(
        address,
        "POST",
        &format!("/api/groups/{group}"),
        &headers,
        body.as_bytes(),
    )
    .await
    .status
}

async fn history(address: SocketAddr, group: &str) -> (u16, Value) {
    let auth = format!("Bearer {TOKEN}");
    let answer = http(
        address,
        "GET",
        &format!("/api/groups/{group}/history"),
        &[("authorization", auth.as_str())],
        b"",
    )
    .await;
    let body = serde_json::from_str(&answer.body).unwrap_or(Value::Null);
    (answer.status, body)
}

async fn subscribe(client: &mut Client, group: &str, recover: Option<(u64, &str)>) -> Value {
    let mut request = json!({"type": "subscribe", "group": group});
    if let Some((offset, epoch)) = recover {
        request["recover"] = json!({"offset": offset, "epoch": epoch});
    }
    let answer = ask(client, request).await;
    assert_eq!(answer["type"], "subscribed", "{answer}");
    answer
}

/// The next `message` push: `(offset, epoch, n)`.
async fn next_kept(client: &mut Client) -> (u64, String, u64) {
    let push = next_json(client).await;
    assert_eq!(push["type"], "message", "{push}");
    (
        push["offset"]
            .as_u64()
            .unwrap_or_else(|| panic!("no offset: {push}")),
        push["epoch"].as_str().unwrap_or_default().to_owned(),
        push["data"]["n"]
            .as_u64()
            .unwrap_or_else(|| panic!("no n: {push}")),
    )
}

/// `(offset, n)` of a `subscribed` answer's publications.
fn publications(answer: &Value) -> Vec<(u64, u64)> {
    answer["publications"]
        .as_array()
        .unwrap_or_else(|| panic!("no publications: {answer}"))
        .iter()
        .map(|p| {
            (
                p["offset"].as_u64().unwrap(),
                p["data"]["n"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn epoch_of(answer: &Value) -> String {
    answer["epoch"]
        .as_str()
        .unwrap_or_else(|| panic!("no epoch: {answer}"))
        .to_owned()
}

#[tokio::test]
async fn memory_layer_recovers_missed_messages_once_and_in_order() {
    let config = ServerConfig::default()
        .publish_token(TOKEN)
        .history(HistoryConfig::every_group(100, Duration::from_secs(300)));
    let server = Server::start(config).await;
    let address = server.address;

    let (mut alice, _) = gateway(address).await;
    let joined = subscribe(&mut alice, "news", None).await;
    assert_eq!(joined["recovered"], false);
    assert_eq!(joined["reason"], "no_position");
    assert_eq!(joined["offset"], 0);
    let epoch = epoch_of(&joined);

    for n in 1..=3 {
        assert_eq!(publish(address, "news", n).await, 202);
    }
    for n in 1..=3 {
        assert_eq!(next_kept(&mut alice).await, (n, epoch.clone(), n));
    }

    // Bob saw offset 1 before he dropped: he gets 2 and 3, then live 4.
    let (mut bob, _) = gateway(address).await;
    let recovered = subscribe(&mut bob, "news", Some((1, &epoch))).await;
    assert_eq!(recovered["recovered"], true, "{recovered}");
    assert_eq!(publications(&recovered), [(2, 2), (3, 3)]);
    assert_eq!(recovered["offset"], 3);
    assert_eq!(publish(address, "news", 4).await, 202);
    assert_eq!(next_kept(&mut bob).await, (4, epoch.clone(), 4));
    assert_eq!(next_kept(&mut alice).await, (4, epoch.clone(), 4));

    // A position from another epoch is refused, and said so.
    let (mut carol, _) = gateway(address).await;
    let stale = subscribe(&mut carol, "news", Some((2, "not-the-epoch"))).await;
    assert_eq!(stale["recovered"], false);
    assert_eq!(stale["reason"], "epoch_changed");
    assert_eq!(stale["offset"], 4);

    // Unsubscribed: no more pushes; the next one reaches the others.
    let left = ask(&mut carol, json!({"type": "unsubscribe", "group": "news"})).await;
    assert_eq!(left["type"], "unsubscribed", "{left}");
    assert_eq!(publish(address, "news", 5).await, 202);
    assert_eq!(next_kept(&mut alice).await, (5, epoch.clone(), 5));
    common::expect_quiet(&mut carol, Duration::from_millis(300)).await;

    let (status, kept) = history(address, "news").await;
    assert_eq!(status, 200, "{kept}");
    assert_eq!(kept["epoch"], epoch);
    assert_eq!(kept["offset"], 5);
    let offsets: Vec<u64> = kept["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, [1, 2, 3, 4, 5]);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_client_away_past_the_window_is_told_too_old() {
    let config = ServerConfig::default()
        .publish_token(TOKEN)
        .history(HistoryConfig::every_group(100, Duration::from_secs(1)));
    let server = Server::start(config).await;
    let address = server.address;
    let (mut alice, _) = gateway(address).await;
    let epoch = epoch_of(&subscribe(&mut alice, "news", None).await);
    assert_eq!(publish(address, "news", 1).await, 202);
    assert_eq!(next_kept(&mut alice).await.0, 1);
    drop(alice);
    assert_eq!(publish(address, "news", 2).await, 202);
    // Wait until both messages have left the one-second window.
    let trimmed = test_support::eventually(Duration::from_secs(10), || async {
        let (_, kept) = history(address, "news").await;
        kept["publications"].as_array().is_some_and(Vec::is_empty) && kept["offset"] == 2
    })
    .await;
    assert!(
        trimmed,
        "never trimmed: {:?}",
        history(address, "news").await
    );
    let (mut back, _) = gateway(address).await;
    let answer = subscribe(&mut back, "news", Some((1, &epoch))).await;
    assert_eq!(answer["recovered"], false, "{answer}");
    assert_eq!(answer["reason"], "too_old");
    assert_eq!(answer["offset"], 2);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn groups_without_history_say_so() {
    let config =
        ServerConfig::default()
            .publish_token(TOKEN)
            .history(
                HistoryConfig::default().rule(channels_server::history::HistoryRule {
                    pattern: "news.*".into(),
                    size: 10,
                    ttl: Duration::from_secs(60),
                }),
            );
    let server = Server::start(config).await;
    let (mut alice, _) = gateway(server.address).await;
    let plain = subscribe(&mut alice, "chat", Some((3, "e"))).await;
    assert_eq!(plain["reason"], "no_history", "{plain}");
    assert!(plain.get("epoch").is_none(), "{plain}");
    let kept = subscribe(&mut alice, "news.sport", None).await;
    assert_eq!(kept["reason"], "no_position", "{kept}");
    assert_eq!(history(server.address, "chat").await.0, 404);
    assert_eq!(history(server.address, "news.sport").await.0, 200);
    server.stop().await.unwrap();
}

/// `channels_redis` (Python) sends `n` for each of `numbers` to `group`.
async fn python_group_send(url: &str, group: &str, numbers: &[u64]) {
    let script = r#"
import asyncio, sys
from channels_redis.core import RedisChannelLayer

async def main():
    layer = RedisChannelLayer(hosts=[sys.argv[1]])
    for n in sys.argv[3:]:
        await layer.group_send(sys.argv[2], {"type": "news.item", "n": int(n)})

asyncio.run(main())
"#;
    let status = tokio::process::Command::new(python())
        .arg("-c")
        .arg(script)
        .arg(url)
        .arg(group)
        .args(numbers.iter().map(u64::to_string))
        .stdin(Stdio::null())
        .status()
        .await
        .unwrap();
    assert!(status.success(), "python group_send failed");
}

fn redis_envs(url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("CHANNELS_LAYER", "redis".to_owned()),
        ("CHANNELS_REDIS_URL", url.to_owned()),
        ("CHANNELS_PUBLISH_TOKEN", TOKEN.to_owned()),
        ("CHANNELS_HISTORY_SIZE", "100".to_owned()),
    ]
}

async fn start_server(envs: &[(&'static str, String)]) -> (common::ServerProcess, SocketAddr) {
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (process, address) = start_binary(&["--bind", "127.0.0.1:0"], &envs).await;
    wait_ready(address).await;
    (process, address)
}

/// Waits until `/readyz` answers 200: the layer has Redis and this
/// process's memberships are in it (until then a new connection may hear
/// `unavailable` before `connected`).
async fn wait_ready(address: SocketAddr) {
    let ready = test_support::eventually(Duration::from_secs(20), || async {
        http(address, "GET", "/readyz", &[], b"").await.status == 200
    })
    .await;
    assert!(ready, "{address} never ready");
}

#[tokio::test]
async fn redis_recovery_spans_processes_and_includes_python_group_sends() {
    let redis = test_support::redis::start().await;
    let url = redis.url();
    let envs = redis_envs(&url);
    let (_one, one) = start_server(&envs).await;
    let (_two, two) = start_server(&envs).await;

    let (mut alice, _) = gateway(one).await;
    let epoch = epoch_of(&subscribe(&mut alice, "room", None).await);
    assert_eq!(publish(one, "room", 1).await, 202);
    assert_eq!(next_kept(&mut alice).await, (1, epoch.clone(), 1));
    // Alice's connection drops; the room goes on without her, from Python
    // and from the other process.
    drop(alice);
    python_group_send(&url, "room", &[2, 3]).await;
    assert_eq!(publish(two, "room", 4).await, 202);

    // She comes back through the other process.
    let (mut back, _) = gateway(two).await;
    let answer = subscribe(&mut back, "room", Some((1, &epoch))).await;
    assert_eq!(answer["recovered"], true, "{answer}");
    assert_eq!(publications(&answer), [(2, 2), (3, 3), (4, 4)]);
    assert_eq!(answer["epoch"], epoch);
    // Live messages follow with no gap and no duplicate, whoever sends.
    python_group_send(&url, "room", &[5]).await;
    assert_eq!(next_kept(&mut back).await, (5, epoch.clone(), 5));
    assert_eq!(publish(one, "room", 6).await, 202);
    assert_eq!(next_kept(&mut back).await, (6, epoch.clone(), 6));

    let (status, kept) = history(one, "room").await;
    assert_eq!(status, 200, "{kept}");
    let ns: Vec<u64> = kept["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["data"]["n"].as_u64().unwrap())
        .collect();
    assert_eq!(ns, [1, 2, 3, 4, 5, 6]);
}

#[tokio::test]
async fn redis_restarted_empty_tells_every_client_it_lost_messages() {
    let mut redis = test_support::redis::start().await;
    let url = redis.url();
    let envs = redis_envs(&url);
    let (_one, one) = start_server(&envs).await;
    let (_two, two) = start_server(&envs).await;

    let (mut alice, _) = gateway(one).await;
    let (mut bob, _) = gateway(two).await;
    let epoch = epoch_of(&subscribe(&mut alice, "room", None).await);
    subscribe(&mut bob, "room", None).await;
    assert_eq!(publish(one, "room", 1).await, 202);
    assert_eq!(next_kept(&mut alice).await.0, 1);
    assert_eq!(next_kept(&mut bob).await.0, 1);

    redis.kill();
    redis.restart().expect("redis restarts on its port");

    // Publish until the relays notice; every client then hears `lost`, and
    // what follows is numbered in the new epoch.
    let mut n = 2;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    for client in [&mut alice, &mut bob] {
        loop {
            assert!(tokio::time::Instant::now() < deadline, "no `lost` frame");
            let status = publish(one, "room", n).await;
            n += 1;
            if status != 202 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            let frame = tokio::time::timeout(Duration::from_millis(500), next_json(client)).await;
            match frame {
                // The outage itself is reported on the connection.
                Ok(frame) if frame["type"] == "error" && frame["code"] == "unavailable" => {}
                Ok(frame) if frame["type"] == "lost" => {
                    assert_eq!(frame["reason"], "epoch_changed", "{frame}");
                    assert_ne!(frame["epoch"], epoch.as_str());
                    break;
                }
                Ok(frame) => panic!("a message before `lost` after the restart: {frame}"),
                Err(_) => {}
            }
        }
    }
    // One message kept in the new epoch, seen by alice.
    assert_eq!(publish(one, "room", 999).await, 202);
    loop {
        let frame = next_json(&mut alice).await;
        if frame["type"] == "message" && frame["data"]["n"] == 999 {
            break;
        }
    }
    // A client that reconnects with its old position is told too.
    wait_ready(two).await;
    let (mut carol, _) = gateway(two).await;
    let answer = subscribe(&mut carol, "room", Some((1, &epoch))).await;
    assert_eq!(answer["recovered"], false, "{answer}");
    assert_eq!(answer["reason"], "epoch_changed");
    // It gets what the new epoch kept: everything since the loss.
    let top = answer["offset"].as_u64().unwrap();
    let offsets: Vec<u64> = answer["publications"]
        .as_array()
        .unwrap_or_else(|| panic!("no publications: {answer}"))
        .iter()
        .map(|p| p["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, (1..=top).collect::<Vec<_>>(), "{answer}");
    // And live messages flow again, in the new epoch, to everyone.
    let new_epoch = epoch_of(&answer);
    assert_eq!(publish(two, "room", 1000).await, 202);
    for client in [&mut alice, &mut bob, &mut carol] {
        loop {
            let frame = next_json(client).await;
            if frame["type"] == "error" && frame["code"] == "unavailable" {
                continue;
            }
            assert_eq!(frame["type"], "message", "{frame}");
            let (e, got) = (
                frame["epoch"].as_str().unwrap_or_default().to_owned(),
                frame["data"]["n"].as_u64().unwrap_or_default(),
            );
            assert_eq!(e, new_epoch);
            if got == 1000 {
                break;
            }
        }
    }
}

#[tokio::test]
async fn the_pubsub_layer_refuses_history_at_start() {
    let output = tokio::process::Command::new(common::server_bin())
        .args(["--bind", "127.0.0.1:0", "--layer", "redis-pubsub"])
        .args(["--redis-url", "redis://127.0.0.1:1", "--history-size", "10"])
        .stdin(Stdio::null())
        .output();
    let output = tokio::time::timeout(Duration::from_secs(20), output)
        .await
        .expect("the server exits")
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("keeps no history"), "{stderr}");
}
