//! Generation jobs: enqueue, read, cancel, list, and the finished video.
//!
//! `POST /v1/jobs` checks everything it can before writing anything: the
//! body's shape, the provider's catalogue, the image URL's policy and the
//! user's stored key. Only then is the job stored (`queued`) and its id
//! pushed to the queue; the queue never carries more than the id.

use byok_video_store::VideoStore;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use crate::routing::Routed;
use axum::Json;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use byok_budgets::BudgetError;
use byok_core::{
    GenerationRequest, JobItem, JobPage, JobStatus, JobView, MAX_FALLBACKS, ProjectUser, ProviderId,
};
use byok_providers::{FetchError, ImageFetcher};
use byok_queue::Producer;
use byok_store::{Cancelled, Idempotency, Inserted, Job, NewJob, UsagePlan};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use crate::AppState;
use crate::auth::Caller;
use crate::batch::Pushed;
use crate::error::{ApiError, ApiErrorCode};
use crate::extract::{ApiJson, JobPath, UserPath};

/// The header a producer sends to make a retried `POST /v1/jobs` safe.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// How long enqueueing waits for the queue before answering 503.
pub(crate) const PUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// What the jobs routes need beyond the credential routes.
#[derive(Debug, Clone)]
pub(crate) struct JobsSetup {
    /// Where job ids are pushed.
    pub producer: Producer<JobItem>,
    /// Checks `image_url` against the fetch policy at enqueue.
    pub fetcher: Arc<ImageFetcher>,
    /// Where workers keep finished videos.
    pub videos: VideoStore,
}

/// `POST /v1/jobs`
#[utoipa::path(
    post,
    path = "/v1/jobs",
    operation_id = "create_job",
    summary = "Enqueue a generation job",
    tag = "jobs",
    params((
        "Idempotency-Key" = Option<String>, Header,
        description = "Makes a retry safe: scoped to the token, the same key with the same \
            request (compared as canonical JSON) returns the same job and queues nothing; with \
            another request it is a 409 whose `details.job_id` names the first job",
        min_length = 1, max_length = 255, pattern = "^[!-~]+$",
    )),
    request_body(
        content = byok_core::JobRequest,
        content_type = "application/json",
        description = "Checked before anything is written, in this order: the shape; the \
            model's catalogue (a 422 whose `details` name the `field` and the `allowed` values); \
            `image_url` against the fetch policy; the user's stored key for the provider \
            (`credentials_missing`, `credentials_invalid`); each of `fallbacks` the same way, \
            naming its entry (`fallbacks[1].model`); the budgets (`budget_exceeded`). With \
            `\"provider\": \"auto\"` the API first builds the chain from the providers where \
            the user has a valid key and a model fits, ordered by `routing` (`cheapest` or \
            `fastest`), and stores it as the job's provider, model and fallbacks with the \
            decision in `request.routing` (`no_capable_provider` when none can)",
    ),
    responses((
        status = 202,
        description = "Stored `queued` and its id pushed to the queue; or, for a replayed \
            Idempotency-Key, the first job (with `idempotent-replayed: true`). If the queue \
            refuses after the job was stored, the answer is a 503 `service_unavailable` with \
            `details.job_id`: the job is queued within a minute, and a retry with the same \
            Idempotency-Key returns it",
        body = JobView,
        headers(
            ("Location" = String, description = "`/v1/jobs/{id}`"),
            ("idempotent-replayed" = String, description = "`true`, on a replay of an Idempotency-Key only"),
        ),
    )),
)]
pub(crate) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, ApiError> {
    let idempotency_key = idempotency_key(&headers)?;
    let Routed {
        request,
        fingerprint,
    } = crate::routing::read_job(&state, &caller, body, "body").await?;
    let Checked { canonical, usage } = check_job(
        &state,
        caller.project_id(),
        &request,
        &mut Passed::default(),
    )
    .await?;
    let canonical = fingerprint.unwrap_or(canonical);
    let provider = request.provider;

    let new = NewJob {
        project_id: caller.project_id(),
        user_id: request.user_id,
        provider,
        model: request.model.clone(),
        metadata: request.metadata.clone(),
        created_by_token: Some(caller.token_id()),
        batch_id: None,
        idempotency: idempotency_key.map(|key| Idempotency {
            key,
            // serde_json's maps are sorted, so the same request always
            // serialises to the same bytes, whatever order the body had
            // (and jobs stored by earlier builds keep their fingerprints).
            request_sha256: Sha256::digest(canonical.to_string().as_bytes()).into(),
        }),
        request,
        usage,
    };
    let inserted = state.job_inserts().insert(new).await;
    let (job, pushed) = match inserted {
        Ok((Inserted::Created(job), pushed)) => (job, pushed),
        Ok((Inserted::Replayed(job), _)) => {
            let mut response = accepted(job);
            response
                .headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            return Ok(response);
        }
        Ok((Inserted::Conflict(job), _)) => {
            return Err(ApiError::new(
                ApiErrorCode::Conflict,
                "this Idempotency-Key was already used with a different request",
            )
            .with_details(json!({ "job_id": job.id })));
        }
        Err(e) => return Err(e),
    };

    pushed_or_503(&state, &job, pushed).await?;
    tracing::info!(job.id = %job.id, provider = %provider, user.id = %job.user_id, "job enqueued");
    byok_metrics::metrics().job_enqueued(provider);
    Ok(accepted(job))
}

