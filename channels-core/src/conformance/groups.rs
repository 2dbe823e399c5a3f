//! Groups: G1–G5.

use super::{
    DELIVERY_WAIT, LayerFactory, NOTHING_WAIT, assert_nothing_within, assert_nothing_within_all,
    assert_same_message, default_layer, finish, group_add_ok, group_discard_ok, group_send_ok,
    new_channel, numbered, receive_type, receive_within, send_ok,
};
use crate::message::{Message, RESERVED_CHANNEL_KEY};

/// G1: add c1, c2, c3, discard c2, group_send: c1 and c3 get it within 1 s,
/// c2 gets nothing in 1 s.
pub async fn g1_groups_basic(factory: &dyn LayerFactory) {
    let layer = default_layer(factory).await;
    let c1 = new_channel(&*layer, "test-gr-chan-1").await;
    let c2 = new_channel(&*layer, "test-gr-chan-2").await;
    let c3 = new_channel(&*layer, "test-gr-chan-3").await;
    group_add_ok(&*layer, "test-group", &c1).await;
    group_add_ok(&*layer, "test-group", &c2).await;
    group_add_ok(&*layer, "test-group", &c3).await;
    group_discard_ok(&*layer, "test-group", &c2).await;
    group_send_ok(&*layer, "test-group", numbered(1)).await;
    tokio::join!(
        receive_type(&*layer, &c1, DELIVERY_WAIT, "message.1"),
        receive_type(&*layer, &c3, DELIVERY_WAIT, "message.1"),
        assert_nothing_within(&*layer, &c2, NOTHING_WAIT),
    );
    finish(&*layer).await;
}

/// G2: three `new_channel("test-gr-chan")` members (one shared Redis key) each
/// get exactly one copy.
pub async fn g2_groups_same_prefix(factory: &dyn LayerFactory) {
    let layer = default_layer(factory).await;
    let mut members = Vec::new();
    for _ in 0..3 {
        let channel = new_channel(&*layer, "test-gr-chan").await;
        group_add_ok(&*layer, "test-group", &channel).await;
        members.push(channel);
    }
    group_send_ok(&*layer, "test-group", numbered(1)).await;
    for channel in &members {
        receive_type(&*layer, channel, DELIVERY_WAIT, "message.1").await;
    }
    let members: Vec<&str> = members.iter().map(String::as_str).collect();
    assert_nothing_within_all(&*layer, &members, NOTHING_WAIT).await;
    finish(&*layer).await;
}

/// G3: discarding a non-member is fine (and does not stop a later add);
/// group_send to an empty group succeeds and delivers nothing.
pub async fn g3_discard_non_member_and_empty_group(factory: &dyn LayerFactory) {
    let layer = default_layer(factory).await;
    let channel = new_channel(&*layer, "specific").await;
    let bystander = new_channel(&*layer, "specific").await;
    group_discard_ok(&*layer, "test-group", &channel).await;
    group_discard_ok(&*layer, "never-created", &channel).await;
    group_send_ok(&*layer, "never-created", numbered(1)).await;

    group_add_ok(&*layer, "test-group", &channel).await;
    group_send_ok(&*layer, "test-group", numbered(2)).await;
    receive_type(&*layer, &channel, DELIVERY_WAIT, "message.2").await;

    group_discard_ok(&*layer, "test-group", &channel).await;
    group_discard_ok(&*layer, "test-group", &channel).await;
    group_send_ok(&*layer, "test-group", numbered(3)).await;
    assert_nothing_within_all(&*layer, &[&channel, &bystander], NOTHING_WAIT).await;
    finish(&*layer).await;
}

/// G4: a channel added twice gets one copy per group_send.
pub async fn g4_add_twice_one_copy(factory: &dyn LayerFactory) {
    let layer = default_layer(factory).await;
    let channel = new_channel(&*layer, "specific").await;
    group_add_ok(&*layer, "test-group", &channel).await;
    group_add_ok(&*layer, "test-group", &channel).await;
    group_send_ok(&*layer, "test-group", numbered(1)).await;
    receive_type(&*layer, &channel, DELIVERY_WAIT, "message.1").await;
    assert_nothing_within(&*layer, &channel, NOTHING_WAIT).await;
    finish(&*layer).await;
}

/// G5: a received message never contains `__asgi_channel__`, whether it came
/// by send or by group_send to members sharing a prefix.
pub async fn g5_no_routing_key_in_messages(factory: &dyn LayerFactory) {
    let layer = default_layer(factory).await;
    let first = new_channel(&*layer, "specific").await;
    let second = new_channel(&*layer, "specific").await;
    let other = new_channel(&*layer, "other-prefix").await;
    let sent = Message::new("test.message").with("text", "hello");
    send_ok(&*layer, &first, sent.clone()).await;
    let received = receive_within(&*layer, &first, DELIVERY_WAIT).await;
    assert!(
        received.get(RESERVED_CHANNEL_KEY).is_none(),
        "send: received message carries `{RESERVED_CHANNEL_KEY}`: {received:?}"
    );
    assert_same_message(&received, &sent);

    for channel in [&first, &second, &other] {
        group_add_ok(&*layer, "test-group", channel).await;
    }
    group_send_ok(&*layer, "test-group", sent.clone()).await;
    for channel in [&first, &second, &other] {
        let received = receive_within(&*layer, channel, DELIVERY_WAIT).await;
        assert!(
            received.get(RESERVED_CHANNEL_KEY).is_none(),
            "group_send: message on `{channel}` carries `{RESERVED_CHANNEL_KEY}`: {received:?}"
        );
        assert_same_message(&received, &sent);
        if let Err(error) = received.validate() {
            panic!("received an invalid message on `{channel}`: {error}");
        }
    }
    finish(&*layer).await;
}
