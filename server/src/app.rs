//! [`App`]: the whole server as an axum [`Router`] (WebSocket consumers with
//! their middleware, publish API, health, metrics, your own routes), and
//! [`App::serve`] / [`run`] to serve it with graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use channels_core::SharedLayer;
use channels_core::consumer::{ConnectionSettings, ConsumerRouter, Worker, run_worker};
use futures_util::future::BoxFuture;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;

use crate::config::ServerConfig;
use crate::error::ServerError;
use crate::health::{self, HealthState};
use crate::metrics::{MeteredLayer, Metrics};
use crate::middleware::{self, AuthState, Authenticator, ConnectionLimit, OriginCheck};
use crate::publish::{self, PublishState};
use crate::shutdown::Shutdown;
use crate::ws::{self, WsState};

/// A server under construction: a layer, settings, consumer routes, optional
/// authentication and extra HTTP routes.
///
/// # Examples
/// ```no_run
/// use std::sync::Arc;
/// use channels_core::consumer::{ConsumerRouter, WebsocketConsumer};
/// use channels_server::{App, ServerConfig};
///
/// struct Hello;
/// impl WebsocketConsumer for Hello {}
///
/// # #[tokio::main] async fn main() -> Result<(), channels_server::ServerError> {
/// let layer = Arc::new(channels_memory::InMemoryChannelLayer::new());
/// let app = App::new(layer, ServerConfig::default())
///     .consumers(ConsumerRouter::new().route("/ws/hello", |_| Hello));
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
/// app.serve(listener, channels_server::shutdown::signal()).await
/// # }
/// ```
pub struct App {
    layer: SharedLayer,
    raw_layer: SharedLayer,
    config: ServerConfig,
    consumers: ConsumerRouter,
    extra: Router,
    authenticator: Option<Arc<dyn Authenticator>>,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
    workers: Vec<WorkerStart>,
}

/// Starts one background worker once the server runs.
type WorkerStart = Box<dyn FnOnce(SharedLayer, CancellationToken) -> BoxFuture<'static, ()> + Send>;

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("config", &self.config)
            .field("consumers", &self.consumers)
            .finish_non_exhaustive()
    }
}

impl App {
    /// A server on `layer` (wrapped to count its operations for `/metrics`).
    pub fn new(layer: SharedLayer, config: ServerConfig) -> Self {
        let metrics = Arc::new(Metrics::default());
        let metered: SharedLayer = Arc::new(MeteredLayer::new(layer.clone(), metrics.clone()));
        Self {
            layer: metered,
            raw_layer: layer,
            config,
            consumers: ConsumerRouter::new(),
            extra: Router::new(),
            authenticator: None,
            metrics,
            shutdown: Shutdown::new(),
            workers: Vec::new(),
        }
    }

    /// Runs `worker` on the named `channel` while the server serves (Django's
    /// `runworker`): HTTP handlers and consumers hand it work with
    /// `layer.send(channel, message)`. It stops at shutdown.
    #[must_use]
    pub fn worker(mut self, channel: impl Into<String>, worker: impl Worker) -> Self {
        let channel = channel.into();
        self.workers.push(Box::new(move |layer, token| {
            Box::pin(async move {
                if let Err(error) = run_worker(layer, &channel, worker, token).await {
                    tracing::error!(%channel, %error, "worker stopped");
                }
            })
        }));
        self
    }

    /// Serves these consumer routes (added to any given before).
    #[must_use]
    pub fn consumers(mut self, consumers: ConsumerRouter) -> Self {
        self.consumers = self.consumers.merge(consumers);
        self
    }

    /// Adds plain HTTP routes (pages, your own API) next to the WebSockets.
    #[must_use]
    pub fn merge(mut self, router: Router) -> Self {
        self.extra = self.extra.merge(router);
        self
    }

    /// Authenticates WebSocket upgrades; the identity lands in
    /// [`Scope::user`](channels_core::consumer::Scope::user).
    #[must_use]
    pub fn authenticator(mut self, authenticator: impl Authenticator) -> Self {
        self.authenticator = Some(Arc::new(authenticator));
        self
    }

    /// The layer consumers and the publish API use (counted for `/metrics`).
    pub fn layer(&self) -> &SharedLayer {
        &self.layer
    }

