//! Extractors whose every rejection uses the API's error shape.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use byok_core::ProviderId;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::error::{ApiError, ApiErrorCode};

/// A JSON body. Unlike `axum::Json`, its rejections are API errors:
/// wrong content type → 415, over `api.max_body_bytes` → 413, bad syntax →
/// 400, wrong shape → 422. Bodies may carry users' keys, so the raw bytes
/// are wiped after parsing when this request owns them alone.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(&req) {
            return Err(ApiError::new(
                ApiErrorCode::UnsupportedMediaType,
                "the body must be JSON with Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| body_error(&e))?;
        let parsed = parse(&bytes);
        wipe(bytes);
        parsed.map(ApiJson)
    }
}

fn is_json(req: &Request) -> bool {
    let Some(value) = req.headers().get(header::CONTENT_TYPE) else {
        return false;
    };
    let Ok(value) = value.to_str() else {
        return false;
    };
    let mime = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

fn body_error(rejection: &BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            ApiErrorCode::PayloadTooLarge,
            "the body is larger than this server accepts (api.max_body_bytes; for \
             POST /v1/batches, api.max_batch_body_bytes)",
        )
    } else {
        ApiError::bad_request("the body could not be read")
    }
}

/// Syntax first (400), then shape (422): a body that is not JSON at all is
/// malformed even when its first value happens to lack a field.
fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?;
    serde_path_to_error::deserialize::<_, T>(value).map_err(|e| shape_error(e, "body"))
}

/// A value of the wrong shape: 422 `invalid_request` naming the field (`what`: "body",
/// "job", … in the message).
pub(crate) fn shape_error(
    e: serde_path_to_error::Error<serde_json::Error>,
    what: &str,
) -> ApiError {
    let path = e.path().to_string();
    let error = e.into_inner().to_string();
    // A missing field is reported at its parent: name the field itself.
    let missing = error
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(name, _)| name);
    let field = match (path.as_str(), missing) {
        (".", None) => None,
        (".", Some(name)) => Some(name.to_owned()),
        (path, Some(name)) => Some(format!("{path}.{name}")),
        (path, None) => Some(path.to_owned()),
    };
    // serde's messages name the field and the expected type; for strings
    // they can quote the value, which is why secret fields are typed as
    // free-form JSON and checked by the provider adapter instead.
    ApiError::new(
        ApiErrorCode::InvalidRequest,
        format!("the {what} does not fit the expected shape: {error}"),
    )
    .with_details(serde_json::json!({ "field": field }))
}

fn wipe(bytes: Bytes) {
    if let Ok(mut owned) = bytes.try_into_mut() {
        zeroize::Zeroize::zeroize(&mut owned[..]);
    }
}

/// The `{user_id}` path segment: a UUID, else 400.
#[derive(Debug, Clone, Copy)]
pub struct UserId(pub Uuid);

/// The `{provider}` path segment: a known provider, else 404.
#[derive(Debug, Clone, Copy)]
pub struct Provider(pub ProviderId);

pub(crate) fn parse_user_id(raw: &str) -> Result<UserId, ApiError> {
    Uuid::parse_str(raw).map(UserId).map_err(|_| {
        ApiError::bad_request("user_id must be a UUID, e.g. 0b6c1d2e-3f40-4a5b-8c6d-7e8f90a1b2c3")
            .with_details(serde_json::json!({ "field": "user_id" }))
    })
}

pub(crate) fn parse_provider(raw: &str) -> Result<Provider, ApiError> {
    raw.parse::<ProviderId>()
        .map(Provider)
        .map_err(|e| ApiError::not_found(e.to_string()))
}

/// The adapter of `provider` in this deployment, or the 404 of an unknown provider (a
/// provider declared in this process but not by this system's definitions).
pub(crate) fn adapter(
    state: &crate::AppState,
    provider: ProviderId,
) -> Result<std::sync::Arc<dyn byok_providers::VideoProvider>, ApiError> {
    state
        .providers()
        .get(provider)
        .ok_or_else(|| ApiError::not_found(not_offered(state, provider)))
}

/// "unknown provider `x`; this deployment offers: …".
pub(crate) fn not_offered(state: &crate::AppState, provider: ProviderId) -> String {
    let offered: Vec<&str> = state.providers().all().map(|a| a.id().as_str()).collect();
    format!(
        "unknown provider `{provider}`; this deployment offers: {}",
        offered.join(", ")
    )
}

/// `/v1/users/{user_id}/…` routes.
#[derive(Debug)]
pub struct UserPath(pub UserId);

impl<S: Send + Sync> FromRequestParts<S> for UserPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(user_id) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|_| ApiError::bad_request("invalid path"))?;
        Ok(UserPath(parse_user_id(&user_id)?))
    }
}

/// `/v1/users/{user_id}/providers/{provider}…` routes.
#[derive(Debug)]
pub struct UserProviderPath(pub UserId, pub Provider);

impl<S: Send + Sync> FromRequestParts<S> for UserProviderPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path((user_id, provider)) =
            axum::extract::Path::<(String, String)>::from_request_parts(parts, state)
                .await
                .map_err(|_| ApiError::bad_request("invalid path"))?;
        // The user id is checked first so that a bad id is always a 400.
        let user = parse_user_id(&user_id)?;
        Ok(UserProviderPath(user, parse_provider(&provider)?))
    }
}

/// `/v1/jobs/{job_id}…` routes: a UUID, else 400.
#[derive(Debug, Clone, Copy)]
pub struct JobPath(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for JobPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(job_id) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|_| ApiError::bad_request("invalid path"))?;
        Uuid::parse_str(&job_id).map(JobPath).map_err(|_| {
            ApiError::bad_request("a job id is a UUID")
                .with_details(serde_json::json!({ "field": "job_id" }))
        })
    }
}

/// The default page size of the listings.
pub(crate) const DEFAULT_PAGE: u32 = 20;
/// The largest page.
pub(crate) const MAX_PAGE: u32 = 100;

/// A listing's `limit` (1–[`MAX_PAGE`], default [`DEFAULT_PAGE`]) and `cursor` (the
/// `next_cursor` of a previous page) query parameters; a bad one is a 400 naming it.
pub(crate) fn page(
    limit: Option<&str>,
    cursor: Option<&str>,
) -> Result<(u32, Option<Uuid>), ApiError> {
    let field = |name: &str, message: String| {
        ApiError::bad_request(message).with_details(serde_json::json!({ "field": name }))
    };
    let limit = match limit {
        None => DEFAULT_PAGE,
        Some(raw) => raw
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| {
                field(
                    "limit",
                    format!("limit must be a whole number from 1 to {MAX_PAGE}"),
                )
            })?,
    };
    let cursor = cursor.map(Uuid::parse_str).transpose().map_err(|_| {
        field(
            "cursor",
            "cursor must be the next_cursor of a previous page".to_owned(),
        )
    })?;
    Ok((limit, cursor))
}
