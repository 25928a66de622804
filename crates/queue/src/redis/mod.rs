//! The distributed engine: Redis Streams with one consumer group.
//!
//! Enqueue is `XADD` (delayed items wait in a sorted set and are promoted by
//! a bounded script); fetch is `XREADGROUP … BLOCK` on a connection of the
//! consumer's own; acknowledge is `XACK` + `XDEL` in one script, so finished
//! work leaves nothing behind; a crashed worker's items are taken over with
//! `XAUTOCLAIM` once idle for the visibility timeout, while live workers
//! renew the leases of what they hold. See `scripts.rs` for the layout.

mod scripts;

use std::sync::Arc;
use std::time::Duration;

use byok_redis::{RedisConn, RedisTarget, Timeouts};
use redis::Value;
use redis::streams::StreamReadReply;
use tokio::sync::Mutex;

use crate::engine::{Consumer, Delivery, Engine, Maintenance, NewItem, Plan, Settlement, plan};
use byok_core::QueueStats;

use crate::inspect::{ItemState, ListedItem, WorkerSeen};
use crate::{QueueConfig, QueueError};

/// The consumer group every worker of a namespace joins.
const GROUP: &str = "workers";
/// Items moved per promotion call, and calls per maintenance pass: a due
/// backlog of any size is promoted in short steps that never block Redis.
const PROMOTE_BATCH: usize = 1000;
const PROMOTE_CALLS: usize = 20;
/// Consumers of dead processes that own nothing are removed after this idle time.
const CONSUMER_GC_IDLE: Duration = Duration::from_secs(600);
/// Answer timeout of ordinary commands (scripts over a thousand items take a few ms).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
struct Keys {
    jobs: String,
    delayed: String,
    dead: String,
}

impl Keys {
    fn new(namespace: &str) -> Keys {
        // `{ns}` is the Redis Cluster hash tag: every key of a namespace hashes
        // to the same slot, so every script can touch all of them.
        Keys {
            jobs: format!("{{{namespace}}}:jobs"),
            delayed: format!("{{{namespace}}}:delayed"),
            dead: format!("{{{namespace}}}:dead"),
        }
    }
}

/// A queue in Redis.
#[derive(Clone)]
pub struct RedisEngine {
    config: QueueConfig,
    target: RedisTarget,
    conn: RedisConn,
    keys: Keys,
}

impl std::fmt::Debug for RedisEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the client: its connection info may carry a password.
        f.debug_struct("RedisEngine")
            .field("namespace", &self.config.namespace)
            .finish_non_exhaustive()
    }
}

impl RedisEngine {
    /// Connects to `url`: one server (`redis://…`, `rediss://…`) or a Redis Cluster
    /// (`redis+cluster://h1:p1,h2:p2`; see `byok-redis`). The connection reconnects by
    /// itself, with backoff, whenever it drops; a cluster's follows failovers.
    pub async fn connect(url: &str, config: QueueConfig) -> Result<Arc<RedisEngine>, QueueError> {
        let target =
            RedisTarget::parse(url).map_err(|e| QueueError::Invalid(format!("queue.url: {e}")))?;
        let conn = RedisConn::open(
            &target,
            Timeouts {
                connect: Duration::from_secs(5),
                response: RESPONSE_TIMEOUT,
            },
        )
        .await?;
        let keys = Keys::new(&config.namespace);
        let engine = RedisEngine {
            config,
            target,
            conn,
            keys,
        };
        engine.ensure_group().await?;
        Ok(Arc::new(engine))
    }

