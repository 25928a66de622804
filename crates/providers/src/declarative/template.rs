//! Rendering the templates of a definition with minijinja: the submit body (JSON
//! auto-escaped), the submit path and the auth value (no escaping).

use std::collections::BTreeMap;

use byok_core::{JobError, ModelSpec, ValidatedRequest};
use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde::Serialize;
use serde_json::Value;

use super::Definition;
use crate::generation::internal;

/// The variables a submit body may use.
///
/// `prompt`, `negative_prompt`, `image` (the input image as a data URI), `image_base64` and
/// `image_media_type` (the same image split, for APIs that take them apart),
/// `duration_seconds`, `aspect_ratio`, `resolution` (the chosen format's neutral values),
/// `format` (the chosen format's `wire` value), `seed`, `model` (the model id), `mode`
/// (`text_to_video` or `image_to_video`) and `wire` (the model's `[models.wire]` table). A
/// value the request does not have is `none`, written `null`.
pub const REQUEST_VARIABLES: &[&str] = &[
    "prompt",
    "negative_prompt",
    "image",
    "image_base64",
    "image_media_type",
    "duration_seconds",
    "aspect_ratio",
    "resolution",
    "format",
    "seed",
    "model",
    "mode",
    "wire",
];

/// The variables a submit path may use.
pub(super) const PATH_VARIABLES: &[&str] = &["model", "wire"];

/// What a submit body sees.
#[derive(Debug, Serialize)]
pub(super) struct RequestContext<'a> {
    prompt: Option<&'a str>,
    negative_prompt: Option<&'a str>,
    image: Option<&'a str>,
    image_base64: Option<&'a str>,
    image_media_type: Option<&'a str>,
    duration_seconds: Option<u32>,
    aspect_ratio: Option<&'a str>,
    resolution: Option<&'a str>,
    format: Option<&'a str>,
    seed: Option<u64>,
    model: &'a str,
    mode: byok_core::Mode,
    wire: &'a serde_json::Map<String, Value>,
}

impl<'a> RequestContext<'a> {
    pub(super) fn new(
        request: &'a ValidatedRequest,
        image: Option<&'a str>,
        model: &'a ModelSpec,
    ) -> RequestContext<'a> {
        let split = image.and_then(split_data_uri);
        RequestContext {
            prompt: request.prompt.as_deref(),
            negative_prompt: request.negative_prompt.as_deref(),
            image,
            image_base64: split.map(|(_, data)| data),
            image_media_type: split.map(|(mime, _)| mime),
            duration_seconds: request.duration_seconds,
            aspect_ratio: request.format.as_ref().map(|f| f.aspect_ratio.as_str()),
            resolution: request
                .format
                .as_ref()
                .and_then(|f| f.resolution.as_deref()),
            format: request.format.as_ref().map(|f| f.wire.as_str()),
            seed: request.seed,
            model: &model.id,
            mode: request.mode,
            wire: &model.wire,
        }
    }
}

/// `data:<mime>;base64,<data>` → (`mime`, `data`).
fn split_data_uri(uri: &str) -> Option<(&str, &str)> {
    let rest = uri.strip_prefix("data:")?;
    let (mime, data) = rest.split_once(";base64,")?;
    Some((mime, data))
}

/// The environment for JSON bodies: strict undefined, JSON auto-escaping.
pub(super) fn json_env() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| AutoEscape::Json);
    env
}

/// The environment for paths and auth values: strict undefined, no escaping.
pub(super) fn text_env() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env
}

/// The top-level variables `source` uses that are neither in `allowed` nor the
/// environment's globals; or the template's syntax error.
pub(super) fn unknown_variables(
    env: &Environment<'_>,
    source: &str,
    allowed: &[&str],
) -> Result<Vec<String>, String> {
    let template = env.template_from_str(source).map_err(|e| e.to_string())?;
    let globals: Vec<&str> = env.globals().map(|(name, _)| name).collect();
    let mut unknown: Vec<String> = template
        .undeclared_variables(false)
        .into_iter()
        .filter(|v| !allowed.contains(&v.as_str()) && !globals.contains(&v.as_str()))
        .collect();
    unknown.sort();
    Ok(unknown)
}

