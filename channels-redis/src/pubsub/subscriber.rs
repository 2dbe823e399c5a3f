//! The subscriber worker of one shard: connects, resubscribes every wanted
//! topic, reads messages into the registry, pings to notice dead links, and
//! reconnects with capped exponential backoff. A [`WorkerGuard`] owns it.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt as _;
use futures_util::StreamExt as _;
use redis::aio::{PubSubSink, PubSubStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{Instant, interval_at, sleep, timeout};
use tokio_util::sync::CancellationToken;

use super::backoff::Backoff;
use super::shard::{SUBSCRIBE_BATCH, ShardConn, Shared};

/// How often an idle subscriber connection is PINGed.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// A connection that lived this long was healthy: the next reconnect starts
/// from the shortest delay again.
const STABLE_AFTER: Duration = Duration::from_secs(1);

/// How long `stop` waits for the worker to finish.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// Pending sync requests (`Shard::sync`, for `flush`) a worker holds at most.
const SYNC_QUEUE: usize = 16;

/// Answered once the worker has delivered everything Redis sent it before.
pub(super) type SyncRequest = oneshot::Sender<()>;

/// Owns a running worker: dropping it (or [`WorkerGuard::stop`]) stops it.
#[derive(Debug)]
pub(super) struct WorkerGuard {
    token: CancellationToken,
    handle: Option<JoinHandle<()>>,
    syncs: mpsc::Sender<SyncRequest>,
}

impl WorkerGuard {
    /// Whether the worker task is still alive.
    pub(super) fn is_running(&self) -> bool {
        self.handle
            .as_ref()
            .is_some_and(|handle| !handle.is_finished())
    }

    /// Where to ask the worker for a sync point (see `listen`).
    pub(super) fn syncs(&self) -> mpsc::Sender<SyncRequest> {
        self.syncs.clone()
    }

    /// Stops the worker and waits (bounded) until it has let go of its connection.
    pub(super) async fn stop(mut self) {
        self.token.cancel();
        if let Some(handle) = self.handle.take()
            && timeout(STOP_WAIT, handle).await.is_err()
        {
            tracing::warn!("pub/sub subscriber worker did not stop within {STOP_WAIT:?}");
        }
    }
}

impl Drop for WorkerGuard {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// Starts the worker of `conn`.
pub(super) fn spawn(conn: Arc<ShardConn>, shared: Arc<Shared>) -> WorkerGuard {
    let token = CancellationToken::new();
    let (syncs, requests) = mpsc::channel(SYNC_QUEUE);
    let handle = tokio::spawn(run_subscriber(conn, shared, requests, token.clone()));
    WorkerGuard {
        token,
        handle: Some(handle),
        syncs,
    }
}

/// Why [`listen`] returned.
enum Ended {
    Cancelled,
    Lost(String),
}

#[tracing::instrument(skip_all, fields(shard = conn.index(), host = conn.host()))]
async fn run_subscriber(
    conn: Arc<ShardConn>,
    shared: Arc<Shared>,
    mut syncs: mpsc::Receiver<SyncRequest>,
    token: CancellationToken,
) {
    let mut backoff = Backoff::new();
    loop {
        let attempt = tokio::select! {
            biased;
            () = token.cancelled() => break,
            attempt = connect(&conn, &shared) => attempt,
        };
        match attempt {
            Ok((sink, stream)) => {
                let connected_at = Instant::now();
                tracing::debug!("pub/sub subscriber connected");
                let ended = listen(&conn, &shared, sink, stream, &mut syncs, &token).await;
                conn.set_down();
                match ended {
                    Ended::Cancelled => break,
                    Ended::Lost(reason) => {
                        tracing::warn!(%reason, "pub/sub subscriber connection lost; reconnecting");
                    }
                }
                if connected_at.elapsed() >= STABLE_AFTER {
                    backoff.reset();
                }
            }
            Err(reason) => {
                conn.set_down();
                tracing::warn!(%reason, "pub/sub subscriber cannot connect; retrying");
            }
        }
        let delay = backoff.next_delay();
        tokio::select! {
            biased;
            () = token.cancelled() => break,
            () = sleep(delay) => {}
        }
    }
    conn.set_down();
}

/// Opens the subscriber connection and SUBSCRIBEs every topic of this shard
/// the registry wants, then marks the link up.
async fn connect(conn: &ShardConn, shared: &Shared) -> Result<(PubSubSink, PubSubStream), String> {
    let timeouts = conn.timeouts();
    let client = conn.client().await?;
    let pubsub = timeout(timeouts.connect, client.get_async_pubsub())
        .await
        .map_err(|_| format!("connecting timed out after {:?}", timeouts.connect))?
        .map_err(|error| format!("connecting failed: {error}"))?;
    let (mut sink, stream) = pubsub.split();
    let generation = conn.next_generation();
    // Held until the link is announced, so no (un)subscribe interleaves.
    let _ops = conn.ops_lock().await;
    let topics = shared
        .registry
        .topics_on_shard(conn.index(), shared.shard_count);
    for batch in topics.chunks(SUBSCRIBE_BATCH) {
        timeout(timeouts.command, sink.subscribe(batch))
            .await
            .map_err(|_| format!("resubscribing timed out after {:?}", timeouts.command))?
            .map_err(|error| format!("resubscribing failed: {error}"))?;
    }
    if !topics.is_empty() {
        tracing::debug!(topics = topics.len(), "pub/sub topics (re)subscribed");
    }
    conn.set_up(
        generation,
        sink.clone(),
        topics.into_iter().collect::<HashSet<_>>(),
    );
    Ok((sink, stream))
}

/// Hands every arriving message to the registry until the connection ends
/// or the worker is cancelled.
///
/// A sync request is answered after a PING on this connection: Redis sends
/// the reply after every message it pushed here before, and the client queues
/// those messages before it completes the PING, so delivering what is queued
/// then delivers everything published before the request (what `flush`
/// needs to drop in-flight messages).
async fn listen(
    conn: &ShardConn,
    shared: &Shared,
    mut sink: PubSubSink,
    mut stream: PubSubStream,
    syncs: &mut mpsc::Receiver<SyncRequest>,
    token: &CancellationToken,
) -> Ended {
    let command_timeout = conn.timeouts().command;
    let mut keepalive = interval_at(Instant::now() + KEEPALIVE, KEEPALIVE);
    loop {
        tokio::select! {
            biased;
            () = token.cancelled() => return Ended::Cancelled,
            message = stream.next() => match message {
                Some(message) => shared.registry.deliver(
                    message.get_channel_name(),
                    message.get_payload_bytes(),
                    &shared.serializer,
                ),
                None => return Ended::Lost("the server closed the connection".to_owned()),
            },
            Some(done) = syncs.recv() => {
                match timeout(command_timeout, sink.ping::<redis::Value>()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) => return Ended::Lost(format!("PING failed: {error}")),
                    Err(_) => return Ended::Lost(format!("PING timed out after {command_timeout:?}")),
                }
                // Unconstrained: the coop budget must not make a queued message look absent.
                while let Some(Some(message)) = tokio::task::unconstrained(stream.next()).now_or_never() {
                    shared.registry.deliver(
                        message.get_channel_name(),
                        message.get_payload_bytes(),
                        &shared.serializer,
                    );
                }
                // The requester may have given up waiting; nothing to do then.
                let _ = done.send(());
            }
            _ = keepalive.tick() => {
                match timeout(command_timeout, sink.ping::<redis::Value>()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) => return Ended::Lost(format!("PING failed: {error}")),
                    Err(_) => return Ended::Lost(format!("PING timed out after {command_timeout:?}")),
                }
            }
        }
    }
}
