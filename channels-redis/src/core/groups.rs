//! Group delivery (`group_send`, WIRE.md §2.6) and writing memberships.

use std::collections::HashMap;
use std::sync::Arc;

use channels_core::{LayerError, Message, non_local_name};
use futures_util::future::join_all;

use super::group_cache::{Collect, GroupCache};
use super::settings::{Settings, Shards, now_secs, prune_before};
use super::shared_reads::SharedReads;
use crate::wire::Route;

/// A group's members as `group_send` uses them, read once and shared by the
/// sends under way at the time ([`GroupReads`]), and kept for later sends
/// while Redis vouches for them ([`GroupMembersCache`]).
#[derive(Debug)]
pub(crate) struct GroupMembers {
    /// How many channels the group has.
    count: usize,
    /// Per shard (by index), the channel keys of the members it holds.
    per_shard: Vec<(usize, Vec<KeyMembers>)>,
}

/// The members of a group that live under one channel key: one copy of a
/// group message goes to the key, listing them (WIRE §2.6). They share the
/// part of their names the key is made of (`specific.<instance>!`), kept
/// once; the rest of each name is kept end to end in one string (a group
/// may be kept between sends: a string per name would cost three times as
/// much).
#[derive(Debug)]
struct KeyMembers {
    key: String,
    /// What every member's name starts with.
    prefix: String,
    /// The rest of each name, end to end.
    locals: String,
    /// Where each name's rest ends in `locals`.
    ends: Vec<u32>,
    capacity: usize,
}

impl KeyMembers {
    fn new(key: String, prefix: &str, capacity: usize) -> Self {
        Self {
            key,
            prefix: prefix.to_owned(),
            locals: String::new(),
            ends: Vec::new(),
            capacity,
        }
    }

    /// Adds `channel`, which starts with this key's prefix.
    fn push(&mut self, channel: &str) {
        let local = channel.get(self.prefix.len()..).unwrap_or_default();
        self.locals.push_str(local);
        // A group read is bounded by what one reply can hold (far below 4 GiB).
        self.ends
            .push(u32::try_from(self.locals.len()).unwrap_or(u32::MAX));
    }

    /// The rest of each member's name after the prefix, in the order read.
    fn locals(&self) -> impl Iterator<Item = &str> {
        let ends = self.ends.iter().map(|&end| end as usize);
        std::iter::once(0)
            .chain(ends.clone())
            .zip(ends)
            .map(|(start, end)| &self.locals[start..end])
    }
}

/// Concurrent reads of one group, shared (see [`SharedReads`]).
pub(crate) type GroupReads = SharedReads<Arc<GroupMembers>, redis::RedisError>;

/// The members of the groups sent to, kept while Redis vouches for them
/// (see [`GroupCache`]).
pub(crate) type GroupMembersCache = GroupCache<GroupMembers>;

/// Sends `message` to every member of `group`: prunes and reads the group on
/// its shard (a read shared with the other sends to the group that are
/// waiting for one, never one begun before this send; its members come from
/// the cache when Redis vouches they did not change), then adds one member
/// per channel key (listing that key's channels, serialized once), one MULTI
/// per shard, all shards at once. Full keys are skipped, logged and returned
/// as a count, as channels_redis does (its group_send never raises
/// ChannelFull).
pub(crate) async fn group_send(
    settings: &Settings,
    shards: &Shards,
    reads: &GroupReads,
    cache: &GroupMembersCache,
    group: &str,
    message: &Message,
) -> Result<usize, LayerError> {
    let index = shards.index_for_group(group);
    let shard = shards.get(index);
    let reader = cache.reader(index, shard, "group_send").await?;
    let members = reads
        .read(group, || async move {
            let key = settings.group_key(group);
            let prune = prune_before(now_secs(), settings.layer.group_expiry);
            let collect = || Bucketing::new(settings, shards);
            reader.members(&key, prune, collect).await
        })
        .await
        .map_err(|e| shard.error("group_send", e))?;
    if members.count == 0 {
        return Ok(0);
    }
    let now = now_secs();
    let prune = prune_before(now, settings.layer.expiry);
    let now = now.to_string();
    let results = join_all(members.per_shard.iter().map(|(shard_index, keys)| {
        let now = &now;
        async move {
            let shard = shards.get(*shard_index);
            let mut sends = Vec::with_capacity(keys.len());
            for key in keys {
                let locals: Vec<&str> = key.locals().collect();
                let route = Route::Prefixed {
                    prefix: &key.prefix,
                    locals: &locals,
                };
                let member = settings.serializer.serialize(message, route)?;
                sends.push(KeySend {
                    key: &key.key,
                    member,
                    capacity: key.capacity,
                });
            }
            let mut connection = shard.commands("group_send").await?;
            add_unless_full(&mut connection, &sends, now, settings.expiry_secs(), prune)
                .await
                .map_err(|e| shard.error("group_send", e))
        }
    }))
    .await;
    let mut over_capacity = 0;
    for result in results {
        over_capacity += result?;
    }
    if over_capacity > 0 {
        tracing::info!(
            "{over_capacity} of {} channels over capacity in group {group}",
            members.count
        );
    }
    Ok(over_capacity)
}

/// Buckets a group's member names by the channel key each lives under
/// (by the part of their name the key is made of, so one key string is built
/// per bucket), per shard: [`GroupMembers`].
struct Bucketing<'a> {
    settings: &'a Settings,
    shards: &'a Shards,
    count: usize,
    /// Each key's shard and members.
    keys: Vec<(usize, KeyMembers)>,
    index_of: HashMap<String, usize, foldhash::fast::RandomState>,
}

impl<'a> Bucketing<'a> {
    fn new(settings: &'a Settings, shards: &'a Shards) -> Self {
        Self {
            settings,
            shards,
            count: 0,
            keys: Vec::new(),
            index_of: HashMap::default(),
        }
    }
}

