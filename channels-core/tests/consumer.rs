//! Consumers driven through the `Communicator` on the real in-memory layer:
//! lifecycle, groups, dispatch, JSON, slow clients, close paths, workers.

// Helpers outside #[test] fns unwrap too: a panic is how a test reports failure.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use channels_core::consumer::{
    Accept, Accepted, CloseFrame, Communicator, CommunicatorError, Connect, Connection,
    ConnectionSettings, ConsumerContext, ConsumerError, ConsumerRouter, ConsumerStats, Frame,
    Handshake, Identity, Inbound, InvalidJson, Json, JsonConsumer, MAX_DEFER, Outbound, Scope,
    ShutdownSignal, WebsocketConsumer, Worker, WorkerContext, run_worker,
};
use channels_core::{LayerError, Message, SharedLayer, async_trait};
use channels_memory::InMemoryChannelLayer;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(1);

fn memory_layer() -> SharedLayer {
    Arc::new(InMemoryChannelLayer::new())
}

/// What a consumer saw, for the test to check.
type Log = Arc<Mutex<Vec<String>>>;

fn entries(log: &Log) -> Vec<String> {
    log.lock().unwrap().clone()
}

/// A chat-room consumer: joins `room`, relays text to the group, relays
/// `chat.message` broadcasts to the client, and records its lifecycle.
struct Room {
    room: String,
    log: Log,
    reject: bool,
}

#[async_trait]
impl WebsocketConsumer for Room {
    fn groups(&self) -> Vec<String> {
        vec![self.room.clone()]
    }

    async fn connect(&mut self, ctx: &mut ConsumerContext) -> Result<Connect, ConsumerError> {
        self.log
            .lock()
            .unwrap()
            .push(format!("connect {}", ctx.groups().join(",")));
        if self.reject {
            return Ok(Connect::Reject);
        }
        Ok(Connect::accept())
    }

    async fn receive(
        &mut self,
        ctx: &mut ConsumerContext,
        frame: Frame,
    ) -> Result<(), ConsumerError> {
        match frame {
            Frame::Text(text) if text == "close" => ctx.close(4001, "asked to"),
            Frame::Text(text) if text == "fail" => return Err(ConsumerError::other("boom")),
            Frame::Text(text) => {
                ctx.group_send(
                    &self.room,
                    Message::new("chat.message").with("text", text.as_str()),
                )
                .await?;
            }
            Frame::Binary(bytes) => ctx.send_binary(bytes)?,
        }
        Ok(())
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
                    .get("text")
                    .and_then(|v| v.as_str())
                    .unwrap_or_default();
                ctx.send_text(text)
            }
            other => Err(ConsumerError::NoHandler {
                message_type: other.to_owned(),
            }),
        }
    }

    async fn disconnect(
        &mut self,
        ctx: &mut ConsumerContext,
        code: u16,
    ) -> Result<(), ConsumerError> {
        self.log
            .lock()
            .unwrap()
            .push(format!("disconnect {code} groups={}", ctx.groups().len()));
        Ok(())
    }
}

fn room(name: &str, log: &Log) -> Room {
    Room {
        room: name.into(),
        log: log.clone(),
        reject: false,
    }
}

async fn connected(layer: &SharedLayer, consumer: impl WebsocketConsumer) -> Communicator {
    let mut communicator = Communicator::new(layer.clone(), Scope::new("/ws/test"), consumer);
    let connected = communicator.connect().await.unwrap();
    assert!(connected.accepted);
    communicator
}

#[tokio::test]
async fn chat_between_two_consumers_through_a_group() {
    let layer = memory_layer();
    let log = Log::default();
    let mut alice = connected(&layer, room("lobby", &log)).await;
    let mut bob = connected(&layer, room("lobby", &log)).await;
    alice.send_text("hello").await.unwrap();
    assert_eq!(alice.receive_text().await.unwrap(), "hello");
    assert_eq!(bob.receive_text().await.unwrap(), "hello");
    alice.send_binary(vec![0u8, 159, 255]).await.unwrap();
    assert_eq!(
        alice.receive_binary().await.unwrap().as_ref(),
        &[0u8, 159, 255]
    );
    bob.receive_nothing(Duration::from_millis(50))
        .await
        .unwrap();
    assert_eq!(alice.disconnect(1000).await.unwrap(), 1000);
    assert_eq!(bob.disconnect(4000).await.unwrap(), 4000);
    assert_eq!(
        entries(&log),
        [
            "connect lobby",
            "connect lobby",
            "disconnect 1000 groups=0",
            "disconnect 4000 groups=0"
        ]
    );
}

