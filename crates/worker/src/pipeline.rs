//! The job state machine (docs/job-lifecycle.md), one step per queue delivery.
//!
//! The store holds the truth; the queue item only says "look at job X".
//! Each step loads the row, does the one thing its state calls for, writes
//! the result with a compare-and-set, and tells the queue when to come back:
//!
//! ```text
//! queued/throttled ── key opened ── permit? ──no──▶ throttled, back when the window frees (not an attempt)
//!        │                            │yes
//!        │                     begin_submit (CAS) ── submit ──▶ running (provider_job_id recorded at once)
//!        │                                              ├─ 429 ──▶ block the key everywhere, back later (not an attempt)
//!        │                                              ├─ transient ──▶ queued, retry with backoff (an attempt)
//!        │                                              └─ permanent / unknown outcome ──▶ failed
//! running ── poll ──▶ not done: progress, back after the poll interval (not an attempt)
//!                 ──▶ done: download, keep the video in the video store, succeeded
//!                 ──▶ failed at the provider: failed, or resubmitted when transient
//! ```
//!
//! This module loads the job and its key and hands a [`Step`] to the phase
//! the job is in: `submit.rs`, `poll.rs`, `finish.rs`. What every phase
//! needs to end a step (failing the job, classifying a provider error,
//! waiting out the database) is in `step.rs`.
//!
//! Waiting (rate-limit windows, poll intervals) is always a reschedule of
//! the queue item, never a sleeping task: it holds no worker slot, so one
//! user's slow jobs never stand in the way of another user's.
//!
//! A duplicate delivery or a second worker is harmless: every transition is
//! a CAS on the row. A submit is never sent twice: `begin_submit` marks the
//! row before the request leaves, and a row found marked without a
//! `provider_job_id` means the outcome of an earlier submit is unknown — it
//! fails `submit_outcome_unknown` rather than risk billing the user twice.

use std::sync::Arc;
use std::time::Duration;

use byok_budgets::Budgets;
use byok_core::{ErrorCode, ErrorRecord, JobStatus, ProviderId};
use byok_crypto::KeyRing;
use byok_metrics::{Call, metrics};
use byok_providers::fetch::ImageFetcher;
use byok_providers::{Credentials, Registry, VideoProvider, open_credentials};
use byok_queue::{Delivery, Disposition};
use byok_ratelimit::RateLimiter;
use byok_store::{Job, JobBatches, StepKey, Store, StoreError};
use byok_video_store::VideoStore;
use uuid::Uuid;

use crate::backoff::RetryBackoff;
use crate::step::{Next, OpenedKey, Step};

/// The pipeline's settings.
#[derive(Debug, Clone)]
pub struct PipelineSettings {
    /// `worker.max_attempts`: attempts for retryable failures.
    pub max_attempts: u32,
    /// `worker.job_timeout`: the longest a job may stay at the provider.
    pub job_timeout: Duration,
    /// How long a provider call may take; a submit marked longer ago than
    /// twice this without an answer recorded is of unknown outcome.
    pub request_timeout: Duration,
    /// Delays between attempts after transient failures.
    pub retry_backoff: RetryBackoff,
    /// `worker.fallback_after_block`: a job with fallbacks moves on when its key cannot
    /// submit for longer than this.
    pub fallback_after_block: Duration,
}

/// Everything a step needs. Shared by all of a worker's steps. Each
/// provider's pacing (submit quota, poll interval) comes from the registry,
/// which checked it at start.
pub struct Pipeline {
    pub(crate) store: Store,
    /// The step's reads and hot transitions, batched across steps (PostgreSQL).
    pub(crate) steps: JobBatches,
    key_ring: Arc<KeyRing>,
    pub(crate) providers: Arc<Registry>,
    pub(crate) limiter: Arc<dyn RateLimiter>,
    pub(crate) budgets: Budgets,
    pub(crate) fetcher: Arc<ImageFetcher>,
    pub(crate) videos: VideoStore,
    pub(crate) settings: PipelineSettings,
}

/// The parts a [`Pipeline`] is made of (`byok-app` opens them from the settings).
#[derive(Debug)]
pub struct PipelineParts {
    /// The jobs and keys.
    pub store: Store,
    /// Opens users' keys.
    pub key_ring: Arc<KeyRing>,
    /// The provider adapters and their pacing.
    pub providers: Arc<Registry>,
    /// Each key's submit quota, shared by every worker.
    pub limiter: Arc<dyn RateLimiter>,
    /// Holds each job's estimated cost before its submit; settles it when it ends.
    pub budgets: Budgets,
    /// Fetches users' images.
    pub fetcher: Arc<ImageFetcher>,
    /// Where finished videos are kept.
    pub videos: VideoStore,
    /// The pipeline's settings.
    pub settings: PipelineSettings,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// The pause before looking again at a job another worker is busy with.
pub(crate) const BUSY_RECHECK: Duration = Duration::from_secs(2);
/// The pause when the database is unreachable (not an attempt: the job is fine).
pub(crate) const STORE_DOWN_RECHECK: Duration = Duration::from_secs(5);
/// The pause when the rate limiter cannot answer.
pub(crate) const LIMITER_DOWN_RECHECK: Duration = Duration::from_secs(1);

impl Pipeline {
    /// Assembles a pipeline.
    pub fn new(parts: PipelineParts) -> Pipeline {
        let PipelineParts {
            store,
            key_ring,
            providers,
            limiter,
            budgets,
            fetcher,
            videos,
            settings,
        } = parts;
        Pipeline {
            steps: JobBatches::start(&store),
            store,
            key_ring,
            providers,
            limiter,
            budgets,
            fetcher,
            videos,
            settings,
        }
    }

