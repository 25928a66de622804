//! Stable machine-readable error codes of jobs and credential checks
//! (docs/job-lifecycle.md, "Error codes").

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a job failed, or why a credential is unusable. The string forms are a
/// contract: producers branch on them, so a code is never renamed or reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = JobErrorCode))]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The user has no stored key for the provider.
    CredentialsMissing,
    /// The provider rejected the key, or the stored key cannot be opened.
    CredentialsInvalid,
    /// The request does not fit the provider's capabilities.
    InvalidRequest,
    /// The provider's moderation refused the input or the output.
    ContentRejected,
    /// The user's provider account has no credits left.
    InsufficientCredits,
    /// The provider no longer serves the model.
    ModelRetired,
    /// The provider could not be reached or kept failing.
    ProviderUnavailable,
    /// A submit was sent but its answer was lost; re-sending could bill twice.
    SubmitOutcomeUnknown,
    /// The provider did not finish within `worker.job_timeout`.
    Timeout,
    /// A producer cancelled the job.
    Cancelled,
    /// The job would take a budget of its project or user past its limit (or its model
    /// has no price while a budget applies); nothing was sent to the provider.
    BudgetExceeded,
    /// A fault inside byok itself.
    Internal,
}

impl ErrorCode {
    /// The stable wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::CredentialsMissing => "credentials_missing",
            ErrorCode::CredentialsInvalid => "credentials_invalid",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::ContentRejected => "content_rejected",
            ErrorCode::InsufficientCredits => "insufficient_credits",
            ErrorCode::ModelRetired => "model_retired",
            ErrorCode::ProviderUnavailable => "provider_unavailable",
            ErrorCode::SubmitOutcomeUnknown => "submit_outcome_unknown",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Cancelled => "cancelled",
            ErrorCode::BudgetExceeded => "budget_exceeded",
            ErrorCode::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_names_match_as_str() {
        for code in [
            ErrorCode::CredentialsMissing,
            ErrorCode::CredentialsInvalid,
            ErrorCode::InvalidRequest,
            ErrorCode::ContentRejected,
            ErrorCode::InsufficientCredits,
            ErrorCode::ModelRetired,
            ErrorCode::ProviderUnavailable,
            ErrorCode::SubmitOutcomeUnknown,
            ErrorCode::Timeout,
            ErrorCode::Cancelled,
            ErrorCode::BudgetExceeded,
            ErrorCode::Internal,
        ] {
            assert_eq!(
                serde_json::to_string(&code).unwrap(),
                format!("\"{}\"", code.as_str())
            );
        }
    }
}
