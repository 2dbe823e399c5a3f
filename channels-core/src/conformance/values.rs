//! Values survive the layer: X5, X6.

use super::{
    DELIVERY_WAIT, LayerFactory, SLOW_DELIVERY_WAIT, assert_same_message, default_layer, finish,
    group_add_ok, group_send_ok, new_channel, receive_within, send_ok,
};
use crate::message::{Message, Value};

fn all_bytes() -> Vec<u8> {
    (0..=u8::MAX).collect()
}

/// One message holding every kind of value a layer must carry.
fn every_value() -> Message {
    let nested = Value::Map(vec![
        (Value::from("level"), Value::from(1)),
        (
            Value::from("inner"),
            Value::Map(vec![
                (Value::from("bytes"), Value::Binary(vec![0, 1, 2])),
                (
                    Value::from("list"),
                    Value::Array(vec![Value::from("x"), Value::Nil, Value::from(-7)]),
                ),
                (Value::from("empty"), Value::Map(Vec::new())),
            ]),
        ),
    ]);
    Message::new("values.check")
        .with("str", "Ahoy-hoy!")
        .with("empty_str", "")
        .with("non_ascii", "héllo ✓ 日本語 🎉 ¯\\_(ツ)_/¯")
        .with("i64_min", i64::MIN)
        .with("i64_max", i64::MAX)
        .with("u64_max", u64::MAX)
        .with("zero", 0)
        .with("negative", -1)
        .with("float", std::f64::consts::PI)
        .with("negative_float", -1.5e300)
        .with("true", true)
        .with("false", false)
        .with("null", Value::Nil)
        .with("bytes_empty", Value::Binary(Vec::new()))
        .with("bytes_all", Value::Binary(all_bytes()))
        .with(
            "list",
            Value::Array(vec![
                Value::from(1),
                Value::from("two"),
                Value::from(3.5),
                Value::Nil,
                Value::Binary(vec![0xff]),
                Value::Array(Vec::new()),
            ]),
        )
        .with("empty_list", Value::Array(Vec::new()))
        .with("nested", nested)
}

fn assert_values(received: &Message, sent: &Message, how: &str) {
    for key in ["bytes_empty", "bytes_all"] {
        assert!(
            matches!(received.get(key), Some(Value::Binary(_))),
            "{how}: `{key}` did not stay bytes: {:?}",
            received.get(key)
        );
    }
    assert_eq!(
        received.get("bytes_all"),
        Some(&Value::Binary(all_bytes())),
        "{how}: bytes 0x00-0xFF changed"
    );
    assert_eq!(
        received.get("u64_max").and_then(Value::as_u64),
        Some(u64::MAX),
        "{how}: u64::MAX changed"
    );
    assert_eq!(
        received.get("i64_min").and_then(Value::as_i64),
        Some(i64::MIN),
        "{how}: i64::MIN changed"
    );
    assert_eq!(
        received.get("float").and_then(Value::as_f64),
        Some(std::f64::consts::PI),
        "{how}: the float changed"
    );
    assert_same_message(received, sent);
}

/// X5: strings (empty, non-ASCII), i64 min/max, u64 max, floats, booleans,
/// null, bytes (empty and every byte value, staying bytes), lists and nested
/// maps round-trip unchanged by send and by group_send.
pub async fn x5_value_round_trip(factory: &dyn LayerFactory) {
    let layer = default_layer(factory).await;
    let channel = new_channel(&*layer, "specific").await;
    let sent = every_value();
    send_ok(&*layer, &channel, sent.clone()).await;
    let received = receive_within(&*layer, &channel, DELIVERY_WAIT).await;
    assert_values(&received, &sent, "send");

    group_add_ok(&*layer, "test-group", &channel).await;
    group_send_ok(&*layer, "test-group", sent.clone()).await;
    let received = receive_within(&*layer, &channel, DELIVERY_WAIT).await;
    assert_values(&received, &sent, "group_send");
    finish(&*layer).await;
}

/// X6: a 1 MB message (bytes and text) round-trips (the spec requires it).
pub async fn x6_large_message(factory: &dyn LayerFactory) {
    let layer = default_layer(factory).await;
    let channel = new_channel(&*layer, "specific").await;
    // 600,000 bytes plus 400,000 characters: one megabyte of content.
    let payload: Vec<u8> = (0..600_000u32)
        .map(|i| u8::try_from(i % 251).expect("i % 251 fits in a byte"))
        .collect();
    let text: String = "0123456789abcdef".repeat(25_000);
    let sent = Message::new("large.message")
        .with("bytes", Value::Binary(payload))
        .with("text", text);
    send_ok(&*layer, &channel, sent.clone()).await;
    let received = receive_within(&*layer, &channel, SLOW_DELIVERY_WAIT).await;
    assert_eq!(
        received.len(),
        sent.len(),
        "the 1 MB message gained or lost fields"
    );
    for key in ["type", "bytes", "text"] {
        assert!(
            received.get(key) == sent.get(key),
            "field `{key}` of the 1 MB message changed in transit"
        );
    }
    finish(&*layer).await;
}
