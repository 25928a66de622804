//! Explicit failover (docs/failover.md): a job that failed before any provider accepted it,
//! for a reason another provider can fix, moves to its next fallback instead of failing.
//!
//! The move is a compare-and-set on the row that holds only while the job has no provider
//! job id and no submit out, so it can never follow a submit that may have created a
//! billable job; the next step opens the user's own key at the new provider. Nothing here
//! is silent: the route on the job, its history, a `job.fallback` event and a metric record
//! each move.

use std::time::Duration;

use byok_core::{ErrorCode, RouteStep};
use byok_metrics::metrics;
use byok_queue::Delivery;
use byok_store::{FallbackMove, Job, UsagePlan};

use crate::Pipeline;
use crate::step::{Next, later};

/// Why a job leaves its provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MoveReason {
    /// A failure another provider can fix.
    Failed(ErrorCode),
    /// The key cannot submit for longer than `worker.fallback_after_block`.
    KeyBlocked,
}

impl MoveReason {
    fn as_str(self) -> &'static str {
        match self {
            MoveReason::Failed(code) => code.as_str(),
            MoveReason::KeyBlocked => "key_blocked",
        }
    }
}

/// The failures a fallback can fix: the key (missing, rejected, out of credits), the
/// model (retired), a limit at that provider (a provider-specific budget, passed as
/// `budget_exceeded` only for those), or the provider itself after the retries. Never
/// `invalid_request`, `content_rejected` or an unknown submit outcome: another provider would
/// be refused the same, or the first may have billed.
pub(crate) fn fallback_fixes(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::CredentialsMissing
            | ErrorCode::CredentialsInvalid
            | ErrorCode::InsufficientCredits
            | ErrorCode::ModelRetired
            | ErrorCode::BudgetExceeded
            | ErrorCode::ProviderUnavailable
    )
}

impl Pipeline {
    /// Fails the job with `code`, or, when the job has a next fallback, no provider accepted
    /// it and `code` is one a fallback fixes, moves it there.
    pub(crate) async fn fail_or_move(
        &self,
        job: &Job,
        code: ErrorCode,
        message: String,
        retryable: bool,
        delivery: &Delivery,
    ) -> Next {
        if fallback_fixes(code)
            && let Some(next) = self
                .move_on(job, MoveReason::Failed(code), &message, delivery)
                .await
        {
            return next;
        }
        self.fail(job, code, message, retryable, delivery).await
    }

    /// Moves the job to its next usable fallback: `Some` with what to do next when it
    /// moved (or the store failed), `None` when it cannot (no fallback left, a provider
    /// already has it, or another worker moved or ended it first).
    pub(crate) async fn move_on(
        &self,
        job: &Job,
        reason: MoveReason,
        message: &str,
        delivery: &Delivery,
    ) -> Option<Next> {
        if job.provider_job_id.is_some() || job.request.fallbacks.is_empty() {
            return None;
        }
        let from = job.provider()?;
        let mut route = job.route.clone();
        route.push(RouteStep {
            provider: job.provider_name.clone(),
            model: job.model.clone(),
            reason: reason.as_str().to_owned(),
            message: message.chars().take(500).collect(),
            at: chrono::Utc::now(),
        });
        // The first entry this worker can run; one it cannot (its provider not configured
        // here, its model retired since the job was enqueued) is passed over, recorded.
        let mut next = None;
        for i in 0..job.request.fallbacks.len() {
            let Some(request) = job.request.fallback_request(i) else {
                break;
            };
            let why = match self.providers.get(request.provider) {
                None => format!("this worker has no provider `{}`", request.provider),
                Some(adapter) => match adapter.validate(&request) {
                    Ok(validated) => {
                        let usage =
                            UsagePlan::of(adapter.catalogue().model(&validated.model), &validated);
                        next = Some((request, usage));
                        break;
                    }
                    Err(e) => e.to_string(),
                },
            };
            route.push(RouteStep {
                provider: request.provider.as_str().to_owned(),
                model: request.model.clone(),
                reason: ErrorCode::InvalidRequest.as_str().to_owned(),
                message: why,
                at: chrono::Utc::now(),
            });
        }
        let (request, usage) = next?;
        let to = request.provider;
        let mv = FallbackMove {
            from,
            request,
            usage,
            route,
        };
        match self.store.jobs().fall_back(job.id, &mv).await {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) => return Some(self.store_trouble(&e, delivery)),
        }
        tracing::warn!(from = %from, to = %to, reason = reason.as_str(), message, "moved to the next fallback");
        metrics().job_fallback(from, to, reason.as_str());
        // The provider it left never accepted it: whatever it held there goes back. Should
        // this fail, the hold lapses (counted as spent) after the job's longest life.
        if let Err(e) = self.budgets.release(job.id).await {
            tracing::warn!(error = %e, "could not release the budget hold of the provider left");
        }
        // At once: the next step opens the user's key at the new provider.
        Some(later(Duration::ZERO))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The codes a fallback fixes, and those it never does.
    #[test]
    fn only_failures_another_provider_can_fix_move_a_job() {
        let moves = [
            ErrorCode::CredentialsMissing,
            ErrorCode::CredentialsInvalid,
            ErrorCode::InsufficientCredits,
            ErrorCode::ModelRetired,
            ErrorCode::BudgetExceeded,
            ErrorCode::ProviderUnavailable,
        ];
        let never = [
            ErrorCode::InvalidRequest,
            ErrorCode::ContentRejected,
            ErrorCode::SubmitOutcomeUnknown,
            ErrorCode::Timeout,
            ErrorCode::Cancelled,
            ErrorCode::Internal,
        ];
        for code in moves {
            assert!(fallback_fixes(code), "{code}");
        }
        for code in never {
            assert!(!fallback_fixes(code), "{code}");
        }
        assert_eq!(MoveReason::KeyBlocked.as_str(), "key_blocked");
    }
}
