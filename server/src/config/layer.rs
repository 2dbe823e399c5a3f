//! [`LayerSettings`]: the channel layer the server runs on, from `[layer]` of
//! the config file (Django's `CHANNEL_LAYERS["default"]`) and the `--layer`,
//! `--redis-url`, `--redis-prefix`, `--redis-ca-file` and `--channel-capacity` flags.
//!
//! Host entries take every form channels_redis accepts (WIRE.md §6), in TOML:
//!
//! | TOML | channels_redis |
//! |---|---|
//! | `"redis://h:6379/0"`, `"rediss://…"`, `"unix:///path.sock"` | the same URL |
//! | `["h", 6379]` | `("h", 6379)` |
//! | `{ address = "redis://h:6379", password = "…", username = "…", db = 1 }` | `{"address": …, **kwargs}` |
//! | `{ address = "rediss://h:6380", ssl_ca_certs = "/etc/redis/ca.pem" }` | the same dict (TLS, trusting that CA) |
//! | `{ host = "h", port = 6379, password = "…", db = 1 }` | `{"host": …, "port": …}` |
//! | `{ sentinels = [["h", 26379]], master_name = "m", sentinel_kwargs = { password = "…" }, password = "…", db = 0 }` | the same dict |

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use channels_core::presence::SharedPresence;
use channels_core::{CapacityPattern, LayerConfig, SharedLayer};
use channels_memory::{InMemoryChannelLayer, InMemoryPresence};
use channels_redis::{
    RedisChannelLayer, RedisConfig, RedisHost, RedisPresence, RedisPubSubChannelLayer,
    SentinelHost, SerializerFormat,
};

use super::LayerKind;
use super::file::{CapacityRules, LayerOptions, LayerSection};
use crate::error::ServerError;

/// The `channel_capacity` key prefix that marks a regex (Django's
/// `re.compile(...)` dict keys); other keys are globs.
pub const REGEX_PATTERN_PREFIX: &str = "re:";

/// The resolved channel layer settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LayerSettings {
    /// Which backend.
    pub kind: LayerKind,
    /// Redis shards, in order (ignored by the memory layer).
    pub hosts: Vec<RedisHost>,
    /// Redis key prefix (channels_redis `prefix`).
    pub prefix: String,
    /// Capacities, expiry and group expiry.
    pub layer: LayerConfig,
    /// Fernet secrets; the first encrypts, all decrypt. Empty: no encryption.
    pub symmetric_encryption_keys: Vec<String>,
    /// Random bytes before each stored message (channels_redis: 12).
    pub random_prefix_length: Option<usize>,
    /// msgpack (the default) or JSON bodies.
    pub serializer_format: SerializerFormat,
    /// CA file for `rediss://` hosts that name none (`--redis-ca-file`).
    pub ca_file: Option<PathBuf>,
}

impl LayerSettings {
    /// Builds the channel layer.
    ///
    /// # Errors
    /// [`ServerError::Layer`] when the layer rejects its settings.
    pub async fn build(&self) -> Result<SharedLayer, ServerError> {
        if self.kind == LayerKind::Memory {
            return Ok(Arc::new(InMemoryChannelLayer::with_config(
                with_history_capacity(self.layer.clone()),
            )));
        }
        let config = self.redis_config();
        Ok(match self.kind {
            LayerKind::RedisPubsub => Arc::new(RedisPubSubChannelLayer::new(config)?),
            _ => Arc::new(RedisChannelLayer::new(config)?),
        })
    }

    /// Builds the presence store of this layer, writing entries as `node`:
    /// in memory for the memory layer, else on the layer's Redis.
    ///
    /// # Errors
    /// [`ServerError::Layer`] when the Redis settings are rejected.
    pub fn build_presence(&self, node: &str) -> Result<SharedPresence, ServerError> {
        if self.kind == LayerKind::Memory {
            return Ok(Arc::new(InMemoryPresence::new(node)));
        }
        Ok(Arc::new(RedisPresence::new(&self.redis_config(), node)?))
    }