#[tokio::test]
async fn groups_are_left_on_disconnect() {
    let layer = memory_layer();
    let log = Log::default();
    let mut alice = connected(&layer, room("lobby", &log)).await;
    let channel = alice.channel_name().unwrap().to_owned();
    alice.disconnect(1000).await.unwrap();
    // A probe channel in the same group still gets broadcasts; the gone
    // connection's channel does not.
    let probe = layer.new_channel("probe").await.unwrap();
    layer.group_add("lobby", &probe).await.unwrap();
    layer
        .group_send("lobby", Message::new("chat.message").with("text", "after"))
        .await
        .unwrap();
    let got = tokio::time::timeout(WAIT, layer.receive(&probe))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.get("text").and_then(|v| v.as_str()), Some("after"));
    let stale = tokio::time::timeout(Duration::from_millis(50), layer.receive(&channel)).await;
    assert!(stale.is_err(), "left channel still received {stale:?}");
}

#[tokio::test]
async fn reject_leaves_groups_and_reports_not_accepted() {
    let layer = memory_layer();
    let log = Log::default();
    let stats = Arc::new(ConsumerStats::default());
    let consumer = Room {
        room: "lobby".into(),
        log: log.clone(),
        reject: true,
    };
    let mut communicator = Communicator::new(layer.clone(), Scope::new("/ws/x"), consumer)
        .settings(ConnectionSettings::default().stats(stats.clone()));
    let connected = communicator.connect().await.unwrap();
    assert!(!connected.accepted);
    assert!(matches!(
        communicator.send_text("x").await,
        Err(CommunicatorError::NotConnected)
    ));
    assert_eq!(ConsumerStats::get(&stats.connections_rejected), 1);
    assert_eq!(ConsumerStats::get(&stats.connections_accepted), 0);
    // Nobody is left in the group: a broadcast reaches only a new probe.
    let probe = layer.new_channel("probe").await.unwrap();
    layer.group_add("lobby", &probe).await.unwrap();
    layer
        .group_send("lobby", Message::new("chat.message"))
        .await
        .unwrap();
    tokio::time::timeout(WAIT, layer.receive(&probe))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(entries(&log), ["connect lobby"]);
}

struct Subprotocols;

#[async_trait]
impl WebsocketConsumer for Subprotocols {
    async fn connect(&mut self, ctx: &mut ConsumerContext) -> Result<Connect, ConsumerError> {
        let chosen = ctx
            .scope()
            .subprotocols
            .iter()
            .find(|p| p.starts_with("v2"))
            .cloned();
        ctx.send_text("welcome")?;
        let mut accept = Accept::default().header("x-room", "lobby");
        if let Some(protocol) = chosen {
            accept = accept.subprotocol(protocol);
        }
        Ok(accept.into())
    }
}

#[tokio::test]
async fn accept_with_subprotocol_headers_and_early_frames() {
    let layer = memory_layer();
    let scope = Scope::new("/ws").with_header("Sec-WebSocket-Protocol", "v1.chat, v2.chat");
    let mut communicator = Communicator::new(layer, scope, Subprotocols);
    let connected = communicator.connect().await.unwrap();
    assert!(connected.accepted);
    assert_eq!(connected.subprotocol.as_deref(), Some("v2.chat"));
    assert_eq!(
        connected.headers,
        [("x-room".to_owned(), "lobby".to_owned())]
    );
    assert_eq!(communicator.receive_text().await.unwrap(), "welcome");
    assert!(matches!(
        communicator.connect().await,
        Err(CommunicatorError::AlreadyConnected)
    ));
}

#[tokio::test]
async fn private_types_are_dropped_and_unknown_types_close_1011() {
    let layer = memory_layer();
    let log = Log::default();
    let stats = Arc::new(ConsumerStats::default());
    let mut communicator = Communicator::new(layer.clone(), Scope::new("/ws"), room("g", &log))
        .settings(ConnectionSettings::default().stats(stats.clone()));
    communicator.connect().await.unwrap();
    let channel = communicator.channel_name().unwrap().to_owned();
    layer
        .send(&channel, Message::new("_private.thing"))
        .await
        .unwrap();
    layer
        .send(
            &channel,
            Message::new("chat.message").with("text", "still here"),
        )
        .await
        .unwrap();
    assert_eq!(communicator.receive_text().await.unwrap(), "still here");
    assert_eq!(ConsumerStats::get(&stats.messages_invalid), 1);

    layer
        .send(&channel, Message::new("no.such.handler"))
        .await
        .unwrap();
    let close = communicator.receive_close().await.unwrap();
    assert_eq!(close.code, 1011);
    assert_eq!(communicator.wait_finished().await.unwrap(), 1011);
    assert_eq!(ConsumerStats::get(&stats.consumer_errors), 1);
    assert_eq!(
        entries(&log).last().map(String::as_str),
        Some("disconnect 1011 groups=0")
    );
}

