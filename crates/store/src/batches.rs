//! `batches`: jobs enqueued as one unit (`POST /v1/batches`, docs/webhooks.md "Batches").
//!
//! A batch and all its jobs are written in one transaction: either every job exists, each
//! pointing at its batch, or none does. `remaining` starts at the number of jobs; the job
//! transitions that end a job count it down under the batch row's lock (`outbox.rs`), and
//! the one that reaches zero sets `finished_at` and writes `batch.completed`. This module
//! never changes `remaining` itself: cancelling a batch cancels its jobs one by one through
//! [`JobRepo::cancel`](crate::JobRepo::cancel), so each writes its own events.

use byok_core::{BatchCounts, BatchStatus, BatchView, JobStatus};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;
use uuid::Uuid;

use crate::db::with_pool;
use crate::jobs::{JobRow, pg_insert_rows, sqlite_insert_rows};
use crate::sql_types::{DbUuid, from_row};
use crate::{Cancelled, Idempotency, Job, NewJob, Store, StoreError};

/// Column list of a batch row, as `b.` columns (every query reads the row with its counts).
macro_rules! batch_columns {
    () => {
        "b.id, b.project_id, b.total, b.remaining, b.metadata, b.created_by_token, \
         b.idempotency_key, b.request_sha256, b.created_at, b.finished_at"
    };
}

/// The batch row joined with its jobs' counts per status: one row per status present (or
/// one with a `NULL` status for a batch without jobs). One statement reads one snapshot, and
/// a job's final transition changes the job and the batch row in one statement
/// (PostgreSQL) or transaction (SQLite), so the counts always agree with `remaining`.
macro_rules! batch_with_counts {
    ($where:literal) => {
        concat!(
            "SELECT ",
            batch_columns!(),
            ", j.status AS job_status, count(j.id) AS job_count \
             FROM batches b LEFT JOIN generation_jobs j ON j.batch_id = b.id \
             WHERE ",
            $where,
            " GROUP BY b.id, j.status"
        )
    };
}

from_row! {
    struct BatchCountRow {
        id: DbUuid,
        project_id: DbUuid,
        total: i32,
        remaining: i32,
        metadata: Json<Value>,
        created_by_token: Option<DbUuid>,
        idempotency_key: Option<String>,
        request_sha256: Option<Vec<u8>>,
        created_at: DateTime<Utc>,
        finished_at: Option<DateTime<Utc>>,
        job_status: Option<String>,
        job_count: i64,
    }
}

/// One batch as stored, with its jobs counted by status.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// UUIDv7.
    pub id: Uuid,
    /// The project it was enqueued in.
    pub project_id: Uuid,
    /// How many jobs it holds.
    pub total: u32,
    /// How many of them are not final yet.
    pub remaining: u32,
    /// The producer's own data, untouched.
    pub metadata: Value,
    /// The producer token that enqueued it.
    pub created_by_token: Option<Uuid>,
    /// The producer's `Idempotency-Key`.
    pub idempotency_key: Option<String>,
    /// SHA-256 of the canonical request, to tell a replay from a conflict.
    pub request_sha256: Option<Vec<u8>>,
    /// Accepted.
    pub created_at: DateTime<Utc>,
    /// When its last job reached a final status.
    pub finished_at: Option<DateTime<Utc>>,
    /// Its jobs by status, read with the row.
    pub counts: BatchCounts,
}

impl Batch {
    /// Whether every job is final (`batch.completed` was written).
    pub fn is_completed(&self) -> bool {
        self.finished_at.is_some()
    }

