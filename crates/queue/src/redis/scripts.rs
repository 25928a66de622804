//! The Lua scripts of the Redis engine. Each declares every key it touches
//! in KEYS, and all keys of a namespace share the `{ns}` hash tag, so a
//! namespace lives in one Redis Cluster slot and every script is atomic.
//!
//! Layout (see the crate README):
//! - `{ns}:jobs`    stream, consumer group `workers`; entry fields `i` (item
//!   id), `a` (attempts counted before this entry), `p` (payload).
//! - `{ns}:delayed` sorted set; score = due time in ms (Redis clock);
//!   member = `<attempts>\n<item id>\n<payload>`.
//! - `{ns}:dead`    stream capped near `queue.dead_retention`; fields `i`,
//!   `a`, `p`, `e` (last error), `r` (reason).
//!
//! With `queue.partitions` above 1, partition `i > 0` has the same keys under
//! `{ns:i}`, plus `{ns:i}:retired` once retired; `{ns}:partitions` records the
//! partition count (`partitions.rs`).
//!
//! Times come from the Redis server's clock (`TIME`), so the clocks of the
//! worker hosts never matter.

use std::sync::LazyLock;

use redis::Script;

/// Shared Lua helpers, prepended to scripts that need them.
const PRELUDE: &str = r#"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function field(fields, name)
  for i = 1, #fields, 2 do
    if fields[i] == name then return fields[i + 1] end
  end
  return nil
end
local function member(attempts, id, payload)
  return tostring(attempts) .. '\n' .. id .. '\n' .. payload
end
local function split_member(m)
  local a = string.find(m, '\n', 1, true)
  if not a then return nil end
  local b = string.find(m, '\n', a + 1, true)
  if not b then return nil end
  return string.sub(m, 1, a - 1), string.sub(m, a + 1, b - 1), string.sub(m, b + 1)
end
local function to_dead(dead, maxlen, id, attempts, payload, err, reason)
  redis.call('XADD', dead, 'MAXLEN', '~', maxlen, '*', 'i', id, 'a', attempts, 'p', payload, 'e', err, 'r', reason)
end
"#;

fn script(body: &str) -> Script {
    Script::new(&format!("{PRELUDE}\n{body}"))
}

/// Enqueues items: due ones with `XADD`, delayed ones into the sorted set at
/// the server's now + delay. KEYS: jobs, delayed, retired. ARGV: groups of four
/// (id, attempts, payload, delay_ms). Returns how many were added, or -1 (and adds
/// nothing) when the partition is retired (`partitions.rs`).
pub(crate) static PUSH: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
if redis.call('EXISTS', KEYS[3]) == 1 then return -1 end
local now = nil
for i = 1, #ARGV, 4 do
  local id, attempts, payload, delay = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  if delay <= 0 then
    redis.call('XADD', KEYS[1], '*', 'i', id, 'a', attempts, 'p', payload)
  else
    now = now or now_ms()
    redis.call('ZADD', KEYS[2], now + delay, member(attempts, id, payload))
  end
end
return #ARGV / 4
"#,
    )
});

/// Settles deliveries. KEYS: jobs, delayed, dead. ARGV[1] group, ARGV[2]
/// dead maxlen, ARGV[3] consumer, then groups of six (kind, entry id, item
/// id, attempts, payload, delay_ms or error). kind: `a` ack, `s` schedule
/// again after delay_ms with `attempts`, `d` dead with the error.
/// The entry is acknowledged and deleted in the same step, so finished work
/// never accumulates in the stream. A reschedule or dead-letter is applied
/// only while this consumer still owns the entry: if another worker
/// reclaimed it after a stall, that worker settles it, and the item is not
/// duplicated.
pub(crate) static SETTLE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local now = nil
local settled = 0
for i = 4, #ARGV, 6 do
  local kind, entry, id, attempts, payload, extra = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5]
  local owned = true
  if kind ~= 'a' then
    local p = redis.call('XPENDING', KEYS[1], ARGV[1], entry, entry, 1)
    owned = p[1] ~= nil and p[1][2] == ARGV[3]
  end
  if owned then
    if kind == 's' then
      local delay = tonumber(extra)
      if delay <= 0 then
        redis.call('XADD', KEYS[1], '*', 'i', id, 'a', attempts, 'p', payload)
      else
        now = now or now_ms()
        redis.call('ZADD', KEYS[2], now + delay, member(attempts, id, payload))
      end
    elseif kind == 'd' then
      to_dead(KEYS[3], ARGV[2], id, attempts, payload, extra, 'failed')
    end
    settled = settled + redis.call('XACK', KEYS[1], ARGV[1], entry)
    redis.call('XDEL', KEYS[1], entry)
  end
