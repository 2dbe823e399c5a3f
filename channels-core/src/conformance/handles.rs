//! Receiver handles (`open`, `new_receiver`): RH1–RH5. Not in Django's API;
//! every layer must show them (\[G\]).

use std::time::Duration;

use rand::Rng;
use tokio::time::{Instant, sleep, timeout};

use super::{
    DELIVERY_WAIT, LayerFactory, NOTHING_WAIT, SLOW_DELIVERY_WAIT, default_layer, finish,
    group_add_ok, group_send_ok, join, number_of, numbered, send_ok, spawn,
};
use crate::layer::ChannelLayer;
use crate::message::Message;
use crate::receiver::Receiver;

async fn new_receiver(layer: &dyn ChannelLayer, prefix: &str) -> Receiver {
    layer
        .new_receiver(prefix)
        .await
        .unwrap_or_else(|error| panic!("new_receiver({prefix:?}) failed: {error}"))
}

async fn open(layer: &dyn ChannelLayer, channel: &str) -> Receiver {
    layer
        .open(channel)
        .await
        .unwrap_or_else(|error| panic!("open({channel:?}) failed: {error}"))
}

async fn recv_within(receiver: &Receiver, wait: Duration) -> Message {
    match timeout(wait, receiver.recv()).await {
        Ok(Ok(message)) => message,
        Ok(Err(error)) => panic!("recv on `{}` failed: {error}", receiver.channel()),
        Err(_) => panic!(
            "nothing arrived on `{}` within {wait:?}",
            receiver.channel()
        ),
    }
}

/// RH1: a handle from `new_receiver` gets what is sent to its channel and to
/// its groups, in order; its channel is a valid process-local name.
pub async fn rh1_handle_receives_sends_and_groups(factory: &dyn LayerFactory) {
    let layer = default_layer(factory).await;
    let receiver = new_receiver(&*layer, "specific").await;
    crate::names::validate_channel_name(receiver.channel())
        .unwrap_or_else(|error| panic!("new_receiver gave an invalid name: {error}"));
    group_add_ok(&*layer, "rh1-group", receiver.channel()).await;
    send_ok(&*layer, receiver.channel(), numbered(0)).await;
    send_ok(&*layer, receiver.channel(), numbered(1)).await;
    group_send_ok(&*layer, "rh1-group", numbered(2)).await;
    for expected in 0..3 {
        let message = recv_within(&receiver, DELIVERY_WAIT).await;
        assert_eq!(number_of(&message), expected, "RH1: out of order");
    }
    assert!(
        timeout(NOTHING_WAIT, receiver.recv()).await.is_err(),
        "RH1: a fourth message appeared"
    );
    drop(receiver);
    finish(&*layer).await;
}

/// RH2: 500 rounds of a send made after a random 0–3 ms and a `recv`
/// cancelled after a random 0–3 ms, so sends land while receives are being
/// cancelled: every message still arrives exactly once, in order.
pub async fn rh2_handle_recv_is_cancel_safe(factory: &dyn LayerFactory) {
    let layer = default_layer(factory).await;
    let receiver = new_receiver(&*layer, "specific").await;
    let total = 500u64;
    let mut received = Vec::new();
    let mut rng = rand::rng();
    for n in 0..total {
        let send_after = Duration::from_micros(rng.random_range(0..3_000));
        let cancel_after = Duration::from_micros(rng.random_range(0..3_000));
        let sender = {
            let layer = layer.clone();
            let channel = receiver.channel().to_owned();
            spawn(async move {
                sleep(send_after).await;
                send_ok(&*layer, &channel, numbered(n)).await;
            })
        };
        if let Ok(result) = timeout(cancel_after, receiver.recv()).await {
            let message = result.unwrap_or_else(|error| panic!("RH2: recv failed: {error}"));
            received.push(number_of(&message));
        }
        join(sender).await;
    }
    while (received.len() as u64) < total {
        received.push(number_of(&recv_within(&receiver, SLOW_DELIVERY_WAIT).await));
    }
    assert_eq!(
        received,
        (0..total).collect::<Vec<_>>(),
        "RH2: cancelled receives lost, duplicated or reordered messages"
    );
    drop(receiver);
    finish(&*layer).await;
}

