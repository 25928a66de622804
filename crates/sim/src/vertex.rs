//! Veo on Vertex AI (`/vertex`, the API root), docs/provider-protocols.md §3.6–3.8, and the
//! Cloud Storage downloads of its `gcsUri` outputs (`/storage`).
//!
//! - `POST /{v1|v1beta1}/projects/{p}/locations/{l}/publishers/google/models/{m}:predictLongRunning`
//!   → `{"name": "projects/p/locations/l/publishers/google/models/m/operations/<uuid>"}`.
//! - `POST …/models/{m}:fetchPredictOperation` with `{"operationName"}` →
//!   `{"name"}` while running; `done: true` with `response.videos`
//!   (`bytesBase64Encoded`, or `gcsUri` when `storageUri` was given), an
//!   RAI-filtered response, or an `error` (code 13).
//! - `GET /storage/storage/v1/b/{bucket}/o/{object}?alt=media`: the bytes
//!   of a `gcsUri` output (the Cloud Storage JSON API path under `/storage`).
//!
//! Every call needs `Authorization: Bearer <access token>` from the token
//! endpoint (401 `UNAUTHENTICATED` otherwise); the project in the path must
//! be the token's service account's project (403 `PERMISSION_DENIED`). An
//! operation (and its outputs) is visible only to tokens of the service
//! account that started it: real Vertex scopes operations by project and
//! IAM, the simulator by account, so that a job polled with another user's
//! credentials shows up as a 404.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::post;
use base64::Engine as _;
use serde_json::{Map, Value, json};

use crate::clock::ms;
use crate::http::{bearer, type_name};
use crate::state::{Outcome, Phase, Shared, Timeline, Token, lock};
use crate::stats::{Event, Provider};
use crate::video;

/// Images are at most 20 MB (V-DOC), base64 in JSON is 4/3 of that.
const BODY_LIMIT: usize = 32 * 1024 * 1024;
const MAX_IMAGE: usize = 20 * 1024 * 1024;
const RESPONSE_TYPE: &str =
    "type.googleapis.com/cloud.ai.large_models.vision.GenerateVideoResponse";

/// An operation, as the simulator remembers it.
#[derive(Debug)]
pub(crate) struct Operation {
    owner: String,
    /// `projects/P/locations/L/publishers/google/models/M`.
    resource: String,
    timeline: Timeline,
    outcome: Outcome,
    samples: u32,
    /// `gs://bucket/prefix/` the outputs go to, as (bucket, prefix).
    storage: Option<(String, String)>,
}

/// A Cloud Storage object an operation (or an interaction) writes.
#[derive(Debug)]
pub(crate) struct Object {
    pub(crate) owner: String,
    pub(crate) source: Source,
}

/// What wrote a Cloud Storage object: its bytes exist once that job has succeeded.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    /// A `predictLongRunning` operation, by id.
    Operation(String),
    /// An interaction (Gemini Omni), by id.
    Interaction(String),
}

pub(crate) fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route(
            "/{version}/projects/{project}/locations/{location}/publishers/google/models/{model_action}",
            post(model_call),
        )
        .merge(crate::interactions::router())
        .fallback(not_found_route)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
}

/// A google.rpc.Status error.
pub(crate) fn rpc_error(code: StatusCode, status: &str, message: &str) -> Response {
    crate::http::json(
        code,
        &json!({"error": {"code": code.as_u16(), "message": message, "status": status}}),
    )
}

