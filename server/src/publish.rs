//! The HTTP publish API for notification backends: `POST /api/groups/{group}`
//! and `POST /api/channels/{channel}` with `Authorization: Bearer <token>` and
//! a JSON object holding a string `type`. 202 on success; 400, 401, 413 (and
//! 503 when the layer fails or the channel is full) with `{"error": "..."}`.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use channels_core::{LayerError, Message, SharedLayer, validate_channel_name, validate_group_name};

use crate::metrics::Metrics;
use crate::middleware::json_error;

#[derive(Debug, Clone)]
pub(crate) struct PublishState {
    pub(crate) layer: SharedLayer,
    pub(crate) token: Arc<str>,
    pub(crate) max_body_bytes: usize,
    pub(crate) metrics: Arc<Metrics>,
}

pub(crate) fn routes(state: PublishState) -> Router {
    Router::new()
        .route("/api/groups/{group}", post(publish_group))
        .route("/api/channels/{channel}", post(publish_channel))
        .with_state(state)
}

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

fn is_authorized(state: &PublishState, headers: &HeaderMap) -> bool {
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    constant_time_eq(given.trim().as_bytes(), state.token.as_bytes())
}

/// Compares without an early exit, so timing does not reveal the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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
    let limit = state.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err((
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body larger than {limit} bytes"),
        ));
    }
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|error| {
        if error.to_string().contains("length limit") {
            (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body larger than {limit} bytes"),
            )
        } else {
            (
                StatusCode::BAD_REQUEST,
                format!("cannot read body: {error}"),
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

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }
}
