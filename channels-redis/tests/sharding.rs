//! Sharding over several real redis-servers: H3, H4 (H2's hash vectors are
//! unit tests in `src/shard.rs`; checked here against where keys land).
#![allow(clippy::unwrap_used)] // test helpers: a failed setup step should panic right there

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use channels_core::{ChannelLayer, Message, non_local_name};
use channels_redis::testing::{RedisServer, unique_prefix};
use channels_redis::{RedisChannelLayer, RedisConfig, consistent_hash};
use redis::AsyncCommands;
use support::raw;
use tokio::time::timeout;

struct Cluster {
    servers: Vec<RedisServer>,
}

impl Cluster {
    fn start(n: usize) -> Self {
        Self {
            servers: (0..n).map(|_| RedisServer::start().unwrap()).collect(),
        }
    }

    fn config(&self, prefix: &str) -> RedisConfig {
        RedisConfig::new()
            .hosts_from(self.servers.iter().map(RedisServer::url))
            .prefix(prefix)
    }

    /// Which servers hold `key`.
    async fn holders(&self, key: &str) -> Vec<usize> {
        let mut holders = Vec::new();
        for (i, server) in self.servers.iter().enumerate() {
            let mut connection = raw(&server.url()).await;
            if connection.exists::<_, bool>(key).await.unwrap() {
                holders.push(i);
            }
        }
        holders
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h4_keys_land_on_the_shard_channels_redis_picks() {
    let cluster = Cluster::start(3);
    let prefix = unique_prefix();
    let layer = RedisChannelLayer::new(cluster.config(&prefix)).unwrap();

    // Groups: hash of the bare group name (WIRE §5 table: 0, 1, 2 for n = 3).
    for (group, shard) in [("chat", 0), ("lobby", 1), ("room.1", 2)] {
        assert_eq!(consistent_hash(group, 3), shard);
        layer.group_add(group, "member").await.unwrap();
        assert_eq!(
            cluster.holders(&format!("{prefix}:group:{group}")).await,
            vec![shard]
        );
    }

    // `!` channels: hash of the non-local part, for send and receive alike
    // (upstream send hashes the full name and loses messages: #1492).
    let mut channels = Vec::new();
    for _ in 0..8 {
        channels.push(layer.new_channel("specific").await.unwrap());
    }
    for (i, channel) in channels.iter().enumerate() {
        layer
            .send(channel, Message::new("m").with("i", i))
            .await
            .unwrap();
    }
    let expected = consistent_hash(non_local_name(&channels[0]), 3);
    let key = format!("{prefix}{}", non_local_name(&channels[0]));
    assert_eq!(cluster.holders(&key).await, vec![expected]);
    for (i, channel) in channels.iter().enumerate() {
        let got = timeout(Duration::from_secs(2), layer.receive(channel))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.get("i").and_then(|v| v.as_u64()), Some(i as u64));
    }

    // Plain channels: round-robin over the hosts, for send and for receive.
    for i in 0..3 {
        layer
            .send("rr", Message::new("m").with("i", i))
            .await
            .unwrap();
    }
    assert_eq!(cluster.holders(&format!("{prefix}rr")).await, vec![0, 1, 2]);
    let mut seen = Vec::new();
    for _ in 0..3 {
        let got = timeout(Duration::from_secs(6), layer.receive("rr"))
            .await
            .unwrap()
            .unwrap();
        seen.push(got.get("i").and_then(|v| v.as_i64()).unwrap());
    }
    seen.sort_unstable();
    assert_eq!(seen, vec![0, 1, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h3_groups_across_three_servers() {
    let cluster = Cluster::start(3);
    let prefix = unique_prefix();
    let layer = RedisChannelLayer::new(cluster.config(&prefix)).unwrap();
    // Different new_channel prefixes give different keys, spread over shards.
    let mut members = Vec::new();
    for i in 0..12 {
        members.push(layer.new_channel(&format!("channel{i}")).await.unwrap());
    }
    let shards: std::collections::HashSet<_> = members
        .iter()
        .map(|c| consistent_hash(non_local_name(c), 3))
        .collect();
    assert!(shards.len() >= 2, "members should span shards: {shards:?}");
    for member in &members {
        layer.group_add("test-group", member).await.unwrap();
    }
    layer
        .group_discard("test-group", &members[1])
        .await
        .unwrap();
    layer
        .group_send("test-group", Message::new("message.1"))
        .await
        .unwrap();
    for (i, member) in members.iter().enumerate() {
        let got = timeout(Duration::from_secs(1), layer.receive(member)).await;
        if i == 1 {
            assert!(got.is_err(), "discarded member got a message");
        } else {
            assert_eq!(got.unwrap().unwrap().message_type(), Some("message.1"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h3_groups_multiple_hosts_performance() {
    // channels_redis' test: 10 hosts (databases 0-9 of one server).
    let server = RedisServer::start().unwrap();
    let prefix = unique_prefix();
    let config = RedisConfig::new()
        .hosts_from((0..10).map(|db| format!("{}/{db}", server.url())))
        .prefix(prefix);
    let layer = Arc::new(RedisChannelLayer::new(config).unwrap());
    for (count, limit) in [(1, 1), (10, 1), (100, 10)] {
        let group = format!("perf-{count}");
        let mut members = Vec::new();
        for i in 0..count {
            let channel = layer.new_channel(&format!("channel{i}")).await.unwrap();
            layer.group_add(&group, &channel).await.unwrap();
            members.push(channel);
        }
        let started = Instant::now();
        layer.group_send(&group, Message::new("m")).await.unwrap();
        let receives = members.iter().map(|member| {
            let layer = layer.clone();
            let member = member.clone();
            tokio::spawn(async move { layer.receive(&member).await })
        });
        for handle in futures::future::join_all(receives).await {
            let got = handle.unwrap().unwrap();
            assert_eq!(got.message_type(), Some("m"));
        }
        let took = started.elapsed();
        assert!(
            took <= Duration::from_secs(limit),
            "{count} members took {took:?}"
        );
    }
}
