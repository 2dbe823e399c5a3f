//! Django's own signed tokens at the gateway: tokens made by the real
//! `django.core.signing.dumps` (Django from the interop venv, through
//! `interop/django_tokens.py`) connect with their claims, compressed ones
//! too; tokens of another key or salt, too old for `--django-max-age`, or
//! past their `exp` are closed with 4001.

// Helpers outside #[test] fns unwrap too: a panic is how a test reports failure.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use channels_server::{DEFAULT_DJANGO_SALT, GatewayConfig, ServerConfig};
use common::{Server, ask, connect, expect_close, gateway_at, next_json, send_json};
use serde_json::{Value, json};

const KEY: &str = "django-insecure-gateway-test-key";
const SALT: &str = "channels.gateway";

/// Runs `interop/django_tokens.py` once for every spec.
fn django_tokens(specs: &Value) -> Vec<String> {
    let script = common::workspace_root().join("interop/django_tokens.py");
    let mut child = Command::new(common::python())
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python starts");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(specs.to_string().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "django_tokens.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn refused_with(server: &Server, token: &str) -> (u16, String) {
    let mut client = connect(&format!("{}?token={token}", server.ws_url("/ws"))).await;
    let close = expect_close(&mut client).await;
    (u16::from(close.code), close.reason.to_string())
}

#[tokio::test]
async fn tokens_made_by_django_connect_and_bad_ones_are_refused() {
    let many: Vec<String> = (0..40).map(|i| format!("team.{i}")).collect();
    let specs = json!([
        {"claims": {"sub": "42", "groups": ["news"], "allow": ["chat.*"], "publish": ["chat.lobby"]}, "key": KEY, "salt": SALT},
        {"claims": {"sub": "7", "groups": many}, "key": KEY, "salt": SALT, "compress": true},
        {"claims": {"sub": "42"}, "key": "another-secret-key", "salt": SALT},
        {"claims": {"sub": "42"}, "key": KEY},
        {"claims": {"sub": "42"}, "key": KEY, "salt": SALT, "age": 120},
        {"claims": {"sub": "42", "exp": now() - 5}, "key": KEY, "salt": SALT},
        {"claims": {"sub": 5, "exp": now() + 600}, "key": KEY, "salt": SALT},
    ]);
    let tokens = tokio::task::spawn_blocking(move || django_tokens(&specs))
        .await
        .unwrap();
    assert!(
        tokens[1].starts_with('.'),
        "compress=True marks the payload: {}",
        tokens[1]
    );

    let config = GatewayConfig::default()
        .django(KEY, SALT)
        .django_max_age(Duration::from_secs(60));
    let server = Server::start(ServerConfig::default().gateway(config)).await;
    let url = server.ws_url("/ws");

    // In the query string: connected at once, with the token's claims.
    let (mut alice, connected) = gateway_at(&format!("{url}?token={}", tokens[0])).await;
    assert_eq!(connected["user"], "42");
    assert_eq!(connected["groups"], json!(["user.42", "news"]));
    assert_eq!(connected["expires_at"], Value::Null);
    let subscribed = ask(
        &mut alice,
        json!({"type": "subscribe", "group": "chat.lobby"}),
    )
    .await;
    assert_eq!(subscribed["type"], "subscribed", "{subscribed}");
    let forbidden = ask(&mut alice, json!({"type": "subscribe", "group": "admin"})).await;
    assert_eq!(forbidden["code"], "forbidden", "{forbidden}");

    // In a connect frame, compressed: every group of the claim is joined.
    let mut bob = connect(&url).await;
    send_json(&mut bob, &json!({"type": "connect", "token": tokens[1]})).await;
    let connected = next_json(&mut bob).await;
    assert_eq!(connected["user"], "7", "{connected}");
    assert_eq!(connected["groups"].as_array().unwrap().len(), 41);

    // A numeric `sub` is its decimal text; `exp` is kept.
    let (_carol, connected) = gateway_at(&format!("{url}?token={}", tokens[6])).await;
    assert_eq!(connected["user"], "5");
    assert!(connected["expires_at"].as_u64().unwrap() > now());

    for (index, reason) in [
        (2, "signature"),
        (3, "signature"),
        (4, "old"),
        (5, "expired"),
    ] {
        let (code, message) = refused_with(&server, &tokens[index]).await;
        assert_eq!(code, 4001, "token {index}: {message}");
        assert!(message.contains(reason), "token {index}: {message}");
    }
    server.stop().await.unwrap();

    // The default salt of signing.dumps is the server's default too.
    let config = GatewayConfig::default().django(KEY, DEFAULT_DJANGO_SALT);
    let server = Server::start(ServerConfig::default().gateway(config)).await;
    let (_dave, connected) =
        gateway_at(&format!("{}?token={}", server.ws_url("/ws"), tokens[3])).await;
    assert_eq!(connected["user"], "42");
    server.stop().await.unwrap();
}
