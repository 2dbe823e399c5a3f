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

    /// The config file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    ConfigRead {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },

    /// The config file is not valid TOML or has a key or value the server
    /// does not know (the message names it, with its line).
    #[error("config file {}: {source}", path.display())]
    ConfigFile {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong, and where.
        #[source]
        source: Box<toml::de::Error>,
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