    /// The store the pipeline writes to.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Runs the step job `job_id` is due for. `Ok` acknowledges the queue
    /// item (the job is final, or gone); `Err` says when to come back.
    pub async fn step(&self, job_id: Uuid, delivery: &Delivery) -> Next {
        let _in_flight = metrics().step_started();
        // The job and the user's key in one read: a step costs one query before its work.
        let (job, key) = match self.steps.get_for_step(job_id).await {
            Ok(Some(found)) => found,
            Ok(None) => {
                tracing::warn!(job.id = %job_id, "queue item for a job that does not exist: dropped");
                return Ok(());
            }
            // A row this build cannot read (its request or result does not
            // fit its type) never will be: retrying it would go on forever.
            Err(StoreError::Malformed(column)) => {
                return self.fail_malformed(job_id, column, delivery).await;
            }
            Err(e) => return self.store_trouble(&e, delivery),
        };
        let span = tracing::info_span!("job", job.id = %job.id, provider = %job.provider_name, project.id = %job.project_id, user.id = %job.user_id);
        tracing::Instrument::instrument(self.step_job(&job, key, delivery), span).await
    }

    async fn step_job(&self, job: &Job, key: Option<StepKey>, delivery: &Delivery) -> Next {
        let configured = job
            .provider()
            .and_then(|p| Some((p, self.providers.get(p)?, self.providers.pacing(p)?)));
        let Some((provider, adapter, pacing)) = configured else {
            // A provider declared by a definition this worker has not loaded: during a
            // rolling deployment another worker may have it, so the job is retried like a
            // transient failure rather than failed at once.
            let why = format!(
                "this worker has no provider `{}` (a declared provider whose definition it has \
                 not loaded)",
                job.provider_name
            );
            if delivery.attempt() < self.settings.max_attempts {
                tracing::warn!(attempt = delivery.attempt(), error = %why, "retrying elsewhere or later");
                return Err(Disposition::Retry {
                    after: self.settings.retry_backoff.delay(delivery.attempt()),
                    error: why,
                });
            }
            return self
                .fail(job, ErrorCode::ProviderUnavailable, why, true, delivery)
                .await;
        };
        if job.status.is_terminal() {
            // Whoever ended it (a cancel, another worker) may not have settled its
            // budget hold: settling again changes nothing.
            self.settle_budget(job.id).await;
            if job.status == JobStatus::Cancelled
                && job.provider_job_id.is_some()
                && job.cancel_sent_at.is_none()
            {
                self.cancel_at_provider(job, &adapter, key).await;
            }
            return Ok(());
        }
        let key = match self.open_key(job, provider, &adapter, delivery, key).await {
            Ok(key) => key,
            Err(next) => return next,
        };
        let step = Step {
            pipeline: self,
            job,
            provider,
            pacing,
            adapter,
            key,
            delivery,
        };
        match job.provider_job_id.as_deref() {
            None => step.submit().await,
            Some(remote) => step.poll(remote).await,
        }
    }

    /// Opens the user's key for this provider, read with the job. A missing or
    /// unusable key fails the job: it cannot run without the user's key, and
    /// a platform key is never substituted.
    async fn open_key(
        &self,
        job: &Job,
        provider: ProviderId,
        adapter: &Arc<dyn VideoProvider>,
        delivery: &Delivery,
        stored: Option<StepKey>,
    ) -> Result<OpenedKey, Next> {
        let Some(stored) = stored else {
            let why = format!("the user has no stored {provider} key");
            return Err(self
                .fail_or_move(job, ErrorCode::CredentialsMissing, why, false, delivery)
                .await);
        };
        if !stored.is_valid {
            let why = stored.last_error.as_deref().unwrap_or("marked invalid");
            let why = format!("the stored {provider} key is not valid: {why}");
            return Err(self
                .fail_or_move(job, ErrorCode::CredentialsInvalid, why, false, delivery)
                .await);
        }
        match self.open(job, adapter, &stored.sealed) {
            Ok(credentials) => Ok(OpenedKey {
                credentials,
                sealed: stored.sealed,
            }),
            Err(reason) => {
                tracing::warn!(reason = %reason, "stored credential is unreadable");
                let why = format!("the stored {provider} key cannot be opened: {reason}");
                Err(self
                    .fail_or_move(job, ErrorCode::CredentialsInvalid, why, false, delivery)
                    .await)
            }
        }
    }