    /// Creates the stream and the group if missing (at id 0, so items pushed
    /// before the first worker are seen). Called again after a Redis restart
    /// that lost the group (`NOGROUP`).
    async fn ensure_group(&self) -> Result<(), QueueError> {
        let mut conn = self.conn.clone();
        let created: Result<(), redis::RedisError> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.keys.jobs)
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        match created {
            Ok(()) => Ok(()),
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn recover_if_group_lost(&self, error: &redis::RedisError) {
        if error.code() == Some("NOGROUP") {
            tracing::warn!(namespace = %self.config.namespace, "consumer group missing (Redis lost its data?): recreating it");
            if let Err(e) = self.ensure_group().await {
                tracing::warn!(error = %e, "could not recreate the consumer group");
            }
        }
    }
}

#[async_trait::async_trait]
impl Engine for RedisEngine {
    fn config(&self) -> &QueueConfig {
        &self.config
    }

    async fn push(&self, items: &[NewItem]) -> Result<(), QueueError> {
        for chunk in items.chunks(PROMOTE_BATCH) {
            let mut invocation = scripts::PUSH.key(&self.keys.jobs);
            invocation.key(&self.keys.delayed);
            for item in chunk {
                let delay_ms = u64::try_from(item.delay.as_millis()).unwrap_or(u64::MAX);
                invocation
                    .arg(&item.id)
                    .arg(item.attempts)
                    .arg(&item.payload)
                    .arg(delay_ms);
            }
            let _: i64 = invocation.invoke_async(&mut self.conn.clone()).await?;
        }
        Ok(())
    }

    async fn consumer(&self, name: &str) -> Result<Arc<dyn Consumer>, QueueError> {
        Ok(Arc::new(RedisConsumer {
            name: name.to_owned(),
            engine: self.clone(),
            blocking: Mutex::new(None),
        }))
    }

    async fn stats(&self) -> Result<QueueStats, QueueError> {
        let (xlen, pel, scheduled, dead, age): (u64, u64, u64, u64, i64) = scripts::STATS
            .key(&self.keys.jobs)
            .key(&self.keys.delayed)
            .key(&self.keys.dead)
            .arg(GROUP)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(QueueStats {
            name: self.config.namespace.clone(),
            pending: xlen.saturating_sub(pel),
            scheduled,
            running: pel,
            dead,
            oldest_pending_seconds: u64::try_from(age.max(0)).unwrap_or(0) / 1000,
        })
    }

    async fn list(&self, state: ItemState, limit: usize) -> Result<Vec<ListedItem>, QueueError> {
        let mut conn = self.conn.clone();
        let limit = limit.clamp(1, 1000);
        Ok(match state {
            ItemState::Pending => {
                let entries: Value = scripts::LIST_PENDING
                    .key(&self.keys.jobs)
                    .arg(GROUP)
                    .arg(limit)
                    .invoke_async(&mut conn)
                    .await?;
                entries_of(&entries)
                    .into_iter()
                    .map(|(entry, fields)| {
                        listed(
                            ItemState::Pending,
                            &entry,
                            &fields,
                            0,
                            None,
                            entry_ms(&entry),
                        )
                    })
                    .collect()
            }
            ItemState::Running => {
                let rows: Value = scripts::LIST_RUNNING
                    .key(&self.keys.jobs)
                    .arg(GROUP)
                    .arg(limit)
                    .invoke_async(&mut conn)
                    .await?;
                let now = server_ms(&mut conn).await?;
                array(&rows)
                    .iter()
                    .filter_map(|row| {
                        let row = array(row);
                        let entry = string(row.first()?);
                        let consumer = string(row.get(1)?);
                        let idle = int(row.get(2)?) as u64;
                        let deliveries = int(row.get(3)?) as u32;
                        let fields = pairs(row.get(4)?);
                        Some(listed(
                            ItemState::Running,
                            &entry,
                            &fields,
                            deliveries,
                            Some(consumer),
                            now.saturating_sub(idle),
                        ))
                    })
                    .collect()
            }
            ItemState::Scheduled => {
                let members: Vec<(Vec<u8>, f64)> = redis::cmd("ZRANGE")
                    .arg(&self.keys.delayed)
                    .arg(0)
                    .arg(limit - 1)
                    .arg("WITHSCORES")
                    .query_async(&mut conn)
                    .await?;
                members
                    .into_iter()
                    .filter_map(|(member, score)| {
                        let member = String::from_utf8_lossy(&member).into_owned();
                        let mut parts = member.splitn(3, '\n');
                        let attempts = parts.next()?.parse().ok()?;
                        let item_id = parts.next()?.to_owned();
                        let payload = parts.next()?.to_owned();
                        Some(ListedItem {
                            reference: item_id.clone(),
                            item_id,
                            state: ItemState::Scheduled,
                            attempts,
                            deliveries: 0,
                            consumer: None,
                            at_ms: score as u64,
                            error: None,
                            payload,
                        })
                    })
                    .collect()
            }
            ItemState::Dead => {
                let entries: Value = redis::cmd("XREVRANGE")
                    .arg(&self.keys.dead)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(limit)
                    .query_async(&mut conn)
                    .await?;
                entries_of(&entries)
                    .into_iter()
                    .map(|(entry, fields)| {
                        let error = field(&fields, "e");
                        listed(ItemState::Dead, &entry, &fields, 0, None, entry_ms(&entry))
                            .with_error(error)
                    })
                    .collect()
            }
        })
    }

