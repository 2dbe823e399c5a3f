//! Process-local (`!`) channels and receive backups: L3, L5, K2, K4.
#![allow(clippy::unwrap_used)] // test helpers: a failed setup step should panic right there

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use channels_core::{ChannelLayer, LayerError, Message, NameProblem};
use channels_redis::RedisChannelLayer;
use channels_redis::testing::unique_prefix;
use redis::AsyncCommands;
use support::{WAIT, config, layer, raw, shared_server, wait_until};
use tokio::time::timeout;

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[tokio::test]
async fn l3_client_prefixes_and_names_never_repeat() {
    let mut prefixes = HashSet::new();
    let mut names = HashSet::new();
    for _ in 0..50 {
        let layer = layer();
        let prefix = layer.client_prefix().to_owned();
        assert_eq!(prefix.len(), 32);
        assert!(
            prefix
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert!(prefixes.insert(prefix));
        for _ in 0..20 {
            assert!(names.insert(layer.new_channel("specific").await.unwrap()));
        }
    }
}

#[tokio::test]
async fn l5_receive_on_foreign_client_prefix_fails() {
    let shared = config();
    let ours = RedisChannelLayer::new(shared.clone()).unwrap();
    let theirs = RedisChannelLayer::new(shared).unwrap();
    let foreign = theirs.new_channel("specific").await.unwrap();
    for name in ["not-client-prefix!local_part", foreign.as_str()] {
        let result = timeout(WAIT, ours.receive(name)).await.unwrap();
        assert!(
            matches!(
                result,
                Err(LayerError::InvalidChannelName {
                    problem: NameProblem::ForeignProcessLocal,
                    ..
                })
            ),
            "{name}: {result:?}"
        );
    }
    // Sending to a foreign channel is fine: its owner receives it.
    ours.send(&foreign, Message::new("hi")).await.unwrap();
    let got = timeout(WAIT, theirs.receive(&foreign))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.message_type(), Some("hi"));
}

#[tokio::test]
async fn k2_inflight_backup_is_restored_first_for_process_local_channels() {
    let prefix = unique_prefix();
    let layer = RedisChannelLayer::new(config().prefix(prefix.clone())).unwrap();
    let channel = layer.new_channel("specific").await.unwrap();
    let key = format!("{prefix}specific.{}!", layer.client_prefix());
    let mut redis = raw(&shared_server().url()).await;
    // A receive that popped this and died before finishing left it in $inflight.
    let mut member = b"crashed-abcd".to_vec();
    member.extend(
        channels_redis::wire::pack(
            &Message::new("restored"),
            channels_redis::wire::Route::Channel(&channel),
        )
        .unwrap(),
    );
    let _: () = redis
        .zadd(format!("{key}$inflight"), &member, now() - 1.0)
        .await
        .unwrap();
    layer.send(&channel, Message::new("newer")).await.unwrap();
    let first = timeout(WAIT, layer.receive(&channel))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.message_type(), Some("restored"));
    let second = timeout(WAIT, layer.receive(&channel))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.message_type(), Some("newer"));
    // Everything delivered is acknowledged (with the loop's next pop): no
    // backup left behind.
    let inflight = format!("{key}$inflight");
    wait_until(
        "the restored backup's acknowledgement",
        Duration::from_secs(5),
        || {
            let mut redis = redis.clone();
            let inflight = inflight.clone();
            async move { redis.zcard::<_, i64>(inflight).await.unwrap() == 0 }
        },
    )
    .await;
}

#[tokio::test]
async fn k2_inflight_backup_is_restored_first_for_plain_channels() {
    let prefix = unique_prefix();
    let layer = RedisChannelLayer::new(config().prefix(prefix.clone())).unwrap();
    let mut redis = raw(&shared_server().url()).await;
    let mut member = b"crashed-abcd".to_vec();
    member.extend(
        channels_redis::wire::pack(&Message::new("restored"), channels_redis::wire::Route::None)
            .unwrap(),
    );
    let _: () = redis
        .zadd(format!("{prefix}jobs$inflight"), &member, now() - 1.0)
        .await
        .unwrap();
    layer.send("jobs", Message::new("newer")).await.unwrap();
    let first = timeout(WAIT, layer.receive("jobs")).await.unwrap().unwrap();
    assert_eq!(first.message_type(), Some("restored"));
    let second = timeout(WAIT, layer.receive("jobs")).await.unwrap().unwrap();
    assert_eq!(second.message_type(), Some("newer"));
    let left: i64 = redis.zcard(format!("{prefix}jobs$inflight")).await.unwrap();
    assert_eq!(
        left, 0,
        "the backup is dropped once the message is buffered"
    );
}

