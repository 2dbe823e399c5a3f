//! ASGI pass-through (docs/protocol.md, "ASGI workers"): with a forward
//! channel set, a WebSocket upgrade on any path the server does not serve
//! itself is handed to a Python ASGI worker (`python -m
//! channels_rust.worker`) as the plain ASGI events of the connection, and
//! what the worker's application sends (`websocket.accept`, `websocket.send`,
//! `websocket.close`) is applied to the socket. No protocol v1 on those paths.
//!
//! As under Daphne, the upgrade waits for the application: `connect` sends
//! `websocket.connect` to a worker and defers ([`Connect::Defer`]); the
//! worker's `websocket.accept` answers 101 (with the subprotocol the
//! application chose), a `websocket.close` before it answers 403, and no
//! answer within [`ACCEPT_TIMEOUT`] answers 504. So the client can say
//! nothing before the application's `connect()` has run (its `group_add`
//! done). Every event of a connection goes to the one worker picked at
//! connect ([`workers`]): affinity, and a close with [`WORKER_LOST`] when
//! that worker stops sending heartbeats.

mod workers;

use std::sync::Arc;
use std::time::Duration;

use channels_core::consumer::{
    Accept, Connect, ConsumerContext, ConsumerError, Frame, WebsocketConsumer, close_code,
};
use channels_core::{LayerError, Message, SharedLayer, Value, async_trait};

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
/// The application did not accept within [`ACCEPT_TIMEOUT`]: the code its
/// worker's `websocket.disconnect` carries (the client gets HTTP 504).
pub(crate) const ACCEPT_TIMED_OUT: u16 = 4007;
/// The worker's channel was full: an event could not be delivered.
pub(crate) const WORKER_BUSY: u16 = 4009;

/// The message the registry sends a connection whose worker died.
pub(crate) const WORKER_GONE: &str = "asgi.worker_gone";

/// The HTTP answer to an upgrade whose application raised before accepting
/// (the worker closes with 1011), as Daphne's.
const APP_FAILED: u16 = 500;
/// The HTTP answer to an upgrade whose worker went away before its
/// application accepted.
const WORKER_FAILED: u16 = 502;
/// The HTTP answer to an upgrade whose application did not accept in time.
const ACCEPT_TIMEOUT_STATUS: u16 = 504;

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
    /// The connection's channel and the layer, once attached to a worker
    /// (for [`Drop`]).
    channel: Option<(Arc<str>, SharedLayer)>,
    /// The token's `sub`, when the client gave a valid token.
    user: Option<String>,
    accepted: bool,
}

impl AsgiConsumer {
    pub(crate) fn new(shared: Arc<AsgiShared>) -> Self {
        Self {
            shared,
            worker: None,
            channel: None,
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

    /// The worker's `websocket.accept` of a deferred connect: 101 with the
    /// application's subprotocol, which must be one the client offered.
    fn accept(&mut self, ctx: &mut ConsumerContext, message: &Message) {
        let subprotocol = message
            .get("subprotocol")
            .and_then(Value::as_str)
            .filter(|protocol| !protocol.is_empty());
        if let Some(protocol) = subprotocol
            && !ctx
                .scope()
                .subprotocols
                .iter()
                .any(|offered| offered == protocol)
        {
            // A browser fails a handshake naming a subprotocol it did not
            // offer; refuse it here, where the log can say why.
            self.shared.gateway.metrics.asgi.rejected();
            tracing::warn!(
                path = %ctx.scope().path,
                %protocol,
                offered = ?ctx.scope().subprotocols,
                "the ASGI application accepted with a subprotocol the client did not offer; answering 500"
            );
            ctx.fail_handshake(APP_FAILED);
            ctx.close(close_code::PROTOCOL_ERROR, "subprotocol not offered");
            return;
        }
        self.accepted = true;
        ctx.cancel_wake();
        ctx.accept(Accept {
            subprotocol: subprotocol.map(str::to_owned),
            ..Accept::default()
        });
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
        self.channel = Some((channel, ctx.layer().clone()));
        let mut event = forward::connect_event(ctx, self.user.as_deref());
        if let Some(registry) = self.shared.workers.registry_channel() {
            // Where the worker may send `asgi.batch` replies.
            event.insert("gateway", &*registry);
        }
        self.to_worker(ctx, event).await;
        if ctx.is_closing() {
            // Not delivered (4009, 1011): the socket opens to say so.
            return Ok(Accept::default().into());
        }
        ctx.wake_at(tokio::time::Instant::now() + ACCEPT_TIMEOUT);
        Ok(Connect::Defer)
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
            "websocket.accept" if ctx.is_deferring() => self.accept(ctx, &message),
            "websocket.close" if ctx.is_deferring() => {
                // Before accept: no socket. Daphne answers 403, or 500 when
                // the application raised (the worker closes with 1011).
                self.shared.gateway.metrics.asgi.rejected();
                let code = message.get("code").and_then(Value::as_u64);
                let code = code
                    .and_then(|code| u16::try_from(code).ok())
                    .unwrap_or(close_code::NORMAL);
                if code == close_code::INTERNAL_ERROR {
                    ctx.fail_handshake(APP_FAILED);
                }
                ctx.close(code, "closed before accept");
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
                ctx.fail_handshake(WORKER_FAILED);
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
            tracing::warn!(path = %ctx.scope().path, timeout = ?ACCEPT_TIMEOUT, "the ASGI application did not accept in time; answering 504");
            ctx.fail_handshake(ACCEPT_TIMEOUT_STATUS);
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
            self.worker = None;
        }
        Ok(())
    }
}

impl Drop for AsgiConsumer {
    /// A handshake dropped while it waited for the application (the client
    /// left, so the upgrade's future was dropped) never reaches
    /// `disconnect`: free the worker's table entry and tell the worker, so
    /// its application instance ends.
    fn drop(&mut self) {
        let (Some(worker), Some((channel, layer))) = (self.worker.take(), self.channel.take())
        else {
            return;
        };
        self.shared.workers.detach(&worker, &channel);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let event = forward::disconnect_event(&channel, self.user.as_deref(), close_code::ABNORMAL);
        let metrics = self.shared.gateway.metrics.clone();
        runtime.spawn(async move {
            match layer.send(&worker, event).await {
                Ok(()) => metrics.asgi.event_sent(),
                Err(error) => {
                    metrics.asgi.event_failed();
                    tracing::warn!(%worker, %error, "websocket.disconnect of an abandoned handshake not delivered");
                }
            }
        });
    }
}
