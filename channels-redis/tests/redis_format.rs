//! R1–R7: what the core layer leaves in Redis, inspected over a raw
//! connection, and data written the way Python channels_redis writes it.
#![allow(clippy::unwrap_used)] // test helpers: a failed setup step should panic right there

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use channels_core::{ChannelLayer, LayerError, Message, Value};
use channels_redis::testing::unique_prefix;
use channels_redis::{RedisChannelLayer, SerializerFormat};
use redis::AsyncCommands;
use support::{WAIT, WIRE_BODY as BODY, config, raw, shared_server, unhex, wire_message};
use tokio::time::timeout;

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[tokio::test]
async fn r1_key_names_and_r3_scores_and_ttls() {
    let prefix = unique_prefix();
    let layer = RedisChannelLayer::new(config().prefix(prefix.clone())).unwrap();
    let mut redis = raw(&shared_server().url()).await;
    let before = now();
    layer
        .send("test-channel-1", Message::new("m"))
        .await
        .unwrap();
    let channel = layer.new_channel("specific").await.unwrap();
    layer.send(&channel, Message::new("m")).await.unwrap();
    layer.group_add("test_group", &channel).await.unwrap();
    let after = now();

    let mut keys: Vec<String> = redis.keys(format!("{prefix}*")).await.unwrap();
    keys.sort();
    let mut expected = vec![
        format!("{prefix}test-channel-1"),
        format!("{prefix}specific.{}!", layer.client_prefix()),
        format!("{prefix}:group:test_group"),
    ];
    expected.sort();
    assert_eq!(keys, expected);

    for key in [&expected[0], &expected[1], &expected[2]] {
        let kind: String = redis::cmd("TYPE")
            .arg(key)
            .query_async(&mut redis)
            .await
            .unwrap();
        assert_eq!(kind, "zset", "{key}");
    }
    let scored: Vec<(Vec<u8>, f64)> = redis
        .zrange_withscores(format!("{prefix}test-channel-1"), 0, -1)
        .await
        .unwrap();
    assert_eq!(scored.len(), 1);
    assert!(
        scored[0].1 >= before - 0.01 && scored[0].1 <= after + 0.01,
        "score is float send time"
    );
    assert!(
        scored[0].1.fract() != 0.0,
        "score keeps sub-second precision"
    );
    let ttl: i64 = redis.ttl(format!("{prefix}test-channel-1")).await.unwrap();
    assert!((55..=60).contains(&ttl), "channel TTL = expiry, got {ttl}");
    let group_ttl: i64 = redis
        .ttl(format!("{prefix}:group:test_group"))
        .await
        .unwrap();
    assert!(
        (86_395..=86_400).contains(&group_ttl),
        "group TTL = group_expiry, got {group_ttl}"
    );
    let members: Vec<(String, f64)> = redis
        .zrange_withscores(format!("{prefix}:group:test_group"), 0, -1)
        .await
        .unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].0, channel);
    assert!(members[0].1 >= before - 0.01 && members[0].1 <= after + 0.01);
}

