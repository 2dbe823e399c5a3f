//! [`Memberships`]: the group memberships this layer instance added for its
//! own process-local channels, so they can be written again after Redis comes
//! back (a Redis restarted without persistence has lost them).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::connection::lock;

/// (group, channel) pairs added through this instance and not discarded, with
/// when they were last added. A pair older than the group expiry has expired
/// in Redis too, so it is forgotten rather than restored.
#[derive(Debug)]
pub(crate) struct Memberships {
    pairs: Mutex<HashMap<(String, String), Instant>>,
    group_expiry: Duration,
}

impl Memberships {
    /// An empty record; pairs older than `group_expiry` are dropped.
    pub(crate) fn new(group_expiry: Duration) -> Self {
        Self {
            pairs: Mutex::new(HashMap::new()),
            group_expiry,
        }
    }

    /// Records (or renews) a membership.
    pub(crate) fn add(&self, group: &str, channel: &str) {
        let mut pairs = lock(&self.pairs);
        let now = Instant::now();
        pairs.retain(|_, added| now.duration_since(*added) <= self.group_expiry);
        pairs.insert((group.to_owned(), channel.to_owned()), now);
    }

    /// Forgets a membership.
    pub(crate) fn discard(&self, group: &str, channel: &str) {
        lock(&self.pairs).remove(&(group.to_owned(), channel.to_owned()));
    }

    /// Forgets everything (`flush`).
    pub(crate) fn clear(&self) {
        lock(&self.pairs).clear();
    }

    /// The live (unexpired) pairs.
    pub(crate) fn snapshot(&self) -> Vec<(String, String)> {
        let mut pairs = lock(&self.pairs);
        let now = Instant::now();
        pairs.retain(|_, added| now.duration_since(*added) <= self.group_expiry);
        pairs.keys().cloned().collect()
    }

    /// How many pairs are recorded.
    pub(crate) fn len(&self) -> usize {
        lock(&self.pairs).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_discard_snapshot() {
        let memberships = Memberships::new(Duration::from_secs(60));
        memberships.add("g", "a!1");
        memberships.add("g", "a!1");
        memberships.add("h", "a!1");
        memberships.discard("h", "a!1");
        assert_eq!(
            memberships.snapshot(),
            vec![("g".to_owned(), "a!1".to_owned())]
        );
        memberships.clear();
        assert_eq!(memberships.len(), 0);
    }

    #[test]
    fn expired_memberships_are_not_restored() {
        let memberships = Memberships::new(Duration::from_millis(20));
        memberships.add("g", "a!1");
        std::thread::sleep(Duration::from_millis(40));
        assert!(memberships.snapshot().is_empty());
        assert_eq!(memberships.len(), 0);
    }
}
