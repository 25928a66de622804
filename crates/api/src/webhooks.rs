//! `/v1/webhooks`: a project's webhook endpoints, their signing secrets, their deliveries,
//! and the project's secret for jobs' own `webhook_url`s (docs/webhooks.md).
//!
//! Secrets are made here, shown once in the answer, and stored sealed by the key ring
//! (bound to the project and the endpoint). Every route is scoped to the token's project:
//! another project's endpoint or delivery is a 404 like a missing one.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use byok_core::{
    EventType, JobWebhookSecret, NewWebhookEndpoint, WebhookDelivery, WebhookDeliveryPage,
    WebhookDeliveryStatus, WebhookEndpointChange, WebhookEndpointList, WebhookEndpointView,
    WebhookEndpointWithSecret,
};
use byok_crypto::WebhookSecretContext;
use byok_providers::{FetchError, ImageFetcher};
use byok_store::{
    Delivery, DeliveryStatus, EndpointChange, NewEndpoint, StoreError, WebhookEndpoint,
};
use byok_webhooks::SigningSecret;
use chrono::Utc;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiErrorCode};
use crate::extract::ApiJson;

/// How long a rotated-out secret keeps signing.
pub(crate) const ROTATION_OVERLAP: chrono::Duration = chrono::Duration::hours(24);
/// The longest endpoint URL.
const MAX_URL_LEN: usize = 2048;
/// The longest description.
const MAX_DESCRIPTION_CHARS: usize = 500;

/// A UUID path segment named `name`.
fn path_id(raw: &str, name: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| {
        ApiError::bad_request(format!("{name} is a UUID")).with_details(json!({ "field": name }))
    })
}

fn no_such_endpoint() -> ApiError {
    ApiError::new(ApiErrorCode::NotFound, "no such webhook endpoint")
}

/// Checks a receiver URL as image URLs are checked: https (plain http only with
/// `fetch.allow_private_networks`), a host that is a public address or a name resolving
/// to one. Redirects are never followed when delivering, so where it points is where
/// deliveries go. `field` names the member in the error.
pub(crate) async fn check_receiver_url(
    fetcher: &ImageFetcher,
    url: &str,
    field: &str,
) -> Result<(), ApiError> {
    let refuse = |message: String| {
        ApiError::new(ApiErrorCode::InvalidRequest, message).with_details(json!({ "field": field }))
    };
    if url.len() > MAX_URL_LEN {
        return Err(refuse(format!(
            "{field} is longer than {MAX_URL_LEN} bytes"
        )));
    }
    match fetcher.precheck(url).await {
        // A DNS answer that is slow now may be fine when delivering (checked again then).
        Ok(_) | Err(FetchError::Timeout { .. }) => Ok(()),
        Err(e) => Err(refuse(format!("{field}: {e}"))),
    }
}

fn check_events(events: &[EventType]) -> Result<Vec<EventType>, ApiError> {
    if events.is_empty() {
        return Err(ApiError::new(
            ApiErrorCode::InvalidRequest,
            "events names at least one type",
        )
        .with_details(json!({ "field": "events" })));
    }
    let mut events = events.to_vec();
    events.sort();
    events.dedup();
    Ok(events)
}

fn check_description(description: &str) -> Result<(), ApiError> {
    if description.chars().count() > MAX_DESCRIPTION_CHARS || description.contains('\0') {
        return Err(ApiError::new(
            ApiErrorCode::InvalidRequest,
            format!("description is at most {MAX_DESCRIPTION_CHARS} characters, without U+0000"),
        )
        .with_details(json!({ "field": "description" })));
    }
    Ok(())
}

fn view(endpoint: WebhookEndpoint) -> WebhookEndpointView {
    let now = Utc::now();
    WebhookEndpointView {
        id: endpoint.id,
        url: endpoint.url,
        events: endpoint.events,
        description: endpoint.description,
        enabled: endpoint.disabled_at.is_none(),
        disabled_reason: endpoint.disabled_reason,
        disabled_at: endpoint.disabled_at,
        failing_since: endpoint.failing_since,
        previous_secret_expires_at: endpoint
            .secrets
            .previous_expires_at
            .filter(|until| *until > now),
        created_at: endpoint.created_at,
        updated_at: endpoint.updated_at,
    }
}

/// A fresh secret, its text for the answer and its sealed form for the store.
fn new_secret(
    state: &AppState,
    context: &WebhookSecretContext,
) -> Result<(String, String), ApiError> {
    let secret = SigningSecret::generate().map_err(|e| ApiError::internal(&e))?;
    let text = secret.to_text();
    let sealed = state
        .key_ring()
        .seal_webhook_secret(context, text.as_bytes())
        .map_err(|e| ApiError::internal(&e))?;
    Ok((text.to_string(), sealed))
}

