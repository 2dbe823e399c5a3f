//! Process-local channels: L1, L2, L4.

use std::collections::HashSet;

use super::{
    DELIVERY_WAIT, LayerFactory, assert_same_message, default_layer, finish, new_channel, numbered,
    receive_type, receive_within, send_ok,
};
use crate::config::DEFAULT_NEW_CHANNEL_PREFIX;
use crate::error::LayerError;
use crate::message::Message;
use crate::names::{is_process_local, validate_channel_name};

/// L1: `new_channel()` gives a valid name, and messages sent to it round-trip.
pub async fn l1_new_channel_round_trip(factory: &dyn LayerFactory) {
    let layer = default_layer(factory).await;
    let channel = new_channel(&*layer, DEFAULT_NEW_CHANNEL_PREFIX).await;
    if let Err(error) = validate_channel_name(&channel) {
        panic!("new_channel() returned an invalid name: {error}");
    }
    let sent = Message::new("test.message").with("text", "Ahoy-hoy!");
    send_ok(&*layer, &channel, sent.clone()).await;
    let received = receive_within(&*layer, &channel, DELIVERY_WAIT).await;
    assert_same_message(&received, &sent);
    finish(&*layer).await;
}

/// L1 \[Q\]: on queue layers `new_channel()` gives a process-local name (with
/// `!`) that round-trips.
pub async fn l1_new_channel_is_process_local(factory: &dyn LayerFactory) {
    let layer = default_layer(factory).await;
    let channel = new_channel(&*layer, DEFAULT_NEW_CHANNEL_PREFIX).await;
    assert!(
        is_process_local(&channel),
        "new_channel() returned {channel:?}, which has no `!`"
    );
    let local_part = channel.split_once('!').map_or("", |(_, local)| local);
    assert!(
        !local_part.is_empty(),
        "new_channel() returned {channel:?}, whose local part is empty"
    );
    send_ok(&*layer, &channel, numbered(1)).await;
    receive_type(&*layer, &channel, DELIVERY_WAIT, "message.1").await;
    finish(&*layer).await;
}

/// L2: `new_channel("x")` returns names starting with "x"; 1,000 calls give
/// 1,000 distinct valid names.
pub async fn l2_new_channel_unique(factory: &dyn LayerFactory) {
    let layer = default_layer(factory).await;
    let mut names = HashSet::new();
    for _ in 0..1_000 {
        let name = new_channel(&*layer, "x").await;
        assert!(
            name.starts_with('x'),
            "new_channel(\"x\") returned {name:?}, which does not start with the prefix"
        );
        if let Err(error) = validate_channel_name(&name) {
            panic!("new_channel(\"x\") returned an invalid name: {error}");
        }
        assert!(
            names.insert(name.clone()),
            "new_channel(\"x\") returned {name:?} twice"
        );
    }
    let group_prefixed = new_channel(&*layer, "test-gr-chan").await;
    assert!(
        group_prefixed.starts_with("test-gr-chan"),
        "new_channel(\"test-gr-chan\") returned {group_prefixed:?}"
    );
    finish(&*layer).await;
}

/// L4: messages wait on their own channel: send to ch1 then ch2, receive ch2
/// first (message.2), then ch1 (message.1).
pub async fn l4_double_receive(factory: &dyn LayerFactory) {
    let layer = default_layer(factory).await;
    let first = new_channel(&*layer, DEFAULT_NEW_CHANNEL_PREFIX).await;
    let second = new_channel(&*layer, DEFAULT_NEW_CHANNEL_PREFIX).await;
    send_ok(&*layer, &first, numbered(1)).await;
    send_ok(&*layer, &second, numbered(2)).await;
    receive_type(&*layer, &second, DELIVERY_WAIT, "message.2").await;
    receive_type(&*layer, &first, DELIVERY_WAIT, "message.1").await;
    finish(&*layer).await;
}

/// X7: `new_channel` with a 90-character prefix either fails with
/// InvalidChannelName or returns a name that `send` accepts.
pub async fn x7_long_new_channel_prefix(factory: &dyn LayerFactory) {
    let layer = default_layer(factory).await;
    let prefix = "a".repeat(90);
    match layer.new_channel(&prefix).await {
        Err(LayerError::InvalidChannelName { .. }) => {}
        Err(other) => panic!(
            "new_channel with a 90-character prefix: expected a name or InvalidChannelName, got {other}"
        ),
        Ok(name) => {
            assert!(
                name.starts_with(&prefix),
                "new_channel returned {name:?}, which does not start with its prefix"
            );
            if let Err(error) = validate_channel_name(&name) {
                panic!("new_channel with a 90-character prefix returned an invalid name: {error}");
            }
            send_ok(&*layer, &name, numbered(1)).await;
            receive_type(&*layer, &name, DELIVERY_WAIT, "message.1").await;
        }
    }
    finish(&*layer).await;
}
