//! [`RedisPresence`]: presence entries in Redis, shared by every process on
//! the layer's Redis (core and pub/sub layers alike).
//!
//! - A group's entries are one hash, `{prefix}:presence:{group}` (field: the
//!   channel; value: `{"node": .., "user": .., "joined_at": ..}`), on the
//!   shard that owns the group (channels_redis's consistent hash of the
//!   group name, as for `{prefix}:group:{group}`). A join renews its expiry
//!   ([`DEFAULT_PRESENCE_GROUP_TTL`]) so a group nobody joins any more does
//!   not stay forever; the heartbeat renews it for groups this process has
//!   members in.
//! - Each process (node) keeps `{prefix}:presence:node:{node}` alive on
//!   every shard with a TTL ([`DEFAULT_NODE_TTL`]), renewed by
//!   [`PresenceStore::heartbeat`]. A read skips, and deletes, entries whose
//!   node key is gone: a process killed without a clean shutdown loses its
//!   entries within the TTL. A clean [`PresenceStore::close`] deletes them
//!   at once.
//!
//! A process's own entries are also kept in memory: a join or leave whose
//! write failed is made by the next heartbeat that reaches Redis, and when
//! the node key was lost (expired while Redis was away, or Redis restarted
//! empty) the heartbeat writes every entry of the node again.
//!
//! One round trip per operation: a join is one atomic pipeline, a read one
//! Lua script (which reads the node keys of the same shard; fine on the
//! standalone and Sentinel servers channels_redis shards over, not on Redis
//! Cluster, which the layers do not support either).

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use channels_core::presence::{DEFAULT_NODE_TTL, PresenceEntry, PresenceSnapshot, PresenceStore};
use channels_core::{LayerError, lock, validate_channel_name, validate_group_name};
use futures_util::future::join_all;
use redis::Script;

use crate::config::RedisConfig;
use crate::connection::Shard;
use crate::keys::{node_key_prefix, presence_key};
use crate::shard::consistent_hash;

/// How long a group's presence hash lives after its last join or renewal
/// (channels_redis's `group_expiry`, one day).
pub const DEFAULT_PRESENCE_GROUP_TTL: Duration = Duration::from_secs(86_400);

/// Most failed leaves kept for the next heartbeat to delete; past it they
/// are logged and left to the hash's expiry (a Redis outage during which
/// this many distinct entries left).
pub(crate) const MAX_UNREMOVED: usize = 100_000;

/// The node key's value when the heartbeat set it.
const BEATING: &str = "beating";

/// The node key's value when a join had to create it.
const JOINED: &str = "joined";

/// Reads a group's hash; deletes and returns apart the entries whose node
/// key (ARGV[1] .. node) is gone or that are not readable JSON.
/// KEYS[1] = the hash. Returns {live pairs, reaped pairs}, each a flat list
/// of field, value.
static READ: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local entries = redis.call('HGETALL', KEYS[1])
local alive = {}
local live, dead = {}, {}
for i = 1, #entries, 2 do
  local ok, entry = pcall(cjson.decode, entries[i + 1])
  local node = ok and type(entry) == 'table' and entry['node'] or nil
  local up = false
  if type(node) == 'string' then
    if alive[node] == nil then
      alive[node] = redis.call('EXISTS', ARGV[1] .. node) == 1
    end
    up = alive[node]
  end
  local into = dead
  if up then into = live else redis.call('HDEL', KEYS[1], entries[i]) end
  into[#into + 1] = entries[i]
  into[#into + 1] = entries[i + 1]
end
return {live, dead}
",
    )
});

