//! [`Scope`]: what is known about a connection when it opens (Django's
//! `scope`), and the [`Identity`] authentication middleware puts in it.

use std::collections::BTreeMap;
use std::net::SocketAddr;

/// The authenticated user of a connection, set by authentication middleware
/// (Django's `scope["user"]`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Identity {
    /// The user's id (a user name, a subject claim, ...).
    pub id: String,
    /// Extra claims (roles, tenant, ...), as JSON values.
    pub claims: BTreeMap<String, serde_json::Value>,
}

impl Identity {
    /// Builds an identity with no claims.
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            claims: BTreeMap::new(),
        }
    }

    /// Adds a claim.
    #[must_use]
    pub fn with_claim(
        mut self,
        name: impl Into<String>,
        value: impl Into<serde_json::Value>,
    ) -> Self {
        self.claims.insert(name.into(), value.into());
        self
    }
}

/// The connection's scope: path, route parameters, query string, headers,
/// cookies, client address, offered subprotocols and user.
///
/// Header names are lowercase. Build one with [`Scope::new`] and the `with_`
/// methods (the server does this from the HTTP upgrade request).
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Scope {
    /// The request path, e.g. `/ws/chat/lobby`.
    pub path: String,
    /// Parameters captured by the route, e.g. `room` -> `lobby` for
    /// `/ws/chat/{room}` (Django's `scope["url_route"]["kwargs"]`).
    pub params: BTreeMap<String, String>,
    /// The raw query string, without `?`.
    pub query_string: String,
    /// Request headers, names lowercase, in request order.
    pub headers: Headers,
    /// Cookies from the `cookie` header.
    pub cookies: BTreeMap<String, String>,
    /// The client's address, when the transport knows it.
    pub client: Option<SocketAddr>,
    /// Subprotocols the client offered, in its order of preference.
    pub subprotocols: Vec<String>,
    /// The user set by authentication middleware, if any.
    pub user: Option<Identity>,
}

impl Scope {
    /// Builds a scope for `path` (a `?query` part is split off into
    /// [`Scope::query_string`]).
    pub fn new(path: impl Into<String>) -> Self {
        let path = path.into();
        let (path, query_string) = match path.split_once('?') {
            Some((path, query)) => (path.to_owned(), query.to_owned()),
            None => (path, String::new()),
        };
        Self {
            path,
            query_string,
            ..Self::default()
        }
    }

    /// Sets a route parameter.
    #[must_use]
    pub fn with_param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.params.insert(name.into(), value.into());
        self
    }

    /// Sets the query string.
    #[must_use]
    pub fn with_query_string(mut self, query_string: impl Into<String>) -> Self {
        self.query_string = query_string.into();
        self
    }

    /// Adds a header (its name is lowercased). A `cookie` header also fills
    /// [`Scope::cookies`]; a `sec-websocket-protocol` header fills
    /// [`Scope::subprotocols`].
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let name = name.into().to_ascii_lowercase();
        let value = value.into();
        if name == "cookie" {
            for pair in value.split(';') {
                if let Some((key, val)) = pair.split_once('=') {
                    self.cookies.insert(
                        key.trim().to_owned(),
                        val.trim().trim_matches('"').to_owned(),
                    );
                }
            }
        }
        if name == "sec-websocket-protocol" {
            self.subprotocols.extend(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(str::to_owned),
            );
        }
        self.headers.push(&name, &value);
        self
    }

    /// Sets the client address.
    #[must_use]
    pub fn with_client(mut self, client: SocketAddr) -> Self {
        self.client = Some(client);
        self
    }

    /// Sets the user.
    #[must_use]
    pub fn with_user(mut self, user: Identity) -> Self {
        self.user = Some(user);
        self
    }

    /// Returns a route parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    /// Returns the first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }

    /// Returns a cookie.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.cookies.get(name).map(String::as_str)
    }

    /// Returns the first value of query parameter `name`, percent-decoded
    /// (`+` is a space), as `application/x-www-form-urlencoded` says.
    pub fn query(&self, name: &str) -> Option<String> {
        form_urlencoded::parse(self.query_string.as_bytes())
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.into_owned())
    }
}

