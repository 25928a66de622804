#![doc = include_str!("../README.md")]

mod catalogue;
mod error_code;
mod job_error;
mod job_status;
mod provider_id;
mod request;

pub use catalogue::{
    Catalogue, Format, Mode, ModelSpec, PROMPT_MAX_CHARS_CEILING, PromptRules, Requirement,
    ValidatedRequest,
};
pub use error_code::ErrorCode;
pub use job_error::{ErrorRecord, JobError, RetryClass};
pub use job_status::JobStatus;
pub use provider_id::{ProviderId, UnknownProvider};
pub use request::{GenerationRequest, ValidationError};
