//! The Django example (`examples/django-gateway/`) end to end, as its README
//! runs it: a private redis-server; two `channels-server` processes on it
//! (`--forward-channel gateway.events --django-secret-key`); the example's
//! `manage.py runserver` (the page, and tokens from real
//! `django.core.signing`) and `manage.py runworker gateway.events` (its
//! AsyncConsumer); three headless Chromium pages using the JavaScript
//! client, one on the first server and two on the second. A browser frame
//! goes Rust -> Python worker -> Rust -> browser; the worker's `group_send`
//! and the example's `manage.py broadcast` (Django's `group_send`) reach
//! every page on both servers exactly once, through the token's `groups`
//! and through the client's own `subscribe`. On the core layer and on the
//! pub/sub layer.
//!
//! Needs `redis-server`, `chromium` and the interop venv
//! (`scripts/install-deps.sh`); without them the test fails.

// Helpers outside #[test] fns unwrap too: a panic is how a test reports failure.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead as _, BufReader, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use test_support::ServerProcess;
use test_support::cdp::{Browser, Page};
use test_support::redis::unique_prefix;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const SECRET_KEY: &str = "django-insecure-gateway-example-test-key";
const SALT: &str = "channels.gateway";
const FORWARD: &str = "gateway.events";
/// How long a Python process may take to start (Django imports included).
const PYTHON_START: Duration = Duration::from_secs(30);
/// How long a page may take to show something that crossed the processes.
const SHOW: Duration = Duration::from_secs(15);

fn example_dir() -> PathBuf {
    common::workspace_root().join("examples/django-gateway")
}

/// A `manage.py` process of the example, killed on drop; its stdout and
/// stderr lines arrive on `lines`.
struct Manage {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Manage {
    fn start(args: &[&str], envs: &[(&str, String)]) -> Self {
        let mut child = Command::new(common::python())
            .arg("manage.py")
            .args(args)
            .current_dir(example_dir())
            .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python starts");
        let (tx, lines) = mpsc::channel();
        let out: Box<dyn Read + Send> = Box::new(child.stdout.take().unwrap());
        let err: Box<dyn Read + Send> = Box::new(child.stderr.take().unwrap());
        for stream in [out, err] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { return };
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            });
        }
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Blocks until a line containing `needle` (panics with the output after `timeout`).
    fn wait_for(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(needle);
                    self.seen.push(line);
                    if found {
                        return;
                    }
                }
                Err(error) => panic!(
                    "manage.py printed no {needle:?} within {timeout:?} ({error}); its output:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Runs a short command to its end; panics on failure.
    fn run(args: &[&str], envs: &[(&str, String)]) -> String {
        let output = Command::new(common::python())
            .arg("manage.py")
            .args(args)
            .current_dir(example_dir())
            .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .expect("python starts");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "manage.py {args:?} failed: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }
}

impl Drop for Manage {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `PUBSUB NUMSUB channel` on the redis-server, in RESP by hand.
async fn subscribers(port: u16, channel: &str) -> u64 {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let command = format!(
        "*3\r\n$6\r\nPUBSUB\r\n$6\r\nNUMSUB\r\n${}\r\n{channel}\r\n",
        channel.len()
    );
    stream.write_all(command.as_bytes()).await.unwrap();
    let mut reply = Vec::new();
    let mut buffer = [0u8; 256];
    // The reply is `*2 $len channel :count`: read until the count's line ends.
    loop {
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer))
            .await
            .expect("redis answers PUBSUB NUMSUB")
            .unwrap();
        assert!(read > 0, "redis closed the connection");
        reply.extend_from_slice(&buffer[..read]);
        let text = String::from_utf8_lossy(&reply);
        if let Some(count) = text
            .split("\r\n")
            .find_map(|line| line.strip_prefix(':'))
            .filter(|_| text.ends_with("\r\n"))
        {
            return count.parse().unwrap();
        }
    }
}

