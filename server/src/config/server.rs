//! [`ServerConfig`]: what an [`crate::App`] runs with: limits, timeouts, the
//! publish API, the admin listener, proxies and rate limits.

use std::net::SocketAddr;
use std::time::Duration;

use channels_core::consumer::{
    DEFAULT_IDLE_TIMEOUT, DEFAULT_OUTBOUND_BYTES, DEFAULT_OUTBOUND_QUEUE,
};
use ipnet::IpNet;

/// Frames per second a client may send by default: far above what a chat or
/// a dashboard sends, low enough that one client cannot flood the process.
pub const DEFAULT_CLIENT_RATE_LIMIT: u32 = 200;

/// How long a client may take to send an HTTP request head by default.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

use super::{
    DEFAULT_DRAIN_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_FRAME_BYTES,
    DEFAULT_SHUTDOWN_CLOSE_CODE, GatewayConfig,
};

/// What the server runs with. [`crate::Args::load`] builds it from flags, env
/// and file; code can start from [`ServerConfig::default`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Bearer token of the publish API; `None` turns the API off.
    pub publish_token: Option<String>,
    /// Allowed WebSocket origins; empty allows every origin.
    pub allowed_origins: Vec<String>,
    /// Most WebSocket connections open at once (default
    /// [`DEFAULT_MAX_CONNECTIONS`]).
    pub max_connections: usize,
    /// Largest frame and publish body (default [`DEFAULT_MAX_FRAME_BYTES`]).
    pub max_frame_bytes: usize,
    /// Frames queued per client (default [`DEFAULT_OUTBOUND_QUEUE`]).
    pub outbound_queue: usize,
    /// Bytes of frames queued per client (default [`DEFAULT_OUTBOUND_BYTES`]).
    pub outbound_bytes: usize,
    /// Frames per second a client may send (`None`: no limit; default
    /// [`DEFAULT_CLIENT_RATE_LIMIT`]).
    pub client_rate_limit: Option<u32>,
    /// How long a client may take to send an HTTP request head (default
    /// [`DEFAULT_HEADER_TIMEOUT`]).
    pub header_timeout: Duration,
    /// Silence allowed per connection (default 60 s); `None`: forever.
    pub idle_timeout: Option<Duration>,
    /// Ping interval (default 20 s); `None`: no pings.
    pub ping_interval: Option<Duration>,
    /// How long shutdown waits for connections (default
    /// [`DEFAULT_DRAIN_TIMEOUT`]).
    pub drain_timeout: Duration,
    /// The close code sockets get on shutdown (default
    /// [`DEFAULT_SHUTDOWN_CLOSE_CODE`], 1001).
    pub shutdown_close_code: u16,
    /// Where `/metrics` and the publish API listen instead of the public
    /// port (`None`: on the public port). [`crate::App::serve`] binds it.
    pub admin_bind: Option<SocketAddr>,
    /// Proxies whose `X-Forwarded-For` decides the client address in the
    /// scope (empty: the peer address always).
    pub trusted_proxies: Vec<IpNet>,
    /// New WebSocket connections per second per client address (`None`: no
    /// limit); excess upgrades get 429.
    pub connection_rate: Option<u32>,
    /// The gateway's authentication and forwarding ([`crate::App::gateway`]).
    pub gateway: GatewayConfig,
    /// Records who is in each group a gateway connection is in, across
    /// processes (`--presence`; default off: it costs a store write and an
    /// event per join and leave). See [`crate::Presence`].
    pub presence: bool,
    /// Which groups keep a history for recovering clients (none by default).
    pub history: crate::history::HistoryConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            publish_token: None,
            allowed_origins: Vec::new(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            outbound_queue: DEFAULT_OUTBOUND_QUEUE,
            outbound_bytes: DEFAULT_OUTBOUND_BYTES,
            client_rate_limit: Some(DEFAULT_CLIENT_RATE_LIMIT),
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            ping_interval: Some(DEFAULT_IDLE_TIMEOUT / 3),
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            shutdown_close_code: DEFAULT_SHUTDOWN_CLOSE_CODE,
            admin_bind: None,
            trusted_proxies: Vec::new(),
            connection_rate: None,
            gateway: GatewayConfig::default(),
            presence: false,
            history: crate::history::HistoryConfig::default(),
        }
    }
}