#[tokio::test]
async fn k2_cancelled_plain_receive_loses_nothing() {
    let layer = Arc::new(layer());
    for i in 0..20 {
        // Cancel a receive that is blocked in BZPOPMIN, then send: the pop
        // finishes in the background and the next receive gets the message.
        let pending = timeout(Duration::from_millis(30), layer.receive("cancelled")).await;
        assert!(pending.is_err(), "nothing was sent yet");
        layer
            .send("cancelled", Message::new("m").with("i", i))
            .await
            .unwrap();
        let got = timeout(Duration::from_secs(6), layer.receive("cancelled"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.get("i").and_then(|v| v.as_i64()), Some(i));
    }
}

#[tokio::test]
async fn k4_local_buffer_keeps_the_newest_capacity_messages() {
    let prefix = unique_prefix();
    let layer =
        Arc::new(RedisChannelLayer::new(config().prefix(prefix.clone()).capacity(100)).unwrap());
    let quiet = layer.new_channel("specific").await.unwrap();
    let busy = layer.new_channel("specific").await.unwrap();
    // Start the receive loop by receiving on another channel of the layer.
    let waiter = {
        let layer = layer.clone();
        tokio::spawn(async move { layer.receive(&quiet).await })
    };
    let key = format!("{prefix}specific.{}!", layer.client_prefix());
    let mut redis = raw(&shared_server().url()).await;
    for round in 0..3 {
        for i in 0..100 {
            layer
                .send(&busy, Message::new("m").with("i", round * 100 + i))
                .await
                .unwrap();
        }
        // Wait until the loop has moved this round into the local buffer.
        timeout(Duration::from_secs(5), async {
            while redis.zcard::<_, i64>(&key).await.unwrap() > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap();
    }
    // 300 arrived into a buffer of 100: the 200 oldest were dropped.
    timeout(Duration::from_secs(1), async {
        while layer.dropped_messages() < 200 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    assert_eq!(layer.dropped_messages(), 200);
    for expected in 200..300 {
        let got = timeout(WAIT, layer.receive(&busy)).await.unwrap().unwrap();
        assert_eq!(got.get("i").and_then(|v| v.as_i64()), Some(expected));
    }
    assert!(
        timeout(Duration::from_millis(300), layer.receive(&busy))
            .await
            .is_err()
    );
    waiter.abort();
}

#[tokio::test]
async fn close_ends_waiting_receives_and_the_layer_works_afterwards() {
    let layer = Arc::new(layer());
    let channel = layer.new_channel("specific").await.unwrap();
    let waiting = {
        let layer = layer.clone();
        let channel = channel.clone();
        tokio::spawn(async move { layer.receive(&channel).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    layer.close().await.unwrap();
    let result = timeout(WAIT, waiting).await.unwrap().unwrap();
    assert!(matches!(result, Err(LayerError::Closed)), "{result:?}");
    layer.close().await.unwrap();
    layer.send(&channel, Message::new("again")).await.unwrap();
    let got = timeout(Duration::from_secs(3), layer.receive(&channel))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.message_type(), Some("again"));
}

#[test]
fn layer_and_its_futures_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>(_: &T) {}
    fn assert_send<T: Send>(_: &T) {}
    let layer = RedisChannelLayer::new(channels_redis::RedisConfig::new()).unwrap();
    assert_send_sync(&layer);
    let shared: channels_core::SharedLayer = Arc::new(layer);
    let receive = shared.receive("x");
    assert_send(&receive);
    let group_send = shared.group_send("g", Message::new("m"));
    assert_send(&group_send);
}

#[tokio::test]
async fn k2_cancelled_plain_receive_hands_the_message_back_to_redis() {
    // Two processes share a plain channel; one cancels its receive while its
    // pop is blocked in Redis. The message it pops goes back to Redis, so
    // the other process gets it.
    let shared = config();
    let quitter = RedisChannelLayer::new(shared.clone()).unwrap();
    let worker = RedisChannelLayer::new(shared).unwrap();
    let cancelled = timeout(Duration::from_millis(50), quitter.receive("work")).await;
    assert!(cancelled.is_err());
    quitter.send("work", Message::new("job")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let got = timeout(Duration::from_secs(6), worker.receive("work"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.message_type(), Some("job"));
}
