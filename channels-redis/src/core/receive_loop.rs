//! The receive loop: one background task per process-local key (normally one
//! per layer instance) that pops the shared `{prefix}specific.<cp>!` ZSET in
//! batches and routes each message to its channel's mailbox.
//!
//! Per turn: BZPOPMIN with a ZCARD behind it; when more was queued, one MULTI
//! that renames the key to `key$inflight` (the backup is the batch itself,
//! nothing is copied) and reads it, then routing. The routed batch's backup
//! is replaced by the next batch's RENAME, or dropped (DEL) in the same round
//! trip as the next blocking pop.
//! On (re)start the loop first acknowledges what it had routed, then restores
//! whatever is left in `$inflight` (K2).
//!
//! When Redis goes away the loop fails every local mailbox (one signal,
//! [`LocalChannels::fail`]), marks the memberships as lost (this instance's
//! group sends wait), and reconnects with a short capped backoff. Back on
//! Redis it writes this instance's memberships again *first*, then recovers
//! the mailboxes and opens the group-send gate.

use std::sync::Arc;
use std::time::Duration;

use channels_core::{Backoff, LayerError};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, debug, info, warn};

use super::groups::{restore_memberships, under_key};
use super::local::{LocalChannels, Routes};
use super::memberships::Memberships;
use super::settings::{Settings, Shards, now_secs};
use crate::connection::{Dedicated, LONGEST_BLOCK, Shard};
use crate::keys::inflight_key;
use crate::lua;

/// What BZPOPMIN returns on a hit: key, member, score (as sent).
type Popped = (Vec<u8>, Vec<u8>, Vec<u8>);

/// Longest a loop blocks in one BZPOPMIN, so `close()` takes effect quickly.
const MAX_POLL: Duration = LONGEST_BLOCK;

/// Pauses between reconnection attempts. Short: while the loop is away, this
/// instance's channels hear nothing, and after a Redis restart its group
/// memberships are missing until it is back (tested: a 5 s cap lost almost
/// 3 s of messages after Redis returned).
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_millis(500);

/// How often buffered messages nobody reads are checked for expiry.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// What a receive loop needs, shared with the layer.
#[derive(Debug, Clone)]
pub(crate) struct LoopParts {
    pub(crate) settings: Arc<Settings>,
    pub(crate) shards: Arc<Shards>,
    pub(crate) local: Arc<LocalChannels>,
    pub(crate) memberships: Arc<Memberships>,
}

/// Owns a running loop: [`LoopHandle::stop`] (or dropping the layer) ends it.
#[derive(Debug)]
pub(crate) struct LoopHandle {
    token: CancellationToken,
    task: JoinHandle<()>,
}

impl LoopHandle {
    /// Whether the task has ended.
    pub(crate) fn is_finished(&self) -> bool {
        self.token.is_cancelled() || self.task.is_finished()
    }

    /// Asks the loop to stop after its current pop (at most [`MAX_POLL`]);
    /// what that pop returns is still routed, so nothing is lost.
    pub(crate) fn stop(&self) {
        self.token.cancel();
    }
}

impl Drop for LoopHandle {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// Starts the loop for `key` on shard `shard`.
pub(crate) fn spawn(parts: LoopParts, key: String, shard: usize) -> LoopHandle {
    let token = CancellationToken::new();
    let span = tracing::info_span!("receive_loop", key = %key);
    let state = LoopState {
        inflight: inflight_key(&key),
        key,
        shard,
        parts,
        pending_ack: false,
        routes: Routes::default(),
    };
    let task = tokio::spawn(state.run(token.clone()).instrument(span));
    LoopHandle { token, task }
}

struct LoopState {
    parts: LoopParts,
    key: String,
    inflight: String,
    shard: usize,
    /// The last batch was routed to mailboxes but its `$inflight` backup is
    /// still there. Only this loop writes that key (the client prefix is
    /// unique), so acknowledging is one DEL, pipelined with the next pop.
    pending_ack: bool,
    /// Where the last routed message went, for the next one.
    routes: Routes,
}

impl LoopState {
    fn shard(&self) -> &Shard {
        self.parts.shards.get(self.shard)
    }

