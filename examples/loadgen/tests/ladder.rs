//! `--ladder` and `--idle` against the real ceiling-server.

mod support;

use std::time::Duration;

use support::{CeilingServer, field, run_loadgen_json};

#[test]
fn ladder_finds_a_passing_rate_against_the_ceiling() {
    let server = CeilingServer::start(&["--mode", "local"]);
    let pid = server.pid().to_string();
    let report = run_loadgen_json(
        &[
            "--url",
            &server.url,
            "--clients",
            "50",
            "--ladder",
            "20,20,60",
            "--step-seconds",
            "1",
            "--warmup",
            "0.2",
            "--pid",
            &pid,
        ],
        Duration::from_secs(40),
    );
    let ladder = &report["ladder"];
    let steps = ladder["steps"].as_array().expect("steps");
    assert!(!steps.is_empty(), "{report}");
    let best = ladder["highest_passing_rate"]
        .as_f64()
        .unwrap_or_else(|| panic!("the ceiling passes 20/s at 50 clients: {report}"));
    assert!(best >= 20.0, "{report}");
    for step in steps.iter().filter(|s| s["passed"] == true) {
        let sent = field(step, "sent");
        assert!(sent > 0, "{step}");
        assert_eq!(field(step, "received"), sent * 50, "{step}");
        assert_eq!(field(step, "lost"), 0, "{step}");
        assert!(step["latency_ms"]["p99"].as_f64().expect("p99") < 250.0);
        assert!(step["rate"].as_f64().expect("rate") <= best);
    }
    // Steps run in order and stop at the first failure.
    let failed = steps.iter().filter(|s| s["passed"] == false).count();
    assert!(failed <= 1 && (failed == 0 || steps.last().expect("a step")["passed"] == false));
    assert!(
        report["server_cpu_s_per_m_deliveries"]
            .as_f64()
            .expect("cpu")
            > 0.0,
        "{report}"
    );
}

#[test]
fn ladder_step_with_an_impossible_latency_limit_fails() {
    let server = CeilingServer::start(&["--mode", "local"]);
    let report = run_loadgen_json(
        &[
            "--url",
            &server.url,
            "--clients",
            "10",
            "--ladder",
            "20,20,100",
            "--step-seconds",
            "0.5",
            "--ladder-p99-ms",
            "0.001",
            "--warmup",
            "0",
        ],
        Duration::from_secs(30),
    );
    let ladder = &report["ladder"];
    assert!(ladder["highest_passing_rate"].is_null(), "{report}");
    assert_eq!(
        ladder["steps"].as_array().expect("steps").len(),
        1,
        "{report}"
    );
}

/// A server may register a connection some time after its handshake completes (axum runs the
/// connection task after the 101 response); the idle probe's one broadcast must wait for every
/// client to be registered, or the late ones miss it.
#[test]
fn idle_probe_waits_until_a_slow_server_has_registered_every_client() {
    let server = CeilingServer::start(&["--mode", "local", "--join-delay-ms", "500"]);
    let pid = server.pid().to_string();
    // One process, then two (each child's clients must be ready before sender 0 sends).
    for procs in ["1", "2"] {
        let report = run_loadgen_json(
            &[
                "--url",
                &server.url,
                "--clients",
                "50",
                "--idle",
                "--pid",
                &pid,
                "--procs",
                procs,
            ],
            Duration::from_secs(30),
        );
        assert_eq!(field(&report, "received"), 50, "procs {procs}: {report}");
        assert_eq!(field(&report, "lost"), 0, "procs {procs}: {report}");
    }
}

#[test]
fn idle_probe_reports_rss_and_one_broadcast_to_all() {
    let server = CeilingServer::start(&["--mode", "local"]);
    let pid = server.pid().to_string();
    let report = run_loadgen_json(
        &[
            "--url",
            &server.url,
            "--clients",
            "200",
            "--idle",
            "--pid",
            &pid,
        ],
        Duration::from_secs(30),
    );
    assert_eq!(field(&report, "sent"), 1, "{report}");
    assert_eq!(field(&report, "received"), 200, "{report}");
    assert_eq!(field(&report, "lost"), 0, "{report}");
    assert!(
        report["rss_per_connection_bytes"]
            .as_i64()
            .expect("idle rss")
            > 0,
        "{report}"
    );
    assert!(
        report["rss_per_connection_after_traffic_bytes"].is_i64(),
        "{report}"
    );
    assert!(
        report["rss_after_traffic_bytes"].as_u64().expect("rss") > 0,
        "{report}"
    );
    assert!(
        report["latency_ms"]["max"].as_f64().expect("max") > 0.0,
        "{report}"
    );
}