/// Pushes a newly stored job's work item to the queue and marks it enqueued (in the
/// background, batched). When the queue does not answer, the job stays stored and the
/// sweeper pushes it later: the caller is told so (503 naming the job).
pub(crate) async fn push_new(state: &AppState, job: &Job) -> Result<(), ApiError> {
    let pushed = crate::batch::push_all(&state.jobs().producer, &[job.id], PUSH_TIMEOUT).await;
    pushed_or_503(state, job, pushed).await
}

/// After the push of a new job's work item: marks the job enqueued, or answers 503 naming it.
async fn pushed_or_503(state: &AppState, job: &Job, pushed: Pushed) -> Result<(), ApiError> {
    match pushed {
        Ok(()) => {
            // Written in the background, batched with other requests'. If
            // it is lost the sweeper pushes the job once more, which is
            // harmless: every step is a compare-and-set on the row.
            state.enqueued_marks().mark(job.id).await;
            Ok(())
        }
        Err(why) => {
            tracing::warn!(job.id = %job.id, error = %why, "queue push failed; the sweeper will push the job");
            Err(ApiError::new(
                ApiErrorCode::ServiceUnavailable,
                "the job was stored but the queue is unavailable; it will be queued automatically \
                 within a minute. Retry with the same Idempotency-Key to get this job rather than \
                 create another",
            )
            .with_details(json!({ "job_id": job.id })))
        }
    }
}

/// What already passed [`check_job`] for one request: checks whose answer cannot differ
/// between the jobs of a batch are made once per distinct value.
#[derive(Debug, Default)]
pub(crate) struct Passed {
    image_urls: HashSet<String>,
    webhook_urls: HashSet<String>,
    keys: HashSet<(Uuid, ProviderId)>,
}

/// A job request that passed [`check_job`].
#[derive(Debug)]
pub(crate) struct Checked {
    /// The request's canonical JSON (what its idempotency fingerprint is taken of).
    pub(crate) canonical: Value,
    /// Its length, resolution and list price, from the model's catalogue entry.
    pub(crate) usage: UsagePlan,
}

/// The checks of one job request before anything is written (`POST /v1/jobs`, and each job
/// of `POST /v1/batches`), in this order: no U+0000 anywhere; the provider and the model's
/// catalogue and `image_url` against the fetch policy ([`check_entry`]); a `webhook_url`'s
/// receiver and the project's job-webhook secret; the user's stored, valid key for the
/// provider; each fallback as the job's own provider; the budgets.
pub(crate) async fn check_job(
    state: &AppState,
    project_id: Uuid,
    request: &GenerationRequest,
    passed: &mut Passed,
) -> Result<Checked, ApiError> {
    let canonical = serde_json::to_value(request).map_err(|e| ApiError::internal(&e))?;
    refuse_nul(&canonical)?;
    let provider = request.provider;
    let usage = check_entry(state, request, passed).await?;
    if let Some(url) = &request.webhook_url
        && !passed.webhook_urls.contains(url)
    {
        require_job_webhooks(state, project_id, url).await?;
        passed.webhook_urls.insert(url.clone());
    }
    check_key(state, project_id, request, passed).await?;
    check_fallbacks(state, project_id, request, passed).await?;
    // Refused now when the standing already cannot take it; the reservation before the
    // submit decides for good (jobs enqueued together all pass here). A limit at this
    // provider only does not refuse a job with fallbacks: the worker moves it on.
    let checked = state
        .budgets()
        .check(
            ProjectUser::new(project_id, request.user_id),
            provider,
            usage.estimated_cost,
        )
        .await;
    match checked {
        Err(BudgetError::Exceeded(refusal))
            if refusal.provider.is_some() && !request.fallbacks.is_empty() => {}
        Err(e) => return Err(crate::budgets::budget_error(&e)),
        Ok(()) => {}
    }
    Ok(Checked { canonical, usage })
}

