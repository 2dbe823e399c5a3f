//! H1: the conformance suite through Redis Sentinel: a master found via a
//! password-protected Sentinel (`("127.0.0.1", <port>)`, master "sentinel",
//! sentinel password), as channels_redis' test_sentinel.py does.
//! Needs `redis-server` (run in `--sentinel` mode); no extra package.
#![allow(clippy::unwrap_used)] // test setup: a failed step should panic right there

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use channels_core::conformance::LayerFactory;
use channels_core::{ChannelLayer, LayerConfig, Message, SharedLayer};
use channels_redis::testing::{RedisSentinel, RedisServer, unique_prefix};
use channels_redis::{RedisChannelLayer, RedisConfig, SentinelHost};

const SENTINEL_PASSWORD: &str = "channels_redis";

fn sentinel_port() -> u16 {
    static SETUP: OnceLock<(RedisServer, RedisSentinel)> = OnceLock::new();
    let (_, sentinel) = SETUP.get_or_init(|| {
        let master = RedisServer::start().expect("redis-server on PATH");
        let sentinel = RedisSentinel::start(&master, "sentinel", Some(SENTINEL_PASSWORD))
            .expect("redis-server --sentinel");
        (master, sentinel)
    });
    sentinel.port()
}

fn sentinel_config() -> RedisConfig {
    let host = SentinelHost::new(vec![("127.0.0.1".to_owned(), sentinel_port())], "sentinel")
        .sentinel_password(SENTINEL_PASSWORD);
    RedisConfig::new().host(host).prefix(unique_prefix())
}

struct SentinelFactory;

#[channels_core::async_trait]
impl LayerFactory for SentinelFactory {
    async fn create(&self, config: LayerConfig) -> SharedLayer {
        Arc::new(
            RedisChannelLayer::new(sentinel_config().layer_config(config)).expect("valid config"),
        )
    }

    fn time_unit(&self) -> Duration {
        Duration::from_secs(1)
    }
}

channels_core::conformance_general!(SentinelFactory);
channels_core::conformance_queue!(SentinelFactory);

#[tokio::test]
async fn h1_wrong_sentinel_password_is_a_backend_error() {
    let host = SentinelHost::new(vec![("127.0.0.1".to_owned(), sentinel_port())], "sentinel")
        .sentinel_password("wrong");
    let layer =
        RedisChannelLayer::new(RedisConfig::new().host(host).prefix(unique_prefix())).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(10), layer.send("x", Message::new("m")))
        .await
        .unwrap();
    assert!(
        matches!(result, Err(channels_core::LayerError::Backend(_))),
        "{result:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h1_master_restart_behind_the_sentinel_recovers() {
    let master = Arc::new(std::sync::Mutex::new(RedisServer::start().unwrap()));
    let sentinel = {
        let master = master.lock().unwrap();
        RedisSentinel::start(&master, "sentinel", Some(SENTINEL_PASSWORD)).unwrap()
    };
    let host = SentinelHost::new(vec![("127.0.0.1".to_owned(), sentinel.port())], "sentinel")
        .sentinel_password(SENTINEL_PASSWORD);
    let layer =
        RedisChannelLayer::new(RedisConfig::new().host(host).prefix(unique_prefix())).unwrap();
    let channel = layer.new_channel("specific").await.unwrap();
    layer.group_add("room", &channel).await.unwrap();
    layer
        .group_send("room", Message::new("before"))
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(2), layer.receive(&channel))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.message_type(), Some("before"));

    let restarting = master.clone();
    tokio::task::spawn_blocking(move || restarting.lock().unwrap().restart().unwrap())
        .await
        .unwrap();
    // Memberships come back with the receive loop; group_send reaches the
    // channel again once the layer has re-resolved and reconnected.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let sent = layer.group_send("room", Message::new("after")).await;
        if sent.is_ok()
            && let Ok(Ok(got)) =
                tokio::time::timeout(Duration::from_millis(500), layer.receive(&channel)).await
        {
            assert_eq!(got.message_type(), Some("after"));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no recovery: {sent:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(sentinel);
}
