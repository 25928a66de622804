//! The neutral generation request (crates/api/README.md, "Enqueueing"): what a producer sends to
//! `POST /v1/jobs`, before any provider has seen it.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ProviderId;

/// A video to generate, in provider-neutral terms: the body of `POST /v1/jobs`, and the
/// `request` of a job as accepted. Every field but `user_id`, `provider` and `model` is
/// optional; the model's catalogue (`GET /v1/providers`) decides what is required,
/// allowed and defaulted. Unknown fields are refused.
// Checked by `ModelSpec::validate`. The example is the OpenAPI document's (a test checks
// that it fits the built-in catalogue).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::ToSchema),
    schema(example = json!({
        "user_id": "0b6c1d2e-3f40-4a5b-8c6d-7e8f90a1b2c3",
        "provider": "runway",
        "model": "gen4.5",
        "prompt": "A lighthouse at dawn, waves rolling in",
        "duration_seconds": 5,
        "aspect_ratio": "16:9",
        "resolution": "720p",
        "seed": 42,
        "metadata": {"order": 42},
    }))
)]
#[serde(deny_unknown_fields)]
pub struct GenerationRequest {
    /// The user whose stored key pays for the job.
    pub user_id: Uuid,
    /// Which provider runs it.
    pub provider: ProviderId,
    /// A model id from the provider's catalogue.
    pub model: String,
    /// What to generate (required, allowed or refused per the model and mode).
    #[serde(default)]
    pub prompt: Option<String>,
    /// What to avoid, where the model supports it.
    #[serde(default)]
    pub negative_prompt: Option<String>,
    /// First frame, which makes the job image-to-video: an https URL (or http to a
    /// private address when `fetch.allow_private_networks`).
    #[serde(default)]
    pub image_url: Option<String>,
    /// Length in seconds: one of the model's `durations`.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(maximum = 4_294_967_295_u64))]
    pub duration_seconds: Option<u32>,
    /// One of the model's aspect ratios: `16:9`, `9:16`, `1:1`, …
    #[serde(default)]
    pub aspect_ratio: Option<String>,
    /// One of the model's resolutions: `720p`, `1080p`, …
    #[serde(default)]
    pub resolution: Option<String>,
    /// Reproducibility seed, up to the model's `seed_max`.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(maximum = 18_446_744_073_709_551_615_u64))]
    pub seed: Option<u64>,
    /// The producer's own JSON, stored and returned untouched (default `{}`).
    #[serde(default = "empty_object")]
    pub metadata: serde_json::Value,
    /// Where to POST this job's events (`job.running`, `job.progress`, `job.succeeded`,
    /// `job.failed`, `job.cancelled`) besides the project's webhook endpoints: an https URL
    /// that passes the same address checks as endpoints, signed with the project's job-webhook
    /// secret (`POST /v1/webhooks/job-secret`).
    // Left out of the JSON when absent, so requests stored before it existed keep their
    // fingerprints (Idempotency-Key replays compare them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(max_length = 2048))]
    pub webhook_url: Option<String>,
    /// Where to go, in order, when the provider above cannot take the job for a reason
    /// another provider can fix (docs/failover.md): each entry another provider and model
    /// (on the user's own key there), with the fields that differ. Never after a provider
    /// accepted the job. At most [`MAX_FALLBACKS`].
    // Left out when empty, as `webhook_url`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallbacks: Vec<Fallback>,
    /// Set by the API on a job enqueued with `"provider": "auto"`: what it chose and why
    /// (docs/routing.md). Refused in a request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing: Option<crate::RoutingDecision>,
}

/// The most fallbacks one job may carry.
pub const MAX_FALLBACKS: usize = 5;

/// One entry of a job's `fallbacks`: a provider and model, and the request fields that differ
/// there (a field left out keeps the job's own value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Fallback {
    /// The provider.
    pub provider: ProviderId,
    /// A model id of its catalogue.
    pub model: String,
    /// Replaces the job's `prompt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// Replaces the job's `negative_prompt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub negative_prompt: Option<String>,
    /// Replaces the job's `image_url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_url: Option<String>,
    /// Replaces the job's `duration_seconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<u32>,
    /// Replaces the job's `aspect_ratio`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aspect_ratio: Option<String>,
    /// Replaces the job's `resolution`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<String>,
    /// Replaces the job's `seed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

