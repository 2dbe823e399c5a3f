//! [`RedisPubSubChannelLayer`]: the `ChannelLayer` over Redis PUBLISH/SUBSCRIBE.

use std::sync::Arc;

use async_trait::async_trait;
use channels_core::{
    ChannelCapacities, ChannelLayer, LayerError, Message, validate_channel_name,
    validate_group_name,
};

use crate::config::RedisConfig;
use crate::serializer::Serializer;
use crate::shard::consistent_hash;
use crate::wire::Route;

use super::backoff::BACKOFF_MAX;
use super::registry::Joined;
use super::shard::{Shard, Shared, Timeouts};
use crate::target::Target;

/// A channel layer compatible with Python's
/// `channels_redis.pubsub.RedisPubSubChannelLayer` (channels_redis 4.3).
///
/// - `send(channel, m)` is `PUBLISH <channel> <msgpack(m)>`; `group_send(g, m)`
///   is one `PUBLISH {prefix}__group__{g}` however many members there are.
/// - `new_channel(p)` returns `{prefix}{p}.{32 hex}` (`asgispecific.<hex>`
///   for the default `"specific"`; a `p` ending in `.` gets no second dot, so
///   Python's `"specific."` gives the same name).
/// - Membership is process-local: `group_add` accepts only channels this
///   instance created or receives on; each instance SUBSCRIBEs the group's
///   topic once per shard connection and fans messages out to its members.
/// - One subscriber connection per shard (SUBSCRIBE, never PSUBSCRIBE), kept
///   up by a background worker that reconnects with capped exponential
///   backoff and resubscribes every channel and group.
/// - Each channel buffers at most its capacity (`RedisConfig::capacity` and
///   patterns); when full, the oldest message is dropped, counted
///   ([`Self::dropped_messages`]) and logged. A cancelled `receive` loses
///   nothing and keeps the subscription (Python drops both).
///
/// A message nobody is subscribed to is lost, as with any Redis pub/sub; there
/// is no expiry and no `ChannelFull`. Channels stay subscribed until
/// [`Self::delete_channel`], `flush` (groups only) or `close`.
///
/// # Examples
/// ```no_run
/// use channels_core::{ChannelLayer, Message};
/// use channels_redis::{RedisConfig, RedisPubSubChannelLayer};
///
/// # async fn demo() -> Result<(), channels_core::LayerError> {
/// let layer = RedisPubSubChannelLayer::new(RedisConfig::new().host("redis://127.0.0.1:6379"))?;
/// let channel = layer.new_channel("specific").await?; // "asgispecific.<hex>"
/// layer.group_add("chat", &channel).await?;
/// layer.group_send("chat", Message::new("chat.message").with("text", "hi")).await?;
/// let message = layer.receive(&channel).await?;
/// assert_eq!(message.message_type(), Some("chat.message"));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct RedisPubSubChannelLayer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    prefix: String,
    capacities: ChannelCapacities,
    shared: Arc<Shared>,
    shards: Vec<Shard>,
}

impl RedisPubSubChannelLayer {
    /// Builds the layer from `config`: hosts (sharded by channels_redis's
    /// consistent hash of the topic), prefix, capacities (of the local
    /// buffers), serializer format and encryption keys. Expiry, group expiry
    /// and the random prefix length do not apply to pub/sub and are ignored.
    /// Nothing connects until the layer is used.
    ///
    /// # Errors
    /// [`LayerError::InvalidConfig`] for a bad host URL or Sentinel entry, or
    /// unusable encryption keys.
    pub fn new(config: RedisConfig) -> Result<Self, LayerError> {
        config.validate()?;
        let hosts = config.hosts();
        let timeouts = Timeouts {
            connect: config.connect_timeout,
            command: config.command_timeout,
            link_wait: config.connect_timeout + BACKOFF_MAX,
        };
        let shards = hosts
            .iter()
            .enumerate()
            .map(|(index, host)| {
                Ok(Shard::new(
                    index,
                    host.to_string(),
                    Target::new(host)?,
                    timeouts,
                ))
            })
            .collect::<Result<Vec<_>, LayerError>>()?;
        let shared = Arc::new(Shared {
            registry: super::registry::Registry::default(),
            serializer: serializer(&config)?,
            shard_count: shards.len(),
        });
        Ok(Self {
            inner: Arc::new(Inner {
                prefix: config.prefix,
                capacities: config.layer.capacities,
                shared,
                shards,
            }),
        })
    }

