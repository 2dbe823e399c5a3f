//! [`Args`]: the command line every binary shares. Each flag is optional so
//! the config file can fill what flags and env vars leave out;
//! [`Args::load`] applies the precedence and the defaults.

use std::net::SocketAddr;
use std::path::PathBuf;

use ipnet::IpNet;

use super::{LayerKind, LogFormat, Settings};
use crate::error::ServerError;

/// The server's command line. Every flag can also be set by the environment
/// variable `CHANNELS_<FLAG>` (e.g. `CHANNELS_LAYER=redis`); repeatable flags
/// take a comma-separated list there. A flag or env var wins over the config
/// file (`--config`), which wins over the default shown.
///
/// Examples reuse it with `#[command(flatten)] server: channels_server::Args`,
/// then call [`Args::load`].
#[derive(Debug, Clone, Default, clap::Parser)]
#[command(
    name = "channels-server",
    version,
    about = "A Django-Channels-style WebSocket server over a channel layer"
)]
pub struct Args {
    /// TOML config file: `[server]` settings and a `[layer]` mirroring Django's CHANNEL_LAYERS.
    #[arg(long, env = "CHANNELS_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Check the configuration (file, flags, environment and key files), print
    /// what it selects and exit: 0 when it is valid, 2 when not. Listens on
    /// nothing and connects to nothing.
    #[arg(long)]
    pub check_config: bool,

    /// Address to listen on [default: 127.0.0.1:8000].
    #[arg(long, env = "CHANNELS_BIND", value_name = "ADDR")]
    pub bind: Option<SocketAddr>,

    /// Separate listener for /metrics and the publish API, which then leave the
    /// public port (/healthz and /readyz stay on both) [default: none].
    #[arg(long, env = "CHANNELS_ADMIN_BIND", value_name = "ADDR")]
    pub admin_bind: Option<SocketAddr>,

    /// Channel layer backend [default: memory].
    #[arg(long, env = "CHANNELS_LAYER", value_enum)]
    pub layer: Option<LayerKind>,

