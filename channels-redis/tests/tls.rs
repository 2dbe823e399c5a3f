//! `rediss://` (rustls): both layers against a real `redis-server` listening
//! with TLS, whose CA and server certificate the test makes on the spot. The
//! layers work once the CA is trusted (layer-wide `ca_file` or the host's own,
//! channels_redis's `ssl_ca_certs`); a certificate from another CA, or one
//! the system's CA store does not know, fails at once with a backend error
//! that says the certificate was rejected.
#![allow(clippy::unwrap_used)] // test setup: a failed step should panic right there

use std::sync::OnceLock;
use std::time::Duration;

use channels_core::{ChannelLayer, LayerError, Message};
use channels_redis::testing::{RedisServer, TestCertificates, tracking_clients, unique_prefix};
use channels_redis::{
    BackendError, RedisChannelLayer, RedisConfig, RedisHost, RedisPubSubChannelLayer,
};
use tokio::time::timeout;

/// Bound on one wait: a TLS handshake plus a round trip or two.
const WAIT: Duration = Duration::from_secs(5);

/// The TLS server shared by this binary, and the certificates it serves.
fn tls_server() -> &'static (TestCertificates, RedisServer) {
    static SERVER: OnceLock<(TestCertificates, RedisServer)> = OnceLock::new();
    SERVER.get_or_init(|| {
        let certificates = TestCertificates::generate().unwrap();
        let server = RedisServer::start_tls(&certificates)
            .expect("redis-server with TLS support (Debian's is built with it)");
        (certificates, server)
    })
}

/// A config for the TLS server trusting the CA that signed its certificate.
fn trusted_config() -> RedisConfig {
    let (certificates, server) = tls_server();
    RedisConfig::new()
        .host(server.tls_url())
        .ca_file(certificates.ca_file())
        .prefix(unique_prefix())
}

/// The backend error inside `result`, which must be a rejected certificate.
fn assert_certificate_rejected<T: std::fmt::Debug>(result: Result<T, LayerError>) {
    let error = match result {
        Err(LayerError::Backend(error)) => error,
        other => panic!("expected a backend error, got {other:?}"),
    };
    let message = error.to_string();
    assert!(
        message.contains("TLS certificate") && message.contains("ssl_ca_certs"),
        "{message}"
    );
    if let Some(backend) = error.downcast_ref::<BackendError>() {
        assert!(backend.is_certificate_rejected(), "{backend}");
    }
}

