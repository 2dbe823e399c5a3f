//! Group histories through a rolling restart (docs/protocol.md, "History
//! and recovery"), on the loopback cluster of `deploy/local-cluster.sh`:
//! three `channels-server --layer redis` processes with `--history-size`
//! and `--history-ttl` behind nginx, 200 WebSocket clients subscribed
//! through nginx to one group, and about 50 messages a second from three
//! sources for the whole run: a Rust `RedisChannelLayer::group_send` on the
//! cluster's Redis, the HTTP publish API through nginx, and Python
//! `channels_redis` `group_send` (the interop venv's interpreter). Every
//! server is restarted in turn; a client whose connection ends reconnects
//! through nginx and subscribes again with `recover` from the last offset it
//! saw (and so does one told `lost`/`overflow`). At the end every client has
//! every message a publisher reported sent exactly once, with consecutive
//! offsets, in one order shared by all, every recovery answered
//! `recovered: true`, and the servers' `/metrics` count them.
//!
//! Needs `redis-server`, `nginx`, `curl` (Debian packages of the same names)
//! and the interop venv (`scripts/install-deps.sh`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use channels_core::{ChannelLayer, Message};
use channels_redis::{RedisChannelLayer, RedisConfig};
use cluster_test::{
    ClusterOptions, LocalCluster, WsClient, WsEvent, http_post_json, repo_root, server_metric,
};
use futures_util::future::try_join_all;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{MissedTickBehavior, interval, timeout};

/// The group every client follows.
const GROUP: &str = "rolling.news";
const CLIENTS: usize = 200;
/// Each source sends one message per period: three sources, ~50 a second.
const PERIOD: Duration = Duration::from_millis(60);
/// What every group keeps: far more than the run sends, for far longer.
const HISTORY_SIZE: usize = 10_000;
const HISTORY_TTL_SECS: u64 = 600;
const TOKEN: &str = "cluster-test-token";
/// The sources, as they name themselves in `data.source`.
const SOURCES: [&str; 3] = ["rust", "http", "python"];
/// Messages each source sends before the first restart, between restarts
/// and after the last one (at one per `PERIOD`, about 2.5 s).
const MESSAGES_BETWEEN_RESTARTS: u64 = 40;
/// The series that counts successful recoveries.
const RECOVERED: &str = r#"channels_history_recoveries_total{result="recovered"}"#;
/// Close codes of a restart: the drain's `shutdown_close_code` (1012 in
/// deploy/channels.toml), 1001 (going away), or none (the socket ended).
const RESTART_CLOSES: [Option<u16>; 3] = [Some(1012), Some(1001), None];

/// A client hears a message every ~20 ms while the publishers run; this
/// much silence is a hang.
const FRAME_WAIT: Duration = Duration::from_secs(20);
/// Bound of a protocol answer (`connected`, `subscribed`).
const ANSWER_WAIT: Duration = Duration::from_secs(15);
/// Bound of one client's way back after its connection ended.
const RECONNECT_WAIT: Duration = Duration::from_secs(40);
/// Pace of a client's reconnect attempts (the first one is immediate).
const RETRY_PACE: Duration = Duration::from_millis(100);
/// Bound of every condition the scenario waits for.
const STEP: Duration = Duration::from_secs(40);
/// Bound of the whole scenario; it takes ~30 s on an idle machine.
const SCENARIO: Duration = Duration::from_secs(180);

fn state_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("local-cluster-history")
}

/// The interop venv's python: `$CHANNELS_INTEROP_PYTHON` (set by
/// `scripts/test.sh`), else `target/interop-venv/bin/python`.
fn python() -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("CHANNELS_INTEROP_PYTHON").map_or_else(
        || repo_root().join("target/interop-venv/bin/python"),
        PathBuf::from,
    );
    ensure!(
        path.exists(),
        "the Python interop venv is missing ({}): run `bash scripts/install-deps.sh`",
        path.display()
    );
    Ok(path)
}

