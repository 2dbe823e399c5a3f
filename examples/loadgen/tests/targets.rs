//! The loadgen refuses what it must not do: non-loopback targets, bad options, dead servers.

mod support;

use std::time::Duration;

use support::run_loadgen;

#[test]
fn refuses_a_non_loopback_server() {
    let run = run_loadgen(
        &[
            "--url",
            "ws://192.0.2.1:8000/ws",
            "--clients",
            "1",
            "--duration",
            "1",
        ],
        Duration::from_secs(10),
    );
    assert!(!run.status.success());
    assert!(run.stderr.contains("--allow-remote"), "{}", run.stderr);
    assert!(run.stdout.is_empty());
}

#[test]
fn reports_a_server_that_is_not_there() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let url = format!("ws://127.0.0.1:{port}/ws");
    let run = run_loadgen(
        &[
            "--url",
            &url,
            "--clients",
            "3",
            "--duration",
            "1",
            "--connect-timeout",
            "2",
        ],
        Duration::from_secs(10),
    );
    assert!(!run.status.success());
    assert!(
        run.stderr
            .contains("no client connected (3 attempts failed)"),
        "{}",
        run.stderr
    );
}
