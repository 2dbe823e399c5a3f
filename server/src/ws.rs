//! WebSocket routes: each [`ConsumerRouter`] route becomes an axum route whose
//! handler builds the scope, runs the handshake (`connect`), and answers 101,
//! 403 (rejected), 503 (layer unavailable, shutting down) or, for a deferred
//! connect, the status it failed with (504 when undecided in time).

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use channels_core::consumer::{
    Accepted, Connection, ConnectionSettings, ConsumerFactory, ConsumerRouter, Handshake, Identity,
    Scope,
};
use channels_core::{SharedLayer, lock};
use futures_util::StreamExt as _;

use crate::connection;
use crate::middleware::{ConnectionPermit, json_error};
use crate::shutdown::Shutdown;

/// Initial read buffer per socket. axum's default, 128 KiB, would dominate an
/// idle connection's memory; tungstenite grows the buffer to fit a larger
/// frame when one comes. (Measured: 15.4 KB of RSS per idle connection
/// before this and the other per-connection trims, 7.9 KB after.)
const READ_BUFFER_BYTES: usize = 256;

/// Bytes of frames collected before a socket write. The writer flushes after
/// each batch anyway; this only lets a batch of small frames go out in one
/// syscall while keeping the buffer an idle connection retains small.
const WRITE_BUFFER_BYTES: usize = 4 * 1024;

/// What every WebSocket handler shares.
#[derive(Debug, Clone)]
pub(crate) struct WsState {
    pub(crate) layer: SharedLayer,
    pub(crate) settings: Arc<ConnectionSettings>,
    pub(crate) shutdown: Shutdown,
    pub(crate) max_frame_bytes: usize,
    /// Bound of tungstenite's write buffer: a batch of queued frames plus the
    /// pongs it answers by itself. A client that pings and never reads fills
    /// it and is dropped, instead of growing it without end.
    pub(crate) max_write_buffer: usize,
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

async fn upgrade(state: WsState, factory: ConsumerFactory, request: Request) -> Response {
    // Draining: a socket accepted now would only be closed again. A 503 lets
    // the load balancer retry another process at once.
    if state.shutdown.is_triggered() {
        return json_error(StatusCode::SERVICE_UNAVAILABLE, "server is shutting down");
    }
    let (mut parts, _body) = request.into_parts();
    let ws = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(ws) => ws,
        // Not a WebSocket request: axum's answer (400/405/426) says why.
        Err(rejection) => return rejection.into_response(),
    };
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
        &state.shutdown.connection_token(),
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

    let mut ws = ws
        .max_frame_size(state.max_frame_bytes)
        .max_message_size(state.max_frame_bytes)
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_write_buffer_size(state.max_write_buffer);
    if let Some(protocol) = &accept.subprotocol {
        match HeaderValue::from_str(protocol) {
            Ok(value) => ws.set_selected_protocol(value),
            Err(_) => {
                tracing::warn!(%protocol, "ignoring a subprotocol that is not a valid header value")
            }
        }
    }

    // If the upgrade fails after `connect` accepted, the connection must still
    // leave its groups and hear `disconnect`: whichever callback runs takes it.
    // Boxed: axum keeps the failure callback (and so this slot) alive for the
    // connection's whole life, so the slot itself must stay small.
    let slot = Arc::new(Mutex::new(Some(Box::new(connection))));
    let failed_slot = slot.clone();
    let tracker = state.shutdown.tracker().clone();
    let failed_tracker = tracker.clone();
    let token = state.shutdown.connection_token();
    let hard_stop = state.shutdown.hard_token();
    let max_frame_bytes = state.max_frame_bytes;
    let mut response = ws
        .on_failed_upgrade(move |error| {
            tracing::debug!(%error, "websocket upgrade failed");
            let connection = lock(&failed_slot).take();
            if let Some(connection) = connection {
                failed_tracker.spawn(connection.abandon());
            }
        })
        .on_upgrade(move |socket| {
            let connection = lock(&slot).take();
            // Boxed on its own: axum's upgrade task then holds only a pointer,
            // and the connection's state is allocated once, at its exact size.
            let serving: Pin<Box<dyn Future<Output = ()> + Send>> = match connection {
                Some(connection) => {
                    let (sink, stream) = socket.split();
                    Box::pin(connection::serve(
                        sink,
                        stream,
                        connection,
                        outbox,
                        token,
                        hard_stop,
                        max_frame_bytes,
                        permit,
                    ))
                }
                None => Box::pin(std::future::ready(())),
            };
            tracker.track_future(serving)
        });
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
