//! [`ShardError`]: a Redis failure on one shard, with what was being done.
//! It is only ever seen as the source of `LayerError::Backend`.

use channels_core::{BoxError, LayerError};

use crate::error::certificate_hint;

/// What failed, on which host, and why.
#[derive(Debug, thiserror::Error)]
#[error("pub/sub {operation} on Redis {host} failed: {source}{hint}")]
pub(super) struct ShardError {
    /// The operation (`PUBLISH to \`x\``, `connect`, ...).
    pub(super) operation: String,
    /// The host, without any password.
    pub(super) host: String,
    /// The fix when the cause is a rejected TLS certificate, else empty.
    pub(super) hint: &'static str,
    /// The cause.
    #[source]
    pub(super) source: BoxError,
}

impl ShardError {
    /// Wraps `source` as [`LayerError::Backend`].
    pub(super) fn backend(
        operation: impl Into<String>,
        host: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> LayerError {
        let source = source.into();
        LayerError::backend(Self {
            operation: operation.into(),
            host: host.into(),
            hint: certificate_hint(&*source),
            source,
        })
    }
}