/// The 429 of a throttled submit (a `sim-throttled…` account, or one over its submit rate),
/// recorded as such: `RESOURCE_EXHAUSTED` naming `quota` (the per-model quota of the API
/// called) for `model`, with a `RetryInfo` of `retry_after`, as Vertex AI answers an
/// exhausted quota. `None`: not throttled.
pub(crate) fn throttle_submit(
    shared: &Shared,
    email: &str,
    retry_after: Duration,
    quota: &str,
    model: &str,
) -> Option<Response> {
    if !shared.throttle_submit(Provider::Vertex, email, email.starts_with("sim-throttled")) {
        return None;
    }
    shared.record(
        Provider::Vertex,
        Some(email),
        Event::Throttled { submit: true },
    );
    let delay = retry_after.as_secs_f64();
    Some(crate::http::json(
        StatusCode::TOO_MANY_REQUESTS,
        &json!({"error": {
            "code": 429,
            "message": format!("Quota exceeded for aiplatform.googleapis.com/{quota} with base model: {model}. Please submit a quota increase request. https://cloud.google.com/vertex-ai/docs/generative-ai/quotas-genai."),
            "status": "RESOURCE_EXHAUSTED",
            "details": [{
                "@type": "type.googleapis.com/google.rpc.RetryInfo",
                "retryDelay": format!("{delay}s"),
            }],
        }}),
    ))
}

pub(crate) fn invalid(message: &str) -> Response {
    rpc_error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", message)
}

async fn not_found_route() -> Response {
    rpc_error(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "The requested URL was not found on this server.",
    )
}

/// The live token of the request, or the 401.
pub(crate) fn authenticate(shared: &Shared, headers: &HeaderMap) -> Result<Token, Response> {
    let now = shared.now_ms();
    let token = bearer(headers).and_then(|t| lock(&shared.tokens).get(t, now));
    token.ok_or_else(|| {
        shared.record(Provider::Vertex, None, Event::Unauthorized);
        rpc_error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.",
        )
    })
}

#[derive(Debug, serde::Deserialize)]
struct ModelPath {
    version: String,
    project: String,
    location: String,
    model_action: String,
}

async fn model_call(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(path): Path<ModelPath>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    // The docs use v1, the google-genai SDK v1beta1 (§3.6).
    if path.version != "v1" && path.version != "v1beta1" {
        return not_found_route().await;
    }
    let Some((model, action)) = path.model_action.rsplit_once(':') else {
        return not_found_route().await;
    };
    if !matches!(action, "predictLongRunning" | "fetchPredictOperation") {
        return not_found_route().await;
    }
    let token = match authenticate(&shared, &headers) {
        Ok(token) => token,
        Err(response) => return response,
    };
    let resource = format!(
        "projects/{}/locations/{}/publishers/google/models/{model}",
        path.project, path.location
    );
    if path.project != token.project_id {
        let permission = if action == "predictLongRunning" {
            "aiplatform.endpoints.predict"
        } else {
            "aiplatform.endpoints.get"
        };
        return rpc_error(
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            &format!(
                "Permission '{permission}' denied on resource '//aiplatform.googleapis.com/{resource}' (or it may not exist)."
            ),
        );
    }
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            return rpc_error(
                rejection.status(),
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    "OUT_OF_RANGE"
                } else {
                    "INVALID_ARGUMENT"
                },
                &rejection.body_text(),
            );
        }
    };
    if action == "predictLongRunning" {
        predict(&shared, &token, model, &resource, &body)
    } else {
        fetch(&shared, &token, &resource, &body)
    }
}