async fn core_round_trips(layer: &RedisChannelLayer) {
    layer
        .send("tls.plain", Message::new("plain").with("n", 1))
        .await
        .unwrap();
    let got = timeout(WAIT, layer.receive("tls.plain"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.get("n").and_then(|v| v.as_i64()), Some(1));

    // Process-local: the receive loop's dedicated connection is TLS too.
    let inbox = layer.new_receiver("specific").await.unwrap();
    layer.group_add("tls.room", inbox.channel()).await.unwrap();
    layer
        .group_send("tls.room", Message::new("room.message"))
        .await
        .unwrap();
    let got = timeout(WAIT, inbox.recv()).await.unwrap().unwrap();
    assert_eq!(got.message_type(), Some("room.message"));
    // The group was read on a tracking connection over TLS (RESP3 kept the
    // CA): its member cache is in use.
    let (_, server) = tls_server();
    let tls_port = format!("laddr=127.0.0.1:{}", server.tls_port().unwrap());
    let tracking = tracking_clients(&server.url()).await.unwrap();
    assert!(
        tracking
            .iter()
            .any(|line| line.split(' ').any(|field| field == tls_port)),
        "no tracking connection over TLS: {tracking:?}"
    );
    layer
        .send(inbox.channel(), Message::new("direct"))
        .await
        .unwrap();
    let got = timeout(WAIT, inbox.recv()).await.unwrap().unwrap();
    assert_eq!(got.message_type(), Some("direct"));
}

#[tokio::test]
async fn core_layer_works_over_rediss_with_the_ca_trusted() {
    let layer = RedisChannelLayer::new(trusted_config()).unwrap();
    core_round_trips(&layer).await;
    layer.flush().await.unwrap();
    layer.close().await.unwrap();
}

#[tokio::test]
async fn a_hosts_own_ca_file_works_like_the_layer_wide_one() {
    let (certificates, server) = tls_server();
    let host = RedisHost::parse(&server.tls_url())
        .unwrap()
        .with_ca_file(certificates.ca_file())
        .unwrap();
    let layer =
        RedisChannelLayer::new(RedisConfig::new().host(host).prefix(unique_prefix())).unwrap();
    core_round_trips(&layer).await;
}

#[tokio::test]
async fn pubsub_layer_works_over_rediss_with_the_ca_trusted() {
    let layer = RedisPubSubChannelLayer::new(trusted_config()).unwrap();
    let inbox = layer.new_receiver("specific").await.unwrap();
    layer.group_add("tls.room", inbox.channel()).await.unwrap();
    layer
        .group_send("tls.room", Message::new("room.message"))
        .await
        .unwrap();
    let got = timeout(WAIT, inbox.recv()).await.unwrap().unwrap();
    assert_eq!(got.message_type(), Some("room.message"));
    layer
        .send(inbox.channel(), Message::new("direct"))
        .await
        .unwrap();
    let got = timeout(WAIT, inbox.recv()).await.unwrap().unwrap();
    assert_eq!(got.message_type(), Some("direct"));
}

#[tokio::test]
async fn a_certificate_signed_by_another_ca_is_a_clear_error_not_a_hang() {
    let (_, server) = tls_server();
    let other = TestCertificates::generate().unwrap();
    let config = RedisConfig::new()
        .host(server.tls_url())
        .ca_file(other.ca_file())
        .prefix(unique_prefix());

    let core = RedisChannelLayer::new(config.clone()).unwrap();
    assert_certificate_rejected(
        timeout(WAIT, core.send("tls.x", Message::new("m")))
            .await
            .unwrap(),
    );
    assert_certificate_rejected(timeout(WAIT, core.receive("tls.x")).await.unwrap());
    let channel = core.new_channel("specific").await.unwrap();
    assert_certificate_rejected(timeout(WAIT, core.receive(&channel)).await.unwrap());

    let pubsub = RedisPubSubChannelLayer::new(config).unwrap();
    assert_certificate_rejected(
        timeout(WAIT, pubsub.send("tls.x", Message::new("m")))
            .await
            .unwrap(),
    );
    // A new channel is subscribed at once; that gives up after the link
    // wait (connect timeout + 500 ms) with the worker's reason.
    assert_certificate_rejected(timeout(WAIT, pubsub.new_channel("specific")).await.unwrap());
}

#[tokio::test]
async fn without_a_ca_file_the_system_store_is_used_and_rejects_a_private_ca() {
    let (_, server) = tls_server();
    let layer = RedisChannelLayer::new(
        RedisConfig::new()
            .host(server.tls_url())
            .prefix(unique_prefix()),
    )
    .unwrap();
    assert_certificate_rejected(
        timeout(WAIT, layer.send("tls.x", Message::new("m")))
            .await
            .unwrap(),
    );
}

#[test]
fn unusable_ca_settings_are_config_errors() {
    let (certificates, server) = tls_server();
    let invalid = |config: RedisConfig| {
        let core = RedisChannelLayer::new(config.clone());
        assert!(
            matches!(core, Err(LayerError::InvalidConfig { .. })),
            "{core:?}"
        );
        let pubsub = RedisPubSubChannelLayer::new(config);
        assert!(
            matches!(pubsub, Err(LayerError::InvalidConfig { .. })),
            "{pubsub:?}"
        );
    };
    // A CA file that is not there, or holds no certificate.
    invalid(
        RedisConfig::new()
            .host(server.tls_url())
            .ca_file("/nonexistent/ca.pem"),
    );
    invalid(
        RedisConfig::new()
            .host(server.tls_url())
            .ca_file(certificates.key_file()),
    );
    // A CA file with nothing to apply to.
    invalid(
        RedisConfig::new()
            .host(server.url())
            .ca_file(certificates.ca_file()),
    );
    assert!(matches!(
        RedisHost::parse(&server.url())
            .unwrap()
            .with_ca_file(certificates.ca_file()),
        Err(LayerError::InvalidConfig { .. })
    ));
}
