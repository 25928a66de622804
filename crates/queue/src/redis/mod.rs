//! The distributed engine: Redis Streams with one consumer group.
//!
//! Enqueue is `XADD` (delayed items wait in a sorted set and are promoted by
//! a bounded script); fetch is `XREADGROUP … BLOCK` on connections of the
//! consumer's own; acknowledge is `XACK` + `XDEL` in one script, so finished
//! work leaves nothing behind; a crashed worker's items are taken over with
//! `XAUTOCLAIM` once idle for the visibility timeout, while live workers
//! renew the leases of what they hold. See `scripts.rs` for the layout and
//! `partitions.rs` for how `queue.partitions` spreads a namespace over
//! several hash tags.

mod consumer;
mod partitions;
mod replies;
mod scripts;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use byok_core::QueueStats;
use byok_redis::{RedisConn, RedisTarget, Timeouts};
use futures::future::try_join_all;
use redis::Value;

use crate::engine::{Consumer, Engine, NewItem};
use crate::inspect::{ItemState, ListedItem, WorkerSeen};
use crate::{QueueConfig, QueueError};
use consumer::RedisConsumer;
use partitions::MAX_PARTITIONS;
use partitions::{Keys, Layout, by_partition, partition_of, split_handle};
use replies::{array, entries_of, entry_ms, field, int, listed, pairs, string};

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

/// A queue in Redis.
#[derive(Clone)]
pub struct RedisEngine {
    config: QueueConfig,
    target: RedisTarget,
    conn: RedisConn,
    layout: Arc<Layout>,
    /// How many partitions consumers read: the recorded count or this process's own setting,
    /// whichever is larger (refreshed by every maintenance pass; shared by every clone).
    read: Arc<AtomicUsize>,
    /// Partitions whose consumer group this process has made sure of.
    grouped: Arc<AtomicUsize>,
}

impl std::fmt::Debug for RedisEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the client: its connection info may carry a password.
        f.debug_struct("RedisEngine")
            .field("namespace", &self.config.namespace)
            .field("partitions", &self.config.partitions)
            .finish_non_exhaustive()
    }
}

impl RedisEngine {
    /// Connects to `url`: one server (`redis://…`, `rediss://…`) or a Redis Cluster
    /// (`redis+cluster://h1:p1,h2:p2`; see `byok-redis`). The connection reconnects by
    /// itself, with backoff, whenever it drops; a cluster's follows failovers.
    ///
    /// With `config.partitions` above the recorded count, the partitions up to it are made
    /// ready (groups created, retirement undone) and the count recorded before this returns,
    /// so every worker reads them before anything is pushed there.
    pub async fn connect(url: &str, config: QueueConfig) -> Result<Arc<RedisEngine>, QueueError> {
        if !(1..=MAX_PARTITIONS).contains(&config.partitions) {
            return Err(QueueError::Invalid(format!(
                "queue.partitions must be from 1 to {MAX_PARTITIONS}, not {}",
                config.partitions
            )));
        }
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
        let layout = Arc::new(Layout::new(&config.namespace));
        let engine = RedisEngine {
            read: Arc::new(AtomicUsize::new(config.partitions)),
            grouped: Arc::new(AtomicUsize::new(0)),
            config,
            target,
            conn,
            layout,
        };
        let mut conn = engine.conn.clone();
        for partition in 1..engine.config.partitions {
            let _: i64 = redis::cmd("DEL")
                .arg(&engine.layout.keys(partition).retired)
                .query_async(&mut conn)
                .await?;
        }
        let recorded: i64 = scripts::RAISE_PARTITIONS
            .key(&engine.layout.recorded)
            .arg(engine.config.partitions)
            .invoke_async(&mut conn)
            .await?;
        engine.read_up_to(clamp_count(recorded)).await?;
        Ok(Arc::new(engine))
    }

    fn keys(&self, partition: usize) -> &Keys {
        self.layout.keys(partition)
    }

    /// How many partitions consumers read now.
    fn partitions_read(&self) -> usize {
        self.read.load(Ordering::Acquire).clamp(1, MAX_PARTITIONS)
    }

    /// Reads `recorded.max(own setting)` partitions from now on, making sure each has its
    /// consumer group first.
    async fn read_up_to(&self, recorded: usize) -> Result<(), QueueError> {
        let count = recorded.max(self.config.partitions).min(MAX_PARTITIONS);
        let grouped = self.grouped.load(Ordering::Acquire);
        for partition in grouped..count {
            self.ensure_group(partition).await?;
        }
        self.grouped.fetch_max(count, Ordering::AcqRel);
        self.read.store(count, Ordering::Release);
        Ok(())
    }

