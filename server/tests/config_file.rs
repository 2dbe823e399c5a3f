//! The config file end to end: a Django `CHANNEL_LAYERS` dict converted by
//! `interop/django_to_toml.py` runs the real binary against a test Redis,
//! with message encryption on, and Python `channels_redis` built from the
//! same dict talks to it both ways. A file with an unknown key is refused
//! with the key's name.
//!
//! The interpreter is `$CHANNELS_INTEROP_PYTHON` (set by `scripts/test.sh`)
//! or `target/interop-venv/bin/python` (made by `scripts/install-deps.sh`);
//! the binary is `$CHANNELS_SERVER_BIN` or the one cargo built.

// Helpers outside #[test] fns unwrap too: a panic is how a test reports failure.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{gateway, next_text, subscribe};
use test_support::redis::{RedisServer, unique_prefix};
use test_support::{ServerProcess, http};

/// How long the Python side may take for one step (imports included).
const PYTHON_WAIT: Duration = Duration::from_secs(30);

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn python() -> PathBuf {
    let path = std::env::var_os("CHANNELS_INTEROP_PYTHON").map_or_else(
        || workspace_root().join("target/interop-venv/bin/python"),
        PathBuf::from,
    );
    assert!(
        path.exists(),
        "the Python interop venv is missing ({}): run `bash scripts/install-deps.sh`",
        path.display()
    );
    path
}

