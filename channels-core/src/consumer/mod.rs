//! Consumers: the code bound to one WebSocket connection (or, for workers, to
//! one named channel), in Django Channels' shape.
//!
//! A [`WebsocketConsumer`] gets the connection's lifecycle (`connect`,
//! `receive`, `disconnect`) and the channel-layer messages sent to its channel
//! (`dispatch`, by `type`). It acts through a [`ConsumerContext`]: send frames,
//! close, join and leave groups, send to channels, read the [`Scope`].
//! [`JsonConsumer`] (wrapped in [`Json`]) decodes frames as JSON first;
//! [`Worker`] + [`run_worker`] serve a named channel instead of a socket.
//!
//! The per-connection runtime ([`Connection`]) is transport-agnostic: the
//! server feeds it [`Inbound`] events and drains its [`OutboxReceiver`]; the
//! [`Communicator`] does the same in memory for tests.
//!
//! # Examples
//! A chat room, and a test that drives two members of it without a network:
//! ```
//! use std::sync::Arc;
//! use channels_core::consumer::{
//!     Communicator, Connect, ConsumerContext, ConsumerError, ConsumerRouter, Json, JsonConsumer, Scope,
//! };
//! use channels_core::{async_trait, Message, Value};
//!
//! /// Joins `chat_<room>`; relays what its client says to the room.
//! struct Chat {
//!     group: String,
//! }
//!
//! #[derive(serde::Deserialize)]
//! struct Say {
//!     message: String,
//! }
//!
//! #[async_trait]
//! impl JsonConsumer for Chat {
//!     type Inbound = Say;
//!
//!     fn groups(&self) -> Vec<String> {
//!         vec![self.group.clone()]
//!     }
//!
//!     async fn connect(&mut self, ctx: &mut ConsumerContext) -> Result<Connect, ConsumerError> {
//!         if ctx.scope().param("room") == Some("closed") {
//!             return Ok(Connect::Reject); // HTTP 403
//!         }
//!         Ok(Connect::accept())
//!     }
//!
//!     async fn receive_json(&mut self, ctx: &mut ConsumerContext, say: Say) -> Result<(), ConsumerError> {
//!         let message = Message::new("chat.message").with("message", say.message);
//!         ctx.group_send(&self.group, message).await
//!     }
//!
//!     async fn dispatch(&mut self, ctx: &mut ConsumerContext, kind: &str, message: Message) -> Result<(), ConsumerError> {
//!         match kind {
//!             "chat.message" => {
//!                 let text = message.get("message").and_then(Value::as_str).unwrap_or_default();
//!                 ctx.send_json(&serde_json::json!({ "message": text }))
//!             }
//!             other => Err(ConsumerError::NoHandler { message_type: other.to_owned() }),
//!         }
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let router = ConsumerRouter::new().route("/ws/chat/{room}", |scope: &Scope| {
//!     Json(Chat { group: format!("chat_{}", scope.param("room").unwrap_or_default()) })
//! });
//! let layer = Arc::new(channels_memory::InMemoryChannelLayer::new());
//! let mut alice = Communicator::from_router(layer.clone(), &router, "/ws/chat/lobby")?;
//! let mut bob = Communicator::from_router(layer.clone(), &router, "/ws/chat/lobby")?;
//! assert!(alice.connect().await?.accepted);
//! assert!(bob.connect().await?.accepted);
//!
//! alice.send_json(&serde_json::json!({ "message": "hello" })).await?;
//! let heard: serde_json::Value = bob.receive_json().await?;
//! assert_eq!(heard["message"], "hello");
//!
//! let mut closed = Communicator::from_router(layer, &router, "/ws/chat/closed")?;
//! assert!(!closed.connect().await?.accepted);
//! assert_eq!(alice.disconnect(1000).await?, 1000);
//! # Ok(())
//! # }
//! ```

mod context;
mod error;
mod frame;
mod json;
mod outbox;
mod routing;
mod runtime;
mod scope;
mod shutdown;
mod stats;
mod testing;
mod worker;

use async_trait::async_trait;

use crate::error::LayerError;
use crate::message::Message;

pub use context::{ConsumerContext, PUBLISH_BACKPRESSURE};
pub use error::ConsumerError;
pub use frame::{CloseFrame, Frame, Inbound, Outbound, Text, close_code};
pub use json::{InvalidJson, Json, JsonConsumer};
pub use outbox::{OutboxReceiver, SocketState};
pub use routing::{ConsumerFactory, ConsumerRouter, Route, RouteMatch};
pub use runtime::{
    Accepted, Connection, ConnectionSettings, DEFAULT_IDLE_TIMEOUT, DEFAULT_OUTBOUND_BYTES,
    DEFAULT_OUTBOUND_QUEUE, DEFAULT_PING_INTERVAL, Handshake, InboundStream, MAX_DEFER,
    check_message_type, next_inbound,
};
pub use scope::{Headers, Identity, Scope};
pub use shutdown::{ShutdownSignal, Watch};
pub use stats::{Backpressure, ConsumerStats, Histogram, LATENCY_BUCKETS};
pub use testing::{Communicator, CommunicatorError, Connected};
pub use worker::{Worker, WorkerContext, run_worker};

/// What `connect` decides: accept the connection (optionally choosing a
/// subprotocol and adding response headers), reject it (HTTP 403), or leave
/// the decision to a layer message ([`Connect::Defer`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Connect {
    /// Accept the WebSocket handshake.
    Accept(Accept),
    /// Refuse it: the client gets HTTP 403 and no socket.
    Reject,
    /// Leave the upgrade unanswered until a message on the connection's
    /// channel decides, as Daphne waits for an ASGI application's
    /// `websocket.accept` (the application runs elsewhere).
    ///
    /// Meanwhile the runtime hands each message on the channel to
    /// [`WebsocketConsumer::dispatch`], in order, and calls
    /// [`WebsocketConsumer::wake`] at the time set with
    /// [`ConsumerContext::wake_at`]. The consumer decides with
    /// [`ConsumerContext::accept`] (101; frames it sent meanwhile follow the
    /// handshake, and messages after the decision wait for the running
    /// connection), [`ConsumerContext::close`] (HTTP 403, as a close before
    /// accept is in Django), or [`ConsumerContext::fail_handshake`] (another
    /// status). Undecided after [`MAX_DEFER`], the upgrade is answered 504;
    /// at shutdown, 503. Unless accepted, the connection leaves its groups
    /// and `disconnect` is called with the close code asked for (1006 when
    /// none). A server may drop the handshake while it waits (its client
    /// left): then no method runs again, so free what matters in `Drop`.
    Defer,
}

impl Connect {
    /// Accepts with no subprotocol and no extra headers.
    pub fn accept() -> Self {
        Self::Accept(Accept::default())
    }
}

/// How to accept a connection (Django's `accept(subprotocol, headers)`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Accept {
    /// The subprotocol to answer with; it should be one the client offered
    /// ([`Scope::subprotocols`]).
    pub subprotocol: Option<String>,
    /// Extra headers for the handshake response.
    pub headers: Vec<(String, String)>,
}

