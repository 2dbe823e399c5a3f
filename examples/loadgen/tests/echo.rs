//! Echo mode against the real `ceiling-server` process: each echo comes back to its sender only.

mod support;

use std::time::Duration;

use support::{CeilingServer, field, run_loadgen_json};

#[test]
fn every_echo_comes_back_once() {
    let server = CeilingServer::start(&["--mode", "local"]);
    let report = run_loadgen_json(
        &[
            "--url",
            &server.url,
            "--clients",
            "30",
            "--mode",
            "echo",
            "--max",
            "30",
            "--duration",
            "2",
            "--warmup",
            "0.2",
            "--payload-bytes",
            "512",
        ],
        Duration::from_secs(20),
    );
    assert_eq!(report["mode"], "echo");
    assert_eq!(field(&report, "clients"), 30);
    let sent = field(&report, "sent");
    assert!(sent > 100, "{report}");
    assert_eq!(field(&report, "expected"), sent);
    assert_eq!(field(&report, "received"), sent, "{report}");
    assert_eq!(field(&report, "lost"), 0, "{report}");
    assert_eq!(field(&report, "duplicated"), 0, "{report}");
    assert_eq!(field(&report, "broadcast_results"), 0, "{report}");
    assert_eq!(field(&report, "unexpected"), 0, "{report}");
}
