//! The embedded engine: the queue as one table, `queue_items`, in the SQLite
//! file the store uses (migration `20261125000002_queue.sql`), for the
//! one-process shape (`byok run`).
//!
//! Each row is one queue entry, named for life by `seq` (the delivery
//! handle). A fetch claims due `ready` rows in one `UPDATE … RETURNING`
//! through a partial index, leasing them to the consumer; an ack deletes
//! the row, so finished work leaves nothing behind; a reschedule, retry,
//! hand-back or dead letter writes a *new* row (new `seq`) and deletes the
//! delivered one, exactly as the Redis engine writes a new stream entry, so
//! a stale settlement can never touch a later delivery of the same item.
//! Settlements other than acks apply only while the consumer still owns
//! the lease (the Redis `SETTLE` script's rule). Expired leases are taken
//! over by `maintain`, with the same delivery cap and poison isolation as
//! the Redis `RECLAIM` script.
//!
//! Times are unix milliseconds from this process's clock: one process owns
//! the file (other processes — a CLI, a test's child worker — share the
//! machine's clock). A blocking fetch sleeps until the block time ends, the
//! next delayed item falls due, or an item is pushed by this process (a
//! process-wide `Notify` per file and namespace); items pushed by another
//! process are seen within `queue.block`.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::sync::{Arc, LazyLock, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use sqlx::Row as _;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use tokio::sync::Notify;

use crate::engine::{Consumer, Delivery, Engine, Maintenance, NewItem, Plan, Settlement, plan};
use byok_core::QueueStats;

use crate::inspect::{ItemState, ListedItem, WorkerSeen};
use crate::{QueueConfig, QueueError};

/// Rows per statement (pushes, settlements, inspection chunks): bounded so
/// that a huge call is several short statements inside its transaction.
const CHUNK: usize = 1000;
/// Connections of an engine's own pool: writes are serialised anyway (see
/// [`FileShared::write`]); the others serve inspection reads concurrently.
const POOL_SIZE: u32 = 4;
/// How long a write waits for another process's write transaction.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// `BEGIN IMMEDIATE` takes the write lock up front. A deferred transaction
/// that reads first and writes later fails at once with `SQLITE_BUSY`
/// (without waiting out the busy timeout) when another connection wrote in
/// between; an immediate one waits for the lock and then sees the latest data.
const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";

// --- Statements -------------------------------------------------------------
//
// States are literals, never parameters, so that the planner can match the
// partial indexes (`WHERE state = 'ready'` …). Lists travel as one JSON
// array parameter read with `json_each`, so every statement is static text
// and a batch is one statement. Statements on listed rows say `NOT INDEXED`:
// they must look rows up by `seq` (the rowid, still allowed), never walk an
// index on `namespace` and test every row against the list — the plan
// apalis-sqlite fell into (its acks scanned every job a worker had finished).
// The unit tests below check every plan, on an empty and a full table.

/// Claims up to ?5 due ready rows of namespace ?1 for consumer ?3, leased
/// until ?4; ?2 is now. A ready row is a fresh entry, so this is its first
/// delivery (written as a constant, so an odd stored count cannot carry over).
const CLAIM: &str = "UPDATE queue_items
   SET state = 'running', lease_owner = ?3, lease_until = ?4, deliveries = 1, run_at = ?2
 WHERE seq IN (SELECT seq FROM queue_items
                WHERE namespace = ?1 AND state = 'ready' AND run_at <= ?2
                ORDER BY run_at, seq LIMIT ?5)
RETURNING seq, item_id, payload, attempts, deliveries";

/// Inserts ready rows of namespace ?1 enqueued at ?2 from the JSON array ?3
/// of `{i: item id, p: payload, a: attempts, r: due ms}`.
const PUSH: &str = "INSERT INTO queue_items
    (namespace, item_id, payload, state, run_at, attempts, deliveries, enqueued_at)
SELECT ?1, e.value ->> 'i', e.value ->> 'p', 'ready', e.value ->> 'r', e.value ->> 'a', 0, ?2
  FROM json_each(?3) AS e
 ORDER BY e.key";

/// Acknowledges: deletes the running rows ?2 (JSON array of seqs). Like the
/// Redis `XACK` + `XDEL`, regardless of the current owner: the work is done.
const ACK: &str = "DELETE FROM queue_items NOT INDEXED
 WHERE namespace = ?1 AND state = 'running' AND seq IN (SELECT value FROM json_each(?2))";

/// Writes the new entry of each move in ?2 (JSON array of `{s: seq, st:
/// 'ready' | 'dead', a: attempts, r: due or death ms, e: error, why:
/// reason}`) whose running row consumer ?4 still owns; ?3 is now.
/// [`MOVE_DELETE`] then deletes those rows, in the same transaction.
const MOVE_INSERT: &str = "INSERT INTO queue_items
    (namespace, item_id, payload, state, run_at, attempts, deliveries, enqueued_at,
     last_error, reason, died_at)
SELECT q.namespace, q.item_id, q.payload, m.value ->> 'st', m.value ->> 'r', m.value ->> 'a', 0, ?3,
       m.value ->> 'e', m.value ->> 'why',
       CASE WHEN m.value ->> 'st' = 'dead' THEN m.value ->> 'r' END
  FROM json_each(?2) AS m
  JOIN queue_items AS q NOT INDEXED ON q.seq = m.value ->> 's'
 WHERE q.namespace = ?1 AND q.state = 'running' AND q.lease_owner = ?4
 ORDER BY m.key";

