//! The distributed limiter: one Lua script per decision, on the Redis
//! server's clock, so every worker process shares one log per key.
//!
//! Layout (every key carries the namespace's hash tag, like the queue's):
//! - `{ns}:rl:<provider>:<user>`         sorted set; member = permit id,
//!   score = µs server time by which that submit reached the provider at
//!   the latest: its settlement time, or grant + max submit time while it
//!   is in flight. Only entries of the last long window are kept; the key
//!   expires a long window after its newest entry could.
//! - `{ns}:rl:<provider>:<user>:blocked` string; the µs server time until
//!   which the provider throttles the key; expires then.

use std::sync::LazyLock;
use std::time::Duration;

use byok_redis::{RedisConn, RedisTarget, Timeouts};
use redis::Script;

use byok_core::RateLimits;

use crate::{
    Acquire, Decision, IN_FLIGHT_RECHECK, KeyState, LimitKey, MAX_BLOCK, Permit, RateLimitError,
    RateLimiter, Windows,
};

/// How long one limiter call may wait for Redis before it is an error (which
/// workers answer by waiting a little and asking again).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);

/// Shared Lua: the server clock in µs (exact in a double until the year 2255).
const PRELUDE: &str = r#"
local function clock_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
-- Lua 5.1's tostring keeps 14 digits; times have 16.
local function int(n)
  return string.format('%.0f', n)
end
local function block_until(key)
  local v = redis.call('GET', key)
  if not v then return 0 end
  local n = tonumber(v)
  if not n then
    error('byok rate limiter: ' .. key .. ' does not hold a time')
  end
  return n
end
"#;

/// Decides one acquire. KEYS: log, blocked. ARGV: short window µs, long
/// window µs, per_minute, per_hour, log TTL ms, max submit time µs, permit
/// id, in-flight recheck µs. Returns {1, grant time µs} or {0, wait µs}
/// (wait ≥ 1).
///
/// A permit is granted while fewer than `quota` entries have a score
/// above now − window, for both windows, i.e. while the quota-th highest
/// score is at or before now − window. Otherwise the wait is until that
/// entry leaves the window — or, when it is still in flight (its score is
/// a presumption in the future), a short recheck. A Wait writes nothing.
static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{PRELUDE}{}",
        r#"
local short, long = tonumber(ARGV[1]), tonumber(ARGV[2])
local per_minute, per_hour = tonumber(ARGV[3]), tonumber(ARGV[4])
local hold, recheck = tonumber(ARGV[6]), tonumber(ARGV[8])
local now = clock_us()
local function window_wait(quota, window)
  -- ZRANGE -q -q is the q-th highest score; empty when there are fewer.
  local nth = redis.call('ZRANGE', KEYS[1], -quota, -quota, 'WITHSCORES')
  if not nth[2] then
    return 0
  end
  local score = tonumber(nth[2])
  if score > now then
    return math.min(score + window - now, recheck)
  end
  return score + window - now
end
local wait = math.max(block_until(KEYS[2]) - now, window_wait(per_minute, short), window_wait(per_hour, long))
if wait > 0 then
  return {0, wait}
end
-- Entries at or before now - long are outside every window from now on.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', int(now - long))
redis.call('ZADD', KEYS[1], int(now + hold), ARGV[7])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return {1, now}
"#
    ))
});

/// Settles a permit. KEYS: log. ARGV: permit id, 1 (sent: stamp now) or 0
/// (not sent: give it back), log TTL ms. A permit already gone (settled
/// twice, or outlived) is left alone. Returns 1 when an entry changed.
static FINISH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{PRELUDE}{}",
        r#"
if ARGV[2] == '1' then
  local changed = redis.call('ZADD', KEYS[1], 'XX', 'CH', int(clock_us()), ARGV[1])
  -- A submit slower than the max submit time stamps later than its grant
  -- presumed: keep the log at least a long window past the stamp.
  if changed == 1 and redis.call('PTTL', KEYS[1]) < tonumber(ARGV[3]) then
    redis.call('PEXPIRE', KEYS[1], ARGV[3])
  end
  return changed
end
return redis.call('ZREM', KEYS[1], ARGV[1])
"#
    ))
});

/// Blocks a key. KEYS: blocked. ARGV: block µs, TTL ms. Keeps a longer block
/// already in force. Returns the µs server time the key is blocked until.
static BLOCK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{PRELUDE}{}",
        r#"
local until_ = clock_us() + tonumber(ARGV[1])
local current = block_until(KEYS[1])
if current >= until_ then
  return current
end
redis.call('SET', KEYS[1], int(until_), 'PX', ARGV[2])
return until_
"#
    ))
});

/// Reads a key's standing. KEYS: log, blocked. ARGV: short window µs, long window µs.
/// Returns {in short window, in long window, in flight, blocked for µs (0: not)}, counted
/// as ACQUIRE counts: an entry is in a window while its score is after now − window.
static INSPECT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{PRELUDE}{}",
        r#"
local now = clock_us()
local function after(t)
  return redis.call('ZCOUNT', KEYS[1], '(' .. int(t), '+inf')
end
local blocked = block_until(KEYS[2]) - now
if blocked < 0 then blocked = 0 end
return {after(now - tonumber(ARGV[1])), after(now - tonumber(ARGV[2])), after(now), blocked}
"#
    ))
});

/// Rate limits shared by every worker process through Redis. Cheap to clone
/// (the connection is multiplexed and reconnects by itself).
#[derive(Clone)]
pub struct RedisLimiter {
    conn: RedisConn,
    namespace: String,
    windows: Windows,
}

impl std::fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the connection: its info may carry a password.
        f.debug_struct("RedisLimiter")
            .field("namespace", &self.namespace)
            .field("windows", &self.windows)
            .finish_non_exhaustive()
    }
}

