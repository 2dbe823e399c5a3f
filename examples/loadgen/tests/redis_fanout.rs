//! Two real `ceiling-server --mode redis` processes over a private redis-server: clients spread
//! over both URLs receive every broadcast, wherever it was sent.

mod support;

use std::time::Duration;

use support::{CeilingServer, RedisServer, field, run_loadgen_json};

#[test]
fn broadcasts_cross_processes_through_redis() {
    let redis = RedisServer::start();
    let args = ["--mode", "redis", "--redis-url", redis.url.as_str()];
    let a = CeilingServer::start(&args);
    let b = CeilingServer::start(&args);
    let (pid_a, pid_b) = (a.pid().to_string(), b.pid().to_string());
    let report = run_loadgen_json(
        &[
            "--url",
            &a.url,
            "--url",
            &b.url,
            "--clients",
            "60",
            "--mode",
            "broadcast",
            "--max",
            "8",
            "--duration",
            "2",
            "--warmup",
            "0.5",
            "--pid",
            &pid_a,
            "--pid",
            &pid_b,
        ],
        Duration::from_secs(20),
    );
    assert_eq!(field(&report, "clients"), 60);
    let sent = field(&report, "sent");
    assert!(sent > 0, "{report}");
    assert_eq!(field(&report, "received"), sent * 60, "{report}");
    assert_eq!(field(&report, "lost"), 0, "{report}");
    assert_eq!(field(&report, "duplicated"), 0, "{report}");
    assert_eq!(field(&report, "broadcast_results"), sent, "{report}");
}

#[test]
fn local_mode_processes_do_not_share_broadcasts() {
    // The check that the loss counter works: without Redis, half the clients miss everything.
    let a = CeilingServer::start(&["--mode", "local"]);
    let b = CeilingServer::start(&["--mode", "local"]);
    let report = run_loadgen_json(
        &[
            "--url",
            &a.url,
            "--url",
            &b.url,
            "--clients",
            "10",
            "--rate",
            "50",
            "--duration",
            "1",
            "--warmup",
            "0",
            "--drain",
            "0.5",
        ],
        Duration::from_secs(20),
    );
    let sent = field(&report, "sent");
    assert!(sent > 0, "{report}");
    assert_eq!(field(&report, "expected"), sent * 10);
    assert_eq!(field(&report, "received"), sent * 5, "{report}");
    assert_eq!(field(&report, "lost"), sent * 5, "{report}");
    assert_eq!(field(&report, "duplicated"), 0, "{report}");
}
