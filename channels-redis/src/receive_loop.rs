//! The receive loop: one background task per process-local key (normally one
//! per layer instance) that pops the shared `{prefix}specific.<cp>!` ZSET in
//! batches and routes each message to its channel's in-process buffer.
//!
//! Per batch: BZPOPMIN (only when the last batch was not full), then one Lua
//! call that backs the popped member up in `key$inflight` and pops up to
//! [`BATCH`] more (also backed up), then routing. The routed batch's backup is
//! dropped (DEL) in the same round trip as the next pop. On (re)start the loop
//! first acknowledges what it had routed, then restores whatever is left in
//! `$inflight` (K2). On a Redis failure it tells
//! waiting receivers, reconnects with capped exponential backoff, and writes
//! this instance's group memberships again.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use channels_core::{LayerError, non_local_name};
use redis::aio::MultiplexedConnection;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, debug, info, warn};

use crate::connection::{Shard, lock};
use crate::groups::add_membership;
use crate::keys::inflight_key;
use crate::layer::Inner;
use crate::lua;

/// What BZPOPMIN returns on a hit: key, member, score (as sent).
type Popped = (Vec<u8>, Vec<u8>, Vec<u8>);

/// Messages popped per Lua call.
pub(crate) const BATCH: usize = 100;

/// Longest a loop blocks in one BZPOPMIN, so `close()` takes effect quickly.
const MAX_POLL: Duration = Duration::from_secs(1);

/// First and longest wait between reconnection attempts.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The receive loop lost Redis; found inside [`LayerError::Backend`].
#[derive(Debug, thiserror::Error)]
#[error("the redis receive loop is reconnecting: {reason}")]
pub struct ReceiveLoopError {
    reason: Arc<str>,
}

/// Builds the error a receive returns while its loop is down.
pub(crate) fn failure_error(reason: &Arc<str>) -> LayerError {
    LayerError::backend(ReceiveLoopError {
        reason: reason.clone(),
    })
}

/// Owns a running loop: `stop()` (or dropping the layer) cancels it.
#[derive(Debug, Clone)]
pub(crate) struct LoopHandle {
    token: CancellationToken,
    failure: Arc<Mutex<Option<Arc<str>>>>,
    task: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl LoopHandle {
    /// Why the loop is currently without Redis, if it is.
    pub(crate) fn failure(&self) -> Option<Arc<str>> {
        lock(&self.failure).clone()
    }

    /// Whether the task has ended (stopped).
    pub(crate) fn is_finished(&self) -> bool {
        self.token.is_cancelled()
            || lock(&self.task)
                .as_ref()
                .is_none_or(JoinHandle::is_finished)
    }

    /// Asks the loop to stop after its current pop (at most [`MAX_POLL`]);
    /// what that pop returns is still routed, so nothing is lost.
    pub(crate) fn stop(&self) {
        self.token.cancel();
    }
}

/// Starts the loop for `key` on shard `shard`.
pub(crate) fn spawn(inner: Arc<Inner>, key: String, shard: usize) -> LoopHandle {
    let handle = LoopHandle {
        token: CancellationToken::new(),
        failure: Arc::new(Mutex::new(None)),
        task: Arc::new(Mutex::new(None)),
    };
    let span = tracing::info_span!("receive_loop", key = %key);
    let state = LoopState {
        inflight: inflight_key(&key),
        key,
        shard,
        inner,
        handle: handle.clone(),
        pending_ack: false,
    };
    let task = tokio::spawn(state.run().instrument(span));
    *lock(&handle.task) = Some(task);
    handle
}

struct LoopState {
    inner: Arc<Inner>,
    key: String,
    inflight: String,
    shard: usize,
    handle: LoopHandle,
    /// The last batch was routed to buffers but its `$inflight` backup is
    /// still there. Only this loop writes that key (the client prefix is
    /// unique), so acknowledging is one DEL, pipelined with the next pop.
    pending_ack: bool,
}

impl LoopState {
    fn shard(&self) -> &Shard {
        &self.inner.shards[self.shard]
    }

