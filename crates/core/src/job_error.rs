//! Why a job failed, and what the worker should do about it (docs/job-lifecycle.md).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ErrorCode;

/// The three failure classes (docs/job-lifecycle.md, "Failure classes").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryClass {
    /// Fail now: retrying cannot help (bad input, bad key, no credits,
    /// moderation, retired model) or could bill twice (unknown submit outcome).
    Permanent,
    /// The provider is throttling this key: wait this long, on every worker,
    /// without counting an attempt.
    RetryAfter(Duration),
    /// A passing fault (timeouts before the request was accepted, 5xx,
    /// connection errors): retry with backoff, counting attempts.
    Transient,
}

/// A classified failure from a provider (or from preparing a request).
/// Messages never contain secrets: adapters build them from status codes and
/// the provider's own (sanitised, truncated) error text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobError {
    /// The stable code stored on the job.
    pub code: ErrorCode,
    /// What to do.
    pub class: RetryClass,
    /// For people.
    pub message: String,
}

impl JobError {
    /// A failure that no retry can fix.
    pub fn permanent(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            class: RetryClass::Permanent,
            message: message.into(),
        }
    }

    /// A passing failure, to retry with backoff.
    pub fn transient(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            class: RetryClass::Transient,
            message: message.into(),
        }
    }

    /// Throttling: wait `after`, without counting an attempt.
    pub fn retry_after(after: Duration, message: impl Into<String>) -> Self {
        Self {
            code: ErrorCode::ProviderUnavailable,
            class: RetryClass::RetryAfter(after),
            message: message.into(),
        }
    }

    /// A submit was sent but its answer was lost. No provider offers an
    /// idempotency key, so re-sending could create (and bill) a second job:
    /// this is permanent by design.
    pub fn submit_outcome_unknown(message: impl Into<String>) -> Self {
        Self::permanent(ErrorCode::SubmitOutcomeUnknown, message)
    }

    /// Whether the worker may try again (after a wait or a backoff).
    pub fn is_retryable(&self) -> bool {
        !matches!(self.class, RetryClass::Permanent)
    }

    /// The form stored on the job and returned by the API.
    pub fn to_record(&self) -> ErrorRecord {
        ErrorRecord {
            code: self.code,
            message: self.message.clone(),
            retryable: self.is_retryable(),
        }
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for JobError {}

/// The `error` of a job: `{"code","message","retryable"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = JobError))]
#[serde(deny_unknown_fields)]
pub struct ErrorRecord {
    /// Stable code.
    pub code: ErrorCode,
    /// For people.
    pub message: String,
    /// Whether the failure was of a retryable class.
    pub retryable: bool,
}