/// The checks of one provider and model of a job (its own, or a fallback's request): the
/// provider and the model's catalogue; `image_url` against the fetch policy. Its length,
/// resolution and list price, fixed here, once, so that what the job costs does not change
/// with a later price change.
async fn check_entry(
    state: &AppState,
    request: &GenerationRequest,
    passed: &mut Passed,
) -> Result<UsagePlan, ApiError> {
    let provider = request.provider;
    let adapter = state.providers().get(provider).ok_or_else(|| {
        ApiError::new(
            ApiErrorCode::InvalidRequest,
            crate::extract::not_offered(state, provider),
        )
        .with_details(json!({ "field": "provider" }))
    })?;
    let validated = adapter.validate(request).map_err(|e| match &e.retired {
        // Nothing is stored or sent: the provider would refuse (and may bill) it.
        Some(retirement) => {
            ApiError::new(ApiErrorCode::ModelRetired, e.to_string()).with_details(json!({
                "field": e.field,
                "retired_on": retirement.date,
                "source": retirement.source,
                "alternatives": retirement.alternatives,
            }))
        }
        None => ApiError::new(ApiErrorCode::InvalidRequest, e.to_string()).with_details(json!({
            "field": e.field,
            "allowed": e.allowed,
        })),
    })?;
    if let Some(url) = &validated.image_url
        && !passed.image_urls.contains(url)
    {
        check_image_url(&state.jobs().fetcher, url).await?;
        passed.image_urls.insert(url.clone());
    }
    Ok(UsagePlan::of(
        adapter.catalogue().model(&validated.model),
        &validated,
    ))
}

/// The user's stored, valid key for the request's provider: a job runs on nothing else.
async fn check_key(
    state: &AppState,
    project_id: Uuid,
    request: &GenerationRequest,
    passed: &mut Passed,
) -> Result<(), ApiError> {
    let key = (request.user_id, request.provider);
    if !passed.keys.contains(&key) {
        require_usable_key(
            state,
            ProjectUser::new(project_id, request.user_id),
            request.provider,
        )
        .await?;
        passed.keys.insert(key);
    }
    Ok(())
}

/// Each fallback passes the same checks as the job's own provider and model, on the
/// request it would run with; a problem names its entry (`fallbacks[1].model`).
async fn check_fallbacks(
    state: &AppState,
    project_id: Uuid,
    request: &GenerationRequest,
    passed: &mut Passed,
) -> Result<(), ApiError> {
    if request.fallbacks.len() > MAX_FALLBACKS {
        return Err(ApiError::new(
            ApiErrorCode::InvalidRequest,
            format!("at most {MAX_FALLBACKS} fallbacks"),
        )
        .with_details(json!({ "field": "fallbacks" })));
    }
    let mut seen = vec![(request.provider, request.model.as_str())];
    for (i, entry) in request.fallbacks.iter().enumerate() {
        if seen.contains(&(entry.provider, entry.model.as_str())) {
            return Err(ApiError::new(
                ApiErrorCode::InvalidRequest,
                format!(
                    "fallbacks[{i}] names {}/{} again: each entry is another provider or model",
                    entry.provider, entry.model
                ),
            )
            .with_details(json!({ "field": format!("fallbacks[{i}]") })));
        }
        seen.push((entry.provider, entry.model.as_str()));
        let Some(entry_request) = request.fallback_request(i) else {
            continue;
        };
        let checked = match check_entry(state, &entry_request, passed).await {
            Ok(_) => check_key(state, project_id, &entry_request, passed).await,
            Err(e) => Err(e),
        };
        checked.map_err(|e| in_fallback(&e, i))?;
    }
    Ok(())
}

