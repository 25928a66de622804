//! The capability catalogue: what each model of a provider accepts, as data.
//!
//! Providers add and retire models, so the catalogue is not code: each
//! adapter ships its models as a TOML file (`crates/providers/catalogue/`)
//! and `providers.<id>.models` in the configuration replaces them. Checking
//! a [`GenerationRequest`] against a model is the same logic for every
//! provider and lives here: [`Catalogue::validate`].

use serde::{Deserialize, Serialize};

use crate::request::{GenerationRequest, ValidationError};

/// The longest prompt any model is asked to take, whatever its catalogue
/// says: a bound on what a producer can make the system store and send.
pub const PROMPT_MAX_CHARS_CEILING: u32 = 10_000;

/// How a video is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// From a prompt alone.
    TextToVideo,
    /// From an input image (and maybe a prompt).
    ImageToVideo,
}

/// Whether a field must, may or must not be given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Requirement {
    /// Must be given.
    Required,
    /// May be given.
    Optional,
    /// Must not be given.
    Unsupported,
}

/// Prompt rules of a model, per mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PromptRules {
    /// For text-to-video.
    pub text_to_video: Requirement,
    /// For image-to-video.
    pub image_to_video: Requirement,
    /// Longest prompt, in characters (Unicode scalar values).
    pub max_chars: u32,
}

/// One output shape a model can make: an aspect ratio at a resolution, and
/// how the provider names it on the wire (Runway: `1280:720`; Vertex:
/// `16:9`; Stability: the input image size `1024x576`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Format {
    /// Neutral aspect ratio, `16:9`.
    pub aspect_ratio: String,
    /// Neutral resolution, `720p`; absent when the model has no choice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub resolution: Option<String>,
    /// The provider's own value for this shape.
    pub wire: String,
    /// Modes this shape is offered in; empty means all of the model's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub modes: Vec<Mode>,
    /// Durations allowed with this shape; empty means all of the model's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub durations: Vec<u32>,
}

impl Format {
    fn offered_in(&self, mode: Mode) -> bool {
        self.modes.is_empty() || self.modes.contains(&mode)
    }
}

/// What one model accepts.
// In the schema, the fields that are always serialised are `required` although they may be
// left out of a catalogue file (`default`), and those left out when empty are not `null`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = Model))]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// The provider's model id, sent on the wire and used in requests.
    pub id: String,
    /// For people.
    pub display_name: String,
    /// Modes the model supports.
    pub modes: Vec<Mode>,
    /// Prompt rules.
    pub prompt: PromptRules,
    /// Durations in whole seconds; empty when the length is not selectable.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required))]
    pub durations: Vec<u32>,
    /// Used when the request names none (must be one of `durations`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub default_duration: Option<u32>,
    /// Output shapes, the default first.
    pub formats: Vec<Format>,
    /// The shape follows the input image (Stability): without an
    /// `aspect_ratio` in the request, the worker picks the shape nearest the
    /// image's own.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required))]
    pub format_from_image: bool,
    /// Whether `negative_prompt` is accepted.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required))]
    pub negative_prompt: bool,
    /// Largest accepted seed; absent when the model takes no seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub seed_max: Option<u64>,
    /// Whether jobs can use the model.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required))]
    pub status: ModelStatus,
    /// When and where the provider announced the end of a `retired` model, and where its
    /// family is still offered; present exactly when `status` is `retired`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub retirement: Option<Retirement>,
    /// Its list prices, with their source and date; absent when not known (the cost of
    /// its jobs is then unknown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub pricing: Option<crate::Pricing>,
    /// How the adapter addresses the model on the wire beyond its id (fal's app and input
    /// field names, Replicate's model path or version, which Google API serves it): data
    /// each adapter reads and checks when the registry is built. Not part of listings.
    #[serde(default, skip_serializing)]
    #[cfg_attr(feature = "openapi", schema(ignore))]
    pub wire: serde_json::Map<String, serde_json::Value>,
}

/// Whether a model can be used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ModelStatus {
    /// Jobs can use it.
    #[default]
    Available,
    /// The provider no longer serves it: a job for it is refused at enqueue
    /// (`model_retired`) and nothing is sent.
    Retired,
}

