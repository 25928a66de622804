//! Budgets (docs/budgets.md): the project's own and each user's limits, read with the
//! current period's standing (`usage:read`), replaced or removed (`budgets:write`). The
//! workers enforce them; the enqueue check is in `jobs.rs`.

use std::collections::HashSet;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use byok_budgets::{BudgetError, Refusal};
use byok_core::{BudgetView, MAX_BUDGET_LIMITS, PutBudget, Usd};
use serde_json::json;
use uuid::Uuid;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiErrorCode};
use crate::extract::{ApiJson, UserPath};

/// `GET /v1/budget`
#[utoipa::path(
    get,
    path = "/v1/budget",
    operation_id = "get_budget",
    summary = "The project's budget",
    tag = "budgets",
    responses((status = 200, description = "The project's own limits (not its users'), each with the current period's spent, reserved and remaining amounts. No limits: an empty list", body = BudgetView)),
)]
pub(crate) async fn project(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<BudgetView>, ApiError> {
    view(&state, &caller, None).await
}

/// `GET /v1/users/{user_id}/budget`
#[utoipa::path(
    get,
    path = "/v1/users/{user_id}/budget",
    operation_id = "get_user_budget",
    summary = "A user's budget",
    tag = "budgets",
    params(("user_id" = Uuid, Path, description = "The user (a UUID; anything else is a 400)", example = json!(crate::openapi::EXAMPLE_USER_ID))),
    responses((status = 200, description = "The user's limits with their standing (the project's limits apply too: `GET /v1/budget`)", body = BudgetView)),
)]
pub(crate) async fn user(
    State(state): State<AppState>,
    caller: Caller,
    UserPath(user): UserPath,
) -> Result<Json<BudgetView>, ApiError> {
    view(&state, &caller, Some(user.0)).await
}

/// `PUT /v1/budget`
#[utoipa::path(
    put,
    path = "/v1/budget",
    operation_id = "put_budget",
    summary = "Set the project's budget",
    tag = "budgets",
    request_body = PutBudget,
    responses((status = 200, description = "The limits now in force (the whole set was replaced), with their standing. A period's spent amount survives a change of its limit", body = BudgetView)),
)]
pub(crate) async fn put_project(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<PutBudget>,
) -> Result<Json<BudgetView>, ApiError> {
    put(&state, &caller, None, body).await
}

/// `PUT /v1/users/{user_id}/budget`
#[utoipa::path(
    put,
    path = "/v1/users/{user_id}/budget",
    operation_id = "put_user_budget",
    summary = "Set a user's budget",
    tag = "budgets",
    params(("user_id" = Uuid, Path, description = "The user (a UUID; anything else is a 400)", example = json!(crate::openapi::EXAMPLE_USER_ID))),
    request_body = PutBudget,
    responses((status = 200, description = "The user's limits now in force, with their standing", body = BudgetView)),
)]
pub(crate) async fn put_user(
    State(state): State<AppState>,
    caller: Caller,
    UserPath(user): UserPath,
    ApiJson(body): ApiJson<PutBudget>,
) -> Result<Json<BudgetView>, ApiError> {
    put(&state, &caller, Some(user.0), body).await
}

/// `DELETE /v1/budget`
#[utoipa::path(
    delete,
    path = "/v1/budget",
    operation_id = "delete_budget",
    summary = "Remove the project's budget",
    tag = "budgets",
    responses((status = 204, description = "The project's own limits are gone (its users' stay)")),
)]
pub(crate) async fn delete_project(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<StatusCode, ApiError> {
    remove(&state, &caller, None).await
}

/// `DELETE /v1/users/{user_id}/budget`
#[utoipa::path(
    delete,
    path = "/v1/users/{user_id}/budget",
    operation_id = "delete_user_budget",
    summary = "Remove a user's budget",
    tag = "budgets",
    params(("user_id" = Uuid, Path, description = "The user (a UUID; anything else is a 400)", example = json!(crate::openapi::EXAMPLE_USER_ID))),
    responses((status = 204, description = "The user's limits are gone")),
)]
pub(crate) async fn delete_user(
    State(state): State<AppState>,
    caller: Caller,
    UserPath(user): UserPath,
) -> Result<StatusCode, ApiError> {
    remove(&state, &caller, Some(user.0)).await
}

async fn view(
    state: &AppState,
    caller: &Caller,
    user: Option<Uuid>,
) -> Result<Json<BudgetView>, ApiError> {
    let view = state
        .budgets()
        .view(caller.project_id(), user)
        .await
        .map_err(|e| budget_error(&e))?;
    Ok(Json(view))
}

async fn put(
    state: &AppState,
    caller: &Caller,
    user: Option<Uuid>,
    body: PutBudget,
) -> Result<Json<BudgetView>, ApiError> {
    check_limits(state, &body)?;
    let view = state
        .budgets()
        .set(caller.project_id(), user, &body.limits)
        .await
        .map_err(|e| budget_error(&e))?;
    tracing::info!(user.id = ?user, limits = body.limits.len(), "budget set");
    Ok(Json(view))
}

async fn remove(
    state: &AppState,
    caller: &Caller,
    user: Option<Uuid>,
) -> Result<StatusCode, ApiError> {
    state
        .budgets()
        .set(caller.project_id(), user, &[])
        .await
        .map_err(|e| budget_error(&e))?;
    Ok(StatusCode::NO_CONTENT)
}

/// Each limit names a provider this installation offers (or none), a non-negative amount,
/// and a provider and period no other limit of the set has.
fn check_limits(state: &AppState, body: &PutBudget) -> Result<(), ApiError> {
    let invalid = |field: String, message: String| {
        ApiError::new(ApiErrorCode::InvalidRequest, message).with_details(json!({ "field": field }))
    };
    if body.limits.len() > MAX_BUDGET_LIMITS {
        return Err(invalid(
            "limits".into(),
            format!("at most {MAX_BUDGET_LIMITS} limits"),
        ));
    }
    let mut seen = HashSet::new();
    for (i, limit) in body.limits.iter().enumerate() {
        if limit.limit_usd < Usd::ZERO {
            return Err(invalid(
                format!("limits[{i}].limit_usd"),
                "a limit cannot be negative".into(),
            ));
        }
        if let Some(provider) = limit.provider
            && state.providers().get(provider).is_none()
        {
            return Err(invalid(
                format!("limits[{i}].provider"),
                crate::extract::not_offered(state, provider),
            ));
        }
        if !seen.insert((limit.provider, limit.period)) {
            return Err(invalid(
                format!("limits[{i}]"),
                "another limit has the same provider (or none) and period".into(),
            ));
        }
    }
    Ok(())
}

/// A budget failure as an API error: a refusal is 422 `budget_exceeded` naming the limit
/// and what it has left.
pub(crate) fn budget_error(error: &BudgetError) -> ApiError {
    match error {
        BudgetError::Exceeded(refusal) => refused(refusal),
        BudgetError::Store(e) => ApiError::store(e),
        BudgetError::Redis(_) => {
            tracing::warn!(error = %error, "budget ledger unavailable");
            ApiError::new(
                ApiErrorCode::ServiceUnavailable,
                "the budget ledger is unavailable; retry later",
            )
        }
    }
}

fn refused(refusal: &Refusal) -> ApiError {
    ApiError::new(ApiErrorCode::BudgetExceeded, refusal.to_string()).with_details(json!({
        "budget": {
            "user_id": refusal.user_id,
            "provider": refusal.provider,
            "period": refusal.period,
            "limit_usd": refusal.limit,
        },
        "remaining_usd": refusal.remaining,
        "estimated_cost_usd": refusal.estimate,
    }))
}
