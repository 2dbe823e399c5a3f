//! The HTTP API for backends beyond the publish endpoints: broadcast, a
//! user's group (send, and the control messages subscribe, unsubscribe,
//! disconnect, checked by what reaches the layer), `/api/info`, the OpenAPI
//! document, JSON for every error (axum's own included), per-endpoint
//! metrics, and the admin listener.

// Helpers outside #[test] fns unwrap too: a panic is how a test reports failure.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use channels_core::{Message, Receiver, SharedLayer};
use channels_memory::InMemoryChannelLayer;
use channels_server::control::{self, user_group};
use channels_server::{App, ServerConfig};
use common::{HttpResponse, Server, WAIT, http, metric_value};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const TOKEN: &str = "api-token";

async fn call(server: &Server, method: &str, path: &str, body: &str) -> HttpResponse {
    let auth = format!("Bearer {TOKEN}");
    let headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    http(server.address, method, path, &headers, body.as_bytes()).await
}

async fn start() -> Server {
    Server::start(ServerConfig::default().publish_token(TOKEN)).await
}

/// A receiver handle on a fresh channel that is a member of `group`.
async fn member_of(layer: &SharedLayer, group: &str) -> Receiver {
    let inbox = layer.new_receiver("specific").await.unwrap();
    layer.group_add(group, inbox.channel()).await.unwrap();
    inbox
}

async fn next(inbox: &Receiver) -> Message {
    tokio::time::timeout(WAIT, inbox.recv())
        .await
        .expect("a message within the deadline")
        .unwrap()
}

fn assert_json_error(response: &HttpResponse, status: u16) {
    assert_eq!(response.status, status, "{response:?}");
    assert_eq!(
        response.header("content-type"),
        Some("application/json"),
        "{response:?}"
    );
    let error = response.json()["error"].as_str().map(str::to_owned);
    assert!(error.is_some_and(|e| !e.is_empty()), "{response:?}");
}

