//! The channels-core conformance suite ([G] and [Q] checks) against a real
//! redis-server, one fresh key prefix per layer.

mod support;

use std::sync::Arc;
use std::time::Duration;

use channels_core::conformance::LayerFactory;
use channels_core::{LayerConfig, SharedLayer};
use channels_redis::RedisChannelLayer;

struct RedisFactory;

#[channels_core::async_trait]
impl LayerFactory for RedisFactory {
    async fn create(&self, config: LayerConfig) -> SharedLayer {
        let config = support::config().layer_config(config);
        Arc::new(RedisChannelLayer::new(config).expect("valid redis config"))
    }

    fn time_unit(&self) -> Duration {
        Duration::from_secs(1)
    }
}

channels_core::conformance_general!(RedisFactory);
channels_core::conformance_queue!(RedisFactory);