end
return settled
"#,
    )
});

/// Renews the leases of entries this consumer still owns (`XCLAIM` with
/// min-idle 0 and JUSTID resets the idle time without counting a delivery).
/// Entries another consumer reclaimed meanwhile are left to it: renewing
/// them would steal them back. KEYS: jobs. ARGV: group, consumer, ids….
/// Returns the ids no longer owned.
pub(crate) static EXTEND: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local owned, lost = {}, {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if p[1] and p[1][2] == ARGV[2] then
    owned[#owned + 1] = ARGV[i]
  else
    lost[#lost + 1] = ARGV[i]
  end
end
if #owned > 0 then
  redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, unpack(owned), 'JUSTID')
end
return lost
"#,
    )
});

/// Moves up to ARGV[1] due delayed items to the stream (never more per call,
/// so a huge due backlog costs many short calls, not one long block).
/// KEYS: delayed, jobs. Returns {moved, ms until the next due item or -1}.
pub(crate) static PROMOTE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, m in ipairs(due) do
  local attempts, id, payload = split_member(m)
  if attempts then
    redis.call('XADD', KEYS[2], '*', 'i', id, 'a', attempts, 'p', payload)
  end
end
if #due > 0 then
  redis.call('ZREM', KEYS[1], unpack(due))
end
local next_due = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local wait = -1
if next_due[2] then
  wait = math.max(0, tonumber(next_due[2]) - now)
end
return {#due, wait}
"#,
    )
});

/// Takes over entries idle for longer than the visibility timeout (their
/// worker died or stalled). XAUTOCLAIM counts a delivery; an entry whose
/// counted attempts plus deliveries exceed max_attempts is dead
/// (`max_deliveries`: a poison item that kills its worker every time).
/// When the oldest idle entry has already been delivered twice, only one
/// entry is taken, so a poison item does not drag its batch-mates down with
/// it. KEYS: jobs, dead. ARGV: group, consumer, min_idle_ms, count,
/// max_attempts, dead maxlen. Returns {entry id, deliveries, i, a, p}….
pub(crate) static RECLAIM: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local oldest = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', ARGV[3], '-', '+', 1)
if not oldest[1] then return {} end
local count = tonumber(ARGV[4])
if tonumber(oldest[1][4]) >= 2 then count = 1 end
local res = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], '0-0', 'COUNT', count)
local out = {}
for _, e in ipairs(res[2]) do
  local entry, fields = e[1], e[2]
  if fields then
    local p = redis.call('XPENDING', KEYS[1], ARGV[1], entry, entry, 1)
    local deliveries = tonumber(p[1][4])
    local id, attempts, payload = field(fields, 'i'), tonumber(field(fields, 'a') or '0') or 0, field(fields, 'p')
    if id == nil or payload == nil then
      to_dead(KEYS[2], ARGV[6], id or '', attempts, payload or '', 'malformed queue entry', 'malformed')
      redis.call('XACK', KEYS[1], ARGV[1], entry)
      redis.call('XDEL', KEYS[1], entry)
    elseif attempts + deliveries > tonumber(ARGV[5]) then
      to_dead(KEYS[2], ARGV[6], id, attempts + deliveries - 1, payload,
        'delivered ' .. deliveries .. ' times without finishing (the worker died each time)', 'max_deliveries')
      redis.call('XACK', KEYS[1], ARGV[1], entry)
      redis.call('XDEL', KEYS[1], entry)
    else
      out[#out + 1] = {entry, deliveries, id, attempts, payload}
    end
  end
end
-- Entries deleted from the stream while pending (res[3]) are dropped from the PEL by XAUTOCLAIM.
return out
"#,
    )
});