/// RH3: two handles on one channel share its messages (each exactly once);
/// dropping one leaves the other working.
pub async fn rh3_two_handles_share_a_channel(factory: &dyn LayerFactory) {
    let layer = default_layer(factory).await;
    let first = new_receiver(&*layer, "specific").await;
    let channel = first.channel().to_owned();
    let second = open(&*layer, &channel).await;
    let total = 100u64;
    let collect = |receiver: Receiver| {
        spawn(async move {
            let mut got = Vec::new();
            while let Ok(Ok(message)) = timeout(Duration::from_millis(500), receiver.recv()).await {
                got.push(number_of(&message));
            }
            (got, receiver)
        })
    };
    let a = collect(first);
    let b = collect(second);
    for n in 0..total {
        send_ok(&*layer, &channel, numbered(n)).await;
    }
    let (mut got, first) = join(a).await;
    let (more, second) = join(b).await;
    got.extend(more);
    got.sort_unstable();
    assert_eq!(
        got,
        (0..total).collect::<Vec<_>>(),
        "RH3: two handles on one channel lost or duplicated messages"
    );
    drop(first);
    send_ok(&*layer, &channel, numbered(7)).await;
    let message = recv_within(&second, DELIVERY_WAIT).await;
    assert_eq!(
        number_of(&message),
        7,
        "RH3: the remaining handle stopped receiving"
    );
    drop(second);
    finish(&*layer).await;
}

/// RH4: dropping the last handle releases the channel: the layer's count of
/// channels it holds state for returns to where it was (within 1 s), and
/// `receive` by name still works afterwards (Django parity).
pub async fn rh4_dropping_the_last_handle_releases(factory: &dyn LayerFactory) {
    let layer = default_layer(factory).await;
    let before = layer.stats().channels;
    let mut handles = Vec::new();
    for _ in 0..20 {
        handles.push(new_receiver(&*layer, "specific").await);
    }
    let held = layer.stats().channels;
    assert!(
        held >= before + 20,
        "RH4: 20 open handles, but the layer reports {held} channels (was {before})"
    );
    let channel = handles[0].channel().to_owned();
    drop(handles);
    let deadline = Instant::now() + DELIVERY_WAIT;
    while layer.stats().channels > before {
        assert!(
            Instant::now() < deadline,
            "RH4: after every handle dropped the layer still holds {} channels (was {before})",
            layer.stats().channels
        );
        sleep(Duration::from_millis(10)).await;
    }
    let message = super::round_trip(&layer, &channel, numbered(3)).await;
    assert_eq!(number_of(&message), 3, "RH4: receive by name after release");
    finish(&*layer).await;
}

/// RH5: a handle and a `receive` by name on the same channel share one
/// mailbox: each message goes to exactly one of them.
pub async fn rh5_handle_and_receive_share_a_mailbox(factory: &dyn LayerFactory) {
    let layer = default_layer(factory).await;
    let receiver = new_receiver(&*layer, "specific").await;
    let channel = receiver.channel().to_owned();
    let by_name = {
        let layer = layer.clone();
        let channel = channel.clone();
        spawn(async move { layer.receive(&channel).await })
    };
    // Let the receive by name start waiting before anything is sent.
    sleep(Duration::from_millis(100)).await;
    send_ok(&*layer, &channel, numbered(0)).await;
    send_ok(&*layer, &channel, numbered(1)).await;
    let from_name = match timeout(DELIVERY_WAIT, join(by_name)).await {
        Ok(Ok(message)) => number_of(&message),
        Ok(Err(error)) => panic!("RH5: receive by name failed: {error}"),
        Err(_) => panic!("RH5: receive by name got nothing within {DELIVERY_WAIT:?}"),
    };
    let from_handle = number_of(&recv_within(&receiver, DELIVERY_WAIT).await);
    let mut both = [from_name, from_handle];
    both.sort_unstable();
    assert_eq!(
        both,
        [0, 1],
        "RH5: each message must reach exactly one receiver"
    );
    drop(receiver);
    finish(&*layer).await;
}
