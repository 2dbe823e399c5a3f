//! [`GatewayConsumer`]: one `/ws` connection speaking docs/protocol.md.
//!
//! The connection is accepted at once; it becomes *connected* when its token
//! checks out (from `?token=`, the `token.TOKEN` subprotocol, or the first
//! `connect` frame within [`CONNECT_TIMEOUT`]), or at the `connect` frame in
//! development mode. Then the server joins its groups (`user.<sub>` and the
//! token's `groups`), answers `connected`, and serves requests. Layer
//! messages addressed to it follow ASGI: `websocket.send` and
//! `websocket.close` act on the socket, `gateway.*` control messages act on
//! the connection, anything else is pushed as a `message` frame built once
//! per broadcast.
//!
//! - [`requests`]: the client's protocol requests and their answers;
//! - [`messages`]: layer messages addressed to the connection;
//! - [`presence`]: its presence entries and watched groups (`--presence`).

mod messages;
mod presence;
mod requests;

use std::sync::Arc;
use std::time::Duration;

use channels_core::consumer::{
    Accept, Connect, ConsumerContext, ConsumerError, Frame, Text, WebsocketConsumer, close_code,
};
use channels_core::{LayerError, Message, async_trait};
use serde_json::value::RawValue;

use super::Shared;
use super::auth::{Claims, Patterns, Reason, TokenRejection, unix_now};
use super::forward::{self, Forwarded};
use super::protocol::{
    self, Connected, ErrorCode, PROTOCOL_VERSION, Parsed, answer_frame, error_frame,
};
use crate::control::user_group;
use crate::history::{Joined, Position};

/// How long a connection may take to send its `connect` frame.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The subprotocol of this protocol; a client offering it also offers
/// `token.TOKEN`.
pub(crate) const SUBPROTOCOL: &str = "channels.v1";

/// Close codes of docs/protocol.md.
pub(crate) const UNAUTHORIZED: u16 = 4001;
pub(crate) const TOKEN_EXPIRED: u16 = 4002;

/// Prefix of the subprotocol that carries the token.
const TOKEN_SUBPROTOCOL: &str = "token.";

/// One gateway connection.
pub(crate) struct GatewayConsumer {
    shared: Arc<Shared>,
    /// Set once the connection is connected.
    session: Option<Session>,
    /// Groups the server joined (the user's, the token's, `gateway.subscribe`):
    /// the client cannot leave them.
    server_groups: Vec<String>,
    /// Groups the connection has a presence entry in.
    presence_groups: Vec<String>,
    /// Groups whose presence events the client asked for.
    watching: Vec<String>,
    /// Groups with history the connection is in: it gets their messages
    /// from this process's history relay, not as a group member.
    history_groups: Vec<String>,
}

/// A connected client.
struct Session {
    /// The token's claims; `None` for an anonymous connection (development mode).
    claims: Option<Claims>,
}

impl Session {
    fn user(&self) -> Option<&str> {
        self.claims.as_ref().map(|c| c.sub.as_str())
    }

    /// Whether the client may use `group` by the claim `patterns` picks;
    /// anonymous connections (development mode) may use any group.
    fn may(&self, patterns: impl Fn(&Claims) -> &Patterns, group: &str) -> bool {
        self.claims
            .as_ref()
            .is_none_or(|claims| patterns(claims).allows(group))
    }
}

