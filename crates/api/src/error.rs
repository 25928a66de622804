//! The one error shape of the API (the table in crates/api/README.md, "Errors"):
//! `{"error":{"code":"…","message":"…","details":…}}` with the right status. The codes and
//! the body's shape are `byok-core`'s (`ApiErrorCode`, `ApiErrorResponse`), which clients
//! share; writing it as a response is this crate's.
//!
//! Internal errors never reach the caller: they are logged inside the
//! request's span (which carries its `x-request-id`) and answered with a
//! generic message that names the request id.

use axum::Json;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use byok_core::{ApiErrorBody, ApiErrorResponse};
use serde_json::Value;

pub use byok_core::ApiErrorCode;

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

    /// The message for the caller.
    pub fn message(&self) -> &str {
        &self.message
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
        let body = ApiErrorResponse {
            error: ApiErrorBody {
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
