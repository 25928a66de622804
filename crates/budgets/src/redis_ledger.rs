//! The ledger of the distributed shape: one Lua script per change, so that every worker
//! process reserves against the same figures and no two reservations interleave.
//!
//! Layout (every key carries the namespace's hash tag, like the queue's and the rate
//! limiter's, so one script may touch them all on a Redis Cluster):
//! - `{ns}:budget:c:<counter>` hash: `spent` and `reserved` (micro-dollars), and `j:<job>`
//!   = what that job holds. Expires well after its period.
//! - `{ns}:budget:x:<counter>` sorted set: job → the time (ms, server clock) its hold
//!   lapses. A lapsed hold (its job's end was never settled: the worker died in between)
//!   counts as spent at the next reservation, the safe side.
//! - `{ns}:budget:j:<job>` string: the counters the job holds, one per line, for the
//!   settle. Expires with the hold.
//!
//! A counter missing from Redis (a new period, or Redis lost its data) is started from the
//! recorded usage in the database before any reservation counts against it.

use std::sync::LazyLock;
use std::time::Duration;

use byok_core::Usd;
use byok_redis::{RedisConn, RedisTarget, Timeouts};
use byok_store::{BudgetCounter, Reserved, Standing, Store};
use chrono::{DateTime, Utc};
use redis::Script;
use uuid::Uuid;

use crate::BudgetError;

/// How long one ledger call may wait for Redis before it is an error.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);

/// Shared Lua: integers as Redis wants them (Lua 5.1's tostring keeps 14 digits).
const PRELUDE: &str = r#"
local function int(n)
  return string.format('%.0f', n)
end
local function num(v)
  return tonumber(v or '0') or 0
end
"#;

/// Reserves. KEYS: job record, C1..Cn (counter hashes), X1..Xn (their lapse sets). ARGV:
/// job id, amount, hold ms, n, then per counter: limit, expiry (unix ms). Returns
/// {-1, i} when counter i does not exist (seed it, ask again), {1} when the job holds
/// (now or before), {0, i, remaining} when counter i refuses (nothing written).
static RESERVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{PRELUDE}{}",
        r#"
local job, amount, hold, n = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
for i = 1, n do
  if redis.call('EXISTS', KEYS[1 + i]) == 0 then return {-1, i} end
end
if redis.call('EXISTS', KEYS[1]) == 1 then return {1} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 1, n do
  local c, x = KEYS[1 + i], KEYS[1 + n + i]
  for _, lapsed in ipairs(redis.call('ZRANGEBYSCORE', x, '-inf', now)) do
    local held = redis.call('HGET', c, 'j:' .. lapsed)
    if held then
      redis.call('HINCRBY', c, 'reserved', int(-tonumber(held)))
      redis.call('HINCRBY', c, 'spent', held)
      redis.call('HDEL', c, 'j:' .. lapsed)
    end
    redis.call('ZREM', x, lapsed)
  end
end
for i = 1, n do
  local c = KEYS[1 + i]
  local limit = tonumber(ARGV[3 + 2 * i])
  local used = num(redis.call('HGET', c, 'spent')) + num(redis.call('HGET', c, 'reserved'))
  if used + amount > limit then
    return {0, i, int(math.max(limit - used, 0))}
  end
end
local names = {}
for i = 1, n do
  local c, x = KEYS[1 + i], KEYS[1 + n + i]
  redis.call('HINCRBY', c, 'reserved', int(amount))
  redis.call('HSET', c, 'j:' .. job, int(amount))
  redis.call('ZADD', x, int(now + hold), job)
  redis.call('PEXPIREAT', c, ARGV[4 + 2 * i])
  redis.call('PEXPIREAT', x, ARGV[4 + 2 * i])
  names[i] = c .. '\n' .. x
end
redis.call('SET', KEYS[1], table.concat(names, '\n'), 'PX', int(hold))
return {1}
"#
    ))
});

