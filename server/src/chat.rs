//! The chat demo served by `channels-server` with no setup: the page at `/`,
//! and [`ChatConsumer`] at `/ws/chat/{room}`, speaking the Django Channels
//! tutorial's protocol (`{"message": "..."}` both ways).

use axum::Router;
use axum::response::Html;
use axum::routing::get;
use channels_core::consumer::{
    Connect, ConsumerContext, ConsumerError, ConsumerRouter, Json, JsonConsumer, Scope,
};
use channels_core::{LayerError, Message, Value, async_trait, validate_group_name};
use serde::Deserialize;

/// The demo page.
const PAGE: &str = include_str!("../static/chat.html");

/// The WebSocket routes of the demo.
pub fn consumers() -> ConsumerRouter {
    ConsumerRouter::new().route("/ws/chat/{room}", |scope| Json(ChatConsumer::new(scope)))
}

/// The demo page at `/`.
pub fn page() -> Router {
    Router::new().route("/", get(|| async { Html(PAGE) }))
}

/// A chat room member: joins group `chat_<room>`, broadcasts what its client
/// says, and relays the room's messages to its client.
#[derive(Debug)]
pub struct ChatConsumer {
    group: String,
    user: Option<String>,
}

impl ChatConsumer {
    /// Builds the consumer for a connection from its scope.
    pub fn new(scope: &Scope) -> Self {
        Self {
            group: format!("chat_{}", scope.param("room").unwrap_or_default()),
            user: scope.user.as_ref().map(|u| u.id.clone()),
        }
    }
}

/// What the client sends.
#[derive(Debug, Deserialize)]
pub struct ChatInput {
    /// The text to broadcast.
    pub message: String,
}

#[async_trait]
impl JsonConsumer for ChatConsumer {
    type Inbound = ChatInput;

    async fn connect(&mut self, ctx: &mut ConsumerContext) -> Result<Connect, ConsumerError> {
        // A room name that makes no valid group name is refused (403).
        if validate_group_name(&self.group).is_err() {
            return Ok(Connect::Reject);
        }
        ctx.group_add(&self.group).await?;
        Ok(Connect::accept())
    }

    async fn receive_json(
        &mut self,
        ctx: &mut ConsumerContext,
        content: ChatInput,
    ) -> Result<(), ConsumerError> {
        let mut message = Message::new("chat.message").with("message", content.message);
        if let Some(user) = &self.user {
            message.insert("user", user.as_str());
        }
        match ctx.group_send(&self.group, message).await {
            Ok(()) => Ok(()),
            // The layer is down: tell the client instead of dropping it.
            Err(ConsumerError::Layer(error)) => {
                tracing::warn!(group = %self.group, %error, "chat message not sent");
                ctx.send_json(
                    &serde_json::json!({ "error": "message not sent: channel layer unavailable" }),
                )
            }
            Err(other) => Err(other),
        }
    }

    async fn layer_error(
        &mut self,
        ctx: &mut ConsumerContext,
        error: &LayerError,
    ) -> Result<(), ConsumerError> {
        tracing::warn!(group = %self.group, %error, "chat room lost its channel layer; retrying");
        ctx.send_json(&serde_json::json!({ "error": "channel layer unavailable; retrying" }))
    }

    async fn dispatch(
        &mut self,
        ctx: &mut ConsumerContext,
        message_type: &str,
        message: Message,
    ) -> Result<(), ConsumerError> {
        match message_type {
            "chat.message" => {
                let text = message
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let mut reply = serde_json::json!({ "message": text });
                if let Some(user) = message.get("user").and_then(Value::as_str) {
                    reply["user"] = user.into();
                }
                ctx.send_json(&reply)
            }
            other => Err(ConsumerError::NoHandler {
                message_type: other.to_owned(),
            }),
        }
    }
}
