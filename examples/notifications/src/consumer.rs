//! [`NotificationConsumer`]: one authenticated user socket.
//!
//! Client -> server: `{"type":"read"}` marks everything read.
//! Server -> client: `{"type":"unread","count":N}` on connect and whenever the count is reset;
//! `{"type":"notification","id":...,"unread":N, ...fields}` for each notification.

use channels_core::consumer::{Connect, ConsumerContext, ConsumerError, JsonConsumer, Scope};
use channels_core::{Message, async_trait};
use serde::Deserialize;

use crate::unread::UnreadStore;

/// The group every user's sockets join.
pub(crate) const EVERYONE: &str = "broadcast";
/// The layer message type of a notification (what producers `group_send`).
pub(crate) const NOTIFY: &str = "notify";
/// The layer message type telling a user's sockets the count was reset.
const UNREAD_RESET: &str = "unread.reset";

/// The group of one user's sockets.
pub(crate) fn user_group(user: &str) -> String {
    format!("user.{user}")
}

/// The id of a notification: its `id` field, or (from a producer that sent none) one derived
/// from its content, so every socket of the user records the same id.
pub(crate) fn notification_id(message: &Message) -> String {
    match message.get("id") {
        Some(id) => id.as_str().map_or_else(|| id.to_string(), str::to_owned),
        None => format!(
            "content:{:016x}",
            fnv1a(&format!("{:?}", message.to_value()))
        ),
    }
}

/// FNV-1a: a stable hash (std's `DefaultHasher` may change between releases).
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// What the client may send.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum ClientFrame {
    /// Mark every notification read.
    Read,
}

/// One user socket: in `user.<id>` and [`EVERYONE`].
#[derive(Debug)]
pub(crate) struct NotificationConsumer {
    /// The authenticated user (`None`: anonymous, rejected in `connect`).
    user: Option<String>,
    store: UnreadStore,
}

impl NotificationConsumer {
    /// The consumer for a connection; the user comes from the server's authenticator.
    pub(crate) fn new(scope: &Scope, store: UnreadStore) -> Self {
        Self {
            user: scope.user.as_ref().map(|identity| identity.id.clone()),
            store,
        }
    }

    fn user(&self) -> Result<&str, ConsumerError> {
        self.user
            .as_deref()
            .ok_or_else(|| ConsumerError::other("no user on an accepted connection"))
    }
}

#[async_trait]
impl JsonConsumer for NotificationConsumer {
    type Inbound = ClientFrame;

    fn groups(&self) -> Vec<String> {
        match &self.user {
            Some(user) => vec![user_group(user), EVERYONE.to_owned()],
            None => Vec::new(),
        }
    }

    async fn connect(&mut self, ctx: &mut ConsumerContext) -> Result<Connect, ConsumerError> {
        let Some(user) = &self.user else {
            return Ok(Connect::Reject); // no token: HTTP 403
        };
        let count = self.store.count(user).await.map_err(ConsumerError::other)?;
        ctx.send_json(&serde_json::json!({ "type": "unread", "count": count }))?;
        Ok(Connect::accept())
    }

    async fn receive_json(
        &mut self,
        ctx: &mut ConsumerContext,
        frame: ClientFrame,
    ) -> Result<(), ConsumerError> {
        match frame {
            ClientFrame::Read => {
                let user = self.user()?;
                self.store.clear(user).await.map_err(ConsumerError::other)?;
                // Every open socket of this user (on any process) shows the reset.
                ctx.group_send(&user_group(user), Message::new(UNREAD_RESET))
                    .await
            }
        }
    }

    async fn dispatch(
        &mut self,
        ctx: &mut ConsumerContext,
        message_type: &str,
        message: Message,
    ) -> Result<(), ConsumerError> {
        match message_type {
            NOTIFY => {
                let id = notification_id(&message);
                // Idempotent: the HTTP endpoint and the user's other sockets record it too.
                // If the store is down, the notification still goes out, without a count.
                let unread = match self.store.add(self.user()?, &id).await {
                    Ok(count) => Some(count),
                    Err(error) => {
                        tracing::warn!(%error, "cannot record an unread notification");
                        None
                    }
                };
                let mut frame = serde_json::to_value(&message)?;
                if let Some(fields) = frame.as_object_mut() {
                    fields.insert("type".into(), "notification".into());
                    fields.insert("id".into(), id.into());
                    fields.insert("unread".into(), unread.into());
                }
                ctx.send_json(&frame)
            }
            UNREAD_RESET => ctx.send_json(&serde_json::json!({ "type": "unread", "count": 0 })),
            other => Err(ConsumerError::NoHandler {
                message_type: other.to_owned(),
            }),
        }
    }
}