impl GatewayConsumer {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            session: None,
            server_groups: Vec::new(),
            presence_groups: Vec::new(),
            watching: Vec::new(),
            history_groups: Vec::new(),
        }
    }

    /// Whether the connection is in `group` (as a member or through the
    /// history relay).
    fn is_in(&self, ctx: &ConsumerContext, group: &str) -> bool {
        ctx.groups().iter().any(|g| g == group) || self.history_groups.iter().any(|g| g == group)
    }

    /// Joins `group`: through this process's history relay when the group
    /// keeps history (recovering from `recover`), else as a member.
    async fn join(
        &mut self,
        ctx: &mut ConsumerContext,
        group: &str,
        recover: Option<Position>,
    ) -> Result<Option<Joined>, String> {
        let Some(histories) = self.shared.histories.clone() else {
            return ctx
                .group_add(group)
                .await
                .map(|()| None)
                .map_err(|e| e.to_string());
        };
        let Some(limits) = histories.limits(group) else {
            return ctx
                .group_add(group)
                .await
                .map(|()| None)
                .map_err(|e| e.to_string());
        };
        let joined = histories
            .subscribe(group, limits, ctx.local_sender(), recover)
            .await
            .map_err(|e| e.to_string())?;
        if !self.history_groups.iter().any(|g| g == group) {
            self.history_groups.push(group.to_owned());
        }
        Ok(Some(joined))
    }

    /// Leaves `group` (either way it was joined).
    async fn leave(&mut self, ctx: &mut ConsumerContext, group: &str) -> Result<(), String> {
        if let Some(at) = self.history_groups.iter().position(|g| g == group) {
            self.history_groups.swap_remove(at);
            if let Some(histories) = &self.shared.histories {
                histories.unsubscribe(group, Arc::from(ctx.channel_name()));
            }
            return Ok(());
        }
        ctx.group_discard(group).await.map_err(|e| e.to_string())
    }

    fn user(&self) -> Option<&str> {
        self.session.as_ref().and_then(Session::user)
    }

    /// Sends an `error` frame and counts it.
    fn error(
        &self,
        ctx: &mut ConsumerContext,
        id: Option<&RawValue>,
        code: ErrorCode,
        message: &str,
    ) -> Result<(), ConsumerError> {
        self.shared.metrics.gateway.error_sent(code.as_str());
        ctx.send_text(error_frame(id, code, message))
    }

    /// Refuses the connection's token: close 4001, counted by reason.
    fn refuse(&self, ctx: &mut ConsumerContext, rejection: &TokenRejection) {
        self.shared
            .metrics
            .gateway
            .auth_failed(rejection.reason.label());
        tracing::info!(reason = rejection.reason.label(), %rejection, "gateway token refused");
        ctx.close(UNAUTHORIZED, format!("unauthorized: {rejection}"));
    }

    /// Verifies `token` (or takes an anonymous client in development mode),
    /// joins the connection's groups, answers `connected` and tells the
    /// backend worker.
    async fn start_session(
        &mut self,
        ctx: &mut ConsumerContext,
        id: Option<&RawValue>,
        token: Option<&str>,
    ) -> Result<(), ConsumerError> {
        let claims = if self.shared.verifier.is_development() {
            if token.is_some() {
                tracing::debug!("development mode: the token is not checked");
            }
            None
        } else {
            let verdict = match token {
                Some(token) => self.shared.verifier.verify(token),
                None => Err(TokenRejection::new(
                    Reason::Missing,
                    "a token is required (?token=, the token.TOKEN subprotocol, or a connect frame)",
                )),
            };
            match verdict {
                Ok(claims) => Some(claims),
                Err(rejection) => {
                    self.refuse(ctx, &rejection);
                    return Ok(());
                }
            }
        };
        let mut groups = Vec::new();
        if let Some(claims) = &claims {
            groups.push(user_group(&claims.sub));
            for group in &claims.groups {
                if !groups.contains(group) {
                    groups.push(group.clone());
                }
            }
        }
        for group in &groups {
            if let Err(error) = self.join(ctx, group, None).await {
                static LIMIT: channels_core::LogLimiter = channels_core::LogLimiter::per_second();
                if let Some(held_back) = LIMIT.allow() {
                    tracing::warn!(held_back, %group, %error, "gateway could not join a connection's group");
                }
                ctx.close(close_code::INTERNAL_ERROR, "channel layer unavailable");
                return Ok(());
            }
        }
        let expires_at = claims.as_ref().and_then(|c| c.exp);
        match expires_at {
            Some(exp) => ctx.wake_at(deadline_of(exp)),
            None => ctx.cancel_wake(),
        }
        let connected = Connected {
            protocol: PROTOCOL_VERSION,
            channel: ctx.channel_name(),
            user: claims.as_ref().map(|c| c.sub.as_str()),
            groups: &groups,
            expires_at,
            ping_interval: self.shared.ping_interval,
        };
        let frame = answer_frame("connected", id, connected);
        self.server_groups = groups.clone();
        self.session = Some(Session { claims });
        for group in &groups {
            self.presence_join(ctx, group).await;
        }
        ctx.send_text(frame)?;
        if let Some(channel) = self.shared.forward.clone() {
            let event = forward::connect_event(ctx, self.user());
            self.forward(ctx, &channel, event).await?;
        }
        Ok(())
    }

    /// Sends an event to the backend worker; tells the client when it could
    /// not be delivered.
    async fn forward(
        &self,
        ctx: &mut ConsumerContext,
        channel: &str,
        event: Message,
    ) -> Result<(), ConsumerError> {
        let gateway = &self.shared.metrics.gateway;
        match forward::forward(ctx, channel, event).await {
            Forwarded::Sent => {
                gateway.forwarded();
                Ok(())
            }
            Forwarded::Busy => {
                gateway.forward_dropped();
                static LIMIT: channels_core::LogLimiter = channels_core::LogLimiter::per_second();
                if let Some(held_back) = LIMIT.allow() {
                    tracing::warn!(held_back, %channel, "forward channel full; frame not delivered");
                }
                self.error(
                    ctx,
                    None,
                    ErrorCode::WorkerBusy,
                    &format!("the backend worker's channel `{channel}` is full: the frame was not delivered"),
                )
            }
            Forwarded::Failed(error) => {
                gateway.forward_dropped();
                static LIMIT: channels_core::LogLimiter = channels_core::LogLimiter::per_second();
                if let Some(held_back) = LIMIT.allow() {
                    tracing::warn!(held_back, %channel, %error, "forwarding failed in the channel layer");
                }
                self.error(
                    ctx,
                    None,
                    ErrorCode::Unavailable,
                    "channel layer unavailable: the frame was not delivered; retry",
                )
            }
        }
    }

    /// A frame that is not a protocol request: forwarded to the backend
    /// worker when there is one, else answered with `code`.
    async fn other_frame(
        &mut self,
        ctx: &mut ConsumerContext,
        frame: Frame,
        code: ErrorCode,
        message: &str,
    ) -> Result<(), ConsumerError> {
        if self.session.is_none() {
            return self.error(
                ctx,
                None,
                ErrorCode::BadRequest,
                "send a `connect` frame first",
            );
        }
        match self.shared.forward.clone() {
            Some(channel) => {
                let event = forward::receive_event(ctx.channel_name(), self.user(), frame);
                self.forward(ctx, &channel, event).await
            }
            None => self.error(ctx, None, code, message),
        }
    }
}