/// Deletes the running rows of the moves in ?2 that consumer ?3 owns.
const MOVE_DELETE: &str = "DELETE FROM queue_items NOT INDEXED
 WHERE namespace = ?1 AND state = 'running' AND lease_owner = ?3
   AND seq IN (SELECT m.value ->> 's' FROM json_each(?2) AS m)";

/// Deletes dead rows of namespace ?1 beyond the newest ?2.
const TRIM_DEAD: &str = "DELETE FROM queue_items
 WHERE seq IN (SELECT seq FROM queue_items WHERE namespace = ?1 AND state = 'dead'
                ORDER BY died_at DESC, seq DESC LIMIT -1 OFFSET ?2)";

/// Renews the leases (until ?3) of the rows ?4 that consumer ?2 still owns.
const EXTEND: &str = "UPDATE queue_items NOT INDEXED SET lease_until = ?3
 WHERE namespace = ?1 AND state = 'running' AND lease_owner = ?2
   AND seq IN (SELECT value FROM json_each(?4))
RETURNING seq";

/// The deliveries of the oldest (lowest seq) running row whose lease expired
/// by ?2 — the Redis engine's `XPENDING … IDLE` look at the oldest idle entry.
const OLDEST_EXPIRED: &str = "SELECT deliveries FROM queue_items
 WHERE namespace = ?1 AND state = 'running' AND lease_until <= ?2
 ORDER BY seq LIMIT 1";

/// Takes over up to ?5 running rows whose lease expired by ?2, oldest
/// first, for consumer ?3 until ?4, counting a delivery (`XAUTOCLAIM`).
const RECLAIM: &str = "UPDATE queue_items
   SET lease_owner = ?3, lease_until = ?4, run_at = ?2,
       deliveries = min(max(deliveries, 0), 4294967294) + 1
 WHERE seq IN (SELECT seq FROM queue_items
                WHERE namespace = ?1 AND state = 'running' AND lease_until <= ?2
                ORDER BY seq LIMIT ?5)
RETURNING seq, item_id, payload, attempts, deliveries";

/// The earliest due time of the ready rows after ?2.
const NEXT_DUE: &str = "SELECT min(run_at) FROM queue_items
 WHERE namespace = ?1 AND state = 'ready' AND run_at > ?2";

const STATS: &str = "SELECT
  (SELECT count(*) FROM queue_items WHERE namespace = ?1 AND state = 'ready' AND run_at <= ?2) AS pending,
  (SELECT count(*) FROM queue_items WHERE namespace = ?1 AND state = 'ready' AND run_at > ?2) AS scheduled,
  (SELECT count(*) FROM queue_items WHERE namespace = ?1 AND state = 'running') AS running,
  (SELECT count(*) FROM queue_items WHERE namespace = ?1 AND state = 'dead') AS dead,
  (SELECT min(run_at) FROM queue_items WHERE namespace = ?1 AND state = 'ready' AND run_at <= ?2) AS oldest";

const COLUMNS_OK: &str = "SELECT seq, namespace, item_id, payload, state, run_at, attempts,
       deliveries, lease_owner, lease_until, enqueued_at, last_error, reason, died_at
  FROM queue_items LIMIT 0";

const LIST_PENDING: &str =
    "SELECT seq, item_id, payload, attempts, deliveries, lease_owner, run_at AS at_ms, last_error
  FROM queue_items WHERE namespace = ?1 AND state = 'ready' AND run_at <= ?2
 ORDER BY run_at, seq LIMIT ?3";
const LIST_SCHEDULED: &str =
    "SELECT seq, item_id, payload, attempts, deliveries, lease_owner, run_at AS at_ms, last_error
  FROM queue_items WHERE namespace = ?1 AND state = 'ready' AND run_at > ?2
 ORDER BY run_at, seq LIMIT ?3";
const LIST_RUNNING: &str =
    "SELECT seq, item_id, payload, attempts, deliveries, lease_owner, run_at AS at_ms, last_error
  FROM queue_items WHERE namespace = ?1 AND state = 'running'
 ORDER BY seq LIMIT ?2";
const LIST_DEAD: &str =
    "SELECT seq, item_id, payload, attempts, deliveries, lease_owner, died_at AS at_ms, last_error
  FROM queue_items WHERE namespace = ?1 AND state = 'dead'
 ORDER BY died_at DESC, seq DESC LIMIT ?2";

/// Dead rows back to ready with fresh attempts, due ?2. A dead row was
/// written as a new entry, so its seq was never a delivery handle and may
/// become one now.
const RETRY_DEAD_REFS: &str = "UPDATE queue_items NOT INDEXED
   SET state = 'ready', run_at = ?2, attempts = 0, deliveries = 0, lease_owner = NULL,
       lease_until = NULL, enqueued_at = ?2, last_error = NULL, reason = NULL, died_at = NULL
 WHERE namespace = ?1 AND state = 'dead' AND seq IN (SELECT value FROM json_each(?3))";
const RETRY_DEAD_OLDEST: &str = "UPDATE queue_items
   SET state = 'ready', run_at = ?2, attempts = 0, deliveries = 0, lease_owner = NULL,
       lease_until = NULL, enqueued_at = ?2, last_error = NULL, reason = NULL, died_at = NULL
 WHERE seq IN (SELECT seq FROM queue_items WHERE namespace = ?1 AND state = 'dead'
                ORDER BY died_at, seq LIMIT ?3)";

const PURGE_PENDING: &str = "DELETE FROM queue_items WHERE seq IN
  (SELECT seq FROM queue_items WHERE namespace = ?1 AND state = 'ready' AND run_at <= ?2
    ORDER BY run_at, seq LIMIT ?3)";
const PURGE_SCHEDULED: &str = "DELETE FROM queue_items WHERE seq IN
  (SELECT seq FROM queue_items WHERE namespace = ?1 AND state = 'ready' AND run_at > ?2
    ORDER BY run_at, seq LIMIT ?3)";
