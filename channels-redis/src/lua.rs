//! The Lua scripts the core layer runs. Each is loaded once per server and
//! invoked with EVALSHA, falling back to EVAL (and reloading) on NOSCRIPT, via
//! [`redis::Script`].
//!
//! Scripts only change how many round trips an operation takes; the data they
//! leave in Redis is exactly what channels_redis leaves (WIRE.md §2).

use std::sync::LazyLock;

use redis::Script;

/// `send`: prune expired messages, check capacity, add, refresh the TTL.
/// KEYS[1] = channel key; ARGV = prune_before, capacity, now, member, expiry.
/// Returns 1 when added, 0 when the channel is full.
pub(crate) static SEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, ARGV[1])
if redis.call('ZCOUNT', KEYS[1], '-inf', '+inf') >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
",
    )
});

/// `group_send` on one shard: for each key, prune, then add its member unless
/// the key is at capacity. KEYS = n channel keys; ARGV = n members, n
/// capacities, now, expiry, prune_before. Returns the 1-based indices of the
/// keys that were full.
pub(crate) static GROUP_SEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local n = #KEYS
local now, expiry, prune_before = ARGV[2 * n + 1], ARGV[2 * n + 2], ARGV[2 * n + 3]
local full = {}
for i = 1, n do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], 0, prune_before)
  if redis.call('ZCOUNT', KEYS[i], '-inf', '+inf') < tonumber(ARGV[n + i]) then
    redis.call('ZADD', KEYS[i], now, ARGV[i])
    redis.call('EXPIRE', KEYS[i], expiry)
  else
    full[#full + 1] = i
  end
end
return full
",
    )
});

/// Puts every backed-up member of `key$inflight` back into `key` with its old
/// score and deletes the backup. KEYS[1] = key, KEYS[2] = backup.
pub(crate) static RESTORE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local saved = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
for i = 1, #saved, 2 do
  redis.call('ZADD', KEYS[1], saved[i + 1], saved[i])
end
redis.call('DEL', KEYS[2])
return #saved / 2
",
    )
});

/// The receive loop's batch pop: drops the previous batch's backup when
/// ARGV[1] is "1" (it was routed), pops up to ARGV[2] members, backs each up
/// in KEYS[2] with its score, and returns them as member, score pairs.
/// KEYS[1] = key, KEYS[2] = backup.
pub(crate) static DRAIN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if ARGV[1] == '1' then
  redis.call('DEL', KEYS[2])
end
local popped = redis.call('ZPOPMIN', KEYS[1], ARGV[2])
for i = 1, #popped, 2 do
  redis.call('ZADD', KEYS[2], popped[i + 1], popped[i])
end
return popped
",
    )
});

/// `flush`: deletes every key matching ARGV[1], 5000 per DEL.
pub(crate) static FLUSH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local keys = redis.call('KEYS', ARGV[1])
for i = 1, #keys, 5000 do
  redis.call('DEL', unpack(keys, i, math.min(i + 4999, #keys)))
end
return #keys
",
    )
});
