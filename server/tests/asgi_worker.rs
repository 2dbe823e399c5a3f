//! The ASGI pass-through (docs/protocol.md, "ASGI workers") against a worker
//! written here on the same memory layer, speaking the worker protocol:
//! heartbeats to `NAME.workers`, `websocket.connect` with the request's path
//! on the worker's own channel, answers to `reply_channel`, layer messages
//! sent to the connection's channel arriving as `asgi.dispatch`, the
//! handshake answered only when the application decides (101 with its
//! subprotocol, 403 for a close before accept, 500 for an error or a
//! subprotocol the client did not offer, 504 when it never accepts), and the
//! close codes: 4006 with no worker, 4005 when its heartbeats stop, 4009
//! when its channel is full. The Python worker itself is tested end to end
//! in python/tests.

// Helpers outside #[test] fns unwrap too: a panic is how a test reports failure.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use channels_core::{LayerConfig, Message, Receiver, SharedLayer, Value};
use channels_memory::InMemoryChannelLayer;
use channels_server::{App, GatewayConfig, ServerConfig};
use common::{Server, WAIT, connect, expect_close, http, next_message, send_text};
use test_support::metric_value;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message as WsMessage;

const FORWARD: &str = "django";
const HEARTBEAT: f64 = 0.2;

async fn server(layer: SharedLayer) -> Server {
    let config = ServerConfig::default().gateway(GatewayConfig::default().forward_channel(FORWARD));
    let app = App::new(layer.clone(), config).gateway().unwrap();
    Server::start_app(layer, app).await
}

async fn metric(server: &Server, name: &str) -> f64 {
    let page = http(server.address, "GET", "/metrics", &[], b"").await;
    metric_value(&page.body, name).unwrap_or_else(|| panic!("{name} not in /metrics"))
}

async fn wait_metric(server: &Server, name: &str, value: f64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let seen = metric(server, name).await;
        if seen == value {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} is {seen}, not {value}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A worker: its channel, and a task sending heartbeats until aborted.
struct FakeWorker {
    inbox: Receiver,
    beats: JoinHandle<()>,
}

impl FakeWorker {
    async fn start(layer: &SharedLayer) -> Self {
        let inbox = layer.new_receiver("worker").await.unwrap();
        let channel = inbox.channel().to_owned();
        let beat_layer = layer.clone();
        let beats = tokio::spawn(async move {
            loop {
                let beat = Message::new("asgi.worker.heartbeat")
                    .with("channel", channel.as_str())
                    .with("interval", HEARTBEAT);
                beat_layer
                    .group_send(&format!("{FORWARD}.workers"), beat)
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_secs_f64(HEARTBEAT)).await;
            }
        });
        Self { inbox, beats }
    }

    async fn next(&self) -> Message {
        tokio::time::timeout(Duration::from_secs(5), self.inbox.recv())
            .await
            .expect("an event for the worker")
            .unwrap()
    }
}

/// The outcome of an upgrade: the client and its 101 response, or the HTTP
/// status it was refused with.
type Upgrade = Result<
    (
        common::Client,
        tokio_tungstenite::tungstenite::handshake::client::Response,
    ),
    u16,
>;

/// Starts an upgrade offering `subprotocols`, in a task: it completes only
/// when the application decides.
fn start_upgrade(url: String, subprotocols: &[&str]) -> JoinHandle<Upgrade> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let mut request = url.into_client_request().unwrap();
    if !subprotocols.is_empty() {
        request.headers_mut().insert(
            "sec-websocket-protocol",
            subprotocols.join(", ").parse().unwrap(),
        );
    }
    tokio::spawn(async move {
        match tokio_tungstenite::connect_async(request).await {
            Ok(done) => Ok(done),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                Err(response.status().as_u16())
            }
            Err(other) => panic!("unexpected upgrade error: {other}"),
        }
    })
}

/// Waits (at most `wait`) for an upgrade started with [`start_upgrade`].
async fn finish_upgrade(upgrade: JoinHandle<Upgrade>, wait: Duration) -> Upgrade {
    tokio::time::timeout(wait, upgrade)
        .await
        .expect("the upgrade was not answered in time")
        .unwrap()
}

