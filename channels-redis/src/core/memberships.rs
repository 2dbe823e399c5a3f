//! [`Memberships`]: the group memberships this layer instance added for its
//! own process-local channels, so they can be written again after Redis comes
//! back (a Redis restarted without persistence has lost them), and the gate
//! that holds this instance's group sends until they are.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use channels_core::lock;
use tokio::sync::watch;

/// (group, channel) pairs added through this instance and not discarded, with
/// when they were last added. A pair older than the group expiry has expired
/// in Redis too, so it is forgotten rather than restored.
#[derive(Debug)]
pub(crate) struct Memberships {
    pairs: Mutex<Pairs>,
    group_expiry: Duration,
    /// `true` while memberships are known to be in Redis; `false` from a lost
    /// connection until they are written again.
    restored: watch::Sender<bool>,
}

#[derive(Debug, Default)]
struct Pairs {
    added: HashMap<(Box<str>, Box<str>), Instant>,
    /// Size after the last pruning: pruning again once it doubles keeps
    /// `add` O(1) amortized (it used to scan every pair on each add).
    pruned_at: usize,
}

impl Memberships {
    /// An empty record; pairs older than `group_expiry` are dropped.
    pub(crate) fn new(group_expiry: Duration) -> Self {
        Self {
            pairs: Mutex::new(Pairs::default()),
            group_expiry,
            restored: watch::Sender::new(true),
        }
    }

    /// Records (or renews) a membership.
    pub(crate) fn add(&self, group: &str, channel: &str) {
        let now = Instant::now();
        let mut pairs = lock(&self.pairs);
        pairs.added.insert((group.into(), channel.into()), now);
        if pairs.added.len() > 2 * pairs.pruned_at.max(1_024) {
            let expiry = self.group_expiry;
            pairs
                .added
                .retain(|_, added| now.duration_since(*added) <= expiry);
            pairs.pruned_at = pairs.added.len();
        }
    }

    /// Forgets a membership.
    pub(crate) fn discard(&self, group: &str, channel: &str) {
        lock(&self.pairs)
            .added
            .remove(&(Box::<str>::from(group), Box::<str>::from(channel)));
    }

    /// Forgets everything (`flush`).
    pub(crate) fn clear(&self) {
        let mut pairs = lock(&self.pairs);
        pairs.added.clear();
        pairs.pruned_at = 0;
    }

    /// The live (unexpired) pairs whose channel matches `owned`.
    pub(crate) fn snapshot(&self, owned: impl Fn(&str) -> bool) -> Vec<(String, String)> {
        let now = Instant::now();
        let expiry = self.group_expiry;
        let mut pairs = lock(&self.pairs);
        pairs
            .added
            .retain(|_, added| now.duration_since(*added) <= expiry);
        pairs.pruned_at = pairs.added.len();
        pairs
            .added
            .keys()
            .filter(|(_, channel)| owned(channel))
            .map(|(group, channel)| (group.to_string(), channel.to_string()))
            .collect()
    }

    /// How many pairs are recorded.
    pub(crate) fn len(&self) -> usize {
        lock(&self.pairs).added.len()
    }

    /// Marks the memberships as lost (Redis went away) or written again.
    pub(crate) fn set_restored(&self, restored: bool) {
        self.restored.send_if_modified(|current| {
            let changed = *current != restored;
            *current = restored;
            changed
        });
    }

    /// Whether the memberships are in Redis now.
    pub(crate) fn is_restored(&self) -> bool {
        *self.restored.borrow()
    }

    /// Waits (at most `wait`) until the memberships are in Redis. Returns
    /// whether they are.
    pub(crate) async fn wait_restored(&self, wait: Duration) -> bool {
        let mut restored = self.restored.subscribe();
        tokio::time::timeout(wait, restored.wait_for(|restored| *restored))
            .await
            .is_ok_and(|result| result.is_ok())
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
        memberships.add("h", "b!1");
        memberships.discard("h", "a!1");
        let mut snapshot = memberships.snapshot(|channel| channel.starts_with("a!"));
        snapshot.sort();
        assert_eq!(snapshot, vec![("g".to_owned(), "a!1".to_owned())]);
        memberships.clear();
        assert_eq!(memberships.len(), 0);
    }

    #[test]
    fn expired_memberships_are_not_restored() {
        let memberships = Memberships::new(Duration::from_millis(20));
        memberships.add("g", "a!1");
        std::thread::sleep(Duration::from_millis(40));
        assert!(memberships.snapshot(|_| true).is_empty());
        assert_eq!(memberships.len(), 0);
    }

    #[test]
    fn adding_many_keeps_them_all() {
        // 100,000 adds: a scan of every pair per add (the old way) would run
        // for minutes and hit the test timeout; amortized pruning is linear.
        let memberships = Memberships::new(Duration::from_secs(60));
        for i in 0..100_000 {
            memberships.add("g", &format!("a!{i}"));
        }
        assert_eq!(memberships.len(), 100_000);
    }

    #[tokio::test]
    async fn the_gate_opens_when_restored() {
        let memberships = Memberships::new(Duration::from_secs(60));
        assert!(memberships.wait_restored(Duration::from_millis(10)).await);
        memberships.set_restored(false);
        assert!(!memberships.wait_restored(Duration::from_millis(10)).await);
        memberships.set_restored(true);
        assert!(memberships.wait_restored(Duration::from_millis(10)).await);
    }
}
