//! What a consumer sees over a real socket: route parameters, query string,
//! headers, cookies, the client's address and offered subprotocols; and how
//! its accept (subprotocol, extra headers) reaches the client.

// Helpers outside #[test] fns unwrap too: a panic is how a test reports failure.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use channels_core::consumer::{
    Accept, Connect, ConsumerContext, ConsumerError, ConsumerRouter, WebsocketConsumer,
};
use channels_core::{SharedLayer, async_trait};
use channels_memory::InMemoryChannelLayer;
use channels_server::{App, ServerConfig};
use common::{Server, next_json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Reports its scope, and accepts with `v2.chat` when offered.
struct Reporter;

#[async_trait]
impl WebsocketConsumer for Reporter {
    async fn connect(&mut self, ctx: &mut ConsumerContext) -> Result<Connect, ConsumerError> {
        let scope = ctx.scope();
        let report = serde_json::json!({
            "path": scope.path,
            "room": scope.param("room"),
            "page": scope.query("page"),
            "agent": scope.header("user-agent"),
            "session": scope.cookie("sessionid"),
            "client_ip": scope.client.map(|c| c.ip().to_string()),
            "offered": scope.subprotocols,
        });
        let offered_v2 = scope.subprotocols.iter().any(|p| p == "v2.chat");
        ctx.send_json(&report)?;
        let mut accept = Accept::default().header("x-channels-room", "lobby");
        if offered_v2 {
            accept = accept.subprotocol("v2.chat");
        }
        Ok(accept.into())
    }
}

#[tokio::test]
async fn consumer_sees_the_request_and_its_accept_reaches_the_client() {
    let layer: SharedLayer = Arc::new(InMemoryChannelLayer::new());
    let app = App::new(layer.clone(), ServerConfig::default())
        .consumers(ConsumerRouter::new().route("/ws/rooms/{room}", |_| Reporter));
    let server = Server::start_app(layer, app).await;

    let mut request = server
        .ws_url("/ws/rooms/lobby?page=2&x=y")
        .into_client_request()
        .unwrap();
    let headers = request.headers_mut();
    headers.insert("User-Agent", "scope-test/1.0".parse().unwrap());
    headers.insert("Cookie", "theme=dark; sessionid=abc123".parse().unwrap());
    headers.insert(
        "Sec-WebSocket-Protocol",
        "v1.chat, v2.chat".parse().unwrap(),
    );
    let (mut client, response) =
        tokio::time::timeout(common::WAIT, tokio_tungstenite::connect_async(request))
            .await
            .unwrap()
            .unwrap();
    assert_eq!(
        response
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok()),
        Some("v2.chat")
    );
    assert_eq!(
        response
            .headers()
            .get("x-channels-room")
            .and_then(|v| v.to_str().ok()),
        Some("lobby")
    );
    assert_eq!(
        next_json(&mut client).await,
        serde_json::json!({
            "path": "/ws/rooms/lobby",
            "room": "lobby",
            "page": "2",
            "agent": "scope-test/1.0",
            "session": "abc123",
            "client_ip": "127.0.0.1",
            "offered": ["v1.chat", "v2.chat"],
        })
    );
    server.stop().await.unwrap();
}
