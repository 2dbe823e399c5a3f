//! The multi-room chat demo: the page at `/` ([`page`], with the JavaScript
//! client of `clients/js/` at `/client.js`) and [`ChatConsumer`]
//! at `/ws/chat/{room}` ([`consumers`]), mounted by this crate's binary in
//! its own axum app. Each room is the group `chat_<room>`, so it works
//! unchanged on the in-memory layer and across several processes sharing
//! Redis.
//!
//! # Protocol
//! Text frames holding JSON objects, both ways.
//!
//! Client to server:
//! - `{"type":"message","message":"hi"}`: say something in the room. The
//!   Django tutorial's `{"message":"hi"}` (no `type`) means the same.
//! - `{"type":"nick","nick":"alice"}`: set or change your nickname. It can
//!   also be given when connecting: `/ws/chat/lobby?nick=alice`.
//!
//! Server to client (`nick` is left out for members without a nickname;
//! `user` is the authenticated identity, when there is one):
//! - `{"type":"message","room":"lobby","nick":"alice","message":"hi"}`
//! - `{"type":"join","room":"lobby","nick":"alice"}`: a member with a
//!   nickname joined (the joiner gets its own notice too).
//! - `{"type":"leave","room":"lobby","nick":"alice"}`: it left.
//! - `{"type":"nick","room":"lobby","old":"alice","nick":"alicia"}`: a rename.
//! - `{"type":"error","code":CODE,"error":"what went wrong"}`, answering bad
//!   input without closing the connection. Codes: `invalid_json`,
//!   `invalid_frame` (not an object, or a field of the wrong kind),
//!   `unknown_type`, `empty_message`, `message_too_long`, `invalid_nick`,
//!   `unsupported_frame` (binary), `layer_unavailable` (the channel layer is
//!   down: the message was not sent; the runtime keeps retrying).
//!
//! Limits ([`ChatLimits`]): nicknames 1 to 32 characters without control
//! characters; messages not blank and at most 50,000 characters (the page
//! stops typing at 2,000). A room name that makes no valid group name (over
//! 94 characters, or outside `[a-zA-Z0-9-_.]`) is refused with HTTP 403.
//!
//! Anything can speak into a room through the channel layer:
//! `group_send("chat_lobby", {"type": "chat.message", "message": "..."})`,
//! for example with the server's publish API (`POST /api/groups/chat_lobby`).

use std::time::Duration;

use axum::Router;
use axum::http::header;
use axum::response::Html;
use axum::routing::get;
use channels_core::consumer::{
    Connect, ConsumerContext, ConsumerError, ConsumerRouter, Frame, Scope, WebsocketConsumer,
};
use channels_core::{LayerError, Message, Value, async_trait, validate_group_name};
use serde_json::json;

/// The demo page.
const PAGE: &str = include_str!("../static/chat.html");

/// The JavaScript client the page reconnects with (`clients/js/client.js`).
const CLIENT_JS: &str = include_str!("../../../clients/js/client.js");

/// The default longest nickname, in characters.
pub const DEFAULT_MAX_NICK_CHARS: usize = 32;

/// The default longest message, in characters (Slack allows 40,000).
pub const DEFAULT_MAX_MESSAGE_CHARS: usize = 50_000;

/// The longest a leave notice may take to send when a connection ends.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(2);

/// The WebSocket routes of the demo, with the default [`ChatLimits`].
pub fn consumers() -> ConsumerRouter {
    consumers_with(ChatLimits::default())
}

/// The WebSocket routes of the demo, with your own limits.
pub fn consumers_with(limits: ChatLimits) -> ConsumerRouter {
    ConsumerRouter::new().route("/ws/chat/{room}", move |scope| {
        ChatConsumer::new(scope).limits(limits)
    })
}

/// The demo page at `/`, and the JavaScript client it imports at `/client.js`.
pub fn page() -> Router {
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route(
            "/client.js",
            get(|| async {
                (
                    [
                        (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
                        (header::CACHE_CONTROL, "no-cache"),
                    ],
                    CLIENT_JS,
                )
            }),
        )
}

/// Input limits of the chat consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChatLimits {
    /// The longest nickname, in characters ([`DEFAULT_MAX_NICK_CHARS`]).
    pub max_nick_chars: usize,
    /// The longest message, in characters ([`DEFAULT_MAX_MESSAGE_CHARS`]).
    pub max_message_chars: usize,
}

