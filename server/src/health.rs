//! `GET /healthz` (the process is up), `GET /readyz` (the layer answers and
//! the server is not shutting down) and `GET /metrics` (Prometheus, from the
//! app's registry).

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use channels_core::{Message, SharedLayer};
use prometheus_client::registry::Registry;

use crate::middleware::json_error;
use crate::shutdown::Shutdown;

/// How long `/readyz` waits for the layer.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// The group `/readyz` broadcasts to. Nobody joins it, so the broadcast has
/// no effect, but it is one real round trip on every backend (a Lua script on
/// the core Redis layer, a PUBLISH on the pub/sub layer).
const PROBE_GROUP: &str = "channels-server.readyz";

#[derive(Debug, Clone)]
pub(crate) struct HealthState {
    pub(crate) layer: SharedLayer,
    pub(crate) shutdown: Shutdown,
}

/// `/healthz` and `/readyz`.
pub(crate) fn routes(state: HealthState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// `/metrics`, rendering `registry` on every scrape.
pub(crate) fn metrics_routes(registry: Arc<RwLock<Registry>>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(registry)
}

async fn healthz() -> Response {
    Json(serde_json::json!({ "status": "ok" })).into_response()
}

async fn readyz(State(state): State<HealthState>) -> Response {
    if state.shutdown.is_triggered() {
        return json_error(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
    }
    let probe = state
        .layer
        .group_send(PROBE_GROUP, Message::new("readyz.probe"));
    match tokio::time::timeout(READY_TIMEOUT, probe).await {
        Ok(Ok(())) => Json(serde_json::json!({ "status": "ready" })).into_response(),
        Ok(Err(error)) => json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("channel layer error: {error}"),
        ),
        Err(_) => json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("channel layer did not answer within {READY_TIMEOUT:?}"),
        ),
    }
}

async fn metrics(State(registry): State<Arc<RwLock<Registry>>>) -> Response {
    // Encoding is synchronous; the lock is not held across an await.
    let text = crate::metrics::render(&registry.read().unwrap_or_else(PoisonError::into_inner));
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response()
}
