//! The ceiling servers: the shootout protocol on plain tokio + axum, with no channel layer.
//!
//! `local` fans a broadcast out by iterating the [`Hub`]'s per-connection queues; `redis`
//! PUBLISHes it once to one Redis channel, and every process's single subscriber fans it out
//! locally. The frame is serialized once, by the process that got the request.

mod connection;
mod hub;
mod redis;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::WebSocketUpgrade;
use axum::response::Response;
use axum::routing::get;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::LoadError;
pub use hub::Hub;
use redis::Fanout;

/// How long shutdown waits for connections to send their close frames.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Where a broadcast goes after the request arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FanoutMode {
    /// Straight to this process's connections.
    Local,
    /// PUBLISH to Redis; every process's subscriber fans out to its own connections.
    Redis,
}

/// Settings of a ceiling server.
#[derive(Debug, Clone)]
pub struct CeilingConfig {
    /// Local or Redis fan-out.
    pub mode: FanoutMode,
    /// Redis URL for `FanoutMode::Redis`.
    pub redis_url: String,
    /// Redis pub/sub channel all processes share.
    pub redis_channel: String,
    /// Frames queued per connection before it is closed with 1013.
    pub outbound_queue: usize,
    /// Bytes of each connection's read buffer (tungstenite allocates it up front; its 128 KiB
    /// default would dominate idle memory per connection).
    pub read_buffer_bytes: usize,
    /// How long a new connection waits before joining the fan-out (zero normally): stands in
    /// for a server whose connection task registers a client some time after its handshake,
    /// so tests can check that the load generator waits for registration.
    pub join_delay: Duration,
}

/// What every connection task shares.
#[derive(Debug, Clone)]
pub(crate) struct State {
    hub: Arc<Hub>,
    fanout: Fanout,
    outbound_queue: usize,
    read_buffer_bytes: usize,
    join_delay: Duration,
    shutdown: watch::Receiver<bool>,
}

/// A ceiling server whose fan-out is ready (for Redis: subscribed), not yet serving.
#[derive(Debug)]
pub struct Ceiling {
    state: State,
    shutdown_tx: watch::Sender<bool>,
}

impl Ceiling {
    /// Connects the fan-out; for Redis, returns once the subscription is confirmed.
    ///
    /// # Errors
    ///
    /// A bad Redis URL, or Redis refusing the connection or the SUBSCRIBE.
    pub async fn start(config: &CeilingConfig) -> Result<Self, LoadError> {
        if config.outbound_queue == 0 {
            return Err(LoadError::InvalidOption {
                reason: "--outbound-queue must be at least 1".to_owned(),
            });
        }
        let hub = Arc::new(Hub::new());
        let (shutdown_tx, shutdown) = watch::channel(false);
        let fanout = match config.mode {
            FanoutMode::Local => Fanout::Local,
            FanoutMode::Redis => {
                Fanout::connect_redis(
                    &config.redis_url,
                    &config.redis_channel,
                    Arc::clone(&hub),
                    shutdown.clone(),
                )
                .await?
            }
        };
        Ok(Self {
            state: State {
                hub,
                fanout,
                outbound_queue: config.outbound_queue,
                read_buffer_bytes: config.read_buffer_bytes,
                join_delay: config.join_delay,
                shutdown,
            },
            shutdown_tx,
        })
    }

    /// The connection registry (for counters).
    pub fn hub(&self) -> &Arc<Hub> {
        &self.state.hub
    }

    /// Serves `/ws` on `listener` until `shutdown` resolves, then closes every connection with
    /// 1001 and waits (bounded) for them to go.
    ///
    /// # Errors
    ///
    /// An accept-loop I/O error.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), LoadError> {
        let hub = Arc::clone(&self.state.hub);
        let app = Router::new()
            .route("/ws", get(upgrade))
            .with_state(self.state);
        let listener = listener.tap_io(|tcp| {
            // Small frames must not wait for Nagle; failure only costs latency.
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "set_nodelay failed");
            }
        });
        let shutdown_tx = self.shutdown_tx;
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                shutdown.await;
                shutdown_tx.send_replace(true);
            })
            .await?;
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        while hub.connections() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tracing::info!(
            open = hub.connections(),
            kicked = hub.kicked(),
            "ceiling server stopped"
        );
        Ok(())
    }
}

async fn upgrade(
    ws: WebSocketUpgrade,
    axum::extract::State(state): axum::extract::State<State>,
) -> Response {
    ws.read_buffer_size(state.read_buffer_bytes)
        .on_upgrade(move |socket| connection::serve(socket, state))
}
