//! The console page at `/`: one static HTML file (no build step, no
//! external resources) that connects to `/ws` with an optional token,
//! subscribes, publishes, shows what arrives, and a few live numbers from
//! `/metrics`. It speaks docs/protocol.md with the browser's own WebSocket.

use axum::Router;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;

/// The page, embedded in the binary.
const PAGE: &str = include_str!("../../static/console.html");

/// `GET /`.
pub(super) fn routes() -> Router {
    Router::new().route(
        "/",
        get(|| async {
            (
                // The page loads nothing from elsewhere; say so to the browser.
                [(
                    header::CONTENT_SECURITY_POLICY,
                    "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self' ws: wss:",
                )],
                Html(PAGE),
            )
                .into_response()
        }),
    )
}
