//! Producer batches: many jobs enqueued as one unit (`POST /v1/batches`), read with their
//! progress, paged through, and cancelled together. Not to be confused with `batch.rs`, which
//! groups concurrent requests' single-job inserts into one database write.
//!
//! A batch is all or nothing before the queue: every job is checked exactly as
//! `POST /v1/jobs` checks one ([`crate::jobs::check_job`]), and a single bad job refuses the
//! whole batch, listing every bad job; then the batch and its jobs are stored in one
//! transaction, and only then pushed. The store counts the batch down as its jobs end and
//! writes `batch.completed` exactly once (docs/webhooks.md, "Batches").

use axum::Json;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use byok_core::{
    BatchJobPage, BatchRequest, BatchView, ErrorCode, GenerationRequest, JobItem, JobStatus,
    JobView, MAX_BATCH_JOBS,
};
use byok_store::{Batch, BatchInserted, Idempotency, NewBatch, NewJob, UsagePlan};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiErrorCode};
use crate::extract::ApiJson;
use crate::jobs::{PUSH_TIMEOUT, Passed, check_job, idempotency_key, refuse_nul};

/// The body as read: the jobs as raw JSON, so that each one's shape is checked on its own
/// and every bad job is listed, not only the first.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBatch {
    jobs: Vec<Value>,
    #[serde(default = "empty_object")]
    metadata: Value,
}

fn empty_object() -> Value {
    Value::Object(serde_json::Map::new())
}

/// `/v1/batches/{batch_id}…` routes: a UUID, else 400.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchPath(Uuid);

impl<S: Send + Sync> FromRequestParts<S> for BatchPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(raw) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|_| ApiError::bad_request("invalid path"))?;
        Uuid::parse_str(&raw).map(BatchPath).map_err(|_| {
            ApiError::bad_request("a batch id is a UUID")
                .with_details(json!({ "field": "batch_id" }))
        })
    }
}

