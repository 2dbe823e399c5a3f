//! [`InMemoryChannelLayer`]: the [`ChannelLayer`] for one process.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use channels_core::async_trait;
use channels_core::{
    ChannelLayer, DropCounters, HistoryStore, LayerConfig, LayerError, LayerStats, Mailbox,
    Message, Receiver, Release, lock, random_local_part, validate_channel_name,
    validate_group_name,
};
use tokio::time::Instant;

use crate::channels::Channels;
use crate::groups::Groups;
use crate::history::MemoryHistory;

/// The shortest interval between two sweeps of untouched entries.
const MIN_SWEEP_INTERVAL: Duration = Duration::from_millis(100);

/// A channel layer living in this process's memory.
///
/// - Each channel is a bounded [`Mailbox`] in a sharded map; receiving
///   through a [`Receiver`] handle ([`ChannelLayer::open`],
///   [`ChannelLayer::new_receiver`]) reads it with no lookup and no
///   layer-wide lock.
/// - `group_send` pushes the **same** message (one reference-count increment
///   per member, no copy) straight into every member's mailbox: O(members),
///   under the group's read lock only, so broadcasts to different groups (and
///   to one group) run in parallel.
/// - Expired messages are dropped from the front of a mailbox when it is
///   used; channels and memberships nobody touches are swept at most once per
///   expiry interval, amortized over calls. Every drop is counted
///   ([`ChannelLayer::stats`]).
/// - Capacity counts per full channel name; a full channel makes `send` fail
///   with [`LayerError::ChannelFull`] and `group_send` skip it.
///
/// Cloning gives another handle to the same layer.
///
/// # Examples
/// ```
/// use channels_core::{ChannelLayer, Message};
/// use channels_memory::InMemoryChannelLayer;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), channels_core::LayerError> {
/// let layer = InMemoryChannelLayer::new();
/// let alice = layer.new_channel("specific").await?;
/// layer.group_add("lobby", &alice).await?;
/// layer.group_send("lobby", Message::new("chat.message").with("text", "hi")).await?;
///
/// let message = layer.receive(&alice).await?;
/// assert_eq!(message.get("text").and_then(|v| v.as_str()), Some("hi"));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct InMemoryChannelLayer {
    shared: Arc<Shared>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    config: LayerConfig,
    /// The group histories, made on first use.
    history: OnceLock<Arc<MemoryHistory>>,
    drops: Arc<DropCounters>,
    channels: Channels,
    groups: Groups,
    sweep_interval: Duration,
    next_sweep: Mutex<Instant>,
}

impl Release for Shared {
    fn release(&self, mailbox: &Arc<Mailbox>) {
        self.channels.lock(mailbox.channel()).release(mailbox);
    }
}

impl Default for InMemoryChannelLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl InMemoryChannelLayer {
    /// A layer with Django's defaults: capacity 100, expiry 60 s, group expiry
    /// 86400 s.
    pub fn new() -> Self {
        Self::with_config(LayerConfig::default())
    }

    /// A layer with the given capacities and expiries.
    pub fn with_config(config: LayerConfig) -> Self {
        let sweep_interval = config
            .expiry
            .min(config.group_expiry)
            .max(MIN_SWEEP_INTERVAL);
        let drops = Arc::new(DropCounters::default());
        Self {
            shared: Arc::new(Shared {
                channels: Channels::new(config.capacities.clone(), drops.clone()),
                groups: Groups::new(),
                history: OnceLock::new(),
                drops,
                config,
                sweep_interval,
                next_sweep: Mutex::new(Instant::now() + sweep_interval),
            }),
        }
    }

    /// Another handle on the layer `shared` belongs to.
    pub(crate) fn from_shared(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// The configuration the layer was built with.
    pub fn config(&self) -> &LayerConfig {
        &self.shared.config
    }

    /// Sweeps expired messages, unused channels and expired memberships once
    /// per interval. Amortized: one pass per interval, not one per call.
    fn sweep_if_due(&self, now: Instant) {
        {
            let mut next = lock(&self.shared.next_sweep);
            if now < *next {
                return;
            }
            *next = now + self.shared.sweep_interval;
        }
        self.shared.groups.sweep(now, &self.shared.channels);
        self.shared.channels.sweep();
    }
}

/// Pins a channel's mailbox while a `receive` waits on it, and forgets the
/// channel afterwards if nothing else needs it (also when the receive is
/// cancelled).
struct Receiving<'a> {
    shared: &'a Shared,
    mailbox: Arc<Mailbox>,
}

impl Drop for Receiving<'_> {
    fn drop(&mut self) {
        let mut locked = self.shared.channels.lock(self.mailbox.channel());
        self.mailbox.remove_holder();
        locked.forget_if_unused(&self.mailbox);
    }
}

