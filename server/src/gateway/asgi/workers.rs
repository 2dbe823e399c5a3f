//! [`Workers`]: the table of live ASGI workers of one gateway process, and
//! [`Registry`], the task that keeps it.
//!
//! Every worker process (`python -m channels_rust.worker`) sends a heartbeat
//! `{"type": "asgi.worker.heartbeat", "channel": C, "interval": S}` every `S`
//! seconds with `group_send` to the group [`heartbeat_group`] of the forward
//! channel; every gateway process joins that group with a channel of its
//! own. A worker not heard from for [`MISSED_HEARTBEATS`] intervals (or that
//! says `asgi.worker.leave`) is dead: each connection it served gets
//! [`WORKER_GONE`](super::WORKER_GONE) through its own channel, and closes
//! with 4005.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use channels_core::{Message, SharedLayer, Value, lock};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::metrics::AsgiMetrics;

/// Heartbeat intervals a worker may miss before it counts as dead.
pub(crate) const MISSED_HEARTBEATS: u32 = 5;

/// The shortest and longest heartbeat interval taken from a worker.
const INTERVAL_BOUNDS: (f64, f64) = (0.1, 60.0);

/// How often the registry looks for dead workers.
const SWEEP_PERIOD: Duration = Duration::from_millis(200);

/// How often the registry joins its group again (a flushed Redis, an
/// expired membership).
const REJOIN_PERIOD: Duration = Duration::from_secs(30);

/// The group heartbeats go to for the forward channel `forward`.
pub(crate) fn heartbeat_group(forward: &str) -> String {
    format!("{forward}.workers")
}

/// One live worker.
#[derive(Debug)]
struct Worker {
    deadline: Instant,
    connections: HashSet<Arc<str>>,
}

/// The live workers and the connections each serves.
#[derive(Debug, Default)]
pub(crate) struct Workers {
    table: Mutex<HashMap<Arc<str>, Worker>>,
    /// The registry's own channel, once it has one: workers send it
    /// `asgi.batch` replies for this process's connections.
    registry_channel: Mutex<Option<Arc<str>>>,
}

impl Workers {
    /// Picks the live worker serving the fewest connections and attaches
    /// `connection` to it; `None` when no worker is live.
    pub(crate) fn attach(&self, connection: &Arc<str>) -> Option<Arc<str>> {
        let now = Instant::now();
        let mut table = lock(&self.table);
        let (channel, worker) = table
            .iter_mut()
            .filter(|(_, worker)| worker.deadline > now)
            .min_by(|(a_name, a), (b_name, b)| {
                a.connections
                    .len()
                    .cmp(&b.connections.len())
                    .then_with(|| a_name.cmp(b_name))
            })?;
        worker.connections.insert(connection.clone());
        Some(channel.clone())
    }

    /// Forgets `connection` (it ended).
    pub(crate) fn detach(&self, worker: &str, connection: &str) {
        if let Some(entry) = lock(&self.table).get_mut(worker) {
            entry.connections.remove(connection);
        }
    }

    /// The registry's channel, when it has one yet.
    pub(crate) fn registry_channel(&self) -> Option<Arc<str>> {
        lock(&self.registry_channel).clone()
    }

    /// How many workers are in the table (a dead one stays until the sweep
    /// that closes its connections).
    pub(crate) fn live(&self) -> usize {
        lock(&self.table).len()
    }

    /// A heartbeat from `channel`, promising the next within `interval`.
    fn heartbeat(&self, channel: &str, interval: Duration) {
        let deadline = Instant::now() + interval * MISSED_HEARTBEATS;
        let mut table = lock(&self.table);
        match table.get_mut(channel) {
            Some(worker) => worker.deadline = deadline,
            None => {
                tracing::info!(%channel, "ASGI worker joined");
                table.insert(
                    Arc::from(channel),
                    Worker {
                        deadline,
                        connections: HashSet::new(),
                    },
                );
            }
        }
    }

    /// Removes `channel` (it left); returns its connections.
    fn remove(&self, channel: &str) -> Vec<Arc<str>> {
        lock(&self.table)
            .remove(channel)
            .map(|worker| worker.connections.into_iter().collect())
            .unwrap_or_default()
    }

    /// Removes every worker past its deadline; returns them with their
    /// connections.
    fn sweep(&self) -> Vec<(Arc<str>, Vec<Arc<str>>)> {
        let now = Instant::now();
        let mut table = lock(&self.table);
        let dead: Vec<Arc<str>> = table
            .iter()
            .filter(|(_, worker)| worker.deadline <= now)
            .map(|(channel, _)| channel.clone())
            .collect();
        dead.into_iter()
            .filter_map(|channel| {
                table
                    .remove(&channel)
                    .map(|worker| (channel, worker.connections.into_iter().collect()))
            })
            .collect()
    }
}

/// The task that reads heartbeats into [`Workers`] and closes the
/// connections of dead workers.
#[derive(Debug, Clone)]
pub(crate) struct Registry {
    pub(crate) workers: Arc<Workers>,
    pub(crate) group: String,
    pub(crate) metrics: Arc<AsgiMetrics>,
}

