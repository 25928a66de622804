//! The one error shape of the API (the table in crates/api/README.md, "Errors"):
//! `{"error":{"code":"…","message":"…","details":…}}` with the right status.
//!
//! Internal errors never reach the caller: they are logged inside the
//! request's span (which carries its `x-request-id`) and answered with a
//! generic message that names the request id.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Serialize, Serializer};
use serde_json::Value;
use utoipa::ToSchema;

/// Stable error codes of the HTTP API (in addition to the job codes of
/// `byok_core::ErrorCode`, which jobs carry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiErrorCode {
    /// 400: the request cannot be parsed (JSON syntax, path or query parameters).
    BadRequest,
    /// 401: no token, an unknown, revoked or expired token.
    Unauthorized,
    /// 403: the token lacks the scope the route needs (`details.scope`).
    InsufficientScope,
    /// 404: no such route or resource.
    NotFound,
    /// 405: the route exists with other methods.
    MethodNotAllowed,
    /// 409: the resource changed, or the request conflicts with its state.
    Conflict,
    /// 413: the body is larger than `api.max_body_bytes`.
    PayloadTooLarge,
    /// 415: the body is not `application/json`.
    UnsupportedMediaType,
    /// 422: well-formed but semantically invalid.
    InvalidRequest,
    /// 422: the job names a model its provider no longer serves.
    ModelRetired,
    /// 422: the provider rejected the key, or the stored key a job would
    /// use is marked invalid.
    CredentialsInvalid,
    /// 422: a job for a user with no stored key for its provider.
    CredentialsMissing,
    /// 429: past the token's `api.rate_limit`, or too many failed authentications from
    /// the client's address (`Retry-After` says when to come back).
    RateLimited,
    /// 503: the provider could not be asked.
    ProviderUnavailable,
    /// 503: the database or the queue is down.
    ServiceUnavailable,
    /// 503: the request took longer than `api.request_timeout`.
    Timeout,
    /// 500: a fault in byok.
    Internal,
}

impl ApiErrorCode {
    /// Every code, in the order the documentation lists them.
    pub const ALL: [ApiErrorCode; 17] = [
        ApiErrorCode::BadRequest,
        ApiErrorCode::Unauthorized,
        ApiErrorCode::InsufficientScope,
        ApiErrorCode::NotFound,
        ApiErrorCode::MethodNotAllowed,
        ApiErrorCode::Conflict,
        ApiErrorCode::PayloadTooLarge,
        ApiErrorCode::UnsupportedMediaType,
        ApiErrorCode::InvalidRequest,
        ApiErrorCode::ModelRetired,
        ApiErrorCode::CredentialsInvalid,
        ApiErrorCode::CredentialsMissing,
        ApiErrorCode::RateLimited,
        ApiErrorCode::ProviderUnavailable,
        ApiErrorCode::ServiceUnavailable,
        ApiErrorCode::Timeout,
        ApiErrorCode::Internal,
    ];

    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            ApiErrorCode::BadRequest => "bad_request",
            ApiErrorCode::Unauthorized => "unauthorized",
            ApiErrorCode::InsufficientScope => "insufficient_scope",
            ApiErrorCode::NotFound => "not_found",
            ApiErrorCode::MethodNotAllowed => "method_not_allowed",
            ApiErrorCode::Conflict => "conflict",
            ApiErrorCode::PayloadTooLarge => "payload_too_large",
            ApiErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ApiErrorCode::InvalidRequest => "invalid_request",
            ApiErrorCode::ModelRetired => "model_retired",
            ApiErrorCode::CredentialsInvalid => "credentials_invalid",
            ApiErrorCode::CredentialsMissing => "credentials_missing",
            ApiErrorCode::RateLimited => "rate_limited",
            ApiErrorCode::Timeout => "timeout",
            ApiErrorCode::ProviderUnavailable => "provider_unavailable",
            ApiErrorCode::ServiceUnavailable => "service_unavailable",
            ApiErrorCode::Internal => "internal",
        }
    }

    /// The HTTP status that goes with the code.
    pub const fn status(self) -> StatusCode {
        match self {
            ApiErrorCode::BadRequest => StatusCode::BAD_REQUEST,
            ApiErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiErrorCode::InsufficientScope => StatusCode::FORBIDDEN,
            ApiErrorCode::NotFound => StatusCode::NOT_FOUND,
            ApiErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiErrorCode::Conflict => StatusCode::CONFLICT,
            ApiErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiErrorCode::InvalidRequest
            | ApiErrorCode::ModelRetired
            | ApiErrorCode::CredentialsInvalid
            | ApiErrorCode::CredentialsMissing => StatusCode::UNPROCESSABLE_ENTITY,
            ApiErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ApiErrorCode::ProviderUnavailable
            | ApiErrorCode::ServiceUnavailable
            | ApiErrorCode::Timeout => StatusCode::SERVICE_UNAVAILABLE,
            ApiErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// When the code is given, for the OpenAPI document.
    pub const fn meaning(self) -> &'static str {
        match self {
            ApiErrorCode::BadRequest => {
                "the request cannot be parsed: JSON syntax, a path id that is not a UUID, a bad \
                 query parameter or Idempotency-Key"
            }
            ApiErrorCode::Unauthorized => {
                "no Authorization: Bearer header, or an unknown, revoked or expired token"
            }
            ApiErrorCode::InsufficientScope => {
                "the token lacks the scope this route needs; details.scope names it"
            }
            ApiErrorCode::NotFound => "no such route, provider or resource",
            ApiErrorCode::MethodNotAllowed => "the route exists with other methods",
            ApiErrorCode::Conflict => "the request conflicts with the resource's state",
            ApiErrorCode::PayloadTooLarge => "the body is larger than api.max_body_bytes",
            ApiErrorCode::UnsupportedMediaType => "the body is not application/json",
            ApiErrorCode::InvalidRequest => {
                "well-formed JSON of the wrong shape or content; details.field names the field"
            }
            ApiErrorCode::ModelRetired => {
                "the job names a model its provider no longer serves; nothing is stored or sent. \
                 details: retired_on, source (the provider's notice), alternatives (the same \
                 model family at other providers)"
            }
            ApiErrorCode::CredentialsInvalid => {
                "the provider rejected the key (details.provider_reason), or the stored key a \
                 job would use is marked invalid"
            }
            ApiErrorCode::CredentialsMissing => {
                "a job for a user with no stored key for its provider"
            }
            ApiErrorCode::ProviderUnavailable => {
                "the provider could not be asked (network, 429, 5xx); nothing changed"
            }
            ApiErrorCode::ServiceUnavailable => "the database or the queue is down",
            ApiErrorCode::RateLimited => {
                "past the token's api.rate_limit, or too many failed authentications from the \
                 client's address; Retry-After and the RateLimit field say when to come back"
            }
            ApiErrorCode::Timeout => {
                "the request took longer than api.request_timeout; whether a write took effect \
                 is unknown, so retry with the same Idempotency-Key"
            }
            ApiErrorCode::Internal => {
                "a fault in byok; the server log has the cause under the response's x-request-id"
            }
        }
    }
}

