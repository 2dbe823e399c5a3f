//! [`InMemoryPresence`]: presence for one process, beside the memory layer.
//! No process can die without taking the whole store with it, so there is
//! nothing to reap and the heartbeat does nothing.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use channels_core::presence::{PresenceEntry, PresenceSnapshot, PresenceStore};
use channels_core::{LayerError, lock, validate_channel_name, validate_group_name};

/// Presence entries in this process's memory: group → channel → entry.
///
/// # Examples
/// ```
/// use channels_core::presence::PresenceStore;
/// use channels_memory::InMemoryPresence;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), channels_core::LayerError> {
/// let presence = InMemoryPresence::new("node-1");
/// presence.join("chat", "specific.a!1", Some("ann")).await?;
/// assert_eq!(presence.count("chat").await?.users, 1);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct InMemoryPresence {
    node: String,
    groups: Mutex<HashMap<String, HashMap<String, PresenceEntry>>>,
}

impl InMemoryPresence {
    /// An empty store whose entries name `node`.
    pub fn new(node: impl Into<String>) -> Self {
        Self {
            node: node.into(),
            groups: Mutex::new(HashMap::new()),
        }
    }
}

#[async_trait]
impl PresenceStore for InMemoryPresence {
    fn node(&self) -> &str {
        &self.node
    }

    async fn join(&self, group: &str, channel: &str, user: Option<&str>) -> Result<(), LayerError> {
        validate_group_name(group)?;
        validate_channel_name(channel)?;
        let entry = PresenceEntry {
            channel: channel.to_owned(),
            user: user.map(str::to_owned),
            node: self.node.clone(),
            joined_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        };
        lock(&self.groups)
            .entry(group.to_owned())
            .or_default()
            .insert(channel.to_owned(), entry);
        Ok(())
    }

    async fn leave(&self, group: &str, channel: &str) -> Result<bool, LayerError> {
        let mut groups = lock(&self.groups);
        let Some(members) = groups.get_mut(group) else {
            return Ok(false);
        };
        let removed = members.remove(channel).is_some();
        if members.is_empty() {
            groups.remove(group);
        }
        Ok(removed)
    }

    async fn read(&self, group: &str) -> Result<PresenceSnapshot, LayerError> {
        validate_group_name(group)?;
        let mut members: Vec<PresenceEntry> = lock(&self.groups)
            .get(group)
            .map(|members| members.values().cloned().collect())
            .unwrap_or_default();
        members.sort_by(|a, b| a.joined_at.total_cmp(&b.joined_at));
        Ok(PresenceSnapshot {
            members,
            reaped: Vec::new(),
        })
    }

    async fn heartbeat(&self) -> Result<usize, LayerError> {
        Ok(0)
    }

    async fn close(&self) -> Result<(), LayerError> {
        lock(&self.groups).clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn join_leave_and_count() {
        let presence = InMemoryPresence::new("n1");
        presence.join("g", "c.a!1", Some("ann")).await.unwrap();
        presence.join("g", "c.a!2", Some("ann")).await.unwrap();
        presence.join("g", "c.a!3", None).await.unwrap();
        presence.join("other", "c.a!1", Some("bob")).await.unwrap();
        let count = presence.count("g").await.unwrap();
        assert_eq!((count.connections, count.users), (3, 1));
        let members = presence.members("g").await.unwrap();
        assert!(members.iter().all(|m| m.node == "n1"));
        assert!(presence.leave("g", "c.a!2").await.unwrap());
        assert!(!presence.leave("g", "c.a!2").await.unwrap());
        let channels: Vec<_> = presence
            .members("g")
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.channel)
            .collect();
        assert_eq!(channels.len(), 2);
        assert!(!channels.contains(&"c.a!2".to_owned()));
        assert!(presence.join("bad group", "c.a!1", None).await.is_err());
        presence.close().await.unwrap();
        assert_eq!(presence.count("other").await.unwrap().connections, 0);
    }
}
