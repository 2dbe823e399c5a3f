//! The ASGI pass-through in real browsers: the Channels tutorial's chat
//! (python/tests/tutorial, its consumer untouched) behind two
//! `channels-server` processes (`--forward-channel`) and two
//! `python -m channels_rust.worker` processes on one private redis-server,
//! on the core and on the pub/sub layer. Four headless Chromium pages, two
//! per server, each a copy of the tutorial's `room.html` script: a plain
//! `new WebSocket('ws://HOST/ws/chat/lobby/')`. Every message reaches every
//! page exactly once; then one worker is SIGKILLed mid-chat: its pages read
//! close code 4005, and the pages of the other worker, on both servers, keep
//! chatting.
//!
//! Each gateway gives a new connection to its worker with the fewest
//! connections, so two pages per server put one page of each server on each
//! worker.
//!
//! Needs `redis-server`, `chromium` and the interop venv
//! (`scripts/install-deps.sh`); without them the test fails.

// Helpers outside #[test] fns unwrap too: a panic is how a test reports failure.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead as _, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use test_support::ServerProcess;
use test_support::cdp::{Browser, Page};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const FORWARD: &str = "django";
/// Seconds between a worker's heartbeats: a dead one is dropped after 5.
const HEARTBEAT: &str = "0.5";
/// How long a worker may take to start (Django imports included).
const PYTHON_START: Duration = Duration::from_secs(30);
/// How long a page may take to show something that crossed the processes.
const SHOW: Duration = Duration::from_secs(15);

/// The tutorial's room page, reduced to its script: the socket, the log,
/// and `say` in place of the form; plus the close code, for the test.
const ROOM_PAGE: &str = r"<!DOCTYPE html>
<html><head><meta charset='utf-8'><title>Chat Room</title></head><body>
<textarea id='chat-log' cols='100' rows='20'></textarea>
<script>
const server = new URLSearchParams(location.search).get('server');
const roomName = 'lobby';
const chatSocket = new WebSocket('ws://' + server + '/ws/chat/' + roomName + '/');
window.room = { messages: [], open: false, closeCode: null };
chatSocket.onopen = function () { room.open = true; };
chatSocket.onmessage = function (e) {
    const data = JSON.parse(e.data);
    room.messages.push(data.message);
    document.querySelector('#chat-log').value += (data.message + '\n');
};
chatSocket.onclose = function (e) { room.closeCode = e.code; };
room.say = function (message) { chatSocket.send(JSON.stringify({ 'message': message })); };
</script></body></html>";

/// Serves [`ROOM_PAGE`] on every request, until the test ends.
async fn serve_room_page() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                // One GET without a body: read to the end of its headers.
                let mut request = Vec::new();
                let mut buffer = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(read) => request.extend_from_slice(&buffer[..read]),
                    }
                }
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{ROOM_PAGE}",
                    ROOM_PAGE.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    address
}

/// A `channels_rust.worker` process serving the tutorial project; killed on
/// drop.
struct Worker {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Worker {
    fn start(layer: &str, redis_url: &str) -> Self {
        let tutorial = common::workspace_root().join("python/tests/tutorial");
        let mut child = Command::new(common::python())
            .args(["-m", "channels_rust.worker", "mysite.asgi:application"])
            .args(["--channel", FORWARD, "--heartbeat", HEARTBEAT])
            .current_dir(&tutorial)
            .env("PYTHONPATH", &tutorial)
            .env("PYTHONUNBUFFERED", "1")
            .env("DJANGO_SETTINGS_MODULE", "mysite.settings")
            .env("CHAT_LAYER", layer)
            .env("CHAT_REDIS_URL", redis_url)
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
        let mut worker = Self {
            child,
            lines,
            seen: Vec::new(),
        };
        worker.wait_for("worker channel", PYTHON_START);
        worker
    }

