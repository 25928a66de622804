//! A worker's reads and transitions, gathered across its concurrent steps into one
//! statement each (through [`crate::Batcher`]).
//!
//! A job's way through a worker is two reads (the job and the user's key, once per step)
//! and three transitions (`begin_submit`, `submitted`, `succeed`), each a statement, a
//! round trip and a commit of its own when written one by one: measured with
//! `byok-bench pipeline`, most of PostgreSQL's CPU per job went to running many tiny
//! statements rather than to the rows they change. Here each kind of statement has its
//! batcher, which runs the requests waiting together as one statement
//! ([`crate::JobRepo::get_many_for_step`] and friends). Every one is a compare-and-set on
//! its rows, so running again one that may have committed changes nothing.
//!
//! SQLite (the embedded shape) keeps one statement per request: it has one writer, in this
//! process, and no round trips to save.

use std::sync::Arc;

use byok_core::JobResult;
use uuid::Uuid;

use crate::batcher::{BatchLimits, Batcher};
use crate::db::Db;
use crate::jobs::Accepted;
use crate::{Job, StepKey, Store, StoreError};

/// Two writers per kind; at most 256 jobs per statement.
const LIMITS: BatchLimits = BatchLimits {
    writers: 2,
    max_batch: 256,
    backlog: 4096,
};

/// What a step reads: its job and the user's key for the job's provider.
pub type StepRead = Option<(Job, Option<StepKey>)>;

/// A worker's step statements, batched across its steps on PostgreSQL (see the module
/// documentation). Cheap to clone; the same answers as the [`crate::JobRepo`] methods of
/// the same names.
#[derive(Clone)]
pub struct JobBatches {
    store: Store,
    batched: Option<Arc<Batchers>>,
}

impl std::fmt::Debug for JobBatches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobBatches")
            .field("batched", &self.batched.is_some())
            .finish_non_exhaustive()
    }
}

struct Batchers {
    reads: Batcher<Uuid, StepRead>,
    claims: Batcher<Uuid, bool>,
    accepted: Batcher<Accepted, bool>,
    successes: Batcher<(Uuid, JobResult), bool>,
}

impl Batchers {
    /// `None` outside a Tokio runtime.
    fn start(store: &Store) -> Option<Batchers> {
        Some(Batchers {
            reads: Batcher::start(store, LIMITS, |store, ids: Arc<Vec<Uuid>>| async move {
                store.jobs().get_many_for_step(&ids).await
            })?,
            claims: Batcher::start(store, LIMITS, |store, ids: Arc<Vec<Uuid>>| async move {
                let claimed = store.jobs().begin_submit_many(&ids).await?;
                Ok(claimed.into_iter().map(Ok).collect())
            })?,
            accepted: Batcher::start(
                store,
                LIMITS,
                |store, accepted: Arc<Vec<Accepted>>| async move {
                    let recorded = store.jobs().submitted_many(&accepted).await?;
                    Ok(recorded.into_iter().map(Ok).collect())
                },
            )?,
            successes: Batcher::start(
                store,
                LIMITS,
                |store, done: Arc<Vec<(Uuid, JobResult)>>| async move {
                    let done: Vec<(Uuid, &JobResult)> =
                        done.iter().map(|(id, result)| (*id, result)).collect();
                    let applied = store.jobs().succeed_many(&done).await?;
                    Ok(applied.into_iter().map(Ok).collect())
                },
            )?,
        })
    }
}

impl JobBatches {
    /// Starts the batching tasks on the current Tokio runtime, for a PostgreSQL store.
    /// Outside a runtime, or on SQLite, every call runs its own statement.
    pub fn start(store: &Store) -> JobBatches {
        let batched = match &store.db {
            Db::Postgres(_) => Batchers::start(store).map(Arc::new),
            Db::Sqlite(_) => None,
        };
        JobBatches {
            store: store.clone(),
            batched,
        }
    }

    /// [`crate::JobRepo::get_for_step`].
    pub async fn get_for_step(&self, id: Uuid) -> Result<StepRead, StoreError> {
        match &self.batched {
            Some(b) => b.reads.run(id).await,
            None => self.store.jobs().get_for_step(id).await,
        }
    }

    /// [`crate::JobRepo::begin_submit`].
    pub async fn begin_submit(&self, id: Uuid) -> Result<bool, StoreError> {
        match &self.batched {
            Some(b) => b.claims.run(id).await,
            None => self.store.jobs().begin_submit(id).await,
        }
    }

    /// [`crate::JobRepo::submitted`].
    pub async fn submitted(
        &self,
        id: Uuid,
        provider_job_id: &str,
        attempt: u32,
    ) -> Result<bool, StoreError> {
        match &self.batched {
            Some(b) => {
                b.accepted
                    .run(Accepted {
                        id,
                        provider_job_id: provider_job_id.to_owned(),
                        attempt,
                    })
                    .await
            }
            None => {
                self.store
                    .jobs()
                    .submitted(id, provider_job_id, attempt)
                    .await
            }
        }
    }

    /// [`crate::JobRepo::succeed`].
    pub async fn succeed(&self, id: Uuid, result: &JobResult) -> Result<bool, StoreError> {
        match &self.batched {
            Some(b) => b.successes.run((id, result.clone())).await,
            None => self.store.jobs().succeed(id, result).await,
        }
    }
}
