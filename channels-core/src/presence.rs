//! Presence: who is in a group, across every process — each connection's
//! channel and user, and the distinct users — behind one trait,
//! [`PresenceStore`], that the memory and Redis backends implement
//! (`channels_memory::InMemoryPresence`, `channels_redis::RedisPresence`).
//!
//! Django Channels has no such query (`group_members` / `group_size` have
//! been asked for since 2016); the Redis layers cannot answer it from their
//! own data either (the core layer's group set holds one key per process, the
//! pub/sub layer keeps members in memory). So presence is a record of its
//! own: a member joins it beside its `group_add`, leaves it beside its
//! `group_discard`, and every entry names the process (node) that wrote it,
//! so the entries of a process that died can be told apart and dropped.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::LayerError;

/// How long a process counts as alive after its last heartbeat: the entries
/// of a process killed without a clean shutdown vanish within this time.
pub const DEFAULT_NODE_TTL: Duration = Duration::from_secs(15);

/// How often a process renews its liveness: a third of [`DEFAULT_NODE_TTL`],
/// so two missed heartbeats (a slow Redis, a paused process) still leave it
/// alive.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);

/// One connection in a group.
#[derive(Debug, Clone, PartialEq)]
pub struct PresenceEntry {
    /// The connection's channel (its `channel_name`).
    pub channel: String,
    /// Its user (a token's `sub`); `None` for an anonymous connection.
    pub user: Option<String>,
    /// The id of the process that holds the connection.
    pub node: String,
    /// When it joined, in seconds since the Unix epoch.
    pub joined_at: f64,
}

/// How many connections and distinct users a group has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PresenceCount {
    /// Connections in the group.
    pub connections: usize,
    /// Distinct users among them (anonymous connections are not counted).
    pub users: usize,
}

/// What one read of a group found: its live entries, and the entries of
/// dead processes this read removed (each is removed, and reported, by one
/// read only).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PresenceSnapshot {
    /// The group's connections, on processes that are alive.
    pub members: Vec<PresenceEntry>,
    /// Entries of processes that stopped renewing their liveness, removed now.
    pub reaped: Vec<PresenceEntry>,
}

impl PresenceSnapshot {
    /// The distinct users of the members, sorted.
    pub fn users(&self) -> Vec<String> {
        distinct_users(&self.members)
    }

    /// Connections and distinct users.
    pub fn count(&self) -> PresenceCount {
        PresenceCount {
            connections: self.members.len(),
            users: distinct_users(&self.members).len(),
        }
    }
}

/// The distinct users of `entries`, sorted; anonymous entries left out.
pub fn distinct_users(entries: &[PresenceEntry]) -> Vec<String> {
    entries
        .iter()
        .filter_map(|entry| entry.user.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// A presence store shared by the tasks of a process.
pub type SharedPresence = Arc<dyn PresenceStore>;

/// Where presence entries live. One store per process: it writes entries
/// under its own [`node`](Self::node) id and keeps that node alive with
/// [`heartbeat`](Self::heartbeat).
///
/// # Examples
/// ```
/// use channels_core::presence::PresenceStore;
///
/// # async fn demo(presence: &dyn PresenceStore) -> Result<(), channels_core::LayerError> {
/// presence.join("chat", "specific.a!1", Some("ann")).await?;
/// presence.join("chat", "specific.a!2", Some("ann")).await?;
/// let count = presence.count("chat").await?; // Django users call it group_size
/// assert_eq!((count.connections, count.users), (2, 1));
/// for entry in presence.members("chat").await? { // ... and group_members
///     println!("{} {:?} on {}", entry.channel, entry.user, entry.node);
/// }
/// presence.leave("chat", "specific.a!2").await?;
/// # Ok(()) }
/// ```
#[async_trait]
pub trait PresenceStore: Send + Sync + std::fmt::Debug {
    /// This process's node id, written into every entry it makes.
    fn node(&self) -> &str;

    /// Records `channel` (of `user`) in `group`; joining again replaces the
    /// entry.
    ///
    /// # Errors
    /// [`LayerError::Backend`] when the store cannot be written.
    async fn join(&self, group: &str, channel: &str, user: Option<&str>) -> Result<(), LayerError>;

    /// Removes `channel` from `group`; returns whether it was there.
    ///
    /// # Errors
    /// [`LayerError::Backend`] when the store cannot be written.
    async fn leave(&self, group: &str, channel: &str) -> Result<bool, LayerError>;

    /// Reads `group`: its live entries, removing (and returning) those of
    /// processes that are gone.
    ///
    /// # Errors
    /// [`LayerError::Backend`] when the store cannot be read.
    async fn read(&self, group: &str) -> Result<PresenceSnapshot, LayerError>;

    /// The connections in `group` (what Django users ask for as
    /// `group_members`).
    ///
    /// # Errors
    /// As [`Self::read`].
    #[doc(alias = "group_members")]
    async fn members(&self, group: &str) -> Result<Vec<PresenceEntry>, LayerError> {
        Ok(self.read(group).await?.members)
    }

    /// How many connections and distinct users `group` has (what Django users
    /// ask for as `group_size`).
    ///
    /// # Errors
    /// As [`Self::read`].
    #[doc(alias = "group_size")]
    async fn count(&self, group: &str) -> Result<PresenceCount, LayerError> {
        Ok(self.read(group).await?.count())
    }

    /// Tells the store this process is alive; call it every
    /// [`DEFAULT_HEARTBEAT_INTERVAL`] (a no-op in one process). When the
    /// store had lost this process's liveness since the last heartbeat (it
    /// came too late, or the store restarted empty), its entries may have
    /// been removed: it writes them again and returns how many.
    ///
    /// # Errors
    /// [`LayerError::Backend`] when the store cannot be written.
    async fn heartbeat(&self) -> Result<usize, LayerError>;

    /// Removes every entry of this process and its liveness, at once (a
    /// clean shutdown).
    ///
    /// # Errors
    /// [`LayerError::Backend`] when the store cannot be written.
    async fn close(&self) -> Result<(), LayerError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(channel: &str, user: Option<&str>) -> PresenceEntry {
        PresenceEntry {
            channel: channel.to_owned(),
            user: user.map(str::to_owned),
            node: "n".to_owned(),
            joined_at: 0.0,
        }
    }

    #[test]
    fn users_are_distinct_sorted_and_named() {
        let snapshot = PresenceSnapshot {
            members: vec![
                entry("a", Some("bob")),
                entry("b", None),
                entry("c", Some("ann")),
                entry("d", Some("bob")),
            ],
            reaped: vec![entry("e", Some("zed"))],
        };
        assert_eq!(snapshot.users(), ["ann", "bob"]);
        assert_eq!(
            snapshot.count(),
            PresenceCount {
                connections: 4,
                users: 2
            }
        );
    }
}