/// A page of the example (served by Django) for `user`, whose client talks to `server`.
async fn open_page(
    browser: &mut Browser,
    django: SocketAddr,
    user: &str,
    server: SocketAddr,
) -> Page {
    let page = browser
        .open(&format!(
            "http://{django}/?user={user}&gateway=ws://{server}/ws"
        ))
        .await;
    browser
        .wait_for(
            &page,
            "window.demo?.ready === true",
            &format!("{user}'s page connected and subscribed"),
            SHOW,
        )
        .await;
    page
}

/// JavaScript: how many layer pushes with `data.text === text` the page got.
fn pushes(text: &str) -> String {
    format!(
        "demo.events.filter((e) => e.kind === 'push' && e.push.data.type === 'demo.message' \
         && e.push.data.text === {text:?}).length"
    )
}

/// Waits until every page got the push `text`.
async fn wait_everywhere(browser: &mut Browser, pages: &[&Page], text: &str) {
    for page in pages {
        browser
            .wait_for(
                page,
                &format!("{} >= 1", pushes(text)),
                &format!("the push {text:?}"),
                SHOW,
            )
            .await;
    }
}

/// Checks every page got each of `texts` exactly once.
async fn assert_once(browser: &mut Browser, pages: &[&Page], texts: &[&str]) {
    for page in pages {
        for text in texts {
            let count = browser.eval(page, &pushes(text)).await;
            assert_eq!(count, 1, "{text:?} arrived {count} times");
        }
    }
}

