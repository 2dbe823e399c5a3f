//! Redis faults under the core layer, with messages flowing: SIGKILL and a
//! restart with an empty Redis, `DEBUG SLEEP`, `CLIENT KILL TYPE normal`.
//! Whatever the publish API accepted (202) must reach every subscriber,
//! except what Redis itself held when it was killed; publishes in the gap
//! fail loudly (an error status) or wait; deliveries resume.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use hostile::server;
use test_support::ServerProcess;
use test_support::http;
use test_support::redis::{RedisServer, unique_prefix};
use tokio_tungstenite::tungstenite::Message;

const TOKEN: &str = "hostile-token";
const READERS: usize = 3;

/// One publish: its number, its status (0: no answer), when it was answered.
#[derive(Debug, Clone, Copy)]
struct Sent {
    seq: u64,
    status: u16,
    answered: Instant,
}

struct Run {
    process: ServerProcess,
    addr: SocketAddr,
    seen: Vec<Arc<Mutex<HashSet<u64>>>>,
    cut_off: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    publisher: tokio::task::JoinHandle<Vec<Sent>>,
}

async fn start(redis: &RedisServer) -> Run {
    start_layer(redis, "redis").await
}

/// Starts the server on `layer` (`redis` or `redis-pubsub`) with readers
/// in group `g` and a publisher numbering its messages.
async fn start_layer(redis: &RedisServer, layer: &str) -> Run {
    let url = redis.url();
    let prefix = unique_prefix();
    let process = server::start(&[
        "--layer",
        layer,
        "--redis-url",
        &url,
        "--redis-prefix",
        &prefix,
        "--publish-token",
        TOKEN,
    ]);
    let addr = process.addr();
    assert!(
        server::eventually(Duration::from_secs(10), || async {
            http::try_get(addr, "/readyz")
                .await
                .is_ok_and(|r| r.status == 200)
        })
        .await
    );
    let cut_off = Arc::new(Mutex::new(Vec::new()));
    let mut seen = Vec::new();
    for i in 0..READERS {
        let mut client = test_support::ws::connect(&format!("ws://{addr}/ws")).await;
        test_support::ws::send_text(&mut client, r#"{"type":"connect"}"#).await;
        assert_eq!(
            test_support::ws::next_json(&mut client).await["type"],
            "connected"
        );
        test_support::ws::send_json(
            &mut client,
            &serde_json::json!({"type": "subscribe", "id": 1, "group": "g"}),
        )
        .await;
        assert_eq!(
            test_support::ws::next_json(&mut client).await["type"],
            "subscribed"
        );
        let set = Arc::new(Mutex::new(HashSet::new()));
        seen.push(set.clone());
        let cut = cut_off.clone();
        tokio::spawn(async move {
            loop {
                match client.next().await {
                    Some(Ok(Message::Text(text))) => {
                        let push: serde_json::Value = serde_json::from_str(&text).unwrap();
                        if let Some(seq) = push["data"]["seq"].as_u64() {
                            set.lock().unwrap().insert(seq);
                        }
                    }
                    Some(Ok(_)) => {}
                    other => {
                        cut.lock().unwrap().push(format!("reader {i}: {other:?}"));
                        return;
                    }
                }
            }
        });
    }
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let publisher = tokio::spawn(async move {
        let mut sent = Vec::new();
        let mut seq = 0;
        while !flag.load(Ordering::Relaxed) {
            let body = serde_json::json!({"type": "numbered", "seq": seq});
            let status = match http::try_post_json(addr, "/api/groups/g", Some(TOKEN), &body).await
            {
                Ok(response) => response.status,
                Err(_) => 0,
            };
            sent.push(Sent {
                seq,
                status,
                answered: Instant::now(),
            });
            seq += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        sent
    });
    Run {
        process,
        addr,
        seen,
        cut_off,
        stop,
        publisher,
    }
}

impl Run {
    /// Waits until every reader has received at least `count` messages:
    /// traffic is flowing before the fault.
    async fn wait_flowing(&self, count: usize) {
        let seen = self.seen.clone();
        let flowing = server::eventually(Duration::from_secs(10), || {
            let done = seen.iter().all(|set| set.lock().unwrap().len() >= count);
            async move { done }
        })
        .await;
        assert!(
            flowing,
            "readers did not get {count} messages each before the fault"
        );
    }

    /// Publishes for `after` more, stops, waits for deliveries to settle,
    /// and returns every publish.
    async fn finish(&mut self, after: Duration) -> Vec<Sent> {
        tokio::time::sleep(after).await;
        self.stop.store(true, Ordering::Relaxed);
        let sent = (&mut self.publisher).await.unwrap();
        let accepted: HashSet<u64> = sent
            .iter()
            .filter(|s| s.status == 202)
            .map(|s| s.seq)
            .collect();
        // Let the last deliveries arrive.
        let seen = self.seen.clone();
        server::eventually(Duration::from_secs(5), || {
            let done = seen
                .iter()
                .all(|set| accepted.is_subset(&set.lock().unwrap()));
            async move { done }
        })
        .await;
        sent
    }

    /// The accepted publishes some reader never got.
    fn lost(&self, sent: &[Sent]) -> Vec<Sent> {
        sent.iter()
            .filter(|s| s.status == 202)
            .filter(|s| {
                self.seen
                    .iter()
                    .any(|set| !set.lock().unwrap().contains(&s.seq))
            })
            .copied()
            .collect()
    }
}

fn summary(sent: &[Sent], lost: &[Sent], origin: Instant) -> String {
    let failed: Vec<_> = sent.iter().filter(|s| s.status != 202).collect();
    let at = |s: &Sent| s.answered.duration_since(origin).as_millis();
    format!(
        "{} published, {} failed (statuses {:?}, from {:?} to {:?} ms), {} accepted but lost (at {:?} ms)",
        sent.len(),
        failed.len(),
        failed.iter().map(|s| s.status).collect::<HashSet<_>>(),
        failed.first().map(|s| at(s)),
        failed.last().map(|s| at(s)),
        lost.len(),
        lost.iter().map(at).collect::<Vec<_>>()
    )
}

fn redis_cli(redis: &RedisServer, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .args(["-p", &redis.port().to_string()])
        .args(args)
        .output()
        .expect("run redis-cli");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// SIGKILLs Redis for 2 s under `layer` and restarts it empty; checks
/// that nothing accepted is lost outside the kill window, that failures
/// are visible and only around the outage, and that deliveries resume.
async fn sigkill_and_restart(layer: &str) {
    let mut redis = RedisServer::start().unwrap();
    let mut run = start_layer(&redis, layer).await;
    let origin = Instant::now();
    run.wait_flowing(20).await;
    // Bystanders: each sees the outage, which must not log a line apiece.
    let mut bystanders = Vec::new();
    for _ in 0..BYSTANDERS {
        let mut client = test_support::ws::connect(&format!("ws://{}/ws", run.addr)).await;
        test_support::ws::send_text(&mut client, r#"{"type":"connect"}"#).await;
        test_support::ws::next_json(&mut client).await;
        bystanders.push(tokio::spawn(async move {
            while let Some(Ok(_)) = client.next().await {}
        }));
    }
    let killed = Instant::now();
    redis.kill();
    // The outage itself (not a wait for a condition).
    tokio::time::sleep(Duration::from_secs(2)).await;
    redis.restart().unwrap();
    let restarted = Instant::now();
    let sent = run.finish(Duration::from_secs(4)).await;
    let lost = run.lost(&sent);
    let report = summary(&sent, &lost, origin);
    eprintln!(
        "{layer}: SIGKILL at {} ms, restart at {} ms: {report}",
        killed.duration_since(origin).as_millis(),
        restarted.duration_since(origin).as_millis()
    );
    assert!(run.cut_off.lock().unwrap().is_empty(), "{:?}", run.cut_off);
    // Lost only what Redis held when it died: accepted just before the kill.
    for s in &lost {
        assert!(
            s.answered <= killed && killed.duration_since(s.answered) < Duration::from_millis(500),
            "message {} accepted at {} ms was lost outside the kill window; {report}",
            s.seq,
            s.answered.duration_since(origin).as_millis()
        );
    }
    // Failures are visible, and only around the outage.
    for s in sent.iter().filter(|s| s.status != 202) {
        assert!(
            s.answered >= killed && s.answered < restarted + Duration::from_secs(2),
            "publish {} failed ({}) outside the outage; {report}",
            s.seq,
            s.status
        );
    }
    // Deliveries resumed.
    let after: Vec<_> = sent
        .iter()
        .filter(|s| s.answered > restarted + Duration::from_secs(2))
        .collect();
    assert!(
        !after.is_empty() && after.iter().all(|s| s.status == 202),
        "{report}"
    );
    assert_eq!(http::get(run.addr, "/readyz").await.status, 200);
    // The outage is logged, but repeated lines are rate-limited: not one
    // per connection or per retry (a 3 s outage once wrote ~800).
    let output = run.process.output();
    let warnings = output
        .lines()
        .filter(|line| line.contains("WARN") || line.contains("ERROR"))
        .count();
    eprintln!("{layer}: {warnings} WARN/ERROR lines for the outage");
    assert!(
        warnings <= MAX_OUTAGE_WARNINGS,
        "{warnings} WARN/ERROR lines for a 2 s outage:\n{output}"
    );
    drop(run.process);
    for bystander in bystanders {
        bystander.abort();
    }
}

/// Idle connections open during the outage.
const BYSTANDERS: usize = 100;

/// The most WARN/ERROR lines a 2 s Redis outage may write.
const MAX_OUTAGE_WARNINGS: usize = 40;

#[tokio::test]
async fn redis_sigkill_and_an_empty_restart_lose_nothing_accepted_after_it_returns() {
    let _turn = server::exclusive();
    sigkill_and_restart("redis").await;
}

#[tokio::test]
async fn redis_pubsub_sigkill_and_an_empty_restart_lose_nothing_accepted_after_it_returns() {
    let _turn = server::exclusive();
    sigkill_and_restart("redis-pubsub").await;
}

#[tokio::test]
async fn redis_debug_sleep_delays_but_loses_nothing() {
    let _turn = server::exclusive();
    let redis = RedisServer::start_with_args(&["--enable-debug-command", "yes"]).unwrap();
    let mut run = start(&redis).await;
    let origin = Instant::now();
    run.wait_flowing(20).await;
    let port = redis.port();
    let slept = Instant::now();
    let sleeper = std::thread::spawn(move || {
        Command::new("redis-cli")
            .args(["-p", &port.to_string(), "DEBUG", "SLEEP", "2"])
            .output()
            .expect("run redis-cli")
    });
    let sent = run.finish(Duration::from_secs(4)).await;
    let output = sleeper.join().unwrap();
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("OK"),
        "{output:?}"
    );
    let lost = run.lost(&sent);
    let report = summary(&sent, &lost, origin);
    eprintln!(
        "DEBUG SLEEP 2 at {} ms: {report}",
        slept.duration_since(origin).as_millis()
    );
    assert!(run.cut_off.lock().unwrap().is_empty(), "{:?}", run.cut_off);
    assert!(lost.is_empty(), "{report}");
    let resumed = sent
        .iter()
        .filter(|s| s.answered > slept + Duration::from_secs(3))
        .all(|s| s.status == 202);
    assert!(resumed, "{report}");
    drop(run.process);
}

#[tokio::test]
async fn redis_client_kill_is_survived_and_deliveries_resume() {
    let _turn = server::exclusive();
    let redis = RedisServer::start().unwrap();
    let mut run = start(&redis).await;
    let origin = Instant::now();
    run.wait_flowing(20).await;
    let killed_at = Instant::now();
    let killed = redis_cli(&redis, &["CLIENT", "KILL", "TYPE", "normal"]);
    let sent = run.finish(Duration::from_secs(3)).await;
    let lost = run.lost(&sent);
    let report = summary(&sent, &lost, origin);
    eprintln!(
        "CLIENT KILL TYPE normal ({} clients) at {} ms: {report}",
        killed.trim(),
        killed_at.duration_since(origin).as_millis()
    );
    assert!(killed.trim().parse::<u32>().unwrap_or(0) >= 1, "{killed}");
    assert!(run.cut_off.lock().unwrap().is_empty(), "{:?}", run.cut_off);
    assert!(lost.is_empty(), "{report}");
    let resumed = sent
        .iter()
        .filter(|s| s.answered > killed_at + Duration::from_secs(1))
        .all(|s| s.status == 202);
    assert!(resumed, "{report}");
    drop(run.process);
}
