//! One worker process's consumer of a Redis queue.
//!
//! With one partition a fetch is one blocking `XREADGROUP`, as it always was. With several,
//! a fetch first sweeps the partitions without blocking, from a starting point that moves on
//! every call (so every partition is read as often as the others), and only when all are
//! empty waits on a blocking read of one item per partition, each on a connection of its
//! own (a cluster may serve each partition from a different node, and one command cannot
//! name keys of two slots). A blocking read whose fetch has already returned is never
//! abandoned (Redis may assign it an entry at any moment): it is collected by the next fetch,
//! and an entry it brought meanwhile is kept here, its lease renewed with the worker's own.

use std::sync::Mutex as StdMutex;
use std::time::Duration;

use byok_redis::{RedisConn, Timeouts};
use futures::FutureExt as _;
use futures::future::{select_all, try_join_all};
use redis::streams::StreamReadReply;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use super::partitions::{by_partition, handle, split_handle};
use super::replies::{array, int, string};
use super::{CONSUMER_GC_IDLE, GROUP, PROMOTE_BATCH, PROMOTE_CALLS, RedisEngine, millis, scripts};
use crate::QueueError;
use crate::engine::{Consumer, Delivery, Maintenance, Plan, Settlement, plan};

type Read = JoinHandle<Result<Vec<Delivery>, redis::RedisError>>;

/// One worker process's consumer.
pub(super) struct RedisConsumer {
    name: String,
    engine: RedisEngine,
    reads: Mutex<Reads>,
    /// Entries blocking reads brought after their fetch had returned: delivered to this
    /// consumer, handed to the worker by the next fetch.
    kept: StdMutex<Vec<Delivery>>,
}

/// The blocking side of fetching, per partition.
#[derive(Default)]
struct Reads {
    /// The connection blocking reads run on. A blocking `XREADGROUP` on the
    /// shared connection would hold up every other command behind it (and
    /// trip its response timeout), so each partition is read on its own.
    connections: Vec<Option<RedisConn>>,
    /// A blocking read still running.
    running: Vec<Option<Read>>,
    /// Where the next sweep starts.
    next_start: usize,
}

