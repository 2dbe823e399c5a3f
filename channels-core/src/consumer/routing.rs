//! [`ConsumerRouter`]: URL patterns with `{param}`s mapped to consumer
//! factories (Django's `URLRouter`). The server mounts each route on axum;
//! the [`Communicator`](super::Communicator) resolves paths with it directly.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use super::WebsocketConsumer;
use super::scope::Scope;

/// Builds a fresh consumer for a connection from its scope.
pub type ConsumerFactory = Arc<dyn Fn(&Scope) -> Box<dyn WebsocketConsumer> + Send + Sync>;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
    /// `{*name}`: the rest of the path (at least one segment).
    Rest(String),
}

/// One route: a pattern such as `/ws/chat/{room}` and its factory.
#[derive(Clone)]
pub struct Route {
    pattern: String,
    segments: Vec<Segment>,
    factory: ConsumerFactory,
}

impl fmt::Debug for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Route")
            .field("pattern", &self.pattern)
            .finish_non_exhaustive()
    }
}

impl Route {
    /// The pattern, in axum's syntax (`/ws/chat/{room}`, `/files/{*path}`).
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// The consumer factory.
    pub fn factory(&self) -> &ConsumerFactory {
        &self.factory
    }

    fn parse(pattern: &str) -> Result<Vec<Segment>, String> {
        let Some(rest) = pattern.strip_prefix('/') else {
            return Err("it must start with `/`".into());
        };
        let parts: Vec<&str> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('/').collect()
        };
        let mut segments = Vec::with_capacity(parts.len());
        for (index, part) in parts.iter().enumerate() {
            let segment = match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                Some(name) => match name.strip_prefix('*') {
                    Some(rest) if index + 1 == parts.len() && !rest.is_empty() => {
                        Segment::Rest(rest.to_owned())
                    }
                    Some(_) => return Err("`{*name}` must be named and come last".into()),
                    None if name.is_empty() || name.contains(['{', '}']) => {
                        return Err(format!("bad parameter `{part}`"));
                    }
                    None => Segment::Param(name.to_owned()),
                },
                None if part.contains(['{', '}']) => {
                    return Err(format!("segment `{part}` mixes text and a parameter"));
                }
                None => Segment::Literal((*part).to_owned()),
            };
            segments.push(segment);
        }
        Ok(segments)
    }

    /// Matches `path` (without query string), returning the parameters.
    pub fn matches(&self, path: &str) -> Option<BTreeMap<String, String>> {
        let rest = path.strip_prefix('/')?;
        let parts: Vec<&str> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('/').collect()
        };
        let mut params = BTreeMap::new();
        for (index, segment) in self.segments.iter().enumerate() {
            match segment {
                Segment::Literal(literal) => {
                    if parts.get(index) != Some(&literal.as_str()) {
                        return None;
                    }
                }
                Segment::Param(name) => {
                    let value = parts.get(index).filter(|v| !v.is_empty())?;
                    params.insert(name.clone(), (*value).to_owned());
                }
                Segment::Rest(name) => {
                    let value = parts.get(index..).filter(|v| !v.is_empty())?.join("/");
                    params.insert(name.clone(), value);
                    return Some(params);
                }
            }
        }
        (parts.len() == self.segments.len()).then_some(params)
    }
}

/// A route that matched a path.
#[derive(Debug)]
pub struct RouteMatch<'a> {
    /// The route.
    pub route: &'a Route,
    /// The captured parameters.
    pub params: BTreeMap<String, String>,
}

/// URL patterns mapped to consumer factories.
///
/// # Examples
/// ```
/// use channels_core::consumer::{ConsumerRouter, WebsocketConsumer};
///
/// struct Room { name: String }
/// impl WebsocketConsumer for Room {}
///
/// let router = ConsumerRouter::new().route("/ws/chat/{room}", |scope| Room {
///     name: scope.param("room").unwrap_or("lobby").to_owned(),
/// });
/// let found = router.resolve("/ws/chat/lobby").expect("route matches");
/// assert_eq!(found.params["room"], "lobby");
/// assert!(router.resolve("/ws/other").is_none());
/// ```
#[derive(Debug, Clone, Default)]
pub struct ConsumerRouter {
    routes: Vec<Route>,
}

impl ConsumerRouter {
    /// An empty router.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a route; `factory` builds a consumer per connection from its scope
    /// (with the route's parameters filled in).
    ///
    /// # Panics
    /// When `pattern` is malformed (not starting with `/`, a segment mixing
    /// text and `{param}`, `{*rest}` not last) or already routed: a bug in
    /// the program's route table, as axum treats it.
    #[must_use]
    pub fn route<C, F>(mut self, pattern: &str, factory: F) -> Self
    where
        C: WebsocketConsumer,
        F: Fn(&Scope) -> C + Send + Sync + 'static,
    {
        let segments = match Route::parse(pattern) {
            Ok(segments) => segments,
            Err(problem) => panic!("invalid route pattern `{pattern}`: {problem}"),
        };
        assert!(
            !self.routes.iter().any(|r| r.pattern == pattern),
            "route `{pattern}` is registered twice"
        );
        self.routes.push(Route {
            pattern: pattern.to_owned(),
            segments,
            factory: Arc::new(move |scope| Box::new(factory(scope))),
        });
        self
    }

    /// Adds every route of `other` after these.
    ///
    /// # Panics
    /// When a pattern is routed in both.
    #[must_use]
    pub fn merge(mut self, other: ConsumerRouter) -> Self {
        for route in other.routes {
            assert!(
                !self.routes.iter().any(|r| r.pattern == route.pattern),
                "route `{}` is registered twice",
                route.pattern
            );
            self.routes.push(route);
        }
        self
    }

    /// The routes, in the order added.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// Finds the first route matching `path` (a `?query` is ignored).
    pub fn resolve(&self, path: &str) -> Option<RouteMatch<'_>> {
        let path = path.split_once('?').map_or(path, |(p, _)| p);
        self.routes.iter().find_map(|route| {
            route
                .matches(path)
                .map(|params| RouteMatch { route, params })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Nothing;
    impl WebsocketConsumer for Nothing {}

    #[test]
    fn params_and_rest() {
        let router = ConsumerRouter::new()
            .route("/", |_| Nothing)
            .route("/ws/chat/{room}", |_| Nothing)
            .route("/files/{*path}", |_| Nothing);
        assert_eq!(
            router
                .resolve("/")
                .map(|m| m.route.pattern().to_owned())
                .as_deref(),
            Some("/")
        );
        let found = router.resolve("/ws/chat/lobby?x=1").unwrap();
        assert_eq!(found.params["room"], "lobby");
        assert!(router.resolve("/ws/chat/").is_none());
        assert!(router.resolve("/ws/chat/a/b").is_none());
        assert_eq!(
            router.resolve("/files/a/b/c").unwrap().params["path"],
            "a/b/c"
        );
        assert!(router.resolve("/files").is_none());
    }

    #[test]
    #[should_panic(expected = "mixes text")]
    fn malformed_pattern_panics() {
        let _ = ConsumerRouter::new().route("/ws/x{room}", |_| Nothing);
    }
}
