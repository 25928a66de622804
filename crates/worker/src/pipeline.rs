//! The job state machine of DESIGN §6, one step per queue delivery.
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
//!                 ──▶ done: download, copy to output.dir, succeeded
//!                 ──▶ failed at the provider: failed, or resubmitted when transient
//! ```
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

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use byok_core::{
    ErrorCode, ErrorRecord, GenerationRequest, JobError, JobStatus, ProviderId, RetryClass,
    ValidatedRequest,
};
use byok_crypto::{KeyRing, SealContext};
use byok_metrics::{Call, Throttle, metrics};
use byok_providers::fetch::ImageFetcher;
use byok_providers::{Credentials, RemoteStatus, SubmitRequest, VideoOutput, VideoProvider};
use byok_queue::{Delivery, Disposition};
use byok_ratelimit::{Acquire, LimitKey, Limits, RateLimiter};
use byok_store::{Cancelled, CheckRecord, Job, Store, StoreError};
use secrecy::ExposeSecret as _;
use uuid::Uuid;

use crate::backoff::{RetryBackoff, jittered};

/// How often one provider is polled, and the per-key limits of its submits.
#[derive(Debug, Clone, Copy)]
pub struct ProviderPacing {
    /// `providers.<id>.poll_interval`.
    pub poll_interval: Duration,
    /// `providers.<id>.rate_limit.*`.
    pub limits: Limits,
}

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
    /// `output.dir`: where finished videos are copied (`<job id>.mp4`).
    pub output_dir: PathBuf,
    /// Per provider.
    pub pacing: HashMap<ProviderId, ProviderPacing>,
}

