//! The two writes of `POST /v1/jobs`, batched across requests.
//!
//! Each enqueue stores its job (a durable write, with an entry saying its push
//! is not confirmed yet) and, once the id is pushed to the queue, deletes that
//! entry (another; the job row is not written again). Measured with
//! `byok-bench enqueue`, those writes, one statement and one commit per
//! request, were the route's bound: PostgreSQL's CPU, not the HTTP stack.
//! The inserts go through a `byok_store::Batcher` (no timer: what concurrent
//! requests want written when a writer is free becomes one statement); the
//! marks through a task of their own below, since nobody waits for them.

use std::sync::Arc;

use byok_store::{BatchLimits, Batcher, Inserted, NewJob, Store};
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

/// Stores new jobs, many per statement.
#[derive(Debug, Clone)]
pub(crate) struct JobInserts {
    /// `None` outside a Tokio runtime: every job is inserted by its caller.
    batcher: Option<Arc<Batcher<NewJob, Inserted>>>,
    store: Store,
}

impl JobInserts {
    pub(crate) fn start(store: Store) -> Self {
        let limits = BatchLimits {
            writers: INSERT_WRITERS,
            max_batch: MAX_BATCH,
            backlog: BACKLOG,
        };
        // A batch the database refuses is inserted job by job, so one job that is the
        // cause fails alone; running the insert again is safe, since a job already stored
        // under its idempotency key is found, not stored twice. When the database is
        // unreachable, perhaps after committing, every requester hears of it instead.
        let batcher = Batcher::start(&store, limits, |store, jobs: Arc<Vec<NewJob>>| async move {
            let answers = store.jobs().insert_many(&jobs).await;
            if let Err(e) = &answers
                && e.is_unavailable()
            {
                tracing::warn!(jobs = jobs.len(), error = %e, "new jobs may not be stored");
            }
            answers
        });
        Self {
            batcher: batcher.map(Arc::new),
            store,
        }
    }

    /// What [`byok_store::JobRepo::insert`] does, in a batch with other
    /// requests' jobs; errors as the API answers them.
    pub(crate) async fn insert(&self, job: NewJob) -> Result<Inserted, ApiError> {
        let inserted = match &self.batcher {
            Some(batcher) => batcher.run(job).await,
            None => self.store.jobs().insert(&job).await,
        };
        // A batch that got no answer (the process is stopping mid-write) is unavailable
        // too: a 503, which a producer retries with its Idempotency-Key.
        inserted.map_err(|e| ApiError::store(&e))
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