    /// The Redis settings both Redis layers and presence are built from.
    fn redis_config(&self) -> RedisConfig {
        let mut config = RedisConfig::new()
            .hosts_from(self.hosts.iter().cloned())
            .prefix(self.prefix.clone())
            .layer_config(with_history_capacity(self.layer.clone()))
            .serializer_format(self.serializer_format);
        if !self.symmetric_encryption_keys.is_empty() {
            config = config.symmetric_encryption_keys(&self.symmetric_encryption_keys);
        }
        if let Some(length) = self.random_prefix_length {
            config = config.random_prefix_length(length);
        }
        if let Some(ca_file) = &self.ca_file {
            config = config.ca_file(ca_file);
        }
        config
    }
}

/// Capacity of history channels (`history.<group>`) unless configured: they
/// buffer a group's messages between two moves into its log, and a copy
/// dropped there is missing from the history with no one told.
pub(crate) const HISTORY_CHANNEL_CAPACITY: usize = 10_000;

/// `config` with a capacity rule for history channels when none of its rules
/// matches them (the first matching rule wins, so a configured one stays).
fn with_history_capacity(config: LayerConfig) -> LayerConfig {
    let configured = config
        .capacities
        .rules()
        .iter()
        .any(|(pattern, _)| pattern.matches("history.x"));
    if configured {
        return config;
    }
    let capacity = HISTORY_CHANNEL_CAPACITY.max(config.capacities.default_capacity());
    match channels_core::CapacityPattern::glob("history.*") {
        Ok(pattern) => config.channel_capacity(pattern, capacity),
        Err(_) => config,
    }
}

/// The backend a `[layer] backend` names.
pub(crate) fn backend_kind(backend: &str) -> Option<LayerKind> {
    match backend {
        "memory" | "channels.layers.InMemoryChannelLayer" => Some(LayerKind::Memory),
        "redis" | "channels_redis.core.RedisChannelLayer" => Some(LayerKind::Redis),
        "redis-pubsub" | "channels_redis.pubsub.RedisPubSubChannelLayer" => {
            Some(LayerKind::RedisPubsub)
        }
        _ => None,
    }
}

/// What the file's `[layer]` says, checked (without flags applied).
#[derive(Debug, Default)]
pub(crate) struct FileLayer {
    pub(crate) kind: Option<LayerKind>,
    pub(crate) options: LayerOptions,
    pub(crate) hosts: Vec<RedisHost>,
}

