//! The registry of connections: one bounded outbound queue per connection, fanned out by
//! iterating the registry. This is the "no layer at all" design the ceiling measures.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::mpsc::{self, error::TrySendError};

/// Locks are per shard so joins, leaves and concurrent broadcasts rarely wait on each other.
const SHARDS: usize = 16;

type Entry = (u64, mpsc::Sender<Utf8Bytes>);

/// All connections of this process, each reachable through its bounded outbound queue.
#[derive(Debug)]
pub struct Hub {
    shards: Box<[Mutex<Vec<Entry>>]>,
    next_id: AtomicU64,
    kicked: AtomicU64,
    connections: AtomicU64,
}

impl Default for Hub {
    fn default() -> Self {
        Self::new()
    }
}

impl Hub {
    /// An empty hub.
    pub fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Vec::new())).collect(),
            next_id: AtomicU64::new(0),
            kicked: AtomicU64::new(0),
            connections: AtomicU64::new(0),
        }
    }

    fn shard(&self, id: u64) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        self.shards[(id % SHARDS as u64) as usize]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a connection's outbound queue and returns its id.
    ///
    /// The hub keeps the only sender: when it drops it (queue full), the connection's receiver
    /// ends after the queued frames, and the connection closes with 1013.
    pub fn join(&self, outbound: mpsc::Sender<Utf8Bytes>) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.shard(id).push((id, outbound));
        self.connections.fetch_add(1, Ordering::Relaxed);
        id
    }

    /// Removes a connection; a no-op when the hub already dropped it.
    pub fn leave(&self, id: u64) {
        let mut shard = self.shard(id);
        if let Some(pos) = shard.iter().position(|(entry, _)| *entry == id) {
            shard.swap_remove(pos);
        }
        drop(shard);
        self.connections.fetch_sub(1, Ordering::Relaxed);
    }

    /// Queues `frame` (one shared buffer, never re-encoded) on every connection; returns how
    /// many queues took it. A connection whose queue is full is dropped from the hub.
    pub fn broadcast(&self, frame: &Utf8Bytes) -> usize {
        let mut delivered = 0;
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            shard.retain(|(_, outbound)| match outbound.try_send(frame.clone()) {
                Ok(()) => {
                    delivered += 1;
                    true
                }
                Err(TrySendError::Full(_)) => {
                    self.kicked.fetch_add(1, Ordering::Relaxed);
                    false
                }
                Err(TrySendError::Closed(_)) => false,
            });
        }
        delivered
    }

    /// Open connections.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// Connections dropped because their outbound queue was full.
    pub fn kicked(&self) -> u64 {
        self.kicked.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn broadcast_reaches_every_queue_and_drops_full_ones() {
        let hub = Hub::new();
        let mut receivers = Vec::new();
        for _ in 0..40 {
            let (tx, rx) = mpsc::channel(2);
            hub.join(tx);
            receivers.push(rx);
        }
        let (slow_tx, mut slow_rx) = mpsc::channel(1);
        let slow = hub.join(slow_tx);
        assert_eq!(hub.broadcast(&Utf8Bytes::from("a")), 41);
        assert_eq!(hub.broadcast(&Utf8Bytes::from("b")), 40);
        assert_eq!(hub.kicked(), 1);
        for rx in &mut receivers {
            assert_eq!(rx.recv().await.as_deref(), Some("a"));
            assert_eq!(rx.recv().await.as_deref(), Some("b"));
        }
        assert_eq!(slow_rx.recv().await.as_deref(), Some("a"));
        assert_eq!(
            slow_rx.recv().await,
            None,
            "the hub dropped the only sender"
        );
        hub.leave(slow);
        assert_eq!(hub.connections(), 40);
    }
}
