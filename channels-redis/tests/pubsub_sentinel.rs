//! H1 [P]: the pub/sub layer through Redis Sentinel (master name
//! `sentinel`, a Sentinel password), as channels_redis's
//! test_pubsub_sentinel.py: the whole [G] suite, plus a restart of the master
//! behind the Sentinel.

use std::sync::Arc;
use std::time::Duration;

use channels_core::conformance::LayerFactory;
use channels_core::{ChannelLayer, LayerConfig, Message, SharedLayer};
use channels_redis::testing::{RedisSentinel, RedisServer};
use channels_redis::{RedisConfig, RedisPubSubChannelLayer, SentinelHost};

const MASTER_NAME: &str = "sentinel";
const SENTINEL_PASSWORD: &str = "channels_redis";

struct SentinelFactory {
    // Field order: the Sentinel stops before its master.
    sentinel: RedisSentinel,
    master: RedisServer,
}

impl SentinelFactory {
    fn new() -> Self {
        let master = RedisServer::start()
            .unwrap_or_else(|error| panic!("cannot start the master redis-server: {error}"));
        let sentinel = RedisSentinel::start(&master, MASTER_NAME, Some(SENTINEL_PASSWORD))
            .unwrap_or_else(|error| panic!("cannot start redis-sentinel: {error}"));
        Self { sentinel, master }
    }

    fn config(&self) -> RedisConfig {
        let host = SentinelHost::new(
            vec![("127.0.0.1".to_owned(), self.sentinel.port())],
            MASTER_NAME,
        )
        .sentinel_password(SENTINEL_PASSWORD);
        RedisConfig::new().host(host).prefix("")
    }
}

#[channels_core::async_trait]
impl LayerFactory for SentinelFactory {
    async fn create(&self, config: LayerConfig) -> SharedLayer {
        let layer = RedisPubSubChannelLayer::new(self.config().layer_config(config))
            .unwrap_or_else(|error| panic!("cannot build the pub/sub layer: {error}"));
        Arc::new(layer)
    }

    fn time_unit(&self) -> Duration {
        Duration::from_secs(1)
    }
}

channels_core::conformance_general!(SentinelFactory::new());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h1_groups_survive_a_master_restart_behind_sentinel() {
    let mut factory = SentinelFactory::new();
    let layer = RedisPubSubChannelLayer::new(factory.config()).unwrap();
    let c1 = layer.new_channel("specific").await.unwrap();
    let c2 = layer.new_channel("specific").await.unwrap();
    layer.group_add("h1", &c1).await.unwrap();
    factory.master.restart().unwrap();
    layer.group_add("h1", &c2).await.unwrap();
    layer
        .group_send("h1", Message::new("h1.message"))
        .await
        .unwrap();
    for channel in [&c1, &c2] {
        let message = tokio::time::timeout(Duration::from_secs(5), layer.receive(channel))
            .await
            .expect("delivered within 5 s")
            .unwrap();
        assert_eq!(message.message_type(), Some("h1.message"));
    }
}
