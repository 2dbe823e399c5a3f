//! `/healthz`, `/readyz` and `/metrics`, on a working layer and on a Redis
//! layer whose server is not there.

mod common;

use std::sync::Arc;

use channels_core::SharedLayer;
use channels_redis::{RedisChannelLayer, RedisConfig};
use channels_server::{App, ServerConfig};
use common::{Server, gateway, http, next_text, say, subscribe};

#[tokio::test]
async fn healthz_and_readyz_answer_on_a_working_layer() {
    let server = Server::start(ServerConfig::default()).await;
    let health = http(server.address, "GET", "/healthz", &[], b"").await;
    assert_eq!(
        (health.status, health.json()["status"].as_str()),
        (200, Some("ok"))
    );
    let ready = http(server.address, "GET", "/readyz", &[], b"").await;
    assert_eq!(
        (ready.status, ready.json()["status"].as_str()),
        (200, Some("ready"))
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn readyz_is_503_when_the_layer_cannot_be_reached() {
    // A port nothing listens on: every Redis operation fails.
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let config = RedisConfig::new()
        .host(format!("redis://127.0.0.1:{port}"))
        .prefix("readyz-test");
    let layer: SharedLayer = Arc::new(RedisChannelLayer::new(config).unwrap());
    let server = Server::start_app(layer.clone(), App::new(layer, ServerConfig::default())).await;
    let health = http(server.address, "GET", "/healthz", &[], b"").await;
    assert_eq!(health.status, 200);
    let ready = http(server.address, "GET", "/readyz", &[], b"").await;
    assert_eq!(ready.status, 503, "{ready:?}");
    assert!(
        ready.json()["error"]
            .as_str()
            .is_some_and(|e| e.contains("channel layer")),
        "{ready:?}"
    );
    let metrics = http(server.address, "GET", "/metrics", &[], b"").await;
    assert!(
        metrics
            .body
            .contains("channels_layer_errors_total{op=\"group_send\"} 1"),
        "{}",
        metrics.body
    );
    server.stop().await.unwrap();
}

fn metric(body: &str, name: &str) -> f64 {
    body.lines()
        .find_map(|line| {
            line.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("metric {name} missing from:\n{body}"))
}

#[tokio::test]
async fn metrics_count_connections_frames_and_layer_ops() {
    let server = Server::start(ServerConfig::default()).await;
    let (mut alice, _) = gateway(server.address).await;
    let (mut bob, _) = gateway(server.address).await;
    subscribe(&mut alice, "metrics").await;
    subscribe(&mut bob, "metrics").await;
    say(&mut alice, "metrics", "one").await;
    next_text(&mut alice).await;
    next_text(&mut bob).await;
    let response = http(server.address, "GET", "/metrics", &[], b"").await;
    assert_eq!(response.status, 200);
    assert!(
        response
            .headers
            .iter()
            .any(|(n, v)| n == "content-type" && v.starts_with("text/plain")),
        "{response:?}"
    );
    let body = &response.body;
    assert_eq!(metric(body, "channels_connections_open"), 2.0);
    assert_eq!(metric(body, "channels_connections_accepted_total"), 2.0);
    // In: two `connect`, two `subscribe`, one `publish`; out: their five
    // answers and the two pushes.
    assert_eq!(metric(body, "channels_frames_in_total"), 5.0);
    assert_eq!(metric(body, "channels_frames_out_total"), 7.0);
    assert_eq!(metric(body, "channels_gateway_subscriptions_total"), 2.0);
    assert_eq!(metric(body, "channels_gateway_publishes_total"), 1.0);
    assert_eq!(metric(body, "channels_messages_in_total"), 2.0);
    assert_eq!(
        metric(body, "channels_layer_ops_total{op=\"group_send\"}"),
        1.0
    );
    assert_eq!(
        metric(body, "channels_layer_ops_total{op=\"group_add\"}"),
        2.0
    );
    assert_eq!(metric(body, "channels_queue_drops_total"), 0.0);
    // Every client frame is timed; layer messages are sampled (1 in 16 per
    // connection), so the two broadcast deliveries add nothing here.
    assert_eq!(metric(body, "channels_handle_duration_seconds_count"), 5.0);
    assert_eq!(
        metric(
            body,
            "channels_layer_op_duration_seconds_count{op=\"group_add\"}"
        ),
        2.0
    );
    assert!(
        metric(
            body,
            "channels_layer_op_duration_seconds_count{op=\"new_channel\"}"
        ) >= 2.0
    );
    assert_eq!(
        metric(body, "channels_layer_dropped_total{reason=\"full\"}"),
        0.0
    );
    assert!(metric(body, "process_resident_memory_bytes") > 0.0);
    assert!(metric(body, "process_open_fds") > 0.0);
    assert!(metric(body, "process_start_time_seconds") > 1e9);
    body.lines()
        .find(|line| line.starts_with("process_cpu_seconds_total "))
        .unwrap_or_else(|| panic!("process_cpu_seconds_total missing:\n{body}"));
    assert!(
        body.contains(&format!(
            "channels_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )),
        "{body}"
    );
    assert!(
        body.contains("channels_handle_duration_seconds_bucket{le=\"+Inf\"} 5"),
        "{body}"
    );
    drop((alice, bob));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn embedders_register_their_own_metrics_and_apps_share_nothing() {
    use channels_server::prometheus_client::metrics::counter::Counter;

    let layer: SharedLayer = Arc::new(channels_memory::InMemoryChannelLayer::new());
    let mut one = App::new(layer.clone(), ServerConfig::default());
    let orders: Counter = Counter::default();
    one.registry_mut()
        .register("shop_orders", "Orders placed", orders.clone());
    orders.inc_by(3);
    let two = App::new(layer.clone(), ServerConfig::default());
    let server_one = Server::start_app(layer.clone(), one).await;
    let server_two = Server::start_app(layer, two).await;

    // A refusal counted by one app only.
    let refused = http(server_one.address, "POST", "/api/groups/x", &[], b"{}").await;
    assert_eq!(refused.status, 404, "no publish token, no publish API");
    let page_one = http(server_one.address, "GET", "/metrics", &[], b"")
        .await
        .body;
    let page_two = http(server_two.address, "GET", "/metrics", &[], b"")
        .await
        .body;
    assert_eq!(metric(&page_one, "shop_orders_total"), 3.0);
    assert!(!page_two.contains("shop_orders"), "{page_two}");
    assert_eq!(
        metric(&page_two, "channels_connections_accepted_total"),
        0.0
    );
    server_one.stop().await.unwrap();
    server_two.stop().await.unwrap();
}