    /// The Redis pub/sub topic of a group: `{prefix}__group__{group}`.
    pub fn group_topic(&self, group: &str) -> String {
        format!("{}__group__{group}", self.inner.prefix)
    }

    /// Messages dropped so far because a channel's buffer was full.
    pub fn dropped_messages(&self) -> u64 {
        self.inner.shared.registry.dropped()
    }

    /// Payloads dropped so far because they could not be decoded (wrong
    /// encryption key, not msgpack, no `type`).
    pub fn undecodable_messages(&self) -> u64 {
        self.inner.shared.registry.undecodable()
    }

    /// Whether every shard's subscriber connection is up (false before the
    /// first subscription and while reconnecting).
    pub fn is_subscribed(&self) -> bool {
        self.inner.shards.iter().all(Shard::is_subscribed)
    }

    /// Stops listening on `channel`: drops its buffer (pending receives get
    /// [`LayerError::Closed`]), removes it from its groups and UNSUBSCRIBEs
    /// what is no longer needed. The counterpart of `new_channel`, for
    /// consumers that end (Python does this when a receive is cancelled).
    ///
    /// # Errors
    /// [`LayerError::InvalidChannelName`], [`LayerError::Backend`] when an
    /// UNSUBSCRIBE fails (local state is already updated).
    pub async fn delete_channel(&self, channel: &str) -> Result<(), LayerError> {
        validate_channel_name(channel)?;
        let emptied = self.inner.shared.registry.remove_channel(channel);
        let mut result = self.unsubscribe(channel).await;
        for topic in emptied {
            let unsubscribed = self.unsubscribe(&topic).await;
            result = result.and(unsubscribed);
        }
        result
    }

    fn shard(&self, topic: &str) -> &Shard {
        let index = consistent_hash(topic, self.inner.shards.len());
        &self.inner.shards[index]
    }

    async fn subscribe(&self, topic: &str) -> Result<(), LayerError> {
        self.shard(topic).subscribe(topic, &self.inner.shared).await
    }

    async fn unsubscribe(&self, topic: &str) -> Result<(), LayerError> {
        self.shard(topic)
            .unsubscribe(topic, &self.inner.shared)
            .await
    }

    async fn publish(&self, topic: &str, message: &Message) -> Result<(), LayerError> {
        message.validate()?;
        let payload = self
            .inner
            .shared
            .serializer
            .serialize(message, Route::None)?;
        self.shard(topic).publish(topic, &payload).await
    }

    /// Registers `channel` and SUBSCRIBEs it; forgets it again on failure.
    async fn listen(&self, channel: &str) -> Result<(), LayerError> {
        let capacity = self.inner.capacities.capacity_for(channel);
        self.inner.shared.registry.add_channel(channel, capacity);
        if let Err(error) = self.subscribe(channel).await {
            self.inner.shared.registry.remove_channel(channel);
            if let Err(cleanup) = self.unsubscribe(channel).await {
                tracing::debug!(%channel, error = %cleanup, "UNSUBSCRIBE after a failed SUBSCRIBE failed");
            }
            return Err(error);
        }
        Ok(())
    }
}

/// msgpack or JSON, no random prefix, Fernet without a time-to-live.
fn serializer(config: &RedisConfig) -> Result<Serializer, LayerError> {
    let serializer = Serializer::new(config.serializer_format, 0);
    #[cfg(feature = "encryption")]
    let serializer = if config.symmetric_encryption_keys.is_empty() {
        serializer
    } else {
        serializer.with_crypter(Some(crate::crypto::Crypter::new(
            &config.symmetric_encryption_keys,
            None,
        )?))
    };
    Ok(serializer)
}

#[async_trait]
impl ChannelLayer for RedisPubSubChannelLayer {
    async fn send(&self, channel: &str, message: Message) -> Result<(), LayerError> {
        validate_channel_name(channel)?;
        self.publish(channel, &message).await
    }

    async fn receive(&self, channel: &str) -> Result<Message, LayerError> {
        validate_channel_name(channel)?;
        let mailbox = match self.inner.shared.registry.channel(channel) {
            Some(mailbox) => mailbox,
            None => {
                // Like channels_redis: receiving on a name subscribes to it.
                self.listen(channel).await?;
                self.inner
                    .shared
                    .registry
                    .channel(channel)
                    .ok_or(LayerError::Closed)?
            }
        };
        mailbox.recv().await
    }

