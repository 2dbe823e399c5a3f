//! [`GroupCache`]: the members of the groups this process sends to, kept
//! between sends for as long as Redis vouches that they did not change
//! (Redis's server-assisted client-side caching, `CLIENT TRACKING`).
//!
//! Each shard gets one more connection, RESP3 with tracking on; groups are
//! read on it, so Redis remembers that this connection read each group key
//! and pushes an invalidation on it when anyone (this process, another one,
//! Python) changes the key, before its own reply to that change. redis-rs
//! hands pushes to the sink in the order they arrive, before any later
//! reply completes, and the sink drops the group from the cache at once.
//!
//! So a send is still exact without reading the whole group: it issues the
//! prune it needs anyway (`ZREMRANGEBYSCORE`, with a `ZCARD`) on that
//! connection after it was called, and when the reply arrives every change
//! completed before the send began has had its invalidation applied. The
//! cached members are used only if they are still cached then, the prune
//! removed nothing (Redis may tell the tracking connection of its own change
//! only after the reply: Redis 7.0 tells it before, later versions defer it)
//! and the group has as many members as cached (a key that expired under
//! the prune, likewise). Else the group is read as before, [`PAGE`] names a
//! reply (a change between pages, told by an invalidation, has it read
//! whole instead), and kept unless an invalidation or a closed link came in
//! while it was read.
//!
//! A link that fails or drops is closed and the cache emptied; the next send
//! opens another. A server that refuses tracking is read every time on the
//! command connection, whole, as without this cache. At most
//! [`CACHED_NAMES`] member names per shard are kept.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use channels_core::{LayerError, lock};
use foldhash::fast::RandomState;
use redis::aio::{ConnectionLike, ConnectionManager, MultiplexedConnection};
use redis::{PushInfo, PushKind, Value};

use crate::connection::Shard;

/// Most member names cached per shard (each group also counts one);
/// groups beyond it are evicted.
const CACHED_NAMES: usize = 200_000;

/// Most member names a tracking link reads in one reply: a bigger group is
/// read a page at a time, so neither a reply nor the read buffer the
/// connection keeps after it holds a whole big group.
const PAGE: usize = 2_000;

/// Turns a group's member names, read a page at a time, into what a send
/// uses (and the cache keeps): `T`.
pub(crate) trait Collect<T> {
    /// Takes the next names, in the group's order.
    fn add(&mut self, names: Vec<String>);
    /// How many names were added.
    fn count(&self) -> usize;
    /// What the names make.
    fn finish(self) -> T;
}

/// Per shard: the tracking link and the groups it vouches for. `T` is what
/// a group's member names are turned into for sending.
#[derive(Debug)]
pub(crate) struct GroupCache<T> {
    shards: Box<[Arc<Tracked<T>>]>,
    /// Held while a shard's link is opened, so concurrent sends open one.
    opening: Box<[tokio::sync::Mutex<()>]>,
}

/// One shard's link and cache.
#[derive(Debug)]
struct Tracked<T> {
    state: Mutex<State<T>>,
}

#[derive(Debug)]
struct State<T> {
    link: Link,
    /// How many links were opened (or tried): the open link is number
    /// `opened`, so that a late push from a closed one cannot close it.
    opened: u64,
    /// By group key.
    groups: HashMap<String, Cached<T>, RandomState>,
    /// What `groups` holds, in member names plus one per group (so that
    /// many empty groups are bounded too): at most [`CACHED_NAMES`].
    kept: usize,
    /// Bumped by every invalidation and close: a read during which it
    /// changed is not stored.
    changes: u64,
}

#[derive(Debug)]
enum Link {
    Closed,
    /// Link number `opened`.
    Open(MultiplexedConnection),
    /// The server refuses tracking: read on the command connection.
    Refused,
}

#[derive(Debug)]
struct Cached<T> {
    members: Arc<T>,
    names: usize,
}

/// How one group read goes: through a shard's tracking link, or every
/// time from Redis on the command connection.
pub(crate) enum Reader<T> {
    /// Through the tracking link, using the cache.
    Tracked(TrackedReader<T>),
    /// On the command connection, no cache (tracking refused).
    Plain(ConnectionManager),
}