/// Renders the body template for `model` and parses it.
pub(super) fn render_body(source: &str, context: &RequestContext<'_>) -> Result<Value, String> {
    let text = json_env()
        .render_str(source, context)
        .map_err(|e| describe(&e))?;
    serde_json::from_str(&text).map_err(|e| format!("the rendered body is not JSON: {e}"))
}

/// Renders the submit path for `model`.
pub(super) fn render_path(source: &str, model: &ModelSpec) -> Result<String, String> {
    #[derive(Serialize)]
    struct PathContext<'a> {
        model: &'a str,
        wire: &'a serde_json::Map<String, Value>,
    }
    let path = text_env()
        .render_str(
            source,
            PathContext {
                model: &model.id,
                wire: &model.wire,
            },
        )
        .map_err(|e| describe(&e))?;
    if !path.starts_with('/') || path.contains("..") || path.contains('#') {
        return Err(format!(
            "renders `{path}`, which is not a path (it must start with `/`, without `..` or `#`)"
        ));
    }
    Ok(path)
}

/// Renders an auth value from the credential fields.
pub(super) fn render_auth(
    source: &str,
    fields: &BTreeMap<String, String>,
) -> Result<String, String> {
    text_env()
        .render_str(source, fields)
        .map_err(|e| describe(&e))
}

/// A minijinja error with its detail, without the template's source.
fn describe(e: &minijinja::Error) -> String {
    match e.detail() {
        Some(detail) => format!("{} ({detail})", e.kind()),
        None => e.kind().to_string(),
    }
}

impl Definition {
    /// The submit body for `request` (already validated against this definition's
    /// catalogue) with its input image as a data URI (image-to-video). A failure is
    /// `internal`: the definition was checked at load, so one here is our fault.
    pub fn render_submit(
        &self,
        request: &ValidatedRequest,
        image: Option<&str>,
    ) -> Result<Value, JobError> {
        let model = self
            .models
            .iter()
            .find(|m| m.id == request.model)
            .ok_or_else(|| internal(&format!("{} has no model `{}`", self.id, request.model)))?;
        if image.is_some_and(|uri| split_data_uri(uri).is_none()) {
            return Err(internal("the input image is not a base64 data URI"));
        }
        render_body(
            &self.submit.body,
            &RequestContext::new(request, image, model),
        )
        .map_err(|why| {
            internal(&format!(
                "rendering the submit body of {} failed: {why}",
                self.id
            ))
        })
    }

    /// The submit path for `model` (a model of this definition).
    pub fn submit_path(&self, model: &str) -> Result<String, JobError> {
        let spec = self
            .models
            .iter()
            .find(|m| m.id == model)
            .ok_or_else(|| internal(&format!("{} has no model `{model}`", self.id)))?;
        render_path(&self.submit.path, spec)
            .map_err(|why| internal(&format!("the submit path of {}: {why}", self.id)))
    }

    /// The auth header's or query parameter's value from the credential fields (name →
    /// value); `None` for bearer auth, whose value is the field itself.
    pub fn render_auth_value(
        &self,
        fields: &BTreeMap<String, String>,
    ) -> Result<Option<String>, JobError> {
        match &self.auth {
            super::Auth::Bearer(_) => Ok(None),
            super::Auth::Header(t) | super::Auth::Query(t) => {
                // An optional field not given is empty, not undefined (as the adapter renders it).
                let mut complete = fields.clone();
                for field in &self.credential_fields {
                    complete.entry(field.name.clone()).or_default();
                }
                let rendered = render_auth(&t.value, &complete);
                for value in complete.values_mut() {
                    zeroize::Zeroize::zeroize(value);
                }
                rendered.map(Some).map_err(|_| {
                    internal(&format!("the auth value of {} could not be made", self.id))
                })
            }
        }
    }
}