/// The worker takes a `websocket.connect` and answers `replies` to it;
/// returns the connect event.
async fn answer_connect(
    layer: &SharedLayer,
    worker: &FakeWorker,
    replies: Vec<Message>,
) -> Message {
    let event = worker.next().await;
    assert_eq!(event.message_type(), Some("websocket.connect"), "{event:?}");
    let reply = text(&event, "reply_channel");
    for message in replies {
        layer.send(&reply, message).await.unwrap();
    }
    event
}

fn text(message: &Message, key: &str) -> String {
    message
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string {key} in {message:?}"))
        .to_owned()
}

#[tokio::test]
async fn no_live_worker_closes_with_4006() {
    let layer: SharedLayer = Arc::new(InMemoryChannelLayer::new());
    let server = server(layer).await;
    let mut client = connect(&server.ws_url("/ws/chat/lobby/")).await;
    assert_eq!(u16::from(expect_close(&mut client).await.code), 4006);
    assert_eq!(metric(&server, "channels_asgi_no_worker_total").await, 1.0);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn events_go_to_one_worker_and_its_death_closes_with_4005() {
    let layer: SharedLayer = Arc::new(InMemoryChannelLayer::new());
    let server = server(layer.clone()).await;
    let worker = FakeWorker::start(&layer).await;
    wait_metric(&server, "channels_asgi_workers", 1.0).await;

    let upgrade = start_upgrade(server.ws_url("/ws/chat/lobby/?x=1"), &[]);
    // The accept and a send right behind it: the send follows the 101.
    let connect_event = answer_connect(
        &layer,
        &worker,
        vec![
            Message::new("websocket.accept"),
            Message::new("websocket.send").with("text", "welcome"),
        ],
    )
    .await;
    assert_eq!(text(&connect_event, "path"), "/ws/chat/lobby/");
    assert_eq!(text(&connect_event, "query_string"), "x=1");
    let reply = text(&connect_event, "reply_channel");
    let (mut client, _) = finish_upgrade(upgrade, WAIT).await.unwrap();
    assert_eq!(next_message(&mut client).await, WsMessage::text("welcome"));

    // Replies batched through the gateway process's registry channel.
    let gateway = text(&connect_event, "gateway");
    let batch = Message::new("asgi.batch").with(
        "messages",
        Value::Array(vec![
            Value::Array(vec![
                reply.as_str().into(),
                Message::new("websocket.send")
                    .with("text", "one")
                    .to_value(),
            ]),
            Value::Array(vec![
                reply.as_str().into(),
                Message::new("websocket.send")
                    .with("text", "two")
                    .to_value(),
            ]),
        ]),
    );
    layer.send(&gateway, batch).await.unwrap();
    assert_eq!(next_message(&mut client).await, WsMessage::text("one"));
    assert_eq!(next_message(&mut client).await, WsMessage::text("two"));

    send_text(&mut client, "hello").await;
    let receive = worker.next().await;
    assert_eq!(receive.message_type(), Some("websocket.receive"));
    assert_eq!(text(&receive, "text"), "hello");
    assert_eq!(text(&receive, "reply_channel"), reply);

    // A layer message to the connection's channel reaches its worker.
    layer
        .send(&reply, Message::new("chat.message").with("message", "hi"))
        .await
        .unwrap();
    let dispatch = worker.next().await;
    assert_eq!(dispatch.message_type(), Some("asgi.dispatch"));
    assert_eq!(text(&dispatch, "reply_channel"), reply);
    let inner = Message::from_value(dispatch.get("message").unwrap().clone()).unwrap();
    assert_eq!(inner.message_type(), Some("chat.message"));
    assert_eq!(text(&inner, "message"), "hi");

    // A group the backend subscribed the connection to reaches the worker
    // the same way; other gateway.* types do not.
    layer
        .send(
            &reply,
            Message::new("gateway.subscribe").with("group", "room"),
        )
        .await
        .unwrap();
    layer
        .send(&reply, Message::new("gateway.unknown"))
        .await
        .unwrap();
    // Handled in order: once this one reaches the worker, the connection
    // is in the group.
    layer
        .send(&reply, Message::new("sync.point"))
        .await
        .unwrap();
    let sync = worker.next().await;
    let inner = Message::from_value(sync.get("message").unwrap().clone()).unwrap();
    assert_eq!(inner.message_type(), Some("sync.point"), "{sync:?}");
    layer
        .group_send("room", Message::new("room.news").with("n", 1))
        .await
        .unwrap();
    let news = worker.next().await;
    assert_eq!(news.message_type(), Some("asgi.dispatch"), "{news:?}");
    let inner = Message::from_value(news.get("message").unwrap().clone()).unwrap();
    assert_eq!(inner.message_type(), Some("room.news"));

    // The heartbeats stop: the connection closes with 4005 within
    // 5 intervals (1 s) and a sweep.
    worker.beats.abort();
    let started = tokio::time::Instant::now();
    assert_eq!(u16::from(expect_close(&mut client).await.code), 4005);
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(
        metric(&server, "channels_asgi_worker_lost_total").await,
        1.0
    );
    assert_eq!(metric(&server, "channels_asgi_workers").await, 0.0);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn connections_spread_over_workers_and_stay_with_theirs() {
    let layer: SharedLayer = Arc::new(InMemoryChannelLayer::new());
    let server = server(layer.clone()).await;
    let one = FakeWorker::start(&layer).await;
    let two = FakeWorker::start(&layer).await;
    wait_metric(&server, "channels_asgi_workers", 2.0).await;

    let first = start_upgrade(server.ws_url("/a/"), &[]);
    let second = start_upgrade(server.ws_url("/b/"), &[]);
    // Each worker got one connect.
    let accept = || vec![Message::new("websocket.accept")];
    let (a, b) = tokio::join!(
        answer_connect(&layer, &one, accept()),
        answer_connect(&layer, &two, accept())
    );
    let (mut first, _) = finish_upgrade(first, WAIT).await.unwrap();
    let (mut second, _) = finish_upgrade(second, WAIT).await.unwrap();
    let mut by_path = std::collections::HashMap::new();
    for (event, worker) in [(a, &one), (b, &two)] {
        assert_eq!(event.message_type(), Some("websocket.connect"));
        by_path.insert(text(&event, "path"), worker.inbox.channel().to_owned());
    }
    assert_eq!(by_path.len(), 2);
    // Later frames follow their connection's worker.
    send_text(&mut first, "to a").await;
    send_text(&mut second, "to b").await;
    for worker in [&one, &two] {
        let event = worker.next().await;
        let expected = if by_path["/a/"] == worker.inbox.channel() {
            "to a"
        } else {
            "to b"
        };
        assert_eq!(text(&event, "text"), expected);
    }
    one.beats.abort();
    two.beats.abort();
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_full_worker_channel_closes_with_4009() {
    let layer: SharedLayer = Arc::new(InMemoryChannelLayer::with_config(
        LayerConfig::default().capacity(2),
    ));
    let server = server(layer.clone()).await;
    let worker = FakeWorker::start(&layer).await;
    wait_metric(&server, "channels_asgi_workers", 1.0).await;
    // The worker accepts, then reads nothing: 2 frames fill its channel.
    let upgrade = start_upgrade(server.ws_url("/busy/"), &[]);
    answer_connect(&layer, &worker, vec![Message::new("websocket.accept")]).await;
    let (mut client, _) = finish_upgrade(upgrade, WAIT).await.unwrap();
    for i in 0..3 {
        send_text(&mut client, &format!("frame {i}")).await;
    }
    assert_eq!(u16::from(expect_close(&mut client).await.code), 4009);
    assert_eq!(
        metric(&server, "channels_asgi_worker_busy_total").await,
        1.0
    );
    worker.beats.abort();
    drop(worker.inbox);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn an_application_that_never_accepts_is_answered_504() {
    let layer: SharedLayer = Arc::new(InMemoryChannelLayer::new());
    let server = server(layer.clone()).await;
    let worker = FakeWorker::start(&layer).await;
    wait_metric(&server, "channels_asgi_workers", 1.0).await;
    let started = tokio::time::Instant::now();
    let upgrade = start_upgrade(server.ws_url("/never/"), &[]);
    answer_connect(&layer, &worker, Vec::new()).await;
    // The accept timeout is 10 s.
    let refused = finish_upgrade(upgrade, Duration::from_secs(15)).await;
    assert_eq!(refused.err(), Some(504));
    assert!(started.elapsed() >= Duration::from_secs(9));
    // The worker hears that the client is gone.
    let gone = worker.next().await;
    assert_eq!(gone.message_type(), Some("websocket.disconnect"));
    assert_eq!(gone.get("code").and_then(Value::as_u64), Some(4007));
    assert_eq!(
        metric(&server, "channels_asgi_accept_timeouts_total").await,
        1.0
    );
    worker.beats.abort();
    server.stop().await.unwrap();
}

#[tokio::test]
async fn the_handshake_waits_for_the_application_and_carries_its_subprotocol() {
    let layer: SharedLayer = Arc::new(InMemoryChannelLayer::new());
    let server = server(layer.clone()).await;
    let worker = FakeWorker::start(&layer).await;
    wait_metric(&server, "channels_asgi_workers", 1.0).await;

    // Nothing is answered before the application decides; a layer message
    // arriving meanwhile still reaches the worker.
    let upgrade = start_upgrade(server.ws_url("/proto/"), &["chat.v1", "chat.v2"]);
    let event = worker.next().await;
    assert_eq!(event.message_type(), Some("websocket.connect"));
    let reply = text(&event, "reply_channel");
    layer
        .send(&reply, Message::new("chat.message").with("n", 1))
        .await
        .unwrap();
    assert_eq!(worker.next().await.message_type(), Some("asgi.dispatch"));
    assert!(
        !upgrade.is_finished(),
        "answered before the application accepted"
    );
    let accept = Message::new("websocket.accept").with("subprotocol", "chat.v2");
    layer.send(&reply, accept).await.unwrap();
    let (mut client, response) = finish_upgrade(upgrade, WAIT).await.unwrap();
    let protocol = response.headers().get("sec-websocket-protocol");
    assert_eq!(protocol.map(|v| v.to_str().unwrap()), Some("chat.v2"));
    send_text(&mut client, "hi").await;
    assert_eq!(text(&worker.next().await, "text"), "hi");

    // A subprotocol the client did not offer: refused with 500.
    let upgrade = start_upgrade(server.ws_url("/proto/"), &["chat.v1"]);
    let bogus = Message::new("websocket.accept").with("subprotocol", "bogus");
    answer_connect(&layer, &worker, vec![bogus]).await;
    assert_eq!(finish_upgrade(upgrade, WAIT).await.err(), Some(500));
    let gone = worker.next().await;
    assert_eq!(gone.message_type(), Some("websocket.disconnect"));
    assert_eq!(metric(&server, "channels_asgi_rejected_total").await, 1.0);
    worker.beats.abort();
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_close_before_accept_is_answered_403_and_an_error_500() {
    let layer: SharedLayer = Arc::new(InMemoryChannelLayer::new());
    let server = server(layer.clone()).await;
    let worker = FakeWorker::start(&layer).await;
    wait_metric(&server, "channels_asgi_workers", 1.0).await;

    let upgrade = start_upgrade(server.ws_url("/denied/"), &[]);
    let close = Message::new("websocket.close").with("code", 4403);
    answer_connect(&layer, &worker, vec![close]).await;
    assert_eq!(finish_upgrade(upgrade, WAIT).await.err(), Some(403));
    let gone = worker.next().await;
    assert_eq!(gone.message_type(), Some("websocket.disconnect"));
    assert_eq!(gone.get("code").and_then(Value::as_u64), Some(4403));

    // The application raised before accepting (the worker closes with 1011).
    let upgrade = start_upgrade(server.ws_url("/raises/"), &[]);
    let close = Message::new("websocket.close").with("code", 1011);
    answer_connect(&layer, &worker, vec![close]).await;
    assert_eq!(finish_upgrade(upgrade, WAIT).await.err(), Some(500));
    assert_eq!(metric(&server, "channels_asgi_rejected_total").await, 2.0);
    assert_eq!(
        metric(&server, "channels_connections_rejected_total").await,
        2.0
    );
    worker.beats.abort();
    server.stop().await.unwrap();
}
