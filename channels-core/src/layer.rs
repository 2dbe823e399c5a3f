//! The [`ChannelLayer`] trait: the Django Channels layer contract.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;

use crate::config::DEFAULT_EXTENSIONS;
use crate::error::LayerError;
use crate::history::HistoryStore;
use crate::mailbox::DropCounters;
use crate::message::Message;
use crate::receiver::Receiver;

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

    /// Opens a receiving handle on `channel`: the way a long-lived reader
    /// (a connection, a worker) receives. The handle reads the channel's own
    /// mailbox, with no name lookup or layer-wide lock per message. Several
    /// handles (and `receive` calls) on one channel share its messages.
    /// Dropping the last handle releases the channel: what the layer buffered
    /// for it is dropped, a pub/sub subscription is ended; later messages
    /// queue (or are lost, on pub/sub) as for any unread channel.
    ///
    /// # Errors
    /// [`LayerError::InvalidChannelName`]; [`LayerError::Backend`] when a
    /// subscription cannot be made; the Redis core layer refuses another
    /// instance's process-local channel.
    async fn open(&self, channel: &str) -> Result<Receiver, LayerError>;

    /// Creates a new process-local channel ([`ChannelLayer::new_channel`])
    /// and opens a handle on it ([`ChannelLayer::open`]).
    ///
    /// # Errors
    /// As `new_channel` and `open`.
    async fn new_receiver(&self, prefix: &str) -> Result<Receiver, LayerError> {
        let channel = self.new_channel(prefix).await?;
        self.open(&channel).await
    }

    /// A short name of the backend, as the server's `--layer` flag spells it
    /// (`memory`, `redis`, `redis-pubsub`), for `/api/info` and logs.
    fn name(&self) -> &'static str {
        "custom"
    }

    /// What the layer holds and what it could not deliver, for metrics.
    fn stats(&self) -> LayerStats {
        LayerStats::default()
    }

    /// The layer's store of group histories ([`HistoryStore`]), when the
    /// backend can keep them (memory and the Redis core layer; not pub/sub,
    /// which stores nothing). Each call returns a handle on the same store.
    fn history(&self) -> Option<Arc<dyn HistoryStore>> {
        None
    }

    /// The optional features this layer supports (Django's `extensions`).
    fn extensions(&self) -> &[&'static str] {
        DEFAULT_EXTENSIONS
    }
}

/// A layer shared by many tasks: what the server and consumers hold.
pub type SharedLayer = Arc<dyn ChannelLayer>;

/// Counters a layer keeps about its channels and the messages it could not
/// deliver (each drop is counted, none is silent).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LayerStats {
    /// Channels the layer keeps local state for (mailboxes, subscriptions).
    pub channels: u64,
    /// Messages dropped because a channel was full (group sends skip full
    /// members; relayed messages evict the oldest).
    pub dropped_full: u64,
    /// Messages that expired unread.
    pub dropped_expired: u64,
    /// Messages that arrived but could not be decoded (wrong key, not msgpack).
    pub undecodable: u64,
}

impl LayerStats {
    /// Stats from a layer's drop counters and its count of channels.
    pub fn new(channels: usize, drops: &DropCounters) -> Self {
        Self {
            channels: channels as u64,
            dropped_full: drops.full(),
            dropped_expired: drops.expired(),
            undecodable: drops.undecodable(),
        }
    }
}