    /// The server's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The shutdown handle: `trigger` it to close every socket with 1001.
    pub fn shutdown_handle(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// The whole server as one axum router, to serve or mount in your app.
    /// Serve it with `into_make_service_with_connect_info::<SocketAddr>()` so
    /// scopes carry the client address.
    pub fn router(&self) -> Router {
        let settings = ConnectionSettings::default()
            .outbound_queue(self.config.outbound_queue)
            .idle_timeout(self.config.idle_timeout)
            .ping_interval(self.config.ping_interval)
            .stats(self.metrics.consumers.clone());
        let state = WsState {
            layer: self.layer.clone(),
            settings,
            shutdown: self.shutdown.clone(),
            max_frame_bytes: self.config.max_frame_bytes,
        };
        // Layers run outside in: origin, then limit, then auth, then handler.
        let mut sockets = ws::routes(&state, &self.consumers);
        if let Some(authenticator) = &self.authenticator {
            let auth = AuthState {
                authenticator: authenticator.clone(),
                metrics: self.metrics.clone(),
            };
            sockets = sockets.layer(axum::middleware::from_fn_with_state(
                auth,
                middleware::authenticate,
            ));
        }
        let limit = ConnectionLimit::new(self.config.max_connections, self.metrics.clone());
        sockets = sockets.layer(axum::middleware::from_fn_with_state(
            limit,
            middleware::limit_connections,
        ));
        let origins = OriginCheck::new(self.config.allowed_origins.clone(), self.metrics.clone());
        sockets = sockets.layer(axum::middleware::from_fn_with_state(
            origins,
            middleware::check_origin,
        ));

        let mut router = Router::new()
            .merge(sockets)
            .merge(health::routes(HealthState {
                layer: self.layer.clone(),
                shutdown: self.shutdown.clone(),
                metrics: self.metrics.clone(),
            }))
            .merge(self.extra.clone());
        if let Some(token) = &self.config.publish_token {
            router = router.merge(publish::routes(PublishState {
                layer: self.layer.clone(),
                token: Arc::from(token.as_str()),
                max_body_bytes: self.config.max_frame_bytes,
                metrics: self.metrics.clone(),
            }));
        }
        router.layer(TraceLayer::new_for_http())
    }

    /// Serves on `listener` until `shutdown` completes (or the handle is
    /// triggered): stops accepting, closes every socket with 1001 (consumers
    /// leave their groups and hear `disconnect`), waits up to the drain
    /// timeout, then closes the layer.
    ///
    /// # Errors
    /// [`ServerError::Io`] when serving fails.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let router = self.router();
        let handle = self.shutdown.clone();
        for start in self.workers {
            let token = handle.connection_token();
            handle.tracker().spawn(start(self.layer.clone(), token));
        }
        let signal = {
            let handle = handle.clone();
            async move {
                tokio::select! {
                    () = shutdown => handle.trigger(),
                    () = handle.triggered() => {}
                }
            }
        };
        if let Ok(address) = listener.local_addr() {
            tracing::info!(%address, "listening");
        }
        let served = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(signal)
        .await;
        let remaining = handle.drain(self.config.drain_timeout).await;
        if remaining > 0 {
            tracing::warn!(
                remaining,
                "some connections were still running after the drain"
            );
        }
        if let Err(error) = self.raw_layer.close().await {
            tracing::warn!(%error, "closing the channel layer failed");
        }
        tracing::info!("stopped");
        served.map_err(ServerError::Io)
    }
}

/// Serves the default application — the chat demo (page at `/`, sockets at
/// `/ws/chat/{room}`), publish API, health and metrics — on `listener` until
/// `shutdown` completes. This is what the `channels-server` binary runs.
///
/// # Errors
/// [`ServerError::Io`] when serving fails.
///
/// # Examples
/// ```no_run
/// # #[tokio::main] async fn main() -> Result<(), channels_server::ServerError> {
/// use std::sync::Arc;
/// let layer = Arc::new(channels_memory::InMemoryChannelLayer::new());
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
/// let server = tokio::spawn(channels_server::run(listener, layer, Default::default(), async {
///     let _ = stopped.await;
/// }));
/// let _ = stop.send(());
/// server.await.expect("server task")?;
/// # Ok(()) }
/// ```
pub async fn run(
    listener: TcpListener,
    layer: SharedLayer,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    App::new(layer, config)
        .consumers(crate::chat::consumers())
        .merge(crate::chat::page())
        .serve(listener, shutdown)
        .await
}