impl Accept {
    /// Chooses the subprotocol to answer with.
    #[must_use]
    pub fn subprotocol(mut self, subprotocol: impl Into<String>) -> Self {
        self.subprotocol = Some(subprotocol.into());
        self
    }

    /// Adds a header to the handshake response.
    #[must_use]
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

impl From<Accept> for Connect {
    fn from(accept: Accept) -> Self {
        Self::Accept(accept)
    }
}

/// A consumer bound to one WebSocket connection, with Django Channels'
/// lifecycle. Every method has a default, so implement only what you need.
///
/// The runtime calls one method at a time, so a consumer's own fields need no
/// locks. An `Err` from any method is logged and closes the connection with
/// 1011 (internal error), like an uncaught exception in Django.
///
/// # Examples
/// ```
/// use channels_core::consumer::{ConsumerContext, ConsumerError, Frame, WebsocketConsumer};
/// use channels_core::{async_trait, Message};
///
/// /// Echoes text frames and relays `chat.message` broadcasts of its group.
/// struct Echo;
///
/// #[async_trait]
/// impl WebsocketConsumer for Echo {
///     fn groups(&self) -> Vec<String> {
///         vec!["lobby".into()]
///     }
///
///     async fn receive(&mut self, ctx: &mut ConsumerContext, frame: Frame) -> Result<(), ConsumerError> {
///         if let Frame::Text(text) = frame {
///             ctx.send_text(format!("echo: {text}"))?;
///         }
///         Ok(())
///     }
///
///     async fn dispatch(&mut self, ctx: &mut ConsumerContext, message_type: &str, message: Message) -> Result<(), ConsumerError> {
///         match message_type {
///             "chat.message" => {
///                 let text = message.get("text").and_then(|v| v.as_str()).unwrap_or_default();
///                 ctx.send_text(text)
///             }
///             other => Err(ConsumerError::NoHandler { message_type: other.to_owned() }),
///         }
///     }
/// }
/// ```
#[async_trait]
pub trait WebsocketConsumer: Send + 'static {
    /// Groups the connection joins before `connect` and leaves on disconnect
    /// (Django's `groups` attribute).
    fn groups(&self) -> Vec<String> {
        Vec::new()
    }

