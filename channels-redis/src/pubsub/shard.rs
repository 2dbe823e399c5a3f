//! One Redis server (shard) of the pub/sub layer, the handle side of its
//! worker (`worker.rs`): callers PUBLISH on a shared connection here and ask
//! the worker, which owns the subscriber connection, to SUBSCRIBE, sync or
//! UNSUBSCRIBE through [`Commands`]. Every wait is bounded by the layer's
//! timeouts.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use channels_core::{LayerError, lock};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client};
use tokio::sync::oneshot;
use tokio::time::{Instant, timeout_at};

use crate::serializer::Serializer;
use crate::target::Target;

use super::command::{Command, Commands, NotSent};
use super::error::ShardError;
use super::registry::Registry;
use super::worker::{self, WorkerGuard};

/// What every shard and worker of one layer instance share.
#[derive(Debug)]
pub(super) struct Shared {
    /// Local channels and group memberships.
    pub(super) registry: Arc<Registry>,
    /// Payload codec (msgpack or JSON, optional Fernet, no random prefix).
    pub(super) serializer: Serializer,
}

/// Time limits of the pub/sub connections.
#[derive(Debug, Clone, Copy)]
pub(super) struct Timeouts {
    /// Connecting to Redis.
    pub(super) connect: Duration,
    /// One command (PUBLISH, SUBSCRIBE, PING).
    pub(super) command: Duration,
    /// How long a SUBSCRIBE waits for a lost subscriber link to come back.
    pub(super) link_wait: Duration,
}

/// Where a shard's server is and whether its subscriber link is up; shared
/// with the worker.
pub(super) struct Endpoint {
    /// The shard's index in the hosts list.
    pub(super) index: usize,
    /// The host, for messages (no password).
    pub(super) host: String,
    target: Target,
    /// The time limits.
    pub(super) timeouts: Timeouts,
    /// Whether the worker has a connection with every wanted topic
    /// subscribed.
    up: AtomicBool,
    /// Woken when the link comes up.
    came_up: tokio::sync::Notify,
    /// Why the worker's last connect failed, while it has no link (shown
    /// when a SUBSCRIBE gives up waiting).
    failure: Mutex<Option<Arc<str>>>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("index", &self.index)
            .field("host", &self.host)
            .field("up", &self.is_up())
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// A client for this shard's server (for Sentinel: the current master).
    pub(super) async fn client(&self) -> Result<Client, String> {
        self.target
            .client(self.timeouts.connect * 2)
            .await
            .map_err(|error| format!("finding the server failed: {error}"))
    }

    /// Whether the subscriber link is up.
    pub(super) fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Records whether the subscriber link is up.
    pub(super) fn set_up(&self, up: bool) {
        if up {
            lock(&self.failure).take();
        }
        self.up.store(up, Ordering::Release);
        if up {
            self.came_up.notify_waiters();
        }
    }

    /// Waits at most `wait` for the subscriber link to be up; returns
    /// whether it is.
    async fn wait_up(&self, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let came_up = self.came_up.notified();
            if self.is_up() {
                return true;
            }
            if tokio::time::timeout_at(deadline, came_up).await.is_err() {
                return self.is_up();
            }
        }
    }

    /// Records why connecting failed.
    pub(super) fn set_failure(&self, reason: &str) {
        *lock(&self.failure) = Some(Arc::from(reason));
    }

    /// Why the last connect failed, if the link is not up.
    fn failure(&self) -> Option<Arc<str>> {
        lock(&self.failure).clone()
    }
}

/// A running worker: its guard and where to send it commands.
#[derive(Debug)]
struct Running {
    guard: WorkerGuard,
    commands: Commands,
}

/// A shard: its publishing connection and its subscriber worker.
#[derive(Debug)]
pub(super) struct Shard {
    endpoint: Arc<Endpoint>,
    publisher: Mutex<Option<MultiplexedConnection>>,
    worker: Mutex<Option<Running>>,
}

impl Shard {
    /// A shard for host `index`; connects lazily.
    pub(super) fn new(index: usize, host: String, target: Target, timeouts: Timeouts) -> Self {
        Self {
            endpoint: Arc::new(Endpoint {
                index,
                host,
                target,
                timeouts,
                up: AtomicBool::new(false),
                came_up: tokio::sync::Notify::new(),
                failure: Mutex::new(None),
            }),
            publisher: Mutex::new(None),
            worker: Mutex::new(None),
        }
    }

    /// The worker's commands, starting the worker unless it runs.
    fn commands(&self, shared: &Arc<Shared>) -> Commands {
        let mut worker = lock(&self.worker);
        if let Some(running) = worker.as_ref().filter(|running| running.guard.is_running()) {
            return running.commands.clone();
        }
        let (guard, commands) = worker::spawn(Arc::clone(&self.endpoint), Arc::clone(shared));
        *worker = Some(Running {
            guard,
            commands: commands.clone(),
        });
        commands
    }

    /// The worker's commands if it runs with its link up.
    fn commands_if_up(&self) -> Option<Commands> {
        if !self.endpoint.is_up() {
            return None;
        }
        lock(&self.worker)
            .as_ref()
            .filter(|running| running.guard.is_running())
            .map(|running| running.commands.clone())
    }