    /// Redis URL; repeat for sharding [default: redis://127.0.0.1:6379].
    #[arg(
        long = "redis-url",
        env = "CHANNELS_REDIS_URL",
        value_name = "URL",
        value_delimiter = ','
    )]
    pub redis_url: Vec<String>,

    /// Prefix of every Redis key (channels_redis's `prefix`) [default: asgi].
    #[arg(long, env = "CHANNELS_REDIS_PREFIX", value_name = "PREFIX")]
    pub redis_prefix: Option<String>,

    /// CA certificate (PEM) that `rediss://` hosts' server certificates must
    /// chain to (channels_redis's `ssl_ca_certs`) [default: the system's CA store].
    #[arg(long, env = "CHANNELS_REDIS_CA_FILE", value_name = "PATH")]
    pub redis_ca_file: Option<PathBuf>,

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
    /// The Redis core layer counts all of one process's connections together
    /// [default: 1000].
    #[arg(long, env = "CHANNELS_CHANNEL_CAPACITY", value_name = "N")]
    pub channel_capacity: Option<usize>,

    /// Most WebSocket connections open at once; more get HTTP 503 [default: 10000].
    #[arg(long, env = "CHANNELS_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,

    /// Largest frame (and publish body) in bytes; a bigger frame closes with 1009
    /// [default: 65536].
    #[arg(long, env = "CHANNELS_MAX_FRAME_BYTES", value_name = "BYTES")]
    pub max_frame_bytes: Option<usize>,

    /// Frames queued per client; a client that lets it fill is closed with 1013
    /// [default: 1024].
    #[arg(long, env = "CHANNELS_OUTBOUND_QUEUE", value_name = "FRAMES")]
    pub outbound_queue: Option<usize>,

    /// Bytes of frames queued per client; a client whose queue holds more is
    /// closed with 1013 [default: 1048576].
    #[arg(long, env = "CHANNELS_OUTBOUND_BYTES", value_name = "BYTES")]
    pub outbound_bytes: Option<usize>,

    /// Frames per second a client may send (bursts of twice as many); frames
    /// over it are dropped and counted, and a client that keeps flooding is
    /// closed with 4029; 0 disables [default: 200].
    #[arg(long, env = "CHANNELS_CLIENT_RATE_LIMIT", value_name = "FRAMES")]
    pub client_rate_limit: Option<u32>,

    /// Seconds a client may take to send a complete HTTP request head;
    /// slower connections are closed [default: 10].
    #[arg(long, env = "CHANNELS_HEADER_TIMEOUT", value_name = "SECONDS")]
    pub header_timeout: Option<u64>,

    /// Seconds a silent connection lives (pinged at a third of it); 0 disables
    /// [default: 60].
    #[arg(long, env = "CHANNELS_IDLE_TIMEOUT", value_name = "SECONDS")]
    pub idle_timeout: Option<u64>,

    /// Seconds shutdown waits for connections to close before dropping them
    /// [default: 10].
    #[arg(long, env = "CHANNELS_DRAIN_TIMEOUT", value_name = "SECONDS")]
    pub drain_timeout: Option<u64>,

    /// Close code sent to every socket on shutdown: 1001 going away, or 1012
    /// service restart for rolling deploys [default: 1001].
    #[arg(long, env = "CHANNELS_SHUTDOWN_CLOSE_CODE", value_name = "CODE")]
    pub shutdown_close_code: Option<u16>,

    /// Proxy network whose `X-Forwarded-For` is believed (repeatable CIDR, e.g.
    /// 10.0.0.0/8); the client is the right-most address not in one [default: none].
    #[arg(
        long = "trusted-proxy",
        env = "CHANNELS_TRUSTED_PROXY",
        value_name = "CIDR",
        value_delimiter = ','
    )]
    pub trusted_proxy: Vec<IpNet>,

    /// New WebSocket connections per second per client address; more get HTTP
    /// 429; 0 disables [default: 0].
    #[arg(long, env = "CHANNELS_CONNECTION_RATE", value_name = "N")]
    pub connection_rate: Option<u32>,

    /// HS256 secret that signs client JWTs; setting any verifier turns development
    /// mode (anonymous connections) off.
    #[arg(
        long,
        env = "CHANNELS_JWT_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub jwt_secret: Option<String>,

    /// PEM file of the RSA (RS256) or EC P-256 (ES256) public key of client JWTs.
    #[arg(long, env = "CHANNELS_JWT_PUBLIC_KEY", value_name = "FILE")]
    pub jwt_public_key: Option<PathBuf>,

    /// JWKS file whose keys verify client JWTs, chosen by the token's `kid`.
    #[arg(long, env = "CHANNELS_JWKS_FILE", value_name = "FILE")]
    pub jwks_file: Option<PathBuf>,

    /// Django's SECRET_KEY: verifies tokens made by `django.core.signing.dumps(claims,
    /// salt=...)`.
    #[arg(
        long,
        env = "CHANNELS_DJANGO_SECRET_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    pub django_secret_key: Option<String>,

    /// The salt of those Django tokens [default: django.core.signing].
    #[arg(long, env = "CHANNELS_DJANGO_SALT", value_name = "SALT")]
    pub django_salt: Option<String>,

    /// Seconds a Django token stays usable after signing (`signing.loads` max_age)
    /// [default: no limit].
    #[arg(long, env = "CHANNELS_DJANGO_MAX_AGE", value_name = "SECONDS")]
    pub django_max_age: Option<u64>,

    /// Channel that receives client frames as ASGI `websocket.connect` / `receive` /
    /// `disconnect` events, for a Django Channels worker [default: none].
    #[arg(long, env = "CHANNELS_FORWARD_CHANNEL", value_name = "NAME")]
    pub forward_channel: Option<String>,

    /// Record who is in each group a /ws connection is in, across processes
    /// (GET /api/groups/{group}/presence, `presence` events); costs a Redis
    /// write and an event per join and leave [default: false].
    #[arg(
        long,
        env = "CHANNELS_PRESENCE",
        value_name = "BOOL",
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub presence: Option<bool>,
    /// Messages each group keeps in its history, for clients that recover
    /// after a reconnect (docs/protocol.md); 0 keeps none [default: 0].
    /// Needs the memory or the Redis core layer.
    #[arg(long, env = "CHANNELS_HISTORY_SIZE", value_name = "MESSAGES")]
    pub history_size: Option<usize>,

    /// Seconds a group's history keeps a message [default: 300].
    #[arg(long, env = "CHANNELS_HISTORY_TTL", value_name = "SECONDS")]
    pub history_ttl: Option<u64>,

    /// Log format [default: text].
    #[arg(long, env = "CHANNELS_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
}

impl Args {
    /// Reads the config file, if one is named, and resolves every setting:
    /// flag > env var > file > default.
    ///
    /// # Errors
    /// [`ServerError::ConfigRead`] / [`ServerError::ConfigFile`] when the file
    /// cannot be read or parsed (an unknown key is named with its line);
    /// [`ServerError::Config`] for values that do not fit together.
    pub fn load(&self) -> Result<Settings, ServerError> {
        Settings::resolve(self)
    }
}
