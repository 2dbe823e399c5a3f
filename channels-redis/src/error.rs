//! [`BackendError`]: what a failed Redis call becomes inside
//! `LayerError::Backend`, naming the operation and the host.

use channels_core::{BoxError, LayerError};

/// What a rejected server certificate adds to an error message: the fix.
const CERTIFICATE_HINT: &str = "; the server's TLS certificate was not accepted: \
     trust the CA that signed it with `ssl_ca_certs` (RedisConfig::ca_file, --redis-ca-file)";

/// A Redis command or connection failed. Found as the source of
/// [`LayerError::Backend`]; the Redis client's own error (or the pool's) is
/// its source.
#[derive(Debug, thiserror::Error)]
#[error("redis {operation} on {host} failed: {source}{hint}")]
pub struct BackendError {
    operation: &'static str,
    host: String,
    /// [`CERTIFICATE_HINT`] or empty.
    hint: &'static str,
    #[source]
    source: BoxError,
}

impl BackendError {
    /// The layer operation that failed (`send`, `receive`, `group_send`, ...).
    pub fn operation(&self) -> &'static str {
        self.operation
    }

    /// The host it failed on (without password).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Whether the TLS handshake failed because the server's certificate
    /// was not trusted (an unknown CA, a wrong name, an expired
    /// certificate): a configuration problem, not an outage.
    pub fn is_certificate_rejected(&self) -> bool {
        !self.hint.is_empty()
    }
}

/// Wraps a Redis (or pool) error as [`LayerError::Backend`].
pub(crate) fn backend(
    operation: &'static str,
    host: &str,
    source: impl Into<BoxError>,
) -> LayerError {
    let source = source.into();
    let hint = if is_certificate_error(&*source) {
        CERTIFICATE_HINT
    } else {
        ""
    };
    LayerError::backend(BackendError {
        operation,
        host: host.to_owned(),
        hint,
        source,
    })
}

/// The fix to add to a message about `error`, if it is a rejected server
/// certificate ("" otherwise).
pub(crate) fn certificate_hint(error: &(dyn std::error::Error + 'static)) -> &'static str {
    if is_certificate_error(error) {
        CERTIFICATE_HINT
    } else {
        ""
    }
}

/// Whether `error` (or anything it wraps) is rustls refusing the server's
/// certificate. Checked by type. Two wrappers hide what they wrap from
/// `source()`, which skips to the inner error's own source: `io::Error`
/// (opened with `get_ref`) and the `Arc<dyn Error>` redis keeps I/O errors in
/// (the `source()` of a `RedisError`).
fn is_certificate_error(error: &(dyn std::error::Error + 'static)) -> bool {
    type Shared = std::sync::Arc<dyn std::error::Error + Send + Sync>;
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(tls) = error.downcast_ref::<rustls::Error>() {
            return matches!(
                tls,
                rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented
            );
        }
        let inner: Option<&(dyn std::error::Error + 'static)> =
            if let Some(io) = error.downcast_ref::<std::io::Error>() {
                io.get_ref().map(|inner| inner as _)
            } else {
                error.downcast_ref::<Shared>().map(|shared| &**shared as _)
            };
        if let Some(inner) = inner
            && is_certificate_error(inner)
        {
            return true;
        }
        next = error.source();
    }
    false
}

/// A `group_send` gave up waiting for this instance's group memberships to be
/// written again after a Redis outage: the message was not sent (rather than
/// sent into a group whose members here are missing). Found as the source of
/// [`LayerError::Backend`]; retry shortly.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error(
    "group memberships of this instance are still being restored after a redis outage; the message was not sent"
)]
pub struct RestoringMemberships;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rejected_certificate_is_found_inside_io_and_redis_errors() {
        let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, tls);
        let redis = redis::RedisError::from(io);
        let LayerError::Backend(error) = backend("send", "rediss://h:1", redis) else {
            panic!("not a backend error");
        };
        let error = error
            .downcast_ref::<BackendError>()
            .expect("a BackendError");
        assert!(error.is_certificate_rejected());
        assert!(error.to_string().contains("TLS certificate"), "{error}");

        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let LayerError::Backend(error) = backend("send", "h", redis::RedisError::from(refused))
        else {
            panic!("not a backend error");
        };
        assert!(
            !error
                .downcast_ref::<BackendError>()
                .expect("a BackendError")
                .is_certificate_rejected()
        );
    }
}
