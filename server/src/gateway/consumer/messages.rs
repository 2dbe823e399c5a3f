//! Layer messages addressed to a connection, with ASGI's meaning:
//! `websocket.send` and `websocket.close` act on the socket, the `gateway.*`
//! control messages act on the connection, anything else is pushed to the
//! client as a `message` frame built once per broadcast.

use channels_core::consumer::{ConsumerContext, ConsumerError, Frame, close_code};
use channels_core::{Message, Value};

use super::GatewayConsumer;
use crate::control;
use crate::gateway::protocol;

/// Shared frame purposes ([`Message::shared_frame`]).
const PUSH_FRAME: &str = "gateway.message";
const RAW_FRAME: &str = "gateway.raw";

impl GatewayConsumer {
    /// Acts on one layer message sent to the connection.
    pub(super) async fn on_layer_message(
        &mut self,
        ctx: &mut ConsumerContext,
        message_type: &str,
        message: Message,
    ) -> Result<(), ConsumerError> {
        match message_type {
            "websocket.send" => {
                let text = message.get("text").and_then(Value::as_str).is_some();
                let bytes = matches!(message.get("bytes"), Some(Value::Binary(_)));
                if !text && !bytes {
                    tracing::warn!("websocket.send without `text` or `bytes`; dropped");
                    return Ok(());
                }
                // Built once per broadcast, shared by every member.
                let frame = message.shared_frame(RAW_FRAME, |m| {
                    match (m.get("text").and_then(Value::as_str), m.get("bytes")) {
                        (Some(text), _) => Frame::from(text),
                        (None, Some(Value::Binary(bytes))) => Frame::from(bytes.clone()),
                        (None, _) => Frame::from(""),
                    }
                });
                ctx.send(frame)
            }
            "websocket.close" => {
                let code = message
                    .get("code")
                    .and_then(Value::as_u64)
                    .and_then(|code| u16::try_from(code).ok())
                    .unwrap_or(close_code::NORMAL);
                let code = crate::config::check_close_code(code).unwrap_or_else(|problem| {
                    tracing::warn!(%problem, "websocket.close with a code that cannot be sent; using 1000");
                    close_code::NORMAL
                });
                let reason = message.get("reason").and_then(Value::as_str).unwrap_or("");
                ctx.close(code, reason);
                Ok(())
            }
            // The gateway accepted the connection already.
            "websocket.accept" => Ok(()),
            control::SUBSCRIBE => self.control_membership(ctx, &message, true).await,
            control::UNSUBSCRIBE => self.control_membership(ctx, &message, false).await,
            crate::presence::events::EVENT => self.presence_event(ctx, &message),
            control::HISTORY_LOST => ctx.send_text(protocol::lost_frame(&message)),
            control::DISCONNECT => {
                let code = message
                    .get("code")
                    .and_then(Value::as_u64)
                    .and_then(|code| u16::try_from(code).ok())
                    .and_then(|code| crate::config::check_close_code(code).ok())
                    .unwrap_or(control::DISCONNECT_CODE);
                let reason = message
                    .get("reason")
                    .and_then(Value::as_str)
                    .unwrap_or("disconnected by the backend");
                ctx.close(code, reason);
                Ok(())
            }
            _ => {
                // Serialized once for all members of a broadcast: the first
                // member builds the frame, the others queue the same bytes.
                let frame =
                    message.shared_frame(PUSH_FRAME, |m| Frame::Text(protocol::message_frame(m)));
                ctx.send(frame)
            }
        }
    }

    /// Acts on a `gateway.subscribe` / `gateway.unsubscribe` control message.
    async fn control_membership(
        &mut self,
        ctx: &mut ConsumerContext,
        message: &Message,
        join: bool,
    ) -> Result<(), ConsumerError> {
        let Some(group) = message.get("group").and_then(Value::as_str) else {
            tracing::warn!(?message, "gateway control message without a string `group`");
            return Ok(());
        };
        let group = group.to_owned();
        let group = group.as_str();
        let result = if join {
            self.join(ctx, group, None).await.map(|_| ())
        } else {
            self.leave(ctx, group).await
        };
        match result {
            Ok(()) if join => {
                if !self.server_groups.iter().any(|g| g == group) {
                    self.server_groups.push(group.to_owned());
                }
                self.presence_join(ctx, group).await;
            }
            Ok(()) => {
                self.server_groups.retain(|g| g != group);
                self.presence_leave(ctx, group).await;
            }
            Err(error) => tracing::warn!(%group, %error, "gateway control message failed"),
        }
        Ok(())
    }
}
