//! Middleware for WebSocket routes: allowed origins (403), connection limit
//! (503), and the authentication hook that puts a user in the scope (401).

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use channels_core::consumer::{Identity, Scope};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics::{Metrics, Refusal};

/// A JSON error response `{"error": "..."}`.
pub(crate) fn json_error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        axum::Json(serde_json::json!({ "error": message.into() })),
    )
        .into_response()
}

/// The token of an `Authorization: Bearer <token>` header value; the scheme
/// is case-insensitive (RFC 7235: `bearer`, `Bearer`, `BEARER`).
pub(crate) fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|token| !token.is_empty())
}

/// Allowed origins, Django's `OriginValidator` rules: empty allows all; `*`
/// allows all; `https://*.example.com` allows subdomains; otherwise exact.
/// With a list, a request without `Origin` is refused, as Django does.
#[derive(Debug, Clone)]
pub(crate) struct OriginCheck {
    allowed: Arc<Vec<String>>,
    metrics: Arc<Metrics>,
}

impl OriginCheck {
    pub(crate) fn new(allowed: Vec<String>, metrics: Arc<Metrics>) -> Self {
        Self {
            allowed: Arc::new(allowed),
            metrics,
        }
    }

    fn allows(&self, origin: Option<&str>) -> bool {
        if self.allowed.is_empty() || self.allowed.iter().any(|a| a == "*") {
            return true;
        }
        // Parsed, never compared as text: `https://evil.com/.example.com`
        // must not pass for `https://*.example.com`.
        let Some(origin) = origin.and_then(Origin::parse) else {
            return false;
        };
        self.allowed.iter().any(|pattern| origin.matches(pattern))
    }
}

/// An `Origin` header value: scheme, host and port, nothing else (a path,
/// a query or user info makes it invalid).
#[derive(Debug, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host: String,
    port: Option<u16>,
}

impl Origin {
    fn parse(text: &str) -> Option<Self> {
        let uri: http::Uri = text.trim().parse().ok()?;
        let scheme = uri.scheme_str()?.to_ascii_lowercase();
        let authority = uri.authority()?;
        if authority.as_str().contains('@') || uri.query().is_some() {
            return None;
        }
        if !matches!(uri.path(), "" | "/") {
            return None;
        }
        Some(Self {
            scheme,
            host: authority.host().to_ascii_lowercase(),
            port: authority.port_u16(),
        })
    }

    /// The port the origin means, explicit or its scheme's default.
    fn effective_port(&self) -> Option<u16> {
        self.port.or(match self.scheme.as_str() {
            "http" | "ws" => Some(80),
            "https" | "wss" => Some(443),
            _ => None,
        })
    }

    /// Whether this origin is allowed by `pattern`: an exact origin, or
    /// `scheme://*.domain` for every subdomain of `domain`.
    fn matches(&self, pattern: &str) -> bool {
        let (pattern, wildcard) = match pattern.split_once("://*.") {
            Some((scheme, domain)) => (format!("{scheme}://{domain}"), true),
            None => (pattern.to_owned(), false),
        };
        let Some(allowed) = Self::parse(&pattern) else {
            return false;
        };
        if allowed.scheme != self.scheme || allowed.effective_port() != self.effective_port() {
            return false;
        }
        if wildcard {
            self.host
                .strip_suffix(allowed.host.as_str())
                .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.'))
        } else {
            allowed.host == self.host
        }
    }
}

pub(crate) async fn check_origin(
    State(check): State<OriginCheck>,
    request: Request,
    next: Next,
) -> Response {
    let origin = request
        .headers()
        .get("origin")
        .and_then(|v| v.to_str().ok());
    if !check.allows(origin) {
        check.metrics.refuse(Refusal::Origin);
        tracing::info!(
            origin = origin.unwrap_or("<none>"),
            "websocket refused: origin not allowed"
        );
        return json_error(StatusCode::FORBIDDEN, "origin not allowed");
    }
    next.run(request).await
}

/// A slot of the connection limit, held for the connection's life.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionPermit(#[allow(dead_code)] Arc<OwnedSemaphorePermit>);

/// The connection limit: at most `max` WebSocket connections at once.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionLimit {
    slots: Arc<Semaphore>,
    metrics: Arc<Metrics>,
}

impl ConnectionLimit {
    pub(crate) fn new(max: usize, metrics: Arc<Metrics>) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max.min(Semaphore::MAX_PERMITS))),
            metrics,
        }
    }
}

pub(crate) async fn limit_connections(
    State(limit): State<ConnectionLimit>,
    mut request: Request,
    next: Next,
) -> Response {
    match limit.slots.clone().try_acquire_owned() {
        Ok(permit) => {
            request
                .extensions_mut()
                .insert(ConnectionPermit(Arc::new(permit)));
            next.run(request).await
        }
        Err(_) => {
            limit.metrics.refuse(Refusal::Limit);
            tracing::warn!("websocket refused: connection limit reached");
            json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many connections; try again later",
            )
        }
    }
}

/// Why authentication refused a request.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct AuthRejection(pub String);