    async fn run(mut self, token: CancellationToken) {
        let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
        let mut recovering = false;
        while !token.is_cancelled() {
            let poll = self.parts.settings.brpop_timeout.min(MAX_POLL);
            let connection = tokio::select! {
                () = token.cancelled() => break,
                c = self.shard().dedicated("receive") => c,
            };
            let result = match connection {
                // Every dedicated connection is busy with plain-channel
                // pops; one comes back within a pop's time.
                Ok(None) => continue,
                Ok(Some(mut connection)) => match self.prepare(&mut connection, recovering).await {
                    Ok(()) => {
                        if recovering {
                            info!("receive loop reconnected to {}", self.shard().label());
                        }
                        self.parts.local.recover();
                        self.parts.memberships.set_restored(true);
                        recovering = false;
                        backoff.reset();
                        let popped = self.pop_until_failure(&mut connection, poll, &token).await;
                        if popped.is_ok() {
                            connection.release();
                        }
                        popped
                    }
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            // A failed connection was dropped above, so it is closed, not pooled.
            let Err(error) = result else { break };
            let pause = backoff.next_delay();
            if !recovering {
                let longest = Backoff::longest_delay(BACKOFF_MAX);
                warn!("receive loop lost redis, retrying every {longest:?} at most: {error}");
                self.parts.local.fail(&error.to_string());
                self.parts.memberships.set_restored(false);
            } else {
                debug!("receive loop still without redis, retrying in {pause:?}: {error}");
            }
            recovering = true;
            tokio::select! {
                () = token.cancelled() => break,
                () = tokio::time::sleep(pause) => {}
            }
        }
        debug!("receive loop stopped");
    }

    /// Acknowledges routed members, writes this instance's memberships again
    /// after an outage, and restores `$inflight`.
    async fn prepare(
        &mut self,
        connection: &mut Dedicated,
        recovering: bool,
    ) -> Result<(), LayerError> {
        self.ack(connection).await?;
        if recovering {
            let parts = &self.parts;
            let pairs = parts
                .memberships
                .snapshot(|channel| under_key(&parts.settings, &self.key, channel));
            restore_memberships(&parts.settings, &parts.shards, &pairs).await?;
            if !pairs.is_empty() {
                info!(
                    "wrote {} group memberships again after reconnecting",
                    pairs.len()
                );
            }
        }
        let restored: i64 = lua::RESTORE
            .key(&self.key)
            .key(&self.inflight)
            .invoke_async(connection)
            .await
            .map_err(|e| self.shard().error("receive", e))?;
        if restored > 0 {
            info!("restored {restored} in-flight messages to {}", self.key);
        }
        Ok(())
    }

    async fn ack(&mut self, connection: &mut Dedicated) -> Result<(), LayerError> {
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
        connection: &mut Dedicated,
        poll: Duration,
        token: &CancellationToken,
    ) -> Result<(), LayerError> {
        let mut blocking = true;
        let mut last_sweep = tokio::time::Instant::now();
        loop {
            if token.is_cancelled() {
                // Everything popped so far is in the mailboxes: drop its
                // backup so a later loop does not restore (duplicate) it.
                return self.ack(connection).await;
            }
            if last_sweep.elapsed() > SWEEP_INTERVAL {
                self.parts.local.sweep();
                self.routes.clear();
                last_sweep = tokio::time::Instant::now();
            }
            let (batch, more) = self.pop_batch(connection, poll, blocking).await?;
            // Only a batch pop leaves a backup behind to acknowledge.
            let backed_up = !blocking && !batch.is_empty();
            // A batch pop after a blocking pop that saw more queued; block
            // again after it (the batch took the whole queue).
            blocking = !more;
            if batch.is_empty() {
                continue;
            }
            self.route(batch);
            self.pending_ack |= backed_up;
        }
    }

    /// Pops one batch of (member, score): one member from a blocking
    /// BZPOPMIN when the queue looked empty (routed at once: it is in this
    /// process from here on, so a backup would protect nothing), otherwise
    /// the whole queue from the batch pop, backed up until routed. Also says
    /// whether more is queued: the count pipelined behind the blocking pop
    /// (so a lone message costs no extra round trip); never after a batch.
    async fn pop_batch(
        &mut self,
        connection: &mut Dedicated,
        poll: Duration,
        blocking: bool,
    ) -> Result<(Vec<(Vec<u8>, f64)>, bool), LayerError> {
        if blocking {
            let mut pipe = redis::pipe();
            if self.pending_ack {
                pipe.cmd("DEL").arg(&self.inflight).ignore();
            }
            // Redis runs the ZCARD once the BZPOPMIN has returned.
            pipe.cmd("BZPOPMIN").arg(&self.key).arg(poll.as_secs_f64());
            pipe.cmd("ZCARD").arg(&self.key);
            let (first, left): (Option<Popped>, usize) = pipe
                .query_async(connection)
                .await
                .map_err(|e| self.shard().error("receive", e))?;
            self.pending_ack = false;
            let batch = first
                .map(|(_, member, score)| vec![(member, parse_score(&score))])
                .unwrap_or_default();
            return Ok((batch, left > 0));
        }
        let results = batch_pop(&self.key, &self.inflight)
            .query_async(connection)
            .await
            .map_err(|e| self.shard().error("receive", e))?;
        let Some(flat) = batch_read(results).map_err(|e| self.shard().error("receive", e))? else {
            return Ok((Vec::new(), false));
        };
        self.pending_ack = false;
        let mut batch = Vec::with_capacity(flat.len() / 2);
        let mut items = flat.into_iter();
        while let (Some(member), Some(score)) = (items.next(), items.next()) {
            batch.push((member, parse_score(&score)));
        }
        // The queue went with the batch; what came since is counted by the
        // next blocking pop.
        Ok((batch, false))
    }

    /// Decodes each member and queues it for every channel it names.
    fn route(&mut self, batch: Vec<(Vec<u8>, f64)>) {
        let parts = &self.parts;
        let routes = &mut self.routes;
        let now = now_secs();
        for (member, score) in batch {
            let routed = parts
                .settings
                .serializer
                .deserialize_with(&member, |message, route| match route {
                    Some(channels) => {
                        parts
                            .local
                            .route(routes, &message, channels.iter().copied(), score, now);
                        true
                    }
                    None => false,
                });
            match routed {
                Ok(true) => {}
                Ok(false) => {
                    parts.local.drops().count_undecodable();
                    warn!(
                        "dropping a message on {} without `__asgi_channel__`",
                        self.key
                    );
                }
                Err(e) => {
                    parts.local.drops().count_undecodable();
                    warn!("dropping an undecodable message on {}: {e}", self.key);
                }
            }
        }
    }
}

/// The batch pop: the whole queue becomes `$inflight` (RENAME, replacing the
/// routed batch's backup without copying a member) and is read back (ZRANGE).
/// ZRANGESTORE + ZPOPMIN, before it, copied every member into the backup and
/// removed it from the queue, each hashing the whole member (SipHash was 39%
/// of redis-server's samples in the broadcast benchmark, every member listing
/// ~500 channels). No Lua: Redis's Lua hashes every string it is handed. The
/// queue is bounded by its capacity (a send or group send to a full key is
/// refused), so a batch is too. RENAME keeps the queue's TTL, so unlike
/// channels_redis's (WIRE.md) this backup expires, with the queue's expiry:
/// only this loop reads it, and what it holds would have expired by then.
fn batch_pop(key: &str, inflight: &str) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    pipe.atomic()
        .ignore_errors()
        .cmd("RENAME")
        .arg(key)
        .arg(inflight)
        .cmd("ZRANGE")
        .arg(inflight)
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES");
    pipe
}

/// The members and scores (flat) a [`batch_pop`] read, or `None` if the queue
/// was gone (drained, expired or flushed since it was counted): then nothing
/// moved, and what the read saw is the routed batch's backup, not routed
/// again.
fn batch_read(
    results: Vec<redis::RedisResult<redis::Value>>,
) -> redis::RedisResult<Option<Vec<Vec<u8>>>> {
    let mut results = results.into_iter();
    let (Some(renamed), Some(read)) = (results.next(), results.next()) else {
        let short = (
            redis::ErrorKind::UnexpectedReturnType,
            "a batch pop answered fewer than two replies",
        );
        return Err(short.into());
    };
    match renamed {
        Ok(_) => Ok(Some(redis::from_redis_value(read?)?)),
        Err(e) if e.to_string().to_ascii_lowercase().contains("no such key") => Ok(None),
        Err(e) => Err(e),
    }
}

/// A ZSET score as Redis sends it (text); "now" if unreadable, which only
/// affects local expiry.
fn parse_score(score: &[u8]) -> f64 {
    std::str::from_utf8(score)
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or_else(now_secs)
}

/// The batch pop against a real `redis-server` (feature `testing`).
#[cfg(all(test, feature = "testing"))]
mod redis_tests {
    use super::*;
    use crate::testing::RedisServer;