/// An error of fallback `i`'s request, naming the entry: its field becomes
/// `fallbacks[i].<field>` (or `fallbacks[i]`).
fn in_fallback(error: &ApiError, i: usize) -> ApiError {
    let mut details = error.details().clone();
    let field = match details.get("field").and_then(Value::as_str) {
        Some(field) => format!("fallbacks[{i}].{field}"),
        None => format!("fallbacks[{i}]"),
    };
    if !details.is_object() {
        details = json!({});
    }
    details["field"] = json!(field);
    ApiError::new(error.code(), format!("fallbacks[{i}]: {}", error.message()))
        .with_details(details)
}

fn accepted(job: Job) -> Response {
    let location = format!("/v1/jobs/{}", job.id);
    let mut response = (StatusCode::ACCEPTED, Json(JobView::from(job))).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// Refuses a request with U+0000 in any string or member name (`prompt`,
/// `image_url`, `metadata`, …): PostgreSQL stores neither text nor JSONB
/// with it, and no request needs it. Refused on every storage shape alike,
/// so that the API answers the same whatever the database.
pub(crate) fn refuse_nul(request: &Value) -> Result<(), ApiError> {
    fn find(value: &Value, path: &mut Vec<String>) -> bool {
        match value {
            Value::String(s) => s.contains('\0'),
            Value::Array(items) => items.iter().enumerate().any(|(i, item)| {
                path.push(format!("[{i}]"));
                let found = find(item, path);
                if !found {
                    path.pop();
                }
                found
            }),
            Value::Object(members) => members.iter().any(|(name, item)| {
                let dot = if path.is_empty() { "" } else { "." };
                path.push(format!("{dot}{}", name.escape_default()));
                let found = name.contains('\0') || find(item, path);
                if !found {
                    path.pop();
                }
                found
            }),
            Value::Null | Value::Bool(_) | Value::Number(_) => false,
        }
    }
    let mut path = Vec::new();
    if !find(request, &mut path) {
        return Ok(());
    }
    let field = path.concat();
    Err(ApiError::new(
        ApiErrorCode::InvalidRequest,
        format!("{field}: contains a NUL character (U+0000), which cannot be stored"),
    )
    .with_details(json!({ "field": field })))
}

/// The `Idempotency-Key` header: 1–255 visible ASCII characters.
pub(crate) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
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

/// A job's own `webhook_url` passes the receiver checks, and the project has a secret
/// to sign its deliveries with.
async fn require_job_webhooks(
    state: &AppState,
    project_id: Uuid,
    url: &str,
) -> Result<(), ApiError> {
    crate::webhooks::check_receiver_url(state.fetcher(), url, "webhook_url").await?;
    let secret = state
        .store()
        .webhooks()
        .project_secret(project_id)
        .await
        .map_err(|e| ApiError::store(&e))?;
    if secret.is_none() {
        return Err(ApiError::new(
            ApiErrorCode::InvalidRequest,
            "the project has no secret to sign job webhooks with: create one with \
             POST /v1/webhooks/job-secret first",
        )
        .with_details(json!({ "field": "webhook_url" })));
    }
    Ok(())
}

/// A job needs the user's own stored, valid key for its provider.
async fn require_usable_key(
    state: &AppState,
    user: ProjectUser,
    provider: ProviderId,
) -> Result<(), ApiError> {
    let user_id = user.user_id;
    let stored = state
        .key_validity(user, provider)
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
#[utoipa::path(
    get,
    path = "/v1/jobs/{job_id}",
    operation_id = "get_job",
    summary = "Read a job",
    tag = "jobs",
    params(("job_id" = Uuid, Path, description = "The job (a UUID; anything else is a 400)")),
    responses((status = 200, description = "The job, if it belongs to the token's project", body = JobView)),
)]
pub(crate) async fn get(
    State(state): State<AppState>,
    caller: Caller,
    JobPath(id): JobPath,
) -> Result<Json<JobView>, ApiError> {
    Ok(Json(load(&state, &caller, id).await?.into()))
}

