//! Send and receive: S1–S5.

use super::{
    DELIVERY_WAIT, LayerFactory, NOTHING_WAIT, assert_nothing_within, assert_same_message,
    default_layer, finish, group_add_ok, group_send_ok, new_channel, numbered, receive_type,
    receive_within, round_trip, send_ok,
};
use crate::message::{Message, Value};

/// S1: a sent message is received as an equal map.
pub async fn s1_send_receive(factory: &dyn LayerFactory) {
    let layer = default_layer(factory).await;
    let channel = new_channel(&*layer, "specific").await;
    let sent = Message::new("test.message").with("text", "Ahoy-hoy!");
    send_ok(&*layer, &channel, sent.clone()).await;
    let received = receive_within(&*layer, &channel, DELIVERY_WAIT).await;
    assert_same_message(&received, &sent);
    finish(&*layer).await;
}

/// S2: messages on one channel arrive in the order they were sent.
pub async fn s2_multi_send_receive(factory: &dyn LayerFactory) {
    let layer = default_layer(factory).await;
    let channel = new_channel(&*layer, "specific").await;
    for n in 1..=3 {
        send_ok(&*layer, &channel, numbered(n)).await;
    }
    for n in 1..=3 {
        receive_type(&*layer, &channel, DELIVERY_WAIT, &format!("message.{n}")).await;
    }
    finish(&*layer).await;
}

/// S3: a receive with nothing sent is still pending at 1 s; a receive started
/// 0.1 s before a send gets that message.
pub async fn s3_receive_waits(factory: &dyn LayerFactory) {
    let layer = default_layer(factory).await;
    let channel = new_channel(&*layer, "specific").await;
    assert_nothing_within(&*layer, &channel, NOTHING_WAIT).await;
    let sent = Message::new("test.message").with("text", "late");
    let received = round_trip(&layer, &channel, sent.clone()).await;
    assert_same_message(&received, &sent);
    finish(&*layer).await;
}

/// S4: changing a message after sending it does not change what is received,
/// and changing one received copy of a group message leaves the others alone.
pub async fn s4_messages_are_copies(factory: &dyn LayerFactory) {
    let layer = default_layer(factory).await;
    let channel = new_channel(&*layer, "specific").await;
    let mut message = Message::new("test.message").with("text", "original");
    send_ok(&*layer, &channel, message.clone()).await;
    message.insert("text", "changed");
    message.insert("extra", true);
    let received = receive_within(&*layer, &channel, DELIVERY_WAIT).await;
    assert_same_message(
        &received,
        &Message::new("test.message").with("text", "original"),
    );

    let other = new_channel(&*layer, "specific").await;
    group_add_ok(&*layer, "s4-group", &channel).await;
    group_add_ok(&*layer, "s4-group", &other).await;
    let sent = Message::new("group.message").with("items", Value::Array(vec![1.into(), 2.into()]));
    group_send_ok(&*layer, "s4-group", sent.clone()).await;
    let mut first = receive_within(&*layer, &channel, DELIVERY_WAIT).await;
    first.insert("items", Value::Nil);
    let second = receive_within(&*layer, &other, DELIVERY_WAIT).await;
    assert_same_message(&second, &sent);
    finish(&*layer).await;
}

/// S5 \[Q\]: plain (non-process-local) names work for send, receive and group
/// membership.
pub async fn s5_plain_names(factory: &dyn LayerFactory) {
    let layer = default_layer(factory).await;
    let sent = Message::new("test.message").with("text", "Ahoy-hoy!");
    send_ok(&*layer, "test-channel-1", sent.clone()).await;
    let received = receive_within(&*layer, "test-channel-1", DELIVERY_WAIT).await;
    assert_same_message(&received, &sent);

    group_add_ok(&*layer, "test-group", "test-gr-chan-1").await;
    group_add_ok(&*layer, "test-group", "test-gr-chan-2").await;
    group_send_ok(&*layer, "test-group", numbered(1)).await;
    receive_type(&*layer, "test-gr-chan-1", DELIVERY_WAIT, "message.1").await;
    receive_type(&*layer, "test-gr-chan-2", DELIVERY_WAIT, "message.1").await;
    finish(&*layer).await;
}
