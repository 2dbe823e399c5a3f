//! [`Shard`]: the connections to one configured host. Commands share one
//! auto-reconnecting multiplexed connection (pipelined by the client);
//! blocking pops borrow [`Dedicated`] connections from a bounded
//! deadpool-redis pool so they never stall other commands.
//!
//! Each pool serves one server address. A direct host keeps its pool; through
//! Sentinel the master's address is asked for when a pool is made, and an
//! error saying the master is gone or moved (I/O, timeout, `READONLY`) drops
//! the pool and the command connection, so the next call asks Sentinel again
//! and follows a failover. (deadpool-redis's own Sentinel manager asks per
//! connection, but it opens connections with redis's default 500 ms response
//! timeout, shorter than a blocking pop, and takes no CA file and no
//! connect timeout; so the plain manager is used, one pool per address.)

use std::sync::Mutex;
use std::time::Duration;

use channels_core::{LayerError, lock};
use deadpool_redis::{Pool, PoolError, Runtime, TimeoutType};
use redis::aio::{
    AsyncPushSender, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::{AsyncConnectionConfig, ErrorKind, ProtocolVersion, ServerErrorKind};

use crate::config::RedisConfig;
use crate::error::backend;
use crate::hosts::RedisHost;
use crate::target::{self, Target};

/// Longest a blocking pop on a dedicated connection may block (callers poll
/// at most this long); their response timeout allows it plus a command.
pub(crate) const LONGEST_BLOCK: Duration = Duration::from_secs(1);

/// How long a blocking pop waits for a dedicated connection when every one
/// the pool may open is in use. One [`LONGEST_BLOCK`]: by then a pop has
/// normally handed its connection back.
const POOL_WAIT: Duration = LONGEST_BLOCK;

/// One shard: its address and cached connections.
pub(crate) struct Shard {
    label: String,
    target: Target,
    commands: Mutex<Option<ConnectionManager>>,
    /// Dedicated connections to the address the target gave last.
    blocking: Mutex<Option<Pool>>,
    pool_size: usize,
    command_timeout: Duration,
    connect_timeout: Duration,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard")
            .field("host", &self.label)
            .finish_non_exhaustive()
    }
}

/// A connection lent to one blocking pop. [`Dedicated::release`] hands it
/// back to the pool; dropped without that (the pop failed, or was abandoned
/// half-way) it is closed instead, since what it still has in flight is
/// unknown.
pub(crate) struct Dedicated {
    connection: Option<deadpool_redis::Connection>,
}

impl std::fmt::Debug for Dedicated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dedicated").finish_non_exhaustive()
    }
}

impl Dedicated {
    /// Hands the connection back for the next blocking pop (after a pop that
    /// completed normally).
    pub(crate) fn release(mut self) {
        // Dropping the pooled object returns it to its pool.
        drop(self.connection.take());
    }
}

impl Drop for Dedicated {
    fn drop(&mut self) {
        if let Some(connection) = self.connection.take() {
            // Out of the pool for good: the pool may open a fresh one.
            drop(deadpool_redis::Connection::take(connection));
        }
    }
}

impl std::ops::Deref for Dedicated {
    type Target = MultiplexedConnection;

    fn deref(&self) -> &MultiplexedConnection {
        self.connection
            .as_ref()
            .expect("a Dedicated holds its connection until released or dropped")
    }
}

impl std::ops::DerefMut for Dedicated {
    fn deref_mut(&mut self) -> &mut MultiplexedConnection {
        self.connection
            .as_mut()
            .expect("a Dedicated holds its connection until released or dropped")
    }
}

impl redis::aio::ConnectionLike for Dedicated {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        (**self).req_packed_command(cmd)
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        (**self).req_packed_commands(pipeline, offset, count)
    }

    fn get_db(&self) -> i64 {
        (**self).get_db()
    }
}

impl Shard {
    /// Prepares a shard for `host` with `config`'s timeouts, CA file and
    /// pool size; connects nothing yet.
    pub(crate) fn new(host: &RedisHost, config: &RedisConfig) -> Result<Self, LayerError> {
        let ca_file = config.ca_file.as_deref();
        Ok(Self {
            label: target::label(host, ca_file),
            target: Target::new(host, ca_file)?,
            commands: Mutex::new(None),
            blocking: Mutex::new(None),
            pool_size: config.blocking_pool_size,
            command_timeout: config.command_timeout,
            connect_timeout: config.connect_timeout,
        })
    }

