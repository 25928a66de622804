//! The two writes of `POST /v1/jobs`, batched across requests.
//!
//! Each enqueue stores its job (a durable write, with an entry saying its push
//! is not confirmed yet) and, once the id is pushed to the queue, deletes that
//! entry (another; the job row is not written again). Measured with
//! `byok-bench enqueue`, those writes, one statement and one commit per
//! request, were the route's bound: PostgreSQL's CPU, not the HTTP stack.
//! Here one task per server gathers what concurrent requests want written
//! and writes it in one statement.
//!
//! Why no timer: a task takes every request waiting when it wakes, so at
//! low load each one is written at once, alone, and under load the requests
//! that arrive while earlier writes run form the next batch. Nothing waits
//! for a batch to fill.

use std::sync::Arc;

use byok_store::{Inserted, NewJob, Store, StoreError};
use tokio::sync::{Semaphore, mpsc, oneshot};
use uuid::Uuid;

use crate::error::{ApiError, ApiErrorCode};

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
    sender: Option<mpsc::Sender<InsertRequest>>,
    store: Store,
}

struct InsertRequest {
    job: NewJob,
    reply: oneshot::Sender<Result<Inserted, Arc<StoreError>>>,
}

impl JobInserts {
    pub(crate) fn start(store: Store) -> Self {
        let sender = tokio::runtime::Handle::try_current().ok().map(|runtime| {
            let (sender, receiver) = mpsc::channel(BACKLOG);
            runtime.spawn(insert_jobs(store.clone(), receiver));
            sender
        });
        Self { sender, store }
    }

    /// What [`byok_store::JobRepo::insert`] does, in a batch with other
    /// requests' jobs; errors as the API answers them.
    pub(crate) async fn insert(&self, job: NewJob) -> Result<Inserted, ApiError> {
        let job = match &self.sender {
            Some(sender) => {
                let (reply, answer) = oneshot::channel();
                match sender.try_send(InsertRequest { job, reply }) {
                    // The task answers every request it takes; no answer
                    // means it is gone mid-write, and the outcome unknown.
                    Ok(()) => {
                        return match answer.await {
                            Ok(answer) => answer.map_err(|e| ApiError::store(&e)),
                            Err(_) => Err(ApiError::new(
                                ApiErrorCode::ServiceUnavailable,
                                "the job may or may not have been stored; retry with the same \
                                 Idempotency-Key to get it rather than create another",
                            )),
                        };
                    }
                    Err(
                        mpsc::error::TrySendError::Full(request)
                        | mpsc::error::TrySendError::Closed(request),
                    ) => request.job,
                }
            }
            None => job,
        };
        self.store
            .jobs()
            .insert(&job)
            .await
            .map_err(|e| ApiError::store(&e))
    }
}

async fn insert_jobs(store: Store, mut receiver: mpsc::Receiver<InsertRequest>) {
    let writers = Arc::new(Semaphore::new(INSERT_WRITERS));
    loop {
        // A free writer first, then the batch: while all writers are busy,
        // requests gather in the channel for the next one.
        let Ok(writer) = Arc::clone(&writers).acquire_owned().await else {
            return;
        };
        let mut batch = Vec::with_capacity(MAX_BATCH);
        if receiver.recv_many(&mut batch, MAX_BATCH).await == 0 {
            return;
        }
        let store = store.clone();
        tokio::spawn(async move {
            insert_batch(&store, batch).await;
            drop(writer);
        });
    }
}

async fn insert_batch(store: &Store, batch: Vec<InsertRequest>) {
    let (jobs, replies): (Vec<NewJob>, Vec<_>) =
        batch.into_iter().map(|r| (r.job, r.reply)).unzip();
    let jobs_repo = store.jobs();
    match jobs_repo.insert_many(&jobs).await {
        Ok(answers) => {
            // A requester that stopped waiting is gone (here and below); a
            // job stored for it stays, and the sweeper will queue it.
            for (reply, answer) in replies.into_iter().zip(answers) {
                let _ = reply.send(answer.map_err(Arc::new));
            }
        }
        // The database refused the statement, or it was refused before
        // reaching it: nothing of the batch is stored. One job may be the
        // cause; inserted alone, each gets its own answer.
        Err(StoreError::Database(_) | StoreError::Invalid(_)) if jobs.len() > 1 => {
            for (job, reply) in jobs.iter().zip(replies) {
                let _ = reply.send(jobs_repo.insert(job).await.map_err(Arc::new));
            }
        }
        // A lone job's error is its answer. When the database is
        // unreachable, perhaps after committing, inserting again could store
        // the jobs twice: every requester hears of it instead.
        Err(e) => {
            if e.is_unavailable() {
                tracing::warn!(jobs = jobs.len(), error = %e, "new jobs may not be stored");
            }
            let e = Arc::new(e);
            for reply in replies {
                let _ = reply.send(Err(Arc::clone(&e)));
            }
        }
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