/// Counters the scenario watches while clients and publishers run.
#[derive(Debug)]
struct Progress {
    started: Instant,
    /// Messages each source (by its index in [`SOURCES`]) has confirmed.
    confirmed: [AtomicU64; 3],
    /// Clients between the end of a connection (or a `lost` notice) and
    /// their recovered subscribe.
    unsettled: AtomicUsize,
    /// Subscribes with `recover` answered `recovered: true`.
    recovered: AtomicUsize,
}

impl Progress {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            confirmed: Default::default(),
            unsettled: AtomicUsize::new(0),
            recovered: AtomicUsize::new(0),
        }
    }

    /// The fewest messages any source has confirmed.
    fn least_confirmed(&self) -> u64 {
        self.confirmed
            .iter()
            .map(|c| c.load(Ordering::SeqCst))
            .min()
            .unwrap_or(0)
    }
}

/// What a publisher sent: sequence numbers confirmed (the layer call
/// returned Ok, the API answered 202, Python printed `sent`), and those whose
/// send failed in a way that may still have delivered them.
#[derive(Debug, Default)]
struct Sent {
    confirmed: Vec<u64>,
    uncertain: Vec<u64>,
}

/// A message's data: `{"type": "rolling.item", "source", "seq", "last"}`;
/// `last` marks each source's final message.
fn item(source: &str, seq: u64, last: bool) -> Value {
    json!({"type": "rolling.item", "source": source, "seq": seq, "last": last})
}

/// Publisher 1: a Rust `RedisChannelLayer` `group_send` on the cluster's
/// Redis (default prefix `asgi`, as the servers use), once per `PERIOD`
/// until `stop`, then the marker.
async fn publish_with_layer(
    redis: SocketAddr,
    mut stop: watch::Receiver<bool>,
    progress: Arc<Progress>,
) -> anyhow::Result<Sent> {
    let layer = RedisChannelLayer::new(RedisConfig::new().host(format!("redis://{redis}/0")))?;
    let mut sent = Sent::default();
    let mut tick = interval(PERIOD);
    tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
    for seq in 0.. {
        tick.tick().await;
        let last = *stop.borrow_and_update();
        let message = Message::new("rolling.item")
            .with("source", SOURCES[0])
            .with("seq", seq)
            .with("last", last);
        match layer.group_send(GROUP, message).await {
            Ok(()) => {
                sent.confirmed.push(seq);
                progress.confirmed[0].fetch_add(1, Ordering::SeqCst);
                if last {
                    break;
                }
            }
            Err(error) => {
                eprintln!("rust group_send {seq} failed: {error}");
                sent.uncertain.push(seq);
                ensure!(sent.uncertain.len() < 100, "rust group_send keeps failing");
            }
        }
    }
    // Best effort: the layer holds only connections.
    let _ = layer.close().await;
    Ok(sent)
}

/// Publisher 2: `POST /api/groups/{GROUP}` through nginx. A 202 is a
/// message that must arrive; anything else (502/503 while a server
/// restarts) is tried again with the next number.
async fn publish_over_http(
    lb: SocketAddr,
    mut stop: watch::Receiver<bool>,
    progress: Arc<Progress>,
) -> anyhow::Result<Sent> {
    let path = format!("/api/groups/{GROUP}");
    let mut sent = Sent::default();
    let mut tick = interval(PERIOD);
    tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
    for seq in 0.. {
        tick.tick().await;
        let last = *stop.borrow_and_update();
        let body = item(SOURCES[1], seq, last);
        match http_post_json(lb, &path, Some(TOKEN), &body).await {
            Ok(response) if response.status == 202 => {
                sent.confirmed.push(seq);
                progress.confirmed[1].fetch_add(1, Ordering::SeqCst);
                if last {
                    break;
                }
            }
            outcome => {
                let what = match outcome {
                    Ok(response) => format!("{} {}", response.status, response.body),
                    Err(error) => format!("{error:#}"),
                };
                eprintln!("publish {seq} through nginx not accepted: {what}");
                sent.uncertain.push(seq);
                ensure!(sent.uncertain.len() < 100, "the publish API keeps failing");
            }
        }
    }
    Ok(sent)
}

