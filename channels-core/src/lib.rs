//! # channels-core
//!
//! The contract of rust-channels, a real-time channels layer in the spirit of
//! Django Channels: [`Message`], the name rules, [`LayerError`], the
//! [`ChannelLayer`] trait every backend implements, shared configuration
//! ([`LayerConfig`], [`ChannelCapacities`]) and, behind the `conformance`
//! feature, the conformance suite every backend must pass.
//!
//! This crate has no networking dependency; backends (`channels-memory`,
//! `channels-redis`) and the server build on it.
//!
//! ```
//! use channels_core::{validate_channel_name, validate_group_name, Message};
//!
//! validate_group_name("chat.lobby")?;
//! validate_channel_name("specific.abc!def")?;
//! assert!(validate_group_name("specific.abc!def").is_err());
//!
//! let message = Message::new("chat.message").with("text", "hello");
//! message.validate()?;
//! # Ok::<(), channels_core::LayerError>(())
//! ```

mod backoff;
mod blocking;
mod capacity;
mod config;
pub mod consumer;
mod error;
mod history;
mod layer;
mod log_limit;
mod mailbox;
mod message;
mod names;
pub mod presence;
mod receiver;
pub mod sync;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use backoff::Backoff;
pub use blocking::BlockingLayer;
pub use capacity::{CapacityPattern, ChannelCapacities, PatternKind};
pub use config::{
    DEFAULT_CAPACITY, DEFAULT_EXPIRY, DEFAULT_EXTENSIONS, DEFAULT_GROUP_EXPIRY,
    DEFAULT_NEW_CHANNEL_PREFIX, LayerConfig,
};
pub use error::{BoxError, CHANNEL_NAME_RULE, GROUP_NAME_RULE, LayerError, NameProblem};
pub use history::{
    HISTORY_CHANNEL_PREFIX, HistoryLimits, HistorySnapshot, HistoryStore, history_channel,
};
pub use layer::{ChannelLayer, LayerStats, SharedLayer};
pub use log_limit::LogLimiter;
pub use mailbox::{DropCounters, Mailbox, Offered, OutageError};
pub use message::{Message, RESERVED_CHANNEL_KEY, TYPE_KEY, Value};
pub use names::{
    LOCAL_PART_LENGTH, LOCAL_SEPARATOR, MAX_NAME_LENGTH, is_process_local, non_local_name,
    random_local_part, validate_channel_name, validate_group_name,
};
pub use receiver::{LocalSendError, LocalSender, Receiver, Release};
pub use sync::lock;

/// Re-exported so implementors use the same `async_trait` as the trait.
pub use async_trait::async_trait;
