//! Floods: a client sending frames far over `--client-rate-limit` is cut
//! off with 4029 and counted while a reader on the same server misses
//! nothing it was sent; a slow reader is closed with 1013 or counted as a
//! write timeout, never dropped silently.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use hostile::raw::RawWs;
use hostile::server;
use test_support::http;
use tokio_tungstenite::tungstenite::Message;

const TOKEN: &str = "hostile-token";

/// A tokio-tungstenite client on the gateway, subscribed to `group`.
async fn reader(addr: std::net::SocketAddr, group: &str) -> test_support::ws::Client {
    let mut client = test_support::ws::connect(&format!("ws://{addr}/ws")).await;
    test_support::ws::send_text(&mut client, r#"{"type":"connect"}"#).await;
    assert_eq!(
        test_support::ws::next_json(&mut client).await["type"],
        "connected"
    );
    test_support::ws::send_json(
        &mut client,
        &serde_json::json!({"type": "subscribe", "id": 1, "group": group}),
    )
    .await;
    assert_eq!(
        test_support::ws::next_json(&mut client).await["type"],
        "subscribed"
    );
    client
}

/// The sum of the drop counters a silent loss would have to show up in.
async fn counted_drops(addr: std::net::SocketAddr) -> f64 {
    let page = server::metrics(addr).await;
    page.lines()
        .filter(|line| {
            line.starts_with("channels_queue_drops_total")
                || line.starts_with("channels_layer_dropped_total")
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn an_inbound_flood_is_closed_with_4029_and_a_reader_misses_nothing() {
    let _turn = server::exclusive();
    let process = server::start(&["--publish-token", TOKEN]);
    let addr = process.addr();
    let mut reader = reader(addr, "room").await;

    // The flooder: 20,000 publishes into the reader's group, never reading.
    let mut flooder = RawWs::gateway(addr).await;
    let frame = hostile::raw::frame_bytes(
        true,
        hostile::raw::opcode::TEXT,
        br#"{"type":"publish","group":"room","data":{"type":"spam"}}"#,
        Some(hostile::raw::MASK),
    );
    let flood = tokio::spawn(async move {
        let batch: Vec<u8> = frame
            .iter()
            .copied()
            .cycle()
            .take(frame.len() * 1000)
            .collect();
        let started = Instant::now();
        for _ in 0..20 {
            if flooder.write_raw(&batch).await.is_err() {
                break;
            }
        }
        let sent_in = started.elapsed();
        (flooder.expect_close(Duration::from_secs(10)).await, sent_in)
    });

    // Meanwhile the backend publishes 2,000 numbered messages to the room.
    let publishing = tokio::spawn(async move {
        let mut accepted = Vec::new();
        for seq in 0..2000u32 {
            let body = serde_json::json!({"type": "numbered", "seq": seq});
            let response = http::post_json(addr, "/api/groups/room", Some(TOKEN), &body).await;
            if response.status == 202 {
                accepted.push(seq);
            }
        }
        accepted
    });

    let mut seen = Vec::new();
    let mut spam = 0u64;
    let accepted = loop {
        let next = tokio::time::timeout(Duration::from_secs(5), reader.next()).await;
        match next {
            Ok(Some(Ok(Message::Text(text)))) => {
                let push: serde_json::Value = serde_json::from_str(&text).unwrap();
                match push["data"]["type"].as_str() {
                    Some("numbered") => seen.push(push["data"]["seq"].as_u64().unwrap()),
                    Some("spam") => spam += 1,
                    _ => panic!("unexpected frame {push}"),
                }
                if seen.len() == 2000 {
                    break publishing.await.unwrap();
                }
            }
            Ok(Some(Ok(_))) => {}
            Ok(other) => panic!("the reader was cut off: {other:?}"),
            Err(_) if publishing.is_finished() => break publishing.await.unwrap(),
            Err(_) => panic!("the reader stalled with {} messages", seen.len()),
        }
    };
    let (code, sent_in) = flood.await.unwrap();
    let missed: Vec<u32> = accepted
        .iter()
        .copied()
        .filter(|seq| !seen.contains(&u64::from(*seq)))
        .collect();
    let limited = server::metric(addr, "channels_frames_rate_limited_total").await;
    let flood_closes = server::metric(addr, "channels_flood_closes_total").await;
    let drops = counted_drops(addr).await;
    eprintln!(
        "flood: sent in {sent_in:?}, closed {code}; {limited} frames rate limited; reader saw \
         {} of {} accepted and {spam} spam; missed {}; drops counted {drops}",
        seen.len(),
        accepted.len(),
        missed.len()
    );
    assert_eq!(code, 4029, "the flooder was closed with {code}");
    assert!(flood_closes >= 1.0);
    assert!(limited > 0.0);
    assert!(
        spam <= 1000,
        "{spam} spam frames got through the rate limit"
    );
    assert_eq!(accepted.len(), 2000, "the API refused publishes");
    // Zero silent loss: every miss is counted somewhere.
    #[allow(clippy::cast_precision_loss)]
    let missed_count = missed.len() as f64;
    assert!(
        missed.is_empty() || drops >= missed_count,
        "{} accepted messages missed with only {drops} drops counted: {:?}",
        missed.len(),
        &missed[..missed.len().min(20)]
    );
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "out of order");
}

#[tokio::test]
async fn a_slow_reader_is_closed_with_1013_or_counted_as_a_write_timeout() {
    let _turn = server::exclusive();
    let process = server::start(&[
        "--publish-token",
        TOKEN,
        "--outbound-bytes",
        "262144",
        "--idle-timeout",
        "0",
    ]);
    let addr = process.addr();
    let mut slow = RawWs::gateway(addr).await;
    slow.send_text(r#"{"type":"subscribe","id":1,"group":"s"}"#)
        .await;
    assert!(
        slow.next_data(Duration::from_secs(5))
            .await
            .unwrap()
            .text()
            .contains("subscribed")
    );
    let mut fast = reader(addr, "s").await;
    let body = serde_json::json!({"type": "blob", "pad": "y".repeat(10 * 1024)});
    let started = Instant::now();
    let mut sent = 0u64;
    let mut fast_seen = 0u64;
    let mut slow_frames = 0u64;
    let mut closes = 0.0;
    // Publish 10 KB at about 200/s; the slow client reads one frame per
    // 50 ms; the fast one reads everything.
    while started.elapsed() < Duration::from_secs(20) {
        let due = started + Duration::from_millis(sent * 5);
        tokio::time::sleep_until(due.into()).await;
        let response = http::post_json(addr, "/api/groups/s", Some(TOKEN), &body).await;
        assert_eq!(response.status, 202);
        sent += 1;
        while let Ok(Some(Ok(message))) =
            tokio::time::timeout(Duration::from_millis(1), fast.next()).await
        {
            fast_seen += u64::from(message.is_text());
        }
        if sent.is_multiple_of(10) {
            if slow.read_frame(Duration::from_millis(1)).await.is_some() {
                slow_frames += 1;
            }
            let page = server::metrics(addr).await;
            closes = ["queue_full", "write_timeout"]
                .iter()
                .map(|reason| {
                    test_support::metric_value(
                        &page,
                        &format!("channels_slow_client_closes_total{{reason=\"{reason}\"}}"),
                    )
                    .unwrap_or(0.0)
                })
                .sum();
            if closes >= 1.0 {
                break;
            }
        }
    }
    assert!(
        closes >= 1.0,
        "the slow reader was not closed (or not counted) in {:?}; it read {slow_frames} frames",
        started.elapsed()
    );
    // What the slow client sees when it finally reads everything: a 1013
    // close frame, or, when the write timed out, the end of the stream.
    let mut code = None;
    while let Some(frame) = slow.read_frame(Duration::from_secs(5)).await {
        if let Some(close) = frame.close_code() {
            code = Some(close);
            break;
        }
    }
    let page = server::metrics(addr).await;
    let timeouts = test_support::metric_value(
        &page,
        "channels_slow_client_closes_total{reason=\"write_timeout\"}",
    )
    .unwrap_or(0.0);
    eprintln!(
        "slow reader: closed after {:?}, {sent} published, sees close {code:?}, write timeouts {timeouts}",
        started.elapsed()
    );
    match code {
        Some(code) => assert_eq!(code, 1013),
        None => assert!(
            timeouts >= 1.0,
            "no close frame and no write timeout counted"
        ),
    }
    // The fast reader got everything.
    while fast_seen < sent {
        match tokio::time::timeout(Duration::from_secs(5), fast.next()).await {
            Ok(Some(Ok(message))) => fast_seen += u64::from(message.is_text()),
            other => panic!("fast reader stopped at {fast_seen}/{sent}: {other:?}"),
        }
    }
    let _ = fast.send(Message::Close(None)).await;
}
