//! What can go wrong in a call. The token is never part of an error: requests carry it in a
//! header marked sensitive, and no error holds a request's headers.

use std::time::Duration;

use byok_core::{ApiErrorCode, JobView};
use reqwest::StatusCode;
use serde_json::Value;

/// Why a call did not return what it asked for.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The API answered with its error shape (`{"error":{"code","message","details"}}`,
    /// crates/api/README.md "Errors").
    #[error(
        "the API answered {status} `{code}`: {message}{}",
        for_request(request_id)
    )]
    Api {
        /// The HTTP status.
        status: StatusCode,
        /// The stable code; match on this, not on the message.
        code: ApiErrorCode,
        /// For people.
        message: String,
        /// Machine-readable details (`field`, `allowed`, `job_id`, …), or `null`.
        details: Value,
        /// The `x-request-id` of the answer: the server's log lines of the request carry it.
        request_id: Option<String>,
        /// When the answer said to come back (`Retry-After`), for 429 and 503.
        retry_after: Option<Duration>,
    },
    /// An error status whose body is not the API's error shape (a proxy's page, or a code
    /// this client does not know, from a newer server: the body says which).
    #[error(
        "the API answered {status} without its error shape: {body}{}",
        for_request(request_id)
    )]
    UnexpectedResponse {
        /// The HTTP status.
        status: StatusCode,
        /// The start of the body (at most 1 KiB).
        body: String,
        /// The `x-request-id` of the answer.
        request_id: Option<String>,
    },
    /// The request could not be sent or its answer not read (connection refused or cut,
    /// DNS, TLS, timeout).
    #[error("the request failed: {0}")]
    Transport(#[source] reqwest::Error),
    /// A success whose body is not what the route returns.
    #[error(
        "the API's {status} answer is not the expected JSON: {source}{}",
        for_request(request_id)
    )]
    Decode {
        /// The HTTP status.
        status: StatusCode,
        /// The `x-request-id` of the answer.
        request_id: Option<String>,
        /// What did not fit.
        #[source]
        source: serde_json::Error,
    },
    /// The video could not be written.
    #[error("cannot write the video: {0}")]
    Io(#[from] std::io::Error),
    /// The video's body ended before its `Content-Length`.
    #[error("the video ended after {received} of {expected} bytes")]
    Truncated {
        /// `Content-Length`.
        expected: u64,
        /// What arrived.
        received: u64,
    },
    /// [`Client::wait_for_job`](crate::Client::wait_for_job) gave up; the job as last read.
    #[error("job {} is still {} after {waited:?}", job.id, job.status)]
    WaitTimedOut {
        /// The job's last state.
        job: Box<JobView>,
        /// How long it was waited for.
        waited: Duration,
    },
    /// The client's settings are unusable (the base URL, the token's characters, the user
    /// agent). Never repeats the token.
    #[error("{0}")]
    Config(String),
}

fn for_request(request_id: &Option<String>) -> String {
    match request_id {
        Some(id) => format!(" (x-request-id {id})"),
        None => String::new(),
    }
}

impl ClientError {
    /// The API's error code, for [`ClientError::Api`].
    pub fn code(&self) -> Option<ApiErrorCode> {
        match self {
            ClientError::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The HTTP status of the answer, when there was one.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Api { status, .. }
            | ClientError::UnexpectedResponse { status, .. }
            | ClientError::Decode { status, .. } => Some(*status),
            ClientError::Transport(e) => e.status(),
            _ => None,
        }
    }

    /// The `x-request-id` of the answer, when there was one.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            ClientError::Api { request_id, .. }
            | ClientError::UnexpectedResponse { request_id, .. }
            | ClientError::Decode { request_id, .. } => request_id.as_deref(),
            _ => None,
        }
    }

    /// `Retry-After` of a 429 or 503 answer.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ClientError::Api { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The details of an API error (`null` when none, or not an API error).
    pub fn details(&self) -> &Value {
        match self {
            ClientError::Api { details, .. } => details,
            _ => &NULL,
        }
    }
}

static NULL: Value = Value::Null;