    /// Follows the recorded partition count (another process may have raised it) and
    /// retires the partitions above this process's setting once they are empty. Called by
    /// every maintenance pass.
    async fn refresh_partitions(&self) -> Result<(), QueueError> {
        let mut conn = self.conn.clone();
        let own = self.config.partitions;
        let recorded: Option<i64> = redis::cmd("GET")
            .arg(&self.layout.recorded)
            .query_async(&mut conn)
            .await?;
        let recorded = match recorded {
            Some(n) => clamp_count(n),
            // Lost (a Redis that keeps nothing restarted): record this process's setting again.
            None if own > 1 => clamp_count(
                scripts::RAISE_PARTITIONS
                    .key(&self.layout.recorded)
                    .arg(own)
                    .invoke_async(&mut conn)
                    .await?,
            ),
            None => 1,
        };
        if recorded > own {
            let mut all_retired = true;
            for partition in own..recorded {
                let keys = self.keys(partition);
                let retired: i64 = scripts::RETIRE
                    .key(&keys.jobs)
                    .key(&keys.delayed)
                    .key(&keys.dead)
                    .key(&keys.retired)
                    .invoke_async(&mut conn)
                    .await?;
                all_retired &= retired == 1;
            }
            if all_retired {
                let lowered: i64 = scripts::LOWER_PARTITIONS
                    .key(&self.layout.recorded)
                    .arg(recorded)
                    .arg(own)
                    .invoke_async(&mut conn)
                    .await?;
                if lowered == 1 {
                    tracing::info!(namespace = %self.config.namespace, from = recorded, to = own, "partitions above queue.partitions are empty and retired");
                    self.read.store(own, Ordering::Release);
                    return Ok(());
                }
            }
        }
        self.read_up_to(recorded).await
    }

    /// Creates a partition's stream and group if missing (at id 0, so items pushed
    /// before the first worker are seen). Called again after a Redis restart
    /// that lost the group (`NOGROUP`).
    async fn ensure_group(&self, partition: usize) -> Result<(), QueueError> {
        let mut conn = self.conn.clone();
        let created: Result<(), redis::RedisError> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.keys(partition).jobs)
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

    async fn recover_if_group_lost(&self, partition: usize, error: &redis::RedisError) {
        if error.code() == Some("NOGROUP") {
            tracing::warn!(namespace = %self.config.namespace, partition, "consumer group missing (Redis lost its data?): recreating it");
            if let Err(e) = self.ensure_group(partition).await {
                tracing::warn!(error = %e, "could not recreate the consumer group");
            }
        }
    }