/// Presence on the Redis servers of a layer: same hosts, same key prefix,
/// same sharding. Build it from the layer's [`RedisConfig`]; it opens its own
/// connection per shard (on first use).
///
/// # Examples
/// ```no_run
/// use channels_core::presence::PresenceStore;
/// use channels_redis::{RedisConfig, RedisPresence};
///
/// # async fn demo() -> Result<(), channels_core::LayerError> {
/// let config = RedisConfig::new().host("redis://127.0.0.1:6379");
/// let presence = RedisPresence::new(&config, "node-1")?;
/// presence.heartbeat().await?; // then every DEFAULT_HEARTBEAT_INTERVAL
/// presence.join("chat", "specific.a!1", Some("ann")).await?;
/// let count = presence.count("chat").await?; // every process's entries
/// println!("{} connections, {} users", count.connections, count.users);
/// presence.close().await?; // a clean shutdown: this node's entries go now
/// # Ok(()) }
/// ```
pub struct RedisPresence {
    node: String,
    prefix: String,
    node_ttl: Duration,
    group_ttl: Duration,
    shards: Vec<Shard>,
    /// This node's entries: group → channel → stored value, for `close`,
    /// renewals, and writing them again after Redis lost them.
    local: Mutex<HashMap<String, HashMap<String, String>>>,
    /// Per shard: whether a heartbeat has reached it since this store began.
    beaten: Mutex<Vec<bool>>,
    /// Per shard: a join's write failed; the next heartbeat writes it.
    unwritten: Mutex<Vec<bool>>,
    /// Leaves whose delete failed (group → channels), deleted by the next
    /// heartbeat that reaches Redis; at most [`MAX_UNREMOVED`].
    unremoved: Mutex<HashMap<String, std::collections::HashSet<String>>>,
    /// When the heartbeat last renewed the hashes' expiry.
    renewed: Mutex<Instant>,
}

impl std::fmt::Debug for RedisPresence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPresence")
            .field("node", &self.node)
            .field("prefix", &self.prefix)
            .field("node_ttl", &self.node_ttl)
            .finish_non_exhaustive()
    }
}

