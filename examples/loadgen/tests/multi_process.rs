//! `--procs`: the parent spawns real loadgen children; a broadcast from any child is a delivery
//! for every client of every child, and the merged counts stay exact.

mod support;

use std::time::Duration;

use support::{CeilingServer, RedisServer, field, run_loadgen_json};

#[test]
fn three_processes_count_every_delivery_once() {
    let server = CeilingServer::start(&["--mode", "local"]);
    let pid = server.pid().to_string();
    let report = run_loadgen_json(
        &[
            "--url",
            &server.url,
            "--clients",
            "60",
            "--procs",
            "3",
            "--max",
            "9",
            "--duration",
            "2",
            "--warmup",
            "0.5",
            "--pid",
            &pid,
        ],
        Duration::from_secs(40),
    );
    assert_eq!(field(&report, "procs"), 3, "{report}");
    assert_eq!(field(&report, "clients"), 60, "{report}");
    let sent = field(&report, "sent");
    assert!(sent > 0, "{report}");
    assert_eq!(field(&report, "expected"), sent * 60, "{report}");
    assert_eq!(field(&report, "received"), sent * 60, "{report}");
    assert_eq!(field(&report, "lost"), 0, "{report}");
    assert_eq!(field(&report, "duplicated"), 0, "{report}");
    assert_eq!(field(&report, "unexpected"), 0, "{report}");
    assert_eq!(field(&report, "broadcast_results"), sent, "{report}");
    assert!(
        report["server_cpu_s_per_m_deliveries"]
            .as_f64()
            .expect("cpu")
            > 0.0,
        "{report}"
    );
    assert!(
        report["client_cpu_s"].as_f64().expect("client cpu") > 0.0,
        "{report}"
    );
    assert!(
        report["latency_ms"]["p99"].as_f64().expect("p99") > 0.0,
        "{report}"
    );
}

#[test]
fn processes_over_two_redis_servers_lose_nothing() {
    let redis = RedisServer::start();
    let args = ["--mode", "redis", "--redis-url", redis.url.as_str()];
    let a = CeilingServer::start(&args);
    let b = CeilingServer::start(&args);
    let report = run_loadgen_json(
        &[
            "--url",
            &a.url,
            "--url",
            &b.url,
            "--clients",
            "40",
            "--procs",
            "2",
            "--rate",
            "40",
            "--duration",
            "1.5",
            "--warmup",
            "0.3",
        ],
        Duration::from_secs(40),
    );
    let sent = field(&report, "sent");
    assert!((40..=70).contains(&sent), "40/s for 1.5 s: {report}");
    assert_eq!(field(&report, "received"), sent * 40, "{report}");
    assert_eq!(field(&report, "lost"), 0, "{report}");
    assert_eq!(field(&report, "duplicated"), 0, "{report}");
    assert!(
        report["server_cpu_s"].is_null(),
        "no --pid, no server cpu: {report}"
    );
}

#[test]
fn children_of_two_unconnected_servers_see_the_loss() {
    // Each child's clients are spread over both local-mode servers; without Redis half of all
    // deliveries never happen, and the merged report must say so.
    let a = CeilingServer::start(&["--mode", "local"]);
    let b = CeilingServer::start(&["--mode", "local"]);
    let report = run_loadgen_json(
        &[
            "--url",
            &a.url,
            "--url",
            &b.url,
            "--clients",
            "8",
            "--procs",
            "2",
            "--rate",
            "20",
            "--duration",
            "1",
            "--warmup",
            "0",
            "--drain",
            "0.5",
        ],
        Duration::from_secs(40),
    );
    let sent = field(&report, "sent");
    assert!(sent > 0, "{report}");
    assert_eq!(field(&report, "received"), sent * 4, "{report}");
    assert_eq!(field(&report, "lost"), sent * 4, "{report}");
    assert_eq!(field(&report, "duplicated"), 0, "{report}");
}
