//! The operator dashboard (docs/dashboard.md), served by the API at `/dashboard`: pages
//! rendered here from embedded templates, a small embedded script that refreshes the live
//! parts, no third-party code.
//!
//! Sign-in takes a token with `admin` (every action) or `dashboard:read` (every page, no
//! action) and makes a session: a random secret in an HttpOnly, SameSite=Strict cookie
//! (Secure when `api.public_url` is https), only its SHA-256 stored, ending after 12 hours
//! or with its token. Every state-changing form carries the session's CSRF token and is
//! refused (403) without it, from a read-only session, or from another origin.

use axum::Form;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use byok_core::{JobStatus, Scope};
use byok_store::Session;
use chrono::{DateTime, TimeDelta, Timelike as _, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::AppState;
use crate::error::ApiError;

const COOKIE: &str = "byok_session";
const SESSION_LIFETIME: TimeDelta = TimeDelta::hours(12);
const STYLE: &str = include_str!("../assets/dashboard.css");
const SCRIPT: &str = include_str!("../assets/dashboard.js");
// `media-src https:`: a video kept in object storage plays from its presigned URL.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; media-src 'self' https:; connect-src 'self'; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'";

/// A signed-in request: its session and the hash that names it.
struct Signed {
    session: Session,
    id_sha256: [u8; 32],
}

/// What the templates see of a session.
#[derive(Serialize)]
struct SessionView<'a> {
    read_only: bool,
    csrf: &'a str,
}

impl Signed {
    fn view(&self) -> SessionView<'_> {
        SessionView {
            read_only: self.session.read_only,
            csrf: &self.session.csrf,
        }
    }
}

fn page(status: StatusCode, template: &str, context: minijinja::Value) -> Response {
    let mut response = crate::pages::html(status, template, context);
    crate::pages::common_headers(&mut response, POLICY);
    response.headers_mut().insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}

fn see_other(to: &'static str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    response
        .headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(to));
    response
}

/// The session the request's cookie names, if it is live.
async fn signed(state: &AppState, headers: &HeaderMap) -> Result<Option<Signed>, ApiError> {
    let Some(secret) = cookie(headers, COOKIE) else {
        return Ok(None);
    };
    let id_sha256: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
    let session = state
        .store()
        .sessions()
        .find(&id_sha256)
        .await
        .map_err(|e| ApiError::store(&e))?;
    Ok(session.map(|session| Signed { session, id_sha256 }))
}

fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

/// A form posted from another origin is refused whatever it carries (the cookie is
/// SameSite=Strict, so a browser would not send it anyway; this is the second wall).
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    origin_host.is_some() && origin_host == host
}