/// Publisher 3's program: channels_redis `group_send` once per period,
/// printing `sent N` for each that returned (`failed N ...` otherwise),
/// until its stdin closes; then the marker.
const PYTHON_PUBLISHER: &str = r#"
import asyncio, sys, threading
from channels_redis.core import RedisChannelLayer

stop = threading.Event()

def wait_for_eof():
    sys.stdin.read()
    stop.set()

threading.Thread(target=wait_for_eof, daemon=True).start()

async def main():
    url, group, period = sys.argv[1], sys.argv[2], float(sys.argv[3])
    layer = RedisChannelLayer(hosts=[url])
    loop = asyncio.get_running_loop()
    next_at = loop.time()
    seq, failures = 0, 0
    while True:
        last = stop.is_set()
        message = {"type": "rolling.item", "source": "python", "seq": seq, "last": last}
        try:
            await layer.group_send(group, message)
        except Exception as error:
            print(f"failed {seq} {error!r}", flush=True)
            failures += 1
            if failures >= 100:
                sys.exit(1)
        else:
            print(f"sent {seq}", flush=True)
            if last:
                return
        seq += 1
        next_at += period
        await asyncio.sleep(max(0.0, next_at - loop.time()))

asyncio.run(main())
"#;

/// Publisher 3: the Python program above, stopped by closing its stdin; its
/// `sent` lines are what must arrive.
async fn publish_from_python(
    redis: SocketAddr,
    mut stop: watch::Receiver<bool>,
    progress: Arc<Progress>,
) -> anyhow::Result<Sent> {
    let mut child = tokio::process::Command::new(python()?)
        .arg("-c")
        .arg(PYTHON_PUBLISHER)
        .arg(format!("redis://{redis}/0"))
        .arg(GROUP)
        .arg(PERIOD.as_secs_f64().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start the Python publisher")?;
    let stdin = child.stdin.take().context("python stdin")?;
    let mut lines = BufReader::new(child.stdout.take().context("python stdout")?).lines();
    let mut sent = Sent::default();
    let mut stdin = Some(stdin);
    loop {
        tokio::select! {
            line = lines.next_line() => {
                let Some(line) = line? else { break };
                let (verb, rest) = line.split_once(' ').unwrap_or((line.as_str(), ""));
                let seq = rest.split(' ').next().and_then(|n| n.parse().ok());
                match (verb, seq) {
                    ("sent", Some(seq)) => {
                        sent.confirmed.push(seq);
                        progress.confirmed[2].fetch_add(1, Ordering::SeqCst);
                    }
                    ("failed", Some(seq)) => {
                        eprintln!("python {line}");
                        sent.uncertain.push(seq);
                    }
                    _ => bail!("unexpected line from the Python publisher: {line}"),
                }
            }
            // EOF on its stdin tells it to send the marker and exit.
            _ = stop.wait_for(|stop| *stop), if stdin.is_some() => drop(stdin.take()),
        }
    }
    let status = timeout(ANSWER_WAIT, child.wait())
        .await
        .context("the Python publisher did not exit")??;
    ensure!(status.success(), "the Python publisher failed: {status}");
    Ok(sent)
}

/// One kept message a client received: its offset and `(source, seq)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    offset: u64,
    source: usize,
    seq: u64,
}

/// What one client saw.
#[derive(Debug, Default)]
struct Seen {
    client: usize,
    /// The offset of its first `subscribed` answer.
    start: u64,
    /// Every kept message, recovered publications and live pushes, in
    /// arrival order.
    entries: Vec<Entry>,
    /// How each of its connections ended (None: without a close frame).
    closes: Vec<Option<u16>>,
    /// Connections after the first, each subscribed with `recover`.
    reconnects: usize,
    /// Subscribes with `recover` after a `lost` notice (overflow).
    overflows: usize,
    /// Messages that came as `publications` of a recovered subscribe.
    recovered_messages: usize,
    /// Handshakes, `connect`s and subscribes that failed and were retried.
    retries: usize,
    /// The server (1-based) of each connection, in order.
    servers: Vec<u16>,
    /// Anything out of protocol, with the time since the start.
    problems: Vec<String>,
}

