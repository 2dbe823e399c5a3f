//! [`RedisChannelLayer`]: channels_redis's `core.RedisChannelLayer` in Rust,
//! byte-compatible on the wire (WIRE.md §2).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use channels_core::{
    ChannelLayer, LayerConfig, LayerError, Message, NameProblem, is_process_local, non_local_name,
    validate_channel_name, validate_group_name,
};
use futures_util::future::join_all;

use crate::config::RedisConfig;
use crate::connection::{Shard, lock};
use crate::groups::add_membership;
use crate::keys::{channel_key, flush_pattern, group_key};
use crate::lua;
use crate::mailbox::{Mailboxes, now_secs};
use crate::memberships::Memberships;
use crate::plain_receive::PlainChannels;
use crate::receive_loop::{self, LoopHandle};
use crate::serializer::Serializer;
use crate::shard::consistent_hash;
use crate::wire::Route;

/// What the layer's tasks share.
pub(crate) struct Inner {
    pub(crate) prefix: String,
    pub(crate) layer: LayerConfig,
    pub(crate) shards: Vec<Shard>,
    pub(crate) serializer: Serializer,
    pub(crate) client_prefix: String,
    pub(crate) brpop_timeout: Duration,
    send_counter: AtomicUsize,
    receive_counter: AtomicUsize,
    /// Buffers of this instance's process-local (`!`) channels.
    pub(crate) local: Mailboxes,
    /// Buffers and pop state of plain channels received here.
    pub(crate) plain: PlainChannels,
    pub(crate) memberships: Memberships,
    loops: Mutex<HashMap<String, LoopHandle>>,
}

/// A channel layer on Redis sorted sets, wire-compatible with Python
/// `channels_redis.core.RedisChannelLayer` 4.3: Python and Rust processes can
/// share one Redis, send to each other's channels and groups.
///
/// Process-local channels (`new_channel`) of one instance share one Redis key,
/// popped by one background receive loop that routes messages into bounded
/// in-process buffers. Connections are made on first use.
///
/// # Examples
/// ```no_run
/// use channels_core::{ChannelLayer, Message};
/// use channels_redis::{RedisChannelLayer, RedisConfig};
///
/// # async fn run() -> Result<(), channels_core::LayerError> {
/// let layer = RedisChannelLayer::new(RedisConfig::new().host("redis://127.0.0.1:6379"))?;
/// let channel = layer.new_channel("specific").await?;
/// layer.group_add("chat", &channel).await?;
/// layer.group_send("chat", Message::new("chat.message").with("text", "hi")).await?;
/// let message = layer.receive(&channel).await?;
/// assert_eq!(message.message_type(), Some("chat.message"));
/// # Ok(()) }
/// ```
pub struct RedisChannelLayer {
    inner: Arc<Inner>,
}

impl fmt::Debug for RedisChannelLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisChannelLayer")
            .field(
                "hosts",
                &self
                    .inner
                    .shards
                    .iter()
                    .map(Shard::label)
                    .collect::<Vec<_>>(),
            )
            .field("prefix", &self.inner.prefix)
            .field("client_prefix", &self.inner.client_prefix)
            .finish_non_exhaustive()
    }
}

pub(crate) fn expiry_secs(expiry: Duration) -> u64 {
    expiry.as_secs()
}

/// `int(now) - expiry`, the highest score that counts as expired.
pub(crate) fn prune_before(now: f64, expiry: Duration) -> i64 {
    #[allow(clippy::cast_possible_truncation)] // Unix seconds fit in i64
    let whole = now.floor() as i64;
    whole - i64::try_from(expiry.as_secs()).unwrap_or(i64::MAX)
}

