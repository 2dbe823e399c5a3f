//! [`ServerError`]: what starting or running the server can fail with.

use channels_core::LayerError;

/// A startup or serving failure of the server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The configuration is inconsistent or names something unavailable.
    #[error("invalid configuration: {reason}")]
    Config {
        /// What is wrong, and how to fix it.
        reason: String,
    },

    /// The listen address could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address.
        address: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },

    /// Serving failed.
    #[error("server i/o failed: {0}")]
    Io(#[from] std::io::Error),

    /// The channel layer could not be built or reached.
    #[error(transparent)]
    Layer(#[from] LayerError),
}

impl ServerError {
    /// Builds [`ServerError::Config`].
    pub fn config(reason: impl Into<String>) -> Self {
        Self::Config {
            reason: reason.into(),
        }
    }
}
