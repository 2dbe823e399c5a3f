//! Limits over real sockets: oversized frames close with 1009, invalid UTF-8
//! with 1007, a client that does not read is closed with 1013 while the others
//! keep receiving, the connection limit answers 503, and a request that is not
//! a WebSocket upgrade gets 400.

mod common;

use std::time::Duration;

use channels_server::ServerConfig;
use common::{
    Server, connect, expect_close, gateway, next_text, say, send_text, subscribe, try_connect,
};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

#[tokio::test]
async fn oversized_frame_closes_with_1009() {
    let server = Server::start(ServerConfig::default().max_frame_bytes(1024)).await;
    let (mut client, _) = gateway(server.address).await;
    subscribe(&mut client, "limits").await;
    // Just under the limit passes.
    say(&mut client, "limits", &"a".repeat(900)).await;
    assert_eq!(next_text(&mut client).await.len(), 900);
    send_text(&mut client, &"x".repeat(2000)).await;
    let close = expect_close(&mut client).await;
    assert_eq!(u16::from(close.code), 1009, "{close:?}");
    // Counted by the gateway.
    let metrics = common::http(server.address, "GET", "/metrics", &[], b"").await;
    assert_eq!(
        common::metric_value(
            &metrics.body,
            "channels_gateway_closes_total{code=\"1009\"}"
        ),
        Some(1.0),
        "{}",
        metrics.body
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn invalid_utf8_text_closes_with_1007() {
    let server = Server::start(ServerConfig::default()).await;
    let (mut client, _) = gateway(server.address).await;
    let frame = Frame::message(vec![b'{', 0xff, 0xfe, b'}'], OpCode::Data(Data::Text), true);
    client.send(Message::Frame(frame)).await.unwrap();
    let close = expect_close(&mut client).await;
    assert_eq!(u16::from(close.code), 1007, "{close:?}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn slow_client_is_closed_with_1013_and_others_keep_receiving() {
    let config = ServerConfig::default()
        .outbound_queue(8)
        .max_frame_bytes(64 * 1024);
    let server = Server::start(config).await;
    let (mut slow, _) = gateway(server.address).await;
    let (mut fast, _) = gateway(server.address).await;
    let (mut talker, _) = gateway(server.address).await;
    for client in [&mut slow, &mut fast, &mut talker] {
        subscribe(client, "hot").await;
    }
    // Enough data to fill the socket buffers of a client that never reads.
    let chunk = "z".repeat(48 * 1024);
    let rounds = 400;
    let mut fast_seen = 0;
    let mut talker_seen = 0;
    for i in 0..rounds {
        say(&mut talker, "hot", &format!("{i}:{chunk}")).await;
        // The fast clients read as it comes: they must see every message.
        assert!(next_text(&mut fast).await.starts_with(&format!("{i}:")));
        fast_seen += 1;
        assert!(next_text(&mut talker).await.starts_with(&format!("{i}:")));
        talker_seen += 1;
    }
    assert_eq!((fast_seen, talker_seen), (rounds, rounds));
    // Now the slow one reads: some frames, then the 1013 close.
    let mut slow_seen = 0;
    let code = loop {
        let next = tokio::time::timeout(Duration::from_secs(15), slow.next())
            .await
            .expect("slow client's stream stalled");
        match next {
            Some(Ok(Message::Text(_))) => slow_seen += 1,
            Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            Some(Err(error)) => panic!("slow client saw an error instead of a close: {error}"),
            None => panic!("slow client's stream ended without a close"),
        }
    };
    assert_eq!(code, Some(1013));
    assert!(
        slow_seen < rounds,
        "the slow client got everything ({slow_seen}); it was never too slow"
    );
    let metrics = common::http(server.address, "GET", "/metrics", &[], b"").await;
    assert!(
        metrics.body.contains("channels_queue_drops_total 1"),
        "{}",
        metrics.body
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn idle_client_is_closed_while_a_reading_client_stays_alive_on_pongs() {
    let config = ServerConfig::default().keepalive(
        Some(Duration::from_millis(600)),
        Some(Duration::from_millis(150)),
    );
    let server = Server::start(config).await;
    let (mut idle, _) = gateway(server.address).await;
    let (mut alive, _) = gateway(server.address).await;
    subscribe(&mut alive, "quiet").await;
    // `alive` keeps reading, so tungstenite answers every ping with a pong.
    let mut pings = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(1000);
    while let Ok(next) = tokio::time::timeout_at(deadline, alive.next()).await {
        match next {
            Some(Ok(Message::Ping(_))) => pings += 1,
            other => panic!("reading client got {other:?} instead of pings"),
        }
    }
    assert!(pings >= 3, "only {pings} pings in 1 s");
    // `idle` never read, so it never answered: it was closed with 1001.
    let close = expect_close(&mut idle).await;
    assert_eq!(
        (u16::from(close.code), close.reason.as_str()),
        (1001, "idle timeout")
    );
    say(&mut alive, "quiet", "still here").await;
    assert_eq!(next_text(&mut alive).await, "still here");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn connection_limit_answers_503_until_a_slot_frees() {
    let server = Server::start(ServerConfig::default().max_connections(2)).await;
    let first = connect(&server.ws_url("/ws")).await;
    let _second = connect(&server.ws_url("/ws")).await;
    assert_eq!(
        try_connect(&server.ws_url("/ws"), &[]).await.err(),
        Some(503)
    );
    drop(first);
    // The slot frees once the first connection's task ends.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match try_connect(&server.ws_url("/ws"), &[]).await {
            Ok(_) => break,
            Err(503) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(status) => panic!("still refused ({status}) after the first client left"),
        }
    }
    server.stop().await.unwrap();
}

/// The WebSocket routes check the upgrade request themselves (RFC 6455
/// 4.2.1): a plain GET, or an upgrade with another protocol version, gets a
/// JSON 400 naming the problem, and the route still upgrades a good request.
#[tokio::test]
async fn requests_that_are_not_websocket_upgrades_get_400() {
    let server = Server::start(ServerConfig::default()).await;
    let plain = common::http(server.address, "GET", "/ws", &[], b"").await;
    assert_eq!(plain.status, 400, "{}", plain.body);
    assert!(
        plain.body.contains("not a WebSocket upgrade"),
        "{}",
        plain.body
    );
    let old_version = [
        ("Connection", "Upgrade"),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Version", "8"),
    ];
    let refused = common::http(server.address, "GET", "/ws", &old_version, b"").await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(
        refused.body.contains("Sec-WebSocket-Version"),
        "{}",
        refused.body
    );
    assert!(try_connect(&server.ws_url("/ws"), &[]).await.is_ok());
    server.stop().await.unwrap();
}
