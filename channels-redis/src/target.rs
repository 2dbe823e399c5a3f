//! [`Target`]: where a shard's server is, fixed or found through Sentinel,
//! and how to reach it (plain TCP, TLS with a given CA, a unix socket).

use std::path::Path;
use std::time::Duration;

use channels_core::LayerError;
use redis::Client;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use tokio::time::timeout;

use crate::hosts::{RedisHost, SentinelHost};

/// How a shard finds its server.
pub(crate) enum Target {
    /// A fixed address.
    Direct(Client),
    /// The current master of a Sentinel-monitored group, asked for on every
    /// (re)connect so a failover is followed.
    Sentinel(tokio::sync::Mutex<SentinelClient>),
}

impl Target {
    /// The target of a configured host; `default_ca` is the CA file for
    /// `rediss://` hosts that name none of their own.
    pub(crate) fn new(host: &RedisHost, default_ca: Option<&Path>) -> Result<Self, LayerError> {
        if let RedisHost::Sentinel(sentinel) = host {
            return sentinel_client(sentinel)
                .map(|client| Self::Sentinel(tokio::sync::Mutex::new(client)))
                .map_err(|error| {
                    LayerError::invalid_config(format!("bad Sentinel entry {host}: {error}"))
                });
        }
        host.client(default_ca)?
            .map(Self::Direct)
            .ok_or_else(|| LayerError::invalid_config(format!("bad Redis host {host}")))
    }
}

/// How a host is shown in messages: without passwords, with the CA file a
/// `rediss://` host trusts (so a rejected certificate names the CA tried).
pub(crate) fn label(host: &RedisHost, default_ca: Option<&Path>) -> String {
    match (host, default_ca) {
        (RedisHost::Url(_), Some(ca_file)) if host.is_tls() => {
            format!("{host} (CA {})", ca_file.display())
        }
        _ => host.to_string(),
    }
}

/// A Sentinel client for `host` (passwords for the Sentinels and the master).
fn sentinel_client(host: &SentinelHost) -> Result<SentinelClient, redis::RedisError> {
    let sentinels = host
        .sentinels
        .iter()
        .map(|(name, port)| redis::ConnectionAddr::Tcp(name.clone(), *port));
    let mut builder =
        SentinelClientBuilder::new(sentinels, &host.master_name, SentinelServerType::Master)?
            .set_client_to_redis_db(host.db);
    if let Some(password) = &host.sentinel_password {
        builder = builder.set_client_to_sentinel_password(password);
    }
    if let Some(password) = &host.password {
        builder = builder.set_client_to_redis_password(password);
    }
    builder.build()
}

impl Target {
    /// Whether the address comes from Sentinel (and may move on failover).
    pub(crate) fn is_sentinel(&self) -> bool {
        matches!(self, Self::Sentinel(_))
    }

    /// A client for the server: the fixed one, or the master Sentinel names
    /// now (asking at most `wait`).
    pub(crate) async fn client(&self, wait: Duration) -> Result<Client, redis::RedisError> {
        match self {
            Self::Direct(client) => Ok(client.clone()),
            Self::Sentinel(sentinel) => {
                let mut sentinel = sentinel.lock().await;
                match timeout(wait, sentinel.async_get_client()).await {
                    Ok(result) => result,
                    Err(_) => Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("asking Sentinel for the master timed out after {wait:?}"),
                    )
                    .into()),
                }
            }
        }
    }
}
