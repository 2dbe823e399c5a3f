//! Configuration: the clap [`Args`] every binary shares (each flag also read
//! from `CHANNELS_<FLAG>`), the [`ServerConfig`] the server runs with, and the
//! choice of channel layer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use channels_core::consumer::{DEFAULT_IDLE_TIMEOUT, DEFAULT_OUTBOUND_QUEUE};
use channels_core::{LayerConfig, SharedLayer};
use channels_memory::InMemoryChannelLayer;

use crate::error::ServerError;

/// The default listen address.
pub const DEFAULT_BIND: &str = "127.0.0.1:8000";
/// The default Redis URL when `--layer redis` is given without `--redis-url`.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
/// The default Redis key prefix (channels_redis's `asgi`).
pub const DEFAULT_REDIS_PREFIX: &str = "asgi";
/// The capacity the server gives every channel (Django's default is 100).
/// Higher because of broadcast bursts: the Redis core layer counts one
/// process's connections together against it (they share one key), and the
/// layers' local buffers drop the oldest message past it.
pub const DEFAULT_CHANNEL_CAPACITY: usize = 1000;
/// The default limit of open WebSocket connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// The default largest WebSocket frame (and publish body) accepted, in bytes.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 64 * 1024;
/// How long shutdown waits for connections to finish before dropping them.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Which channel layer backs the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LayerKind {
    /// In this process only (no setup; one process).
    Memory,
    /// Redis lists and sorted sets, compatible with Python `channels_redis`.
    Redis,
    /// Redis pub/sub, compatible with `channels_redis.pubsub`.
    RedisPubsub,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The server's command line. Every flag can also be set by the environment
/// variable `CHANNELS_<FLAG>` (e.g. `CHANNELS_LAYER=redis`); repeatable flags
/// take a comma-separated list there.
///
/// Examples reuse it with `#[command(flatten)] server: channels_server::Args`.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "channels-server",
    version,
    about = "A Django-Channels-style WebSocket server over a channel layer"
)]
pub struct Args {
    /// Address to listen on.
    #[arg(long, env = "CHANNELS_BIND", default_value = DEFAULT_BIND)]
    pub bind: SocketAddr,

    /// Channel layer backend.
    #[arg(long, env = "CHANNELS_LAYER", value_enum, default_value_t = LayerKind::Memory)]
    pub layer: LayerKind,

    /// Redis URL; repeat for sharding [default: redis://127.0.0.1:6379].
    #[arg(
        long = "redis-url",
        env = "CHANNELS_REDIS_URL",
        value_name = "URL",
        value_delimiter = ','
    )]
    pub redis_url: Vec<String>,

    /// Prefix of every Redis key (channels_redis's `prefix`).
    #[arg(long, env = "CHANNELS_REDIS_PREFIX", default_value = DEFAULT_REDIS_PREFIX)]
    pub redis_prefix: String,

    /// Bearer token of the HTTP publish API; the API is off when unset.
    #[arg(
        long,
        env = "CHANNELS_PUBLISH_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub publish_token: Option<String>,

    /// Origin allowed to open WebSockets (repeatable; `*` for any, `https://*.example.com`
    /// for subdomains). None given: every origin is allowed.
    #[arg(
        long = "allowed-origin",
        env = "CHANNELS_ALLOWED_ORIGIN",
        value_name = "ORIGIN",
        value_delimiter = ','
    )]
    pub allowed_origin: Vec<String>,

    /// Messages a channel holds before sends to it fail (group sends skip it).
    /// The Redis core layer counts all of one process's connections together.
    #[arg(long, env = "CHANNELS_CHANNEL_CAPACITY", default_value_t = DEFAULT_CHANNEL_CAPACITY)]
    pub channel_capacity: usize,

    /// Most WebSocket connections open at once; more get HTTP 503.
    #[arg(long, env = "CHANNELS_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,

    /// Largest frame (and publish body) in bytes; a bigger frame closes with 1009.
    #[arg(long, env = "CHANNELS_MAX_FRAME_BYTES", default_value_t = DEFAULT_MAX_FRAME_BYTES)]
    pub max_frame_bytes: usize,

    /// Frames queued per client; a client that lets it fill is closed with 1013.
    #[arg(long, env = "CHANNELS_OUTBOUND_QUEUE", default_value_t = DEFAULT_OUTBOUND_QUEUE)]
    pub outbound_queue: usize,

    /// Seconds a silent connection lives (pinged at a third of it); 0 disables.
    #[arg(long, env = "CHANNELS_IDLE_TIMEOUT", value_name = "SECONDS", default_value_t = DEFAULT_IDLE_TIMEOUT.as_secs())]
    pub idle_timeout: u64,

    /// Log format.
    #[arg(long, env = "CHANNELS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Pending connections the listener queues before `accept` (the OS default
/// of 128 overflows when a thousand clients connect at once, and each
/// overflowed client waits a full second to retry its SYN).
pub const LISTEN_BACKLOG: u32 = 4096;

impl Args {
    /// Binds `--bind` with a [`LISTEN_BACKLOG`]-deep accept queue.
    ///
    /// # Errors
    /// [`ServerError::Bind`] when the address cannot be bound.
    pub fn listen(&self) -> Result<tokio::net::TcpListener, ServerError> {
        let address = self.bind;
        let bind = || {
            let socket = if address.is_ipv4() {
                tokio::net::TcpSocket::new_v4()?
            } else {
                tokio::net::TcpSocket::new_v6()?
            };
            socket.set_reuseaddr(true)?;
            socket.bind(address)?;
            socket.listen(LISTEN_BACKLOG)
        };
        bind().map_err(|source| ServerError::Bind { address, source })
    }

