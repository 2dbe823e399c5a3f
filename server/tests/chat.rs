//! The chat demo over real sockets: clients in one room talk, rooms are
//! separate, bad room names are rejected, the page is served.

mod common;

use std::time::Duration;

use channels_server::ServerConfig;
use common::{Server, connect, expect_quiet, http, next_json, say, send_text, try_connect};

#[tokio::test]
async fn clients_in_a_room_chat_and_other_rooms_hear_nothing() {
    let server = Server::start(ServerConfig::default()).await;
    let mut alice = connect(&server.ws_url("/ws/chat/lobby")).await;
    let mut bob = connect(&server.ws_url("/ws/chat/lobby")).await;
    let mut carol = connect(&server.ws_url("/ws/chat/kitchen")).await;

    say(&mut alice, "hi bob").await;
    assert_eq!(next_json(&mut alice).await["message"], "hi bob");
    assert_eq!(next_json(&mut bob).await["message"], "hi bob");
    say(&mut bob, "hi alice").await;
    assert_eq!(next_json(&mut alice).await["message"], "hi alice");
    assert_eq!(next_json(&mut bob).await["message"], "hi alice");
    expect_quiet(&mut carol, Duration::from_millis(100)).await;

    // Invalid JSON gets an error frame, and the connection stays usable.
    send_text(&mut carol, "{oops").await;
    assert!(
        next_json(&mut carol).await["error"]
            .as_str()
            .unwrap()
            .starts_with("invalid JSON")
    );
    say(&mut carol, "still here").await;
    assert_eq!(next_json(&mut carol).await["message"], "still here");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn many_clients_all_receive_a_broadcast_in_order() {
    let server = Server::start(ServerConfig::default()).await;
    let mut clients = Vec::new();
    for _ in 0..20 {
        clients.push(connect(&server.ws_url("/ws/chat/crowd")).await);
    }
    for i in 0..10 {
        say(&mut clients[0], &format!("m{i}")).await;
    }
    for client in &mut clients {
        for i in 0..10 {
            assert_eq!(next_json(client).await["message"], format!("m{i}"));
        }
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn room_names_that_are_not_group_names_are_rejected_with_403() {
    let server = Server::start(ServerConfig::default()).await;
    // `%21` is `!`, not allowed in a group name.
    let refused = try_connect(&server.ws_url("/ws/chat/bad%21room"), &[]).await;
    assert_eq!(refused.err(), Some(403));
    // A path with no route is a 404, not a WebSocket.
    assert_eq!(
        try_connect(&server.ws_url("/ws/nothing"), &[]).await.err(),
        Some(404)
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn page_is_served_and_plain_http_to_a_socket_route_is_refused() {
    let server = Server::start(ServerConfig::default()).await;
    let page = http(server.address, "GET", "/", &[], b"").await;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("/ws/chat/"),
        "page does not open the chat socket"
    );
    let plain = http(server.address, "GET", "/ws/chat/lobby", &[], b"").await;
    assert!(
        plain.status >= 400 && plain.status < 500,
        "got {}",
        plain.status
    );
    server.stop().await.unwrap();
}