impl Fallback {
    /// `model` of `provider`, with every field the job's own.
    pub fn new(provider: ProviderId, model: impl Into<String>) -> Self {
        Fallback {
            provider,
            model: model.into(),
            prompt: None,
            negative_prompt: None,
            image_url: None,
            duration_seconds: None,
            aspect_ratio: None,
            resolution: None,
            seed: None,
        }
    }
}

impl GenerationRequest {
    /// The request of fallback `i`: this one with that entry's provider, model and fields,
    /// and the entries after it as its own fallbacks. `None` past the last entry.
    pub fn fallback_request(&self, i: usize) -> Option<GenerationRequest> {
        let entry = self.fallbacks.get(i)?;
        let or = |own: &Option<String>, theirs: &Option<String>| theirs.clone().or(own.clone());
        Some(GenerationRequest {
            user_id: self.user_id,
            provider: entry.provider,
            model: entry.model.clone(),
            prompt: or(&self.prompt, &entry.prompt),
            negative_prompt: or(&self.negative_prompt, &entry.negative_prompt),
            image_url: or(&self.image_url, &entry.image_url),
            duration_seconds: entry.duration_seconds.or(self.duration_seconds),
            aspect_ratio: or(&self.aspect_ratio, &entry.aspect_ratio),
            resolution: or(&self.resolution, &entry.resolution),
            seed: entry.seed.or(self.seed),
            metadata: self.metadata.clone(),
            webhook_url: self.webhook_url.clone(),
            fallbacks: self.fallbacks[i + 1..].to_vec(),
            routing: self.routing.clone(),
        })
    }
}

impl GenerationRequest {
    /// A request for `model` of `provider`, paid by `user_id`, with nothing else set (the
    /// model's defaults) and empty `metadata`; set the other fields with struct update
    /// syntax.
    pub fn new(user_id: Uuid, provider: ProviderId, model: impl Into<String>) -> Self {
        GenerationRequest {
            user_id,
            provider,
            model: model.into(),
            prompt: None,
            negative_prompt: None,
            image_url: None,
            duration_seconds: None,
            aspect_ratio: None,
            resolution: None,
            seed: None,
            metadata: empty_object(),
            webhook_url: None,
            fallbacks: Vec::new(),
            routing: None,
        }
    }
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

/// Why a request does not fit a model: the field, what is wrong, and (when
/// the field takes one of a set) the allowed values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    /// The request field, as named in the body (`duration_seconds`).
    pub field: &'static str,
    /// What is wrong with it.
    pub message: String,
    /// The values the field accepts, when it takes one of a set.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allowed: Vec<String>,
    /// Set when the request names a retired model (field `model`): the API answers
    /// `model_retired` rather than `invalid_request`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retired: Option<Box<crate::Retirement>>,
}

impl ValidationError {
    pub(crate) fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
            allowed: Vec::new(),
            retired: None,
        }
    }

    pub(crate) fn retired(model: &str, retirement: &crate::Retirement) -> Self {
        let mut message = format!(
            "model `{model}` was retired by its provider on {} ({})",
            retirement.date, retirement.source
        );
        if !retirement.alternatives.is_empty() {
            let places: Vec<String> = retirement
                .alternatives
                .iter()
                .map(|a| a.to_string())
                .collect();
            message.push_str(&format!(
                "; the same model family is offered by {}",
                places.join(", ")
            ));
        }
        Self {
            field: "model",
            message,
            allowed: Vec::new(),
            retired: Some(Box::new(retirement.clone())),
        }
    }

    pub(crate) fn one_of<T: ToString>(
        field: &'static str,
        message: impl Into<String>,
        allowed: impl IntoIterator<Item = T>,
    ) -> Self {
        Self {
            field,
            message: message.into(),
            allowed: allowed.into_iter().map(|v| v.to_string()).collect(),
            retired: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_is_the_smallest_body_with_its_defaults() {
        let user = Uuid::new_v4();
        let parsed: GenerationRequest = serde_json::from_value(serde_json::json!({
            "user_id": user, "provider": "runway", "model": "gen4.5",
        }))
        .unwrap();
        assert_eq!(
            GenerationRequest::new(user, ProviderId::RUNWAY, "gen4.5"),
            parsed
        );
    }
}