const PURGE_DEAD: &str = "DELETE FROM queue_items WHERE seq IN
  (SELECT seq FROM queue_items WHERE namespace = ?1 AND state = 'dead'
    ORDER BY died_at, seq LIMIT ?2)";

// --- Process-wide state per database file -----------------------------------

/// What every engine of this process on one database file shares.
#[derive(Debug)]
struct FileShared {
    /// Serialises this process's write statements on the file, the store's
    /// included (`byok_sqlite_lock::write_lock`: one lock per file for
    /// every writer of the process). SQLite admits one writer at a time
    /// anyway; waiting here, in FIFO order, instead of in SQLite's busy
    /// handler (which sleeps and retries with growing pauses) keeps the
    /// fetcher, acknowledger and keeper of every worker, and the API's and
    /// the pipeline's job writes, from stalling each other. Writers in other
    /// processes are still waited for by the busy timeout.
    write: Arc<tokio::sync::Mutex<()>>,
    /// Per namespace: woken whenever this process writes a ready item, so
    /// waiting fetches look again (it may be due now, or sooner than what
    /// they wait for).
    wakers: Mutex<HashMap<String, Arc<Notify>>>,
}

impl FileShared {
    fn waker(&self, namespace: &str) -> Arc<Notify> {
        let mut wakers = self.wakers.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(wakers.entry(namespace.to_owned()).or_default())
    }
}

/// The shared state of every database file engines of this process use.
static FILES: LazyLock<Mutex<HashMap<PathBuf, Weak<FileShared>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

fn file_shared(path: &Path) -> Arc<FileShared> {
    let key = byok_sqlite_lock::file_identity(path);
    let mut files = FILES.lock().unwrap_or_else(PoisonError::into_inner);
    files.retain(|_, shared| shared.strong_count() > 0);
    if let Some(shared) = files.get(&key).and_then(Weak::upgrade) {
        return shared;
    }
    let shared = Arc::new(FileShared {
        write: byok_sqlite_lock::write_lock(path),
        wakers: Mutex::default(),
    });
    files.insert(key, Arc::downgrade(&shared));
    shared
}

/// Notes consumer ?2 of namespace ?1 as seen at ?3.
const NOTE_SEEN: &str = "INSERT INTO queue_consumers (namespace, name, seen_at) VALUES (?1, ?2, ?3) \
     ON CONFLICT (namespace, name) DO UPDATE SET seen_at = excluded.seen_at";
/// Drops the consumers of namespace ?1 last seen before ?2.
const FORGET_CONSUMERS: &str = "DELETE FROM queue_consumers WHERE namespace = ?1 AND seen_at < ?2";
/// Drops consumer ?2 of namespace ?1 (it closed).
const FORGET_CONSUMER: &str = "DELETE FROM queue_consumers WHERE namespace = ?1 AND name = ?2";
/// The consumers of namespace ?1, most recently seen first, with the running items each holds.
const WORKERS: &str = "SELECT c.name, c.seen_at, \
       (SELECT count(*) FROM queue_items i \
        WHERE i.namespace = c.namespace AND i.state = 'running' AND i.lease_owner = c.name) \
     FROM queue_consumers c WHERE c.namespace = ?1 ORDER BY c.seen_at DESC";
/// How often a consumer renews its `queue_consumers` row at most.
const NOTE_SEEN_EVERY: Duration = Duration::from_secs(5);
/// A consumer not seen for this long belongs to a process that died.
const FORGET_CONSUMER_AFTER: Duration = Duration::from_secs(3600);

// --- The engine --------------------------------------------------------------

/// A queue in a SQLite database file (the embedded shape). Cheap to clone.
#[derive(Clone)]
pub struct SqliteEngine {
    config: QueueConfig,
    pool: SqlitePool,
    path: PathBuf,
    file: Arc<FileShared>,
    wake: Arc<Notify>,
}