impl std::fmt::Debug for RedisConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConsumer")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl RedisConsumer {
    pub(super) fn new(name: &str, engine: RedisEngine) -> RedisConsumer {
        RedisConsumer {
            name: name.to_owned(),
            engine,
            reads: Mutex::new(Reads::default()),
            kept: StdMutex::new(Vec::new()),
        }
    }

    fn conn(&self) -> RedisConn {
        self.engine.conn.clone()
    }

    /// One promotion call on `partition`: moves at most [`PROMOTE_BATCH`] due delayed items
    /// to its stream. Returns how many moved and when the next delayed item falls due.
    pub(super) async fn promote_once(
        &self,
        partition: usize,
        conn: &mut RedisConn,
    ) -> Result<(usize, Option<Duration>), QueueError> {
        let keys = self.engine.keys(partition);
        let (moved, wait): (usize, i64) = scripts::PROMOTE
            .key(&keys.delayed)
            .key(&keys.jobs)
            .arg(PROMOTE_BATCH)
            .invoke_async(conn)
            .await?;
        Ok((moved, u64::try_from(wait).ok().map(Duration::from_millis)))
    }

    /// A maintenance pass's promotion of one partition: calls until fewer than a batch moved,
    /// at most [`PROMOTE_CALLS`] of them; a larger due backlog is left for the next pass.
    /// Returns when the next delayed item falls due.
    async fn promote(
        &self,
        partition: usize,
        conn: &mut RedisConn,
    ) -> Result<Option<Duration>, QueueError> {
        let mut next_due = None;
        for _ in 0..PROMOTE_CALLS {
            let (moved, wait) = self.promote_once(partition, conn).await?;
            next_due = wait;
            if moved < PROMOTE_BATCH {
                break;
            }
        }
        Ok(next_due)
    }

    /// Takes over `partition`'s entries whose lease expired.
    async fn reclaim(
        &self,
        partition: usize,
        conn: &mut RedisConn,
    ) -> Result<Vec<Delivery>, QueueError> {
        let config = &self.engine.config;
        let keys = self.engine.keys(partition);
        let min_idle = u64::try_from(config.visibility_timeout.as_millis()).unwrap_or(u64::MAX);
        let claimed: redis::Value = scripts::RECLAIM
            .key(&keys.jobs)
            .key(&keys.dead)
            .arg(GROUP)
            .arg(&self.name)
            .arg(min_idle)
            .arg(config.prefetch.max(1))
            .arg(config.max_attempts)
            .arg(config.dead_retention)
            .invoke_async(conn)
            .await?;
        Ok(array(&claimed)
            .iter()
            .filter_map(|row| {
                let row = array(row);
                Some(Delivery {
                    handle: handle(partition, &string(row.first()?)),
                    deliveries: int(row.get(1)?) as u32,
                    item_id: string(row.get(2)?),
                    attempts: int(row.get(3)?) as u32,
                    payload: string(row.get(4)?),
                })
            })
            .collect())
    }

    /// Up to `count` undelivered entries of `partition`, without waiting.
    async fn read_now(&self, partition: usize, count: usize) -> Result<Vec<Delivery>, QueueError> {
        let reply: Result<Option<StreamReadReply>, redis::RedisError> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(GROUP)
            .arg(&self.name)
            .arg("COUNT")
            .arg(count.max(1))
            .arg("STREAMS")
            .arg(&self.engine.keys(partition).jobs)
            .arg(">")
            .query_async(&mut self.conn())
            .await;
        match reply {
            Ok(reply) => Ok(super::replies::deliveries(reply, partition)),
            Err(e) => {
                self.engine.recover_if_group_lost(partition, &e).await;
                Err(e.into())
            }
        }
    }

    /// Starts a blocking read of up to `count` entries of `partition`, on its connection.
    async fn start_blocking_read(
        &self,
        reads: &mut Reads,
        partition: usize,
        count: usize,
    ) -> Result<Read, QueueError> {
        if reads.connections.len() <= partition {
            reads.connections.resize(partition + 1, None);
        }
        let conn = match &reads.connections[partition] {
            Some(conn) => conn.clone(),
            None => {
                // Its own connection (on a cluster, its own connections to each node): the
                // answer to a blocking read may take the whole block time.
                let conn = RedisConn::open(
                    &self.engine.target,
                    Timeouts {
                        connect: Duration::from_secs(5),
                        response: self.engine.config.block + Duration::from_secs(5),
                    },
                )
                .await?;
                reads.connections[partition] = Some(conn.clone());
                conn
            }
        };
        let block_ms = u64::try_from(self.engine.config.block.as_millis()).unwrap_or(1000);
        let mut command = redis::cmd("XREADGROUP");
        command
            .arg("GROUP")
            .arg(GROUP)
            .arg(&self.name)
            .arg("COUNT")
            .arg(count.max(1))
            .arg("BLOCK")
            .arg(block_ms)
            .arg("STREAMS")
            .arg(&self.engine.keys(partition).jobs)
            .arg(">");
        Ok(tokio::spawn(async move {
            let mut conn = conn;
            let reply: Option<StreamReadReply> = command.query_async(&mut conn).await?;
            Ok(super::replies::deliveries(reply, partition))
        }))
    }

    /// What a finished blocking read of `partition` brought. A failed read's connection is
    /// replaced on the next read.
    async fn finish_read(
        &self,
        reads: &mut Reads,
        partition: usize,
        result: Result<Result<Vec<Delivery>, redis::RedisError>, tokio::task::JoinError>,
    ) -> Result<Vec<Delivery>, QueueError> {
        match result {
            Ok(Ok(items)) => Ok(items),
            Ok(Err(e)) => {
                reads.connections[partition] = None;
                self.engine.recover_if_group_lost(partition, &e).await;
                Err(e.into())
            }
            Err(join) => {
                reads.connections[partition] = None;
                Err(QueueError::Invalid(format!(
                    "a blocking read ended: {join}"
                )))
            }
        }
    }

    /// Waits for the first blocking read to answer (starting one on every partition that has
    /// none running) and collects every read that has answered by then.
    async fn wait_for_entries(
        &self,
        reads: &mut Reads,
        partitions: usize,
        max: usize,
    ) -> Result<Vec<Delivery>, QueueError> {
        // One partition: the whole batch in one read, as without partitions. Several: one
        // entry each, so that a worker waiting on all of them holds at most one per partition
        // beyond what it asked for; the next fetch's sweep takes the rest.
        let count = if partitions == 1 { max } else { 1 };
        if reads.running.len() < partitions {
            reads.running.resize_with(partitions, || None);
        }
        for partition in 0..partitions {
            if reads.running[partition].is_none() {
                let read = self.start_blocking_read(reads, partition, count).await?;
                reads.running[partition] = Some(read);
            }
        }
        let (first, index) = {
            let waiting: Vec<(usize, &mut Read)> = reads
                .running
                .iter_mut()
                .enumerate()
                .filter_map(|(p, r)| r.as_mut().map(|r| (p, r)))
                .collect();
            let partitions_waiting: Vec<usize> = waiting.iter().map(|(p, _)| *p).collect();
            let (result, i, _) = select_all(waiting.into_iter().map(|(_, r)| r)).await;
            (result, partitions_waiting[i])
        };
        reads.running[index] = None;
        let mut error = None;
        let mut items = match self.finish_read(reads, index, first).await {
            Ok(items) => items,
            Err(e) => {
                error = Some(e);
                Vec::new()
            }
        };
        for partition in 0..reads.running.len() {
            let Some(read) = reads.running[partition].as_mut() else {
                continue;
            };
            if let Some(result) = read.now_or_never() {
                reads.running[partition] = None;
                match self.finish_read(reads, partition, result).await {
                    Ok(more) => items.extend(more),
                    Err(e) => error = Some(e),
                }
            }
        }
        match error {
            Some(e) if items.is_empty() => Err(e),
            _ => Ok(items),
        }
    }

    /// Hands back entries held here (kept from late blocking reads, or collected at close).
    async fn release_held(&self, items: &[Delivery]) -> Result<(), QueueError> {
        let groups = by_partition(
            items
                .iter()
                .filter_map(|d| split_handle(&d.handle).map(|(p, entry)| (p, (entry, d)))),
        );
        for (partition, entries) in groups {
            let keys = self.engine.keys(partition);
            for chunk in entries.chunks(500) {
                let mut invocation = scripts::RELEASE.key(&keys.jobs);
                invocation.arg(GROUP).arg(&self.name);
                for (entry, d) in chunk {
                    // Handing back is not an attempt: crashed deliveries before it were.
                    let attempts = d.attempts.saturating_add(d.deliveries.saturating_sub(1));
                    invocation
                        .arg(*entry)
                        .arg(&d.item_id)
                        .arg(attempts)
                        .arg(&d.payload);
                }
                let _: i64 = invocation.invoke_async(&mut self.conn()).await?;
            }
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Consumer for RedisConsumer {
    fn name(&self) -> &str {
        &self.name
    }

    async fn fetch(&self, max: usize) -> Result<Vec<Delivery>, QueueError> {
        let max = max.max(1);
        let mut out = {
            let mut kept = self.kept.lock().expect("kept lock");
            let n = kept.len().min(max);
            kept.drain(..n).collect::<Vec<_>>()
        };
        let partitions = self.engine.partitions_read();
        let mut reads = self.reads.lock().await;
        if partitions > 1 && out.len() < max {
            let start = reads.next_start % partitions;
            reads.next_start = reads.next_start.wrapping_add(1);
            for k in 0..partitions {
                let partition = (start + k) % partitions;
                out.extend(self.read_now(partition, max - out.len()).await?);
                if out.len() >= max {
                    break;
                }
            }
        }
        if !out.is_empty() {
            return Ok(out);
        }
        let mut items = self.wait_for_entries(&mut reads, partitions, max).await?;
        if items.len() > max {
            let extra = items.split_off(max);
            self.kept.lock().expect("kept lock").extend(extra);
        }
        Ok(items)
    }

    async fn settle(&self, batch: &[(Delivery, Settlement)]) -> Result<(), QueueError> {
        let config = &self.engine.config;
        // A handle that names no partition was not made by this engine: nothing to settle.
        let groups = by_partition(batch.iter().filter_map(|(delivery, settlement)| {
            split_handle(&delivery.handle).map(|(p, entry)| (p, (entry, delivery, settlement)))
        }));
        // Partitions may live on different shards: settled concurrently.
        try_join_all(groups.iter().map(|(&partition, items)| async move {
            let keys = self.engine.keys(partition);
            for chunk in items.chunks(500) {
                let mut invocation = scripts::SETTLE.key(&keys.jobs);
                invocation
                    .key(&keys.delayed)
                    .key(&keys.dead)
                    .arg(GROUP)
                    .arg(config.dead_retention)
                    .arg(&self.name);
                for (entry, delivery, settlement) in chunk {
                    let (kind, attempts, extra) = match plan(config, delivery, settlement) {
                        Plan::Done => ("a", delivery.attempts, String::new()),
                        Plan::Again { attempts, after } => ("s", attempts, millis(after)),
                        Plan::Dead { attempts, error } => ("d", attempts, error),
                    };
                    invocation
                        .arg(kind)
                        .arg(*entry)
                        .arg(&delivery.item_id)
                        .arg(attempts)
                        .arg(&delivery.payload)
                        .arg(extra);
                }
                let result: Result<i64, redis::RedisError> =
                    invocation.invoke_async(&mut self.conn()).await;
                if let Err(e) = result {
                    self.engine.recover_if_group_lost(partition, &e).await;
                    return Err(QueueError::from(e));
                }
            }
            Ok(())
        }))
        .await?;
        Ok(())
    }

    async fn extend(&self, held: &[Delivery]) -> Result<(), QueueError> {
        let kept = self.kept.lock().expect("kept lock").clone();
        let groups = by_partition(
            held.iter()
                .chain(kept.iter())
                .filter_map(|d| split_handle(&d.handle)),
        );
        for (partition, entries) in groups {
            let keys = self.engine.keys(partition);
            for chunk in entries.chunks(500) {
                let mut invocation = scripts::EXTEND.key(&keys.jobs);
                invocation.arg(GROUP).arg(&self.name);
                for entry in chunk {
                    invocation.arg(*entry);
                }
                let lost: Vec<String> = invocation.invoke_async(&mut self.conn()).await?;
                if !lost.is_empty() {
                    tracing::warn!(consumer = %self.name, partition, entries = ?lost, "leases lost: another worker took these items after a stall");
                }
            }
        }
        Ok(())
    }

    async fn maintain(&self) -> Result<Maintenance, QueueError> {
        self.engine.refresh_partitions().await?;
        let mut conn = self.conn();
        let mut next_due: Option<Duration> = None;
        let mut reclaimed = Vec::new();
        for partition in 0..self.engine.partitions_read() {
            if let Some(due) = self.promote(partition, &mut conn).await? {
                next_due = Some(next_due.map_or(due, |d| d.min(due)));
            }
            reclaimed.extend(self.reclaim(partition, &mut conn).await?);
        }
        if !reclaimed.is_empty() {
            tracing::warn!(consumer = %self.name, count = reclaimed.len(), "took over items whose worker stopped renewing them");
        }
        Ok(Maintenance {
            reclaimed,
            next_due,
        })
    }

    async fn release(&self, unstarted: &[Delivery]) -> Result<(), QueueError> {
        self.release_held(unstarted).await
    }

    async fn close(&self) -> Result<(), QueueError> {
        // Blocking reads still running end within the block time; what they bring, and what
        // is kept here, was never started: handed back before leaving.
        let mut unstarted: Vec<Delivery> =
            std::mem::take(&mut *self.kept.lock().expect("kept lock"));
        {
            let mut reads = self.reads.lock().await;
            for partition in 0..reads.running.len() {
                if let Some(read) = reads.running[partition].take()
                    && let Ok(items) = self.finish_read(&mut reads, partition, read.await).await
                {
                    unstarted.extend(items);
                }
            }
        }
        self.release_held(&unstarted).await?;
        for partition in 0..self.engine.partitions_read() {
            let _: i64 = scripts::LEAVE
                .key(&self.engine.keys(partition).jobs)
                .arg(GROUP)
                .arg(&self.name)
                .arg(u64::try_from(CONSUMER_GC_IDLE.as_millis()).unwrap_or(u64::MAX))
                .invoke_async(&mut self.conn())
                .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
impl RedisConsumer {
    pub(super) fn engine(&self) -> &RedisEngine {
        &self.engine
    }
    pub(super) fn engine_keys(&self) -> &super::partitions::Keys {
        self.engine.keys(0)
    }
    pub(super) fn test_conn(&self) -> RedisConn {
        self.conn()
    }
}
