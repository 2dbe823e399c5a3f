//! Concurrent `group_send`s to one group share a read of it, and each still
//! sees every membership written before it was called.
#![allow(clippy::unwrap_used)] // test helpers: a failed setup step should panic right there

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use channels_core::{ChannelLayer, Message, Value};
use channels_redis::RedisChannelLayer;
use support::config;
use tokio::time::timeout;

/// Members already in the group, so each read of it takes a while.
const MEMBERS: usize = 300;
/// Tasks sending to the group all along, so a read is nearly always under way.
const SENDERS: usize = 8;
/// Members added (each then sent a marker) while the senders run.
const JOINS: usize = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_during_other_sends_reaches_a_member_added_before_it() {
    let shared = config();
    let sender = Arc::new(RedisChannelLayer::new(shared.clone()).unwrap());
    let receiver = RedisChannelLayer::new(shared.clone()).unwrap();
    // The bulk of the group lives in a layer that never receives: its key
    // fills and the fillers to it are dropped there, while the joiners'
    // key, light, keeps up with the senders (a full key drops a marker).
    let bulk = RedisChannelLayer::new(shared).unwrap();
    for _ in 0..MEMBERS {
        let channel = bulk.new_channel("specific").await.unwrap();
        bulk.group_add("room", &channel).await.unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = (0..SENDERS)
        .map(|_| {
            let sender = sender.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut sent = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    sender
                        .group_send("room", Message::new("filler"))
                        .await
                        .unwrap();
                    sent += 1;
                }
                sent
            })
        })
        .collect();
    for join in 0..JOINS {
        let channel = receiver.new_channel("specific").await.unwrap();
        let inbox = receiver.open(&channel).await.unwrap();
        // Written through the receiving layer: the sending one learns of it
        // only by reading the group, as with a member added by Python.
        receiver.group_add("room", &channel).await.unwrap();
        sender
            .group_send("room", Message::new("marker").with("join", join as i64))
            .await
            .unwrap();
        timeout(Duration::from_secs(5), async {
            loop {
                let message = inbox.recv().await.unwrap();
                if message.message_type() == Some("marker") {
                    assert_eq!(message.get("join"), Some(&Value::from(join as i64)));
                    break;
                }
            }
        })
        .await
        .unwrap_or_else(|_| {
            panic!(
                "join {join}: the marker sent after group_add never came ({:?})",
                receiver.stats()
            )
        });
    }
    stop.store(true, Ordering::Relaxed);
    let mut fillers = 0;
    for task in senders {
        fillers += task.await.unwrap();
    }
    // The senders did overlap the joins (else the test proved nothing).
    assert!(fillers > JOINS as u64, "only {fillers} filler sends");
}
