//! Memory stays bounded in bytes: a client that floods pings and never
//! reads, and 20 clients that never read while 50 KB broadcasts pour in.
//! The server's RSS is read from `/proc/PID/status`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use hostile::raw::{RawWs, opcode};
use hostile::server::{self, RssPeak, mib};
use test_support::http;
use tokio_tungstenite::tungstenite::Message;

const TOKEN: &str = "hostile-token";
const MIB: u64 = 1024 * 1024;

/// The worst case of one connection that README ("Limits and guarantees")
/// states, with `--outbound-bytes B` and `--max-frame-bytes F`: its
/// outbound queue at twice its bound while the server is behind (2 B),
/// tungstenite's write buffer (max(B, F)), one incoming frame (F), and 64 KiB
/// of read and write buffers and bookkeeping: about 3.1 MiB by default.
fn worst_case_per_connection(outbound_bytes: u64, max_frame_bytes: u64) -> u64 {
    2 * outbound_bytes + outbound_bytes.max(max_frame_bytes) + max_frame_bytes + 64 * 1024
}

/// Allocator slack over the baseline: freed memory the allocator keeps.
const SLACK: u64 = 24 * MIB;

/// Floods pings (125 bytes each) from a client that never reads, for at
/// most `limit`; returns the pings sent, whether the server cut the
/// connection, how long it took, and the RSS baseline and peak.
async fn ping_flood(limit: Duration) -> (u64, bool, Duration, u64, u64) {
    let process = server::start(&[]);
    let pid = process.pid();
    // Warm up: one ordinary connection, so the baseline has its runtime.
    drop(RawWs::gateway(process.addr()).await);
    let baseline = server::rss_bytes(pid).unwrap();
    let peak = RssPeak::start(pid);
    let mut flooder = RawWs::gateway(process.addr()).await;
    let ping =
        hostile::raw::frame_bytes(true, opcode::PING, &[b'p'; 125], Some(hostile::raw::MASK));
    let batch: Vec<u8> = ping
        .iter()
        .copied()
        .cycle()
        .take(ping.len() * 256)
        .collect();
    let started = Instant::now();
    let mut sent = 0u64;
    // Never reads: every pong the server owes it piles up on its side.
    let closed = loop {
        if started.elapsed() > limit {
            break false;
        }
        if flooder.write_raw(&batch).await.is_err() {
            break true;
        }
        sent += 256;
    };
    let took = started.elapsed();
    let peak = peak.stop();
    eprintln!(
        "ping flood: {sent} pings in {took:?}, closed: {closed}, RSS {:.1} -> peak {:.1} MiB",
        mib(baseline),
        mib(peak)
    );
    // The server is fine for everyone else.
    assert_eq!(http::get(process.addr(), "/healthz").await.status, 200);
    RawWs::gateway(process.addr()).await;
    (sent, closed, took, baseline, peak)
}

#[tokio::test]
async fn a_ping_flood_from_a_client_that_never_reads_stays_bounded() {
    let _turn = server::exclusive();
    let (_, _, _, baseline, peak) = ping_flood(Duration::from_secs(8)).await;
    let growth = peak.saturating_sub(baseline);
    let bound = worst_case_per_connection(MIB, 64 * 1024) + SLACK;
    assert!(
        growth < bound,
        "RSS grew by {:.1} MiB (bound {:.1} MiB)",
        mib(growth),
        mib(bound)
    );
}

#[tokio::test]
async fn a_ping_flood_from_a_client_that_never_reads_is_closed() {
    let _turn = server::exclusive();
    let (sent, closed, took, _, _) = ping_flood(Duration::from_secs(20)).await;
    assert!(
        closed,
        "the flooder was never closed ({sent} pings in {took:?})"
    );
}