impl RedisLimiter {
    /// Connects to `url` (`redis://…`, `rediss://…`, or a cluster's
    /// `redis+cluster://h1:p1,h2:p2`) with minute/hour windows. The connection reconnects by itself, with backoff, when it
    /// drops; calls made meanwhile fail with [`RateLimitError::Redis`].
    pub async fn connect(
        url: &str,
        namespace: impl Into<String>,
    ) -> Result<RedisLimiter, RateLimitError> {
        let target = RedisTarget::parse(url)?;
        let conn = RedisConn::open(
            &target,
            Timeouts {
                connect: RESPONSE_TIMEOUT,
                response: RESPONSE_TIMEOUT,
            },
        )
        .await?;
        Ok(RedisLimiter::from_connection(conn, namespace))
    }

    /// A limiter on an existing connection (shared with the queue, say).
    pub fn from_connection(conn: RedisConn, namespace: impl Into<String>) -> RedisLimiter {
        RedisLimiter {
            conn,
            namespace: namespace.into(),
            windows: Windows::default(),
        }
    }

    /// The same limiter with other window lengths (tests). Every process
    /// sharing a namespace must use the same windows.
    pub fn with_windows(mut self, windows: Windows) -> RedisLimiter {
        self.windows = windows;
        self
    }

    /// The namespace (the hash tag of every key).
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// `{ns}:rl:<provider>:<user>`: the sorted set of the key's grant times.
    pub fn log_key(&self, key: &LimitKey) -> String {
        // `{ns}` is the Redis Cluster hash tag: both keys of a limit share a
        // slot, so one script may touch both.
        format!("{{{}}}:rl:{key}", self.namespace)
    }

    /// `{ns}:rl:<provider>:<user>:blocked`: the provider's block of the key.
    pub fn block_key(&self, key: &LimitKey) -> String {
        format!("{{{}}}:rl:{key}:blocked", self.namespace)
    }

    /// [`RateLimiter::acquire`], telling the grant time (since the UNIX epoch
    /// on the Redis server's clock).
    pub async fn decide(
        &self,
        key: &LimitKey,
        limits: RateLimits,
    ) -> Result<Decision, RateLimitError> {
        let limits = crate::checked(limits)?;
        let permit = Permit::new(*key);
        let hold = self.windows.max_submit_time();
        let (granted, value): (i64, i64) = ACQUIRE
            .key(self.log_key(key))
            .key(self.block_key(key))
            .arg(micros(self.windows.short()))
            .arg(micros(self.windows.long()))
            .arg(limits.per_minute)
            .arg(limits.per_hour)
            .arg(ttl_ms(self.windows.long() + hold))
            .arg(micros(hold))
            .arg(permit.id())
            .arg(micros(IN_FLIGHT_RECHECK))
            .invoke_async(&mut self.conn.clone())
            .await?;
        let value = u64::try_from(value)
            .map_err(|_| RateLimitError::Protocol(format!("negative time {value}")))?;
        match granted {
            1 => Ok(Decision::Granted {
                at: Duration::from_micros(value),
                permit,
            }),
            // A zero wait would be a permit that was not recorded: never.
            0 if value > 0 => Ok(Decision::Wait(Duration::from_micros(value))),
            _ => Err(RateLimitError::Protocol(format!(
                "answer {{{granted}, {value}}}"
            ))),
        }
    }
}

#[async_trait::async_trait]
impl RateLimiter for RedisLimiter {
    async fn acquire(&self, key: &LimitKey, limits: RateLimits) -> Result<Acquire, RateLimitError> {
        self.decide(key, limits).await.map(Acquire::from)
    }

    async fn finish(&self, permit: Permit, sent: bool) -> Result<(), RateLimitError> {
        let _changed: i64 = FINISH
            .key(self.log_key(permit.key()))
            .arg(permit.id())
            .arg(if sent { "1" } else { "0" })
            .arg(ttl_ms(self.windows.long()))
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    async fn block(&self, key: &LimitKey, for_: Duration) -> Result<(), RateLimitError> {
        let for_ = for_.min(MAX_BLOCK);
        let _until: i64 = BLOCK
            .key(self.block_key(key))
            .arg(micros(for_))
            .arg(ttl_ms(for_))
            .invoke_async(&mut self.conn.clone())
            .await?;
        tracing::debug!(key = %key, ?for_, "rate-limit key blocked on every worker");
        Ok(())
    }

    async fn inspect(&self, key: &LimitKey) -> Result<KeyState, RateLimitError> {
        let (short, long, in_flight, blocked): (u64, u64, u64, u64) = INSPECT
            .key(self.log_key(key))
            .key(self.block_key(key))
            .arg(micros(self.windows.short()))
            .arg(micros(self.windows.long()))
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(KeyState {
            in_short_window: short,
            in_long_window: long,
            in_flight,
            blocked_for: (blocked > 0).then(|| Duration::from_micros(blocked)),
        })
    }
}

/// Whole microseconds (windows and blocks are at most 30 days: no overflow).
fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// A key TTL that outlasts `d`: whole milliseconds rounded up, plus one
/// (never zero, which `PX`/`PEXPIRE` refuse or treat as deletion).
fn ttl_ms(d: Duration) -> u64 {
    micros(d).div_ceil(1000) + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_outlast_their_duration() {
        assert_eq!(ttl_ms(Duration::ZERO), 1);
        assert_eq!(ttl_ms(Duration::from_micros(1)), 2);
        assert_eq!(ttl_ms(Duration::from_millis(600)), 601);
        assert_eq!(micros(Duration::from_secs(3600)), 3_600_000_000);
    }
}
