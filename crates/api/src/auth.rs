//! Producer-token authentication for everything under `/v1`.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;

use crate::AppState;
use crate::error::{ApiError, ApiErrorCode};

/// Requires `Authorization: Bearer <token>` naming an active producer token;
/// the token's record goes into the request extensions for handlers.
pub(crate) async fn require_token(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    let Some(presented) = presented else {
        return Err(ApiError::new(
            ApiErrorCode::Unauthorized,
            "missing Authorization: Bearer <token> header",
        ));
    };
    let token = state
        .store()
        .tokens()
        .authenticate(presented)
        .await
        .map_err(|e| ApiError::store(&e))?;
    let Some(token) = token else {
        // One message for unknown and revoked tokens: which one it was is
        // nobody's business but the operator's.
        return Err(ApiError::new(
            ApiErrorCode::Unauthorized,
            "invalid or revoked token",
        ));
    };
    tracing::Span::current().record("token.id", tracing::field::display(token.id));
    request.extensions_mut().insert(token);
    Ok(next.run(request).await)
}
