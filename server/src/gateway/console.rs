//! The console page at `/`: one static HTML file (no build step, no
//! external resources) that connects to `/ws` with an optional token,
//! subscribes, publishes, shows what arrives, and a few live numbers from
//! `/metrics`. It speaks docs/protocol.md over the JavaScript client's
//! `ReconnectingSocket` (so it reconnects after a drop), showing every frame.
//!
//! Also `/client.js`: the JavaScript client of `clients/js/` (one ES module),
//! so a page served anywhere can `import { ChannelsClient } from
//! "http://gateway/client.js"` without a package manager.

use axum::Router;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;

/// The page, embedded in the binary.
const PAGE: &str = include_str!("../../static/console.html");

/// The JavaScript client (`clients/js/client.js`), embedded in the binary.
const CLIENT_JS: &str = include_str!("../../../clients/js/client.js");

/// `GET /` and `GET /client.js`.
pub(super) fn routes() -> Router {
    Router::new()
        .route(
            "/",
            get(|| async {
                (
                    // The page loads nothing from elsewhere; say so to the browser.
                    [(
                        header::CONTENT_SECURITY_POLICY,
                        "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self' ws: wss:",
                    )],
                    Html(PAGE),
                )
                    .into_response()
            }),
        )
        .route("/client.js", get(client_js))
}

/// `GET /client.js`: the module, revalidated on every load so an upgraded
/// server is picked up; any origin may import it (it holds no secret).
async fn client_js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        CLIENT_JS,
    )
}
