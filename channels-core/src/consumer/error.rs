//! [`ConsumerError`]: what a consumer method can fail with.

use crate::error::{BoxError, LayerError};

/// An error from a consumer, its context, or a worker. Returned from a
/// consumer method, it is logged and closes the connection with 1011.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConsumerError {
    /// A channel-layer operation failed.
    #[error(transparent)]
    Layer(#[from] LayerError),

    /// A value could not be encoded to or decoded from JSON.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),

    /// A message arrived whose type the consumer does not handle (Django's
    /// "No handler for message type").
    #[error("no handler for message type `{message_type}`")]
    NoHandler {
        /// The unhandled type.
        message_type: String,
    },

    /// The client's outbound queue is full (it does not read fast enough);
    /// the connection is being closed with 1013 and the frame was dropped.
    #[error(
        "the client's outbound queue is full (capacity {capacity}); the connection is closed with 1013"
    )]
    SlowClient {
        /// The queue's capacity.
        capacity: usize,
    },

    /// The connection is closed or closing; nothing more can be sent on it.
    #[error("the connection is closed")]
    Closed,

    /// Any other error from the consumer's own code.
    #[error(transparent)]
    Other(BoxError),
}

impl ConsumerError {
    /// Wraps any error as [`ConsumerError::Other`].
    pub fn other(error: impl Into<BoxError>) -> Self {
        Self::Other(error.into())
    }
}