/// The authentication hook: turn the upgrade request's headers, cookies or
/// query into a user for the scope.
///
/// Return `Ok(Some(identity))` for a user, `Ok(None)` for an anonymous
/// connection (its consumer decides), `Err` to refuse with 401.
#[async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// Authenticates one request.
    ///
    /// # Errors
    /// [`AuthRejection`] refuses the connection with 401 and its message.
    async fn authenticate(&self, request: &Parts) -> Result<Option<Identity>, AuthRejection>;
}

/// A ready-made [`Authenticator`]: a table of tokens, read from
/// `Authorization: Bearer <token>`, then the cookie `cookie_name`, then the
/// `token` query parameter (browsers cannot set headers on WebSockets). No
/// token: anonymous. An unknown token: 401.
#[derive(Debug, Clone, Default)]
pub struct TokenAuthenticator {
    tokens: HashMap<String, Identity>,
    cookie_name: String,
}

impl TokenAuthenticator {
    /// An empty table reading the cookie `channels_token`.
    pub fn new() -> Self {
        Self {
            tokens: HashMap::new(),
            cookie_name: "channels_token".to_owned(),
        }
    }

    /// Adds a token for a user.
    #[must_use]
    pub fn token(mut self, token: impl Into<String>, identity: Identity) -> Self {
        self.tokens.insert(token.into(), identity);
        self
    }

    /// Reads the token from this cookie instead.
    #[must_use]
    pub fn cookie_name(mut self, name: impl Into<String>) -> Self {
        self.cookie_name = name.into();
        self
    }
}

#[async_trait]
impl Authenticator for TokenAuthenticator {
    async fn authenticate(&self, request: &Parts) -> Result<Option<Identity>, AuthRejection> {
        let mut scope =
            Scope::new(request.uri.path()).with_query_string(request.uri.query().unwrap_or(""));
        for (name, value) in &request.headers {
            if name == "cookie" || name == "authorization" {
                scope = scope.with_header(name.as_str(), String::from_utf8_lossy(value.as_bytes()));
            }
        }
        let token = scope
            .header("authorization")
            .and_then(bearer_token)
            .map(str::to_owned)
            .or_else(|| scope.cookie(&self.cookie_name).map(str::to_owned))
            .or_else(|| scope.query("token"));
        match token {
            None => Ok(None),
            Some(token) => match self.tokens.get(token.trim()) {
                Some(identity) => Ok(Some(identity.clone())),
                None => Err(AuthRejection("unknown token".to_owned())),
            },
        }
    }
}

/// The authenticator in use, shared by the middleware.
#[derive(Clone)]
pub(crate) struct AuthState {
    pub(crate) authenticator: Arc<dyn Authenticator>,
    pub(crate) metrics: Arc<Metrics>,
}

impl std::fmt::Debug for AuthState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthState").finish_non_exhaustive()
    }
}

pub(crate) async fn authenticate(
    State(auth): State<AuthState>,
    request: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = request.into_parts();
    match auth.authenticator.authenticate(&parts).await {
        Ok(Some(identity)) => {
            parts.extensions.insert(identity);
        }
        Ok(None) => {}
        Err(rejection) => {
            auth.metrics.refuse(Refusal::Auth);
            tracing::info!(reason = %rejection, "websocket refused: authentication failed");
            return json_error(StatusCode::UNAUTHORIZED, rejection.0);
        }
    }
    next.run(Request::from_parts(parts, body)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(allowed: &[&str]) -> OriginCheck {
        OriginCheck::new(
            allowed.iter().map(|s| (*s).to_owned()).collect(),
            Arc::default(),
        )
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer abc "), Some("abc"));
        assert_eq!(bearer_token("BEARER  abc"), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer"), None);
        assert_eq!(bearer_token("Bearer "), None);
    }

    #[test]
    fn origin_rules() {
        assert!(check(&[]).allows(None));
        assert!(check(&["*"]).allows(Some("http://evil")));
        let listed = check(&["http://localhost:8000", "https://*.example.com"]);
        assert!(listed.allows(Some("http://localhost:8000")));
        assert!(listed.allows(Some("https://chat.example.com")));
        assert!(!listed.allows(Some("https://example.com.evil.net")));
        assert!(!listed.allows(Some("http://chat.example.com")));
        assert!(!listed.allows(Some("http://localhost:8001")));
        assert!(!listed.allows(None));
        // Parsed, not compared as text.
        assert!(!listed.allows(Some("https://evil.com/.example.com")));
        assert!(!listed.allows(Some("https://evil.com?.example.com")));
        assert!(!listed.allows(Some("https://user@chat.example.com")));
        assert!(
            !listed.allows(Some("https://example.com")),
            "subdomains only"
        );
        assert!(!listed.allows(Some("https://xexample.com")));
        assert!(listed.allows(Some("HTTPS://Chat.Example.COM")));
        assert!(listed.allows(Some("https://chat.example.com:443")));
        assert!(!listed.allows(Some("https://chat.example.com:8443")));
        assert!(!listed.allows(Some("not an origin")));
    }
}
