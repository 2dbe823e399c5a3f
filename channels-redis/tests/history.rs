//! The core layer's group histories ([`HistoryStore`]) on a real
//! redis-server: numbering, trimming, a new epoch when Redis loses the keys,
//! one numbering for several processes, encrypted entries, and messages that
//! Python `channels_redis` sends with its own `group_send` (unchanged).
//!
//! The Python case needs the venv (`bash scripts/install-deps.sh`).

mod python_peer;
mod support;

use std::sync::Arc;
use std::time::Duration;

use channels_core::{ChannelLayer, HistoryLimits, HistorySnapshot, HistoryStore, Message, Value};
use channels_redis::RedisChannelLayer;
use channels_redis::testing::unique_prefix;
use python_peer::PythonPeer;

const LIMITS: HistoryLimits = HistoryLimits {
    size: 100,
    ttl: Duration::from_secs(300),
};

fn numbers(snapshot: &HistorySnapshot) -> Vec<(u64, i64)> {
    snapshot
        .entries
        .iter()
        .map(|(offset, message)| {
            let n = message.get("n").and_then(Value::as_i64).unwrap_or(-1);
            (*offset, n)
        })
        .collect()
}

fn history(layer: &RedisChannelLayer) -> Arc<dyn HistoryStore> {
    layer.history().expect("the core layer keeps history")
}

#[tokio::test]
async fn group_sends_are_numbered_once_across_processes_in_order() {
    let prefix = unique_prefix();
    let config = || support::config().prefix(prefix.clone());
    let a = RedisChannelLayer::new(config()).unwrap();
    let b = RedisChannelLayer::new(config()).unwrap();
    let (store_a, store_b) = (history(&a), history(&b));
    store_a.track("news").await.unwrap();
    let empty = store_b.sync("news", 0, LIMITS).await.unwrap();
    assert_eq!((empty.top, empty.first), (0, 1));
    for n in 1..=6 {
        let sender = if n % 2 == 0 { &a } else { &b };
        sender
            .group_send("news", Message::new("n").with("n", n))
            .await
            .unwrap();
        // Both processes sync after every send: each message still gets one
        // offset, whichever process moved it.
        let (x, y) = tokio::join!(
            store_a.sync("news", 0, LIMITS),
            store_b.sync("news", 0, LIMITS)
        );
        assert_eq!(x.unwrap().top, n as u64);
        assert_eq!(y.unwrap().top, n as u64);
    }
    let snapshot = store_a.sync("news", 2, LIMITS).await.unwrap();
    assert_eq!(snapshot.epoch, empty.epoch);
    assert_eq!(numbers(&snapshot), [(3, 3), (4, 4), (5, 5), (6, 6)]);
}

#[tokio::test]
async fn the_log_is_trimmed_to_its_size_and_age() {
    let layer = support::layer();
    let store = history(&layer);
    store.track("g").await.unwrap();
    for n in 1..=5 {
        layer
            .group_send("g", Message::new("n").with("n", n))
            .await
            .unwrap();
    }
    let small = HistoryLimits {
        size: 2,
        ttl: Duration::from_secs(300),
    };
    let snapshot = store.sync("g", 0, small).await.unwrap();
    assert_eq!((snapshot.top, snapshot.first), (5, 4));
    assert_eq!(numbers(&snapshot), [(4, 4), (5, 5)]);
    assert!(!snapshot.covers(2) && snapshot.covers(3));

    let short = HistoryLimits {
        size: 10,
        ttl: Duration::from_millis(200),
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let snapshot = store.sync("g", 0, short).await.unwrap();
        if snapshot.entries.is_empty() {
            assert_eq!((snapshot.top, snapshot.first), (5, 6));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "entries never aged out"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_flushed_redis_means_a_new_epoch() {
    let layer = support::layer();
    let store = history(&layer);
    store.track("g").await.unwrap();
    layer
        .group_send("g", Message::new("n").with("n", 1))
        .await
        .unwrap();
    let before = store.sync("g", 0, LIMITS).await.unwrap();
    assert_eq!(before.top, 1);
    layer.flush().await.unwrap();
    let after = store.sync("g", 0, LIMITS).await.unwrap();
    assert_ne!(after.epoch, before.epoch);
    assert_eq!(after.top, 0);
    // The membership went with the flush: tracking again brings it back.
    store.track("g").await.unwrap();
    layer
        .group_send("g", Message::new("n").with("n", 2))
        .await
        .unwrap();
    let again = store.sync("g", 0, LIMITS).await.unwrap();
    assert_eq!(numbers(&again), [(1, 2)]);
}

#[tokio::test]
async fn encrypted_entries_are_kept_and_read() {
    let config = support::config().symmetric_encryption_keys(["history-key"]);
    let layer = RedisChannelLayer::new(config).unwrap();
    let store = history(&layer);
    store.track("g").await.unwrap();
    layer
        .group_send("g", Message::new("n").with("n", 7))
        .await
        .unwrap();
    let snapshot = store.sync("g", 0, LIMITS).await.unwrap();
    assert_eq!(numbers(&snapshot), [(1, 7)]);
}

#[tokio::test]
async fn python_group_sends_are_kept_with_their_content() {
    let prefix = unique_prefix();
    let url = support::shared_server().url();
    let layer = RedisChannelLayer::new(support::config().prefix(prefix.clone())).unwrap();
    let store = history(&layer);
    store.track("room").await.unwrap();
    let mut python = PythonPeer::start("core", &[url.to_owned()], &prefix, &[]).await;
    for n in 1..=3 {
        python
            .group_send("room", &Message::new("chat.message").with("n", n))
            .await;
    }
    layer
        .group_send("room", Message::new("chat.message").with("n", 4))
        .await
        .unwrap();
    let snapshot = store.sync("room", 0, LIMITS).await.unwrap();
    assert_eq!(numbers(&snapshot), [(1, 1), (2, 2), (3, 3), (4, 4)]);
    assert_eq!(snapshot.entries[0].1.message_type(), Some("chat.message"));
    python.quit().await;
}
