//! `GET /api/info`: what this server process is — version, layer, open
//! connections, uptime, and a node id that tells the processes of a cluster
//! apart (a load balancer may send two calls to two of them).

use std::sync::LazyLock;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use super::ApiState;
use super::extract::Authorized;
use super::openapi::InfoResponses;

/// This process's node id: random, fixed for the life of the process.
static NODE_ID: LazyLock<String> = LazyLock::new(|| uuid::Uuid::new_v4().simple().to_string());

/// The node id of this process (32 hex digits, new at every start).
pub(crate) fn node_id() -> &'static str {
    &NODE_ID
}

/// What `GET /api/info` answers.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "version": "0.1.0", "layer": "redis", "connections": 1250,
    "uptime_seconds": 86400, "node_id": "9f1c2e4b7a0d4c8e9b3f6a5d2c1e0f7a"
}))]
pub(crate) struct Info {
    /// The `channels-server` version.
    version: &'static str,
    /// The channel layer: `memory`, `redis`, `redis-pubsub`, or the type
    /// name of a layer an embedding application brought.
    layer: String,
    /// WebSocket connections open on this process now.
    connections: u64,
    /// Whole seconds since the server started serving the API.
    uptime_seconds: u64,
    /// This process's id (32 hex digits), new at every start.
    node_id: &'static str,
}

/// Server information
///
/// The version, the channel layer, how many WebSocket connections this
/// process holds, how long it has been up, and its node id.
#[utoipa::path(
    get,
    path = "/api/info",
    tag = "server",
    operation_id = "info",
    responses(InfoResponses)
)]
pub(crate) async fn info(_: Authorized, State(state): State<ApiState>) -> Json<Info> {
    Json(Info {
        version: env!("CARGO_PKG_VERSION"),
        layer: state.layer_kind.to_string(),
        connections: state
            .metrics
            .consumers
            .connections_open
            .load(Ordering::Relaxed),
        uptime_seconds: state.started.elapsed().as_secs(),
        node_id: node_id(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_are_named_like_the_layer_flag() {
        use channels_core::ChannelLayer as _;
        assert_eq!(
            channels_memory::InMemoryChannelLayer::new().name(),
            "memory"
        );
        let config = channels_redis::RedisConfig::new().host("redis://127.0.0.1:1");
        let redis = channels_redis::RedisChannelLayer::new(config.clone()).expect("a layer");
        assert_eq!(redis.name(), "redis");
        let pubsub = channels_redis::RedisPubSubChannelLayer::new(config).expect("a layer");
        assert_eq!(pubsub.name(), "redis-pubsub");
    }

    #[test]
    fn the_node_id_is_fixed_for_the_process() {
        assert_eq!(node_id().len(), 32);
        assert_eq!(node_id(), node_id());
    }
}
