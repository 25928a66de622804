//! The jobs pages: every project's jobs with filters and paging, one job's page, its video and the admin actions on it.

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use byok_core::JobStatus;
use byok_store::{Inserted, Job, NewJob};
use chrono::{TimeDelta, Utc};
use serde::Deserialize;

use super::{
    CsrfForm, POLICY, Projects, admin_action, filter_id, next_page, page, refused, see_other_to,
    session_or, time_text, to_sign_in, unauthorized,
};
use crate::AppState;
use crate::error::ApiError;

/// How many jobs a page of the jobs list shows.
const JOBS_PER_PAGE: u32 = 50;

/// The jobs page's query, checked by hand: a bad value is said on the page.
#[derive(Deserialize, Default)]
pub(crate) struct JobsQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    provider: String,
    #[serde(default)]
    project: String,
    #[serde(default)]
    user: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    before: String,
}

/// Reads the filters; the first bad value is an error to show.
fn job_filter(query: &JobsQuery) -> Result<byok_store::JobFilter, String> {
    let status = match query.status.as_str() {
        "" => None,
        s => Some(
            s.parse::<JobStatus>()
                .map_err(|_| format!("status: unknown `{s}`"))?,
        ),
    };
    let since = match query.since.as_str() {
        "" => None,
        "1h" => Some(Utc::now() - TimeDelta::hours(1)),
        "24h" => Some(Utc::now() - TimeDelta::hours(24)),
        "7d" => Some(Utc::now() - TimeDelta::days(7)),
        other => return Err(format!("since: unknown `{other}`")),
    };
    let text = |t: &str| Some(t.trim().to_owned()).filter(|t| !t.is_empty());
    Ok(byok_store::JobFilter {
        status,
        provider: text(&query.provider),
        project_id: filter_id(&query.project, "project")?,
        user_id: filter_id(&query.user, "user")?,
        error_code: text(&query.code),
        since,
        before: filter_id(&query.before, "before")?,
    })
}

/// `GET /dashboard/jobs`
pub(crate) async fn jobs(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<JobsQuery>,
) -> Response {
    let signed = match session_or(&state, &headers, to_sign_in).await {
        Ok(signed) => signed,
        Err(response) => return response,
    };
    // An id searched for: its page.
    if let Ok(id) = query.q.trim().parse::<uuid::Uuid>() {
        return see_other_to(&format!("/dashboard/jobs/{id}"));
    }
    let projects = match Projects::load(&state).await {
        Ok(projects) => projects,
        Err(e) => return e.into_response(),
    };
    let (found, error) = match job_filter(&query) {
        _ if !query.q.trim().is_empty() => (Vec::new(), Some("Id: not a job id".to_owned())),
        Ok(filter) => match state.store().jobs().search(&filter, JOBS_PER_PAGE).await {
            Ok(found) => (found, None),
            Err(e) => return ApiError::store(&e).into_response(),
        },
        Err(why) => (Vec::new(), Some(why)),
    };
    // The next page: the same filters, older than the last job shown.
    let next = (found.len() == JOBS_PER_PAGE as usize)
        .then(|| found.last().map(|j| j.id))
        .flatten()
        .map(|last| {
            let filters = [
                ("status", query.status.as_str()),
                ("provider", &query.provider),
                ("project", &query.project),
                ("user", &query.user),
                ("code", &query.code),
                ("since", &query.since),
            ];
            next_page("/dashboard/jobs", &filters, ("before", last))
        });
    let rows: Vec<_> = found
        .iter()
        .map(|j| {
            serde_json::json!({
                "id": j.id.to_string(),
                "created": time_text(j.created_at),
                "project": projects.name(j.project_id),
                "user": j.user_id.to_string(),
                "provider": j.provider_name,
                "model": j.model,
                "status": j.status.as_str(),
                "error": j.error.as_ref().map(|e| e.code.as_str()),
            })
        })
        .collect();
    let providers: Vec<&str> = state.providers().all().map(|a| a.id().as_str()).collect();
    let statuses: Vec<&str> = JobStatus::ALL.iter().map(|s| s.as_str()).collect();
    page(
        StatusCode::OK,
        "dashboard/jobs.html",
        minijinja::context! {
            page => "jobs",
            session => signed.view(),
            jobs => minijinja::Value::from_serialize(&rows),
            next => next,
            error => error,
            statuses => statuses,
            providers => providers,
            projects => projects.choices(),
            filter => minijinja::context! {
                q => query.q, status => query.status, provider => query.provider,
                project => query.project, user => query.user, code => query.code,
                since => query.since,
            },
        },
    )
}

