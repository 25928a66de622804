//! Generation jobs: enqueue, read, cancel, list, and the finished video.
//!
//! `POST /v1/jobs` checks everything it can before writing anything: the
//! body's shape, the provider's catalogue, the image URL's policy and the
//! user's stored key. Only then is the job stored (`queued`) and its id
//! pushed to the queue; the queue never carries more than the id.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use byok_core::{ErrorRecord, GenerationRequest, JobItem, JobStatus, ProviderId};
use byok_providers::{FetchError, ImageFetcher};
use byok_queue::Producer;
use byok_store::{ApiToken, Cancelled, Idempotency, Inserted, Job, NewJob};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use crate::AppState;
use crate::error::{ApiError, ApiErrorCode};
use crate::extract::{ApiJson, JobPath, UserPath};

/// The header a producer sends to make a retried `POST /v1/jobs` safe.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// How long enqueueing waits for the queue before answering 503.
const PUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Page sizes of `GET /v1/users/{user_id}/jobs`.
const DEFAULT_PAGE: u32 = 20;
const MAX_PAGE: u32 = 100;

/// What the jobs routes need beyond the credential routes.
#[derive(Debug, Clone)]
pub struct JobsSetup {
    /// Where job ids are pushed.
    pub producer: Producer<JobItem>,
    /// Checks `image_url` against the fetch policy at enqueue.
    pub fetcher: Arc<ImageFetcher>,
    /// `output.dir`: where workers put finished videos (`<job id>.mp4`).
    pub output_dir: PathBuf,
}

/// The job resource of DESIGN §5.
#[derive(Debug, Serialize)]
pub(crate) struct JobResource {
    id: Uuid,
    user_id: Uuid,
    provider: String,
    model: String,
    status: JobStatus,
    progress: Option<f64>,
    attempts: u32,
    provider_job_id: Option<String>,
    request: Value,
    result: Option<Value>,
    error: Option<ErrorRecord>,
    metadata: Value,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
}

impl From<Job> for JobResource {
    fn from(job: Job) -> Self {
        JobResource {
            id: job.id,
            user_id: job.user_id,
            provider: job.provider_name,
            model: job.model,
            status: job.status,
            progress: job.progress,
            attempts: job.attempts,
            provider_job_id: job.provider_job_id,
            request: job.request,
            result: job.result,
            error: job.error,
            metadata: job.metadata,
            created_at: job.created_at,
            updated_at: job.updated_at,
            started_at: job.started_at,
            finished_at: job.finished_at,
        }
    }
}

fn setup(state: &AppState) -> Result<&JobsSetup, ApiError> {
    state.jobs().ok_or_else(|| {
        ApiError::new(
            ApiErrorCode::ServiceUnavailable,
            "this server has no queue configured for jobs",
        )
    })
}

/// `POST /v1/jobs`
pub(crate) async fn create(
    State(state): State<AppState>,
    axum::Extension(token): axum::Extension<ApiToken>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<GenerationRequest>,
) -> Result<Response, ApiError> {
    let setup = setup(&state)?;
    let idempotency_key = idempotency_key(&headers)?;
    let provider = request.provider;
    let adapter = state.providers().get(provider);

    let validated = adapter.validate(&request).map_err(|e| {
        ApiError::new(ApiErrorCode::InvalidRequest, e.to_string()).with_details(json!({
            "field": e.field,
            "allowed": e.allowed,
        }))
    })?;
    if let Some(url) = &validated.image_url {
        check_image_url(&setup.fetcher, url).await?;
    }
    require_usable_key(&state, request.user_id, provider).await?;

    let canonical = serde_json::to_value(&request).map_err(|e| ApiError::internal(&e))?;
    let new = NewJob {
        user_id: request.user_id,
        provider,
        model: request.model.clone(),
        metadata: request.metadata.clone(),
        created_by_token: Some(token.id),
        idempotency: idempotency_key.map(|key| Idempotency {
            key,
            // serde_json's maps are sorted, so the same request always
            // serialises to the same bytes, whatever order the body had.
            request_sha256: Sha256::digest(canonical.to_string().as_bytes()).into(),
        }),
        request: canonical,
    };
    let job = match state.store().jobs().insert(&new).await {
        Ok(Inserted::Created(job)) => job,
        Ok(Inserted::Replayed(job)) => {
            let mut response = accepted(job);
            response
                .headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            return Ok(response);
        }
        Ok(Inserted::Conflict(job)) => {
            return Err(ApiError::new(
                ApiErrorCode::Conflict,
                "this Idempotency-Key was already used with a different request",
            )
            .with_details(json!({ "job_id": job.id })));
        }
        Err(e) => return Err(ApiError::store(&e)),
    };

    let item = JobItem { job_id: job.id };
    let pushed = tokio::time::timeout(
        PUSH_TIMEOUT,
        setup
            .producer
            .push(&job.id.to_string(), &item, Duration::ZERO),
    )
    .await;
    match pushed {
        Ok(Ok(())) => {
            // If this write is lost the sweeper pushes the job once more,
            // which is harmless: every step is a compare-and-set on the row.
            if let Err(e) = state.store().jobs().mark_enqueued(job.id).await {
                tracing::warn!(job.id = %job.id, error = %e, "could not note the job as enqueued");
            }
        }
        failed => {
            let why = match failed {
                Ok(Err(e)) => e.to_string(),
                _ => format!("no answer within {} s", PUSH_TIMEOUT.as_secs()),
            };
            tracing::warn!(job.id = %job.id, error = %why, "queue push failed; the sweeper will push the job");
            return Err(ApiError::new(
                ApiErrorCode::ServiceUnavailable,
                "the job was stored but the queue is unavailable; it will be queued automatically \
                 within a minute. Retry with the same Idempotency-Key to get this job rather than \
                 create another",
            )
            .with_details(json!({ "job_id": job.id })));
        }
    }
    tracing::info!(job.id = %job.id, provider = %provider, user.id = %job.user_id, "job enqueued");
    Ok(accepted(job))
}

