//! [`RedisPubSubChannelLayer`]: the `ChannelLayer` over Redis PUBLISH/SUBSCRIBE.

use std::sync::Arc;

use async_trait::async_trait;
use channels_core::{
    Backoff, ChannelLayer, DropCounters, LayerError, LayerStats, Mailbox, Message, Receiver,
    Release, validate_channel_name, validate_group_name,
};

use crate::config::RedisConfig;
use crate::serializer::Serializer;
use crate::shard::consistent_hash;
use crate::target::{self, Target};
use crate::wire::Route;

use super::registry::Registry;
use super::shard::{Shard, Shared, Timeouts};
use super::worker::BACKOFF_MAX;

/// A channel layer compatible with Python's
/// `channels_redis.pubsub.RedisPubSubChannelLayer` (channels_redis 4.3).
///
/// - `send(channel, m)` is `PUBLISH <channel> <msgpack(m)>`; `group_send(g, m)`
///   is one `PUBLISH {prefix}__group__{g}` however many members there are.
/// - `new_channel(p)` returns `{prefix}{p}.{32 hex}` (`asgispecific.<hex>`
///   for the default `"specific"`; a `p` ending in `.` gets no second dot, so
///   Python's `"specific."` gives the same name).
/// - Membership is process-local: `group_add` accepts only channels this
///   instance created, opened or receives on; each instance SUBSCRIBEs the
///   group's topic once per shard connection and pushes each arriving
///   message, decoded once and shared, into every local member's mailbox.
/// - One subscriber connection per shard (SUBSCRIBE, never PSUBSCRIBE),
///   owned by a worker that takes SUBSCRIBE requests as commands (coalescing
///   concurrent ones), UNSUBSCRIBEs what is no longer wanted, and reconnects
///   with capped exponential backoff, resubscribing every channel and group
///   before the link counts as up.
/// - Each channel's messages wait in a [`Mailbox`] of its capacity
///   (`RedisConfig::capacity` and patterns); when full, the oldest message is
///   dropped, counted ([`Self::dropped_messages`], [`ChannelLayer::stats`])
///   and logged. A cancelled `receive` loses nothing and keeps the
///   subscription (Python drops both).
///
/// Receiving: a handle from [`ChannelLayer::open`] or
/// [`ChannelLayer::new_receiver`] subscribes its channel, and dropping the
/// last handle unsubscribes it (and leaves its groups), unless the name is
/// also pinned: names from `new_channel` and names first registered by a
/// `receive` stay subscribed until [`Self::delete_channel`], `flush` (groups
/// only) or `close`, as in channels_redis. A handle and a `receive` on one
/// channel share its mailbox.
///
/// A message nobody is subscribed to is lost, as with any Redis pub/sub; there
/// is no expiry and no `ChannelFull`.
///
/// # Examples
/// ```no_run
/// use channels_core::{ChannelLayer, Message};
/// use channels_redis::{RedisConfig, RedisPubSubChannelLayer};
///
/// # async fn demo() -> Result<(), channels_core::LayerError> {
/// let layer = RedisPubSubChannelLayer::new(RedisConfig::new().host("redis://127.0.0.1:6379"))?;
/// let inbox = layer.new_receiver("specific").await?; // subscribes "asgispecific.<hex>"
/// layer.group_add("chat", inbox.channel()).await?;
/// layer.group_send("chat", Message::new("chat.message").with("text", "hi")).await?;
/// let message = inbox.recv().await?;
/// assert_eq!(message.message_type(), Some("chat.message"));
/// drop(inbox); // unsubscribes the channel and the group's topic
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct RedisPubSubChannelLayer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    prefix: String,
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
            // The worker may be in its longest pause when Redis returns: the
            // next attempt starts within it, then connects.
            link_wait: Backoff::longest_delay(BACKOFF_MAX) + config.connect_timeout,
        };
        let shards = hosts
            .iter()
            .enumerate()
            .map(|(index, host)| {
                Ok(Shard::new(
                    index,
                    target::label(host, config.ca_file.as_deref()),
                    Target::new(host, config.ca_file.as_deref())?,
                    timeouts,
                ))
            })
            .collect::<Result<Vec<_>, LayerError>>()?;
        let registry = Registry::new(
            shards.len(),
            config.layer.capacities.clone(),
            Arc::new(DropCounters::default()),
        );
        let shared = Arc::new(Shared {
            registry: Arc::new(registry),
            serializer: serializer(&config)?,
        });
        Ok(Self {
            inner: Arc::new(Inner {
                prefix: config.prefix,
                shared,
                shards,
            }),
        })
    }

    /// The Redis pub/sub topic of a group: `{prefix}__group__{group}`.
    pub fn group_topic(&self, group: &str) -> String {
        format!("{}__group__{group}", self.inner.prefix)
    }

    /// Messages dropped so far because a channel's buffer was full (the
    /// `dropped_full` of [`ChannelLayer::stats`]).
    pub fn dropped_messages(&self) -> u64 {
        self.registry().drops().full()
    }

    /// Payloads dropped so far because they could not be decoded (wrong
    /// encryption key, not msgpack, no `type`; the `undecodable` of
    /// [`ChannelLayer::stats`]).
    pub fn undecodable_messages(&self) -> u64 {
        self.registry().drops().undecodable()
    }

    /// Whether every shard's subscriber connection is up (false before the
    /// first subscription and while reconnecting).
    pub fn is_subscribed(&self) -> bool {
        self.inner.shards.iter().all(Shard::is_subscribed)
    }

    /// Stops listening on `channel`, whoever holds it: drops its buffer
    /// (pending receives and its handles get [`LayerError::Closed`]), removes
    /// it from its groups and UNSUBSCRIBEs what is no longer needed before
    /// it returns. The counterpart of `new_channel` and of `receive` by name,
    /// for consumers that end (Python does this when a receive is cancelled).
    ///
    /// # Errors
    /// [`LayerError::InvalidChannelName`], [`LayerError::Backend`] when an
    /// UNSUBSCRIBE is not confirmed in time (local state is already updated).
    pub async fn delete_channel(&self, channel: &str) -> Result<(), LayerError> {
        validate_channel_name(channel)?;
        if self.registry().remove_channel(channel) {
            self.reconcile().await?;
        }
        Ok(())
    }

    fn registry(&self) -> &Arc<Registry> {
        &self.inner.shared.registry
    }

    fn shard(&self, topic: &str) -> &Shard {
        let index = consistent_hash(topic, self.inner.shards.len());
        &self.inner.shards[index]
    }

    async fn subscribe(&self, topic: &Arc<str>) -> Result<(), LayerError> {
        self.shard(topic).subscribe(topic, &self.inner.shared).await
    }

    /// Has every shard's worker UNSUBSCRIBE what is no longer wanted.
    async fn reconcile(&self) -> Result<(), LayerError> {
        let mut result = Ok(());
        for shard in &self.inner.shards {
            result = result.and(shard.reconcile().await);
        }
        result
    }

    /// Whether a topic known to be subscribed (`confirmed`) is heard now:
    /// its shard's link is up (a new link resubscribes every wanted topic
    /// before it counts as up). Otherwise the worker is asked, which waits
    /// (bounded) for the link to come back.
    fn is_heard(&self, topic: &str, confirmed: bool) -> bool {
        confirmed && self.shard(topic).is_subscribed()
    }

    /// SUBSCRIBEs `mailbox`'s channel unless `heard`.
    async fn subscribe_channel(
        &self,
        mailbox: &Arc<Mailbox>,
        heard: bool,
    ) -> Result<(), LayerError> {
        if !heard {
            self.subscribe(mailbox.channel_arc()).await?;
            self.registry().confirm(mailbox);
        }
        Ok(())
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

    /// A fresh channel name: `{prefix}{prefix_arg}[.]{32 hex}`.
    fn fresh_name(&self, prefix: &str) -> Result<String, LayerError> {
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
        Ok(channel)
    }
}

