//! `GET /v1/providers`: what each provider is, what credentials it needs,
//! and its per-key rate limits.

use axum::Json;
use axum::extract::State;
use serde_json::json;

use crate::AppState;

pub(crate) async fn list(State(state): State<AppState>) -> Json<serde_json::Value> {
    let providers: Vec<_> = state
        .providers()
        .all()
        .map(|p| p.descriptor().clone())
        .collect();
    Json(json!({ "providers": providers }))
}