    async fn retry_dead(&self, refs: Option<&[String]>) -> Result<u64, QueueError> {
        let mut conn = self.conn.clone();
        let mut moved = 0u64;
        match refs {
            Some(refs) => {
                for chunk in refs.chunks(500) {
                    let mut invocation = scripts::RETRY_DEAD.key(&self.keys.dead);
                    invocation.key(&self.keys.jobs).arg("ids");
                    for r in chunk {
                        invocation.arg(r);
                    }
                    let n: u64 = invocation.invoke_async(&mut conn).await?;
                    moved += n;
                }
            }
            None => loop {
                let n: u64 = scripts::RETRY_DEAD
                    .key(&self.keys.dead)
                    .key(&self.keys.jobs)
                    .arg("all")
                    .arg(500)
                    .invoke_async(&mut conn)
                    .await?;
                moved += n;
                if n < 500 {
                    break;
                }
            },
        }
        Ok(moved)
    }

    async fn purge(&self, state: ItemState) -> Result<u64, QueueError> {
        let mut conn = self.conn.clone();
        let mut purged = 0u64;
        match state {
            ItemState::Running => {
                return Err(QueueError::Invalid(
                    "running items belong to live workers; stop the workers or wait for the visibility timeout".into(),
                ));
            }
            ItemState::Pending => loop {
                let n: u64 = scripts::PURGE_PENDING
                    .key(&self.keys.jobs)
                    .arg(GROUP)
                    .arg(1000)
                    .invoke_async(&mut conn)
                    .await?;
                purged += n;
                if n < 1000 {
                    break;
                }
            },
            ItemState::Scheduled => loop {
                // Chunked, so that purging a huge set never blocks Redis.
                let n: u64 = redis::cmd("ZREMRANGEBYRANK")
                    .arg(&self.keys.delayed)
                    .arg(0)
                    .arg(999)
                    .query_async(&mut conn)
                    .await?;
                purged += n;
                if n < 1000 {
                    break;
                }
            },
            ItemState::Dead => {
                let n: u64 = redis::cmd("XLEN")
                    .arg(&self.keys.dead)
                    .query_async(&mut conn)
                    .await?;
                let _: i64 = redis::cmd("DEL")
                    .arg(&self.keys.dead)
                    .query_async(&mut conn)
                    .await?;
                purged = n;
            }
        }
        Ok(purged)
    }

