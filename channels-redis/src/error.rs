//! [`BackendError`]: what a failed Redis call becomes inside
//! `LayerError::Backend`, naming the operation and the host.

use channels_core::LayerError;

/// A Redis command or connection failed. Found as the source of
/// [`LayerError::Backend`]; the Redis client's own error is its source.
#[derive(Debug, thiserror::Error)]
#[error("redis {operation} on {host} failed: {source}")]
pub struct BackendError {
    operation: &'static str,
    host: String,
    #[source]
    source: redis::RedisError,
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
}

/// Wraps a Redis error as [`LayerError::Backend`].
pub(crate) fn backend(
    operation: &'static str,
    host: &str,
    source: redis::RedisError,
) -> LayerError {
    LayerError::backend(BackendError {
        operation,
        host: host.to_owned(),
        source,
    })
}