/// One client: follows the group, reconnecting and recovering as needed,
/// until it has every source's marker.
struct Follower {
    lb: SocketAddr,
    servers: Vec<SocketAddr>,
    epoch: String,
    progress: Arc<Progress>,
    seen: Seen,
    markers: BTreeSet<usize>,
    next_id: u64,
}

impl Follower {
    async fn run(mut self, mut conn: WsClient) -> anyhow::Result<Seen> {
        while self.markers.len() < SOURCES.len() {
            let event = conn.next_event(FRAME_WAIT).await.with_context(|| {
                format!(
                    "client {} on {} (last offset {}) heard nothing",
                    self.seen.client,
                    conn.upstream(),
                    self.last_offset()
                )
            })?;
            match event {
                WsEvent::Json(frame) if frame["type"] == "message" => {
                    self.take_push(&frame, conn.upstream())?;
                }
                WsEvent::Json(frame)
                    if frame["type"] == "lost" && frame["reason"] == "overflow" =>
                {
                    // Its mailbox was full: recover from the last offset seen.
                    self.seen.overflows += 1;
                    self.progress.unsettled.fetch_add(1, Ordering::SeqCst);
                    if !self.recover(&mut conn).await? {
                        conn = self.reconnect().await?;
                    }
                    self.progress.unsettled.fetch_sub(1, Ordering::SeqCst);
                }
                WsEvent::Json(frame) => {
                    let problem = format!("unexpected frame on {}: {frame}", conn.upstream());
                    self.problem(problem);
                }
                WsEvent::Closed(code) => {
                    self.seen.closes.push(code);
                    self.progress.unsettled.fetch_add(1, Ordering::SeqCst);
                    conn = self.reconnect().await?;
                    self.progress.unsettled.fetch_sub(1, Ordering::SeqCst);
                }
            }
        }
        conn.close().await;
        Ok(self.seen)
    }

    fn last_offset(&self) -> u64 {
        self.seen
            .entries
            .last()
            .map_or(self.seen.start, |e| e.offset)
    }

    fn problem(&mut self, what: String) {
        let at = self.progress.started.elapsed().as_secs_f64();
        self.seen.problems.push(format!("at {at:.3}s: {what}"));
    }

    fn server_of(&self, addr: SocketAddr) -> u16 {
        self.servers
            .iter()
            .position(|s| *s == addr)
            .and_then(|i| u16::try_from(i + 1).ok())
            .unwrap_or(0)
    }

    /// Takes in a kept message (`data` of a push or a publication).
    fn take(&mut self, offset: u64, data: &Value, upstream: SocketAddr, how: &str) {
        let last = self.last_offset();
        if offset != last + 1 {
            let problem = format!(
                "{how} offset {offset} after {last} on server {}",
                self.server_of(upstream)
            );
            self.problem(problem);
        }
        let source = SOURCES.iter().position(|s| data["source"] == *s);
        let (Some(source), Some(seq)) = (source, data["seq"].as_u64()) else {
            self.problem(format!("{how} with unexpected data {data}"));
            return;
        };
        if data["last"] == true {
            self.markers.insert(source);
        }
        self.seen.entries.push(Entry {
            offset,
            source,
            seq,
        });
    }

    /// A live `message` push.
    fn take_push(&mut self, frame: &Value, upstream: SocketAddr) -> anyhow::Result<()> {
        if frame["group"] != GROUP || frame["epoch"] != self.epoch.as_str() {
            self.problem(format!("push of another group or epoch: {frame}"));
        }
        let offset = frame["offset"]
            .as_u64()
            .with_context(|| format!("a push without an offset: {frame}"))?;
        self.take(offset, &frame["data"], upstream, "push");
        Ok(())
    }

