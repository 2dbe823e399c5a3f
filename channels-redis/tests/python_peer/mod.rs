//! Drives `interop/peer.py`, a long-lived Python process running the real
//! channels_redis, and converts messages to and from its tagged JSON.
//!
//! The interpreter is `$CHANNELS_INTEROP_PYTHON` (set by `scripts/test.sh`),
//! else `target/interop-venv/bin/python` of the workspace (made by
//! `scripts/install-deps.sh`). Without either the tests fail, saying how to
//! create it: interop must never pass by being skipped.
#![allow(dead_code, unreachable_pub)] // two test binaries use different subsets

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use channels_core::{Message, Value};
use serde_json::{Value as Json, json};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::time::timeout;

/// How long one request to the peer may take (startup imports Django).
pub const PEER_WAIT: Duration = Duration::from_secs(20);

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("channels-redis has no parent directory"))
}

/// The Python interpreter with channels_redis installed.
///
/// # Panics
/// When none is found, with the command that creates it.
pub fn python() -> PathBuf {
    if let Some(path) = std::env::var_os("CHANNELS_INTEROP_PYTHON") {
        let path = PathBuf::from(path);
        assert!(
            path.exists(),
            "CHANNELS_INTEROP_PYTHON={} does not exist; run `bash scripts/install-deps.sh`",
            path.display()
        );
        return path;
    }
    let path = workspace_root().join("target/interop-venv/bin/python");
    assert!(
        path.exists(),
        "the Python interop venv is missing ({}): run `bash scripts/install-deps.sh` \
         (or set CHANNELS_INTEROP_PYTHON to a python with channels_redis 4.3 installed)",
        path.display()
    );
    path
}

/// An error answered by the peer.
#[derive(Debug)]
pub struct PeerError {
    /// Python exception class name (`Timeout` for a receive timeout).
    pub kind: String,
    /// Its message.
    pub error: String,
}

/// A running `peer.py serve`.
#[derive(Debug)]
pub struct PythonPeer {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl PythonPeer {
    /// Starts a peer with channels_redis `layer` ("core" or "pubsub") on
    /// `hosts`, with `prefix` and optional symmetric encryption `keys`.
    pub async fn start(layer: &str, hosts: &[String], prefix: &str, keys: &[&str]) -> Self {
        let mut command = Command::new(python());
        command
            .arg(workspace_root().join("interop/peer.py"))
            .args(["--layer", layer, "--prefix", prefix]);
        for host in hosts {
            command.args(["--host", host]);
        }
        for key in keys {
            command.args(["--key", key]);
        }
        let mut child = command
            .arg("serve")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot run {}: {error}", python().display()));
        let stdin = child
            .stdin
            .take()
            .unwrap_or_else(|| panic!("peer stdin missing"));
        let stdout = child
            .stdout
            .take()
            .unwrap_or_else(|| panic!("peer stdout missing"));
        let mut peer = Self {
            child,
            stdin,
            stdout: BufReader::new(stdout).lines(),
        };
        let ready = peer.read_line().await;
        assert_eq!(
            ready.get("ready"),
            Some(&Json::Bool(true)),
            "peer did not start: {ready}"
        );
        peer
    }

    async fn read_line(&mut self) -> Json {
        let line = timeout(PEER_WAIT, self.stdout.next_line())
            .await
            .unwrap_or_else(|_| panic!("the Python peer did not answer within {PEER_WAIT:?}"))
            .unwrap_or_else(|error| panic!("reading from the Python peer failed: {error}"))
            .unwrap_or_else(|| panic!("the Python peer exited (see its stderr above)"));
        serde_json::from_str(&line)
            .unwrap_or_else(|error| panic!("peer wrote non-JSON {line:?}: {error}"))
    }

    /// Sends a request without waiting for its answer (see [`Self::answer`]).
    pub async fn request(&mut self, request: Json) {
        let mut line = request.to_string();
        line.push('\n');
        self.stdin
            .write_all(line.as_bytes())
            .await
            .unwrap_or_else(|error| panic!("writing to the Python peer failed: {error}"));
        self.stdin
            .flush()
            .await
            .unwrap_or_else(|error| panic!("writing to the Python peer failed: {error}"));
    }