fn predict(shared: &Shared, token: &Token, model: &str, resource: &str, body: &[u8]) -> Response {
    let email = token.client_email.as_str();
    let config = shared.config();
    if !config.vertex_models.iter().any(|m| m == model) {
        shared.record(Provider::Vertex, Some(email), Event::Rejected);
        return rpc_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            &format!("Publisher Model `{resource}` not found."),
        );
    }
    if let Some(throttled) = throttle_submit(
        shared,
        email,
        config.retry_after,
        "online_prediction_requests_per_base_model",
        model,
    ) {
        return throttled;
    }
    let request: Value = match serde_json::from_slice(body) {
        Ok(value) => value,
        Err(e) => {
            shared.record(Provider::Vertex, Some(email), Event::Rejected);
            return invalid(&format!("Invalid JSON payload received. {e}"));
        }
    };
    let valid = match validate(&request) {
        Ok(valid) => valid,
        Err(message) => {
            shared.record(Provider::Vertex, Some(email), Event::Rejected);
            return invalid(&message);
        }
    };
    let id = uuid::Uuid::new_v4().to_string();
    let now = shared.now_ms();
    let retention = ms(config.retention);
    if let Some((bucket, prefix)) = &valid.storage {
        let mut objects = lock(&shared.objects);
        for i in 0..valid.samples {
            let object = Object {
                owner: email.to_owned(),
                source: Source::Operation(id.clone()),
            };
            objects.insert(
                format!("{bucket}/{prefix}{id}/sample_{i}.mp4"),
                object,
                now,
                retention,
            );
        }
    }
    let operation = Operation {
        owner: email.to_owned(),
        resource: resource.to_owned(),
        timeline: Timeline::starting_now(shared, &config),
        outcome: Outcome::draw(&config, valid.prompt.as_deref()),
        samples: valid.samples,
        storage: valid.storage,
    };
    lock(&shared.vertex).insert(id.clone(), operation, now, retention);
    shared.record(Provider::Vertex, Some(email), Event::Accepted);
    tracing::debug!(operation = %id, account = %email, "vertex operation started");
    crate::http::json(
        StatusCode::OK,
        &json!({ "name": format!("{resource}/operations/{id}") }),
    )
}

fn fetch(shared: &Shared, token: &Token, resource: &str, body: &[u8]) -> Response {
    let email = token.client_email.as_str();
    shared.record(Provider::Vertex, Some(email), Event::Poll);
    let request: Value = match serde_json::from_slice(body) {
        Ok(value) => value,
        Err(e) => return invalid(&format!("Invalid JSON payload received. {e}")),
    };
    let Some(name) = request.get("operationName").and_then(Value::as_str) else {
        return invalid("operationName is required.");
    };
    let not_found = || {
        rpc_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            &format!("Operation `{name}` not found."),
        )
    };
    // The operation must live under the resource the call names (the SDK
    // derives one from the other).
    let Some(id) = name
        .strip_prefix(resource)
        .and_then(|rest| rest.strip_prefix("/operations/"))
    else {
        return not_found();
    };
    let config = shared.config();
    let now = shared.now_ms();
    let mut operations = lock(&shared.vertex);
    let Some(op) = operations
        .get(id, now, ms(config.retention))
        .filter(|op| op.owner == email && op.resource == resource)
    else {
        drop(operations);
        return not_found();
    };
    let body = operation_json(name, id, op, now);
    drop(operations);
    crate::http::json(StatusCode::OK, &body)
}

/// The operation as `fetchPredictOperation` answers (§3.8). `done` is left
/// out while running, as proto3 JSON omits `false`.
fn operation_json(name: &str, id: &str, op: &Operation, now_ms: i64) -> Value {
    if op.timeline.phase(now_ms) != Phase::Done {
        return json!({ "name": name });
    }
    match op.outcome {
        Outcome::Failed => json!({
            "name": name, "done": true,
            "error": {"code": 13, "message": "Internal error encountered."},
        }),
        Outcome::Moderated => json!({
            "name": name, "done": true,
            "response": {
                "@type": RESPONSE_TYPE,
                "raiMediaFilteredCount": op.samples,
                "raiMediaFilteredReasons": ["The prompt could not be submitted. This prompt contains words that violate Vertex AI's usage guidelines. Try rephrasing the prompt. If you think this was an error, send feedback. Support codes: 61493863"],
            },
        }),
        Outcome::Success => {
            let videos: Vec<Value> = (0..op.samples)
                .map(|i| match &op.storage {
                    Some((bucket, prefix)) => json!({
                        "gcsUri": format!("gs://{bucket}/{prefix}{id}/sample_{i}.mp4"),
                        "mimeType": "video/mp4",
                    }),
                    None => json!({
                        "bytesBase64Encoded": base64::engine::general_purpose::STANDARD
                            .encode(video::mp4_for(&format!("{id}/{i}"))),
                        "mimeType": "video/mp4",
                    }),
                })
                .collect();
            json!({
                "name": name, "done": true,
                "response": {"@type": RESPONSE_TYPE, "raiMediaFilteredCount": 0, "videos": videos},
            })
        }
    }
}