    /// Sends `connect` and waits for `connected`; `false` when the
    /// connection ended (or answered something else) instead.
    async fn connect(&mut self, conn: &mut WsClient) -> anyhow::Result<bool> {
        if conn.send_json(&json!({"type": "connect"})).await.is_err() {
            return Ok(false);
        }
        match conn.next_event(ANSWER_WAIT).await? {
            WsEvent::Json(frame) if frame["type"] == "connected" => Ok(true),
            WsEvent::Json(frame) => {
                self.problem(format!("answer to connect: {frame}"));
                Ok(false)
            }
            WsEvent::Closed(code) => {
                self.seen.closes.push(code);
                Ok(false)
            }
        }
    }

    /// Subscribes with `recover` from the last offset seen and takes in the
    /// answer's publications; `false` when the connection ended (or the
    /// server answered an error) first. A refused recovery fails the test.
    async fn recover(&mut self, conn: &mut WsClient) -> anyhow::Result<bool> {
        let id = self.next_id;
        self.next_id += 1;
        let from = self.last_offset();
        let request = json!({
            "type": "subscribe", "id": id, "group": GROUP,
            "recover": {"offset": from, "epoch": self.epoch},
        });
        if conn.send_json(&request).await.is_err() {
            return Ok(false);
        }
        let upstream = conn.upstream();
        loop {
            let frame = match conn.next_event(ANSWER_WAIT).await.with_context(|| {
                format!(
                    "client {}: no answer to subscribe from {from}",
                    self.seen.client
                )
            })? {
                WsEvent::Json(frame) => frame,
                WsEvent::Closed(code) => {
                    self.seen.closes.push(code);
                    return Ok(false);
                }
            };
            if frame["id"] != id {
                let problem = format!("before the answer to subscribe {id}: {frame}");
                self.problem(problem);
                if frame["type"] == "message" {
                    self.take_push(&frame, upstream)?;
                }
                continue;
            }
            if frame["type"] != "subscribed" {
                eprintln!(
                    "client {}: subscribe on {upstream} answered {frame}; retrying",
                    self.seen.client
                );
                return Ok(false);
            }
            ensure!(
                frame["recovered"] == true && frame["epoch"] == self.epoch.as_str(),
                "client {} recovering from offset {from} (epoch {}) on server {} got {frame}",
                self.seen.client,
                self.epoch,
                self.server_of(upstream)
            );
            let publications = frame["publications"]
                .as_array()
                .with_context(|| format!("recovered without publications: {frame}"))?;
            for publication in publications {
                let offset = publication["offset"]
                    .as_u64()
                    .with_context(|| format!("a publication without an offset: {frame}"))?;
                self.take(offset, &publication["data"], upstream, "publication");
                self.seen.recovered_messages += 1;
            }
            if frame["offset"] != self.last_offset() {
                let problem = format!(
                    "recovered from {from} up to {}, but `subscribed` says offset {}",
                    self.last_offset(),
                    frame["offset"]
                );
                self.problem(problem);
            }
            self.progress.recovered.fetch_add(1, Ordering::SeqCst);
            return Ok(true);
        }
    }

    /// Back through nginx after a connection ended: connect, `connect`,
    /// subscribe with `recover`, as many times as it takes.
    async fn reconnect(&mut self) -> anyhow::Result<WsClient> {
        let deadline = Instant::now() + RECONNECT_WAIT;
        let mut pace = interval(RETRY_PACE);
        loop {
            ensure!(
                Instant::now() < deadline,
                "client {} could not reconnect within {RECONNECT_WAIT:?} (servers {:?}, closes {:?})",
                self.seen.client,
                self.seen.servers,
                self.seen.closes
            );
            pace.tick().await;
            let mut conn = match WsClient::connect(self.lb, "/ws").await {
                Ok(conn) => conn,
                Err(error) => {
                    eprintln!("client {}: {error:#}; retrying", self.seen.client);
                    self.seen.retries += 1;
                    continue;
                }
            };
            let server = self.server_of(conn.upstream());
            self.seen.servers.push(server);
            if self.connect(&mut conn).await? && self.recover(&mut conn).await? {
                self.seen.reconnects += 1;
                return Ok(conn);
            }
            self.seen.retries += 1;
        }
    }
}

