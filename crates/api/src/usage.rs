//! Usage: what the project's (or one user's) ended jobs made and cost, summed by provider,
//! model, day or user (docs/usage.md). The rows are written by the jobs' final transitions;
//! this only reads them. Scope `usage:read`.

use axum::Json;
use axum::extract::{Query, State};
use byok_core::{UsageGroupBy, UsageReport, UsageTotals};
use byok_core::{parse_usage_time as parse_time, usage_month_start as start_of_month};
use byok_store::UsageQuery;
use chrono::Utc;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::UserPath;

/// The longest span one report covers: a bound on the rows a request makes the database
/// sum.
const MAX_SPAN_DAYS: i64 = 366;

/// Query of the usage routes, checked by hand so that every bad value is a 400 naming it.
#[derive(Debug, Deserialize)]
pub(crate) struct RawUsageQuery {
    from: Option<String>,
    to: Option<String>,
    group_by: Option<String>,
}

/// `GET /v1/usage?from=&to=&group_by=`
#[utoipa::path(
    get,
    path = "/v1/usage",
    operation_id = "get_usage",
    summary = "The project's usage and estimated spend",
    tag = "usage",
    params(
        ("from" = Option<String>, Query, description = "Jobs that ended at or after this time: RFC 3339 (`2026-12-01T00:00:00Z`) or a day (`2026-12-01`, its start in UTC). Default: the start of the current month (UTC)"),
        ("to" = Option<String>, Query, description = "… and before this one, in the same forms (a day means its start). Default: now. At most 366 days after `from`"),
        ("group_by" = Option<UsageGroupBy>, Query, description = "`provider` (default), `model`, `day` (UTC) or `user`"),
    ),
    responses((status = 200, description = "The sums of the jobs that ended in the span, per group and in total. Costs are estimates from list prices fixed when each job was enqueued; `jobs_cost_unknown` counts the jobs whose cost is not known", body = UsageReport)),
)]
pub(crate) async fn project(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<RawUsageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<UsageReport>, ApiError> {
    report(&state, &caller, None, query).await
}

/// `GET /v1/users/{user_id}/usage?from=&to=&group_by=`
#[utoipa::path(
    get,
    path = "/v1/users/{user_id}/usage",
    operation_id = "get_user_usage",
    summary = "A user's usage and estimated spend",
    tag = "usage",
    params(
        ("user_id" = Uuid, Path, description = "The user (a UUID; anything else is a 400)", example = json!(crate::openapi::EXAMPLE_USER_ID)),
        ("from" = Option<String>, Query, description = "As for `GET /v1/usage`"),
        ("to" = Option<String>, Query, description = "As for `GET /v1/usage`"),
        ("group_by" = Option<UsageGroupBy>, Query, description = "As for `GET /v1/usage`"),
    ),
    responses((status = 200, description = "The user's sums (no jobs: every total 0)", body = UsageReport)),
)]
pub(crate) async fn user(
    State(state): State<AppState>,
    caller: Caller,
    UserPath(user): UserPath,
    query: Result<Query<RawUsageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<UsageReport>, ApiError> {
    report(&state, &caller, Some(user.0), query).await
}

async fn report(
    state: &AppState,
    caller: &Caller,
    user_id: Option<Uuid>,
    query: Result<Query<RawUsageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<UsageReport>, ApiError> {
    let Query(raw) = query.map_err(|_| ApiError::bad_request("invalid query string"))?;
    let field = |name: &str, message: &str| {
        ApiError::bad_request(message.to_owned()).with_details(json!({ "field": name }))
    };
    let now = Utc::now();
    let to = match raw.to.as_deref() {
        None => now,
        Some(text) => parse_time(text).ok_or_else(|| {
            field(
                "to",
                "to must be an RFC 3339 time (2026-12-01T00:00:00Z) or a day (2026-12-01)",
            )
        })?,
    };
    let from = match raw.from.as_deref() {
        None => start_of_month(to),
        Some(text) => parse_time(text).ok_or_else(|| {
            field(
                "from",
                "from must be an RFC 3339 time (2026-12-01T00:00:00Z) or a day (2026-12-01)",
            )
        })?,
    };
    if from >= to {
        return Err(field("from", "from must be before to"));
    }
    if to - from > chrono::Duration::days(MAX_SPAN_DAYS) {
        return Err(field("to", "a report covers at most 366 days"));
    }
    let group_by = match raw.group_by.as_deref() {
        None => UsageGroupBy::default(),
        Some(text) => text.parse().map_err(|()| {
            field(
                "group_by",
                "group_by must be one of provider, model, day, user",
            )
        })?,
    };
    let groups = state
        .store()
        .usage()
        .summary(&UsageQuery {
            project_id: Some(caller.project_id()),
            user_id,
            from,
            to,
            group_by,
        })
        .await
        .map_err(|e| ApiError::store(&e))?;
    let total = groups
        .iter()
        .fold(UsageTotals::default(), |sum, g| sum.plus(g.totals));
    Ok(Json(UsageReport {
        from,
        to,
        user_id,
        group_by,
        total,
        groups,
    }))
}
