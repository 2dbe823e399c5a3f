//! Names: N1–N5 and D5.

use std::time::Duration;

use super::{
    DELIVERY_WAIT, LayerFactory, default_layer, finish, group_add_ok, group_discard_ok,
    group_send_ok, new_channel, receive_type, round_trip, send_ok, typed,
};
use crate::error::{CHANNEL_NAME_RULE, GROUP_NAME_RULE, LayerError, NameProblem};
use crate::layer::ChannelLayer;
use crate::message::Message;
use crate::names::{validate_channel_name, validate_group_name};

/// How long a receive on an invalid name may take to fail (it must fail at once).
const REJECT_WAIT: Duration = Duration::from_secs(1);

/// Asserts that `name` is refused as a channel by `send` and `receive`,
/// returning the `send` error.
async fn assert_channel_rejected(layer: &dyn ChannelLayer, name: &str) -> LayerError {
    assert!(
        matches!(
            validate_channel_name(name),
            Err(LayerError::InvalidChannelName { .. })
        ),
        "validate_channel_name accepted {name:?}"
    );
    let error = match layer.send(name, typed("test.message")).await {
        Err(error @ LayerError::InvalidChannelName { .. }) => error,
        other => {
            panic!("send to invalid channel {name:?}: expected InvalidChannelName, got {other:?}")
        }
    };
    match tokio::time::timeout(REJECT_WAIT, layer.receive(name)).await {
        Ok(Err(LayerError::InvalidChannelName { .. })) => {}
        Ok(other) => {
            panic!(
                "receive on invalid channel {name:?}: expected InvalidChannelName, got {other:?}"
            )
        }
        Err(_) => panic!("receive on invalid channel {name:?} hung instead of failing"),
    }
    error
}

/// Asserts that `name` is refused as a group by `group_add`, `group_discard`
/// and `group_send` (with a valid `member`), returning the `group_add` error.
async fn assert_group_rejected(layer: &dyn ChannelLayer, name: &str, member: &str) -> LayerError {
    assert!(
        matches!(
            validate_group_name(name),
            Err(LayerError::InvalidGroupName { .. })
        ),
        "validate_group_name accepted {name:?}"
    );
    let error = match layer.group_add(name, member).await {
        Err(error @ LayerError::InvalidGroupName { .. }) => error,
        other => {
            panic!("group_add to invalid group {name:?}: expected InvalidGroupName, got {other:?}")
        }
    };
    let discard = layer.group_discard(name, member).await;
    assert!(
        matches!(discard, Err(LayerError::InvalidGroupName { .. })),
        "group_discard from invalid group {name:?}: expected InvalidGroupName, got {discard:?}"
    );
    let send = layer.group_send(name, typed("test.message")).await;
    assert!(
        matches!(send, Err(LayerError::InvalidGroupName { .. })),
        "group_send to invalid group {name:?}: expected InvalidGroupName, got {send:?}"
    );
    error
}

/// Asserts that `name` works as a group: a member added under it gets a
/// `group_send`, and discarding works.
async fn assert_group_accepted(layer: &dyn ChannelLayer, name: &str, member: &str) {
    assert!(
        validate_group_name(name).is_ok(),
        "validate_group_name refused {name:?}"
    );
    group_add_ok(layer, name, member).await;
    group_send_ok(layer, name, typed("group.message")).await;
    receive_type(layer, member, DELIVERY_WAIT, "group.message").await;
    group_discard_ok(layer, name, member).await;
}

/// N1: "chat", "test-channel-1" and "a"×99 are valid channels and groups.
pub async fn n1_valid_names(factory: &dyn LayerFactory) {
    let layer = default_layer(factory).await;
    let member = new_channel(&*layer, "specific").await;
    for name in ["chat", "test-channel-1", &"a".repeat(99)] {
        assert!(
            validate_channel_name(name).is_ok(),
            "validate_channel_name refused {name:?}"
        );
        let sent = Message::new("test.message").with("name", name);
        let received = round_trip(&layer, name, sent).await;
        assert_eq!(
            received.get("name").and_then(|v| v.as_str()),
            Some(name),
            "wrong message on `{name}`: {received:?}"
        );
        assert_group_accepted(&*layer, name, &member).await;
    }
    finish(&*layer).await;
}

/// N2: names of 100 characters or more fail as channels and as groups, with
/// the rule in the error message.
pub async fn n2_long_names_rejected(factory: &dyn LayerFactory) {
    let layer = default_layer(factory).await;
    let member = new_channel(&*layer, "specific").await;
    for (name, length) in [
        ("a".repeat(100), 100),
        ("a".repeat(101), 101),
        ("chat".repeat(100), 400),
    ] {
        let error = assert_channel_rejected(&*layer, &name).await;
        match &error {
            LayerError::InvalidChannelName { problem, .. } => assert_eq!(
                *problem,
                NameProblem::TooLong { length },
                "wrong problem for a {length}-character channel name"
            ),
            other => panic!("expected InvalidChannelName, got {other:?}"),
        }
        let text = error.to_string();
        assert!(
            text.contains(CHANNEL_NAME_RULE) && text.contains("length < 100"),
            "the channel name error does not state the rule: {text}"
        );
        let error = assert_group_rejected(&*layer, &name, &member).await;
        let text = error.to_string();
        assert!(
            text.contains(GROUP_NAME_RULE) && text.contains("length < 100"),
            "the group name error does not state the rule: {text}"
        );
    }
    finish(&*layer).await;
}

