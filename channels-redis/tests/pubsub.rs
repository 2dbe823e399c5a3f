//! `RedisPubSubChannelLayer` against real redis-servers: P1–P5 and L3 of
//! CONFORMANCE.md, what it leaves on the wire (checked over raw Redis
//! connections), sharding, encryption, buffers, reconnects (P4), and
//! receiver handles: unsubscribed on drop, opened by the thousand in a few
//! SUBSCRIBEs, resubscribed after a restart.

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use channels_core::{ChannelLayer, LayerError, Message, SharedLayer, Value};
use channels_redis::testing::RedisServer;
use channels_redis::{Crypter, RedisConfig, RedisPubSubChannelLayer, consistent_hash, wire};
use futures::StreamExt as _;
use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use support::{hex, wait_until, wire_message, wire_packed};
use tokio::time::{sleep, timeout};

/// Generous bound for things that must happen.
const WAIT: Duration = Duration::from_secs(5);
/// How long "nothing arrives" checks wait.
const NOTHING: Duration = Duration::from_secs(1);

fn start_server() -> RedisServer {
    RedisServer::start().unwrap_or_else(|error| panic!("cannot start redis-server: {error}"))
}

fn layer_on(urls: &[String], prefix: &str) -> RedisPubSubChannelLayer {
    let config = RedisConfig::new()
        .hosts_from(urls.iter().map(String::as_str))
        .prefix(prefix);
    RedisPubSubChannelLayer::new(config).unwrap_or_else(|error| panic!("bad config: {error}"))
}

fn layer(server: &RedisServer) -> RedisPubSubChannelLayer {
    layer_on(&[server.url()], "asgi")
}

async fn raw(url: &str) -> MultiplexedConnection {
    channels_redis::testing::connect(url)
        .await
        .unwrap_or_else(|error| panic!("cannot connect to {url}: {error}"))
}

/// A raw subscriber, to see exactly what the layer PUBLISHes.
struct Tap {
    _sink: PubSubSink,
    stream: PubSubStream,
}

impl Tap {
    async fn new(url: &str, topics: &[&str]) -> Self {
        let client =
            redis::Client::open(url).unwrap_or_else(|error| panic!("bad url {url}: {error}"));
        let pubsub = client
            .get_async_pubsub()
            .await
            .unwrap_or_else(|error| panic!("cannot connect to {url}: {error}"));
        let (mut sink, stream) = pubsub.split();
        sink.subscribe(topics)
            .await
            .unwrap_or_else(|error| panic!("cannot SUBSCRIBE: {error}"));
        Self {
            _sink: sink,
            stream,
        }
    }

    /// The next (topic, payload) heard, within [`WAIT`].
    async fn next(&mut self) -> (String, Vec<u8>) {
        let message = timeout(WAIT, self.stream.next())
            .await
            .unwrap_or_else(|_| panic!("the tap heard nothing within {WAIT:?}"))
            .unwrap_or_else(|| panic!("the tap's connection closed"));
        (
            message.get_channel_name().to_owned(),
            message.get_payload_bytes().to_vec(),
        )
    }
}

async fn command<T: redis::FromRedisValue>(url: &str, cmd: &mut redis::Cmd) -> T {
    let mut connection = raw(url).await;
    cmd.query_async(&mut connection)
        .await
        .unwrap_or_else(|error| panic!("raw command failed on {url}: {error}"))
}

/// `PUBSUB CHANNELS` of a server.
async fn subscribed_topics(url: &str) -> HashSet<String> {
    command::<Vec<String>>(url, redis::cmd("PUBSUB").arg("CHANNELS"))
        .await
        .into_iter()
        .collect()
}

/// How many connections of a server are in subscriber mode.
async fn subscriber_connections(url: &str) -> usize {
    let list: String = command(
        url,
        redis::cmd("CLIENT").arg("LIST").arg("TYPE").arg("pubsub"),
    )
    .await;
    list.lines().filter(|line| !line.trim().is_empty()).count()
}

async fn receive_ok(layer: &dyn ChannelLayer, channel: &str) -> Message {
    match timeout(WAIT, layer.receive(channel)).await {
        Ok(Ok(message)) => message,
        Ok(Err(error)) => panic!("receive on {channel} failed: {error}"),
        Err(_) => panic!("nothing arrived on {channel} within {WAIT:?}"),
    }
}

