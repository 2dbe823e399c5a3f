//! The JavaScript client (`clients/js/client.js`, served by the binary at
//! `/client.js`) in a real headless Chromium against the real binary with
//! `--jwt-secret`: it connects with a JWT, subscribes, receives a publish
//! sent through the HTTP API, publishes to a Rust client, surfaces request
//! errors with their codes, unsubscribes, pings; drops the socket of a
//! frozen (SIGSTOP) server whose pong does not come and reconnects when it
//! thaws; stays away after the backend's 4004 until `connect()`; refreshes
//! its token before `exp` (and gets a new one after a 4002 when the refresh
//! was refused); does not loop on 4001; and after the server process is
//! killed and restarted on the same port it reconnects, resubscribes (with
//! `recover` from the last position seen), keeps pinging, and its handler
//! gets what is published after the restart. Its backoff is jittered and
//! bounded. With history (Redis core layer), what was published while its
//! server was down reaches the handler on reconnect, once and in order.
//!
//! Needs the Debian package `chromium` (or `CHROMIUM=/path/to/chromium`);
//! without it the test fails, it does not skip.

// Helpers outside #[test] fns unwrap too: a panic is how a test reports failure.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{gateway_at, http, next_push, start_binary, subscribe};
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Value, json};
use test_support::cdp::{Browser, Page};

const SECRET: &str = "js-client-secret";
const API_TOKEN: &str = "js-client-api-token";
/// How long the page may take to show something.
const SHOW: Duration = Duration::from_secs(10);

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An HS256 token for `sub` that expires `ttl` seconds from now, with `extra` claims.
fn token(sub: &str, ttl: u64, extra: &Value) -> String {
    let mut claims = json!({"sub": sub, "exp": now() + ttl});
    for (key, value) in extra.as_object().unwrap() {
        claims[key] = value.clone();
    }
    let key = EncodingKey::from_secret(SECRET.as_bytes()).unwrap();
    jsonwebtoken::encode(&Header::default(), &claims, &key).unwrap()
}

/// The claims of the tests' tokens: `news` and `room.*` may be joined,
/// only `room.*` published to.
fn alice_claims() -> Value {
    json!({"allow": ["news", "room.*"], "publish": ["room.*"]})
}

/// Starts the binary on `bind` with a JWT secret, an API token and a 1 s ping interval.
async fn server(bind: &str) -> (test_support::ServerProcess, SocketAddr) {
    let args = [
        "--bind",
        bind,
        "--jwt-secret",
        SECRET,
        "--publish-token",
        API_TOKEN,
        "--idle-timeout",
        "3",
    ];
    start_binary(&args, &[]).await
}

/// Sends SIG`name` to the server process.
fn signal(server: &test_support::ServerProcess, name: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} failed");
}

/// Publishes `message` to `group` with the HTTP API.
async fn api_publish(address: SocketAddr, group: &str, message: &Value) {
    let bearer = format!("Bearer {API_TOKEN}");
    let answer = http(
        address,
        "POST",
        &format!("/api/groups/{group}"),
        &[
            ("authorization", bearer.as_str()),
            ("content-type", "application/json"),
        ],
        message.to_string().as_bytes(),
    )
    .await;
    assert_eq!(answer.status, 202, "{}", answer.body);
}