impl RedisPresence {
    /// Presence on `config`'s hosts and prefix, writing entries as `node`
    /// (a process id unique in the cluster). Liveness lasts
    /// [`DEFAULT_NODE_TTL`] after each heartbeat. Connects nothing yet.
    ///
    /// # Errors
    /// [`LayerError::InvalidConfig`] for a bad host entry.
    pub fn new(config: &RedisConfig, node: impl Into<String>) -> Result<Self, LayerError> {
        config.validate()?;
        let shards = config
            .hosts()
            .iter()
            .map(|host| Shard::new(host, config))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            node: node.into(),
            prefix: config.prefix.clone(),
            node_ttl: DEFAULT_NODE_TTL,
            group_ttl: DEFAULT_PRESENCE_GROUP_TTL,
            shards,
            local: Mutex::new(HashMap::new()),
            beaten: Mutex::new(vec![false; config.hosts().len()]),
            unwritten: Mutex::new(vec![false; config.hosts().len()]),
            unremoved: Mutex::new(HashMap::new()),
            renewed: Mutex::new(Instant::now()),
        })
    }

    /// Sets how long the node stays alive after a heartbeat (default
    /// [`DEFAULT_NODE_TTL`]; heartbeat at a third of it).
    #[must_use]
    pub fn node_ttl(mut self, ttl: Duration) -> Self {
        self.node_ttl = ttl;
        self
    }

    fn node_key(&self) -> String {
        format!("{}{}", node_key_prefix(&self.prefix), self.node)
    }

    fn shard_of(&self, group: &str) -> &Shard {
        &self.shards[consistent_hash(group, self.shards.len())]
    }

    fn ttl_millis(ttl: Duration) -> u64 {
        u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
    }

    /// Renews the expiry of the hashes this node has entries in, one
    /// pipeline per shard.
    async fn renew_groups(&self) -> Result<(), LayerError> {
        let groups: Vec<String> = lock(&self.local).keys().cloned().collect();
        let mut by_shard: HashMap<usize, redis::Pipeline> = HashMap::new();
        for group in &groups {
            let index = consistent_hash(group, self.shards.len());
            by_shard
                .entry(index)
                .or_default()
                .pexpire(presence_key(&self.prefix, group), self.group_ttl_millis())
                .ignore();
        }
        let results = join_all(by_shard.into_iter().map(|(index, pipe)| async move {
            let shard = &self.shards[index];
            let mut connection = shard.commands("presence renew").await?;
            pipe.exec_async(&mut connection)
                .await
                .map_err(|e| shard.error("presence renew", e))
        }))
        .await;
        results.into_iter().collect()
    }

    /// Remembers a leave whose delete failed, for the next heartbeat.
    fn keep_unremoved(&self, group: &str, channel: &str) {
        let mut unremoved = lock(&self.unremoved);
        if unremoved
            .values()
            .map(std::collections::HashSet::len)
            .sum::<usize>()
            >= MAX_UNREMOVED
        {
            tracing::error!(%group, %channel, "too many presence leaves not deleted; this one stays until its group's hash expires");
            return;
        }
        unremoved
            .entry(group.to_owned())
            .or_default()
            .insert(channel.to_owned());
    }

    /// Deletes the failed leaves of the groups on shard `index`.
    async fn remove_unremoved(
        &self,
        index: usize,
        connection: &mut redis::aio::ConnectionManager,
    ) -> Result<(), LayerError> {
        let mine: Vec<(String, std::collections::HashSet<String>)> = {
            let mut unremoved = lock(&self.unremoved);
            let groups: Vec<String> = unremoved
                .keys()
                .filter(|group| consistent_hash(group, self.shards.len()) == index)
                .cloned()
                .collect();
            groups
                .into_iter()
                .filter_map(|group| unremoved.remove_entry(&group))
                .collect()
        };
        if mine.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (group, channels) in &mine {
            let key = presence_key(&self.prefix, group);
            for channel in channels {
                pipe.hdel(&key, channel).ignore();
            }
        }
        let shard = &self.shards[index];
        if let Err(e) = pipe.exec_async(connection).await {
            for (group, channels) in mine {
                for channel in channels {
                    self.keep_unremoved(&group, &channel);
                }
            }
            return Err(shard.error("presence leave", e));
        }
        Ok(())
    }

    /// Writes this node's entries of the groups on shard `index` again;
    /// returns how many.
    async fn restore(
        &self,
        index: usize,
        connection: &mut redis::aio::ConnectionManager,
    ) -> Result<usize, LayerError> {
        let mut pipe = redis::pipe();
        let mut count = 0;
        for (group, channels) in lock(&self.local).iter() {
            if consistent_hash(group, self.shards.len()) != index {
                continue;
            }
            let key = presence_key(&self.prefix, group);
            for (channel, value) in channels {
                pipe.hset(&key, channel, value).ignore();
                count += 1;
            }
            pipe.pexpire(&key, self.group_ttl_millis()).ignore();
        }
        if count > 0 {
            let shard = &self.shards[index];
            pipe.exec_async(connection)
                .await
                .map_err(|e| shard.error("presence restore", e))?;
        }
        Ok(count)
    }

    fn group_ttl_millis(&self) -> i64 {
        i64::try_from(self.group_ttl.as_millis()).unwrap_or(i64::MAX)
    }
}

/// Seconds since the Unix epoch.
fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The stored value of an entry.
fn encode(node: &str, user: Option<&str>, joined_at: f64) -> String {
    serde_json::json!({"node": node, "user": user, "joined_at": joined_at}).to_string()
}

/// An entry from its field and stored value; `None` when the value is not
/// what [`encode`] writes (another program's data: left out).
fn decode(channel: String, value: &str) -> Option<PresenceEntry> {
    let json: serde_json::Value = serde_json::from_str(value).ok()?;
    let node = json.get("node")?.as_str()?.to_owned();
    let user = match json.get("user") {
        None | Some(serde_json::Value::Null) => None,
        Some(user) => Some(user.as_str()?.to_owned()),
    };
    let joined_at = json
        .get("joined_at")
        .and_then(serde_json::Value::as_f64)
        .unwrap_or(0.0);
    Some(PresenceEntry {
        channel,
        user,
        node,
        joined_at,
    })
}