/// A shard's link as a send finds it.
enum Now<T> {
    Open(TrackedReader<T>),
    Refused,
    /// Closed, after this many links were opened (or tried).
    Closed(u64),
}

/// A shard's tracking link, lent to one read.
pub(crate) struct TrackedReader<T> {
    tracked: Arc<Tracked<T>>,
    connection: MultiplexedConnection,
    number: u64,
}

impl<T: Send + Sync + 'static> GroupCache<T> {
    /// An empty cache for `shards` shards; links open on first use.
    pub(crate) fn new(shards: usize) -> Self {
        Self {
            shards: (0..shards)
                .map(|_| {
                    Arc::new(Tracked {
                        state: Mutex::new(State::new()),
                    })
                })
                .collect(),
            opening: (0..shards).map(|_| tokio::sync::Mutex::new(())).collect(),
        }
    }

    /// How to read a group on shard `index` (`shard`): its tracking link,
    /// opened now if closed, or the command connection where the server
    /// refuses tracking.
    pub(crate) async fn reader(
        &self,
        index: usize,
        shard: &Shard,
        operation: &'static str,
    ) -> Result<Reader<T>, LayerError> {
        let tracked = &self.shards[index];
        let plain = async { Ok(Reader::Plain(shard.commands(operation).await?)) };
        let tried = match tracked.link() {
            Now::Open(reader) => return Ok(Reader::Tracked(reader)),
            Now::Refused => return plain.await,
            Now::Closed(tried) => tried,
        };
        let _opening = self.opening[index].lock().await;
        let number = match tracked.link() {
            Now::Open(reader) => return Ok(Reader::Tracked(reader)),
            // Another send failed to open it meanwhile: one wait for a
            // connect is enough; the command connection has its own.
            Now::Refused => return plain.await,
            Now::Closed(now) if now != tried => return plain.await,
            Now::Closed(now) => now + 1,
        };
        let sink = Arc::downgrade(tracked);
        let pushes = move |push: PushInfo| {
            if let Some(tracked) = Weak::upgrade(&sink) {
                tracked.pushed(number, &push);
            }
            Ok::<(), std::convert::Infallible>(())
        };
        let opened = shard.tracking(operation, pushes).await;
        let connection = {
            let mut state = lock(&tracked.state);
            state.opened = number;
            match opened {
                Ok(Some(connection)) => {
                    state.link = Link::Open(connection.clone());
                    Ok(Some(connection))
                }
                Ok(None) => {
                    state.link = Link::Refused;
                    Ok(None)
                }
                Err(e) => Err(e),
            }
        };
        match connection? {
            Some(connection) => Ok(Reader::Tracked(TrackedReader {
                tracked: tracked.clone(),
                connection,
                number,
            })),
            None => plain.await,
        }
    }

    /// Forgets every group and closes the links (`close()`).
    pub(crate) fn reset(&self) {
        for tracked in &self.shards {
            lock(&tracked.state).close();
        }
    }
}

impl<T> Tracked<T> {
    /// The link as it stands, with a reader on it if open.
    fn link(self: &Arc<Self>) -> Now<T> {
        let state = lock(&self.state);
        match &state.link {
            Link::Open(connection) => Now::Open(TrackedReader {
                tracked: self.clone(),
                connection: connection.clone(),
                number: state.opened,
            }),
            Link::Refused => Now::Refused,
            Link::Closed => Now::Closed(state.opened),
        }
    }