/// The job of the path, any project's (operators see every project).
async fn job_of(state: &AppState, id: &str) -> Result<Option<Job>, ApiError> {
    let Ok(id) = id.parse::<uuid::Uuid>() else {
        return Ok(None);
    };
    state
        .store()
        .jobs()
        .get(id)
        .await
        .map_err(|e| ApiError::store(&e))
}

fn no_such_job() -> Response {
    let mut response = (StatusCode::NOT_FOUND, "no such job").into_response();
    crate::pages::common_headers(&mut response, POLICY);
    response
}

/// `GET /dashboard/jobs/{id}`: the job, its timeline, route, usage and video.
pub(crate) async fn job(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let signed = match session_or(&state, &headers, to_sign_in).await {
        Ok(signed) => signed,
        Err(response) => return response,
    };
    let job = match job_of(&state, &id).await {
        Ok(Some(job)) => job,
        Ok(None) => return no_such_job(),
        Err(e) => return e.into_response(),
    };
    let store = state.store();
    let (jobs, usage, projects) = (store.jobs(), store.usage(), store.projects());
    let (events, usage, project) =
        match tokio::try_join!(jobs.events(job.id), usage.of_job(job.id), projects.list(),) {
            Ok(found) => found,
            Err(e) => return ApiError::store(&e).into_response(),
        };
    let time = time_text;
    let project = Projects(project).name(job.project_id);
    let timeline: Vec<_> = events
        .iter()
        .map(|e| serde_json::json!({ "at": time(e.at), "status": e.status, "message": e.message }))
        .collect();
    let view = serde_json::json!({
        "id": job.id.to_string(),
        "status": job.status.as_str(),
        "progress": job.progress,
        "provider": job.provider_name,
        "model": job.model,
        "user_id": job.user_id.to_string(),
        "created": time(job.created_at),
        "started": job.started_at.map(time),
        "finished": job.finished_at.map(time),
        "attempts": job.attempts,
        "provider_job_id": job.provider_job_id,
        "error": job.error.as_ref().map(|e| serde_json::json!({ "code": e.code.as_str(), "message": e.message })),
        "estimated_cost": job.estimated_cost.map(|c| c.to_decimal()),
        "route": job.route.iter().map(|r| serde_json::json!({
            "at": time(r.at), "provider": r.provider, "model": r.model, "reason": r.reason, "message": r.message,
        })).collect::<Vec<_>>(),
        "fallbacks": job.request.fallbacks.iter().map(|f| format!("{}/{}", f.provider, f.model)).collect::<Vec<_>>(),
    });
    let usage = usage.map(|u| {
        serde_json::json!({
            "outcome": u.outcome,
            "cost": u.cost.map(|c| c.to_decimal()),
            "basis": serde_json::to_value(u.cost_basis).unwrap_or_default(),
            "compute_ms": u.provider_compute_ms,
        })
    });
    let request = serde_json::to_string_pretty(&job.request).unwrap_or_default();
    page(
        StatusCode::OK,
        "dashboard/job.html",
        minijinja::context! {
            page => "jobs",
            session => signed.view(),
            job => minijinja::Value::from_serialize(&view),
            usage => minijinja::Value::from_serialize(&usage),
            project => project,
            timeline => minijinja::Value::from_serialize(&timeline),
            request => request,
            can_cancel => !signed.session.read_only && !job.status.is_terminal(),
            can_retry => !signed.session.read_only && retryable(job.status),
        },
    )
}