    /// The host, for messages and logs.
    pub(crate) fn label(&self) -> &str {
        &self.label
    }

    /// Wraps a Redis error from `operation` on this shard.
    pub(crate) fn error(&self, operation: &'static str, e: redis::RedisError) -> LayerError {
        if self.target.is_sentinel() && master_may_have_moved(&e) {
            self.reset();
        }
        backend(operation, &self.label, e)
    }

    async fn client(&self, operation: &'static str) -> Result<redis::Client, LayerError> {
        self.target
            .client(self.connect_timeout * 2)
            .await
            .map_err(|e| self.error(operation, e))
    }

    /// The shared command connection (created on first use, reconnects itself).
    pub(crate) async fn commands(
        &self,
        operation: &'static str,
    ) -> Result<ConnectionManager, LayerError> {
        if let Some(manager) = lock(&self.commands).as_ref() {
            return Ok(manager.clone());
        }
        let client = self.client(operation).await?;
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500))
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.command_timeout));
        let manager = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| backend(operation, &self.label, e))?;
        let mut slot = lock(&self.commands);
        Ok(slot.get_or_insert(manager).clone())
    }

    /// A new connection of its own that speaks RESP3 and has `CLIENT
    /// TRACKING ON`: Redis tells it, through `pushes`, of every change to a
    /// key it has read (server-assisted client-side caching). Not kept here
    /// and not reconnected: when it drops, `pushes` gets a disconnection
    /// and the caller opens another. `Ok(None)` when the server refuses
    /// (older than Redis 6, no `HELLO`, or tracking not allowed), logged.
    pub(crate) async fn tracking(
        &self,
        operation: &'static str,
        pushes: impl AsyncPushSender,
    ) -> Result<Option<MultiplexedConnection>, LayerError> {
        let client = self.client(operation).await?;
        let info = client.get_connection_info().clone();
        let resp3 = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let client = redis::Client::open(info.set_redis_settings(resp3))
            .map_err(|e| backend(operation, &self.label, e))?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.command_timeout))
            .set_push_sender(pushes);
        let opened = async {
            let mut connection = client
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            redis::cmd("CLIENT")
                .arg("TRACKING")
                .arg("ON")
                .exec_async(&mut connection)
                .await?;
            Ok(connection)
        };
        match opened.await {
            Ok(connection) => Ok(Some(connection)),
            Err(e) if tracking_refused(&e) => {
                tracing::warn!(
                    "Redis {} refuses client tracking ({e}); group sends read every group from Redis",
                    self.label
                );
                Ok(None)
            }
            Err(e) => Err(self.error(operation, e)),
        }
    }

    /// One PING on the shared command connection: whether the server answers.
    pub(crate) async fn ping(&self, operation: &'static str) -> Result<(), LayerError> {
        let mut connection = self.commands(operation).await?;
        redis::cmd("PING")
            .exec_async(&mut connection)
            .await
            .map_err(|e| self.error(operation, e))
    }

    /// A connection for blocking pops of at most [`LONGEST_BLOCK`] each, from
    /// the pool (checked with a PING) or newly opened; `None` when every
    /// connection the pool may open stayed in use for a while (not a Redis
    /// failure: ask again). Give it back with [`Dedicated::release`].
    pub(crate) async fn dedicated(
        &self,
        operation: &'static str,
    ) -> Result<Option<Dedicated>, LayerError> {
        let pool = self.pool(operation).await?;
        match pool.get().await {
            Ok(connection) => Ok(Some(Dedicated {
                connection: Some(connection),
            })),
            Err(PoolError::Timeout(TimeoutType::Wait)) => Ok(None),
            Err(PoolError::Backend(e)) => Err(self.error(operation, e)),
            Err(other) => {
                // A connect that outlived its timeout: through Sentinel the
                // master may be gone; ask again next time.
                if self.target.is_sentinel() {
                    self.reset();
                }
                Err(backend(operation, &self.label, other))
            }
        }
    }

    /// The pool of dedicated connections to the current address.
    async fn pool(&self, operation: &'static str) -> Result<Pool, LayerError> {
        if let Some(pool) = lock(&self.blocking).as_ref() {
            return Ok(pool.clone());
        }
        let client = self.client(operation).await?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(LONGEST_BLOCK + self.command_timeout));
        let manager =
            deadpool_redis::Manager::new_with_config(client.get_connection_info().clone(), config)
                .map_err(|e| backend(operation, &self.label, e))?;
        let pool = Pool::builder(manager)
            .max_size(self.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            // Backstops: redis's own connect and response timeouts fire first.
            .create_timeout(Some(self.connect_timeout + self.command_timeout))
            .recycle_timeout(Some(self.command_timeout))
            .build()
            .map_err(|e| backend(operation, &self.label, e))?;
        let mut slot = lock(&self.blocking);
        Ok(slot.get_or_insert(pool).clone())
    }

    /// Drops cached connections (`close()`, or a Sentinel master that moved);
    /// the next call reconnects. Dedicated connections lent out now are
    /// closed when their pop ends.
    pub(crate) fn reset(&self) {
        lock(&self.commands).take();
        lock(&self.blocking).take();
    }
}