impl Default for ChatLimits {
    fn default() -> Self {
        Self {
            max_nick_chars: DEFAULT_MAX_NICK_CHARS,
            max_message_chars: DEFAULT_MAX_MESSAGE_CHARS,
        }
    }
}

/// A chat room member: joins group `chat_<room>`, announces its nickname,
/// broadcasts what its client says, relays the room's messages and notices to
/// its client, and answers bad input with an error event.
#[derive(Debug)]
pub struct ChatConsumer {
    room: String,
    group: String,
    nick: Option<String>,
    user: Option<String>,
    limits: ChatLimits,
}

/// A valid request from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Command {
    /// Say this in the room.
    Say(String),
    /// Take this nickname.
    Nick(String),
}

/// Bad input: the error event's code and text.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rejection {
    code: &'static str,
    error: String,
}

impl Rejection {
    fn new(code: &'static str, error: impl Into<String>) -> Self {
        Self {
            code,
            error: error.into(),
        }
    }
}

/// Builds an error event.
fn error_event(code: &str, error: &str) -> serde_json::Value {
    json!({ "type": "error", "code": code, "error": error })
}

/// Checks a nickname against `limits`; returns it trimmed.
fn validate_nick(nick: &str, limits: ChatLimits) -> Result<String, Rejection> {
    let nick = nick.trim();
    let chars = nick.chars().count();
    if chars == 0 {
        return Err(Rejection::new("invalid_nick", "nickname is empty"));
    }
    if chars > limits.max_nick_chars {
        return Err(Rejection::new(
            "invalid_nick",
            format!(
                "nickname is {chars} characters; the limit is {}",
                limits.max_nick_chars
            ),
        ));
    }
    if nick.chars().any(char::is_control) {
        return Err(Rejection::new(
            "invalid_nick",
            "nickname contains control characters",
        ));
    }
    Ok(nick.to_owned())
}

/// Checks a message against `limits`.
fn validate_message(message: &str, limits: ChatLimits) -> Result<(), Rejection> {
    if message.trim().is_empty() {
        return Err(Rejection::new("empty_message", "message is empty"));
    }
    let chars = message.chars().count();
    if chars > limits.max_message_chars {
        return Err(Rejection::new(
            "message_too_long",
            format!(
                "message is {chars} characters; the limit is {}",
                limits.max_message_chars
            ),
        ));
    }
    Ok(())
}

/// Decodes and validates one text frame from the client.
fn parse_command(text: &str, limits: ChatLimits) -> Result<Command, Rejection> {
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| Rejection::new("invalid_json", format!("invalid JSON: {e}")))?;
    let serde_json::Value::Object(fields) = value else {
        return Err(Rejection::new("invalid_frame", "expected a JSON object"));
    };
    let string_field = |name: &str| match fields.get(name) {
        Some(serde_json::Value::String(s)) => Ok(s.as_str()),
        _ => Err(Rejection::new(
            "invalid_frame",
            format!("`{name}` must be a string"),
        )),
    };
    let kind = match fields.get("type") {
        None if fields.contains_key("message") => "message",
        None => {
            return Err(Rejection::new(
                "invalid_frame",
                "expected a `type` field (`message` or `nick`)",
            ));
        }
        Some(_) => string_field("type")?,
    };
    match kind {
        "message" => {
            let message = string_field("message")?;
            validate_message(message, limits)?;
            Ok(Command::Say(message.to_owned()))
        }
        "nick" => Ok(Command::Nick(validate_nick(string_field("nick")?, limits)?)),
        other => Err(Rejection::new(
            "unknown_type",
            format!("unknown frame type `{other}`; expected `message` or `nick`"),
        )),
    }
}