// ---------------------------------------------------------- validation --

/// What the simulator keeps of a valid request.
#[derive(Debug)]
struct Valid {
    prompt: Option<String>,
    samples: u32,
    storage: Option<(String, String)>,
}

/// A proto3 JSON integer: a number without fraction, or a string of digits
/// (proto3 JSON parsing accepts both).
fn integer(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9e15)
                .map(|f| f as i64)
        }),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn expect_string<'a>(
    fields: &'a Map<String, Value>,
    key: &str,
    at: &str,
) -> Result<Option<&'a str>, String> {
    match fields.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(format!(
            "Invalid value at '{at}.{key}': expected a string, got {}.",
            type_name(Some(other))
        )),
    }
}

fn one_of(fields: &Map<String, Value>, key: &str, allowed: &[&str]) -> Result<(), String> {
    match expect_string(fields, key, "parameters")? {
        Some(v) if !allowed.contains(&v) => Err(format!(
            "Unsupported value for parameters.{key}: `{v}`. Supported values: {}.",
            allowed.join(", ")
        )),
        _ => Ok(()),
    }
}

fn validate(request: &Value) -> Result<Valid, String> {
    let Some(top) = request.as_object() else {
        return Err("Invalid JSON payload received. Expected an object.".to_owned());
    };
    for key in top.keys() {
        if !matches!(key.as_str(), "instances" | "parameters" | "labels") {
            return Err(format!(
                "Invalid JSON payload received. Unknown name \"{key}\": Cannot find field."
            ));
        }
    }
    let instance = match top.get("instances") {
        Some(Value::Array(items)) if items.len() == 1 => &items[0],
        Some(Value::Array(items)) if items.is_empty() => {
            return Err("instances: at least one instance is required.".to_owned());
        }
        Some(Value::Array(_)) => {
            return Err("instances: only one instance is supported per request.".to_owned());
        }
        _ => return Err("instances is required and must be a list.".to_owned()),
    };
    let Some(instance) = instance.as_object() else {
        return Err("instances[0] must be an object.".to_owned());
    };
    for key in instance.keys() {
        if !matches!(key.as_str(), "prompt" | "image" | "lastFrame") {
            // Veo also takes referenceImages, video and mask; the simulator
            // does not, and says so rather than ignoring them.
            return Err(format!(
                "instances[0].{key} is not supported by this endpoint (byok-sim supports prompt, image and lastFrame)."
            ));
        }
    }
    let prompt = expect_string(instance, "prompt", "instances[0]")?;
    let has_image = instance.contains_key("image");
    if prompt.is_none_or(|p| p.trim().is_empty()) && !has_image {
        return Err("instances[0].prompt is required for text-to-video generation.".to_owned());
    }
    for key in ["image", "lastFrame"] {
        if let Some(image) = instance.get(key) {
            check_image(image, key)?;
        }
    }
    if instance.contains_key("lastFrame") && !has_image {
        return Err("instances[0].lastFrame requires instances[0].image.".to_owned());
    }

    let empty = Map::new();
    let parameters = match top.get("parameters") {
        None => &empty,
        Some(Value::Object(p)) => p,
        Some(_) => return Err("parameters must be an object.".to_owned()),
    };
    check_parameters(parameters).map(|(samples, storage)| Valid {
        prompt: prompt.map(str::to_owned),
        samples,
        storage,
    })
}

