//! [`InMemoryChannelLayer`]: the [`ChannelLayer`] for one process.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use channels_core::async_trait;
use channels_core::{
    ChannelLayer, LayerConfig, LayerError, Message, validate_channel_name, validate_group_name,
};
use tokio::time::Instant;

use crate::state::State;

/// The shortest interval between two sweeps of untouched entries.
const MIN_SWEEP_INTERVAL: Duration = Duration::from_millis(100);

/// A channel layer living in this process's memory.
///
/// - `send` is O(1); `receive` sleeps until a message arrives (no polling).
/// - `group_send` queues the **same** message (one reference-count increment
///   per member, no copy) on every member: O(members).
/// - Expired messages are dropped from the front of a queue when it is used;
///   channels and memberships nobody touches are swept at most once per expiry
///   interval, amortized over calls.
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
struct Shared {
    config: LayerConfig,
    sweep_interval: Duration,
    state: Mutex<State>,
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
        Self {
            shared: Arc::new(Shared {
                config,
                sweep_interval,
                state: Mutex::new(State::new(Instant::now())),
            }),
        }
    }

    /// The configuration the layer was built with.
    pub fn config(&self) -> &LayerConfig {
        &self.shared.config
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave `State` half-updated in a
        // way that breaks its invariants, so a poisoned lock is still usable.
        self.shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Unregisters a waiting receiver when its `receive` ends or is cancelled.
struct WaiterGuard<'a> {
    layer: &'a InMemoryChannelLayer,
    channel: &'a str,
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        let mut state = self.layer.lock();
        if let Some(queue) = state.existing_queue(self.channel) {
            queue.remove_waiter();
        }
        state.forget_if_idle(self.channel);
    }
}

#[async_trait]
impl ChannelLayer for InMemoryChannelLayer {
    async fn send(&self, channel: &str, message: Message) -> Result<(), LayerError> {
        validate_channel_name(channel)?;
        message.validate()?;
        let config = &self.shared.config;
        let now = Instant::now();
        let mut state = self.lock();
        state.sweep_if_due(now, self.shared.sweep_interval);
        let queue = state.queue(channel, &config.capacities);
        queue.purge_expired(now);
        if queue.try_push(message, now + config.expiry) {
            Ok(())
        } else {
            Err(LayerError::ChannelFull {
                channel: channel.to_owned(),
                capacity: queue.capacity(),
            })
        }
    }

    async fn receive(&self, channel: &str) -> Result<Message, LayerError> {
        validate_channel_name(channel)?;
        let mut waiter: Option<WaiterGuard<'_>> = None;
        loop {
            let notify = {
                let mut state = self.lock();
                let queue = state.queue(channel, &self.shared.config.capacities);
                queue.purge_expired(Instant::now());
                // Popping happens under the lock with no await after it, so a
                // cancelled receive can never lose a message.
                if let Some(message) = queue.pop() {
                    if waiter.is_none() {
                        state.forget_if_idle(channel);
                    }
                    return Ok(message);
                }
                if waiter.is_some() {
                    // Woken, but another receiver took the message: wait again.
                    queue.notify_handle()
                } else {
                    queue.add_waiter()
                }
            };
            // `_with`: building a second guard and dropping it would unregister
            // this receiver while it still waits (a lost wake-up).
            waiter.get_or_insert_with(|| WaiterGuard {
                layer: self,
                channel,
            });
            // A notification sent between the unlock above and this line is
            // kept as a permit by `Notify`, so it is not missed.
            notify.notified().await;
        }
    }

    async fn new_channel(&self, prefix: &str) -> Result<String, LayerError> {
        let name = format!("{prefix}.inmemory!{}", uuid::Uuid::new_v4().simple());
        validate_channel_name(&name)?;
        Ok(name)
    }

    async fn group_add(&self, group: &str, channel: &str) -> Result<(), LayerError> {
        validate_group_name(group)?;
        validate_channel_name(channel)?;
        let now = Instant::now();
        let mut state = self.lock();
        state.sweep_if_due(now, self.shared.sweep_interval);
        state.group_add(group, channel, now + self.shared.config.group_expiry);
        Ok(())
    }

    async fn group_discard(&self, group: &str, channel: &str) -> Result<(), LayerError> {
        validate_group_name(group)?;
        validate_channel_name(channel)?;
        self.lock().group_discard(group, channel);
        Ok(())
    }

    async fn group_send(&self, group: &str, message: Message) -> Result<(), LayerError> {
        validate_group_name(group)?;
        message.validate()?;
        let config = &self.shared.config;
        let now = Instant::now();
        let outcome = {
            let mut state = self.lock();
            state.sweep_if_due(now, self.shared.sweep_interval);
            state.group_send(
                group,
                &message,
                now,
                now + config.expiry,
                &config.capacities,
            )
        };
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
        self.lock().flush();
        Ok(())
    }

    /// Drops the channel's queued messages unless a receiver still waits on it.
    async fn release_channel(&self, channel: &str) -> Result<(), LayerError> {
        validate_channel_name(channel)?;
        self.lock().release(channel);
        Ok(())
    }

    /// Nothing to release: the layer has no connections or background tasks.
    /// Its contents are kept, and it stays usable.
    async fn close(&self) -> Result<(), LayerError> {
        Ok(())
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
        let a = layer.new_channel("specific").await.unwrap();
        let b = layer.new_channel("specific").await.unwrap();
        layer.group_add("g", &a).await.unwrap();
        layer.group_add("g", &b).await.unwrap();
        layer
            .group_send("g", Message::new("x").with("big", "payload"))
            .await
            .unwrap();
        let first = layer.receive(&a).await.unwrap();
        let second = layer.receive(&b).await.unwrap();
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
        let state = layer.lock();
        assert_eq!(state.channel_count(), 0, "idle channels must be forgotten");
    }

    #[tokio::test]
    async fn release_channel_drops_its_messages_and_entry() {
        let layer = layer();
        let channel = layer.new_channel("specific").await.unwrap();
        layer.send(&channel, Message::new("stale")).await.unwrap();
        layer.release_channel(&channel).await.unwrap();
        assert_eq!(layer.lock().channel_count(), 0);
        let nothing =
            tokio::time::timeout(Duration::from_millis(20), layer.receive(&channel)).await;
        assert!(nothing.is_err(), "released messages must not be delivered");
        assert!(layer.release_channel("bad name").await.is_err());
    }

    #[tokio::test]
    async fn waiting_receiver_keeps_its_entry_through_flush() {
        let layer = layer();
        let receiver = {
            let layer = layer.clone();
            tokio::spawn(async move { layer.receive("c").await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
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
        let state = layer.lock();
        assert_eq!(state.channel_count(), 1, "only `other` is left");
        assert_eq!(state.group_count(), 0);
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
