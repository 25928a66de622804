//! Producer-token authentication for everything under `/v1`, and the scope
//! each route needs.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};

use byok_core::{ProjectUser, Scope};
use byok_store::ApiToken;
use uuid::Uuid;

use crate::AppState;
use crate::error::{ApiError, ApiErrorCode};
use crate::limits::TokenVerdict;

/// Requires `Authorization: Bearer <token>` naming an active producer token;
/// the token's record goes into the request extensions for handlers
/// ([`Caller`]).
pub(crate) async fn require_token(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, Response> {
    let edge = state.edge();
    let client = edge.client_of(&request);
    // An address refused for its failed attempts costs no token lookup.
    if let Some(refused) = edge.refused_client(client) {
        return Err(refused);
    }
    let failed = |error: ApiError| {
        edge.note_failure(client)
            .unwrap_or_else(|| error.into_response())
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    let Some(presented) = presented else {
        return Err(failed(ApiError::new(
            ApiErrorCode::Unauthorized,
            "missing Authorization: Bearer <token> header",
        )));
    };
    let token = state
        .authenticate(presented)
        .await
        .map_err(|e| ApiError::store(&e).into_response())?;
    let Some(token) = token else {
        // One message for unknown and revoked tokens: which one it was is
        // nobody's business but the operator's.
        return Err(failed(ApiError::new(
            ApiErrorCode::Unauthorized,
            "invalid or revoked token",
        )));
    };
    if token.is_expired(byok_store::now()) {
        return Err(failed(ApiError::new(
            ApiErrorCode::Unauthorized,
            "the token has expired",
        )));
    }
    tracing::Span::current().record("token.id", tracing::field::display(token.id));
    let fields = match edge.check_token(token.id) {
        TokenVerdict::Granted(fields) => fields,
        TokenVerdict::Refused(response) => return Err(response),
    };
    request.extensions_mut().insert(Caller(token));
    let mut response = next.run(request).await;
    if let Some(fields) = fields {
        fields.add_to(&mut response);
    }
    Ok(response)
}

/// Refuses the request with 403 `insufficient_scope` unless the caller's
/// token has `scope` (`None`: any valid token will do). Layered on each
/// route's method handler, inside the authentication, so a missing scope
/// shows before anything of the request is read.
pub(crate) async fn require_scope(
    State(scope): State<Option<Scope>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if let Some(scope) = scope {
        let granted = request
            .extensions()
            .get::<Caller>()
            .is_some_and(|caller| caller.0.scopes.contains(scope));
        if !granted {
            return Err(ApiError::insufficient_scope(scope));
        }
    }
    Ok(next.run(request).await)
}

/// The authenticated token a request acts with: its project bounds every
/// lookup the handler makes.
#[derive(Debug, Clone)]
pub(crate) struct Caller(pub(crate) ApiToken);

impl Caller {
    /// The caller's project.
    pub(crate) fn project_id(&self) -> Uuid {
        self.0.project_id
    }

    /// `user_id` of the caller's project.
    pub(crate) fn user(&self, user_id: Uuid) -> ProjectUser {
        ProjectUser::new(self.0.project_id, user_id)
    }

    /// The token's id.
    pub(crate) fn token_id(&self) -> Uuid {
        self.0.id
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        // Only routes behind `require_token` take a Caller; reaching here
        // without one is a wiring fault, not the client's.
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| ApiError::internal(&"a /v1 handler ran without authentication"))
    }
}

/// The scope each `/v1` operation needs, by OpenAPI operation id; `None`:
/// any valid token. The router enforces it and the OpenAPI document lists
/// it, both from here.
pub(crate) const ROUTE_SCOPES: &[(&str, Option<Scope>)] = &[
    ("list_providers", None),
    ("list_projects", Some(Scope::Admin)),
    ("list_credentials", Some(Scope::CredentialsRead)),
    ("get_credentials", Some(Scope::CredentialsRead)),
    ("put_credentials", Some(Scope::CredentialsWrite)),
    ("test_credentials", Some(Scope::CredentialsWrite)),
    ("delete_credentials", Some(Scope::CredentialsWrite)),
    ("create_connect_link", Some(Scope::CredentialsWrite)),
    ("create_job", Some(Scope::JobsWrite)),
    ("get_job", Some(Scope::JobsRead)),
    ("cancel_job", Some(Scope::JobsWrite)),
    ("get_job_video", Some(Scope::JobsRead)),
    ("stream_job_events", Some(Scope::JobsRead)),
    ("list_jobs", Some(Scope::JobsRead)),
    ("create_batch", Some(Scope::JobsWrite)),
    ("get_batch", Some(Scope::JobsRead)),
    ("list_batch_jobs", Some(Scope::JobsRead)),
    ("cancel_batch", Some(Scope::JobsWrite)),
    ("create_webhook", Some(Scope::Webhooks)),
    ("list_webhooks", Some(Scope::Webhooks)),
    ("get_webhook", Some(Scope::Webhooks)),
    ("update_webhook", Some(Scope::Webhooks)),
    ("delete_webhook", Some(Scope::Webhooks)),
    ("rotate_webhook_secret", Some(Scope::Webhooks)),
    ("rotate_job_webhook_secret", Some(Scope::Webhooks)),
    ("list_webhook_deliveries", Some(Scope::Webhooks)),
    ("retry_webhook_delivery", Some(Scope::Webhooks)),
    ("get_usage", Some(Scope::UsageRead)),
    ("get_user_usage", Some(Scope::UsageRead)),
    ("get_budget", Some(Scope::UsageRead)),
    ("put_budget", Some(Scope::BudgetsWrite)),
    ("delete_budget", Some(Scope::BudgetsWrite)),
    ("get_user_budget", Some(Scope::UsageRead)),
    ("put_user_budget", Some(Scope::BudgetsWrite)),
    ("delete_user_budget", Some(Scope::BudgetsWrite)),
];

/// The entry of [`ROUTE_SCOPES`] for `operation_id`: `None` when it has none.
pub(crate) fn route_scope(operation_id: &str) -> Option<Option<Scope>> {
    ROUTE_SCOPES
        .iter()
        .find(|(id, _)| *id == operation_id)
        .map(|(_, scope)| *scope)
}

/// The scope operation `operation_id` needs ([`ROUTE_SCOPES`]).
///
/// # Panics
/// When the id is not in the table: a route wired without deciding its
/// scope, which every test that builds the router catches.
pub(crate) fn scope_of(operation_id: &str) -> Option<Scope> {
    route_scope(operation_id)
        .unwrap_or_else(|| panic!("no scope decided for operation `{operation_id}`"))
}
