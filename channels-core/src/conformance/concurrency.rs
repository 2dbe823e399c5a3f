//! Cancellation and concurrency: K1, X1–X4.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::join_all;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;
use tokio::time::{Instant, sleep, timeout};

use super::{
    DELIVERY_WAIT, LayerFactory, NOTHING_WAIT, SLOW_DELIVERY_WAIT, assert_nothing_within,
    default_layer, finish, group_add_ok, group_send_ok, join, new_channel, number_of, numbered,
    receive_type, receive_within, send_ok, spawn, spawn_receive,
};
use crate::config::LayerConfig;
use crate::layer::{ChannelLayer, SharedLayer};
use crate::message::{Message, Value};

/// A seeded random generator; the seed is printed so a failure can be replayed.
fn seeded_rng(check: &str) -> StdRng {
    let seed: u64 = rand::random();
    println!("{check}: random seed {seed}");
    StdRng::seed_from_u64(seed)
}

/// Asserts that `received` holds each of `0..total` exactly once.
fn assert_exactly_once(received: &[u64], total: u64, what: &str) {
    let mut counts = vec![0usize; usize::try_from(total).expect("message counts fit in usize")];
    let mut unexpected = Vec::new();
    for &n in received {
        match usize::try_from(n).ok().and_then(|i| counts.get_mut(i)) {
            Some(count) => *count += 1,
            None => unexpected.push(n),
        }
    }
    let missing: Vec<usize> = (0..counts.len()).filter(|&i| counts[i] == 0).collect();
    let duplicated: Vec<usize> = (0..counts.len()).filter(|&i| counts[i] > 1).collect();
    assert!(
        missing.is_empty() && duplicated.is_empty() && unexpected.is_empty(),
        "{what}: messages lost {missing:?}, delivered twice {duplicated:?}, unexpected {unexpected:?}"
    );
}

/// Asserts that `received` is `0..total` in order.
fn assert_in_order(received: &[u64], total: u64, what: &str) {
    assert_exactly_once(received, total, what);
    let expected: Vec<u64> = (0..total).collect();
    assert_eq!(received, expected, "{what}: messages arrived out of order");
}

/// Receives numbered messages on `channel` until `received` holds `total`.
async fn drain(layer: &dyn ChannelLayer, channel: &str, received: &mut Vec<u64>, total: u64) {
    while (received.len() as u64) < total {
        let message = receive_within(layer, channel, SLOW_DELIVERY_WAIT).await;
        received.push(number_of(&message));
    }
}

/// Runs `receive` on `channel`, cancelling it after `cancel_after`; records
/// what it returned, if anything.
async fn receive_or_cancel(
    layer: &dyn ChannelLayer,
    channel: &str,
    cancel_after: Duration,
    received: &mut Vec<u64>,
) {
    match timeout(cancel_after, layer.receive(channel)).await {
        Ok(Ok(message)) => received.push(number_of(&message)),
        Ok(Err(error)) => panic!("receive on `{channel}` failed between cancellations: {error}"),
        Err(_) => {}
    }
}

/// K1: send, then cancel the receive after 0–10 ms in 0.1 ms steps: no hang,
/// no error, and every message still arrives exactly once, in order.
pub async fn k1_receive_cancel(factory: &dyn LayerFactory) {
    const STEPS: u64 = 101;
    let layer = factory.create(LayerConfig::default().capacity(1_000)).await;
    let channel = new_channel(&*layer, "specific").await;
    let mut received = Vec::new();
    for step in 0..STEPS {
        send_ok(&*layer, &channel, numbered(step)).await;
        let cancel_after = Duration::from_micros(step * 100);
        receive_or_cancel(&*layer, &channel, cancel_after, &mut received).await;
    }
    drain(&*layer, &channel, &mut received, STEPS).await;
    assert_in_order(&received, STEPS, "K1");
    assert_nothing_within(&*layer, &channel, NOTHING_WAIT).await;
    finish(&*layer).await;
}

