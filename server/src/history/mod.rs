//! Group histories for gateway connections (docs/protocol.md, "History and
//! recovery"): which groups keep one ([`HistoryConfig`]), and
//! [`Histories`], the per-process registry of [`relay`]s that hand each
//! kept message, with its offset, to this process's subscribers.
//!
//! A connection subscribed to a group with history does not join the group
//! itself: one relay per group and process does, numbers what arrives
//! through the layer's [`HistoryStore`] and pushes it into each subscriber's
//! mailbox in log order. So live messages and recovered ones follow one
//! order, the same in every process, and a recovering client gets exactly
//! what it missed before anything newer.

mod config;
mod relay;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use channels_core::{HistoryLimits, HistoryStore, LocalSender, Message, SharedLayer, lock};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

pub use config::{DEFAULT_HISTORY_TTL, HistoryConfig, HistoryRule};
pub(crate) use relay::Joined;

use crate::metrics::HistoryMetrics;
use relay::{Command, Relay};

/// Commands a relay may have waiting.
const COMMAND_CAPACITY: usize = 1_024;

/// A position in a group's history a client asks to recover from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Position {
    pub(crate) offset: u64,
    pub(crate) epoch: String,
}

/// Why a subscribe to a group with history failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HistoryError {
    /// The layer failed (Redis away); retry.
    #[error("the channel layer failed: {0}")]
    Layer(#[from] channels_core::LayerError),
    /// The server is shutting down.
    #[error("the server is shutting down")]
    Stopped,
}

/// This process's history relays, one per group with subscribers here.
#[derive(Debug)]
pub(crate) struct Histories {
    layer: SharedLayer,
    store: Arc<dyn HistoryStore>,
    config: HistoryConfig,
    relays: Mutex<HashMap<String, mpsc::Sender<Command>>>,
    metrics: Arc<HistoryMetrics>,
    stop: CancellationToken,
}

impl Histories {
    /// The registry for `layer`, or `None` when no group keeps history.
    ///
    /// # Errors
    /// A message for the operator when history is configured but the layer
    /// keeps none (the pub/sub layer).
    pub(crate) fn new(
        layer: SharedLayer,
        config: HistoryConfig,
        metrics: Arc<HistoryMetrics>,
        stop: CancellationToken,
    ) -> Result<Option<Arc<Self>>, String> {
        if !config.is_enabled() {
            return Ok(None);
        }
        let Some(store) = layer.history() else {
            return Err(format!(
                "the `{}` layer keeps no history; --history-size / [history] need the memory or \
                 the Redis core layer",
                layer.name()
            ));
        };
        Ok(Some(Arc::new(Self {
            layer,
            store,
            config,
            relays: Mutex::new(HashMap::new()),
            metrics,
            stop,
        })))
    }

    /// The limits of `group`'s history, or `None` when it keeps none.
    pub(crate) fn limits(&self, group: &str) -> Option<HistoryLimits> {
        self.config.limits_for(group)
    }

    /// Subscribes the connection whose mailbox `sender` fills to `group`
    /// (which must keep history), recovering from `recover` when given.
    /// Subscribing again replaces the earlier subscription.
    pub(crate) async fn subscribe(
        self: &Arc<Self>,
        group: &str,
        limits: HistoryLimits,
        sender: LocalSender,
        recover: Option<Position>,
    ) -> Result<Joined, HistoryError> {
        // A relay that just ended its linger refuses the command (or drops
        // it unanswered); the next attempt starts a new one.
        for _ in 0..3 {
            let (reply, answer) = oneshot::channel();
            let command = Command::Subscribe {
                sender: sender.clone(),
                recover: recover.clone(),
                reply,
            };
            let relay = self.relay(group, limits);
            if relay.send(command).await.is_ok()
                && let Ok(joined) = answer.await
            {
                return joined;
            }
            self.forget(group, &relay);
            if self.stop.is_cancelled() {
                break;
            }
        }
        Err(HistoryError::Stopped)
    }

    /// Ends the subscription of `channel` to `group` (nothing if none).
    pub(crate) fn unsubscribe(&self, group: &str, channel: Arc<str>) {
        let relay = lock(&self.relays).get(group).cloned();
        if let Some(relay) = relay
            && relay.try_send(Command::Unsubscribe { channel }).is_err()
        {
            // A full command queue: the relay drops subscribers whose
            // connection is gone on its next delivery anyway.
            tracing::debug!(%group, "history unsubscribe not queued; pruned on next delivery");
        }
    }

    /// The kept messages of `group` (for the HTTP API): the log as it is
    /// now, after moving in what arrived.
    pub(crate) async fn read(
        &self,
        group: &str,
    ) -> Result<Option<channels_core::HistorySnapshot>, channels_core::LayerError> {
        let Some(limits) = self.limits(group) else {
            return Ok(None);
        };
        self.store.sync(group, 0, limits).await.map(Some)
    }

    /// The running relay of `group`, started if there is none.
    fn relay(self: &Arc<Self>, group: &str, limits: HistoryLimits) -> mpsc::Sender<Command> {
        let mut relays = lock(&self.relays);
        if let Some(relay) = relays.get(group)
            && !relay.is_closed()
        {
            return relay.clone();
        }
        let (commands, inbox) = mpsc::channel(COMMAND_CAPACITY);
        relays.insert(group.to_owned(), commands.clone());
        self.metrics.set_groups(relays.len());
        let relay = Relay::new(
            self.clone(),
            group.to_owned(),
            limits,
            commands.downgrade(),
            inbox,
        );
        tokio::spawn(relay.run());
        commands
    }

    /// Removes `relay` from the registry if it is still the one for `group`.
    fn forget(&self, group: &str, relay: &mpsc::Sender<Command>) {
        let mut relays = lock(&self.relays);
        if relays.get(group).is_some_and(|r| r.same_channel(relay)) {
            relays.remove(group);
        }
        self.metrics.set_groups(relays.len());
    }

    /// Called by a relay about to end: removes it from the registry unless
    /// a command reached it meanwhile (then it keeps running). Returns
    /// whether it may end.
    fn may_end(
        &self,
        group: &str,
        me: &mpsc::WeakSender<Command>,
        inbox: &mpsc::Receiver<Command>,
    ) -> bool {
        let mut relays = lock(&self.relays);
        if !inbox.is_empty() {
            return false;
        }
        if let Some(me) = me.upgrade()
            && relays
                .get(group)
                .is_some_and(|relay| relay.same_channel(&me))
        {
            relays.remove(group);
        }
        self.metrics.set_groups(relays.len());
        true
    }
}

/// `message` as a kept message of `group`: with the reserved keys the
/// gateway turns into the `message` frame's envelope.
pub(crate) fn mark(message: &Message, group: &str, offset: u64, epoch: &str) -> Message {
    let mut marked = message.clone();
    marked.insert(crate::control::GROUP_KEY, group);
    marked.insert(crate::control::OFFSET_KEY, offset);
    marked.insert(crate::control::EPOCH_KEY, epoch);
    marked
}
