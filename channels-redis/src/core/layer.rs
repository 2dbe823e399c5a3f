//! [`RedisChannelLayer`]: channels_redis's `core.RedisChannelLayer` in Rust,
//! byte-compatible on the wire (WIRE.md §2).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use channels_core::{
    ChannelLayer, DropCounters, HistoryStore, LayerError, LayerStats, Message, NameProblem,
    Receiver, is_process_local, lock, random_local_part, validate_channel_name,
    validate_group_name,
};
use futures_util::future::join_all;

use super::groups::{GroupMembersCache, GroupReads, add_membership, group_send};
use super::history::RedisHistory;
use super::local::LocalChannels;
use super::memberships::Memberships;
use super::plain::PlainChannels;
use super::receive_loop::{self, LoopHandle, LoopParts};
use super::settings::{Settings, Shards, now_secs, prune_before};
use crate::config::RedisConfig;
use crate::connection::Shard;
use crate::error::RestoringMemberships;
use crate::keys::flush_pattern;
use crate::lua;
use crate::serializer::Serializer;
use crate::wire::Route;

/// How long a `group_send` waits for this instance's memberships to be
/// written again after a Redis outage before it fails (loudly) instead.
const RESTORE_WAIT: Duration = Duration::from_secs(5);

/// A channel layer on Redis sorted sets, wire-compatible with Python
/// `channels_redis.core.RedisChannelLayer` 4.3: Python and Rust processes can
/// share one Redis, send to each other's channels and groups.
///
/// Process-local channels (`new_channel`, `new_receiver`) of one instance
/// share one Redis key, popped by one background receive loop that routes
/// messages into each channel's bounded mailbox; a [`Receiver`] handle reads
/// its mailbox directly. Plain (named) channels stay in Redis until a receive
/// here asks for a message. Connections are made on first use.
///
/// After a Redis outage the receive loop writes this instance's group
/// memberships again before anything else, and `group_send`s from this
/// instance wait for that (up to 5 s, then fail) rather than report success
/// into a group whose members are missing.
///
/// # Examples
/// ```no_run
/// use channels_core::{ChannelLayer, Message};
/// use channels_redis::{RedisChannelLayer, RedisConfig};
///
/// # async fn run() -> Result<(), channels_core::LayerError> {
/// let layer = RedisChannelLayer::new(RedisConfig::new().host("redis://127.0.0.1:6379"))?;
/// let inbox = layer.new_receiver("specific").await?;
/// layer.group_add("chat", inbox.channel()).await?;
/// layer.group_send("chat", Message::new("chat.message").with("text", "hi")).await?;
/// let message = inbox.recv().await?;
/// assert_eq!(message.message_type(), Some("chat.message"));
/// # Ok(()) }
/// ```
pub struct RedisChannelLayer {
    settings: Arc<Settings>,
    shards: Arc<Shards>,
    drops: Arc<DropCounters>,
    local: Arc<LocalChannels>,
    plain: Arc<PlainChannels>,
    memberships: Arc<Memberships>,
    /// Group reads shared by concurrent `group_send`s to one group.
    group_reads: GroupReads,
    /// Group members kept between sends while Redis vouches for them.
    group_cache: GroupMembersCache,
    history: Arc<RedisHistory>,
    /// One receive loop per process-local key (normally exactly one).
    loops: Mutex<HashMap<String, LoopHandle>>,
}