#[tokio::test]
async fn consumer_error_closes_1011_and_close_request_closes_with_its_code() {
    let layer = memory_layer();
    let log = Log::default();
    let mut failing = connected(&layer, room("a", &log)).await;
    failing.send_text("fail").await.unwrap();
    assert_eq!(
        failing.receive_close().await.unwrap(),
        CloseFrame::new(1011, "internal error")
    );

    let mut closing = connected(&layer, room("b", &log)).await;
    closing.send_binary(vec![1u8]).await.unwrap();
    closing.send_text("close").await.unwrap();
    assert_eq!(closing.receive_binary().await.unwrap().as_ref(), &[1u8]);
    assert_eq!(
        closing.receive_close().await.unwrap(),
        CloseFrame::new(4001, "asked to")
    );
    assert_eq!(closing.wait_finished().await.unwrap(), 4001);
    assert!(matches!(
        closing.receive_output().await,
        Err(CommunicatorError::OutputClosed)
    ));
}

#[tokio::test]
async fn slow_client_is_closed_1013_while_others_keep_receiving() {
    let layer = memory_layer();
    let log = Log::default();
    let stats = Arc::new(ConsumerStats::default());
    let settings = ConnectionSettings::default()
        .outbound_queue(4)
        .stats(stats.clone());
    let mut slow = Communicator::new(layer.clone(), Scope::new("/ws"), room("hot", &log))
        .settings(settings.clone());
    slow.connect().await.unwrap();
    slow.stop_reading().unwrap();
    let mut fast =
        Communicator::new(layer.clone(), Scope::new("/ws"), room("hot", &log)).settings(settings);
    fast.connect().await.unwrap();

    for i in 0..10 {
        layer
            .group_send(
                "hot",
                Message::new("chat.message").with("text", format!("m{i}")),
            )
            .await
            .unwrap();
        // The fast client reads everything as it comes.
        assert_eq!(fast.receive_text().await.unwrap(), format!("m{i}"));
    }
    // The slow one never read: its close jumps the queue.
    let close = slow.receive_close().await.unwrap();
    assert_eq!(close.code, 1013);
    assert_eq!(slow.wait_finished().await.unwrap(), 1013);
    assert!(ConsumerStats::get(&stats.queue_drops) >= 1);
    assert_eq!(ConsumerStats::get(&stats.connections_open), 1);
    fast.disconnect(1000).await.unwrap();
    assert_eq!(ConsumerStats::get(&stats.connections_open), 0);
}

#[tokio::test]
async fn a_server_behind_its_clients_holds_messages_back_instead_of_closing_them() {
    let layer = memory_layer();
    let log = Log::default();
    let stats = Arc::new(ConsumerStats::default());
    let settings = ConnectionSettings::default()
        .outbound_queue(4)
        .stats(stats.clone());
    // Nothing drains this client's queue yet, but its socket has room: the
    // writer is what lags (a server short of CPU), not the client.
    let mut lagging =
        Communicator::new(layer.clone(), Scope::new("/ws"), room("hot", &log)).settings(settings);
    lagging.connect().await.unwrap();
    for i in 0..20 {
        layer
            .group_send(
                "hot",
                Message::new("chat.message").with("text", format!("m{i}")),
            )
            .await
            .unwrap();
    }
    // Every message arrives, in order, once the writer catches up; the
    // runtime took no more than the queue holds and left the rest waiting in
    // the layer channel.
    for i in 0..20 {
        assert_eq!(lagging.receive_text().await.unwrap(), format!("m{i}"));
    }
    assert_eq!(ConsumerStats::get(&stats.queue_drops), 0);
    assert_eq!(layer.stats().dropped_full, 0);
    lagging.disconnect(1000).await.unwrap();
}

#[tokio::test]
async fn shutdown_closes_1001_and_leaves_groups() {
    let layer = memory_layer();
    let log = Log::default();
    let mut communicator = connected(&layer, room("lobby", &log)).await;
    assert_eq!(communicator.shutdown().await.unwrap(), 1001);
    assert_eq!(
        communicator.receive_close().await.unwrap(),
        CloseFrame::new(1001, "server shutting down")
    );
    assert_eq!(
        entries(&log).last().map(String::as_str),
        Some("disconnect 1001 groups=0")
    );
}

#[tokio::test]
async fn transport_violations_close_with_their_code() {
    let layer = memory_layer();
    let log = Log::default();
    let mut big = connected(&layer, room("a", &log)).await;
    big.send_inbound(Inbound::Invalid(CloseFrame::too_big(16)))
        .await
        .unwrap();
    assert_eq!(big.receive_close().await.unwrap().code, 1009);
    let mut utf8 = connected(&layer, room("a", &log)).await;
    utf8.send_inbound(Inbound::Invalid(CloseFrame::invalid_utf8()))
        .await
        .unwrap();
    assert_eq!(utf8.receive_close().await.unwrap().code, 1007);
    assert_eq!(utf8.wait_finished().await.unwrap(), 1007);
}

