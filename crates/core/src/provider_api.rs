//! The body of `GET /v1/providers`, shared by the server and clients. The server builds it
//! from each adapter's descriptor (`byok-providers`); the shapes here are what goes on the
//! wire.

use serde::{Deserialize, Serialize};

use crate::{ModelSpec, ModelStatus, RateLimits};

/// The body of `GET /v1/providers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ProviderList {
    /// Every provider this build knows, in listing order.
    pub providers: Vec<ProviderInfo>,
}

/// Static description of one provider for `GET /v1/providers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = Provider))]
#[serde(deny_unknown_fields)]
pub struct ProviderInfo {
    /// The stable provider id.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::ProviderId))]
    pub id: String,
    /// Human name: "Google Veo", "Runway ML", "Stability AI".
    pub display_name: String,
    /// One sentence on what the provider is and how it is reached.
    pub description: String,
    /// A stable icon slug ("veo", "runway", "stability") the UI maps to an image.
    pub icon: String,
    /// `available` while some model can be used; `retired` when every model is (keys can
    /// still be stored and checked).
    pub status: ModelStatus,
    /// The models and what each accepts (the capability catalogue).
    pub models: Vec<ModelSpec>,
    /// The union of the models' capabilities.
    pub capabilities: Capabilities,
    /// The fields of the `credentials` object a user submits, in display order.
    pub credential_fields: Vec<CredentialField>,
    /// The per-key limits this deployment enforces (configuration; docs/rate-limits.md).
    pub rate_limits: RateLimits,
}

/// A provider's capabilities across all its models, for listings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    /// Some model makes video from text.
    pub text_to_video: bool,
    /// Some model makes video from an image.
    pub image_to_video: bool,
    /// Every selectable length, in seconds.
    pub durations: Vec<u32>,
    /// Every aspect ratio.
    pub aspect_ratios: Vec<String>,
    /// Every resolution.
    pub resolutions: Vec<String>,
    /// Some model takes a negative prompt.
    pub negative_prompt: bool,
    /// Some model takes a seed.
    pub seed: bool,
}

/// One field of a provider's `credentials` object, for building a form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CredentialField {
    /// The JSON member name, e.g. `api_key`.
    pub name: String,
    /// Form label.
    pub label: String,
    /// Whether a `credentials` object without it is refused (`parse_credentials`).
    pub required: bool,
    /// Whether the value is a secret (mask it in forms; never shown back).
    pub secret: bool,
    /// `string`, or `json` (a JSON object, or a string containing one).
    #[cfg_attr(feature = "openapi", schema(example = "string"))]
    pub kind: String,
    /// Help text.
    pub description: String,
}
