//! [`LayerError`]: the one error type every channel layer returns.

use std::fmt;

/// A boxed error from a backend (Redis, a socket, ...), kept as the `source` of
/// [`LayerError::Backend`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything a channel layer operation can fail with.
///
/// The variants carry the values involved so the message can say what was wrong
/// and, where it can, how to fix it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LayerError {
    /// `send` found the channel holding `capacity` messages already. The message
    /// was not queued; retrying later may succeed.
    #[error("channel `{channel}` is full (capacity {capacity}); raise its capacity or read faster")]
    ChannelFull {
        /// The channel that was full.
        channel: String,
        /// Its configured capacity.
        capacity: usize,
    },

    /// A channel name does not follow the naming rules.
    #[error("invalid channel name `{name}`: {problem}; {CHANNEL_NAME_RULE}")]
    InvalidChannelName {
        /// The rejected name.
        name: String,
        /// What is wrong with it.
        problem: NameProblem,
    },

    /// A group name does not follow the naming rules.
    #[error("invalid group name `{name}`: {problem}; {GROUP_NAME_RULE}")]
    InvalidGroupName {
        /// The rejected name.
        name: String,
        /// What is wrong with it.
        problem: NameProblem,
    },

    /// A message is not a map with a string `type`, holds the reserved
    /// `__asgi_channel__` key, or cannot be encoded or decoded.
    #[error("invalid message: {reason}")]
    InvalidMessage {
        /// What is wrong with the message.
        reason: String,
    },

    /// The layer's configuration is inconsistent (a bad capacity pattern, no
    /// hosts, an expiry the backend cannot represent, ...).
    #[error("invalid layer configuration: {reason}")]
    InvalidConfig {
        /// What is wrong with the configuration.
        reason: String,
    },

    /// This layer cannot do the operation (for example `group_add` of a channel
    /// the pub/sub layer does not own).
    #[error("{operation} is not supported here: {reason}")]
    Unsupported {
        /// The operation that was refused.
        operation: &'static str,
        /// Why it cannot be done.
        reason: String,
    },

    /// The backend failed (Redis unreachable, a command error, a broken
    /// connection). The operation may or may not have taken effect.
    #[error("channel layer backend failed: {0}")]
    Backend(#[source] BoxError),

    /// The layer (or the part of it this call needs) was shut down.
    #[error("the channel layer is closed")]
    Closed,

    /// A blocking call was made from inside an async runtime, where it would
    /// stall or deadlock the runtime. Use the async method there instead.
    #[error(
        "blocking channel layer call made from inside an async runtime; await the async method instead"
    )]
    BlockingInRuntime,
}

impl LayerError {
    /// Wraps any backend error as [`LayerError::Backend`].
    pub fn backend(error: impl Into<BoxError>) -> Self {
        Self::Backend(error.into())
    }

    /// Builds [`LayerError::InvalidMessage`] from a reason.
    pub fn invalid_message(reason: impl Into<String>) -> Self {
        Self::InvalidMessage {
            reason: reason.into(),
        }
    }

    /// Builds [`LayerError::InvalidConfig`] from a reason.
    pub fn invalid_config(reason: impl Into<String>) -> Self {
        Self::InvalidConfig {
            reason: reason.into(),
        }
    }
}

/// The rule quoted in channel name errors (Django Channels' wording, extended).
pub const CHANNEL_NAME_RULE: &str = "channel names must be valid unicode strings with length < 100 \
containing only ASCII alphanumerics, hyphens, underscores, or periods, optionally followed by one `!` \
and a local part of word characters, hyphens, underscores or periods";

/// The rule quoted in group name errors (Django Channels' wording).
pub const GROUP_NAME_RULE: &str = "group names must be valid unicode strings with length < 100 \
containing only ASCII alphanumerics, hyphens, underscores, or periods";

/// What is wrong with a channel or group name.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NameProblem {
    /// The name is empty.
    Empty,
    /// The name has `length` characters; the limit is fewer than 100.
    TooLong {
        /// The name's length in characters.
        length: usize,
    },
    /// The character at `position` (counted in characters) is not allowed there.
    InvalidCharacter {
        /// The offending character.
        character: char,
        /// Its position in the name, from 0.
        position: usize,
    },
    /// A `!` appears where it is not allowed (in a group name, a second `!`, or
    /// nothing before it).
    MisplacedBang,
    /// The channel belongs to another layer instance (its process-local prefix
    /// is not this layer's), so this layer cannot receive from it.
    ForeignProcessLocal,
}

impl fmt::Display for NameProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("it is empty"),
            Self::TooLong { length } => write!(f, "it is {length} characters long"),
            Self::InvalidCharacter {
                character,
                position,
            } => write!(f, "character {character:?} at position {position} is not allowed"),
            Self::MisplacedBang => f.write_str("`!` is not allowed there"),
            Self::ForeignProcessLocal => f.write_str(
                "it is a process-local channel of another layer instance, so it cannot be received here",
            ),
        }
    }
}