impl fmt::Debug for RedisChannelLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisChannelLayer")
            .field(
                "hosts",
                &self.shards.iter().map(Shard::label).collect::<Vec<_>>(),
            )
            .field("prefix", &self.settings.prefix)
            .field("client_prefix", &self.settings.client_prefix)
            .finish_non_exhaustive()
    }
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
            .map(|host| Shard::new(host, &config))
            .collect::<Result<Vec<_>, _>>()?;
        let serializer = Serializer::new(config.serializer_format, config.random_prefix_length);
        let history_serializer =
            Serializer::new(config.serializer_format, config.random_prefix_length);
        #[cfg(feature = "encryption")]
        let (serializer, history_serializer) = if config.symmetric_encryption_keys.is_empty() {
            (serializer, history_serializer)
        } else {
            // channels_redis decrypts with ttl = expiry + 10.
            let ttl = config.layer.expiry.as_secs() + 10;
            let crypter = |ttl| crate::crypto::Crypter::new(&config.symmetric_encryption_keys, ttl);
            (
                serializer.with_crypter(Some(crypter(Some(ttl))?)),
                history_serializer.with_crypter(Some(crypter(None)?)),
            )
        };
        let drops = Arc::new(DropCounters::default());
        let settings = Arc::new(Settings {
            prefix: config.prefix,
            serializer,
            history_serializer,
            client_prefix: uuid::Uuid::new_v4().simple().to_string(),
            brpop_timeout: config.brpop_timeout,
            layer: config.layer,
        });
        let shards = Arc::new(Shards::new(shards));
        Ok(Self {
            local: Arc::new(LocalChannels::new(
                settings.layer.capacities.clone(),
                settings.layer.expiry,
                drops.clone(),
            )),
            plain: Arc::new(PlainChannels::new(
                settings.clone(),
                shards.clone(),
                drops.clone(),
            )),
            memberships: Arc::new(Memberships::new(settings.layer.group_expiry)),
            group_reads: GroupReads::new(),
            group_cache: GroupMembersCache::new(shards.len()),
            history: Arc::new(RedisHistory::new(
                settings.clone(),
                shards.clone(),
                drops.clone(),
            )),
            loops: Mutex::new(HashMap::new()),
            drops,
            settings,
            shards,
        })
    }

    /// This instance's random client prefix: the `<cp>` in
    /// `specific.<cp>!<local>` names from [`ChannelLayer::new_channel`].
    pub fn client_prefix(&self) -> &str {
        &self.settings.client_prefix
    }

    /// Messages dropped because a channel's buffer was full (oldest first),
    /// since the layer was built.
    pub fn dropped_messages(&self) -> u64 {
        self.drops.full()
    }

    /// Group memberships of this instance's own channels that it will write
    /// again after a Redis outage.
    pub fn remembered_memberships(&self) -> usize {
        self.memberships.len()
    }

    /// Whether the receive loop has Redis and this instance's memberships are
    /// in Redis (false during an outage, and after it until they are written
    /// again).
    pub fn is_receiving_healthy(&self) -> bool {
        self.local.outage().is_none() && self.memberships.is_restored()
    }

    fn check_ours(&self, channel: &str) -> Result<(), LayerError> {
        if self.settings.owns(channel) {
            Ok(())
        } else {
            Err(LayerError::InvalidChannelName {
                name: channel.to_owned(),
                problem: NameProblem::ForeignProcessLocal,
            })
        }
    }

    /// Starts the receive loop of `channel`'s key unless it runs.
    fn ensure_loop(&self, channel: &str) {
        let key = self.settings.channel_key(channel);
        let mut loops = lock(&self.loops);
        if loops.get(&key).is_some_and(|handle| !handle.is_finished()) {
            return;
        }
        let parts = LoopParts {
            settings: self.settings.clone(),
            shards: self.shards.clone(),
            local: self.local.clone(),
            memberships: self.memberships.clone(),
        };
        let shard = self.shards.index_for_local(channel);
        let handle = receive_loop::spawn(parts, key.clone(), shard);
        loops.insert(key, handle);
    }

    fn stop_loops(&self) {
        for (_, handle) in lock(&self.loops).drain() {
            handle.stop();
        }
    }
}

