//! Users' provider credentials: store (after a key check), list, test, delete.
//!
//! Plaintext credentials exist only between parsing a request body and
//! sealing, and between opening a stored value and the provider call; the
//! store, the responses and the logs see sealed text and hints only.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use byok_core::{
    CredentialCheckOutcome, CredentialCheckResult, CredentialList, CredentialSummary,
    CredentialTest, ProjectUser, ProviderId, PutCredentials,
};
use byok_crypto::SealContext;
use byok_providers::{CredentialCheck, open_credentials, wipe_json};
use byok_store::{CheckRecord, NewCredential, StoredCredential};
use serde_json::json;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiErrorCode};
use crate::extract::{ApiJson, UserPath, UserProviderPath};

/// The summary of a stored key. (The bodies, `PutCredentials`, `CredentialSummary`,
/// `CredentialList` and `CredentialTest`, are `byok-core`'s, which clients share.)
fn summary_of(provider: ProviderId, row: &StoredCredential) -> CredentialSummary {
    CredentialSummary {
        provider: provider.to_string(),
        connected: true,
        is_valid: row.is_valid,
        credential_hint: row.credential_hint.clone(),
        validated_at: row.validated_at,
        last_error: row.last_error.clone(),
        created_at: Some(row.created_at),
        updated_at: Some(row.updated_at),
    }
}

/// `PUT /v1/users/{user_id}/providers/{provider}/credentials`
#[utoipa::path(
    put,
    path = "/v1/users/{user_id}/providers/{provider}/credentials",
    operation_id = "put_credentials",
    summary = "Store a user's key for a provider",
    tag = "credentials",
    params(
        ("user_id" = uuid::Uuid, Path, description = "The user (a UUID; anything else is a 400)", example = json!(crate::openapi::EXAMPLE_USER_ID)),
        ("provider" = ProviderId, Path, description = "The provider (an unknown one is a 404)"),
    ),
    request_body(content = PutCredentials, content_type = "application/json"),
    responses((
        status = 200,
        description = "Checked with the provider (unless `validate` is false), sealed bound \
            to the user and provider, and stored, replacing any earlier key",
        body = CredentialSummary,
    )),
)]
pub(crate) async fn put(
    State(state): State<AppState>,
    caller: Caller,
    UserProviderPath(user, provider): UserProviderPath,
    ApiJson(mut body): ApiJson<PutCredentials>,
) -> Result<Json<CredentialSummary>, ApiError> {
    let adapter = crate::extract::adapter(&state, provider.0)?;
    let parsed = adapter.parse_credentials(&body.credentials);
    wipe_json(&mut body.credentials);
    let credentials = parsed.map_err(|e| {
        ApiError::new(ApiErrorCode::InvalidRequest, format!("credentials.{e}"))
            .with_details(json!({ "field": format!("credentials.{}", e.field) }))
    })?;

    let validated_at = if body.validate {
        match adapter.check_credentials(&credentials).await {
            CredentialCheck::Valid => Some(byok_store::now()),
            CredentialCheck::Rejected { reason } => {
                return Err(ApiError::new(
                    ApiErrorCode::CredentialsInvalid,
                    format!("the provider rejected the credentials; nothing was stored: {reason}"),
                )
                .with_details(json!({ "provider": provider.0, "provider_reason": reason })));
            }
            CredentialCheck::Unavailable { reason } => {
                return Err(provider_unavailable(
                    provider.0,
                    &reason,
                    "nothing was stored; retry, or send \"validate\": false to store without a check",
                ));
            }
        }
    } else {
        None
    };

    let owner = caller.user(user.0);
    let context = SealContext::new(owner, provider.0);
    let sealed = state
        .key_ring()
        .seal(&context, &credentials.to_plaintext())
        .map_err(|e| ApiError::internal(&e))?;
    state.keys_changed(owner);
    let stored = state
        .store()
        .credentials()
        .upsert(&NewCredential {
            owner,
            provider: provider.0,
            sealed,
            credential_hint: credentials.hint(),
            validated_at,
        })
        .await
        .map_err(|e| ApiError::store(&e))?;
    tracing::info!(user.id = %user.0, provider = %provider.0, validated = body.validate, "credentials stored");
    Ok(Json(summary_of(provider.0, &stored)))
}

