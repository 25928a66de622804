//! `GET /v1/providers`: what each provider is, what credentials it needs,
//! and its per-key rate limits.

use axum::Json;
use axum::extract::State;
use byok_core::{Capabilities, CredentialField, ProviderInfo, ProviderList};
use byok_providers::ProviderDescriptor;

use crate::AppState;

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
        .map(|p| listing_of(p.descriptor()))
        .collect();
    Json(ProviderList { providers })
}

/// The wire shape (`byok-core`'s, which clients share) of an adapter's descriptor.
// Every member is named on both sides: a member added to the descriptor does not compile
// until the listing carries it too.
pub(crate) fn listing_of(descriptor: &ProviderDescriptor) -> ProviderInfo {
    let ProviderDescriptor {
        id,
        display_name,
        description,
        icon,
        status,
        models,
        capabilities,
        credential_fields,
        rate_limits,
    } = descriptor;
    let byok_providers::Capabilities {
        text_to_video,
        image_to_video,
        durations,
        aspect_ratios,
        resolutions,
        negative_prompt,
        seed,
    } = capabilities;
    ProviderInfo {
        id: id.to_string(),
        display_name: display_name.to_string(),
        description: description.to_string(),
        icon: icon.to_string(),
        status: *status,
        models: models.clone(),
        capabilities: Capabilities {
            text_to_video: *text_to_video,
            image_to_video: *image_to_video,
            durations: durations.clone(),
            aspect_ratios: aspect_ratios.clone(),
            resolutions: resolutions.clone(),
            negative_prompt: *negative_prompt,
            seed: *seed,
        },
        credential_fields: credential_fields
            .iter()
            .map(|field| {
                let byok_providers::CredentialField {
                    name,
                    label,
                    required,
                    secret,
                    kind,
                    description,
                } = field;
                CredentialField {
                    name: name.to_string(),
                    label: label.to_string(),
                    required: *required,
                    secret: *secret,
                    kind: kind.to_string(),
                    description: description.to_string(),
                }
            })
            .collect(),
        rate_limits: *rate_limits,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listing_serialises_as_the_descriptors_do() {
        let registry =
            byok_providers::Registry::new(&byok_providers::RegistryOptions::defaults()).unwrap();
        for provider in registry.all() {
            let descriptor = provider.descriptor();
            assert_eq!(
                serde_json::to_value(listing_of(descriptor)).unwrap(),
                serde_json::to_value(descriptor).unwrap(),
                "{}",
                descriptor.id
            );
        }
    }
}
