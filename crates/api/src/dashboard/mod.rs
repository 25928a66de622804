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
use axum::extract::{FromRequest as _, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use byok_core::Scope;
use byok_store::Session;
use chrono::TimeDelta;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::AppState;
use crate::error::ApiError;

mod jobs;
mod keys;
mod overview;
mod queues;

pub(crate) use jobs::{cancel_job, job, job_video, jobs, retry_job};
pub(crate) use keys::keys;
pub(crate) use overview::{overview, overview_live};
pub(crate) use queues::{purge, queues, retry_dead, retry_items};

const COOKIE: &str = "byok_session";
const SESSION_LIFETIME: TimeDelta = TimeDelta::hours(12);
const STYLE: &str = include_str!("../../assets/dashboard.css");
const SCRIPT: &str = include_str!("../../assets/dashboard.js");
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

/// 303 to a path made here (ids, fixed words): always a valid header value.
fn see_other_to(to: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(to) = HeaderValue::from_str(to) {
        response.headers_mut().insert(header::LOCATION, to);
    }
    response
}

/// An id typed into a filter: empty is none, anything else must be an id (else the error to
/// show, naming the filter).
fn filter_id(text: &str, what: &str) -> Result<Option<uuid::Uuid>, String> {
    match text.trim() {
        "" => Ok(None),
        t => t
            .parse()
            .map(Some)
            .map_err(|_| format!("{what}: not an id")),
    }
}

/// The link to a list's next page: `path` with the filters that are set and the cursor.
fn next_page(path: &str, filters: &[(&str, &str)], cursor: (&str, uuid::Uuid)) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in filters {
        if !value.is_empty() {
            query.append_pair(name, value);
        }
    }
    query.append_pair(cursor.0, &cursor.1.to_string());
    format!("{path}?{}", query.finish())
}

/// Every project, for a page's names and its project filter.
struct Projects(Vec<byok_store::Project>);

impl Projects {
    async fn load(state: &AppState) -> Result<Projects, ApiError> {
        state
            .store()
            .projects()
            .list()
            .await
            .map(Projects)
            .map_err(|e| ApiError::store(&e))
    }

    /// The project's name (its id when it has none any more).
    fn name(&self, id: uuid::Uuid) -> String {
        self.0
            .iter()
            .find(|p| p.id == id)
            .map_or_else(|| id.to_string(), |p| p.name.clone())
    }

    /// The filter's choices.
    fn choices(&self) -> minijinja::Value {
        let choices: Vec<_> = self
            .0
            .iter()
            .map(|p| serde_json::json!({ "id": p.id.to_string(), "name": p.name }))
            .collect();
        minijinja::Value::from_serialize(&choices)
    }
}

/// A time as the pages show it (UTC).
fn time_text(at: chrono::DateTime<chrono::Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// An action refused for a reason the operator can act on: a page saying why, with the
/// way back.
fn refused(status: StatusCode, title: &str, why: &str, back: &str) -> Response {
    page(
        status,
        "dashboard/refused.html",
        minijinja::context! { title => title, why => why, back => back },
    )
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

/// `POST /dashboard/sign-in`. A wrong token counts as a failed authentication of its address,
/// as on `/v1`: past `api.auth_failure_limit` the address gets 429 before any lookup, so the
/// sign-in form is no way around the API's guard against guessing tokens.
pub(crate) async fn sign_in(State(state): State<AppState>, request: Request) -> Response {
    let edge = state.edge();
    let client = edge.client_of(&request);
    if let Some(refused) = edge.refused_client(client) {
        return refused;
    }
    let headers = request.headers().clone();
    if !same_origin(&headers) {
        return forbidden("a sign-in from another origin");
    }
    let Form(form) = match Form::<SignInForm>::from_request(request, &state).await {
        Ok(form) => form,
        Err(rejection) => return rejection.into_response(),
    };
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
        return edge.note_failure(client).unwrap_or_else(|| {
            again(
                StatusCode::UNAUTHORIZED,
                "Not a valid token (unknown, revoked or expired).",
            )
        });
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

/// No live session behind a fragment, file or action: 401 (the page's script goes to sign-in).
fn unauthorized() -> Response {
    let mut response = (StatusCode::UNAUTHORIZED, "sign in again").into_response();
    crate::pages::common_headers(&mut response, POLICY);
    response
}

/// `GET /assets/dashboard.css`
pub(crate) async fn style() -> Response {
    crate::pages::asset("text/css; charset=utf-8", STYLE)
}

/// `GET /assets/dashboard.js`
pub(crate) async fn script() -> Response {
    crate::pages::asset("text/javascript; charset=utf-8", SCRIPT)
}
