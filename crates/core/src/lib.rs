#![doc = include_str!("../README.md")]

mod catalogue;
mod error_code;
mod job_error;
mod job_result;
mod job_status;
#[cfg(all(test, feature = "openapi"))]
mod openapi_tests;
mod provider_id;
mod queue_stats;
mod rate_limits;
mod request;
mod tenancy;

pub use catalogue::{
    Catalogue, Format, Mode, ModelRef, ModelSpec, ModelStatus, PROMPT_MAX_CHARS_CEILING,
    PromptRules, Requirement, Retirement, ValidatedRequest,
};
pub use error_code::ErrorCode;
pub use job_error::{ErrorRecord, JobError, RetryClass};
pub use job_result::{JobResult, ProviderUsage};
pub use job_status::JobStatus;
pub use provider_id::{
    InvalidProviderId, MAX_PROVIDER_ID_LEN, ProviderDefaults, ProviderId, UnknownProvider,
};
pub use queue_stats::QueueStats;
pub use rate_limits::RateLimits;
pub use request::{GenerationRequest, ValidationError};
pub use tenancy::{
    DEFAULT_PROJECT_ID, DEFAULT_PROJECT_NAME, ProjectUser, Scope, Scopes, UnknownScope,
};

/// The payload of a generation job's queue item: the job's id, nothing else.
/// The store holds the truth about the job; credentials and requests never
/// travel through the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobItem {
    /// The `generation_jobs` row this item drives.
    pub job_id: uuid::Uuid,
}