impl ServerConfig {
    /// Turns the publish API on with this bearer token.
    #[must_use]
    pub fn publish_token(mut self, token: impl Into<String>) -> Self {
        self.publish_token = Some(token.into());
        self
    }

    /// Allows WebSockets from this origin only (call again for more).
    #[must_use]
    pub fn allowed_origin(mut self, origin: impl Into<String>) -> Self {
        self.allowed_origins.push(origin.into());
        self
    }

    /// Sets the connection limit.
    #[must_use]
    pub fn max_connections(mut self, max: usize) -> Self {
        self.max_connections = max;
        self
    }

    /// Sets which groups keep a history (docs/protocol.md, "History and
    /// recovery").
    #[must_use]
    pub fn history(mut self, history: crate::history::HistoryConfig) -> Self {
        self.history = history;
        self
    }

    /// Sets the frame and publish body limit.
    #[must_use]
    pub fn max_frame_bytes(mut self, max: usize) -> Self {
        self.max_frame_bytes = max;
        self
    }

    /// Sets the per-client outbound queue bound in bytes.
    #[must_use]
    pub fn outbound_bytes(mut self, bytes: usize) -> Self {
        self.outbound_bytes = bytes;
        self
    }

    /// Sets the frames per second a client may send (`None`: no limit).
    #[must_use]
    pub fn client_rate_limit(mut self, frames_per_second: Option<u32>) -> Self {
        self.client_rate_limit = frames_per_second;
        self
    }

    /// Sets how long a client may take to send an HTTP request head.
    #[must_use]
    pub fn header_timeout(mut self, timeout: Duration) -> Self {
        self.header_timeout = timeout;
        self
    }

    /// Sets the per-client outbound queue length.
    #[must_use]
    pub fn outbound_queue(mut self, frames: usize) -> Self {
        self.outbound_queue = frames;
        self
    }

    /// Sets the idle timeout and ping interval.
    #[must_use]
    pub fn keepalive(
        mut self,
        idle_timeout: Option<Duration>,
        ping_interval: Option<Duration>,
    ) -> Self {
        self.idle_timeout = idle_timeout;
        self.ping_interval = ping_interval;
        self
    }

    /// Sets the shutdown drain time.
    #[must_use]
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// Sets the close code sent on shutdown (1012 for rolling deploys).
    #[must_use]
    pub fn shutdown_close_code(mut self, code: u16) -> Self {
        self.shutdown_close_code = code;
        self
    }

    /// Moves `/metrics` and the publish API to a listener on `address`.
    #[must_use]
    pub fn admin_bind(mut self, address: SocketAddr) -> Self {
        self.admin_bind = Some(address);
        self
    }

    /// Trusts `X-Forwarded-For` from this proxy network (call again for more).
    #[must_use]
    pub fn trusted_proxy(mut self, network: IpNet) -> Self {
        self.trusted_proxies.push(network);
        self
    }

    /// Sets the gateway's authentication and forwarding.
    #[must_use]
    pub fn gateway(mut self, gateway: GatewayConfig) -> Self {
        self.gateway = gateway;
        self
    }

    /// Turns presence on or off ([`ServerConfig::presence`]).
    #[must_use]
    pub fn presence(mut self, on: bool) -> Self {
        self.presence = on;
        self
    }

    /// Limits new WebSocket connections per second per client address.
    #[must_use]
    pub fn connection_rate(mut self, per_second: u32) -> Self {
        self.connection_rate = (per_second > 0).then_some(per_second);
        self
    }
}