fn accepted(job: Job) -> Response {
    let location = format!("/v1/jobs/{}", job.id);
    let mut response = (StatusCode::ACCEPTED, Json(JobResource::from(job))).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// The `Idempotency-Key` header: 1–255 visible ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY_HEADER) else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic()));
    key.map(|k| Some(k.to_owned())).ok_or_else(|| {
        ApiError::bad_request("Idempotency-Key must be 1-255 visible ASCII characters")
            .with_details(json!({ "header": "Idempotency-Key" }))
    })
}

/// Refuses image URLs the fetch policy refuses, and hosts that cannot be
/// found, before anything is stored. A host that is merely slow to answer
/// is left to the worker, which retries.
async fn check_image_url(fetcher: &ImageFetcher, url: &str) -> Result<(), ApiError> {
    match fetcher.precheck(url).await {
        Ok(_) | Err(FetchError::Timeout { .. }) => Ok(()),
        Err(e) => Err(ApiError::new(ApiErrorCode::InvalidRequest, e.to_string())
            .with_details(json!({ "field": "image_url" }))),
    }
}

/// A job needs the user's own stored, valid key for its provider.
async fn require_usable_key(
    state: &AppState,
    user_id: Uuid,
    provider: ProviderId,
) -> Result<(), ApiError> {
    let stored = state
        .store()
        .credentials()
        .get(user_id, provider)
        .await
        .map_err(|e| ApiError::store(&e))?;
    match stored {
        None => Err(ApiError::new(
            ApiErrorCode::CredentialsMissing,
            format!("the user has no stored {provider} key; store one with PUT /v1/users/{user_id}/providers/{provider}/credentials"),
        )
        .with_details(json!({ "provider": provider }))),
        Some(row) if !row.is_valid => Err(ApiError::new(
            ApiErrorCode::CredentialsInvalid,
            format!("the user's stored {provider} key is not valid; store a new one"),
        )
        .with_details(json!({ "provider": provider, "provider_reason": row.last_error }))),
        Some(_) => Ok(()),
    }
}

/// `GET /v1/jobs/{id}`
pub(crate) async fn get(
    State(state): State<AppState>,
    JobPath(id): JobPath,
) -> Result<Json<JobResource>, ApiError> {
    Ok(Json(load(&state, id).await?.into()))
}

async fn load(state: &AppState, id: Uuid) -> Result<Job, ApiError> {
    state
        .store()
        .jobs()
        .get(id)
        .await
        .map_err(|e| ApiError::store(&e))?
        .ok_or_else(|| ApiError::not_found("no such job"))
}