/// Hands fetched but unstarted entries back (graceful shutdown): re-added at
/// the tail with the same attempts, then acknowledged. Only entries this
/// consumer still owns. KEYS: jobs. ARGV: group, consumer, then triples
/// (entry id, item id, attempts, payload) — groups of four.
pub(crate) static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local released = 0
for i = 3, #ARGV, 4 do
  local entry = ARGV[i]
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], entry, entry, 1)
  if p[1] and p[1][2] == ARGV[2] then
    redis.call('XADD', KEYS[1], '*', 'i', ARGV[i + 1], 'a', ARGV[i + 2], 'p', ARGV[i + 3])
    redis.call('XACK', KEYS[1], ARGV[1], entry)
    redis.call('XDEL', KEYS[1], entry)
    released = released + 1
  end
end
return released
"#,
    )
});

/// Deletes this consumer if it owns nothing (`DELCONSUMER` would drop the
/// entries it owns, so it is only ever issued after that check, atomically).
/// Also deletes other consumers that own nothing and have been idle for
/// ARGV[3] ms (dead processes). KEYS: jobs. ARGV: group, consumer, gc_idle_ms.
pub(crate) static LEAVE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local removed = 0
local ok, consumers = pcall(redis.call, 'XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
if not ok then return 0 end
for _, c in ipairs(consumers) do
  local name, pending, idle = field(c, 'name'), tonumber(field(c, 'pending')), tonumber(field(c, 'idle'))
  if pending == 0 and (name == ARGV[2] or idle > tonumber(ARGV[3])) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], name)
    removed = removed + 1
  end
end
return removed
"#,
    )
});

/// The group's consumers. KEYS: jobs. ARGV: group. Returns {{name, pending, idle ms}, …};
/// none when the group does not exist yet.
pub(crate) static WORKERS: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local ok, consumers = pcall(redis.call, 'XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
if not ok then return {} end
local out = {}
for _, c in ipairs(consumers) do
  table.insert(out, {field(c, 'name'), tonumber(field(c, 'pending')), tonumber(field(c, 'idle'))})
end
return out
"#,
    )
});

/// Counts. KEYS: jobs, delayed, dead. ARGV: group.
/// Returns {xlen, pel, scheduled, dead, oldest pending age ms or -1}.
/// Every acknowledged entry is deleted, so the undelivered entries are the
/// stream's length minus the pending list.
pub(crate) static STATS: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local xlen = redis.call('XLEN', KEYS[1])
local pel, last = 0, '0-0'
local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', KEYS[1])
if ok then
  for _, g in ipairs(groups) do
    if field(g, 'name') == ARGV[1] then
      pel = tonumber(field(g, 'pending'))
      last = field(g, 'last-delivered-id')
    end
  end
end
local age = -1
local first = redis.call('XRANGE', KEYS[1], '(' .. last, '+', 'COUNT', 1)
if first[1] then
  local ms = tonumber(string.match(first[1][1], '^(%d+)'))
  age = math.max(0, now_ms() - ms)
end
return {xlen, pel, redis.call('ZCARD', KEYS[2]), redis.call('XLEN', KEYS[3]), age}
"#,
    )
});

/// The first undelivered entries (pending). KEYS: jobs. ARGV: group, count.
pub(crate) static LIST_PENDING: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local last = '0-0'
local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', KEYS[1])
if ok then
  for _, g in ipairs(groups) do
    if field(g, 'name') == ARGV[1] then last = field(g, 'last-delivered-id') end
  end
end
return redis.call('XRANGE', KEYS[1], '(' .. last, '+', 'COUNT', tonumber(ARGV[2]))
"#,
    )
});

