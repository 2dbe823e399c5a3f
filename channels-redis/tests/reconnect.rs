//! Fault tests: redis-server killed under a blocked receive loop and under
//! group_send, then restarted on the same port (empty: no persistence).
//! Operations fail with `LayerError::Backend` meanwhile (no panic, no hang),
//! the loop reconnects with capped backoff (no busy loop), later messages
//! arrive, and this instance's group memberships are written again.
#![allow(clippy::unwrap_used)] // test helpers: a failed setup step should panic right there

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use channels_core::{ChannelLayer, LayerError, Message};
use channels_redis::testing::{RedisServer, blocked_clients, unique_prefix};
use channels_redis::{RedisChannelLayer, RedisConfig};
use support::wait_until;
use tokio::time::timeout;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every log line of this test binary (the loop runs on runtime workers).
fn logs() -> &'static Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");
        captured
    })
}

fn log_lines_with(needle: &str, marker: &str) -> usize {
    let text = String::from_utf8_lossy(&logs().0.lock().unwrap()).into_owned();
    text.lines()
        .filter(|l| l.contains(needle) && l.contains(marker))
        .count()
}

async fn kill(server: Arc<Mutex<RedisServer>>) {
    tokio::task::spawn_blocking(move || server.lock().unwrap().kill())
        .await
        .unwrap();
}

async fn restart(server: Arc<Mutex<RedisServer>>) {
    tokio::task::spawn_blocking(move || server.lock().unwrap().restart().unwrap())
        .await
        .unwrap();
}

fn is_backend<T: std::fmt::Debug>(result: &Result<T, LayerError>) -> bool {
    matches!(result, Err(LayerError::Backend(_)))
}

