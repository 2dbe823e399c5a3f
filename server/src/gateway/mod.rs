//! The gateway (docs/protocol.md): `channels-server` as a WebSocket front for
//! a backend that keeps its logic elsewhere (Django, or anything that speaks
//! the channel layer). Clients connect to `/ws` with a token, subscribe to
//! and publish into the groups it allows, and receive every layer message
//! sent to their channel; frames that are not protocol frames go to a
//! backend worker as ASGI events. The console page at `/` speaks the same
//! protocol from a browser.
//!
//! - [`consumer`]: the `/ws` consumer, one per connection;
//! - [`protocol`]: the frames (parsing requests, writing answers and pushes);
//! - [`json`]: msgpack values as JSON, for pushes;
//! - [`auth`]: JWT and Django-signed tokens, claims, development mode;
//! - [`forward`]: ASGI events for the backend worker;
//! - [`console`]: the console page and the JavaScript client (`/client.js`);
//! - [`asgi`]: with a forward channel, every other WebSocket path passed
//!   through to Python ASGI workers (`channels_rust.worker`).

mod asgi;
pub(crate) mod auth;
mod console;
mod consumer;
mod forward;
mod json;
pub(crate) mod protocol;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use channels_core::SharedLayer;
use channels_core::consumer::ConsumerRouter;
use futures_util::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use crate::config::GatewayConfig;
use crate::error::ServerError;
use crate::history::Histories;
use crate::metrics::Metrics;
use crate::presence::Presence;

/// The path of the gateway's WebSocket.
pub const WS_PATH: &str = "/ws";

/// The labels of `channels_gateway_auth_failures_total`.
pub(crate) const AUTH_FAILURE_REASONS: [&str; auth::Reason::ALL.len()] = {
    let mut labels = [""; auth::Reason::ALL.len()];
    let mut i = 0;
    while i < labels.len() {
        labels[i] = auth::Reason::ALL[i].label();
        i += 1;
    }
    labels
};

/// The labels of `channels_gateway_errors_total`.
pub(crate) const ERROR_CODES: [&str; protocol::ErrorCode::ALL.len()] = {
    let mut labels = [""; protocol::ErrorCode::ALL.len()];
    let mut i = 0;
    while i < labels.len() {
        labels[i] = protocol::ErrorCode::ALL[i].as_str();
        i += 1;
    }
    labels
};

/// What every gateway connection shares.
#[derive(Debug)]
pub(crate) struct Shared {
    verifier: auth::Verifier,
    forward: Option<Arc<str>>,
    metrics: Arc<Metrics>,
    /// Seconds, for `connected`.
    ping_interval: Option<u64>,
    /// Presence, when it is on (`--presence`).
    presence: Option<Arc<Presence>>,
    /// Group histories, when any group keeps one.
    histories: Option<Arc<Histories>>,
}

/// The gateway of one [`crate::App`].
#[derive(Debug, Clone)]
pub(crate) struct Gateway {
    shared: Arc<Shared>,
    /// The ASGI pass-through, with a forward channel.
    asgi: Option<Arc<asgi::AsgiShared>>,
}

impl Gateway {
    /// Builds the gateway `config` describes (reading key files now); logs a
    /// loud warning in development mode.
    pub(crate) fn new(
        config: &GatewayConfig,
        metrics: Arc<Metrics>,
        ping_interval: Option<Duration>,
        presence: Option<Arc<Presence>>,
        histories: Option<Arc<Histories>>,
    ) -> Result<Self, ServerError> {
        let verifier = auth::Verifier::new(config)?;
        if verifier.is_development() {
            tracing::warn!(
                "DEVELOPMENT MODE: no token verifier is configured (--jwt-secret, --jwt-public-key, \
                 --jwks-file or --django-secret-key), so ANY client may connect anonymously, \
                 subscribe to ANY group and publish to ANY group. Do not expose this server."
            );
        }
        if let Some(channel) = &config.forward_channel {
            tracing::info!(%channel, "forwarding client frames to a backend worker");
        }
        let shared = Arc::new(Shared {
            verifier,
            forward: config.forward_channel.as_deref().map(Arc::from),
            metrics,
            ping_interval: ping_interval.map(|interval| interval.as_secs().max(1)),
            presence,
            histories,
        });
        let asgi = shared.forward.as_ref().map(|_| {
            Arc::new(asgi::AsgiShared {
                workers: Arc::default(),
                gateway: shared.clone(),
            })
        });
        Ok(Self { shared, asgi })
    }

    /// The `/ws` route and, with a forward channel, the ASGI pass-through on
    /// every other path.
    pub(crate) fn consumers(&self) -> ConsumerRouter {
        let shared = self.shared.clone();
        let mut router = ConsumerRouter::new().route(WS_PATH, move |_| {
            consumer::GatewayConsumer::new(shared.clone())
        });
        if let Some(asgi) = self.asgi.clone() {
            router = router.route(asgi::ROUTE, move |_| asgi::AsgiConsumer::new(asgi.clone()));
        }
        router
    }

    /// With a forward channel, the task that keeps the table of live ASGI
    /// workers (run it on the server's layer until shutdown).
    pub(crate) fn worker_registry(
        &self,
    ) -> Option<
        impl FnOnce(SharedLayer, CancellationToken) -> BoxFuture<'static, ()> + Send + 'static,
    > {
        let asgi = self.asgi.as_ref()?;
        let forward = self.shared.forward.as_deref()?;
        let registry = asgi::Registry {
            workers: asgi.workers.clone(),
            group: asgi::heartbeat_group(forward),
            metrics: self.shared.metrics.asgi.clone(),
        };
        Some(
            move |layer: SharedLayer, stop: CancellationToken| -> BoxFuture<'static, ()> {
                Box::pin(registry.run(layer, stop))
            },
        )
    }

    /// The console page at `/`.
    pub(crate) fn console(&self) -> Router {
        console::routes()
    }
}
