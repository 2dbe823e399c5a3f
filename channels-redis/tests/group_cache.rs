//! `group_send` keeps a group's members between sends while Redis's client
//! tracking vouches for them: every change by anyone (another layer, Python
//! channels_redis, a flush, time) reaches the next send all the same.
//!
//! Each test fills the cache with one send, changes the group so that its
//! size stays the same (so only an invalidation can tell), and checks that
//! the next send reaches the group as it is now. The Python writer needs the
//! interop venv (`bash scripts/install-deps.sh`).
#![allow(clippy::unwrap_used)] // test helpers: a failed setup step should panic right there

mod python_peer;
mod support;

use std::time::Duration;

use std::sync::Arc;

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

use channels_core::{ChannelLayer, Message, Receiver, Value};
use channels_redis::testing::{RedisServer, tracking_clients, unique_prefix};
use channels_redis::{RedisChannelLayer, RedisConfig};
use python_peer::PythonPeer;
use support::{config, raw};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(5);

/// The next message on `inbox` within [`WAIT`].
async fn next(inbox: &Receiver, what: &str) -> Message {
    timeout(WAIT, inbox.recv())
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing arrived within {WAIT:?}"))
        .unwrap()
}

/// Sends `marker` to `group` and checks that `inbox` gets it next.
async fn reaches(sender: &RedisChannelLayer, group: &str, inbox: &Receiver, marker: i64) {
    sender
        .group_send(group, Message::new("marker").with("n", marker))
        .await
        .unwrap();
    let message = next(inbox, &format!("marker {marker}")).await;
    assert_eq!(message.get("n"), Some(&Value::from(marker)), "{message:?}");
}

/// Sends a probe straight to `channel` and checks that it is the next thing
/// `inbox` (on `channel`) gets: no group message sent before reached it.
async fn only_probe(sender: &RedisChannelLayer, channel: &str, inbox: &Receiver) {
    sender.send(channel, Message::new("probe")).await.unwrap();
    let message = next(inbox, "the probe").await;
    assert_eq!(
        message.message_type(),
        Some("probe"),
        "a group message reached a channel no longer in the group: {message:?}"
    );
}

/// `rounds` times: a send fills `sender`'s cache with the group "room" of
/// one member; the member is swapped for a new one (the group keeps its
/// size, so only an invalidation tells), by `members` or, every other
/// round, by `python` if given; the next send must reach the new member and
/// not the old one.
async fn swap_members(
    sender: &RedisChannelLayer,
    members: &RedisChannelLayer,
    python: &mut Option<&mut PythonPeer>,
    rounds: i64,
) {
    let mut current = members.new_channel("specific").await.unwrap();
    let mut inbox = members.open(&current).await.unwrap();
    members.group_add("room", &current).await.unwrap();
    for round in 0..rounds {
        reaches(sender, "room", &inbox, round * 2).await;
        let next_channel = members.new_channel("specific").await.unwrap();
        let next_inbox = members.open(&next_channel).await.unwrap();
        match python {
            Some(python) if round % 2 == 1 => {
                python
                    .call_ok(serde_json::json!({
                        "op": "group_discard", "group": "room", "channel": current
                    }))
                    .await;
                python.group_add("room", &next_channel).await;
            }
            _ => {
                members.group_discard("room", &current).await.unwrap();
                members.group_add("room", &next_channel).await.unwrap();
            }
        }
        reaches(sender, "room", &next_inbox, round * 2 + 1).await;
        only_probe(sender, &current, &inbox).await;
        current = next_channel;
        inbox = next_inbox;
    }
}

/// Two layers on the shared server with one prefix: a sender whose replies
/// (and pushes) a [`slow_replies`] proxy holds back 100 ms, and a members'
/// layer connected directly. Also the prefix.
async fn slow_sender_and_members() -> (Arc<RedisChannelLayer>, RedisChannelLayer, String) {
    let server = support::shared_server();
    let proxy = slow_replies(server.port(), Duration::from_millis(100)).await;
    let prefix = unique_prefix();
    let slow = RedisConfig::new()
        .host(format!("redis://127.0.0.1:{proxy}"))
        .prefix(&prefix);
    let sender = Arc::new(RedisChannelLayer::new(slow).unwrap());
    let members =
        RedisChannelLayer::new(RedisConfig::new().host(server.url()).prefix(&prefix)).unwrap();
    (sender, members, prefix)
}