    async fn pop(
        connection: &mut redis::aio::MultiplexedConnection,
    ) -> redis::RedisResult<Option<Vec<Vec<u8>>>> {
        let results = batch_pop("q", "q$inflight").query_async(connection).await?;
        batch_read(results)
    }

    #[tokio::test]
    async fn a_batch_pop_moves_the_whole_queue_to_its_backup_and_an_empty_queue_moves_nothing() {
        let server = RedisServer::start().expect("redis-server on PATH");
        let mut connection = crate::testing::connect(&server.url())
            .await
            .expect("connect");
        let add = |member: &'static str, score: f64| {
            redis::cmd("ZADD").arg("q").arg(score).arg(member).clone()
        };
        for (member, score) in [("b", 2.0), ("a", 1.0), ("c", 3.0)] {
            add(member, score)
                .exec_async(&mut connection)
                .await
                .unwrap();
        }

        let flat = pop(&mut connection).await.unwrap().expect("a batch");
        let members: Vec<&[u8]> = flat.iter().step_by(2).map(Vec::as_slice).collect();
        assert_eq!(members, [b"a", b"b", b"c"], "the whole queue, oldest first");
        assert_eq!(parse_score(&flat[1]), 1.0);
        let (queued, backed_up): (usize, usize) = redis::pipe()
            .cmd("ZCARD")
            .arg("q")
            .cmd("ZCARD")
            .arg("q$inflight")
            .query_async(&mut connection)
            .await
            .unwrap();
        assert_eq!(
            (queued, backed_up),
            (0, 3),
            "popped, and backed up until routed"
        );

        // The queue is gone: the read sees the routed batch's backup, which
        // must not come back as a new batch, and the backup stays for its DEL.
        assert_eq!(pop(&mut connection).await.unwrap(), None);
        let backed_up: usize = redis::cmd("ZCARD")
            .arg("q$inflight")
            .query_async(&mut connection)
            .await
            .unwrap();
        assert_eq!(backed_up, 3);

        // The next batch replaces the routed one's backup.
        add("d", 4.0).exec_async(&mut connection).await.unwrap();
        let flat = pop(&mut connection).await.unwrap().expect("a batch");
        assert_eq!(flat[0], b"d");
        let backup: Vec<Vec<u8>> = redis::cmd("ZRANGE")
            .arg("q$inflight")
            .arg(0)
            .arg(-1)
            .query_async(&mut connection)
            .await
            .unwrap();
        assert_eq!(backup, [b"d".to_vec()]);
    }
}