/// Checks `[layer]`: a known backend, hosts that parse, no Redis-only key on
/// the memory layer. `file` names the file in errors.
pub(crate) fn check_section(section: LayerSection, file: &str) -> Result<FileLayer, ServerError> {
    let kind = backend_kind(&section.backend).ok_or_else(|| {
        ServerError::config(format!(
            "{file}: `layer.backend = \"{}\"` is not a layer; use `memory` \
             (channels.layers.InMemoryChannelLayer), `channels_redis.core.RedisChannelLayer` \
             or `channels_redis.pubsub.RedisPubSubChannelLayer`",
            section.backend
        ))
    })?;
    let options = section.config;
    if kind == LayerKind::Memory {
        let redis_only = [
            ("hosts", options.hosts.is_some()),
            ("prefix", options.prefix.is_some()),
            (
                "symmetric_encryption_keys",
                options.symmetric_encryption_keys.is_some(),
            ),
            (
                "random_prefix_length",
                options.random_prefix_length.is_some(),
            ),
            ("serializer_format", options.serializer_format.is_some()),
        ];
        if let Some((key, _)) = redis_only.iter().find(|(_, given)| *given) {
            return Err(ServerError::config(format!(
                "{file}: `layer.config.{key}` is a channels_redis option; the memory layer \
                 does not take it"
            )));
        }
    }
    let hosts = options
        .hosts
        .iter()
        .flatten()
        .enumerate()
        .map(|(index, value)| {
            parse_host(value).map_err(|reason| {
                ServerError::config(format!("{file}: `layer.config.hosts[{index}]`: {reason}"))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if options.hosts.as_ref().is_some_and(Vec::is_empty) {
        return Err(ServerError::config(format!(
            "{file}: `layer.config.hosts` is empty; give at least one host or leave it out"
        )));
    }
    Ok(FileLayer {
        kind: Some(kind),
        options,
        hosts,
    })
}

/// Turns `channel_capacity` rules into patterns.
pub(crate) fn capacity_rules(
    mut layer: LayerConfig,
    rules: &CapacityRules,
    file: &str,
) -> Result<LayerConfig, ServerError> {
    for (pattern, capacity) in &rules.0 {
        let compiled = match pattern.strip_prefix(REGEX_PATTERN_PREFIX) {
            Some(regex) => CapacityPattern::regex(regex),
            None => CapacityPattern::glob(pattern),
        }
        .map_err(|error| {
            ServerError::config(format!(
                "{file}: `layer.config.channel_capacity` key `{pattern}`: {error}"
            ))
        })?;
        layer = layer.channel_capacity(compiled, *capacity);
    }
    Ok(layer)
}

/// The serializer a `serializer_format` names.
pub(crate) fn serializer_format(name: &str, file: &str) -> Result<SerializerFormat, ServerError> {
    match name {
        "msgpack" => Ok(SerializerFormat::Msgpack),
        "json" => Ok(SerializerFormat::Json),
        other => Err(ServerError::config(format!(
            "{file}: `layer.config.serializer_format = \"{other}\"`: use `msgpack` or `json`"
        ))),
    }
}

/// Seconds from the file as a duration.
pub(crate) fn seconds(value: u64) -> Duration {
    Duration::from_secs(value)
}

/// One host entry, as channels_redis reads it.
fn parse_host(value: &toml::Value) -> Result<RedisHost, String> {
    match value {
        toml::Value::String(text) => RedisHost::parse(text).map_err(|e| e.to_string()),
        toml::Value::Array(pair) => host_port(pair),
        toml::Value::Table(table) => {
            if table.contains_key("sentinels") {
                sentinel_host(table)
            } else if table.contains_key("address") || table.contains_key("host") {
                address_host(table)
            } else {
                refuse_unknown(
                    table,
                    &[
                        "address",
                        "host",
                        "port",
                        "username",
                        "password",
                        "db",
                        "ssl_ca_certs",
                        "sentinels",
                        "master_name",
                        "sentinel_kwargs",
                    ],
                )?;
                Err("a host table needs `address`, `host` or `sentinels`".to_owned())
            }
        }
        other => Err(format!(
            "`{other}` is not a host; use a URL, [\"host\", port] or a table"
        )),
    }
}

/// `["host", port]`.
fn host_port(pair: &[toml::Value]) -> Result<RedisHost, String> {
    match pair {
        [toml::Value::String(host), toml::Value::Integer(port)] => {
            let port = u16::try_from(*port).map_err(|_| format!("port {port} is out of range"))?;
            Ok(RedisHost::from((host.as_str(), port)))
        }
        _ => Err("a host pair is [\"host\", port]".to_owned()),
    }
}

fn string_key(table: &toml::Table, key: &str) -> Result<Option<String>, String> {
    match table.get(key) {
        None => Ok(None),
        Some(toml::Value::String(text)) => Ok(Some(text.clone())),
        Some(other) => Err(format!("`{key}` must be a string, not `{other}`")),
    }
}

fn integer_key(table: &toml::Table, key: &str) -> Result<Option<i64>, String> {
    match table.get(key) {
        None => Ok(None),
        Some(toml::Value::Integer(value)) => Ok(Some(*value)),
        Some(other) => Err(format!("`{key}` must be an integer, not `{other}`")),
    }
}

fn refuse_unknown(table: &toml::Table, known: &[&str]) -> Result<(), String> {
    match table.keys().find(|key| !known.contains(&key.as_str())) {
        Some(key) => Err(format!(
            "unknown key `{key}` (this entry takes {})",
            known.join(", ")
        )),
        None => Ok(()),
    }
}

/// `{ address = URL, ... }` or `{ host = H, port = P, ... }`, with
/// `username`, `password` and `db` folded into the URL and `ssl_ca_certs`
/// (for a `rediss://` address) the CA its certificate must chain to.
fn address_host(table: &toml::Table) -> Result<RedisHost, String> {
    refuse_unknown(
        table,
        &[
            "address",
            "host",
            "port",
            "username",
            "password",
            "db",
            "ssl_ca_certs",
        ],
    )?;
    let base = match (string_key(table, "address")?, string_key(table, "host")?) {
        (Some(_), Some(_)) => return Err("give `address` or `host`, not both".to_owned()),
        (Some(address), None) => {
            if table.contains_key("port") {
                return Err("`port` goes with `host`; put it in the `address` URL".to_owned());
            }
            address
        }
        (None, Some(host)) => {
            let port = integer_key(table, "port")?.unwrap_or(6379);
            let port = u16::try_from(port).map_err(|_| format!("port {port} is out of range"))?;
            format!("redis://{host}:{port}")
        }
        (None, None) => return Err("a host table needs `address` or `host`".to_owned()),
    };
    let username = string_key(table, "username")?;
    let password = string_key(table, "password")?;
    let db = integer_key(table, "db")?;
    let url = with_credentials(&base, username.as_deref(), password.as_deref(), db)?;
    let host = RedisHost::parse(&url).map_err(|e| e.to_string())?;
    match string_key(table, "ssl_ca_certs")? {
        Some(ca_file) => host
            .with_ca_file(ca_file)
            .map_err(|_| "`ssl_ca_certs` needs a `rediss://` address".to_owned()),
        None => Ok(host),
    }
}

/// Puts credentials and a database number into a `redis://` URL.
fn with_credentials(
    url: &str,
    username: Option<&str>,
    password: Option<&str>,
    db: Option<i64>,
) -> Result<String, String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!("`{url}` is not a URL"));
    };
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut out = format!("{scheme}://");
    if username.is_some() || password.is_some() {
        if authority.contains('@') {
            return Err("credentials are both in the URL and in the entry".to_owned());
        }
        out.push_str(&percent_encode(username.unwrap_or("")));
        if let Some(password) = password {
            out.push(':');
            out.push_str(&percent_encode(password));
        }
        out.push('@');
    }
    out.push_str(authority);
    match db {
        Some(_) if !path.is_empty() => {
            Err("the database is both in the URL path and in `db`".to_owned())
        }
        Some(db) if scheme.contains("unix") => Err(format!(
            "put the database in the unix URL (`?db={db}`), not in `db`"
        )),
        Some(db) => Ok(format!("{out}/{db}")),
        None if path.is_empty() => Ok(out),
        None => Ok(format!("{out}/{path}")),
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| {
            if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
                char::from(byte).to_string()
            } else {
                format!("%{byte:02X}")
            }
        })
        .collect()
}