/// Opens a client through nginx and subscribes it without a position.
async fn open(lb: SocketAddr) -> anyhow::Result<(WsClient, Value)> {
    let mut conn = WsClient::connect(lb, "/ws").await?;
    conn.send_json(&json!({"type": "connect"})).await?;
    match conn.next_event(ANSWER_WAIT).await? {
        WsEvent::Json(frame) if frame["type"] == "connected" => {}
        other => bail!("{} answered {other:?} to connect", conn.upstream()),
    }
    conn.send_json(&json!({"type": "subscribe", "id": 1, "group": GROUP}))
        .await?;
    match conn.next_event(ANSWER_WAIT).await? {
        WsEvent::Json(frame) if frame["type"] == "subscribed" && frame["id"] == 1 => {
            Ok((conn, frame))
        }
        other => bail!("{} answered {other:?} to subscribe", conn.upstream()),
    }
}

/// The clients and publishers while they run.
struct Running {
    progress: Arc<Progress>,
    clients: JoinSet<anyhow::Result<Seen>>,
    publishers: Vec<JoinHandle<anyhow::Result<Sent>>>,
}

impl Running {
    /// Polls every 50 ms, for at most [`STEP`], until every source has
    /// confirmed `more` messages since the call and no client is between a
    /// closed connection and its recovery. A client or publisher that ends
    /// before the markers fails it with its own error.
    async fn settle(&mut self, more: u64) -> anyhow::Result<()> {
        let goal = self.progress.least_confirmed() + more;
        let deadline = Instant::now() + STEP;
        let mut poll = interval(Duration::from_millis(50));
        loop {
            let unsettled = self.progress.unsettled.load(Ordering::SeqCst);
            if self.progress.least_confirmed() >= goal && unsettled == 0 {
                return Ok(());
            }
            if let Some(ended) = self.clients.try_join_next() {
                let seen = ended??;
                bail!(
                    "client {} ended before the markers (servers {:?}, closes {:?})",
                    seen.client,
                    seen.servers,
                    seen.closes
                );
            }
            if let Some(at) = self.publishers.iter().position(JoinHandle::is_finished) {
                let sent = self.publishers.swap_remove(at).await??;
                bail!("a publisher ended before it was stopped: {sent:?}");
            }
            ensure!(
                Instant::now() < deadline,
                "not within {STEP:?}: {} messages from every source ({} from the slowest), \
                 every client back ({unsettled} are not)",
                goal,
                self.progress.least_confirmed()
            );
            poll.tick().await;
        }
    }
}

/// The servers' `channels_history_recoveries_total{result="recovered"}`,
/// which a restart resets: read before each restart and at the end.
#[derive(Debug, Default)]
struct RecoveryCount {
    total: f64,
}

