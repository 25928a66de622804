//! `"provider": "auto"` (docs/routing.md): a job that names what it needs, not where to run;
//! the API picks the providers where the user has a valid key and a model fits, orders them
//! by estimated cost (or by this installation's measured time to finish) and stores the
//! chain, the first as the job's provider and the rest as its fallbacks.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{Fallback, GenerationRequest, ProviderId, Usd};

/// How `auto` orders the capable providers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RoutingStrategy {
    /// The lowest estimated cost first (list prices); a model without a price last.
    #[default]
    Cheapest,
    /// The shortest median time to finish measured by this installation first; where it has
    /// no history, by cost after those it has.
    Fastest,
}

impl RoutingStrategy {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            RoutingStrategy::Cheapest => "cheapest",
            RoutingStrategy::Fastest => "fastest",
        }
    }
}

/// The marker `"auto"` in an [`AutoRequest`]'s `provider`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Auto;

impl Serialize for Auto {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("auto")
    }
}

impl<'de> Deserialize<'de> for Auto {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        if text == "auto" {
            Ok(Auto)
        } else {
            Err(serde::de::Error::custom("expected `auto`"))
        }
    }
}

/// The body of `POST /v1/jobs` (or a job of `POST /v1/batches`) with `"provider": "auto"`:
/// the request's needs — mode (an `image_url` makes it image-to-video), length, aspect ratio,
/// resolution — and how to choose. No `model` (each provider's is chosen) and no
/// `fallbacks` (the chain is built). Unknown fields are refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AutoRequest {
    /// The user whose stored keys may pay.
    pub user_id: Uuid,
    /// `auto`.
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "auto"))]
    pub provider: Auto,
    /// How to order the capable providers (default `cheapest`).
    #[serde(default)]
    pub routing: RoutingStrategy,
    /// As in a job request.
    #[serde(default)]
    pub prompt: Option<String>,
    /// As in a job request.
    #[serde(default)]
    pub negative_prompt: Option<String>,
    /// As in a job request: its presence asks for image-to-video.
    #[serde(default)]
    pub image_url: Option<String>,
    /// As in a job request.
    #[serde(default)]
    pub duration_seconds: Option<u32>,
    /// As in a job request.
    #[serde(default)]
    pub aspect_ratio: Option<String>,
    /// As in a job request.
    #[serde(default)]
    pub resolution: Option<String>,
    /// As in a job request.
    #[serde(default)]
    pub seed: Option<u64>,
    /// As in a job request.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub metadata: Option<serde_json::Value>,
    /// As in a job request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
}

impl AutoRequest {
    /// The job request for `model` of `provider`, with these needs.
    pub fn on(&self, provider: ProviderId, model: &str) -> GenerationRequest {
        GenerationRequest {
            prompt: self.prompt.clone(),
            negative_prompt: self.negative_prompt.clone(),
            image_url: self.image_url.clone(),
            duration_seconds: self.duration_seconds,
            aspect_ratio: self.aspect_ratio.clone(),
            resolution: self.resolution.clone(),
            seed: self.seed,
            metadata: self
                .metadata
                .clone()
                .unwrap_or_else(|| serde_json::Value::Object(serde_json::Map::new())),
            webhook_url: self.webhook_url.clone(),
            ..GenerationRequest::new(self.user_id, provider, model)
        }
    }

    /// The job request of `decision`: its first choice, the others as fallbacks, the
    /// decision kept on it.
    pub fn routed(&self, decision: RoutingDecision) -> Option<GenerationRequest> {
        let first = decision.chain.first()?;
        let mut request = self.on(first.provider, &first.model);
        request.fallbacks = decision.chain[1..]
            .iter()
            .map(|c| Fallback::new(c.provider, c.model.clone()))
            .collect();
        request.routing = Some(decision);
        Some(request)
    }
}

/// The body of `POST /v1/jobs`: a job naming its provider, or one leaving the choice to
/// `"provider": "auto"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(untagged)]
pub enum JobRequest {
    /// `"provider": "auto"`.
    Auto(AutoRequest),
    /// A provider and model.
    Direct(GenerationRequest),
}

/// What `auto` chose and why, kept on the job (`request.routing`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RoutingDecision {
    /// How the chain is ordered.
    pub strategy: RoutingStrategy,
    /// Why, in words.
    pub reason: String,
    /// The capable providers in the order the job tries them (the first is its provider,
    /// the rest its fallbacks), each with the model chosen there.
    pub chain: Vec<RoutedChoice>,
    /// The providers left out, each with why.
    pub excluded: Vec<Exclusion>,
}

/// One capable provider and the model chosen there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RoutedChoice {
    /// The provider.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub provider: ProviderId,
    /// Its model that fits the request (its cheapest that does).
    pub model: String,
    /// Its list price for this request; absent: the model has no price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_cost_usd: Option<Usd>,
    /// The median time to finish of this installation's recent jobs there, in seconds;
    /// absent: no history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub median_finish_seconds: Option<f64>,
}

/// A provider `auto` left out, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Exclusion {
    /// The provider.
    pub provider: String,
    /// Why: no stored key, an invalid one, or no model that fits (naming the first misfit).
    pub reason: String,
}