/// `{ sentinels = [[h, p], ...], master_name = M, sentinel_kwargs = {...}, password, db }`.
fn sentinel_host(table: &toml::Table) -> Result<RedisHost, String> {
    refuse_unknown(
        table,
        &[
            "sentinels",
            "master_name",
            "sentinel_kwargs",
            "password",
            "db",
        ],
    )?;
    let Some(toml::Value::Array(entries)) = table.get("sentinels") else {
        return Err("`sentinels` must be a list of [\"host\", port]".to_owned());
    };
    let sentinels = entries
        .iter()
        .map(|entry| match entry {
            toml::Value::Array(pair) => match host_port(pair)? {
                RedisHost::Address { host, port } => Ok((host, port)),
                _ => Err("a Sentinel is [\"host\", port]".to_owned()),
            },
            _ => Err("a Sentinel is [\"host\", port]".to_owned()),
        })
        .collect::<Result<Vec<_>, _>>()?;
    if sentinels.is_empty() {
        return Err("`sentinels` is empty".to_owned());
    }
    let master_name = string_key(table, "master_name")?
        .ok_or_else(|| "a Sentinel entry needs `master_name`".to_owned())?;
    let mut host = SentinelHost::new(sentinels, master_name);
    if let Some(value) = table.get("sentinel_kwargs") {
        let toml::Value::Table(kwargs) = value else {
            return Err("`sentinel_kwargs` must be a table".to_owned());
        };
        refuse_unknown(kwargs, &["password"]).map_err(|e| format!("`sentinel_kwargs`: {e}"))?;
        if let Some(password) = string_key(kwargs, "password")? {
            host = host.sentinel_password(password);
        }
    }
    if let Some(password) = string_key(table, "password")? {
        host = host.password(password);
    }
    if let Some(db) = integer_key(table, "db")? {
        host.db = db;
    }
    Ok(RedisHost::Sentinel(host))
}

#[cfg(test)]
mod tests {