/// Starts counters. KEYS: C1..Cn. ARGV: per counter: spent, expiry (unix ms). A counter
/// that exists already (another worker started it first) is left alone.
static SEED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
for i = 1, #KEYS do
  if redis.call('HSETNX', KEYS[i], 'spent', ARGV[2 * i - 1]) == 1 then
    redis.call('HSETNX', KEYS[i], 'reserved', '0')
    redis.call('PEXPIREAT', KEYS[i], ARGV[2 * i])
  end
end
return 1
"#,
    )
});

/// Settles. KEYS: job record, then the counters and lapse sets it names, in pairs. ARGV:
/// job id, cost (micro-dollars; -1: unknown, the whole hold is spent). A hold already gone
/// (settled before, or lapsed) is left alone. Returns 1.
static SETTLE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{PRELUDE}{}",
        r#"
local job, cost = ARGV[1], tonumber(ARGV[2])
for i = 2, #KEYS, 2 do
  local c, x = KEYS[i], KEYS[i + 1]
  local held = redis.call('HGET', c, 'j:' .. job)
  if held then
    redis.call('HDEL', c, 'j:' .. job)
    redis.call('HINCRBY', c, 'reserved', int(-tonumber(held)))
    if cost < 0 then
      redis.call('HINCRBY', c, 'spent', held)
    else
      redis.call('HINCRBY', c, 'spent', int(cost))
    end
  end
  redis.call('ZREM', x, job)
end
redis.call('DEL', KEYS[1])
return 1
"#
    ))
});

/// The Redis ledger. Cheap to clone (the connection is multiplexed and reconnects by
/// itself).
#[derive(Clone)]
pub struct RedisLedger {
    conn: RedisConn,
    namespace: String,
}

impl std::fmt::Debug for RedisLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the connection: its info may carry a password.
        f.debug_struct("RedisLedger")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

fn redis_error(e: &redis::RedisError) -> BudgetError {
    BudgetError::Redis(e.to_string())
}

impl RedisLedger {
    /// Connects to `url` (`redis://…`, `rediss://…`, or a cluster's
    /// `redis+cluster://h1:p1,h2:p2`); keys go under `{namespace}` (one slot per ledger).
    pub async fn connect(
        url: &str,
        namespace: impl Into<String>,
    ) -> Result<RedisLedger, BudgetError> {
        let target = RedisTarget::parse(url).map_err(|e| BudgetError::Redis(e.to_string()))?;
        let timeouts = Timeouts {
            connect: RESPONSE_TIMEOUT,
            response: RESPONSE_TIMEOUT,
        };
        let conn = RedisConn::open(&target, timeouts)
            .await
            .map_err(|e| redis_error(&e))?;
        Ok(RedisLedger {
            conn,
            namespace: namespace.into(),
        })
    }

    fn counter_key(&self, counter: &str) -> String {
        format!("{{{}}}:budget:c:{counter}", self.namespace)
    }

    fn lapse_key(&self, counter: &str) -> String {
        format!("{{{}}}:budget:x:{counter}", self.namespace)
    }

    fn job_key(&self, job_id: Uuid) -> String {
        format!("{{{}}}:budget:j:{job_id}", self.namespace)
    }

    pub(crate) async fn reserve(
        &self,
        store: &Store,
        job_id: Uuid,
        counters: &[BudgetCounter],
        amount: Usd,
        hold_until: DateTime<Utc>,
    ) -> Result<Reserved, BudgetError> {
        let hold_ms = (hold_until - Utc::now()).num_milliseconds().max(1);
        // At most two rounds: the first may find counters to start.
        for _ in 0..3 {
            let mut call = RESERVE.key(self.job_key(job_id));
            for counter in counters {
                call.key(self.counter_key(&counter.name));
            }
            for counter in counters {
                call.key(self.lapse_key(&counter.name));
            }
            call.arg(job_id.to_string())
                .arg(amount.micros())
                .arg(hold_ms)
                .arg(counters.len());
            for counter in counters {
                call.arg(counter.limit.micros())
                    .arg(counter.expires_at.timestamp_millis());
            }
            let answer: Vec<i64> = call
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(|e| redis_error(&e))?;
            match answer.as_slice() {
                [1] => return Ok(Reserved::Held),
                [0, i, remaining] => {
                    return Ok(Reserved::Exceeded {
                        counter: index(*i, counters.len())?,
                        remaining: Usd::from_micros(*remaining),
                    });
                }
                [-1, _] => self.seed(store, counters).await?,
                other => return Err(BudgetError::Redis(format!("reserve answered {other:?}"))),
            }
        }
        Err(BudgetError::Redis(
            "the budget counters vanished while they were being started".to_owned(),
        ))
    }