impl Registry {
    /// Runs until `stop` fires.
    pub(crate) async fn run(self, layer: SharedLayer, stop: CancellationToken) {
        let receiver = loop {
            match layer.new_receiver("asgi-registry").await {
                Ok(receiver) => break receiver,
                Err(error) => {
                    tracing::warn!(%error, "ASGI worker registry: no channel yet; retrying");
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        };
        let channel = receiver.channel().to_owned();
        *lock(&self.workers.registry_channel) = Some(Arc::from(channel.as_str()));
        let mut sweep = tokio::time::interval(SWEEP_PERIOD);
        let mut rejoin = tokio::time::interval(REJOIN_PERIOD);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = rejoin.tick() => {
                    if let Err(error) = layer.group_add(&self.group, &channel).await {
                        tracing::warn!(%error, group = %self.group, "ASGI worker registry could not join its group");
                        rejoin.reset_after(Duration::from_secs(1));
                    }
                }
                _ = sweep.tick() => {
                    for (worker, connections) in self.workers.sweep() {
                        tracing::warn!(%worker, connections = connections.len(), "ASGI worker missed its heartbeats; closing its connections with 4005");
                        self.close_all(&layer, connections).await;
                    }
                    self.metrics.set_workers(self.workers.live());
                }
                message = receiver.recv() => match message {
                    Ok(message) => self.on_message(&layer, &message).await,
                    Err(error) => {
                        tracing::warn!(%error, "ASGI worker registry: receive failed");
                        tokio::select! {
                            () = stop.cancelled() => break,
                            () = tokio::time::sleep(Duration::from_millis(500)) => {}
                        }
                    }
                },
            }
        }
        if let Err(error) = layer.group_discard(&self.group, &channel).await {
            tracing::debug!(%error, "ASGI worker registry could not leave its group");
        }
    }

    async fn on_message(&self, layer: &SharedLayer, message: &Message) {
        if message.message_type() == Some(BATCH) {
            deliver_batch(layer, message).await;
            return;
        }
        let Some(worker) = message.get("channel").and_then(Value::as_str) else {
            tracing::warn!(
                ?message,
                "ASGI worker registry: a message without a string `channel`"
            );
            return;
        };
        match message.message_type() {
            Some("asgi.worker.heartbeat") => {
                let interval = message
                    .get("interval")
                    .and_then(Value::as_f64)
                    .filter(|s| s.is_finite())
                    .unwrap_or(1.0)
                    .clamp(INTERVAL_BOUNDS.0, INTERVAL_BOUNDS.1);
                self.workers
                    .heartbeat(worker, Duration::from_secs_f64(interval));
            }
            Some("asgi.worker.leave") => {
                let connections = self.workers.remove(worker);
                tracing::info!(%worker, connections = connections.len(), "ASGI worker left");
                self.close_all(layer, connections).await;
            }
            other => tracing::warn!(?other, "ASGI worker registry: unknown message type"),
        }
        self.metrics.set_workers(self.workers.live());
    }

    /// Tells each connection its worker is gone (it closes with 4005).
    async fn close_all(&self, layer: &SharedLayer, connections: Vec<Arc<str>>) {
        for connection in connections {
            self.metrics.worker_lost();
            if let Err(error) = layer
                .send(&connection, Message::new(super::WORKER_GONE))
                .await
            {
                tracing::warn!(%connection, %error, "could not tell a connection its worker is gone");
            }
        }
    }
}

/// The message type of a worker's replies to several connections of this
/// process at once: `{"type": "asgi.batch", "messages": [[CHANNEL, MESSAGE], ...]}`.
pub(crate) const BATCH: &str = "asgi.batch";

/// Sends each message of a batch to its connection's channel: the messages
/// of one connection in order, different connections at once.
async fn deliver_batch(layer: &SharedLayer, batch: &Message) {
    let Some(Value::Array(items)) = batch.get("messages") else {
        tracing::warn!("asgi.batch without a `messages` array; dropped");
        return;
    };
    let mut by_channel: Vec<(&str, Vec<Message>)> = Vec::new();
    for item in items {
        let parsed = match item {
            Value::Array(pair) if pair.len() == 2 => pair[0].as_str().and_then(|channel| {
                Message::from_value(pair[1].clone())
                    .ok()
                    .map(|m| (channel, m))
            }),
            _ => None,
        };
        let Some((channel, message)) = parsed else {
            tracing::warn!("asgi.batch item is not [channel, message]; dropped");
            continue;
        };
        match by_channel.iter_mut().find(|(c, _)| *c == channel) {
            Some((_, messages)) => messages.push(message),
            None => by_channel.push((channel, vec![message])),
        }
    }
    let sends = by_channel
        .into_iter()
        .map(|(channel, messages)| async move {
            for message in messages {
                if let Err(error) = layer.send(channel, message).await {
                    tracing::warn!(%channel, %error, "a batched reply was not delivered");
                }
            }
        });
    futures_util::future::join_all(sends).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_least_busy_live_worker_is_picked_and_the_silent_one_swept() {
        let workers = Workers::default();
        assert_eq!(workers.attach(&Arc::from("c1")), None);
        workers.heartbeat("w1", Duration::from_secs(1));
        workers.heartbeat("w2", Duration::from_secs(2));
        let first = workers.attach(&Arc::from("c1")).unwrap();
        let second = workers.attach(&Arc::from("c2")).unwrap();
        assert_ne!(first, second);
        tokio::time::advance(Duration::from_secs(6)).await;
        // w1 missed five 1 s heartbeats; w2 has until 10 s.
        let dead = workers.sweep();
        assert_eq!(dead.len(), 1);
        assert_eq!(&*dead[0].0, "w1");
        assert_eq!(workers.live(), 1);
        assert_eq!(&*workers.attach(&Arc::from("c3")).unwrap(), "w2");
    }
}
