//! [`Settings`]: flags, env vars and the config file resolved into what a
//! process runs with.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use channels_core::presence::SharedPresence;
use channels_core::{LayerConfig, SharedLayer};
use channels_redis::{RedisHost, SerializerFormat};

use super::args::Args;
use super::file::FileConfig;
use super::layer::{self, FileLayer, LayerSettings};
use super::{
    DEFAULT_BIND, DEFAULT_CHANNEL_CAPACITY, DEFAULT_DRAIN_TIMEOUT, DEFAULT_IDLE_TIMEOUT_SECS,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_FRAME_BYTES, DEFAULT_REDIS_PREFIX, DEFAULT_REDIS_URL,
    DEFAULT_SHUTDOWN_CLOSE_CODE, GatewayConfig, LISTEN_BACKLOG, LayerKind, LogFormat, ServerConfig,
    check_close_code,
};
use crate::error::ServerError;
use crate::history::{HistoryConfig, HistoryRule};
use crate::telemetry::Telemetry;

/// Everything a server process runs with, resolved from [`Args`] and the
/// config file.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Settings {
    /// The public listen address.
    pub bind: SocketAddr,
    /// Log output format.
    pub log_format: LogFormat,
    /// The channel layer.
    pub layer: LayerSettings,
    /// What the [`crate::App`] runs with.
    pub server: ServerConfig,
    /// The config file these came from, if any.
    pub config_file: Option<PathBuf>,
}

impl Settings {
    pub(crate) fn resolve(args: &Args) -> Result<Self, ServerError> {
        let file = match &args.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        Self::resolve_file(args, file)
    }

    /// Resolves `args` over an already parsed config `file`.
    pub(crate) fn resolve_file(args: &Args, file: FileConfig) -> Result<Self, ServerError> {
        let origin = args
            .config
            .as_ref()
            .map_or_else(|| "flags".to_owned(), |p| p.display().to_string());
        let section = file.server;
        let gateway = resolve_gateway(args, file.auth, file.gateway, &origin)?;

        let idle = args
            .idle_timeout
            .or(section.idle_timeout)
            .unwrap_or(DEFAULT_IDLE_TIMEOUT_SECS);
        let idle_timeout = (idle > 0).then(|| Duration::from_secs(idle));
        let shutdown_close_code = args
            .shutdown_close_code
            .or(section.shutdown_close_code)
            .unwrap_or(DEFAULT_SHUTDOWN_CLOSE_CODE);
        let shutdown_close_code = check_close_code(shutdown_close_code)
            .map_err(|reason| ServerError::config(format!("{origin}: {reason}")))?;
        let server = ServerConfig {
            publish_token: args
                .publish_token
                .clone()
                .or(section.publish_token)
                .filter(|t| !t.is_empty()),
            allowed_origins: non_empty(args.allowed_origin.clone())
                .or(section.allowed_origins)
                .unwrap_or_default(),
            max_connections: args
                .max_connections
                .or(section.max_connections)
                .unwrap_or(DEFAULT_MAX_CONNECTIONS),
            max_frame_bytes: args
                .max_frame_bytes
                .or(section.max_frame_bytes)
                .unwrap_or(DEFAULT_MAX_FRAME_BYTES),
            outbound_queue: args
                .outbound_queue
                .or(section.outbound_queue)
                .unwrap_or(channels_core::consumer::DEFAULT_OUTBOUND_QUEUE),
            outbound_bytes: args
                .outbound_bytes
                .or(section.outbound_bytes)
                .unwrap_or(channels_core::consumer::DEFAULT_OUTBOUND_BYTES),
            client_rate_limit: match args.client_rate_limit.or(section.client_rate_limit) {
                Some(0) => None,
                Some(rate) => Some(rate),
                None => Some(super::server::DEFAULT_CLIENT_RATE_LIMIT),
            },
            header_timeout: args
                .header_timeout
                .or(section.header_timeout)
                .map_or(super::server::DEFAULT_HEADER_TIMEOUT, Duration::from_secs),
            idle_timeout,
            ping_interval: idle_timeout.map(|idle| idle / 3),
            drain_timeout: args
                .drain_timeout
                .or(section.drain_timeout)
                .map_or(DEFAULT_DRAIN_TIMEOUT, Duration::from_secs),
            shutdown_close_code,
            admin_bind: args.admin_bind.or(section.admin_bind),
            trusted_proxies: non_empty(args.trusted_proxy.clone())
                .or(section.trusted_proxies)
                .unwrap_or_default(),
            connection_rate: args
                .connection_rate
                .or(section.connection_rate)
                .filter(|rate| *rate > 0),
            gateway,
            presence: args.presence.or(section.presence).unwrap_or(false),
            history: history_config(args, &file.history, &origin)?,
        };
        let bind = match args.bind.or(section.bind) {
            Some(bind) => bind,
            None => DEFAULT_BIND
                .parse()
                .expect("DEFAULT_BIND is a valid socket address"),
        };
        if server.admin_bind == Some(bind) && bind.port() != 0 {
            return Err(ServerError::config(format!(
                "{origin}: the admin listener ({bind}) must differ from the public one"
            )));
        }
        let layer = resolve_layer(args, file.layer, &origin)?;
        Ok(Self {
            bind,
            log_format: args
                .log_format
                .or(section.log_format)
                .unwrap_or(LogFormat::Text),
            layer,
            server,
            config_file: args.config.clone(),
        })
    }