    /// The server settings these flags describe.
    pub fn server_config(&self) -> ServerConfig {
        let idle_timeout = (self.idle_timeout > 0).then(|| Duration::from_secs(self.idle_timeout));
        ServerConfig {
            publish_token: self.publish_token.clone().filter(|t| !t.is_empty()),
            allowed_origins: self.allowed_origin.clone(),
            max_connections: self.max_connections,
            max_frame_bytes: self.max_frame_bytes,
            outbound_queue: self.outbound_queue,
            idle_timeout,
            ping_interval: idle_timeout.map(|idle| idle / 3),
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
        }
    }

    /// Builds the channel layer these flags choose.
    ///
    /// # Errors
    /// [`ServerError::Config`] for an unusable Redis setup;
    /// [`ServerError::Layer`] when the layer cannot be built.
    pub async fn build_layer(&self) -> Result<SharedLayer, ServerError> {
        let urls = if self.redis_url.is_empty() {
            vec![DEFAULT_REDIS_URL.to_owned()]
        } else {
            self.redis_url.clone()
        };
        let layer_config = LayerConfig::default().capacity(self.channel_capacity);
        match self.layer {
            LayerKind::Memory => Ok(Arc::new(InMemoryChannelLayer::with_config(layer_config))),
            LayerKind::Redis => crate::redis::core_layer(&urls, &self.redis_prefix, layer_config),
            LayerKind::RedisPubsub => {
                crate::redis::pubsub_layer(&urls, &self.redis_prefix, layer_config)
            }
        }
    }

    /// Installs the global tracing subscriber (`RUST_LOG` filters, default
    /// `info`). Does nothing if one is installed already.
    pub fn init_logging(&self) {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        // Colour only on a terminal, so piped logs stay plain text.
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(ansi);
        // Another subscriber being installed already is fine (tests, embedders).
        let _ = match self.log_format {
            LogFormat::Text => builder.try_init(),
            LogFormat::Json => builder.json().try_init(),
        };
    }
}

/// What the server runs with. [`Args::server_config`] builds it from flags;
/// code can start from [`ServerConfig::default`].
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
    /// Silence allowed per connection (default 60 s); `None`: forever.
    pub idle_timeout: Option<Duration>,
    /// Ping interval (default 20 s); `None`: no pings.
    pub ping_interval: Option<Duration>,
    /// How long shutdown waits for connections (default
    /// [`DEFAULT_DRAIN_TIMEOUT`]).
    pub drain_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            publish_token: None,
            allowed_origins: Vec::new(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            outbound_queue: DEFAULT_OUTBOUND_QUEUE,
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            ping_interval: Some(DEFAULT_IDLE_TIMEOUT / 3),
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
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

    /// Sets the frame and publish body limit.
    #[must_use]
    pub fn max_frame_bytes(mut self, max: usize) -> Self {
        self.max_frame_bytes = max;
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
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn defaults_match_the_design() {
        let args = Args::try_parse_from(["channels-server"]).unwrap();
        assert_eq!(args.bind.to_string(), DEFAULT_BIND);
        assert_eq!(args.layer, LayerKind::Memory);
        assert_eq!(args.redis_prefix, "asgi");
        assert!(args.publish_token.is_none());
        assert_eq!(args.log_format, LogFormat::Text);
        let config = args.server_config();
        assert_eq!(config.idle_timeout, Some(Duration::from_secs(60)));
        assert_eq!(config.ping_interval, Some(Duration::from_secs(20)));
    }

    #[test]
    fn repeatable_flags_and_zero_idle() {
        let args = Args::try_parse_from([
            "channels-server",
            "--layer",
            "redis-pubsub",
            "--redis-url",
            "redis://a:1",
            "--redis-url",
            "redis://b:2",
            "--allowed-origin",
            "http://x",
            "--idle-timeout",
            "0",
        ])
        .unwrap();
        assert_eq!(args.layer, LayerKind::RedisPubsub);
        assert_eq!(args.redis_url, ["redis://a:1", "redis://b:2"]);
        assert_eq!(args.allowed_origin, ["http://x"]);
        assert_eq!(args.server_config().idle_timeout, None);
    }

    /// What an example does: its own flags next to the shared ones.
    #[derive(Debug, clap::Parser)]
    struct ExampleArgs {
        #[command(flatten)]
        server: Args,
        #[arg(long, default_value_t = 3)]
        rooms: usize,
    }

    #[test]
    fn examples_can_flatten_the_shared_args() {
        let args =
            ExampleArgs::try_parse_from(["example", "--rooms", "5", "--bind", "0.0.0.0:9000"])
                .unwrap();
        assert_eq!(args.rooms, 5);
        assert_eq!(args.server.bind.to_string(), "0.0.0.0:9000");
        assert_eq!(args.server.layer, LayerKind::Memory);
    }

    #[test]
    fn help_lists_every_flag_with_its_env_var() {
        use clap::CommandFactory;
        let help = Args::command().render_long_help().to_string();
        for flag in [
            "bind",
            "layer",
            "redis-url",
            "redis-prefix",
            "publish-token",
            "allowed-origin",
            "max-connections",
            "max-frame-bytes",
            "outbound-queue",
            "idle-timeout",
            "log-format",
        ] {
            assert!(
                help.contains(&format!("--{flag}")),
                "--{flag} missing from help"
            );
            let env = format!("CHANNELS_{}", flag.to_uppercase().replace('-', "_"));
            assert!(help.contains(&env), "{env} missing from help");
        }
    }
}