/// `POST /v1/webhooks`
#[utoipa::path(
    post,
    path = "/v1/webhooks",
    operation_id = "create_webhook",
    summary = "Add a webhook endpoint",
    tag = "webhooks",
    request_body(content = NewWebhookEndpoint, content_type = "application/json",
        description = "`url` must be https to a public address (plain http and private addresses \
            only with `fetch.allow_private_networks`); an unknown event type is a 422 naming it"),
    responses(
        (status = 201, description = "The endpoint with its signing secret, shown this once", body = WebhookEndpointWithSecret),
        (status = 409, description = "The project already has 20 endpoints"),
    ),
)]
pub(crate) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<NewWebhookEndpoint>,
) -> Result<Response, ApiError> {
    let events = check_events(&body.events)?;
    check_description(&body.description)?;
    check_receiver_url(state.fetcher(), &body.url, "url").await?;
    let id = Uuid::now_v7();
    let context = WebhookSecretContext {
        project_id: caller.project_id(),
        endpoint_id: Some(id),
    };
    let (secret, sealed_secret) = new_secret(&state, &context)?;
    let endpoint = state
        .store()
        .webhooks()
        .create_endpoint(&NewEndpoint {
            id,
            project_id: caller.project_id(),
            url: body.url,
            description: body.description,
            events,
            sealed_secret,
        })
        .await
        .map_err(|e| match e {
            StoreError::Conflict(why) => ApiError::new(ApiErrorCode::Conflict, why),
            other => ApiError::store(&other),
        })?;
    tracing::info!(endpoint.id = %endpoint.id, "webhook endpoint created");
    Ok((
        StatusCode::CREATED,
        Json(WebhookEndpointWithSecret {
            endpoint: view(endpoint),
            secret,
        }),
    )
        .into_response())
}

/// `GET /v1/webhooks`
#[utoipa::path(
    get,
    path = "/v1/webhooks",
    operation_id = "list_webhooks",
    summary = "List the project's webhook endpoints",
    tag = "webhooks",
    responses((status = 200, description = "Oldest first; never their secrets", body = WebhookEndpointList)),
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<WebhookEndpointList>, ApiError> {
    let endpoints = state
        .store()
        .webhooks()
        .endpoints(caller.project_id())
        .await
        .map_err(|e| ApiError::store(&e))?;
    Ok(Json(WebhookEndpointList {
        endpoints: endpoints.into_iter().map(view).collect(),
    }))
}

/// `GET /v1/webhooks/{webhook_id}`
#[utoipa::path(
    get,
    path = "/v1/webhooks/{webhook_id}",
    operation_id = "get_webhook",
    summary = "Read a webhook endpoint",
    tag = "webhooks",
    params(("webhook_id" = Uuid, Path, description = "The endpoint")),
    responses((status = 200, description = "The endpoint", body = WebhookEndpointView)),
)]
pub(crate) async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    axum::extract::Path(raw): axum::extract::Path<String>,
) -> Result<Json<WebhookEndpointView>, ApiError> {
    let id = path_id(&raw, "webhook_id")?;
    let endpoint = state
        .store()
        .webhooks()
        .endpoint(caller.project_id(), id)
        .await
        .map_err(|e| ApiError::store(&e))?
        .ok_or_else(no_such_endpoint)?;
    Ok(Json(view(endpoint)))
}

/// `PATCH /v1/webhooks/{webhook_id}`
#[utoipa::path(
    patch,
    path = "/v1/webhooks/{webhook_id}",
    operation_id = "update_webhook",
    summary = "Change a webhook endpoint",
    tag = "webhooks",
    params(("webhook_id" = Uuid, Path, description = "The endpoint")),
    request_body(content = WebhookEndpointChange, content_type = "application/json"),
    responses((status = 200, description = "The endpoint as changed", body = WebhookEndpointView)),
)]
pub(crate) async fn update(
    State(state): State<AppState>,
    caller: Caller,
    axum::extract::Path(raw): axum::extract::Path<String>,
    ApiJson(body): ApiJson<WebhookEndpointChange>,
) -> Result<Json<WebhookEndpointView>, ApiError> {
    let id = path_id(&raw, "webhook_id")?;
    let events = body.events.as_deref().map(check_events).transpose()?;
    if let Some(description) = &body.description {
        check_description(description)?;
    }
    if let Some(url) = &body.url {
        check_receiver_url(state.fetcher(), url, "url").await?;
    }
    let endpoint = state
        .store()
        .webhooks()
        .update_endpoint(
            caller.project_id(),
            id,
            &EndpointChange {
                url: body.url,
                description: body.description,
                events,
                enabled: body.enabled,
            },
        )
        .await
        .map_err(|e| ApiError::store(&e))?
        .ok_or_else(no_such_endpoint)?;
    Ok(Json(view(endpoint)))
}

