//! Flush and close: F1–F3.

use super::{
    DELIVERY_WAIT, LayerFactory, NOTHING_WAIT, assert_nothing_within_all, default_layer, finish,
    group_add_ok, group_send_ok, new_channel, numbered, receive_type, send_ok,
};
use crate::layer::ChannelLayer;

async fn flush_ok(layer: &dyn ChannelLayer) {
    if let Err(error) = layer.flush().await {
        panic!("flush failed: {error}");
    }
}

async fn close_ok(layer: &dyn ChannelLayer, which: &str) {
    if let Err(error) = layer.close().await {
        panic!("{which} close() failed: {error}");
    }
}

/// Checks send/receive and group_send on fresh channels of `layer`.
async fn assert_works(layer: &dyn ChannelLayer, group: &str) {
    let channel = new_channel(layer, "specific").await;
    send_ok(layer, &channel, numbered(10)).await;
    receive_type(layer, &channel, DELIVERY_WAIT, "message.10").await;
    let member = new_channel(layer, "specific").await;
    group_add_ok(layer, group, &member).await;
    group_send_ok(layer, group, numbered(11)).await;
    receive_type(layer, &member, DELIVERY_WAIT, "message.11").await;
}

/// F1: after flush, queued messages and groups are gone: nothing arrives in
/// 1 s, and group_send reaches no one.
pub async fn f1_flush_clears(factory: &dyn LayerFactory) {
    let layer = default_layer(factory).await;
    let channel = new_channel(&*layer, "specific").await;
    let member = new_channel(&*layer, "specific").await;
    send_ok(&*layer, &channel, numbered(1)).await;
    send_ok(&*layer, &channel, numbered(2)).await;
    group_add_ok(&*layer, "test-group", &member).await;
    flush_ok(&*layer).await;
    group_send_ok(&*layer, "test-group", numbered(3)).await;
    assert_nothing_within_all(&*layer, &[&channel, &member], NOTHING_WAIT).await;
    finish(&*layer).await;
}

/// F2: after flush the layer works normally, for new channels and for names
/// used before the flush.
pub async fn f2_works_after_flush(factory: &dyn LayerFactory) {
    let layer = default_layer(factory).await;
    let channel = new_channel(&*layer, "specific").await;
    send_ok(&*layer, &channel, numbered(1)).await;
    group_add_ok(&*layer, "test-group", &channel).await;
    flush_ok(&*layer).await;
    assert_works(&*layer, "test-group").await;
    send_ok(&*layer, &channel, numbered(2)).await;
    receive_type(&*layer, &channel, DELIVERY_WAIT, "message.2").await;
    group_add_ok(&*layer, "other-group", &channel).await;
    group_send_ok(&*layer, "other-group", numbered(3)).await;
    receive_type(&*layer, &channel, DELIVERY_WAIT, "message.3").await;
    finish(&*layer).await;
}

/// F3: close() twice is fine; the layer is usable after close (a networked
/// layer reconnects); `extensions()` includes "groups" and "flush".
pub async fn f3_close_and_extensions(factory: &dyn LayerFactory) {
    let layer = default_layer(factory).await;
    let extensions = layer.extensions();
    for extension in ["groups", "flush"] {
        assert!(
            extensions.contains(&extension),
            "extensions() is {extensions:?}, which lacks {extension:?}"
        );
    }
    assert_works(&*layer, "before-close").await;
    close_ok(&*layer, "first").await;
    close_ok(&*layer, "second").await;
    assert_works(&*layer, "after-close").await;
    close_ok(&*layer, "third").await;
    assert_works(&*layer, "after-third-close").await;
    finish(&*layer).await;
}