    /// A push from link `number`: an invalidation drops the groups it names
    /// (all of them for a flush), a disconnection closes the link.
    fn pushed(&self, number: u64, push: &PushInfo) {
        let mut state = lock(&self.state);
        match push.kind {
            PushKind::Invalidate => {
                state.changes += 1;
                match push.data.first() {
                    Some(Value::Array(keys)) => {
                        for key in keys {
                            match key {
                                Value::BulkString(key) => {
                                    if let Ok(key) = std::str::from_utf8(key) {
                                        state.forget(key);
                                    }
                                }
                                _ => state.clear(),
                            }
                        }
                    }
                    // `FLUSHALL`, `FLUSHDB`, or a shape not known: everything.
                    _ => state.clear(),
                }
            }
            PushKind::Disconnection => {
                if state.is_open(number) {
                    state.close();
                } else {
                    state.changes += 1;
                    state.clear();
                }
            }
            _ => {}
        }
    }
}

impl<T> State<T> {
    fn new() -> Self {
        Self {
            link: Link::Closed,
            opened: 0,
            groups: HashMap::default(),
            kept: 0,
            changes: 0,
        }
    }

    /// Keeps `members` (`names` of them) for `key`, forgetting other groups
    /// to make room; a group bigger than the whole cache is not kept.
    fn keep(&mut self, key: &str, members: Arc<T>, names: usize) {
        let weight = names + 1;
        if weight > CACHED_NAMES {
            return;
        }
        self.forget(key);
        while self.kept + weight > CACHED_NAMES {
            let Some(evicted) = self.groups.keys().next().cloned() else {
                break;
            };
            self.forget(&evicted);
        }
        self.kept += weight;
        self.groups
            .insert(key.to_owned(), Cached { members, names });
    }

    /// Whether link `number` is the open one.
    fn is_open(&self, number: u64) -> bool {
        matches!(self.link, Link::Open(_)) && self.opened == number
    }

    fn forget(&mut self, key: &str) {
        if let Some(cached) = self.groups.remove(key) {
            self.kept -= cached.names + 1;
        }
    }

    fn clear(&mut self) {
        self.groups.clear();
        self.kept = 0;
    }

    /// Closes the link (the next read opens another) and forgets everything
    /// it vouched for.
    fn close(&mut self) {
        self.link = Link::Closed;
        self.changes += 1;
        self.clear();
    }
}

impl<T> TrackedReader<T> {
    /// Reads `key`'s members (pruning those scored before `prune`): the
    /// cached ones if Redis still vouches for them, else read now into a
    /// collector from `collect`. Any error closes the link.
    pub(crate) async fn members<C: Collect<T>>(
        mut self,
        key: &str,
        prune: i64,
        collect: impl Fn() -> C,
    ) -> redis::RedisResult<Arc<T>> {
        let result = self.read(key, prune, collect).await;
        if result.is_err() {
            self.close();
        }
        result
    }

    async fn read<C: Collect<T>>(
        &mut self,
        key: &str,
        prune: i64,
        collect: impl Fn() -> C,
    ) -> redis::RedisResult<Arc<T>> {
        if let Some((members, names)) = self.cached(key) {
            // The barrier: its reply comes after every invalidation of a
            // change completed before this read began.
            let (pruned, left): (usize, usize) = redis::pipe()
                .atomic()
                .cmd("ZREMRANGEBYSCORE")
                .arg(key)
                .arg(0)
                .arg(prune)
                .cmd("ZCARD")
                .arg(key)
                .query_async(&mut self.connection)
                .await?;
            if pruned == 0 && left == names && self.still_cached(key, &members) {
                return Ok(members);
            }
        }
        let changes = lock(&self.tracked.state).changes;
        let mut collected = collect();
        let mut page = prune_and_read(&mut self.connection, key, prune, PAGE).await?;
        let paged = page.len() == PAGE;
        while page.len() == PAGE {
            collected.add(page);
            let start = collected.count();
            page = redis::cmd("ZRANGE")
                .arg(key)
                .arg(start)
                .arg(start + PAGE - 1)
                .query_async(&mut self.connection)
                .await?;
        }
        collected.add(page);
        if paged && lock(&self.tracked.state).changes != changes {
            // Something changed between the pages (the group, or another
            // on this shard): they may not agree. Read it whole instead.
            let mut whole = collect();
            whole.add(prune_and_read(&mut self.connection, key, prune, 0).await?);
            return Ok(Arc::new(whole.finish()));
        }
        let count = collected.count();
        let members = Arc::new(collected.finish());
        self.store(key, &members, count, changes);
        Ok(members)
    }

