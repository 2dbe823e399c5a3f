//! One Redis server (shard) of the pub/sub layer: a publishing connection and
//! the subscriber link kept up by its worker ([`super::subscriber`]).
//!
//! Subscriptions are driven by the [`Registry`]: it is the one list of topics
//! this instance wants. A caller first changes the registry, then asks the
//! shard to (UN)SUBSCRIBE; the worker, after every (re)connect, subscribes to
//! the registry's topics of this shard before it announces the link as up.
//! Every SUBSCRIBE/UNSUBSCRIBE runs under `ops`, so a discard racing an add
//! of the same group cannot leave Redis in the wrong state.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use channels_core::LayerError;
use redis::aio::{MultiplexedConnection, PubSubSink};
use redis::{AsyncConnectionConfig, Client};
use tokio::sync::watch;
use tokio::time::{Instant, timeout, timeout_at};

use crate::serializer::Serializer;

use super::error::ShardError;
use super::registry::Registry;
use super::subscriber::{self, WorkerGuard};
use crate::target::Target;

/// SUBSCRIBE at most this many topics per command when resubscribing.
pub(super) const SUBSCRIBE_BATCH: usize = 1_000;

/// What every shard and worker of one layer instance share.
#[derive(Debug)]
pub(super) struct Shared {
    /// Local channels and group memberships.
    pub(super) registry: Registry,
    /// Payload codec (msgpack or JSON, optional Fernet, no random prefix).
    pub(super) serializer: Serializer,
    /// How many shards there are (for the consistent hash).
    pub(super) shard_count: usize,
}

/// Time limits of the pub/sub connections.
#[derive(Debug, Clone, Copy)]
pub(super) struct Timeouts {
    /// Connecting to Redis.
    pub(super) connect: Duration,
    /// One command (PUBLISH, SUBSCRIBE, PING).
    pub(super) command: Duration,
    /// How long an operation waits for a lost subscriber link to come back.
    pub(super) link_wait: Duration,
}

/// The subscriber connection as seen by callers.
#[derive(Debug, Clone)]
pub(super) enum Link {
    /// Not connected (never yet, reconnecting, or closed).
    Down,
    /// Connected and resubscribed to everything wanted at connect time.
    Up {
        /// Counts connections, so a confirmation is tied to one of them.
        generation: u64,
        /// Sends (UN)SUBSCRIBE on this connection.
        sink: PubSubSink,
    },
}

/// Topics SUBSCRIBEd on the connection of `generation`.
#[derive(Debug, Default)]
struct Confirmed {
    generation: u64,
    topics: HashSet<String>,
}

/// The connection side of a shard, shared with its worker.
pub(super) struct ShardConn {
    index: usize,
    host: String,
    target: Target,
    timeouts: Timeouts,
    publisher: Mutex<Option<MultiplexedConnection>>,
    link: watch::Sender<Link>,
    ops: tokio::sync::Mutex<()>,
    confirmed: Mutex<Confirmed>,
    generations: AtomicU64,
}

