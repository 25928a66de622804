//! Liveness, readiness and the catch-all responses.

use std::any::Any;
use std::future::Future;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use byok_queue::Engine;
use byok_store::Store;

use crate::AppState;
use crate::error::{ApiError, ApiErrorCode};

/// How long one dependency may take to answer a readiness probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The body of `GET /healthz`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Health {
    status: HealthStatus,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum HealthStatus {
    Ok,
}

/// `GET /healthz`: the process is alive. Touches no dependency.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    summary = "Liveness",
    tag = "health",
    responses((status = 200, description = "The process is alive; no dependency was asked", body = Health)),
)]
pub(crate) async fn healthz() -> Json<Health> {
    Json(Health {
        status: HealthStatus::Ok,
    })
}

/// The body of `GET /readyz` when ready.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Ready {
    status: ReadyStatus,
    checks: Checks,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ReadyStatus {
    Ready,
}

/// Each dependency's answer: `ok`, or why not (in a 503's `details.checks`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Checks {
    /// The database.
    #[schema(example = "ok")]
    store: String,
    /// The queue (Redis, or the SQLite database of the embedded shape).
    #[schema(example = "ok")]
    queue: String,
}

/// `GET /readyz`: 200 only when the store and the queue answer; otherwise
/// 503 naming which failed.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    summary = "Readiness",
    tag = "health",
    responses((status = 200, description = "The store and the queue answered within 2 s", body = Ready)),
)]
pub(crate) async fn readyz(State(state): State<AppState>) -> Response {
    let (store, queue) = tokio::join!(
        probe("database", state.store().ping()),
        probe("queue", state.engine().ping()),
    );
    let status = |r: &Result<(), String>| match r {
        Ok(()) => "ok".to_owned(),
        Err(e) => e.clone(),
    };
    let checks = Checks {
        store: status(&store),
        queue: status(&queue),
    };
    if store.is_ok() && queue.is_ok() {
        return (
            StatusCode::OK,
            Json(Ready {
                status: ReadyStatus::Ready,
                checks,
            }),
        )
            .into_response();
    }
    let failed: Vec<&str> = [("store", &store), ("queue", &queue)]
        .into_iter()
        .filter(|(_, r)| r.is_err())
        .map(|(name, _)| name)
        .collect();
    ApiError::new(
        ApiErrorCode::ServiceUnavailable,
        format!("not ready: {} unavailable", failed.join(" and ")),
    )
    .with_details(json!({ "checks": checks }))
    .into_response()
}

/// One dependency's answer to readiness within [`PROBE_TIMEOUT`]; the error
/// names the dependency, never the error's text (it may carry a URL).
async fn probe<E: std::fmt::Display>(
    dependency: &str,
    ping: impl Future<Output = Result<(), E>>,
) -> Result<(), String> {
    match tokio::time::timeout(PROBE_TIMEOUT, ping).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: {dependency} check failed");
            Err(format!("{dependency}: unavailable"))
        }
        Err(_) => Err(format!("{dependency}: no answer within 2 s")),
    }
}

/// `GET /metrics`: the Prometheus text of this process, with the queue's
/// depth and the store's live jobs read now (no token: metrics carry no
/// user data, and scrapers rarely hold one; keep the port off the internet).
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    let text = metrics_text(state.engine(), state.store()).await;
    ([(header::CONTENT_TYPE, byok_metrics::CONTENT_TYPE)], text).into_response()
}

/// The Prometheus text of this process, with the gauges read now from
/// `engine` (queue depth) and `store` (live jobs). Served by the API's
/// `/metrics` and by a worker's `worker.metrics_listen`.
pub async fn metrics_text(engine: &dyn Engine, store: &Store) -> String {
    byok_metrics::scrape(engine.stats(), store.jobs().count_live()).await
}

pub(crate) async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ApiErrorCode::MethodNotAllowed,
        "this route does not accept that method",
    )
}

#[allow(clippy::needless_pass_by_value)] // the signature CatchPanicLayer requires
pub(crate) fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned());
    ApiError::internal(&format!("handler panicked: {message}")).into_response()
}