async fn the_example_works_on(layer: &str, django_layer: &str) {
    let redis = test_support::redis::start().await;
    let (url, prefix) = (redis.url(), unique_prefix());
    let server_args = [
        "--bind",
        "127.0.0.1:0",
        "--layer",
        layer,
        "--redis-url",
        &url,
        "--redis-prefix",
        &prefix,
        "--forward-channel",
        FORWARD,
        "--django-secret-key",
        SECRET_KEY,
        "--django-salt",
        SALT,
    ];
    let servers = [
        ServerProcess::start(common::server_bin(), &server_args, &[]),
        ServerProcess::start(common::server_bin(), &server_args, &[]),
    ];
    let (one, two) = (servers[0].addr(), servers[1].addr());

    let django_port = test_support::free_port();
    let envs = [
        ("DJANGO_SECRET_KEY", SECRET_KEY.to_owned()),
        ("REDIS_URL", url.clone()),
        ("CHANNEL_LAYER", django_layer.to_owned()),
        ("CHANNEL_LAYER_PREFIX", prefix.clone()),
        ("GATEWAY_URL", format!("ws://{one}/ws")),
        ("GATEWAY_TOKEN_SALT", SALT.to_owned()),
        ("GATEWAY_FORWARD_CHANNEL", FORWARD.to_owned()),
    ];
    let (web, worker) = {
        let envs = envs.clone();
        tokio::task::spawn_blocking(move || {
            let bind = format!("127.0.0.1:{django_port}");
            let mut web = Manage::start(&["runserver", "--noreload", &bind], &envs);
            let mut worker = Manage::start(&["runworker", FORWARD], &envs);
            web.wait_for("Quit the server with", PYTHON_START);
            worker.wait_for("Running worker for channels", PYTHON_START);
            (web, worker)
        })
        .await
        .unwrap()
    };
    // On pub/sub a message to a channel nobody listens to yet is lost: wait
    // until the worker has subscribed (the core layer queues it in Redis).
    if django_layer == "pubsub" {
        let deadline = Instant::now() + PYTHON_START;
        while subscribers(redis.port(), FORWARD).await == 0 {
            assert!(Instant::now() < deadline, "the worker never subscribed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let django: SocketAddr = format!("127.0.0.1:{django_port}").parse().unwrap();

    let mut browser = Browser::start().await;
    let alice = open_page(&mut browser, django, "alice", one).await;
    let bob = open_page(&mut browser, django, "bob", two).await;
    let carol = open_page(&mut browser, django, "carol", two).await;
    let pages = [&alice, &bob, &carol];
    // The token from Django's signing joined user.<sub> and the `groups` claim.
    let info = browser
        .eval(&alice, "JSON.stringify(demo.client.info.groups)")
        .await;
    assert_eq!(info, r#"["user.alice","demo.news"]"#);

    // browser -> Rust -> worker (websocket.connect, websocket.receive) -> Rust -> browser.
    for (page, user) in [(&alice, "alice"), (&bob, "bob")] {
        browser
            .wait_for(
                page,
                &format!(
                    "demo.events.some((e) => e.kind === 'worker' && e.frame.event === 'welcome' \
                     && e.frame.user === {user:?})"
                ),
                "the worker's welcome",
                SHOW,
            )
            .await;
        let text = format!("hello from {user}");
        browser
            .eval(
                page,
                &format!("demo.client.send(JSON.stringify({{ action: 'echo', text: {text:?} }}))"),
            )
            .await;
        browser
            .wait_for(
                page,
                &format!(
                    "demo.events.some((e) => e.kind === 'worker' && e.frame.event === 'echo' \
                     && e.frame.text === {text:?} && e.frame.user === {user:?})"
                ),
                "the worker's echo",
                SHOW,
            )
            .await;
    }

    // A binary frame reaches the worker too (as `bytes`), which answers it.
    browser
        .eval(&carol, "demo.client.send(new Uint8Array([1, 2, 3]))")
        .await;
    browser
        .wait_for(
            &carol,
            "demo.events.some((e) => e.kind === 'worker' && e.frame.error === 'send JSON text frames')",
            "the worker's answer to a binary frame",
            SHOW,
        )
        .await;

    // The worker's group_send (to demo.room, which the pages subscribed to themselves).
    browser
        .eval(
            &bob,
            "demo.client.send(JSON.stringify({ action: 'shout', text: 'shout from bob' }))",
        )
        .await;
    wait_everywhere(&mut browser, &pages, "shout from bob").await;
    for page in pages {
        let from = browser
            .eval(
                page,
                "demo.events.find((e) => e.kind === 'push' && e.push.data.text === 'shout from bob').push.data.from",
            )
            .await;
        assert_eq!(from, "bob");
    }

    // Django's group_send, from the example project: to the token's group and
    // to the group the clients subscribed to, then a marker through each (a
    // duplicate would come before it).
    let envs_owned = envs.to_vec();
    tokio::task::spawn_blocking(move || {
        for (group, text) in [
            ("demo.news", "news from django"),
            ("demo.room", "room from django"),
            ("demo.news", "news marker"),
            ("demo.room", "room marker"),
        ] {
            let said = Manage::run(&["broadcast", group, text], &envs_owned);
            assert!(said.contains(&format!("sent to {group}")), "{said}");
        }
    })
    .await
    .unwrap();
    wait_everywhere(&mut browser, &pages, "news marker").await;
    wait_everywhere(&mut browser, &pages, "room marker").await;
    assert_once(
        &mut browser,
        &pages,
        &[
            "shout from bob",
            "news from django",
            "room from django",
            "news marker",
            "room marker",
        ],
    )
    .await;
    // The Python group_send carries no group; the gateway's own publishes do.
    let group = browser
        .eval(
            &alice,
            "demo.events.find((e) => e.kind === 'push' && e.push.data.text === 'news marker').push.group ?? null",
        )
        .await;
    assert_eq!(group, serde_json::Value::Null);
    // No page saw an error.
    for page in pages {
        let errors = browser
            .eval(
                page,
                "JSON.stringify(demo.events.filter((e) => e.kind === 'error'))",
            )
            .await;
        assert_eq!(errors, "[]");
    }
    drop(browser);
    drop((web, worker));
    drop(servers);
    drop(redis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_django_example_reaches_browsers_on_two_servers_on_the_core_layer() {
    the_example_works_on("redis", "core").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_django_example_reaches_browsers_on_two_servers_on_the_pubsub_layer() {
    the_example_works_on("redis-pubsub", "pubsub").await;
}