/// The tokio instant of Unix time `exp`.
fn deadline_of(exp: u64) -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(exp.saturating_sub(unix_now()))
}

/// The token the client gave when it connected: `?token=`, else a
/// `token.TOKEN` subprotocol.
pub(super) fn handshake_token(ctx: &ConsumerContext) -> Option<String> {
    let scope = ctx.scope();
    scope.query("token").filter(|t| !t.is_empty()).or_else(|| {
        scope
            .subprotocols
            .iter()
            .find_map(|p| p.strip_prefix(TOKEN_SUBPROTOCOL))
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
    })
}

#[async_trait]
impl WebsocketConsumer for GatewayConsumer {
    async fn connect(&mut self, ctx: &mut ConsumerContext) -> Result<Connect, ConsumerError> {
        let mut accept = Accept::default();
        if ctx.scope().subprotocols.iter().any(|p| p == SUBPROTOCOL) {
            accept = accept.subprotocol(SUBPROTOCOL);
        }
        match handshake_token(ctx) {
            Some(token) => self.start_session(ctx, None, Some(&token)).await?,
            None => ctx.wake_at(tokio::time::Instant::now() + CONNECT_TIMEOUT),
        }
        Ok(accept.into())
    }

    async fn receive(
        &mut self,
        ctx: &mut ConsumerContext,
        frame: Frame,
    ) -> Result<(), ConsumerError> {
        let text: Text = match &frame {
            Frame::Text(text) => text.clone(),
            Frame::Binary(_) => {
                return self
                    .other_frame(
                        ctx,
                        frame,
                        ErrorCode::UnknownFrame,
                        "binary frames are only forwarded to a backend worker, and none is configured",
                    )
                    .await;
            }
        };
        match protocol::parse(&text) {
            Parsed::Request(id, request) => self.handle(ctx, id.as_deref(), request).await,
            Parsed::Invalid(id, message) => {
                self.error(ctx, id.as_deref(), ErrorCode::BadRequest, &message)
            }
            Parsed::Other(code, message) => self.other_frame(ctx, frame, code, &message).await,
        }
    }