    /// One batch from its rows of [`batch_with_counts!`]; `None` when there are none.
    fn from_rows(rows: Vec<BatchCountRow>) -> Result<Option<Batch>, StoreError> {
        let mut counts = BatchCounts::default();
        for row in &rows {
            if let Some(status) = &row.job_status {
                let status = status
                    .parse::<JobStatus>()
                    .map_err(|_| StoreError::Malformed("generation_jobs.status"))?;
                counts.add(status, u32::try_from(row.job_count).unwrap_or(u32::MAX));
            }
        }
        let Some(row) = rows.into_iter().next() else {
            return Ok(None);
        };
        Ok(Some(Batch {
            id: row.id.0,
            project_id: row.project_id.0,
            total: u32::try_from(row.total).unwrap_or(0),
            remaining: u32::try_from(row.remaining).unwrap_or(0),
            metadata: row.metadata.0,
            created_by_token: row.created_by_token.map(Uuid::from),
            idempotency_key: row.idempotency_key,
            request_sha256: row.request_sha256,
            created_at: row.created_at,
            finished_at: row.finished_at,
            counts,
        }))
    }
}

impl From<Batch> for BatchView {
    fn from(batch: Batch) -> Self {
        BatchView {
            id: batch.id,
            status: if batch.is_completed() {
                BatchStatus::Completed
            } else {
                BatchStatus::Running
            },
            total: batch.total,
            progress: BatchView::progress_of(&batch.counts, batch.total),
            counts: batch.counts,
            metadata: batch.metadata,
            created_at: batch.created_at,
            finished_at: batch.finished_at,
        }
    }
}

/// A batch to create.
#[derive(Debug, Clone)]
pub struct NewBatch {
    /// The project it is enqueued in (the token's).
    pub project_id: Uuid,
    /// The producer token that enqueues it.
    pub created_by_token: Option<Uuid>,
    /// Replays of the same key by the same token return the same batch.
    pub idempotency: Option<Idempotency>,
    /// The producer's own data.
    pub metadata: Value,
    /// Its jobs, at least one, without idempotency keys of their own (the batch has the
    /// key) and without a `batch_id` (set here).
    pub jobs: Vec<NewJob>,
}

/// What [`BatchRepo::create`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum BatchInserted {
    /// A new batch and its jobs, in the order given.
    Created(Batch, Vec<Job>),
    /// The token already used this idempotency key for the same request: that batch, and
    /// nothing was written.
    Replayed(Batch),
    /// The token already used this idempotency key for another request.
    Conflict(Batch),
}

impl Store {
    /// Batches of jobs enqueued as one unit.
    pub fn batches(&self) -> BatchRepo<'_> {
        BatchRepo::new(self)
    }
}

/// Queries on `batches`.
#[derive(Debug, Clone, Copy)]
pub struct BatchRepo<'a> {
    store: &'a Store,
}

impl<'a> BatchRepo<'a> {
    fn new(store: &'a Store) -> Self {
        Self { store }
    }

