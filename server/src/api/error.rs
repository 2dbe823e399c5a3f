//! [`ApiError`]: every way an API request fails, its status code, and the
//! `{"error": "..."}` JSON body it always gets — including the answers axum
//! builds itself (a 405, a rejection of a path segment), which
//! [`into_json_error`] rewrites.

use axum::body::Body;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use channels_core::LayerError;
use serde::Serialize;
use utoipa::ToSchema;

/// The most of an error body axum produced that [`into_json_error`] reads.
const MAX_ERROR_TEXT: usize = 4096;

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"error": "missing or wrong `Authorization: Bearer <token>`"}))]
pub(crate) struct ErrorBody {
    /// What went wrong, and where it can, how to fix it.
    pub(crate) error: String,
}

/// Why an API request was refused or failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// No `Authorization: Bearer <token>` header, or the wrong token (401).
    #[error("missing or wrong `Authorization: Bearer <token>`")]
    Unauthorized,

    /// A path segment is not valid percent-encoded UTF-8 (400).
    #[error("bad path: {0}")]
    BadPath(String),

    /// A channel or group name breaks Django's rules (400).
    #[error(transparent)]
    InvalidName(LayerError),

    /// Some other value of the request is out of bounds (400).
    #[error("{0}")]
    BadRequest(String),

    /// The body is not JSON (400).
    #[error("body is not valid JSON: {0}")]
    NotJson(#[source] serde_json::Error),

    /// The body is JSON of the wrong shape (400).
    #[error("{expected}: {source}")]
    WrongShape {
        /// What the endpoint takes.
        expected: &'static str,
        /// What serde found wrong.
        #[source]
        source: serde_json::Error,
    },

    /// The body is JSON but not an object (400).
    #[error("{expected}; got JSON that is not an object")]
    NotAnObject {
        /// What the endpoint takes.
        expected: &'static str,
    },

    /// The body could not be read (400), other than being too large.
    #[error("cannot read body: {0}")]
    UnreadableBody(String),

    /// The body is larger than the limit (413).
    #[error("body larger than {limit} bytes")]
    TooLarge {
        /// `--max-frame-bytes`.
        limit: usize,
    },

    /// The body is declared as something other than JSON (415).
    #[error("content type `{given}` is not JSON; send `Content-Type: application/json` (or none)")]
    NotJsonContentType {
        /// The `Content-Type` header as sent.
        given: String,
    },

    /// No API endpoint at this path (404).
    #[error("no API endpoint at `{path}`; see GET /api/openapi.json")]
    NotFound {
        /// The request path.
        path: String,
    },

    /// The server stayed overloaded for the whole back-pressure wait (503,
    /// with `Retry-After`); nothing was sent.
    #[error(
        "server overloaded: it cannot write to its clients as fast as messages arrive; retry later"
    )]
    Overloaded,

    /// The group keeps no history (404).
    #[error("group `{group}` keeps no history (see --history-size and [history])")]
    NoHistory {
        /// The group asked for.
        group: String,
    },

    /// The channel layer refused or failed the operation (503, or 400 when
    /// it found the request invalid).
    #[error(transparent)]
    Layer(#[from] LayerError),

    /// A presence query on a server started without `--presence` (501).
    #[error(
        "presence is off on this server; start it with --presence (or `presence = true` under [server] in the config file)"
    )]
    PresenceOff,

    /// Some group sends of a broadcast failed (503).
    #[error("{failed} of {total} group sends failed; first error: {first}")]
    PartlyFailed {
        /// How many failed.
        failed: usize,
        /// How many were tried.
        total: usize,
        /// The first failure.
        #[source]
        first: LayerError,
    },
}

impl ApiError {
    /// The HTTP status this error answers with.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::BadPath(_)
            | Self::InvalidName(_)
            | Self::BadRequest(_)
            | Self::NotJson(_)
            | Self::WrongShape { .. }
            | Self::NotAnObject { .. }
            | Self::UnreadableBody(_) => StatusCode::BAD_REQUEST,
            Self::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NotJsonContentType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::NoHistory { .. } => StatusCode::NOT_FOUND,
            Self::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            Self::NotFound { .. } => StatusCode::NOT_FOUND,
            Self::Layer(error) => layer_status(error),
            Self::PartlyFailed { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::PresenceOff => StatusCode::NOT_IMPLEMENTED,
        }
    }
}

/// 400 for what the layer found invalid in the request, 503 for the rest
/// (a full channel, Redis away, the layer closing): worth retrying later.
fn layer_status(error: &LayerError) -> StatusCode {
    match error {
        LayerError::InvalidMessage { .. }
        | LayerError::InvalidChannelName { .. }
        | LayerError::InvalidGroupName { .. } => StatusCode::BAD_REQUEST,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            static LIMIT: channels_core::LogLimiter = channels_core::LogLimiter::per_second();
            if let Some(held_back) = LIMIT.allow() {
                tracing::warn!(held_back, error = %self, "API request failed in the channel layer");
            }
        }
        let mut response = json_error(status, self.to_string());
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if matches!(self, Self::Overloaded) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// A JSON error answer `{"error": message}`.
pub(crate) fn json_error(status: StatusCode, message: String) -> Response {
    (status, axum::Json(ErrorBody { error: message })).into_response()
}

/// Whether `response` already carries a JSON body.
fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(super::extract::is_json_media_type)
}

/// Turns an error answer that is not JSON — axum's own 405, a rejection
/// that slipped past our extractors — into `{"error": "..."}`, keeping its
/// status and other headers (`Allow` on a 405). Other answers pass as they are.
pub(crate) async fn into_json_error(response: Response, method: &Method, path: &str) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(&response) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, MAX_ERROR_TEXT)
        .await
        .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_owned())
        .unwrap_or_default();
    let message = if status == StatusCode::METHOD_NOT_ALLOWED {
        format!(
            "method {method} is not allowed on `{path}`; the `Allow` header lists those that are"
        )
    } else if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_lowercase()
    } else {
        text
    };
    let json = serde_json::to_vec(&ErrorBody { error: message })
        .expect("a struct of one string always serializes");
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(json))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn text_errors_become_json_and_keep_their_headers() {
        let mut text = (StatusCode::METHOD_NOT_ALLOWED, "").into_response();
        text.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        let json = into_json_error(text, &Method::GET, "/api/groups/g").await;
        assert_eq!(json.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(json.headers()[header::ALLOW], "POST");
        assert_eq!(json.headers()[header::CONTENT_TYPE], "application/json");
        let body = axum::body::to_bytes(json.into_body(), 1024)
            .await
            .expect("a buffered body");
        let value: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert!(
            value["error"]
                .as_str()
                .is_some_and(|e| e.contains("GET") && e.contains("/api/groups/g")),
            "{value}"
        );

        let ok = (StatusCode::ACCEPTED, "fine").into_response();
        let passed = into_json_error(ok, &Method::POST, "/").await;
        assert_eq!(passed.status(), StatusCode::ACCEPTED);
        assert!(
            passed
                .headers()
                .get(header::CONTENT_TYPE)
                .is_some_and(|v| v != "application/json")
        );
    }

    #[test]
    fn layer_errors_map_to_400_or_503() {
        let full = LayerError::ChannelFull {
            channel: "c".to_owned(),
            capacity: 1,
        };
        assert_eq!(
            ApiError::from(full).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        let invalid = LayerError::invalid_message("no type");
        assert_eq!(ApiError::from(invalid).status(), StatusCode::BAD_REQUEST);
        assert_eq!(ApiError::Unauthorized.status(), StatusCode::UNAUTHORIZED);
    }
}
