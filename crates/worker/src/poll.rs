//! The poll phase: a job the provider has is asked about until it ends.
//! Polls are not attempts: the remote job is paid for, and asking is safe to
//! repeat; `worker.job_timeout` bounds how long.

use byok_core::{ErrorCode, JobError, JobStatus, RetryClass};
use byok_metrics::{Call, metrics};
use byok_providers::RemoteStatus;
use byok_store::Cancelled;

use crate::backoff::jittered;
use crate::pipeline::finished;
use crate::step::{Next, Step, later};

impl Step<'_> {
    pub(crate) async fn poll(&self, remote: &str) -> Next {
        let job = self.job;
        let settings = &self.pipeline.settings;
        let store = &self.pipeline.store;
        if let Some(started) = job.started_at
            && (chrono::Utc::now() - started).to_std().unwrap_or_default() > settings.job_timeout
        {
            let _ = metrics()
                .time_call(
                    self.provider,
                    Call::Cancel,
                    self.adapter.cancel(self.credentials(), remote),
                )
                .await;
            let why = format!(
                "not finished at the provider after {} s (worker.job_timeout)",
                settings.job_timeout.as_secs()
            );
            return self.fail(ErrorCode::Timeout, why, false).await;
        }
        let polled = metrics()
            .time_call(
                self.provider,
                Call::Poll,
                self.adapter.poll(self.credentials(), remote),
            )
            .await;
        match polled {
            Ok(RemoteStatus::Queued) => later(self.pacing.poll_interval),
            Ok(RemoteStatus::Running { progress }) => {
                if let Some(progress) = progress
                    && Some(progress) != job.progress
                {
                    let _ = store.jobs().set_progress(job.id, progress).await;
                }
                later(self.pacing.poll_interval)
            }
            Ok(RemoteStatus::Succeeded(output, usage)) => self.finish(&output, usage).await,
            Ok(RemoteStatus::Failed(error)) => {
                if error.class == RetryClass::Transient
                    && self.delivery.attempt() < settings.max_attempts
                {
                    // The provider's job failed for a passing reason and billed
                    // nothing: a new submit is a retry, not a blind re-send.
                    tracing::warn!(error = %error, "provider job failed transiently; resubmitting");
                    let message = error.to_string();
                    return match store
                        .jobs()
                        .resubmit(job.id, self.delivery.attempt(), &message)
                        .await
                    {
                        Ok(_) => self.retry(message),
                        Err(e) => self.store_trouble(&e),
                    };
                }
                self.job_error(JobError {
                    class: RetryClass::Permanent,
                    ..error
                })
                .await
            }
            Err(error) if error.class == RetryClass::Transient => {
                // Polling is safe to repeat and the remote job is already paid
                // for: a passing fault while asking is no reason to give up on
                // it. Ask again later without counting an attempt;
                // worker.job_timeout bounds how long.
                tracing::warn!(error = %error, "poll failed; asking again later");
                later(jittered(self.pacing.poll_interval))
            }
            Ok(RemoteStatus::Cancelled) => {
                let cancelled = store
                    .jobs()
                    .cancel(job.id, "cancelled at the provider")
                    .await;
                if matches!(cancelled, Ok(Cancelled::Now(_))) {
                    finished(job, JobStatus::Cancelled, Some(ErrorCode::Cancelled));
                }
                Ok(())
            }
            Err(error) => self.job_error(error).await,
        }
    }
}
