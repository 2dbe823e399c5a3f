//! A minimal HTTP/1.0 client for `/metrics`, `/readyz` and the publish API:
//! one request per connection, so the response ends when the socket closes
//! and is never chunked.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// How long one request may take, connect to last byte.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Responses here are small; a bigger one is a bug.
const MAX_RESPONSE_BYTES: u64 = 4 << 20;

/// A parsed HTTP response.
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
}

/// `GET path` from `addr`.
///
/// # Errors
/// When the request fails, times out (5 s) or the response is malformed.
pub async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<HttpResponse> {
    request(addr, format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")).await
}

/// `POST path` to `addr` with a JSON body and, if given, `Authorization: Bearer`.
///
/// # Errors
/// When the request fails, times out (5 s) or the response is malformed.
pub async fn http_post_json(
    addr: SocketAddr,
    path: &str,
    bearer: Option<&str>,
    body: &serde_json::Value,
) -> anyhow::Result<HttpResponse> {
    let body = body.to_string();
    let auth = bearer
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "POST {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    request(addr, head + &body).await
}

async fn request(addr: SocketAddr, raw: String) -> anyhow::Result<HttpResponse> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connect to {addr}"))?;
        stream
            .write_all(raw.as_bytes())
            .await
            .context("write request")?;
        let mut bytes = Vec::new();
        (&mut stream)
            .take(MAX_RESPONSE_BYTES)
            .read_to_end(&mut bytes)
            .await
            .context("read response")?;
        parse(&bytes)
    };
    timeout(REQUEST_TIMEOUT, exchange)
        .await
        .with_context(|| format!("HTTP request to {addr} took over {REQUEST_TIMEOUT:?}"))?
}

fn parse(bytes: &[u8]) -> anyhow::Result<HttpResponse> {
    let text = String::from_utf8_lossy(bytes);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("response without a header end: {text:?}");
    };
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok(HttpResponse {
        status,
        headers,
        body: body.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_headers_and_body() {
        let response =
            parse(b"HTTP/1.1 202 Accepted\r\nContent-Type: a/b\r\nX-Y: z\r\n\r\n{\"ok\":1}")
                .unwrap();
        assert_eq!(response.status, 202);
        assert_eq!(response.header("x-y"), Some("z"));
        assert_eq!(response.header("Content-Type"), Some("a/b"));
        assert_eq!(response.body, "{\"ok\":1}");
        assert!(parse(b"garbage").is_err());
    }
}