    /// Blocks until a line containing `needle` (panics with the output
    /// after `timeout`).
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
                    "the worker printed no {needle:?} within {timeout:?} ({error}); its output:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// SIGKILL: no goodbye, so only the missed heartbeats tell the gateways.
    fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `server` counts `count` live workers.
async fn wait_workers(server: SocketAddr, count: f64) {
    let live = || async {
        let page = test_support::http::get(server, "/metrics").await;
        test_support::metric_value(&page.body, "channels_asgi_workers")
    };
    let counted = test_support::eventually(SHOW, || async { live().await == Some(count) }).await;
    assert!(
        counted,
        "{server} counts {:?} workers, not {count}",
        live().await
    );
}

/// A room page whose socket goes to `server`, once its socket is open.
async fn open_room(browser: &mut Browser, web: SocketAddr, server: SocketAddr) -> Page {
    let page = browser
        .open(&format!("http://{web}/chat/lobby/?server={server}"))
        .await;
    browser
        .wait_for(&page, "room.open", "the socket to open", SHOW)
        .await;
    page
}

/// JavaScript: how many times the page got `text`.
fn count(text: &str) -> String {
    format!("room.messages.filter((m) => m === {text:?}).length")
}

/// `speaker` says `text`; waits until every page in `room` got it.
async fn say(browser: &mut Browser, speaker: &Page, room: &[&Page], text: &str) {
    browser.eval(speaker, &format!("room.say({text:?})")).await;
    for page in room {
        browser
            .wait_for(
                page,
                &format!("{} >= 1", count(text)),
                &format!("{text:?}"),
                SHOW,
            )
            .await;
    }
}

/// Checks each page of `room` got exactly `texts`, each once, since it had
/// `since[i]` messages.
async fn assert_exactly(browser: &mut Browser, room: &[&Page], since: &[u64], texts: &[String]) {
    for (page, since) in room.iter().zip(since) {
        let got = browser
            .eval(
                page,
                &format!("JSON.stringify(room.messages.slice({since}))"),
            )
            .await;
        let mut got: Vec<String> = serde_json::from_str(got.as_str().unwrap()).unwrap();
        got.sort();
        let mut expected = texts.to_vec();
        expected.sort();
        assert_eq!(got, expected, "a page's messages");
    }
}

async fn message_count(browser: &mut Browser, page: &Page) -> u64 {
    browser
        .eval(page, "room.messages.length")
        .await
        .as_u64()
        .unwrap()
}

async fn the_tutorial_chat_works_in_browsers_on(server_layer: &str, django_layer: &str) {
    let redis = test_support::redis::start().await;
    let url = redis.url();
    let args = [
        "--bind",
        "127.0.0.1:0",
        "--layer",
        server_layer,
        "--redis-url",
        &url,
        "--forward-channel",
        FORWARD,
    ];
    let servers = [
        ServerProcess::start(common::server_bin(), &args, &[]),
        ServerProcess::start(common::server_bin(), &args, &[]),
    ];
    let (one, two) = (servers[0].addr(), servers[1].addr());
    let mut workers = {
        let (layer, url) = (django_layer.to_owned(), url.clone());
        tokio::task::spawn_blocking(move || {
            [Worker::start(&layer, &url), Worker::start(&layer, &url)]
        })
        .await
        .unwrap()
    };
    wait_workers(one, 2.0).await;
    wait_workers(two, 2.0).await;
    let web = serve_room_page().await;

    let mut browser = Browser::start().await;
    // One page of each server on each worker (the least busy is picked).
    let mut pages = Vec::new();
    for server in [one, two, one, two] {
        pages.push(open_room(&mut browser, web, server).await);
    }
    let room: Vec<&Page> = pages.iter().collect();

    // A page says something as soon as its socket is open: the consumer's
    // connect() ran, so the room hears it.
    let mut said = Vec::new();
    for (i, speaker) in room.iter().enumerate() {
        let text = format!("hello from page {i}");
        say(&mut browser, speaker, &room, &text).await;
        said.push(text);
    }
    // A marker last: a duplicate of anything before would have come by now.
    say(&mut browser, room[3], &room, "marker before the kill").await;
    said.push("marker before the kill".into());
    assert_exactly(&mut browser, &room, &[0; 4], &said).await;

    // SIGKILL a worker mid-chat: its two pages read 4005, the two others
    // (one per server) keep chatting.
    workers[0].kill();
    let deadline = tokio::time::Instant::now() + SHOW;
    let (closed, alive) = loop {
        let mut closed = Vec::new();
        let mut alive = Vec::new();
        for (i, page) in room.iter().enumerate() {
            match browser.eval(page, "room.closeCode").await.as_u64() {
                Some(code) => closed.push((i, code)),
                None => alive.push(i),
            }
        }
        if closed.len() >= 2 {
            break (closed, alive);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "pages closed after the kill: {closed:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        closed.iter().all(|&(_, code)| code == 4005),
        "closes: {closed:?}"
    );
    assert_eq!(alive.len(), 2, "closes: {closed:?}");
    // Pages 0 and 2 are on the first server, 1 and 3 on the second.
    assert_ne!(alive[0] % 2, alive[1] % 2, "survivors on one server");
    let survivors: Vec<&Page> = alive.iter().map(|&i| room[i]).collect();
    let mut since = Vec::new();
    for page in &survivors {
        since.push(message_count(&mut browser, page).await);
    }
    let mut after = Vec::new();
    for (i, speaker) in alive.iter().zip(&survivors) {
        let text = format!("still here, page {i}");
        say(&mut browser, speaker, &survivors, &text).await;
        after.push(text);
    }
    say(
        &mut browser,
        survivors[0],
        &survivors,
        "marker after the kill",
    )
    .await;
    after.push("marker after the kill".into());
    assert_exactly(&mut browser, &survivors, &since, &after).await;
    // The closed pages heard nothing more.
    for &(i, _) in &closed {
        let got = message_count(&mut browser, room[i]).await;
        assert_eq!(got, said.len() as u64, "page {i} after its close");
    }
    drop(browser);
    drop(workers);
    drop(servers);
    drop(redis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tutorial_chat_in_browsers_survives_a_killed_worker_on_the_core_layer() {
    the_tutorial_chat_works_in_browsers_on("redis", "core").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tutorial_chat_in_browsers_survives_a_killed_worker_on_the_pubsub_layer() {
    the_tutorial_chat_works_in_browsers_on("redis-pubsub", "pubsub").await;
}