    /// Stores the batch and every job of it (`queued`, not yet marked enqueued) in one
    /// transaction: all or nothing. With an idempotency key the token already used, nothing
    /// is written and the earlier batch comes back as a replay (same request) or a conflict.
    ///
    /// An error means nothing was stored, unless the database became unreachable while
    /// committing ([`StoreError::is_unavailable`]), when the outcome is unknown.
    pub async fn create(&self, new: NewBatch) -> Result<BatchInserted, StoreError> {
        let NewBatch {
            project_id,
            created_by_token,
            idempotency,
            metadata,
            mut jobs,
        } = new;
        if jobs.is_empty() {
            return Err(StoreError::Invalid("a batch holds at least one job"));
        }
        let total = i32::try_from(jobs.len())
            .map_err(|_| StoreError::Invalid("a batch holds too many jobs"))?;
        if jobs
            .iter()
            .any(|j| j.idempotency.is_some() || j.batch_id.is_some())
        {
            return Err(StoreError::Invalid(
                "a batch's jobs carry no idempotency key or batch of their own",
            ));
        }
        if idempotency
            .as_ref()
            .is_some_and(|i| i.key.is_empty() || i.key.len() > 255)
        {
            return Err(StoreError::Invalid("an idempotency key is 1-255 bytes"));
        }
        let id = Uuid::now_v7();
        for job in &mut jobs {
            job.batch_id = Some(id);
        }
        let now = crate::now();
        let job_ids: Vec<Uuid> = jobs.iter().map(|_| Uuid::now_v7()).collect();
        let (key, sha) = match &idempotency {
            Some(i) => (Some(i.key.as_str()), Some(&i.request_sha256[..])),
            None => (None, None),
        };
        // The unique index on (created_by_token, idempotency_key) decides races between
        // requests with the same key: a second insert waits for the first transaction and
        // then does nothing (or inserts, if the first rolled back).
        let insert_batch = "INSERT INTO batches \
               (id, project_id, total, remaining, metadata, created_by_token, idempotency_key, \
                request_sha256, created_at) \
             VALUES ($1, $2, $3, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (created_by_token, idempotency_key) \
               WHERE idempotency_key IS NOT NULL DO NOTHING \
             RETURNING id";
        let rows: Option<Vec<JobRow>> = match &self.store.db {
            crate::db::Db::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                let inserted: Option<DbUuid> = sqlx::query_scalar(insert_batch)
                    .bind(DbUuid(id))
                    .bind(DbUuid(project_id))
                    .bind(total)
                    .bind(Json(&metadata))
                    .bind(created_by_token.map(DbUuid))
                    .bind(key)
                    .bind(sha)
                    .bind(now)
                    .fetch_optional(&mut *tx)
                    .await?;
                match inserted {
                    Some(_) => {
                        let rows = pg_insert_rows(&mut *tx, &jobs, &job_ids, now).await?;
                        tx.commit().await?;
                        Some(rows)
                    }
                    None => {
                        tx.rollback().await?;
                        None
                    }
                }
            }
            crate::db::Db::Sqlite(pool) => {
                let _write = self.store.write_guard().await;
                let mut tx = pool.begin().await?;
                let inserted: Option<DbUuid> = sqlx::query_scalar(insert_batch)
                    .bind(DbUuid(id))
                    .bind(DbUuid(project_id))
                    .bind(total)
                    .bind(Json(&metadata))
                    .bind(created_by_token.map(DbUuid))
                    .bind(key)
                    .bind(sha)
                    .bind(now)
                    .fetch_optional(&mut *tx)
                    .await?;
                match inserted {
                    Some(_) => {
                        let rows = sqlite_insert_rows(&mut tx, &jobs, &job_ids, now).await?;
                        tx.commit().await?;
                        Some(rows)
                    }
                    None => {
                        tx.rollback().await?;
                        None
                    }
                }
            }
        };
        let Some(rows) = rows else {
            return self.earlier_use_of_key(created_by_token, key, sha).await;
        };
        if rows.len() != jobs.len() {
            // Impossible: the jobs carry no idempotency key, so none is skipped. Were it
            // to happen, the batch's count would be wrong, so say so loudly.
            return Err(StoreError::Invalid("a batch's job was not stored"));
        }
        let jobs = rows
            .into_iter()
            .map(Job::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        let mut counts = BatchCounts::default();
        counts.add(
            JobStatus::Queued,
            u32::try_from(jobs.len()).unwrap_or(u32::MAX),
        );
        let batch = Batch {
            id,
            project_id,
            total: total.unsigned_abs(),
            remaining: total.unsigned_abs(),
            metadata,
            created_by_token,
            idempotency_key: key.map(str::to_owned),
            request_sha256: sha.map(<[u8]>::to_vec),
            created_at: now,
            finished_at: None,
            counts,
        };
        Ok(BatchInserted::Created(batch, jobs))
    }

    /// After an insert skipped a batch for its idempotency key: the batch that holds the
    /// key, as a replay (same request) or a conflict.
    async fn earlier_use_of_key(
        &self,
        token: Option<Uuid>,
        key: Option<&str>,
        sha: Option<&[u8]>,
    ) -> Result<BatchInserted, StoreError> {
        let rows: Vec<BatchCountRow> = with_pool!(self.store, |pool| sqlx::query_as(
            batch_with_counts!("b.created_by_token = $1 AND b.idempotency_key = $2")
        )
        .bind(token.map(DbUuid))
        .bind(key)
        .fetch_all(pool)
        .await?);
        let existing = Batch::from_rows(rows)?.ok_or(StoreError::Invalid(
            "the batch holding the idempotency key is gone",
        ))?;
        if existing.request_sha256.as_deref() == sha {
            Ok(BatchInserted::Replayed(existing))
        } else {
            Ok(BatchInserted::Conflict(existing))
        }
    }