/// Whether `presented` is the session's CSRF token (compared in constant time).
fn csrf_matches(session: &Session, presented: &str) -> bool {
    let (a, b) = (session.csrf.as_bytes(), presented.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Refused: a 403 page.
fn forbidden(why: &str) -> Response {
    let mut response = (StatusCode::FORBIDDEN, why.to_owned()).into_response();
    crate::pages::common_headers(&mut response, POLICY);
    response
}

/// The request's session, or the response that ends the request: to the sign-in page (a
/// page) or 401 (a fragment, a file, an action).
async fn session_or(
    state: &AppState,
    headers: &HeaderMap,
    missing: fn() -> Response,
) -> Result<Signed, Response> {
    match signed(state, headers).await {
        Ok(Some(signed)) => Ok(signed),
        Ok(None) => Err(missing()),
        Err(e) => Err(e.into_response()),
    }
}

fn to_sign_in() -> Response {
    see_other("/dashboard/sign-in")
}

/// An admin action's checks, in order: a session, the same origin and its CSRF token, and
/// not read-only.
async fn admin_action(
    state: &AppState,
    headers: &HeaderMap,
    csrf: &str,
) -> Result<Signed, Response> {
    let signed = session_or(state, headers, unauthorized).await?;
    if !same_origin(headers) || !csrf_matches(&signed.session, csrf) {
        return Err(forbidden("missing or wrong CSRF token"));
    }
    if signed.session.read_only {
        return Err(forbidden("a read-only session takes no action"));
    }
    Ok(signed)
}

/// `GET /dashboard/sign-in`
pub(crate) async fn sign_in_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match signed(&state, &headers).await {
        Ok(Some(_)) => see_other("/dashboard"),
        Ok(None) => page(
            StatusCode::OK,
            "dashboard/sign_in.html",
            minijinja::context! {},
        ),
        Err(e) => e.into_response(),
    }
}

#[derive(Deserialize)]
pub(crate) struct SignInForm {
    token: String,
}

/// `POST /dashboard/sign-in`
pub(crate) async fn sign_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<SignInForm>,
) -> Response {
    if !same_origin(&headers) {
        return forbidden("a sign-in from another origin");
    }
    let again = |status, error: &str| {
        page(
            status,
            "dashboard/sign_in.html",
            minijinja::context! { error => error },
        )
    };
    let token = match state.store().tokens().authenticate(form.token.trim()).await {
        Ok(token) => token,
        Err(e) => return ApiError::store(&e).into_response(),
    };
    let Some(token) = token.filter(|t| !t.is_expired(byok_store::now())) else {
        return again(
            StatusCode::UNAUTHORIZED,
            "Not a valid token (unknown, revoked or expired).",
        );
    };
    let read_only = if token.scopes.contains(Scope::Admin) {
        false
    } else if token.scopes.contains(Scope::DashboardRead) {
        true
    } else {
        return again(
            StatusCode::FORBIDDEN,
            "This token has neither the admin nor the dashboard:read scope.",
        );
    };
    let secret = random_text();
    let csrf = random_text();
    let id_sha256: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
    let created = state
        .store()
        .sessions()
        .create(
            &id_sha256,
            token.id,
            read_only,
            &csrf,
            byok_store::now() + SESSION_LIFETIME,
        )
        .await;
    if let Err(e) = created {
        return ApiError::store(&e).into_response();
    }
    tracing::info!(token.id = %token.id, read_only, "dashboard sign-in");
    let secure = if state
        .public_url()
        .is_some_and(|u| u.starts_with("https://"))
    {
        "; Secure"
    } else {
        ""
    };
    let mut response = see_other("/dashboard");
    let cookie = format!(
        "{COOKIE}={}; Path=/dashboard; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        &*secret,
        SESSION_LIFETIME.num_seconds()
    );
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// 32 random bytes as URL-safe text, wiped when dropped.
fn random_text() -> zeroize::Zeroizing<String> {
    let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
    // The OS generator does not fail on the platforms byok runs on; should it, the
    // all-zero value would be refused by nobody, so stop here instead.
    getrandom::fill(&mut bytes[..]).expect("the system random number generator works");
    zeroize::Zeroizing::new(URL_SAFE_NO_PAD.encode(&bytes[..]))
}

#[derive(Deserialize)]
pub(crate) struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /dashboard/sign-out`
pub(crate) async fn sign_out(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    let signed = match session_or(&state, &headers, to_sign_in).await {
        Ok(signed) => signed,
        Err(response) => return response,
    };
    if !same_origin(&headers) || !csrf_matches(&signed.session, &form.csrf) {
        return forbidden("missing or wrong CSRF token");
    }
    if let Err(e) = state.store().sessions().delete(&signed.id_sha256).await {
        return ApiError::store(&e).into_response();
    }
    let mut response = see_other("/dashboard/sign-in");
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "byok_session=; Path=/dashboard; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
    );
    response
}

/// `GET /dashboard`
pub(crate) async fn overview(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let signed = match session_or(&state, &headers, to_sign_in).await {
        Ok(signed) => signed,
        Err(response) => return response,
    };
    match overview_context(&state, &signed).await {
        Ok(context) => page(StatusCode::OK, "dashboard/overview.html", context),
        Err(e) => e.into_response(),
    }
}

/// `GET /dashboard/overview/live`: the overview's live part, for the page's script.
pub(crate) async fn overview_live(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let signed = match session_or(&state, &headers, unauthorized).await {
        Ok(signed) => signed,
        Err(response) => return response,
    };
    match overview_context(&state, &signed).await {
        Ok(context) => page(StatusCode::OK, "dashboard/overview_live.html", context),
        Err(e) => e.into_response(),
    }
}

/// No live session behind a fragment, file or action: 401 (the page's script goes to sign-in).
fn unauthorized() -> Response {
    let mut response = (StatusCode::UNAUTHORIZED, "sign in again").into_response();
    crate::pages::common_headers(&mut response, POLICY);
    response
}

/// `POST /dashboard/queues/retry-dead`: every dead item back to pending (admin).
pub(crate) async fn retry_dead(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    let signed = match admin_action(&state, &headers, &form.csrf).await {
        Ok(signed) => signed,
        Err(response) => return response,
    };
    match state.engine().retry_dead(None).await {
        Ok(n) => {
            tracing::info!(token.id = %signed.session.token_id, items = n, "dead items retried from the dashboard");
            see_other("/dashboard")
        }
        Err(e) => ApiError::internal(&e).into_response(),
    }
}

/// `GET /assets/dashboard.css`
pub(crate) async fn style() -> Response {
    crate::pages::asset("text/css; charset=utf-8", STYLE)
}

/// `GET /assets/dashboard.js`
pub(crate) async fn script() -> Response {
    crate::pages::asset("text/javascript; charset=utf-8", SCRIPT)
}

/// One minute's bar of the chart.
#[derive(Serialize, Default)]
struct Bar {
    x: u32,
    label: String,
    n_succeeded: u64,
    n_failed: u64,
    n_cancelled: u64,
    succeeded: u32,
    succeeded_y: u32,
    failed: u32,
    failed_y: u32,
    cancelled: u32,
    cancelled_y: u32,
}

const CHART_HEIGHT: u32 = 160;
const BAR_WIDTH: u32 = 9;

async fn overview_context(state: &AppState, signed: &Signed) -> Result<minijinja::Value, ApiError> {
    let now = Utc::now();
    let queue = state
        .engine()
        .stats()
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let start = minute_of(now) - TimeDelta::minutes(59);
    let ended = state
        .store()
        .jobs()
        .ended_per_minute(start)
        .await
        .map_err(|e| ApiError::store(&e))?;
    let failures = state
        .store()
        .jobs()
        .failures_since(now - TimeDelta::hours(1))
        .await
        .map_err(|e| ApiError::store(&e))?;
    let mut bars: Vec<Bar> = (0..60)
        .map(|i| Bar {
            x: i * (BAR_WIDTH + 1),
            label: (start + TimeDelta::minutes(i64::from(i)))
                .format("%H:%M")
                .to_string(),
            ..Bar::default()
        })
        .collect();
    let (mut succeeded, mut failed, mut cancelled) = (0u64, 0u64, 0u64);
    for (minute, status, n) in ended {
        let Ok(i) = usize::try_from((minute - start).num_minutes()) else {
            continue;
        };
        let Some(bar) = bars.get_mut(i) else { continue };
        match status {
            JobStatus::Succeeded => {
                bar.n_succeeded += n;
                succeeded += n;
            }
            JobStatus::Failed => {
                bar.n_failed += n;
                failed += n;
            }
            JobStatus::Cancelled => {
                bar.n_cancelled += n;
                cancelled += n;
            }
            _ => {}
        }
    }
    let peak = bars
        .iter()
        .map(|b| b.n_succeeded + b.n_failed + b.n_cancelled)
        .max()
        .unwrap_or(0)
        .max(1);
    let scale = |n: u64| u32::try_from(n * u64::from(CHART_HEIGHT) / peak).unwrap_or(CHART_HEIGHT);
    for bar in &mut bars {
        bar.succeeded = scale(bar.n_succeeded);
        bar.failed = scale(bar.n_failed);
        bar.cancelled = scale(bar.n_cancelled);
        bar.succeeded_y = CHART_HEIGHT - bar.succeeded;
        bar.failed_y = bar.succeeded_y.saturating_sub(bar.failed);
        bar.cancelled_y = bar.failed_y.saturating_sub(bar.cancelled);
    }
    let failures: Vec<_> = failures
        .into_iter()
        .map(|(code, jobs)| minijinja::context! { code => code, jobs => jobs })
        .collect();
    let oldest_pending = duration_text(queue.oldest_pending_seconds);
    Ok(minijinja::context! {
        page => "overview",
        session => signed.view(),
        queue => queue,
        oldest_pending => oldest_pending,
        chart => minijinja::context! {
            width => 60 * (BAR_WIDTH + 1),
            height => CHART_HEIGHT,
            bar_width => BAR_WIDTH,
            bars => bars,
            peak => if succeeded + failed + cancelled == 0 { 0 } else { peak },
        },
        totals => minijinja::context! { succeeded => succeeded, failed => failed, cancelled => cancelled },
        failures => failures,
        now => now.format("%H:%M:%S").to_string(),
    })
}

fn minute_of(at: DateTime<Utc>) -> DateTime<Utc> {
    at.with_second(0)
        .and_then(|t| t.with_nanosecond(0))
        .unwrap_or(at)
}

fn duration_text(seconds: u64) -> String {
    match seconds {
        0 => "—".into(),
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s => format!("{} h", s / 3600),
    }
}

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
    let uuid = |text: &str, what: &str| -> Result<Option<uuid::Uuid>, String> {
        match text.trim() {
            "" => Ok(None),
            t => t
                .parse()
                .map(Some)
                .map_err(|_| format!("{what}: not an id")),
        }
    };
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
        project_id: uuid(&query.project, "project")?,
        user_id: uuid(&query.user, "user")?,
        error_code: text(&query.code),
        since,
        before: uuid(&query.before, "before")?,
    })
}

/// `GET /dashboard/jobs`
pub(crate) async fn jobs(
    State(state): State<AppState>,
    headers: HeaderMap,
    axum::extract::Query(query): axum::extract::Query<JobsQuery>,
) -> Response {
    let signed = match session_or(&state, &headers, to_sign_in).await {
        Ok(signed) => signed,
        Err(response) => return response,
    };
    // An id searched for: its page.
    if let Ok(id) = query.q.trim().parse::<uuid::Uuid>() {
        let mut response = StatusCode::SEE_OTHER.into_response();
        if let Ok(to) = HeaderValue::from_str(&format!("/dashboard/jobs/{id}")) {
            response.headers_mut().insert(header::LOCATION, to);
        }
        return response;
    }
    let projects = match state.store().projects().list().await {
        Ok(projects) => projects,
        Err(e) => return ApiError::store(&e).into_response(),
    };
    let name_of = |id: uuid::Uuid| {
        projects
            .iter()
            .find(|p| p.id == id)
            .map_or_else(|| id.to_string(), |p| p.name.clone())
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
            let mut url = url::Url::parse("http://dashboard/dashboard/jobs").expect("a valid URL");
            {
                let mut pairs = url.query_pairs_mut();
                for (name, value) in [
                    ("status", &query.status),
                    ("provider", &query.provider),
                    ("project", &query.project),
                    ("user", &query.user),
                    ("code", &query.code),
                    ("since", &query.since),
                ] {
                    if !value.is_empty() {
                        pairs.append_pair(name, value);
                    }
                }
                pairs.append_pair("before", &last.to_string());
            }
            format!("{}?{}", url.path(), url.query().unwrap_or_default())
        });
    let rows: Vec<_> = found
        .iter()
        .map(|j| {
            serde_json::json!({
                "id": j.id.to_string(),
                "created": j.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                "project": name_of(j.project_id),
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
    let projects_view: Vec<_> = projects
        .iter()
        .map(|p| serde_json::json!({ "id": p.id.to_string(), "name": p.name }))
        .collect();
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
            projects => minijinja::Value::from_serialize(&projects_view),
            filter => minijinja::context! {
                q => query.q, status => query.status, provider => query.provider,
                project => query.project, user => query.user, code => query.code,
                since => query.since,
            },
        },
    )
}

/// The job of the path, any project's (operators see every project).
async fn job_of(state: &AppState, id: &str) -> Result<Option<byok_store::Job>, ApiError> {
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
    axum::extract::Path(id): axum::extract::Path<String>,
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
    let time = |t: DateTime<Utc>| t.format("%Y-%m-%d %H:%M:%S").to_string();
    let project = project
        .iter()
        .find(|p| p.id == job.project_id)
        .map_or_else(|| job.project_id.to_string(), |p| p.name.clone());
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
        },
    )
}

/// `GET /dashboard/jobs/{id}/video`
pub(crate) async fn job_video(
    State(state): State<AppState>,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<String>,
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
    axum::extract::Path(id): axum::extract::Path<String>,
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
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(to) = HeaderValue::from_str(&format!("/dashboard/jobs/{job_id}")) {
        response.headers_mut().insert(header::LOCATION, to);
    }
    response
}
