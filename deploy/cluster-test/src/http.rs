//! HTTP for `/metrics`, `/readyz` and the publish API, through
//! `test-support`'s client (reqwest), with errors as `anyhow`.

use std::net::SocketAddr;

use anyhow::Context;
pub use test_support::http::HttpResponse;

/// `GET path` from `addr`.
///
/// # Errors
/// When the request fails or times out.
pub async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<HttpResponse> {
    test_support::http::try_get(addr, path)
        .await
        .with_context(|| format!("GET http://{addr}{path}"))
}

/// `POST path` to `addr` with a JSON body and, if given, `Authorization: Bearer`.
///
/// # Errors
/// When the request fails or times out.
pub async fn http_post_json(
    addr: SocketAddr,
    path: &str,
    bearer: Option<&str>,
    body: &serde_json::Value,
) -> anyhow::Result<HttpResponse> {
    test_support::http::try_post_json(addr, path, bearer, body)
        .await
        .with_context(|| format!("POST http://{addr}{path}"))
}
