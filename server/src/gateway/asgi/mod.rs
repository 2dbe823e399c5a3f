//! ASGI pass-through (docs/protocol.md, "ASGI workers"): with a forward
//! channel set, a WebSocket upgrade on any path the server does not serve
//! itself is handed to a Python ASGI worker (`python -m
//! channels_rust.worker`) as the plain ASGI events of the connection, and
//! what the worker's application sends (`websocket.accept`, `websocket.send`,
//! `websocket.close`) is applied to the socket. No protocol v1 on those paths.
//!
//! The connection is accepted at the upgrade; the worker's `websocket.accept`
//! must follow within [`ACCEPT_TIMEOUT`] (close [`ACCEPT_TIMED_OUT`]). Client
//! frames are forwarded from the start; the worker holds them until its
//! application accepted. Every event of a connection goes to the one worker
//! picked at connect ([`workers`]): affinity, and a close with
//! [`WORKER_LOST`] when that worker stops sending heartbeats.

mod workers;

use std::sync::Arc;
use std::time::Duration;

use channels_core::consumer::{
    Accept, Connect, ConsumerContext, ConsumerError, Frame, WebsocketConsumer, close_code,
};
use channels_core::{LayerError, Message, Value, async_trait};

pub(crate) use self::workers::{Registry, Workers, heartbeat_group};
use super::Shared;
use super::auth::{Reason, TokenRejection};
use super::forward;

/// The route of the pass-through: every path no other route takes.
pub(crate) const ROUTE: &str = "/{*path}";

/// How long the worker's application may take to accept.
pub(crate) const ACCEPT_TIMEOUT: Duration = Duration::from_secs(10);

/// The worker serving the connection went away (missed its heartbeats, or
/// left).
pub(crate) const WORKER_LOST: u16 = 4005;
/// No live worker when the connection came.
pub(crate) const NO_WORKER: u16 = 4006;
/// The application did not accept within [`ACCEPT_TIMEOUT`].
pub(crate) const ACCEPT_TIMED_OUT: u16 = 4007;
/// The worker's channel was full: an event could not be delivered.
pub(crate) const WORKER_BUSY: u16 = 4009;

/// The message the registry sends a connection whose worker died.
pub(crate) const WORKER_GONE: &str = "asgi.worker_gone";

/// The message type that carries a layer message sent straight to a
/// connection's channel on to its worker (`message` holds it).
const DISPATCH: &str = "asgi.dispatch";

/// What every pass-through connection shares.
#[derive(Debug)]
pub(crate) struct AsgiShared {
    pub(crate) workers: Arc<Workers>,
    pub(crate) gateway: Arc<Shared>,
}

/// One pass-through connection.
pub(crate) struct AsgiConsumer {
    shared: Arc<AsgiShared>,
    /// The worker serving the connection, once picked.
    worker: Option<Arc<str>>,
    /// The token's `sub`, when the client gave a valid token.
    user: Option<String>,
    accepted: bool,
}

impl AsgiConsumer {
    pub(crate) fn new(shared: Arc<AsgiShared>) -> Self {
        Self {
            shared,
            worker: None,
            user: None,
            accepted: false,
        }
    }

    /// Sends `event` to the connection's worker; closes the connection when
    /// the worker's channel is full (4009) or the layer failed (1011).
    async fn to_worker(&self, ctx: &mut ConsumerContext, event: Message) {
        let Some(worker) = &self.worker else { return };
        let asgi = &self.shared.gateway.metrics.asgi;
        match ctx.layer().send(worker, event).await {
            Ok(()) => asgi.event_sent(),
            Err(LayerError::ChannelFull { .. }) => {
                asgi.worker_busy();
                tracing::warn!(%worker, "ASGI worker's channel is full; closing the connection with 4009");
                ctx.close(WORKER_BUSY, "the backend worker is busy");
            }
            Err(error) => {
                asgi.event_failed();
                tracing::warn!(%worker, %error, "forwarding to the ASGI worker failed");
                ctx.close(close_code::INTERNAL_ERROR, "channel layer unavailable");
            }
        }
    }

    /// Checks a token given in the handshake, when a verifier is set.
    fn check_token(&mut self, ctx: &mut ConsumerContext) -> bool {
        if self.shared.gateway.verifier.is_development() {
            return true;
        }
        let Some(token) = super::consumer::handshake_token(ctx) else {
            return true;
        };
        match self.shared.gateway.verifier.verify(&token) {
            Ok(claims) => {
                self.user = Some(claims.sub);
                true
            }
            Err(rejection) => {
                self.refuse(ctx, &rejection);
                false
            }
        }
    }

    fn refuse(&self, ctx: &mut ConsumerContext, rejection: &TokenRejection) {
        let reason: Reason = rejection.reason;
        self.shared
            .gateway
            .metrics
            .gateway
            .auth_failed(reason.label());
        ctx.close(
            super::consumer::UNAUTHORIZED,
            format!("unauthorized: {rejection}"),
        );
    }
}

