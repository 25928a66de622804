//! Each provider's models, as data: `catalogue/<provider>.toml`, embedded in the
//! binary, replaced by `providers.<id>.models` when configured.

use byok_core::{Catalogue, Mode, ModelPrice, ProviderId};
use serde::Serialize;

use crate::registry::{ProviderSpec, RegistryError};

/// The built-in catalogue of `spec`'s provider (`spec.catalogue`), not yet checked.
pub(crate) fn parse_built_in(spec: &ProviderSpec) -> Result<Catalogue, RegistryError> {
    toml::from_str(spec.catalogue).map_err(|e| RegistryError::BadCatalogue {
        provider: spec.id,
        reason: format!("the built-in catalogue does not parse: {e}"),
    })
}

/// Replaces the prices of the models `prices` names (`[[providers.<id>.prices]]`); a model
/// the catalogue lacks, or named twice, is a configuration error. The prices themselves are
/// checked with the rest of the catalogue.
pub(crate) fn set_prices(
    provider: ProviderId,
    catalogue: &mut Catalogue,
    prices: &[ModelPrice],
) -> Result<(), RegistryError> {
    for (i, price) in prices.iter().enumerate() {
        let refuse = |reason: String| RegistryError::BadPrices { provider, reason };
        if prices[..i].iter().any(|p| p.model == price.model) {
            return Err(refuse(format!("model `{}` is priced twice", price.model)));
        }
        let model = catalogue
            .models
            .iter_mut()
            .find(|m| m.id == price.model)
            .ok_or_else(|| refuse(format!("the catalogue has no model `{}`", price.model)))?;
        model.pricing = Some(price.pricing.clone());
    }
    Ok(())
}

/// `catalogue` (configured, built in or defined) once checked for coherence.
pub(crate) fn check(
    provider: ProviderId,
    catalogue: Catalogue,
) -> Result<Catalogue, RegistryError> {
    catalogue
        .check()
        .map_err(|reason| RegistryError::BadCatalogue { provider, reason })?;
    Ok(catalogue)
}

/// A provider's capabilities across all its models, for listings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
// Only serialised, so this changes nothing but the schema: it lists every member.
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

impl Capabilities {
    pub(crate) fn of(catalogue: &Catalogue) -> Capabilities {
        let models = &catalogue.models;
        let mut durations: Vec<u32> = models
            .iter()
            .flat_map(|m| m.durations.iter().copied())
            .collect();
        durations.sort_unstable();
        durations.dedup();
        let mut aspect_ratios: Vec<String> = Vec::new();
        let mut resolutions: Vec<String> = Vec::new();
        for f in models.iter().flat_map(|m| &m.formats) {
            if !aspect_ratios.contains(&f.aspect_ratio) {
                aspect_ratios.push(f.aspect_ratio.clone());
            }
            if let Some(r) = &f.resolution
                && !resolutions.contains(r)
            {
                resolutions.push(r.clone());
            }
        }
        Capabilities {
            text_to_video: models.iter().any(|m| m.modes.contains(&Mode::TextToVideo)),
            image_to_video: models.iter().any(|m| m.modes.contains(&Mode::ImageToVideo)),
            durations,
            aspect_ratios,
            resolutions,
            negative_prompt: models.iter().any(|m| m.negative_prompt),
            seed: models.iter().any(|m| m.seed_max.is_some()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_built_in_catalogue_parses_and_is_coherent() {
        for spec in crate::registry::PROVIDERS {
            let id = spec.id;
            let catalogue = parse_built_in(spec)
                .and_then(|c| check(id, c))
                .unwrap_or_else(|e| panic!("{id}: {e}"));
            assert!(!catalogue.models.is_empty());
        }
    }

    /// A priced model's estimate follows the request's length; an unpriced model's cost
    /// is unknown.
    #[test]
    fn priced_models_estimate_their_requests() {
        use byok_core::{GenerationRequest, Usd};
        let fal = crate::registry::PROVIDERS
            .iter()
            .find(|s| s.id == ProviderId::FAL)
            .unwrap();
        let catalogue = parse_built_in(fal).unwrap();
        let user = uuid::Uuid::nil();
        let estimate = |model: &str, seconds: Option<u32>| {
            let request = GenerationRequest {
                prompt: Some("a lighthouse".into()),
                image_url: Some("https://example.com/first.png".into()),
                duration_seconds: seconds,
                ..GenerationRequest::new(user, ProviderId::FAL, model)
            };
            let spec = catalogue.model(model).unwrap();
            spec.estimate(&spec.validate(&request).unwrap())
        };
        assert_eq!(
            estimate("kling-v2.1-master", Some(10)),
            Some(Usd::from_micros(2_800_000))
        );
        assert_eq!(
            estimate("kling-v2.1-master", None),
            Some(Usd::from_micros(1_400_000)),
            "the default length, 5 s"
        );
        assert_eq!(
            estimate("hailuo-02-standard", Some(6)),
            Some(Usd::from_micros(270_000))
        );
        assert_eq!(
            estimate("luma-ray-2-flash", Some(5)),
            None,
            "no prices known"
        );
    }
}
