//! Users' provider credentials: store (after a key check), list, test, delete.
//!
//! Plaintext credentials exist only between parsing a request body and
//! sealing, and between opening a stored value and the provider call; the
//! store, the responses and the logs see sealed text and hints only.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use byok_core::{ProjectUser, ProviderId};
use byok_crypto::SealContext;
use byok_providers::{CredentialCheck, open_credentials, wipe_json};
use byok_store::{CheckRecord, NewCredential, StoredCredential};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiErrorCode};
use crate::extract::{ApiJson, UserPath, UserProviderPath};

/// Body of `PUT …/credentials`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({ "credentials": { "api_key": "key_0123456789abcdef" }, "validate": true }))]
pub(crate) struct PutCredentials {
    /// The provider's fields, as its `credential_fields` in `GET /v1/providers`
    /// name them: `api_key` (Runway, Stability), `service_account` (Veo: the
    /// service-account JSON, as an object or a string).
    #[schema(value_type = Object)]
    credentials: Value,
    /// Ask the provider before storing (default true).
    #[serde(default = "default_true")]
    #[schema(default = true)]
    validate: bool,
}

fn default_true() -> bool {
    true
}

/// What a user's credential for one provider looks like from outside.
/// Never a secret: only a hint.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = CredentialSummary)]
pub(crate) struct Summary {
    provider: ProviderId,
    /// Whether a key is stored.
    connected: bool,
    /// Whether the stored key passed its latest check (false when none is stored).
    is_valid: bool,
    /// A hint at the stored key, e.g. `key_…9f2c`: never the key.
    #[schema(required)]
    credential_hint: Option<String>,
    /// When the provider last accepted the key.
    #[schema(required)]
    validated_at: Option<DateTime<Utc>>,
    /// Why the latest check failed.
    #[schema(required)]
    last_error: Option<String>,
    #[schema(required)]
    created_at: Option<DateTime<Utc>>,
    #[schema(required)]
    updated_at: Option<DateTime<Utc>>,
}

/// The body of `GET /v1/users/{user_id}/providers`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CredentialList {
    user_id: Uuid,
    /// One summary per provider, in listing order (`connected: false` when none is stored).
    providers: Vec<Summary>,
}

impl Summary {
    fn of(provider: ProviderId, row: &StoredCredential) -> Self {
        Summary {
            provider,
            connected: true,
            is_valid: row.is_valid,
            credential_hint: row.credential_hint.clone(),
            validated_at: row.validated_at,
            last_error: row.last_error.clone(),
            created_at: Some(row.created_at),
            updated_at: Some(row.updated_at),
        }
    }

    fn not_connected(provider: ProviderId) -> Self {
        Summary {
            provider,
            connected: false,
            is_valid: false,
            credential_hint: None,
            validated_at: None,
            last_error: None,
            created_at: None,
            updated_at: None,
        }
    }
}

/// The verdict of `POST …/test`, next to the updated summary.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = CredentialTest)]
pub(crate) struct TestResult {
    #[serde(flatten)]
    summary: Summary,
    check: CheckOutcome,
}

/// `valid`, `rejected` (by the provider) or `unreadable` (the stored value
/// cannot be opened for this user and provider).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
enum CheckResult {
    Valid,
    Rejected,
    Unreadable,
}

/// The verdict of a key check.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = CredentialCheck)]
#[serde(deny_unknown_fields)]
struct CheckOutcome {
    result: CheckResult,
    /// Why not `valid`.
    #[schema(required)]
    reason: Option<String>,
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
        body = Summary,
    )),
)]
pub(crate) async fn put(
    State(state): State<AppState>,
    caller: Caller,
    UserProviderPath(user, provider): UserProviderPath,
    ApiJson(mut body): ApiJson<PutCredentials>,
) -> Result<Json<Summary>, ApiError> {
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
    Ok(Json(Summary::of(provider.0, &stored)))
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
    let summaries: Vec<Summary> = state
        .providers()
        .all()
        .map(|adapter| adapter.id())
        .map(|p| match rows.iter().find(|r| r.provider() == Some(p)) {
            Some(row) => Summary::of(p, row),
            None => Summary::not_connected(p),
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
    responses((status = 200, description = "The stored key's summary", body = Summary)),
)]
pub(crate) async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    UserProviderPath(user, provider): UserProviderPath,
) -> Result<Json<Summary>, ApiError> {
    let row = load(&state, caller.user(user.0), provider.0).await?;
    Ok(Json(Summary::of(provider.0, &row)))
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
        body = TestResult,
    )),
)]
pub(crate) async fn test(
    State(state): State<AppState>,
    caller: Caller,
    UserProviderPath(user, provider): UserProviderPath,
) -> Result<Json<TestResult>, ApiError> {
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
                CheckOutcome {
                    result: CheckResult::Unreadable,
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
                CheckOutcome {
                    result: CheckResult::Valid,
                    reason: None,
                },
            ),
            CredentialCheck::Rejected { reason } => (
                CheckRecord {
                    is_valid: false,
                    last_error: Some(reason.clone()),
                    validated_at: None,
                },
                CheckOutcome {
                    result: CheckResult::Rejected,
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
        .map_err(|e| ApiError::store(&e))?
        .ok_or_else(|| {
            ApiError::new(
                ApiErrorCode::Conflict,
                "the credential was replaced or deleted while it was being tested; test again",
            )
        })?;
    Ok(Json(TestResult {
        summary: Summary::of(provider.0, &updated),
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
