//! The conformance suite's [G] checks against `RedisPubSubChannelLayer` on a
//! real `redis-server`.
//!
//! Each test gets its own server: Redis pub/sub topics are global to a server
//! (databases do not separate them), so tests sharing one would hear each
//! other's groups. The layer prefix is empty because channels_redis names
//! pub/sub channels `{prefix}{new_channel prefix}…` and L2/X7 check that a
//! name starts with the `new_channel` prefix; `tests/pubsub.rs` checks the
//! default `asgispecific.<hex>` naming.

use std::sync::Arc;
use std::time::Duration;

use channels_core::conformance::LayerFactory;
use channels_core::{LayerConfig, SharedLayer};
use channels_redis::testing::RedisServer;
use channels_redis::{RedisConfig, RedisPubSubChannelLayer};

struct PubSubFactory {
    server: RedisServer,
}

impl PubSubFactory {
    fn new() -> Self {
        let server = RedisServer::start().unwrap_or_else(|error| {
            panic!("cannot start redis-server for the pub/sub suite: {error}")
        });
        Self { server }
    }
}

#[channels_core::async_trait]
impl LayerFactory for PubSubFactory {
    async fn create(&self, config: LayerConfig) -> SharedLayer {
        let config = RedisConfig::new()
            .host(self.server.url())
            .prefix("")
            .layer_config(config);
        let layer = RedisPubSubChannelLayer::new(config)
            .unwrap_or_else(|error| panic!("cannot build the pub/sub layer: {error}"));
        Arc::new(layer)
    }

    fn time_unit(&self) -> Duration {
        Duration::from_secs(1)
    }
}

channels_core::conformance_general!(PubSubFactory::new());
