//! [`MemoryHistory`]: group histories kept in this process (the memory
//! layer's [`HistoryStore`]). Each tracked group's history channel is a
//! member of the group; [`HistoryStore::sync`] drains it into the group's
//! log. One process, so one log per group and no race between appenders.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use channels_core::async_trait;
use channels_core::{
    ChannelLayer, HistoryLimits, HistorySnapshot, HistoryStore, LayerError, Message, Receiver,
    history_channel, lock, validate_group_name,
};
use tokio::time::Instant;

use crate::layer::{InMemoryChannelLayer, Shared};

/// The memory layer's histories. Get it with
/// [`ChannelLayer::history`](channels_core::ChannelLayer::history).
#[derive(Debug)]
pub(crate) struct MemoryHistory {
    layer: Weak<Shared>,
    logs: Mutex<HashMap<String, Log>>,
}

#[derive(Debug)]
struct Log {
    /// The group's history channel: what `group_send` queued for the log.
    inbox: Receiver,
    epoch: Arc<str>,
    top: u64,
    /// `(offset, kept at, message)`, oldest first.
    entries: VecDeque<(u64, Instant, Message)>,
}

impl MemoryHistory {
    pub(crate) fn new(layer: Weak<Shared>) -> Self {
        Self {
            layer,
            logs: Mutex::new(HashMap::new()),
        }
    }

    fn layer(&self) -> Result<InMemoryChannelLayer, LayerError> {
        self.layer
            .upgrade()
            .map(InMemoryChannelLayer::from_shared)
            .ok_or(LayerError::Closed)
    }
}

#[async_trait]
impl HistoryStore for MemoryHistory {
    async fn track(&self, group: &str) -> Result<(), LayerError> {
        validate_group_name(group)?;
        let layer = self.layer()?;
        let channel = history_channel(group);
        if !lock(&self.logs).contains_key(group) {
            let inbox = layer.open(&channel).await?;
            lock(&self.logs)
                .entry(group.to_owned())
                .or_insert_with(|| Log {
                    inbox,
                    epoch: new_epoch(),
                    top: 0,
                    entries: VecDeque::new(),
                });
        }
        layer.group_add(group, &channel).await
    }

    async fn sync(
        &self,
        group: &str,
        after: u64,
        limits: HistoryLimits,
    ) -> Result<HistorySnapshot, LayerError> {
        validate_group_name(group)?;
        if !lock(&self.logs).contains_key(group) {
            self.track(group).await?;
        }
        let mut logs = lock(&self.logs);
        let Some(log) = logs.get_mut(group) else {
            return Err(LayerError::Closed);
        };
        let now = Instant::now();
        while let Some(message) = log.inbox.try_recv()? {
            log.top += 1;
            log.entries.push_back((log.top, now, message));
        }
        while log.entries.len() > limits.size.max(1)
            || log
                .entries
                .front()
                .is_some_and(|(_, kept, _)| now.duration_since(*kept) > limits.ttl)
        {
            log.entries.pop_front();
        }
        let first = log
            .entries
            .front()
            .map_or(log.top + 1, |(offset, _, _)| *offset);
        Ok(HistorySnapshot {
            epoch: log.epoch.clone(),
            top: log.top,
            first,
            entries: log
                .entries
                .iter()
                .filter(|(offset, _, _)| *offset > after)
                .map(|(offset, _, message)| (*offset, message.clone()))
                .collect(),
        })
    }
}

/// A new epoch: unique within the process (and very likely beyond).
fn new_epoch() -> Arc<str> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    Arc::from(format!("{:x}", (nanos as u64) ^ count.rotate_left(48)).as_str())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const LIMITS: HistoryLimits = HistoryLimits {
        size: 3,
        ttl: Duration::from_secs(60),
    };

    #[tokio::test]
    async fn group_sends_are_numbered_in_order_and_trimmed_to_the_size() {
        let layer = InMemoryChannelLayer::new();
        let history = layer.history().unwrap();
        history.track("news").await.unwrap();
        let empty = history.sync("news", 0, LIMITS).await.unwrap();
        assert_eq!((empty.top, empty.first), (0, 1));
        assert!(empty.covers(0));
        for n in 1..=5 {
            layer
                .group_send("news", Message::new("n").with("n", n))
                .await
                .unwrap();
        }
        let snapshot = history.sync("news", 0, LIMITS).await.unwrap();
        assert_eq!(snapshot.epoch, empty.epoch);
        assert_eq!((snapshot.top, snapshot.first), (5, 3));
        let kept: Vec<(u64, i64)> = snapshot
            .entries
            .iter()
            .map(|(offset, m)| (*offset, m.get("n").and_then(|v| v.as_i64()).unwrap()))
            .collect();
        assert_eq!(kept, [(3, 3), (4, 4), (5, 5)]);
        assert!(!snapshot.covers(1));
        assert!(snapshot.covers(2));
        let after = history.sync("news", 4, LIMITS).await.unwrap();
        assert_eq!(after.entries.len(), 1);
        assert_eq!(after.entries[0].0, 5);
    }

    #[tokio::test(start_paused = true)]
    async fn messages_older_than_the_ttl_leave_the_log() {
        let layer = InMemoryChannelLayer::new();
        let history = layer.history().unwrap();
        history.track("news").await.unwrap();
        layer.group_send("news", Message::new("old")).await.unwrap();
        history.sync("news", 0, LIMITS).await.unwrap();
        tokio::time::advance(Duration::from_secs(61)).await;
        layer.group_send("news", Message::new("new")).await.unwrap();
        let snapshot = history.sync("news", 0, LIMITS).await.unwrap();
        assert_eq!((snapshot.top, snapshot.first), (2, 2));
        assert!(!snapshot.covers(0));
    }

    #[tokio::test]
    async fn every_handle_is_the_same_store() {
        let layer = InMemoryChannelLayer::new();
        layer.history().unwrap().track("g").await.unwrap();
        layer.group_send("g", Message::new("x")).await.unwrap();
        let snapshot = layer.history().unwrap().sync("g", 0, LIMITS).await.unwrap();
        assert_eq!(snapshot.top, 1);
    }
}