impl std::fmt::Debug for SqliteEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteEngine")
            .field("namespace", &self.config.namespace)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteEngine {
    /// Opens `url` (`sqlite://path/byok.db?mode=rwc`) with a pool of its own
    /// (WAL, `synchronous = NORMAL`, a busy timeout, foreign keys on, like
    /// the store). Fails with [`QueueError::Invalid`] when the queue table is
    /// missing or outdated: the store's migrations create it.
    pub async fn connect(url: &str, config: QueueConfig) -> Result<Arc<SqliteEngine>, QueueError> {
        let options = SqliteConnectOptions::from_str(url)?
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(POOL_SIZE)
            .connect_with(options)
            .await?;
        let engine = SqliteEngine::from_pool(pool, config);
        engine.check_schema().await?;
        Ok(engine)
    }

    /// An engine on an open pool (which should use WAL and a busy timeout,
    /// as [`SqliteEngine::connect`] sets them). The schema is not checked:
    /// operations fail with a SQLite error if the table is missing.
    pub fn from_pool(pool: SqlitePool, config: QueueConfig) -> Arc<SqliteEngine> {
        let path = pool.connect_options().get_filename().to_owned();
        let file = file_shared(&path);
        let wake = file.waker(&config.namespace);
        Arc::new(SqliteEngine {
            config,
            pool,
            path,
            file,
            wake,
        })
    }

    async fn check_schema(&self) -> Result<(), QueueError> {
        let tables: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'queue_items'",
        )
        .fetch_one(&self.pool)
        .await?;
        if tables == 0 {
            return Err(QueueError::Invalid(format!(
                "the queue table `queue_items` is missing from {}: run migrations first (`byok migrate`)",
                self.path.display()
            )));
        }
        if let Err(e) = sqlx::query(COLUMNS_OK).execute(&self.pool).await {
            return Err(QueueError::Invalid(format!(
                "the queue table in {} does not match this build ({e}): run migrations (`byok migrate`)",
                self.path.display()
            )));
        }
        Ok(())
    }

    fn namespace(&self) -> &str {
        &self.config.namespace
    }

    fn lease_ms(&self) -> i64 {
        ms(self.config.visibility_timeout)
    }

    /// How long until the earliest ready item due after `after` (unix ms)
    /// falls due (zero if it is due already).
    async fn next_due(&self, after: i64) -> Result<Option<Duration>, QueueError> {
        let row = sqlx::query(NEXT_DUE)
            .bind(self.namespace())
            .bind(after)
            .fetch_one(&self.pool)
            .await?;
        let now = now_ms();
        Ok(opt_int(&row, 0).map(|at| Duration::from_millis(to_u64(at.saturating_sub(now)))))
    }

    /// Writes `moves` (new entries for rows `owner` still holds) and deletes
    /// the rows they replace, inside the caller's transaction. Trims dead
    /// rows when any move is a dead letter.
    async fn apply_moves(
        &self,
        conn: &mut sqlx::SqliteConnection,
        moves: &[Move<'_>],
        owner: &str,
        now: i64,
    ) -> Result<(), QueueError> {
        for chunk in moves.chunks(CHUNK) {
            let json = serde_json::to_string(chunk)?;
            sqlx::query(MOVE_INSERT)
                .bind(self.namespace())
                .bind(&json)
                .bind(now)
                .bind(owner)
                .execute(&mut *conn)
                .await?;
            sqlx::query(MOVE_DELETE)
                .bind(self.namespace())
                .bind(&json)
                .bind(owner)
                .execute(&mut *conn)
                .await?;
        }
        if moves.iter().any(|m| m.st == DEAD) {
            sqlx::query(TRIM_DEAD)
                .bind(self.namespace())
                .bind(i64::try_from(self.config.dead_retention).unwrap_or(i64::MAX))
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }

    /// Runs a chunked statement (`?1` namespace, then `?2` now when
    /// `with_now`, then the chunk size) until it affects fewer rows than a
    /// chunk; each chunk is its own short write, so workers interleave with
    /// a large purge or retry.
    async fn chunked(&self, statement: &'static str, with_now: bool) -> Result<u64, QueueError> {
        let now = now_ms();
        let mut total = 0u64;
        loop {
            let affected = {
                let _write = self.file.write.lock().await;
                let mut query = sqlx::query(statement).bind(self.namespace());
                if with_now {
                    query = query.bind(now);
                }
                query
                    .bind(CHUNK as i64)
                    .execute(&self.pool)
                    .await?
                    .rows_affected()
            };
            total += affected;
            if affected < CHUNK as u64 {
                return Ok(total);
            }
        }
    }
}

#[async_trait::async_trait]
impl Engine for SqliteEngine {
    fn config(&self) -> &QueueConfig {
        &self.config
    }

    async fn push(&self, items: &[NewItem]) -> Result<(), QueueError> {
        if items.is_empty() {
            return Ok(());
        }
        {
            let _write = self.file.write.lock().await;
            let now = now_ms();
            let chunks = items
                .chunks(CHUNK)
                .map(|chunk| {
                    let rows: Vec<NewRow<'_>> = chunk
                        .iter()
                        .map(|item| NewRow {
                            i: &item.id,
                            p: &item.payload,
                            a: item.attempts,
                            r: now.saturating_add(ms(item.delay)),
                        })
                        .collect();
                    serde_json::to_string(&rows)
                })
                .collect::<Result<Vec<String>, _>>()?;
            if let [only] = chunks.as_slice() {
                push_chunk(&self.pool, self.namespace(), now, only).await?;
            } else {
                // One transaction per call: a bulk push lands whole or not at all.
                let mut tx = self.pool.begin_with(BEGIN_WRITE).await?;
                for json in &chunks {
                    push_chunk(&mut *tx, self.namespace(), now, json).await?;
                }
                tx.commit().await?;
            }
        }
        self.wake.notify_waiters();
        Ok(())
    }

    async fn consumer(&self, name: &str) -> Result<Arc<dyn Consumer>, QueueError> {
        self.note_seen(name).await?;
        Ok(Arc::new(SqliteConsumer {
            name: name.to_owned(),
            engine: self.clone(),
            noted: Mutex::new(Some(Instant::now())),
        }))
    }

    async fn stats(&self) -> Result<QueueStats, QueueError> {
        let now = now_ms();
        let row = sqlx::query(STATS)
            .bind(self.namespace())
            .bind(now)
            .fetch_one(&self.pool)
            .await?;
        let oldest = opt_int(&row, 4).map_or(0, |at| to_u64(now.saturating_sub(at)) / 1000);
        Ok(QueueStats {
            name: self.config.namespace.clone(),
            pending: to_u64(int(&row, 0)),
            scheduled: to_u64(int(&row, 1)),
            running: to_u64(int(&row, 2)),
            dead: to_u64(int(&row, 3)),
            oldest_pending_seconds: oldest,
        })
    }

    async fn list(&self, state: ItemState, limit: usize) -> Result<Vec<ListedItem>, QueueError> {
        let (statement, with_now) = match state {
            ItemState::Pending => (LIST_PENDING, true),
            ItemState::Scheduled => (LIST_SCHEDULED, true),
            ItemState::Running => (LIST_RUNNING, false),
            ItemState::Dead => (LIST_DEAD, false),
        };
        let mut query = sqlx::query(statement).bind(self.namespace());
        if with_now {
            query = query.bind(now_ms());
        }
        let rows = query
            .bind(limit.clamp(1, 1000) as i64)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|row| ListedItem {
                reference: int(row, 0).to_string(),
                item_id: text(row, 1),
                state,
                attempts: to_u32(int(row, 3)),
                // Like Redis: deliveries and owner are shown for running items only.
                deliveries: if state == ItemState::Running {
                    to_u32(int(row, 4))
                } else {
                    0
                },
                consumer: if state == ItemState::Running {
                    opt_text(row, 5)
                } else {
                    None
                },
                at_ms: to_u64(int(row, 6)),
                error: if state == ItemState::Dead {
                    opt_text(row, 7)
                } else {
                    None
                },
                payload: text(row, 2),
            })
            .collect())
    }

    async fn retry_dead(&self, refs: Option<&[String]>) -> Result<u64, QueueError> {
        let mut moved = 0u64;
        match refs {
            Some(refs) => {
                // Refused as a whole, before anything moves (as Redis refuses
                // an id that is not a stream id).
                let seqs = refs
                    .iter()
                    .map(|r| {
                        r.trim().parse::<i64>().map_err(|_| {
                            QueueError::Invalid(format!("not a dead item reference: {r:?}"))
                        })
                    })
                    .collect::<Result<Vec<i64>, _>>()?;
                for chunk in seqs.chunks(CHUNK) {
                    let json = serde_json::to_string(chunk)?;
                    let _write = self.file.write.lock().await;
                    moved += sqlx::query(RETRY_DEAD_REFS)
                        .bind(self.namespace())
                        .bind(now_ms())
                        .bind(json)
                        .execute(&self.pool)
                        .await?
                        .rows_affected();
                }
            }
            None => moved = self.chunked(RETRY_DEAD_OLDEST, true).await?,
        }
        if moved > 0 {
            self.wake.notify_waiters();
        }
        Ok(moved)
    }

    async fn purge(&self, state: ItemState) -> Result<u64, QueueError> {
        match state {
            ItemState::Running => Err(QueueError::Invalid(
                "running items belong to live workers; stop the workers or wait for the visibility timeout".into(),
            )),
            ItemState::Pending => self.chunked(PURGE_PENDING, true).await,
            ItemState::Scheduled => self.chunked(PURGE_SCHEDULED, true).await,
            ItemState::Dead => self.chunked(PURGE_DEAD, false).await,
        }
    }

    async fn ping(&self) -> Result<(), QueueError> {
        let _: i64 = sqlx::query_scalar("SELECT 1").fetch_one(&self.pool).await?;
        Ok(())
    }

    async fn workers(&self) -> Result<Vec<WorkerSeen>, QueueError> {
        let now = now_ms();
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(WORKERS)
            .bind(self.namespace())
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .map(|(name, seen_at, running)| WorkerSeen {
                name,
                running: to_u64(running),
                idle_ms: to_u64(now.saturating_sub(seen_at)),
            })
            .collect())
    }
}