    /// Starts every missing counter from the recorded usage.
    async fn seed(&self, store: &Store, counters: &[BudgetCounter]) -> Result<(), BudgetError> {
        let mut call = SEED.prepare_invoke();
        for counter in counters {
            let spent = store.budgets().spent_in(&counter.scope).await?;
            call.key(self.counter_key(&counter.name))
                .arg(spent.micros())
                .arg(counter.expires_at.timestamp_millis());
        }
        let _: i64 = call
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(|e| redis_error(&e))?;
        Ok(())
    }

    pub(crate) async fn standing(
        &self,
        store: &Store,
        counters: &[BudgetCounter],
    ) -> Result<Vec<Standing>, BudgetError> {
        if counters.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for counter in counters {
            pipe.cmd("HMGET")
                .arg(self.counter_key(&counter.name))
                .arg("spent")
                .arg("reserved");
        }
        let rows: Vec<(Option<i64>, Option<i64>)> = pipe
            .query_async(&mut self.conn.clone())
            .await
            .map_err(|e| redis_error(&e))?;
        let mut out = Vec::with_capacity(counters.len());
        for (counter, row) in counters.iter().zip(rows) {
            out.push(match row {
                (Some(spent), reserved) => Standing {
                    spent: Usd::from_micros(spent),
                    reserved: Usd::from_micros(reserved.unwrap_or(0)),
                },
                // Not started yet: what the period's ended jobs cost, nothing held.
                (None, _) => Standing {
                    spent: store.budgets().spent_in(&counter.scope).await?,
                    reserved: Usd::ZERO,
                },
            });
        }
        Ok(out)
    }

    /// The counters job `job_id` holds (as its record lists them), if it holds any.
    pub(crate) async fn held(&self, job_id: Uuid) -> Result<Option<String>, BudgetError> {
        redis::cmd("GET")
            .arg(self.job_key(job_id))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(|e| redis_error(&e))
    }

    /// Settles job `job_id`'s holds on `names` (its record, from [`RedisLedger::held`]).
    pub(crate) async fn settle(
        &self,
        job_id: Uuid,
        names: &str,
        cost: Option<Usd>,
    ) -> Result<(), BudgetError> {
        let job_key = self.job_key(job_id);
        let mut call = SETTLE.key(&job_key);
        let prefix = format!("{{{}}}:budget:", self.namespace);
        for name in names.lines() {
            // Only keys of this namespace's ledger: the record is ours, but a key outside
            // it would be a script touching another slot.
            if !name.starts_with(&prefix) {
                return Err(BudgetError::Redis(format!(
                    "the budget record of job {job_id} names a key outside the ledger"
                )));
            }
            call.key(name);
        }
        let _: i64 = call
            .arg(job_id.to_string())
            .arg(cost.map_or(-1, Usd::micros))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(|e| redis_error(&e))?;
        Ok(())
    }
}

/// A script's 1-based counter index as an index into the caller's list.
fn index(i: i64, len: usize) -> Result<usize, BudgetError> {
    usize::try_from(i - 1)
        .ok()
        .filter(|&i| i < len)
        .ok_or_else(|| BudgetError::Redis(format!("reserve named counter {i} of {len}")))
}