/// 20 clients subscribe to `hot` and never read; a backend publishes 600
/// broadcasts of 50 KB at 120/s; one more client in the group reads
/// everything. Checks the RSS bound and that every stuck client is closed
/// and counted; returns what the reader saw of the accepted broadcasts and
/// how its stream ended.
async fn twenty_stuck_clients() -> (u64, u64, String) {
    let process = server::start(&["--publish-token", TOKEN, "--idle-timeout", "0"]);
    let pid = process.pid();
    let addr = process.addr();
    drop(RawWs::gateway(addr).await);
    let baseline = server::rss_bytes(pid).unwrap();

    let mut stuck = Vec::new();
    for i in 0..20 {
        let mut ws = RawWs::gateway(addr).await;
        ws.send_text(&format!(r#"{{"type":"subscribe","id":{i},"group":"hot"}}"#))
            .await;
        let answer = ws.next_data(Duration::from_secs(5)).await.unwrap();
        assert!(answer.text().contains("subscribed"), "{answer:?}");
        stuck.push(ws);
    }
    // One client that reads everything, in the same group.
    let (mut reader, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap();
    {
        use futures_util::SinkExt as _;
        reader
            .send(Message::text(r#"{"type":"connect"}"#))
            .await
            .unwrap();
        reader
            .send(Message::text(
                r#"{"type":"subscribe","id":1,"group":"hot"}"#,
            ))
            .await
            .unwrap();
        // connected, subscribed
        for _ in 0..2 {
            reader.next().await.unwrap().unwrap();
        }
    }
    let reading = tokio::spawn(async move {
        let mut seen = 0u64;
        loop {
            match tokio::time::timeout(Duration::from_secs(5), reader.next()).await {
                Ok(Some(Ok(message))) if message.is_text() => seen += 1,
                Ok(Some(Ok(Message::Close(frame)))) => return (seen, format!("closed: {frame:?}")),
                Ok(Some(Ok(_))) => {}
                Ok(other) => return (seen, format!("ended: {other:?}")),
                Err(_) => return (seen, "quiet for 5 s".to_owned()),
            }
        }
    });

    let peak = RssPeak::start(pid);
    let filler = "x".repeat(50 * 1024);
    let body = serde_json::json!({"type": "blob", "data": filler});
    let started = Instant::now();
    let mut accepted = 0u64;
    // 120 per second for 5 s: 30 MB per client if nothing bounded it.
    for i in 0..600u32 {
        let due = started + Duration::from_millis(u64::from(i) * 1000 / 120);
        tokio::time::sleep_until(due.into()).await;
        let response = http::post_json(addr, "/api/groups/hot", Some(TOKEN), &body).await;
        if response.status == 202 {
            accepted += 1;
        }
    }
    // Every stuck client is cut off and counted (queue full: 1013; or the
    // write timeout), within the write timeout.
    let counted = server::eventually(Duration::from_secs(15), || async {
        let page = server::metrics(addr).await;
        let full = test_support::metric_value(
            &page,
            "channels_slow_client_closes_total{reason=\"queue_full\"}",
        )
        .unwrap_or(0.0);
        let timeout = test_support::metric_value(
            &page,
            "channels_slow_client_closes_total{reason=\"write_timeout\"}",
        )
        .unwrap_or(0.0);
        full + timeout >= 20.0
    })
    .await;
    let peak = peak.stop();
    let (seen, reader_end) = reading.await.unwrap();
    let growth = peak.saturating_sub(baseline);
    let bound = 20 * worst_case_per_connection(MIB, 64 * 1024) + SLACK;
    eprintln!(
        "20 non-readers: {accepted} broadcasts of 50 KB accepted; RSS {:.1} -> peak {:.1} MiB \
         (+{:.1}, bound +{:.1}); reader saw {seen}, then {reader_end}",
        mib(baseline),
        mib(peak),
        mib(growth),
        mib(bound)
    );
    assert!(
        growth < bound,
        "RSS grew by {:.1} MiB, over 20 x the per-connection worst case + slack ({:.1} MiB)",
        mib(growth),
        mib(bound)
    );
    assert!(
        counted,
        "not every stuck client was closed and counted:\n{}",
        server::metrics(addr).await
    );
    assert_eq!(accepted, 600);
    for mut ws in stuck {
        assert!(ws.closed_within(Duration::from_secs(5)).await);
    }
    (seen, accepted, reader_end)
}

#[tokio::test]
async fn twenty_non_reading_clients_and_50k_broadcasts_stay_under_the_worst_case() {
    let _turn = server::exclusive();
    let (seen, accepted, reader_end) = twenty_stuck_clients().await;
    // The one client that reads is not blamed for the stuck ones.
    assert_eq!(
        seen, accepted,
        "the reading client missed broadcasts, then {reader_end}"
    );
}
