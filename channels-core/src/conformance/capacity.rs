//! Capacity: C1–C7 (queue layers).

use super::{
    DELIVERY_WAIT, LayerFactory, NOTHING_WAIT, assert_nothing_within, assert_nothing_within_all,
    finish, group_add_ok, group_send_ok, new_channel, numbered, receive_type, send_ok, typed,
};
use crate::capacity::CapacityPattern;
use crate::config::{DEFAULT_CAPACITY, LayerConfig};
use crate::error::LayerError;
use crate::layer::ChannelLayer;

fn pattern(pattern: Result<CapacityPattern, LayerError>) -> CapacityPattern {
    pattern
        .unwrap_or_else(|error| panic!("a conformance capacity pattern does not compile: {error}"))
}

/// Sends `message.<n>` for n in `numbers`, each of which must succeed.
async fn send_numbered(
    layer: &dyn ChannelLayer,
    channel: &str,
    numbers: std::ops::RangeInclusive<u64>,
) {
    for n in numbers {
        send_ok(layer, channel, numbered(n)).await;
    }
}

/// Asserts that one more send to `channel` fails with `ChannelFull` naming the
/// channel and `capacity`.
async fn assert_full(layer: &dyn ChannelLayer, channel: &str, capacity: usize) {
    match layer.send(channel, typed("over.capacity")).await {
        Err(LayerError::ChannelFull {
            channel: full,
            capacity: reported,
        }) => {
            assert_eq!(full, channel, "ChannelFull names the wrong channel");
            assert_eq!(
                reported, capacity,
                "ChannelFull on `{channel}` reports the wrong capacity"
            );
        }
        other => panic!(
            "send to `{channel}` holding {capacity} messages: expected ChannelFull, got {other:?}"
        ),
    }
}

/// Asserts that `channel` takes exactly `capacity` messages.
async fn assert_takes(layer: &dyn ChannelLayer, channel: &str, capacity: usize) {
    for n in 0..capacity {
        if let Err(error) = layer.send(channel, numbered(n as u64)).await {
            panic!(
                "send {} of {capacity} to `{channel}` failed: {error}",
                n + 1
            );
        }
    }
    assert_full(layer, channel, capacity).await;
}

/// C1 \[Q\]: with capacity 3 the 4th send raises ChannelFull; with the default
/// capacity the 101st does.
pub async fn c1_send_capacity(factory: &dyn LayerFactory) {
    let layer = factory.create(LayerConfig::default().capacity(3)).await;
    assert_takes(&*layer, "test-channel-1", 3).await;
    finish(&*layer).await;

    let layer = factory.create(LayerConfig::default()).await;
    assert_takes(&*layer, "test-channel-1", DEFAULT_CAPACITY).await;
    finish(&*layer).await;
}

/// C2 \[Q\]: `channel_capacity {"one": 1}` with capacity 3: the 2nd send to
/// "one" raises ChannelFull; "two" still takes 3.
pub async fn c2_send_specific_capacity(factory: &dyn LayerFactory) {
    let config = LayerConfig::default()
        .capacity(3)
        .channel_capacity(pattern(CapacityPattern::glob("one")), 1);
    let layer = factory.create(config).await;
    assert_takes(&*layer, "one", 1).await;
    assert_takes(&*layer, "two", 3).await;
    assert_takes(&*layer, "one2", 3).await;
    finish(&*layer).await;
}

