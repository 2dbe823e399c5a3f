//! Message validation: V1, V2.

use super::{
    DELIVERY_WAIT, LayerFactory, default_layer, finish, group_add_ok, new_channel, numbered,
    receive_type, send_ok,
};
use crate::error::LayerError;
use crate::layer::ChannelLayer;
use crate::message::{Message, RESERVED_CHANNEL_KEY, Value};

/// Asserts that `send` and `group_send` both refuse `message` with
/// InvalidMessage.
async fn assert_refused(layer: &dyn ChannelLayer, channel: &str, message: &Message, what: &str) {
    let sent = layer.send(channel, message.clone()).await;
    assert!(
        matches!(sent, Err(LayerError::InvalidMessage { .. })),
        "send of a message {what}: expected InvalidMessage, got {sent:?}"
    );
    let sent = layer.group_send("test-group", message.clone()).await;
    assert!(
        matches!(sent, Err(LayerError::InvalidMessage { .. })),
        "group_send of a message {what}: expected InvalidMessage, got {sent:?}"
    );
}

/// Asserts that the refused messages queued nothing: the next message on
/// `channel` is the one sent now.
async fn assert_nothing_queued(layer: &dyn ChannelLayer, channel: &str) {
    send_ok(layer, channel, numbered(99)).await;
    receive_type(layer, channel, DELIVERY_WAIT, "message.99").await;
}

fn assert_invalid(result: Result<Message, LayerError>, what: &str) {
    assert!(
        matches!(result, Err(LayerError::InvalidMessage { .. })),
        "Message::from_value of {what}: expected InvalidMessage, got {result:?}"
    );
}

/// V1: a non-map message, or one already holding `__asgi_channel__`, raises
/// InvalidMessage (at decoding for non-maps: [`Message`] is always a map).
pub async fn v1_message_must_be_map_without_routing_key(factory: &dyn LayerFactory) {
    for (value, what) in [
        (Value::from(3), "an integer"),
        (Value::from("test.message"), "a string"),
        (Value::Nil, "nil"),
        (Value::Binary(b"{}".to_vec()), "bytes"),
        (
            Value::Array(vec![Value::from("type"), Value::from("x")]),
            "a list",
        ),
        (
            Value::Map(vec![(Value::from(1), Value::from("x"))]),
            "a map with an integer key",
        ),
        (
            Value::Map(vec![
                (Value::from("type"), Value::from("test.message")),
                (Value::from(RESERVED_CHANNEL_KEY), Value::from("specific!x")),
            ]),
            "a map holding the routing key",
        ),
    ] {
        assert_invalid(Message::from_value(value), what);
    }

    let layer = default_layer(factory).await;
    let channel = new_channel(&*layer, "specific").await;
    group_add_ok(&*layer, "test-group", &channel).await;
    let routed = Message::new("test.message").with(RESERVED_CHANNEL_KEY, channel.as_str());
    assert_refused(&*layer, &channel, &routed, "holding `__asgi_channel__`").await;
    let listed = Message::new("test.message").with(
        RESERVED_CHANNEL_KEY,
        Value::Array(vec![Value::from(channel.as_str())]),
    );
    assert_refused(
        &*layer,
        &channel,
        &listed,
        "holding a `__asgi_channel__` list",
    )
    .await;
    assert_nothing_queued(&*layer, &channel).await;
    finish(&*layer).await;
}

/// V2 (our rule, stricter than Django's): a missing or non-string `type`
/// raises InvalidMessage.
pub async fn v2_message_needs_string_type(factory: &dyn LayerFactory) {
    assert_invalid(
        Message::from_value(Value::Map(vec![(Value::from("text"), Value::from("x"))])),
        "a map without `type`",
    );
    assert_invalid(
        Message::from_value(Value::Map(vec![(Value::from("type"), Value::from(1))])),
        "a map whose `type` is an integer",
    );

    let layer = default_layer(factory).await;
    let channel = new_channel(&*layer, "specific").await;
    group_add_ok(&*layer, "test-group", &channel).await;
    let cases = [
        (Message::default().with("text", "x"), "without `type`"),
        (Message::default(), "with no fields"),
        (
            Message::from_fields_unchecked(vec![("text".to_owned(), Value::from("x"))]),
            "built unchecked without `type`",
        ),
        (
            Message::new("x").with("type", 3),
            "whose `type` is an integer",
        ),
        (
            Message::new("x").with("type", Value::Nil),
            "whose `type` is nil",
        ),
        (
            Message::new("x").with("type", Value::Binary(b"test.message".to_vec())),
            "whose `type` is bytes",
        ),
        (
            Message::new("x").with("type", Value::Array(vec![Value::from("a")])),
            "whose `type` is a list",
        ),
    ];
    for (message, what) in &cases {
        assert_refused(&*layer, &channel, message, what).await;
    }
    assert_nothing_queued(&*layer, &channel).await;
    finish(&*layer).await;
}
