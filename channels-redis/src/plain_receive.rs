//! Receiving plain (non-`!`) channels, cancel-safe.
//!
//! Each pop runs in its own task, at most one per channel per layer instance,
//! so a `receive` future dropped mid-BZPOPMIN loses nothing: the popped
//! message lands in the channel's in-process buffer for a `receive` still
//! waiting, or goes back into Redis (old score) when none is left.
//! The pop follows channels_redis: restore `$inflight` (first pop of a key on
//! a shard), `BZPOPMIN key timeout`, `ZADD key$inflight`, decode, then drop
//! the backup. Hosts are polled round-robin, one per pop.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use channels_core::{LayerError, Message};
use tokio::sync::oneshot;
use tracing::warn;

use crate::connection::lock;
use crate::keys::{channel_key, inflight_key};
use crate::layer::{Inner, RedisChannelLayer};
use crate::lua;
use crate::mailbox::Mailboxes;

#[derive(Debug, Default)]
struct PopState {
    popping: bool,
    restored_on: HashSet<usize>,
}

/// Buffers and pop state for the plain channels received through one layer.
#[derive(Debug)]
pub(crate) struct PlainChannels {
    mailboxes: Mailboxes,
    state: Mutex<HashMap<String, PopState>>,
}

impl PlainChannels {
    /// Empty state; buffered messages expire after `expiry`.
    pub(crate) fn new(expiry: Duration) -> Self {
        Self {
            mailboxes: Mailboxes::new(expiry),
            state: Mutex::new(HashMap::new()),
        }
    }

    /// Forgets buffered messages (`flush`).
    pub(crate) fn clear(&self) {
        self.mailboxes.clear();
    }
}

/// Receives the next message of plain channel `channel`.
pub(crate) async fn receive(inner: &Arc<Inner>, channel: &str) -> Result<Message, LayerError> {
    let plain = &inner.plain;
    let _guard = plain.mailboxes.register(channel);
    let notify = plain.mailboxes.notifier(channel);
    let mut my_pop: Option<oneshot::Receiver<Result<(), LayerError>>> = None;
    loop {
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if let Some(message) = plain.mailboxes.try_take(channel) {
            return Ok(message);
        }
        if my_pop.is_none() {
            let mut state = lock(&plain.state);
            let entry = state.entry(channel.to_owned()).or_default();
            if !entry.popping {
                entry.popping = true;
                let (tx, rx) = oneshot::channel();
                tokio::spawn(pop_task(inner.clone(), channel.to_owned(), tx));
                my_pop = Some(rx);
            }
        }
        match my_pop.as_mut() {
            Some(rx) => {
                tokio::select! {
                    result = rx => {
                        my_pop = None;
                        if let Ok(Err(e)) = result {
                            return Err(e);
                        }
                    }
                    () = &mut notified => {}
                }
            }
            None => notified.await,
        }
    }
}

async fn pop_task(
    inner: Arc<Inner>,
    channel: String,
    done: oneshot::Sender<Result<(), LayerError>>,
) {
    let result = pop_once(&inner, &channel).await;
    {
        let mut state = lock(&inner.plain.state);
        if let Some(entry) = state.get_mut(&channel) {
            entry.popping = false;
        }
    }
    inner.plain.mailboxes.notifier(&channel).notify_waiters();
    if let Err(Err(e)) = done.send(result) {
        warn!("receive on {channel} failed with no receiver left: {e}");
    }
}

async fn pop_once(inner: &Inner, channel: &str) -> Result<(), LayerError> {
    let index = RedisChannelLayer::next_receive_shard(inner);
    let shard = &inner.shards[index];
    let key = channel_key(&inner.prefix, channel);
    let inflight = inflight_key(&key);
    let mut connection = shard.dedicated("receive", inner.brpop_timeout).await?;
    let needs_restore = lock(&inner.plain.state)
        .get(channel)
        .is_none_or(|s| !s.restored_on.contains(&index));
    if needs_restore {
        lua::RESTORE
            .key(&key)
            .key(&inflight)
            .invoke_async::<i64>(&mut connection)
            .await
            .map_err(|e| shard.error("receive", e))?;
        if let Some(state) = lock(&inner.plain.state).get_mut(channel) {
            state.restored_on.insert(index);
        }
    }
    let popped: Option<(Vec<u8>, Vec<u8>, Vec<u8>)> = redis::cmd("BZPOPMIN")
        .arg(&key)
        .arg(inner.brpop_timeout.as_secs_f64())
        .query_async(&mut connection)
        .await
        .map_err(|e| shard.error("receive", e))?;
    if let Some((_, member, score)) = popped {
        redis::cmd("ZADD")
            .arg(&inflight)
            .arg(&score)
            .arg(&member)
            .exec_async(&mut connection)
            .await
            .map_err(|e| shard.error("receive", e))?;
        if inner.plain.mailboxes.receivers(channel) == 0 {
            // Every receive that wanted this was cancelled: put it back in
            // Redis (old score, so it stays first) for whoever asks next,
            // here or in another process.
            redis::pipe()
                .atomic()
                .cmd("ZADD")
                .arg(&key)
                .arg(&score)
                .arg(&member)
                .ignore()
                .cmd("ZREM")
                .arg(&inflight)
                .arg(&member)
                .ignore()
                .exec_async(&mut connection)
                .await
                .map_err(|e| shard.error("receive", e))?;
            shard.release(connection);
            return Ok(());
        }
        let score = std::str::from_utf8(&score)
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or_else(crate::mailbox::now_secs);
        match inner.serializer.deserialize(&member) {
            Ok(unpacked) => {
                // Plain channels have no buffer bound beyond pops in flight
                // (one at a time), so capacity only guards misuse.
                let capacity = inner.layer.capacities.capacity_for(channel);
                inner
                    .plain
                    .mailboxes
                    .push(channel, score, unpacked.message, capacity);
            }
            Err(e) => warn!("dropping an undecodable message on {key}: {e}"),
        }
        redis::cmd("ZREM")
            .arg(&inflight)
            .arg(&member)
            .exec_async(&mut connection)
            .await
            .map_err(|e| shard.error("receive", e))?;
    }
    shard.release(connection);
    Ok(())
}