// Adding a code without listing it in `ALL` (and so in the OpenAPI
// document) does not compile.
const _: fn(ApiErrorCode) = |code| match code {
    ApiErrorCode::BadRequest
    | ApiErrorCode::Unauthorized
    | ApiErrorCode::InsufficientScope
    | ApiErrorCode::NotFound
    | ApiErrorCode::MethodNotAllowed
    | ApiErrorCode::Conflict
    | ApiErrorCode::PayloadTooLarge
    | ApiErrorCode::UnsupportedMediaType
    | ApiErrorCode::InvalidRequest
    | ApiErrorCode::ModelRetired
    | ApiErrorCode::CredentialsInvalid
    | ApiErrorCode::CredentialsMissing
    | ApiErrorCode::RateLimited
    | ApiErrorCode::ProviderUnavailable
    | ApiErrorCode::ServiceUnavailable
    | ApiErrorCode::Timeout
    | ApiErrorCode::Internal => {}
};

impl Serialize for ApiErrorCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// An error response.
#[derive(Debug)]
pub struct ApiError {
    code: ApiErrorCode,
    message: String,
    details: Value,
}

impl ApiError {
    /// An error with a message for the caller.
    pub fn new(code: ApiErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            details: Value::Null,
        }
    }

    /// Adds machine-readable details.
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    /// The code.
    pub fn code(&self) -> ApiErrorCode {
        self.code
    }

    /// The machine-readable details (`null` when none).
    pub fn details(&self) -> &Value {
        &self.details
    }

    /// Logs `error` and returns the generic 500 that hides it.
    pub fn internal(error: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %error, "internal error");
        Self::new(
            ApiErrorCode::Internal,
            "internal error; the server log has the details under this response's x-request-id",
        )
    }

    /// The 403 for a token without `scope`.
    pub(crate) fn insufficient_scope(scope: byok_core::Scope) -> Self {
        Self::new(
            ApiErrorCode::InsufficientScope,
            format!("this token lacks the `{scope}` scope this route needs"),
        )
        .with_details(serde_json::json!({ "scope": scope.as_str() }))
    }

    /// Maps a storage failure: 503 when the database is unreachable, else 500.
    pub fn store(error: &byok_store::StoreError) -> Self {
        if error.is_unavailable() {
            tracing::warn!(error = %error, "database unavailable");
            Self::new(
                ApiErrorCode::ServiceUnavailable,
                "the database is unavailable; retry later",
            )
        } else {
            Self::internal(error)
        }
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(ApiErrorCode::NotFound, message)
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ApiErrorCode::BadRequest, message)
    }
}

/// The one error shape of the API: the body of every error response.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Error)]
#[serde(deny_unknown_fields)]
pub(crate) struct ErrorResponse {
    error: ErrorBody,
}

/// The error object.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ErrorBody {
    code: ApiErrorCode,
    /// For people; never a secret.
    message: String,
    /// Machine-readable details (e.g. `field`, `allowed`, `job_id`,
    /// `provider_reason`), or `null`.
    #[schema(value_type = Value)]
    details: Value,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.code.status();
        // RFC 6750 §3: the challenge names the missing scope.
        let challenge = match (self.code, self.details.get("scope").and_then(Value::as_str)) {
            (ApiErrorCode::Unauthorized, _) => Some(HeaderValue::from_static("Bearer")),
            (ApiErrorCode::InsufficientScope, Some(scope)) => HeaderValue::from_str(&format!(
                "Bearer error=\"insufficient_scope\", scope=\"{scope}\""
            ))
            .ok(),
            _ => None,
        };
        let body = ErrorResponse {
            error: ErrorBody {
                code: self.code,
                message: self.message,
                details: self.details,
            },
        };
        let mut response = (status, Json(body)).into_response();
        if let Some(challenge) = challenge {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, challenge);
        }
        response
    }
}
