//! The gateway in front of a real Django Channels worker: the
//! `channels-server` binary (`--layer redis --forward-channel`) and
//! `interop/gateway_worker.py` (`channels.worker.Worker`, a
//! `ChannelNameRouter` and an `AsyncConsumer` over `channels_redis`) share a
//! test redis-server. A browser-side frame goes Rust -> Python worker ->
//! `send(reply_channel, {"type": "websocket.send", ...})` -> Rust -> client;
//! the worker's `group_add(group, reply_channel)` and `group_send` reach
//! every client it added; `websocket.disconnect` reaches the worker.
//!
//! Needs `redis-server` and the interop venv (`scripts/install-deps.sh`).

// Helpers outside #[test] fns unwrap too: a panic is how a test reports failure.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{connect, next_json, next_message, send_text};
use futures_util::SinkExt;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Value, json};
use test_support::ServerProcess;
use test_support::redis::unique_prefix;
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "worker-test-secret";
const CHANNEL: &str = "gateway.events";
/// How long the Python side may take for one step (imports included).
const PYTHON_WAIT: Duration = Duration::from_secs(30);

/// The worker process; killed on drop. Its stdout lines arrive on `lines`.
struct PythonWorker {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl PythonWorker {
    fn start(redis_url: &str, prefix: &str) -> Self {
        let script = common::workspace_root().join("interop/gateway_worker.py");
        let mut child = Command::new(common::python())
            .arg(script)
            .args([
                "--redis-url",
                redis_url,
                "--prefix",
                prefix,
                "--channel",
                CHANNEL,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let worker = Self { child, lines };
        worker.wait_for("worker ready");
        worker
    }

    /// Waits (off the runtime's threads) for a stdout line containing `needle`.
    fn wait_for(&self, needle: &str) -> String {
        loop {
            match self.lines.recv_timeout(PYTHON_WAIT) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(error) => {
                    panic!("the worker printed no {needle:?} within {PYTHON_WAIT:?}: {error}")
                }
            }
        }
    }
}

impl Drop for PythonWorker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn token(sub: &str) -> String {
    let key = EncodingKey::from_secret(SECRET.as_bytes()).unwrap();
    jsonwebtoken::encode(&Header::default(), &json!({ "sub": sub }), &key).unwrap()
}

/// The next frame, which must be a text frame of JSON sent by the worker.
async fn from_worker(client: &mut common::Client) -> Value {
    next_json(client).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_reach_a_django_channels_worker_and_its_answers_come_back() {
    let redis = test_support::redis::start().await;
    let (url, prefix) = (redis.url(), unique_prefix());
    let server = ServerProcess::start(
        common::server_bin(),
        &[
            "--bind",
            "127.0.0.1:0",
            "--layer",
            "redis",
            "--redis-url",
            &url,
            "--redis-prefix",
            &prefix,
            "--forward-channel",
            CHANNEL,
            "--jwt-secret",
            SECRET,
        ],
        &[],
    );
    let worker = {
        let (url, prefix) = (url.clone(), prefix.clone());
        tokio::task::spawn_blocking(move || PythonWorker::start(&url, &prefix))
            .await
            .unwrap()
    };
    let ws = format!("ws://{}/ws", server.addr());

    let mut alice = connect(&format!("{ws}?token={}", token("42"))).await;
    assert_eq!(next_json(&mut alice).await["type"], "connected");
    // websocket.connect reached the worker, which greets through the layer.
    let greeting = from_worker(&mut alice).await;
    assert_eq!(
        greeting,
        json!({"event": "connected", "user": "42", "path": "/ws", "has_host_header": true}),
        "{}",
        server.output()
    );

    send_text(&mut alice, "hello worker").await;
    assert_eq!(
        from_worker(&mut alice).await,
        json!({"event": "echo", "text": "hello worker", "user": "42"})
    );
    alice.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    assert_eq!(
        next_message(&mut alice).await,
        Message::binary(vec![3u8, 2, 1])
    );

    // The worker put both connections in its group; its group_send reaches both.
    let mut bob = connect(&format!("{ws}?token={}", token("7"))).await;
    assert_eq!(next_json(&mut bob).await["type"], "connected");
    assert_eq!(from_worker(&mut bob).await["user"], "7");
    send_text(&mut bob, "broadcast").await;
    for client in [&mut alice, &mut bob] {
        assert_eq!(
            next_json(client).await,
            json!({"type": "message", "data": {"type": "worker.news", "text": "from 7 via the worker"}})
        );
    }

    alice.close(None).await.unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let line = worker.wait_for("disconnect");
        drop(worker);
        line
    })
    .await
    .unwrap();
    let gone: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(gone["user"], "42", "{line}");
    assert!(gone["disconnect"].is_u64(), "{line}");
    drop(bob);
    server.sigterm();
    drop(redis);
}
