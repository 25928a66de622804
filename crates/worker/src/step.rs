//! One step of one job: the context every phase works in, and the ways a
//! step ends.

use std::sync::Arc;
use std::time::Duration;

use byok_core::{ErrorCode, JobError, ProviderId, RetryClass};
use byok_metrics::{Throttle, metrics};
use byok_providers::{Credentials, Pacing, VideoProvider};
use byok_queue::{Delivery, Disposition};
use byok_store::{CheckRecord, Job, StoreError};

use crate::Pipeline;
use crate::fallback::MoveReason;

/// What a step decided for its queue item (the error side of a handler).
pub(crate) type Next = Result<(), Disposition>;

/// Come back to the item after `after`; not an attempt.
pub(crate) fn later(after: Duration) -> Next {
    Err(Disposition::Reschedule { after })
}

/// The user's key for this job's provider, opened for this step only. The
/// sealed text is kept to mark exactly this value invalid when the provider
/// rejects it (a key replaced meanwhile is left alone).
pub(crate) struct OpenedKey {
    pub(crate) credentials: Credentials,
    pub(crate) sealed: String,
}

/// A job, its provider and the user's opened key, for the length of one
/// step. Built by [`Pipeline::step`] once the key is open; each phase
/// (`submit`, `poll`, `finish`) is a method on it.
pub(crate) struct Step<'a> {
    pub(crate) pipeline: &'a Pipeline,
    pub(crate) job: &'a Job,
    pub(crate) provider: ProviderId,
    pub(crate) adapter: Arc<dyn VideoProvider>,
    /// The provider's submit quota and poll interval.
    pub(crate) pacing: Pacing,
    pub(crate) key: OpenedKey,
    pub(crate) delivery: &'a Delivery,
}

impl Step<'_> {
    pub(crate) fn credentials(&self) -> &Credentials {
        &self.key.credentials
    }

    /// Retry after the backoff of this delivery's attempt (an attempt).
    pub(crate) fn retry(&self, error: String) -> Next {
        Err(Disposition::Retry {
            after: self
                .pipeline
                .settings
                .retry_backoff
                .delay(self.delivery.attempt()),
            error,
        })
    }

    pub(crate) async fn fail(&self, code: ErrorCode, message: String, retryable: bool) -> Next {
        self.pipeline
            .fail(self.job, code, message, retryable, self.delivery)
            .await
    }

    /// [`Pipeline::fail_or_move`]: fails, or moves to the next fallback when one can fix it.
    pub(crate) async fn fail_or_move(
        &self,
        code: ErrorCode,
        message: String,
        retryable: bool,
    ) -> Next {
        self.pipeline
            .fail_or_move(self.job, code, message, retryable, self.delivery)
            .await
    }

    /// The key cannot submit for `wait`: past `worker.fallback_after_block`, a job with a
    /// fallback moves on; otherwise it comes back then.
    pub(crate) async fn blocked_for(&self, wait: Duration) -> Next {
        if wait > self.pipeline.settings.fallback_after_block {
            let why = format!(
                "the user's {} key cannot submit for {} s",
                self.provider,
                wait.as_secs()
            );
            if let Some(next) = self
                .pipeline
                .move_on(self.job, MoveReason::KeyBlocked, &why, self.delivery)
                .await
            {
                return next;
            }
        }
        later(wait)
    }

    pub(crate) fn store_trouble(&self, error: &StoreError) -> Next {
        self.pipeline.store_trouble(error, self.delivery)
    }

    /// Applies a classified provider failure: throttling waits (not an
    /// attempt), transient failures retry with backoff until the last
    /// attempt, everything else fails the job. A rejected key is also
    /// marked invalid, so the user is told and later jobs fail fast.
    pub(crate) async fn job_error(&self, error: JobError) -> Next {
        match error.class {
            RetryClass::RetryAfter(wait) => {
                tracing::info!(
                    wait_ms = wait.as_millis() as u64,
                    "provider throttled this key"
                );
                metrics().throttled(self.provider, Throttle::Provider);
                self.blocked_for(wait).await
            }
            RetryClass::Transient
                if self.delivery.attempt() < self.pipeline.settings.max_attempts =>
            {
                tracing::warn!(attempt = self.delivery.attempt(), error = %error, "transient failure; retrying");
                self.retry(error.to_string())
            }
            RetryClass::Transient => self.fail_or_move(error.code, error.message, true).await,
            RetryClass::Permanent => {
                if error.code == ErrorCode::CredentialsInvalid {
                    self.mark_key_invalid(&error.message).await;
                }
                self.fail_or_move(error.code, error.message, false).await
            }
        }
    }

    async fn mark_key_invalid(&self, why: &str) {
        let record = CheckRecord {
            is_valid: false,
            last_error: Some(why.to_owned()),
            validated_at: None,
        };
        let marked = self
            .pipeline
            .store
            .credentials()
            .record_check(self.job.owner(), self.provider, &self.key.sealed, &record)
            .await;
        if let Err(e) = marked {
            tracing::warn!(error = %e, "could not mark the credential invalid");
        }
    }
}