/// The end of a model: the day, the public notice, and where the same model family
/// is still offered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Retirement {
    /// The day the provider stopped serving the model, `YYYY-MM-DD` (UTC).
    #[cfg_attr(feature = "openapi", schema(example = "2025-07-24"))]
    pub date: String,
    /// The provider's public notice (a URL).
    pub source: String,
    /// Models of other providers in the same family, for the error and the listing.
    #[serde(default)]
    pub alternatives: Vec<ModelRef>,
}

/// A model of a provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ModelRef {
    /// The provider.
    pub provider: crate::ProviderId,
    /// Its model id.
    pub model: String,
}

impl std::fmt::Display for ModelRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} `{}`", self.provider, self.model)
    }
}

/// A request checked against a model and completed with its defaults: what
/// an adapter turns into the provider's wire format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidatedRequest {
    /// The model id.
    pub model: String,
    /// Text or image to video.
    pub mode: Mode,
    /// The prompt, when given.
    pub prompt: Option<String>,
    /// The negative prompt, when given and supported.
    pub negative_prompt: Option<String>,
    /// The input image's URL (image-to-video).
    pub image_url: Option<String>,
    /// Length, when the model lets it be chosen.
    pub duration_seconds: Option<u32>,
    /// The chosen shape; `None` when it is to follow the input image.
    pub format: Option<Format>,
    /// The seed, when given and supported.
    pub seed: Option<u64>,
}

/// One provider's models.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalogue {
    /// Every model, in the order listings show them.
    pub models: Vec<ModelSpec>,
}

impl Catalogue {
    /// The model named `id`.
    pub fn model(&self, id: &str) -> Option<&ModelSpec> {
        self.models.iter().find(|m| m.id == id)
    }

    /// Checks `request` against its model and fills in the defaults. Errors
    /// name the request field and, where it takes one of a set, the values
    /// it accepts.
    pub fn validate(
        &self,
        request: &GenerationRequest,
    ) -> Result<ValidatedRequest, ValidationError> {
        let model = self.model(&request.model).ok_or_else(|| {
            ValidationError::one_of(
                "model",
                format!(
                    "{} has no model `{}`",
                    request.provider,
                    truncate(&request.model)
                ),
                self.models
                    .iter()
                    .filter(|m| m.status == ModelStatus::Available)
                    .map(|m| m.id.clone()),
            )
        })?;
        model.validate(request)
    }

    /// Checks that the catalogue itself is coherent (every default allowed,
    /// every format reachable). Used when loading it from data.
    pub fn check(&self) -> Result<(), String> {
        if self.models.is_empty() {
            return Err("the catalogue has no models".into());
        }
        for m in &self.models {
            let fail = |why: &str| Err(format!("model `{}`: {why}", m.id));
            match (m.status, &m.retirement) {
                (ModelStatus::Available, None) => {}
                (ModelStatus::Retired, Some(r)) => {
                    if !is_iso_date(&r.date) {
                        return fail("retirement.date must be YYYY-MM-DD");
                    }
                    if !(r.source.starts_with("https://") || r.source.starts_with("http://")) {
                        return fail("retirement.source must be the URL of the notice");
                    }
                }
                (ModelStatus::Available, Some(_)) => {
                    return fail("retirement is only for a model whose status is retired");
                }
                (ModelStatus::Retired, None) => {
                    return fail("a retired model needs a retirement (date, source)");
                }
            }
            if m.id.is_empty() || m.modes.is_empty() || m.formats.is_empty() {
                return fail("needs an id, at least one mode and at least one format");
            }
            if let Some(d) = m.default_duration
                && !m.durations.contains(&d)
            {
                return fail("default_duration is not one of durations");
            }
            if !m.durations.is_empty() && m.default_duration.is_none() {
                return fail("durations without a default_duration");
            }
            if m.prompt.max_chars == 0 || m.prompt.max_chars > PROMPT_MAX_CHARS_CEILING {
                return fail("prompt.max_chars must be 1..=10000");
            }
            for mode in &m.modes {
                if !m.formats.iter().any(|f| f.offered_in(*mode)) {
                    return fail("a mode has no format");
                }
            }
            for f in &m.formats {
                if f.durations.iter().any(|d| !m.durations.contains(d)) {
                    return fail("a format allows a duration the model does not");
                }
            }
            if let Some(pricing) = &m.pricing {
                let resolutions: Vec<&str> = m
                    .formats
                    .iter()
                    .filter_map(|f| f.resolution.as_deref())
                    .collect();
                pricing.check(&resolutions).or_else(|why| fail(&why))?;
            }
        }
        Ok(())
    }
}