/// `DELETE /v1/webhooks/{webhook_id}`
#[utoipa::path(
    delete,
    path = "/v1/webhooks/{webhook_id}",
    operation_id = "delete_webhook",
    summary = "Remove a webhook endpoint and its deliveries",
    tag = "webhooks",
    params(("webhook_id" = Uuid, Path, description = "The endpoint")),
    responses((status = 204, description = "Removed; deliveries still pending are dropped")),
)]
pub(crate) async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    axum::extract::Path(raw): axum::extract::Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = path_id(&raw, "webhook_id")?;
    let deleted = state
        .store()
        .webhooks()
        .delete_endpoint(caller.project_id(), id)
        .await
        .map_err(|e| ApiError::store(&e))?;
    if deleted {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(no_such_endpoint())
    }
}

/// `POST /v1/webhooks/{webhook_id}/rotate-secret`
#[utoipa::path(
    post,
    path = "/v1/webhooks/{webhook_id}/rotate-secret",
    operation_id = "rotate_webhook_secret",
    summary = "Give a webhook endpoint a new signing secret",
    description = "The old secret keeps signing for 24 hours: until then every delivery carries \
        two signatures (`webhook-signature: v1,<new> v1,<old>`), so receivers can switch at their \
        own pace.",
    tag = "webhooks",
    params(("webhook_id" = Uuid, Path, description = "The endpoint")),
    responses((status = 200, description = "The endpoint with its new secret, shown this once", body = WebhookEndpointWithSecret)),
)]
pub(crate) async fn rotate_secret(
    State(state): State<AppState>,
    caller: Caller,
    axum::extract::Path(raw): axum::extract::Path<String>,
) -> Result<Json<WebhookEndpointWithSecret>, ApiError> {
    let id = path_id(&raw, "webhook_id")?;
    let context = WebhookSecretContext {
        project_id: caller.project_id(),
        endpoint_id: Some(id),
    };
    let (secret, sealed) = new_secret(&state, &context)?;
    let endpoint = state
        .store()
        .webhooks()
        .rotate_endpoint_secret(
            caller.project_id(),
            id,
            &sealed,
            Utc::now() + ROTATION_OVERLAP,
        )
        .await
        .map_err(|e| ApiError::store(&e))?
        .ok_or_else(no_such_endpoint)?;
    tracing::info!(endpoint.id = %id, "webhook endpoint secret rotated");
    Ok(Json(WebhookEndpointWithSecret {
        endpoint: view(endpoint),
        secret,
    }))
}