    async fn run(mut self) {
        let mut backoff = BACKOFF_MIN;
        let mut recovering = false;
        let token = self.handle.token.clone();
        while !token.is_cancelled() {
            let poll = self.inner.brpop_timeout.min(MAX_POLL);
            let connection = tokio::select! {
                () = token.cancelled() => break,
                c = self.shard().dedicated("receive", poll) => c,
            };
            let result = match connection {
                Ok(mut connection) => match self.prepare(&mut connection, recovering).await {
                    Ok(()) => {
                        if recovering {
                            info!("receive loop reconnected to {}", self.shard().label());
                        }
                        *lock(&self.handle.failure) = None;
                        backoff = BACKOFF_MIN;
                        self.pop_until_failure(&mut connection, poll, &token).await
                    }
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            let Err(error) = result else { break };
            let reason = error.to_string();
            warn!("receive loop lost redis, retrying in {backoff:?}: {reason}");
            *lock(&self.handle.failure) = Some(Arc::from(reason.as_str()));
            self.inner.local.fail_all(&reason);
            recovering = true;
            tokio::select! {
                () = token.cancelled() => break,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
        debug!("receive loop stopped");
    }

    /// Acknowledges routed members, restores `$inflight` and, after an
    /// outage, writes this instance's group memberships again.
    async fn prepare(
        &mut self,
        connection: &mut MultiplexedConnection,
        recovering: bool,
    ) -> Result<(), LayerError> {
        self.ack(connection).await?;
        let restored: i64 = lua::RESTORE
            .key(&self.key)
            .key(&self.inflight)
            .invoke_async(connection)
            .await
            .map_err(|e| self.shard().error("receive", e))?;
        if restored > 0 {
            info!("restored {restored} in-flight messages to {}", self.key);
        }
        if recovering {
            let pairs = self.inner.memberships.snapshot();
            let ours: Vec<_> = pairs
                .iter()
                .filter(|(_, channel)| self.key.ends_with(non_local_name(channel)))
                .collect();
            for (group, channel) in &ours {
                // The shared command connection may still hold the failed
                // reconnect from the outage; its first use retries it.
                if add_membership(&self.inner, group, channel).await.is_err() {
                    add_membership(&self.inner, group, channel).await?;
                }
            }
            if !ours.is_empty() {
                info!(
                    "restored {} group memberships after reconnecting",
                    ours.len()
                );
            }
        }
        Ok(())
    }

    async fn ack(&mut self, connection: &mut MultiplexedConnection) -> Result<(), LayerError> {
        if !self.pending_ack {
            return Ok(());
        }
        redis::cmd("DEL")
            .arg(&self.inflight)
            .exec_async(connection)
            .await
            .map_err(|e| self.shard().error("receive", e))?;
        self.pending_ack = false;
        Ok(())
    }

    async fn pop_until_failure(
        &mut self,
        connection: &mut MultiplexedConnection,
        poll: Duration,
        token: &CancellationToken,
    ) -> Result<(), LayerError> {
        let mut blocking = true;
        let mut last_sweep = Instant::now();
        loop {
            if token.is_cancelled() {
                // Everything popped so far is in the buffers: drop its backup
                // so a later loop does not restore (duplicate) it.
                return self.ack(connection).await;
            }
            if last_sweep.elapsed() > Duration::from_secs(1) {
                let expired = self.inner.local.sweep();
                if expired > 0 {
                    debug!("{expired} buffered messages expired unread");
                }
                last_sweep = Instant::now();
            }
            let batch = self.pop_batch(connection, poll, blocking).await?;
            // After a blocking hit, look for a burst behind it; after a batch
            // pop, block again once the queue ran dry.
            blocking = if blocking {
                batch.is_empty()
            } else {
                batch.len() < BATCH
            };
            if batch.is_empty() {
                continue;
            }
            self.route(batch);
        }
    }

    /// Pops one batch of (member, score): one member from a blocking
    /// BZPOPMIN when the queue looked empty (routed at once: it is in this
    /// process from here on, so a backup would protect nothing), otherwise up
    /// to [`BATCH`] from the Lua batch pop, backed up until routed.
    async fn pop_batch(
        &mut self,
        connection: &mut MultiplexedConnection,
        poll: Duration,
        blocking: bool,
    ) -> Result<Vec<(Vec<u8>, f64)>, LayerError> {
        if blocking {
            let mut pipe = redis::pipe();
            if self.pending_ack {
                pipe.cmd("DEL").arg(&self.inflight).ignore();
            }
            pipe.cmd("BZPOPMIN").arg(&self.key).arg(poll.as_secs_f64());
            let (first,): (Option<Popped>,) = pipe
                .query_async(connection)
                .await
                .map_err(|e| self.shard().error("receive", e))?;
            self.pending_ack = false;
            return Ok(first
                .map(|(_, member, score)| vec![(member, parse_score(&score))])
                .unwrap_or_default());
        }
        let mut invocation = lua::DRAIN.prepare_invoke();
        invocation
            .key(&self.key)
            .key(&self.inflight)
            .arg(if self.pending_ack { "1" } else { "0" })
            .arg(BATCH);
        let flat: Vec<Vec<u8>> = invocation
            .invoke_async(connection)
            .await
            .map_err(|e| self.shard().error("receive", e))?;
        self.pending_ack = false;
        let mut batch = Vec::with_capacity(flat.len() / 2);
        let mut items = flat.into_iter();
        while let (Some(member), Some(score)) = (items.next(), items.next()) {
            batch.push((member, parse_score(&score)));
        }
        Ok(batch)
    }

    /// Decodes each member and queues it for every channel it names.
    fn route(&mut self, batch: Vec<(Vec<u8>, f64)>) {
        let inner = &self.inner;
        for (member, score) in batch {
            match inner.serializer.deserialize(&member) {
                Ok(unpacked) => match unpacked.route {
                    Some(channels) => {
                        for channel in channels {
                            let capacity = inner.layer.capacities.capacity_for(&channel);
                            let dropped = inner.local.push(
                                &channel,
                                score,
                                unpacked.message.clone(),
                                capacity,
                            );
                            if dropped > 0 {
                                debug!(
                                    "buffer of {channel} full (capacity {capacity}); dropped the oldest message"
                                );
                            }
                        }
                    }
                    None => warn!(
                        "dropping a message on {} without `__asgi_channel__`",
                        self.key
                    ),
                },
                Err(e) => warn!("dropping an undecodable message on {}: {e}", self.key),
            }
        }
        self.pending_ack = true;
    }
}

/// A ZSET score as Redis sends it (text); "now" if unreadable, which only
/// affects local expiry.
fn parse_score(score: &[u8]) -> f64 {
    std::str::from_utf8(score)
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or_else(crate::mailbox::now_secs)
}