/// The job, if it is in the caller's project. A job of another project is
/// the very same 404 as a job that does not exist: no answer tells a token
/// what other projects hold.
pub(crate) async fn load(state: &AppState, caller: &Caller, id: Uuid) -> Result<Job, ApiError> {
    state
        .store()
        .jobs()
        .get(id)
        .await
        .map_err(|e| ApiError::store(&e))?
        .filter(|job| job.project_id == caller.project_id())
        .ok_or_else(no_such_job)
}

fn no_such_job() -> ApiError {
    ApiError::not_found("no such job")
}

/// `POST /v1/jobs/{id}/cancel`
#[utoipa::path(
    post,
    path = "/v1/jobs/{job_id}/cancel",
    operation_id = "cancel_job",
    summary = "Cancel a job",
    tag = "jobs",
    params(("job_id" = Uuid, Path, description = "The job (a UUID; anything else is a 400)")),
    responses((
        status = 200,
        description = "Cancelled; a worker cancels it at the provider where it can. A job \
            already final is a 409 whose `details.status` says which",
        body = JobView,
    )),
)]
pub(crate) async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    JobPath(id): JobPath,
) -> Result<Json<JobView>, ApiError> {
    // A job's project never changes, so checking it first leaves no window.
    load(&state, &caller, id).await?;
    let outcome = state
        .store()
        .jobs()
        .cancel(id, "cancelled by the producer")
        .await
        .map_err(|e| ApiError::store(&e))?;
    match outcome {
        Cancelled::Now(job) => {
            after_cancel(&state, &job).await;
            Ok(Json(job.into()))
        }
        Cancelled::AlreadyFinal(job) => Err(ApiError::new(
            ApiErrorCode::Conflict,
            format!("the job is already {}", job.status),
        )
        .with_details(json!({ "status": job.status }))),
        Cancelled::NotFound => Err(no_such_job()),
    }
}

/// What follows a cancel (here or from the dashboard): the budget hold settled, the
/// metric, and a worker nudged to cancel at the provider.
pub(crate) async fn after_cancel(state: &AppState, job: &Job) {
    // A hold taken before its submit goes back (or, when the provider may have started it,
    // stays spent). Should this fail, a worker's later look at the cancelled job settles it,
    // or the hold lapses.
    if let Err(e) = state.budgets().settle(job.id).await {
        tracing::warn!(job.id = %job.id, error = %e, "could not settle the job's budget hold");
    }
    let age = (Utc::now() - job.created_at).to_std().unwrap_or_default();
    byok_metrics::metrics().job_finished(
        &job.provider_name,
        JobStatus::Cancelled,
        Some(byok_core::ErrorCode::Cancelled),
        age,
    );
    // A job the provider knows (or may be about to know) gets its remote cancel from a
    // worker, which holds the key: nudge one now rather than at the job's next poll.
    if job.provider_job_id.is_some() || job.submit_started_at.is_some() {
        let item = JobItem { job_id: job.id };
        if let Err(e) = state
            .jobs()
            .producer
            .push(&job.id.to_string(), &item, Duration::ZERO)
            .await
        {
            tracing::warn!(job.id = %job.id, error = %e, "could not nudge a worker to cancel at the provider; the next poll will");
        }
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

/// `GET /v1/users/{user_id}/jobs?status=&limit=&cursor=`
#[utoipa::path(
    get,
    path = "/v1/users/{user_id}/jobs",
    operation_id = "list_jobs",
    summary = "List a user's jobs",
    tag = "jobs",
    params(
        ("user_id" = Uuid, Path, description = "The user (a UUID; anything else is a 400)", example = json!(crate::openapi::EXAMPLE_USER_ID)),
        ("status" = Option<JobStatus>, Query, description = "Only jobs in this status"),
        ("limit" = Option<u32>, Query, description = "Page size, 1–100 (default 20)", minimum = 1, maximum = 100),
        ("cursor" = Option<Uuid>, Query, description = "The `next_cursor` of the previous page"),
    ),
    responses((status = 200, description = "A page of the user's jobs, newest first", body = JobPage)),
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
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
    let (limit, cursor) = crate::extract::page(query.limit.as_deref(), query.cursor.as_deref())?;

    // One more than asked tells whether another page follows.
    let mut jobs = state
        .store()
        .jobs()
        .list_for_user(caller.user(user.0), status, cursor, limit + 1)
        .await
        .map_err(|e| ApiError::store(&e))?;
    let more = jobs.len() > limit as usize;
    jobs.truncate(limit as usize);
    let next_cursor = more.then(|| jobs.last().map(|j| j.id)).flatten();
    Ok(Json(JobPage {
        user_id: user.0,
        jobs: jobs.into_iter().map(JobView::from).collect(),
        next_cursor,
    }))
}

/// `GET /v1/jobs/{id}/video`: the stored MP4, streamed from the video store,
/// or a 302 to a presigned URL of it (`output.presign`).
#[utoipa::path(
    get,
    path = "/v1/jobs/{job_id}/video",
    operation_id = "get_job_video",
    summary = "Download a job's video",
    tag = "jobs",
    params(("job_id" = Uuid, Path, description = "The job (a UUID; anything else is a 400)")),
    responses(
        (
            status = 200,
            description = "The stored video, streamed. 404 unless the job succeeded (then \
                `details.status` says what it is) and its video is in the video store \
                (`output.url`)",
            content_type = "video/mp4",
            body = crate::openapi::Video,
            headers(
                ("Content-Length" = u64, description = "The video's size in bytes"),
                ("Content-Disposition" = String, description = "`inline; filename=\"{job_id}.mp4\"`"),
            ),
        ),
        (
            status = 302,
            description = "With `output.presign` on object storage: the video is at the \
                `Location`, a presigned URL valid for `output.presign_ttl`",
            headers(("Location" = String, description = "The presigned URL")),
        ),
    ),
)]
pub(crate) async fn video(
    State(state): State<AppState>,
    caller: Caller,
    JobPath(id): JobPath,
) -> Result<Response, ApiError> {
    let job = load(&state, &caller, id).await?;
    video_of(&state, &job).await
}