impl Collect<GroupMembers> for Bucketing<'_> {
    fn add(&mut self, names: Vec<String>) {
        self.count += names.len();
        for member in names {
            let shared = non_local_name(&member);
            let i = match self.index_of.get(shared) {
                Some(&i) => i,
                None => {
                    self.index_of.insert(shared.to_owned(), self.keys.len());
                    let key = KeyMembers::new(
                        self.settings.channel_key(&member),
                        shared,
                        self.settings.layer.capacities.capacity_for(&member),
                    );
                    self.keys.push((self.shards.index_for_local(&member), key));
                    self.keys.len() - 1
                }
            };
            self.keys[i].1.push(&member);
        }
    }

    fn count(&self) -> usize {
        self.count
    }

    fn finish(self) -> GroupMembers {
        let mut per_shard: Vec<(usize, Vec<KeyMembers>)> = Vec::new();
        for (index, mut key) in self.keys {
            key.locals.shrink_to_fit();
            key.ends.shrink_to_fit();
            match per_shard.iter_mut().find(|(i, _)| *i == index) {
                Some((_, keys)) => keys.push(key),
                None => per_shard.push((index, vec![key])),
            }
        }
        GroupMembers {
            count: self.count,
            per_shard,
        }
    }
}

/// One channel key's copy of a group message.
struct KeySend<'a> {
    key: &'a str,
    member: Vec<u8>,
    capacity: usize,
}

/// Adds each member to its key unless the key is at capacity, in one MULTI
/// (prune, add, refresh the TTL, count) plus, only for keys that turn out to
/// have been full, one ZREM of what was added. Returns how many keys were
/// full. Not a Lua script as in channels_redis: Redis's Lua hashes every
/// byte of every argument, and a group message lists every channel of its
/// key (measured: 40% of redis-server's CPU in the broadcast benchmark).
/// The effect is the same but for one race: nothing runs between the add
/// and the count, and the added member of a full key is its newest, popped
/// last; only if the whole key is drained before the ZREM arrives is it
/// delivered after all (the key went one over capacity, as channels_redis's
/// own `send` allows). The returned count is exact either way.
async fn add_unless_full(
    connection: &mut redis::aio::ConnectionManager,
    sends: &[KeySend<'_>],
    now: &str,
    expiry_secs: u64,
    prune_before: i64,
) -> redis::RedisResult<usize> {
    let mut pipe = redis::pipe();
    pipe.atomic();
    for send in sends {
        pipe.cmd("ZREMRANGEBYSCORE")
            .arg(send.key)
            .arg(0)
            .arg(prune_before)
            .ignore()
            .cmd("ZADD")
            .arg(send.key)
            .arg(now)
            .arg(&send.member)
            .ignore()
            .cmd("EXPIRE")
            .arg(send.key)
            .arg(expiry_secs)
            .ignore()
            .cmd("ZCARD")
            .arg(send.key);
    }
    let counts: Vec<usize> = pipe.query_async(connection).await?;
    let mut undo = redis::pipe();
    let mut full = 0;
    for (send, count) in sends.iter().zip(counts) {
        if count > send.capacity {
            undo.cmd("ZREM").arg(send.key).arg(&send.member).ignore();
            full += 1;
        }
    }
    if full > 0 {
        undo.exec_async(connection).await?;
    }
    Ok(full)
}

/// `ZADD {prefix}:group:{g} now ch` + `EXPIRE group_expiry` on the group's shard.
pub(crate) async fn add_membership(
    settings: &Settings,
    shards: &Shards,
    group: &str,
    channel: &str,
) -> Result<(), LayerError> {
    let shard = shards.get(shards.index_for_group(group));
    let key = settings.group_key(group);
    let mut connection = shard.commands("group_add").await?;
    redis::pipe()
        .cmd("ZADD")
        .arg(&key)
        .arg(now_secs().to_string())
        .arg(channel)
        .ignore()
        .cmd("EXPIRE")
        .arg(&key)
        .arg(settings.group_expiry_secs())
        .ignore()
        .exec_async(&mut connection)
        .await
        .map_err(|e| shard.error("group_add", e))
}

/// Writes many memberships again in one pipeline per shard (after a Redis
/// outage): one round trip instead of one per membership.
pub(crate) async fn restore_memberships(
    settings: &Settings,
    shards: &Shards,
    pairs: &[(String, String)],
) -> Result<(), LayerError> {
    let mut per_shard: Vec<redis::Pipeline> = (0..shards.len()).map(|_| redis::pipe()).collect();
    let mut used = vec![false; shards.len()];
    let now = now_secs().to_string();
    for (group, channel) in pairs {
        let index = shards.index_for_group(group);
        let key = settings.group_key(group);
        per_shard[index]
            .cmd("ZADD")
            .arg(&key)
            .arg(&now)
            .arg(channel)
            .ignore()
            .cmd("EXPIRE")
            .arg(&key)
            .arg(settings.group_expiry_secs())
            .ignore();
        used[index] = true;
    }
    for (index, pipeline) in per_shard.iter().enumerate() {
        if !used[index] {
            continue;
        }
        let shard = shards.get(index);
        let mut connection = shard.commands("group_add").await?;
        pipeline
            .exec_async(&mut connection)
            .await
            .map_err(|e| shard.error("group_add", e))?;
    }
    Ok(())
}

/// The process-local channels of `channels` that live under `key`
/// (`{prefix}specific.<cp>!`): those a receive loop of that key must restore.
pub(crate) fn under_key(settings: &Settings, key: &str, channel: &str) -> bool {
    key.strip_prefix(settings.prefix.as_str()) == Some(non_local_name(channel))
}