#[async_trait]
impl ChannelLayer for RedisChannelLayer {
    async fn send(&self, channel: &str, message: Message) -> Result<(), LayerError> {
        validate_channel_name(channel)?;
        message.validate()?;
        let settings = &self.settings;
        let capacity = settings.layer.capacities.capacity_for(channel);
        let key = settings.channel_key(channel);
        let route = if is_process_local(channel) {
            Route::Channel(channel)
        } else {
            Route::None
        };
        let member = settings.serializer.serialize(&message, route)?;
        let shard = self.shards.get(self.shards.index_for_send(channel));
        let mut connection = shard.commands("send").await?;
        let now = now_secs();
        let added: i64 = lua::SEND
            .key(&key)
            .arg(prune_before(now, settings.layer.expiry))
            .arg(capacity)
            .arg(now.to_string())
            .arg(member)
            .arg(settings.expiry_secs())
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
            self.check_ours(channel)?;
            self.ensure_loop(channel);
            self.local.receive(channel).await
        } else {
            self.plain.receive(channel).await
        }
    }

    async fn open(&self, channel: &str) -> Result<Receiver, LayerError> {
        validate_channel_name(channel)?;
        if is_process_local(channel) {
            self.check_ours(channel)?;
            self.ensure_loop(channel);
            Ok(self.local.open(channel))
        } else {
            Ok(self.plain.open(channel))
        }
    }

    async fn new_channel(&self, prefix: &str) -> Result<String, LayerError> {
        let name = format!(
            "{prefix}.{}!{}",
            self.settings.client_prefix,
            random_local_part()
        );
        validate_channel_name(&name)?;
        Ok(name)
    }

    async fn group_add(&self, group: &str, channel: &str) -> Result<(), LayerError> {
        validate_group_name(group)?;
        validate_channel_name(channel)?;
        add_membership(&self.settings, &self.shards, group, channel).await?;
        if self.settings.owns(channel) {
            self.memberships.add(group, channel);
        }
        Ok(())
    }

    async fn group_discard(&self, group: &str, channel: &str) -> Result<(), LayerError> {
        validate_group_name(group)?;
        validate_channel_name(channel)?;
        self.memberships.discard(group, channel);
        let shard = self.shards.get(self.shards.index_for_group(group));
        let mut connection = shard.commands("group_discard").await?;
        redis::cmd("ZREM")
            .arg(self.settings.group_key(group))
            .arg(channel)
            .exec_async(&mut connection)
            .await
            .map_err(|e| shard.error("group_discard", e))
    }

    async fn group_send(&self, group: &str, message: Message) -> Result<(), LayerError> {
        validate_group_name(group)?;
        message.validate()?;
        if !self.memberships.is_restored() {
            // Redis down: fail now. Redis back: the receive loop is writing
            // this instance's memberships again; wait for it rather than
            // send into a group whose members here are missing.
            let shard = self.shards.get(self.shards.index_for_group(group));
            shard.ping("group_send").await?;
            if !self.memberships.wait_restored(RESTORE_WAIT).await {
                return Err(LayerError::backend(RestoringMemberships));
            }
        }
        let skipped = group_send(
            &self.settings,
            &self.shards,
            &self.group_reads,
            &self.group_cache,
            group,
            &message,
        )
        .await?;
        self.drops.count_full(skipped as u64);
        Ok(())
    }

    async fn flush(&self) -> Result<(), LayerError> {
        let pattern = flush_pattern(&self.settings.prefix);
        let results = join_all(self.shards.iter().map(|shard| {
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
        self.local.clear();
        self.plain.clear();
        self.memberships.clear();
        for result in results {
            result?;
        }
        Ok(())
    }

    async fn close(&self) -> Result<(), LayerError> {
        self.stop_loops();
        self.plain.close().await;
        // Receivers waiting on the stopped loops learn it now; later calls
        // start a new loop and reconnect.
        self.local.close();
        self.local.recover();
        self.memberships.set_restored(true);
        self.group_cache.reset();
        self.shards.reset();
        Ok(())
    }

    fn name(&self) -> &'static str {
        "redis"
    }

    fn history(&self) -> Option<Arc<dyn HistoryStore>> {
        Some(self.history.clone())
    }

    fn stats(&self) -> LayerStats {
        LayerStats::new(self.local.len() + self.plain.len(), &self.drops)
    }
}

impl Drop for RedisChannelLayer {
    fn drop(&mut self) {
        self.stop_loops();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn new_channel_names_are_valid_and_ours() {
        let layer = RedisChannelLayer::new(RedisConfig::new()).unwrap();
        let name = layer.new_channel("specific").await.unwrap();
        assert_eq!(
            name.len(),
            54,
            "specific. + 32 hex + ! + 12 letters, as channels_redis"
        );
        assert!(name.starts_with(&format!("specific.{}!", layer.client_prefix())));
        assert!(layer.settings.owns(&name));
        assert!(!layer.settings.owns("specific.0123!x"));
        assert!(layer.new_channel(&"x".repeat(90)).await.is_err());
        assert_eq!(channels_core::non_local_name(&name).len(), 42);
    }
}