    async fn ping(&self) -> Result<(), QueueError> {
        let _: String = redis::cmd("PING")
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    async fn workers(&self) -> Result<Vec<WorkerSeen>, QueueError> {
        let consumers: Vec<(String, i64, i64)> = scripts::WORKERS
            .key(&self.keys.jobs)
            .arg(GROUP)
            .invoke_async(&mut self.conn.clone())
            .await?;
        let mut workers: Vec<WorkerSeen> = consumers
            .into_iter()
            .map(|(name, pending, idle)| WorkerSeen {
                name,
                running: u64::try_from(pending).unwrap_or(0),
                idle_ms: u64::try_from(idle).unwrap_or(0),
            })
            .collect();
        workers.sort_by_key(|w| w.idle_ms);
        Ok(workers)
    }
}

/// One worker process's consumer.
struct RedisConsumer {
    name: String,
    engine: RedisEngine,
    /// The connection blocking reads run on. A blocking `XREADGROUP` on the
    /// shared connection would hold up every other command behind it (and
    /// trip its response timeout), so each consumer reads on its own.
    blocking: Mutex<Option<RedisConn>>,
}

impl std::fmt::Debug for RedisConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConsumer")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl RedisConsumer {
    /// One promotion call: moves at most [`PROMOTE_BATCH`] due delayed items
    /// to the stream. Returns how many moved and when the next delayed item
    /// falls due.
    async fn promote_once(
        &self,
        conn: &mut RedisConn,
    ) -> Result<(usize, Option<Duration>), QueueError> {
        let (moved, wait): (usize, i64) = scripts::PROMOTE
            .key(&self.keys().delayed)
            .key(&self.keys().jobs)
            .arg(PROMOTE_BATCH)
            .invoke_async(conn)
            .await?;
        Ok((moved, u64::try_from(wait).ok().map(Duration::from_millis)))
    }

    /// A maintenance pass's promotion: calls until fewer than a batch moved,
    /// at most [`PROMOTE_CALLS`] of them; a larger due backlog is left for
    /// the next pass. Returns when the next delayed item falls due.
    async fn promote(&self, conn: &mut RedisConn) -> Result<Option<Duration>, QueueError> {
        let mut next_due = None;
        for _ in 0..PROMOTE_CALLS {
            let (moved, wait) = self.promote_once(conn).await?;
            next_due = wait;
            if moved < PROMOTE_BATCH {
                break;
            }
        }
        Ok(next_due)
    }

    fn keys(&self) -> &Keys {
        &self.engine.keys
    }

    fn conn(&self) -> RedisConn {
        self.engine.conn.clone()
    }

    async fn blocking_connection(&self) -> Result<RedisConn, QueueError> {
        let mut slot = self.blocking.lock().await;
        if let Some(conn) = slot.as_ref() {
            return Ok(conn.clone());
        }
        // Its own connection (on a cluster, its own connections to each node): the answer
        // to a blocking read may take the whole block time.
        let conn = RedisConn::open(
            &self.engine.target,
            Timeouts {
                connect: Duration::from_secs(5),
                response: self.engine.config.block + Duration::from_secs(5),
            },
        )
        .await?;
        *slot = Some(conn.clone());
        Ok(conn)
    }
}

#[async_trait::async_trait]
impl Consumer for RedisConsumer {
    fn name(&self) -> &str {
        &self.name
    }

    async fn fetch(&self, max: usize) -> Result<Vec<Delivery>, QueueError> {
        let mut conn = self.blocking_connection().await?;
        let block_ms = u64::try_from(self.engine.config.block.as_millis()).unwrap_or(1000);
        let reply: Result<Option<StreamReadReply>, redis::RedisError> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(GROUP)
            .arg(&self.name)
            .arg("COUNT")
            .arg(max.max(1))
            .arg("BLOCK")
            .arg(block_ms)
            .arg("STREAMS")
            .arg(&self.keys().jobs)
            .arg(">")
            .query_async(&mut conn)
            .await;
        let reply = match reply {
            Ok(reply) => reply,
            Err(e) => {
                // A broken connection is replaced on the next fetch.
                *self.blocking.lock().await = None;
                self.engine.recover_if_group_lost(&e).await;
                return Err(e.into());
            }
        };
        let mut out = Vec::new();
        for key in reply.map(|r| r.keys).unwrap_or_default() {
            for entry in key.ids {
                let text = |name: &str| match entry.map.get(name) {
                    Some(Value::BulkString(b)) => Some(String::from_utf8_lossy(b).into_owned()),
                    Some(Value::SimpleString(s)) => Some(s.clone()),
                    Some(Value::Int(i)) => Some(i.to_string()),
                    _ => None,
                };
                out.push(Delivery {
                    // A malformed entry comes out with an empty id; the
                    // backend dead-letters it rather than failing the worker.
                    item_id: text("i").unwrap_or_default(),
                    payload: text("p").unwrap_or_default(),
                    attempts: text("a").and_then(|a| a.parse().ok()).unwrap_or(0),
                    deliveries: 1,
                    handle: entry.id,
                });
            }
        }
        Ok(out)
    }