#[async_trait]
impl ChannelLayer for InMemoryChannelLayer {
    async fn send(&self, channel: &str, message: Message) -> Result<(), LayerError> {
        validate_channel_name(channel)?;
        message.validate()?;
        let now = Instant::now();
        self.sweep_if_due(now);
        let expires_at = now + self.shared.config.expiry;
        let mut locked = self.shared.channels.lock(channel);
        // Pushed under the shard lock: the entry cannot be forgotten between
        // the lookup and the push.
        let mailbox = &locked.entry(channel).mailbox;
        match mailbox.try_push(message, expires_at) {
            Ok(()) => Ok(()),
            Err(_) => Err(LayerError::ChannelFull {
                channel: channel.to_owned(),
                capacity: mailbox.capacity(),
            }),
        }
    }

    async fn receive(&self, channel: &str) -> Result<Message, LayerError> {
        validate_channel_name(channel)?;
        let mailbox = {
            let mut locked = self.shared.channels.lock(channel);
            let mailbox = locked.entry(channel).mailbox.clone();
            mailbox.add_holder();
            mailbox
        };
        let receiving = Receiving {
            shared: &self.shared,
            mailbox,
        };
        receiving.mailbox.recv().await
    }

    async fn open(&self, channel: &str) -> Result<Receiver, LayerError> {
        validate_channel_name(channel)?;
        let mut locked = self.shared.channels.lock(channel);
        let mailbox = locked.entry(channel).mailbox.clone();
        // Under the shard lock, so no release can forget the entry meanwhile.
        Ok(Receiver::new(mailbox, self.shared.clone()))
    }

    async fn new_channel(&self, prefix: &str) -> Result<String, LayerError> {
        let name = format!("{prefix}.inmemory!{}", random_local_part());
        validate_channel_name(&name)?;
        Ok(name)
    }

    async fn group_add(&self, group: &str, channel: &str) -> Result<(), LayerError> {
        validate_group_name(group)?;
        validate_channel_name(channel)?;
        let now = Instant::now();
        self.sweep_if_due(now);
        let expires_at = now + self.shared.config.group_expiry;
        self.shared
            .groups
            .add(group, channel, expires_at, &self.shared.channels);
        Ok(())
    }

    async fn group_discard(&self, group: &str, channel: &str) -> Result<(), LayerError> {
        validate_group_name(group)?;
        validate_channel_name(channel)?;
        self.shared
            .groups
            .discard(group, channel, &self.shared.channels);
        Ok(())
    }

    async fn group_send(&self, group: &str, message: Message) -> Result<(), LayerError> {
        validate_group_name(group)?;
        message.validate()?;
        let now = Instant::now();
        self.sweep_if_due(now);
        let expires_at = now + self.shared.config.expiry;
        let outcome =
            self.shared
                .groups
                .send(group, &message, now, expires_at, &self.shared.channels);
        if outcome.over_capacity > 0 {
            tracing::info!(
                group,
                skipped = outcome.over_capacity,
                delivered = outcome.delivered,
                "{} of {} channels over capacity in group {group}",
                outcome.over_capacity,
                outcome.over_capacity + outcome.delivered,
            );
        }
        Ok(())
    }

    async fn flush(&self) -> Result<(), LayerError> {
        self.shared.groups.clear(&self.shared.channels);
        self.shared.channels.clear();
        Ok(())
    }

    /// Nothing to release: the layer has no connections or background tasks.
    /// Its contents are kept, and it stays usable.
    async fn close(&self) -> Result<(), LayerError> {
        Ok(())
    }