impl SqliteEngine {
    /// Notes that consumer `name` is alive now, and drops consumers of the namespace not
    /// seen for [`FORGET_CONSUMER_AFTER`]. One small write per maintenance pass.
    async fn note_seen(&self, name: &str) -> Result<(), QueueError> {
        let now = now_ms();
        let _write = self.file.write.lock().await;
        let mut tx = self.pool.begin().await?;
        sqlx::query(NOTE_SEEN)
            .bind(self.namespace())
            .bind(name)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(FORGET_CONSUMERS)
            .bind(self.namespace())
            .bind(now.saturating_sub(ms(FORGET_CONSUMER_AFTER)))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}

async fn push_chunk<'e, E>(
    executor: E,
    namespace: &str,
    now: i64,
    json: &str,
) -> Result<(), QueueError>
where
    E: sqlx::Executor<'e, Database = sqlx::Sqlite>,
{
    sqlx::query(PUSH)
        .bind(namespace)
        .bind(now)
        .bind(json)
        .execute(executor)
        .await?;
    Ok(())
}

/// A pushed item, as [`PUSH`] reads it.
#[derive(Serialize)]
struct NewRow<'a> {
    i: &'a str,
    p: &'a str,
    a: u32,
    r: i64,
}

const READY: &str = "ready";
const DEAD: &str = "dead";

/// A running row replaced by a new entry, as [`MOVE_INSERT`] reads it.
#[derive(Debug, Serialize)]
struct Move<'a> {
    /// The running row.
    s: i64,
    /// The new entry's state: ready or dead.
    st: &'static str,
    /// Attempts counted on the new entry.
    a: u32,
    /// Due time (ready) or time of death (dead), unix ms.
    r: i64,
    /// Last error (dead).
    e: Option<&'a str>,
    /// Why it died: `failed`, `max_deliveries`.
    why: Option<&'static str>,
}

// --- The consumer ------------------------------------------------------------

/// One worker's consumer. Nothing about it is stored but the leases of the
/// rows it holds (`lease_owner`), so opening and closing it cost nothing.
struct SqliteConsumer {
    name: String,
    engine: SqliteEngine,
    /// When this consumer last noted itself in `queue_consumers`. Maintenance passes come
    /// as often as every few milliseconds while delayed items fall due; one write per
    /// [`NOTE_SEEN_EVERY`] is enough for "last seen" and keeps them off the write lock.
    noted: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for SqliteConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteConsumer")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl SqliteConsumer {
    fn namespace(&self) -> &str {
        self.engine.namespace()
    }