    async fn settle(&self, batch: &[(Delivery, Settlement)]) -> Result<(), QueueError> {
        let config = &self.engine.config;
        for chunk in batch.chunks(500) {
            let mut invocation = scripts::SETTLE.key(&self.keys().jobs);
            invocation
                .key(&self.keys().delayed)
                .key(&self.keys().dead)
                .arg(GROUP)
                .arg(config.dead_retention)
                .arg(&self.name);
            for (delivery, settlement) in chunk {
                let (kind, attempts, extra) = match plan(config, delivery, settlement) {
                    Plan::Done => ("a", delivery.attempts, String::new()),
                    Plan::Again { attempts, after } => ("s", attempts, millis(after)),
                    Plan::Dead { attempts, error } => ("d", attempts, error),
                };
                invocation
                    .arg(kind)
                    .arg(&delivery.handle)
                    .arg(&delivery.item_id)
                    .arg(attempts)
                    .arg(&delivery.payload)
                    .arg(extra);
            }
            let result: Result<i64, redis::RedisError> =
                invocation.invoke_async(&mut self.conn()).await;
            if let Err(e) = result {
                self.engine.recover_if_group_lost(&e).await;
                return Err(e.into());
            }
        }
        Ok(())
    }

    async fn extend(&self, held: &[Delivery]) -> Result<(), QueueError> {
        for chunk in held.chunks(500) {
            let mut invocation = scripts::EXTEND.key(&self.keys().jobs);
            invocation.arg(GROUP).arg(&self.name);
            for d in chunk {
                invocation.arg(&d.handle);
            }
            let lost: Vec<String> = invocation.invoke_async(&mut self.conn()).await?;
            if !lost.is_empty() {
                tracing::warn!(consumer = %self.name, entries = ?lost, "leases lost: another worker took these items after a stall");
            }
        }
        Ok(())
    }

    async fn maintain(&self) -> Result<Maintenance, QueueError> {
        let config = &self.engine.config;
        let mut conn = self.conn();
        let next_due = self.promote(&mut conn).await?;
        let min_idle = u64::try_from(config.visibility_timeout.as_millis()).unwrap_or(u64::MAX);
        let claimed: Value = scripts::RECLAIM
            .key(&self.keys().jobs)
            .key(&self.keys().dead)
            .arg(GROUP)
            .arg(&self.name)
            .arg(min_idle)
            .arg(config.prefetch.max(1))
            .arg(config.max_attempts)
            .arg(config.dead_retention)
            .invoke_async(&mut conn)
            .await?;
        let reclaimed: Vec<Delivery> = array(&claimed)
            .iter()
            .filter_map(|row| {
                let row = array(row);
                Some(Delivery {
                    handle: string(row.first()?),
                    deliveries: int(row.get(1)?) as u32,
                    item_id: string(row.get(2)?),
                    attempts: int(row.get(3)?) as u32,
                    payload: string(row.get(4)?),
                })
            })
            .collect();
        if !reclaimed.is_empty() {
            tracing::warn!(consumer = %self.name, count = reclaimed.len(), "took over items whose worker stopped renewing them");
        }
        Ok(Maintenance {
            reclaimed,
            next_due,
        })
    }

