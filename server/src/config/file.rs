//! The TOML configuration file (`--config PATH` or `CHANNELS_CONFIG`): its
//! schema as serde structs. Every table refuses keys it does not know, so a
//! typo is an error that names the key, the line and the file.
//!
//! ```toml
//! [server]                 # every server setting; flags and env vars win
//! bind = "0.0.0.0:8000"
//!
//! [layer]                  # Django's CHANNEL_LAYERS["default"]
//! backend = "channels_redis.core.RedisChannelLayer"
//! [layer.config]
//! hosts = ["redis://127.0.0.1:6379/0"]
//! ```
//!
//! ```toml
//! [auth]                   # token verification (none: development mode)
//! jwt_secret = "change-me"
//! [gateway]
//! forward_channel = "gateway.events"
//! ```
//!
//! New sections are new optional fields of
//! [`FileConfig`]; files without them keep working.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::LogFormat;
use crate::error::ServerError;

/// The whole file. Each section is optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    /// `[server]`: listener, limits, timeouts, logging.
    #[serde(default)]
    pub(crate) server: ServerSection,
    /// `[layer]`: the channel layer, as Django's `CHANNEL_LAYERS["default"]`.
    pub(crate) layer: Option<LayerSection>,
    /// `[auth]`: how the gateway verifies tokens.
    #[serde(default)]
    pub(crate) auth: AuthSection,
    /// `[gateway]`: what the gateway does with client frames.
    #[serde(default)]
    pub(crate) gateway: GatewaySection,
    /// `[history]`: what groups keep for clients that recover.
    #[serde(default)]
    pub(crate) history: HistorySection,
}

impl FileConfig {
    /// Reads and parses `path`.
    pub(crate) fn load(path: &Path) -> Result<Self, ServerError> {
        let text = std::fs::read_to_string(path).map_err(|source| ServerError::ConfigRead {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses `text`; `path` only names the file in errors.
    pub(crate) fn parse(text: &str, path: &Path) -> Result<Self, ServerError> {
        toml::from_str(text).map_err(|source| ServerError::ConfigFile {
            path: PathBuf::from(path),
            source: Box::new(source),
        })
    }
}

/// `[server]`: one key per `channels-server` flag (same name, `_` for `-`,
/// plural for the repeatable ones).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ServerSection {
    pub(crate) bind: Option<SocketAddr>,
    pub(crate) admin_bind: Option<SocketAddr>,
    pub(crate) publish_token: Option<String>,
    pub(crate) allowed_origins: Option<Vec<String>>,
    pub(crate) max_connections: Option<usize>,
    pub(crate) max_frame_bytes: Option<usize>,
    pub(crate) outbound_queue: Option<usize>,
    pub(crate) outbound_bytes: Option<usize>,
    pub(crate) client_rate_limit: Option<u32>,
    pub(crate) header_timeout: Option<u64>,
    pub(crate) idle_timeout: Option<u64>,
    pub(crate) drain_timeout: Option<u64>,
    pub(crate) shutdown_close_code: Option<u16>,
    pub(crate) trusted_proxies: Option<Vec<IpNet>>,
    pub(crate) connection_rate: Option<u32>,
    pub(crate) presence: Option<bool>,
    pub(crate) log_format: Option<LogFormat>,
}

/// `[auth]`: one key per token flag (`jwt_secret`, `jwt_public_key`,
/// `jwks_file`, `django_secret_key`, `django_salt`, `django_max_age`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuthSection {
    pub(crate) jwt_secret: Option<String>,
    pub(crate) jwt_public_key: Option<PathBuf>,
    pub(crate) jwks_file: Option<PathBuf>,
    pub(crate) django_secret_key: Option<String>,
    pub(crate) django_salt: Option<String>,
    pub(crate) django_max_age: Option<u64>,
}

/// `[gateway]`: `forward_channel`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GatewaySection {
    pub(crate) forward_channel: Option<String>,
}

/// `[history]`: `size` and `ttl` (seconds) for every group, and
/// `[[history.groups]]` rules (`pattern`, `size`, `ttl`), first match wins.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HistorySection {
    pub(crate) size: Option<usize>,
    pub(crate) ttl: Option<u64>,
    #[serde(default)]
    pub(crate) groups: Vec<HistoryGroupSection>,
}

/// One `[[history.groups]]` rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HistoryGroupSection {
    pub(crate) pattern: String,
    pub(crate) size: usize,
    pub(crate) ttl: Option<u64>,
}

/// `[layer]`: `backend` plus its `[layer.config]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LayerSection {
    /// `memory` (or Django's `channels.layers.InMemoryChannelLayer`),
    /// `channels_redis.core.RedisChannelLayer`,
    /// `channels_redis.pubsub.RedisPubSubChannelLayer`.
    pub(crate) backend: String,
    /// Django's `CONFIG` dict.
    #[serde(default)]
    pub(crate) config: LayerOptions,
}