fn check_image(image: &Value, key: &str) -> Result<(), String> {
    let Some(image) = image.as_object() else {
        return Err(format!("instances[0].{key} must be an object."));
    };
    let bytes = expect_string(image, "bytesBase64Encoded", &format!("instances[0].{key}"))?;
    let gcs = expect_string(image, "gcsUri", &format!("instances[0].{key}"))?;
    let mime = expect_string(image, "mimeType", &format!("instances[0].{key}"))?;
    match (bytes, gcs) {
        (Some(_), Some(_)) | (None, None) => Err(format!(
            "instances[0].{key}: exactly one of bytesBase64Encoded and gcsUri must be set."
        )),
        (None, Some(uri)) => parse_gs(uri)
            .map(|_| ())
            .ok_or_else(|| format!("instances[0].{key}.gcsUri must be a gs:// URI.")),
        (Some(b64), None) => {
            let Some(mime) = mime else {
                return Err(format!("instances[0].{key}.mimeType is required."));
            };
            let expected = match mime {
                "image/png" => image::ImageFormat::Png,
                "image/jpeg" => image::ImageFormat::Jpeg,
                "image/webp" => image::ImageFormat::WebP,
                other => {
                    return Err(format!(
                        "instances[0].{key}.mimeType `{other}` is not supported; use image/png, image/jpeg or image/webp."
                    ));
                }
            };
            // proto3 JSON `bytes` accept standard and URL-safe base64.
            let data = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .or_else(|_| {
                    base64::engine::general_purpose::URL_SAFE_NO_PAD
                        .decode(b64.trim_end_matches('='))
                })
                .map_err(|_| {
                    format!("instances[0].{key}.bytesBase64Encoded is not valid base64.")
                })?;
            if data.len() > MAX_IMAGE {
                return Err(format!("instances[0].{key} is larger than 20 MB."));
            }
            if image::guess_format(&data).ok() != Some(expected) {
                return Err(format!(
                    "Unable to decode instances[0].{key}: the bytes are not a {mime} image."
                ));
            }
            Ok(())
        }
    }
}

/// `gs://bucket/prefix` → (bucket, prefix ending in `/` or empty).
pub(crate) fn parse_gs(uri: &str) -> Option<(String, String)> {
    let rest = uri.strip_prefix("gs://")?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let bucket_ok = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
    if !bucket_ok {
        return None;
    }
    let mut prefix = prefix.to_owned();
    if !prefix.is_empty() && !prefix.ends_with('/') {
        prefix.push('/');
    }
    Some((bucket.to_owned(), prefix))
}

/// The parameters of §3.7; returns (sampleCount, storage).
fn check_parameters(p: &Map<String, Value>) -> Result<(u32, Option<(String, String)>), String> {
    const KNOWN: &[&str] = &[
        "aspectRatio",
        "durationSeconds",
        "enhancePrompt",
        "generateAudio",
        "negativePrompt",
        "personGeneration",
        "resolution",
        "sampleCount",
        "seed",
        "storageUri",
        "fps",
        "pubsubTopic",
        "compressionQuality",
        "resizeMode",
    ];
    // `parameters` is a free-form protobuf Value; whether the Veo backend
    // ignores unknown names is UNVERIFIED. Refusing them catches a
    // misspelt parameter that would otherwise be silently dropped.
    if let Some(unknown) = p.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(format!("Unknown parameter: parameters.{unknown}."));
    }
    one_of(p, "aspectRatio", &["16:9", "9:16"])?;
    one_of(p, "resolution", &["720p", "1080p"])?;
    one_of(
        p,
        "personGeneration",
        &["allow_adult", "dont_allow", "allow_all"],
    )?;
    expect_string(p, "negativePrompt", "parameters")?;
    expect_string(p, "pubsubTopic", "parameters")?;
    for key in ["compressionQuality", "resizeMode"] {
        let allowed: &[&str] = if key == "resizeMode" {
            &["crop", "pad"]
        } else {
            &["optimized", "lossless"]
        };
        if let Some(v) = expect_string(p, key, "parameters")?
            && !allowed.contains(&v.to_ascii_lowercase().as_str())
        {
            return Err(format!("Unsupported value for parameters.{key}: `{v}`."));
        }
    }
    for key in ["enhancePrompt", "generateAudio"] {
        if let Some(v) = p.get(key)
            && !v.is_boolean()
        {
            return Err(format!(
                "Invalid value at 'parameters.{key}': expected a boolean, got {}.",
                type_name(Some(v))
            ));
        }
    }
    let int = |key: &str| -> Result<Option<i64>, String> {
        p.get(key)
            .map(|v| {
                integer(v).ok_or_else(|| {
                    format!("Invalid value at 'parameters.{key}': expected an integer, got {v}.")
                })
            })
            .transpose()
    };
    let duration = int("durationSeconds")?.unwrap_or(8);
    if ![4, 6, 8].contains(&duration) {
        return Err(format!(
            "Unsupported value for parameters.durationSeconds: {duration}. Supported durations are 4, 6 and 8 seconds."
        ));
    }
    if p.get("resolution").and_then(Value::as_str) == Some("1080p") && duration != 8 {
        return Err(
            "1080p videos must be 8 seconds long (parameters.durationSeconds = 8).".to_owned(),
        );
    }
    if let Some(seed) = int("seed")?
        && !(0..=4_294_967_295).contains(&seed)
    {
        return Err(format!(
            "parameters.seed must be between 0 and 4294967295, got {seed}."
        ));
    }
    if let Some(fps) = int("fps")?
        && fps != 24
    {
        return Err(format!(
            "Unsupported value for parameters.fps: {fps}. Supported: 24."
        ));
    }
    let samples = int("sampleCount")?.unwrap_or(1);
    if !(1..=4).contains(&samples) {
        return Err(format!(
            "parameters.sampleCount must be between 1 and 4, got {samples}."
        ));
    }
    let storage = match expect_string(p, "storageUri", "parameters")? {
        None => None,
        Some(uri) => Some(parse_gs(uri).ok_or_else(|| {
            format!("parameters.storageUri `{uri}` is not a valid gs://bucket/prefix URI.")
        })?),
    };
    Ok((u32::try_from(samples).unwrap_or(1), storage))
}

