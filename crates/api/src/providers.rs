//! `GET /v1/providers`: what each provider is, what credentials it needs,
//! and its per-key rate limits.

use axum::Json;
use axum::extract::State;
use byok_providers::ProviderDescriptor;
use serde::Serialize;
use utoipa::ToSchema;

use crate::AppState;

/// The body of `GET /v1/providers`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProviderList {
    /// Every provider this build knows, in listing order.
    providers: Vec<ProviderDescriptor>,
}

#[utoipa::path(
    get,
    path = "/v1/providers",
    operation_id = "list_providers",
    summary = "List the providers and their capabilities",
    tag = "providers",
    responses((
        status = 200,
        description = "Every provider: its models and their capabilities (durations, aspect \
            ratios, resolutions, text/image input, negative prompt, seed), the fields of its \
            `credentials` object and the per-key rate limits",
        body = ProviderList,
    )),
)]
pub(crate) async fn list(State(state): State<AppState>) -> Json<ProviderList> {
    let providers = state
        .providers()
        .all()
        .map(|p| p.descriptor().clone())
        .collect();
    Json(ProviderList { providers })
}