    async fn new_channel(&self, prefix: &str) -> Result<String, LayerError> {
        let separator = if prefix.is_empty() || prefix.ends_with('.') {
            ""
        } else {
            "."
        };
        let channel = format!(
            "{}{prefix}{separator}{}",
            self.inner.prefix,
            uuid::Uuid::new_v4().simple()
        );
        validate_channel_name(&channel)?;
        self.listen(&channel).await?;
        Ok(channel)
    }

    async fn group_add(&self, group: &str, channel: &str) -> Result<(), LayerError> {
        validate_group_name(group)?;
        validate_channel_name(channel)?;
        let topic = self.group_topic(group);
        if self.inner.shared.registry.join(&topic, channel) == Joined::NotOwned {
            return Err(LayerError::Unsupported {
                operation: "group_add",
                reason: format!(
                    "channel `{channel}` was not created by new_channel() or received on by this \
                     pub/sub layer instance, and pub/sub group membership lives in the process that \
                     owns the channel; call group_add from that process"
                ),
            });
        }
        self.subscribe(&topic).await
    }

    async fn group_discard(&self, group: &str, channel: &str) -> Result<(), LayerError> {
        validate_group_name(group)?;
        validate_channel_name(channel)?;
        let topic = self.group_topic(group);
        if self.inner.shared.registry.leave(&topic, channel) {
            self.unsubscribe(&topic).await?;
        }
        Ok(())
    }

    async fn group_send(&self, group: &str, message: Message) -> Result<(), LayerError> {
        validate_group_name(group)?;
        let topic = self.group_topic(group);
        self.publish(&topic, &message).await
    }

    /// Empties every local buffer, including messages published before the
    /// call that are still on their way, and forgets every group membership
    /// (UNSUBSCRIBEing the groups). Channels stay subscribed, so names used
    /// before keep working. Nothing is stored in Redis, so nothing is deleted.
    async fn flush(&self) -> Result<(), LayerError> {
        // First let in-flight messages (published before this call) land, so
        // that flushing really drops them.
        for shard in &self.inner.shards {
            shard.sync().await?;
        }
        let topics = self.inner.shared.registry.flush();
        let mut result = Ok(());
        for topic in topics {
            let unsubscribed = self.unsubscribe(&topic).await;
            result = result.and(unsubscribed);
        }
        result
    }

    /// Stops the subscriber workers, closes the connections and forgets
    /// every channel and group (pending receives get [`LayerError::Closed`]).
    /// The layer reconnects when used again.
    // TEMPORARY while the receive-handle port is under way.
    async fn open(&self, channel: &str) -> Result<channels_core::Receiver, LayerError> {
        validate_channel_name(channel)?;
        Err(LayerError::Unsupported {
            operation: "open",
            reason: "not ported yet".to_owned(),
        })
    }

    async fn close(&self) -> Result<(), LayerError> {
        self.inner.shared.registry.close();
        for shard in &self.inner.shards {
            shard.close().await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(prefix: &str) -> RedisPubSubChannelLayer {
        RedisPubSubChannelLayer::new(RedisConfig::new().prefix(prefix)).unwrap()
    }

    #[test]
    fn p2_group_topic_format() {
        assert_eq!(layer("asgi").group_topic("chat"), "asgi__group__chat");
        assert_eq!(
            layer("test_prefix").group_topic("g"),
            "test_prefix__group__g"
        );
    }

    #[test]
    fn bad_hosts_are_config_errors() {
        let error =
            RedisPubSubChannelLayer::new(RedisConfig::new().host("http://x:1")).unwrap_err();
        assert!(matches!(error, LayerError::InvalidConfig { .. }), "{error}");
        let sentinel = crate::hosts::SentinelHost::new(vec![("localhost".into(), 26379)], "m");
        assert!(RedisPubSubChannelLayer::new(RedisConfig::new().host(sentinel)).is_ok());
    }

    #[test]
    fn layers_and_futures_are_send() {
        fn assert_send_sync<T: Send + Sync>(_: &T) {}
        let layer = layer("asgi");
        assert_send_sync(&layer);
        let shared: channels_core::SharedLayer = Arc::new(layer);
        let receive = shared.receive("x");
        fn assert_send<T: Send>(_: &T) {}
        assert_send(&receive);
    }
}
