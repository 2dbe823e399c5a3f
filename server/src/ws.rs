//! WebSocket routes: each [`ConsumerRouter`] route becomes an axum route whose
//! handler checks the upgrade request (400 when it is not one, 426 when the
//! connection cannot be upgraded), builds the scope, runs the handshake
//! (`connect`), and answers 101, 403 (rejected), 503 (layer unavailable,
//! shutting down) or, for a deferred connect, the status it failed with (504
//! when undecided in time).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use channels_core::SharedLayer;
use channels_core::consumer::{
    Accepted, Connection, ConnectionSettings, ConsumerFactory, ConsumerRouter, Handshake, Identity,
    Scope,
};
use hyper::upgrade::OnUpgrade;

use crate::connection::{self, SocketLimits};
use crate::middleware::{ConnectionPermit, json_error};
use crate::shutdown::Shutdown;

/// What every WebSocket handler shares.
#[derive(Debug, Clone)]
pub(crate) struct WsState {
    pub(crate) layer: SharedLayer,
    pub(crate) settings: Arc<ConnectionSettings>,
    pub(crate) shutdown: Shutdown,
    /// What each socket may take and hold.
    pub(crate) limits: SocketLimits,
}

/// Mounts every route of `consumers` (without middleware).
pub(crate) fn routes(state: &WsState, consumers: &ConsumerRouter) -> Router {
    let mut router = Router::new();
    for route in consumers.routes() {
        let state = state.clone();
        let factory = route.factory().clone();
        router = router.route(
            route.pattern(),
            get(move |request: Request| upgrade(state, factory, request)),
        );
    }
    router
}

/// Builds the scope from the upgrade request.
fn scope_of(parts: &Parts, params: BTreeMap<String, String>) -> Scope {
    let mut scope = Scope::new(parts.uri.path()).with_query_string(parts.uri.query().unwrap_or(""));
    scope.params = params;
    for (name, value) in &parts.headers {
        scope = scope.with_header(name.as_str(), String::from_utf8_lossy(value.as_bytes()));
    }
    if let Some(ConnectInfo(client)) = parts.extensions.get::<ConnectInfo<SocketAddr>>() {
        scope = scope.with_client(*client);
    }
    if let Some(identity) = parts.extensions.get::<Identity>() {
        scope = scope.with_user(identity.clone());
    }
    scope
}

async fn upgrade(state: WsState, factory: ConsumerFactory, mut request: Request) -> Response {
    // Draining: a socket accepted now would only be closed again. A 503 lets
    // the load balancer retry another process at once.
    if state.shutdown.is_triggered() {
        return json_error(StatusCode::SERVICE_UNAVAILABLE, "server is shutting down");
    }
    // RFC 6455 4.2.1, checked by tungstenite, which also derives the accept
    // key; the 101 answer is built now, sent once `connect` accepts.
    let mut response =
        match tungstenite::handshake::server::create_response_with_body(&request, Body::empty) {
            Ok(response) => response,
            Err(error) => {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    format!("not a WebSocket upgrade request: {error}"),
                );
            }
        };
    let Some(on_upgrade) = request.extensions_mut().remove::<OnUpgrade>() else {
        return json_error(
            StatusCode::UPGRADE_REQUIRED,
            "this connection cannot be upgraded to a WebSocket",
        );
    };
    let (mut parts, _body) = request.into_parts();
    let params = match Path::<BTreeMap<String, String>>::from_request_parts(&mut parts, &()).await {
        Ok(Path(params)) => params,
        Err(rejection) => return rejection.into_response(),
    };
    let permit = parts.extensions.get::<ConnectionPermit>().cloned();
    let scope = scope_of(&parts, params);
    let path = scope.path.clone();
    let consumer = factory(&scope);
    let handshake = Connection::open(
        state.layer.clone(),
        scope,
        consumer,
        state.settings.clone(),
        &state.shutdown.connection_signal(),
    )
    .await;
    let accepted = match handshake {
        Ok(Handshake::Accepted(accepted)) => accepted,
        Ok(Handshake::Rejected) => {
            tracing::debug!(%path, "websocket rejected by its consumer");
            return StatusCode::FORBIDDEN.into_response();
        }
        Ok(Handshake::Failed { status }) => {
            tracing::debug!(%path, status, "websocket handshake failed");
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let reason = match status {
                StatusCode::GATEWAY_TIMEOUT => {
                    "the application did not accept the connection in time"
                }
                StatusCode::SERVICE_UNAVAILABLE => "server is shutting down",
                _ => "the application refused the connection",
            };
            return json_error(status, reason);
        }
        Err(error) => {
            tracing::error!(%path, %error, "websocket handshake failed in the channel layer");
            return json_error(StatusCode::SERVICE_UNAVAILABLE, "channel layer unavailable");
        }
    };
    let Accepted {
        accept,
        outbox,
        connection,
    } = *accepted;

    if let Some(protocol) = &accept.subprotocol {
        match HeaderValue::from_str(protocol) {
            Ok(value) => {
                response
                    .headers_mut()
                    .insert(header::SEC_WEBSOCKET_PROTOCOL, value);
            }
            Err(_) => {
                tracing::warn!(%protocol, "ignoring a subprotocol that is not a valid header value")
            }
        }
    }
    // The connection's one task: it waits for hyper to hand over the socket
    // (after this answer is written), then serves it.
    state.shutdown.tracker().spawn(connection::serve(
        on_upgrade,
        Box::new(connection),
        outbox,
        state.shutdown.connection_signal(),
        state.shutdown.hard_token(),
        state.limits,
        permit,
    ));
    for (name, value) in accept.headers {
        match (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) {
            (Ok(name), Ok(value)) => {
                response.headers_mut().append(name, value);
            }
            _ => tracing::warn!(%name, "ignoring an invalid accept header"),
        }
    }
    response
}