impl std::fmt::Debug for ShardConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardConn")
            .field("index", &self.index)
            .field("host", &self.host)
            .field("up", &matches!(*self.link.borrow(), Link::Up { .. }))
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded values stay consistent even if a holder panicked.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ShardConn {
    /// The shard's index in the hosts list.
    pub(super) fn index(&self) -> usize {
        self.index
    }

    /// The host, for messages (no password).
    pub(super) fn host(&self) -> &str {
        &self.host
    }

    /// The time limits.
    pub(super) fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// A client for this shard's server (for Sentinel: the current master).
    pub(super) async fn client(&self) -> Result<Client, String> {
        self.target
            .client(self.timeouts.connect * 2)
            .await
            .map_err(|error| format!("finding the server failed: {error}"))
    }

    /// Marks the link down (connection lost or closed).
    pub(super) fn set_down(&self) {
        self.link.send_replace(Link::Down);
    }

    /// Takes the lock every SUBSCRIBE/UNSUBSCRIBE runs under.
    pub(super) async fn ops_lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.ops.lock().await
    }

    /// A fresh generation number for a new connection.
    pub(super) fn next_generation(&self) -> u64 {
        self.generations.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Announces a connection on which `topics` are subscribed. Call with the
    /// ops lock held.
    pub(super) fn set_up(&self, generation: u64, sink: PubSubSink, topics: HashSet<String>) {
        *lock(&self.confirmed) = Confirmed { generation, topics };
        self.link.send_replace(Link::Up { generation, sink });
    }

    fn is_confirmed(&self, topic: &str, generation: u64) -> bool {
        let confirmed = lock(&self.confirmed);
        confirmed.generation == generation && confirmed.topics.contains(topic)
    }

    fn confirm(&self, topic: &str, generation: u64) {
        let mut confirmed = lock(&self.confirmed);
        if confirmed.generation == generation {
            confirmed.topics.insert(topic.to_owned());
        }
    }

    fn unconfirm(&self, topic: &str) {
        lock(&self.confirmed).topics.remove(topic);
    }

    /// Waits for the link to change, until `deadline`.
    async fn link_changed(
        &self,
        link: &mut watch::Receiver<Link>,
        deadline: Instant,
        topic: &str,
        last_error: Option<LayerError>,
    ) -> Result<(), LayerError> {
        match timeout_at(deadline, link.changed()).await {
            Ok(Ok(())) => Ok(()),
            // The sender lives in `self`, so it cannot be gone; treat it as a timeout anyway.
            Ok(Err(_)) | Err(_) => Err(last_error.unwrap_or_else(|| {
                ShardError::backend(
                    format!("SUBSCRIBE `{topic}`"),
                    &self.host,
                    format!(
                        "no connection to Redis within {:?}; is the server up?",
                        self.timeouts.link_wait
                    ),
                )
            })),
        }
    }

    /// Makes sure `topic` is SUBSCRIBEd on the live connection, waiting up to
    /// `link_wait` for a lost connection to come back.
    async fn subscribe(&self, topic: &str, registry: &Registry) -> Result<(), LayerError> {
        let deadline = Instant::now() + self.timeouts.link_wait;
        let mut link = self.link.subscribe();
        let mut last_error = None;
        loop {
            {
                // The worker announces a link only while holding `ops`, so
                // under it the link and its confirmations agree.
                let _ops = self.ops.lock().await;
                let current = link.borrow_and_update().clone();
                if let Link::Up {
                    generation,
                    mut sink,
                } = current
                {
                    if self.is_confirmed(topic, generation) || !registry.wants(topic) {
                        return Ok(());
                    }
                    let failure = match timeout(self.timeouts.command, sink.subscribe(topic)).await
                    {
                        Ok(Ok(())) => {
                            self.confirm(topic, generation);
                            return Ok(());
                        }
                        Ok(Err(error)) => error.into(),
                        Err(elapsed) => channels_core::BoxError::from(elapsed),
                    };
                    last_error = Some(ShardError::backend(
                        format!("SUBSCRIBE `{topic}`"),
                        &self.host,
                        failure,
                    ));
                }
            }
            // Not connected, or the connection failed under us: the worker
            // reconnects and resubscribes; wait for that and check again.
            self.link_changed(&mut link, deadline, topic, last_error.take())
                .await?;
        }
    }

    /// UNSUBSCRIBEs `topic` unless the registry wants it again by now.
    async fn unsubscribe(&self, topic: &str, registry: &Registry) -> Result<(), LayerError> {
        let _ops = self.ops.lock().await;
        let current = self.link.borrow().clone();
        let Link::Up { mut sink, .. } = current else {
            // Not connected: the next connection subscribes only wanted topics.
            return Ok(());
        };
        if registry.wants(topic) {
            return Ok(());
        }
        self.unconfirm(topic);
        let failure = match timeout(self.timeouts.command, sink.unsubscribe(topic)).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(error)) => error.into(),
            Err(elapsed) => channels_core::BoxError::from(elapsed),
        };
        if matches!(*self.link.borrow(), Link::Up { .. }) {
            Err(ShardError::backend(
                format!("UNSUBSCRIBE `{topic}`"),
                &self.host,
                failure,
            ))
        } else {
            // The connection died meanwhile: the topic is gone with it.
            Ok(())
        }
    }

    /// The publishing connection, opened if needed.
    async fn publisher(&self) -> Result<MultiplexedConnection, LayerError> {
        if let Some(connection) = lock(&self.publisher).clone() {
            return Ok(connection);
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeouts.connect))
            .set_response_timeout(Some(self.timeouts.command));
        let client = self
            .client()
            .await
            .map_err(|reason| ShardError::backend("connect", &self.host, reason))?;
        let connection = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|error| ShardError::backend("connect", &self.host, error))?;
        *lock(&self.publisher) = Some(connection.clone());
        Ok(connection)
    }

    /// `PUBLISH topic payload`. A connection found broken is replaced and
    /// the command tried once more (it cannot have reached the server).
    async fn publish(&self, topic: &str, payload: &[u8]) -> Result<(), LayerError> {
        let mut retried = false;
        loop {
            let mut connection = self.publisher().await?;
            let result: redis::RedisResult<i64> = redis::cmd("PUBLISH")
                .arg(topic)
                .arg(payload)
                .query_async(&mut connection)
                .await;
            match result {
                Ok(_receivers) => return Ok(()),
                Err(error) => {
                    let broken = error.is_connection_dropped()
                        || error.is_io_error()
                        || error.is_unrecoverable_error();
                    if broken {
                        *lock(&self.publisher) = None;
                    }
                    if broken && !retried && !error.is_timeout() {
                        retried = true;
                        continue;
                    }
                    return Err(ShardError::backend(
                        format!("PUBLISH to `{topic}`"),
                        &self.host,
                        error,
                    ));
                }
            }
        }
    }

    /// Drops the publishing connection.
    fn drop_publisher(&self) {
        *lock(&self.publisher) = None;
    }
}

