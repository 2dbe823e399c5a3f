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

/// History `sync` (not a channels_redis operation: our own keys beside the
/// group's history channel). Moves every member of the history channel's
/// ZSET (what group sends queued there, in their order) to the end of the
/// log LIST as `<ms>|<member>`, numbering them after the meta HASH's `top`;
/// creates the meta (a new `epoch`, `top` 0, an empty log) when it is gone;
/// trims the log to `size` entries and drops entries older than `ttl_ms`;
/// returns `{epoch, top, first, entries after ARGV[1]}`.
/// KEYS = history channel key, log key, meta key; ARGV = after, size,
/// ttl_ms, new epoch, meta expiry (s).
pub(crate) static HISTORY_SYNC: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local epoch = redis.call('HGET', KEYS[3], 'epoch')
local top = 0
if epoch then
  top = tonumber(redis.call('HGET', KEYS[3], 'top')) or 0
else
  epoch = ARGV[4]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[3], 'epoch', epoch, 'top', 0)
end
local items = redis.call('ZRANGE', KEYS[1], 0, -1)
if #items > 0 then
  for i = 1, #items do
    redis.call('RPUSH', KEYS[2], now .. '|' .. items[i])
  end
  for i = 1, #items, 500 do
    redis.call('ZREM', KEYS[1], unpack(items, i, math.min(i + 499, #items)))
  end
  top = top + #items
  redis.call('HSET', KEYS[3], 'top', top)
end
local size = tonumber(ARGV[2])
local length = redis.call('LLEN', KEYS[2])
if length > size then
  redis.call('LTRIM', KEYS[2], length - size, -1)
  length = size
end
local cutoff = now - tonumber(ARGV[3])
while length > 0 do
  local head = redis.call('LINDEX', KEYS[2], 0)
  local bar = string.find(head, '|', 1, true)
  if bar and tonumber(string.sub(head, 1, bar - 1)) >= cutoff then
    break
  end
  redis.call('LPOP', KEYS[2])
  length = length - 1
end
redis.call('EXPIRE', KEYS[3], ARGV[5])
if length > 0 then
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
local first = top - length + 1
local from = math.max(tonumber(ARGV[1]) + 1, first)
local entries = {}
if from <= top then
  entries = redis.call('LRANGE', KEYS[2], from - first, -1)
end
return {epoch, top, first, entries}
",
    )
});