/// C3 \[Q\]: a string pattern is a whole-name glob, a regex matches from the
/// start; the first matching rule wins, else the default applies.
pub async fn c3_capacity_patterns(factory: &dyn LayerFactory) {
    let config = LayerConfig::default()
        .capacity(3)
        .channel_capacity(pattern(CapacityPattern::glob("http.response!*")), 1)
        .channel_capacity(pattern(CapacityPattern::regex("web")), 2)
        .channel_capacity(pattern(CapacityPattern::glob("first.*")), 1)
        .channel_capacity(pattern(CapacityPattern::glob("first.second*")), 2)
        .channel_capacity(pattern(CapacityPattern::glob("ch[0-9]?")), 4);
    let expected = [
        ("http.response!abc", 1),  // glob matches the whole name
        ("http.response", 3),      // ... so the `!` is required
        ("xhttp.response!abc", 3), // ... and it is anchored at the start
        ("httpXresponse!abc", 3),  // `.` is literal in a glob
        ("websocket.send", 2),     // a regex need only match a prefix
        ("a.websocket", 3),        // ... from the start of the name
        ("first.second.x", 1),     // first matching rule wins
        ("ch1z", 4),               // glob classes and `?`
        ("chaz", 3),
        ("other", 3), // no rule: the default
    ];
    for (channel, capacity) in expected {
        assert_eq!(
            config.capacities.capacity_for(channel),
            capacity,
            "capacity_for({channel:?})"
        );
    }
    let layer = factory.create(config).await;
    for (channel, capacity) in expected {
        assert_takes(&*layer, channel, capacity).await;
    }
    finish(&*layer).await;
}

/// C4 \[Q\]: group_send never raises ChannelFull: 5 group_sends to a
/// capacity-3 member all succeed.
pub async fn c4_group_send_never_full(factory: &dyn LayerFactory) {
    let layer = factory.create(LayerConfig::default().capacity(3)).await;
    group_add_ok(&*layer, "test-group", "test-gr-chan-1").await;
    for n in 1..=5 {
        group_send_ok(&*layer, "test-group", numbered(n)).await;
    }
    finish(&*layer).await;
}

/// C5 \[Q\]: capacity 3 and 4 group_sends: message.1–3 arrive, then nothing in 1 s.
pub async fn c5_group_send_capacity(factory: &dyn LayerFactory) {
    let layer = factory.create(LayerConfig::default().capacity(3)).await;
    let channel = new_channel(&*layer, "specific").await;
    group_add_ok(&*layer, "test-group", &channel).await;
    for n in 1..=4 {
        group_send_ok(&*layer, "test-group", numbered(n)).await;
    }
    for n in 1..=3 {
        receive_type(&*layer, &channel, DELIVERY_WAIT, &format!("message.{n}")).await;
    }
    assert_nothing_within(&*layer, &channel, NOTHING_WAIT).await;
    finish(&*layer).await;
}

/// C6 \[Q\]: ch2 holds message.0; 3 group_sends: ch1 gets 1, 2, 3 and ch2 gets
/// 0, 1, 2 but not 3.
pub async fn c6_group_send_capacity_multiple_channels(factory: &dyn LayerFactory) {
    let layer = factory.create(LayerConfig::default().capacity(3)).await;
    let first = new_channel(&*layer, "specific").await;
    let second = new_channel(&*layer, "channel_2").await;
    group_add_ok(&*layer, "test-group", &first).await;
    group_add_ok(&*layer, "test-group", &second).await;
    send_ok(&*layer, &second, numbered(0)).await;
    for n in 1..=3 {
        group_send_ok(&*layer, "test-group", numbered(n)).await;
    }
    for n in 1..=3 {
        receive_type(&*layer, &first, DELIVERY_WAIT, &format!("message.{n}")).await;
    }
    for n in 0..=2 {
        receive_type(&*layer, &second, DELIVERY_WAIT, &format!("message.{n}")).await;
    }
    assert_nothing_within_all(&*layer, &[&first, &second], NOTHING_WAIT).await;
    finish(&*layer).await;
}

/// C7 \[Q\]: ChannelFull leaves the queue unchanged, and each receive frees
/// exactly one slot.
pub async fn c7_full_leaves_queue_unchanged(factory: &dyn LayerFactory) {
    let layer = factory.create(LayerConfig::default().capacity(3)).await;
    let channel = "test-channel-1";
    send_numbered(&*layer, channel, 1..=3).await;
    assert_full(&*layer, channel, 3).await;
    receive_type(&*layer, channel, DELIVERY_WAIT, "message.1").await;
    send_ok(&*layer, channel, numbered(4)).await;
    assert_full(&*layer, channel, 3).await;
    for n in 2..=4 {
        receive_type(&*layer, channel, DELIVERY_WAIT, &format!("message.{n}")).await;
    }
    assert_nothing_within(&*layer, channel, NOTHING_WAIT).await;
    finish(&*layer).await;
}