    /// Makes sure this instance hears `topic` (the registry already wants
    /// it): asks the worker, waiting up to the link wait for a lost
    /// connection to come back.
    ///
    /// # Errors
    /// [`LayerError::Backend`] when Redis refuses or cannot be reached in
    /// time; [`LayerError::Closed`] when the layer was closed meanwhile.
    pub(super) async fn subscribe(
        &self,
        topic: &Arc<str>,
        shared: &Arc<Shared>,
    ) -> Result<(), LayerError> {
        let link_wait = self.endpoint.timeouts.link_wait;
        let deadline = Instant::now() + link_wait;
        let unreachable = || {
            let reason = match self.endpoint.failure() {
                Some(failure) => format!("no connection to Redis within {link_wait:?}: {failure}"),
                None => format!("no connection to Redis within {link_wait:?}; is the server up?"),
            };
            ShardError::backend(format!("SUBSCRIBE `{topic}`"), &self.endpoint.host, reason)
        };
        let commands = self.commands(shared);
        let answer = match commands.subscribe(Arc::clone(topic), deadline).await {
            Ok(answer) => answer,
            Err(NotSent::Busy) => return Err(unreachable()),
            Err(NotSent::Stopped) => return Err(LayerError::Closed),
        };
        drop(commands);
        match timeout_at(deadline, answer).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(refused))) => Err(ShardError::backend(
                format!("SUBSCRIBE `{topic}`"),
                &self.endpoint.host,
                refused,
            )),
            // The worker stopped without answering: the layer was closed.
            Ok(Err(_dropped)) => Err(LayerError::Closed),
            Err(_elapsed) => Err(unreachable()),
        }
    }

    /// Sends `make(reply)` to a worker whose link is up and waits for the
    /// answer, within one command timeout. Without a link there is nothing
    /// to do (nothing is in flight, nothing is subscribed).
    async fn ask(
        &self,
        operation: &str,
        make: impl FnOnce(oneshot::Sender<()>) -> Command,
    ) -> Result<(), LayerError> {
        let Some(commands) = self.commands_if_up() else {
            return Ok(());
        };
        let wait = self.endpoint.timeouts.command;
        let deadline = Instant::now() + wait;
        let (reply, answer) = oneshot::channel();
        let timed_out = || {
            ShardError::backend(
                operation,
                &self.endpoint.host,
                format!("no answer within {wait:?}"),
            )
        };
        match commands.send(make(reply), deadline).await {
            Ok(()) => {}
            Err(NotSent::Busy) => return Err(timed_out()),
            Err(NotSent::Stopped) => return Ok(()),
        }
        drop(commands);
        match timeout_at(deadline, answer).await {
            // A dropped answer means the connection went away, and with it
            // what was in flight and every subscription.
            Ok(_) => Ok(()),
            Err(_elapsed) => Err(timed_out()),
        }
    }

    /// Waits until every message Redis pushed to this shard's subscriber
    /// connection before now has been delivered to the mailboxes.
    ///
    /// # Errors
    /// [`LayerError::Backend`] when the worker does not answer in time.
    pub(super) async fn sync(&self) -> Result<(), LayerError> {
        self.ask("PING (flush)", Command::Sync).await
    }

    /// Waits until the worker has UNSUBSCRIBEd every marked topic nobody
    /// wants any more.
    ///
    /// # Errors
    /// [`LayerError::Backend`] when the worker does not answer in time.
    pub(super) async fn reconcile(&self) -> Result<(), LayerError> {
        self.ask("UNSUBSCRIBE", Command::Reconcile).await
    }

    /// The publishing connection, opened if needed.
    async fn publisher(&self) -> Result<MultiplexedConnection, LayerError> {
        if let Some(connection) = lock(&self.publisher).clone() {
            return Ok(connection);
        }
        let host = &self.endpoint.host;
        let timeouts = self.endpoint.timeouts;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeouts.connect))
            .set_response_timeout(Some(timeouts.command));
        let client = self
            .endpoint
            .client()
            .await
            .map_err(|reason| ShardError::backend("connect", host, reason))?;
        let connection = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|error| ShardError::backend("connect", host, error))?;
        *lock(&self.publisher) = Some(connection.clone());
        Ok(connection)
    }

    /// `PUBLISH topic payload`. A connection found broken is replaced and
    /// the command tried once more (it cannot have reached the server).
    pub(super) async fn publish(&self, topic: &str, payload: &[u8]) -> Result<(), LayerError> {
        // This process subscribes here and its link is down (Redis went
        // away, or came back and the worker is still resubscribing): a
        // PUBLISH now would reach none of this process's subscribers and
        // still succeed. Wait for the link, or fail loudly.
        if !self.endpoint.is_up() && lock(&self.worker).is_some() {
            // Redis itself away: fail at once, as any command would.
            let mut connection = self.publisher().await?;
            let pinged: redis::RedisResult<()> =
                redis::cmd("PING").query_async(&mut connection).await;
            if let Err(error) = pinged {
                *lock(&self.publisher) = None;
                return Err(ShardError::backend("PING", &self.endpoint.host, error));
            }
            if !self
                .endpoint
                .wait_up(self.endpoint.timeouts.link_wait)
                .await
            {
                return Err(ShardError::backend(
                    format!("PUBLISH to `{topic}`"),
                    &self.endpoint.host,
                    "this process's subscriber connection is still down; the message was not sent",
                ));
            }
        }
        let mut retried = false;
        loop {
            let mut connection = self.publisher().await?;
            let result: redis::RedisResult<i64> = redis::cmd("PUBLISH")
                .arg(topic)
                .arg(payload)
                .query_async(&mut connection)
                .await;
            let error = match result {
                Ok(_receivers) => return Ok(()),
                Err(error) => error,
            };
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
                &self.endpoint.host,
                error,
            ));
        }
    }

    /// Stops the worker, drops both connections. The shard reconnects when
    /// used again.
    pub(super) async fn close(&self) {
        let running = lock(&self.worker).take();
        if let Some(running) = running {
            running.guard.stop().await;
        }
        self.endpoint.set_up(false);
        *lock(&self.publisher) = None;
    }

    /// Whether the subscriber link is up (for tests and health checks).
    pub(super) fn is_subscribed(&self) -> bool {
        self.endpoint.is_up()
    }
}