/// X1: 1,000 times, send and cancel a receive after a random 0–5 ms (half the
/// time the send races the receive, landing after a random 0–5 ms). Every
/// message still arrives exactly once, in order.
pub async fn x1_cancel_stress(factory: &dyn LayerFactory) {
    const ROUNDS: u64 = 1_000;
    let mut rng = seeded_rng("X1");
    let layer = factory
        .create(LayerConfig::default().capacity(2 * ROUNDS as usize))
        .await;
    let channel = new_channel(&*layer, "specific").await;
    let mut received = Vec::new();
    for n in 0..ROUNDS {
        let cancel_after = Duration::from_micros(rng.random_range(0..=5_000));
        if rng.random_bool(0.5) {
            send_ok(&*layer, &channel, numbered(n)).await;
            receive_or_cancel(&*layer, &channel, cancel_after, &mut received).await;
        } else {
            let send_after = Duration::from_micros(rng.random_range(0..=5_000));
            let send = async {
                sleep(send_after).await;
                send_ok(&*layer, &channel, numbered(n)).await;
            };
            let mut got = Vec::new();
            tokio::join!(
                send,
                receive_or_cancel(&*layer, &channel, cancel_after, &mut got)
            );
            received.extend(got);
        }
    }
    drain(&*layer, &channel, &mut received, ROUNDS).await;
    assert_in_order(&received, ROUNDS, "X1");
    assert_nothing_within(&*layer, &channel, NOTHING_WAIT).await;
    finish(&*layer).await;
}

/// X2: 100 receivers on 100 channels, sends in shuffled order: each receiver
/// gets only its own message, all within 1 s.
pub async fn x2_many_receivers(factory: &dyn LayerFactory) {
    const CHANNELS: usize = 100;
    let mut rng = seeded_rng("X2");
    let layer = default_layer(factory).await;
    let mut channels = Vec::with_capacity(CHANNELS);
    for _ in 0..CHANNELS {
        channels.push(new_channel(&*layer, "specific").await);
    }
    let pending: Vec<_> = channels
        .iter()
        .map(|channel| spawn_receive(&layer, channel))
        .collect();
    // Let the receivers start waiting (pub/sub hears only what it listens to).
    sleep(Duration::from_millis(100)).await;
    let mut order: Vec<usize> = (0..CHANNELS).collect();
    order.shuffle(&mut rng);
    for index in order {
        let message = Message::new("x2.message").with("channel", channels[index].as_str());
        send_ok(&*layer, &channels[index], message).await;
    }
    let results = timeout(DELIVERY_WAIT, join_all(pending.into_iter().map(join)))
        .await
        .unwrap_or_else(|_| {
            panic!("not every one of {CHANNELS} receivers got a message within {DELIVERY_WAIT:?}")
        });
    for (channel, result) in channels.iter().zip(results) {
        let message =
            result.unwrap_or_else(|error| panic!("receive on `{channel}` failed: {error}"));
        assert_eq!(
            message.get("channel").and_then(Value::as_str),
            Some(channel.as_str()),
            "`{channel}` received another channel's message: {message:?}"
        );
    }
    finish(&*layer).await;
}

/// One of X3's competing receivers: receives until told to stop, returning
/// the numbers it got, in the order it got them.
async fn competing_receiver(
    layer: SharedLayer,
    channel: String,
    total: usize,
    count: Arc<AtomicUsize>,
    done: Arc<watch::Sender<bool>>,
) -> Vec<u64> {
    let mut stop = done.subscribe();
    let mut got = Vec::new();
    loop {
        tokio::select! {
            biased;
            result = layer.receive(&channel) => {
                let message = result.unwrap_or_else(|error| panic!("receive on `{channel}` failed: {error}"));
                got.push(number_of(&message));
                if count.fetch_add(1, Ordering::SeqCst) + 1 >= total {
                    done.send_replace(true);
                }
            }
            _ = stop.wait_for(|stopped| *stopped) => return got,
        }
    }
}