    async fn release(&self, unstarted: &[Delivery]) -> Result<(), QueueError> {
        for chunk in unstarted.chunks(500) {
            let mut invocation = scripts::RELEASE.key(&self.keys().jobs);
            invocation.arg(GROUP).arg(&self.name);
            for d in chunk {
                // Handing back is not an attempt: crashed deliveries before it were.
                let attempts = d.attempts.saturating_add(d.deliveries.saturating_sub(1));
                invocation
                    .arg(&d.handle)
                    .arg(&d.item_id)
                    .arg(attempts)
                    .arg(&d.payload);
            }
            let _: i64 = invocation.invoke_async(&mut self.conn()).await?;
        }
        Ok(())
    }

    async fn close(&self) -> Result<(), QueueError> {
        let _: i64 = scripts::LEAVE
            .key(&self.keys().jobs)
            .arg(GROUP)
            .arg(&self.name)
            .arg(u64::try_from(CONSUMER_GC_IDLE.as_millis()).unwrap_or(u64::MAX))
            .invoke_async(&mut self.conn())
            .await?;
        Ok(())
    }
}

fn millis(d: Duration) -> String {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).to_string()
}

async fn server_ms(conn: &mut RedisConn) -> Result<u64, QueueError> {
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(conn).await?;
    Ok(secs * 1000 + micros / 1000)
}

// --- Reading script replies -------------------------------------------------

fn array(v: &Value) -> &[Value] {
    match v {
        Value::Array(items) | Value::Set(items) => items,
        _ => &[],
    }
}

fn string(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        _ => String::new(),
    }
}

fn int(v: &Value) -> i64 {
    match v {
        Value::Int(i) => *i,
        other => string(other).parse().unwrap_or(0),
    }
}

/// A flat `[name, value, …]` array as pairs.
fn pairs(v: &Value) -> Vec<(String, String)> {
    array(v)
        .chunks(2)
        .filter(|c| c.len() == 2)
        .map(|c| (string(&c[0]), string(&c[1])))
        .collect()
}

fn field(fields: &[(String, String)], name: &str) -> Option<String> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
}

/// `XRANGE`-style `[[id, [f, v, …]], …]`.
fn entries_of(v: &Value) -> Vec<(String, Vec<(String, String)>)> {
    array(v)
        .iter()
        .filter_map(|e| {
            let e = array(e);
            Some((string(e.first()?), pairs(e.get(1)?)))
        })
        .collect()
}

/// The millisecond time in a stream entry id (`<ms>-<seq>`).
fn entry_ms(entry: &str) -> u64 {
    entry
        .split('-')
        .next()
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(0)
}

fn listed(
    state: ItemState,
    entry: &str,
    fields: &[(String, String)],
    deliveries: u32,
    consumer: Option<String>,
    at_ms: u64,
) -> ListedItem {
    ListedItem {
        reference: entry.to_owned(),
        item_id: field(fields, "i").unwrap_or_default(),
        state,
        attempts: field(fields, "a").and_then(|a| a.parse().ok()).unwrap_or(0),
        deliveries,
        consumer,
        at_ms,
        error: None,
        payload: field(fields, "p").unwrap_or_default(),
    }
}