/// Entries from a flat list of field, value.
fn decode_pairs(pairs: Vec<String>) -> Vec<PresenceEntry> {
    let mut entries = Vec::with_capacity(pairs.len() / 2);
    let mut pairs = pairs.into_iter();
    while let (Some(channel), Some(value)) = (pairs.next(), pairs.next()) {
        if let Some(entry) = decode(channel, &value) {
            entries.push(entry);
        }
    }
    entries.sort_by(|a, b| a.joined_at.total_cmp(&b.joined_at));
    entries
}

#[async_trait]
impl PresenceStore for RedisPresence {
    fn node(&self) -> &str {
        &self.node
    }

    async fn join(&self, group: &str, channel: &str, user: Option<&str>) -> Result<(), LayerError> {
        validate_group_name(group)?;
        validate_channel_name(channel)?;
        let index = consistent_hash(group, self.shards.len());
        let shard = &self.shards[index];
        let key = presence_key(&self.prefix, group);
        let value = encode(&self.node, user, now_secs());
        // Kept first: if the write fails, the next heartbeat writes it.
        lock(&self.local)
            .entry(group.to_owned())
            .or_default()
            .insert(channel.to_owned(), value.clone());
        let mut connection = match shard.commands("presence join").await {
            Ok(connection) => connection,
            Err(error) => {
                lock(&self.unwritten)[index] = true;
                return Err(error);
            }
        };
        // The node key too, unless it is there: an entry must never be
        // written under a node that does not exist (a read would reap it at
        // once). Marked `JOINED`, not `BEATING`, so the next heartbeat knows
        // the key was gone and writes this node's other entries again.
        redis::pipe()
            .atomic()
            .hset(&key, channel, &value)
            .ignore()
            .pexpire(&key, self.group_ttl_millis())
            .ignore()
            .cmd("SET")
            .arg(self.node_key())
            .arg(JOINED)
            .arg("PX")
            .arg(Self::ttl_millis(self.node_ttl))
            .arg("NX")
            .ignore()
            .exec_async(&mut connection)
            .await
            .map_err(|e| {
                lock(&self.unwritten)[index] = true;
                shard.error("presence join", e)
            })
    }

    async fn leave(&self, group: &str, channel: &str) -> Result<bool, LayerError> {
        {
            let mut local = lock(&self.local);
            if let Some(channels) = local.get_mut(group) {
                channels.remove(channel);
                if channels.is_empty() {
                    local.remove(group);
                }
            }
        }
        let shard = self.shard_of(group);
        let result = async {
            let mut connection = shard.commands("presence leave").await?;
            redis::cmd("HDEL")
                .arg(presence_key(&self.prefix, group))
                .arg(channel)
                .query_async::<i64>(&mut connection)
                .await
                .map_err(|e| shard.error("presence leave", e))
        }
        .await;
        match result {
            Ok(removed) => Ok(removed > 0),
            Err(error) => {
                self.keep_unremoved(group, channel);
                Err(error)
            }
        }
    }

    async fn read(&self, group: &str) -> Result<PresenceSnapshot, LayerError> {
        validate_group_name(group)?;
        let shard = self.shard_of(group);
        let mut connection = shard.commands("presence read").await?;
        let (live, dead): (Vec<String>, Vec<String>) = READ
            .key(presence_key(&self.prefix, group))
            .arg(node_key_prefix(&self.prefix))
            .invoke_async(&mut connection)
            .await
            .map_err(|e| shard.error("presence read", e))?;
        Ok(PresenceSnapshot {
            members: decode_pairs(live),
            reaped: decode_pairs(dead),
        })
    }

