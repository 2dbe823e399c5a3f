//! The HTTP API for backends (docs/protocol.md, "HTTP API for backends"):
//! publish to groups, channels and users, steer the connections of a user,
//! read what the server is, and its OpenAPI 3.1 document.
//!
//! Every call but `GET /api/openapi.json` takes `Authorization: Bearer
//! <token>` (`--publish-token`; the API is not mounted without one). A
//! request is checked in order — token (401), path (400), body (415, 413,
//! 400) — before the layer is touched. Every error answer is
//! `{"error": "..."}` with `content-type: application/json`, including a
//! 404 under `/api` and axum's own answers (405, rejections), which
//! [`observe`] rewrites. Each answer is counted by status and by endpoint.
//!
//! | file | what |
//! |---|---|
//! | `publish.rs` | groups, channels, broadcast |
//! | `users.rs` | a user's group: send, subscribe, unsubscribe, disconnect |
//! | `info.rs` | `GET /api/info` |
//! | `presence.rs` | who is in a group (`--presence`) |
//! | `openapi.rs` | the document, and the schemas the derives cannot say |
//! | `extract.rs` | token, path and body extractors |
//! | `error.rs` | [`ApiError`](error::ApiError) and the JSON error body |

mod error;
mod extract;
mod history;
mod info;
mod openapi;
mod presence;
mod publish;
mod users;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::Uri;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{any, get, post};
use channels_core::SharedLayer;

use crate::history::Histories;
use crate::metrics::Metrics;
use error::ApiError;
pub(crate) use info::node_id;

use crate::presence::Presence;

/// The label of calls that matched no endpoint (404).
const OTHER: &str = "other";

/// Every endpoint's route, as `channels_api_requests_total` labels it and
/// as the OpenAPI document lists it.
pub(crate) const ENDPOINTS: [&str; 12] = [
    "/api/groups/{group}",
    "/api/channels/{channel}",
    "/api/broadcast",
    "/api/users/{user}/send",
    "/api/users/{user}/subscribe",
    "/api/users/{user}/unsubscribe",
    "/api/users/{user}/disconnect",
    "/api/info",
    "/api/openapi.json",
    "/api/groups/{group}/history",
    "/api/groups/{group}/presence",
    "/api/groups/{group}/presence/count",
];

/// What every API handler shares.
#[derive(Clone)]
pub(crate) struct ApiState {
    /// The (metered) layer calls go through.
    pub(crate) layer: SharedLayer,
    /// The bearer token.
    pub(crate) token: Arc<str>,
    /// The body limit (`--max-frame-bytes`).
    pub(crate) max_body_bytes: usize,
    /// Where calls are counted; the open connections `/api/info` reports.
    pub(crate) metrics: Arc<Metrics>,
    /// What `/api/info` calls the layer.
    pub(crate) layer_kind: Arc<str>,
    /// When the API was mounted, for `/api/info`'s uptime.
    pub(crate) started: Instant,
    /// The OpenAPI document, rendered once.
    pub(crate) openapi: Arc<str>,
    /// Presence, when it is on (`--presence`).
    pub(crate) presence: Option<Arc<Presence>>,
    /// Group histories, when any group keeps one.
    pub(crate) histories: Option<Arc<Histories>>,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the token: a debug log must not leak it.
        f.debug_struct("ApiState")
            .field("layer_kind", &self.layer_kind)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("started", &self.started)
            .finish_non_exhaustive()
    }
}

impl ApiState {
    /// The state of an API on `layer` (already metered) whose layer is of
    /// `layer_kind` (`ChannelLayer::name`).
    pub(crate) fn new(
        layer: SharedLayer,
        layer_kind: String,
        token: &str,
        max_body_bytes: usize,
        metrics: Arc<Metrics>,
        histories: Option<Arc<Histories>>,
    ) -> Self {
        Self {
            histories,
            layer,
            token: Arc::from(token),
            max_body_bytes,
            metrics,
            layer_kind: Arc::from(layer_kind),
            started: Instant::now(),
            openapi: openapi::render(),
            presence: None,
        }
    }

    /// The same state, answering presence queries from `presence`.
    pub(crate) fn with_presence(mut self, presence: Option<Arc<Presence>>) -> Self {
        self.presence = presence;
        self
    }
}

/// The API's routes, to merge into the public or the admin router.
pub(crate) fn routes(state: ApiState) -> Router {
    state.metrics.api_endpoints(&ENDPOINTS);
    state.metrics.api_endpoints(&[OTHER]);
    let limit = state.max_body_bytes;
    Router::new()
        .route(ENDPOINTS[0], post(publish::group))
        .route(ENDPOINTS[1], post(publish::channel))
        .route(ENDPOINTS[2], post(publish::broadcast))
        .route(ENDPOINTS[3], post(users::send))
        .route(ENDPOINTS[4], post(users::subscribe))
        .route(ENDPOINTS[5], post(users::unsubscribe))
        .route(ENDPOINTS[6], post(users::disconnect))
        .route(ENDPOINTS[7], get(info::info))
        .route(ENDPOINTS[8], get(openapi::document))
        .route(ENDPOINTS[9], get(history::history))
        .route(ENDPOINTS[10], get(presence::members))
        .route(ENDPOINTS[11], get(presence::count))
        // Routes rather than a fallback, so merging into an app that has a
        // fallback of its own does not panic; the endpoints above win.
        .route("/api", any(not_found))
        .route("/api/", any(not_found))
        .route("/api/{*rest}", any(not_found))
        // A bigger body is refused while it is read (413, see `extract.rs`).
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound {
        path: uri.path().to_owned(),
    }
}

/// Counts every answer by status and endpoint, and makes sure an error
/// answer is JSON whoever built it.
async fn observe(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|matched| matched.as_str().to_owned());
    let endpoint = route
        .as_deref()
        .and_then(|route| ENDPOINTS.iter().copied().find(|known| *known == route))
        .unwrap_or(OTHER);
    let method = request.method().clone();
    let path = route.unwrap_or_else(|| request.uri().path().to_owned());
    let response = next.run(request).await;
    let response = error::into_json_error(response, &method, &path).await;
    state
        .metrics
        .api_answered(endpoint, response.status().as_u16(), started);
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use utoipa::OpenApi as _;

    #[test]
    fn the_document_lists_every_endpoint_and_only_those() {
        let document = openapi::ApiDoc::openapi();
        let mut documented: Vec<&str> = document.paths.paths.keys().map(String::as_str).collect();
        let mut served = ENDPOINTS.to_vec();
        documented.sort_unstable();
        served.sort_unstable();
        assert_eq!(documented, served);
    }

    #[test]
    fn the_document_is_openapi_3_1_with_bearer_security() {
        let json: serde_json::Value =
            serde_json::from_str(&openapi::render()).expect("the document is JSON");
        assert_eq!(json["openapi"], "3.1.0");
        assert_eq!(
            json["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        assert_eq!(json["security"][0]["bearer"], serde_json::json!([]));
        let group = &json["paths"]["/api/groups/{group}"]["post"];
        assert_eq!(
            group["parameters"][0]["schema"]["pattern"],
            openapi::GROUP_PATTERN
        );
        for status in ["202", "400", "401", "413", "415", "503"] {
            assert!(
                group["responses"][status]["content"]["application/json"].is_object(),
                "{status} has no JSON body: {group}"
            );
        }
    }
}
