//! The writes of `POST /v1/jobs`, batched across requests.
//!
//! Each enqueue stores its job (a durable write, with an entry saying its push
//! is not confirmed yet), pushes its work item to the queue and, once the push
//! is confirmed, deletes that entry (another write; the job row is not written
//! again). Measured with `byok-bench enqueue`, those writes, one statement and
//! one commit per request, were the route's bound: PostgreSQL's CPU, not the
//! HTTP stack. The inserts go through a `byok_store::Batcher` (no timer: what
//! concurrent requests want written when a writer is free becomes one
//! statement), and the batch's new jobs are pushed right after it, in one call
//! to the queue (one script per partition rather than one per request); the
//! marks go through a task of their own below, since nobody waits for them.

use std::sync::Arc;
use std::time::Duration;

use byok_core::JobItem;
use byok_queue::Producer;
use byok_store::{BatchAnswers, BatchLimits, Batcher, Inserted, NewJob, Store, StoreError};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::error::ApiError;

/// Requests waiting beyond this are written by their own handler: the
/// database is behind, and memory should not grow.
const BACKLOG: usize = 8192;

/// Most jobs in one statement.
const MAX_BATCH: usize = 512;

/// Job inserts in flight at once. Fewer writers make larger batches, and a
/// batch's statement costs PostgreSQL far less per job than a small one's.
/// Measured with `byok-bench enqueue` (64 connections, production profile,
/// 2026-12-04, once a request no longer read its token and key): 1 writer
/// 9,516 requests/s with a p99 of 10.4 ms, 2 writers 9,025 and 11.2 ms,
/// 4 writers 8,205 and 13.1 ms, 8 writers 6,831 and 15.7 ms. (Before, with
/// those reads, 2 writers gave a p99 of ≈ 60 ms and 8 were chosen.) Two, not
/// one: a statement that stalls (a checkpoint, a lock) leaves the other
/// writing while the next batch forms.
const INSERT_WRITERS: usize = 2;

/// Whether a new job's work item reached the queue: `Err` says why not (the job is stored
/// and the sweeper pushes it later).
pub(crate) type Pushed = Result<(), String>;

/// Stores new jobs, many per statement, and pushes the new ones' work items.
#[derive(Debug, Clone)]
pub(crate) struct JobInserts {
    /// `None` outside a Tokio runtime: every job is inserted by its caller.
    batcher: Option<Arc<Batcher<NewJob, (Inserted, Pushed)>>>,
    store: Store,
    producer: Producer<JobItem>,
    push_timeout: Duration,
}

impl JobInserts {
    pub(crate) fn start(store: Store, producer: Producer<JobItem>, push_timeout: Duration) -> Self {
        let limits = BatchLimits {
            writers: INSERT_WRITERS,
            max_batch: MAX_BATCH,
            backlog: BACKLOG,
        };
        // A batch the database refuses is inserted job by job, so one job that is the
        // cause fails alone; running the insert again is safe, since a job already stored
        // under its idempotency key is found, not stored twice. When the database is
        // unreachable, perhaps after committing, every requester hears of it instead.
        let pushing = producer.clone();
        let batcher = Batcher::start(&store, limits, move |store, jobs: Arc<Vec<NewJob>>| {
            let producer = pushing.clone();
            async move { insert_and_push(&store, &producer, push_timeout, &jobs).await }
        });
        Self {
            batcher: batcher.map(Arc::new),
            store,
            producer,
            push_timeout,
        }
    }

    /// What [`byok_store::JobRepo::insert`] does, in a batch with other requests' jobs,
    /// and for a job it created, whether its work item was pushed; errors as the API
    /// answers them.
    pub(crate) async fn insert(&self, job: NewJob) -> Result<(Inserted, Pushed), ApiError> {
        let inserted = match &self.batcher {
            Some(batcher) => batcher.run(job).await,
            None => insert_and_push(
                &self.store,
                &self.producer,
                self.push_timeout,
                std::slice::from_ref(&job),
            )
            .await
            .and_then(|answers| {
                answers
                    .into_iter()
                    .next()
                    .unwrap_or(Err(StoreError::Invalid("an insert gave no answer")))
            }),
        };
        // A batch that got no answer (the process is stopping mid-write) is unavailable
        // too: a 503, which a producer retries with its Idempotency-Key.
        inserted.map_err(|e| ApiError::store(&e))
    }
}