    /// The batch `id` of `project_id`, with its counts; `None` when it does not exist or
    /// belongs to another project (the same answer).
    pub async fn get(&self, project_id: Uuid, id: Uuid) -> Result<Option<Batch>, StoreError> {
        Ok(self
            .get_by_id(id)
            .await?
            .filter(|batch| batch.project_id == project_id))
    }

    /// The batch `id` whatever its project (the deliveries render `batch.completed` with
    /// it), with its counts.
    pub async fn get_by_id(&self, id: Uuid) -> Result<Option<Batch>, StoreError> {
        let rows: Vec<BatchCountRow> = with_pool!(self.store, |pool| sqlx::query_as(
            batch_with_counts!("b.id = $1")
        )
        .bind(DbUuid(id))
        .fetch_all(pool)
        .await?);
        Batch::from_rows(rows)
    }

    /// The batch's jobs by status (every status present, 0 when none).
    pub async fn counts(&self, id: Uuid) -> Result<BatchCounts, StoreError> {
        let rows: Vec<(String, i64)> = with_pool!(self.store, |pool| sqlx::query_as(
            "SELECT status, count(*) FROM generation_jobs WHERE batch_id = $1 GROUP BY status"
        )
        .bind(DbUuid(id))
        .fetch_all(pool)
        .await?);
        let mut counts = BatchCounts::default();
        for (status, n) in rows {
            let status = status
                .parse::<JobStatus>()
                .map_err(|_| StoreError::Malformed("generation_jobs.status"))?;
            counts.add(status, u32::try_from(n).unwrap_or(u32::MAX));
        }
        Ok(counts)
    }

    /// Up to `limit` jobs of batch `id` of `project_id`, in creation order (ids are
    /// UUIDv7), after job `after` (the last id of the previous page). Empty for a batch of
    /// another project.
    pub async fn jobs(
        &self,
        project_id: Uuid,
        id: Uuid,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<Job>, StoreError> {
        // The nil UUID as the default bound keeps one query shape, walking the
        // (batch_id, id) index.
        let after = DbUuid(after.unwrap_or(Uuid::nil()));
        let rows: Vec<JobRow> = with_pool!(self.store, |pool| sqlx::query_as(concat!(
            "SELECT ",
            crate::jobs::job_columns!(),
            " FROM generation_jobs WHERE batch_id = $1 AND project_id = $2 AND id > $3 \
             ORDER BY id LIMIT $4"
        ))
        .bind(DbUuid(id))
        .bind(DbUuid(project_id))
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await?);
        rows.into_iter().map(Job::try_from).collect()
    }

    /// Cancels every live job of batch `id` of `project_id` with `why`, each through
    /// [`JobRepo::cancel`](crate::JobRepo::cancel): each writes its `job.cancelled`, and the
    /// one that ends the batch writes `batch.completed`. Returns the jobs cancelled now
    /// (a job that reached a final status meanwhile is left as it is), or `None` when there
    /// is no such batch in the project.
    pub async fn cancel(
        &self,
        project_id: Uuid,
        id: Uuid,
        why: &str,
    ) -> Result<Option<Vec<Job>>, StoreError> {
        if self.get(project_id, id).await?.is_none() {
            return Ok(None);
        }
        let live: Vec<DbUuid> = with_pool!(self.store, |pool| sqlx::query_scalar(
            "SELECT id FROM generation_jobs \
             WHERE batch_id = $1 AND status IN ('queued', 'throttled', 'running') ORDER BY id"
        )
        .bind(DbUuid(id))
        .fetch_all(pool)
        .await?);
        let mut cancelled = Vec::with_capacity(live.len());
        for job in live {
            // Each cancel is its own compare-and-set: a worker finishing the job first
            // makes it `AlreadyFinal`, and the batch is counted down once either way.
            if let Cancelled::Now(job) = self.store.jobs().cancel(job.0, why).await? {
                cancelled.push(job);
            }
        }
        Ok(Some(cancelled))
    }
}
