//! Building the Redis channel layers from the command line's URLs and prefix.

use std::sync::Arc;

use channels_core::{LayerConfig, SharedLayer};
use channels_redis::{RedisChannelLayer, RedisConfig, RedisPubSubChannelLayer};

use crate::error::ServerError;

fn config(urls: &[String], prefix: &str, layer: LayerConfig) -> RedisConfig {
    RedisConfig::new()
        .hosts_from(urls.iter().cloned())
        .prefix(prefix)
        .layer_config(layer)
}

/// The channels_redis-compatible core layer (lists, sorted sets, Lua); several
/// URLs shard the keys as channels_redis does.
pub(crate) fn core_layer(
    urls: &[String],
    prefix: &str,
    layer: LayerConfig,
) -> Result<SharedLayer, ServerError> {
    Ok(Arc::new(RedisChannelLayer::new(config(
        urls, prefix, layer,
    ))?))
}

/// The channels_redis.pubsub-compatible layer.
pub(crate) fn pubsub_layer(
    urls: &[String],
    prefix: &str,
    layer: LayerConfig,
) -> Result<SharedLayer, ServerError> {
    Ok(Arc::new(RedisPubSubChannelLayer::new(config(
        urls, prefix, layer,
    ))?))
}