    /// Pushes `items` into one partition. Returns false, adding nothing, when it is retired.
    async fn push_into(&self, partition: usize, items: &[&NewItem]) -> Result<bool, QueueError> {
        let keys = self.keys(partition);
        for chunk in items.chunks(PROMOTE_BATCH) {
            let mut invocation = scripts::PUSH.key(&keys.jobs);
            invocation.key(&keys.delayed).key(&keys.retired);
            for item in chunk {
                let delay_ms = u64::try_from(item.delay.as_millis()).unwrap_or(u64::MAX);
                invocation
                    .arg(&item.id)
                    .arg(item.attempts)
                    .arg(&item.payload)
                    .arg(delay_ms);
            }
            let added: i64 = invocation.invoke_async(&mut self.conn.clone()).await?;
            if added < 0 {
                // Only ever the first chunk: a partition is retired only while empty.
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The partitions inspection looks at: every one consumers read.
    fn inspected(&self) -> std::ops::Range<usize> {
        0..self.partitions_read()
    }

    async fn stats_of(&self, partition: usize) -> Result<QueueStats, QueueError> {
        let keys = self.keys(partition);
        let (xlen, pel, scheduled, dead, age): (u64, u64, u64, u64, i64) = scripts::STATS
            .key(&keys.jobs)
            .key(&keys.delayed)
            .key(&keys.dead)
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

    async fn list_of(
        &self,
        partition: usize,
        state: ItemState,
        limit: usize,
    ) -> Result<Vec<ListedItem>, QueueError> {
        let mut conn = self.conn.clone();
        let keys = self.keys(partition);
        Ok(match state {
            ItemState::Pending => {
                let entries: Value = scripts::LIST_PENDING
                    .key(&keys.jobs)
                    .arg(GROUP)
                    .arg(limit)
                    .invoke_async(&mut conn)
                    .await?;
                entries_of(&entries)
                    .into_iter()
                    .map(|(entry, fields)| {
                        let at = entry_ms(&entry);
                        listed(ItemState::Pending, partition, &entry, &fields, 0, None, at)
                    })
                    .collect()
            }
            ItemState::Running => {
                let rows: Value = scripts::LIST_RUNNING
                    .key(&keys.jobs)
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
                            partition,
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
                    .arg(&keys.delayed)
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
                    .arg(&keys.dead)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(limit)
                    .query_async(&mut conn)
                    .await?;
                entries_of(&entries)
                    .into_iter()
                    .map(|(entry, fields)| {
                        let mut item = listed(
                            ItemState::Dead,
                            partition,
                            &entry,
                            &fields,
                            0,
                            None,
                            entry_ms(&entry),
                        );
                        item.error = field(&fields, "e");
                        item
                    })
                    .collect()
            }
        })
    }

    async fn retry_dead_of(
        &self,
        partition: usize,
        entries: Option<&[&str]>,
    ) -> Result<u64, QueueError> {
        let mut conn = self.conn.clone();
        let keys = self.keys(partition);
        let mut moved = 0u64;
        match entries {
            Some(entries) => {
                for chunk in entries.chunks(500) {
                    let mut invocation = scripts::RETRY_DEAD.key(&keys.dead);
                    invocation.key(&keys.jobs).arg("ids");
                    for entry in chunk {
                        invocation.arg(*entry);
                    }
                    let n: u64 = invocation.invoke_async(&mut conn).await?;
                    moved += n;
                }
            }
            None => loop {
                let n: u64 = scripts::RETRY_DEAD
                    .key(&keys.dead)
                    .key(&keys.jobs)
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

    async fn purge_of(&self, partition: usize, state: ItemState) -> Result<u64, QueueError> {
        let mut conn = self.conn.clone();
        let keys = self.keys(partition);
        let mut purged = 0u64;
        match state {
            ItemState::Running => {
                return Err(QueueError::Invalid(
                    "running items belong to live workers; stop the workers or wait for the visibility timeout".into(),
                ));
            }
            ItemState::Pending => loop {
                let n: u64 = scripts::PURGE_PENDING
                    .key(&keys.jobs)
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
                    .arg(&keys.delayed)
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
                    .arg(&keys.dead)
                    .query_async(&mut conn)
                    .await?;
                let _: i64 = redis::cmd("DEL")
                    .arg(&keys.dead)
                    .query_async(&mut conn)
                    .await?;
                purged = n;
            }
        }
        Ok(purged)
    }

    async fn workers_of(&self, partition: usize) -> Result<Vec<(String, i64, i64)>, QueueError> {
        Ok(scripts::WORKERS
            .key(&self.keys(partition).jobs)
            .arg(GROUP)
            .invoke_async(&mut self.conn.clone())
            .await?)
    }
}

/// A partition count read from Redis (untrusted), as a usable one.
fn clamp_count(recorded: i64) -> usize {
    usize::try_from(recorded)
        .unwrap_or(1)
        .clamp(1, MAX_PARTITIONS)
}

#[async_trait::async_trait]
impl Engine for RedisEngine {
    fn config(&self) -> &QueueConfig {
        &self.config
    }

    async fn push(&self, items: &[NewItem]) -> Result<(), QueueError> {
        let partitions = self.config.partitions;
        let groups = by_partition(
            items
                .iter()
                .map(|item| (partition_of(&item.id, partitions), item)),
        );
        // Partitions live on different shards of a cluster: pushed to concurrently.
        let refused = try_join_all(groups.iter().map(|(&partition, items)| async move {
            let added = self.push_into(partition, items).await?;
            Ok::<_, QueueError>((!added).then_some(items))
        }))
        .await?;
        // A partition retired by workers running with fewer partitions than this process:
        // its items go to partition 0, which is never retired.
        for items in refused.into_iter().flatten() {
            self.push_into(0, items).await?;
        }
        Ok(())
    }

    async fn consumer(&self, name: &str) -> Result<Arc<dyn Consumer>, QueueError> {
        Ok(Arc::new(RedisConsumer::new(name, self.clone())))
    }

    async fn stats(&self) -> Result<QueueStats, QueueError> {
        let all = try_join_all(self.inspected().map(|p| self.stats_of(p))).await?;
        let mut total = QueueStats {
            name: self.config.namespace.clone(),
            pending: 0,
            scheduled: 0,
            running: 0,
            dead: 0,
            oldest_pending_seconds: 0,
        };
        for s in all {
            total.pending += s.pending;
            total.scheduled += s.scheduled;
            total.running += s.running;
            total.dead += s.dead;
            total.oldest_pending_seconds =
                total.oldest_pending_seconds.max(s.oldest_pending_seconds);
        }
        Ok(total)
    }

    async fn list(&self, state: ItemState, limit: usize) -> Result<Vec<ListedItem>, QueueError> {
        let limit = limit.clamp(1, 1000);
        let all = try_join_all(self.inspected().map(|p| self.list_of(p, state, limit))).await?;
        let mut items: Vec<ListedItem> = all.into_iter().flatten().collect();
        // Oldest first (dead: newest first), whatever partition holds them.
        match state {
            ItemState::Dead => items.sort_by_key(|i| std::cmp::Reverse(i.at_ms)),
            _ => items.sort_by_key(|i| i.at_ms),
        }
        items.truncate(limit);
        Ok(items)
    }

    async fn retry_dead(&self, refs: Option<&[String]>) -> Result<u64, QueueError> {
        let mut moved = 0;
        match refs {
            Some(refs) => {
                let mut split = Vec::with_capacity(refs.len());
                for reference in refs {
                    split.push(split_handle(reference).ok_or_else(|| {
                        QueueError::Invalid(format!(
                            "{reference:?} is not a reference to a dead item of this queue"
                        ))
                    })?);
                }
                let groups = by_partition(split);
                for (partition, entries) in groups {
                    moved += self.retry_dead_of(partition, Some(&entries)).await?;
                }
            }
            None => {
                for partition in self.inspected() {
                    moved += self.retry_dead_of(partition, None).await?;
                }
            }
        }
        Ok(moved)
    }

    async fn purge(&self, state: ItemState) -> Result<u64, QueueError> {
        let mut purged = 0;
        for partition in self.inspected() {
            purged += self.purge_of(partition, state).await?;
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
        let all = try_join_all(self.inspected().map(|p| self.workers_of(p))).await?;
        // A worker is one consumer in every partition's group: what it holds adds up, and
        // it was last seen when it last read any of them.
        let mut seen: BTreeMap<String, WorkerSeen> = BTreeMap::new();
        for (name, pending, idle) in all.into_iter().flatten() {
            let running = u64::try_from(pending).unwrap_or(0);
            let idle_ms = u64::try_from(idle).unwrap_or(0);
            let worker = seen.entry(name.clone()).or_insert(WorkerSeen {
                name,
                running: 0,
                idle_ms,
            });
            worker.running += running;
            worker.idle_ms = worker.idle_ms.min(idle_ms);
        }
        let mut workers: Vec<WorkerSeen> = seen.into_values().collect();
        workers.sort_by_key(|w| w.idle_ms);
        Ok(workers)
    }
}

async fn server_ms(conn: &mut RedisConn) -> Result<u64, QueueError> {
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(conn).await?;
    Ok(secs * 1000 + micros / 1000)
}

fn millis(d: Duration) -> String {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).to_string()
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
        let consumer = RedisConsumer::new("promoter", (*engine).clone());
        Some((redis, consumer))
    }

    /// Writes `n` delayed items straight into the sorted set, all due long
    /// ago (scores 0..n ms after the epoch, so their order is known).
    async fn due_long_ago(consumer: &RedisConsumer, n: usize) {
        let mut conn = consumer.test_conn();
        for start in (0..n).step_by(5000) {
            let mut zadd = redis::cmd("ZADD");
            zadd.arg(&consumer.engine_keys().delayed);
            for i in start..n.min(start + 5000) {
                zadd.arg(i).arg(format!("0\ndue-{i}\n{{}}"));
            }
            let _: i64 = zadd.query_async(&mut conn).await.unwrap();
        }
    }

    async fn lengths(consumer: &RedisConsumer) -> (u64, u64) {
        let mut conn = consumer.test_conn();
        let jobs: u64 = redis::cmd("XLEN")
            .arg(&consumer.engine_keys().jobs)
            .query_async(&mut conn)
            .await
            .unwrap();
        let delayed: u64 = redis::cmd("ZCARD")
            .arg(&consumer.engine_keys().delayed)
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
            .engine()
            .push(&[NewItem {
                delay: Duration::from_secs(3600),
                ..NewItem::now("later", "{}")
            }])
            .await
            .unwrap();

        let mut conn = consumer.test_conn();
        let mut moved = Vec::new();
        loop {
            let (n, next_due) = consumer.promote_once(0, &mut conn).await.unwrap();
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
            .arg(&consumer.engine_keys().jobs)
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
        let stats = consumer.engine().stats().await.unwrap();
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