    /// The client asks to connect. Return [`Connect::accept()`] (the default),
    /// [`Connect::Reject`], or [`Connect::Defer`] to decide on a later layer
    /// message. Frames sent here reach the client right after the handshake.
    ///
    /// # Errors
    /// Any error rejects the connection (HTTP 403) and is logged.
    async fn connect(&mut self, ctx: &mut ConsumerContext) -> Result<Connect, ConsumerError> {
        let _ = ctx;
        Ok(Connect::accept())
    }

    /// A text or binary frame arrived from the client.
    ///
    /// # Errors
    /// Any error is logged and closes the connection with 1011.
    async fn receive(
        &mut self,
        ctx: &mut ConsumerContext,
        frame: Frame,
    ) -> Result<(), ConsumerError> {
        let _ = (ctx, frame);
        Ok(())
    }

    /// A channel-layer message arrived on this connection's channel (a
    /// `group_send` to one of its groups, or a `send` to its channel). Its
    /// `type` was checked first: a message without a string `type`, or whose
    /// type starts with `_`, is logged and dropped without reaching here.
    ///
    /// Match on `message_type`, or decode a serde enum tagged by `type` with
    /// [`Message::decode`].
    ///
    /// # Errors
    /// The default returns [`ConsumerError::NoHandler`], as Django raises for a
    /// type with no handler; any error is logged and closes with 1011.
    async fn dispatch(
        &mut self,
        ctx: &mut ConsumerContext,
        message_type: &str,
        message: Message,
    ) -> Result<(), ConsumerError> {
        let _ = (ctx, message);
        Err(ConsumerError::NoHandler {
            message_type: message_type.to_owned(),
        })
    }

    /// Receiving from the channel layer failed (for example Redis is down).
    /// Called once per outage, on its first error; the runtime keeps retrying
    /// with capped backoff, and frames from the client still arrive meanwhile.
    /// Tell the client, or close.
    ///
    /// # Errors
    /// Any error is logged and closes the connection with 1011.
    async fn layer_error(
        &mut self,
        ctx: &mut ConsumerContext,
        error: &LayerError,
    ) -> Result<(), ConsumerError> {
        let _ = (ctx, error);
        Ok(())
    }

    /// The time asked for with [`ConsumerContext::wake_at`] has come.
    ///
    /// # Errors
    /// Any error is logged and closes the connection with 1011.
    async fn wake(&mut self, ctx: &mut ConsumerContext) -> Result<(), ConsumerError> {
        let _ = ctx;
        Ok(())
    }

    /// The connection ended with `code` (the client's close code, 1006 when
    /// the socket dropped without one, or the code the server closed with).
    /// Group memberships were already discarded.
    ///
    /// # Errors
    /// Any error is logged.
    async fn disconnect(
        &mut self,
        ctx: &mut ConsumerContext,
        code: u16,
    ) -> Result<(), ConsumerError> {
        let _ = (ctx, code);
        Ok(())
    }
}

#[async_trait]
impl WebsocketConsumer for Box<dyn WebsocketConsumer> {
    fn groups(&self) -> Vec<String> {
        (**self).groups()
    }

    async fn connect(&mut self, ctx: &mut ConsumerContext) -> Result<Connect, ConsumerError> {
        (**self).connect(ctx).await
    }

    async fn receive(
        &mut self,
        ctx: &mut ConsumerContext,
        frame: Frame,
    ) -> Result<(), ConsumerError> {
        (**self).receive(ctx, frame).await
    }

    async fn dispatch(
        &mut self,
        ctx: &mut ConsumerContext,
        message_type: &str,
        message: Message,
    ) -> Result<(), ConsumerError> {
        (**self).dispatch(ctx, message_type, message).await
    }

    async fn layer_error(
        &mut self,
        ctx: &mut ConsumerContext,
        error: &LayerError,
    ) -> Result<(), ConsumerError> {
        (**self).layer_error(ctx, error).await
    }

    async fn wake(&mut self, ctx: &mut ConsumerContext) -> Result<(), ConsumerError> {
        (**self).wake(ctx).await
    }

    async fn disconnect(
        &mut self,
        ctx: &mut ConsumerContext,
        code: u16,
    ) -> Result<(), ConsumerError> {
        (**self).disconnect(ctx, code).await
    }
}