    fn cached(&self, key: &str) -> Option<(Arc<T>, usize)> {
        let state = lock(&self.tracked.state);
        state
            .groups
            .get(key)
            .map(|cached| (cached.members.clone(), cached.names))
    }

    fn still_cached(&self, key: &str, members: &Arc<T>) -> bool {
        let state = lock(&self.tracked.state);
        state
            .groups
            .get(key)
            .is_some_and(|cached| Arc::ptr_eq(&cached.members, members))
    }

    /// Caches `members` unless the cache changed since `changes` was read
    /// (an invalidation may have been for them).
    fn store(&self, key: &str, members: &Arc<T>, names: usize, changes: u64) {
        let mut state = lock(&self.tracked.state);
        if state.changes == changes {
            state.keep(key, members.clone(), names);
        }
    }

    /// Closes this link after an error on it, unless it was replaced.
    fn close(&self) {
        let mut state = lock(&self.tracked.state);
        if state.is_open(self.number) {
            state.close();
        }
    }
}

impl<T> Reader<T> {
    /// `key`'s members, pruned of those scored before `prune` and collected
    /// by a collector from `collect`: cached where the link vouches for them.
    pub(crate) async fn members<C: Collect<T>>(
        self,
        key: &str,
        prune: i64,
        collect: impl Fn() -> C,
    ) -> redis::RedisResult<Arc<T>> {
        match self {
            Self::Tracked(reader) => reader.members(key, prune, collect).await,
            Self::Plain(mut connection) => {
                // Without tracking nothing would tell of a change between
                // pages: the group is read whole, in one MULTI.
                let mut collected = collect();
                collected.add(prune_and_read(&mut connection, key, prune, 0).await?);
                Ok(Arc::new(collected.finish()))
            }
        }
    }
}

/// Prunes members of `key` scored before `prune` and reads the first
/// `limit` of the rest (all of them for 0), in one MULTI.
async fn prune_and_read(
    connection: &mut impl ConnectionLike,
    key: &str,
    prune: i64,
    limit: usize,
) -> redis::RedisResult<Vec<String>> {
    let last = i64::try_from(limit).map_or(-1, |limit| limit - 1);
    let (members,): (Vec<String>,) = redis::pipe()
        .atomic()
        .cmd("ZREMRANGEBYSCORE")
        .arg(key)
        .arg(0)
        .arg(prune)
        .ignore()
        .cmd("ZRANGE")
        .arg(key)
        .arg(0)
        .arg(last)
        .query_async(connection)
        .await?;
    Ok(members)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_empty_groups_are_bounded_too() {
        let mut state = State::<()>::new();
        for n in 0..CACHED_NAMES + 10 {
            state.keep(&format!("g{n}"), Arc::new(()), 0);
        }
        assert_eq!(state.groups.len(), CACHED_NAMES);
        assert_eq!(state.kept, CACHED_NAMES);
    }

    #[test]
    fn a_big_group_evicts_others_and_one_bigger_than_the_cache_is_not_kept() {
        let mut state = State::<()>::new();
        state.keep("a", Arc::new(()), CACHED_NAMES / 2);
        state.keep("b", Arc::new(()), CACHED_NAMES / 4);
        // Room for c and either of a or b, not both.
        state.keep("c", Arc::new(()), CACHED_NAMES / 2 - 10);
        assert!(state.groups.contains_key("c"));
        assert_eq!(state.groups.len(), 2, "one of a and b made room");
        assert!(state.kept <= CACHED_NAMES);
        state.keep("c", Arc::new(()), CACHED_NAMES / 4);
        assert_eq!(
            state.groups["c"].names,
            CACHED_NAMES / 4,
            "kept again, replacing"
        );
        state.keep("huge", Arc::new(()), CACHED_NAMES);
        assert!(!state.groups.contains_key("huge"));
        state.forget("c");
        state.forget("a");
        state.forget("b");
        assert_eq!(state.kept, 0);
    }
}
