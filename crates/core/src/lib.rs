#![doc = include_str!("../README.md")]

mod error_code;
mod job_status;
mod provider_id;

pub use error_code::ErrorCode;
pub use job_status::JobStatus;
pub use provider_id::{ProviderId, UnknownProvider};