/// `POST /v1/webhooks/job-secret`
#[utoipa::path(
    post,
    path = "/v1/webhooks/job-secret",
    operation_id = "rotate_job_webhook_secret",
    summary = "Make (or rotate) the project's secret for jobs' own webhook URLs",
    description = "Jobs that carry a `webhook_url` are signed with this secret. The first call \
        makes it; each later call replaces it, the old one signing for 24 hours more.",
    tag = "webhooks",
    responses((status = 200, description = "The secret, shown this once", body = JobWebhookSecret)),
)]
pub(crate) async fn rotate_job_secret(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<JobWebhookSecret>, ApiError> {
    let context = WebhookSecretContext {
        project_id: caller.project_id(),
        endpoint_id: None,
    };
    let (secret, sealed) = new_secret(&state, &context)?;
    let webhooks = state.store().webhooks();
    let had_one = webhooks
        .project_secret(caller.project_id())
        .await
        .map_err(|e| ApiError::store(&e))?
        .is_some();
    let until = Utc::now() + ROTATION_OVERLAP;
    webhooks
        .put_project_secret(caller.project_id(), &sealed, until)
        .await
        .map_err(|e| ApiError::store(&e))?;
    Ok(Json(JobWebhookSecret {
        secret,
        previous_secret_expires_at: had_one.then_some(until),
    }))
}

/// Query of the deliveries listing, checked by hand (every bad value a 400).
#[derive(Debug, Deserialize)]
pub(crate) struct PageQuery {
    limit: Option<String>,
    cursor: Option<String>,
}

fn delivery_view(delivery: Delivery) -> WebhookDelivery {
    WebhookDelivery {
        id: delivery.id,
        webhook_id: format!("msg_{}", delivery.event_id.simple()),
        event_type: delivery.event_type,
        subject_id: delivery.subject_id,
        status: match delivery.status {
            DeliveryStatus::Pending => WebhookDeliveryStatus::Pending,
            DeliveryStatus::Succeeded => WebhookDeliveryStatus::Succeeded,
            DeliveryStatus::Failed => WebhookDeliveryStatus::Failed,
        },
        attempts: delivery.attempts,
        next_attempt_at: delivery
            .next_attempt_at
            .filter(|_| delivery.status == DeliveryStatus::Pending),
        last_status_code: delivery.last_status_code,
        last_error: delivery.last_error,
        last_response: delivery.last_response,
        created_at: delivery.created_at,
        finished_at: delivery.finished_at,
    }
}

/// `GET /v1/webhooks/{webhook_id}/deliveries`
#[utoipa::path(
    get,
    path = "/v1/webhooks/{webhook_id}/deliveries",
    operation_id = "list_webhook_deliveries",
    summary = "List an endpoint's deliveries",
    tag = "webhooks",
    params(
        ("webhook_id" = Uuid, Path, description = "The endpoint"),
        ("limit" = Option<u32>, Query, description = "Page size, 1–100 (default 20)", minimum = 1, maximum = 100),
        ("cursor" = Option<Uuid>, Query, description = "The `next_cursor` of the previous page"),
    ),
    responses((status = 200, description = "Newest first: event, attempts, last status, next try", body = WebhookDeliveryPage)),
)]
pub(crate) async fn deliveries(
    State(state): State<AppState>,
    caller: Caller,
    axum::extract::Path(raw): axum::extract::Path<String>,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<WebhookDeliveryPage>, ApiError> {
    let id = path_id(&raw, "webhook_id")?;
    let Query(query) = query.map_err(|_| ApiError::bad_request("invalid query string"))?;
    let (limit, cursor) = crate::extract::page(query.limit.as_deref(), query.cursor.as_deref())?;
    let webhooks = state.store().webhooks();
    // The endpoint first: another project's endpoint is a 404, not an empty page.
    webhooks
        .endpoint(caller.project_id(), id)
        .await
        .map_err(|e| ApiError::store(&e))?
        .ok_or_else(no_such_endpoint)?;
    let mut page = webhooks
        .deliveries(caller.project_id(), id, cursor, limit + 1)
        .await
        .map_err(|e| ApiError::store(&e))?;
    let more = page.len() > limit as usize;
    page.truncate(limit as usize);
    let next_cursor = more.then(|| page.last().map(|d| d.id)).flatten();
    Ok(Json(WebhookDeliveryPage {
        deliveries: page.into_iter().map(delivery_view).collect(),
        next_cursor,
    }))
}

/// `POST /v1/webhooks/deliveries/{delivery_id}/retry`
#[utoipa::path(
    post,
    path = "/v1/webhooks/deliveries/{delivery_id}/retry",
    operation_id = "retry_webhook_delivery",
    summary = "Send a delivery again",
    description = "A failed (or succeeded) delivery becomes pending for one more attempt, made \
        at once, with the same `webhook-id`.",
    tag = "webhooks",
    params(("delivery_id" = Uuid, Path, description = "The delivery")),
    responses(
        (status = 202, description = "Queued for one more attempt", body = WebhookDelivery),
        (status = 409, description = "The delivery is still pending"),
    ),
)]
pub(crate) async fn retry(
    State(state): State<AppState>,
    caller: Caller,
    axum::extract::Path(raw): axum::extract::Path<String>,
) -> Result<Response, ApiError> {
    let id = path_id(&raw, "delivery_id")?;
    let webhooks = state.store().webhooks();
    let retried = webhooks
        .retry_delivery(caller.project_id(), id)
        .await
        .map_err(|e| ApiError::store(&e))?;
    match retried {
        Some(delivery) => Ok((StatusCode::ACCEPTED, Json(delivery_view(delivery))).into_response()),
        None => match webhooks
            .delivery(caller.project_id(), id)
            .await
            .map_err(|e| ApiError::store(&e))?
        {
            Some(_) => Err(ApiError::new(
                ApiErrorCode::Conflict,
                "the delivery is still pending: its next attempt is already due",
            )),
            None => Err(ApiError::new(ApiErrorCode::NotFound, "no such delivery")),
        },
    }
}
