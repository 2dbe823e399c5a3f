//! [`DirtyTopics`]: topics of one shard whose subscription may no longer be
//! wanted, and the wake-up of that shard's worker.
//!
//! A receiver handle is released in `Drop`, which can neither await nor
//! spawn; it only updates the registry and marks the topics it may have left
//! unwanted here. The worker, woken by the mark, UNSUBSCRIBEs those the
//! registry no longer wants (see `worker.rs`). Marks are kept only while the
//! worker has a connection: a new connection subscribes exactly the topics
//! the registry wants at that moment, so older marks mean nothing to it. The
//! set is drained on every wake-up, and holds only topics touched since the
//! worker's last pass (each at most once).

use std::collections::HashSet;
use std::mem;
use std::sync::{Arc, Mutex};

use channels_core::lock;
use tokio::sync::Notify;

/// Topics to look at again, and the worker's wake-up.
#[derive(Debug, Default)]
pub(super) struct DirtyTopics {
    state: Mutex<State>,
    wake: Notify,
}

#[derive(Debug, Default)]
struct State {
    /// Whether the worker holds a connection whose subscriptions the marks
    /// are about.
    collecting: bool,
    topics: HashSet<Arc<str>>,
}

impl DirtyTopics {
    /// Marks `topic` (call it after the registry change that may have left
    /// it unwanted) and wakes the worker.
    pub(super) fn mark(&self, topic: &Arc<str>) {
        let inserted = {
            let mut state = lock(&self.state);
            state.collecting && state.topics.insert(Arc::clone(topic))
        };
        if inserted {
            self.wake.notify_one();
        }
    }

    /// A connection is being set up: from now on marks count. Call it before
    /// reading the registry's wanted topics for that connection, so that no
    /// change made after the read goes unnoticed.
    pub(super) fn start(&self) {
        let mut state = lock(&self.state);
        state.collecting = true;
        state.topics.clear();
    }

    /// The connection is gone (and its subscriptions with it): drop marks.
    pub(super) fn stop(&self) {
        let mut state = lock(&self.state);
        state.collecting = false;
        state.topics = HashSet::new();
    }

    /// Takes every mark.
    pub(super) fn take(&self) -> HashSet<Arc<str>> {
        mem::take(&mut lock(&self.state).topics)
    }

    /// Resolves after a mark (at once if one came since the last wait).
    pub(super) async fn marked(&self) {
        self.wake.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn marks_count_only_while_collecting_and_wake_the_worker() {
        let dirty = DirtyTopics::default();
        let topic: Arc<str> = Arc::from("t");
        dirty.mark(&topic);
        assert!(dirty.take().is_empty(), "no connection, nothing to undo");
        dirty.start();
        dirty.mark(&topic);
        dirty.mark(&topic);
        tokio::time::timeout(Duration::from_secs(1), dirty.marked())
            .await
            .expect("a mark wakes the worker");
        assert_eq!(dirty.take().len(), 1);
        dirty.mark(&topic);
        dirty.stop();
        assert!(dirty.take().is_empty());
    }
}