/// Everything a step needs. Shared by all of a worker's steps.
pub struct Pipeline {
    store: Store,
    key_ring: Arc<KeyRing>,
    providers: Arc<byok_providers::Registry>,
    limiter: Arc<dyn RateLimiter>,
    fetcher: Arc<ImageFetcher>,
    settings: PipelineSettings,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// What a step decided for its queue item (the error side of a handler).
type Next = Result<(), Disposition>;

fn later(after: Duration) -> Next {
    Err(Disposition::Reschedule { after })
}

/// The pause before looking again at a job another worker is busy with.
const BUSY_RECHECK: Duration = Duration::from_secs(2);
/// The pause when the database is unreachable (not an attempt: the job is fine).
const STORE_DOWN_RECHECK: Duration = Duration::from_secs(5);
/// The pause when the rate limiter cannot answer.
const LIMITER_DOWN_RECHECK: Duration = Duration::from_secs(1);

impl Pipeline {
    /// Assembles a pipeline.
    pub fn new(
        store: Store,
        key_ring: Arc<KeyRing>,
        providers: Arc<byok_providers::Registry>,
        limiter: Arc<dyn RateLimiter>,
        fetcher: Arc<ImageFetcher>,
        settings: PipelineSettings,
    ) -> Pipeline {
        Pipeline {
            store,
            key_ring,
            providers,
            limiter,
            fetcher,
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
        let job = match self.store.jobs().get(job_id).await {
            Ok(Some(job)) => job,
            Ok(None) => {
                tracing::warn!(job.id = %job_id, "queue item for a job that does not exist: dropped");
                return Ok(());
            }
            Err(e) => return self.store_trouble(&e, delivery),
        };
        let span = tracing::info_span!("job", job.id = %job.id, provider = %job.provider_name, user.id = %job.user_id);
        tracing::Instrument::instrument(self.step_job(job, delivery), span).await
    }

    async fn step_job(&self, job: Job, delivery: &Delivery) -> Next {
        let Some(provider) = job.provider() else {
            return self
                .fail(
                    &job,
                    ErrorCode::Internal,
                    format!("unknown provider `{}`", job.provider_name),
                    false,
                    delivery,
                )
                .await;
        };
        let adapter = self.providers.get(provider);
        if job.status.is_terminal() {
            if job.status == JobStatus::Cancelled
                && job.provider_job_id.is_some()
                && job.cancel_sent_at.is_none()
            {
                self.cancel_at_provider(&job, provider, &adapter).await;
            }
            return Ok(());
        }
        let (credentials, sealed) = match self
            .open_credentials(&job, provider, &adapter, delivery)
            .await
        {
            Ok(opened) => opened,
            Err(next) => return next,
        };
        match job.provider_job_id.clone() {
            None => {
                self.submit_step(&job, provider, &adapter, &credentials, &sealed, delivery)
                    .await
            }
            Some(remote) => {
                self.poll_step(
                    &job,
                    provider,
                    &adapter,
                    &credentials,
                    &sealed,
                    &remote,
                    delivery,
                )
                .await
            }
        }
    }

    /// Loads and opens the user's key for this provider. A missing or
    /// unusable key fails the job: it cannot run without the user's key, and
    /// a platform key is never substituted.
    async fn open_credentials(
        &self,
        job: &Job,
        provider: ProviderId,
        adapter: &Arc<dyn VideoProvider>,
        delivery: &Delivery,
    ) -> Result<(Credentials, String), Next> {
        let stored = match self.store.credentials().get(job.user_id, provider).await {
            Ok(Some(row)) => row,
            Ok(None) => {
                return Err(self
                    .fail(
                        job,
                        ErrorCode::CredentialsMissing,
                        format!("the user has no stored {provider} key"),
                        false,
                        delivery,
                    )
                    .await);
            }
            Err(e) => return Err(self.store_trouble(&e, delivery)),
        };
        if !stored.is_valid {
            let why = stored
                .last_error
                .clone()
                .unwrap_or_else(|| "marked invalid".to_owned());
            return Err(self
                .fail(
                    job,
                    ErrorCode::CredentialsInvalid,
                    format!("the stored {provider} key is not valid: {why}"),
                    false,
                    delivery,
                )
                .await);
        }
        match self.unseal(job, provider, adapter, &stored.sealed) {
            Ok(credentials) => Ok((credentials, stored.sealed)),
            Err(reason) => {
                tracing::warn!(reason = %reason, "stored credential is unreadable");
                Err(self
                    .fail(
                        job,
                        ErrorCode::CredentialsInvalid,
                        format!("the stored {provider} key cannot be opened: {reason}"),
                        false,
                        delivery,
                    )
                    .await)
            }
        }
    }

    async fn submit_step(
        &self,
        job: &Job,
        provider: ProviderId,
        adapter: &Arc<dyn VideoProvider>,
        credentials: &Credentials,
        sealed: &str,
        delivery: &Delivery,
    ) -> Next {
        if let Some(started) = job.submit_started_at {
            // A submit began and its answer was never recorded. Either another
            // worker is sending it right now (a duplicate delivery), or a
            // worker died while it was in flight: its outcome is unknown.
            let in_flight_for = (chrono::Utc::now() - started).to_std().unwrap_or_default();
            if in_flight_for < self.settings.request_timeout * 2 + Duration::from_secs(10) {
                return later(BUSY_RECHECK);
            }
            return self
                .fail(job, ErrorCode::SubmitOutcomeUnknown, "a submit was sent but its answer was never recorded (the worker stopped); it is not re-sent, because it may have created a billable job".to_owned(), false, delivery)
                .await;
        }

        let request: GenerationRequest = match serde_json::from_value(job.request.clone()) {
            Ok(r) => r,
            Err(e) => {
                return self
                    .fail(
                        job,
                        ErrorCode::Internal,
                        format!("the stored request does not parse: {e}"),
                        false,
                        delivery,
                    )
                    .await;
            }
        };
        let validated = match adapter.validate(&request) {
            Ok(v) => v,
            // The catalogue changed since the job was accepted (a model retired).
            Err(e) => {
                return self
                    .fail(
                        job,
                        ErrorCode::InvalidRequest,
                        e.to_string(),
                        false,
                        delivery,
                    )
                    .await;
            }
        };

        let pacing = self.pacing(provider);
        let key = LimitKey::new(provider, job.user_id);
        let permit = match self.limiter.acquire(&key, pacing.limits).await {
            Ok(Acquire::Granted(permit)) => permit,
            Ok(Acquire::Wait(wait)) => {
                metrics().throttled(provider, Throttle::Window);
                if job.status != JobStatus::Throttled {
                    let _ = self.store.jobs().set_throttled(job.id).await;
                }
                return later(wait.max(Duration::from_millis(10)));
            }
            Err(e) => {
                tracing::warn!(error = %e, "rate limiter unavailable; trying again shortly");
                return later(LIMITER_DOWN_RECHECK);
            }
        };
        let (next, sent) = self
            .send_submit(
                job,
                provider,
                adapter,
                credentials,
                sealed,
                &validated,
                &key,
                delivery,
            )
            .await;
        // The limiter stamps a sent submit with the time its answer came (a
        // time after it reached the provider), or takes an unsent one back.
        // Should this fail, the permit counts as in flight until it expires:
        // the safe side of the key's quota.
        if let Err(e) = self.limiter.finish(permit, sent).await {
            tracing::warn!(error = %e, "could not settle the rate-limit permit");
        }
        next
    }

    /// Everything between a granted permit and the provider's answer.
    /// Returns what to do next and whether the request may have reached
    /// the provider.
    #[allow(clippy::too_many_arguments)]
    async fn send_submit(
        &self,
        job: &Job,
        provider: ProviderId,
        adapter: &Arc<dyn VideoProvider>,
        credentials: &Credentials,
        sealed: &str,
        validated: &ValidatedRequest,
        key: &LimitKey,
        delivery: &Delivery,
    ) -> (Next, bool) {
        let image = match &validated.image_url {
            None => None,
            Some(url) => match self.fetcher.fetch(url).await {
                Ok(image) => Some(image),
                Err(e) => {
                    return (
                        self.job_error(job, provider, sealed, e.to_job_error(), delivery)
                            .await,
                        false,
                    );
                }
            },
        };

        match self.store.jobs().begin_submit(job.id).await {
            Ok(true) => {}
            Ok(false) => return (later(BUSY_RECHECK), false),
            Err(e) => return (self.store_trouble(&e, delivery), false),
        }
        let request = SubmitRequest {
            request: validated,
            image: image.as_ref(),
        };
        let answer = metrics()
            .time_call(provider, Call::Submit, adapter.submit(credentials, request))
            .await;
        let next = match answer {
            Ok(submitted) => {
                // Recorded before anything else: from here on the job is polled,
                // never submitted again, whatever happens to this worker.
                match self
                    .store
                    .jobs()
                    .submitted(job.id, &submitted.provider_job_id, delivery.attempt())
                    .await
                {
                    Ok(_) => {
                        tracing::info!(provider_job_id = %submitted.provider_job_id, "submitted");
                        later(self.pacing(provider).poll_interval)
                    }
                    Err(e) => {
                        // The provider has the job but we could not write its id:
                        // keep trying to record it rather than lose it.
                        tracing::error!(error = %e, provider_job_id = %submitted.provider_job_id, "could not record the provider's job id");
                        self.record_submitted_later(
                            job.id,
                            &submitted.provider_job_id,
                            delivery.attempt(),
                        )
                        .await
                    }
                }
            }
            Err(error) => {
                // First tell every worker to hold off this key, before any
                // other write: their next permit for it waits for the
                // provider's retry time.
                if let RetryClass::RetryAfter(wait) = error.class
                    && let Err(e) = self.limiter.block(key, wait).await
                {
                    tracing::warn!(error = %e, "could not share the provider's throttling with other workers");
                }
                if error.code != ErrorCode::SubmitOutcomeUnknown {
                    // A definite answer: no job was created, the marker goes.
                    let throttled = matches!(error.class, RetryClass::RetryAfter(_));
                    let attempts = if throttled {
                        job.attempts
                    } else {
                        delivery.attempt()
                    };
                    if let Err(e) = self
                        .store
                        .jobs()
                        .submit_refused(job.id, attempts, throttled, &error.to_string())
                        .await
                    {
                        return (self.store_trouble(&e, delivery), true);
                    }
                }
                self.job_error(job, provider, sealed, error, delivery).await
            }
        };
        (next, true)
    }

    /// The provider accepted the job but writing its id failed: retry the
    /// write a few times before giving up on this delivery (the item comes
    /// back, finds `submit_started_at` and, if the write never landed, fails
    /// `submit_outcome_unknown`, which is the truth).
    async fn record_submitted_later(
        &self,
        job_id: Uuid,
        provider_job_id: &str,
        attempt: u32,
    ) -> Next {
        for wait in [100u64, 500, 2000] {
            tokio::time::sleep(Duration::from_millis(wait)).await;
            if self
                .store
                .jobs()
                .submitted(job_id, provider_job_id, attempt)
                .await
                .is_ok()
            {
                return later(Duration::from_secs(1));
            }
        }
        later(STORE_DOWN_RECHECK)
    }

    #[allow(clippy::too_many_arguments)]
    async fn poll_step(
        &self,
        job: &Job,
        provider: ProviderId,
        adapter: &Arc<dyn VideoProvider>,
        credentials: &Credentials,
        sealed: &str,
        remote: &str,
        delivery: &Delivery,
    ) -> Next {
        let pacing = self.pacing(provider);
        if let Some(started) = job.started_at
            && (chrono::Utc::now() - started).to_std().unwrap_or_default()
                > self.settings.job_timeout
        {
            let _ = metrics()
                .time_call(provider, Call::Cancel, adapter.cancel(credentials, remote))
                .await;
            return self
                .fail(
                    job,
                    ErrorCode::Timeout,
                    format!(
                        "not finished at the provider after {} s (worker.job_timeout)",
                        self.settings.job_timeout.as_secs()
                    ),
                    false,
                    delivery,
                )
                .await;
        }
        let polled = metrics()
            .time_call(provider, Call::Poll, adapter.poll(credentials, remote))
            .await;
        match polled {
            Ok(RemoteStatus::Queued) => later(pacing.poll_interval),
            Ok(RemoteStatus::Running { progress }) => {
                if let Some(progress) = progress
                    && Some(progress) != job.progress
                {
                    let _ = self.store.jobs().set_progress(job.id, progress).await;
                }
                later(pacing.poll_interval)
            }
            Ok(RemoteStatus::Succeeded(output)) => {
                self.finish(
                    job,
                    provider,
                    adapter,
                    credentials,
                    sealed,
                    &output,
                    delivery,
                )
                .await
            }
            Ok(RemoteStatus::Failed(error)) => {
                if error.class == RetryClass::Transient
                    && delivery.attempt() < self.settings.max_attempts
                {
                    // The provider's job failed for a passing reason and billed
                    // nothing: a new submit is a retry, not a blind re-send.
                    tracing::warn!(error = %error, "provider job failed transiently; resubmitting");
                    return match self
                        .store
                        .jobs()
                        .resubmit(job.id, delivery.attempt(), &error.to_string())
                        .await
                    {
                        Ok(_) => Err(Disposition::Retry {
                            after: self.settings.retry_backoff.delay(delivery.attempt()),
                            error: error.to_string(),
                        }),
                        Err(e) => self.store_trouble(&e, delivery),
                    };
                }
                self.job_error(
                    job,
                    provider,
                    sealed,
                    JobError {
                        class: RetryClass::Permanent,
                        ..error
                    },
                    delivery,
                )
                .await
            }
            Err(error) if error.class == RetryClass::Transient => {
                // Polling is safe to repeat and the remote job is already paid
                // for: a passing fault while asking is no reason to give up on
                // it. Ask again later without counting an attempt;
                // worker.job_timeout bounds how long.
                tracing::warn!(error = %error, "poll failed; asking again later");
                later(jittered(pacing.poll_interval))
            }
            Ok(RemoteStatus::Cancelled) => {
                let cancelled = self
                    .store
                    .jobs()
                    .cancel(job.id, "cancelled at the provider")
                    .await;
                if matches!(cancelled, Ok(Cancelled::Now(_))) {
                    finished(job, JobStatus::Cancelled, Some(ErrorCode::Cancelled));
                }
                Ok(())
            }
            Err(error) => self.job_error(job, provider, sealed, error, delivery).await,
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn finish(
        &self,
        job: &Job,
        provider: ProviderId,
        adapter: &Arc<dyn VideoProvider>,
        credentials: &Credentials,
        sealed: &str,
        output: &VideoOutput,
        delivery: &Delivery,
    ) -> Next {
        // A full or unwritable disk is ours to fix, not the provider's:
        // retry (the provider keeps the result for a day or two).
        let disk_trouble = |e: &dyn std::fmt::Display| {
            tracing::error!(error = %e, "could not write the video to output.dir");
            Err(Disposition::Retry {
                after: self.settings.retry_backoff.delay(delivery.attempt()),
                error: format!("could not write the video: {e}"),
            })
        };
        let partial = match self.partial_video(job.id).await {
            Ok(partial) => partial,
            Err(e) => return disk_trouble(&e),
        };
        let downloaded = metrics()
            .time_call(
                provider,
                Call::Download,
                adapter.fetch_output(credentials, output, &partial),
            )
            .await;
        let video = match downloaded {
            Ok(video) => video,
            Err(error) => {
                let _ = tokio::fs::remove_file(&partial).await;
                return match error {
                    // The adapter could not write the file (its only transient `internal`).
                    error
                        if error.class == RetryClass::Transient
                            && error.code == ErrorCode::Internal =>
                    {
                        disk_trouble(&error)
                    }
                    // As for polls: the video is paid for, and the provider keeps it
                    // for a day or more. Download again later; job_timeout bounds it.
                    error if error.class == RetryClass::Transient => {
                        tracing::warn!(error = %error, "video download failed; trying again later");
                        later(jittered(self.pacing(provider).poll_interval))
                    }
                    error => self.job_error(job, provider, sealed, error, delivery).await,
                };
            }
        };
        let bytes = video.size;
        if let Err(e) = self.write_video(job.id, &partial).await {
            let _ = tokio::fs::remove_file(&partial).await;
            return disk_trouble(&e);
        }
        let provider_urls = match output {
            VideoOutput::Urls(urls) => urls.clone(),
            VideoOutput::Gcs(uris) => uris.clone(),
            VideoOutput::Inline(_) => Vec::new(),
        };
        let result = serde_json::json!({
            "video_url": format!("/v1/jobs/{}/video", job.id),
            "provider_urls": provider_urls,
            "bytes": bytes,
            "content_type": video.content_type,
            "note": video.note,
        });
        match self.store.jobs().succeed(job.id, &result).await {
            Ok(applied) => {
                tracing::info!(bytes, "succeeded");
                if applied {
                    finished(job, JobStatus::Succeeded, None);
                }
                Ok(())
            }
            Err(e) => self.store_trouble(&e, delivery),
        }
    }

    /// `<output.dir>/.<job id>.mp4.partial`, the directory created: where the
    /// adapter streams the download before [`Pipeline::write_video`] renames it.
    async fn partial_video(&self, job_id: Uuid) -> std::io::Result<PathBuf> {
        let dir = &self.settings.output_dir;
        tokio::fs::create_dir_all(dir).await?;
        Ok(dir.join(format!(".{job_id}.mp4.partial")))
    }

    /// Puts the downloaded video in place as `<output.dir>/<job id>.mp4`,
    /// atomically (the partial file renamed), so a reader never sees half a file.
    async fn write_video(&self, job_id: Uuid, partial: &std::path::Path) -> std::io::Result<()> {
        let path = self.settings.output_dir.join(format!("{job_id}.mp4"));
        tokio::fs::rename(partial, &path).await
    }

    async fn cancel_at_provider(
        &self,
        job: &Job,
        provider: ProviderId,
        adapter: &Arc<dyn VideoProvider>,
    ) {
        let Some(remote) = job.provider_job_id.as_deref() else {
            return;
        };
        let Ok((credentials, _)) = self.open_credentials_quietly(job, provider, adapter).await
        else {
            return;
        };
        let cancelled = metrics()
            .time_call(provider, Call::Cancel, adapter.cancel(&credentials, remote))
            .await;
        match cancelled {
            Ok(outcome) => {
                tracing::info!(?outcome, "cancel sent to the provider");
                let _ = self.store.jobs().mark_cancel_sent(job.id).await;
            }
            Err(e) => tracing::warn!(error = %e, "the provider did not take the cancel"),
        }
    }

    /// Opens the key without failing the (already final) job on problems.
    async fn open_credentials_quietly(
        &self,
        job: &Job,
        provider: ProviderId,
        adapter: &Arc<dyn VideoProvider>,
    ) -> Result<(Credentials, String), ()> {
        let stored = self
            .store
            .credentials()
            .get(job.user_id, provider)
            .await
            .ok()
            .flatten()
            .ok_or(())?;
        let credentials = self
            .unseal(job, provider, adapter, &stored.sealed)
            .map_err(|_| ())?;
        Ok((credentials, stored.sealed))
    }

    /// Opens a sealed credential with the AAD of this job's (user,
    /// provider) and parses it; the error says why not, without secrets.
    fn unseal(
        &self,
        job: &Job,
        provider: ProviderId,
        adapter: &Arc<dyn VideoProvider>,
        sealed: &str,
    ) -> Result<Credentials, String> {
        let plaintext = self
            .key_ring
            .open(&SealContext::new(job.user_id, provider), sealed)
            .map_err(|e| e.to_string())?;
        let value: serde_json::Value =
            serde_json::from_slice(plaintext.expose_secret()).map_err(|_| "not JSON".to_owned())?;
        adapter
            .parse_credentials(&value)
            .map_err(|e| format!("malformed ({})", e.field))
    }

    /// Applies a classified provider failure: throttling waits (not an
    /// attempt), transient failures retry with backoff until the last
    /// attempt, everything else fails the job. A rejected key is also
    /// marked invalid, so the user is told and later jobs fail fast.
    async fn job_error(
        &self,
        job: &Job,
        provider: ProviderId,
        sealed: &str,
        error: JobError,
        delivery: &Delivery,
    ) -> Next {
        match error.class {
            RetryClass::RetryAfter(wait) => {
                tracing::info!(
                    wait_ms = wait.as_millis() as u64,
                    "provider throttled this key"
                );
                metrics().throttled(provider, Throttle::Provider);
                later(wait)
            }
            RetryClass::Transient if delivery.attempt() < self.settings.max_attempts => {
                tracing::warn!(attempt = delivery.attempt(), error = %error, "transient failure; retrying");
                Err(Disposition::Retry {
                    after: self.settings.retry_backoff.delay(delivery.attempt()),
                    error: error.to_string(),
                })
            }
            RetryClass::Transient => {
                self.fail(job, error.code, error.message, true, delivery)
                    .await
            }
            RetryClass::Permanent => {
                if error.code == ErrorCode::CredentialsInvalid {
                    let record = CheckRecord {
                        is_valid: false,
                        last_error: Some(error.message.clone()),
                        validated_at: None,
                    };
                    if let Err(e) = self
                        .store
                        .credentials()
                        .record_check(job.user_id, provider, sealed, &record)
                        .await
                    {
                        tracing::warn!(error = %e, "could not mark the credential invalid");
                    }
                }
                self.fail(job, error.code, error.message, false, delivery)
                    .await
            }
        }
    }

    async fn fail(
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
                Ok(())
            }
            Err(e) => self.store_trouble(&e, delivery),
        }
    }

    /// A database problem is never the job's fault: wait (without counting
    /// an attempt) while the database is unreachable; other errors retry.
    fn store_trouble(&self, error: &StoreError, delivery: &Delivery) -> Next {
        if error.is_unavailable() {
            tracing::warn!(error = %error, "database unavailable; trying again shortly");
            return later(STORE_DOWN_RECHECK);
        }
        tracing::error!(error = %error, "database error");
        Err(Disposition::Retry {
            after: self.settings.retry_backoff.delay(delivery.attempt()),
            error: "database error".to_owned(),
        })
    }

    fn pacing(&self, provider: ProviderId) -> ProviderPacing {
        self.settings
            .pacing
            .get(&provider)
            .copied()
            .unwrap_or(ProviderPacing {
                poll_interval: Duration::from_secs(10),
                limits: Limits {
                    per_minute: 1,
                    per_hour: 1,
                },
            })
    }
}

/// Records a job that reached a final status in this step.
fn finished(job: &Job, status: JobStatus, code: Option<ErrorCode>) {
    let age = (chrono::Utc::now() - job.created_at)
        .to_std()
        .unwrap_or_default();
    metrics().job_finished(&job.provider_name, status, code, age);
}