#[tokio::test]
async fn idle_connection_is_pinged_then_closed() {
    let layer = memory_layer();
    let log = Log::default();
    let settings = ConnectionSettings::default()
        .ping_interval(Some(Duration::from_millis(40)))
        .idle_timeout(Some(Duration::from_millis(200)));
    let mut communicator =
        Communicator::new(layer, Scope::new("/ws"), room("a", &log)).settings(settings);
    communicator.connect().await.unwrap();
    assert!(matches!(
        communicator.receive_output().await.unwrap(),
        Outbound::Ping(_)
    ));
    // A pong counts as activity, so the connection lives past the first timeout.
    communicator
        .send_inbound(Inbound::Pong(Default::default()))
        .await
        .unwrap();
    let close = communicator.receive_close().await.unwrap();
    assert_eq!(close, CloseFrame::new(1001, "idle timeout"));
}

/// A JSON consumer with a typed inbound message.
#[derive(serde::Deserialize)]
struct Say {
    say: String,
}

struct Shout {
    invalid: InvalidJson,
}

#[async_trait]
impl JsonConsumer for Shout {
    type Inbound = Say;

    fn invalid_json(&self) -> InvalidJson {
        self.invalid.clone()
    }

    async fn receive_json(
        &mut self,
        ctx: &mut ConsumerContext,
        content: Say,
    ) -> Result<(), ConsumerError> {
        ctx.send_json(&serde_json::json!({ "shout": content.say.to_uppercase() }))
    }
}

