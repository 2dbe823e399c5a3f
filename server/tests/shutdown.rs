//! Graceful shutdown: every socket is closed with 1001, consumers leave their
//! groups and hear `disconnect(1001)`, the listener stops, and a consumer that
//! hangs cannot hold shutdown past the drain time.

// Helpers outside #[test] fns unwrap too: a panic is how a test reports failure.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use channels_core::consumer::{
    Connect, ConsumerContext, ConsumerError, ConsumerRouter, WebsocketConsumer,
};
use channels_core::{Message, SharedLayer, async_trait};
use channels_memory::InMemoryChannelLayer;
use channels_server::{App, ServerConfig};
use common::{Server, connect, expect_close, next_json};

/// Joins `g`, tells the client its channel, records its disconnect code, and
/// optionally hangs in `disconnect`.
struct Member {
    codes: Arc<Mutex<Vec<u16>>>,
    hang: bool,
}

#[async_trait]
impl WebsocketConsumer for Member {
    fn groups(&self) -> Vec<String> {
        vec!["g".into()]
    }

    async fn connect(&mut self, ctx: &mut ConsumerContext) -> Result<Connect, ConsumerError> {
        let channel = ctx.channel_name().to_owned();
        ctx.send_json(&serde_json::json!({ "channel": channel }))?;
        Ok(Connect::accept())
    }

    async fn disconnect(
        &mut self,
        _ctx: &mut ConsumerContext,
        code: u16,
    ) -> Result<(), ConsumerError> {
        self.codes.lock().unwrap().push(code);
        if self.hang {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        Ok(())
    }
}

async fn member_server(codes: &Arc<Mutex<Vec<u16>>>, hang: bool, drain: Duration) -> Server {
    let layer: SharedLayer = Arc::new(InMemoryChannelLayer::new());
    let codes = codes.clone();
    let app = App::new(layer.clone(), ServerConfig::default().drain_timeout(drain)).consumers(
        ConsumerRouter::new().route("/ws/member", move |_| Member {
            codes: codes.clone(),
            hang,
        }),
    );
    Server::start_app(layer, app).await
}

#[tokio::test]
async fn shutdown_closes_sockets_with_1001_and_leaves_groups() {
    let codes = Arc::new(Mutex::new(Vec::new()));
    let server = member_server(&codes, false, Duration::from_secs(5)).await;
    let address = server.address;
    let layer = server.layer.clone();
    let mut clients = Vec::new();
    let mut channels = Vec::new();
    for _ in 0..3 {
        let mut client = connect(&server.ws_url("/ws/member")).await;
        channels.push(
            next_json(&mut client).await["channel"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
        clients.push(client);
    }
    let stopping = tokio::spawn(server.stop());
    for client in &mut clients {
        let close = expect_close(client).await;
        assert_eq!(u16::from(close.code), 1001, "{close:?}");
    }
    tokio::time::timeout(common::WAIT, stopping)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(*codes.lock().unwrap(), [1001, 1001, 1001]);

    // Nobody is left in the group: a broadcast reaches none of the old channels.
    layer
        .group_send("g", Message::new("chat.message"))
        .await
        .unwrap();
    for channel in &channels {
        let got = tokio::time::timeout(Duration::from_millis(50), layer.receive(channel)).await;
        assert!(got.is_err(), "{channel} still in the group: {got:?}");
    }
    // And the listener is gone.
    assert!(tokio::net::TcpStream::connect(address).await.is_err());
}

#[tokio::test]
async fn a_hanging_consumer_cannot_hold_shutdown_past_the_drain_time() {
    let codes = Arc::new(Mutex::new(Vec::new()));
    let server = member_server(&codes, true, Duration::from_millis(300)).await;
    let mut client = connect(&server.ws_url("/ws/member")).await;
    next_json(&mut client).await;
    let started = tokio::time::Instant::now();
    server.stop().await.unwrap();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "shutdown took {took:?}");
    assert_eq!(*codes.lock().unwrap(), [1001]);
}

#[tokio::test]
async fn a_draining_server_answers_upgrades_with_503() {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    let layer = Arc::new(InMemoryChannelLayer::new());
    let codes = Arc::new(Mutex::new(Vec::new()));
    let app = App::new(layer, ServerConfig::default()).consumers(ConsumerRouter::new().route(
        "/ws/member",
        move |_| Member {
            codes: codes.clone(),
            hang: false,
        },
    ));
    let upgrade = || {
        Request::get("/ws/member")
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .body(Body::empty())
            .unwrap()
    };
    // Before shutdown the request reaches the upgrade (which fails here only
    // because an in-process request has no connection to upgrade).
    let before = app.router().oneshot(upgrade()).await.unwrap();
    assert_ne!(before.status(), StatusCode::SERVICE_UNAVAILABLE);
    app.shutdown_handle().trigger();
    let during = app.router().oneshot(upgrade()).await.unwrap();
    assert_eq!(during.status(), StatusCode::SERVICE_UNAVAILABLE);
}