/// `GET /v1/users/{user_id}/providers`: one summary per provider, connected or not.
#[utoipa::path(
    get,
    path = "/v1/users/{user_id}/providers",
    operation_id = "list_credentials",
    summary = "Summarise a user's keys, one per provider",
    tag = "credentials",
    params(
        ("user_id" = uuid::Uuid, Path, description = "The user (a UUID; anything else is a 400)", example = json!(crate::openapi::EXAMPLE_USER_ID)),
    ),
    responses((status = 200, description = "One summary per provider", body = CredentialList)),
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    UserPath(user): UserPath,
) -> Result<Json<CredentialList>, ApiError> {
    let rows = state
        .store()
        .credentials()
        .list_for_user(caller.user(user.0))
        .await
        .map_err(|e| ApiError::store(&e))?;
    let summaries: Vec<CredentialSummary> = state
        .providers()
        .all()
        .map(|adapter| adapter.id())
        .map(|p| match rows.iter().find(|r| r.provider() == Some(p)) {
            Some(row) => summary_of(p, row),
            None => CredentialSummary::not_connected(p.as_str()),
        })
        .collect();
    Ok(Json(CredentialList {
        user_id: user.0,
        providers: summaries,
    }))
}

/// `GET /v1/users/{user_id}/providers/{provider}`: 404 when none is stored.
#[utoipa::path(
    get,
    path = "/v1/users/{user_id}/providers/{provider}",
    operation_id = "get_credentials",
    summary = "Summarise a user's key for a provider",
    tag = "credentials",
    params(
        ("user_id" = uuid::Uuid, Path, description = "The user (a UUID; anything else is a 400)", example = json!(crate::openapi::EXAMPLE_USER_ID)),
        ("provider" = ProviderId, Path, description = "The provider (an unknown one is a 404)"),
    ),
    responses((status = 200, description = "The stored key's summary", body = CredentialSummary)),
)]
pub(crate) async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    UserProviderPath(user, provider): UserProviderPath,
) -> Result<Json<CredentialSummary>, ApiError> {
    let row = load(&state, caller.user(user.0), provider.0).await?;
    Ok(Json(summary_of(provider.0, &row)))
}

/// `DELETE /v1/users/{user_id}/providers/{provider}`: 204, or 404 when none is stored.
#[utoipa::path(
    delete,
    path = "/v1/users/{user_id}/providers/{provider}",
    operation_id = "delete_credentials",
    summary = "Delete a user's key for a provider",
    tag = "credentials",
    params(
        ("user_id" = uuid::Uuid, Path, description = "The user (a UUID; anything else is a 400)", example = json!(crate::openapi::EXAMPLE_USER_ID)),
        ("provider" = ProviderId, Path, description = "The provider (an unknown one is a 404)"),
    ),
    responses((status = 204, description = "The sealed key is deleted")),
)]
pub(crate) async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    UserProviderPath(user, provider): UserProviderPath,
) -> Result<StatusCode, ApiError> {
    let deleted = state
        .store()
        .credentials()
        .delete(caller.user(user.0), provider.0)
        .await
        .map_err(|e| ApiError::store(&e))?;
    state.keys_changed(caller.user(user.0));
    if deleted {
        tracing::info!(user.id = %user.0, provider = %provider.0, "credentials deleted");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(no_credentials(provider.0))
    }
}

