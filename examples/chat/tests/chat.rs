//! The chat demo over real sockets: clients in one room talk, rooms are
//! separate, nicknamed members announce joins, renames and leaves, bad input
//! gets error events without closing, bad room names are rejected, the page
//! is served. (The page itself runs in Chromium in `chat_browser.rs`.)

mod common;

use std::time::Duration;

use channels_server::ServerConfig;
use chat::DEFAULT_MAX_MESSAGE_CHARS;
use common::{Server, connect, expect_quiet, http, next_json, say, send_text, try_connect};
use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

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
    for id in ["status", "rooms", "nick", "log", "text", "send", "error"] {
        assert!(
            page.body.contains(&format!("id=\"{id}\"")),
            "page has no #{id}"
        );
    }
    let plain = http(server.address, "GET", "/ws/chat/lobby", &[], b"").await;
    assert!(
        plain.status >= 400 && plain.status < 500,
        "got {}",
        plain.status
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn nicknamed_members_hear_joins_renames_and_leaves() {
    let server = Server::start(ServerConfig::default()).await;
    let mut alice = connect(&server.ws_url("/ws/chat/den?nick=alice")).await;
    assert_eq!(
        next_json(&mut alice).await,
        json!({"type": "join", "room": "den", "nick": "alice"})
    );
    // Percent-encoded, and trimmed.
    let mut bob = connect(&server.ws_url("/ws/chat/den?nick=%20bob%20")).await;
    let bob_joined = json!({"type": "join", "room": "den", "nick": "bob"});
    assert_eq!(next_json(&mut bob).await, bob_joined);
    assert_eq!(next_json(&mut alice).await, bob_joined);

    send_text(&mut bob, r#"{"type":"message","message":"hi alice"}"#).await;
    let said = json!({"type": "message", "room": "den", "nick": "bob", "message": "hi alice"});
    assert_eq!(next_json(&mut alice).await, said);
    assert_eq!(next_json(&mut bob).await, said);

    send_text(&mut bob, r#"{"type":"nick","nick":"robert"}"#).await;
    let renamed = json!({"type": "nick", "room": "den", "old": "bob", "nick": "robert"});
    assert_eq!(next_json(&mut alice).await, renamed);
    assert_eq!(next_json(&mut bob).await, renamed);

    bob.close(None).await.unwrap();
    assert_eq!(
        next_json(&mut alice).await,
        json!({"type": "leave", "room": "den", "nick": "robert"})
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn bad_input_gets_an_error_event_and_the_connection_stays_open() {
    let server = Server::start(ServerConfig::default()).await;
    let mut client = connect(&server.ws_url("/ws/chat/strict")).await;
    let too_long = json!({ "message": "a".repeat(DEFAULT_MAX_MESSAGE_CHARS + 1) }).to_string();
    let too_long_nick = json!({ "type": "nick", "nick": "n".repeat(33) }).to_string();
    let cases = [
        ("{oops", "invalid_json"),
        ("[1, 2]", "invalid_frame"),
        (r#"{"text":"hi"}"#, "invalid_frame"),
        (r#"{"type":"message","message":false}"#, "invalid_frame"),
        (r#"{"type":"dance"}"#, "unknown_type"),
        (r#"{"message":""}"#, "empty_message"),
        (r#"{"type":"message","message":" \n\t "}"#, "empty_message"),
        (too_long.as_str(), "message_too_long"),
        (too_long_nick.as_str(), "invalid_nick"),
        (r#"{"type":"nick","nick":""}"#, "invalid_nick"),
    ];
    for (frame, code) in cases {
        send_text(&mut client, frame).await;
        let event = next_json(&mut client).await;
        assert_eq!(event["type"], "error", "{frame:.40}: {event}");
        assert_eq!(event["code"], code, "{frame:.40}: {event}");
        assert!(event["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    client.send(Message::binary(b"{}".to_vec())).await.unwrap();
    assert_eq!(next_json(&mut client).await["code"], "unsupported_frame");
    // A nickname in the URL that breaks the rules: an error event, not a refusal.
    let mut anonymous = connect(&server.ws_url("/ws/chat/strict?nick=%07bell")).await;
    assert_eq!(next_json(&mut anonymous).await["code"], "invalid_nick");

    // The longest allowed message still goes through, and so does the rest.
    let longest = "b".repeat(DEFAULT_MAX_MESSAGE_CHARS);
    say(&mut client, &longest).await;
    assert_eq!(next_json(&mut client).await["message"], longest.as_str());
    assert_eq!(next_json(&mut anonymous).await["message"], longest.as_str());
    say(&mut anonymous, "still here").await;
    assert_eq!(next_json(&mut client).await["message"], "still here");
    server.stop().await.unwrap();
}