#[tokio::test]
async fn broadcast_reaches_every_group_once_each_naming_its_group() {
    let server = start().await;
    let news = member_of(&server.layer, "news").await;
    let sport = member_of(&server.layer, "sport").await;
    // A literal, not `json!`, which would sort the keys: field order survives.
    let body = r#"{"groups": ["news", "sport", "news"],
                   "message": {"type": "feed.item", "title": "hello", "n": 3}}"#;
    let response = call(&server, "POST", "/api/broadcast", body).await;
    assert_eq!(response.status, 202, "{response:?}");
    assert_eq!(response.json(), json!({"status": "accepted"}));
    for (inbox, group) in [(&news, "news"), (&sport, "sport")] {
        let message = next(inbox).await;
        let expected = Message::new("feed.item")
            .with("title", "hello")
            .with("n", 3)
            .with(control::GROUP_KEY, group);
        assert_eq!(message, expected);
    }
    assert!(
        news.try_recv().unwrap().is_none(),
        "`news` listed twice, sent once"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_bad_broadcast_sends_nothing() {
    let server = start().await;
    let news = member_of(&server.layer, "news").await;
    let too_many: Vec<String> = (0..101).map(|i| format!("g{i}")).collect();
    for body in [
        json!({"groups": ["news", "bad group"], "message": {"type": "x"}}),
        json!({"groups": [], "message": {"type": "x"}}),
        json!({"groups": too_many, "message": {"type": "x"}}),
        json!({"groups": ["news"], "message": {"text": "no type"}}),
        json!({"groups": ["news"]}),
        json!({"groups": ["news"], "message": {"type": "x"}, "extra": 1}),
        json!([["news"], {"type": "x"}]),
    ] {
        let response = call(&server, "POST", "/api/broadcast", &body.to_string()).await;
        assert_json_error(&response, 400);
    }
    assert!(news.try_recv().unwrap().is_none());
    server.stop().await.unwrap();
}

#[tokio::test]
async fn user_send_reaches_the_users_group() {
    let server = start().await;
    for user in ["42", "ann@example.com"] {
        let group = user_group(user);
        let inbox = member_of(&server.layer, &group).await;
        let path = format!("/api/users/{}/send", user.replace('@', "%40"));
        let response = call(
            &server,
            "POST",
            &path,
            r#"{"type": "notify", "text": "hi"}"#,
        )
        .await;
        assert_eq!(response.status, 202, "{response:?}");
        let expected = Message::new("notify")
            .with("text", "hi")
            .with(control::GROUP_KEY, group.as_str());
        assert_eq!(next(&inbox).await, expected);
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn subscribe_unsubscribe_and_disconnect_send_exactly_the_control_message() {
    let server = start().await;
    let inbox = member_of(&server.layer, &user_group("42")).await;
    let cases = [
        (
            "subscribe",
            r#"{"group": "chat.lobby"}"#,
            Message::new(control::SUBSCRIBE).with("group", "chat.lobby"),
        ),
        (
            "unsubscribe",
            r#"{"group": "chat.lobby"}"#,
            Message::new(control::UNSUBSCRIBE).with("group", "chat.lobby"),
        ),
        (
            "disconnect",
            "",
            Message::new(control::DISCONNECT).with("code", control::DISCONNECT_CODE),
        ),
        (
            "disconnect",
            "null",
            Message::new(control::DISCONNECT).with("code", control::DISCONNECT_CODE),
        ),
        (
            "disconnect",
            r#"{"code": 4321, "reason": "banned"}"#,
            Message::new(control::DISCONNECT)
                .with("code", 4321)
                .with("reason", "banned"),
        ),
    ];
    for (action, body, expected) in cases {
        let response = call(&server, "POST", &format!("/api/users/42/{action}"), body).await;
        assert_eq!(response.status, 202, "{action} {body}: {response:?}");
        assert_eq!(next(&inbox).await, expected, "{action} {body}");
    }
    for (action, body) in [
        ("subscribe", r#"{"group": "bad group"}"#),
        ("subscribe", "{}"),
        ("unsubscribe", r#"{"group": 7}"#),
        ("disconnect", r#"{"code": 1001}"#),
        ("disconnect", r#"{"code": 70000}"#),
        ("disconnect", r#"{"code": 4000, "why": "x"}"#),
        ("disconnect", "[null, null]"),
    ] {
        let response = call(&server, "POST", &format!("/api/users/42/{action}"), body).await;
        assert_json_error(&response, 400);
    }
    assert!(
        inbox.try_recv().unwrap().is_none(),
        "a refused call sent nothing"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn info_tells_version_layer_connections_uptime_and_node() {
    let server = start().await;
    let _socket = common::connect(&server.ws_url("/ws")).await;
    let response = call(&server, "GET", "/api/info", "").await;
    assert_eq!(response.status, 200, "{response:?}");
    let info = response.json();
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(info["layer"], "memory");
    assert_eq!(info["connections"], 1);
    assert!(info["uptime_seconds"].is_u64(), "{info}");
    let node = info["node_id"].as_str().unwrap().to_owned();
    assert_eq!(node.len(), 32);
    let again = call(&server, "GET", "/api/info", "").await.json();
    assert_eq!(again["node_id"], node.as_str(), "one id per process");
    let anonymous = http(server.address, "GET", "/api/info", &[], b"").await;
    assert_json_error(&anonymous, 401);
    assert_eq!(anonymous.header("www-authenticate"), Some("Bearer"));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn the_openapi_document_is_served_without_a_token() {
    let server = start().await;
    let response = http(server.address, "GET", "/api/openapi.json", &[], b"").await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.header("content-type"), Some("application/json"));
    let document = response.json();
    assert_eq!(document["openapi"], "3.1.0");
    for path in [
        "/api/groups/{group}",
        "/api/channels/{channel}",
        "/api/broadcast",
        "/api/users/{user}/send",
        "/api/users/{user}/subscribe",
        "/api/users/{user}/unsubscribe",
        "/api/users/{user}/disconnect",
        "/api/info",
    ] {
        assert!(document["paths"][path].is_object(), "{path} missing");
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn every_error_is_json_even_those_axum_makes() {
    let server = start().await;
    let ok = r#"{"type": "x"}"#;
    // Unknown routes under /api.
    for path in [
        "/api",
        "/api/",
        "/api/nope",
        "/api/groups",
        "/api/groups/",
        "/api/users/42",
    ] {
        assert_json_error(&call(&server, "POST", path, ok).await, 404);
    }
    // Wrong methods keep axum's `Allow` header.
    let wrong = call(&server, "GET", "/api/groups/g", "").await;
    assert_json_error(&wrong, 405);
    assert_eq!(wrong.header("allow"), Some("POST"));
    assert_json_error(&call(&server, "DELETE", "/api/info", "").await, 405);
    // A path segment that is not UTF-8, and bad names.
    assert_json_error(&call(&server, "POST", "/api/groups/%FF", ok).await, 400);
    assert_json_error(&call(&server, "POST", "/api/users/%FF/send", ok).await, 400);
    assert_json_error(&call(&server, "POST", "/api/channels/a!b!c", ok).await, 400);
    let long = format!("/api/users/{}/send", "u".repeat(257));
    assert_json_error(&call(&server, "POST", &long, ok).await, 400);
    // Bodies: not JSON, wrong content type.
    assert_json_error(&call(&server, "POST", "/api/groups/g", "{").await, 400);
    let auth = format!("Bearer {TOKEN}");
    let text = http(
        server.address,
        "POST",
        "/api/groups/g",
        &[("authorization", &auth), ("content-type", "text/plain")],
        ok.as_bytes(),
    )
    .await;
    assert_json_error(&text, 415);
    // No content type at all is taken as JSON, as before.
    let bare = http(
        server.address,
        "POST",
        "/api/groups/g",
        &[("authorization", &auth)],
        ok.as_bytes(),
    )
    .await;
    assert_eq!(bare.status, 202, "{bare:?}");
    // The token is checked before the path and the body.
    let anonymous = http(server.address, "POST", "/api/groups/%FF", &[], b"{").await;
    assert_json_error(&anonymous, 401);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn calls_are_counted_per_endpoint_and_status() {
    let server = start().await;
    call(
        &server,
        "POST",
        "/api/broadcast",
        r#"{"groups": ["a"], "message": {"type": "x"}}"#,
    )
    .await;
    call(&server, "POST", "/api/users/7/disconnect", "").await;
    call(&server, "POST", "/api/users/7/disconnect", "").await;
    call(&server, "GET", "/api/nope", "").await;
    call(&server, "PUT", "/api/info", "").await;
    let page = http(server.address, "GET", "/metrics", &[], b"").await.body;
    for (series, value) in [
        (
            "channels_api_requests_total{endpoint=\"/api/broadcast\"}",
            1.0,
        ),
        (
            "channels_api_requests_total{endpoint=\"/api/users/{user}/disconnect\"}",
            2.0,
        ),
        ("channels_api_requests_total{endpoint=\"/api/info\"}", 1.0),
        ("channels_api_requests_total{endpoint=\"other\"}", 1.0),
        (
            "channels_api_requests_total{endpoint=\"/api/groups/{group}\"}",
            0.0,
        ),
        ("channels_publish_requests_total{status=\"202\"}", 3.0),
        ("channels_publish_requests_total{status=\"404\"}", 1.0),
        ("channels_publish_requests_total{status=\"405\"}", 1.0),
    ] {
        assert_eq!(
            metric_value(&page, series),
            Some(value),
            "{series} in\n{page}"
        );
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn with_an_admin_listener_the_whole_api_moves_there() {
    let layer: SharedLayer = Arc::new(InMemoryChannelLayer::new());
    let config = ServerConfig::default().publish_token(TOKEN);
    let app = App::new(layer.clone(), config).gateway().unwrap();
    let public = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (public_address, admin_address) =
        (public.local_addr().unwrap(), admin.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(app.serve_with_admin(public, admin, async move {
        let _ = stopped.await;
    }));
    let auth = format!("Bearer {TOKEN}");
    let headers = [("authorization", auth.as_str())];
    for path in ["/api/info", "/api/openapi.json"] {
        let on_admin = http(admin_address, "GET", path, &headers, b"").await;
        assert_eq!(on_admin.status, 200, "{path}: {on_admin:?}");
        let on_public = http(public_address, "GET", path, &headers, b"").await;
        assert_eq!(on_public.status, 404, "{path}: {on_public:?}");
    }
    let _ = stop.send(());
    tokio::time::timeout(std::time::Duration::from_secs(15), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn an_oversized_body_is_read_before_its_413_so_the_client_sees_the_answer() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let server = start().await;
    let body = vec![b'x'; 4 * 1024 * 1024];
    let mut stream = tokio::net::TcpStream::connect(server.address)
        .await
        .unwrap();
    let head = format!(
        "POST /api/groups/news HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    // The whole body goes out in pieces, paced like a real network (the
    // pause is the pacing, not a wait for anything), as a client like
    // Python's requests sends it, and the answer is read afterwards: a server
    // that answers and closes early resets the connection mid-send.
    let sent = tokio::time::timeout(WAIT * 20, async {
        stream.write_all(head.as_bytes()).await?;
        for piece in body.chunks(64 * 1024) {
            stream.write_all(piece).await?;
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    })
    .await
    .expect("the exchange finishes");
    let answer = sent.expect("no reset");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("\"error\""), "{answer}");
    server.stop().await.unwrap();
}
