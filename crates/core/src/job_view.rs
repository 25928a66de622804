//! A job as the API shows it: the body of `GET /v1/jobs/{id}`, and the `data` of a job's
//! webhook events and stream events. The server renders it from the stored job; clients
//! (`byok-client`) read it back.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::{ErrorRecord, GenerationRequest, JobResult, JobStatus};

/// A generation job: its request, where it stands, and its result or error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = Job))]
pub struct JobView {
    /// The job id (a UUIDv7: ids sort by creation time).
    pub id: Uuid,
    /// The user whose key pays.
    pub user_id: Uuid,
    #[cfg_attr(feature = "openapi", schema(value_type = crate::ProviderId))]
    pub provider: String,
    /// The model id.
    pub model: String,
    pub status: JobStatus,
    /// 0–1 while running, when the provider says; 1 once succeeded.
    #[cfg_attr(feature = "openapi", schema(required, minimum = 0.0, maximum = 1.0))]
    pub progress: Option<f64>,
    /// The number of the latest attempt (0 before the first submit); waits
    /// for a rate-limit window are not attempts.
    pub attempts: u32,
    /// The provider's id of the remote job, once it accepted the submit.
    #[cfg_attr(feature = "openapi", schema(required))]
    pub provider_job_id: Option<String>,
    /// The request as accepted.
    pub request: GenerationRequest,
    /// Once succeeded.
    #[cfg_attr(feature = "openapi", schema(required))]
    pub result: Option<JobResultView>,
    /// Why it failed, or `cancelled`.
    #[cfg_attr(feature = "openapi", schema(required))]
    pub error: Option<ErrorRecord>,
    /// The producer's own JSON, untouched.
    #[cfg_attr(feature = "openapi", schema(value_type = Value))]
    pub metadata: Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When the provider first accepted it.
    #[cfg_attr(feature = "openapi", schema(required))]
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached a final status.
    #[cfg_attr(feature = "openapi", schema(required))]
    pub finished_at: Option<DateTime<Utc>>,
    /// The providers the job left for its next fallback, in order, each with why
    /// (docs/failover.md); `provider` and `model` above are the ones it is on now. Absent:
    /// it never moved.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route: Vec<RouteStep>,
}

/// A provider a job left for its next fallback: it failed there before the provider
/// accepted anything, for a reason another provider can fix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RouteStep {
    /// The provider it left.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::ProviderId))]
    pub provider: String,
    /// The model it asked for there.
    pub model: String,
    /// Why it moved on: a job error code (`credentials_missing`, `credentials_invalid`,
    /// `insufficient_credits`, `model_retired`, `budget_exceeded`, `provider_unavailable`)
    /// or `key_blocked` (the key could not submit for longer than
    /// `worker.fallback_after_block`).
    pub reason: String,
    /// What happened there.
    pub message: String,
    /// When it moved on.
    pub at: DateTime<Utc>,
}

/// The `result` of a succeeded job: what the worker stored, and where to
/// download the video from this API.
// The stored result names no route: `video_url` is this API's, made here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = JobResult))]
pub struct JobResultView {
    /// Where to download the video from this API.
    #[cfg_attr(
        feature = "openapi",
        schema(example = "/v1/jobs/01890a5d-ac96-774b-bcce-b302099a8057/video")
    )]
    pub video_url: String,
    #[serde(flatten)]
    #[cfg_attr(feature = "openapi", schema(inline))]
    pub stored: JobResult,
}

impl JobResultView {
    /// The API's route for a job's video.
    pub fn video_route(job_id: Uuid) -> String {
        format!("/v1/jobs/{job_id}/video")
    }
}
