//! An HTTP client for tests: `reqwest` with rustls (no OpenSSL), one shared
//! client, every request bounded by [`REQUEST_TIMEOUT`].

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

/// How long one request may take, connect to last byte.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A response, read whole.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The headers, names lowercased, in order.
    pub headers: Vec<(String, String)>,
    /// The body as text (lossy UTF-8).
    pub body: String,
}

impl HttpResponse {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON.
    ///
    /// # Panics
    /// When it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body {:?} is not JSON: {e}", self.body))
    }
}

/// The shared client (rustls with the `ring` provider; tests speak plain
/// HTTP to loopback, so TLS is there only for completeness).
///
/// # Panics
/// When the client cannot be built.
pub fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .no_proxy()
            // One connection per request, so a server that stops is seen.
            .pool_max_idle_per_host(0)
            .build()
            .expect("build the reqwest client")
    })
}

/// Sends `method path` to `addr` with `headers` and `body`.
///
/// # Panics
/// When the request fails or times out.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<reqwest::Body>,
) -> HttpResponse {
    try_request(addr, method, path, headers, body)
        .await
        .unwrap_or_else(|e| panic!("{method} http://{addr}{path} failed: {e}"))
}

/// Like [`request`], returning the failure (refused, timed out, ...).
///
/// # Errors
/// When the request cannot be sent or its answer read.
///
/// # Panics
/// When `method` is not an HTTP method.
pub async fn try_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<reqwest::Body>,
) -> Result<HttpResponse, reqwest::Error> {
    let method = reqwest::Method::from_bytes(method.as_bytes())
        .unwrap_or_else(|e| panic!("bad method {method}: {e}"));
    let mut builder = client()
        .request(method, format!("http://{addr}{path}"))
        .body(body);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let response = builder.send().await?;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = response.text().await?;
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

/// `GET path`.
///
/// # Panics
/// As [`request`].
pub async fn get(addr: SocketAddr, path: &str) -> HttpResponse {
    request(addr, "GET", path, &[], Vec::new()).await
}

/// `POST path` with a JSON body and, if given, `Authorization: Bearer`.
///
/// # Panics
/// As [`request`].
pub async fn post_json(
    addr: SocketAddr,
    path: &str,
    bearer: Option<&str>,
    body: &serde_json::Value,
) -> HttpResponse {
    try_post_json(addr, path, bearer, body)
        .await
        .unwrap_or_else(|e| panic!("POST http://{addr}{path} failed: {e}"))
}

/// Like [`post_json`], returning the failure.
///
/// # Errors
/// As [`try_request`].
pub async fn try_post_json(
    addr: SocketAddr,
    path: &str,
    bearer: Option<&str>,
    body: &serde_json::Value,
) -> Result<HttpResponse, reqwest::Error> {
    let auth = bearer.map(|token| format!("Bearer {token}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(auth) = &auth {
        headers.push(("authorization", auth.as_str()));
    }
    try_request(addr, "POST", path, &headers, body.to_string()).await
}

/// `GET path`, returning the failure.
///
/// # Errors
/// As [`try_request`].
pub async fn try_get(addr: SocketAddr, path: &str) -> Result<HttpResponse, reqwest::Error> {
    try_request(addr, "GET", path, &[], Vec::new()).await
}
