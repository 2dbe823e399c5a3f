//! Unread notifications per user, kept server-side so the count survives page reloads: in this
//! process (bounded maps) with the in-memory layer, in Redis (shared by every process) otherwise.
//!
//! A user's unread notifications are a *set of notification ids*, so recording one twice (by
//! the HTTP endpoint and again by each of the user's sockets) counts it once.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use redis::aio::ConnectionManager;

/// Users whose unread sets the in-memory store keeps; beyond that the oldest-touched is dropped.
const MAX_USERS: usize = 10_000;
/// Unread ids kept per user; the count stops growing there ("999+" in a UI).
pub(crate) const MAX_UNREAD: usize = 1_000;
/// Redis keeps an untouched unread set this long (seconds).
const REDIS_TTL_SECS: i64 = 30 * 24 * 3600;

/// Where unread counts live.
#[derive(Clone)]
pub(crate) enum UnreadStore {
    /// In this process only (`--layer memory`).
    Memory(Arc<Mutex<MemoryUnread>>),
    /// A Redis set per user, `<prefix>:unread:<user>`.
    Redis {
        /// The shared, auto-reconnecting connection.
        conn: ConnectionManager,
        /// Key prefix (the server's `--redis-prefix`).
        prefix: String,
    },
}

impl std::fmt::Debug for UnreadStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Memory(_) => f.write_str("UnreadStore::Memory"),
            Self::Redis { prefix, .. } => write!(f, "UnreadStore::Redis({prefix})"),
        }
    }
}

/// The in-memory store: user -> (unread ids, last touch).
#[derive(Debug, Default)]
pub(crate) struct MemoryUnread {
    users: HashMap<String, (HashSet<String>, u64)>,
    clock: u64,
}

impl UnreadStore {
    /// An in-memory store.
    pub(crate) fn memory() -> Self {
        Self::Memory(Arc::default())
    }

    /// A Redis store on `url`.
    pub(crate) async fn redis(url: &str, prefix: &str) -> redis::RedisResult<Self> {
        let conn = redis::Client::open(url)?.get_connection_manager().await?;
        Ok(Self::Redis {
            conn,
            prefix: prefix.to_owned(),
        })
    }

    fn key(prefix: &str, user: &str) -> String {
        format!("{prefix}:unread:{user}")
    }

    /// Records notification `id` as unread for `user`; returns the user's unread count.
    pub(crate) async fn add(&self, user: &str, id: &str) -> redis::RedisResult<u64> {
        match self {
            Self::Memory(memory) => {
                let mut memory = memory.lock().unwrap_or_else(PoisonError::into_inner);
                memory.clock += 1;
                let now = memory.clock;
                if !memory.users.contains_key(user) && memory.users.len() >= MAX_USERS {
                    let oldest = memory.users.iter().min_by_key(|(_, (_, t))| *t);
                    if let Some(oldest) = oldest.map(|(user, _)| user.clone()) {
                        memory.users.remove(&oldest);
                    }
                }
                let (ids, touched) = memory.users.entry(user.to_owned()).or_default();
                *touched = now;
                if ids.len() < MAX_UNREAD {
                    ids.insert(id.to_owned());
                }
                Ok(ids.len() as u64)
            }
            Self::Redis { conn, prefix } => {
                let key = Self::key(prefix, user);
                let mut conn = conn.clone();
                // SCARD first: past the cap the set stops growing, as in memory.
                let count: u64 = redis::cmd("SCARD").arg(&key).query_async(&mut conn).await?;
                if count >= MAX_UNREAD as u64 {
                    return Ok(count);
                }
                let (count,): (u64,) = redis::pipe()
                    .atomic()
                    .sadd(&key, id)
                    .ignore()
                    .expire(&key, REDIS_TTL_SECS)
                    .ignore()
                    .scard(&key)
                    .query_async(&mut conn)
                    .await?;
                Ok(count)
            }
        }
    }

    /// Returns `user`'s unread count.
    pub(crate) async fn count(&self, user: &str) -> redis::RedisResult<u64> {
        match self {
            Self::Memory(memory) => {
                let memory = memory.lock().unwrap_or_else(PoisonError::into_inner);
                Ok(memory
                    .users
                    .get(user)
                    .map_or(0, |(ids, _)| ids.len() as u64))
            }
            Self::Redis { conn, prefix } => {
                let mut conn = conn.clone();
                redis::cmd("SCARD")
                    .arg(Self::key(prefix, user))
                    .query_async(&mut conn)
                    .await
            }
        }
    }

    /// Marks everything read for `user`.
    pub(crate) async fn clear(&self, user: &str) -> redis::RedisResult<()> {
        match self {
            Self::Memory(memory) => {
                let mut memory = memory.lock().unwrap_or_else(PoisonError::into_inner);
                memory.users.remove(user);
                Ok(())
            }
            Self::Redis { conn, prefix } => {
                let mut conn = conn.clone();
                redis::cmd("DEL")
                    .arg(Self::key(prefix, user))
                    .query_async(&mut conn)
                    .await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_counts_each_id_once_and_stays_bounded() {
        let store = UnreadStore::memory();
        assert_eq!(store.add("1", "a").await.unwrap(), 1);
        assert_eq!(store.add("1", "a").await.unwrap(), 1);
        assert_eq!(store.add("1", "b").await.unwrap(), 2);
        assert_eq!(store.count("2").await.unwrap(), 0);
        store.clear("1").await.unwrap();
        assert_eq!(store.count("1").await.unwrap(), 0);
        for i in 0..MAX_UNREAD + 5 {
            store.add("1", &i.to_string()).await.unwrap();
        }
        assert_eq!(store.count("1").await.unwrap(), MAX_UNREAD as u64);
        for user in 0..MAX_USERS + 1 {
            store.add(&format!("u{user}"), "x").await.unwrap();
        }
        // User "1" was touched least recently, so it made room.
        assert_eq!(store.count("1").await.unwrap(), 0);
        assert_eq!(store.count(&format!("u{MAX_USERS}")).await.unwrap(), 1);
    }
}
