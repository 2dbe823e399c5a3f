//! Origin checks and the authentication hook over real sockets.

mod common;

use std::sync::Arc;

use channels_core::consumer::{
    Connect, ConsumerContext, ConsumerError, ConsumerRouter, Identity, WebsocketConsumer,
};
use channels_core::{SharedLayer, async_trait};
use channels_memory::InMemoryChannelLayer;
use channels_server::{App, ServerConfig, TokenAuthenticator};
use common::{Server, next_json, try_connect};

#[tokio::test]
async fn origins_outside_the_list_get_403() {
    let config = ServerConfig::default()
        .allowed_origin("http://good.example")
        .allowed_origin("https://*.trusted.example");
    let server = Server::start(config).await;
    let url = server.ws_url("/ws");
    assert!(
        try_connect(&url, &[("Origin", "http://good.example")])
            .await
            .is_ok()
    );
    assert!(
        try_connect(&url, &[("Origin", "https://app.trusted.example")])
            .await
            .is_ok()
    );
    assert_eq!(
        try_connect(&url, &[("Origin", "http://evil.example")])
            .await
            .err(),
        Some(403)
    );
    assert_eq!(
        try_connect(&url, &[("Origin", "https://trusted.example.evil")])
            .await
            .err(),
        Some(403)
    );
    // With a list, no Origin at all is refused too (Django's OriginValidator).
    assert_eq!(try_connect(&url, &[]).await.err(), Some(403));
    let metrics = common::http(server.address, "GET", "/metrics", &[], b"").await;
    assert!(
        metrics
            .body
            .contains("channels_connections_refused_total{reason=\"origin\"} 3"),
        "{}",
        metrics.body
    );
    server.stop().await.unwrap();
}

/// Accepts only authenticated users and greets them with their claims.
struct Members;

#[async_trait]
impl WebsocketConsumer for Members {
    async fn connect(&mut self, ctx: &mut ConsumerContext) -> Result<Connect, ConsumerError> {
        let Some(user) = ctx.scope().user.clone() else {
            return Ok(Connect::Reject);
        };
        ctx.send_json(&serde_json::json!({ "user": user.id, "role": user.claims.get("role") }))?;
        Ok(Connect::accept())
    }
}

async fn members_server() -> Server {
    let layer: SharedLayer = Arc::new(InMemoryChannelLayer::new());
    let auth = TokenAuthenticator::new()
        .token(
            "alice-token",
            Identity::new("alice").with_claim("role", "admin"),
        )
        .token("bob-token", Identity::new("bob"));
    let app = App::new(layer.clone(), ServerConfig::default())
        .authenticator(auth)
        .consumers(ConsumerRouter::new().route("/ws/members", |_| Members));
    Server::start_app(layer, app).await
}

#[tokio::test]
async fn bearer_cookie_and_query_tokens_put_the_user_in_the_scope() {
    let server = members_server().await;
    let url = server.ws_url("/ws/members");
    let mut alice = try_connect(&url, &[("Authorization", "Bearer alice-token")])
        .await
        .unwrap();
    assert_eq!(
        next_json(&mut alice).await,
        serde_json::json!({"user": "alice", "role": "admin"})
    );
    let mut bob = try_connect(&url, &[("Cookie", "theme=dark; channels_token=bob-token")])
        .await
        .unwrap();
    assert_eq!(next_json(&mut bob).await["user"], "bob");
    let mut query = try_connect(&format!("{url}?token=alice-token"), &[])
        .await
        .unwrap();
    assert_eq!(next_json(&mut query).await["user"], "alice");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn unknown_token_gets_401_and_anonymous_is_left_to_the_consumer() {
    let server = members_server().await;
    let url = server.ws_url("/ws/members");
    assert_eq!(
        try_connect(&url, &[("Authorization", "Bearer nope")])
            .await
            .err(),
        Some(401)
    );
    // No token: anonymous; this consumer rejects anonymous users with 403.
    assert_eq!(try_connect(&url, &[]).await.err(), Some(403));
    server.stop().await.unwrap();
}