/// A shard: its connections and the guard owning its subscriber worker.
#[derive(Debug)]
pub(super) struct Shard {
    conn: Arc<ShardConn>,
    worker: Mutex<Option<WorkerGuard>>,
}

impl Shard {
    /// A shard for host `index`; connects lazily.
    pub(super) fn new(index: usize, host: String, target: Target, timeouts: Timeouts) -> Self {
        let (link, _) = watch::channel(Link::Down);
        Self {
            conn: Arc::new(ShardConn {
                index,
                host,
                target,
                timeouts,
                publisher: Mutex::new(None),
                link,
                ops: tokio::sync::Mutex::new(()),
                confirmed: Mutex::new(Confirmed::default()),
                generations: AtomicU64::new(0),
            }),
            worker: Mutex::new(None),
        }
    }

    /// Starts the subscriber worker unless it runs.
    fn ensure_worker(&self, shared: &Arc<Shared>) {
        let mut worker = lock(&self.worker);
        if worker.as_ref().is_some_and(WorkerGuard::is_running) {
            return;
        }
        *worker = Some(subscriber::spawn(
            Arc::clone(&self.conn),
            Arc::clone(shared),
        ));
    }

    /// Makes sure this instance hears `topic` (see [`ShardConn::subscribe`]).
    pub(super) async fn subscribe(
        &self,
        topic: &str,
        shared: &Arc<Shared>,
    ) -> Result<(), LayerError> {
        self.ensure_worker(shared);
        self.conn.subscribe(topic, &shared.registry).await
    }

    /// Stops hearing `topic` if nothing here needs it any more.
    pub(super) async fn unsubscribe(&self, topic: &str, shared: &Shared) -> Result<(), LayerError> {
        self.conn.unsubscribe(topic, &shared.registry).await
    }

    /// Publishes `payload` on `topic`.
    pub(super) async fn publish(&self, topic: &str, payload: &[u8]) -> Result<(), LayerError> {
        self.conn.publish(topic, payload).await
    }

    /// Stops the worker, drops both connections. The shard reconnects when
    /// used again.
    pub(super) async fn close(&self) {
        let worker = lock(&self.worker).take();
        if let Some(worker) = worker {
            worker.stop().await;
        }
        self.conn.set_down();
        self.conn.drop_publisher();
    }

    /// Waits until every message Redis pushed to this shard's subscriber
    /// connection before now has been delivered to the mailboxes.
    pub(super) async fn sync(&self) -> Result<(), LayerError> {
        if !self.is_subscribed() {
            // No connection: whatever was in flight is lost with it.
            return Ok(());
        }
        let syncs = lock(&self.worker)
            .as_ref()
            .filter(|worker| worker.is_running())
            .map(WorkerGuard::syncs);
        let Some(syncs) = syncs else {
            return Ok(());
        };
        let (done, finished) = tokio::sync::oneshot::channel();
        let wait = self.conn.timeouts.command;
        let synced = timeout(wait, async {
            if syncs.send(done).await.is_ok() {
                // An error means the worker dropped the request: its
                // connection went away, and with it what was in flight.
                let _ = finished.await;
            }
        })
        .await;
        synced.map_err(|elapsed| ShardError::backend("PING (flush)", &self.conn.host, elapsed))
    }

    /// Whether the subscriber link is up (for tests and health checks).
    pub(super) fn is_subscribed(&self) -> bool {
        matches!(*self.conn.link.borrow(), Link::Up { .. })
    }
}