/// Opens a page of the server (so `/client.js` and `/ws` are same-origin),
/// imports the module and sets up `window.t`: a record of every event of a
/// `ChannelsClient` made with `options` (a JavaScript expression; `tokens`,
/// an array the test fills, backs `getToken` when the options use it).
async fn client_page(browser: &mut Browser, address: SocketAddr, options: &str) -> Page {
    let page = browser.open(&format!("http://{address}/client.js")).await;
    let setup = format!(
        r#"(async () => {{
  const {{ ChannelsClient, ChannelsError }} = await import("/client.js");
  // What the page shows when a wait times out: the events so far.
  document.body.innerHTML = '<pre id="log"></pre>';
  const log = document.getElementById("log");
  const t = window.t = {{ ChannelsError, events: [], got: [], asked: 0, pings: 0, tokens: [] }};
  const getToken = async () => {{ t.asked += 1; return t.tokens.length ? t.tokens.shift() : null; }};
  const client = t.client = new ChannelsClient(`ws://${{location.host}}/ws`, {options});
  for (const type of ["connected", "disconnected", "subscribed", "message", "lost", "raw", "error"]) {{
    client.addEventListener(type, (event) => {{
      const d = event.detail;
      t.events.push({{ type, detail: d instanceof Error ? {{ code: d.code, message: d.message }} : d }});
      log.textContent = JSON.stringify(t.events);
    }});
  }}
  // Every frame the client sends, for the test to read.
  t.sent = [];
  const sendJSON = client.socket.sendJSON.bind(client.socket);
  client.socket.sendJSON = (frame) => {{ t.sent.push(frame); return sendJSON(frame); }};
  const ping = client.ping.bind(client);
  client.ping = () => {{ t.pings += 1; return ping(); }};
  t.count = (type, test = () => true) => t.events.filter((e) => e.type === type && test(e.detail)).length;
  return true;
}})()"#
    );
    assert_eq!(browser.eval(&page, &setup).await, Value::Bool(true));
    page
}

async fn eval(browser: &mut Browser, page: &Page, expression: &str) -> Value {
    browser.eval(page, expression).await
}

async fn wait(browser: &mut Browser, page: &Page, expression: &str, what: &str) {
    browser.wait_for(page, expression, what, SHOW).await;
}

