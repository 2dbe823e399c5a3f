//! Redis host entries (channels_redis `hosts`, WIRE.md §6) and turning them
//! into connection targets.

use std::fmt;
use std::path::{Path, PathBuf};

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
    /// A `rediss://` URL whose server certificate must chain to the CA in
    /// `ca_file` (channels_redis: `{"address": "rediss://…", "ssl_ca_certs":
    /// path}`). Made by [`RedisHost::with_ca_file`].
    TlsUrl {
        /// The `rediss://` URL.
        url: String,
        /// PEM file with the CA certificate(s) to trust.
        ca_file: PathBuf,
    },
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

    /// This `rediss://` host, trusting the CA certificate(s) in the PEM file
    /// `ca_file` for its server certificate instead of the system's CA store
    /// (channels_redis: `ssl_ca_certs`).
    ///
    /// # Errors
    /// [`LayerError::InvalidConfig`] when the host is not a `rediss://` URL.
    ///
    /// # Examples
    /// ```
    /// use channels_redis::RedisHost;
    /// let host = RedisHost::parse("rediss://redis.internal:6380/0")?.with_ca_file("/etc/redis/ca.pem")?;
    /// assert_eq!(host.to_string(), "rediss://redis.internal:6380/0 (CA /etc/redis/ca.pem)");
    /// assert!(RedisHost::parse("redis://h:6379")?.with_ca_file("ca.pem").is_err());
    /// # Ok::<(), channels_core::LayerError>(())
    /// ```
    pub fn with_ca_file(self, ca_file: impl Into<PathBuf>) -> Result<Self, LayerError> {
        match self {
            Self::Url(url) | Self::TlsUrl { url, .. } if is_tls_url(&url) => Ok(Self::TlsUrl {
                url,
                ca_file: ca_file.into(),
            }),
            other => Err(LayerError::invalid_config(format!(
                "a CA file applies to rediss:// hosts only; `{other}` is not one"
            ))),
        }
    }

    /// Whether this host is reached over TLS (`rediss://`).
    pub fn is_tls(&self) -> bool {
        match self {
            Self::Url(url) | Self::TlsUrl { url, .. } => is_tls_url(url),
            Self::Address { .. } | Self::Sentinel(_) => false,
        }
    }

    /// Opens the redis client for a direct (non-Sentinel) host; a `rediss://`
    /// host trusts its own CA file, else `default_ca`, else the system's
    /// CA store.
    pub(crate) fn client(
        &self,
        default_ca: Option<&Path>,
    ) -> Result<Option<redis::Client>, LayerError> {
        let bad = |e: redis::RedisError| {
            LayerError::invalid_config(format!("bad Redis host {self}: {e}"))
        };
        match self {
            Self::Url(url) if is_tls_url(url) => match default_ca {
                Some(ca_file) => tls_client(url, ca_file).map(Some),
                None => redis::Client::open(url.as_str()).map(Some).map_err(bad),
            },
            Self::Url(url) => redis::Client::open(url.as_str()).map(Some).map_err(bad),
            Self::TlsUrl { url, ca_file } => tls_client(url, ca_file).map(Some),
            Self::Address { host, port } => redis::Client::open((host.as_str(), *port))
                .map(Some)
                .map_err(bad),
            Self::Sentinel(_) => Ok(None),
        }
    }
}

fn is_tls_url(url: &str) -> bool {
    url.trim_start().starts_with("rediss://")
}

/// A client for `url` that trusts the CA certificates in `ca_file` (read now,
/// so a missing or empty file is a config error, not a failure per connect).
fn tls_client(url: &str, ca_file: &Path) -> Result<redis::Client, LayerError> {
    let shown = RedisHost::Url(url.to_owned());
    let pem = std::fs::read(ca_file).map_err(|e| {
        LayerError::invalid_config(format!(
            "cannot read the CA file {} of {shown}: {e}",
            ca_file.display()
        ))
    })?;
    if !pem
        .windows(CERTIFICATE_PEM_TAG.len())
        .any(|window| window == CERTIFICATE_PEM_TAG)
    {
        return Err(LayerError::invalid_config(format!(
            "the CA file {} of {shown} holds no PEM certificate (`-----BEGIN CERTIFICATE-----`)",
            ca_file.display()
        )));
    }
    install_crypto_provider();
    let certificates = redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(pem),
    };
    redis::Client::build_with_tls(url, certificates).map_err(|e| {
        LayerError::invalid_config(format!(
            "bad Redis host {shown} with CA file {}: {e}",
            ca_file.display()
        ))
    })
}

/// What starts each certificate in a PEM file.
const CERTIFICATE_PEM_TAG: &[u8] = b"-----BEGIN CERTIFICATE-----";

/// Makes ring the process's rustls crypto provider unless one is installed:
/// with both of rustls's providers compiled in (another crate may turn on
/// aws-lc-rs), rustls refuses to pick one and the first TLS connect panics.
pub(crate) fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Err: another thread installed one first; that one is used.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

impl fmt::Display for RedisHost {
    /// Shows the host without any password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Url(url) => write_url(f, url),
            Self::Address { host, port } => write!(f, "{host}:{port}"),
            Self::TlsUrl { url, ca_file } => {
                write_url(f, url)?;
                write!(f, " (CA {})", ca_file.display())
            }
            Self::Sentinel(s) => write!(
                f,
                "sentinel master `{}` via {:?}",
                s.master_name, s.sentinels
            ),
        }
    }
}

/// Writes `url` with any credentials masked.
fn write_url(f: &mut fmt::Formatter<'_>, url: &str) -> fmt::Result {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            write!(f, "{}://***{}", &url[..scheme], &url[at..])
        }
        _ => f.write_str(url),
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
