//! [`RedisConfig`]: channels_redis's options and defaults (WIRE.md §2.1).

use std::path::PathBuf;
use std::time::Duration;

use channels_core::{CapacityPattern, LayerConfig, LayerError};

use crate::hosts::{DEFAULT_HOST_URL, RedisHost};
use crate::serializer::SerializerFormat;

/// Key prefix of every Redis key the layer writes (channels_redis: `"asgi"`).
pub const DEFAULT_PREFIX: &str = "asgi";

/// Random bytes before each stored message (channels_redis: 12).
pub const DEFAULT_RANDOM_PREFIX_LENGTH: usize = 12;

/// How long one blocking pop waits on Redis (channels_redis `brpop_timeout`: 5 s).
pub const DEFAULT_BRPOP_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a command may take before it fails with a backend error.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// How long connecting to Redis may take.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Most dedicated connections per shard for blocking pops (the core layer's
/// receive loop holds one; each plain channel being received holds one per
/// pop, at most 1 s). Python's redis-py pool is unbounded; a bound keeps a
/// burst of named-channel receivers from opening thousands of connections.
pub const DEFAULT_BLOCKING_POOL_SIZE: usize = 64;

/// Settings of a [`crate::RedisChannelLayer`], with channels_redis's defaults.
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use channels_redis::RedisConfig;
///
/// let config = RedisConfig::new()
///     .host("redis://10.0.0.1:6379/0")
///     .host("redis://10.0.0.2:6379/0")
///     .prefix("myapp")
///     .capacity(500)
///     .expiry(Duration::from_secs(30));
/// assert_eq!(config.hosts().len(), 2);
/// ```
#[derive(Debug, Clone)]
pub struct RedisConfig {
    pub(crate) hosts: Vec<RedisHost>,
    pub(crate) prefix: String,
    pub(crate) layer: LayerConfig,
    pub(crate) random_prefix_length: usize,
    pub(crate) symmetric_encryption_keys: Vec<Vec<u8>>,
    pub(crate) serializer_format: SerializerFormat,
    pub(crate) brpop_timeout: Duration,
    pub(crate) command_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) ca_file: Option<PathBuf>,
    pub(crate) blocking_pool_size: usize,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            hosts: Vec::new(),
            prefix: DEFAULT_PREFIX.to_owned(),
            layer: LayerConfig::default(),
            random_prefix_length: DEFAULT_RANDOM_PREFIX_LENGTH,
            symmetric_encryption_keys: Vec::new(),
            serializer_format: SerializerFormat::Msgpack,
            brpop_timeout: DEFAULT_BRPOP_TIMEOUT,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            ca_file: None,
            blocking_pool_size: DEFAULT_BLOCKING_POOL_SIZE,
        }
    }
}

impl RedisConfig {
    /// The defaults: `redis://localhost:6379`, prefix `asgi`, capacity 100,
    /// expiry 60 s, group expiry 86400 s, msgpack, no encryption.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a shard (host order matters: it decides the consistent hash).
    #[must_use]
    pub fn host(mut self, host: impl Into<RedisHost>) -> Self {
        self.hosts.push(host.into());
        self
    }

    /// Replaces the hosts list (empty = `redis://localhost:6379`).
    #[must_use]
    pub fn hosts_from<I: IntoIterator<Item = H>, H: Into<RedisHost>>(mut self, hosts: I) -> Self {
        self.hosts = hosts.into_iter().map(Into::into).collect();
        self
    }

    /// The hosts the layer uses, the default one if none was given.
    pub fn hosts(&self) -> Vec<RedisHost> {
        if self.hosts.is_empty() {
            vec![RedisHost::Url(DEFAULT_HOST_URL.to_owned())]
        } else {
            self.hosts.clone()
        }
    }

    /// Sets the key prefix (default `asgi`).
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Returns the key prefix.
    pub fn prefix_str(&self) -> &str {
        &self.prefix
    }

    /// Replaces capacity, expiry and group expiry with a shared [`LayerConfig`].
    #[must_use]
    pub fn layer_config(mut self, layer: LayerConfig) -> Self {
        self.layer = layer;
        self
    }

    /// Returns the shared settings.
    pub fn layer(&self) -> &LayerConfig {
        &self.layer
    }

