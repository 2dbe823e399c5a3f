//! Python `channels_redis` (the interop venv) pushes notifications to sockets held by the real
//! notifications binary over a private redis-server; and two Rust processes share one Redis.

mod support;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use channels_redis::testing::{RedisServer, unique_prefix};
use support::{Server, close, next_json};

/// The interop venv's python: `$CHANNELS_INTEROP_PYTHON`, else `target/interop-venv/bin/python`.
fn python() -> PathBuf {
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let path = std::env::var_os("CHANNELS_INTEROP_PYTHON").map_or_else(
        || workspace.join("target/interop-venv/bin/python"),
        PathBuf::from,
    );
    assert!(
        path.exists(),
        "the Python interop venv is missing ({}): run `bash scripts/install-deps.sh` \
         (or set CHANNELS_INTEROP_PYTHON to a python with channels_redis 4.3 installed)",
        path.display()
    );
    path
}

/// Runs `producer.py <args>` off the runtime and returns its JSON line.
async fn produce(args: Vec<&str>) -> serde_json::Value {
    let args: Vec<String> = args.into_iter().map(str::to_owned).collect();
    tokio::task::spawn_blocking(move || run_producer(&args))
        .await
        .expect("the producer task ends")
}

/// Runs `producer.py <args>` (killed after 30 s) and returns its JSON line.
fn run_producer(args: &[String]) -> serde_json::Value {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("producer.py");
    let mut child = Command::new(python())
        .arg(script)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python starts");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("waitpid works").is_none() {
        if Instant::now() > deadline {
            let _killed = child.kill();
            panic!("producer.py {args:?} did not finish within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("output is collected");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "producer.py failed: {stderr}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|_| panic!("not JSON: {stdout:?}"))
}

#[tokio::test]
async fn python_producer_reaches_rust_sockets_over_the_core_layer() {
    python_to_rust("redis").await;
}

#[tokio::test]
async fn python_producer_reaches_rust_sockets_over_the_pubsub_layer() {
    python_to_rust("redis-pubsub").await;
}

/// The server on `layer`, producer.py with the matching channels_redis layer.
async fn python_to_rust(layer: &str) {
    let redis = RedisServer::start().expect("redis-server starts (apt-get install redis-server)");
    let (url, prefix) = (redis.url(), unique_prefix());
    let server = Server::start(&[
        "--layer",
        layer,
        "--redis-url",
        &url,
        "--redis-prefix",
        &prefix,
    ]);
    let (mut user42, unread) = server.user("42").await;
    assert_eq!(unread, 0);
    let (mut user1, _) = server.user("1").await;

    let mut redis_args = vec!["--redis-url", url.as_str(), "--prefix", prefix.as_str()];
    if layer == "redis-pubsub" {
        redis_args.push("--pubsub");
    }
    let for_42 = ["--user", "42", "--title", "from Django", "--body", "héllo"];
    let sent = produce([&redis_args[..], &for_42].concat()).await;
    assert_eq!(sent["group"], "user.42");
    let heard = next_json(&mut user42).await;
    assert_eq!(heard["type"], "notification", "{heard}");
    assert_eq!(heard["id"], sent["id"]);
    assert_eq!(heard["title"], "from Django");
    assert_eq!(heard["body"], "héllo");
    assert_eq!(heard["unread"], 1);

    // To everyone: user 1 hears it too (and user 1 never heard the one for 42).
    let everyone = produce([&redis_args[..], &["--all", "--title", "to all"]].concat()).await;
    for socket in [&mut user1, &mut user42] {
        let heard = next_json(socket).await;
        assert_eq!(heard["id"], everyone["id"], "{heard}");
    }
    close(user42).await;
    // The count lives in Redis: a reconnect sees both.
    let (socket, unread) = server.user("42").await;
    assert_eq!(unread, 2);
    close(socket).await;
    close(user1).await;
}

#[tokio::test]
async fn two_processes_share_groups_and_unread_counts_through_redis() {
    let redis = RedisServer::start().expect("redis-server starts (apt-get install redis-server)");
    let (url, prefix) = (redis.url(), unique_prefix());
    let args = [
        "--layer",
        "redis",
        "--redis-url",
        &url,
        "--redis-prefix",
        &prefix,
    ];
    let a = Server::start(&args);
    let b = Server::start(&args);
    let (mut on_b, _) = b.user("2").await;
    // Posted to process A, delivered by process B.
    let id = a.notify("2", "across processes").await;
    let heard = next_json(&mut on_b).await;
    assert_eq!(heard["id"], id.as_str(), "{heard}");
    assert_eq!(heard["unread"], 1);
    close(on_b).await;
    let (socket, unread) = a.user("2").await;
    assert_eq!(unread, 1, "process A sees the count process B kept");
    close(socket).await;
}
