//! [`Presence`]: who is in a group, across every server process
//! (`--presence`, docs/protocol.md "Presence"). The gateway records each
//! `/ws` connection in every group it is in; the HTTP API and embedding code
//! read it back; a background task keeps this process alive in the store and
//! sweeps the groups local clients watch.
//!
//! The store is a [`PresenceStore`]: `channels_redis::RedisPresence` on the
//! Redis layers (the layer's hosts, prefix and sharding), `InMemoryPresence`
//! on the memory layer.
//!
//! A failed presence write does not fail the join or leave it goes with:
//! the connection is in the group either way; the failure is logged and
//! counted (`channels_presence_errors_total`). A read that fails answers 503.
//!
//! Events: the process that records a join or a leave publishes it to the
//! group's [`events::events_group`]. The leave of a connection whose process
//! died is published by the process whose read removes its entry: reads by
//! the HTTP API, and this process's sweep of every group a local client
//! watches, every [`DEFAULT_HEARTBEAT_INTERVAL`]. So a watcher hears it within
//! the node TTL plus one sweep (20 s by default), exactly once per entry.

pub(crate) mod events;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use channels_core::presence::{
    DEFAULT_HEARTBEAT_INTERVAL, PresenceCount, PresenceEntry, PresenceSnapshot, SharedPresence,
};
use channels_core::{LayerError, SharedLayer, lock};
use tokio_util::sync::CancellationToken;

use futures_util::StreamExt as _;

use crate::metrics::Metrics;
use events::{Change, event_message, events_group};

/// Reads of watched groups one sweep runs at once.
const SWEEP_CONCURRENCY: usize = 8;

/// Presence of one server: its store, and the layer its events go through.
///
/// Get it from [`crate::App::presence`].
///
/// # Examples
/// ```no_run
/// # async fn demo(app: &channels_server::App) -> Result<(), channels_core::LayerError> {
/// let presence = app.presence().expect("started with --presence");
/// let count = presence.count("chat.lobby").await?; // group_size
/// let members = presence.members("chat.lobby").await?; // group_members
/// println!("{} connections, {} users, first {:?}", count.connections, count.users, members.first());
/// # Ok(()) }
/// ```
pub struct Presence {
    store: SharedPresence,
    layer: SharedLayer,
    metrics: Arc<Metrics>,
    /// Groups whose events local connections watch, with how many watch.
    watched: Mutex<HashMap<String, usize>>,
}

impl std::fmt::Debug for Presence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Presence")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl Presence {
    /// Presence on `store`, publishing events through `layer`.
    pub(crate) fn new(store: SharedPresence, layer: SharedLayer, metrics: Arc<Metrics>) -> Self {
        Self {
            store,
            layer,
            metrics,
            watched: Mutex::new(HashMap::new()),
        }
    }

    /// The store, for queries this handle does not offer.
    pub fn store(&self) -> &SharedPresence {
        &self.store
    }

    /// Reads `group`: its live connections (and the entries of dead
    /// processes this read removed, whose leave events it publishes).
    ///
    /// # Errors
    /// The store's error (Redis away).
    pub async fn read(&self, group: &str) -> Result<PresenceSnapshot, LayerError> {
        let snapshot = self.store.read(group).await.inspect_err(|error| {
            self.metrics.presence.failed("read");
            tracing::warn!(%group, %error, "presence read failed");
        })?;
        if !snapshot.reaped.is_empty() {
            self.metrics.presence.reaped(snapshot.reaped.len());
            for entry in &snapshot.reaped {
                tracing::info!(%group, channel = %entry.channel, node = %entry.node, "presence entry of a dead process removed");
                self.publish(group, Change::Leave, &entry.channel, entry.user.as_deref())
                    .await;
            }
        }
        Ok(snapshot)
    }

    /// The connections in `group`, on every live process (`group_members`).
    ///
    /// # Errors
    /// As [`Self::read`].
    #[doc(alias = "group_members")]
    pub async fn members(&self, group: &str) -> Result<Vec<PresenceEntry>, LayerError> {
        Ok(self.read(group).await?.members)
    }

    /// How many connections and distinct users `group` has (`group_size`).
    ///
    /// # Errors
    /// As [`Self::read`].
    #[doc(alias = "group_size")]
    pub async fn count(&self, group: &str) -> Result<PresenceCount, LayerError> {
        Ok(self.read(group).await?.count())
    }

    /// Records that `channel` (of `user`) joined `group` and publishes the
    /// event; a store failure is counted, not returned.
    pub(crate) async fn join(&self, group: &str, channel: &str, user: Option<&str>) {
        if let Err(error) = self.store.join(group, channel, user).await {
            self.metrics.presence.failed("join");
            tracing::warn!(%group, %error, "presence join not recorded");
            return;
        }
        self.publish(group, Change::Join, channel, user).await;
    }

    /// Records that `channel` left `group` and publishes the event when it
    /// was there; a store failure is counted, not returned.
    pub(crate) async fn leave(&self, group: &str, channel: &str, user: Option<&str>) {
        match self.store.leave(group, channel).await {
            Ok(true) => self.publish(group, Change::Leave, channel, user).await,
            Ok(false) => {}
            Err(error) => {
                self.metrics.presence.failed("leave");
                tracing::warn!(%group, %error, "presence leave not recorded");
            }
        }
    }

    /// A local connection watches `group`'s events: its sweep starts.
    pub(crate) fn watch(&self, group: &str) {
        *lock(&self.watched).entry(group.to_owned()).or_default() += 1;
    }

    /// A local connection stopped watching `group`.
    pub(crate) fn unwatch(&self, group: &str) {
        let mut watched = lock(&self.watched);
        if let Some(count) = watched.get_mut(group) {
            *count -= 1;
            if *count == 0 {
                watched.remove(group);
            }
        }
    }

    async fn publish(&self, group: &str, change: Change, channel: &str, user: Option<&str>) {
        let message = event_message(group, change, channel, user);
        if let Err(error) = self.layer.group_send(&events_group(group), message).await {
            self.metrics.presence.event_failed();
            tracing::warn!(%group, %error, "presence event not published");
        }
    }

    /// Until `stop`: heartbeats every [`DEFAULT_HEARTBEAT_INTERVAL`] and
    /// sweeps the watched groups (publishing the leaves of dead processes);
    /// then removes this process's entries at once.
    #[tracing::instrument(skip_all)]
    pub(crate) async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut ticks = tokio::time::interval(DEFAULT_HEARTBEAT_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = ticks.tick() => {}
            }
            match self.store.heartbeat().await {
                Ok(0) => {}
                Ok(restored) => {
                    self.metrics.presence.restored(restored);
                    tracing::warn!(
                        restored,
                        "presence liveness was lost (Redis away or restarted); entries written again"
                    );
                }
                Err(error) => {
                    self.metrics.presence.failed("heartbeat");
                    tracing::warn!(%error, "presence heartbeat failed");
                }
            }
            // Bounded, so a slow store never holds up the next heartbeat;
            // groups not reached are read on a later round (the order of a
            // HashMap's keys varies as groups come and go).
            let watched: Vec<String> = lock(&self.watched).keys().cloned().collect();
            let this: &Self = &self;
            let sweep = futures_util::stream::iter(watched).for_each_concurrent(
                SWEEP_CONCURRENCY,
                |group| async move {
                    // Counted and logged by `read`.
                    let _ = this.read(&group).await;
                },
            );
            if tokio::time::timeout(DEFAULT_HEARTBEAT_INTERVAL / 2, sweep)
                .await
                .is_err()
            {
                tracing::warn!("presence sweep of watched groups cut short: the store is slow");
            }
        }
        if let Err(error) = self.store.close().await {
            self.metrics.presence.failed("close");
            tracing::warn!(%error, "presence entries not removed at shutdown; they expire with the node");
        }
    }
}