    /// Checks what only building the server would otherwise check (the
    /// token verifiers' key files) and describes the configuration in one
    /// line, secrets left out: what `--check-config` prints.
    ///
    /// # Errors
    /// A key file that cannot be read or parsed.
    pub fn check(&self) -> Result<String, ServerError> {
        let verifier = crate::gateway::auth::Verifier::new(&self.server.gateway)?;
        let auth = if verifier.is_development() {
            "development mode (anonymous connections)".to_owned()
        } else {
            let gateway = &self.server.gateway;
            let mut kinds = Vec::new();
            if gateway.jwt_secret.is_some() {
                kinds.push("jwt-hs256");
            }
            if gateway.jwt_public_key.is_some() {
                kinds.push("jwt-public-key");
            }
            if gateway.jwks_file.is_some() {
                kinds.push("jwks");
            }
            if gateway.django_secret_key.is_some() {
                kinds.push("django-signing");
            }
            kinds.join("+")
        };
        let layer = &self.layer;
        let layer_text = match layer.kind {
            super::LayerKind::Memory => "memory".to_owned(),
            kind => format!(
                "{} ({} host{}, prefix {:?}{})",
                match kind {
                    super::LayerKind::RedisPubsub => "redis-pubsub",
                    _ => "redis",
                },
                layer.hosts.len(),
                if layer.hosts.len() == 1 { "" } else { "s" },
                layer.prefix,
                if layer.symmetric_encryption_keys.is_empty() {
                    ""
                } else {
                    ", encrypted"
                },
            ),
        };
        let forward = self
            .server
            .gateway
            .forward_channel
            .as_deref()
            .map_or_else(String::new, |channel| format!("; forward to {channel}"));
        let presence = if self.server.presence {
            "; presence"
        } else {
            ""
        };
        Ok(format!(
            "configuration ok: bind {}; layer {layer_text}; auth {auth}{forward}{presence}",
            self.bind
        ))
    }

    /// Binds the public address with a [`LISTEN_BACKLOG`]-deep accept queue.
    ///
    /// # Errors
    /// [`ServerError::Bind`] when the address cannot be bound.
    pub fn listen(&self) -> Result<tokio::net::TcpListener, ServerError> {
        bind_listener(self.bind)
    }

    /// Builds the channel layer.
    ///
    /// # Errors
    /// [`ServerError::Layer`] when the layer rejects its settings.
    pub async fn build_layer(&self) -> Result<SharedLayer, ServerError> {
        self.layer.build().await
    }

    /// Builds the presence store when presence is on (`--presence`): on the
    /// layer's Redis (hosts, prefix, sharding) for the Redis layers, in
    /// memory for the memory layer. Hand it to [`crate::App::presence_store`].
    ///
    /// # Errors
    /// [`ServerError::Layer`] when the Redis settings are rejected.
    pub fn build_presence(&self) -> Result<Option<SharedPresence>, ServerError> {
        if !self.server.presence {
            return Ok(None);
        }
        self.layer.build_presence(crate::api::node_id()).map(Some)
    }

    /// Installs the global tracing subscriber (`RUST_LOG` filters, default
    /// `info`) in the configured format, plus OpenTelemetry export with the
    /// `otel` feature when `OTEL_EXPORTER_OTLP_ENDPOINT` is set. Keep the
    /// returned guard until exit: dropping it flushes the exporter. Does
    /// nothing if a subscriber is installed already.
    pub fn init_logging(&self) -> Telemetry {
        crate::telemetry::init(self.log_format)
    }
}

