//! The one error shape of the HTTP API (crates/api/README.md, "Errors"):
//! `{"error":{"code":"…","message":"…","details":…}}`, each code with its HTTP status.
//! The server writes it (`byok-api`'s `ApiError`); clients (`byok-client`) read it back.

use std::fmt;
use std::str::FromStr;

use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Stable error codes of the HTTP API (in addition to the job codes of
/// [`ErrorCode`](crate::ErrorCode), which jobs carry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
    /// 413: the body is larger than `api.max_body_bytes` (`api.max_batch_body_bytes` for a batch).
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
    /// 422: the job would take a budget past its limit (`details.remaining_usd`).
    BudgetExceeded,
    /// 422: `"provider": "auto"` found no provider that can run the job (`details.excluded`).
    NoCapableProvider,
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
    pub const ALL: [ApiErrorCode; 19] = [
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
        ApiErrorCode::BudgetExceeded,
        ApiErrorCode::NoCapableProvider,
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
            ApiErrorCode::BudgetExceeded => "budget_exceeded",
            ApiErrorCode::NoCapableProvider => "no_capable_provider",
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
            | ApiErrorCode::CredentialsMissing
            | ApiErrorCode::BudgetExceeded
            | ApiErrorCode::NoCapableProvider => StatusCode::UNPROCESSABLE_ENTITY,
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
            ApiErrorCode::BudgetExceeded => {
                "the job would take a budget of the project or the user past its limit, or its \
                 model has no price while a budget applies; nothing is stored. details: budget \
                 (user_id, provider, period, limit_usd), remaining_usd, estimated_cost_usd"
            }
            ApiErrorCode::NoCapableProvider => {
                "\"provider\": \"auto\" found no provider where the user has a valid key and a \
                 model fits the request; details.excluded lists each provider with why"
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
// document and `FromStr`) does not compile.
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
    | ApiErrorCode::BudgetExceeded
    | ApiErrorCode::NoCapableProvider
    | ApiErrorCode::RateLimited
    | ApiErrorCode::ProviderUnavailable
    | ApiErrorCode::ServiceUnavailable
    | ApiErrorCode::Timeout
    | ApiErrorCode::Internal => {}
};

impl fmt::Display for ApiErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is none of the API's error codes (a newer server's, or not a code).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown API error code `{0}`")]
pub struct UnknownApiErrorCode(pub String);

impl FromStr for ApiErrorCode {
    type Err = UnknownApiErrorCode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ApiErrorCode::ALL
            .into_iter()
            .find(|code| code.as_str() == s)
            .ok_or_else(|| UnknownApiErrorCode(s.chars().take(64).collect()))
    }
}

impl Serialize for ApiErrorCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ApiErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for ApiErrorCode {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(ApiErrorCode::ALL.iter().map(|c| c.as_str())))
            .description(Some(
                "Stable error code of the HTTP API; each goes with one HTTP status",
            ))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for ApiErrorCode {}

/// The one error shape of the API: the body of every error response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = Error))]
#[serde(deny_unknown_fields)]
pub struct ApiErrorResponse {
    pub error: ApiErrorBody,
}

/// The error object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = ErrorBody))]
#[serde(deny_unknown_fields)]
pub struct ApiErrorBody {
    pub code: ApiErrorCode,
    /// For people; never a secret.
    pub message: String,
    /// Machine-readable details (e.g. `field`, `allowed`, `job_id`,
    /// `provider_reason`), or `null`.
    #[cfg_attr(feature = "openapi", schema(value_type = Value))]
    pub details: Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_through_their_wire_names() {
        for code in ApiErrorCode::ALL {
            assert_eq!(code.as_str().parse::<ApiErrorCode>(), Ok(code));
            let json = serde_json::to_value(code).unwrap();
            assert_eq!(json, code.as_str());
            assert_eq!(serde_json::from_value::<ApiErrorCode>(json).unwrap(), code);
        }
        assert!("teapot".parse::<ApiErrorCode>().is_err());
        let body: ApiErrorResponse = serde_json::from_str(
            r#"{"error":{"code":"rate_limited","message":"slow down","details":{"policy":"token"}}}"#,
        )
        .unwrap();
        assert_eq!(body.error.code, ApiErrorCode::RateLimited);
        assert_eq!(body.error.code.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(body.error.details["policy"], "token");
    }
}