/// Whether `error` may mean the Sentinel-managed master went away or was
/// demoted (a replica answers writes with `READONLY`).
fn master_may_have_moved(error: &redis::RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.kind() == ErrorKind::Server(ServerErrorKind::ReadOnly)
}

/// Whether `error`, opening a tracking connection, means the server will
/// not track (no RESP3, an unknown or forbidden command) rather than that it
/// is unreachable.
fn tracking_refused(error: &redis::RedisError) -> bool {
    matches!(
        error.kind(),
        ErrorKind::RESP3NotSupported
            | ErrorKind::Server(ServerErrorKind::ResponseError | ServerErrorKind::NoPerm)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_readonly_reply_or_a_lost_connection_means_the_master_may_have_moved() {
        let readonly = redis::RedisError::from((
            ErrorKind::Server(ServerErrorKind::ReadOnly),
            "You can't write against a read only replica.",
        ));
        assert!(master_may_have_moved(&readonly));
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert!(master_may_have_moved(&redis::RedisError::from(reset)));
        let refused = redis::RedisError::from((
            ErrorKind::Server(ServerErrorKind::NoScript),
            "NOSCRIPT No matching script.",
        ));
        assert!(!master_may_have_moved(&refused));
    }
}

/// The pool against a real `redis-server` (feature `testing`).
#[cfg(all(test, feature = "testing"))]
mod pool_tests {
    use super::*;
    use crate::testing::RedisServer;

    fn shard(server: &RedisServer, pool_size: usize) -> Shard {
        let config = RedisConfig::new().blocking_pool_size(pool_size);
        Shard::new(&RedisHost::from(server.url()), &config).expect("a valid host")
    }

    async fn client_id(connection: &mut Dedicated) -> i64 {
        redis::cmd("CLIENT")
            .arg("ID")
            .query_async(connection)
            .await
            .expect("CLIENT ID answers")
    }

    async fn take(shard: &Shard) -> Dedicated {
        shard
            .dedicated("test")
            .await
            .expect("redis answers")
            .expect("a free connection")
    }

    #[tokio::test]
    async fn the_pool_is_bounded_and_a_freed_connection_is_reused() {
        let server = RedisServer::start().expect("redis-server on PATH");
        let shard = shard(&server, 2);
        let mut first = take(&shard).await;
        let _second = take(&shard).await;
        let started = tokio::time::Instant::now();
        let third = shard.dedicated("test").await.expect("not a redis failure");
        assert!(third.is_none(), "a third connection beyond the bound");
        assert!(started.elapsed() >= POOL_WAIT);

        let id = client_id(&mut first).await;
        first.release();
        let mut again = take(&shard).await;
        assert_eq!(
            client_id(&mut again).await,
            id,
            "the released one is lent again"
        );
    }

    #[tokio::test]
    async fn a_connection_not_released_is_closed_not_pooled() {
        let server = RedisServer::start().expect("redis-server on PATH");
        let shard = shard(&server, 1);
        let mut failed = take(&shard).await;
        let id = client_id(&mut failed).await;
        // The pop "failed": the connection is dropped without release.
        drop(failed);
        let mut next = take(&shard).await;
        assert_ne!(
            client_id(&mut next).await,
            id,
            "a new connection, not the failed one"
        );

        // A connection the server closed under an idle pooled slot is
        // noticed by the pool's PING and replaced.
        let next_id = client_id(&mut next).await;
        next.release();
        let mut admin = crate::testing::connect(&server.url())
            .await
            .expect("connect");
        let _: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("ID")
            .arg(next_id)
            .query_async(&mut admin)
            .await
            .expect("CLIENT KILL");
        let mut replaced = take(&shard).await;
        assert_ne!(client_id(&mut replaced).await, next_id);
    }
}
