//! Broadcast mode against the real `ceiling-server --mode local` process: every broadcast
//! reaches every client exactly once, and the report adds up.

mod support;

use std::time::Duration;

use support::{CeilingServer, field, run_loadgen_json};

#[test]
fn every_broadcast_reaches_every_client_once() {
    let server = CeilingServer::start(&["--mode", "local"]);
    let pid = server.pid().to_string();
    let report = run_loadgen_json(
        &[
            "--url",
            &server.url,
            "--clients",
            "50",
            "--mode",
            "broadcast",
            "--max",
            "8",
            "--duration",
            "2",
            "--warmup",
            "0.5",
            "--pid",
            &pid,
        ],
        Duration::from_secs(20),
    );
    assert_eq!(report["mode"], "broadcast");
    assert_eq!(field(&report, "clients"), 50);
    assert_eq!(field(&report, "connect_failures"), 0);
    let sent = field(&report, "sent");
    assert!(sent > 0, "{report}");
    assert_eq!(field(&report, "expected"), sent * 50);
    assert_eq!(
        field(&report, "received"),
        field(&report, "expected"),
        "{report}"
    );
    assert_eq!(field(&report, "lost"), 0, "{report}");
    assert_eq!(field(&report, "duplicated"), 0, "{report}");
    assert_eq!(field(&report, "broadcast_results"), sent, "{report}");
    assert_eq!(field(&report, "unexpected"), 0, "{report}");
    let latency = &report["latency_ms"];
    let (p50, p99, max) = (
        latency["p50"].as_f64().expect("p50"),
        latency["p99"].as_f64().expect("p99"),
        latency["max"].as_f64().expect("max"),
    );
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{report}");
    assert!(report["deliveries_per_sec"].as_f64().expect("rate") > 0.0);
    assert!(report["rss_per_connection_bytes"].is_i64(), "{report}");
    // CPU per delivery: the server's (from /proc/<pid>/stat) and the load generator's own.
    let server_cpu = report["server_cpu_s"].as_f64().expect("server cpu");
    assert!(server_cpu > 0.0, "{report}");
    let per_m = report["server_cpu_s_per_m_deliveries"]
        .as_f64()
        .expect("cpu per million");
    let received = field(&report, "received") as f64;
    assert!(
        (per_m - server_cpu * 1e6 / received).abs() < 0.01,
        "{report}"
    );
    assert!(
        report["client_cpu_s_per_m_deliveries"]
            .as_f64()
            .expect("client cpu")
            > 0.0,
        "{report}"
    );
    assert!(
        report["command"]
            .as_str()
            .expect("command")
            .contains("--clients 50")
    );
}

#[test]
fn fixed_rate_sends_about_the_rate() {
    let server = CeilingServer::start(&[]);
    let report = run_loadgen_json(
        &[
            "--url",
            &server.url,
            "--clients",
            "20",
            "--rate",
            "100",
            "--duration",
            "2",
            "--warmup",
            "0",
        ],
        Duration::from_secs(20),
    );
    let sent = field(&report, "sent");
    assert!(
        (150..=210).contains(&sent),
        "100/s for 2 s sent {sent}: {report}"
    );
    assert_eq!(field(&report, "lost"), 0, "{report}");
    assert_eq!(field(&report, "duplicated"), 0, "{report}");
    assert!(report["rss_per_connection_bytes"].is_null());
}