/// `GET /dashboard/jobs/{id}/video`
pub(crate) async fn job_video(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(response) = session_or(&state, &headers, unauthorized).await {
        return response;
    }
    let job = match job_of(&state, &id).await {
        Ok(Some(job)) => job,
        Ok(None) => return no_such_job(),
        Err(e) => return e.into_response(),
    };
    match crate::jobs::video_of(&state, &job).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

/// `POST /dashboard/jobs/{id}/cancel` (admin, CSRF): as `POST /v1/jobs/{id}/cancel`.
pub(crate) async fn cancel_job(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    let signed = match admin_action(&state, &headers, &form.csrf).await {
        Ok(signed) => signed,
        Err(response) => return response,
    };
    let Ok(job_id) = id.parse::<uuid::Uuid>() else {
        return no_such_job();
    };
    match state
        .store()
        .jobs()
        .cancel(job_id, "cancelled from the dashboard")
        .await
    {
        Ok(byok_store::Cancelled::Now(job)) => {
            tracing::info!(job.id = %job.id, token.id = %signed.session.token_id, "job cancelled from the dashboard");
            crate::jobs::after_cancel(&state, &job).await;
        }
        Ok(byok_store::Cancelled::AlreadyFinal(_)) => {}
        Ok(byok_store::Cancelled::NotFound) => return no_such_job(),
        Err(e) => return ApiError::store(&e).into_response(),
    }
    see_other_to(&format!("/dashboard/jobs/{job_id}"))
}

/// A job an operator may run again: one that ended without a video.
fn retryable(status: JobStatus) -> bool {
    matches!(status, JobStatus::Failed | JobStatus::Cancelled)
}

/// `POST /dashboard/jobs/{id}/retry` (admin, CSRF): runs a failed or cancelled job again as
/// a new job of the same project and user, with the request it last ran with and its
/// metadata. The ended job stays as it ended (a final status is final for everyone who was
/// told it); each job's history names the other. The new job passes every check a new
/// `POST /v1/jobs` passes (the key still valid, the budgets), and is refused with the
/// reason otherwise.
pub(crate) async fn retry_job(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    let signed = match admin_action(&state, &headers, &form.csrf).await {
        Ok(signed) => signed,
        Err(response) => return response,
    };
    let job = match job_of(&state, &id).await {
        Ok(Some(job)) => job,
        Ok(None) => return no_such_job(),
        Err(e) => return e.into_response(),
    };
    if !retryable(job.status) {
        return refused(
            StatusCode::CONFLICT,
            "This job cannot be retried",
            &format!(
                "Only a failed or cancelled job runs again; this one is {}.",
                job.status
            ),
            &format!("/dashboard/jobs/{}", job.id),
        );
    }
    match retry(&state, &job).await {
        Ok(new) => {
            tracing::info!(job.id = %job.id, retry.id = %new.id, token.id = %signed.session.token_id, "job retried from the dashboard");
            see_other_to(&format!("/dashboard/jobs/{}", new.id))
        }
        Err(e) => refused(
            e.code().status(),
            "The retry was refused",
            &format!("{}: {}", e.code().as_str(), e.message()),
            &format!("/dashboard/jobs/{}", job.id),
        ),
    }
}

/// Stores and queues the new job of a retry of `job`, and notes each in the other's history.
async fn retry(state: &AppState, job: &Job) -> Result<Job, ApiError> {
    let request = job.request.clone();
    let checked = crate::jobs::check_job(
        state,
        job.project_id,
        &request,
        &mut crate::jobs::Passed::default(),
    )
    .await?;
    let new = NewJob {
        project_id: job.project_id,
        user_id: job.user_id,
        provider: request.provider,
        model: request.model.clone(),
        metadata: job.metadata.clone(),
        created_by_token: None,
        idempotency: None,
        batch_id: None,
        request,
        usage: checked.usage,
    };
    let jobs = state.store().jobs();
    let created = match jobs.insert(&new).await.map_err(|e| ApiError::store(&e))? {
        Inserted::Created(created) => created,
        // Without an idempotency key every insert creates.
        Inserted::Replayed(other) | Inserted::Conflict(other) => other,
    };
    let (old_note, new_note) = (
        format!("retried from the dashboard as job {}", created.id),
        format!("a retry of job {}, from the dashboard", job.id),
    );
    let notes = tokio::try_join!(
        jobs.note(job.id, &old_note),
        jobs.note(created.id, &new_note)
    );
    if let Err(e) = notes {
        // The new job stands; only the cross-reference is missing.
        tracing::warn!(job.id = %job.id, retry.id = %created.id, error = %e, "could not note the retry in the jobs' histories");
    }
    crate::jobs::push_new(state, &created).await?;
    byok_metrics::metrics().job_enqueued(created.request.provider);
    Ok(created)
}