/// Retries `op` until it succeeds (Redis back and reconnected), within 10 s.
async fn eventually<F, Fut>(mut op: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), LayerError>>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match timeout(Duration::from_secs(3), op()).await {
            Ok(Ok(())) => return,
            other if Instant::now() > deadline => panic!("still failing after 10 s: {other:?}"),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receive_loop_survives_redis_restart_and_restores_memberships() {
    let _ = logs();
    let server = Arc::new(Mutex::new(RedisServer::start().unwrap()));
    let url = server.lock().unwrap().url();
    let prefix = unique_prefix();
    let layer = Arc::new(
        RedisChannelLayer::new(RedisConfig::new().host(url.clone()).prefix(prefix.clone()))
            .unwrap(),
    );
    let channel = layer.new_channel("specific").await.unwrap();
    layer.group_add("room", &channel).await.unwrap();
    layer.group_add("other", &channel).await.unwrap();
    layer.group_discard("other", &channel).await.unwrap();
    assert_eq!(layer.remembered_memberships(), 1);

    // A receive blocked in the loop's BZPOPMIN when Redis dies is told.
    let blocked = {
        let layer = layer.clone();
        let channel = channel.clone();
        tokio::spawn(async move { layer.receive(&channel).await })
    };
    // Killed only once the loop waits in its BZPOPMIN.
    wait_until(
        "the receive loop's BZPOPMIN",
        Duration::from_secs(10),
        || {
            let url = url.clone();
            async move { blocked_clients(&url).await.unwrap() > 0 }
        },
    )
    .await;
    kill(server.clone()).await;
    let told = timeout(Duration::from_secs(5), blocked)
        .await
        .unwrap()
        .unwrap();
    assert!(is_backend(&told), "{told:?}");

    // While Redis is down every operation fails fast with Backend.
    let started = Instant::now();
    assert!(is_backend(&layer.send(&channel, Message::new("m")).await));
    assert!(is_backend(&layer.send("plain", Message::new("m")).await));
    assert!(is_backend(
        &layer.group_send("room", Message::new("m")).await
    ));
    assert!(is_backend(&layer.group_add("room2", &channel).await));
    assert!(is_backend(
        &timeout(Duration::from_secs(5), layer.receive(&channel))
            .await
            .unwrap()
    ));
    assert!(is_backend(
        &timeout(Duration::from_secs(5), layer.receive("plain"))
            .await
            .unwrap()
    ));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "fails fast: {:?}",
        started.elapsed()
    );
    assert!(!layer.is_receiving_healthy());

    // Down for ~3 s (the outage is the thing tested): the loop retries with
    // a short capped backoff, and says so once, not once per attempt.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let warnings = log_lines_with(" WARN ", &prefix);
    assert!(
        (1..=2).contains(&warnings),
        "{warnings} warnings from the receive loop in a 3 s outage"
    );

    restart(server.clone()).await;
    // The empty Redis lost the group; the loop writes this instance's
    // membership again once it reconnects, so group_send reaches the channel.
    timeout(Duration::from_secs(10), async {
        while !layer.is_receiving_healthy() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap();
    eventually(|| layer.group_send("room", Message::new("after.restart"))).await;
    let got = timeout(Duration::from_secs(2), layer.receive(&channel))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.message_type(), Some("after.restart"));
    // Discarded memberships are not restored.
    layer
        .group_send("other", Message::new("not.for.you"))
        .await
        .unwrap();
    assert!(
        timeout(Duration::from_millis(500), layer.receive(&channel))
            .await
            .is_err()
    );
    // Direct sends and plain channels work again.
    layer.send(&channel, Message::new("direct")).await.unwrap();
    let got = timeout(Duration::from_secs(2), layer.receive(&channel))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.message_type(), Some("direct"));
    eventually(|| layer.send("plain", Message::new("p"))).await;
    let got = timeout(Duration::from_secs(6), layer.receive("plain"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.message_type(), Some("p"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_send_during_kill_errors_cleanly_and_recovers() {
    let _ = logs();
    let server = Arc::new(Mutex::new(RedisServer::start().unwrap()));
    let url = server.lock().unwrap().url();
    let layer = Arc::new(
        RedisChannelLayer::new(RedisConfig::new().host(url).prefix(unique_prefix())).unwrap(),
    );
    let mut members = Vec::new();
    for _ in 0..50 {
        let channel = layer.new_channel("specific").await.unwrap();
        layer.group_add("busy", &channel).await.unwrap();
        members.push(channel);
    }
    // Keep the receive loop running, as a consumer would.
    let reader = {
        let layer = layer.clone();
        let first = members[0].clone();
        tokio::spawn(async move {
            loop {
                match timeout(Duration::from_secs(20), layer.receive(&first)).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(50)).await,
                    Err(_) => return,
                }
            }
        })
    };
    // Several senders at once, so most sends share a read of the group (one
    // in flight when Redis dies fails every send waiting on it, none hangs).
    let senders: Vec<_> = (0..4)
        .map(|_| {
            let layer = layer.clone();
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0, 0);
                let until = Instant::now() + Duration::from_secs(2);
                while Instant::now() < until {
                    let result = timeout(
                        Duration::from_secs(5),
                        layer.group_send("busy", Message::new("m")),
                    )
                    .await
                    .expect("group_send never hangs");
                    match result {
                        Ok(()) => ok += 1,
                        Err(LayerError::Backend(_)) => failed += 1,
                        Err(other) => panic!("unexpected error {other}"),
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    kill(server.clone()).await;
    for sender in senders {
        let (ok, failed) = timeout(Duration::from_secs(20), sender)
            .await
            .unwrap()
            .unwrap();
        assert!(ok > 0 && failed > 0, "ok {ok}, failed {failed}");
    }

    restart(server.clone()).await;
    timeout(Duration::from_secs(10), async {
        while !layer.is_receiving_healthy() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap();
    eventually(|| layer.group_send("busy", Message::new("after"))).await;
    for member in &members[1..] {
        // Drain what arrived before the kill; "after" must come for everyone.
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let got = timeout(Duration::from_secs(1), layer.receive(member))
                .await
                .unwrap()
                .unwrap();
            if got.message_type() == Some("after") {
                break;
            }
            assert!(Instant::now() < deadline);
        }
    }
    reader.abort();
}