// ------------------------------------------------------------- storage --

/// A Cloud Storage JSON API error.
fn gcs_error(code: StatusCode, reason: &str, message: &str) -> Response {
    crate::http::json(
        code,
        &json!({"error": {"code": code.as_u16(), "message": message,
                "errors": [{"message": message, "domain": "global", "reason": reason}]}}),
    )
}

/// `GET /storage/storage/v1/b/{bucket}/o/{object}`: metadata, or the bytes
/// with `alt=media`. The object exists once its operation has succeeded.
pub(crate) async fn download(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path((bucket, object)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let now = shared.now_ms();
    let denied = "does not have storage.objects.get access to the Google Cloud Storage object. Permission 'storage.objects.get' denied on resource (or it may not exist).";
    let token = match bearer(&headers) {
        None => {
            return gcs_error(
                StatusCode::UNAUTHORIZED,
                "required",
                &format!("Anonymous caller {denied}"),
            );
        }
        Some(t) => lock(&shared.tokens).get(t, now),
    };
    let Some(token) = token else {
        return gcs_error(StatusCode::UNAUTHORIZED, "authError", "Invalid Credentials");
    };
    let config = shared.config();
    let retention = ms(config.retention);
    let key = format!("{bucket}/{object}");
    let found = lock(&shared.objects)
        .get(&key, now, retention)
        .map(|o| (o.owner.clone(), o.source.clone()));
    let missing = || {
        gcs_error(
            StatusCode::NOT_FOUND,
            "notFound",
            &format!("No such object: {key}"),
        )
    };
    let Some((owner, source)) = found else {
        return missing();
    };
    if owner != token.client_email {
        return gcs_error(
            StatusCode::FORBIDDEN,
            "forbidden",
            &format!("{} {denied}", token.client_email),
        );
    }
    let (written, job) = match &source {
        Source::Operation(operation) => (
            lock(&shared.vertex)
                .get(operation, now, retention)
                .is_some_and(|op| {
                    op.outcome == Outcome::Success && op.timeline.phase(now) == Phase::Done
                }),
            operation,
        ),
        Source::Interaction(id) => (
            crate::interactions::output_written(&shared, id, now, retention),
            id,
        ),
    };
    if !written {
        return missing();
    }
    let sample = object
        .rsplit('/')
        .next()
        .and_then(|f| f.strip_prefix("sample_"))
        .and_then(|f| f.strip_suffix(".mp4"))
        .unwrap_or("0");
    let bytes: Bytes = video::mp4_for(&format!("{job}/{sample}"));
    let padding = config.video_padding_bytes;
    if query.get("alt").map(String::as_str) == Some("media") {
        return video::download_response(bytes, padding);
    }
    crate::http::json(
        StatusCode::OK,
        &json!({
            "kind": "storage#object", "id": key, "name": object, "bucket": bucket,
            "contentType": "video/mp4", "size": (bytes.len() as u64 + padding).to_string(),
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(body: &Value) -> Valid {
        validate(body).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_text_prompt_alone_is_valid() {
        let v = ok(&json!({"instances": [{"prompt": "a cat"}]}));
        assert_eq!(v.samples, 1);
        assert!(v.storage.is_none());
    }

    #[test]
    fn parameters_are_checked() {
        let base = |p: Value| json!({"instances": [{"prompt": "a cat"}], "parameters": p});
        let v = ok(&base(json!({
            "aspectRatio": "9:16", "durationSeconds": 8, "resolution": "1080p", "sampleCount": 2,
            "seed": 4_294_967_295u64, "generateAudio": true, "storageUri": "gs://my-bucket/out",
            "personGeneration": "allow_adult", "negativePrompt": "blur"})));
        assert_eq!(v.samples, 2);
        assert_eq!(v.storage, Some(("my-bucket".into(), "out/".into())));
        assert!(ok(&base(json!({"durationSeconds": "6"}))).samples == 1);
        for bad in [
            json!({"aspectRatio": "1:1"}),
            json!({"durationSeconds": 5}),
            json!({"durationSeconds": 6.5}),
            json!({"resolution": "1080p", "durationSeconds": 6}),
            json!({"resolution": "4k"}),
            json!({"seed": -1}),
            json!({"seed": 4_294_967_296u64}),
            json!({"sampleCount": 5}),
            json!({"generateAudio": "yes"}),
            json!({"storageUri": "s3://bucket/x"}),
            json!({"personGeneration": "everyone"}),
            json!({"aspect_ratio": "16:9"}),
        ] {
            assert!(validate(&base(bad.clone())).is_err(), "{bad}");
        }
    }

    #[test]
    fn instances_are_checked() {
        for bad in [
            json!({}),
            json!({"instances": []}),
            json!({"instances": [{"prompt": "a"}, {"prompt": "b"}]}),
            json!({"instances": [{}]}),
            json!({"instances": [{"prompt": "a", "referenceImages": []}]}),
            json!({"instances": [{"prompt": "a", "image": {"bytesBase64Encoded": "aGk=", "mimeType": "image/png"}}]}),
            json!({"instances": [{"prompt": "a", "image": {"bytesBase64Encoded": "aGk="}}]}),
            json!({"instances": [{"prompt": 5}]}),
            json!({"instances": [{"prompt": "a"}], "extra": 1}),
        ] {
            assert!(validate(&bad).is_err(), "{bad}");
        }
        let png = base64::engine::general_purpose::STANDARD.encode(b"\x89PNG\r\n\x1a\n0000");
        ok(
            &json!({"instances": [{"image": {"bytesBase64Encoded": png, "mimeType": "image/png"}}]}),
        );
        ok(
            &json!({"instances": [{"prompt": "a", "image": {"gcsUri": "gs://bucket/a.png", "mimeType": "image/png"}}]}),
        );
    }

    #[test]
    fn gs_uris() {
        assert_eq!(parse_gs("gs://abc"), Some(("abc".into(), String::new())));
        assert_eq!(
            parse_gs("gs://abc/x/y/"),
            Some(("abc".into(), "x/y/".into()))
        );
        assert_eq!(parse_gs("gs://AB"), None);
        assert_eq!(parse_gs("https://abc"), None);
    }
}