    fn open(
        &self,
        job: &Job,
        adapter: &Arc<dyn VideoProvider>,
        sealed: &str,
    ) -> Result<Credentials, byok_providers::OpenError> {
        open_credentials(&self.key_ring, adapter.as_ref(), job.owner(), sealed)
    }

    /// Sends the cancel of a job cancelled through the API to the provider,
    /// once. Problems (the key is gone, the provider refuses) are logged, not
    /// recorded against the job: it is already final.
    async fn cancel_at_provider(
        &self,
        job: &Job,
        adapter: &Arc<dyn VideoProvider>,
        stored: Option<StepKey>,
    ) {
        let Some(remote) = job.provider_job_id.as_deref() else {
            return;
        };
        let Some(stored) = stored else {
            return;
        };
        let Ok(credentials) = self.open(job, adapter, &stored.sealed) else {
            return;
        };
        // Claim first: the API's nudge and the job's own poll item can be
        // delivered to two workers at once, and both saw `cancel_sent_at`
        // empty. Only the one whose claim applies sends the cancel.
        match self.store.jobs().mark_cancel_sent(job.id).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::warn!(error = %e, "could not claim the cancel; a later delivery will");
                return;
            }
        }
        let cancelled = metrics()
            .time_call(
                adapter.id(),
                Call::Cancel,
                adapter.cancel(&credentials, remote),
            )
            .await;
        match cancelled {
            Ok(outcome) => tracing::info!(?outcome, "cancel sent to the provider"),
            Err(e) => {
                tracing::warn!(error = %e, "the provider did not take the cancel");
                // Let a later delivery try again.
                let _ = self.store.jobs().release_cancel_claim(job.id).await;
            }
        }
    }

    /// Fails the job with `code` (a CAS: a job already final stays as it is).
    pub(crate) async fn fail(
        &self,
        job: &Job,
        code: ErrorCode,
        message: String,
        retryable: bool,
        delivery: &Delivery,
    ) -> Next {
        tracing::warn!(code = %code, message = %message, "job failed");
        let record = ErrorRecord {
            code,
            message,
            retryable,
        };
        match self
            .store
            .jobs()
            .fail(job.id, &record, delivery.attempt().max(job.attempts))
            .await
        {
            Ok(applied) => {
                if applied {
                    finished(job, JobStatus::Failed, Some(code));
                }
                self.settle_budget(job.id).await;
                Ok(())
            }
            Err(e) => self.store_trouble(&e, delivery),
        }
    }

    /// Settles the budget hold of a job that has ended (nothing when it holds none).
    /// Should this fail, the next look at the job settles it, or the hold lapses after
    /// the job's longest life and counts as spent: never less than was spent.
    pub(crate) async fn settle_budget(&self, job_id: Uuid) {
        if let Err(e) = self.budgets.settle(job_id).await {
            tracing::warn!(error = %e, "could not settle the job's budget hold");
        }
    }

    /// Fails job `job_id`, whose row cannot be read (`column` does not
    /// decode), without loading it.
    async fn fail_malformed(&self, job_id: Uuid, column: &str, delivery: &Delivery) -> Next {
        tracing::error!(job.id = %job_id, column, "the stored job is malformed; failing it");
        let record = ErrorRecord {
            code: ErrorCode::Internal,
            message: format!("the stored job is malformed ({column})"),
            retryable: false,
        };
        match self
            .store
            .jobs()
            .fail(job_id, &record, delivery.attempt())
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => self.store_trouble(&e, delivery),
        }
    }

    /// A database problem is never the job's fault: wait (without counting
    /// an attempt) while the database is unreachable; other errors retry.
    pub(crate) fn store_trouble(&self, error: &StoreError, delivery: &Delivery) -> Next {
        if error.is_unavailable() {
            tracing::warn!(error = %error, "database unavailable; trying again shortly");
            return Err(Disposition::Reschedule {
                after: STORE_DOWN_RECHECK,
            });
        }
        tracing::error!(error = %error, "database error");
        Err(Disposition::Retry {
            after: self.settings.retry_backoff.delay(delivery.attempt()),
            error: "database error".to_owned(),
        })
    }
}

/// Records a job that reached a final status in this step.
pub(crate) fn finished(job: &Job, status: JobStatus, code: Option<ErrorCode>) {
    let age = (chrono::Utc::now() - job.created_at)
        .to_std()
        .unwrap_or_default();
    metrics().job_finished(&job.provider_name, status, code, age);
    if status == JobStatus::Succeeded
        && let Some(cost) = job.estimated_cost
    {
        metrics().estimated_spend(&job.provider_name, &job.model, cost);
    }
}