/// `POST /v1/jobs/{id}/cancel`
pub(crate) async fn cancel(
    State(state): State<AppState>,
    JobPath(id): JobPath,
) -> Result<Json<JobResource>, ApiError> {
    let outcome = state
        .store()
        .jobs()
        .cancel(id, "cancelled by the producer")
        .await
        .map_err(|e| ApiError::store(&e))?;
    match outcome {
        Cancelled::Now(job) => {
            // A job the provider knows (or may be about to know) gets its
            // remote cancel from a worker, which holds the key: nudge one
            // now rather than at the job's next poll.
            if (job.provider_job_id.is_some() || job.submit_started_at.is_some())
                && let Some(setup) = state.jobs()
            {
                let item = JobItem { job_id: job.id };
                if let Err(e) = setup
                    .producer
                    .push(&job.id.to_string(), &item, Duration::ZERO)
                    .await
                {
                    tracing::warn!(job.id = %job.id, error = %e, "could not nudge a worker to cancel at the provider; the next poll will");
                }
            }
            Ok(Json(job.into()))
        }
        Cancelled::AlreadyFinal(job) => Err(ApiError::new(
            ApiErrorCode::Conflict,
            format!("the job is already {}", job.status),
        )
        .with_details(json!({ "status": job.status }))),
        Cancelled::NotFound => Err(ApiError::not_found("no such job")),
    }
}

/// Query of `GET /v1/users/{user_id}/jobs`, checked by hand so that every
/// bad value is a 400 in the API's error shape.
#[derive(Debug, Deserialize)]
pub(crate) struct ListQuery {
    status: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// A page of jobs.
#[derive(Debug, Serialize)]
pub(crate) struct JobPage {
    user_id: Uuid,
    jobs: Vec<JobResource>,
    /// Pass as `cursor` for the next (older) page; `null` on the last page.
    next_cursor: Option<Uuid>,
}

/// `GET /v1/users/{user_id}/jobs?status=&limit=&cursor=`
pub(crate) async fn list(
    State(state): State<AppState>,
    UserPath(user): UserPath,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<JobPage>, ApiError> {
    let Query(query) = query.map_err(|_| ApiError::bad_request("invalid query string"))?;
    let field = |name: &str, message: String| {
        ApiError::bad_request(message).with_details(json!({ "field": name }))
    };
    let status = query
        .status
        .as_deref()
        .map(str::parse::<JobStatus>)
        .transpose()
        .map_err(|_| {
            field(
                "status",
                "status must be one of queued, throttled, running, succeeded, failed, cancelled"
                    .to_owned(),
            )
        })?;
    let limit = match query.limit.as_deref() {
        None => DEFAULT_PAGE,
        Some(raw) => raw
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| {
                field(
                    "limit",
                    format!("limit must be a whole number from 1 to {MAX_PAGE}"),
                )
            })?,
    };
    let cursor = query
        .cursor
        .as_deref()
        .map(Uuid::parse_str)
        .transpose()
        .map_err(|_| {
            field(
                "cursor",
                "cursor must be the next_cursor of a previous page".to_owned(),
            )
        })?;

    // One more than asked tells whether another page follows.
    let mut jobs = state
        .store()
        .jobs()
        .list_for_user(user.0, status, cursor, limit + 1)
        .await
        .map_err(|e| ApiError::store(&e))?;
    let more = jobs.len() > limit as usize;
    jobs.truncate(limit as usize);
    let next_cursor = more.then(|| jobs.last().map(|j| j.id)).flatten();
    Ok(Json(JobPage {
        user_id: user.0,
        jobs: jobs.into_iter().map(JobResource::from).collect(),
        next_cursor,
    }))
}

/// `GET /v1/jobs/{id}/video`: the stored MP4, streamed from `output.dir`.
pub(crate) async fn video(
    State(state): State<AppState>,
    JobPath(id): JobPath,
) -> Result<Response, ApiError> {
    let setup = setup(&state)?;
    let job = load(&state, id).await?;
    if job.status != JobStatus::Succeeded {
        return Err(
            ApiError::not_found(format!("no video: the job is {}", job.status))
                .with_details(json!({ "status": job.status })),
        );
    }
    let path = setup.output_dir.join(format!("{id}.mp4"));
    let file = match tokio::fs::File::open(&path).await {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ApiError::not_found(
                "the video is not in this server's output.dir (API and workers must share it)",
            ));
        }
        Err(e) => {
            return Err(ApiError::internal(&format!(
                "cannot open {}: {e}",
                path.display()
            )));
        }
    };
    let length = file
        .metadata()
        .await
        .map_err(|e| ApiError::internal(&format!("cannot stat {}: {e}", path.display())))?
        .len();
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(file));
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("video/mp4")),
            (header::CONTENT_LENGTH, HeaderValue::from(length)),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_str(&format!("inline; filename=\"{id}.mp4\""))
                    .unwrap_or(HeaderValue::from_static("inline")),
            ),
        ],
        body,
    )
        .into_response())
}