/// A TCP proxy to `upstream` on a free port that holds every byte coming
/// back from Redis for `delay` (bytes going to Redis pass at once): a
/// tracking connection through it gets its invalidations late. What came
/// back during the hold is passed on in one write, so a reply and a push
/// that followed it closely are read together.
async fn slow_replies(upstream: u16, delay: Duration) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                return;
            };
            let (mut from_client, mut to_client) = client.into_split();
            let (mut from_server, mut to_server) = server.into_split();
            tokio::spawn(async move { tokio::io::copy(&mut from_client, &mut to_server).await });
            let (held, mut due) = mpsc::channel::<(Instant, Vec<u8>)>(1024);
            tokio::spawn(async move {
                let mut buffer = vec![0; 64 * 1024];
                while let Ok(read @ 1..) = from_server.read(&mut buffer).await {
                    let bytes = buffer[..read].to_vec();
                    if held.send((Instant::now() + delay, bytes)).await.is_err() {
                        break;
                    }
                }
            });
            tokio::spawn(async move {
                while let Some((at, mut bytes)) = due.recv().await {
                    tokio::time::sleep_until(at).await;
                    while let Ok((_, more)) = due.try_recv() {
                        bytes.extend(more);
                    }
                    if to_client.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_swapped_by_another_layer_or_python_is_seen_by_the_next_send() {
    let shared = config();
    let prefix = shared.prefix_str().to_owned();
    let sender = RedisChannelLayer::new(shared.clone()).unwrap();
    let members = RedisChannelLayer::new(shared).unwrap();
    let url = support::shared_server().url();
    let mut python = PythonPeer::start("core", std::slice::from_ref(&url), &prefix, &[]).await;

    swap_members(&sender, &members, &mut Some(&mut python), 20).await;
    python.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_is_seen_while_its_invalidation_is_still_on_the_wire() {
    // The sender reaches Redis through a proxy that holds replies and pushes
    // back 100 ms; the members' layer writes directly. So each swap has
    // completed while its invalidation to the sender is still held: only
    // the send's own round trip, behind it on the same connection, is sure
    // to bring it first.
    let (sender, members, _) = slow_sender_and_members().await;
    swap_members(&sender, &members, &mut None, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_just_after_a_read_is_not_cached_over() {
    // The group changes right after the sender's read of it ran, and the
    // change's invalidation reaches the sender together with the read's
    // reply (the proxy holds both): what was read must not be kept.
    let server = support::shared_server();
    let (sender, members, prefix) = slow_sender_and_members().await;
    let old = members.new_channel("specific").await.unwrap();
    members.group_add("room", &old).await.unwrap();

    let mut monitor = Monitor::start(server.port()).await;
    let send = tokio::spawn({
        let sender = sender.clone();
        async move { sender.group_send("room", Message::new("fill")).await }
    });
    monitor
        .until(&format!("\"ZRANGE\" \"{prefix}:group:room\""))
        .await;
    let new = members.new_channel("specific").await.unwrap();
    let new_inbox = members.open(&new).await.unwrap();
    members.group_discard("room", &old).await.unwrap();
    members.group_add("room", &new).await.unwrap();
    send.await.unwrap().unwrap();

    reaches(&sender, "room", &new_inbox, 1).await;
}

/// One group read is at most this many names; bigger ones come in pages.
const PAGE: usize = 2_000;

/// Adds members `numbers` to `group` straight in Redis, channels of a
/// process that never reads (its key just fills), scored `score`.
async fn add_bulk_members(
    url: &str,
    prefix: &str,
    group: &str,
    numbers: std::ops::Range<usize>,
    score: i64,
) {
    let mut connection = raw(url).await;
    let mut zadd = redis::cmd("ZADD");
    zadd.arg(format!("{prefix}:group:{group}"));
    for n in numbers {
        zadd.arg(score).arg(format!("specific.bulk!{n:06}"));
    }
    zadd.exec_async(&mut connection).await.unwrap();
}

/// Redis's clock, whole seconds.
async fn redis_now(url: &str) -> i64 {
    redis_seconds(&mut raw(url).await).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_of_several_pages_reaches_its_first_and_last_members_and_those_between() {
    let url = support::shared_server().url();
    let shared = config();
    let prefix = shared.prefix_str().to_owned();
    let sender = RedisChannelLayer::new(shared.clone()).unwrap();
    let members = RedisChannelLayer::new(shared).unwrap();
    // The group in score order: the first member, a page less one of
    // others, one at the start of the second page, half a page of others,
    // the last member.
    let now = redis_now(&url).await;
    let key = format!("{prefix}:group:room");
    let mut connection = raw(&url).await;
    let mut real = Vec::new();
    for (score, bulk) in [(now - 120, 0..PAGE - 1), (now - 90, PAGE..PAGE * 3 / 2)] {
        let channel = members.new_channel("specific").await.unwrap();
        real.push(members.open(&channel).await.unwrap());
        redis::cmd("ZADD")
            .arg(&key)
            .arg(score)
            .arg(&channel)
            .exec_async(&mut connection)
            .await
            .unwrap();
        add_bulk_members(&url, &prefix, "room", bulk, score + 1).await;
    }
    let last = members.new_channel("specific").await.unwrap();
    let last_inbox = members.open(&last).await.unwrap();
    members.group_add("room", &last).await.unwrap();
    real.push(last_inbox);
    for marker in 0..2 {
        // The second send uses what the first read, kept.
        sender
            .group_send("room", Message::new("marker").with("n", marker))
            .await
            .unwrap();
        for (i, inbox) in real.iter().enumerate() {
            let message = next(inbox, &format!("member {i} of 3, marker {marker}")).await;
            assert_eq!(message.get("n"), Some(&Value::from(marker)));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_moved_between_two_pages_is_not_skipped() {
    // Exactly one page of members sorts before the watched one, so it is the
    // first of the second page; one of those leaves between the pages (the
    // sender's replies are held back by a proxy; MONITOR shows when the
    // first page was read), which moves the watched member into the first
    // page, already read. Only a read that notices the change gets it.
    let server = support::shared_server();
    let url = server.url();
    let (sender, members, prefix) = slow_sender_and_members().await;
    add_bulk_members(&url, &prefix, "room", 0..PAGE, redis_now(&url).await - 60).await;
    let watched = members.new_channel("specific").await.unwrap();
    let inbox = members.open(&watched).await.unwrap();
    members.group_add("room", &watched).await.unwrap();

    let mut monitor = Monitor::start(server.port()).await;
    let send = tokio::spawn({
        let sender = sender.clone();
        async move {
            sender
                .group_send("room", Message::new("marker").with("n", 1))
                .await
        }
    });
    monitor
        .until(&format!(
            "\"ZRANGE\" \"{prefix}:group:room\" \"0\" \"{}\"",
            PAGE - 1
        ))
        .await;
    redis::cmd("ZREM")
        .arg(format!("{prefix}:group:room"))
        .arg("specific.bulk!000000")
        .exec_async(&mut raw(&url).await)
        .await
        .unwrap();
    send.await.unwrap().unwrap();
    let message = next(&inbox, "the watched member").await;
    assert_eq!(message.get("n"), Some(&Value::from(1)));
}

/// A `MONITOR` connection: every command Redis runs, as it runs it.
struct Monitor {
    lines: tokio::io::Lines<BufReader<TcpStream>>,
}

impl Monitor {
    async fn start(port: u16) -> Self {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        stream.write_all(b"MONITOR\r\n").await.unwrap();
        let mut lines = BufReader::new(stream).lines();
        let ok = lines.next_line().await.unwrap();
        assert_eq!(ok.as_deref(), Some("+OK"));
        Self { lines }
    }

    /// Waits until Redis runs a command whose line holds `text`.
    async fn until(&mut self, text: &str) {
        timeout(WAIT, async {
            while let Some(line) = self.lines.next_line().await.unwrap() {
                if line.contains(text) {
                    return;
                }
            }
            panic!("MONITOR ended");
        })
        .await
        .unwrap_or_else(|_| panic!("Redis never ran {text}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flushed_database_empties_the_cache() {
    let server = RedisServer::start().unwrap();
    let shared = RedisConfig::new()
        .host(server.url())
        .prefix(unique_prefix());
    let sender = RedisChannelLayer::new(shared.clone()).unwrap();
    let members = RedisChannelLayer::new(shared).unwrap();
    let before = members.new_channel("specific").await.unwrap();
    let before_inbox = members.open(&before).await.unwrap();
    members.group_add("room", &before).await.unwrap();
    reaches(&sender, "room", &before_inbox, 1).await;

    // FLUSHDB tells tracking clients "everything changed" and forgets what
    // they read: the member added after it is told to nobody.
    redis::cmd("FLUSHDB")
        .exec_async(&mut raw(&server.url()).await)
        .await
        .unwrap();
    let after = members.new_channel("specific").await.unwrap();
    let after_inbox = members.open(&after).await.unwrap();
    members.group_add("room", &after).await.unwrap();
    reaches(&sender, "room", &after_inbox, 2).await;
    only_probe(&sender, &before, &before_inbox).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_expires_leaves_a_cached_group_though_nothing_was_written() {
    let shared = config().group_expiry(Duration::from_secs(1));
    let sender = RedisChannelLayer::new(shared.clone()).unwrap();
    let members = RedisChannelLayer::new(shared.clone()).unwrap();
    let channel = members.new_channel("specific").await.unwrap();
    let inbox = members.open(&channel).await.unwrap();
    members.group_add("room", &channel).await.unwrap();
    // The key outlives its member: only a prune can notice the expiry (no
    // invalidation comes, as it would if the key itself expired).
    let key = format!("{}:group:room", shared.prefix_str());
    let mut connection = raw(&support::shared_server().url()).await;
    redis::cmd("EXPIRE")
        .arg(&key)
        .arg(100)
        .exec_async(&mut connection)
        .await
        .unwrap();
    reaches(&sender, "room", &inbox, 1).await;

    // No write after the cached send: only time changes the group. Wait on
    // Redis's clock, touching no key.
    let added = redis_seconds(&mut connection).await;
    timeout(Duration::from_secs(10), async {
        while redis_seconds(&mut connection).await < added + 2 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("Redis's clock moves on");
    sender
        .group_send("room", Message::new("marker").with("n", 2))
        .await
        .unwrap();
    only_probe(&sender, &channel, &inbox).await;
}

/// Redis's clock, whole seconds.
async fn redis_seconds(connection: &mut redis::aio::MultiplexedConnection) -> i64 {
    let (seconds, _micros): (i64, i64) = redis::cmd("TIME").query_async(connection).await.unwrap();
    seconds
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_track_on_one_connection_and_a_server_that_refuses_is_read_every_time() {
    let server = RedisServer::start().unwrap();
    let mut admin = raw(&server.url()).await;
    redis::cmd("ACL")
        .arg("SETUSER")
        .arg("untracked")
        .arg("on")
        .arg(">secret")
        .arg("~*")
        .arg("&*")
        .arg("+@all")
        .arg("-client|tracking")
        .exec_async(&mut admin)
        .await
        .unwrap();
    let refused_url = server
        .url()
        .replacen("redis://", "redis://untracked:secret@", 1);

    for (url, user, tracks) in [(server.url(), "default", 1), (refused_url, "untracked", 0)] {
        let shared = RedisConfig::new().host(url).prefix(unique_prefix());
        let sender = RedisChannelLayer::new(shared.clone()).unwrap();
        let members = RedisChannelLayer::new(shared).unwrap();
        let mut inboxes = Vec::new();
        for round in 0..3 {
            let channel = members.new_channel("specific").await.unwrap();
            inboxes.push(members.open(&channel).await.unwrap());
            members.group_add("room", &channel).await.unwrap();
            let newest = inboxes.last().unwrap();
            reaches(&sender, "room", newest, round).await;
        }
        let user_field = format!("user={user}");
        let tracking = tracking_clients(&server.url()).await.unwrap();
        let of_user = tracking
            .iter()
            .filter(|line| line.split(' ').any(|field| field == user_field))
            .count();
        assert_eq!(of_user, tracks, "connections of {user} with tracking on");
    }
}