    async fn dispatch(
        &mut self,
        ctx: &mut ConsumerContext,
        message_type: &str,
        message: Message,
    ) -> Result<(), ConsumerError> {
        self.on_layer_message(ctx, message_type, message).await
    }

    async fn wake(&mut self, ctx: &mut ConsumerContext) -> Result<(), ConsumerError> {
        match &self.session {
            None => {
                let rejection = TokenRejection::new(
                    Reason::Timeout,
                    format!("no connect frame within {} s", CONNECT_TIMEOUT.as_secs()),
                );
                self.refuse(ctx, &rejection);
            }
            Some(session) => {
                let expired = session
                    .claims
                    .as_ref()
                    .and_then(|c| c.exp)
                    .is_some_and(|exp| exp <= unix_now());
                if expired {
                    ctx.close(TOKEN_EXPIRED, "token expired");
                } else if let Some(exp) = session.claims.as_ref().and_then(|c| c.exp) {
                    // Woken a little early (clock granularity): wait again.
                    ctx.wake_at(deadline_of(exp) + Duration::from_millis(50));
                }
            }
        }
        Ok(())
    }

    async fn layer_error(
        &mut self,
        ctx: &mut ConsumerContext,
        error: &LayerError,
    ) -> Result<(), ConsumerError> {
        static LIMIT: channels_core::LogLimiter = channels_core::LogLimiter::per_second();
        if let Some(held_back) = LIMIT.allow() {
            tracing::warn!(held_back, %error, "gateway connection lost its channel layer; retrying");
        }
        self.error(
            ctx,
            None,
            ErrorCode::Unavailable,
            "channel layer unavailable; retrying",
        )
    }