async fn assert_nothing(layer: &dyn ChannelLayer, channel: &str) {
    if let Ok(result) = timeout(NOTHING, layer.receive(channel)).await {
        panic!("expected nothing on {channel}, got {result:?}");
    }
}

fn is_hex32(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p1_payload_is_plain_msgpack_without_prefix_or_routing_key() {
    let server = start_server();
    let layer = layer(&server);
    let channel = layer.new_channel("specific").await.unwrap();
    let mut tap = Tap::new(&server.url(), &[channel.as_str(), "asgi__group__chat"]).await;

    layer.send(&channel, wire_message()).await.unwrap();
    let (topic, payload) = tap.next().await;
    assert_eq!(topic, channel);
    assert_eq!(
        hex(&payload),
        wire_packed(),
        "send payload = packb(M), nothing else"
    );

    layer.group_add("chat", &channel).await.unwrap();
    layer.group_send("chat", wire_message()).await.unwrap();
    let (topic, payload) = tap.next().await;
    assert_eq!(topic, "asgi__group__chat");
    assert_eq!(
        hex(&payload),
        wire_packed(),
        "group_send payload has no __asgi_channel__"
    );

    // And the layer itself decodes such bytes back to M (twice: send + group).
    assert_eq!(receive_ok(&layer, &channel).await, wire_message());
    assert_eq!(receive_ok(&layer, &channel).await, wire_message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2_names_topics_and_verbatim_send() {
    let server = start_server();
    let layer = layer(&server);
    for prefix in ["specific", "specific."] {
        let channel = layer.new_channel(prefix).await.unwrap();
        let hex_part = channel
            .strip_prefix("asgispecific.")
            .unwrap_or_else(|| panic!("new_channel({prefix:?}) gave {channel}"));
        assert!(is_hex32(hex_part), "{channel}");
    }
    let custom = layer_on(&[server.url()], "myapp");
    let channel = custom.new_channel("x").await.unwrap();
    assert!(
        channel.starts_with("myappx.") && is_hex32(&channel[7..]),
        "{channel}"
    );
    assert_eq!(custom.group_topic("room.1"), "myapp__group__room.1");

    // send publishes to the channel name as is, with no prefix added.
    let mut tap = Tap::new(&server.url(), &["plain.name", "myapp__group__room.1"]).await;
    layer.send("plain.name", Message::new("a")).await.unwrap();
    assert_eq!(tap.next().await.0, "plain.name");
    custom
        .group_send("room.1", Message::new("b"))
        .await
        .unwrap();
    assert_eq!(tap.next().await.0, "myapp__group__room.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p3_receive_on_a_plain_name_subscribes_it() {
    let server = start_server();
    let receiver: SharedLayer = Arc::new(layer(&server));
    let sender = layer(&server);
    let pending = tokio::spawn({
        let receiver = Arc::clone(&receiver);
        async move { receiver.receive("p3.general").await }
    });
    sleep(Duration::from_millis(100)).await;
    sender
        .send("p3.general", Message::new("p3.message"))
        .await
        .unwrap();
    let message = timeout(Duration::from_secs(1), pending)
        .await
        .expect("the receive on a plain name got nothing within 1 s")
        .unwrap()
        .unwrap();
    assert_eq!(message.message_type(), Some("p3.message"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p4_group_send_survives_two_server_restarts_between_group_ops() {
    let mut server = start_server();
    let layer = layer(&server);
    let c1 = layer.new_channel("specific").await.unwrap();
    let c2 = layer.new_channel("specific").await.unwrap();
    let c3 = layer.new_channel("specific").await.unwrap();
    layer.group_add("test-group", &c1).await.unwrap();
    server.restart().unwrap();
    layer.group_add("test-group", &c2).await.unwrap();
    server.restart().unwrap();
    layer.group_add("test-group", &c3).await.unwrap();
    layer.group_discard("test-group", &c2).await.unwrap();
    layer
        .group_send("test-group", Message::new("message.1"))
        .await
        .unwrap();
    assert_eq!(
        receive_ok(&layer, &c1).await.message_type(),
        Some("message.1")
    );
    assert_eq!(
        receive_ok(&layer, &c3).await.message_type(),
        Some("message.1")
    );
    assert_nothing(&layer, &c2).await;
    // Every channel and the group are subscribed again on the new server.
    let topics = subscribed_topics(&server.url()).await;
    for topic in [
        c1.as_str(),
        c2.as_str(),
        c3.as_str(),
        "asgi__group__test-group",
    ] {
        assert!(
            topics.contains(topic),
            "{topic} not resubscribed: {topics:?}"
        );
    }
    assert_eq!(subscriber_connections(&server.url()).await, 1);
}

/// Kills every connection of the layer (subscriber and publisher) from a raw
/// client, as a network failure would.
async fn kill_clients(url: &str) {
    // After an earlier kill the subscriber reconnects on its own, with backoff;
    // wait (bounded) for it so there is a connection to kill.
    let deadline = tokio::time::Instant::now() + WAIT;
    while subscriber_connections(url).await == 0 && tokio::time::Instant::now() < deadline {
        sleep(Duration::from_millis(20)).await;
    }
    let killed: i64 = command(
        url,
        redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("pubsub"),
    )
    .await;
    assert!(killed >= 1, "no subscriber connection to kill");
    let _: i64 = command(
        url,
        redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("normal")
            .arg("SKIPME")
            .arg("yes"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p4_group_send_survives_killed_connections_between_group_ops() {
    let server = start_server();
    let url = server.url();
    let layer = layer(&server);
    let c1 = layer.new_channel("specific").await.unwrap();
    let c2 = layer.new_channel("specific").await.unwrap();
    let c3 = layer.new_channel("specific").await.unwrap();
    layer.group_add("test-group", &c1).await.unwrap();
    kill_clients(&url).await;
    layer.group_add("test-group", &c2).await.unwrap();
    kill_clients(&url).await;
    layer.group_add("test-group", &c3).await.unwrap();
    layer.group_discard("test-group", &c2).await.unwrap();
    layer
        .group_send("test-group", Message::new("message.1"))
        .await
        .unwrap();
    assert_eq!(
        receive_ok(&layer, &c1).await.message_type(),
        Some("message.1")
    );
    assert_eq!(
        receive_ok(&layer, &c3).await.message_type(),
        Some("message.1")
    );
    assert_nothing(&layer, &c2).await;
    assert_eq!(subscriber_connections(&url).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receive_pending_across_a_restart_gets_later_messages() {
    let mut server = start_server();
    let layer: SharedLayer = Arc::new(layer(&server));
    let channel = layer.new_channel("specific").await.unwrap();
    let pending = tokio::spawn({
        let layer = Arc::clone(&layer);
        let channel = channel.clone();
        async move { layer.receive(&channel).await }
    });
    sleep(Duration::from_millis(50)).await;
    server.kill();
    sleep(Duration::from_millis(300)).await;
    server.restart().unwrap();
    // The subscriber reconnects on its own (backoff ≤ 2 s); a send is just a
    // PUBLISH, so retry until the pending receive has it.
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut pending = pending;
    loop {
        let _ = layer.send(&channel, Message::new("after.restart")).await;
        match timeout(Duration::from_millis(200), &mut pending).await {
            Ok(result) => {
                let message = result.unwrap().unwrap();
                assert_eq!(message.message_type(), Some("after.restart"));
                break;
            }
            Err(_) => assert!(
                tokio::time::Instant::now() < deadline,
                "no message reached the pending receive within {WAIT:?} of the restart"
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_gives_backend_errors_not_hangs() {
    let mut server = start_server();
    let config = RedisConfig::new()
        .host(server.url())
        .connect_timeout(Duration::from_millis(300));
    let layer = RedisPubSubChannelLayer::new(config).unwrap();
    let channel = layer.new_channel("specific").await.unwrap();
    server.kill();
    let send = timeout(WAIT, layer.send(&channel, Message::new("x"))).await;
    assert!(matches!(send, Ok(Err(LayerError::Backend(_)))), "{send:?}");
    let new_channel = timeout(WAIT, layer.new_channel("specific")).await;
    assert!(
        matches!(new_channel, Ok(Err(LayerError::Backend(_)))),
        "{new_channel:?}"
    );
    let group_add = timeout(WAIT, layer.group_add("g", &channel)).await;
    assert!(
        matches!(group_add, Ok(Err(LayerError::Backend(_)))),
        "{group_add:?}"
    );
    // And it recovers by itself once Redis is back.
    server.restart().unwrap();
    let channel = timeout(WAIT, layer.new_channel("specific"))
        .await
        .unwrap()
        .unwrap();
    layer.send(&channel, Message::new("back")).await.unwrap();
    assert_eq!(
        receive_ok(&layer, &channel).await.message_type(),
        Some("back")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p5_only_local_channels_join_groups_and_unheard_sends_are_lost() {
    let server = start_server();
    let owner = layer(&server);
    let other = layer(&server);
    let channel = owner.new_channel("specific").await.unwrap();
    match other.group_add("g", &channel).await {
        Err(LayerError::Unsupported { operation, reason }) => {
            assert_eq!(operation, "group_add");
            assert!(reason.contains(&channel), "{reason}");
        }
        other => panic!("group_add of a foreign channel gave {other:?}"),
    }
    // Receiving on a name makes it local, so it may then join groups.
    let plain = "p5.plain";
    let _ = timeout(Duration::from_millis(50), other.receive(plain)).await;
    other.group_add("g", plain).await.unwrap();

    // A send nobody listens to is dropped, not queued.
    owner.send("p5.nobody", Message::new("lost")).await.unwrap();
    assert_nothing(&owner, "p5.nobody").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p5_no_channel_full_the_buffer_keeps_the_newest() {
    let server = start_server();
    let config = RedisConfig::new().host(server.url()).capacity(10);
    let layer = RedisPubSubChannelLayer::new(config).unwrap();
    let channel = layer.new_channel("specific").await.unwrap();
    for n in 0..25u64 {
        layer
            .send(&channel, Message::new("m").with("n", n))
            .await
            .unwrap();
    }
    // The last one arriving means all 25 were handled.
    let deadline = tokio::time::Instant::now() + WAIT;
    while layer.dropped_messages() < 15 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} dropped",
            layer.dropped_messages()
        );
        sleep(Duration::from_millis(10)).await;
    }
    let mut got = Vec::new();
    for _ in 0..10 {
        got.push(
            receive_ok(&layer, &channel)
                .await
                .get("n")
                .and_then(Value::as_u64)
                .unwrap(),
        );
    }
    assert_eq!(got, (15..25).collect::<Vec<_>>());
    assert_eq!(layer.dropped_messages(), 15);
    assert_nothing(&layer, &channel).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k3_cancelled_receives_keep_the_subscription() {
    let server = start_server();
    let layer = layer(&server);
    let sender = layer_on(&[server.url()], "asgi");
    let channel = layer.new_channel("specific").await.unwrap();
    // Python unsubscribes and drops the queue when a receive is cancelled.
    for _ in 0..5 {
        assert!(
            timeout(Duration::from_millis(20), layer.receive(&channel))
                .await
                .is_err()
        );
    }
    assert!(subscribed_topics(&server.url()).await.contains(&channel));
    for n in 0..3u64 {
        sender
            .send(&channel, Message::new("m").with("n", n))
            .await
            .unwrap();
    }
    for n in 0..3u64 {
        let message = receive_ok(&layer, &channel).await;
        assert_eq!(message.get("n").and_then(Value::as_u64), Some(n));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_drops_messages_still_in_flight() {
    let server = start_server();
    let layer = layer(&server);
    let channel = layer.new_channel("specific").await.unwrap();
    let member = layer.new_channel("specific").await.unwrap();
    layer.group_add("in-flight", &member).await.unwrap();
    // Large messages published concurrently: Redis acknowledges them long
    // before the subscriber connection has carried them all.
    let blob = vec![7u8; 64 * 1024];
    let sends = (0..200u64).map(|n| {
        let message = Message::new("m").with("n", n).with("blob", blob.clone());
        let (layer, channel) = (&layer, &channel);
        async move {
            layer.send(channel, message.clone()).await.unwrap();
            layer.group_send("in-flight", message).await.unwrap();
        }
    });
    futures::future::join_all(sends).await;
    layer.flush().await.unwrap();
    assert_nothing(&layer, &channel).await;
    assert_nothing(&layer, &member).await;
    // Messages sent after the flush arrive as usual.
    layer.send(&channel, Message::new("after")).await.unwrap();
    assert_eq!(
        receive_ok(&layer, &channel).await.message_type(),
        Some("after")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l3_names_never_repeat_across_instances() {
    let server = start_server();
    let a = layer(&server);
    let b = layer(&server);
    let mut names = HashSet::new();
    for _ in 0..500 {
        for layer in [&a, &b] {
            let name = layer.new_channel("specific").await.unwrap();
            assert!(names.insert(name.clone()), "{name} repeated");
        }
    }
    assert_eq!(names.len(), 1_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_subscriber_connection_per_shard_and_topics_on_their_hash_shard() {
    let servers = [start_server(), start_server()];
    let urls: Vec<String> = servers.iter().map(RedisServer::url).collect();
    let layer = layer_on(&urls, "asgi");
    let mut channels = Vec::new();
    for _ in 0..20 {
        channels.push(layer.new_channel("specific").await.unwrap());
    }
    for (i, channel) in channels.iter().enumerate() {
        layer
            .group_add(&format!("group-{}", i % 5), channel)
            .await
            .unwrap();
    }
    let topics = [
        subscribed_topics(&urls[0]).await,
        subscribed_topics(&urls[1]).await,
    ];
    let mut expected: Vec<String> = channels.clone();
    expected.extend((0..5).map(|g| format!("asgi__group__group-{g}")));
    for topic in &expected {
        let shard = consistent_hash(topic, 2);
        assert!(
            topics[shard].contains(topic),
            "{topic} not on shard {shard}"
        );
        assert!(
            !topics[1 - shard].contains(topic),
            "{topic} also on shard {}",
            1 - shard
        );
    }
    assert!(
        !topics[0].is_empty() && !topics[1].is_empty(),
        "20 names all hashed to one shard"
    );
    for url in &urls {
        assert_eq!(
            subscriber_connections(url).await,
            1,
            "subscriber connections on {url}"
        );
        let patterns: i64 = command(url, redis::cmd("PUBSUB").arg("NUMPAT")).await;
        assert_eq!(patterns, 0, "the layer must never PSUBSCRIBE");
    }
    // Delivery works across both shards.
    for g in 0..5 {
        layer
            .group_send(&format!("group-{g}"), Message::new("m").with("g", g))
            .await
            .unwrap();
    }
    for (i, channel) in channels.iter().enumerate() {
        let message = receive_ok(&layer, channel).await;
        assert_eq!(
            message.get("g").and_then(Value::as_u64),
            Some((i % 5) as u64)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_payloads_are_fernet_tokens_without_ttl() {
    let server = start_server();
    let config = RedisConfig::new()
        .host(server.url())
        .symmetric_encryption_keys(["secret"]);
    let plain = layer(&server);
    let layer = RedisPubSubChannelLayer::new(config).unwrap();
    let channel = layer.new_channel("specific").await.unwrap();
    let plain_channel = plain.new_channel("specific").await.unwrap();
    let mut tap = Tap::new(&server.url(), &[channel.as_str()]).await;
    layer.send(&channel, wire_message()).await.unwrap();
    let (_, payload) = tap.next().await;
    assert!(
        payload.starts_with(b"gAAAAA"),
        "not a Fernet token: {payload:?}"
    );
    let crypter = Crypter::new(&["secret"], None).unwrap();
    assert_eq!(hex(&crypter.decrypt(&payload).unwrap()), wire_packed());
    assert_eq!(receive_ok(&layer, &channel).await, wire_message());
    assert!(wire::unpack(&payload).is_err());

    // A layer without the key cannot read it: counted, not delivered.
    layer.send(&plain_channel, wire_message()).await.unwrap();
    assert_nothing(&plain, &plain_channel).await;
    assert_eq!(plain.undecodable_messages(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_channel_unsubscribes_it_and_its_emptied_groups() {
    let server = start_server();
    let layer = layer(&server);
    let keep = layer.new_channel("specific").await.unwrap();
    let gone = layer.new_channel("specific").await.unwrap();
    layer.group_add("shared", &keep).await.unwrap();
    layer.group_add("shared", &gone).await.unwrap();
    layer.group_add("alone", &gone).await.unwrap();
    layer.delete_channel(&gone).await.unwrap();
    let topics = subscribed_topics(&server.url()).await;
    assert!(
        !topics.contains(&gone) && !topics.contains("asgi__group__alone"),
        "{topics:?}"
    );
    assert!(
        topics.contains(&keep) && topics.contains("asgi__group__shared"),
        "{topics:?}"
    );
    layer
        .group_send("shared", Message::new("still"))
        .await
        .unwrap();
    assert_eq!(
        receive_ok(&layer, &keep).await.message_type(),
        Some("still")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_wakes_receivers_and_releases_connections() {
    let server = start_server();
    let layer: SharedLayer = Arc::new(layer(&server));
    let channel = layer.new_channel("specific").await.unwrap();
    let pending = tokio::spawn({
        let layer = Arc::clone(&layer);
        async move { layer.receive(&channel).await }
    });
    sleep(Duration::from_millis(50)).await;
    layer.close().await.unwrap();
    let result = timeout(WAIT, pending).await.unwrap().unwrap();
    assert!(matches!(result, Err(LayerError::Closed)), "{result:?}");
    let deadline = tokio::time::Instant::now() + WAIT;
    while subscriber_connections(&server.url()).await != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "subscriber connection still open after close"
        );
        sleep(Duration::from_millis(20)).await;
    }
    layer.close().await.unwrap();
}

/// `PUBSUB NUMSUB` of `topics`: how many connections subscribe each.
async fn subscriber_counts(url: &str, topics: &[&str]) -> Vec<i64> {
    let counts: std::collections::HashMap<String, i64> =
        command(url, redis::cmd("PUBSUB").arg("NUMSUB").arg(topics)).await;
    topics
        .iter()
        .map(|topic| counts.get(*topic).copied().unwrap_or_default())
        .collect()
}

/// How many SUBSCRIBE commands a server has run (`INFO commandstats`).
async fn subscribe_commands(url: &str) -> u64 {
    let info: String = command(url, redis::cmd("INFO").arg("commandstats")).await;
    info.lines()
        .find_map(|line| line.strip_prefix("cmdstat_subscribe:calls="))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |calls| {
            calls
                .parse()
                .unwrap_or_else(|error| panic!("bad SUBSCRIBE count {calls:?}: {error}"))
        })
}

async fn recv_ok(receiver: &channels_core::Receiver) -> Message {
    match timeout(WAIT, receiver.recv()).await {
        Ok(Ok(message)) => message,
        Ok(Err(error)) => panic!("recv on {} failed: {error}", receiver.channel()),
        Err(_) => panic!("nothing arrived on {} within {WAIT:?}", receiver.channel()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_last_handle_unsubscribes_its_channel_and_emptied_groups() {
    let server = start_server();
    let url = server.url();
    let layer = layer(&server);
    let gone = layer.new_receiver("specific").await.unwrap();
    let second = layer.open(gone.channel()).await.unwrap();
    let keep = layer.new_receiver("specific").await.unwrap();
    let channel = gone.channel().to_owned();
    layer.group_add("alone", &channel).await.unwrap();
    layer.group_add("shared", &channel).await.unwrap();
    layer.group_add("shared", keep.channel()).await.unwrap();
    let topics = [
        channel.as_str(),
        "asgi__group__alone",
        "asgi__group__shared",
        keep.channel(),
    ];
    assert_eq!(subscriber_counts(&url, &topics).await, [1, 1, 1, 1]);
    assert_eq!(layer.stats().channels, 2);

    drop(gone);
    assert_eq!(layer.stats().channels, 2, "a second handle still holds it");
    drop(second);
    assert_eq!(layer.stats().channels, 1, "released at once, in Drop");
    wait_until(
        "UNSUBSCRIBE of the dropped channel and its emptied group",
        WAIT,
        || async { subscriber_counts(&url, &topics).await == [0, 0, 1, 1] },
    )
    .await;
    let listed = subscribed_topics(&url).await;
    assert!(
        !listed.contains(&channel) && !listed.contains("asgi__group__alone"),
        "{listed:?}"
    );
    // The group it shared still reaches the other member, and only it.
    layer
        .group_send("shared", Message::new("still"))
        .await
        .unwrap();
    assert_eq!(recv_ok(&keep).await.message_type(), Some("still"));
    assert!(timeout(NOTHING, keep.recv()).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_channel_names_stay_subscribed_when_their_handles_drop() {
    let server = start_server();
    let layer = layer(&server);
    let channel = layer.new_channel("specific").await.unwrap();
    let handle = layer.open(&channel).await.unwrap();
    drop(handle);
    assert_eq!(layer.stats().channels, 1, "new_channel names are pinned");
    layer.send(&channel, Message::new("kept")).await.unwrap();
    assert_eq!(
        receive_ok(&layer, &channel).await.message_type(),
        Some("kept")
    );
    layer.delete_channel(&channel).await.unwrap();
    assert_eq!(layer.stats().channels, 0);
    assert!(!subscribed_topics(&server.url()).await.contains(&channel));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_handles_opened_at_once_subscribe_in_few_round_trips() {
    const CLIENTS: usize = 1_000;
    let server = start_server();
    let url = server.url();
    let layer = layer(&server);
    let before = subscribe_commands(&url).await;
    let opens = (0..CLIENTS).map(|_| layer.new_receiver("specific"));
    let handles: Vec<_> = futures::future::join_all(opens)
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap();
    let joins = handles
        .iter()
        .map(|handle| layer.group_add("crowd", handle.channel()));
    for joined in futures::future::join_all(joins).await {
        joined.unwrap();
    }
    // Batched, not one per handle: how many batches depends on how the
    // worker's round trips interleave with the opens (20 on a quiet machine,
    // 27 once under a loaded CI run), so the bound is one per ten handles.
    let commands = subscribe_commands(&url).await - before;
    assert!(
        commands <= (CLIENTS / 10) as u64,
        "{CLIENTS} handles and their group took {commands} SUBSCRIBE commands"
    );
    assert_eq!(subscribed_topics(&url).await.len(), CLIENTS + 1);
    assert_eq!(layer.stats().channels, CLIENTS as u64);

    layer
        .group_send("crowd", Message::new("to.all"))
        .await
        .unwrap();
    let received = futures::future::join_all(handles.iter().map(recv_ok)).await;
    assert!(
        received
            .iter()
            .all(|message| message.message_type() == Some("to.all"))
    );
    assert!(
        received
            .iter()
            .all(|message| message.shares_storage_with(&received[0])),
        "a group payload is decoded once and shared by every member"
    );
    drop(handles);
    assert_eq!(layer.stats().channels, 0);
    wait_until("UNSUBSCRIBE of 1,001 topics", WAIT, || async {
        subscribed_topics(&url).await.is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handles_are_resubscribed_after_a_restart() {
    let mut server = start_server();
    let url = server.url();
    let layer = layer(&server);
    let member = layer.new_receiver("specific").await.unwrap();
    let direct = layer.new_receiver("specific").await.unwrap();
    layer.group_add("again", member.channel()).await.unwrap();
    server.restart().unwrap();
    let topics = [member.channel(), direct.channel(), "asgi__group__again"];
    wait_until(
        "resubscribing every handle on the restarted server",
        WAIT,
        || async { layer.is_subscribed() && subscriber_counts(&url, &topics).await == [1, 1, 1] },
    )
    .await;
    layer
        .group_send("again", Message::new("group.after"))
        .await
        .unwrap();
    layer
        .send(direct.channel(), Message::new("direct.after"))
        .await
        .unwrap();
    assert_eq!(recv_ok(&member).await.message_type(), Some("group.after"));
    assert_eq!(recv_ok(&direct).await.message_type(), Some("direct.after"));
    // A handle opened after the restart joins the same connection.
    let late = layer.new_receiver("specific").await.unwrap();
    layer.group_add("again", late.channel()).await.unwrap();
    layer
        .group_send("again", Message::new("both"))
        .await
        .unwrap();
    assert_eq!(recv_ok(&member).await.message_type(), Some("both"));
    assert_eq!(recv_ok(&late).await.message_type(), Some("both"));
    assert_eq!(subscriber_connections(&url).await, 1);
}
