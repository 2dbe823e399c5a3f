//! Redis host entries (channels_redis `hosts`, WIRE.md §6) and turning them
//! into connection targets.

use std::fmt;

use channels_core::LayerError;

/// The host used when none is configured (channels_redis' default).
pub const DEFAULT_HOST_URL: &str = "redis://localhost:6379";

/// One shard: a Redis server given by URL or address, or a Sentinel-managed master.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RedisHost {
    /// `redis://[user:pass@]host:port/db`, `rediss://…` or `unix:///path.sock`.
    Url(String),
    /// A host name and port (`("localhost", 6379)` in Python).
    Address {
        /// Host name or IP address.
        host: String,
        /// TCP port.
        port: u16,
    },
    /// A master found through Redis Sentinel.
    Sentinel(SentinelHost),
}

/// A Sentinel-managed master (`{"sentinels": [...], "master_name": ...}`).
#[derive(Clone, PartialEq, Eq)]
pub struct SentinelHost {
    /// Sentinel addresses, tried in order.
    pub sentinels: Vec<(String, u16)>,
    /// The monitored master's name.
    pub master_name: String,
    /// Password for the Sentinels themselves (`sentinel_kwargs={"password": ...}`).
    pub sentinel_password: Option<String>,
    /// Password for the master (`password=` in the entry's other keys).
    pub password: Option<String>,
    /// Database number on the master.
    pub db: i64,
}

impl SentinelHost {
    /// A Sentinel entry with no passwords, database 0.
    pub fn new(sentinels: Vec<(String, u16)>, master_name: impl Into<String>) -> Self {
        Self {
            sentinels,
            master_name: master_name.into(),
            sentinel_password: None,
            password: None,
            db: 0,
        }
    }

    /// Sets the password the Sentinels require.
    #[must_use]
    pub fn sentinel_password(mut self, password: impl Into<String>) -> Self {
        self.sentinel_password = Some(password.into());
        self
    }

    /// Sets the master's password.
    #[must_use]
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }
}

impl RedisHost {
    /// Parses one host entry given as text: a `redis://`, `rediss://` or
    /// `unix://` URL, or `host:port`.
    ///
    /// # Errors
    /// [`LayerError::InvalidConfig`] for anything else.
    pub fn parse(text: &str) -> Result<Self, LayerError> {
        let text = text.trim();
        if ["redis://", "rediss://", "unix://", "redis+unix://"]
            .iter()
            .any(|scheme| text.starts_with(scheme))
        {
            return Ok(Self::Url(text.to_owned()));
        }
        if let Some((host, port)) = text.rsplit_once(':')
            && let Ok(port) = port.parse::<u16>()
            && !host.is_empty()
            && !host.contains('/')
        {
            return Ok(Self::Address {
                host: host.to_owned(),
                port,
            });
        }
        Err(LayerError::invalid_config(format!(
            "`{text}` is not a Redis host; use redis://host:port/db, rediss://…, unix:///path or host:port"
        )))
    }

    /// Opens the redis client for a direct (non-Sentinel) host.
    pub(crate) fn client(&self) -> Result<Option<redis::Client>, LayerError> {
        let result = match self {
            Self::Url(url) => redis::Client::open(url.as_str()),
            Self::Address { host, port } => redis::Client::open((host.as_str(), *port)),
            Self::Sentinel(_) => return Ok(None),
        };
        result
            .map(Some)
            .map_err(|e| LayerError::invalid_config(format!("bad Redis host {self}: {e}")))
    }
}

impl fmt::Display for RedisHost {
    /// Shows the host without any password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Url(url) => match (url.find("://"), url.rfind('@')) {
                (Some(scheme), Some(at)) if at > scheme => {
                    write!(f, "{}://***{}", &url[..scheme], &url[at..])
                }
                _ => f.write_str(url),
            },
            Self::Address { host, port } => write!(f, "{host}:{port}"),
            Self::Sentinel(s) => write!(
                f,
                "sentinel master `{}` via {:?}",
                s.master_name, s.sentinels
            ),
        }
    }
}

impl fmt::Debug for RedisHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisHost({self})")
    }
}

impl fmt::Debug for SentinelHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SentinelHost")
            .field("sentinels", &self.sentinels)
            .field("master_name", &self.master_name)
            .field("db", &self.db)
            .finish_non_exhaustive()
    }
}

impl From<&str> for RedisHost {
    /// Treats the text as a URL; invalid URLs are reported when the layer is built.
    fn from(url: &str) -> Self {
        Self::Url(url.to_owned())
    }
}

impl From<String> for RedisHost {
    fn from(url: String) -> Self {
        Self::Url(url)
    }
}

impl From<(&str, u16)> for RedisHost {
    fn from((host, port): (&str, u16)) -> Self {
        Self::Address {
            host: host.to_owned(),
            port,
        }
    }
}

impl From<SentinelHost> for RedisHost {
    fn from(host: SentinelHost) -> Self {
        Self::Sentinel(host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h5_parse_accepts_urls_and_addresses() {
        assert_eq!(
            RedisHost::parse("redis://localhost:6379/1").unwrap(),
            RedisHost::Url("redis://localhost:6379/1".into())
        );
        assert!(matches!(
            RedisHost::parse("unix:///tmp/r.sock"),
            Ok(RedisHost::Url(_))
        ));
        assert_eq!(
            RedisHost::parse("10.0.0.1:7000").unwrap(),
            RedisHost::from(("10.0.0.1", 7000))
        );
        assert!(RedisHost::parse("localhost").is_err());
        assert!(RedisHost::parse("http://x:1").is_err());
        assert!(RedisHost::parse("host:notaport").is_err());
    }

    #[test]
    fn display_hides_passwords() {
        let host = RedisHost::from("redis://user:hunter2@h:1/0");
        assert_eq!(host.to_string(), "redis://***@h:1/0");
        assert!(!format!("{host:?}").contains("hunter2"));
    }
}
