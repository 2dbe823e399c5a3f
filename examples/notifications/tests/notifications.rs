//! The real notifications binary (in-memory layer) with real WebSocket and HTTP clients.

mod support;

use support::{ADMIN, Server, close, next_json, refused_status, send_json};

#[tokio::test]
async fn sockets_need_a_known_token() {
    let server = Server::start(&[]);
    // No token: anonymous, so the consumer rejects the handshake.
    assert_eq!(refused_status(server.connect(None).await), 403);
    // A token nobody has: the server's authenticator refuses it.
    assert_eq!(refused_status(server.connect(Some("nope")).await), 401);
    let (socket, unread) = server.user("1").await;
    assert_eq!(unread, 0);
    close(socket).await;
}

#[tokio::test]
async fn notify_endpoints_need_the_admin_token_and_a_known_user() {
    let server = Server::start(&[]);
    let body = r#"{"title":"x"}"#;
    let (status, answer) = server.post("/notify/1", None, body).await;
    assert_eq!(status, 401, "{answer}");
    let (status, answer) = server.post("/notify-all", Some("wrong"), body).await;
    assert_eq!(status, 401, "{answer}");
    let (status, answer) = server.post("/notify/999", Some(ADMIN), body).await;
    assert_eq!(status, 404, "{answer}");
    let (status, answer) = server.post("/notify/1", Some(ADMIN), "[1]").await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer["error"].is_string(), "{answer}");
    // Over --max-frame-bytes (64 KiB by default).
    let huge = format!(r#"{{"title":"{}"}}"#, "x".repeat(70_000));
    let (status, _) = server
        .request("POST", "/notify/1", Some(ADMIN), &huge)
        .await;
    assert_eq!(status, 413);
}

#[tokio::test]
async fn each_user_gets_only_their_own_notifications() {
    let server = Server::start(&[]);
    let (mut alice, _) = server.user("1").await;
    let (mut bob, _) = server.user("2").await;
    let for_alice = server.notify("1", "for alice").await;
    let for_bob = server.notify("2", "for bob").await;

    let heard = next_json(&mut alice).await;
    assert_eq!(heard["type"], "notification", "{heard}");
    assert_eq!(heard["id"], for_alice.as_str());
    assert_eq!(heard["title"], "for alice");
    assert_eq!(heard["unread"], 1);
    // Bob's first frame is his own: alice's notification never reached him.
    let heard = next_json(&mut bob).await;
    assert_eq!(heard["id"], for_bob.as_str(), "{heard}");
    assert_eq!(heard["title"], "for bob");
    close(alice).await;
    close(bob).await;
}

#[tokio::test]
async fn notify_all_reaches_every_socket() {
    let server = Server::start(&[]);
    let (mut alice, _) = server.user("1").await;
    let (mut alice_tab, _) = server.user("1").await;
    let (mut bob, _) = server.user("2").await;
    let (status, answer) = server
        .post("/notify-all", Some(ADMIN), r#"{"title":"maintenance"}"#)
        .await;
    assert_eq!(status, 202, "{answer}");
    for socket in [&mut alice, &mut alice_tab, &mut bob] {
        let heard = next_json(socket).await;
        assert_eq!(heard["title"], "maintenance", "{heard}");
        assert_eq!(heard["id"], answer["id"]);
        assert_eq!(heard["unread"], 1, "counted once per user, not per socket");
    }
    // User 42 was offline, but the broadcast is waiting for them.
    let (socket, unread) = server.user("42").await;
    assert_eq!(unread, 1);
    for socket in [alice, alice_tab, bob, socket] {
        close(socket).await;
    }
}

#[tokio::test]
async fn unread_count_survives_reconnects_until_marked_read() {
    let server = Server::start(&[]);
    let (mut tab, _) = server.user("1").await;
    // Each frame carries the count at delivery time.
    server.notify("1", "one").await;
    assert_eq!(next_json(&mut tab).await["unread"], 1);
    server.notify("1", "two").await;
    assert_eq!(next_json(&mut tab).await["unread"], 2);
    close(tab).await;
    // Sent while the user had no socket open: still counted.
    server.notify("1", "three").await;

    let (mut reloaded, unread) = server.user("1").await;
    assert_eq!(unread, 3);
    let (mut other_tab, unread) = server.user("1").await;
    assert_eq!(unread, 3);
    send_json(&mut reloaded, serde_json::json!({ "type": "read" })).await;
    for socket in [&mut reloaded, &mut other_tab] {
        let reset = next_json(socket).await;
        assert_eq!(reset, serde_json::json!({ "type": "unread", "count": 0 }));
    }
    close(reloaded).await;
    close(other_tab).await;
    let (socket, unread) = server.user("1").await;
    assert_eq!(unread, 0);
    close(socket).await;
}

#[tokio::test]
async fn unknown_frames_get_an_error_and_keep_the_socket() {
    let server = Server::start(&[]);
    let (mut socket, _) = server.user("2").await;
    send_json(&mut socket, serde_json::json!({ "type": "dance" })).await;
    let answer = next_json(&mut socket).await;
    assert!(answer["error"].is_string(), "{answer}");
    let id = server.notify("2", "still here").await;
    assert_eq!(next_json(&mut socket).await["id"], id.as_str());
    close(socket).await;
}

#[tokio::test]
async fn serves_the_demo_page() {
    let server = Server::start(&[]);
    let (status, page) = server.request("GET", "/", None, "").await;
    assert_eq!(status, 200);
    assert!(
        page.contains("/ws/notifications?token=demo-token-"),
        "{page}"
    );
}