    async fn disconnect(
        &mut self,
        ctx: &mut ConsumerContext,
        code: u16,
    ) -> Result<(), ConsumerError> {
        self.shared.metrics.gateway.closed(code);
        self.presence_disconnect(ctx).await;
        if let Some(histories) = &self.shared.histories {
            let channel: Arc<str> = Arc::from(ctx.channel_name());
            for group in self.history_groups.drain(..) {
                histories.unsubscribe(&group, channel.clone());
            }
        }
        if let (Some(channel), Some(_)) = (self.shared.forward.clone(), &self.session) {
            let event = forward::disconnect_event(ctx.channel_name(), self.user(), code);
            match forward::forward(ctx, &channel, event).await {
                Forwarded::Sent => self.shared.metrics.gateway.forwarded(),
                Forwarded::Busy | Forwarded::Failed(_) => {
                    self.shared.metrics.gateway.forward_dropped();
                    static LIMIT: channels_core::LogLimiter =
                        channels_core::LogLimiter::per_second();
                    if let Some(held_back) = LIMIT.allow() {
                        tracing::warn!(held_back, %channel, "websocket.disconnect not delivered to the backend worker");
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use channels_core::SharedLayer;
    use channels_core::consumer::{Communicator, Outbound};

    use super::*;
    use crate::config::GatewayConfig;
    use crate::gateway::Gateway;
    use crate::metrics::Metrics;

    fn gateway() -> (Gateway, SharedLayer) {
        let metrics = Arc::new(Metrics::new());
        let gateway = Gateway::new(&GatewayConfig::default(), metrics, None, None, None).unwrap();
        let layer: SharedLayer = Arc::new(channels_memory::InMemoryChannelLayer::new());
        (gateway, layer)
    }

    async fn member(gateway: &Gateway, layer: &SharedLayer) -> Communicator {
        let mut member =
            Communicator::from_router(layer.clone(), &gateway.consumers(), "/ws").unwrap();
        assert!(member.connect().await.unwrap().accepted);
        member.send_text(r#"{"type":"connect"}"#).await.unwrap();
        assert!(member.receive_text().await.unwrap().contains("connected"));
        member
            .send_text(r#"{"type":"subscribe","group":"room"}"#)
            .await
            .unwrap();
        assert!(member.receive_text().await.unwrap().contains("subscribed"));
        member
    }

    fn text_bytes(outbound: Outbound) -> bytes::Bytes {
        match outbound {
            Outbound::Frame(Frame::Text(text)) => text.into_bytes(),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_broadcast_is_serialized_once_for_every_member() {
        let (gateway, layer) = gateway();
        let mut one = member(&gateway, &layer).await;
        let mut two = member(&gateway, &layer).await;
        layer
            .group_send("room", Message::new("news").with("text", "once"))
            .await
            .unwrap();
        let first = text_bytes(one.receive_output().await.unwrap());
        let second = text_bytes(two.receive_output().await.unwrap());
        assert_eq!(
            first,
            r#"{"type":"message","data":{"type":"news","text":"once"}}"#
        );
        // The same buffer in both outboxes, not two equal copies.
        assert_eq!(first.as_ptr(), second.as_ptr());
    }

    #[tokio::test(start_paused = true)]
    async fn no_connect_frame_within_ten_seconds_closes_with_4001() {
        let (gateway, layer) = gateway();
        let mut client = Communicator::from_router(layer, &gateway.consumers(), "/ws")
            .unwrap()
            .timeout(Duration::from_secs(30));
        assert!(client.connect().await.unwrap().accepted);
        let close = client.receive_close().await.unwrap();
        assert_eq!(close.code, UNAUTHORIZED);
        assert!(
            close.reason.contains("no connect frame within 10 s"),
            "{close:?}"
        );
    }

    #[tokio::test]
    async fn a_subscriber_whose_mailbox_overflows_is_told_and_recovers_the_gap() {
        use channels_core::consumer::ConnectionSettings;
        use channels_core::{CapacityPattern, LayerConfig};

        use crate::history::{Histories, HistoryConfig};

        // Connection mailboxes hold 4 messages; the history channel plenty.
        let config = LayerConfig::default()
            .capacity(4)
            .channel_capacity(CapacityPattern::glob("history.*").unwrap(), 1_000);
        let layer: SharedLayer =
            Arc::new(channels_memory::InMemoryChannelLayer::with_config(config));
        let metrics = Arc::new(Metrics::new());
        let histories = Histories::new(
            layer.clone(),
            HistoryConfig::every_group(1_000, Duration::from_secs(60)),
            metrics.history.clone(),
            tokio_util::sync::CancellationToken::new(),
        )
        .unwrap();
        let gateway = Gateway::new(
            &GatewayConfig::default(),
            metrics.clone(),
            None,
            None,
            histories,
        )
        .unwrap();
        let mut client = Communicator::from_router(layer.clone(), &gateway.consumers(), "/ws")
            .unwrap()
            .settings(ConnectionSettings::default().outbound_queue(2));
        assert!(client.connect().await.unwrap().accepted);
        client.send_text(r#"{"type":"connect"}"#).await.unwrap();
        assert!(client.receive_text().await.unwrap().contains("connected"));
        client
            .send_text(r#"{"type":"subscribe","group":"room"}"#)
            .await
            .unwrap();
        let joined: serde_json::Value = client.receive_json().await.unwrap();
        let epoch = joined["epoch"].as_str().unwrap().to_owned();

        // The client reads nothing while 40 messages go out: its outbound
        // queue fills, the runtime holds its mailbox back, the mailbox fills.
        for n in 1..=40 {
            layer
                .group_send("room", Message::new("n").with("n", n))
                .await
                .unwrap();
            tokio::task::yield_now().await;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while metrics.history.lost_count("overflow") == 0 {
            assert!(tokio::time::Instant::now() < deadline, "no overflow");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        // What it gets: consecutive pushes, then `lost` at the last of them.
        let mut last = 0;
        let lost = loop {
            let frame: serde_json::Value = client.receive_json().await.unwrap();
            match frame["type"].as_str() {
                Some("message") => {
                    last += 1;
                    assert_eq!(frame["offset"], last, "{frame}");
                    assert_eq!(frame["data"]["n"], last, "{frame}");
                }
                Some("lost") => break frame,
                _ => panic!("unexpected {frame}"),
            }
        };
        assert!(last < 40, "nothing overflowed");
        assert_eq!(lost["reason"], "overflow", "{lost}");
        assert_eq!(lost["offset"], last, "{lost}");
        client
            .receive_nothing(Duration::from_millis(200))
            .await
            .unwrap();

        // Subscribing again from its last offset fills the gap exactly.
        client
            .send_text(format!(
                r#"{{"type":"subscribe","group":"room","recover":{{"offset":{last},"epoch":"{epoch}"}}}}"#
            ))
            .await
            .unwrap();
        let recovered: serde_json::Value = client.receive_json().await.unwrap();
        assert_eq!(recovered["recovered"], true, "{recovered}");
        let offsets: Vec<u64> = recovered["publications"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["offset"].as_u64().unwrap())
            .collect();
        assert_eq!(offsets, (last + 1..=40).collect::<Vec<_>>());
        layer
            .group_send("room", Message::new("n").with("n", 41))
            .await
            .unwrap();
        let live: serde_json::Value = client.receive_json().await.unwrap();
        assert_eq!(live["offset"], 41, "{live}");
    }

    #[tokio::test]
    async fn publishes_wait_while_the_server_is_behind_for_its_readers() {
        use channels_core::consumer::{ConnectionSettings, ConsumerStats};

        let (gateway, layer) = gateway();
        let stats = Arc::new(ConsumerStats::default());
        let settings = || {
            ConnectionSettings::default()
                .outbound_queue(2)
                .stats(stats.clone())
        };
        let connect = |layer: SharedLayer| {
            let mut client = Communicator::from_router(layer, &gateway.consumers(), "/ws")
                .unwrap()
                .settings(settings())
                .timeout(Duration::from_secs(5));
            async move {
                assert!(client.connect().await.unwrap().accepted);
                client.send_text(r#"{"type":"connect"}"#).await.unwrap();
                assert!(client.receive_text().await.unwrap().contains("connected"));
                client
            }
        };
        let mut reader = connect(layer.clone()).await;
        reader
            .send_text(r#"{"type":"subscribe","group":"room"}"#)
            .await
            .unwrap();
        assert!(reader.receive_text().await.unwrap().contains("subscribed"));
        let mut publisher = connect(layer.clone()).await;

        // The reader's frames are not taken: its queue passes its bound with
        // the socket free (the server is behind for it): held back.
        for n in 0..8 {
            layer
                .group_send("room", Message::new("n").with("n", n))
                .await
                .unwrap();
        }
        let held_back =
            test_support::eventually(Duration::from_secs(5), || async { stats.is_overloaded() })
                .await;
        assert!(held_back, "never held back");
        /// A WebSocket publish to another group, answered `published`.
        async fn publish(client: &mut Communicator, id: u32) {
            let frame = format!(
                r#"{{"type":"publish","id":{id},"group":"elsewhere","data":{{"type":"x"}}}}"#
            );
            client.send_text(&frame).await.unwrap();
            assert!(client.receive_text().await.unwrap().contains("published"));
        }

        // One of two connections held back: a publish waits the longest
        // back-pressure wait, then goes out, counted.
        let started = tokio::time::Instant::now();
        publish(&mut publisher, 1).await;
        assert!(started.elapsed() >= channels_core::consumer::PUBLISH_BACKPRESSURE);
        assert_eq!(ConsumerStats::get(&stats.backpressure_timeouts), 1);

        // The reader catches up (takes all eight): publishes go at once again.
        while !reader.receive_text().await.unwrap().contains(r#""n":7"#) {}
        assert!(!stats.is_overloaded());
        let waits = ConsumerStats::get(&stats.backpressure_waits);
        publish(&mut publisher, 2).await;
        assert_eq!(ConsumerStats::get(&stats.backpressure_waits), waits);
    }
}