impl ModelSpec {
    /// The list price of `request` (checked against this model): its length (the
    /// default when it names none) at its resolution. `None` when the model has no
    /// prices, or they depend on a length or resolution the request does not fix.
    pub fn estimate(&self, request: &ValidatedRequest) -> Option<crate::Usd> {
        let seconds = request.duration_seconds.or(self.default_duration);
        let resolution = request
            .format
            .as_ref()
            .and_then(|f| f.resolution.as_deref());
        self.pricing.as_ref()?.estimate(seconds, resolution)
    }

    /// Checks `request` against this model (see [`Catalogue::validate`]). A retired
    /// model refuses every request with an error carrying its [`Retirement`].
    pub fn validate(
        &self,
        request: &GenerationRequest,
    ) -> Result<ValidatedRequest, ValidationError> {
        if let Some(retirement) = &self.retirement {
            return Err(ValidationError::retired(&self.id, retirement));
        }
        let mode = self.mode_for(request)?;
        let prompt = self.check_prompt(request, mode)?;

        let negative_prompt = match &request.negative_prompt {
            Some(_) if !self.negative_prompt => {
                return Err(ValidationError::new(
                    "negative_prompt",
                    format!("model `{}` does not take a negative prompt", self.id),
                ));
            }
            Some(text) => {
                check_text("negative_prompt", text, self.prompt.max_chars)?;
                Some(text.clone())
            }
            None => None,
        };

        let seed = match (request.seed, self.seed_max) {
            (Some(_), None) => {
                return Err(ValidationError::new(
                    "seed",
                    format!("model `{}` does not take a seed", self.id),
                ));
            }
            (Some(seed), Some(max)) if seed > max => {
                return Err(ValidationError::new(
                    "seed",
                    format!("must be between 0 and {max}"),
                ));
            }
            (seed, _) => seed,
        };

        let format = self.choose_format(request, mode)?;
        let duration_seconds = self.choose_duration(request, format.as_ref())?;

        Ok(ValidatedRequest {
            model: self.id.clone(),
            mode,
            prompt,
            negative_prompt,
            image_url: request.image_url.clone(),
            duration_seconds,
            format,
            seed,
        })
    }

    fn mode_for(&self, request: &GenerationRequest) -> Result<Mode, ValidationError> {
        let mode = if request.image_url.is_some() {
            Mode::ImageToVideo
        } else {
            Mode::TextToVideo
        };
        if self.modes.contains(&mode) {
            return Ok(mode);
        }
        Err(match mode {
            Mode::TextToVideo => ValidationError::new(
                "image_url",
                format!(
                    "model `{}` makes video from an image: image_url is required",
                    self.id
                ),
            ),
            Mode::ImageToVideo => ValidationError::new(
                "image_url",
                format!(
                    "model `{}` makes video from text only: image_url is not supported",
                    self.id
                ),
            ),
        })
    }

    fn check_prompt(
        &self,
        request: &GenerationRequest,
        mode: Mode,
    ) -> Result<Option<String>, ValidationError> {
        let rule = match mode {
            Mode::TextToVideo => self.prompt.text_to_video,
            Mode::ImageToVideo => self.prompt.image_to_video,
        };
        let prompt = request.prompt.as_deref().filter(|p| !p.trim().is_empty());
        match (rule, prompt) {
            (Requirement::Required, None) => Err(ValidationError::new(
                "prompt",
                format!("model `{}` requires a prompt", self.id),
            )),
            (Requirement::Unsupported, Some(_)) => Err(ValidationError::new(
                "prompt",
                format!("model `{}` takes no prompt in this mode", self.id),
            )),
            (_, Some(text)) => {
                check_text("prompt", text, self.prompt.max_chars)?;
                Ok(Some(text.to_owned()))
            }
            (_, None) => Ok(None),
        }
    }