/// The video of `job` (the caller checked it may see it): streamed from the video store, or a
/// 302 to a presigned URL; 404 unless the job succeeded and its video is kept.
pub(crate) async fn video_of(state: &AppState, job: &Job) -> Result<Response, ApiError> {
    let (videos, id) = (&state.jobs().videos, job.id);
    if job.status != JobStatus::Succeeded {
        return Err(
            ApiError::not_found(format!("no video: the job is {}", job.status))
                .with_details(json!({ "status": job.status })),
        );
    }
    let unavailable = |e: byok_video_store::VideoStoreError| {
        tracing::warn!(job.id = %id, error = %e, "the video store did not answer");
        ApiError::new(
            ApiErrorCode::ServiceUnavailable,
            "the video store is unavailable; try again shortly",
        )
    };
    if let Some(url) = videos.presigned_url(id).await.map_err(unavailable)? {
        let location = HeaderValue::from_str(url.as_str())
            .map_err(|_| ApiError::internal(&"the presigned URL is not a valid header"))?;
        return Ok((StatusCode::FOUND, [(header::LOCATION, location)]).into_response());
    }
    let Some(stored) = videos.get(id).await.map_err(unavailable)? else {
        return Err(ApiError::not_found(
            "the video is not in the video store (output.url; API and workers must share it)",
        ));
    };
    // A store error in the middle of the stream ends the body early: the
    // client sees fewer bytes than Content-Length and knows it is cut.
    let body = Body::from_stream(stored.stream);
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("video/mp4")),
            (header::CONTENT_LENGTH, HeaderValue::from(stored.size)),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(request: &Value) -> Option<String> {
        refuse_nul(request)
            .err()
            .map(|e| e.details()["field"].as_str().unwrap().to_owned())
    }

    #[test]
    fn nul_characters_are_refused_where_they_are() {
        let clean = json!({"prompt": "a lighthouse", "metadata": {"k": ["v", 1, null]}});
        assert_eq!(field_of(&clean), None);
        assert_eq!(
            field_of(&json!({"prompt": "a\u{0}b"})).as_deref(),
            Some("prompt")
        );
        assert_eq!(
            field_of(&json!({"metadata": {"a": "ok", "k": [1, "x\u{0}"]}})).as_deref(),
            Some("metadata.k[1]")
        );
        assert_eq!(
            field_of(&json!({"metadata": {"a\u{0}": 1}})).as_deref(),
            Some("metadata.a\\u{0}")
        );
        assert_eq!(
            field_of(&json!({"image_url": "https://example.com/\u{0}.png"})).as_deref(),
            Some("image_url")
        );
    }
}
