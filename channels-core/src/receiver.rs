//! [`Receiver`]: a handle on one channel's [`Mailbox`], handed out by
//! [`ChannelLayer::open`](crate::ChannelLayer::open) and
//! [`ChannelLayer::new_receiver`](crate::ChannelLayer::new_receiver).
//!
//! Receiving through a handle reads the channel's own mailbox directly: no
//! name lookup, no layer-wide lock, no allocation per message. Dropping the
//! last handle on a channel releases it: the layer forgets what it kept for
//! it (buffered messages, a pub/sub subscription).

use std::fmt;
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::error::LayerError;
use crate::mailbox::Mailbox;
use crate::message::Message;

/// What a layer does when the last handle on one of its mailboxes goes away.
pub trait Release: Send + Sync + 'static {
    /// The last holder of `mailbox` (a [`Receiver`]) let go. The layer
    /// re-checks under its own lock (a handle may have been opened again
    /// meanwhile) and then frees what it keeps for the channel.
    fn release(&self, mailbox: &Arc<Mailbox>);
}

/// A receiving handle on one channel. Several handles on one channel share
/// its messages: each message goes to exactly one of them.
///
/// # Examples
/// ```
/// use channels_core::{ChannelLayer, Message};
/// use channels_memory::InMemoryChannelLayer;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), channels_core::LayerError> {
/// let layer = InMemoryChannelLayer::new();
/// let mut inbox = layer.new_receiver("specific").await?;
/// layer.group_add("lobby", inbox.channel()).await?;
/// layer.group_send("lobby", Message::new("chat.message").with("text", "hi")).await?;
/// let message = inbox.recv().await?;
/// assert_eq!(message.get("text").and_then(|v| v.as_str()), Some("hi"));
/// drop(inbox); // releases the channel
/// # Ok(())
/// # }
/// ```
pub struct Receiver {
    mailbox: Arc<Mailbox>,
    owner: Arc<dyn Release>,
}

impl Receiver {
    /// A handle on `mailbox`; `owner` hears when the last holder lets go.
    /// For layer implementations: call it under the lock that guards the
    /// layer's map of mailboxes, so a concurrent release cannot forget the
    /// mailbox between the lookup and this call.
    pub fn new(mailbox: Arc<Mailbox>, owner: Arc<dyn Release>) -> Self {
        mailbox.add_holder();
        Self { mailbox, owner }
    }

    /// The channel's name.
    pub fn channel(&self) -> &str {
        self.mailbox.channel()
    }

    /// The channel's name as a cheap-to-clone handle.
    pub fn channel_arc(&self) -> Arc<str> {
        self.mailbox.channel_arc().clone()
    }

    /// Waits for the next message. Cancel-safe: dropping the future loses no
    /// message; it goes to the next `recv`.
    ///
    /// # Errors
    /// [`LayerError::Closed`] once the layer is closed;
    /// [`LayerError::Backend`] while the layer cannot receive (Redis is away);
    /// retry after a pause.
    pub async fn recv(&self) -> Result<Message, LayerError> {
        self.mailbox.recv().await
    }

    /// Takes the next message if one is ready now.
    ///
    /// # Errors
    /// As [`Receiver::recv`].
    pub fn try_recv(&self) -> Result<Option<Message>, LayerError> {
        self.mailbox.try_recv()
    }

    /// [`Receiver::try_recv`] with the caller's reading of the clock, for
    /// draining several messages with one clock read; expiry is judged at
    /// `now` (see [`Mailbox::try_recv_at`](crate::Mailbox::try_recv_at)).
    ///
    /// # Errors
    /// As [`Receiver::recv`].
    pub fn try_recv_at(&self, now: tokio::time::Instant) -> Result<Option<Message>, LayerError> {
        self.mailbox.try_recv_at(now)
    }
}

impl Receiver {
    /// A handle that queues messages straight into this channel's mailbox,
    /// in this process, without the layer (see [`LocalSender`]).
    pub fn local_sender(&self) -> LocalSender {
        LocalSender {
            mailbox: Arc::downgrade(&self.mailbox),
        }
    }

