//! The HTTP publish API: status codes, and messages reaching sockets.

mod common;

use std::sync::Arc;

use channels_core::consumer::{ConsumerError, Worker, WorkerContext};
use channels_core::{Message, SharedLayer, async_trait};
use channels_memory::InMemoryChannelLayer;
use channels_server::{App, ServerConfig};
use common::{Server, gateway, http, next_push, next_text, subscribe};

const TOKEN: &str = "s3cret-token";

async fn post(
    server: &Server,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> common::HttpResponse {
    let header = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(header) = &header {
        headers.push(("Authorization", header.as_str()));
    }
    http(server.address, "POST", path, &headers, body).await
}

#[tokio::test]
async fn group_publish_reaches_every_socket_in_the_group() {
    let server = Server::start(ServerConfig::default().publish_token(TOKEN)).await;
    let (mut alice, _) = gateway(server.address).await;
    let (mut bob, _) = gateway(server.address).await;
    subscribe(&mut alice, "news").await;
    subscribe(&mut bob, "news").await;
    let body = br#"{"type": "chat.message", "text": "from the backend"}"#;
    let response = post(&server, "/api/groups/news", Some(TOKEN), body).await;
    assert_eq!(response.status, 202, "{response:?}");
    assert_eq!(response.json()["status"], "accepted");
    // The API adds `_group`, which the gateway moves into the envelope.
    let push = next_push(&mut alice).await;
    assert_eq!(
        push,
        serde_json::json!({"type": "message", "group": "news", "data": {"type": "chat.message", "text": "from the backend"}})
    );
    assert_eq!(next_text(&mut bob).await, "from the backend");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn channel_publish_reaches_a_named_channel() {
    let server = Server::start(ServerConfig::default().publish_token(TOKEN)).await;
    let body = br#"{"type": "job.run", "id": 7, "tags": ["a", null, true]}"#;
    let response = post(&server, "/api/channels/jobs", Some(TOKEN), body).await;
    assert_eq!(response.status, 202, "{response:?}");
    let message = tokio::time::timeout(common::WAIT, server.layer.receive("jobs"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(message.message_type(), Some("job.run"));
    assert_eq!(message.get("id").and_then(|v| v.as_i64()), Some(7));
    let expected: Message = serde_json::from_slice(body).unwrap();
    assert_eq!(message, expected);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn bad_requests_get_400_401_413_with_json_errors() {
    let server = Server::start(
        ServerConfig::default()
            .publish_token(TOKEN)
            .max_frame_bytes(1024),
    )
    .await;
    let ok = br#"{"type": "chat.message"}"#;
    let cases: Vec<(&str, Option<&str>, Vec<u8>, u16)> = vec![
        ("/api/groups/g", None, ok.to_vec(), 401),
        ("/api/groups/g", Some("wrong"), ok.to_vec(), 401),
        ("/api/groups/g", Some(TOKEN), b"not json".to_vec(), 400),
        ("/api/groups/g", Some(TOKEN), b"[1, 2]".to_vec(), 400),
        (
            "/api/groups/g",
            Some(TOKEN),
            br#"{"text": "no type"}"#.to_vec(),
            400,
        ),
        (
            "/api/groups/g",
            Some(TOKEN),
            br#"{"type": 5}"#.to_vec(),
            400,
        ),
        (
            "/api/groups/g",
            Some(TOKEN),
            br#"{"type": "x", "__asgi_channel__": "c"}"#.to_vec(),
            400,
        ),
        ("/api/groups/bad!group", Some(TOKEN), ok.to_vec(), 400),
        ("/api/channels/bad%20channel", Some(TOKEN), ok.to_vec(), 400),
        (
            "/api/groups/g",
            Some(TOKEN),
            format!(r#"{{"type": "x", "pad": "{}"}}"#, "p".repeat(2000)).into_bytes(),
            413,
        ),
        ("/api/groups/g", Some(TOKEN), ok.to_vec(), 202),
    ];
    for (path, token, body, status) in cases {
        let response = post(&server, path, token, &body).await;
        assert_eq!(
            response.status,
            status,
            "{path} {token:?} {:?}: {response:?}",
            String::from_utf8_lossy(&body)
        );
        if status != 202 {
            let error = response.json()["error"].as_str().map(str::to_owned);
            assert!(error.is_some_and(|e| !e.is_empty()), "{response:?}");
        }
    }
    let metrics = http(server.address, "GET", "/metrics", &[], b"").await;
    assert!(
        metrics
            .body
            .contains("channels_publish_requests_total{status=\"400\"} 7"),
        "{}",
        metrics.body
    );
    assert!(
        metrics
            .body
            .contains("channels_publish_requests_total{status=\"401\"} 2"),
        "{}",
        metrics.body
    );
    server.stop().await.unwrap();
}

/// Turns `report.make` jobs into messages for the group in the job.
struct Reporter;

#[async_trait]
impl Worker for Reporter {
    async fn handle(
        &mut self,
        ctx: &WorkerContext,
        kind: &str,
        message: Message,
    ) -> Result<(), ConsumerError> {
        if kind == "report.make" {
            let room = message
                .get("room")
                .and_then(|v| v.as_str())
                .unwrap_or("none");
            let done = Message::new("report.done").with("text", format!("report for {room} ready"));
            ctx.layer()
                .group_send(&format!("reports.{room}"), done)
                .await?;
        }
        Ok(())
    }
}

#[tokio::test]
async fn http_hands_work_to_a_background_worker_that_notifies_sockets() {
    let layer: SharedLayer = Arc::new(InMemoryChannelLayer::new());
    let app = App::new(layer.clone(), ServerConfig::default().publish_token(TOKEN))
        .gateway()
        .unwrap()
        .worker("reports", Reporter);
    let server = Server::start_app(layer, app).await;
    let (mut client, _) = gateway(server.address).await;
    subscribe(&mut client, "reports.sales").await;
    let response = post(
        &server,
        "/api/channels/reports",
        Some(TOKEN),
        br#"{"type": "report.make", "room": "sales"}"#,
    )
    .await;
    assert_eq!(response.status, 202, "{response:?}");
    assert_eq!(next_text(&mut client).await, "report for sales ready");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn publish_api_is_off_without_a_token() {
    let server = Server::start(ServerConfig::default()).await;
    let response = post(
        &server,
        "/api/groups/g",
        Some("anything"),
        br#"{"type": "x"}"#,
    )
    .await;
    assert_eq!(response.status, 404);
    server.stop().await.unwrap();
}