    /// Reads the answer to the oldest pending request.
    pub async fn answer(&mut self) -> Result<Json, PeerError> {
        let mut answer = self.read_line().await;
        if answer.get("ok") == Some(&Json::Bool(true)) {
            return Ok(answer
                .get_mut("result")
                .map(Json::take)
                .unwrap_or(Json::Null));
        }
        let field = |name: &str| {
            answer
                .get(name)
                .and_then(Json::as_str)
                .unwrap_or("")
                .to_owned()
        };
        Err(PeerError {
            kind: field("kind"),
            error: field("error"),
        })
    }

    /// Sends a request and waits for its answer.
    pub async fn call(&mut self, request: Json) -> Result<Json, PeerError> {
        self.request(request).await;
        self.answer().await
    }

    /// Like [`Self::call`], panicking on an error answer.
    pub async fn call_ok(&mut self, request: Json) -> Json {
        let description = request.to_string();
        self.call(request)
            .await
            .unwrap_or_else(|error| panic!("Python {description} failed: {error:?}"))
    }

    /// Python `new_channel()` (its default prefix).
    pub async fn new_channel(&mut self) -> String {
        match self.call_ok(json!({"op": "new_channel"})).await {
            Json::String(name) => name,
            other => panic!("new_channel returned {other}"),
        }
    }

    /// Python `send`.
    pub async fn send(&mut self, channel: &str, message: &Message) {
        self.call_ok(json!({"op": "send", "channel": channel, "message": tag_message(message)}))
            .await;
    }

    /// Python `group_send`.
    pub async fn group_send(&mut self, group: &str, message: &Message) {
        self.call_ok(json!({"op": "group_send", "group": group, "message": tag_message(message)}))
            .await;
    }

    /// Python `group_add`.
    pub async fn group_add(&mut self, group: &str, channel: &str) {
        self.call_ok(json!({"op": "group_add", "group": group, "channel": channel}))
            .await;
    }

    /// Python `receive` with a timeout in seconds.
    pub async fn receive(&mut self, channel: &str, seconds: f64) -> Message {
        let tagged = self
            .call_ok(json!({"op": "receive", "channel": channel, "timeout": seconds}))
            .await;
        untag_message(&tagged)
    }

    /// Python `layer.serialize(message)`.
    pub async fn serialize(&mut self, message: &Message) -> Vec<u8> {
        match self
            .call_ok(json!({"op": "serialize", "message": tag_message(message)}))
            .await
        {
            Json::String(hex) => unhex(&hex),
            other => panic!("serialize returned {other}"),
        }
    }

    /// Python `layer.deserialize(bytes)`.
    pub async fn deserialize(&mut self, bytes: &[u8]) -> Message {
        let tagged = self
            .call_ok(json!({"op": "deserialize", "hex": hex(bytes)}))
            .await;
        untag_message(&tagged)
    }

    /// Raw `ZRANGE key 0 -1` on the peer's first host, through redis-py.
    pub async fn zrange(&mut self, key: &str) -> Vec<Vec<u8>> {
        match self.call_ok(json!({"op": "zrange", "key": key})).await {
            Json::Array(members) => members
                .iter()
                .map(|m| {
                    unhex(
                        m.as_str()
                            .unwrap_or_else(|| panic!("member {m} is not hex")),
                    )
                })
                .collect(),
            other => panic!("zrange returned {other}"),
        }
    }