fn server_bin() -> PathBuf {
    std::env::var_os("CHANNELS_SERVER_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_channels-server")),
        PathBuf::from,
    )
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("channels-config-test-{}", unique_prefix()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The Django settings module of the test: the real channels_redis layer
/// with encryption, regex and glob capacities, and a (host, port) pair.
fn settings_module(port: u16, prefix: &str) -> String {
    format!(
        r#"import re

CHANNEL_LAYERS = {{
    "default": {{
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {{
            "hosts": [("127.0.0.1", {port})],
            "prefix": "{prefix}",
            "expiry": 60,
            "group_expiry": 86400,
            "capacity": 1000,
            "channel_capacity": {{"http.request": 200, re.compile(r"^websocket\.send!"): 20}},
            "symmetric_encryption_keys": ["interop config secret"],
        }},
    }}
}}
"#
    )
}

/// The Python side: builds its layer from the same settings dict, then
/// follows commands on stdin, answering one JSON line each.
const PYTHON_SIDE: &str = r#"
import asyncio, importlib, json, sys

sys.path.insert(0, sys.argv[1])
entry = importlib.import_module("interop_settings").CHANNEL_LAYERS["default"]
module, _, name = entry["BACKEND"].rpartition(".")
layer = getattr(importlib.import_module(module), name)(**entry["CONFIG"])

def say(value):
    print(json.dumps(value), flush=True)

async def main():
    channel = await layer.new_channel()
    say({"channel": channel})
    for line in sys.stdin:
        command = json.loads(line)
        if command["op"] == "group_send":
            await layer.group_send(command["group"], command["message"])
            say({"sent": True})
        elif command["op"] == "receive":
            message = await asyncio.wait_for(layer.receive(channel), 20)
            say({"received": message})
        else:
            return

asyncio.run(main())
"#;

/// The running Python side.
struct PythonSide {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl PythonSide {
    fn start(dir: &Path) -> Self {
        let script = dir.join("python_side.py");
        std::fs::write(&script, PYTHON_SIDE).unwrap();
        let mut child = Command::new(python())
            .arg(&script)
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout: ChildStdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self {
            child,
            stdin,
            lines,
        }
    }

    fn answer(&self) -> serde_json::Value {
        let line = self
            .lines
            .recv_timeout(PYTHON_WAIT)
            .unwrap_or_else(|_| panic!("the Python side did not answer (see its stderr)"));
        serde_json::from_str(&line).unwrap()
    }

    fn command(&mut self, command: &serde_json::Value) -> serde_json::Value {
        writeln!(self.stdin, "{command}").unwrap();
        self.stdin.flush().unwrap();
        self.answer()
    }
}

impl Drop for PythonSide {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the converter on the settings module in `dir`, writing `out`.
fn convert(dir: &Path, out: &Path) {
    let output = Command::new(python())
        .arg(workspace_root().join("interop/django_to_toml.py"))
        .args(["--settings", "interop_settings", "--pythonpath"])
        .arg(dir)
        .arg("-o")
        .arg(out)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "django_to_toml.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn a_converted_django_config_talks_to_python_channels_redis_with_encryption() {
    let redis = RedisServer::start().expect("redis-server starts (is it installed?)");
    let dir = TempDir::new();
    let prefix = unique_prefix();
    std::fs::write(
        dir.0.join("interop_settings.py"),
        settings_module(redis.port(), &prefix),
    )
    .unwrap();
    let config = dir.0.join("channels.toml");
    convert(&dir.0, &config);
    let toml = std::fs::read_to_string(&config).unwrap();
    for expected in [
        "backend = \"channels_redis.core.RedisChannelLayer\"",
        &format!("hosts = [[\"127.0.0.1\", {}]]", redis.port()),
        "\"re:^websocket\\\\.send!\" = 20",
        "symmetric_encryption_keys = [\"interop config secret\"]",
    ] {
        assert!(toml.contains(expected), "`{expected}` missing from\n{toml}");
    }

    let server = ServerProcess::start(
        server_bin(),
        &[
            "--config",
            config.to_str().unwrap(),
            "--bind",
            "127.0.0.1:0",
            "--publish-token",
            "config-test",
        ],
        &[],
    );
    let address = server.addr();
    let ready = http::get(address, "/readyz").await;
    assert_eq!(ready.status, 200, "{ready:?}\n{}", server.output());

    // Python -> WebSocket: channels_redis group_send into a gateway group.
    let (mut browser, _) = gateway(address).await;
    subscribe(&mut browser, "interop").await;
    let mut python = PythonSide::start(&dir.0);
    let channel = python.answer()["channel"]
        .as_str()
        .expect("the Python side names its channel")
        .to_owned();
    let sent = python.command(&serde_json::json!({
        "op": "group_send",
        "group": "interop",
        "message": {"type": "chat.message", "text": "encrypted hello from python"},
    }));
    assert_eq!(sent["sent"], true);
    assert_eq!(next_text(&mut browser).await, "encrypted hello from python");

    // Server -> Python: the publish API into the Python side's channel.
    let published = http::post_json(
        address,
        &format!("/api/channels/{channel}"),
        Some("config-test"),
        &serde_json::json!({"type": "hello.python", "text": "encrypted hello from rust"}),
    )
    .await;
    assert_eq!(published.status, 202, "{published:?}");
    let received = python.command(&serde_json::json!({"op": "receive"}));
    assert_eq!(
        received["received"],
        serde_json::json!({"type": "hello.python", "text": "encrypted hello from rust"}),
        "{received}"
    );

    // Both sides hold the key: a message in the clear (or under another
    // key) would not have decoded on either side.
    drop(python);
    drop(browser);
    server.sigterm();
}

#[test]
fn a_file_with_an_unknown_key_is_refused_with_its_name() {
    let dir = TempDir::new();
    let config = dir.0.join("bad.toml");
    std::fs::write(
        &config,
        "[layer]\nbackend = \"memory\"\n[layer.config]\ncapacity = 10\ncapasity = 100\n",
    )
    .unwrap();
    let output = Command::new(server_bin())
        .args(["--bind", "127.0.0.1:0"])
        .env("CHANNELS_CONFIG", &config)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("capasity"), "stderr: {stderr}");
    assert!(stderr.contains("bad.toml"), "stderr: {stderr}");
    assert!(stderr.contains("line 5"), "stderr: {stderr}");
}

#[test]
fn the_converter_refuses_what_channels_redis_refuses() {
    let output = Command::new(python())
        .arg(workspace_root().join("interop/django_to_toml.py"))
        .arg("--json")
        .arg(r#"{"default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": "redis://one-string"}}}"#)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("list of Redis hosts"), "stderr: {stderr}");
}

#[test]
fn check_config_describes_a_valid_configuration_and_refuses_a_missing_key_file() {
    let output = Command::new(server_bin())
        .arg("--config")
        .arg(workspace_root().join("deploy/channels.toml"))
        .args(["--layer", "redis-pubsub", "--check-config"])
        .env("CHANNELS_JWT_SECRET", "a secret")
        .env_remove("CHANNELS_CONFIG")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    // The flag and the environment win over the file; the secret is not shown.
    assert!(stdout.contains("layer redis-pubsub"), "stdout: {stdout}");
    assert!(stdout.contains("prefix \"asgi\""), "stdout: {stdout}");
    assert!(stdout.contains("auth jwt-hs256"), "stdout: {stdout}");
    assert!(!stdout.contains("a secret"), "stdout: {stdout}");

    let dir = TempDir::new();
    let missing = dir.0.join("missing.pem");
    let output = Command::new(server_bin())
        .arg("--jwt-public-key")
        .arg(&missing)
        .arg("--check-config")
        .env_remove("CHANNELS_CONFIG")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("missing.pem"), "stderr: {stderr}");
}