impl RecoveryCount {
    async fn add(&mut self, cluster: &LocalCluster, index: u16) -> anyhow::Result<()> {
        self.total += server_metric(cluster.server_addr(index), RECOVERED).await?;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_loses_and_repeats_nothing_for_recovering_clients() -> anyhow::Result<()>
{
    let options = ClusterOptions::new(3, state_dir())
        .publish_token(TOKEN)
        .history(HISTORY_SIZE, HISTORY_TTL_SECS);
    let mut cluster = LocalCluster::start(options).await?;
    let result = timeout(SCENARIO, rolling_restart_with_history(&cluster))
        .await
        .with_context(|| format!("scenario took over {SCENARIO:?}"))
        .and_then(|r| r);
    if result.is_err() {
        eprintln!("cluster logs:\n{}", cluster.log_tails());
    }
    result?;
    cluster.stop()
}

async fn rolling_restart_with_history(cluster: &LocalCluster) -> anyhow::Result<()> {
    let lb = cluster.nginx_addr();
    let progress = Arc::new(Progress::new());

    // 200 clients through nginx, subscribed without a position, spread
    // over every server.
    let mut opened = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS / 20 {
        opened.extend(try_join_all((0..20).map(|_| open(lb))).await?);
    }
    let (_, first) = &opened[0];
    let epoch = first["epoch"]
        .as_str()
        .with_context(|| format!("no epoch: {first}"))?
        .to_owned();
    let start = first["offset"].as_u64().context("no offset")?;
    let mut per_server = BTreeMap::new();
    for (conn, answer) in &opened {
        ensure!(
            answer["recovered"] == false
                && answer["reason"] == "no_position"
                && answer["epoch"] == epoch.as_str()
                && answer["offset"] == start,
            "a first subscribe answered {answer}"
        );
        *per_server.entry(conn.upstream()).or_insert(0) += 1;
    }
    ensure!(
        per_server.len() == usize::from(cluster.servers()),
        "{CLIENTS} clients landed on {per_server:?}, not on every server"
    );

    let mut clients = JoinSet::new();
    for (client, (conn, _)) in opened.into_iter().enumerate() {
        let mut follower = Follower {
            lb,
            servers: cluster.server_addrs(),
            epoch: epoch.clone(),
            progress: progress.clone(),
            seen: Seen {
                client,
                start,
                ..Seen::default()
            },
            markers: BTreeSet::new(),
            next_id: 2,
        };
        let server = follower.server_of(conn.upstream());
        follower.seen.servers.push(server);
        clients.spawn(follower.run(conn));
    }

    let (stop, stopped) = watch::channel(false);
    let redis = cluster.redis_addr();
    let publishers = vec![
        tokio::spawn(publish_with_layer(redis, stopped.clone(), progress.clone())),
        tokio::spawn(publish_over_http(lb, stopped.clone(), progress.clone())),
        tokio::spawn(publish_from_python(redis, stopped, progress.clone())),
    ];
    let mut running = Running {
        progress: progress.clone(),
        clients,
        publishers,
    };

    // Every server in turn, once the clients of the last restart are back
    // and every source has sent more. The counters of a server are read
    // right before its restart resets them: no client is recovering then,
    // and a draining server accepts no new connection.
    let mut counted = RecoveryCount::default();
    let mut restarts = Vec::new();
    for index in 1..=cluster.servers() {
        running.settle(MESSAGES_BETWEEN_RESTARTS).await?;
        counted.add(cluster, index).await?;
        let began = progress.started.elapsed();
        cluster.restart_server(index).await?;
        restarts.push((index, began, progress.started.elapsed()));
    }
    running.settle(MESSAGES_BETWEEN_RESTARTS).await?;
    stop.send(true)?;
    let mut sent = Vec::new();
    for publisher in running.publishers {
        sent.push(
            timeout(STEP, publisher)
                .await
                .context("a publisher did not stop")???,
        );
    }

    let mut seen = Vec::with_capacity(CLIENTS);
    while let Some(client) = timeout(STEP, running.clients.join_next())
        .await
        .context("clients still waiting for the markers")?
    {
        seen.push(client??);
    }
    seen.sort_by_key(|s| s.client);
    for index in 1..=cluster.servers() {
        counted.add(cluster, index).await?;
    }
    let arrived_uncertain = check(&seen, &sent, &counted, &progress)?;

    let reconnects: usize = seen.iter().map(|s| s.reconnects).sum();
    eprintln!(
        "{CLIENTS} clients, {} messages each; sent {:?} (uncertain {:?}, {arrived_uncertain} of them arrived); restarts (server, from, to) {restarts:?}; \
         {reconnects} reconnects, {} overflow re-subscribes, {} retries, {} recovered publications; \
         clients counted {} recoveries, the servers {}; {:.1}s",
        seen[0].entries.len(),
        sent.iter().map(|s| s.confirmed.len()).collect::<Vec<_>>(),
        sent.iter().map(|s| s.uncertain.len()).collect::<Vec<_>>(),
        seen.iter().map(|s| s.overflows).sum::<usize>(),
        seen.iter().map(|s| s.retries).sum::<usize>(),
        seen.iter().map(|s| s.recovered_messages).sum::<usize>(),
        progress.recovered.load(Ordering::SeqCst),
        counted.total,
        progress.started.elapsed().as_secs_f64(),
    );
    Ok(())
}

/// The issue's assertions over what every client saw. Returns how many
/// sends that failed arrived anyway (allowed: the failure may have come
/// after the layer took the message).
fn check(
    seen: &[Seen],
    sent: &[Sent],
    counted: &RecoveryCount,
    progress: &Progress,
) -> anyhow::Result<usize> {
    ensure!(seen.len() == CLIENTS, "{} clients finished", seen.len());
    for client in seen {
        ensure!(
            client.problems.is_empty(),
            "client {} (servers {:?}, closes {:?}): {:#?}",
            client.client,
            client.servers,
            client.closes,
            client.problems
        );
        // Consecutive offsets from the first subscribe on: no gap, no
        // duplicate, recovered publications and live pushes alike.
        if let Some(at) = client
            .entries
            .iter()
            .zip(client.start + 1..)
            .position(|(entry, expected)| entry.offset != expected)
        {
            let around = &client.entries[at.saturating_sub(3)..(at + 3).min(client.entries.len())];
            bail!(
                "client {} saw offsets out of line at index {at}: {around:?}",
                client.client
            );
        }
        // Every connection a restart ended came back recovered.
        ensure!(
            client.reconnects >= 1,
            "client {} was never reconnected: every server restarted, so its own did",
            client.client
        );
        ensure!(
            client.closes.iter().all(|c| RESTART_CLOSES.contains(c)),
            "client {} was closed with {:?}",
            client.client,
            client.closes
        );
    }
    // One order for all: what the first client saw, offset by offset.
    let reference = &seen[0].entries;
    for client in &seen[1..] {
        if client.entries != *reference {
            let at = client
                .entries
                .iter()
                .zip(reference)
                .position(|(a, b)| a != b)
                .unwrap_or(reference.len().min(client.entries.len()));
            bail!(
                "client {} differs from client 0 at index {at}: {:?} vs {:?} ({} vs {} messages)",
                client.client,
                client.entries.get(at),
                reference.get(at),
                client.entries.len(),
                reference.len()
            );
        }
    }
    // Every confirmed message exactly once; nothing else but a send that
    // failed in a way that may have delivered it.
    let mut arrived_uncertain = 0;
    for (source, sent) in sent.iter().enumerate() {
        let mut got: Vec<u64> = reference
            .iter()
            .filter(|e| e.source == source)
            .map(|e| e.seq)
            .collect();
        got.sort_unstable();
        let unique: BTreeSet<u64> = got.iter().copied().collect();
        ensure!(
            unique.len() == got.len(),
            "{} messages of {} arrived twice",
            got.len() - unique.len(),
            SOURCES[source]
        );
        let confirmed: BTreeSet<u64> = sent.confirmed.iter().copied().collect();
        let missing: Vec<_> = confirmed.difference(&unique).collect();
        ensure!(
            missing.is_empty(),
            "{} messages {missing:?} were confirmed sent but never arrived",
            SOURCES[source]
        );
        let (uncertain, extra): (Vec<&u64>, Vec<&u64>) = unique
            .difference(&confirmed)
            .partition(|seq| sent.uncertain.contains(seq));
        arrived_uncertain += uncertain.len();
        ensure!(
            extra.is_empty(),
            "{} messages {extra:?} arrived but were never sent",
            SOURCES[source]
        );
    }
    let reconnects: usize = seen.iter().map(|s| s.reconnects).sum();
    let recovered = progress.recovered.load(Ordering::SeqCst);
    ensure!(
        recovered >= reconnects,
        "{reconnects} reconnects but {recovered} recovered subscribes"
    );
    #[allow(clippy::cast_precision_loss)] // a few hundred recoveries
    let clients_recovered = recovered as f64;
    ensure!(
        counted.total >= clients_recovered,
        "the servers' /metrics count {} recoveries, the clients got {recovered} ({reconnects} reconnects)",
        counted.total
    );
    Ok(arrived_uncertain)
}