    /// Claims up to `max` due items in one statement.
    async fn claim(&self, max: usize) -> Result<Vec<Delivery>, QueueError> {
        let rows = {
            let _write = self.engine.file.write.lock().await;
            // Read the clock once the lock is ours: a wait for it must not
            // shorten the lease or hide items that fell due meanwhile.
            let now = now_ms();
            sqlx::query(CLAIM)
                .bind(self.namespace())
                .bind(now)
                .bind(&self.name)
                .bind(now.saturating_add(self.engine.lease_ms()))
                .bind(max.clamp(1, CHUNK) as i64)
                .fetch_all(&self.engine.pool)
                .await?
        };
        Ok(deliveries(&rows))
    }

    /// Takes over expired leases (see [`RECLAIM`]) in one transaction:
    /// deliveries beyond `max_attempts` go to dead instead.
    async fn reclaim(&self) -> Result<Vec<Delivery>, QueueError> {
        let config = &self.engine.config;
        let _write = self.engine.file.write.lock().await;
        let now = now_ms();
        let mut tx = self.engine.pool.begin_with(BEGIN_WRITE).await?;
        let oldest = sqlx::query(OLDEST_EXPIRED)
            .bind(self.namespace())
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(oldest) = oldest else {
            tx.commit().await?;
            return Ok(Vec::new());
        };
        // The oldest expired entry was already delivered twice (its workers
        // keep dying): take it alone, so a poison item does not take its
        // batch-mates down with the next worker.
        let count = if int(&oldest, 0) >= 2 {
            1
        } else {
            config.prefetch.clamp(1, CHUNK)
        };
        let rows = sqlx::query(RECLAIM)
            .bind(self.namespace())
            .bind(now)
            .bind(&self.name)
            .bind(now.saturating_add(self.engine.lease_ms()))
            .bind(count as i64)
            .fetch_all(&mut *tx)
            .await?;
        let mut reclaimed = Vec::new();
        let mut errors = Vec::new();
        for d in deliveries(&rows) {
            if u64::from(d.attempts) + u64::from(d.deliveries) > u64::from(config.max_attempts) {
                let error = format!(
                    "delivered {} times without finishing (the worker died each time)",
                    d.deliveries
                );
                errors.push((d, error));
            } else {
                reclaimed.push(d);
            }
        }
        let dead: Vec<Move<'_>> = errors
            .iter()
            .filter_map(|(d, error)| {
                Some(Move {
                    s: seq_of(d)?,
                    st: DEAD,
                    a: d.attempts.saturating_add(d.deliveries.saturating_sub(1)),
                    r: now,
                    e: Some(error),
                    why: Some("max_deliveries"),
                })
            })
            .collect();
        if !dead.is_empty() {
            self.engine
                .apply_moves(&mut tx, &dead, &self.name, now)
                .await?;
            tracing::warn!(consumer = %self.name, count = dead.len(), "items out of deliveries moved to dead (their workers died each time)");
        }
        tx.commit().await?;
        Ok(reclaimed)
    }
}

#[async_trait::async_trait]
impl Consumer for SqliteConsumer {
    fn name(&self) -> &str {
        &self.name
    }