/// `[layer.config]`: channels_redis's keyword arguments (WIRE.md §2.1).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LayerOptions {
    /// Host entries, each as channels_redis accepts them (see
    /// [`super::layer`]); kept as TOML values and checked one by one so an
    /// error can name the entry.
    pub(crate) hosts: Option<Vec<toml::Value>>,
    pub(crate) prefix: Option<String>,
    pub(crate) expiry: Option<u64>,
    pub(crate) group_expiry: Option<u64>,
    pub(crate) capacity: Option<usize>,
    pub(crate) channel_capacity: Option<CapacityRules>,
    pub(crate) symmetric_encryption_keys: Option<Vec<String>>,
    pub(crate) random_prefix_length: Option<usize>,
    pub(crate) serializer_format: Option<String>,
}

/// `channel_capacity`: pattern = capacity pairs **in file order** (the first
/// match wins, as in Django's dict). A pattern is a glob, or a regex when it
/// starts with `re:` (Django's `re.compile(...)` keys).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct CapacityRules(pub(crate) Vec<(String, usize)>);

impl<'de> Deserialize<'de> for CapacityRules {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Rules;
        impl<'de> Visitor<'de> for Rules {
            type Value = CapacityRules;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table of channel name pattern = capacity")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut rules = Vec::new();
                while let Some((pattern, capacity)) = map.next_entry::<String, usize>()? {
                    if pattern.is_empty() {
                        return Err(de::Error::custom("an empty channel_capacity pattern"));
                    }
                    rules.push((pattern, capacity));
                }
                Ok(CapacityRules(rules))
            }
        }
        deserializer.deserialize_map(Rules)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<FileConfig, String> {
        FileConfig::parse(text, Path::new("test.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn the_documented_layer_section_parses() {
        let file = parse(
            r#"
            [layer]
            backend = "channels_redis.core.RedisChannelLayer"
            [layer.config]
            hosts = ["redis://127.0.0.1:6379/0", ["10.0.0.2", 6380]]
            prefix = "asgi"
            expiry = 60
            group_expiry = 86400
            capacity = 100
            channel_capacity = { "http.request" = 200, "websocket.send*" = 20, "re:^a.+" = 5 }
            symmetric_encryption_keys = ["a secret"]
            "#,
        )
        .unwrap();
        let layer = file.layer.unwrap();
        assert_eq!(layer.backend, "channels_redis.core.RedisChannelLayer");
        assert_eq!(layer.config.hosts.unwrap().len(), 2);
        assert_eq!(
            layer.config.channel_capacity.unwrap().0,
            vec![
                ("http.request".to_owned(), 200),
                ("websocket.send*".to_owned(), 20),
                ("re:^a.+".to_owned(), 5)
            ]
        );
    }

    #[test]
    fn unknown_keys_are_named_with_the_file() {
        let error = parse("[server]\nbind = \"127.0.0.1:1\"\nmax_conections = 5\n").unwrap_err();
        assert!(error.contains("max_conections"), "{error}");
        assert!(error.contains("test.toml"), "{error}");
        let error =
            parse("[layer]\nbackend = \"memory\"\n[layer.config]\ncapasity = 1\n").unwrap_err();
        assert!(error.contains("capasity"), "{error}");
        let error = parse("[gatewy]\n").unwrap_err();
        assert!(error.contains("gatewy"), "{error}");
        let error = parse("[auth]\njwt_secrt = \"x\"\n").unwrap_err();
        assert!(error.contains("jwt_secrt"), "{error}");
        let error = parse("[gateway]\nforward = \"x\"\n").unwrap_err();
        assert!(error.contains("forward"), "{error}");
    }

    #[test]
    fn auth_and_gateway_sections_parse() {
        let file = parse(
            "[auth]\njwt_secret = \"s\"\njwks_file = \"/etc/jwks.json\"\ndjango_secret_key = \"k\"\ndjango_salt = \"channels\"\ndjango_max_age = 60\n[gateway]\nforward_channel = \"events\"\n",
        )
        .unwrap();
        assert_eq!(file.auth.jwt_secret.as_deref(), Some("s"));
        assert_eq!(file.auth.django_max_age, Some(60));
        assert_eq!(file.gateway.forward_channel.as_deref(), Some("events"));
    }

    #[test]
    fn server_section_types_are_checked() {
        let file = parse(
            "[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"::1/128\"]\nlog_format = \"json\"\n",
        )
        .unwrap();
        assert_eq!(file.server.trusted_proxies.unwrap().len(), 2);
        assert_eq!(file.server.log_format, Some(LogFormat::Json));
        assert!(parse("[server]\ntrusted_proxies = [\"nonsense\"]\n").is_err());
        assert!(parse("[server]\nshutdown_close_code = \"x\"\n").is_err());
    }
}