impl RedisChannelLayer {
    /// Builds a layer from `config`. Connects nothing yet: the first operation
    /// does (inside a Tokio runtime).
    ///
    /// # Errors
    /// [`LayerError::InvalidConfig`] for a bad host entry or encryption setting.
    pub fn new(config: RedisConfig) -> Result<Self, LayerError> {
        config.validate()?;
        let shards = config
            .hosts()
            .iter()
            .map(|host| Shard::new(host, config.command_timeout, config.connect_timeout))
            .collect::<Result<Vec<_>, _>>()?;
        let serializer = Serializer::new(config.serializer_format, config.random_prefix_length);
        #[cfg(feature = "encryption")]
        let serializer = if config.symmetric_encryption_keys.is_empty() {
            serializer
        } else {
            // channels_redis decrypts with ttl = expiry + 10.
            let ttl = expiry_secs(config.layer.expiry) + 10;
            serializer.with_crypter(Some(crate::crypto::Crypter::new(
                &config.symmetric_encryption_keys,
                Some(ttl),
            )?))
        };
        let expiry = config.layer.expiry;
        let group_expiry = config.layer.group_expiry;
        Ok(Self {
            inner: Arc::new(Inner {
                prefix: config.prefix,
                layer: config.layer,
                shards,
                serializer,
                client_prefix: uuid::Uuid::new_v4().simple().to_string(),
                brpop_timeout: config.brpop_timeout,
                send_counter: AtomicUsize::new(0),
                receive_counter: AtomicUsize::new(0),
                local: Mailboxes::new(expiry),
                plain: PlainChannels::new(expiry),
                memberships: Memberships::new(group_expiry),
                loops: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// This instance's random client prefix: the `<cp>` in
    /// `specific.<cp>!<local>` names from [`ChannelLayer::new_channel`].
    pub fn client_prefix(&self) -> &str {
        &self.inner.client_prefix
    }

    /// Messages dropped because a process-local channel's buffer was full
    /// (its capacity), oldest first, since the layer was built.
    pub fn dropped_messages(&self) -> u64 {
        self.inner.local.dropped()
    }

    /// Group memberships of this instance's own channels that it will write
    /// again after a Redis outage.
    pub fn remembered_memberships(&self) -> usize {
        self.inner.memberships.len()
    }

    /// Whether every process-local receive loop currently has Redis.
    pub fn is_receiving_healthy(&self) -> bool {
        lock(&self.inner.loops)
            .values()
            .all(|handle| handle.failure().is_none())
    }

    fn owns(&self, channel: &str) -> bool {
        is_process_local(channel)
            && non_local_name(channel)
                .strip_suffix('!')
                .is_some_and(|head| head.ends_with(self.inner.client_prefix.as_str()))
    }

    async fn receive_local(&self, channel: &str) -> Result<Message, LayerError> {
        if !self.owns(channel) {
            return Err(LayerError::InvalidChannelName {
                name: channel.to_owned(),
                problem: NameProblem::ForeignProcessLocal,
            });
        }
        let inner = &self.inner;
        let guard = inner.local.register(channel);
        let epoch = inner.local.failure_epoch();
        let handle = self.ensure_loop(channel);
        if let Some(message) = inner.local.try_take(channel) {
            drop(guard);
            return Ok(message);
        }
        if let Some(reason) = handle.failure() {
            return Err(receive_loop::failure_error(&reason));
        }
        let result = match inner.local.wait(channel, epoch).await {
            crate::mailbox::Wake::Message(message) => Ok(message),
            crate::mailbox::Wake::Failed(reason) => Err(receive_loop::failure_error(&reason)),
            crate::mailbox::Wake::Closed => Err(LayerError::Closed),
        };
        drop(guard);
        result
    }

    fn ensure_loop(&self, channel: &str) -> LoopHandle {
        let key = channel_key(&self.inner.prefix, channel);
        let mut loops = lock(&self.inner.loops);
        if let Some(handle) = loops.get(&key)
            && !handle.is_finished()
        {
            return handle.clone();
        }
        let shard = consistent_hash(non_local_name(channel), self.inner.shards.len());
        let handle = receive_loop::spawn(self.inner.clone(), key.clone(), shard);
        loops.insert(key, handle.clone());
        handle
    }

    fn next_send_shard(&self) -> usize {
        self.inner.send_counter.fetch_add(1, Ordering::Relaxed) % self.inner.shards.len()
    }

    pub(crate) fn next_receive_shard(inner: &Inner) -> usize {
        inner.receive_counter.fetch_add(1, Ordering::Relaxed) % inner.shards.len()
    }

    fn stop_loops(&self) {
        for (_, handle) in lock(&self.inner.loops).drain() {
            handle.stop();
        }
    }
}

impl Drop for RedisChannelLayer {
    fn drop(&mut self) {
        self.stop_loops();
    }
}

#[async_trait]
impl ChannelLayer for RedisChannelLayer {
    async fn send(&self, channel: &str, message: Message) -> Result<(), LayerError> {
        validate_channel_name(channel)?;
        message.validate()?;
        let inner = &self.inner;
        let capacity = inner.layer.capacities.capacity_for(channel);
        let key = channel_key(&inner.prefix, channel);
        // Upstream hashes the full `!` name here and loses messages on >= 2
        // hosts (django/channels#1492); hash the non-local part, as receive does.
        let (route, index) = if is_process_local(channel) {
            (
                Route::Channel(channel),
                consistent_hash(non_local_name(channel), inner.shards.len()),
            )
        } else {
            (Route::None, self.next_send_shard())
        };
        let member = inner.serializer.serialize(&message, route)?;
        let shard = &inner.shards[index];
        let mut connection = shard.commands("send").await?;
        let now = now_secs();
        let added: i64 = lua::SEND
            .key(&key)
            .arg(prune_before(now, inner.layer.expiry))
            .arg(capacity)
            .arg(now.to_string())
            .arg(member)
            .arg(expiry_secs(inner.layer.expiry))
            .invoke_async(&mut connection)
            .await
            .map_err(|e| shard.error("send", e))?;
        if added == 0 {
            return Err(LayerError::ChannelFull {
                channel: channel.to_owned(),
                capacity,
            });
        }
        Ok(())
    }

    async fn receive(&self, channel: &str) -> Result<Message, LayerError> {
        validate_channel_name(channel)?;
        if is_process_local(channel) {
            self.receive_local(channel).await
        } else {
            crate::plain_receive::receive(&self.inner, channel).await
        }
    }

    async fn new_channel(&self, prefix: &str) -> Result<String, LayerError> {
        let name = format!(
            "{prefix}.{}!{}",
            self.inner.client_prefix,
            uuid::Uuid::new_v4().simple()
        );
        validate_channel_name(&name)?;
        Ok(name)
    }

    async fn group_add(&self, group: &str, channel: &str) -> Result<(), LayerError> {
        validate_group_name(group)?;
        validate_channel_name(channel)?;
        let inner = &self.inner;
        add_membership(inner, group, channel).await?;
        if self.owns(channel) {
            inner.memberships.add(group, channel);
        }
        Ok(())
    }

    async fn group_discard(&self, group: &str, channel: &str) -> Result<(), LayerError> {
        validate_group_name(group)?;
        validate_channel_name(channel)?;
        let inner = &self.inner;
        inner.memberships.discard(group, channel);
        let shard = &inner.shards[consistent_hash(group, inner.shards.len())];
        let mut connection = shard.commands("group_discard").await?;
        redis::cmd("ZREM")
            .arg(group_key(&inner.prefix, group))
            .arg(channel)
            .exec_async(&mut connection)
            .await
            .map_err(|e| shard.error("group_discard", e))
    }

    async fn group_send(&self, group: &str, message: Message) -> Result<(), LayerError> {
        validate_group_name(group)?;
        message.validate()?;
        crate::groups::group_send(&self.inner, group, &message).await
    }

    async fn flush(&self) -> Result<(), LayerError> {
        let inner = &self.inner;
        let pattern = flush_pattern(&inner.prefix);
        let results = join_all(inner.shards.iter().map(|shard| {
            let pattern = pattern.clone();
            async move {
                let mut connection = shard.commands("flush").await?;
                lua::FLUSH
                    .arg(pattern)
                    .invoke_async::<i64>(&mut connection)
                    .await
                    .map_err(|e| shard.error("flush", e))
            }
        }))
        .await;
        inner.local.clear();
        inner.plain.clear();
        inner.memberships.clear();
        for result in results {
            result?;
        }
        Ok(())
    }

    // TEMPORARY while the receive-handle port is under way.
    async fn open(&self, channel: &str) -> Result<channels_core::Receiver, LayerError> {
        validate_channel_name(channel)?;
        Err(LayerError::Unsupported {
            operation: "open",
            reason: "not ported yet".to_owned(),
        })
    }

    async fn close(&self) -> Result<(), LayerError> {
        self.stop_loops();
        // Receivers waiting on the stopped loops learn it now; later calls
        // start a new loop and reconnect.
        self.inner.local.close_all();
        for shard in &self.inner.shards {
            shard.reset();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prune_uses_whole_seconds() {
        assert_eq!(prune_before(1000.9, Duration::from_secs(60)), 940);
        assert_eq!(prune_before(1000.1, Duration::from_millis(500)), 1000);
    }

    #[tokio::test]
    async fn new_channel_names_are_valid_and_ours() {
        let layer = RedisChannelLayer::new(RedisConfig::new()).unwrap();
        let name = layer.new_channel("specific").await.unwrap();
        assert_eq!(name.len(), 74);
        assert!(name.starts_with(&format!("specific.{}!", layer.client_prefix())));
        assert!(layer.owns(&name));
        assert!(!layer.owns("specific.0123!x"));
        assert!(layer.new_channel(&"x".repeat(90)).await.is_err());
    }
}