/// Fuzzing entry point (not API): decodes one client text frame as the
/// consumer does, with the default limits. `Ok` holds `("say", message)` or
/// `("nick", nickname)`; `Err` the error event's code.
#[doc(hidden)]
pub fn decode_frame_for_fuzzing(text: &str) -> Result<(&'static str, String), &'static str> {
    match parse_command(text, ChatLimits::default()) {
        Ok(Command::Say(message)) => Ok(("say", message)),
        Ok(Command::Nick(nick)) => Ok(("nick", nick)),
        Err(rejection) => Err(rejection.code),
    }
}

impl ChatConsumer {
    /// Builds the consumer for a connection from its scope (room from the
    /// path, identity from authentication), with the default limits.
    pub fn new(scope: &Scope) -> Self {
        let room = scope.param("room").unwrap_or_default().to_owned();
        Self {
            group: format!("chat_{room}"),
            room,
            nick: None,
            user: scope.user.as_ref().map(|u| u.id.clone()),
            limits: ChatLimits::default(),
        }
    }

    /// Uses these input limits.
    #[must_use]
    pub fn limits(mut self, limits: ChatLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Sends `message` to the room; if the layer is down, tells the client
    /// instead of dropping the connection.
    async fn broadcast(
        &self,
        ctx: &mut ConsumerContext,
        message: Message,
    ) -> Result<(), ConsumerError> {
        match ctx.group_send(&self.group, message).await {
            Ok(()) => Ok(()),
            Err(ConsumerError::Layer(error)) => {
                tracing::warn!(group = %self.group, %error, "chat message not sent");
                ctx.send_json(&error_event(
                    "layer_unavailable",
                    "message not sent: channel layer unavailable",
                ))
            }
            Err(other) => Err(other),
        }
    }

    /// Takes `nick` and announces it: a join notice the first time, a rename
    /// notice after that.
    async fn set_nick(
        &mut self,
        ctx: &mut ConsumerContext,
        nick: String,
    ) -> Result<(), ConsumerError> {
        let notice = match self.nick.replace(nick.clone()) {
            None => Message::new("chat.join").with("nick", nick),
            Some(old) if old == nick => return Ok(()),
            Some(old) => Message::new("chat.nick")
                .with("old", old)
                .with("nick", nick),
        };
        self.broadcast(ctx, notice).await
    }

    /// The client frame for a layer message of `message_type`, or `None` for
    /// a notice without its nickname.
    fn client_event(&self, message_type: &str, message: &Message) -> Option<serde_json::Value> {
        let text = |name: &str| message.get(name).and_then(Value::as_str);
        let notice = |kind: &str| {
            text("nick").map(|nick| json!({ "type": kind, "room": self.room, "nick": nick }))
        };
        match message_type {
            "chat.message" => {
                let mut event = json!({
                    "type": "message",
                    "room": self.room,
                    "message": text("message").unwrap_or_default(),
                });
                for field in ["nick", "user"] {
                    if let Some(value) = text(field) {
                        event[field] = value.into();
                    }
                }
                Some(event)
            }
            "chat.join" => notice("join"),
            "chat.leave" => notice("leave"),
            "chat.nick" => {
                let mut event = notice("nick")?;
                event["old"] = text("old").unwrap_or_default().into();
                Some(event)
            }
            _ => None,
        }
    }
}

#[async_trait]
impl WebsocketConsumer for ChatConsumer {
    async fn connect(&mut self, ctx: &mut ConsumerContext) -> Result<Connect, ConsumerError> {
        // A room name that makes no valid group name is refused (403).
        if validate_group_name(&self.group).is_err() {
            return Ok(Connect::Reject);
        }
        ctx.group_add(&self.group).await?;
        match ctx.scope().query("nick").filter(|n| !n.is_empty()) {
            None => {}
            Some(nick) => match validate_nick(&nick, self.limits) {
                Ok(nick) => self.set_nick(ctx, nick).await?,
                Err(rejection) => ctx.send_json(&error_event(rejection.code, &rejection.error))?,
            },
        }
        Ok(Connect::accept())
    }

    async fn receive(
        &mut self,
        ctx: &mut ConsumerContext,
        frame: Frame,
    ) -> Result<(), ConsumerError> {
        let Frame::Text(text) = frame else {
            return ctx.send_json(&error_event(
                "unsupported_frame",
                "binary frames are not supported; send JSON text",
            ));
        };
        match parse_command(&text, self.limits) {
            Ok(Command::Say(text)) => {
                let mut message = Message::new("chat.message").with("message", text);
                if let Some(nick) = &self.nick {
                    message.insert("nick", nick.as_str());
                }
                if let Some(user) = &self.user {
                    message.insert("user", user.as_str());
                }
                self.broadcast(ctx, message).await
            }
            Ok(Command::Nick(nick)) => self.set_nick(ctx, nick).await,
            Err(rejection) => {
                tracing::debug!(code = rejection.code, error = %rejection.error, "bad chat frame");
                ctx.send_json(&error_event(rejection.code, &rejection.error))
            }
        }
    }

    async fn layer_error(
        &mut self,
        ctx: &mut ConsumerContext,
        error: &LayerError,
    ) -> Result<(), ConsumerError> {
        tracing::warn!(group = %self.group, %error, "chat room lost its channel layer; retrying");
        ctx.send_json(&error_event(
            "layer_unavailable",
            "channel layer unavailable; retrying",
        ))
    }

    async fn dispatch(
        &mut self,
        ctx: &mut ConsumerContext,
        message_type: &str,
        message: Message,
    ) -> Result<(), ConsumerError> {
        match self.client_event(message_type, &message) {
            Some(event) => ctx.send_json(&event),
            None if message_type.starts_with("chat.") && message_type != "chat.message" => {
                tracing::warn!(%message_type, "dropping a chat notice without a `nick`");
                Ok(())
            }
            None => Err(ConsumerError::NoHandler {
                message_type: message_type.to_owned(),
            }),
        }
    }

    async fn disconnect(
        &mut self,
        ctx: &mut ConsumerContext,
        code: u16,
    ) -> Result<(), ConsumerError> {
        let Some(nick) = self.nick.take() else {
            return Ok(());
        };
        let leave = ctx.group_send(&self.group, Message::new("chat.leave").with("nick", nick));
        match tokio::time::timeout(LEAVE_TIMEOUT, leave).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(group = %self.group, %error, code, "leave notice not sent")
            }
            Err(_) => tracing::warn!(group = %self.group, code, "leave notice timed out"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use channels_core::consumer::Communicator;

    use super::*;

    fn limits() -> ChatLimits {
        ChatLimits {
            max_nick_chars: 5,
            max_message_chars: 10,
        }
    }

    fn code(text: &str) -> &'static str {
        parse_command(text, limits()).map_or_else(|r| r.code, |c| panic!("accepted {c:?}"))
    }

    #[test]
    fn commands_parse_and_bad_input_gets_a_code() {
        let say = |s: &str| Command::Say(s.to_owned());
        assert_eq!(
            parse_command(r#"{"message":"hi"}"#, limits()),
            Ok(say("hi"))
        );
        assert_eq!(
            parse_command(r#"{"type":"message","message":"hi"}"#, limits()),
            Ok(say("hi"))
        );
        assert_eq!(
            parse_command(r#"{"type":"nick","nick":"  bo "}"#, limits()),
            Ok(Command::Nick("bo".to_owned()))
        );
        assert_eq!(code("{oops"), "invalid_json");
        assert_eq!(code("[1]"), "invalid_frame");
        assert_eq!(code(r#"{"text":"hi"}"#), "invalid_frame");
        assert_eq!(code(r#"{"type":"message","message":5}"#), "invalid_frame");
        assert_eq!(code(r#"{"type":7}"#), "invalid_frame");
        assert_eq!(code(r#"{"type":"dance"}"#), "unknown_type");
        assert_eq!(code(r#"{"message":"  \n "}"#), "empty_message");
        assert_eq!(code(r#"{"message":"0123456789x"}"#), "message_too_long");
        // Characters, not bytes: ten two-byte characters fit.
        assert!(parse_command(r#"{"message":"éééééééééé"}"#, limits()).is_ok());
        assert_eq!(code(r#"{"type":"nick","nick":"toolong"}"#), "invalid_nick");
        assert_eq!(code(r#"{"type":"nick","nick":" "}"#), "invalid_nick");
        assert_eq!(code(r#"{"type":"nick","nick":"a\u0007"}"#), "invalid_nick");
    }

    #[tokio::test]
    async fn members_hear_joins_messages_renames_and_leaves() {
        let layer = Arc::new(channels_memory::InMemoryChannelLayer::new());
        let router = consumers_with(limits());
        let path = |q: &str| format!("/ws/chat/den{q}");
        let mut alice = Communicator::from_router(layer.clone(), &router, &path("")).unwrap();
        alice.scope_mut().query_string = "nick=al".into();
        let mut bob = Communicator::from_router(layer, &router, &path("")).unwrap();
        assert!(bob.connect().await.unwrap().accepted);
        assert!(alice.connect().await.unwrap().accepted);
        let join = json!({"type": "join", "room": "den", "nick": "al"});
        assert_eq!(bob.receive_json::<serde_json::Value>().await.unwrap(), join);
        assert_eq!(
            alice.receive_json::<serde_json::Value>().await.unwrap(),
            join
        );

        alice
            .send_text(r#"{"type":"message","message":"hi"}"#)
            .await
            .unwrap();
        let said = json!({"type": "message", "room": "den", "nick": "al", "message": "hi"});
        assert_eq!(bob.receive_json::<serde_json::Value>().await.unwrap(), said);
        assert_eq!(
            alice.receive_json::<serde_json::Value>().await.unwrap(),
            said
        );

        // Bad input: an error event for the sender only, and it stays connected.
        alice
            .send_text(r#"{"type":"message","message":""}"#)
            .await
            .unwrap();
        let error: serde_json::Value = alice.receive_json().await.unwrap();
        assert_eq!(
            (error["type"].as_str(), error["code"].as_str()),
            (Some("error"), Some("empty_message"))
        );
        alice.send_binary(&b"{}"[..]).await.unwrap();
        let error: serde_json::Value = alice.receive_json().await.unwrap();
        assert_eq!(error["code"], "unsupported_frame");
        bob.receive_nothing(Duration::from_millis(50))
            .await
            .unwrap();

        // Bob takes a nickname: a join; alice renames: a rename notice.
        bob.send_text(r#"{"type":"nick","nick":"bo"}"#)
            .await
            .unwrap();
        let join: serde_json::Value = alice.receive_json().await.unwrap();
        assert_eq!(
            (join["type"].as_str(), join["nick"].as_str()),
            (Some("join"), Some("bo"))
        );
        alice
            .send_text(r#"{"type":"nick","nick":"ally"}"#)
            .await
            .unwrap();
        let _ = bob.receive_json::<serde_json::Value>().await.unwrap(); // bob's own join
        let rename: serde_json::Value = bob.receive_json().await.unwrap();
        assert_eq!(
            rename,
            json!({"type": "nick", "room": "den", "old": "al", "nick": "ally"})
        );

        assert_eq!(alice.disconnect(1000).await.unwrap(), 1000);
        let leave: serde_json::Value = bob.receive_json().await.unwrap();
        assert_eq!(
            leave,
            json!({"type": "leave", "room": "den", "nick": "ally"})
        );
    }

    #[tokio::test]
    async fn an_invalid_nick_in_the_url_is_an_error_event_not_a_refusal() {
        let layer = Arc::new(channels_memory::InMemoryChannelLayer::new());
        let router = consumers_with(limits());
        let mut client = Communicator::from_router(layer, &router, "/ws/chat/den").unwrap();
        client.scope_mut().query_string = "nick=far%20too%20long".into();
        assert!(client.connect().await.unwrap().accepted);
        let error: serde_json::Value = client.receive_json().await.unwrap();
        assert_eq!(error["code"], "invalid_nick");
        // Still usable, anonymously.
        client.send_text(r#"{"message":"hey"}"#).await.unwrap();
        let said: serde_json::Value = client.receive_json().await.unwrap();
        assert_eq!(
            said,
            json!({"type": "message", "room": "den", "message": "hey"})
        );
    }
}
