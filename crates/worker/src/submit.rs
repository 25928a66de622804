//! The submit phase: a job without a provider job id takes a permit from its
//! key's quota and is sent to the provider, exactly once.

use std::time::Duration;

use byok_budgets::{BudgetError, Charge};
use byok_core::{ErrorCode, JobStatus, RetryClass, ValidatedRequest};
use byok_metrics::{Call, Throttle, metrics};
use byok_providers::SubmitRequest;
use byok_ratelimit::{Acquire, LimitKey};
use uuid::Uuid;

use crate::pipeline::{BUSY_RECHECK, LIMITER_DOWN_RECHECK, STORE_DOWN_RECHECK};
use crate::step::{Next, Step, later};

impl Step<'_> {
    pub(crate) async fn submit(&self) -> Next {
        let job = self.job;
        if let Some(started) = job.submit_started_at {
            // A submit began and its answer was never recorded. Either another
            // worker is sending it right now (a duplicate delivery), or a
            // worker died while it was in flight: its outcome is unknown.
            let in_flight_for = (chrono::Utc::now() - started).to_std().unwrap_or_default();
            if in_flight_for < self.submit_decided_after() {
                return later(BUSY_RECHECK);
            }
            return self
                .fail(ErrorCode::SubmitOutcomeUnknown, "a submit was sent but its answer was never recorded (the worker stopped); it is not re-sent, because it may have created a billable job".to_owned(), false)
                .await;
        }

        let validated = match self.adapter.validate(&job.request) {
            Ok(v) => v,
            // The catalogue changed since the job was accepted: the model was retired
            // (nothing is sent), or its rules changed.
            Err(e) => {
                let code = if e.retired.is_some() {
                    ErrorCode::ModelRetired
                } else {
                    ErrorCode::InvalidRequest
                };
                return self.fail_or_move(code, e.to_string(), false).await;
            }
        };

        let limiter = &self.pipeline.limiter;
        let key = LimitKey::new(self.provider, job.owner());
        let permit = match limiter.acquire(&key, self.pacing.rate_limits).await {
            Ok(Acquire::Granted(permit)) => permit,
            Ok(Acquire::Wait(wait)) => {
                metrics().throttled(self.provider, Throttle::Window);
                if wait > self.pipeline.settings.fallback_after_block {
                    return self.blocked_for(wait).await;
                }
                if job.status != JobStatus::Throttled {
                    let _ = self.pipeline.store.jobs().set_throttled(job.id).await;
                }
                return later(wait.max(Duration::from_millis(10)));
            }
            Err(e) => {
                tracing::warn!(error = %e, "rate limiter unavailable; trying again shortly");
                return later(LIMITER_DOWN_RECHECK);
            }
        };
        // The budget after the permit: a job waiting for its key's window holds nothing.
        if let Err(next) = self.reserve_budget().await {
            if let Err(e) = limiter.finish(permit, false).await {
                tracing::warn!(error = %e, "could not give the rate-limit permit back");
            }
            return next;
        }
        let (next, sent) = self.send(&validated, &key).await;
        // The limiter stamps a sent submit with the time its answer came (a
        // time after it reached the provider), or takes an unsent one back.
        // Should this fail, the permit counts as in flight until it expires:
        // the safe side of the key's quota.
        if let Err(e) = limiter.finish(permit, sent).await {
            tracing::warn!(error = %e, "could not settle the rate-limit permit");
        }
        next
    }

    /// Holds the job's estimated cost on every budget it counts against, before anything
    /// is sent. A refusal fails the job `budget_exceeded` (nothing was sent, nothing is
    /// held); a ledger that cannot answer is waited for, since submitting without the
    /// hold could overspend.
    async fn reserve_budget(&self) -> Result<(), Next> {
        let job = self.job;
        let charge = Charge {
            job_id: job.id,
            owner: job.owner(),
            provider: self.provider,
            estimate: job.estimated_cost,
        };
        match self.pipeline.budgets.reserve(&charge).await {
            Ok(()) => Ok(()),
            // A limit at this provider may not bind at the next fallback's; an overall
            // one binds everywhere.
            Err(BudgetError::Exceeded(refusal)) if refusal.provider.is_some() => Err(self
                .fail_or_move(ErrorCode::BudgetExceeded, refusal.to_string(), false)
                .await),
            Err(BudgetError::Exceeded(refusal)) => Err(self
                .fail(ErrorCode::BudgetExceeded, refusal.to_string(), false)
                .await),
            Err(e) if e.is_unavailable() => {
                tracing::warn!(error = %e, "budget ledger unavailable; trying again shortly");
                Err(later(LIMITER_DOWN_RECHECK))
            }
            Err(e) => {
                tracing::error!(error = %e, "budget ledger error");
                Err(self.retry(format!("budget ledger: {e}")))
            }
        }
    }

    /// Everything between a granted permit and the provider's answer.
    /// Returns what to do next and whether the request may have reached
    /// the provider.
    async fn send(&self, validated: &ValidatedRequest, key: &LimitKey) -> (Next, bool) {
        let job = self.job;
        let store = &self.pipeline.store;
        let image = match &validated.image_url {
            None => None,
            Some(url) => match self.pipeline.fetcher.fetch(url).await {
                Ok(image) => Some(image),
                Err(e) => return (self.job_error(e.to_job_error()).await, false),
            },
        };

        let claimed_at = tokio::time::Instant::now();
        match self.pipeline.steps.begin_submit(job.id).await {
            Ok(true) => {}
            Ok(false) => return (later(BUSY_RECHECK), false),
            Err(e) => return (self.store_trouble(&e), false),
        }
        let request = SubmitRequest {
            request: validated,
            image: image.as_ref(),
        };
        let answer = metrics()
            .time_call(
                self.provider,
                Call::Submit,
                self.adapter.submit(self.credentials(), request),
            )
            .await;
        let attempt = self.delivery.attempt();
        let next = match answer {
            Ok(submitted) => {
                let remote = submitted.provider_job_id;
                // Recorded before anything else: from here on the job is polled,
                // never submitted again, whatever happens to this worker.
                match self
                    .pipeline
                    .steps
                    .submitted(job.id, &remote, attempt)
                    .await
                {
                    Ok(_) => {
                        tracing::info!(provider_job_id = %remote, "submitted");
                        later(self.pacing.poll_interval)
                    }
                    Err(e) => {
                        // The provider has the job but we could not write its id:
                        // keep trying to record it rather than lose it.
                        tracing::error!(error = %e, provider_job_id = %remote, "could not record the provider's job id");
                        self.record_submitted_later(job.id, &remote, claimed_at)
                            .await
                    }
                }
            }
            Err(error) => {
                // First tell every worker to hold off this key, before any
                // other write: their next permit for it waits for the
                // provider's retry time.
                if let RetryClass::RetryAfter(wait) = error.class
                    && let Err(e) = self.pipeline.limiter.block(key, wait).await
                {
                    tracing::warn!(error = %e, "could not share the provider's throttling with other workers");
                }
                if error.code != ErrorCode::SubmitOutcomeUnknown {
                    // A definite answer: no job was created, the marker goes.
                    let throttled = matches!(error.class, RetryClass::RetryAfter(_));
                    let attempts = if throttled { job.attempts } else { attempt };
                    let refused = store
                        .jobs()
                        .submit_refused(job.id, attempts, throttled, &error.to_string())
                        .await;
                    if let Err(e) = refused {
                        return (self.store_trouble(&e), true);
                    }
                }
                self.job_error(error).await
            }
        };
        (next, true)
    }

    /// How long after a submit began a worker that finds it unrecorded decides its outcome
    /// is unknown: the submit itself may take `worker.request_timeout`, and the worker that
    /// sent it keeps trying to record the answer until shortly before this.
    fn submit_decided_after(&self) -> Duration {
        self.pipeline.settings.request_timeout * 2 + Duration::from_secs(10)
    }

    /// The provider accepted the job but writing its id failed (the database is away):
    /// retry the write, backing off up to 2 s between tries, until shortly before another
    /// worker would decide the submit's outcome is unknown ([`Self::submit_decided_after`],
    /// counted from the claim). Only then is this delivery given up: the item comes back,
    /// finds `submit_started_at` and, if the write never landed, fails
    /// `submit_outcome_unknown`, which is the truth. Giving up earlier would turn an
    /// outage of a few tens of seconds into that failure for a job the provider accepted.
    async fn record_submitted_later(
        &self,
        job_id: Uuid,
        provider_job_id: &str,
        claimed_at: tokio::time::Instant,
    ) -> Next {
        let attempt = self.delivery.attempt();
        let give_up_at = claimed_at
            + self
                .submit_decided_after()
                .saturating_sub(Duration::from_secs(3));
        let mut wait = Duration::from_millis(100);
        while tokio::time::Instant::now() + wait < give_up_at {
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(2));
            let recorded = self
                .pipeline
                .store
                .jobs()
                .submitted(job_id, provider_job_id, attempt)
                .await;
            if recorded.is_ok() {
                return later(Duration::from_secs(1));
            }
        }
        later(STORE_DOWN_RECHECK)
    }
}