#[async_trait]
impl WebsocketConsumer for AsgiConsumer {
    async fn connect(&mut self, ctx: &mut ConsumerContext) -> Result<Connect, ConsumerError> {
        if !self.check_token(ctx) {
            return Ok(Accept::default().into());
        }
        let channel: Arc<str> = Arc::from(ctx.channel_name());
        let Some(worker) = self.shared.workers.attach(&channel) else {
            self.shared.gateway.metrics.asgi.no_worker();
            tracing::warn!(path = %ctx.scope().path, "no live ASGI worker; closing with 4006");
            ctx.close(NO_WORKER, "no backend worker is available");
            return Ok(Accept::default().into());
        };
        self.worker = Some(worker);
        let mut event = forward::connect_event(ctx, self.user.as_deref());
        if let Some(registry) = self.shared.workers.registry_channel() {
            // Where the worker may send `asgi.batch` replies.
            event.insert("gateway", &*registry);
        }
        self.to_worker(ctx, event).await;
        ctx.wake_at(tokio::time::Instant::now() + ACCEPT_TIMEOUT);
        Ok(Accept::default().into())
    }

    async fn receive(
        &mut self,
        ctx: &mut ConsumerContext,
        frame: Frame,
    ) -> Result<(), ConsumerError> {
        let event = forward::receive_event(ctx.channel_name(), self.user.as_deref(), frame);
        self.to_worker(ctx, event).await;
        Ok(())
    }

    async fn dispatch(
        &mut self,
        ctx: &mut ConsumerContext,
        message_type: &str,
        message: Message,
    ) -> Result<(), ConsumerError> {
        match message_type {
            "websocket.accept" => {
                self.accepted = true;
                ctx.cancel_wake();
            }
            "websocket.send" => {
                if let Some(text) = message.get("text").and_then(Value::as_str) {
                    ctx.send(Frame::from(text))?;
                } else if let Some(Value::Binary(bytes)) = message.get("bytes") {
                    ctx.send(Frame::from(bytes.clone()))?;
                } else {
                    tracing::warn!("websocket.send without `text` or `bytes`; dropped");
                }
            }
            "websocket.close" | "gateway.disconnect" => {
                let code = message
                    .get("code")
                    .and_then(Value::as_u64)
                    .and_then(|code| u16::try_from(code).ok())
                    .and_then(|code| crate::config::check_close_code(code).ok())
                    .unwrap_or(close_code::NORMAL);
                let reason = message.get("reason").and_then(Value::as_str).unwrap_or("");
                ctx.close(code, reason);
            }
            "gateway.subscribe" | "gateway.unsubscribe" => {
                let Some(group) = message.get("group").and_then(Value::as_str) else {
                    tracing::warn!(?message, "gateway control message without a string `group`");
                    return Ok(());
                };
                let result = if message_type == "gateway.subscribe" {
                    ctx.group_add(group).await
                } else {
                    ctx.group_discard(group).await
                };
                if let Err(error) = result {
                    tracing::warn!(%group, %error, "gateway control message failed");
                }
            }
            other if other.starts_with("gateway.") || other.starts_with("websocket.") => {
                tracing::debug!(message_type = other, "not for an ASGI connection; dropped");
            }
            WORKER_GONE => {
                // The registry already forgot the worker: say nothing to it.
                self.worker = None;
                ctx.close(WORKER_LOST, "the backend worker went away");
            }
            _ => {
                // `channel_layer.send(self.channel_name, ...)` from anywhere:
                // the consumer's handler runs in the worker.
                let event = Message::new(DISPATCH)
                    .with("reply_channel", ctx.channel_name())
                    .with("message", message.to_value());
                self.to_worker(ctx, event).await;
            }
        }
        Ok(())
    }

    async fn wake(&mut self, ctx: &mut ConsumerContext) -> Result<(), ConsumerError> {
        if !self.accepted {
            self.shared.gateway.metrics.asgi.accept_timed_out();
            ctx.close(
                ACCEPT_TIMED_OUT,
                "the application did not accept the connection in time",
            );
        }
        Ok(())
    }

    async fn disconnect(
        &mut self,
        ctx: &mut ConsumerContext,
        code: u16,
    ) -> Result<(), ConsumerError> {
        if let Some(worker) = self.worker.clone() {
            let event = forward::disconnect_event(ctx.channel_name(), self.user.as_deref(), code);
            if let Err(error) = ctx.layer().send(&worker, event).await {
                self.shared.gateway.metrics.asgi.event_failed();
                tracing::warn!(%worker, %error, "websocket.disconnect not delivered to the ASGI worker");
            } else {
                self.shared.gateway.metrics.asgi.event_sent();
            }
            self.shared.workers.detach(&worker, ctx.channel_name());
        }
        Ok(())
    }
}
