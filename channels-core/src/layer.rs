//! The [`ChannelLayer`] trait: the Django Channels layer contract.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;

use crate::config::DEFAULT_EXTENSIONS;
use crate::error::LayerError;
use crate::message::Message;

/// Counters a layer keeps about messages it could not deliver.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LayerStats {
    /// Messages dropped because their channel (or a local buffer) was full.
    pub dropped_full: u64,
    /// Messages dropped because they expired before anyone read them.
    pub dropped_expired: u64,
    /// Messages received that could not be decoded (corrupt, or encrypted
    /// with an unknown key).
    pub undecodable: u64,
}

/// A channel layer: named mailboxes (channels) and named sets of channels
/// (groups), shared by every consumer of a process or, with a networked
/// backend, of many processes.
///
/// Every method validates its names ([`crate::validate_channel_name`],
/// [`crate::validate_group_name`]) and, for sends, the message
/// ([`Message::validate`]) before it has any effect. Layers are used as
/// `Arc<dyn ChannelLayer>`, so the backend can be chosen at run time.
///
/// # Examples
/// ```ignore
/// let channel = layer.new_channel("specific").await?;
/// layer.group_add("chat", &channel).await?;
/// layer.group_send("chat", Message::new("chat.message").with("text", "hi")).await?;
/// let message = layer.receive(&channel).await?;
/// ```
#[async_trait]
pub trait ChannelLayer: Send + Sync + Debug + 'static {
    /// Queues `message` on `channel`. Messages sent to one channel are received
    /// in the order they were sent.
    ///
    /// # Errors
    /// [`LayerError::ChannelFull`] when the channel is at capacity (nothing is
    /// queued), [`LayerError::InvalidChannelName`], [`LayerError::InvalidMessage`],
    /// [`LayerError::Backend`].
    async fn send(&self, channel: &str, message: Message) -> Result<(), LayerError>;

    /// Waits for the next message on `channel` and returns it.
    ///
    /// Cancel-safe: dropping the future before it completes loses no message;
    /// the message it would have returned goes to the next `receive`.
    ///
    /// # Errors
    /// [`LayerError::InvalidChannelName`], [`LayerError::Backend`],
    /// [`LayerError::Closed`].
    async fn receive(&self, channel: &str) -> Result<Message, LayerError>;

    /// Creates a new, unique process-local channel name that starts with
    /// `prefix` (use [`crate::DEFAULT_NEW_CHANNEL_PREFIX`] when you have none).
    ///
    /// # Errors
    /// [`LayerError::InvalidChannelName`] when the prefix would make an invalid
    /// name (bad characters, or 100 characters or more in all).
    async fn new_channel(&self, prefix: &str) -> Result<String, LayerError>;

    /// Adds `channel` to `group` (or renews its membership).
    ///
    /// # Errors
    /// [`LayerError::InvalidGroupName`], [`LayerError::InvalidChannelName`],
    /// [`LayerError::Backend`].
    async fn group_add(&self, group: &str, channel: &str) -> Result<(), LayerError>;

    /// Removes `channel` from `group`; removing a non-member is not an error.
    ///
    /// # Errors
    /// [`LayerError::InvalidGroupName`], [`LayerError::InvalidChannelName`],
    /// [`LayerError::Backend`].
    async fn group_discard(&self, group: &str, channel: &str) -> Result<(), LayerError>;

    /// Sends `message` to every channel in `group`. Members that are full are
    /// skipped (and logged); that is not an error.
    ///
    /// # Errors
    /// [`LayerError::InvalidGroupName`], [`LayerError::InvalidMessage`],
    /// [`LayerError::Backend`].
    async fn group_send(&self, group: &str, message: Message) -> Result<(), LayerError>;

    /// Deletes every message and group of this layer (for tests and resets).
    ///
    /// # Errors
    /// [`LayerError::Backend`].
    async fn flush(&self) -> Result<(), LayerError>;

    /// Releases the layer's connections and background tasks. Calling it twice
    /// is fine; a networked layer reconnects if used again afterwards.
    ///
    /// # Errors
    /// [`LayerError::Backend`].
    async fn close(&self) -> Result<(), LayerError>;

    /// Tells the layer that nobody will receive from `channel` again (its
    /// connection ended), so it can free what it keeps for it: buffered
    /// messages, a pub/sub subscription. Messages sent to it later are
    /// dropped or expire as for any unread channel. Not in Django's API; the
    /// consumer runtime calls it when a connection ends. The default does
    /// nothing.
    ///
    /// # Errors
    /// [`LayerError::InvalidChannelName`], [`LayerError::Backend`].
    async fn release_channel(&self, channel: &str) -> Result<(), LayerError> {
        crate::names::validate_channel_name(channel)
    }

    /// The optional features this layer supports (Django's `extensions`).
    fn extensions(&self) -> &[&'static str] {
        DEFAULT_EXTENSIONS
    }

    /// Counters of messages this layer could not deliver, for metrics. The
    /// default reports zeros (a layer that counts nothing).
    fn stats(&self) -> LayerStats {
        LayerStats::default()
    }
}

/// A layer shared by many tasks: what the server and consumers hold.
pub type SharedLayer = Arc<dyn ChannelLayer>;