#[tokio::test]
async fn json_consumer_answers_invalid_json_with_an_error_frame_or_close() {
    let layer = memory_layer();
    let mut lenient = connected(
        &layer,
        Json(Shout {
            invalid: InvalidJson::ErrorFrame,
        }),
    )
    .await;
    lenient
        .send_json(&serde_json::json!({"say": "hi"}))
        .await
        .unwrap();
    let reply: serde_json::Value = lenient.receive_json().await.unwrap();
    assert_eq!(reply, serde_json::json!({"shout": "HI"}));
    lenient.send_text("{not json").await.unwrap();
    let error: serde_json::Value = lenient.receive_json().await.unwrap();
    assert!(
        error["error"].as_str().unwrap().starts_with("invalid JSON"),
        "{error}"
    );
    lenient.send_text(r#"{"wrong": 1}"#).await.unwrap();
    let error: serde_json::Value = lenient.receive_json().await.unwrap();
    assert!(error["error"].as_str().unwrap().contains("say"), "{error}");
    // Still open after all that.
    lenient
        .send_binary(br#"{"say": "bin"}"#.to_vec())
        .await
        .unwrap();
    let reply: serde_json::Value = lenient.receive_json().await.unwrap();
    assert_eq!(reply["shout"], "BIN");

    let mut strict = connected(
        &layer,
        Json(Shout {
            invalid: InvalidJson::Close(1007),
        }),
    )
    .await;
    strict.send_text("nope").await.unwrap();
    assert_eq!(strict.receive_close().await.unwrap().code, 1007);
}

struct ScopeReporter;

#[async_trait]
impl WebsocketConsumer for ScopeReporter {
    async fn connect(&mut self, ctx: &mut ConsumerContext) -> Result<Connect, ConsumerError> {
        let scope = ctx.scope();
        let report = serde_json::json!({
            "path": scope.path,
            "room": scope.param("room"),
            "page": scope.query("page"),
            "session": scope.cookie("sessionid"),
            "user": scope.user.as_ref().map(|u| u.id.clone()),
            "role": scope.user.as_ref().and_then(|u| u.claims.get("role").cloned()),
            "client": scope.client.map(|c| c.to_string()),
        });
        ctx.send_json(&report)?;
        Ok(Connect::accept())
    }
}

#[tokio::test]
async fn router_fills_route_params_and_scope() {
    let layer = memory_layer();
    let router = ConsumerRouter::new()
        .route("/ws/chat/{room}", |_| ScopeReporter)
        .route("/ws/other", |_| ScopeReporter);
    let mut communicator =
        Communicator::from_router(layer.clone(), &router, "/ws/chat/lobby?page=2").unwrap();
    let scope = communicator.scope_mut();
    *scope = scope
        .clone()
        .with_header("Cookie", "sessionid=s3cr3t")
        .with_client("127.0.0.1:5000".parse().unwrap())
        .with_user(Identity::new("alice").with_claim("role", "admin"));
    communicator.connect().await.unwrap();
    let report: serde_json::Value = communicator.receive_json().await.unwrap();
    assert_eq!(
        report,
        serde_json::json!({
            "path": "/ws/chat/lobby", "room": "lobby", "page": "2", "session": "s3cr3t",
            "user": "alice", "role": "admin", "client": "127.0.0.1:5000",
        })
    );
    assert!(matches!(
        Communicator::from_router(layer, &router, "/nope"),
        Err(CommunicatorError::NoRoute { .. })
    ));
}

struct BadGroup;

impl WebsocketConsumer for BadGroup {
    fn groups(&self) -> Vec<String> {
        vec!["ok".into(), "not a valid group!".into()]
    }
}

#[tokio::test]
async fn invalid_group_fails_the_handshake_with_the_layer_error() {
    let layer = memory_layer();
    let mut communicator = Communicator::new(layer, Scope::new("/ws"), BadGroup);
    let error = communicator.connect().await.unwrap_err();
    assert!(
        matches!(
            error,
            CommunicatorError::Consumer(ConsumerError::Layer(LayerError::InvalidGroupName { .. }))
        ),
        "{error}"
    );
}

/// A worker that turns `job.run` messages into `chat.message` broadcasts.
struct Announcer;

#[async_trait]
impl Worker for Announcer {
    async fn handle(
        &mut self,
        ctx: &WorkerContext,
        kind: &str,
        message: Message,
    ) -> Result<(), ConsumerError> {
        if kind == "job.run" {
            let text = format!(
                "done {}",
                message.get("id").and_then(|v| v.as_i64()).unwrap_or(-1)
            );
            ctx.layer()
                .group_send("jobs", Message::new("chat.message").with("text", text))
                .await?;
        }
        Ok(())
    }
}

#[tokio::test]
async fn worker_on_a_named_channel_notifies_sockets() {
    let layer = memory_layer();
    let log = Log::default();
    let mut socket = connected(&layer, room("jobs", &log)).await;
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(run_worker(
        layer.clone(),
        "background",
        Announcer,
        shutdown.clone(),
    ));
    layer
        .send("background", Message::new("_private"))
        .await
        .unwrap();
    layer
        .send("background", Message::new("job.run").with("id", 7))
        .await
        .unwrap();
    assert_eq!(socket.receive_text().await.unwrap(), "done 7");
    shutdown.cancel();
    tokio::time::timeout(WAIT, worker)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let bad = run_worker(layer, "bad name!", Announcer, CancellationToken::new()).await;
    assert!(matches!(bad, Err(LayerError::InvalidChannelName { .. })));
}

#[tokio::test]
async fn consumer_can_send_to_another_connection_channel() {
    struct Forward {
        to: String,
    }
    #[async_trait]
    impl WebsocketConsumer for Forward {
        async fn receive(
            &mut self,
            ctx: &mut ConsumerContext,
            frame: Frame,
        ) -> Result<(), ConsumerError> {
            let text = frame.as_text().unwrap_or_default().to_owned();
            ctx.send_to(&self.to, Message::new("chat.message").with("text", text))
                .await?;
            Ok(())
        }
    }
    let layer = memory_layer();
    let log = Log::default();
    let mut target = connected(&layer, room("t", &log)).await;
    let to = target.channel_name().unwrap().to_owned();
    let sender = connected(&layer, Forward { to }).await;
    sender.send_text("direct").await.unwrap();
    assert_eq!(target.receive_text().await.unwrap(), "direct");
}

/// Opens a connection for `consumer` on `layer`, which must accept it.
async fn accepted(layer: &SharedLayer, consumer: impl WebsocketConsumer) -> Box<Accepted> {
    let handshake = Connection::open(
        layer.clone(),
        Scope::new("/ws"),
        Box::new(consumer),
        Arc::new(ConnectionSettings::default()),
        &ShutdownSignal::new(),
    )
    .await
    .unwrap();
    let Handshake::Accepted(accepted) = handshake else {
        panic!("the consumer accepts")
    };
    accepted
}

#[tokio::test]
async fn a_connection_dropped_before_it_runs_still_leaves_its_groups() {
    let layer = memory_layer();
    let log = Log::default();
    let accepted = accepted(&layer, room("dropped", &log)).await;
    let channel = accepted.connection.channel_name().to_owned();
    drop(accepted);
    // The discard runs in the background; wait until the group is empty.
    let probe = layer.new_channel("probe").await.unwrap();
    layer.group_add("dropped", &probe).await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        // Let the background discard run (this test runtime has one thread).
        tokio::task::yield_now().await;
        layer
            .group_send("dropped", Message::new("chat.message"))
            .await
            .unwrap();
        tokio::time::timeout(WAIT, layer.receive(&probe))
            .await
            .unwrap()
            .unwrap();
        let stale = tokio::time::timeout(Duration::from_millis(20), layer.receive(&channel)).await;
        if stale.is_err() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "dropped connection stayed in its group"
        );
    }
}