/// Request headers in one compact buffer: a connection keeps its scope for
/// its whole life, and a vector of string pairs cost two allocations per
/// header (measured: about 600 bytes per idle connection; one buffer costs
/// one allocation of the headers' own size).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Headers {
    /// `name:value\n` per header. Names are tokens (no `:`) and values
    /// cannot hold a newline in HTTP, so the separators are unambiguous;
    /// a newline inside a value given by hand is replaced by a space.
    text: Box<str>,
}

impl Headers {
    /// Appends a header; the name is lowercased.
    pub fn push(&mut self, name: &str, value: &str) {
        let mut text = String::with_capacity(self.text.len() + name.len() + value.len() + 2);
        text.push_str(&self.text);
        text.extend(name.chars().map(|c| match c {
            ':' | '\n' | '\r' => '_',
            c => c.to_ascii_lowercase(),
        }));
        text.push(':');
        text.extend(
            value
                .chars()
                .map(|c| if matches!(c, '\n' | '\r') { ' ' } else { c }),
        );
        text.push('\n');
        self.text = text.into_boxed_str();
    }

    /// The headers as `(name, value)` pairs, in request order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.text
            .split_terminator('\n')
            .filter_map(|line| line.split_once(':'))
    }

    /// The first value of header `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, value)| value)
    }

    /// How many headers there are.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }
}

impl std::fmt::Debug for Headers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a> FromIterator<(&'a str, &'a str)> for Headers {
    fn from_iter<I: IntoIterator<Item = (&'a str, &'a str)>>(pairs: I) -> Self {
        let mut headers = Self::default();
        for (name, value) in pairs {
            headers.push(name, value);
        }
        headers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_fill_cookies_and_subprotocols() {
        let scope = Scope::new("/ws/chat/lobby?token=a%20b+c&x")
            .with_header("Cookie", "sessionid=abc; theme=\"dark\"")
            .with_header("Sec-WebSocket-Protocol", "v2.chat, v1.chat");
        assert_eq!(scope.path, "/ws/chat/lobby");
        assert_eq!(scope.query("token").as_deref(), Some("a b c"));
        assert_eq!(scope.query("x").as_deref(), Some(""));
        assert_eq!(scope.query("missing"), None);
        assert_eq!(scope.cookie("sessionid"), Some("abc"));
        assert_eq!(scope.cookie("theme"), Some("dark"));
        assert_eq!(scope.subprotocols, ["v2.chat", "v1.chat"]);
        assert_eq!(
            scope.header("COOKIE"),
            Some("sessionid=abc; theme=\"dark\"")
        );
        let names: Vec<_> = scope.headers.iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["cookie", "sec-websocket-protocol"]);
    }

    #[test]
    fn headers_keep_colons_in_values_and_refuse_newlines() {
        let mut headers = Headers::default();
        headers.push("Host", "example.com:8000");
        headers.push("X-Odd", "a\nb");
        assert_eq!(
            headers.iter().collect::<Vec<_>>(),
            [("host", "example.com:8000"), ("x-odd", "a b")]
        );
        assert_eq!(headers.get("HOST"), Some("example.com:8000"));
        assert_eq!(headers.len(), 2);
    }

    #[test]
    fn query_decoding_keeps_bad_escapes() {
        let scope = Scope::new("/").with_query_string("a=%zz%4&b=%C3%A9&c%3D=1");
        assert_eq!(scope.query("a").as_deref(), Some("%zz%4"));
        assert_eq!(scope.query("b").as_deref(), Some("é"));
        assert_eq!(scope.query("c=").as_deref(), Some("1"));
    }
}