/// Running entries with their owner, idle time, deliveries and fields.
/// KEYS: jobs. ARGV: group, count. Returns {entry, consumer, idle, deliveries, fields}….
pub(crate) static LIST_RUNNING: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local ok, pending = pcall(redis.call, 'XPENDING', KEYS[1], ARGV[1], '-', '+', tonumber(ARGV[2]))
if not ok then return {} end
local out = {}
for _, p in ipairs(pending) do
  local e = redis.call('XRANGE', KEYS[1], p[1], p[1])
  local fields = {}
  if e[1] then fields = e[1][2] end
  out[#out + 1] = {p[1], p[2], p[3], p[4], fields}
end
return out
"#,
    )
});

/// Moves dead entries back to the stream with fresh attempts. KEYS: dead,
/// jobs. ARGV[1] = 'all' (up to ARGV[2] oldest) or 'ids' followed by dead
/// entry ids. Returns how many moved.
pub(crate) static RETRY_DEAD: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local entries
if ARGV[1] == 'all' then
  entries = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', tonumber(ARGV[2]))
else
  entries = {}
  for i = 2, #ARGV do
    local e = redis.call('XRANGE', KEYS[1], ARGV[i], ARGV[i])
    if e[1] then entries[#entries + 1] = e[1] end
  end
end
for _, e in ipairs(entries) do
  local fields = e[2]
  redis.call('XADD', KEYS[2], '*', 'i', field(fields, 'i') or '', 'a', 0, 'p', field(fields, 'p') or '')
  redis.call('XDEL', KEYS[1], e[1])
end
return #entries
"#,
    )
});

/// Deletes up to ARGV[2] undelivered entries. KEYS: jobs. ARGV: group, count.
pub(crate) static PURGE_PENDING: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local last = '0-0'
local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', KEYS[1])
if ok then
  for _, g in ipairs(groups) do
    if field(g, 'name') == ARGV[1] then last = field(g, 'last-delivered-id') end
  end
end
local entries = redis.call('XRANGE', KEYS[1], '(' .. last, '+', 'COUNT', tonumber(ARGV[2]))
for _, e in ipairs(entries) do redis.call('XDEL', KEYS[1], e[1]) end
return #entries
"#,
    )
});

/// Records a partition count: the larger of the recorded one and ARGV[1]. A count of 1 is
/// never written (no record means one partition). KEYS: recorded. Returns the count now.
pub(crate) static RAISE_PARTITIONS: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local recorded = tonumber(redis.call('GET', KEYS[1]) or '1') or 1
local asked = tonumber(ARGV[1])
if asked > recorded then
  redis.call('SET', KEYS[1], asked)
  return asked
end
return recorded
"#,
    )
});

/// Retires a partition if it holds nothing: no entry in its stream (undelivered or held by a
/// worker), nothing delayed, nothing dead. From then on PUSH refuses it. KEYS: jobs, delayed,
/// dead, retired. Returns 1 when the partition is retired (now or before), 0 when it is not
/// empty yet.
pub(crate) static RETIRE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
if redis.call('EXISTS', KEYS[4]) == 1 then return 1 end
if redis.call('XLEN', KEYS[1]) == 0 and redis.call('ZCARD', KEYS[2]) == 0 and redis.call('XLEN', KEYS[3]) == 0 then
  redis.call('SET', KEYS[4], '1')
  return 1
end
return 0
"#,
    )
});

/// Lowers the recorded partition count from ARGV[1] to ARGV[2], only if it still is ARGV[1]
/// (a process that raised it meanwhile wins). KEYS: recorded. Returns 1 if lowered.
pub(crate) static LOWER_PARTITIONS: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local recorded = tonumber(redis.call('GET', KEYS[1]) or '1') or 1
if recorded ~= tonumber(ARGV[1]) then return 0 end
if tonumber(ARGV[2]) <= 1 then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[2])
end
return 1
"#,
    )
});
