//! The real shootout binary driven by the real loadgen binary: every broadcast reaches every
//! client exactly once, on the in-memory layer and across two processes over a private Redis.

mod support;

use std::time::Duration;

use channels_redis::testing::{RedisServer, unique_prefix};
use support::{Shootout, assert_perfect_broadcast, field, run_loadgen};

const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn hundred_clients_broadcast_on_the_memory_layer() {
    let server = Shootout::start(&["--layer", "memory"]);
    let report = run_loadgen(
        &[
            "--url",
            &server.url,
            "--clients",
            "100",
            "--mode",
            "broadcast",
            "--max",
            "8",
            "--duration",
            "2",
            "--warmup",
            "0.5",
        ],
        LIMIT,
    );
    assert_perfect_broadcast(&report, 100);
}

#[test]
fn echo_comes_back_to_each_sender() {
    // Each client echoes as fast as 8 in flight allow, far over the default
    // 200 frames/s per client, which would drop (and count) the excess.
    let server = Shootout::start(&["--client-rate-limit", "0"]);
    let report = run_loadgen(
        &[
            "--url",
            &server.url,
            "--clients",
            "20",
            "--mode",
            "echo",
            "--max",
            "8",
            "--duration",
            "1",
            "--warmup",
            "0",
        ],
        LIMIT,
    );
    let sent = field(&report, "sent");
    assert!(sent > 0, "{report}");
    assert_eq!(field(&report, "received"), sent, "{report}");
    assert_eq!(field(&report, "lost"), 0, "{report}");
    assert_eq!(field(&report, "duplicated"), 0, "{report}");
}

/// Two shootout processes on `layer` over one private redis-server, clients spread over both.
fn two_processes_over_redis(layer: &str) {
    let redis = RedisServer::start().expect("redis-server starts (apt-get install redis-server)");
    let (url, prefix) = (redis.url(), unique_prefix());
    let args = [
        "--layer",
        layer,
        "--redis-url",
        &url,
        "--redis-prefix",
        &prefix,
    ];
    let a = Shootout::start(&args);
    let b = Shootout::start(&args);
    let report = run_loadgen(
        &[
            "--url",
            &a.url,
            "--url",
            &b.url,
            "--clients",
            "100",
            "--mode",
            "broadcast",
            "--max",
            "8",
            "--duration",
            "2",
            "--warmup",
            "0.5",
        ],
        LIMIT,
    );
    assert_perfect_broadcast(&report, 100);
}

#[test]
fn two_processes_over_the_redis_core_layer() {
    two_processes_over_redis("redis");
}

#[test]
fn two_processes_over_the_redis_pubsub_layer() {
    two_processes_over_redis("redis-pubsub");
}