/// Binds `address` with a [`LISTEN_BACKLOG`]-deep accept queue.
pub(crate) fn bind_listener(address: SocketAddr) -> Result<tokio::net::TcpListener, ServerError> {
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

/// The gateway's settings: flags win over `[auth]` and `[gateway]`.
fn resolve_gateway(
    args: &Args,
    auth: super::file::AuthSection,
    section: super::file::GatewaySection,
    origin: &str,
) -> Result<GatewayConfig, ServerError> {
    let defaults = GatewayConfig::default();
    let config = GatewayConfig {
        jwt_secret: args
            .jwt_secret
            .clone()
            .or(auth.jwt_secret)
            .filter(|s| !s.is_empty()),
        jwt_public_key: args.jwt_public_key.clone().or(auth.jwt_public_key),
        jwks_file: args.jwks_file.clone().or(auth.jwks_file),
        django_secret_key: args
            .django_secret_key
            .clone()
            .or(auth.django_secret_key)
            .filter(|s| !s.is_empty()),
        django_salt: args
            .django_salt
            .clone()
            .or(auth.django_salt)
            .unwrap_or(defaults.django_salt),
        django_max_age: args
            .django_max_age
            .or(auth.django_max_age)
            .map(Duration::from_secs),
        forward_channel: args
            .forward_channel
            .clone()
            .or(section.forward_channel)
            .filter(|s| !s.is_empty()),
    };
    if let Some(channel) = &config.forward_channel {
        channels_core::validate_channel_name(channel).map_err(|error| {
            ServerError::config(format!("{origin}: --forward-channel: {error}"))
        })?;
    }
    Ok(config)
}

fn non_empty<T>(values: Vec<T>) -> Option<Vec<T>> {
    (!values.is_empty()).then_some(values)
}

fn resolve_layer(
    args: &Args,
    section: Option<super::file::LayerSection>,
    origin: &str,
) -> Result<LayerSettings, ServerError> {
    let file = match section {
        Some(section) => layer::check_section(section, origin)?,
        None => FileLayer::default(),
    };
    let options = &file.options;
    let kind = args.layer.or(file.kind).unwrap_or(LayerKind::Memory);
    let hosts = if args.redis_url.is_empty() {
        if file.hosts.is_empty() {
            vec![RedisHost::Url(DEFAULT_REDIS_URL.to_owned())]
        } else {
            file.hosts.clone()
        }
    } else {
        args.redis_url
            .iter()
            .map(|url| RedisHost::parse(url))
            .collect::<Result<_, _>>()?
    };
    let mut config = LayerConfig::default().capacity(
        args.channel_capacity
            .or(options.capacity)
            .unwrap_or(DEFAULT_CHANNEL_CAPACITY),
    );
    if let Some(expiry) = options.expiry {
        config = config.expiry(layer::seconds(expiry));
    }
    if let Some(group_expiry) = options.group_expiry {
        config = config.group_expiry(layer::seconds(group_expiry));
    }
    if let Some(rules) = &options.channel_capacity {
        config = layer::capacity_rules(config, rules, origin)?;
    }
    let serializer_format = match &options.serializer_format {
        Some(name) => layer::serializer_format(name, origin)?,
        None => SerializerFormat::Msgpack,
    };
    Ok(LayerSettings {
        kind,
        hosts,
        prefix: args
            .redis_prefix
            .clone()
            .or_else(|| options.prefix.clone())
            .unwrap_or_else(|| DEFAULT_REDIS_PREFIX.to_owned()),
        layer: config,
        symmetric_encryption_keys: options
            .symmetric_encryption_keys
            .clone()
            .unwrap_or_default(),
        random_prefix_length: options.random_prefix_length,
        serializer_format,
        ca_file: args.redis_ca_file.clone(),
    })
}

/// `--history-size`/`--history-ttl` (every group) and `[history]`.
fn history_config(
    args: &Args,
    section: &super::file::HistorySection,
    origin: &str,
) -> Result<HistoryConfig, ServerError> {
    let size = args.history_size.or(section.size).unwrap_or(0);
    let ttl = args.history_ttl.or(section.ttl).map(Duration::from_secs);
    if ttl.is_some_and(|ttl| ttl.is_zero()) {
        return Err(ServerError::config(format!(
            "{origin}: the history ttl must be at least 1 second"
        )));
    }
    let mut config = HistoryConfig {
        size,
        ttl,
        rules: Vec::new(),
    };
    for rule in &section.groups {
        let pattern = rule.pattern.strip_suffix('*').unwrap_or(&rule.pattern);
        if !pattern.is_empty()
            && channels_core::validate_group_name(pattern.trim_end_matches('.')).is_err()
        {
            return Err(ServerError::config(format!(
                "{origin}: [[history.groups]] pattern `{}` is neither a group name nor `prefix.*`",
                rule.pattern
            )));
        }
        config = config.rule(HistoryRule {
            pattern: rule.pattern.clone(),
            size: rule.size,
            ttl: rule
                .ttl
                .map_or(crate::history::DEFAULT_HISTORY_TTL, Duration::from_secs),
        });
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use clap::Parser;

    use super::*;

    fn load(argv: &[&str]) -> Result<Settings, ServerError> {
        let mut full = vec!["channels-server"];
        full.extend_from_slice(argv);
        Args::try_parse_from(full).unwrap().load()
    }

    fn file(text: &str) -> tempfile_path::TempFile {
        tempfile_path::TempFile::new(text)
    }

    /// A file removed on drop (no tempfile crate for one test helper).
    mod tempfile_path {
        use super::*;

        pub(super) struct TempFile(pub(super) PathBuf);

        impl TempFile {
            pub(super) fn new(text: &str) -> Self {
                static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let path = std::env::temp_dir()
                    .join(format!("channels-config-{}-{n}.toml", std::process::id()));
                let mut out = std::fs::File::create(&path).unwrap();
                out.write_all(text.as_bytes()).unwrap();
                Self(path)
            }

            pub(super) fn path(&self) -> &str {
                self.0.to_str().unwrap()
            }
        }

        impl Drop for TempFile {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    #[test]
    fn defaults_match_the_design() {
        let settings = load(&[]).unwrap();
        assert_eq!(settings.bind.to_string(), DEFAULT_BIND);
        assert_eq!(settings.layer.kind, LayerKind::Memory);
        assert_eq!(settings.layer.prefix, "asgi");
        assert_eq!(settings.log_format, LogFormat::Text);
        let config = &settings.server;
        assert!(config.publish_token.is_none());
        assert_eq!(config.idle_timeout, Some(Duration::from_secs(60)));
        assert_eq!(config.ping_interval, Some(Duration::from_secs(20)));
        assert_eq!(config.drain_timeout, DEFAULT_DRAIN_TIMEOUT);
        assert_eq!(config.shutdown_close_code, 1001);
        assert!(!config.presence, "presence is off by default");
        assert_eq!(config.admin_bind, None);
        assert_eq!(config.connection_rate, None);
        assert_eq!(
            settings.layer.layer.capacities.default_capacity(),
            DEFAULT_CHANNEL_CAPACITY
        );
    }

    #[test]
    fn repeatable_flags_and_zero_idle() {
        let settings = load(&[
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
            "--trusted-proxy",
            "10.0.0.0/8",
            "--trusted-proxy",
            "::1/128",
        ])
        .unwrap();
        assert_eq!(settings.layer.kind, LayerKind::RedisPubsub);
        assert_eq!(
            settings.layer.hosts,
            [
                RedisHost::Url("redis://a:1".into()),
                RedisHost::Url("redis://b:2".into())
            ]
        );
        assert_eq!(settings.server.allowed_origins, ["http://x"]);
        assert_eq!(settings.server.idle_timeout, None);
        assert_eq!(settings.server.trusted_proxies.len(), 2);
    }

    #[tokio::test]
    async fn the_redis_ca_file_flag_reaches_the_layer() {
        let ca_file = "/nonexistent/channels-ca.pem";
        let argv = ["--layer", "redis", "--redis-url", "rediss://127.0.0.1:1"];
        let settings = load(&[&argv[..], &["--redis-ca-file", ca_file]].concat()).unwrap();
        assert_eq!(settings.layer.ca_file, Some(PathBuf::from(ca_file)));
        let error = settings.layer.build().await.unwrap_err().to_string();
        assert!(error.contains(ca_file), "{error}");
    }

    #[test]
    fn flags_win_over_the_file_which_wins_over_defaults() {
        let config = file(
            r#"
            [server]
            bind = "127.0.0.1:9001"
            max_connections = 7
            drain_timeout = 3
            shutdown_close_code = 1012
            allowed_origins = ["http://file"]
            connection_rate = 5
            presence = true

            [layer]
            backend = "channels_redis.pubsub.RedisPubSubChannelLayer"
            [layer.config]
            hosts = [["10.1.1.1", 6379]]
            prefix = "fromfile"
            capacity = 50
            expiry = 30
            "#,
        );
        let settings = load(&["--config", config.path()]).unwrap();
        assert_eq!(settings.bind.to_string(), "127.0.0.1:9001");
        assert_eq!(settings.server.max_connections, 7);
        assert_eq!(settings.server.drain_timeout, Duration::from_secs(3));
        assert_eq!(settings.server.shutdown_close_code, 1012);
        assert_eq!(settings.server.connection_rate, Some(5));
        assert!(settings.server.presence);
        assert_eq!(settings.layer.kind, LayerKind::RedisPubsub);
        assert_eq!(settings.layer.prefix, "fromfile");
        assert_eq!(settings.layer.layer.capacities.default_capacity(), 50);
        assert_eq!(settings.layer.layer.expiry, Duration::from_secs(30));
        assert_eq!(settings.layer.hosts, [RedisHost::from(("10.1.1.1", 6379))]);
        // Untouched by the file: the default.
        assert_eq!(settings.server.outbound_queue, 1024);

        let settings = load(&[
            "--config",
            config.path(),
            "--bind",
            "127.0.0.1:9002",
            "--max-connections",
            "9",
            "--allowed-origin",
            "http://flag",
            "--layer",
            "redis",
            "--redis-prefix",
            "fromflag",
            "--channel-capacity",
            "77",
            "--presence=false",
        ])
        .unwrap();
        assert!(!settings.server.presence, "the flag wins over the file");
        assert_eq!(settings.bind.to_string(), "127.0.0.1:9002");
        assert_eq!(settings.server.max_connections, 9);
        assert_eq!(settings.server.allowed_origins, ["http://flag"]);
        assert_eq!(settings.layer.kind, LayerKind::Redis);
        assert_eq!(settings.layer.prefix, "fromflag");
        assert_eq!(settings.layer.layer.capacities.default_capacity(), 77);
        // The file still fills what the flags leave out.
        assert_eq!(settings.server.drain_timeout, Duration::from_secs(3));
    }

    #[test]
    fn bad_files_are_refused_with_the_key_and_the_file() {
        let config = file("[server]\nmax_conections = 5\n");
        let error = load(&["--config", config.path()]).unwrap_err().to_string();
        assert!(error.contains("max_conections"), "{error}");
        assert!(error.contains(config.path()), "{error}");

        let config =
            file("[layer]\nbackend = \"memory\"\n[layer.config]\nhosts = [\"redis://x\"]\n");
        let error = load(&["--config", config.path()]).unwrap_err().to_string();
        assert!(error.contains("layer.config.hosts"), "{error}");

        let config = file(
            "[layer]\nbackend = \"channels_redis.core.RedisChannelLayer\"\n[layer.config]\nhosts = [{ adress = \"redis://x\" }]\n",
        );
        let error = load(&["--config", config.path()]).unwrap_err().to_string();
        assert!(error.contains("adress"), "{error}");
        assert!(error.contains("hosts[0]"), "{error}");

        let error = load(&["--config", "/nonexistent/channels.toml"])
            .unwrap_err()
            .to_string();
        assert!(error.contains("/nonexistent/channels.toml"), "{error}");

        let error = load(&["--shutdown-close-code", "1005"])
            .unwrap_err()
            .to_string();
        assert!(error.contains("1005"), "{error}");
    }

    #[test]
    fn gateway_settings_come_from_flags_then_the_file() {
        let settings = load(&[]).unwrap();
        assert!(settings.server.gateway.is_development());
        assert_eq!(settings.server.gateway.django_salt, "django.core.signing");

        let config = file(
            "[auth]\ndjango_secret_key = \"from-file\"\ndjango_salt = \"channels\"\ndjango_max_age = 30\n\
             [gateway]\nforward_channel = \"file.events\"\n",
        );
        let settings = load(&["--config", config.path()]).unwrap();
        let gateway = &settings.server.gateway;
        assert_eq!(gateway.django_secret_key.as_deref(), Some("from-file"));
        assert_eq!(gateway.django_salt, "channels");
        assert_eq!(gateway.django_max_age, Some(Duration::from_secs(30)));
        assert_eq!(gateway.forward_channel.as_deref(), Some("file.events"));
        assert!(!gateway.is_development());
        // Secrets never show in Debug output.
        assert!(!format!("{gateway:?}").contains("from-file"));

        let settings = load(&[
            "--config",
            config.path(),
            "--jwt-secret",
            "s3cret",
            "--django-salt",
            "flag-salt",
            "--forward-channel",
            "flag.events",
        ])
        .unwrap();
        let gateway = &settings.server.gateway;
        assert_eq!(gateway.jwt_secret.as_deref(), Some("s3cret"));
        assert_eq!(gateway.django_salt, "flag-salt");
        assert_eq!(gateway.forward_channel.as_deref(), Some("flag.events"));

        let error = load(&["--forward-channel", "not a channel"])
            .unwrap_err()
            .to_string();
        assert!(error.contains("--forward-channel"), "{error}");
    }

    #[test]
    fn the_readme_example_file_loads() {
        let readme = include_str!("../../../README.md");
        let start = readme
            .find("```toml\n[server]")
            .expect("README has the example")
            + 8;
        let text = &readme[start..start + readme[start..].find("```").unwrap()];
        let config = file(text);
        let settings = load(&["--config", config.path()]).unwrap();
        assert_eq!(settings.layer.kind, LayerKind::Redis);
        assert_eq!(settings.layer.hosts.len(), 4);
        assert_eq!(settings.server.shutdown_close_code, 1012);
        let capacities = &settings.layer.layer.capacities;
        assert_eq!(capacities.capacity_for("chat.42"), 50);
        assert_eq!(capacities.capacity_for("websocket.send!x"), 20);
        assert_eq!(capacities.capacity_for("other"), 100);
        assert_eq!(
            settings.layer.symmetric_encryption_keys,
            ["a secret".to_owned()]
        );
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
        let settings = args.server.load().unwrap();
        assert_eq!(settings.bind.to_string(), "0.0.0.0:9000");
        assert_eq!(settings.layer.kind, LayerKind::Memory);
    }

    #[test]
    fn help_lists_every_flag_with_its_env_var_and_default() {
        use clap::CommandFactory;
        let help = Args::command().render_long_help().to_string();
        for flag in [
            "config",
            "bind",
            "admin-bind",
            "layer",
            "redis-url",
            "redis-prefix",
            "publish-token",
            "allowed-origin",
            "channel-capacity",
            "max-connections",
            "max-frame-bytes",
            "outbound-queue",
            "idle-timeout",
            "drain-timeout",
            "shutdown-close-code",
            "trusted-proxy",
            "connection-rate",
            "jwt-secret",
            "jwt-public-key",
            "jwks-file",
            "django-secret-key",
            "django-salt",
            "django-max-age",
            "forward-channel",
            "log-format",
        ] {
            assert!(
                help.contains(&format!("--{flag}")),
                "--{flag} missing from help"
            );
            let env = format!("CHANNELS_{}", flag.to_uppercase().replace('-', "_"));
            assert!(help.contains(&env), "{env} missing from help");
        }
        // The defaults written in the help text are the constants'.
        for default in [
            format!("[default: {DEFAULT_BIND}]"),
            format!("[default: {DEFAULT_REDIS_URL}]"),
            format!("[default: {DEFAULT_REDIS_PREFIX}]"),
            format!("[default: {DEFAULT_CHANNEL_CAPACITY}]"),
            format!("[default: {DEFAULT_MAX_CONNECTIONS}]"),
            format!("[default: {DEFAULT_MAX_FRAME_BYTES}]"),
            format!(
                "[default: {}]",
                channels_core::consumer::DEFAULT_OUTBOUND_QUEUE
            ),
            format!("[default: {DEFAULT_IDLE_TIMEOUT_SECS}]"),
            format!("[default: {}]", DEFAULT_DRAIN_TIMEOUT.as_secs()),
            format!("[default: {DEFAULT_SHUTDOWN_CLOSE_CODE}]"),
            format!("[default: {}]", crate::DEFAULT_DJANGO_SALT),
        ] {
            assert!(help.contains(&default), "{default} missing from help");
        }
    }
}
