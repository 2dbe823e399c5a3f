//! The gateway of docs/protocol.md over real sockets, in this process: the
//! protocol in development mode, JWT authentication (HS256, RS256, ES256,
//! JWKS by `kid`), claims, expiry and refresh, layer messages addressed to a
//! connection (ASGI `websocket.send` / `websocket.close`, `gateway.*`
//! control, pushes with bytes as base64), forwarding and a full forward
//! channel, and the metrics of all that.

// Helpers outside #[test] fns unwrap too: a panic is how a test reports failure.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use channels_core::{LayerConfig, Message, SharedLayer, Value};
use channels_memory::InMemoryChannelLayer;
use channels_server::{App, GatewayConfig, ServerConfig};
use common::{
    Server, ask, connect, expect_close, gateway, gateway_at, http, metric_value, next_json,
    next_message, next_push, next_text, say, send_json, send_text, subscribe,
};
use futures_util::SinkExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value as Json, json};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const SECRET: &str = "gateway-test-secret";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An HS256 token of `claims` signed with [`SECRET`].
fn hs256(claims: &Json) -> String {
    sign(
        Header::default(),
        claims,
        &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
    )
}

fn sign(header: Header, claims: &Json, key: &EncodingKey) -> String {
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

async fn jwt_server(gateway: GatewayConfig) -> Server {
    Server::start(
        ServerConfig::default()
            .publish_token("api")
            .gateway(gateway),
    )
    .await
}

async fn metrics(server: &Server) -> String {
    http(server.address, "GET", "/metrics", &[], b"").await.body
}

fn metric(body: &str, name: &str) -> f64 {
    metric_value(body, name).unwrap_or_else(|| panic!("{name} missing from\n{body}"))
}

#[tokio::test]
async fn development_mode_speaks_the_whole_protocol() {
    let server = Server::start(ServerConfig::default()).await;
    let (mut alice, connected) = gateway(server.address).await;
    assert_eq!(connected["protocol"], 1);
    assert_eq!(connected["user"], Json::Null);
    assert_eq!(connected["groups"], json!([]));
    assert_eq!(connected["expires_at"], Json::Null);
    assert_eq!(connected["ping_interval"], 20);
    let channel = connected["channel"].as_str().unwrap();
    assert!(
        channel.starts_with("specific.") && channel.contains('!'),
        "{channel}"
    );

    let answer = ask(
        &mut alice,
        json!({"type": "subscribe", "group": "chat.lobby"}),
    )
    .await;
    assert_eq!(
        answer,
        json!({"type": "subscribed", "id": answer["id"], "group": "chat.lobby", "recovered": false, "reason": "no_position"})
    );
    let answer = ask(
        &mut alice,
        json!({"type": "subscribe", "group": "news", "recover": {"offset": 17, "epoch": "k3j9"}}),
    )
    .await;
    assert_eq!(
        (answer["recovered"].as_bool(), answer["reason"].as_str()),
        (Some(false), Some("no_history"))
    );

    let (mut bob, _) = gateway(server.address).await;
    subscribe(&mut bob, "chat.lobby").await;
    say(&mut alice, "chat.lobby", "hi").await;
    let push = next_push(&mut bob).await;
    assert_eq!(
        push,
        json!({"type": "message", "group": "chat.lobby", "data": {"type": "chat.message", "text": "hi"}})
    );
    assert_eq!(next_text(&mut alice).await, "hi");

    let pong = ask(&mut alice, json!({"type": "ping"})).await;
    assert_eq!(pong["type"], "pong");
    let left = ask(
        &mut alice,
        json!({"type": "unsubscribe", "group": "chat.lobby"}),
    )
    .await;
    assert_eq!(left["type"], "unsubscribed", "{left}");
    say(&mut bob, "chat.lobby", "alice left").await;
    assert_eq!(next_text(&mut bob).await, "alice left");

    // Errors, each with its code; the connection stays open.
    for (request, code) in [
        (
            json!({"type": "unsubscribe", "group": "chat.lobby"}),
            "not_subscribed",
        ),
        (
            json!({"type": "subscribe", "group": "bad group!"}),
            "invalid_name",
        ),
        (json!({"type": "subscribe"}), "bad_request"),
        (
            json!({"type": "publish", "group": "g", "data": {"no": "type"}}),
            "bad_request",
        ),
        (
            json!({"type": "publish", "group": "g", "data": {"type": "x", "_group": "h"}}),
            "bad_request",
        ),
        (
            json!({"type": "publish", "group": "g", "data": {"type": "websocket.close"}}),
            "forbidden",
        ),
        (
            json!({"type": "publish", "group": "g", "data": {"type": "gateway.disconnect"}}),
            "forbidden",
        ),
        (json!({"type": "connect"}), "bad_request"),
    ] {
        let answer = ask(&mut alice, request.clone()).await;
        assert_eq!(
            (answer["type"].as_str(), answer["code"].as_str()),
            (Some("error"), Some(code)),
            "{request}: {answer}"
        );
        assert!(
            answer["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{answer}"
        );
    }
    for (frame, code) in [
        ("{oops", "bad_request"),
        ("[1, 2]", "bad_request"),
        (r#"{"type":"dance"}"#, "unknown_frame"),
    ] {
        send_text(&mut alice, frame).await;
        let error = next_json(&mut alice).await;
        assert_eq!(error["code"], code, "{frame}: {error}");
        assert!(error.get("id").is_none(), "{error}");
    }
    alice.send(WsMessage::binary(vec![1u8, 2])).await.unwrap();
    assert_eq!(next_json(&mut alice).await["code"], "unknown_frame");
    let pong = ask(&mut alice, json!({"type": "ping"})).await;
    assert_eq!(pong["type"], "pong");

    let body = metrics(&server).await;
    assert_eq!(
        metric(&body, "channels_gateway_errors_total{code=\"bad_request\"}"),
        6.0
    );
    assert_eq!(
        metric(
            &body,
            "channels_gateway_errors_total{code=\"unknown_frame\"}"
        ),
        2.0
    );
    assert_eq!(
        metric(&body, "channels_gateway_errors_total{code=\"forbidden\"}"),
        2.0
    );
    assert_eq!(metric(&body, "channels_gateway_subscriptions_total"), 3.0);
    assert_eq!(metric(&body, "channels_gateway_publishes_total"), 2.0);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_frame_before_connect_is_refused_and_the_subprotocol_is_answered() {
    let server = Server::start(ServerConfig::default()).await;
    let mut client = connect(&server.ws_url("/ws")).await;
    send_json(
        &mut client,
        &json!({"type": "subscribe", "id": 1, "group": "g"}),
    )
    .await;
    let error = next_json(&mut client).await;
    assert_eq!(
        (error["id"].as_i64(), error["code"].as_str()),
        (Some(1), Some("bad_request")),
        "{error}"
    );
    send_json(&mut client, &json!({"type": "connect", "id": 2})).await;
    let connected = next_json(&mut client).await;
    assert_eq!(
        (connected["type"].as_str(), connected["id"].as_i64()),
        (Some("connected"), Some(2))
    );

    let mut request = server.ws_url("/ws").into_client_request().unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "channels.v1, token.abc".parse().unwrap(),
    );
    let (mut offered, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(
        response
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok()),
        Some("channels.v1")
    );
    // Development mode: the token is not checked, `connected` comes at once.
    assert_eq!(next_json(&mut offered).await["type"], "connected");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn jwt_claims_decide_groups_subscriptions_and_publishes() {
    let server = jwt_server(GatewayConfig::default().jwt_secret(SECRET)).await;
    let token = hs256(&json!({
        "sub": "42", "exp": now() + 600, "groups": ["news"],
        "allow": ["chat.*"], "publish": ["chat.lobby"],
    }));
    let (mut alice, connected) =
        gateway_at(&format!("{}?token={token}", server.ws_url("/ws"))).await;
    assert_eq!(connected["user"], "42");
    assert_eq!(connected["groups"], json!(["user.42", "news"]));
    assert!(connected["expires_at"].as_u64().unwrap() > now());

    subscribe(&mut alice, "chat.lobby").await;
    let forbidden = ask(&mut alice, json!({"type": "subscribe", "group": "admin"})).await;
    assert_eq!(forbidden["code"], "forbidden", "{forbidden}");
    assert!(forbidden["message"].as_str().unwrap().contains("admin"));
    say(&mut alice, "chat.lobby", "allowed").await;
    assert_eq!(next_text(&mut alice).await, "allowed");
    let data = json!({"type": "chat.message", "text": "no"});
    let forbidden = ask(
        &mut alice,
        json!({"type": "publish", "group": "chat.other", "data": data}),
    )
    .await;
    assert_eq!(forbidden["code"], "forbidden", "{forbidden}");
    // Groups the server joined stay joined.
    let kept = ask(
        &mut alice,
        json!({"type": "unsubscribe", "group": "user.42"}),
    )
    .await;
    assert_eq!(kept["code"], "forbidden", "{kept}");

    // The backend reaches the user's group and the token's groups.
    for group in ["user.42", "news"] {
        let body = json!({"type": "note", "to": group}).to_string();
        let sent = http(
            server.address,
            "POST",
            &format!("/api/groups/{group}"),
            &[("Authorization", "Bearer api")],
            body.as_bytes(),
        )
        .await;
        assert_eq!(sent.status, 202);
        let push = next_push(&mut alice).await;
        assert_eq!(push["data"], json!({"type": "note", "to": group}));
        // The HTTP API names the group it published to.
        assert_eq!(push["group"], group, "{push}");
    }

    // A connect frame carries the token too.
    let mut bob = connect(&server.ws_url("/ws")).await;
    let token = hs256(&json!({"sub": "7"}));
    send_json(&mut bob, &json!({"type": "connect", "token": token})).await;
    let connected = next_json(&mut bob).await;
    assert_eq!(
        (connected["user"].as_str(), connected["expires_at"].as_u64()),
        (Some("7"), None)
    );
    // No `allow` claim: nothing to subscribe to.
    let forbidden = ask(
        &mut bob,
        json!({"type": "subscribe", "group": "chat.lobby"}),
    )
    .await;
    assert_eq!(forbidden["code"], "forbidden");
    server.stop().await.unwrap();
}

/// Connects with `token` and returns the close frame's code and reason.
async fn refused(server: &Server, token: &str) -> (u16, String) {
    let mut client = connect(&format!("{}?token={token}", server.ws_url("/ws"))).await;
    let close = expect_close(&mut client).await;
    (u16::from(close.code), close.reason.to_string())
}

#[tokio::test]
async fn bad_forged_and_expired_tokens_are_closed_with_4001_and_counted() {
    let server = jwt_server(GatewayConfig::default().jwt_secret(SECRET)).await;
    let forged = sign(
        Header::default(),
        &json!({"sub": "42"}),
        &EncodingKey::from_secret(b"not the secret").unwrap(),
    );
    let cases = [
        ("not-a-token".to_owned(), "malformed"),
        (forged, "signature"),
        (hs256(&json!({"sub": "42", "exp": now() - 10})), "expired"),
        (hs256(&json!({"exp": now() + 60})), "claims"),
        (
            hs256(&json!({"sub": "42", "groups": ["no spaces allowed"]})),
            "claims",
        ),
        (hs256(&json!({"sub": "42", "nbf": now() + 600})), "claims"),
    ];
    for (token, _) in &cases {
        let (code, reason) = refused(&server, token).await;
        assert_eq!(code, 4001, "{token}: {reason}");
        assert!(reason.starts_with("unauthorized"), "{reason}");
    }
    // No token at all: the connect frame without one is refused too.
    let mut anonymous = connect(&server.ws_url("/ws")).await;
    send_json(&mut anonymous, &json!({"type": "connect"})).await;
    assert_eq!(u16::from(expect_close(&mut anonymous).await.code), 4001);

    let body = metrics(&server).await;
    for (reason, count) in [
        ("malformed", 1.0),
        ("signature", 1.0),
        ("expired", 1.0),
        ("claims", 3.0),
        ("missing", 1.0),
    ] {
        assert_eq!(
            metric(
                &body,
                &format!("channels_gateway_auth_failures_total{{reason=\"{reason}\"}}")
            ),
            count,
            "{reason}"
        );
    }
    assert_eq!(
        metric(&body, "channels_gateway_closes_total{code=\"4001\"}"),
        7.0
    );
    // Nothing else was disturbed: a good token still connects.
    let (_client, connected) = gateway_at(&format!(
        "{}?token={}",
        server.ws_url("/ws"),
        hs256(&json!({"sub": "1"}))
    ))
    .await;
    assert_eq!(connected["user"], "1");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn rs256_es256_and_jwks_keys_verify_their_tokens() {
    let rsa =
        EncodingKey::from_rsa_pem(&std::fs::read(fixture("jwt-rsa-private.pem")).unwrap()).unwrap();
    let ec =
        EncodingKey::from_ec_pem(&std::fs::read(fixture("jwt-ec-private.pem")).unwrap()).unwrap();
    let claims = json!({"sub": "k"});

    let server =
        jwt_server(GatewayConfig::default().jwt_public_key(fixture("jwt-rsa-public.pem"))).await;
    let (_c, connected) = gateway_at(&format!(
        "{}?token={}",
        server.ws_url("/ws"),
        sign(Header::new(Algorithm::RS256), &claims, &rsa)
    ))
    .await;
    assert_eq!(connected["user"], "k");
    assert_eq!(refused(&server, &hs256(&claims)).await.0, 4001);
    server.stop().await.unwrap();

    let server =
        jwt_server(GatewayConfig::default().jwt_public_key(fixture("jwt-ec-public.pem"))).await;
    let (_c, connected) = gateway_at(&format!(
        "{}?token={}",
        server.ws_url("/ws"),
        sign(Header::new(Algorithm::ES256), &claims, &ec)
    ))
    .await;
    assert_eq!(connected["user"], "k");
    assert_eq!(
        refused(&server, &sign(Header::new(Algorithm::RS256), &claims, &rsa))
            .await
            .0,
        4001
    );
    server.stop().await.unwrap();

    let server = jwt_server(GatewayConfig::default().jwks_file(fixture("jwks.json"))).await;
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("rsa-1".into());
    let (_c, connected) = gateway_at(&format!(
        "{}?token={}",
        server.ws_url("/ws"),
        sign(header, &claims, &rsa)
    ))
    .await;
    assert_eq!(connected["user"], "k");
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("hs-1".into());
    let hs = EncodingKey::from_secret(b"jwks shared secret").unwrap();
    let (_c, connected) = gateway_at(&format!(
        "{}?token={}",
        server.ws_url("/ws"),
        sign(header, &claims, &hs)
    ))
    .await;
    assert_eq!(connected["user"], "k");
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("unknown".into());
    assert_eq!(refused(&server, &sign(header, &claims, &rsa)).await.0, 4001);
    let body = metrics(&server).await;
    assert_eq!(
        metric(
            &body,
            "channels_gateway_auth_failures_total{reason=\"unknown_key\"}"
        ),
        1.0
    );
    server.stop().await.unwrap();

    // A key file that holds no key is a startup error naming the file.
    let layer: SharedLayer = Arc::new(InMemoryChannelLayer::new());
    let config = ServerConfig::default()
        .gateway(GatewayConfig::default().jwt_public_key(fixture("README.md")));
    let error = App::new(layer, config).gateway().unwrap_err().to_string();
    assert!(error.contains("README.md"), "{error}");
}

#[tokio::test]
async fn an_expiring_token_closes_with_4002_unless_refreshed() {
    let server = jwt_server(GatewayConfig::default().jwt_secret(SECRET)).await;
    let short = |sub: &str, seconds: u64| {
        hs256(&json!({"sub": sub, "exp": now() + seconds, "allow": ["a.*"]}))
    };
    let (mut expiring, _) =
        gateway_at(&format!("{}?token={}", server.ws_url("/ws"), short("1", 2))).await;
    let (mut refreshed, _) =
        gateway_at(&format!("{}?token={}", server.ws_url("/ws"), short("2", 2))).await;

    // Refresh with another user's token: refused, the connection stays.
    let wrong = ask(
        &mut refreshed,
        json!({"type": "refresh", "token": short("3", 60)}),
    )
    .await;
    assert_eq!(wrong["code"], "unauthorized", "{wrong}");
    let bad = ask(
        &mut refreshed,
        json!({"type": "refresh", "token": "garbage"}),
    )
    .await;
    assert_eq!(bad["code"], "unauthorized", "{bad}");
    let later = now() + 60;
    let answer = ask(&mut refreshed, json!({"type": "refresh", "token": hs256(&json!({"sub": "2", "exp": later, "allow": ["b.*"]}))})).await;
    assert_eq!(
        (answer["type"].as_str(), answer["expires_at"].as_u64()),
        (Some("refreshed"), Some(later))
    );

    // Time is what is tested here: the first token runs out within 2 s.
    let close = tokio::time::timeout(Duration::from_secs(5), expect_close(&mut expiring))
        .await
        .unwrap();
    assert_eq!(
        (u16::from(close.code), close.reason.as_str()),
        (4002, "token expired")
    );
    // The refreshed one is still up, with the new token's claims.
    let allowed = ask(&mut refreshed, json!({"type": "subscribe", "group": "b.x"})).await;
    assert_eq!(allowed["type"], "subscribed", "{allowed}");
    let body = metrics(&server).await;
    assert_eq!(
        metric(&body, "channels_gateway_closes_total{code=\"4002\"}"),
        1.0
    );
    assert_eq!(
        metric(
            &body,
            "channels_gateway_auth_failures_total{reason=\"wrong_user\"}"
        ),
        1.0
    );
    server.stop().await.unwrap();
}

/// Sends `message` to the connection's channel through the layer.
async fn to_channel(layer: &SharedLayer, connected: &Json, message: Message) {
    let channel = connected["channel"].as_str().unwrap();
    layer.send(channel, message).await.unwrap();
}

#[tokio::test]
async fn layer_messages_follow_asgi_and_gateway_control() {
    let server = Server::start(ServerConfig::default()).await;
    let layer = server.layer.clone();
    let (mut client, connected) = gateway(server.address).await;

    to_channel(
        &layer,
        &connected,
        Message::new("websocket.send").with("text", "raw text"),
    )
    .await;
    assert_eq!(next_message(&mut client).await, WsMessage::text("raw text"));
    to_channel(
        &layer,
        &connected,
        Message::new("websocket.send").with("bytes", Value::Binary(vec![0, 9])),
    )
    .await;
    assert_eq!(
        next_message(&mut client).await,
        WsMessage::binary(vec![0u8, 9])
    );
    let message = Message::new("report.ready")
        .with("file", Value::Binary(vec![0, 1, 255]))
        .with("ratio", f64::NAN)
        .with("n", 3);
    to_channel(&layer, &connected, message).await;
    assert_eq!(
        next_push(&mut client).await,
        json!({"type": "message", "data": {"type": "report.ready", "file": "AAH/", "ratio": null, "n": 3}})
    );

    // gateway.subscribe joins a group the client could not leave; unsubscribe leaves it.
    to_channel(
        &layer,
        &connected,
        Message::new("gateway.subscribe").with("group", "ops"),
    )
    .await;
    let kept = ask(&mut client, json!({"type": "unsubscribe", "group": "ops"})).await;
    assert_eq!(kept["code"], "forbidden");
    layer
        .group_send("ops", Message::new("ops.note"))
        .await
        .unwrap();
    assert_eq!(next_push(&mut client).await["data"]["type"], "ops.note");
    to_channel(
        &layer,
        &connected,
        Message::new("gateway.unsubscribe").with("group", "ops"),
    )
    .await;
    let gone = ask(&mut client, json!({"type": "unsubscribe", "group": "ops"})).await;
    assert_eq!(gone["code"], "not_subscribed");

    to_channel(
        &layer,
        &connected,
        Message::new("websocket.close").with("code", 4000),
    )
    .await;
    assert_eq!(u16::from(expect_close(&mut client).await.code), 4000);

    let (mut other, connected) = gateway(server.address).await;
    to_channel(
        &layer,
        &connected,
        Message::new("gateway.disconnect").with("reason", "bye"),
    )
    .await;
    let close = expect_close(&mut other).await;
    assert_eq!(
        (u16::from(close.code), close.reason.as_str()),
        (4004, "bye")
    );
    server.stop().await.unwrap();
}

async fn forwarding_server(capacity: usize) -> (Server, SharedLayer) {
    let layer: SharedLayer = Arc::new(InMemoryChannelLayer::with_config(
        LayerConfig::default().capacity(capacity),
    ));
    let config =
        ServerConfig::default().gateway(GatewayConfig::default().forward_channel("backend.events"));
    let app = App::new(layer.clone(), config).gateway().unwrap();
    (Server::start_app(layer.clone(), app).await, layer)
}

async fn received(layer: &SharedLayer) -> Message {
    tokio::time::timeout(common::WAIT, layer.receive("backend.events"))
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn other_frames_go_to_the_forward_channel_as_asgi_events() {
    let (server, layer) = forwarding_server(100).await;
    let (mut client, connected) = gateway_at(&format!("{}?x=1", server.ws_url("/ws"))).await;
    let channel = connected["channel"].as_str().unwrap();
    let connect = received(&layer).await;
    assert_eq!(connect.message_type(), Some("websocket.connect"));
    assert_eq!(
        connect.get("reply_channel").and_then(Value::as_str),
        Some(channel)
    );
    assert_eq!(connect.get("user"), Some(&Value::Nil));
    assert_eq!(connect.get("path").and_then(Value::as_str), Some("/ws"));
    assert_eq!(
        connect.get("query_string").and_then(Value::as_str),
        Some("x=1")
    );
    let headers = connect.get("headers").and_then(Value::as_array).unwrap();
    assert!(
        headers
            .iter()
            .any(|h| h.as_array().and_then(|p| p[0].as_str()) == Some("host")),
        "{headers:?}"
    );
    assert_eq!(
        connect
            .get("client")
            .and_then(Value::as_array)
            .map(|c| c[0].as_str()),
        Some(Some("127.0.0.1"))
    );

    send_text(&mut client, "hello worker").await;
    send_text(&mut client, r#"{"type":"chat.say","text":"json too"}"#).await;
    client.send(WsMessage::binary(vec![7u8, 8])).await.unwrap();
    let text = received(&layer).await;
    assert_eq!(
        (
            text.message_type(),
            text.get("text").and_then(Value::as_str)
        ),
        (Some("websocket.receive"), Some("hello worker"))
    );
    assert_eq!(
        received(&layer).await.get("text").and_then(Value::as_str),
        Some(r#"{"type":"chat.say","text":"json too"}"#)
    );
    assert_eq!(
        received(&layer)
            .await
            .get("bytes")
            .and_then(Value::as_slice),
        Some(&[7u8, 8][..])
    );
    // Protocol frames are not forwarded.
    assert_eq!(
        ask(&mut client, json!({"type": "ping"})).await["type"],
        "pong"
    );

    drop(client);
    let gone = received(&layer).await;
    assert_eq!(gone.message_type(), Some("websocket.disconnect"));
    assert_eq!(
        gone.get("reply_channel").and_then(Value::as_str),
        Some(channel)
    );
    // Counted right after the send that delivered it: wait for the count.
    let deadline = tokio::time::Instant::now() + common::WAIT;
    while metric(&metrics(&server).await, "channels_forward_events_total") < 5.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "5 forwarded events never counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_full_forward_channel_answers_worker_busy_and_counts_the_drop() {
    // Room for `websocket.connect` and one frame: nobody reads the channel.
    let (server, _layer) = forwarding_server(2).await;
    let (mut client, _) = gateway(server.address).await;
    send_text(&mut client, "one").await;
    send_text(&mut client, "two").await;
    let busy = next_json(&mut client).await;
    assert_eq!(
        (busy["type"].as_str(), busy["code"].as_str()),
        (Some("error"), Some("worker_busy")),
        "{busy}"
    );
    assert_eq!(
        ask(&mut client, json!({"type": "ping"})).await["type"],
        "pong"
    );
    let body = metrics(&server).await;
    assert_eq!(metric(&body, "channels_forward_dropped_total"), 1.0);
    assert_eq!(
        metric(&body, "channels_gateway_errors_total{code=\"worker_busy\"}"),
        1.0
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn the_console_page_is_one_self_contained_file() {
    let server = Server::start(ServerConfig::default()).await;
    let page = http(server.address, "GET", "/", &[], b"").await;
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert!(page.header("content-security-policy").is_some());
    for needle in [
        "new ReconnectingSocket",
        "from \"/client.js\"",
        "channels.v1",
        "\"subscribe\"",
        "\"publish\"",
        "/metrics",
        "channels_connections_open",
    ] {
        assert!(
            page.body.contains(needle),
            "{needle} missing from the console"
        );
    }
    // No external resources: nothing is loaded from another origin.
    for external in ["http://", "https://", "src=\"//"] {
        assert!(
            !page.body.contains(external),
            "the console refers to {external}"
        );
    }
    // The JavaScript client it imports (clients/js/client.js), importable from any origin.
    let client = http(server.address, "GET", "/client.js", &[], b"").await;
    assert_eq!(client.status, 200);
    assert_eq!(
        client.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(client.header("access-control-allow-origin"), Some("*"));
    assert!(client.body.contains("export class ChannelsClient"));
    server.stop().await.unwrap();
}