/// X3: two receivers on one channel share 100 messages: each message is
/// delivered exactly once, and each receiver sees its share in order. The
/// sender also snatches every other message with a receive polled once right
/// after the send, so a receiver is often woken for a message that is already
/// gone: it must go back to waiting and still get the later ones.
pub async fn x3_competing_receivers(factory: &dyn LayerFactory) {
    const MESSAGES: u64 = 100;
    let layer = default_layer(factory).await;
    let channel = new_channel(&*layer, "specific").await;
    let count = Arc::new(AtomicUsize::new(0));
    let (done, _) = watch::channel(false);
    let done = Arc::new(done);
    let receivers: Vec<_> = (0..2)
        .map(|_| {
            spawn(competing_receiver(
                SharedLayer::clone(&layer),
                channel.clone(),
                MESSAGES as usize,
                Arc::clone(&count),
                Arc::clone(&done),
            ))
        })
        .collect();
    // Paced sends, so both receivers are usually waiting when a message lands:
    // a layer that hands one message to every waiting receiver shows up here.
    let mut snatched = Vec::new();
    for n in 0..MESSAGES {
        send_ok(&*layer, &channel, numbered(n)).await;
        if n % 2 == 0
            && let Some(result) = layer.receive(&channel).now_or_never()
        {
            let message =
                result.unwrap_or_else(|error| panic!("receive on `{channel}` failed: {error}"));
            snatched.push(number_of(&message));
            if count.fetch_add(1, Ordering::SeqCst) + 1 >= MESSAGES as usize {
                done.send_replace(true);
            }
        }
        sleep(Duration::from_millis(1)).await;
    }
    let mut shares = timeout(
        SLOW_DELIVERY_WAIT,
        join_all(receivers.into_iter().map(join)),
    )
    .await
    .unwrap_or_else(|_| {
        panic!(
            "the receivers got only {} of {MESSAGES} messages within {SLOW_DELIVERY_WAIT:?} \
             (messages left queued while both receivers wait: a lost wake-up)",
            count.load(Ordering::SeqCst)
        )
    });
    shares.push(snatched);
    for share in &shares {
        assert!(
            share.windows(2).all(|pair| pair[0] < pair[1]),
            "a receiver got its messages out of order: {share:?}"
        );
    }
    let all: Vec<u64> = shares.concat();
    assert_exactly_once(&all, MESSAGES, "X3");
    println!(
        "X3: receivers got {:?} messages (the last share was snatched by the sender)",
        shares.iter().map(Vec::len).collect::<Vec<_>>()
    );
    finish(&*layer).await;
}

/// X4: a group_send to 10,000 members gives each exactly one copy (a second
/// group_send is the next message everywhere); the times are printed.
pub async fn x4_large_group(factory: &dyn LayerFactory) {
    const MEMBERS: usize = 10_000;
    let layer = default_layer(factory).await;
    let started = Instant::now();
    let mut members = Vec::with_capacity(MEMBERS);
    for _ in 0..MEMBERS {
        let channel = new_channel(&*layer, "specific").await;
        group_add_ok(&*layer, "x4-group", &channel).await;
        members.push(channel);
    }
    let setup = started.elapsed();

    let started = Instant::now();
    group_send_ok(&*layer, "x4-group", Message::new("x4.first")).await;
    let first_send = started.elapsed();
    for channel in &members {
        receive_type(&*layer, channel, SLOW_DELIVERY_WAIT, "x4.first").await;
    }
    let first_receive = started.elapsed();

    let started = Instant::now();
    group_send_ok(&*layer, "x4-group", Message::new("x4.second")).await;
    let second_send = started.elapsed();
    for channel in &members {
        receive_type(&*layer, channel, SLOW_DELIVERY_WAIT, "x4.second").await;
    }
    let second_receive = started.elapsed();
    println!(
        "X4: {MEMBERS} members: new_channel + group_add {setup:?}; group_send {first_send:?} \
         (then {second_send:?}); group_send + every receive {first_receive:?} (then {second_receive:?})"
    );
    finish(&*layer).await;
}
