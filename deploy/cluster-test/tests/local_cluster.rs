//! The loopback cluster of `deploy/local-cluster.sh`, end to end: a private
//! redis-server, three `channels-server --layer redis` processes and nginx,
//! with real WebSocket clients speaking the gateway protocol through nginx
//! (docs/protocol.md: `subscribe` to a group, `publish` `chat.message`s into
//! it, receive them as `message` pushes). The spread-and-broadcast scenario
//! runs on the pub/sub layer too.
//!
//! Needs `redis-server`, `nginx` and `curl` (Debian packages of the same names).

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use cluster_test::{
    ClusterOptions, LocalCluster, WsClient, WsEvent, connections_open, http_get, http_post_json,
};
use serde_json::json;
use tokio::time::{sleep, timeout};

/// Bound of every single wait on a frame or a condition.
const STEP: Duration = Duration::from_secs(5);
/// Bound of a whole scenario (cluster start and stop come on top).
const SCENARIO: Duration = Duration::from_secs(60);
const TOKEN: &str = "cluster-test-token";
/// The close code a draining server sends: deploy/channels.toml sets
/// `shutdown_close_code = 1012` ("service restart": reconnect at once).
const SERVICE_RESTART: u16 = 1012;
/// HS256 secret of the clients' tokens in the gateway-mode test.
const JWT_SECRET: &str = "cluster-test-jwt-secret";

fn state_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("local-cluster-{name}"))
}

/// Runs `scenario` with a bound, and on failure prints every process's log.
async fn run_bounded<F, T>(cluster: &LocalCluster, scenario: F) -> anyhow::Result<T>
where
    F: Future<Output = anyhow::Result<T>>,
{
    let result = timeout(SCENARIO, scenario)
        .await
        .with_context(|| format!("scenario took over {SCENARIO:?}"))
        .and_then(|r| r);
    if result.is_err() {
        eprintln!("cluster logs:\n{}", cluster.log_tails());
    }
    result
}

/// Polls `check` every 50 ms until it returns `Ok(true)`, for at most `wait`.
async fn wait_until<C, Fut>(wait: Duration, what: &str, mut check: C) -> anyhow::Result<()>
where
    C: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + wait;
    loop {
        let last = check().await;
        if matches!(last, Ok(true)) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("{what}: not true within {wait:?} (last check: {last:?})");
        }
        sleep(Duration::from_millis(50)).await;
    }
}

/// The next push must be the chat message `text` (a `published` answer to
/// the client's own publish is skipped).
async fn expect_message(client: &mut WsClient, text: &str) -> anyhow::Result<()> {
    loop {
        match client.next_event(STEP).await? {
            WsEvent::Json(value) if value["type"] == "published" => {}
            WsEvent::Json(value)
                if value["type"] == "message" && value["data"]["message"] == text =>
            {
                return Ok(());
            }
            other => bail!(
                "client on {} expected {text:?}, got {other:?}",
                client.upstream()
            ),
        }
    }
}

/// Where each client landed: server index -> number of clients.
fn spread(cluster: &LocalCluster, clients: &[WsClient]) -> anyhow::Result<BTreeMap<u16, u64>> {
    let mut per_server = BTreeMap::new();
    for client in clients {
        let index = cluster.server_index(client.upstream()).with_context(|| {
            format!(
                "nginx sent a client to {}, not a cluster server",
                client.upstream()
            )
        })?;
        *per_server.entry(index).or_insert(0) += 1;
    }
    Ok(per_server)
}

/// Each server's own `channels_connections_open` gauge must match what nginx
/// reported for the clients (the gauge settles right after the handshake).
async fn expect_gauges(
    cluster: &LocalCluster,
    per_server: &BTreeMap<u16, u64>,
) -> anyhow::Result<()> {
    for index in 1..=cluster.servers() {
        let expected = per_server.get(&index).copied().unwrap_or(0);
        let addr = cluster.server_addr(index);
        wait_until(
            STEP,
            &format!("server {index} reports {expected} open connections"),
            || async move { Ok(connections_open(addr).await? == expected) },
        )
        .await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_spread_over_every_server_and_broadcasts_reach_them_all() -> anyhow::Result<()> {
    let options = ClusterOptions::new(3, state_dir("spread")).publish_token(TOKEN);
    let mut cluster = LocalCluster::start(options).await?;
    run_bounded(&cluster, spread_and_broadcast(&cluster)).await?;
    ensure!(
        cluster.is_healthy().await?,
        "`local-cluster.sh status` reports a process down"
    );

    // `rolling-restart` brings every server back on its port, and a client of
    // each one still reaches the others through Redis.
    run_bounded(&cluster, async {
        cluster.rolling_restart().await?;
        ensure!(
            cluster.is_healthy().await?,
            "a process is down after `rolling-restart`"
        );
        broadcast_from_every_server(&cluster).await
    })
    .await?;

    let ports: Vec<u16> = cluster
        .server_addrs()
        .into_iter()
        .chain([cluster.nginx_addr(), cluster.redis_addr()])
        .map(|a| a.port())
        .collect();
    cluster.stop()?;
    // `stop` leaves nothing behind: every port of the cluster is free again.
    for port in ports {
        ensure!(
            TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "port {port} still taken after `local-cluster.sh stop`"
        );
    }
    Ok(())
}

/// A client token: `sub`, joined `groups`, subscribable `allow` patterns,
/// valid for an hour.
fn token(sub: &str, groups: &[&str], allow: &[&str], secret: &str) -> anyhow::Result<String> {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs()
        + 3600;
    let claims = json!({"sub": sub, "exp": exp, "groups": groups, "allow": allow});
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes())?,
    )?)
}