/// `POST /v1/batches`
#[utoipa::path(
    post,
    path = "/v1/batches",
    operation_id = "create_batch",
    summary = "Enqueue a batch of generation jobs",
    tag = "batches",
    params((
        "Idempotency-Key" = Option<String>, Header,
        description = "Makes a retry safe: scoped to the token, the same key with the same \
            batch (compared as canonical JSON) returns the same batch and queues nothing; with \
            another batch it is a 409 whose `details.batch_id` names the first one",
        min_length = 1, max_length = 255, pattern = "^[!-~]+$",
    )),
    request_body(
        content = BatchRequest,
        content_type = "application/json",
        description = "1–1,000 jobs, each checked exactly as `POST /v1/jobs` checks one. Any \
            bad job refuses the whole batch with one 422 `invalid_request` whose \
            `details.items` lists every bad job as `{index, code, message, field}` (`code` is \
            what `POST /v1/jobs` would answer for it: `invalid_request`, `model_retired`, \
            `credentials_missing`, `credentials_invalid`); nothing is stored",
    ),
    responses((
        status = 202,
        description = "The batch and all its jobs stored `queued` in one transaction and \
            pushed to the queue; or, for a replayed Idempotency-Key, the first batch as it \
            stands (with `idempotent-replayed: true`). If the queue refuses after the batch \
            was stored, the answer is a 503 `service_unavailable` with `details.batch_id`: its \
            jobs are queued within a minute, and a retry with the same Idempotency-Key \
            returns the batch",
        body = BatchView,
        headers(
            ("Location" = String, description = "`/v1/batches/{id}`"),
            ("idempotent-replayed" = String, description = "`true`, on a replay of an Idempotency-Key only"),
        ),
    )),
)]
pub(crate) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(raw): ApiJson<RawBatch>,
) -> Result<Response, ApiError> {
    let idempotency_key = idempotency_key(&headers)?;
    let RawBatch { jobs, metadata } = raw;
    if jobs.is_empty() || jobs.len() > MAX_BATCH_JOBS {
        return Err(ApiError::new(
            ApiErrorCode::InvalidRequest,
            format!(
                "a batch holds 1 to {MAX_BATCH_JOBS} jobs; this one has {}",
                jobs.len()
            ),
        )
        .with_details(json!({ "field": "jobs", "max_items": MAX_BATCH_JOBS })));
    }
    refuse_nul(&json!({ "metadata": &metadata }))?;

    // Every job is checked, and every bad one listed, before anything is written.
    let total = jobs.len();
    let mut passed = Passed::default();
    let mut requests: Vec<(GenerationRequest, UsagePlan)> = Vec::with_capacity(total);
    let mut canonical: Vec<Value> = Vec::with_capacity(total);
    let mut bad: Vec<Value> = Vec::new();
    for (index, item) in jobs.into_iter().enumerate() {
        let checked = match crate::routing::read_job(&state, &caller, item, "job").await {
            Err(e) => Err(e),
            Ok(routed) => check_job(&state, caller.project_id(), &routed.request, &mut passed)
                .await
                .map(|checked| (routed, checked)),
        };
        match checked {
            Ok((routed, checked)) => {
                requests.push((routed.request, checked.usage));
                canonical.push(routed.fingerprint.unwrap_or(checked.canonical));
            }
            // A problem of this job: listed with the others.
            Err(e) if e.code().status() == StatusCode::UNPROCESSABLE_ENTITY => {
                bad.push(json!({
                    "index": index,
                    "code": e.code(),
                    "message": e.message(),
                    "field": e.details().get("field").cloned().unwrap_or(Value::Null),
                }));
            }
            // Not the job's fault (the database is down, …): the batch cannot be checked.
            Err(e) => return Err(e),
        }
    }
    if !bad.is_empty() {
        return Err(ApiError::new(
            ApiErrorCode::InvalidRequest,
            format!(
                "{} of the batch's {total} jobs cannot be enqueued (details.items lists each); \
                 nothing was stored",
                bad.len()
            ),
        )
        .with_details(json!({ "field": "jobs", "items": bad })));
    }

    let token = caller.token_id();
    let idempotency = idempotency_key.map(|key| Idempotency {
        key,
        // The canonical JSON of each job, as `POST /v1/jobs` fingerprints one, and the
        // batch's metadata: member order in the body does not matter.
        request_sha256: Sha256::digest(
            json!({ "jobs": canonical, "metadata": &metadata })
                .to_string()
                .as_bytes(),
        )
        .into(),
    });
    let new = NewBatch {
        project_id: caller.project_id(),
        created_by_token: Some(token),
        idempotency,
        metadata,
        jobs: requests
            .into_iter()
            .map(|(request, usage)| NewJob {
                project_id: caller.project_id(),
                user_id: request.user_id,
                provider: request.provider,
                model: request.model.clone(),
                metadata: request.metadata.clone(),
                created_by_token: Some(token),
                idempotency: None,
                batch_id: None,
                request,
                usage,
            })
            .collect(),
    };
    let inserted = state
        .store()
        .batches()
        .create(new)
        .await
        .map_err(|e| ApiError::store(&e))?;
    let (batch, jobs) = match inserted {
        BatchInserted::Created(batch, jobs) => (batch, jobs),
        BatchInserted::Replayed(batch) => {
            let mut response = accepted(batch);
            response
                .headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            return Ok(response);
        }
        BatchInserted::Conflict(batch) => {
            return Err(ApiError::new(
                ApiErrorCode::Conflict,
                "this Idempotency-Key was already used with a different batch",
            )
            .with_details(json!({ "batch_id": batch.id })));
        }
    };

    let items: Vec<(String, JobItem)> = jobs
        .iter()
        .map(|job| (job.id.to_string(), JobItem { job_id: job.id }))
        .collect();
    let pushed = tokio::time::timeout(
        PUSH_TIMEOUT,
        state
            .jobs()
            .producer
            .push_bulk(items.iter().map(|(id, item)| (id.as_str(), item))),
    )
    .await;
    if let Err(why) = pushed
        .map_err(|_| format!("no answer within {} s", PUSH_TIMEOUT.as_secs()))
        .and_then(|r| r.map_err(|e| e.to_string()))
    {
        // The jobs are stored and unmarked: the workers' sweeper pushes them.
        tracing::warn!(batch.id = %batch.id, error = %why, "queue push failed; the sweeper will push the batch's jobs");
        return Err(ApiError::new(
            ApiErrorCode::ServiceUnavailable,
            "the batch was stored but the queue is unavailable; its jobs will be queued \
             automatically within a minute. Retry with the same Idempotency-Key to get this \
             batch rather than create another",
        )
        .with_details(json!({ "batch_id": batch.id })));
    }
    let ids: Vec<Uuid> = jobs.iter().map(|job| job.id).collect();
    // A lost mark only makes the sweeper push a job once more, which is harmless: every
    // step of a job is a compare-and-set on its row.
    if let Err(e) = state.store().jobs().mark_enqueued_many(&ids).await {
        tracing::warn!(batch.id = %batch.id, error = %e, "could not note the batch's jobs as enqueued");
    }
    for job in &jobs {
        if let Some(provider) = job.provider() {
            byok_metrics::metrics().job_enqueued(provider);
        }
    }
    tracing::info!(batch.id = %batch.id, jobs = jobs.len(), "batch enqueued");
    Ok(accepted(batch))
}

fn accepted(batch: Batch) -> Response {
    let location = format!("/v1/batches/{}", batch.id);
    let mut response = (StatusCode::ACCEPTED, Json(BatchView::from(batch))).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// The batch, if it is in the caller's project: another project's batch is the very same
/// 404 as one that does not exist.
async fn load(state: &AppState, caller: &Caller, id: Uuid) -> Result<Batch, ApiError> {
    state
        .store()
        .batches()
        .get(caller.project_id(), id)
        .await
        .map_err(|e| ApiError::store(&e))?
        .ok_or_else(|| ApiError::not_found("no such batch"))
}

/// `GET /v1/batches/{id}`
#[utoipa::path(
    get,
    path = "/v1/batches/{batch_id}",
    operation_id = "get_batch",
    summary = "Read a batch and its progress",
    tag = "batches",
    params(("batch_id" = Uuid, Path, description = "The batch (a UUID; anything else is a 400)")),
    responses((
        status = 200,
        description = "The batch, if it belongs to the token's project: its jobs counted by \
            status, `progress` (the final share) and `status` (`completed` once every job is \
            final)",
        body = BatchView,
    )),
)]
pub(crate) async fn get(
    State(state): State<AppState>,
    caller: Caller,
    BatchPath(id): BatchPath,
) -> Result<Json<BatchView>, ApiError> {
    Ok(Json(load(&state, &caller, id).await?.into()))
}