    async fn heartbeat(&self) -> Result<usize, LayerError> {
        let key = self.node_key();
        let ttl = Self::ttl_millis(self.node_ttl);
        let results = join_all(self.shards.iter().enumerate().map(|(index, shard)| {
            let key = key.clone();
            async move {
                let mut connection = shard.commands("presence heartbeat").await?;
                let (previous,): (Option<String>,) = redis::pipe()
                    .atomic()
                    .get(&key)
                    .cmd("SET")
                    .arg(&key)
                    .arg(BEATING)
                    .arg("PX")
                    .arg(ttl)
                    .ignore()
                    .query_async(&mut connection)
                    .await
                    .map_err(|e| shard.error("presence heartbeat", e))?;
                self.remove_unremoved(index, &mut connection).await?;
                let was_beaten = std::mem::replace(&mut lock(&self.beaten)[index], true);
                let unwritten = std::mem::take(&mut lock(&self.unwritten)[index]);
                if previous.as_deref() == Some(BEATING) && !unwritten {
                    return Ok(0);
                }
                // The key expired (a heartbeat came too late, Redis was
                // away) or Redis lost it (restarted empty, flushed): readers
                // may have removed this node's entries; write them again.
                let restored = self
                    .restore(index, &mut connection)
                    .await
                    .inspect_err(|_| {
                        lock(&self.unwritten)[index] = true;
                    })?;
                Ok(if was_beaten { restored } else { 0 })
            }
        }))
        .await;
        let mut restored = 0;
        for result in results {
            restored += result?;
        }
        let due = lock(&self.renewed).elapsed() >= self.group_ttl / 4;
        if due {
            self.renew_groups().await?;
            *lock(&self.renewed) = Instant::now();
        }
        Ok(restored)
    }