    /// Gives back the mailbox's buffer if nothing waits in it (call it now and
    /// then on an idle connection; a drained mailbox keeps the slots its last
    /// burst needed).
    pub fn shrink_if_empty(&self) {
        self.mailbox.shrink_if_empty();
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if self.mailbox.remove_holder() {
            self.owner.release(&self.mailbox);
        }
    }
}

/// How long a message queued by a [`LocalSender`] may wait unread: the
/// mailbox's capacity bounds it, not a clock.
const LOCAL_EXPIRY: Duration = Duration::from_secs(24 * 60 * 60);

/// Queues messages straight into one channel's mailbox in this process: a
/// fan-out inside the server (a history relay handing each member its copy)
/// that should cost no layer round trip. It does not keep the channel alive:
/// once every [`Receiver`] on it is dropped, sends report
/// [`LocalSendError::Gone`].
#[derive(Clone)]
pub struct LocalSender {
    mailbox: Weak<Mailbox>,
}

/// Why a [`LocalSender::try_send`] did not queue its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LocalSendError {
    /// The mailbox is at capacity (nothing was queued; the caller decides
    /// what the receiver is told).
    #[error("the channel is full")]
    Full,
    /// Nobody receives on the channel any more, or it was closed.
    #[error("the channel is gone")]
    Gone,
}

impl LocalSender {
    /// Queues `message` unless the mailbox is full or gone.
    ///
    /// # Errors
    /// [`LocalSendError::Full`], [`LocalSendError::Gone`].
    pub fn try_send(&self, message: Message) -> Result<(), LocalSendError> {
        let mailbox = self.mailbox.upgrade().ok_or(LocalSendError::Gone)?;
        if mailbox.holders() == 0 || mailbox.is_closed() {
            return Err(LocalSendError::Gone);
        }
        let expires_at = tokio::time::Instant::now() + LOCAL_EXPIRY;
        mailbox
            .try_push(message, expires_at)
            .map_err(|_| LocalSendError::Full)
    }

    /// Whether a [`Receiver`] still holds the channel.
    pub fn is_alive(&self) -> bool {
        self.mailbox
            .upgrade()
            .is_some_and(|mailbox| mailbox.holders() > 0 && !mailbox.is_closed())
    }

    /// The channel's name, while it is alive.
    pub fn channel(&self) -> Option<Arc<str>> {
        self.mailbox
            .upgrade()
            .map(|mailbox| mailbox.channel_arc().clone())
    }
}

impl fmt::Debug for LocalSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalSender")
            .field("channel", &self.channel())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Receiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver")
            .field("channel", &self.channel())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Forget;

    impl Release for Forget {
        fn release(&self, _mailbox: &Arc<Mailbox>) {}
    }

    fn receiver(capacity: usize) -> Receiver {
        let mailbox = Mailbox::new(Arc::from("specific.a!b"), capacity, Arc::default());
        Receiver::new(Arc::new(mailbox), Arc::new(Forget))
    }

    #[tokio::test]
    async fn a_local_sender_queues_into_the_mailbox_until_full_or_gone() {
        let receiver = receiver(2);
        let sender = receiver.local_sender();
        assert_eq!(sender.channel().as_deref(), Some("specific.a!b"));
        sender.try_send(Message::new("a")).unwrap();
        sender.try_send(Message::new("b")).unwrap();
        assert_eq!(
            sender.try_send(Message::new("c")),
            Err(LocalSendError::Full)
        );
        assert_eq!(receiver.recv().await.unwrap().message_type(), Some("a"));
        sender.try_send(Message::new("c")).unwrap();
        assert_eq!(receiver.recv().await.unwrap().message_type(), Some("b"));
        assert_eq!(receiver.recv().await.unwrap().message_type(), Some("c"));
        assert!(sender.is_alive());
        drop(receiver);
        assert!(!sender.is_alive());
        assert_eq!(
            sender.try_send(Message::new("d")),
            Err(LocalSendError::Gone)
        );
    }
}