/// `POST /v1/users/{user_id}/providers/{provider}/test`: re-checks the
/// stored key with the provider and records the verdict.
#[utoipa::path(
    post,
    path = "/v1/users/{user_id}/providers/{provider}/test",
    operation_id = "test_credentials",
    summary = "Re-check a user's stored key with the provider",
    tag = "credentials",
    params(
        ("user_id" = uuid::Uuid, Path, description = "The user (a UUID; anything else is a 400)", example = json!(crate::openapi::EXAMPLE_USER_ID)),
        ("provider" = ProviderId, Path, description = "The provider (an unknown one is a 404)"),
    ),
    responses((
        status = 200,
        description = "The verdict (`check`) beside the summary it updated (`is_valid`, \
            `last_error`, `validated_at`). A stored value that does not open for this user and \
            provider is `unreadable` and is never sent anywhere",
        body = CredentialTest,
    )),
)]
pub(crate) async fn test(
    State(state): State<AppState>,
    caller: Caller,
    UserProviderPath(user, provider): UserProviderPath,
) -> Result<Json<CredentialTest>, ApiError> {
    let owner = caller.user(user.0);
    let row = load(&state, owner, provider.0).await?;
    let adapter = crate::extract::adapter(&state, provider.0)?;

    let opened = open_credentials(state.key_ring(), adapter.as_ref(), owner, &row.sealed);
    let (record, outcome) = match opened.map_err(|e| e.to_string()) {
        Err(reason) => {
            // A value that does not open for its own row was altered or
            // moved here from another row. It is never sent anywhere.
            tracing::warn!(user.id = %user.0, provider = %provider.0, reason = %reason, "stored credential is unreadable");
            (
                CheckRecord {
                    is_valid: false,
                    last_error: Some(format!("credentials_unreadable: {reason}")),
                    validated_at: None,
                },
                CredentialCheckOutcome {
                    result: CredentialCheckResult::Unreadable,
                    reason: Some(reason),
                },
            )
        }
        Ok(credentials) => match adapter.check_credentials(&credentials).await {
            CredentialCheck::Valid => (
                CheckRecord {
                    is_valid: true,
                    last_error: None,
                    validated_at: Some(byok_store::now()),
                },
                CredentialCheckOutcome {
                    result: CredentialCheckResult::Valid,
                    reason: None,
                },
            ),
            CredentialCheck::Rejected { reason } => (
                CheckRecord {
                    is_valid: false,
                    last_error: Some(reason.clone()),
                    validated_at: None,
                },
                CredentialCheckOutcome {
                    result: CredentialCheckResult::Rejected,
                    reason: Some(reason),
                },
            ),
            CredentialCheck::Unavailable { reason } => {
                return Err(provider_unavailable(
                    provider.0,
                    &reason,
                    "the stored credential was not changed",
                ));
            }
        },
    };

    let updated = state
        .store()
        .credentials()
        .record_check(owner, provider.0, &row.sealed, &record)
        .await
        .inspect(|_| state.keys_changed(owner))
        .map_err(|e| ApiError::store(&e))?
        .ok_or_else(|| {
            ApiError::new(
                ApiErrorCode::Conflict,
                "the credential was replaced or deleted while it was being tested; test again",
            )
        })?;
    Ok(Json(CredentialTest {
        summary: summary_of(provider.0, &updated),
        check: outcome,
    }))
}

async fn load(
    state: &AppState,
    user: ProjectUser,
    provider: ProviderId,
) -> Result<StoredCredential, ApiError> {
    state
        .store()
        .credentials()
        .get(user, provider)
        .await
        .map_err(|e| ApiError::store(&e))?
        .ok_or_else(|| no_credentials(provider))
}

fn no_credentials(provider: ProviderId) -> ApiError {
    ApiError::not_found(format!(
        "this user has no stored credentials for {provider}"
    ))
}

fn provider_unavailable(provider: ProviderId, reason: &str, consequence: &str) -> ApiError {
    ApiError::new(
        ApiErrorCode::ProviderUnavailable,
        format!("{provider} could not check the credentials ({reason}); {consequence}"),
    )
    .with_details(json!({ "provider": provider, "provider_reason": reason }))
}