/// N3: names with characters outside the rule (or empty) fail as channels and
/// groups; `send` and `receive` refuse "=+135!".
pub async fn n3_bad_characters_rejected(factory: &dyn LayerFactory) {
    let layer = default_layer(factory).await;
    let member = new_channel(&*layer, "specific").await;
    for name in ["¯\\_(ツ)_/¯", "", "a b", "a:b", "é"] {
        assert_channel_rejected(&*layer, name).await;
        assert_group_rejected(&*layer, name, &member).await;
    }
    assert_channel_rejected(&*layer, "=+135!").await;
    finish(&*layer).await;
}

/// N4: "foo!", "foo!bar" and "foo!bär" are valid channels but invalid groups;
/// "foo!a!b" and "!abc" are invalid for both.
pub async fn n4_process_local_names(factory: &dyn LayerFactory) {
    let layer = default_layer(factory).await;
    let member = new_channel(&*layer, "specific").await;
    for name in ["foo!", "foo!bar", "foo!bär"] {
        assert!(
            validate_channel_name(name).is_ok(),
            "validate_channel_name refused {name:?}"
        );
        // Receiving on another instance's "!" name may be refused (L5), so
        // only `send` is checked here: it must accept the name.
        send_ok(&*layer, name, typed("test.message")).await;
        assert_group_rejected(&*layer, name, &member).await;
        let add = layer.group_add("test-group", name).await;
        // Pub/sub may refuse a channel it does not own (P5), but not by name.
        assert!(
            !matches!(add, Err(LayerError::InvalidChannelName { .. })),
            "group_add refused the valid channel name {name:?}: {add:?}"
        );
    }
    for name in ["foo!a!b", "!abc"] {
        assert_channel_rejected(&*layer, name).await;
        assert_group_rejected(&*layer, name, &member).await;
    }
    finish(&*layer).await;
}

/// N5: every call validates its names (send/receive the channel, group_add and
/// group_discard both, group_send the group, new_channel the prefix), and a
/// failed call has no effect.
pub async fn n5_every_call_validates(factory: &dyn LayerFactory) {
    let layer = default_layer(factory).await;
    let member = new_channel(&*layer, "specific").await;
    let group = "n5-group";
    group_add_ok(&*layer, group, &member).await;

    let bad_channel = "bad channel";
    let bad_group = "bad group";
    assert_channel_rejected(&*layer, bad_channel).await;
    assert_group_rejected(&*layer, bad_group, &member).await;
    let add = layer.group_add(group, bad_channel).await;
    assert!(
        matches!(add, Err(LayerError::InvalidChannelName { .. })),
        "group_add of an invalid channel: expected InvalidChannelName, got {add:?}"
    );
    let discard = layer.group_discard(group, bad_channel).await;
    assert!(
        matches!(discard, Err(LayerError::InvalidChannelName { .. })),
        "group_discard of an invalid channel: expected InvalidChannelName, got {discard:?}"
    );
    let created = layer.new_channel("bad prefix").await;
    assert!(
        matches!(created, Err(LayerError::InvalidChannelName { .. })),
        "new_channel with an invalid prefix: expected InvalidChannelName, got {created:?}"
    );
    let invalid_message = Message::default().with("text", "no type");
    let send = layer.send(&member, invalid_message.clone()).await;
    assert!(
        matches!(send, Err(LayerError::InvalidMessage { .. })),
        "send of a message without `type`: expected InvalidMessage, got {send:?}"
    );
    let send = layer.group_send(group, invalid_message).await;
    assert!(
        matches!(send, Err(LayerError::InvalidMessage { .. })),
        "group_send of a message without `type`: expected InvalidMessage, got {send:?}"
    );

    // None of the failed calls queued a message or changed the membership: the
    // member is still in the group and the next message it gets is this one.
    group_send_ok(&*layer, group, typed("after.failures")).await;
    receive_type(&*layer, &member, DELIVERY_WAIT, "after.failures").await;
    finish(&*layer).await;
}

/// D5: a trailing newline (which Python's `$` lets through) is refused for
/// channels and groups.
pub async fn d5_trailing_newline_rejected(factory: &dyn LayerFactory) {
    let layer = default_layer(factory).await;
    let member = new_channel(&*layer, "specific").await;
    for name in ["foo\n", "foo!bar\n"] {
        assert_channel_rejected(&*layer, name).await;
        assert_group_rejected(&*layer, name, &member).await;
    }
    let add = layer.group_add("test-group", "foo\n").await;
    assert!(
        matches!(add, Err(LayerError::InvalidChannelName { .. })),
        "group_add of \"foo\\n\": expected InvalidChannelName, got {add:?}"
    );
    finish(&*layer).await;
}