/// Pins a channel's mailbox while a `receive` waits on it, and releases the
/// channel afterwards if nothing else holds it (also when the receive is
/// cancelled).
struct Receiving<'a> {
    registry: &'a Registry,
    mailbox: Arc<Mailbox>,
}

impl Drop for Receiving<'_> {
    fn drop(&mut self) {
        if self.mailbox.remove_holder() {
            self.registry.release(&self.mailbox);
        }
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

    /// Like channels_redis, receiving on a name subscribes to it; a name not
    /// registered yet stays subscribed afterwards (see the type's docs).
    async fn receive(&self, channel: &str) -> Result<Message, LayerError> {
        validate_channel_name(channel)?;
        let registered = self.registry().hold(channel);
        let receiving = Receiving {
            registry: self.registry(),
            mailbox: registered.mailbox,
        };
        // Known to be subscribed is enough here: the receive waits anyway,
        // and a reconnecting link resubscribes the channel.
        let subscribed = self
            .subscribe_channel(&receiving.mailbox, registered.confirmed)
            .await;
        if let Err(error) = subscribed {
            if registered.created {
                self.registry().unpin(&receiving.mailbox);
            }
            return Err(error);
        }
        receiving.mailbox.recv().await
    }

    async fn new_channel(&self, prefix: &str) -> Result<String, LayerError> {
        let channel = self.fresh_name(prefix)?;
        let registered = self.registry().pin(&channel);
        if let Err(error) = self.subscribe_channel(&registered.mailbox, false).await {
            self.registry().unpin(&registered.mailbox);
            return Err(error);
        }
        Ok(channel)
    }

    async fn group_add(&self, group: &str, channel: &str) -> Result<(), LayerError> {
        validate_group_name(group)?;
        validate_channel_name(channel)?;
        let topic: Arc<str> = Arc::from(self.group_topic(group));
        let Some(joined) = self.registry().join(&topic, channel) else {
            return Err(LayerError::Unsupported {
                operation: "group_add",
                reason: format!(
                    "channel `{channel}` was not created by new_channel() or received on by this \
                     pub/sub layer instance, and pub/sub group membership lives in the process that \
                     owns the channel; call group_add from that process"
                ),
            });
        };
        if !self.is_heard(&topic, joined.is_confirmed()) {
            self.subscribe(&topic).await?;
            joined.confirm();
        }
        Ok(())
    }

    /// Leaves the group here; its topic is UNSUBSCRIBEd by the shard's worker
    /// soon after the last local member leaves (this call does not wait).
    async fn group_discard(&self, group: &str, channel: &str) -> Result<(), LayerError> {
        validate_group_name(group)?;
        validate_channel_name(channel)?;
        self.registry().leave(&self.group_topic(group), channel);
        Ok(())
    }

    async fn group_send(&self, group: &str, message: Message) -> Result<(), LayerError> {
        validate_group_name(group)?;
        let topic = self.group_topic(group);
        self.publish(&topic, &message).await
    }

    /// Empties every local buffer, including messages published before the
    /// call that are still on their way, and forgets every group membership
    /// (UNSUBSCRIBEing the groups). Channels and handles stay subscribed, so
    /// names used before keep working. Nothing is stored in Redis, so
    /// nothing is deleted.
    async fn flush(&self) -> Result<(), LayerError> {
        // First let in-flight messages (published before this call) land, so
        // that flushing really drops them.
        for shard in &self.inner.shards {
            shard.sync().await?;
        }
        self.registry().flush();
        self.reconcile().await
    }

    /// Stops the subscriber workers, closes the connections and forgets
    /// every channel and group (pending receives and handles get
    /// [`LayerError::Closed`]). The layer reconnects when used again.
    async fn close(&self) -> Result<(), LayerError> {
        self.registry().close();
        for shard in &self.inner.shards {
            shard.close().await;
        }
        Ok(())
    }

    /// A handle on `channel`, SUBSCRIBEd before it is returned (several
    /// handles, and `receive` calls, share the channel's mailbox). Dropping
    /// the last handle unsubscribes the channel and takes it out of its local
    /// groups, unless its name is pinned (see the type's docs).
    async fn open(&self, channel: &str) -> Result<Receiver, LayerError> {
        validate_channel_name(channel)?;
        let (receiver, registered) = self.registry().open(channel);
        let heard = self.is_heard(channel, registered.confirmed);
        // On failure the handle is dropped, which releases the channel.
        self.subscribe_channel(&registered.mailbox, heard).await?;
        Ok(receiver)
    }

    /// A fresh channel (named like [`ChannelLayer::new_channel`]) and a
    /// handle on it; not pinned, so dropping the handle releases it.
    async fn new_receiver(&self, prefix: &str) -> Result<Receiver, LayerError> {
        let channel = self.fresh_name(prefix)?;
        self.open(&channel).await
    }

    fn name(&self) -> &'static str {
        "redis-pubsub"
    }

    fn stats(&self) -> LayerStats {
        let registry = self.registry();
        LayerStats::new(registry.channel_count(), registry.drops())
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