    #[test]
    fn history_channels_get_a_large_capacity_unless_configured() {
        let plain = with_history_capacity(LayerConfig::default().capacity(100));
        assert_eq!(
            plain.capacities.capacity_for("history.chat"),
            HISTORY_CHANNEL_CAPACITY
        );
        assert_eq!(plain.capacities.capacity_for("specific.a!b"), 100);
        let configured = LayerConfig::default()
            .channel_capacity(CapacityPattern::glob("history.*").unwrap(), 50);
        let kept = with_history_capacity(configured);
        assert_eq!(kept.capacities.capacity_for("history.chat"), 50);
    }

    use super::*;

    fn host(text: &str) -> Result<RedisHost, String> {
        let value: toml::Table = toml::from_str(&format!("h = {text}")).unwrap();
        parse_host(&value["h"])
    }

    #[test]
    fn every_channels_redis_host_form() {
        assert_eq!(
            host("\"redis://a:1/0\"").unwrap(),
            RedisHost::Url("redis://a:1/0".into())
        );
        assert_eq!(host("[\"a\", 7]").unwrap(), RedisHost::from(("a", 7)));
        assert_eq!(
            host("{ address = \"redis://a:1\", password = \"p w\", db = 2 }").unwrap(),
            RedisHost::Url("redis://:p%20w@a:1/2".into())
        );
        assert_eq!(
            host("{ host = \"a\", port = 9, username = \"u\", password = \"p\" }").unwrap(),
            RedisHost::Url("redis://u:p@a:9".into())
        );
        let RedisHost::Sentinel(sentinel) = host(
            "{ sentinels = [[\"s\", 26379]], master_name = \"m\", \
             sentinel_kwargs = { password = \"sp\" }, password = \"mp\", db = 3 }",
        )
        .unwrap() else {
            panic!("not a sentinel entry")
        };
        assert_eq!(sentinel.sentinels, vec![("s".to_owned(), 26379)]);
        assert_eq!(sentinel.master_name, "m");
        assert_eq!(sentinel.sentinel_password.as_deref(), Some("sp"));
        assert_eq!(sentinel.password.as_deref(), Some("mp"));
        assert_eq!(sentinel.db, 3);
    }

    #[test]
    fn a_tls_address_takes_its_ca_file() {
        assert_eq!(
            host("{ address = \"rediss://a:6380/0\", ssl_ca_certs = \"/etc/ca.pem\" }").unwrap(),
            RedisHost::TlsUrl {
                url: "rediss://a:6380/0".into(),
                ca_file: "/etc/ca.pem".into()
            }
        );
        assert!(
            host("{ address = \"redis://a:6379\", ssl_ca_certs = \"/etc/ca.pem\" }")
                .unwrap_err()
                .contains("rediss://")
        );
        assert!(
            host("{ address = \"rediss://a\", ssl_ca_certs = 1 }")
                .unwrap_err()
                .contains("ssl_ca_certs")
        );
    }

    #[test]
    fn bad_host_entries_say_what_is_wrong() {
        assert!(
            host("{ address = \"redis://a\", ssl = true }")
                .unwrap_err()
                .contains("`ssl`")
        );
        assert!(
            host("{ sentinels = [[\"s\", 1]] }")
                .unwrap_err()
                .contains("master_name")
        );
        assert!(host("{ sentinels = [[\"s\", 1]], master_name = \"m\", sentinel_kwargs = { pasword = \"x\" } }")
            .unwrap_err()
            .contains("pasword"));
        assert!(host("[\"a\", 70000]").unwrap_err().contains("70000"));
        assert!(host("{ address = \"redis://a/1\", db = 2 }").is_err());
        assert!(host("42").is_err());
    }

    #[test]
    fn capacity_rules_keep_order_and_take_regexes() {
        let rules = CapacityRules(vec![
            ("re:^websocket\\.send!".to_owned(), 20),
            ("http.*".to_owned(), 200),
        ]);
        let layer = capacity_rules(LayerConfig::default(), &rules, "f.toml").unwrap();
        assert_eq!(layer.capacities.capacity_for("websocket.send!abc"), 20);
        assert_eq!(layer.capacities.capacity_for("http.request"), 200);
        assert_eq!(layer.capacities.capacity_for("other"), 100);
        let bad = CapacityRules(vec![("re:(".to_owned(), 1)]);
        let error = capacity_rules(LayerConfig::default(), &bad, "f.toml").unwrap_err();
        assert!(error.to_string().contains("re:("), "{error}");
    }
}
