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

/// A `group_send` gave up waiting for this instance's group memberships to be
/// written again after a Redis outage: the message was not sent (rather than
/// sent into a group whose members here are missing). Found as the source of
/// [`LayerError::Backend`]; retry shortly.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error(
    "group memberships of this instance are still being restored after a redis outage; the message was not sent"
)]
pub struct RestoringMemberships;