/// What a running connection keeps: every live connection holds this state
/// in its task, and tokio rounds a task up to 128 bytes, so a few bytes more
/// can cost 128 per connection (the server's task was 1,792 bytes before
/// the state was cut to this; it is 1,536 now). Raise the bound only
/// knowingly.
#[tokio::test]
async fn a_running_connection_keeps_little_state() {
    let accepted = accepted(&memory_layer(), ScopeReporter).await;
    // The server's transport is a reference too.
    let (_tx, mut rx) = tokio::sync::mpsc::channel::<Inbound>(1);
    let running = accepted.connection.run(&mut rx, ShutdownSignal::new());
    let size = std::mem::size_of_val(&running);
    assert!(size <= 880, "a running connection keeps {size} bytes");
}

/// The runtime's futures must be `Send` so the server can spawn them.
#[allow(dead_code)]
fn runtime_futures_are_send(connection: channels_core::consumer::Connection) {
    fn is_send<T: Send>(_: T) {}
    let (_tx, rx) = tokio::sync::mpsc::channel::<Inbound>(1);
    is_send(connection.run(rx, ShutdownSignal::new()));
    is_send(channels_core::consumer::Connection::open(
        memory_layer(),
        Scope::new("/"),
        Box::new(ScopeReporter),
        Arc::new(ConnectionSettings::default()),
        &ShutdownSignal::new(),
    ));
}

/// Closes with 4002 when its timer fires, unless `refresh` frames push it
/// back (what the gateway does with token expiry).
struct Expiring {
    lifetime: Duration,
}

#[async_trait]
impl WebsocketConsumer for Expiring {
    async fn connect(&mut self, ctx: &mut ConsumerContext) -> Result<Connect, ConsumerError> {
        ctx.wake_at(tokio::time::Instant::now() + self.lifetime);
        Ok(Connect::accept())
    }

    async fn receive(
        &mut self,
        ctx: &mut ConsumerContext,
        frame: Frame,
    ) -> Result<(), ConsumerError> {
        match frame.as_text() {
            Some("refresh") => ctx.wake_at(tokio::time::Instant::now() + self.lifetime),
            Some("forever") => ctx.cancel_wake(),
            _ => {}
        }
        ctx.send_text("ok")
    }