    /// Stops the peer.
    pub async fn quit(mut self) {
        let _ = self.call(json!({"op": "quit"})).await;
        let _ = timeout(PEER_WAIT, self.child.wait()).await;
    }
}

pub use crate::support::{hex, unhex};

/// A value as peer.py's tagged JSON.
pub fn tag(value: &Value) -> Json {
    match value {
        Value::Nil => Json::Null,
        Value::Boolean(b) => Json::Bool(*b),
        Value::Integer(i) => match (i.as_i64(), i.as_u64()) {
            (Some(i), _) => json!(i),
            (None, Some(u)) => json!(u),
            (None, None) => panic!("integer {i} fits neither i64 nor u64"),
        },
        Value::F32(f) => float(f64::from(*f)),
        Value::F64(f) => float(*f),
        Value::String(s) => Json::String(
            s.as_str()
                .unwrap_or_else(|| panic!("test strings are UTF-8"))
                .to_owned(),
        ),
        Value::Binary(bytes) => json!({ "$bytes": hex(bytes) }),
        Value::Array(items) => Json::Array(items.iter().map(tag).collect()),
        Value::Map(entries) => json!({
            "$map": entries.iter().map(|(k, v)| json!([tag(k), tag(v)])).collect::<Vec<_>>()
        }),
        Value::Ext(..) => panic!("ext values cannot go to Python"),
    }
}

fn float(f: f64) -> Json {
    Json::Number(serde_json::Number::from_f64(f).unwrap_or_else(|| panic!("{f} is not finite")))
}

/// peer.py's tagged JSON as a value.
pub fn untag(json: &Json) -> Value {
    match json {
        Json::Null => Value::Nil,
        Json::Bool(b) => Value::Boolean(*b),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                Value::F64(n.as_f64().unwrap_or_else(|| panic!("bad number {n}")))
            }
        }
        Json::String(s) => Value::from(s.as_str()),
        Json::Array(items) => Value::Array(items.iter().map(untag).collect()),
        Json::Object(object) => {
            if let Some(Json::String(hex)) = object.get("$bytes") {
                Value::Binary(unhex(hex))
            } else if let Some(Json::Array(pairs)) = object.get("$map") {
                Value::Map(
                    pairs
                        .iter()
                        .map(|pair| match pair {
                            Json::Array(kv) if kv.len() == 2 => (untag(&kv[0]), untag(&kv[1])),
                            other => panic!("bad $map entry {other}"),
                        })
                        .collect(),
                )
            } else {
                panic!("untagged JSON object from the peer: {json}")
            }
        }
    }
}

/// A message as tagged JSON.
pub fn tag_message(message: &Message) -> Json {
    tag(&message.to_value())
}

/// A tagged JSON message as a [`Message`].
pub fn untag_message(json: &Json) -> Message {
    Message::from_value(untag(json))
        .unwrap_or_else(|error| panic!("peer returned a bad message {json}: {error}"))
}

/// A message with every msgpack type channels_redis carries: str (empty and
/// non-ASCII), int (small, negative, i64 min, u64 max), float, bool, None,
/// bytes (empty and every byte value), a list and a nested map.
pub fn all_types_message() -> Message {
    Message::new("interop.message")
        .with("text", "héllo ツ")
        .with("empty", "")
        .with("int", 42)
        .with("negative", -3)
        .with("i64_min", i64::MIN)
        .with("u64_max", u64::MAX)
        .with("float", 1.5)
        .with("negative_float", -0.1)
        .with("yes", true)
        .with("no", false)
        .with("none", Value::Nil)
        .with("bytes", (0u8..=255).collect::<Vec<u8>>())
        .with("no_bytes", Vec::<u8>::new())
        .with(
            "list",
            Value::Array(vec![
                Value::from(1),
                Value::from("two"),
                Value::Nil,
                Value::Array(vec![Value::Binary(vec![1, 2, 3])]),
            ]),
        )
        .with(
            "map",
            Value::Map(vec![
                (Value::from("k"), Value::from("v")),
                (
                    Value::from("nested"),
                    Value::Map(vec![(
                        Value::from("n"),
                        Value::Array(vec![Value::from(1), Value::F64(2.5), Value::Boolean(false)]),
                    )]),
                ),
                (Value::from("raw"), Value::Binary(vec![0, 255])),
            ]),
        )
}

/// Asserts two messages are identical: same keys in the same order, same
/// values of the same msgpack types (bytes stay bytes, floats stay floats).
pub fn assert_identical(received: &Message, sent: &Message, how: &str) {
    assert_eq!(
        received.to_value(),
        sent.to_value(),
        "{how}: the message changed in transit"
    );
    for (key, value) in sent.iter() {
        let got = received.get(key);
        assert_eq!(
            got.map(std::mem::discriminant),
            Some(std::mem::discriminant(value)),
            "{how}: `{key}` changed type: sent {value:?}, received {got:?}"
        );
    }
}