    /// Sets the default channel capacity (default 100).
    #[must_use]
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.layer = self.layer.capacity(capacity);
        self
    }

    /// Adds a per-channel capacity (channels_redis `channel_capacity`).
    #[must_use]
    pub fn channel_capacity(mut self, pattern: CapacityPattern, capacity: usize) -> Self {
        self.layer = self.layer.channel_capacity(pattern, capacity);
        self
    }

    /// Sets the message expiry (default 60 s; Redis keeps whole seconds).
    #[must_use]
    pub fn expiry(mut self, expiry: Duration) -> Self {
        self.layer = self.layer.expiry(expiry);
        self
    }

    /// Sets the group membership expiry (default 86400 s).
    #[must_use]
    pub fn group_expiry(mut self, group_expiry: Duration) -> Self {
        self.layer = self.layer.group_expiry(group_expiry);
        self
    }

    /// Sets how many random bytes precede each stored message (default 12).
    #[must_use]
    pub fn random_prefix_length(mut self, length: usize) -> Self {
        self.random_prefix_length = length;
        self
    }

    /// Encrypts messages with Fernet keys derived from these secrets; the first
    /// encrypts, all decrypt (default: no encryption).
    #[must_use]
    pub fn symmetric_encryption_keys<I: IntoIterator<Item = K>, K: AsRef<[u8]>>(
        mut self,
        keys: I,
    ) -> Self {
        self.symmetric_encryption_keys = keys.into_iter().map(|k| k.as_ref().to_vec()).collect();
        self
    }

    /// Chooses msgpack (default) or JSON bodies.
    #[must_use]
    pub fn serializer_format(mut self, format: SerializerFormat) -> Self {
        self.serializer_format = format;
        self
    }

    /// Sets how long one blocking pop waits (default 5 s).
    #[must_use]
    pub fn brpop_timeout(mut self, timeout: Duration) -> Self {
        self.brpop_timeout = timeout;
        self
    }

    /// Sets how long a command may take (default 30 s).
    #[must_use]
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// Sets how long connecting may take (default 2 s).
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Trusts the CA certificate(s) in the PEM file `path` for the server
    /// certificates of `rediss://` hosts that name no CA file of their own
    /// ([`RedisHost::with_ca_file`]); without it they are checked against the
    /// system's CA store (channels_redis: `ssl_ca_certs`). The file is read
    /// when the layer is built.
    #[must_use]
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// Sets the most dedicated connections per shard for blocking pops
    /// (default [`DEFAULT_BLOCKING_POOL_SIZE`]). A pop that finds them all in
    /// use waits for one.
    #[must_use]
    pub fn blocking_pool_size(mut self, size: usize) -> Self {
        self.blocking_pool_size = size;
        self
    }

    /// Checks the settings that need no network.
    pub(crate) fn validate(&self) -> Result<(), LayerError> {
        if let Some(ca_file) = &self.ca_file
            && !self
                .hosts()
                .iter()
                .any(|host| matches!(host, RedisHost::Url(_)) && host.is_tls())
        {
            return Err(LayerError::invalid_config(format!(
                "the CA file {} applies to rediss:// hosts, and no host is one",
                ca_file.display()
            )));
        }
        if self.blocking_pool_size < 2 {
            // The receive loop holds one for good; plain channels need another.
            return Err(LayerError::invalid_config(
                "blocking_pool_size must be at least 2",
            ));
        }
        if self.brpop_timeout < Duration::from_millis(10) {
            return Err(LayerError::invalid_config(
                "brpop_timeout must be at least 10 ms",
            ));
        }
        #[cfg(not(feature = "encryption"))]
        if !self.symmetric_encryption_keys.is_empty() {
            return Err(LayerError::invalid_config(
                "symmetric_encryption_keys needs the `encryption` feature of channels-redis",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h5_defaults_match_channels_redis() {
        let config = RedisConfig::new();
        assert_eq!(
            config.hosts(),
            vec![RedisHost::Url("redis://localhost:6379".into())]
        );
        assert_eq!(config.prefix_str(), "asgi");
        assert_eq!(config.layer().capacities.capacity_for("x"), 100);
        assert_eq!(config.layer().expiry, Duration::from_secs(60));
        assert_eq!(config.layer().group_expiry, Duration::from_secs(86_400));
        assert_eq!(config.random_prefix_length, 12);
        assert_eq!(config.brpop_timeout, Duration::from_secs(5));
        assert_eq!(config.serializer_format, SerializerFormat::Msgpack);
    }

    #[test]
    fn hosts_keep_their_order() {
        let config = RedisConfig::new().host("redis://a:1").host(("b", 2));
        assert_eq!(
            config.hosts(),
            vec![
                RedisHost::Url("redis://a:1".into()),
                RedisHost::from(("b", 2))
            ]
        );
    }
}