#[cfg(test)]
mod tests {
    use channels_memory::{InMemoryChannelLayer, InMemoryPresence};

    use super::*;

    #[tokio::test]
    async fn joins_and_leaves_are_recorded_and_published_to_the_events_group() {
        let memory = Arc::new(InMemoryChannelLayer::new());
        let layer: SharedLayer = memory.clone();
        let watcher = layer.new_receiver("specific").await.unwrap();
        layer
            .group_add(&events_group("room"), watcher.channel())
            .await
            .unwrap();
        let presence = Presence::new(
            Arc::new(InMemoryPresence::new("n")),
            layer,
            Arc::new(Metrics::new()),
        );
        presence.join("room", "specific.x!1", Some("ann")).await;
        assert_eq!(presence.count("room").await.unwrap().users, 1);
        let joined = watcher.recv().await.unwrap();
        assert_eq!(joined.get("event").and_then(|v| v.as_str()), Some("join"));
        presence.leave("room", "specific.x!1", Some("ann")).await;
        let left = watcher.recv().await.unwrap();
        assert_eq!(left.get("event").and_then(|v| v.as_str()), Some("leave"));
        // A leave of what is not there publishes nothing: the next event
        // the watcher gets is the join after it.
        presence.leave("room", "specific.x!1", Some("ann")).await;
        presence.join("room", "specific.x!2", None).await;
        let next = watcher.recv().await.unwrap();
        assert_eq!(next.get("event").and_then(|v| v.as_str()), Some("join"));
        assert_eq!(
            next.get("channel").and_then(|v| v.as_str()),
            Some("specific.x!2")
        );
        assert_eq!(presence.store().members("room").await.unwrap().len(), 1);
        presence.watch("room");
        presence.watch("room");
        presence.unwatch("room");
        assert_eq!(lock(&presence.watched).get("room"), Some(&1));
        presence.unwatch("room");
        assert!(lock(&presence.watched).is_empty());
    }

    #[tokio::test]
    async fn a_store_that_fails_is_counted_and_does_not_fail_the_join() {
        let config = channels_redis::RedisConfig::new().host("redis://127.0.0.1:1");
        let store = channels_redis::RedisPresence::new(&config, "n").unwrap();
        let layer: SharedLayer = Arc::new(InMemoryChannelLayer::new());
        let metrics = Arc::new(Metrics::new());
        let presence = Presence::new(Arc::new(store), layer.clone(), metrics.clone());
        // Returns (nothing to fail): the connection stays in its group.
        presence.join("room", "specific.x!1", Some("ann")).await;
        presence.leave("room", "specific.x!1", Some("ann")).await;
        assert!(presence.count("room").await.is_err(), "a read reports it");
        let mut registry = prometheus_client::registry::Registry::default();
        metrics.register(&mut registry, layer);
        let page = crate::metrics::render(&registry);
        for operation in ["join", "leave", "read"] {
            let line = format!("channels_presence_errors_total{{operation=\"{operation}\"}} 1");
            assert!(page.contains(&line), "`{line}` missing from\n{page}");
        }
    }
}