    async fn fetch(&self, max: usize) -> Result<Vec<Delivery>, QueueError> {
        let deadline = Instant::now() + self.engine.config.block;
        loop {
            // Register for wake-ups before looking, so that a push landing
            // between the claim and the wait is not missed.
            let woken = self.engine.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let claimed = self.claim(max).await?;
            if !claimed.is_empty() {
                return Ok(claimed);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(Vec::new());
            }
            // Any ready item counts, even one due already: one pushed by
            // another process since the claim (no wake-up reaches us from
            // there) or one that fell due in between is then fetched at once.
            let wait = match self.engine.next_due(i64::MIN).await? {
                Some(due) => left.min(due),
                None => left,
            };
            tokio::select! {
                () = &mut woken => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    async fn settle(&self, batch: &[(Delivery, Settlement)]) -> Result<(), QueueError> {
        let config = &self.engine.config;
        let plans: Vec<(i64, Plan)> = batch
            .iter()
            .filter_map(|(d, s)| Some((seq_of(d)?, plan(config, d, s))))
            .collect();
        if plans.is_empty() {
            return Ok(());
        }
        let acks: Vec<i64> = plans
            .iter()
            .filter(|(_, p)| *p == Plan::Done)
            .map(|(seq, _)| *seq)
            .collect();
        let any_ready = plans.iter().any(|(_, p)| matches!(p, Plan::Again { .. }));
        {
            let _write = self.engine.file.write.lock().await;
            let now = now_ms();
            let moves: Vec<Move<'_>> = plans
                .iter()
                .filter_map(|(seq, p)| match p {
                    Plan::Done => None,
                    Plan::Again { attempts, after } => Some(Move {
                        s: *seq,
                        st: READY,
                        a: *attempts,
                        r: now.saturating_add(ms(*after)),
                        e: None,
                        why: None,
                    }),
                    Plan::Dead { attempts, error } => Some(Move {
                        s: *seq,
                        st: DEAD,
                        a: *attempts,
                        r: now,
                        e: Some(error),
                        why: Some("failed"),
                    }),
                })
                .collect();
            if moves.is_empty() && acks.len() <= CHUNK {
                // The common case: one statement, no transaction around it.
                ack(&self.engine.pool, self.namespace(), &acks).await?;
            } else {
                let mut tx = self.engine.pool.begin_with(BEGIN_WRITE).await?;
                for chunk in acks.chunks(CHUNK) {
                    ack(&mut *tx, self.namespace(), chunk).await?;
                }
                self.engine
                    .apply_moves(&mut tx, &moves, &self.name, now)
                    .await?;
                tx.commit().await?;
            }
        }
        if any_ready {
            self.engine.wake.notify_waiters();
        }
        Ok(())
    }

    async fn extend(&self, held: &[Delivery]) -> Result<(), QueueError> {
        let seqs: Vec<i64> = held.iter().filter_map(seq_of).collect();
        let mut owned = HashSet::new();
        for chunk in seqs.chunks(CHUNK) {
            let json = serde_json::to_string(chunk)?;
            let _write = self.engine.file.write.lock().await;
            let now = now_ms();
            let rows = sqlx::query(EXTEND)
                .bind(self.namespace())
                .bind(&self.name)
                .bind(now.saturating_add(self.engine.lease_ms()))
                .bind(json)
                .fetch_all(&self.engine.pool)
                .await?;
            owned.extend(rows.iter().map(|row| int(row, 0)));
        }
        let lost: Vec<&str> = held
            .iter()
            .filter(|d| seq_of(d).is_none_or(|seq| !owned.contains(&seq)))
            .map(|d| d.handle.as_str())
            .collect();
        if !lost.is_empty() {
            tracing::warn!(consumer = %self.name, entries = ?lost, "leases lost: another worker took these items after a stall");
        }
        Ok(())
    }

    async fn maintain(&self) -> Result<Maintenance, QueueError> {
        // Nothing to promote: a delayed row is claimable once its time comes.
        // A cheap read first, without the write lock: most passes find no
        // expired lease.
        let expired = sqlx::query(OLDEST_EXPIRED)
            .bind(self.namespace())
            .bind(now_ms())
            .fetch_optional(&self.engine.pool)
            .await?;
        let reclaimed = if expired.is_some() {
            self.reclaim().await?
        } else {
            Vec::new()
        };
        if !reclaimed.is_empty() {
            tracing::warn!(consumer = %self.name, count = reclaimed.len(), "took over items whose worker stopped renewing them");
        }
        let due = {
            let mut noted = self.noted.lock().unwrap_or_else(PoisonError::into_inner);
            let due = noted.is_none_or(|at| at.elapsed() >= NOTE_SEEN_EVERY);
            if due {
                *noted = Some(Instant::now());
            }
            due
        };
        if due {
            self.engine.note_seen(&self.name).await?;
        }
        // Only items not yet due: due ones are the fetcher's, and counting
        // them would make the keeper spin through a backlog.
        Ok(Maintenance {
            reclaimed,
            next_due: self.engine.next_due(now_ms()).await?,
        })
    }

    async fn release(&self, unstarted: &[Delivery]) -> Result<(), QueueError> {
        if unstarted.is_empty() {
            return Ok(());
        }
        {
            let _write = self.engine.file.write.lock().await;
            let now = now_ms();
            let moves: Vec<Move<'_>> = unstarted
                .iter()
                .filter_map(|d| {
                    Some(Move {
                        s: seq_of(d)?,
                        st: READY,
                        // Handing back is not an attempt: crashed deliveries before it were.
                        a: d.attempts.saturating_add(d.deliveries.saturating_sub(1)),
                        r: now,
                        e: None,
                        why: None,
                    })
                })
                .collect();
            if moves.is_empty() {
                return Ok(());
            }
            let mut tx = self.engine.pool.begin_with(BEGIN_WRITE).await?;
            self.engine
                .apply_moves(&mut tx, &moves, &self.name, now)
                .await?;
            tx.commit().await?;
        }
        self.engine.wake.notify_waiters();
        Ok(())
    }

    /// Nothing to clean: a consumer exists only as the owner of its leases,
    /// and the backend hands unstarted items back before closing.
    async fn close(&self) -> Result<(), QueueError> {
        let _write = self.engine.file.write.lock().await;
        sqlx::query(FORGET_CONSUMER)
            .bind(self.engine.namespace())
            .bind(&self.name)
            .execute(&self.engine.pool)
            .await?;
        Ok(())
    }
}

async fn ack<'e, E>(executor: E, namespace: &str, seqs: &[i64]) -> Result<(), QueueError>
where
    E: sqlx::Executor<'e, Database = sqlx::Sqlite>,
{
    if seqs.is_empty() {
        return Ok(());
    }
    sqlx::query(ACK)
        .bind(namespace)
        .bind(serde_json::to_string(seqs)?)
        .execute(executor)
        .await?;
    Ok(())
}

// --- Reading rows ----------------------------------------------------------------
//
// Stored rows are untrusted (anything may have edited the file): every
// column is read without sqlx's type check, whatever SQLite holds, and odd
// values become defaults or clamp rather than failing the worker.

fn opt_int(row: &SqliteRow, col: usize) -> Option<i64> {
    row.try_get_unchecked::<Option<i64>, _>(col).ok().flatten()
}

fn int(row: &SqliteRow, col: usize) -> i64 {
    opt_int(row, col).unwrap_or(0)
}

fn opt_text(row: &SqliteRow, col: usize) -> Option<String> {
    let bytes = row
        .try_get_unchecked::<Option<Vec<u8>>, _>(col)
        .ok()
        .flatten()?;
    Some(
        String::from_utf8(bytes)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
    )
}

fn text(row: &SqliteRow, col: usize) -> String {
    opt_text(row, col).unwrap_or_default()
}

fn to_u32(v: i64) -> u32 {
    u32::try_from(v.max(0)).unwrap_or(u32::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// `seq, item_id, payload, attempts, deliveries` rows as deliveries, oldest
/// entry first (`RETURNING` order is unspecified).
fn deliveries(rows: &[SqliteRow]) -> Vec<Delivery> {
    let mut out: Vec<(i64, Delivery)> = rows
        .iter()
        .map(|row| {
            let seq = int(row, 0);
            let d = Delivery {
                handle: seq.to_string(),
                item_id: text(row, 1),
                payload: text(row, 2),
                attempts: to_u32(int(row, 3)),
                deliveries: to_u32(int(row, 4)),
            };
            (seq, d)
        })
        .collect();
    out.sort_by_key(|(seq, _)| *seq);
    out.into_iter().map(|(_, d)| d).collect()
}

/// The row a delivery came from. Handles are row numbers this engine wrote;
/// one that is not names no row.
fn seq_of(d: &Delivery) -> Option<i64> {
    d.handle.parse().ok()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIGRATION: &str = include_str!("../../../migrations/sqlite/20261125000002_queue.sql");

    const STATEMENTS: [(&str, &str); 20] = [
        ("CLAIM", CLAIM),
        ("PUSH", PUSH),
        ("ACK", ACK),
        ("MOVE_INSERT", MOVE_INSERT),
        ("MOVE_DELETE", MOVE_DELETE),
        ("TRIM_DEAD", TRIM_DEAD),
        ("EXTEND", EXTEND),
        ("OLDEST_EXPIRED", OLDEST_EXPIRED),
        ("RECLAIM", RECLAIM),
        ("NEXT_DUE", NEXT_DUE),
        ("STATS", STATS),
        ("LIST_PENDING", LIST_PENDING),
        ("LIST_SCHEDULED", LIST_SCHEDULED),
        ("LIST_RUNNING", LIST_RUNNING),
        ("LIST_DEAD", LIST_DEAD),
        ("RETRY_DEAD_REFS", RETRY_DEAD_REFS),
        ("RETRY_DEAD_OLDEST", RETRY_DEAD_OLDEST),
        ("PURGE_PENDING", PURGE_PENDING),
        ("PURGE_SCHEDULED", PURGE_SCHEDULED),
        ("PURGE_DEAD", PURGE_DEAD),
    ];

    async fn plan_of(pool: &SqlitePool, statement: &str) -> Vec<String> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "EXPLAIN QUERY PLAN {statement}"
        )))
        .fetch_all(pool)
        .await
        .unwrap()
        .iter()
        .map(|row| row.get::<String, _>(3))
        .collect()
    }

    /// Every statement reaches rows through an index or the rowid, never a
    /// scan of the table; the claim needs no sort. Checked on an empty table
    /// (no statistics: what a first run plans with) and on a full one after
    /// `ANALYZE`, since apalis-sqlite's plans changed with both.
    async fn assert_plans(pool: &SqlitePool, when: &str) {
        for (name, statement) in STATEMENTS {
            let plan = plan_of(pool, statement).await;
            let joined = plan.join(" | ");
            if std::env::var_os("BYOK_PRINT_PLANS").is_some() {
                println!("{when} {name}: {joined}");
            }
            assert!(
                !plan
                    .iter()
                    .any(|l| l.starts_with("SCAN queue_items") || l.starts_with("SCAN q ")),
                "{when}: {name} scans the table: {joined}"
            );
            let expect = match name {
                "CLAIM" | "NEXT_DUE" | "LIST_PENDING" | "LIST_SCHEDULED" | "PURGE_PENDING"
                | "PURGE_SCHEDULED" => "INDEX queue_items_ready (namespace=? AND run_at",
                "OLDEST_EXPIRED" | "RECLAIM" => {
                    "INDEX queue_items_running (namespace=? AND lease_until<?)"
                }
                "TRIM_DEAD" | "LIST_DEAD" | "RETRY_DEAD_OLDEST" | "PURGE_DEAD" => {
                    "INDEX queue_items_dead (namespace=?)"
                }
                "LIST_RUNNING" => "INDEX queue_items_running (namespace=?)",
                "ACK" | "MOVE_INSERT" | "MOVE_DELETE" | "EXTEND" | "RETRY_DEAD_REFS" => {
                    "USING INTEGER PRIMARY KEY (rowid=?)"
                }
                _ => "",
            };
            assert!(joined.contains(expect), "{when}: {name}: {joined}");
        }
        let claim = plan_of(pool, CLAIM).await.join(" | ");
        assert!(
            !claim.contains("TEMP B-TREE"),
            "{when}: the claim sorts: {claim}"
        );
    }

    #[tokio::test]
    async fn every_statement_uses_its_index_on_an_empty_and_a_full_table() {
        let db = byok_testing::test_sqlite();
        let pool = SqlitePool::connect(&db.url).await.unwrap();
        sqlx::raw_sql(MIGRATION).execute(&pool).await.unwrap();
        assert_plans(&pool, "empty").await;

        // Two namespaces: a big backlog, running and dead rows, then statistics.
        for (namespace, state, n) in [
            ("a", "ready", 20_000),
            ("b", "ready", 5_000),
            ("a", "running", 500),
            ("a", "dead", 2_000),
        ] {
            sqlx::query(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?3)
                 INSERT INTO queue_items (namespace, item_id, payload, state, run_at, lease_owner,
                                          lease_until, enqueued_at, died_at)
                 SELECT ?1, 'item-' || i, '{}', ?2, i,
                        CASE ?2 WHEN 'running' THEN 'w' END, CASE ?2 WHEN 'running' THEN i END,
                        i, CASE ?2 WHEN 'dead' THEN i END
                   FROM n",
            )
            .bind(namespace)
            .bind(state)
            .bind(n)
            .execute(&pool)
            .await
            .unwrap();
        }
        sqlx::raw_sql("ANALYZE").execute(&pool).await.unwrap();
        pool.close().await;
        // New connections load the statistics.
        let pool = SqlitePool::connect(&db.url).await.unwrap();
        assert_plans(&pool, "full").await;
    }
}