/// JavaScript: runs `promise` and returns `{ok}` or `{code, message, isChannelsError}`.
fn settle(promise: &str) -> String {
    format!(
        "({promise}).then((ok) => ({{ ok }}), (e) => ({{ code: e.code, message: e.message, \
         isChannelsError: e instanceof t.ChannelsError }}))"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_connects_subscribes_receives_publishes_and_surfaces_errors() {
    let (server, address) = server("127.0.0.1:0").await;
    let mut browser = Browser::start().await;
    let alice = token("alice", 3600, &alice_claims());
    let page = client_page(&mut browser, address, &format!("{{ token: {alice:?} }}")).await;

    let connected = eval(&mut browser, &page, "t.client.connect()").await;
    assert_eq!(connected["user"], "alice", "{connected}");
    assert_eq!(connected["groups"], json!(["user.alice"]), "{connected}");
    assert_eq!(connected["ping_interval"], 1, "{connected}");
    // The backoff is jittered (between half and all of the cap) and bounded.
    let delays = eval(
        &mut browser,
        &page,
        "import('/client.js').then(({ backoffDelay }) => [0, 1, 2, 3, 10, 50].map((attempt) => {
           const samples = Array.from({ length: 200 }, () => backoffDelay(attempt, { initial: 500, max: 10000 }));
           return [Math.min(...samples), Math.max(...samples)];
         }))",
    )
    .await;
    for ((low, high), cap) in delays
        .as_array()
        .unwrap()
        .iter()
        .map(|pair| (pair[0].as_f64().unwrap(), pair[1].as_f64().unwrap()))
        .zip([500.0, 1000.0, 2000.0, 4000.0, 10000.0, 10000.0])
    {
        assert!(
            cap / 2.0 <= low && high <= cap,
            "{low}..{high} for cap {cap}"
        );
        assert!(high - low > cap / 10.0, "no jitter: {low}..{high}");
    }

    // subscribe, then a publish through the HTTP API reaches the handler.
    let answer = eval(
        &mut browser,
        &page,
        "(t.news = t.client.subscribe('news', (data, push) => t.got.push({ group: push.group, data }))).ready",
    )
    .await;
    assert_eq!(answer["type"], "subscribed", "{answer}");
    assert_eq!(answer["group"], "news", "{answer}");
    api_publish(
        address,
        "news",
        &json!({"type": "news.item", "text": "from http"}),
    )
    .await;
    wait(
        &mut browser,
        &page,
        "t.got.some((g) => g.group === 'news' && g.data.text === 'from http')",
        "the HTTP publish in the handler",
    )
    .await;

    // publish reaches a Rust client in the same group, and the page's own handler.
    let (mut rust, _) = gateway_at(&format!(
        "ws://{address}/ws?token={}",
        token("bob", 3600, &alice_claims())
    ))
    .await;
    subscribe(&mut rust, "room.1").await;
    let published = eval(
        &mut browser,
        &page,
        "t.client.subscribe('room.1', (data) => t.got.push({ group: 'room.1', data })).ready
           .then(() => t.client.publish('room.1', { type: 'chat.message', text: 'from js' }))",
    )
    .await;
    assert_eq!(published["type"], "published", "{published}");
    let push = next_push(&mut rust).await;
    assert_eq!(push["group"], "room.1", "{push}");
    assert_eq!(push["data"]["text"], "from js", "{push}");
    wait(
        &mut browser,
        &page,
        "t.got.some((g) => g.group === 'room.1' && g.data.text === 'from js')",
        "the page's own publish in its handler",
    )
    .await;

    // Errors: a Promise rejected with the server's code, and the `error` event.
    let refused = eval(
        &mut browser,
        &page,
        &settle("t.client.publish('news', { type: 'news.item' })"),
    )
    .await;
    assert_eq!(refused["code"], "forbidden", "{refused}");
    assert_eq!(refused["isChannelsError"], true, "{refused}");
    let refused = eval(
        &mut browser,
        &page,
        &settle("t.client.subscribe('admin', () => {}).ready"),
    )
    .await;
    assert_eq!(refused["code"], "forbidden", "{refused}");
    let refused = eval(
        &mut browser,
        &page,
        &settle("t.client.subscribe('no spaces', () => {}).ready"),
    )
    .await;
    assert_eq!(refused["code"], "invalid_name", "{refused}");
    // A refused subscription is not asked again after reconnects.
    assert_eq!(
        eval(&mut browser, &page, "[...t.client.subscriptions.keys()]").await,
        json!(["news", "room.1"])
    );
    // A frame of no protocol type with no forward channel: an `error` event with its code.
    assert_eq!(
        eval(
            &mut browser,
            &page,
            "t.client.send(JSON.stringify({ type: 'dance' }))"
        )
        .await,
        true
    );
    wait(
        &mut browser,
        &page,
        "t.count('error', (d) => d.code === 'unknown_frame') === 1",
        "the unknown_frame error event",
    )
    .await;

    // unsubscribe: later publishes to `news` no longer reach the handler
    // (the room.1 one, sent after, proves the news one would have arrived).
    let left = eval(&mut browser, &page, &settle("t.news.unsubscribe()")).await;
    assert!(left.get("code").is_none(), "{left}");
    api_publish(
        address,
        "news",
        &json!({"type": "news.item", "text": "too late"}),
    )
    .await;
    api_publish(
        address,
        "room.1",
        &json!({"type": "chat.message", "text": "after"}),
    )
    .await;
    wait(
        &mut browser,
        &page,
        "t.got.some((g) => g.data.text === 'after')",
        "the publish after the unsubscribe",
    )
    .await;
    assert_eq!(
        eval(
            &mut browser,
            &page,
            "t.got.filter((g) => g.data.text === 'too late').length"
        )
        .await,
        0
    );
    // The keepalive pings every ping_interval (1 s here) and stays connected.
    wait(&mut browser, &page, "t.pings >= 2", "two pings").await;
    assert_eq!(
        eval(&mut browser, &page, "t.count('disconnected')").await,
        0
    );

    // A frozen server (SIGSTOP) answers no pong: the client gives up on the
    // socket after one ping interval, and reconnects once the server thaws.
    signal(&server, "STOP");
    wait(
        &mut browser,
        &page,
        "t.count('disconnected', (d) => d.code === 4000 && d.reason === 'no pong' && d.willReconnect) === 1",
        "the dead connection dropped",
    )
    .await;
    signal(&server, "CONT");
    wait(
        &mut browser,
        &page,
        "t.count('connected') === 2 && t.count('subscribed', (d) => d.group === 'room.1') === 2",
        "the reconnect after the thaw",
    )
    .await;

    // The backend disconnects the user (4004): the client does not come back by itself...
    let bearer = format!("Bearer {API_TOKEN}");
    let answer = http(
        address,
        "POST",
        "/api/users/alice/disconnect",
        &[
            ("authorization", bearer.as_str()),
            ("content-type", "application/json"),
        ],
        b"{}",
    )
    .await;
    assert_eq!(answer.status, 202, "{}", answer.body);
    wait(
        &mut browser,
        &page,
        "t.count('disconnected', (d) => d.code === 4004 && !d.willReconnect) === 1 \
         && t.client.state === 'closed'",
        "the backend's disconnect",
    )
    .await;
    // ... until connect() is called again.
    let connected = eval(&mut browser, &page, "t.client.connect()").await;
    assert_eq!(connected["user"], "alice", "{connected}");

    // close(): disconnected for good, pending work refused.
    eval(&mut browser, &page, "t.client.close()").await;
    let detail = eval(&mut browser, &page, "t.events.at(-1)").await;
    assert_eq!(detail["type"], "disconnected", "{detail}");
    assert_eq!(detail["detail"]["willReconnect"], false, "{detail}");
    let refused = eval(
        &mut browser,
        &page,
        &settle("t.client.publish('room.1', { type: 'x' })"),
    )
    .await;
    assert_eq!(refused["code"], "disconnected", "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_refreshes_its_token_and_renews_it_after_4002_but_does_not_loop_on_4001() {
    let (_server, address) = server("127.0.0.1:0").await;
    let mut browser = Browser::start().await;

    // A 4-second token, and getToken ready with a long one: `refresh` before exp.
    let short = token("alice", 4, &alice_claims());
    let exp = now() + 4;
    let page = client_page(
        &mut browser,
        address,
        &format!("{{ token: {short:?}, getToken }}"),
    )
    .await;
    eval(
        &mut browser,
        &page,
        &format!("t.tokens.push({:?})", token("alice", 3600, &alice_claims())),
    )
    .await;
    eval(&mut browser, &page, "t.client.connect()").await;
    wait(
        &mut browser,
        &page,
        &format!("t.client.info.expires_at > {exp}"),
        "the refreshed expiry",
    )
    .await;
    assert_eq!(eval(&mut browser, &page, "t.asked").await, 1);
    // Past the first token's exp, the connection is still the first one.
    wait(
        &mut browser,
        &page,
        &format!("Date.now() / 1000 > {exp} + 1.5"),
        "the first token's expiry",
    )
    .await;
    assert_eq!(
        eval(&mut browser, &page, "t.count('disconnected')").await,
        0
    );
    assert_eq!(eval(&mut browser, &page, "t.client.connected").await, true);

    // The same without getToken: the server closes with 4002 and the client stops.
    let plain = client_page(
        &mut browser,
        address,
        &format!("{{ token: {:?} }}", token("alice", 2, &alice_claims())),
    )
    .await;
    eval(&mut browser, &plain, "t.client.connect()").await;
    wait(
        &mut browser,
        &plain,
        "t.count('disconnected', (d) => d.code === 4002 && !d.willReconnect) === 1",
        "the 4002 close",
    )
    .await;
    assert_eq!(eval(&mut browser, &plain, "t.client.state").await, "closed");

    // The refresh is refused (a token of another user): after the 4002 the
    // client asks getToken again and reconnects with the new token.
    let page = client_page(
        &mut browser,
        address,
        &format!(
            "{{ token: {:?}, getToken }}",
            token("alice", 3, &alice_claims())
        ),
    )
    .await;
    eval(
        &mut browser,
        &page,
        &format!(
            "t.tokens.push({:?}, {:?})",
            token("mallory", 3600, &json!({})),
            token("alice", 3600, &alice_claims())
        ),
    )
    .await;
    eval(&mut browser, &page, "t.client.connect()").await;
    wait(
        &mut browser,
        &page,
        "t.count('error', (d) => d.code === 'unauthorized') === 1",
        "the refused refresh",
    )
    .await;
    wait(
        &mut browser,
        &page,
        "t.count('disconnected', (d) => d.code === 4002 && d.willReconnect) === 1 \
         && t.count('connected') === 2 && t.client.connected",
        "a reconnect with a new token after 4002",
    )
    .await;
    assert_eq!(
        eval(&mut browser, &page, "t.client.info.user").await,
        "alice"
    );
    assert_eq!(eval(&mut browser, &page, "t.asked").await, 2);

    // A forged token and a getToken that has nothing better: one try, no loop.
    let forged = format!("{short}x");
    let page = client_page(
        &mut browser,
        address,
        &format!(
            "{{ token: {forged:?}, getToken: async () => {{ t.asked += 1; return {forged:?}; }} }}"
        ),
    )
    .await;
    let refused = eval(&mut browser, &page, &settle("t.client.connect()")).await;
    assert_eq!(refused["code"], "disconnected", "{refused}");
    assert_eq!(eval(&mut browser, &page, "t.client.state").await, "closed");
    assert_eq!(eval(&mut browser, &page, "t.count('connected')").await, 0);
    assert_eq!(
        eval(&mut browser, &page, "t.events.filter((e) => e.type === 'disconnected').map((e) => [e.detail.code, e.detail.willReconnect])").await,
        json!([[4001, true], [4001, false]])
    );
    assert_eq!(eval(&mut browser, &page, "t.asked").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_reconnects_and_resubscribes_after_the_server_is_killed_and_restarted() {
    let bind = format!("127.0.0.1:{}", test_support::free_port());
    let (mut first, address) = server(&bind).await;
    let mut browser = Browser::start().await;
    let alice = token("alice", 3600, &alice_claims());
    let page = client_page(
        &mut browser,
        address,
        &format!("{{ getToken: async () => {{ t.asked += 1; return {alice:?}; }}, backoff: {{ max: 2000 }} }}"),
    )
    .await;
    eval(&mut browser, &page, "t.client.connect()").await;
    eval(
        &mut browser,
        &page,
        "t.client.subscribe('news', (data) => t.got.push(data)).ready",
    )
    .await;
    // As if the group kept history: the push carries a position (the
    // server moves `_offset`/`_epoch` into the envelope), which the client
    // must send back as `recover` when it resubscribes.
    api_publish(
        address,
        "news",
        &json!({"type": "news.item", "text": "before", "_offset": 7, "_epoch": "e1"}),
    )
    .await;
    wait(
        &mut browser,
        &page,
        "t.got.length === 1",
        "the first publish",
    )
    .await;

    first.kill();
    wait(
        &mut browser,
        &page,
        "t.count('disconnected', (d) => d.wasConnected && d.willReconnect) === 1 \
         && t.client.state === 'reconnecting'",
        "the lost connection",
    )
    .await;
    let (_second, again) = server(&bind).await;
    assert_eq!(again, address);
    browser
        .wait_for(
            &page,
            "t.count('connected') === 2 && t.count('subscribed', (d) => d.group === 'news') === 2",
            "the reconnect and resubscribe",
            Duration::from_secs(20),
        )
        .await;
    // A fresh token for the reconnect, and `recover` was not needed (no history).
    assert!(eval(&mut browser, &page, "t.asked").await.as_u64().unwrap() >= 2);
    let resubscribed = eval(
        &mut browser,
        &page,
        "t.events.filter((e) => e.type === 'subscribed').at(-1).detail",
    )
    .await;
    assert_eq!(resubscribed["recovered"], false, "{resubscribed}");
    let asked = eval(
        &mut browser,
        &page,
        "t.sent.filter((f) => f.type === 'subscribe').map((f) => f.recover ?? null)",
    )
    .await;
    assert_eq!(asked, json!([null, {"offset": 7, "epoch": "e1"}]));

    api_publish(
        address,
        "news",
        &json!({"type": "news.item", "text": "after"}),
    )
    .await;
    wait(
        &mut browser,
        &page,
        "t.got.length === 2 && t.got[1].text === 'after'",
        "the publish after the restart in the handler",
    )
    .await;
    // Still alive and pinging on the new server.
    let pings = eval(&mut browser, &page, "t.pings").await.as_u64().unwrap();
    wait(
        &mut browser,
        &page,
        &format!("t.pings >= {} && t.client.connected", pings + 2),
        "pings after the restart",
    )
    .await;
}

/// Starts the binary like [`server`], on the Redis core layer at `redis`
/// with a history for every group.
async fn history_server(bind: &str, redis: &str) -> (test_support::ServerProcess, SocketAddr) {
    let args = [
        "--bind",
        bind,
        "--jwt-secret",
        SECRET,
        "--publish-token",
        API_TOKEN,
        "--idle-timeout",
        "3",
        "--history-size",
        "100",
    ];
    start_binary(
        &args,
        &[("CHANNELS_LAYER", "redis"), ("CHANNELS_REDIS_URL", redis)],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_recovers_what_was_published_while_its_server_was_down() {
    let redis = test_support::redis::start().await;
    let url = redis.url();
    let bind = format!("127.0.0.1:{}", test_support::free_port());
    let (mut first, address) = history_server(&bind, &url).await;
    let (_other, other) = history_server("127.0.0.1:0", &url).await;
    let mut browser = Browser::start().await;
    let alice = token("alice", 3600, &alice_claims());
    let page = client_page(
        &mut browser,
        address,
        &format!("{{ getToken: async () => {alice:?}, backoff: {{ max: 1000 }} }}"),
    )
    .await;
    eval(&mut browser, &page, "t.client.connect()").await;
    let ready = eval(
        &mut browser,
        &page,
        "t.client.subscribe('news', (data, push) => t.got.push([push.offset, data.n])).ready",
    )
    .await;
    assert_eq!(ready["reason"], "no_position", "{ready}");
    let epoch = ready["epoch"].clone();
    api_publish(address, "news", &json!({"type": "news.item", "n": 1})).await;
    wait(&mut browser, &page, "t.got.length === 1", "the first push").await;

    // Its server dies; the group goes on through the other process.
    first.kill();
    wait(
        &mut browser,
        &page,
        "t.client.state === 'reconnecting'",
        "the lost connection",
    )
    .await;
    api_publish(other, "news", &json!({"type": "news.item", "n": 2})).await;
    api_publish(other, "news", &json!({"type": "news.item", "n": 3})).await;
    let (_second, again) = history_server(&bind, &url).await;
    assert_eq!(again, address);
    browser
        .wait_for(
            &page,
            "t.count('subscribed', (d) => d.group === 'news' && d.recovered) === 1",
            "the recovering resubscribe",
            Duration::from_secs(20),
        )
        .await;
    let asked = eval(
        &mut browser,
        &page,
        "t.sent.filter((f) => f.type === 'subscribe').map((f) => f.recover ?? null)",
    )
    .await;
    assert_eq!(asked, json!([null, {"offset": 1, "epoch": epoch}]));
    api_publish(other, "news", &json!({"type": "news.item", "n": 4})).await;
    wait(&mut browser, &page, "t.got.length >= 4", "the live push").await;
    // Every message once, in order, the missed ones before the live one.
    let got = eval(&mut browser, &page, "t.got").await;
    assert_eq!(got, json!([[1, 1], [2, 2], [3, 3], [4, 4]]));
}