    fn name(&self) -> &'static str {
        "memory"
    }

    fn history(&self) -> Option<Arc<dyn HistoryStore>> {
        let history = self
            .shared
            .history
            .get_or_init(|| Arc::new(MemoryHistory::new(Arc::downgrade(&self.shared))));
        Some(history.clone())
    }

    fn stats(&self) -> LayerStats {
        LayerStats::new(self.shared.channels.len(), &self.shared.drops)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer() -> InMemoryChannelLayer {
        InMemoryChannelLayer::new()
    }

    #[tokio::test]
    async fn group_send_shares_one_message_between_members() {
        let layer = layer();
        let a = layer.new_receiver("specific").await.unwrap();
        let b = layer.new_receiver("specific").await.unwrap();
        layer.group_add("g", a.channel()).await.unwrap();
        layer.group_add("g", b.channel()).await.unwrap();
        layer
            .group_send("g", Message::new("x").with("big", "payload"))
            .await
            .unwrap();
        let first = a.recv().await.unwrap();
        let second = b.recv().await.unwrap();
        assert!(
            first.shares_storage_with(&second),
            "members got separate copies"
        );
    }

    #[tokio::test]
    async fn drained_and_abandoned_channels_leave_no_entry() {
        let layer = layer();
        layer.send("a", Message::new("x")).await.unwrap();
        layer.receive("a").await.unwrap();
        let waiting = tokio::time::timeout(Duration::from_millis(20), layer.receive("b")).await;
        assert!(waiting.is_err(), "nothing was sent to b");
        assert_eq!(layer.stats().channels, 0, "idle channels must be forgotten");
    }

    #[tokio::test]
    async fn dropping_the_last_handle_drops_its_messages_and_entry() {
        let layer = layer();
        let handle = layer.new_receiver("specific").await.unwrap();
        let channel = handle.channel().to_owned();
        let second = layer.open(&channel).await.unwrap();
        layer.send(&channel, Message::new("stale")).await.unwrap();
        drop(handle);
        assert_eq!(layer.stats().channels, 1, "another handle still holds it");
        drop(second);
        assert_eq!(layer.stats().channels, 0);
        let nothing =
            tokio::time::timeout(Duration::from_millis(20), layer.receive(&channel)).await;
        assert!(nothing.is_err(), "released messages must not be delivered");
    }

    #[tokio::test]
    async fn a_member_whose_handle_dropped_still_gets_group_messages_by_name() {
        let layer = layer();
        let handle = layer.new_receiver("specific").await.unwrap();
        let channel = handle.channel().to_owned();
        layer.group_add("g", &channel).await.unwrap();
        drop(handle);
        layer.group_send("g", Message::new("later")).await.unwrap();
        let message = tokio::time::timeout(Duration::from_secs(1), layer.receive(&channel))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(message.message_type(), Some("later"));
        layer.group_discard("g", &channel).await.unwrap();
        assert_eq!(layer.stats().channels, 0);
        assert_eq!(layer.shared.groups.len(), 0);
    }

    #[tokio::test]
    async fn waiting_receiver_keeps_its_entry_through_flush() {
        let layer = layer();
        let receiver = {
            let layer = layer.clone();
            tokio::spawn(async move { layer.receive("c").await })
        };
        while layer.stats().channels == 0 {
            tokio::task::yield_now().await;
        }
        layer.flush().await.unwrap();
        layer.send("c", Message::new("after.flush")).await.unwrap();
        let message = tokio::time::timeout(Duration::from_secs(1), receiver)
            .await
            .expect("receiver woke up")
            .unwrap()
            .unwrap();
        assert_eq!(message.message_type(), Some("after.flush"));
    }

    #[tokio::test(start_paused = true)]
    async fn sweep_drops_unread_messages_and_expired_members() {
        let config = LayerConfig::default()
            .expiry(Duration::from_secs(1))
            .group_expiry(Duration::from_secs(2));
        let layer = InMemoryChannelLayer::with_config(config);
        layer.send("unread", Message::new("x")).await.unwrap();
        layer.group_add("g", "member").await.unwrap();
        tokio::time::advance(Duration::from_secs(3)).await;
        // Any call past the sweep interval sweeps everything untouched.
        layer.send("other", Message::new("x")).await.unwrap();
        assert_eq!(layer.stats().channels, 1, "only `other` is left");
        assert_eq!(layer.stats().dropped_expired, 1);
        assert_eq!(layer.shared.groups.len(), 0);
    }

    #[tokio::test]
    async fn full_channel_error_names_channel_and_capacity() {
        let layer = InMemoryChannelLayer::with_config(LayerConfig::default().capacity(1));
        layer.send("one", Message::new("x")).await.unwrap();
        let error = layer.send("one", Message::new("x")).await.unwrap_err();
        assert_eq!(
            error.to_string(),
            "channel `one` is full (capacity 1); raise its capacity or read faster"
        );
        layer.group_add("g", "one").await.unwrap();
        layer.group_send("g", Message::new("x")).await.unwrap();
        assert_eq!(layer.stats().dropped_full, 1, "a skipped member is counted");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_concurrent_receivers_each_get_one_message() {
        let layer = layer();
        let mut receivers = Vec::new();
        for _ in 0..50 {
            let layer = layer.clone();
            receivers.push(tokio::spawn(async move { layer.receive("shared").await }));
        }
        for i in 0..50 {
            layer
                .send("shared", Message::new("n").with("i", i))
                .await
                .unwrap();
        }
        let mut seen = Vec::new();
        for receiver in receivers {
            let message = tokio::time::timeout(Duration::from_secs(1), receiver)
                .await
                .expect("every receiver gets a message")
                .unwrap()
                .unwrap();
            seen.push(
                message
                    .get("i")
                    .and_then(channels_core::Value::as_i64)
                    .unwrap(),
            );
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..50).collect::<Vec<_>>());
    }
}
