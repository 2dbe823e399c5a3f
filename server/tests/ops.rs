//! Operating the server: the admin listener, the client address behind
//! trusted proxies, the per-address connection rate, the shutdown close
//! code, and the publish API's bearer scheme.

// Helpers outside #[test] fns unwrap too: a panic is how a test reports failure.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use channels_core::consumer::{
    Accept, Connect, ConsumerContext, ConsumerError, ConsumerRouter, WebsocketConsumer,
};
use channels_core::{SharedLayer, async_trait};
use channels_memory::InMemoryChannelLayer;
use channels_server::{App, ServerConfig, ServerError};
use common::{
    Server, connect, expect_close, gateway, http, metric_value, next_json, next_text, subscribe,
    try_connect,
};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Tells the client the address its scope holds.
struct WhoAmI;

#[async_trait]
impl WebsocketConsumer for WhoAmI {
    async fn connect(&mut self, ctx: &mut ConsumerContext) -> Result<Connect, ConsumerError> {
        let client = ctx.scope().client.map(|c| c.ip().to_string());
        ctx.send_json(&serde_json::json!({ "client": client }))?;
        Ok(Accept::default().into())
    }
}

fn whoami_app(layer: &SharedLayer, config: ServerConfig) -> App {
    App::new(layer.clone(), config).consumers(ConsumerRouter::new().route("/ws/whoami", |_| WhoAmI))
}

async fn client_seen(server: &Server, forwarded: Option<&str>) -> serde_json::Value {
    let headers: Vec<(&str, &str)> = forwarded
        .map(|value| vec![("x-forwarded-for", value)])
        .unwrap_or_default();
    let mut client = try_connect(&server.ws_url("/ws/whoami"), &headers)
        .await
        .unwrap_or_else(|status| panic!("refused with {status}"));
    next_json(&mut client).await["client"].clone()
}

#[tokio::test]
async fn the_client_address_comes_from_trusted_proxies_only() {
    let layer: SharedLayer = Arc::new(InMemoryChannelLayer::new());
    let plain = Server::start_app(layer.clone(), whoami_app(&layer, ServerConfig::default())).await;
    assert_eq!(
        client_seen(&plain, Some("198.51.100.7")).await,
        "127.0.0.1",
        "without --trusted-proxy the header is ignored"
    );

    let config = ServerConfig::default()
        .trusted_proxy("127.0.0.0/8".parse().unwrap())
        .trusted_proxy("10.0.0.0/8".parse().unwrap());
    let proxied = Server::start_app(layer.clone(), whoami_app(&layer, config)).await;
    assert_eq!(client_seen(&proxied, None).await, "127.0.0.1");
    // Spoofed left part, real client, then another trusted proxy.
    assert_eq!(
        client_seen(&proxied, Some("6.6.6.6, 198.51.100.7, 10.1.2.3")).await,
        "198.51.100.7"
    );
    plain.stop().await.unwrap();
    proxied.stop().await.unwrap();
}

#[tokio::test]
async fn connections_over_the_rate_get_429_and_are_counted() {
    let server = Server::start(ServerConfig::default().connection_rate(1)).await;
    let url = server.ws_url("/ws");
    let _first = connect(&url).await;
    assert_eq!(try_connect(&url, &[]).await.err(), Some(429));
    let metrics = http(server.address, "GET", "/metrics", &[], b"").await;
    assert_eq!(
        metric_value(
            &metrics.body,
            "channels_connections_refused_total{reason=\"rate\"}"
        ),
        Some(1.0),
        "{}",
        metrics.body
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn shutdown_closes_sockets_with_the_configured_code() {
    let server = Server::start(ServerConfig::default().shutdown_close_code(1012)).await;
    let (mut client, _) = gateway(server.address).await;
    let stopping = tokio::spawn(server.stop());
    assert_eq!(u16::from(expect_close(&mut client).await.code), 1012);
    drop(client);
    stopping.await.unwrap().unwrap();
}

/// A server with `/metrics` and the publish API on a second listener.
struct AdminServer {
    public: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), ServerError>>,
}

async fn start_with_admin(config: ServerConfig) -> AdminServer {
    let layer: SharedLayer = Arc::new(InMemoryChannelLayer::new());
    let app = App::new(layer, config).gateway().unwrap();
    let public = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (public_addr, admin_addr) = (public.local_addr().unwrap(), admin.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(app.serve_with_admin(public, admin, async move {
        let _ = stopped.await;
    }));
    AdminServer {
        public: public_addr,
        admin: admin_addr,
        stop,
        task,
    }
}

#[tokio::test]
async fn the_admin_listener_takes_metrics_and_the_publish_api() {
    let server = start_with_admin(ServerConfig::default().publish_token("admin-secret")).await;
    let auth = [("Authorization", "Bearer admin-secret")];
    let body = br#"{"type": "chat.message", "text": "from admin"}"#;

    // Public port: sockets and health, no metrics, no publish API.
    let (mut alice, _) = gateway(server.public).await;
    subscribe(&mut alice, "ops").await;
    for path in ["/healthz", "/readyz"] {
        assert_eq!(http(server.public, "GET", path, &[], b"").await.status, 200);
        assert_eq!(http(server.admin, "GET", path, &[], b"").await.status, 200);
    }
    assert_eq!(
        http(server.public, "GET", "/metrics", &[], b"")
            .await
            .status,
        404
    );
    let public_publish = http(server.public, "POST", "/api/groups/ops", &auth, body).await;
    assert_eq!(public_publish.status, 404);

    // Admin port: both, and a publish there reaches the public socket.
    let metrics = http(server.admin, "GET", "/metrics", &[], b"").await;
    assert_eq!(metrics.status, 200);
    assert_eq!(
        metric_value(&metrics.body, "channels_connections_open"),
        Some(1.0)
    );
    let published = http(server.admin, "POST", "/api/groups/ops", &auth, body).await;
    assert_eq!(published.status, 202, "{published:?}");
    assert_eq!(next_text(&mut alice).await, "from admin");

    drop(alice);
    let _ = server.stop.send(());
    server.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive_and_big_bodies_get_json_413() {
    let server = Server::start(
        ServerConfig::default()
            .publish_token("tok")
            .max_frame_bytes(256),
    )
    .await;
    let body = br#"{"type": "chat.message", "message": "hi"}"#;
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let auth = format!("{scheme} tok");
        let response = http(
            server.address,
            "POST",
            "/api/groups/g",
            &[("Authorization", auth.as_str())],
            body,
        )
        .await;
        assert_eq!(response.status, 202, "{scheme}: {response:?}");
    }
    let wrong = http(
        server.address,
        "POST",
        "/api/groups/g",
        &[("Authorization", "Basic tok")],
        body,
    )
    .await;
    assert_eq!(wrong.status, 401);
    let big = format!(r#"{{"type": "x", "pad": "{}"}}"#, "p".repeat(1000));
    let too_big = http(
        server.address,
        "POST",
        "/api/groups/g",
        &[("Authorization", "Bearer tok")],
        big.as_bytes(),
    )
    .await;
    assert_eq!(too_big.status, 413, "{too_big:?}");
    assert_eq!(too_big.json()["error"], "body larger than 256 bytes");
    server.stop().await.unwrap();
}
