//! The one error type of the load generator and the ceiling servers.

use std::fmt;

/// Everything that can stop a load run or a ceiling server before it starts its work.
#[derive(Debug)]
#[non_exhaustive]
pub enum LoadError {
    /// A `--url` is not a usable WebSocket URL.
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A `--url` points away from this machine and `--allow-remote` was not given.
    RemoteTarget {
        /// The URL as given.
        url: String,
    },
    /// An option value is out of range.
    InvalidOption {
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// No client could connect, so nothing can be measured.
    NoClients {
        /// How many connection attempts failed.
        failures: u64,
    },
    /// Reading /proc or binding a socket failed.
    Io(std::io::Error),
    /// Redis refused a connection or a command.
    Redis(redis::RedisError),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidUrl { url, problem } => write!(f, "invalid url `{url}`: {problem}"),
            Self::RemoteTarget { url } => write!(
                f,
                "url `{url}` is not a loopback address; only loopback targets are allowed here \
                 (pass --allow-remote to override)"
            ),
            Self::InvalidOption { reason } => write!(f, "invalid option: {reason}"),
            Self::NoClients { failures } => write!(
                f,
                "no client connected ({failures} attempts failed); is the server running?"
            ),
            Self::Io(_) => write!(f, "i/o error"),
            Self::Redis(_) => write!(f, "redis error"),
        }
    }
}

impl std::error::Error for LoadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io(e) => Some(e),
            Self::Redis(e) => Some(e),
            _ => None,
        }
    }
}

impl From<std::io::Error> for LoadError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

impl From<redis::RedisError> for LoadError {
    fn from(e: redis::RedisError) -> Self {
        Self::Redis(e)
    }
}