    async fn wake(&mut self, ctx: &mut ConsumerContext) -> Result<(), ConsumerError> {
        ctx.close(4002, "expired");
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn the_consumer_timer_fires_can_be_moved_and_cancelled() {
    let layer: SharedLayer = Arc::new(InMemoryChannelLayer::new());
    // Shorter than the communicator's 1 s wait, so waits end on the timer.
    let lifetime = Duration::from_millis(400);

    let mut expiring = connected(&layer, Expiring { lifetime }).await;
    assert_eq!(expiring.receive_close().await.unwrap().code, 4002);

    let mut refreshed = connected(&layer, Expiring { lifetime }).await;
    tokio::time::advance(Duration::from_millis(300)).await;
    refreshed.send_text("refresh").await.unwrap();
    assert_eq!(refreshed.receive_text().await.unwrap(), "ok");
    tokio::time::advance(Duration::from_millis(300)).await;
    refreshed
        .receive_nothing(Duration::from_millis(50))
        .await
        .expect("the refresh moved the deadline");
    assert_eq!(refreshed.receive_close().await.unwrap().code, 4002);

    let mut kept = connected(&layer, Expiring { lifetime }).await;
    kept.send_text("forever").await.unwrap();
    assert_eq!(kept.receive_text().await.unwrap(), "ok");
    kept.receive_nothing(Duration::from_secs(2))
        .await
        .expect("a cancelled timer never fires");
}

/// Answers every frame with `ok`.
struct Answer;

#[async_trait]
impl WebsocketConsumer for Answer {
    async fn receive(
        &mut self,
        ctx: &mut ConsumerContext,
        _frame: Frame,
    ) -> Result<(), ConsumerError> {
        ctx.send_text("ok")
    }
}

#[tokio::test(start_paused = true)]
async fn frames_over_the_rate_limit_are_dropped_then_a_flood_is_closed_4029() {
    let layer: SharedLayer = Arc::new(InMemoryChannelLayer::new());
    let stats = Arc::new(ConsumerStats::default());
    let settings = ConnectionSettings::default()
        .inbound_rate(Some(5))
        .stats(stats.clone());
    let mut client =
        Communicator::new(layer.clone(), Scope::new("/ws/x"), Answer).settings(settings.clone());
    assert!(client.connect().await.unwrap().accepted);
    // A burst of twice the rate goes through; the rest of a quick volley is
    // dropped and counted, and the connection stays up.
    for _ in 0..12 {
        client.send_text("x").await.unwrap();
    }
    for _ in 0..10 {
        assert_eq!(client.receive_text().await.unwrap(), "ok");
    }
    client
        .receive_nothing(Duration::from_millis(50))
        .await
        .unwrap();
    assert_eq!(ConsumerStats::get(&stats.frames_rate_limited), 2);
    // A second later the bucket has refilled by the rate.
    tokio::time::advance(Duration::from_secs(1)).await;
    for _ in 0..5 {
        client.send_text("x").await.unwrap();
        assert_eq!(client.receive_text().await.unwrap(), "ok");
    }

    // A client that keeps going after a whole burst was dropped is closed.
    let mut flood = Communicator::new(layer, Scope::new("/ws/x"), Answer).settings(settings);
    assert!(flood.connect().await.unwrap().accepted);
    for _ in 0..30 {
        if flood.send_text("x").await.is_err() {
            break;
        }
    }
    loop {
        if let channels_core::consumer::Outbound::Close(frame) =
            flood.receive_output().await.unwrap()
        {
            assert_eq!(frame.code, 4029);
            break;
        }
    }
    assert_eq!(ConsumerStats::get(&stats.flood_closes), 1);
}

/// Defers its connect to messages on its channel, as the ASGI pass-through
/// waits for an application's `websocket.accept`; reports what it sees.
struct Deferring {
    events: tokio::sync::mpsc::UnboundedSender<String>,
}

impl Deferring {
    fn report(&self, event: String) {
        self.events.send(event).unwrap();
    }
}

#[async_trait]
impl WebsocketConsumer for Deferring {
    fn groups(&self) -> Vec<String> {
        vec!["deferred".into()]
    }

    async fn connect(&mut self, ctx: &mut ConsumerContext) -> Result<Connect, ConsumerError> {
        self.report(ctx.channel_name().to_owned());
        if ctx.scope().path == "/wake" {
            ctx.wake_at(tokio::time::Instant::now() + Duration::from_millis(50));
        }
        Ok(Connect::Defer)
    }

    async fn dispatch(
        &mut self,
        ctx: &mut ConsumerContext,
        message_type: &str,
        message: Message,
    ) -> Result<(), ConsumerError> {
        self.report(format!("{message_type} deferring={}", ctx.is_deferring()));
        match message_type {
            "app.accept" => {
                let protocol = message.get("subprotocol").and_then(|v| v.as_str());
                ctx.accept(Accept::default().subprotocol(protocol.unwrap_or_default()));
            }
            "app.close" => ctx.close(4403, "no"),
            _ => ctx.send_text(message_type.to_owned())?,
        }
        Ok(())
    }

    async fn wake(&mut self, ctx: &mut ConsumerContext) -> Result<(), ConsumerError> {
        self.report("wake".into());
        ctx.fail_handshake(504);
        ctx.close(4007, "too slow");
        Ok(())
    }

    async fn disconnect(
        &mut self,
        _ctx: &mut ConsumerContext,
        code: u16,
    ) -> Result<(), ConsumerError> {
        self.report(format!("disconnect {code}"));
        Ok(())
    }
}

/// Opens a [`Deferring`] connection in a task; returns its channel, its
/// reports and the handshake's outcome.
async fn open_deferred(
    layer: &SharedLayer,
    path: &str,
    shutdown: &ShutdownSignal,
) -> (
    String,
    tokio::sync::mpsc::UnboundedReceiver<String>,
    tokio::task::JoinHandle<Handshake>,
) {
    let (events, mut reports) = tokio::sync::mpsc::unbounded_channel();
    let (layer, path, shutdown) = (layer.clone(), path.to_owned(), shutdown.clone());
    let handshake = tokio::spawn(async move {
        let settings = Arc::new(ConnectionSettings::default());
        let consumer = Box::new(Deferring { events });
        Connection::open(layer, Scope::new(&path), consumer, settings, &shutdown)
            .await
            .unwrap()
    });
    let channel = tokio::time::timeout(WAIT, reports.recv())
        .await
        .unwrap()
        .unwrap();
    (channel, reports, handshake)
}

async fn next_report(reports: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(WAIT, reports.recv())
        .await
        .expect("a report")
        .unwrap()
}

/// Whether a `group_send` to `deferred` reaches `channel` (checked with a
/// probe member that must hear it first).
async fn in_group(layer: &SharedLayer, channel: &str) -> bool {
    let probe = layer.new_channel("probe").await.unwrap();
    layer.group_add("deferred", &probe).await.unwrap();
    layer
        .group_send("deferred", Message::new("probe.ping"))
        .await
        .unwrap();
    tokio::time::timeout(WAIT, layer.receive(&probe))
        .await
        .unwrap()
        .unwrap();
    layer.group_discard("deferred", &probe).await.unwrap();
    let heard = tokio::time::timeout(Duration::from_millis(50), layer.receive(channel)).await;
    heard.is_ok()
}

#[tokio::test]
async fn a_deferred_connect_is_accepted_by_a_message_and_keeps_the_rest_in_order() {
    let layer = memory_layer();
    let shutdown = ShutdownSignal::new();
    let (channel, mut reports, handshake) = open_deferred(&layer, "/ws", &shutdown).await;
    // Undecided: a message is dispatched, its frame waits for the socket.
    layer
        .send(&channel, Message::new("app.early"))
        .await
        .unwrap();
    assert_eq!(next_report(&mut reports).await, "app.early deferring=true");
    assert!(!handshake.is_finished());
    // The accept and the message right behind it arrive together: only the
    // accept is taken by the handshake.
    let accept = Message::new("app.accept").with("subprotocol", "chat.v2");
    layer.send(&channel, accept).await.unwrap();
    layer
        .send(&channel, Message::new("app.later"))
        .await
        .unwrap();
    let handshake = tokio::time::timeout(WAIT, handshake)
        .await
        .unwrap()
        .unwrap();
    let Handshake::Accepted(accepted) = handshake else {
        panic!("accepted, not {handshake:?}")
    };
    assert_eq!(accepted.accept.subprotocol.as_deref(), Some("chat.v2"));
    assert_eq!(next_report(&mut reports).await, "app.accept deferring=true");
    assert!(
        reports.try_recv().is_err(),
        "app.later ran before the accept"
    );

    let mut outbox = accepted.outbox;
    let (_inbound, inbound) = tokio::sync::mpsc::channel::<Inbound>(4);
    let task = tokio::spawn(accepted.connection.run(inbound, shutdown.clone()));
    assert_eq!(next_report(&mut reports).await, "app.later deferring=false");
    for expected in ["app.early", "app.later"] {
        let frame = tokio::time::timeout(WAIT, outbox.recv()).await.unwrap();
        assert_eq!(frame, Some(Outbound::Frame(Frame::from(expected))));
    }
    shutdown.trigger();
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
}

#[tokio::test]
async fn a_deferred_connect_closed_before_accept_is_rejected_and_disconnected() {
    let layer = memory_layer();
    let shutdown = ShutdownSignal::new();
    let (channel, mut reports, handshake) = open_deferred(&layer, "/ws", &shutdown).await;
    assert!(in_group(&layer, &channel).await, "groups are joined first");
    layer
        .send(&channel, Message::new("app.close"))
        .await
        .unwrap();
    let handshake = tokio::time::timeout(WAIT, handshake).await.unwrap();
    assert!(matches!(handshake.unwrap(), Handshake::Rejected));
    assert_eq!(next_report(&mut reports).await, "app.close deferring=true");
    assert_eq!(next_report(&mut reports).await, "disconnect 4403");
    assert!(!in_group(&layer, &channel).await, "groups are left");
}

#[tokio::test(start_paused = true)]
async fn a_deferred_connect_fails_at_its_deadline_at_shutdown_and_at_the_cap() {
    let layer = memory_layer();
    let shutdown = ShutdownSignal::new();
    // The consumer's own deadline: it fails the handshake with 504.
    let (_, mut reports, handshake) = open_deferred(&layer, "/wake", &shutdown).await;
    let handshake = tokio::time::timeout(WAIT, handshake).await.unwrap();
    assert!(matches!(
        handshake.unwrap(),
        Handshake::Failed { status: 504 }
    ));
    assert_eq!(next_report(&mut reports).await, "wake");
    assert_eq!(next_report(&mut reports).await, "disconnect 4007");

    // Shutdown: 503, and disconnect with the shutdown close code.
    let (_, mut reports, handshake) = open_deferred(&layer, "/ws", &shutdown).await;
    shutdown.trigger();
    let handshake = tokio::time::timeout(WAIT, handshake).await.unwrap();
    assert!(matches!(
        handshake.unwrap(),
        Handshake::Failed { status: 503 }
    ));
    assert_eq!(next_report(&mut reports).await, "disconnect 1001");

    // No deadline of its own: the runtime's cap answers 504.
    let never = ShutdownSignal::new();
    let (_, mut reports, handshake) = open_deferred(&layer, "/ws", &never).await;
    let started = tokio::time::Instant::now();
    let handshake = tokio::time::timeout(MAX_DEFER * 2, handshake)
        .await
        .unwrap();
    assert!(matches!(
        handshake.unwrap(),
        Handshake::Failed { status: 504 }
    ));
    assert!(started.elapsed() >= MAX_DEFER);
    assert_eq!(next_report(&mut reports).await, "disconnect 1006");
}
