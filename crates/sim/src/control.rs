//! The simulator's own routes, under `/_sim`: stats, knobs, reset, trust.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse as _, Response};
use serde_json::json;

use crate::state::Shared;

fn error(status: StatusCode, message: &str) -> Response {
    crate::http::json(status, &json!({ "error": message }))
}

/// `GET /_sim/stats`.
pub(crate) async fn stats(State(shared): State<Arc<Shared>>) -> Response {
    match serde_json::to_value(shared.stats()) {
        Ok(body) => crate::http::json(StatusCode::OK, &body),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// `GET /_sim/config`.
pub(crate) async fn get_config(State(shared): State<Arc<Shared>>) -> Response {
    match serde_json::to_value(&*shared.config()) {
        Ok(body) => crate::http::json(StatusCode::OK, &body),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// `PUT /_sim/config` with a JSON object of the knobs to change; answers
/// the whole new configuration, or 400 naming the bad knob.
pub(crate) async fn put_config(
    State(shared): State<Arc<Shared>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return error(rejection.status(), &rejection.body_text()),
    };
    let patch: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(patch) => patch,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("not JSON: {e}")),
    };
    match shared.config().merged(&patch) {
        Ok(config) => {
            shared.set_config(config);
            get_config(State(shared)).await
        }
        Err(message) => error(StatusCode::BAD_REQUEST, &message),
    }
}

/// `POST /_sim/reset`: forget jobs, tokens and stats.
pub(crate) async fn reset(State(shared): State<Arc<Shared>>) -> Response {
    shared.reset();
    StatusCode::NO_CONTENT.into_response()
}

/// `GET /_sim/service-accounts`: the trusted accounts (after reading any
/// new files in the trusted directory); never their keys.
pub(crate) async fn service_accounts(State(shared): State<Arc<Shared>>) -> Response {
    crate::oauth::rescan(&shared).await;
    let accounts: Vec<_> = shared
        .trust
        .list()
        .iter()
        .map(|a| {
            json!({"client_email": a.client_email, "project_id": a.project_id,
                   "private_key_id": a.private_key_id})
        })
        .collect();
    crate::http::json(StatusCode::OK, &json!({ "service_accounts": accounts }))
}

/// Any other path.
pub(crate) async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such route")
}
