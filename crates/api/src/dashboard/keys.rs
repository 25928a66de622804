//! The keys page: per stored key (a user's, at one provider) its summary — hint, validity,
//! last check and error — beside its standing in the rate limiter: submits in each window
//! against the provider's quota, submits in flight, and the provider's block. Key material
//! never reaches this page: the store's sealed text is not even read into the view.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use byok_ratelimit::{KeyState, LimitKey};
use byok_store::{CredentialFilter, StoredCredential};
use chrono::{TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use super::{Projects, filter_id, next_page, page, session_or, time_text, to_sign_in};
use crate::AppState;
use crate::error::ApiError;

/// How many keys a page shows.
const KEYS_PER_PAGE: u32 = 100;

#[derive(Deserialize, Default)]
pub(crate) struct KeysQuery {
    #[serde(default)]
    project: String,
    #[serde(default)]
    user: String,
    #[serde(default)]
    provider: String,
    #[serde(default)]
    after: String,
}

/// One key as the page shows it.
#[derive(Serialize)]
struct KeyView {
    project: String,
    user_id: String,
    provider: String,
    hint: Option<String>,
    valid: bool,
    validated: Option<String>,
    last_error: Option<String>,
    /// `None`: the limiter could not be read (its state is shown as unknown).
    limiter: Option<LimiterView>,
    per_minute: Option<u32>,
    per_hour: Option<u32>,
}

#[derive(Serialize)]
struct LimiterView {
    in_minute: u64,
    in_hour: u64,
    in_flight: u64,
    blocked_until: Option<String>,
    blocked_seconds: Option<u64>,
}

impl From<KeyState> for LimiterView {
    fn from(state: KeyState) -> Self {
        let blocked_until = state.blocked_for.and_then(|d| {
            TimeDelta::from_std(d)
                .ok()
                .map(|d| time_text(Utc::now() + d))
        });
        LimiterView {
            in_minute: state.in_short_window,
            in_hour: state.in_long_window,
            in_flight: state.in_flight,
            blocked_until,
            blocked_seconds: state.blocked_for.map(|d| d.as_secs().max(1)),
        }
    }
}

/// Reads the filters; the first bad value is an error to show.
fn key_filter(query: &KeysQuery) -> Result<(CredentialFilter, Option<uuid::Uuid>), String> {
    let provider = Some(query.provider.trim().to_owned()).filter(|p| !p.is_empty());
    Ok((
        CredentialFilter {
            project_id: filter_id(&query.project, "project")?,
            user_id: filter_id(&query.user, "user")?,
            provider,
        },
        filter_id(&query.after, "after")?,
    ))
}

/// `GET /dashboard/keys`
pub(crate) async fn keys(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<KeysQuery>,
) -> Response {
    let signed = match session_or(&state, &headers, to_sign_in).await {
        Ok(signed) => signed,
        Err(response) => return response,
    };
    let projects = match Projects::load(&state).await {
        Ok(projects) => projects,
        Err(e) => return e.into_response(),
    };
    let (found, error) = match key_filter(&query) {
        Ok((filter, after)) => match state
            .store()
            .credentials()
            .search(&filter, after, KEYS_PER_PAGE)
            .await
        {
            Ok(found) => (found, None),
            Err(e) => return ApiError::store(&e).into_response(),
        },
        Err(why) => (Vec::new(), Some(why)),
    };
    // One limiter read per key, all at once (one pipelined round trip on Redis).
    let standings = futures::future::join_all(found.iter().map(|c| standing(&state, c))).await;
    if standings.iter().any(|s| s.is_err()) {
        tracing::warn!("the rate limiter could not be read for the dashboard's keys page");
    }
    let rows: Vec<KeyView> = found
        .iter()
        .zip(standings)
        .map(|(c, standing)| {
            let pacing = c.provider().and_then(|p| state.providers().pacing(p));
            KeyView {
                project: projects.name(c.project_id),
                user_id: c.user_id.to_string(),
                provider: c.provider_name.clone(),
                hint: c.credential_hint.clone(),
                valid: c.is_valid,
                validated: c.validated_at.map(time_text),
                last_error: c.last_error.clone(),
                limiter: standing.ok().flatten().map(LimiterView::from),
                per_minute: pacing.map(|p| p.rate_limits.per_minute),
                per_hour: pacing.map(|p| p.rate_limits.per_hour),
            }
        })
        .collect();
    let next = (found.len() == KEYS_PER_PAGE as usize)
        .then(|| found.last().map(|c| c.id))
        .flatten()
        .map(|last| {
            let filters = [
                ("project", query.project.as_str()),
                ("user", &query.user),
                ("provider", &query.provider),
            ];
            next_page("/dashboard/keys", &filters, ("after", last))
        });
    let providers: Vec<&str> = state.providers().all().map(|a| a.id().as_str()).collect();
    page(
        StatusCode::OK,
        "dashboard/keys.html",
        minijinja::context! {
            page => "keys",
            session => signed.view(),
            keys => minijinja::Value::from_serialize(&rows),
            next => next,
            error => error,
            providers => providers,
            projects => projects.choices(),
            filter => minijinja::context! {
                project => query.project, user => query.user, provider => query.provider,
            },
        },
    )
}

/// The key's standing in the limiter; `Ok(None)` for a provider this build does not run.
async fn standing(
    state: &AppState,
    credential: &StoredCredential,
) -> Result<Option<KeyState>, byok_ratelimit::RateLimitError> {
    let Some(provider) = credential.provider() else {
        return Ok(None);
    };
    let key = LimitKey::new(provider, credential.owner());
    state.limiter().inspect(&key).await.map(Some)
}