/// The next frame must be a `message` push whose data has `type` `kind`.
async fn expect_push(client: &mut WsClient, kind: &str) -> anyhow::Result<serde_json::Value> {
    match client.next_event(STEP).await? {
        WsEvent::Json(value) if value["type"] == "message" && value["data"]["type"] == kind => {
            Ok(value)
        }
        other => bail!(
            "client on {} expected a `{kind}` push, got {other:?}",
            client.upstream()
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_jwt_secret_clients_need_tokens_and_backends_reach_users_on_every_server()
-> anyhow::Result<()> {
    let options = ClusterOptions::new(2, state_dir("tokens"))
        .publish_token(TOKEN)
        .jwt_secret(JWT_SECRET);
    let mut cluster = LocalCluster::start(options).await?;
    run_bounded(&cluster, tokens_and_users(&cluster)).await?;
    cluster.stop()?;
    Ok(())
}

async fn tokens_and_users(cluster: &LocalCluster) -> anyhow::Result<()> {
    let lb = cluster.nginx_addr();
    // Development mode is off: a token signed with another secret is refused.
    let forged = token("mallory", &[], &[], "another-secret")?;
    match WsClient::connect_with_token(lb, &forged).await? {
        Err(Some(4001)) => {}
        Err(code) => bail!("a forged token was closed with {code:?}, expected 4001"),
        Ok((_, connected)) => bail!("a forged token was accepted: {connected}"),
    }

    // Alice's connections, until nginx has put at least one on each server.
    let alice_token = token("alice", &["team.blue"], &[], JWT_SECRET)?;
    let mut alices = Vec::new();
    while spread(cluster, &alices)?.len() < usize::from(cluster.servers()) {
        ensure!(alices.len() < 8, "8 connections all landed on one server");
        let (client, connected) = WsClient::connect_with_token(lb, &alice_token)
            .await?
            .map_err(|code| anyhow::anyhow!("alice's token was refused with {code:?}"))?;
        ensure!(
            connected["user"] == "alice"
                && connected["groups"].as_array().is_some_and(
                    |g| g.contains(&json!("user.alice")) && g.contains(&json!("team.blue"))
                ),
            "connected frame: {connected}"
        );
        alices.push(client);
    }
    let bob_token = token("bob", &["team.blue"], &["chat.*"], JWT_SECRET)?;
    let (mut bob, _) = WsClient::connect_with_token(lb, &bob_token)
        .await?
        .map_err(|code| anyhow::anyhow!("bob's token was refused with {code:?}"))?;
    // The token's `allow` decides what a client may subscribe to itself.
    let refused = bob.subscribe("staff.only").await?;
    ensure!(
        refused["type"] == "error" && refused["code"] == "forbidden",
        "subscribing outside `allow`: {refused}"
    );
    let allowed = bob.subscribe("chat.lobby").await?;
    ensure!(
        allowed["type"] == "subscribed",
        "subscribing inside `allow`: {allowed}"
    );

    // A backend reaches every connection of one user, on every server...
    let note = json!({"type": "note", "text": "for alice"});
    let response = http_post_json(lb, "/api/users/alice/send", Some(TOKEN), &note).await?;
    ensure!(response.status == 202, "send to a user: {response:?}");
    for alice in &mut alices {
        let push = expect_push(alice, "note").await?;
        ensure!(push["data"]["text"] == "for alice", "{push}");
    }
    // ... and every member of a group the tokens joined. Bob's first push is
    // the group's: the note was for alice only.
    let news = json!({"type": "news", "n": 1});
    let response = http_post_json(lb, "/api/groups/team.blue", Some(TOKEN), &news).await?;
    ensure!(response.status == 202, "publish to a group: {response:?}");
    for client in alices.iter_mut().chain([&mut bob]) {
        let push = expect_push(client, "news").await?;
        ensure!(push["group"] == "team.blue", "{push}");
    }
    for client in alices.into_iter().chain([bob]) {
        client.close().await;
    }
    Ok(())
}

async fn spread_and_broadcast(cluster: &LocalCluster) -> anyhow::Result<()> {
    let lb = cluster.nginx_addr();
    let mut clients = Vec::new();
    for _ in 0..6 {
        clients.push(WsClient::join(lb, "lobby").await?);
    }
    let per_server = spread(cluster, &clients)?;
    ensure!(
        per_server.len() == usize::from(cluster.servers()),
        "6 clients through nginx landed on servers {per_server:?}, not on all {}",
        cluster.servers()
    );
    expect_gauges(cluster, &per_server).await?;

    // A chat message from a client of one server reaches every client, on
    // every server, through Redis, exactly once.
    clients[0].say("lobby", "hello over redis").await?;
    for client in &mut clients {
        expect_message(client, "hello over redis").await?;
    }

    // The publish API through nginx reaches the same group.
    let published = json!({ "type": "chat.message", "message": "from the publish API" });
    let response = http_post_json(lb, "/api/groups/lobby", Some(TOKEN), &published).await?;
    ensure!(
        response.status == 202,
        "publish answered {}: {}",
        response.status,
        response.body
    );
    for client in &mut clients {
        expect_message(client, "from the publish API").await?;
    }
    let response = http_post_json(lb, "/api/groups/lobby", Some("wrong-token"), &published).await?;
    ensure!(
        response.status == 401 && response.body.contains("\"error\""),
        "a wrong token through nginx answered {}: {}",
        response.status,
        response.body
    );

    // Nothing arrives twice.
    for client in &mut clients {
        if let Ok(event) = client.next_event(Duration::from_millis(300)).await {
            bail!("client on {} got an extra {event:?}", client.upstream());
        }
    }
    // The console page is served through the balancer.
    let page = http_get(lb, "/").await?;
    ensure!(
        page.status == 200 && page.body.contains("channels-server console"),
        "GET / through nginx answered {}",
        page.status
    );
    // /healthz answers through the balancer too.
    let health = http_get(lb, "/healthz").await?;
    ensure!(
        health.status == 200,
        "/healthz through nginx answered {}",
        health.status
    );
    for client in clients {
        client.close().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pubsub_layer_also_carries_broadcasts_between_servers() -> anyhow::Result<()> {
    let options = ClusterOptions::new(3, state_dir("pubsub"))
        .layer("redis-pubsub")
        .publish_token(TOKEN);
    let mut cluster = LocalCluster::start(options).await?;
    run_bounded(&cluster, spread_and_broadcast(&cluster)).await?;
    cluster.stop()
}

/// Connects through nginx until there is a client on every server (nginx
/// may set a just-restarted server aside for 1 s), then checks that a message
/// from each reaches all.
async fn broadcast_from_every_server(cluster: &LocalCluster) -> anyhow::Result<()> {
    let lb = cluster.nginx_addr();
    let mut clients: BTreeMap<u16, WsClient> = BTreeMap::new();
    let mut spare = Vec::new();
    let deadline = Instant::now() + STEP;
    while clients.len() < usize::from(cluster.servers()) {
        ensure!(
            Instant::now() < deadline,
            "after the rolling restart clients reached only servers {:?}",
            clients.keys()
        );
        let client = WsClient::join(lb, "after").await?;
        let index = cluster
            .server_index(client.upstream())
            .context("upstream")?;
        if let Entry::Vacant(slot) = clients.entry(index) {
            slot.insert(client);
        } else {
            spare.push(client);
            sleep(Duration::from_millis(100)).await;
        }
    }
    for from in 1..=cluster.servers() {
        let text = format!("from server {from}");
        clients
            .get_mut(&from)
            .context("a client per server")?
            .say("after", &text)
            .await?;
        for client in clients.values_mut().chain(spare.iter_mut()) {
            expect_message(client, &text).await?;
        }
    }
    Ok(())
}

/// What one receiving client saw during the rolling restart.
#[derive(Debug, Default)]
struct Trace {
    /// The server it was on first.
    server: u16,
    /// Every sequence number, in arrival order.
    seen: Vec<u64>,
    /// Close codes of the connections that ended (None: no close frame).
    closes: Vec<Option<u16>>,
    /// For each reconnect: the server it landed on and `seen.len()` then.
    reconnects: Vec<(u16, usize)>,
    /// The `end` marker arrived.
    ended: bool,
}

const RELAY: &str = "relay";
/// How long a closed client waits before reconnecting.
const RECONNECT_DELAY: Duration = Duration::from_millis(250);

/// Reads numbered messages until `end`; reconnects through nginx when closed.
async fn receive_until_end(
    cluster_lb: std::net::SocketAddr,
    servers: Vec<std::net::SocketAddr>,
    mut client: WsClient,
    reconnected: Arc<AtomicUsize>,
) -> anyhow::Result<Trace> {
    let index_of = |addr| {
        servers
            .iter()
            .position(|s| *s == addr)
            .map(|i| i as u16 + 1)
            .unwrap_or(0)
    };
    let mut trace = Trace {
        server: index_of(client.upstream()),
        ..Trace::default()
    };
    loop {
        match client.next_event(Duration::from_secs(10)).await? {
            WsEvent::Json(value) if value["type"] != "message" => {}
            WsEvent::Json(value) => {
                let text = value["data"]["message"].as_str().unwrap_or_default();
                if text == "end" {
                    trace.ended = true;
                    client.close().await;
                    return Ok(trace);
                }
                let number = text
                    .strip_prefix("seq:")
                    .and_then(|n| n.parse().ok())
                    .with_context(|| format!("unexpected message {value}"))?;
                trace.seen.push(number);
            }
            WsEvent::Closed(code) => {
                trace.closes.push(code);
                ensure!(
                    trace.closes.len() <= 3,
                    "closed over and over: {:?}",
                    trace.closes
                );
                // Back off before reconnecting, as browser clients do: an
                // immediate retry can reach the draining process in the few
                // milliseconds before it exits.
                sleep(RECONNECT_DELAY).await;
                let deadline = Instant::now() + Duration::from_secs(10);
                client = loop {
                    match WsClient::join(cluster_lb, RELAY).await {
                        Ok(client) => break client,
                        Err(error) if Instant::now() < deadline => {
                            eprintln!("reconnect through nginx failed, retrying: {error:#}");
                            sleep(Duration::from_millis(100)).await;
                        }
                        Err(error) => return Err(error.context("reconnecting through nginx")),
                    }
                };
                trace
                    .reconnects
                    .push((index_of(client.upstream()), trace.seen.len()));
                reconnected.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}

/// Sends `seq:0`, `seq:1`, ... one at a time, each after its own copy came
/// back through the group (so it also checks its own stream: every number,
/// once, in order), until `stop`; then sends `end`. Returns how many it sent.
async fn send_numbered(
    mut sender: WsClient,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
) -> anyhow::Result<u64> {
    let mut next = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let text = format!("seq:{next}");
        sender.say(RELAY, &text).await?;
        expect_message(&mut sender, &text)
            .await
            .context("the sender's own copy")?;
        next += 1;
        sent.store(next, Ordering::SeqCst);
        sleep(Duration::from_millis(5)).await;
    }
    sender.say(RELAY, "end").await?;
    expect_message(&mut sender, "end").await?;
    sender.close().await;
    Ok(next)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_closes_only_that_servers_sockets_and_loses_nothing_elsewhere()
-> anyhow::Result<()> {
    let mut cluster = LocalCluster::start(ClusterOptions::new(3, state_dir("restart"))).await?;
    run_bounded(&cluster, rolling_restart(&cluster)).await?;
    cluster.stop()
}

async fn rolling_restart(cluster: &LocalCluster) -> anyhow::Result<()> {
    let lb = cluster.nginx_addr();
    let mut clients = Vec::new();
    for _ in 0..9 {
        clients.push(WsClient::join(lb, RELAY).await?);
    }
    let per_server = spread(cluster, &clients)?;
    ensure!(
        per_server.len() == 3,
        "9 clients landed on servers {per_server:?}, not on all 3"
    );
    expect_gauges(cluster, &per_server).await?;

    // The sender sits on a server that stays up; the victim is another one.
    let sender = WsClient::join(lb, RELAY).await?;
    let sender_server = cluster
        .server_index(sender.upstream())
        .context("sender upstream")?;
    let victim = (1..=3)
        .find(|i| *i != sender_server)
        .context("a second server")?;
    let victim_clients = per_server[&victim];

    let reconnected = Arc::new(AtomicUsize::new(0));
    let mut receivers = Vec::new();
    for client in clients {
        receivers.push(tokio::spawn(receive_until_end(
            lb,
            cluster.server_addrs(),
            client,
            reconnected.clone(),
        )));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let sending = tokio::spawn(send_numbered(sender, stop.clone(), sent.clone()));

    let progress = |at_least: u64| {
        let sent = sent.clone();
        move || {
            let sent = sent.clone();
            async move { Ok(sent.load(Ordering::SeqCst) >= at_least) }
        }
    };
    wait_until(STEP, "20 messages sent before the restart", progress(20)).await?;

    // Rolling restart of one server while messages flow: SIGTERM, drain
    // (its clients get 1012), start again on the same port, /readyz.
    let before = sent.load(Ordering::SeqCst);
    let started = Instant::now();
    cluster.restart_server(victim).await?;
    let restart_took = started.elapsed();
    let during = sent.load(Ordering::SeqCst) - before;
    eprintln!("server {victim} restarted in {restart_took:?}; {during} messages sent meanwhile");

    let expected_reconnects = usize::try_from(victim_clients)?;
    wait_until(
        Duration::from_secs(15),
        "the victim's clients reconnected",
        || {
            let reconnected = reconnected.clone();
            async move { Ok(reconnected.load(Ordering::SeqCst) >= expected_reconnects) }
        },
    )
    .await?;
    let now = sent.load(Ordering::SeqCst);
    wait_until(
        STEP,
        "30 more messages after the reconnects",
        progress(now + 30),
    )
    .await?;
    stop.store(true, Ordering::SeqCst);

    let total = timeout(Duration::from_secs(20), sending)
        .await
        .context("sender did not finish")???;
    ensure!(
        during > 0,
        "no message was sent while server {victim} restarted"
    );
    let mut traces = Vec::new();
    for receiver in receivers {
        traces.push(
            timeout(Duration::from_secs(20), receiver)
                .await
                .context("receiver did not finish")???,
        );
    }

    let everything: Vec<u64> = (0..total).collect();
    for trace in &traces {
        ensure!(
            trace.ended,
            "a client of server {} never saw `end`: {trace:?}",
            trace.server
        );
        if trace.server == victim {
            // Closed with 1012, then back through nginx. A reconnect that
            // still reaches the draining process is closed by it with 1012
            // too; a socket dropped without a close frame (None) never passes.
            ensure!(
                !trace.closes.is_empty()
                    && trace.closes.iter().all(|c| *c == Some(SERVICE_RESTART)),
                "a client of the restarted server {victim} was closed with {:?}, expected 1012 only: {trace:?}",
                trace.closes
            );
            ensure!(
                trace.reconnects.len() == trace.closes.len(),
                "reconnects: {:?}",
                trace.reconnects
            );
            // Never a duplicate or a reordering; after the last reconnect, a
            // gapless run from its first message to the last one sent.
            ensure!(
                trace.seen.windows(2).all(|w| w[0] < w[1]),
                "out of order or duplicated: {:?}",
                trace.seen
            );
            let (_, at) = *trace.reconnects.last().context("a reconnect")?;
            let after = &trace.seen[at..];
            let first = *after
                .first()
                .context("nothing received after reconnecting")?;
            ensure!(
                after == (first..total).collect::<Vec<_>>().as_slice(),
                "after reconnecting a client missed messages: {after:?} (sent up to {})",
                total - 1
            );
        } else {
            ensure!(
                trace.closes.is_empty(),
                "a client of server {} (not restarted) was closed: {:?}",
                trace.server,
                trace.closes
            );
            ensure!(
                trace.seen == everything,
                "a client of server {} missed, repeated or reordered messages: saw {} of {total}; first differences at {:?}",
                trace.server,
                trace.seen.len(),
                trace.seen.iter().zip(&everything).position(|(a, b)| a != b)
            );
        }
    }

    // The restarted server is back in nginx's rotation (after the refused
    // connections of its restart, nginx sets it aside for fail_timeout = 1 s)
    // and serves the group.
    let victim_addr = cluster.server_addr(victim);
    let mut extra = Vec::new();
    let deadline = Instant::now() + STEP;
    let mut back = loop {
        let client = WsClient::join(lb, RELAY).await?;
        if client.upstream() == victim_addr {
            break client;
        }
        extra.push(client);
        ensure!(
            Instant::now() < deadline,
            "no new client landed on the restarted server {victim} within {STEP:?}"
        );
        sleep(Duration::from_millis(100)).await;
    };
    back.say(RELAY, "restarted server joins in").await?;
    expect_message(&mut back, "restarted server joins in").await?;
    for client in &mut extra {
        expect_message(client, "restarted server joins in").await?;
    }
    Ok(())
}