    async fn close(&self) -> Result<(), LayerError> {
        let local = std::mem::take(&mut *lock(&self.local));
        let mut pipes: Vec<redis::Pipeline> = self.shards.iter().map(|_| redis::pipe()).collect();
        for (group, channels) in &local {
            let index = consistent_hash(group, self.shards.len());
            let key = presence_key(&self.prefix, group);
            for channel in channels.keys() {
                pipes[index].hdel(&key, channel).ignore();
            }
        }
        let node_key = self.node_key();
        let results = join_all(self.shards.iter().zip(pipes).map(|(shard, mut pipe)| {
            pipe.del(&node_key).ignore();
            async move {
                let mut connection = shard.commands("presence close").await?;
                pipe.exec_async(&mut connection)
                    .await
                    .map_err(|e| shard.error("presence close", e))
            }
        }))
        .await;
        results.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_foreign_values_are_left_out() {
        let value = encode("n1", Some("ann"), 12.5);
        let entry = decode("c!1".to_owned(), &value).unwrap();
        assert_eq!(entry.node, "n1");
        assert_eq!(entry.user.as_deref(), Some("ann"));
        assert!((entry.joined_at - 12.5).abs() < f64::EPSILON);
        let anonymous = decode("c!2".to_owned(), &encode("n1", None, 1.0)).unwrap();
        assert_eq!(anonymous.user, None);
        assert!(decode("c".to_owned(), "not json").is_none());
        assert!(decode("c".to_owned(), r#"{"user":"a"}"#).is_none());
        assert!(decode("c".to_owned(), r#"{"node":"n","user":7}"#).is_none());
        let entries = decode_pairs(vec![
            "b".into(),
            encode("n", None, 2.0),
            "a".into(),
            encode("n", None, 1.0),
            "odd".into(),
        ]);
        let channels: Vec<_> = entries.iter().map(|e| e.channel.as_str()).collect();
        assert_eq!(channels, ["a", "b"]);
    }
}

/// The store against a real `redis-server` (feature `testing`).
#[cfg(all(test, feature = "testing"))]
mod redis_tests {
    use super::*;
    use crate::testing::RedisServer;

    fn store(server: &RedisServer, prefix: &str, node: &str) -> RedisPresence {
        let config = RedisConfig::new().host(server.url()).prefix(prefix);
        RedisPresence::new(&config, node).expect("a valid config")
    }

    async fn admin(server: &RedisServer) -> redis::aio::MultiplexedConnection {
        crate::testing::connect(&server.url())
            .await
            .expect("connect")
    }

    #[tokio::test]
    async fn presence_spans_nodes_and_a_dead_node_is_reaped_once() {
        let server = RedisServer::start().expect("redis-server on PATH");
        let one = store(&server, "p1", "one");
        let two = store(&server, "p1", "two");
        one.heartbeat().await.unwrap();
        two.heartbeat().await.unwrap();
        one.join("room", "s.a!1", Some("ann")).await.unwrap();
        one.join("room", "s.a!2", Some("ann")).await.unwrap();
        two.join("room", "s.b!1", Some("bob")).await.unwrap();
        two.join("room", "s.b!2", None).await.unwrap();

        let seen = one.read("room").await.unwrap();
        assert_eq!(seen.members.len(), 4);
        assert_eq!(seen.users(), ["ann", "bob"]);
        assert!(seen.reaped.is_empty());
        assert_eq!(two.count("room").await.unwrap().connections, 4);
        let mut redis = admin(&server).await;
        let ttl: i64 = redis::cmd("TTL")
            .arg("p1:presence:room")
            .query_async(&mut redis)
            .await
            .unwrap();
        assert!(ttl > 86_000, "the hash has a day's expiry: {ttl}");

        assert!(one.leave("room", "s.a!2").await.unwrap());
        assert!(!one.leave("room", "s.a!2").await.unwrap());
        assert_eq!(two.count("room").await.unwrap().connections, 3);

        // Node two "dies": its liveness key goes (as when its TTL runs out).
        let _: i64 = redis::cmd("DEL")
            .arg("p1:presence:node:two")
            .query_async(&mut redis)
            .await
            .unwrap();
        let first = one.read("room").await.unwrap();
        let channels: Vec<_> = first.members.iter().map(|e| e.channel.as_str()).collect();
        assert_eq!(channels, ["s.a!1"]);
        let mut reaped: Vec<_> = first.reaped.iter().map(|e| e.channel.clone()).collect();
        reaped.sort();
        assert_eq!(reaped, ["s.b!1", "s.b!2"]);
        // Reaped once: the next reader finds nothing left to reap.
        assert!(two.read("room").await.unwrap().reaped.is_empty());
    }

    #[tokio::test]
    async fn a_heartbeat_after_lost_liveness_writes_the_entries_again() {
        let server = RedisServer::start().expect("redis-server on PATH");
        let node = store(&server, "p4", "n");
        let reader = store(&server, "p4", "reader");
        node.join("g", "s.a!1", Some("ann")).await.unwrap();
        assert_eq!(node.heartbeat().await.unwrap(), 0, "the first one");
        assert_eq!(node.heartbeat().await.unwrap(), 0, "alive all along");
        // Redis loses everything (restarted empty, flushed).
        let mut redis = admin(&server).await;
        redis::cmd("FLUSHALL").exec_async(&mut redis).await.unwrap();
        assert_eq!(reader.count("g").await.unwrap().connections, 0);
        assert_eq!(node.heartbeat().await.unwrap(), 1);
        let members = reader.members("g").await.unwrap();
        assert_eq!(members.len(), 1);
        assert_eq!(members[0].user.as_deref(), Some("ann"));
        // The node key expired and a reader reaped the entry; a join came
        // first and made the key again: the heartbeat still restores.
        let _: i64 = redis::cmd("DEL")
            .arg("p4:presence:node:n")
            .query_async(&mut redis)
            .await
            .unwrap();
        assert_eq!(reader.read("g").await.unwrap().reaped.len(), 1);
        node.join("h", "s.a!1", Some("ann")).await.unwrap();
        assert_eq!(node.heartbeat().await.unwrap(), 2);
        assert_eq!(reader.count("g").await.unwrap().connections, 1);
    }

    #[tokio::test]
    async fn writes_that_failed_are_made_by_the_next_heartbeat() {
        // Persistent, so Redis comes back with what it had.
        let dir = std::env::temp_dir().join(format!("presence-aof-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let dir_arg = dir.display().to_string();
        let args = [
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--dir",
            &dir_arg,
        ];
        let mut server = RedisServer::start_with_args(&args).expect("redis-server on PATH");
        let node = store(&server, "p5", "n");
        let reader = store(&server, "p5", "reader");
        node.join("g", "s.a!1", Some("ann")).await.unwrap();
        node.join("g", "s.a!2", Some("bob")).await.unwrap();
        node.heartbeat().await.unwrap();

        // Redis away: a leave and a join fail.
        server.kill();
        assert!(node.leave("g", "s.a!1").await.is_err());
        assert!(node.join("g", "s.a!3", Some("cat")).await.is_err());
        server.restart().unwrap();
        assert_eq!(reader.count("g").await.unwrap().connections, 2, "as before");
        // The next heartbeat makes both writes.
        let deadline = Instant::now() + Duration::from_secs(5);
        while node.heartbeat().await.is_err() {
            assert!(Instant::now() < deadline, "Redis did not come back");
            tokio::time::sleep(Duration::from_millis(50)).await; // poll interval
        }
        let mut users: Vec<_> = reader
            .members("g")
            .await
            .unwrap()
            .into_iter()
            .filter_map(|e| e.user)
            .collect();
        users.sort();
        assert_eq!(users, ["bob", "cat"]);
        drop(server);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn a_group_lives_on_its_shard_and_the_node_on_every_shard() {
        let servers = [
            RedisServer::start().expect("redis-server on PATH"),
            RedisServer::start().expect("redis-server on PATH"),
        ];
        let config = RedisConfig::new()
            .hosts_from(servers.iter().map(RedisServer::url))
            .prefix("p3");
        let presence = RedisPresence::new(&config, "n").unwrap();
        // "room.1" hashes to shard 1 of 2, "chat" to shard 0 (WIRE.md §5).
        assert_eq!(consistent_hash("room.1", 2), 1);
        assert_eq!(consistent_hash("chat", 2), 0);
        presence.heartbeat().await.unwrap();
        presence.join("room.1", "s.a!1", Some("ann")).await.unwrap();
        presence.join("chat", "s.a!1", Some("ann")).await.unwrap();
        let mut zero = admin(&servers[0]).await;
        let mut one = admin(&servers[1]).await;
        for (connection, room, chat) in [(&mut zero, 0, 1), (&mut one, 1, 0)] {
            let (has_room, has_chat, has_node): (i64, i64, i64) = redis::pipe()
                .exists("p3:presence:room.1")
                .exists("p3:presence:chat")
                .exists("p3:presence:node:n")
                .query_async(connection)
                .await
                .unwrap();
            assert_eq!((has_room, has_chat, has_node), (room, chat, 1));
        }
        assert_eq!(presence.count("room.1").await.unwrap().users, 1);
        assert_eq!(presence.count("chat").await.unwrap().users, 1);
        presence.close().await.unwrap();
        let left: i64 = redis::cmd("EXISTS")
            .arg("p3:presence:room.1")
            .arg("p3:presence:node:n")
            .query_async(&mut one)
            .await
            .unwrap();
        assert_eq!(left, 0, "close removed the entry and the node key");
    }

    #[tokio::test]
    async fn liveness_expires_and_close_removes_this_node_at_once() {
        let server = RedisServer::start().expect("redis-server on PATH");
        let short = store(&server, "p2", "short").node_ttl(Duration::from_millis(300));
        let other = store(&server, "p2", "other");
        short.join("g", "s.a!1", Some("ann")).await.unwrap();
        other.join("g", "s.b!1", Some("bob")).await.unwrap();
        other.join("h", "s.b!1", Some("bob")).await.unwrap();
        assert_eq!(other.count("g").await.unwrap().connections, 2);
        // No heartbeat from `short`: its entry is gone once the TTL runs out.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if other.count("g").await.unwrap().connections == 1 {
                break;
            }
            assert!(Instant::now() < deadline, "the entry outlived its node");
            tokio::time::sleep(Duration::from_millis(20)).await; // poll interval
        }

        other.close().await.unwrap();
        assert_eq!(short.count("g").await.unwrap().connections, 0);
        assert_eq!(short.count("h").await.unwrap().connections, 0);
        let mut redis = admin(&server).await;
        let exists: i64 = redis::cmd("EXISTS")
            .arg("p2:presence:node:other")
            .query_async(&mut redis)
            .await
            .unwrap();
        assert_eq!(exists, 0);
    }
}