impl ListedItem {
    fn with_error(mut self, error: Option<String>) -> ListedItem {
        self.error = error;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A consumer of a fresh namespace on the test Redis, or `None` (after
    /// a SKIPPED line) when there is no Redis.
    async fn consumer() -> Option<(byok_testing::TestRedis, RedisConsumer)> {
        let redis = byok_testing::test_redis().await?;
        let engine = RedisEngine::connect(&redis.url, QueueConfig::new(&redis.namespace))
            .await
            .expect("connect to redis");
        let consumer = RedisConsumer {
            name: "promoter".to_owned(),
            engine: (*engine).clone(),
            blocking: Mutex::new(None),
        };
        Some((redis, consumer))
    }

    /// Writes `n` delayed items straight into the sorted set, all due long
    /// ago (scores 0..n ms after the epoch, so their order is known).
    async fn due_long_ago(consumer: &RedisConsumer, n: usize) {
        let mut conn = consumer.conn();
        for start in (0..n).step_by(5000) {
            let mut zadd = redis::cmd("ZADD");
            zadd.arg(&consumer.keys().delayed);
            for i in start..n.min(start + 5000) {
                zadd.arg(i).arg(format!("0\ndue-{i}\n{{}}"));
            }
            let _: i64 = zadd.query_async(&mut conn).await.unwrap();
        }
    }

    async fn lengths(consumer: &RedisConsumer) -> (u64, u64) {
        let mut conn = consumer.conn();
        let jobs: u64 = redis::cmd("XLEN")
            .arg(&consumer.keys().jobs)
            .query_async(&mut conn)
            .await
            .unwrap();
        let delayed: u64 = redis::cmd("ZCARD")
            .arg(&consumer.keys().delayed)
            .query_async(&mut conn)
            .await
            .unwrap();
        (jobs, delayed)
    }

    #[tokio::test]
    async fn a_promotion_call_moves_at_most_a_thousand_due_items() {
        let Some((_redis, consumer)) = consumer().await else {
            return;
        };
        due_long_ago(&consumer, 2_500).await;
        // And one that is not due for an hour: it stays.
        consumer
            .engine
            .push(&[NewItem {
                delay: Duration::from_secs(3600),
                ..NewItem::now("later", "{}")
            }])
            .await
            .unwrap();

        let mut conn = consumer.conn();
        let mut moved = Vec::new();
        loop {
            let (n, next_due) = consumer.promote_once(&mut conn).await.unwrap();
            moved.push(n);
            let next_due = next_due.expect("the later item is waiting");
            if n == PROMOTE_BATCH {
                assert_eq!(next_due, Duration::ZERO, "more are due now");
            } else {
                assert!(next_due > Duration::from_secs(3000), "{next_due:?}");
            }
            if n == 0 {
                break;
            }
            assert_eq!(
                lengths(&consumer).await,
                (
                    moved.iter().sum::<usize>() as u64,
                    2_501 - moved.iter().sum::<usize>() as u64
                )
            );
        }
        assert_eq!(moved, [1000, 1000, 500, 0]);
        assert_eq!(lengths(&consumer).await, (2_500, 1));

        // Promoted in due order, as stream entries the workers read.
        let first: Value = redis::cmd("XRANGE")
            .arg(&consumer.keys().jobs)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut conn)
            .await
            .unwrap();
        let (_, fields) = entries_of(&first).pop().expect("an entry");
        assert_eq!(field(&fields, "i").as_deref(), Some("due-0"));
        assert_eq!(field(&fields, "a").as_deref(), Some("0"));
        assert_eq!(field(&fields, "p").as_deref(), Some("{}"));
        let stats = consumer.engine.stats().await.unwrap();
        assert_eq!((stats.pending, stats.scheduled), (2_500, 1));
    }

    #[tokio::test]
    async fn a_maintenance_pass_promotes_at_most_twenty_calls_worth() {
        let Some((_redis, consumer)) = consumer().await else {
            return;
        };
        let n = PROMOTE_BATCH * PROMOTE_CALLS + 500;
        due_long_ago(&consumer, n).await;
        consumer.maintain().await.unwrap();
        assert_eq!(
            lengths(&consumer).await,
            ((PROMOTE_BATCH * PROMOTE_CALLS) as u64, 500),
            "one pass: {PROMOTE_CALLS} calls of {PROMOTE_BATCH}"
        );
        consumer.maintain().await.unwrap();
        assert_eq!(
            lengths(&consumer).await,
            (n as u64, 0),
            "the next pass: the rest"
        );
    }
}