/// Stores `jobs` in one statement, then pushes the ones it created in one call to the queue:
/// an answer per job, in order, with whether its push went through.
async fn insert_and_push(
    store: &Store,
    producer: &Producer<JobItem>,
    push_timeout: Duration,
    jobs: &[NewJob],
) -> BatchAnswers<(Inserted, Pushed)> {
    let answers = store.jobs().insert_many(jobs).await;
    if let Err(e) = &answers
        && e.is_unavailable()
    {
        tracing::warn!(jobs = jobs.len(), error = %e, "new jobs may not be stored");
    }
    let answers = answers?;
    // Pushed only once the insert committed: a worker that takes the item reads the row. A
    // replayed or conflicting request's job is not pushed again.
    let created: Vec<Uuid> = answers
        .iter()
        .filter_map(|answer| match answer {
            Ok(Inserted::Created(job)) => Some(job.id),
            _ => None,
        })
        .collect();
    let pushed = push_all(producer, &created, push_timeout).await;
    Ok(answers
        .into_iter()
        .map(|answer| {
            answer.map(|inserted| {
                let pushed = match inserted {
                    Inserted::Created(_) => pushed.clone(),
                    Inserted::Replayed(_) | Inserted::Conflict(_) => Ok(()),
                };
                (inserted, pushed)
            })
        })
        .collect())
}

/// Pushes the work items of `jobs` in one call to the queue (none when empty).
pub(crate) async fn push_all(
    producer: &Producer<JobItem>,
    jobs: &[Uuid],
    timeout: Duration,
) -> Pushed {
    if jobs.is_empty() {
        return Ok(());
    }
    let ids: Vec<String> = jobs.iter().map(Uuid::to_string).collect();
    let items: Vec<JobItem> = jobs.iter().map(|&job_id| JobItem { job_id }).collect();
    match tokio::time::timeout(
        timeout,
        producer.push_bulk(ids.iter().map(String::as_str).zip(&items)),
    )
    .await
    {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {} s", timeout.as_secs())),
    }
}

/// Confirms the push of jobs, many per statement (their `unpushed_jobs` entries
/// are deleted). A lost mark is harmless
/// (the sweeper pushes the job once more a minute later, and every worker
/// step is a compare-and-set on the row), so the response does not wait
/// for it.
#[derive(Debug, Clone)]
pub(crate) struct EnqueuedMarks {
    /// `None` outside a Tokio runtime: every mark is written by its caller.
    sender: Option<mpsc::Sender<Uuid>>,
    store: Store,
}

impl EnqueuedMarks {
    pub(crate) fn start(store: Store) -> Self {
        let sender = tokio::runtime::Handle::try_current().ok().map(|runtime| {
            let (sender, receiver) = mpsc::channel(BACKLOG);
            runtime.spawn(write_marks(store.clone(), receiver));
            sender
        });
        Self { sender, store }
    }

    /// Marks the job enqueued, soon. A mark that cannot be written is only
    /// logged.
    pub(crate) async fn mark(&self, job_id: Uuid) {
        if let Some(sender) = &self.sender
            && sender.try_send(job_id).is_ok()
        {
            return;
        }
        if let Err(e) = self.store.jobs().mark_enqueued(job_id).await {
            tracing::warn!(job.id = %job_id, error = %e, "could not note the job as enqueued");
        }
    }
}

async fn write_marks(store: Store, mut receiver: mpsc::Receiver<Uuid>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while receiver.recv_many(&mut batch, MAX_BATCH).await > 0 {
        if let Err(e) = store.jobs().mark_enqueued_many(&batch).await {
            tracing::warn!(
                jobs = batch.len(),
                error = %e,
                "could not note jobs as enqueued; the sweeper will push them again"
            );
        }
        batch.clear();
    }
}