#[tokio::test]
async fn r2_r4_member_bytes_on_send_and_group_send() {
    let prefix = unique_prefix();
    let layer = RedisChannelLayer::new(config().prefix(prefix.clone())).unwrap();
    let mut redis = raw(&shared_server().url()).await;

    layer.send("plain", wire_message()).await.unwrap();
    let members: Vec<Vec<u8>> = redis.zrange(format!("{prefix}plain"), 0, -1).await.unwrap();
    assert_eq!(members[0].len(), 12 + 1 + BODY.len() / 2);
    assert_eq!(&members[0][12..], unhex(&format!("87{BODY}")).as_slice());

    // A `!` send: string route appended last (R4).
    let channel = layer.new_channel("specific").await.unwrap();
    layer.send(&channel, wire_message()).await.unwrap();
    let key = format!("{prefix}specific.{}!", layer.client_prefix());
    let members: Vec<Vec<u8>> = redis.zrange(&key, 0, -1).await.unwrap();
    // str8 header: the name's length.
    let mut expected = unhex(&format!(
        "88{BODY}b05f5f617367695f6368616e6e656c5f5fd9{:02x}",
        channel.len()
    ));
    expected.extend_from_slice(channel.as_bytes());
    assert_eq!(&members[0][12..], expected.as_slice());
    redis.del::<_, ()>(&key).await.unwrap();

    // group_send: one member per key, the list of that key's channels (R4).
    let other = layer.new_channel("specific").await.unwrap();
    layer.group_add("g", &channel).await.unwrap();
    layer.group_add("g", &other).await.unwrap();
    layer.group_add("g", "plain2").await.unwrap();
    layer.group_send("g", wire_message()).await.unwrap();
    let shared: Vec<Vec<u8>> = redis.zrange(&key, 0, -1).await.unwrap();
    assert_eq!(shared.len(), 1, "one member for both local channels");
    let body = &shared[0][12..];
    let head = unhex(&format!("88{BODY}b05f5f617367695f6368616e6e656c5f5f92"));
    assert_eq!(&body[..head.len()], head.as_slice());
    let unpacked = channels_redis::wire::unpack(body).unwrap();
    let mut route = unpacked.route.unwrap();
    route.sort();
    let mut both = vec![channel.clone(), other.clone()];
    both.sort();
    assert_eq!(route, both);
    let plain: Vec<Vec<u8>> = redis
        .zrange(format!("{prefix}plain2"), 0, -1)
        .await
        .unwrap();
    let mut expected = unhex(&format!("88{BODY}b05f5f617367695f6368616e6e656c5f5f91a6"));
    expected.extend_from_slice(b"plain2");
    assert_eq!(
        &plain[0][12..],
        expected.as_slice(),
        "plain members get a 1-element list"
    );
    // And the layer delivers them without the routing key.
    for name in [&channel, &other, &"plain2".to_owned()] {
        let got = timeout(WAIT, layer.receive(name)).await.unwrap().unwrap();
        assert_eq!(got, wire_message());
    }
}

#[tokio::test]
async fn r2_python_written_members_are_received() {
    // Exactly what channels_redis writes: ZADD key <time> <12 random bytes ‖ packb(msg)>.
    let prefix = unique_prefix();
    let layer = RedisChannelLayer::new(config().prefix(prefix.clone())).unwrap();
    let mut redis = raw(&shared_server().url()).await;
    let mut member = b"0123456789ab".to_vec();
    member.extend(unhex(&format!("87{BODY}")));
    let _: () = redis
        .zadd(format!("{prefix}py.chan"), &member, now())
        .await
        .unwrap();
    let got = timeout(WAIT, layer.receive("py.chan"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, wire_message());

    // Python group_send to one of our `!` channels: list route.
    let channel = layer.new_channel("specific").await.unwrap();
    let mut member = b"0123456789ab".to_vec();
    member.extend(unhex(&format!(
        "88{BODY}b05f5f617367695f6368616e6e656c5f5f91d9{:02x}",
        channel.len()
    )));
    member.extend_from_slice(channel.as_bytes());
    let key = format!("{prefix}specific.{}!", layer.client_prefix());
    let _: () = redis.zadd(&key, &member, now()).await.unwrap();
    let got = timeout(WAIT, layer.receive(&channel))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, wire_message());
    assert!(got.get("__asgi_channel__").is_none());
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn r5_group_send_logs_channels_over_capacity() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);

    let layer = RedisChannelLayer::new(config().capacity(1)).unwrap();
    layer.send("full-one", Message::new("m")).await.unwrap();
    layer.group_add("test-group", "full-one").await.unwrap();
    layer.group_add("test-group", "free-one").await.unwrap();
    layer
        .group_send("test-group", Message::new("g"))
        .await
        .unwrap();
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(log.contains("INFO"), "{log}");
    assert!(
        log.contains("1 of 2 channels over capacity in group test-group"),
        "{log}"
    );
    let got = timeout(WAIT, layer.receive("free-one"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.message_type(), Some("g"));
}