    fn choose_format(
        &self,
        request: &GenerationRequest,
        mode: Mode,
    ) -> Result<Option<Format>, ValidationError> {
        let offered: Vec<&Format> = self.formats.iter().filter(|f| f.offered_in(mode)).collect();
        let aspects = unique(offered.iter().map(|f| f.aspect_ratio.as_str()));
        if let Some(aspect) = &request.aspect_ratio
            && !aspects.contains(&aspect.as_str())
        {
            return Err(ValidationError::one_of(
                "aspect_ratio",
                format!("model `{}` does not make {}", self.id, truncate(aspect)),
                aspects,
            ));
        }
        let resolutions = unique(
            offered
                .iter()
                .filter(|f| {
                    request
                        .aspect_ratio
                        .as_deref()
                        .is_none_or(|a| a == f.aspect_ratio)
                })
                .filter_map(|f| f.resolution.as_deref()),
        );
        if let Some(resolution) = &request.resolution
            && !resolutions.contains(&resolution.as_str())
        {
            let message = if resolutions.is_empty() {
                format!("model `{}` has no resolution to choose", self.id)
            } else {
                format!(
                    "model `{}` does not make {} at this aspect ratio",
                    self.id,
                    truncate(resolution)
                )
            };
            return Err(ValidationError::one_of("resolution", message, resolutions));
        }
        if self.format_from_image && request.aspect_ratio.is_none() && request.resolution.is_none()
        {
            return Ok(None);
        }
        // The first offered format that fits what was asked; the catalogue
        // lists defaults first.
        let chosen = offered.into_iter().find(|f| {
            request
                .aspect_ratio
                .as_deref()
                .is_none_or(|a| a == f.aspect_ratio)
                && request
                    .resolution
                    .as_deref()
                    .is_none_or(|r| Some(r) == f.resolution.as_deref())
        });
        Ok(chosen.cloned())
    }

    fn choose_duration(
        &self,
        request: &GenerationRequest,
        format: Option<&Format>,
    ) -> Result<Option<u32>, ValidationError> {
        if self.durations.is_empty() {
            return match request.duration_seconds {
                Some(_) => Err(ValidationError::new(
                    "duration_seconds",
                    format!(
                        "model `{}` has a fixed length: duration_seconds is not supported",
                        self.id
                    ),
                )),
                None => Ok(None),
            };
        }
        let allowed = match format {
            Some(f) if !f.durations.is_empty() => &f.durations,
            _ => &self.durations,
        };
        let duration = match request.duration_seconds {
            Some(d) => d,
            // The model's default, or the shape's only allowed length.
            None => match self.default_duration {
                Some(d) if allowed.contains(&d) => d,
                _ => allowed[0],
            },
        };
        if !allowed.contains(&duration) {
            let message = if allowed.len() == self.durations.len() {
                format!("model `{}` does not make {duration} s videos", self.id)
            } else {
                format!(
                    "model `{}` makes only these lengths at this aspect ratio and resolution",
                    self.id
                )
            };
            return Err(ValidationError::one_of(
                "duration_seconds",
                message,
                allowed.iter(),
            ));
        }
        Ok(Some(duration))
    }
}

fn check_text(field: &'static str, text: &str, max_chars: u32) -> Result<(), ValidationError> {
    let max = max_chars.min(PROMPT_MAX_CHARS_CEILING) as usize;
    if text.chars().count() > max {
        return Err(ValidationError::new(
            field,
            format!("longer than {max} characters"),
        ));
    }
    if text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(ValidationError::new(field, "contains control characters"));
    }
    Ok(())
}

fn unique<'a>(values: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for v in values {
        if !out.contains(&v) {
            out.push(v);
        }
    }
    out
}

/// Request values are echoed in errors; a hostile one must not flood them.
fn truncate(value: &str) -> String {
    let mut out: String = value.chars().take(64).collect();
    if value.chars().count() > 64 {
        out.push('…');
    }
    out
}

/// `YYYY-MM-DD` with a plausible month and day.
pub(crate) fn is_iso_date(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if b.len() != 10
        || b[4] != b'-'
        || b[7] != b'-'
        || !digits(0..4)
        || !digits(5..7)
        || !digits(8..10)
    {
        return false;
    }
    let month: u32 = s[5..7].parse().unwrap_or(0);
    let day: u32 = s[8..10].parse().unwrap_or(0);
    (1..=12).contains(&month) && (1..=31).contains(&day)
}
