//! `GET /healthz` (the process is up), `GET /readyz` (the layer answers and
//! the server is not shutting down) and `GET /metrics` (Prometheus).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use channels_core::{Message, SharedLayer};

use crate::metrics::Metrics;
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
    pub(crate) metrics: Arc<Metrics>,
}

pub(crate) fn routes(state: HealthState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
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

async fn metrics(State(state): State<HealthState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}
