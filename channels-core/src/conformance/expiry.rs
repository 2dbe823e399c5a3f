//! Expiry: E1–E6 (queue layers), scaled by [`LayerFactory::time_unit`].
//!
//! Waits "past expiry" are 2.5 units: Redis prunes by whole seconds
//! (`int(now) - expiry`), so a message sent at `x.99` may survive until
//! `x + expiry + 1`.

use std::time::Duration;

use tokio::time::{Instant, sleep, sleep_until};

use super::{
    DELIVERY_WAIT, LayerFactory, NOTHING_WAIT, assert_nothing_within, finish, group_add_ok,
    group_send_ok, numbered, receive_type, send_ok, units,
};
use crate::config::LayerConfig;
use crate::layer::ChannelLayer;
use crate::message::Message;

/// How long E1 and E2 wait for an expired message (CONFORMANCE.md: 0.5 s).
const EXPIRED_WAIT: Duration = Duration::from_millis(500);

/// Past a one-unit expiry, with Redis' whole-second rounding.
const PAST_EXPIRY_UNITS: f64 = 2.5;

/// E1 \[Q\]: a message left past its expiry is gone: nothing arrives in 0.5 s.
pub async fn e1_expiry_single(factory: &dyn LayerFactory) {
    let layer = factory
        .create(LayerConfig::default().expiry(factory.time_unit()))
        .await;
    send_ok(&*layer, "test-channel-1", numbered(1)).await;
    sleep(units(factory, PAST_EXPIRY_UNITS)).await;
    assert_nothing_within(&*layer, "test-channel-1", EXPIRED_WAIT).await;
    finish(&*layer).await;
}

/// E2 \[Q\]: ch1's message expires unread; ch2 still works.
pub async fn e2_expiry_unread(factory: &dyn LayerFactory) {
    let layer = factory
        .create(LayerConfig::default().expiry(factory.time_unit()))
        .await;
    send_ok(&*layer, "test-channel-1", numbered(1)).await;
    sleep(units(factory, PAST_EXPIRY_UNITS)).await;
    send_ok(&*layer, "test-channel-2", numbered(2)).await;
    receive_type(&*layer, "test-channel-2", DELIVERY_WAIT, "message.2").await;
    assert_nothing_within(&*layer, "test-channel-1", EXPIRED_WAIT).await;
    finish(&*layer).await;
}

/// E3 \[Q\]: send 1, 2, 3, receive 1, let 2 and 3 expire, send 4: receive gives
/// 4, then nothing in 1 s.
pub async fn e3_expiry_multi(factory: &dyn LayerFactory) {
    let layer = factory
        .create(LayerConfig::default().expiry(factory.time_unit()))
        .await;
    let channel = "test-channel-1";
    for n in 1..=3 {
        send_ok(&*layer, channel, numbered(n)).await;
    }
    receive_type(&*layer, channel, DELIVERY_WAIT, "message.1").await;
    sleep(units(factory, PAST_EXPIRY_UNITS)).await;
    send_ok(&*layer, channel, numbered(4)).await;
    receive_type(&*layer, channel, DELIVERY_WAIT, "message.4").await;
    assert_nothing_within(&*layer, channel, NOTHING_WAIT).await;
    finish(&*layer).await;
}

/// Delivers `message` by `send`, or by `group_send` after (re)joining the
/// group: on the memory layer an expired message drops its channel from its
/// groups (D2), so a member that wants more keeps its membership fresh.
async fn deliver(layer: &dyn ChannelLayer, channel: &str, via_group: bool, message: Message) {
    if via_group {
        group_add_ok(layer, "test-group", channel).await;
        group_send_ok(layer, "test-group", message).await;
    } else {
        send_ok(layer, channel, message).await;
    }
}

async fn earliest_message_expires(factory: &dyn LayerFactory, via_group: bool) {
    let layer = factory
        .create(LayerConfig::default().expiry(units(factory, 3.0)))
        .await;
    let channel = "test-channel-1";
    let start = Instant::now();
    for n in 1..=3u32 {
        sleep_until(start + units(factory, f64::from(2 * (n - 1)))).await;
        deliver(&*layer, channel, via_group, numbered(u64::from(n))).await;
    }
    receive_type(&*layer, channel, DELIVERY_WAIT, "message.2").await;
    receive_type(&*layer, channel, DELIVERY_WAIT, "message.3").await;
    assert_nothing_within(&*layer, channel, NOTHING_WAIT).await;
    finish(&*layer).await;
}

/// E4 \[Q\]: expiry 3 units, sends at 0, 2 and 4 units: the second and third
/// arrive, then nothing in 1 s.
pub async fn e4_earliest_message_expires(factory: &dyn LayerFactory) {
    earliest_message_expires(factory, false).await;
}

/// E4 \[Q\]: as [`e4_earliest_message_expires`], with group_send.
pub async fn e4_group_send_earliest_message_expires(factory: &dyn LayerFactory) {
    earliest_message_expires(factory, true).await;
}

/// E5 \[Q\]: expiry 3 units, sends at 0, 1 and 2 units: all arrive in order.
pub async fn e5_all_messages_under_expiry(factory: &dyn LayerFactory) {
    let layer = factory
        .create(LayerConfig::default().expiry(units(factory, 3.0)))
        .await;
    let channel = "test-channel-1";
    let start = Instant::now();
    for n in 1..=3u32 {
        sleep_until(start + units(factory, f64::from(n - 1))).await;
        send_ok(&*layer, channel, numbered(u64::from(n))).await;
    }
    for n in 1..=3 {
        receive_type(&*layer, channel, DELIVERY_WAIT, &format!("message.{n}")).await;
    }
    finish(&*layer).await;
}

/// E6 \[Q\]: a membership older than group_expiry is dropped, and a re-add
/// refreshes it.
pub async fn e6_group_expiry(factory: &dyn LayerFactory) {
    let layer = factory
        .create(LayerConfig::default().group_expiry(factory.time_unit()))
        .await;
    let stale = "test-gr-chan-1";
    let renewed = "test-gr-chan-2";
    group_add_ok(&*layer, "test-group", stale).await;
    group_add_ok(&*layer, "test-group", renewed).await;
    group_send_ok(&*layer, "test-group", numbered(1)).await;
    receive_type(&*layer, stale, DELIVERY_WAIT, "message.1").await;
    receive_type(&*layer, renewed, DELIVERY_WAIT, "message.1").await;

    sleep(units(factory, PAST_EXPIRY_UNITS)).await;
    group_add_ok(&*layer, "test-group", renewed).await;
    group_send_ok(&*layer, "test-group", numbered(2)).await;
    tokio::join!(
        receive_type(&*layer, renewed, DELIVERY_WAIT, "message.2"),
        assert_nothing_within(&*layer, stale, NOTHING_WAIT),
    );
    finish(&*layer).await;
}
