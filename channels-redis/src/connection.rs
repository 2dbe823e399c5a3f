//! [`Shard`]: the connections to one configured host. Commands share one
//! auto-reconnecting multiplexed connection (pipelined by the client); blocking
//! pops get dedicated connections so they never stall other commands.

use std::sync::Mutex;
use std::time::Duration;

use channels_core::{LayerError, lock};
use redis::AsyncConnectionConfig;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};

use crate::config::RedisConfig;
use crate::error::backend;
use crate::hosts::RedisHost;
use crate::target::{self, Target};

/// Dedicated connections kept idle per shard for later blocking pops.
const MAX_IDLE_DEDICATED: usize = 16;

/// One shard: its address and cached connections.
pub(crate) struct Shard {
    label: String,
    target: Target,
    commands: Mutex<Option<ConnectionManager>>,
    idle: Mutex<Vec<MultiplexedConnection>>,
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

impl Shard {
    /// Prepares a shard for `host` with `config`'s timeouts and CA file;
    /// connects nothing yet.
    pub(crate) fn new(host: &RedisHost, config: &RedisConfig) -> Result<Self, LayerError> {
        let ca_file = config.ca_file.as_deref();
        Ok(Self {
            label: target::label(host, ca_file),
            target: Target::new(host, ca_file)?,
            commands: Mutex::new(None),
            idle: Mutex::new(Vec::new()),
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
        if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
            // Sentinel: the master may have moved; resolve it again next time.
            if self.target.is_sentinel() {
                self.reset();
            }
        }
        backend(operation, &self.label, e)
    }

    async fn client(&self, operation: &'static str) -> Result<redis::Client, LayerError> {
        self.target
            .client(self.connect_timeout * 2)
            .await
            .map_err(|e| backend(operation, &self.label, e))
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

    /// One PING on the shared command connection: whether the server answers.
    pub(crate) async fn ping(&self, operation: &'static str) -> Result<(), LayerError> {
        let mut connection = self.commands(operation).await?;
        redis::cmd("PING")
            .exec_async(&mut connection)
            .await
            .map_err(|e| self.error(operation, e))
    }

    /// A connection used by one blocking pop at a time; give it back with
    /// [`Shard::release`] when the pop completed normally.
    pub(crate) async fn dedicated(
        &self,
        operation: &'static str,
        blocking_for: Duration,
    ) -> Result<MultiplexedConnection, LayerError> {
        if let Some(connection) = lock(&self.idle).pop() {
            return Ok(connection);
        }
        let client = self.client(operation).await?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(blocking_for + self.command_timeout));
        client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| self.error(operation, e))
    }

    /// Keeps a healthy dedicated connection for the next blocking pop.
    pub(crate) fn release(&self, connection: MultiplexedConnection) {
        let mut idle = lock(&self.idle);
        if idle.len() < MAX_IDLE_DEDICATED {
            idle.push(connection);
        }
    }

    /// Drops cached connections (`close()`); the next call reconnects.
    pub(crate) fn reset(&self) {
        lock(&self.commands).take();
        lock(&self.idle).clear();
    }
}