/// Query of `GET /v1/batches/{id}/jobs`, checked by hand so that every bad value is a 400
/// in the API's error shape.
#[derive(Debug, Deserialize)]
pub(crate) struct PageQuery {
    limit: Option<String>,
    cursor: Option<String>,
}

/// `GET /v1/batches/{id}/jobs?limit=&cursor=`
#[utoipa::path(
    get,
    path = "/v1/batches/{batch_id}/jobs",
    operation_id = "list_batch_jobs",
    summary = "List a batch's jobs",
    tag = "batches",
    params(
        ("batch_id" = Uuid, Path, description = "The batch (a UUID; anything else is a 400)"),
        ("limit" = Option<u32>, Query, description = "Page size, 1–100 (default 20)", minimum = 1, maximum = 100),
        ("cursor" = Option<Uuid>, Query, description = "The `next_cursor` of the previous page"),
    ),
    responses((status = 200, description = "A page of the batch's jobs, in the batch's order", body = BatchJobPage)),
)]
pub(crate) async fn jobs(
    State(state): State<AppState>,
    caller: Caller,
    BatchPath(id): BatchPath,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<BatchJobPage>, ApiError> {
    let Query(query) = query.map_err(|_| ApiError::bad_request("invalid query string"))?;
    let (limit, cursor) = crate::extract::page(query.limit.as_deref(), query.cursor.as_deref())?;
    load(&state, &caller, id).await?;
    // One more than asked tells whether another page follows.
    let mut jobs = state
        .store()
        .batches()
        .jobs(caller.project_id(), id, cursor, limit + 1)
        .await
        .map_err(|e| ApiError::store(&e))?;
    let more = jobs.len() > limit as usize;
    jobs.truncate(limit as usize);
    let next_cursor = more.then(|| jobs.last().map(|j| j.id)).flatten();
    Ok(Json(BatchJobPage {
        batch_id: id,
        jobs: jobs.into_iter().map(JobView::from).collect(),
        next_cursor,
    }))
}

/// `POST /v1/batches/{id}/cancel`
#[utoipa::path(
    post,
    path = "/v1/batches/{batch_id}/cancel",
    operation_id = "cancel_batch",
    summary = "Cancel a batch's live jobs",
    tag = "batches",
    params(("batch_id" = Uuid, Path, description = "The batch (a UUID; anything else is a 400)")),
    responses((
        status = 200,
        description = "Every job of the batch still queued, throttled or running is \
            cancelled (each with its `job.cancelled`; the last one ends the batch, which \
            writes `batch.completed`); a worker cancels running ones at the provider where \
            it can. Jobs already final stay as they are, and cancelling a completed batch \
            changes nothing. The batch as it stands after",
        body = BatchView,
    )),
)]
pub(crate) async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    BatchPath(id): BatchPath,
) -> Result<Json<BatchView>, ApiError> {
    let cancelled = state
        .store()
        .batches()
        .cancel(caller.project_id(), id, "cancelled by the producer")
        .await
        .map_err(|e| ApiError::store(&e))?
        .ok_or_else(|| ApiError::not_found("no such batch"))?;
    let mut nudges = Vec::new();
    for job in &cancelled {
        let age = (Utc::now() - job.created_at).to_std().unwrap_or_default();
        byok_metrics::metrics().job_finished(
            &job.provider_name,
            JobStatus::Cancelled,
            Some(ErrorCode::Cancelled),
            age,
        );
        // A job the provider knows (or may be about to know) gets its remote cancel from a
        // worker, which holds the key: nudge one now rather than at the job's next poll.
        if job.provider_job_id.is_some() || job.submit_started_at.is_some() {
            nudges.push((job.id.to_string(), JobItem { job_id: job.id }));
        }
    }
    if !nudges.is_empty() {
        let pushed = tokio::time::timeout(
            PUSH_TIMEOUT,
            state
                .jobs()
                .producer
                .push_bulk(nudges.iter().map(|(id, item)| (id.as_str(), item))),
        )
        .await;
        if !matches!(pushed, Ok(Ok(()))) {
            tracing::warn!(batch.id = %id, "could not nudge workers to cancel at the provider; the next polls will");
        }
    }
    tracing::info!(batch.id = %id, jobs = cancelled.len(), "batch cancelled");
    Ok(Json(load(&state, &caller, id).await?.into()))
}