#[tokio::test]
async fn r6_flush_deletes_prefix_star_only() {
    let prefix = unique_prefix();
    let layer = RedisChannelLayer::new(config().prefix(prefix.clone())).unwrap();
    let mut redis = raw(&shared_server().url()).await;
    layer.send("a", Message::new("m")).await.unwrap();
    layer.group_add("g", "a").await.unwrap();
    let _: () = redis.set(format!("{prefix}2longer"), 1).await.unwrap();
    let _: () = redis.set(format!("x{prefix}"), 1).await.unwrap();
    let other = unique_prefix();
    let _: () = redis.set(format!("{other}a"), 1).await.unwrap();
    layer.flush().await.unwrap();
    let left: Vec<String> = redis.keys(format!("{prefix}*")).await.unwrap();
    assert!(left.is_empty(), "{left:?}");
    assert!(redis.exists::<_, bool>(format!("x{prefix}")).await.unwrap());
    assert!(redis.exists::<_, bool>(format!("{other}a")).await.unwrap());
}

#[tokio::test]
async fn r7_json_serializer_bytes() {
    let prefix = unique_prefix();
    let layer = RedisChannelLayer::new(
        config()
            .prefix(prefix.clone())
            .serializer_format(SerializerFormat::Json),
    )
    .unwrap();
    let mut redis = raw(&shared_server().url()).await;
    let message = Message::new("x")
        .with("a", true)
        .with("b", Value::Nil)
        .with(
            "c",
            Value::Map(vec![(Value::from("d"), Value::Array(vec![]))]),
        );
    layer.send("j", message.clone()).await.unwrap();
    let members: Vec<Vec<u8>> = redis.zrange(format!("{prefix}j"), 0, -1).await.unwrap();
    assert_eq!(
        std::str::from_utf8(&members[0][12..]).unwrap(),
        r#"{"type": "x", "a": true, "b": null, "c": {"d": []}}"#
    );
    assert_eq!(
        timeout(WAIT, layer.receive("j")).await.unwrap().unwrap(),
        message
    );
    let bytes = layer
        .send("j", Message::new("x").with("raw", vec![1u8]))
        .await;
    assert!(
        matches!(bytes, Err(LayerError::InvalidMessage { .. })),
        "{bytes:?}"
    );
}

#[tokio::test]
async fn r7_encrypted_members_are_fernet_tokens_with_python_keys() {
    let prefix = unique_prefix();
    let layer = RedisChannelLayer::new(
        config()
            .prefix(prefix.clone())
            .symmetric_encryption_keys(["new-key", "secret"]),
    )
    .unwrap();
    let mut redis = raw(&shared_server().url()).await;
    layer.send("enc", Message::new("x")).await.unwrap();
    let members: Vec<Vec<u8>> = redis.zrange(format!("{prefix}enc"), 0, -1).await.unwrap();
    let token = std::str::from_utf8(&members[0][12..]).unwrap();
    // Decrypt with the key Python derives from the first secret.
    let fernet = fernet::Fernet::new(&channels_redis::fernet_key(b"new-key")).unwrap();
    assert_eq!(fernet.decrypt(token).unwrap(), unhex("81a474797065a178"));
    assert_eq!(
        timeout(WAIT, layer.receive("enc")).await.unwrap().unwrap(),
        Message::new("x")
    );

    // A Python-made token under the second key (WIRE §8) is accepted while fresh:
    // re-encrypt "now" with that key, as a Python sender with keys ["secret"] would.
    let python = fernet::Fernet::new(&channels_redis::fernet_key(b"secret")).unwrap();
    let mut member = b"0123456789ab".to_vec();
    member.extend(python.encrypt(&unhex("81a474797065a178")).into_bytes());
    let _: () = redis
        .zadd(format!("{prefix}enc"), &member, now())
        .await
        .unwrap();
    assert_eq!(
        timeout(WAIT, layer.receive("enc")).await.unwrap().unwrap(),
        Message::new("x")
    );

    // A token older than expiry + 10 s is refused: the message is dropped.
    let old = python.encrypt_at_time(&unhex("81a474797065a178"), now() as u64 - 71);
    let mut member = b"0123456789ab".to_vec();
    member.extend(old.into_bytes());
    let _: () = redis
        .zadd(format!("{prefix}enc"), &member, now())
        .await
        .unwrap();
    assert!(
        timeout(Duration::from_millis(1500), layer.receive("enc"))
            .await
            .is_err()
    );
}
