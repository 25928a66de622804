//! The neutral generation request (crates/api/README.md, "Enqueueing"): what a producer sends to
//! `POST /v1/jobs`, before any provider has seen it.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ProviderId;

/// A video to generate, in provider-neutral terms. Every field but `user_id`,
/// `provider` and `model` is optional; the catalogue of the model decides
/// what is required, allowed and defaulted (see [`crate::ModelSpec::validate`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerationRequest {
    /// The user whose stored key pays for the job.
    pub user_id: Uuid,
    /// Which provider runs it.
    pub provider: ProviderId,
    /// A model id from the provider's catalogue.
    pub model: String,
    /// What to generate.
    #[serde(default)]
    pub prompt: Option<String>,
    /// What to avoid, where the model supports it.
    #[serde(default)]
    pub negative_prompt: Option<String>,
    /// First frame / input image (https unless private networks are allowed).
    #[serde(default)]
    pub image_url: Option<String>,
    /// Length of the video.
    #[serde(default)]
    pub duration_seconds: Option<u32>,
    /// `16:9`, `9:16`, `1:1`, …
    #[serde(default)]
    pub aspect_ratio: Option<String>,
    /// `720p`, `1080p`, …
    #[serde(default)]
    pub resolution: Option<String>,
    /// Reproducibility seed, where the model supports it.
    #[serde(default)]
    pub seed: Option<u64>,
    /// The producer's own data, stored and returned untouched.
    #[serde(default = "empty_object")]
    pub metadata: serde_json::Value,
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
}

impl ValidationError {
    pub(crate) fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
            allowed: Vec::new(),
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
        }
    }
}
