//! The static description of a provider served by `GET /v1/providers`.

use std::borrow::Cow;

use byok_core::{ModelSpec, ModelStatus, ProviderId, RateLimits};

use crate::catalogue::Capabilities;
use serde::Serialize;

/// Static description of one provider for `GET /v1/providers`.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = Provider))]
// Only serialised, so this changes nothing but the schema: it lists every member.
#[serde(deny_unknown_fields)]
pub struct ProviderDescriptor {
    /// The stable provider id.
    pub id: ProviderId,
    /// Human name: "Google Veo", "Runway ML", "Stability AI".
    pub display_name: Cow<'static, str>,
    /// One sentence on what the provider is and how it is reached.
    pub description: Cow<'static, str>,
    /// A stable icon slug ("veo", "runway", "stability") the UI maps to an image.
    pub icon: Cow<'static, str>,
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

/// One field of a provider's `credentials` object, for building a form.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
// Only serialised, so this changes nothing but the schema: it lists every member.
#[serde(deny_unknown_fields)]
pub struct CredentialField {
    /// The JSON member name, e.g. `api_key`.
    pub name: Cow<'static, str>,
    /// Form label.
    pub label: Cow<'static, str>,
    /// Whether a `credentials` object without it is refused (`parse_credentials`).
    pub required: bool,
    /// Whether the value is a secret (mask it in forms; never shown back).
    pub secret: bool,
    /// `string`, or `json` (a JSON object, or a string containing one).
    #[cfg_attr(feature = "openapi", schema(example = "string"))]
    pub kind: Cow<'static, str>,
    /// Help text.
    pub description: Cow<'static, str>,
}
