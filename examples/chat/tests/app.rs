//! The `chat` binary as a user runs it: its own routes answer next to the merged rust-channels
//! ones (page, health, chat sockets with join notices and messages), and SIGTERM closes the
//! sockets with 1001 and exits 0. Every wait has a timeout.

// A panic is how a test reports failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Stdio;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const WAIT: Duration = Duration::from_secs(5);

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Starts `chat --bind 127.0.0.1:0` on the memory layer; returns it and its address.
async fn start() -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_chat"))
        .args(["--bind", "127.0.0.1:0", "--layer", "memory"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("the chat binary starts");
    let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    let find = async {
        while let Some(line) = lines.next_line().await.expect("read stdout") {
            if let Some(address) = line.strip_prefix("listening on ") {
                return address.to_owned();
            }
        }
        panic!("chat exited before listening");
    };
    let address = tokio::time::timeout(Duration::from_secs(20), find)
        .await
        .expect("chat did not print `listening on ADDR` within 20 s");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, address)
}

/// `GET path`; returns the status and body.
async fn get(address: &str, path: &str) -> (u16, String) {
    let exchange = async {
        let mut stream = TcpStream::connect(address).await.unwrap();
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut raw = String::new();
        stream.read_to_string(&mut raw).await.unwrap();
        raw
    };
    let raw = tokio::time::timeout(WAIT, exchange)
        .await
        .expect("GET timed out");
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {raw:?}"));
    let body = raw.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    (status, body)
}

async fn connect(url: &str) -> Client {
    tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .expect("connect timed out")
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"))
        .0
}

async fn next_json(client: &mut Client) -> Value {
    loop {
        let message = tokio::time::timeout(WAIT, client.next())
            .await
            .expect("timed out waiting for a frame")
            .expect("stream ended")
            .expect("websocket error");
        match message {
            Message::Text(text) => return serde_json::from_str(&text).unwrap(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn own_routes_and_the_mounted_chat_work_side_by_side() {
    let (child, address) = start().await;

    let (status, body) = get(&address, "/hello").await;
    assert_eq!(
        (status, body.as_str()),
        (200, "hello from your own axum route\n")
    );
    let (status, body) = get(&address, "/api/rooms").await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["rooms"][0],
        "lobby"
    );
    let (status, page) = get(&address, "/").await;
    assert_eq!(status, 200);
    assert!(
        page.contains("/ws/chat/"),
        "the chat page is not served at /"
    );
    // The page imports the JavaScript client, served beside it.
    assert!(page.contains(r#"from "/client.js""#), "{page}");
    let (status, client) = get(&address, "/client.js").await;
    assert_eq!(status, 200);
    assert!(client.contains("export class ReconnectingSocket"));
    assert_eq!(get(&address, "/healthz").await.0, 200);

    let mut alice = connect(&format!("ws://{address}/ws/chat/lobby?nick=alice")).await;
    assert_eq!(
        next_json(&mut alice).await,
        json!({"type": "join", "room": "lobby", "nick": "alice"})
    );
    let mut bob = connect(&format!("ws://{address}/ws/chat/lobby?nick=bob")).await;
    assert_eq!(next_json(&mut bob).await["nick"], "bob");
    assert_eq!(next_json(&mut alice).await["nick"], "bob");
    bob.send(Message::text(
        r#"{"type":"message","message":"hi from bob"}"#,
    ))
    .await
    .unwrap();
    let said = json!({"type": "message", "room": "lobby", "nick": "bob", "message": "hi from bob"});
    assert_eq!(next_json(&mut alice).await, said);
    assert_eq!(next_json(&mut bob).await, said);

    // SIGTERM: sockets close with 1001 and the process exits 0.
    let pid = child.id().expect("running").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let close = loop {
        let next = tokio::time::timeout(WAIT, alice.next())
            .await
            .expect("no close frame");
        match next {
            Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(close, Some(1001));
    let mut child = child;
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("chat exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "exit status {status}");
}
