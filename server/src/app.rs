//! [`App`]: the whole server as an axum [`Router`] (WebSocket consumers with
//! their middleware, publish API, health, metrics, your own routes), and
//! [`App::serve`] / [`run`] to serve it with graceful shutdown, optionally
//! with `/metrics` and the publish API on a separate admin listener.

use std::future::Future;
use std::sync::{Arc, PoisonError, RwLock, RwLockWriteGuard};

use axum::Router;
use channels_core::SharedLayer;
use channels_core::consumer::{ConnectionSettings, ConsumerRouter, Worker, run_worker};
use channels_core::presence::SharedPresence;
use channels_memory::InMemoryPresence;
use futures_util::future::BoxFuture;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;

use crate::api::{self, ApiState};
use crate::config::{ServerConfig, bind_listener};
use crate::connection::SocketLimits;
use crate::error::ServerError;
use crate::gateway::Gateway;
use crate::health::{self, HealthState};
use crate::history::Histories;
use crate::http;
use crate::metrics::{MeteredLayer, Metrics};
use crate::middleware::{self, AuthState, Authenticator, ConnectionLimit, OriginCheck};
use crate::presence::Presence;
use crate::proxy::{self, TrustedProxies};
use crate::rate::{self, ConnectionRate};
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
    registry: Arc<RwLock<Registry>>,
    shutdown: Shutdown,
    workers: Vec<WorkerStart>,
    /// Presence, once [`App::presence_store`] turned it on.
    presence: Option<Arc<Presence>>,
    /// Group histories, once [`App::gateway`] set them up.
    histories: Option<Arc<Histories>>,
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
        let metrics = Arc::new(Metrics::new());
        let metered: SharedLayer = Arc::new(MeteredLayer::new(layer.clone(), metrics.clone()));
        let mut registry = Registry::default();
        metrics.register(&mut registry, metered.clone());
        Self {
            layer: metered,
            raw_layer: layer,
            config,
            consumers: ConsumerRouter::new(),
            extra: Router::new(),
            authenticator: None,
            metrics,
            registry: Arc::new(RwLock::new(registry)),
            shutdown: Shutdown::new(),
            workers: Vec::new(),
            presence: None,
            histories: None,
        }
    }

    /// Turns presence on with `store` (build it with
    /// [`crate::Settings::build_presence`], or bring your own): the gateway
    /// records its connections' groups there, `GET /api/groups/{group}/presence`
    /// answers from it, and a task keeps this process alive in it while the
    /// server serves. Call it before [`App::gateway`]. Without it, a config
    /// with [`ServerConfig::presence`] on the memory layer gets an in-memory
    /// store.
    #[must_use]
    pub fn presence_store(mut self, store: SharedPresence) -> Self {
        let presence = Arc::new(Presence::new(
            store,
            self.layer.clone(),
            self.metrics.clone(),
        ));
        let task = presence.clone();
        self.workers
            .push(Box::new(move |_layer, token| Box::pin(task.run(token))));
        self.presence = Some(presence);
        self
    }

    /// Presence (who is in a group, across processes), when it is on.
    pub fn presence(&self) -> Option<&Arc<Presence>> {
        self.presence.as_ref()
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

    /// Serves the gateway of docs/protocol.md: clients at `/ws` (tokens,
    /// subscribe, publish, every layer message sent to the connection pushed
    /// to it, other frames forwarded to a backend worker) and the console
    /// page at `/`, authenticated and forwarded as
    /// the `gateway` field of [`ServerConfig`] says. With no token verifier configured it
    /// runs in development mode (anonymous clients, any group) and logs a
    /// warning saying so.
    ///
    /// # Errors
    /// [`ServerError::Config`] when a key file (`--jwt-public-key`,
    /// `--jwks-file`) cannot be read or holds no usable key.
    ///
    /// # Examples
    /// ```no_run
    /// use std::sync::Arc;
    /// use channels_server::{App, GatewayConfig, ServerConfig};
    ///
    /// # #[tokio::main] async fn main() -> Result<(), channels_server::ServerError> {
    /// let layer = Arc::new(channels_memory::InMemoryChannelLayer::new());
    /// let config = ServerConfig::default().gateway(GatewayConfig::default().jwt_secret("s3cret"));
    /// let app = App::new(layer, config).gateway()?;
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
    /// app.serve(listener, channels_server::shutdown::signal()).await
    /// # }
    /// ```
    pub fn gateway(mut self) -> Result<Self, ServerError> {
        if self.config.presence && self.presence.is_none() {
            if self.raw_layer.name() != "memory" {
                return Err(ServerError::config(format!(
                    "presence is on but no presence store was given for the `{}` layer; \
                     pass one with App::presence_store (Settings::build_presence builds it)",
                    self.raw_layer.name()
                )));
            }
            self = self.presence_store(Arc::new(InMemoryPresence::new(crate::api::node_id())));
        }
        let histories = Histories::new(
            self.layer.clone(),
            self.config.history.clone(),
            self.metrics.history.clone(),
            self.shutdown.stop_token(),
        )
        .map_err(ServerError::config)?;
        self.histories.clone_from(&histories);
        let gateway = Gateway::new(
            &self.config.gateway,
            self.metrics.clone(),
            self.config.ping_interval,
            self.presence.clone(),
            histories,
        )?;
        let mut app = self.consumers(gateway.consumers()).merge(gateway.console());
        if let Some(registry) = gateway.worker_registry() {
            app.workers.push(Box::new(registry));
        }
        Ok(app)
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

    /// The Prometheus registry `/metrics` renders: register your own
    /// metrics (or collectors) into it. One per app; nothing is global.
    ///
    /// # Examples
    /// ```
    /// use std::sync::Arc;
    /// use prometheus_client::metrics::counter::Counter;
    ///
    /// let layer = Arc::new(channels_memory::InMemoryChannelLayer::new());
    /// let mut app = channels_server::App::new(layer, Default::default());
    /// let orders: Counter = Counter::default();
    /// app.registry_mut().register("shop_orders", "Orders placed", orders.clone());
    /// orders.inc();
    /// assert!(app.render_metrics().contains("shop_orders_total 1"));
    /// ```
    pub fn registry_mut(&mut self) -> RwLockWriteGuard<'_, Registry> {
        self.registry
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// What `GET /metrics` answers now.
    pub fn render_metrics(&self) -> String {
        crate::metrics::render(&self.registry.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// The shutdown handle: `trigger` it to close every socket with 1001.
    pub fn shutdown_handle(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// The whole server as one axum router, to serve or mount in your app.
    /// Serve it with `into_make_service_with_connect_info::<SocketAddr>()` so
    /// scopes carry the client address. With
    /// [`ServerConfig::admin_bind`] set, `/metrics` and the publish API are
    /// left out: they are on [`App::admin_router`].
    pub fn router(&self) -> Router {
        self.public_router(self.config.admin_bind.is_some())
    }

    /// The admin side: `/healthz`, `/readyz`, `/metrics` and the publish API
    /// (when a token is set), for a listener that only operators reach.
    pub fn admin_router(&self) -> Router {
        self.health_routes()
            .merge(self.admin_routes())
            .layer(http_trace())
    }

    fn public_router(&self, split_admin: bool) -> Router {
        let mut router = Router::new()
            .merge(self.sockets())
            .merge(self.health_routes())
            .merge(self.extra.clone());
        if !split_admin {
            router = router.merge(self.admin_routes());
        }
        router.layer(http_trace())
    }

    fn health_routes(&self) -> Router {
        health::routes(HealthState {
            layer: self.layer.clone(),
            shutdown: self.shutdown.clone(),
        })
    }

    /// `/metrics` and the publish API.
    fn admin_routes(&self) -> Router {
        let mut router = health::metrics_routes(self.registry.clone());
        if let Some(token) = &self.config.publish_token {
            router = router.merge(api::routes(
                ApiState::new(
                    self.layer.clone(),
                    self.raw_layer.name().to_owned(),
                    token,
                    self.config.max_frame_bytes,
                    self.metrics.clone(),
                    self.histories.clone(),
                )
                .with_presence(self.presence.clone()),
            ));
        }
        router
    }

    /// The WebSocket routes with their middleware.
    fn sockets(&self) -> Router {
        let settings = ConnectionSettings::default()
            .outbound_queue(self.config.outbound_queue)
            .idle_timeout(self.config.idle_timeout)
            .ping_interval(self.config.ping_interval)
            .shutdown_close_code(self.config.shutdown_close_code)
            .outbound_bytes(self.config.outbound_bytes)
            .inbound_rate(self.config.client_rate_limit)
            .stats(self.metrics.consumers.clone());
        let state = WsState {
            layer: self.layer.clone(),
            settings: Arc::new(settings),
            shutdown: self.shutdown.clone(),
            limits: SocketLimits {
                max_frame_bytes: self.config.max_frame_bytes,
                max_write_buffer: self
                    .config
                    .outbound_bytes
                    .max(self.config.max_frame_bytes)
                    .saturating_add(64 * 1024),
            },
        };
        // Layers run outside in: client address, origin, rate, limit, auth,
        // then the handler.
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
        if let Some(per_second) = self.config.connection_rate {
            let rate = ConnectionRate::new(per_second, self.metrics.clone());
            sockets = sockets.layer(axum::middleware::from_fn_with_state(rate, rate::limit_rate));
        }
        let origins = OriginCheck::new(self.config.allowed_origins.clone(), self.metrics.clone());
        sockets = sockets.layer(axum::middleware::from_fn_with_state(
            origins,
            middleware::check_origin,
        ));
        let proxies = TrustedProxies::new(self.config.trusted_proxies.clone());
        if !proxies.is_empty() {
            sockets = sockets.layer(axum::middleware::from_fn_with_state(
                proxies,
                proxy::resolve_client,
            ));
        }
        sockets
    }

    /// Serves on `listener` (and, with [`ServerConfig::admin_bind`], the
    /// admin routes on a listener bound there) until `shutdown` completes
    /// (or the handle is triggered): stops accepting, closes every socket
    /// with the shutdown close code (consumers leave their groups and hear
    /// `disconnect`), waits up to the drain timeout, then closes the layer.
    ///
    /// # Errors
    /// [`ServerError::Bind`] when the admin address cannot be bound;
    /// [`ServerError::Io`] when serving fails.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let admin = self.config.admin_bind.map(bind_listener).transpose()?;
        self.serve_listeners(listener, admin, shutdown).await
    }

    /// Like [`App::serve`], with the admin routes on `admin` (an already
    /// bound listener, e.g. on port 0 in tests) instead of the public port.
    ///
    /// # Errors
    /// [`ServerError::Io`] when serving fails.
    pub async fn serve_with_admin(
        self,
        listener: TcpListener,
        admin: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        self.serve_listeners(listener, Some(admin), shutdown).await
    }

    async fn serve_listeners(
        self,
        listener: TcpListener,
        admin: Option<TcpListener>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let router = self.public_router(admin.is_some());
        let admin_router = admin.as_ref().map(|_| self.admin_router());
        let handle = self.shutdown.clone();
        for start in self.workers {
            let token = handle.stop_token();
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
        let watcher = tokio::spawn(signal);
        if let Ok(address) = listener.local_addr() {
            tracing::info!(%address, "listening on {address}");
        }
        let stop = handle.stop_token();
        let header_timeout = self.config.header_timeout;
        let drain = self.config.drain_timeout;
        let public = http::serve(listener, router, header_timeout, stop.clone(), drain);
        let admin = async {
            let (Some(admin), Some(admin_router)) = (admin, admin_router) else {
                return;
            };
            if let Ok(address) = admin.local_addr() {
                tracing::info!(%address, "admin listener on {address}");
            }
            http::serve(admin, admin_router, header_timeout, stop.clone(), drain).await;
        };
        tokio::join!(public, admin);
        watcher.abort();
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
        Ok(())
    }
}

/// Serves the default application — the gateway ([`App::gateway`]: clients
/// at `/ws`, the console page at `/`), publish API, health and metrics — on
/// `listener` until `shutdown` completes. This is what the `channels-server`
/// binary runs.
///
/// # Errors
/// As [`App::gateway`] and [`App::serve`].
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
        .gateway()?
        .serve(listener, shutdown)
        .await
}

/// Request tracing. A 5xx is logged at DEBUG here: every 5xx the server
/// makes is logged (rate-limited) where it is made, so an outage does not
/// also write one ERROR line per request (readiness probes included).
fn http_trace() -> TraceLayer<
    tower_http::classify::SharedClassifier<tower_http::classify::ServerErrorsAsFailures>,
    tower_http::trace::DefaultMakeSpan,
    tower_http::trace::DefaultOnRequest,
    tower_http::trace::DefaultOnResponse,
    tower_http::trace::DefaultOnBodyChunk,
    tower_http::trace::DefaultOnEos,
    tower_http::trace::DefaultOnFailure,
> {
    TraceLayer::new_for_http()
        .on_failure(tower_http::trace::DefaultOnFailure::new().level(tracing::Level::DEBUG))
}
