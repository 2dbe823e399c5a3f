//! The real `channels-server` binary: it starts with no setup (the gateway
//! in development mode, with a loud warning, and the console page), reads
//! its flags from `CHANNELS_*` env vars, serves the publish API, and shuts
//! down gracefully (1001) on SIGTERM.

mod common;

use std::time::Duration;

use common::{expect_close, gateway, http, next_text, say, subscribe};
use tokio::process::Command;

#[tokio::test]
async fn binary_serves_the_gateway_and_publish_then_stops_on_sigterm() {
    let (mut child, address) = common::start_binary(
        &["--bind", "127.0.0.1:0", "--log-format", "json"],
        &[
            ("CHANNELS_PUBLISH_TOKEN", "binary-token"),
            ("CHANNELS_OUTBOUND_QUEUE", "32"),
        ],
    )
    .await;
    // No verifier configured: development mode, said loudly.
    assert!(
        child.output().contains("DEVELOPMENT MODE"),
        "{}",
        child.output()
    );
    let page = http(address, "GET", "/", &[], b"").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("channels-server console"), "{page:?}");

    let (mut alice, _) = gateway(address).await;
    let (mut bob, _) = gateway(address).await;
    subscribe(&mut alice, "lobby").await;
    subscribe(&mut bob, "lobby").await;
    say(&mut alice, "lobby", "hello from alice").await;
    assert_eq!(next_text(&mut bob).await, "hello from alice");
    assert_eq!(next_text(&mut alice).await, "hello from alice");

    let published = http(
        address,
        "POST",
        "/api/groups/lobby",
        &[("Authorization", "Bearer binary-token")],
        br#"{"type": "chat.message", "text": "from http"}"#,
    )
    .await;
    assert_eq!(published.status, 202, "{published:?}");
    assert_eq!(next_text(&mut bob).await, "from http");
    assert_eq!(http(address, "GET", "/readyz", &[], b"").await.status, 200);

    common::sigterm(&child);
    assert_eq!(u16::from(expect_close(&mut alice).await.code), 1001);
    assert_eq!(u16::from(expect_close(&mut bob).await.code), 1001);
    let status = common::wait_exit(&mut child);
    assert!(status.success(), "exit status {status}");
}

#[tokio::test]
async fn bad_layer_settings_are_a_clear_startup_error() {
    let output = tokio::time::timeout(
        Duration::from_secs(10),
        Command::new(env!("CARGO_BIN_EXE_channels-server"))
            .args(["--bind", "127.0.0.1:0", "--layer", "redis"])
            .env("CHANNELS_REDIS_URL", "ftp://not-redis")
            .output(),
    )
    .await
    .expect("channels-server did not exit")
    .expect("run channels-server");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("ftp://not-redis"), "stderr: {stderr}");
}

#[tokio::test]
async fn help_lists_every_flag() {
    let output = Command::new(env!("CARGO_BIN_EXE_channels-server"))
        .arg("--help")
        .output()
        .await
        .expect("run --help");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--bind",
        "--layer",
        "--redis-url",
        "--redis-ca-file",
        "--publish-token",
        "--allowed-origin",
        "--idle-timeout",
        "--config",
        "--admin-bind",
        "--drain-timeout",
        "--shutdown-close-code",
        "--trusted-proxy",
        "--connection-rate",
        "--jwt-secret",
        "--jwt-public-key",
        "--jwks-file",
        "--django-secret-key",
        "--django-salt",
        "--django-max-age",
        "--forward-channel",
        "--presence",
    ] {
        assert!(help.contains(flag), "{flag} missing:\n{help}");
    }
    assert!(
        help.contains("127.0.0.1:8000"),
        "default bind missing:\n{help}"
    );
}
