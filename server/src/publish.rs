//! The HTTP publish API for notification backends: `POST /api/groups/{group}`
//! and `POST /api/channels/{channel}` with `Authorization: Bearer <token>` and
//! a JSON object holding a string `type`. 202 on success; 400, 401, 413 (and
//! 503 when the layer fails or the channel is full) with `{"error": "..."}`.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use channels_core::{LayerError, Message, SharedLayer, validate_channel_name, validate_group_name};
use subtle::ConstantTimeEq as _;

use crate::metrics::Metrics;
use crate::middleware::{bearer_token, json_error};

#[derive(Debug, Clone)]
pub(crate) struct PublishState {
    pub(crate) layer: SharedLayer,
    pub(crate) token: Arc<str>,
    pub(crate) max_body_bytes: usize,
    pub(crate) metrics: Arc<Metrics>,
}

pub(crate) fn routes(state: PublishState) -> Router {
    let limit = state.max_body_bytes;
    Router::new()
        .route("/api/groups/{group}", post(publish_group))
        .route("/api/channels/{channel}", post(publish_channel))
        // A bigger body is refused while it is read (413, see `handle`).
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// The publish handlers' body: the bytes, or why they could not be read
/// (413 past the limit).
type Body = Result<Bytes, BytesRejection>;

#[derive(Debug, Clone, Copy)]
enum Target {
    Group,
    Channel,
}

async fn publish_group(
    State(state): State<PublishState>,
    Path(group): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    publish(state, Target::Group, group, headers, body).await
}

async fn publish_channel(
    State(state): State<PublishState>,
    Path(channel): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    publish(state, Target::Channel, channel, headers, body).await
}

async fn publish(
    state: PublishState,
    target: Target,
    name: String,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let (status, response) = match handle(&state, target, &name, &headers, body).await {
        Ok(()) => (
            StatusCode::ACCEPTED,
            (
                StatusCode::ACCEPTED,
                axum::Json(serde_json::json!({ "status": "accepted" })),
            )
                .into_response(),
        ),
        Err((status, message)) => (status, json_error(status, message)),
    };
    state.metrics.published(status.as_u16(), started);
    response
}

/// Checks the bearer token in constant time, so timing does not reveal it.
fn is_authorized(state: &PublishState, headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .is_some_and(|given| bool::from(given.as_bytes().ct_eq(state.token.as_bytes())))
}

async fn handle(
    state: &PublishState,
    target: Target,
    name: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<(), (StatusCode, String)> {
    if !is_authorized(state, headers) {
        return Err((
            StatusCode::UNAUTHORIZED,
            "missing or wrong `Authorization: Bearer <token>`".to_owned(),
        ));
    }
    let bytes = body.map_err(|rejection| {
        let status = rejection.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            (
                status,
                format!("body larger than {} bytes", state.max_body_bytes),
            )
        } else {
            (
                status,
                format!("cannot read body: {}", rejection.body_text()),
            )
        }
    })?;
    let bad = |message: String| (StatusCode::BAD_REQUEST, message);
    // Straight into a message, so field order survives (serde_json's own map
    // would sort the keys).
    let message: Message = serde_json::from_slice(&bytes).map_err(|e| {
        if e.is_syntax() || e.is_eof() {
            bad(format!("body is not valid JSON: {e}"))
        } else {
            bad(format!(
                "body must be a JSON object with a string `type`: {e}"
            ))
        }
    })?;
    let result = match target {
        Target::Group => {
            validate_group_name(name).map_err(|e| bad(e.to_string()))?;
            state.layer.group_send(name, message).await
        }
        Target::Channel => {
            validate_channel_name(name).map_err(|e| bad(e.to_string()))?;
            state.layer.send(name, message).await
        }
    };
    result.map_err(|error| match error {
        LayerError::InvalidMessage { .. }
        | LayerError::InvalidChannelName { .. }
        | LayerError::InvalidGroupName { .. } => (StatusCode::BAD_REQUEST, error.to_string()),
        other => {
            tracing::warn!(%name, error = %other, "publish failed in the channel layer");
            (StatusCode::SERVICE_UNAVAILABLE, other.to_string())
        }
    })
}
