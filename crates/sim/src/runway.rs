//! Runway (`/runway`): the API of `api.dev.runwayml.com`, docs/provider-protocols.md §1.
//!
//! - `POST /v1/image_to_video`, `POST /v1/text_to_video` → `{"id": uuid}`;
//!   bodies validated per model (§1.2) with Zod-style 400s.
//! - `GET /v1/tasks/{id}`: `PENDING` → `RUNNING` (`progress` 0–1) →
//!   `SUCCEEDED` (`output` URLs under `/files`) or `FAILED`.
//! - `DELETE /v1/tasks/{id}` → 204; the task is then gone (404).
//! - `GET /v1/organization`: the key check (§1.8).
//!
//! Every route needs `Authorization: Bearer sim_…` (else 401) and
//! `X-Runway-Version: 2024-11-06` (else 400).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use serde_json::{Map, Value, json};

use crate::clock::ms;
use crate::http::{bearer, type_name};
use crate::state::{KeyHash, Outcome, Phase, Shared, Timeline, lock};
use crate::stats::{Event, Provider};
use crate::video;

/// The only API version the simulator speaks (R-SDK default).
pub(crate) const VERSION: &str = "2024-11-06";
const DOC_URL: &str = "https://docs.dev.runwayml.com/api";
/// Data URIs may be up to 5 MB encoded (R-SDK); the body limit leaves room.
const MAX_DATA_URI: usize = 5 * 1024 * 1024;
const BODY_LIMIT: usize = 8 * 1024 * 1024;

/// A task, as the simulator remembers it.
#[derive(Debug)]
pub(crate) struct Task {
    owner: KeyHash,
    timeline: Timeline,
    outcome: Outcome,
    report_progress: bool,
    credits: u64,
}

pub(crate) fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/v1/image_to_video", post(image_to_video))
        .route("/v1/text_to_video", post(text_to_video))
        .route("/v1/tasks/{id}", get(get_task).delete(delete_task))
        .route("/v1/organization", get(organization))
        .fallback(not_found_route)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
}

/// `GET /files/{id}.mp4`: a finished task's video. No auth: the real output
/// URLs are pre-signed CDN URLs.
pub(crate) async fn file(State(shared): State<Arc<Shared>>, Path(file): Path<String>) -> Response {
    let Some(id) = file.strip_suffix(".mp4") else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let config = shared.config();
    let now = shared.now_ms();
    let done = lock(&shared.runway)
        .get(id, now, ms(config.retention))
        .is_some_and(|t| t.outcome == Outcome::Success && t.timeline.phase(now) == Phase::Done);
    if !done {
        return StatusCode::NOT_FOUND.into_response();
    }
    video::download_response(video::mp4_for(id), config.video_padding_bytes)
}

fn error(status: StatusCode, message: &str) -> Response {
    crate::http::json(status, &json!({ "error": message }))
}

async fn not_found_route() -> Response {
    error(StatusCode::NOT_FOUND, "Not found")
}

/// Checks the key and the version header; returns the key's hash.
fn authenticate(shared: &Shared, headers: &HeaderMap) -> Result<KeyHash, Response> {
    let key = bearer(headers);
    let Some(key) = key.filter(|k| k.starts_with("sim_")) else {
        let id = key.map(|k| KeyHash::of(k).id());
        shared.record(Provider::Runway, id.as_deref(), Event::Unauthorized);
        // The real message is not documented (R-ERR: 401 = invalid key).
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "Invalid API key. Check that the key is correct and has not been disabled.",
        ));
    };
    let hash = KeyHash::of(key);
    let version = headers
        .get("x-runway-version")
        .and_then(|v| v.to_str().ok());
    if version != Some(VERSION) {
        // docs/provider-protocols.md §1.1: behaviour without the header is UNVERIFIED; the
        // safe reading is to refuse (400), so a client that forgets it fails
        // here rather than in production.
        return Err(error(
            StatusCode::BAD_REQUEST,
            &format!(
                "Invalid or missing X-Runway-Version header: expected {VERSION}. See https://docs.dev.runwayml.com/api-details/versioning"
            ),
        ));
    }
    Ok(hash)
}

async fn image_to_video(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    create(&shared, &headers, body, Endpoint::ImageToVideo)
}

async fn text_to_video(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    create(&shared, &headers, body, Endpoint::TextToVideo)
}

fn create(
    shared: &Shared,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    endpoint: Endpoint,
) -> Response {
    let key = match authenticate(shared, headers) {
        Ok(key) => key,
        Err(response) => return response,
    };
    let id = key.id();
    let special = bearer(headers).is_some_and(|k| k.starts_with("sim_throttled"));
    let config = shared.config();
    if shared.throttle_submit(Provider::Runway, &id, special) {
        shared.record(
            Provider::Runway,
            Some(&id),
            Event::Throttled { submit: true },
        );
        let secs = config.retry_after.as_secs_f64().ceil().max(0.0) as u64;
        let mut response = error(
            StatusCode::TOO_MANY_REQUESTS,
            "You have exceeded the rate limit for this API key. Please wait before retrying.",
        );
        // Runway documents no Retry-After (R-ERR); the SDK honours one when
        // present, so the simulator sends it (docs/provider-protocols.md §1.6).
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        return response;
    }
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            shared.record(Provider::Runway, Some(&id), Event::Rejected);
            return error(rejection.status(), &rejection.body_text());
        }
    };
    let request: Value = match serde_json::from_slice(&body) {
        Ok(value) => value,
        Err(e) => {
            shared.record(Provider::Runway, Some(&id), Event::Rejected);
            return error(
                StatusCode::BAD_REQUEST,
                &format!("Request body is not valid JSON: {e}"),
            );
        }
    };
    let valid = match validate(&request, endpoint) {
        Ok(valid) => valid,
        Err(issues) => {
            shared.record(Provider::Runway, Some(&id), Event::Rejected);
            return crate::http::json(
                StatusCode::BAD_REQUEST,
                &json!({"error": "Validation of body failed", "issues": issues, "docUrl": DOC_URL}),
            );
        }
    };
    let task_id = uuid::Uuid::new_v4().to_string();
    let task = Task {
        owner: key,
        timeline: Timeline::starting_now(shared, &config),
        outcome: Outcome::draw(&config, valid.prompt_text.as_deref()),
        report_progress: config.report_progress,
        credits: valid.credits,
    };
    let now = shared.now_ms();
    lock(&shared.runway).insert(task_id.clone(), task, now, ms(config.retention));
    shared.record_accepted(
        Provider::Runway,
        &id,
        &task_id,
        valid.prompt_text.as_deref(),
    );
    tracing::debug!(task = %task_id, key = %id, "runway task created");
    crate::http::json(StatusCode::OK, &json!({ "id": task_id }))
}

async fn get_task(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let key = match authenticate(&shared, &headers) {
        Ok(key) => key,
        Err(response) => return response,
    };
    shared.record(Provider::Runway, Some(&key.id()), Event::Poll);
    let config = shared.config();
    let now = shared.now_ms();
    let mut tasks = lock(&shared.runway);
    match tasks.get(&id, now, ms(config.retention)) {
        // Another key's task does not exist for this key.
        Some(task) if task.owner == key => {
            let body = task_json(&shared.public_url, &id, task, now);
            drop(tasks);
            crate::http::json(StatusCode::OK, &body)
        }
        _ => {
            drop(tasks);
            task_not_found()
        }
    }
}

fn task_not_found() -> Response {
    error(StatusCode::NOT_FOUND, "Task not found")
}

/// §1.4: cancels a pending or running task, deletes a finished one; either
/// way the task can no longer be fetched. The SDK docstring says "deleted
/// tasks can no longer be fetched" and the simulator's checklist (§7) says
/// "DELETE → 204 then GET → 404"; a `CANCELLED` status is only documented
/// for listings, so a later GET here is always 404.
async fn delete_task(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let key = match authenticate(&shared, &headers) {
        Ok(key) => key,
        Err(response) => return response,
    };
    shared.record(Provider::Runway, Some(&key.id()), Event::Cancel);
    let config = shared.config();
    let now = shared.now_ms();
    let mut tasks = lock(&shared.runway);
    let owned = tasks
        .get(&id, now, ms(config.retention))
        .is_some_and(|t| t.owner == key);
    if owned {
        tasks.remove(&id);
        drop(tasks);
        StatusCode::NO_CONTENT.into_response()
    } else {
        drop(tasks);
        task_not_found()
    }
}

/// §1.8 `GET /v1/organization`.
async fn organization(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Err(response) = authenticate(&shared, &headers) {
        return response;
    }
    let mut tier = Map::new();
    let mut usage = Map::new();
    for model in ["gen4_turbo", "gen4.5", "veo3", "veo3.1", "veo3.1_fast"] {
        tier.insert(
            model.to_owned(),
            json!({"maxConcurrentGenerations": 20, "maxDailyGenerations": 25000}),
        );
        usage.insert(model.to_owned(), json!({"dailyGenerations": 0}));
    }
    crate::http::json(
        StatusCode::OK,
        &json!({
            "creditBalance": 1_000_000,
            "tier": {"maxMonthlyCreditSpend": 10_000_000, "models": tier},
            "usage": {"models": usage},
        }),
    )
}

/// The task as `GET /v1/tasks/{id}` shows it (§1.3). `estimatedCost` and
/// `cost` are in the current SDK's response types (runwayml 5.x).
fn task_json(public_url: &str, id: &str, task: &Task, now_ms: i64) -> Value {
    let created = chrono::DateTime::from_timestamp_millis(task.timeline.submitted_ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut body = json!({"id": id, "createdAt": created});
    let Some(fields) = body.as_object_mut() else {
        return body;
    };
    let estimated = json!({ "credits": task.credits });
    match task.timeline.phase(now_ms) {
        Phase::Pending => {
            fields.insert("status".into(), json!("PENDING"));
            fields.insert("estimatedCost".into(), estimated);
        }
        Phase::Running(progress) => {
            fields.insert("status".into(), json!("RUNNING"));
            fields.insert("estimatedCost".into(), estimated);
            if task.report_progress {
                fields.insert("progress".into(), json!(progress));
            }
        }
        Phase::Done => match task.outcome {
            Outcome::Success => {
                fields.insert("status".into(), json!("SUCCEEDED"));
                fields.insert("cost".into(), json!({ "credits": task.credits }));
                fields.insert(
                    "output".into(),
                    json!([format!("{public_url}/files/{id}.mp4")]),
                );
            }
            Outcome::Moderated => {
                fields.insert("status".into(), json!("FAILED"));
                fields.insert("cost".into(), json!({ "credits": 0 }));
                fields.insert(
                    "failure".into(),
                    json!("Your prompt text did not pass our content moderation."),
                );
                fields.insert("failureCode".into(), json!("SAFETY.INPUT.TEXT"));
            }
            Outcome::Failed => {
                fields.insert("status".into(), json!("FAILED"));
                fields.insert("cost".into(), json!({ "credits": 0 }));
                fields.insert(
                    "failure".into(),
                    json!("An internal error occurred. Please try again."),
                );
                fields.insert("failureCode".into(), json!("INTERNAL"));
            }
        },
    }
    body
}

// ---------------------------------------------------------- validation --

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    ImageToVideo,
    TextToVideo,
}

#[derive(Debug, Clone, Copy)]
enum Durations {
    /// Any integer in the range.
    Range(i64, i64),
    /// One of these.
    OneOf(&'static [i64]),
}

/// What one model accepts on one endpoint (§1.2).
#[derive(Debug)]
struct ModelSpec {
    ratios: &'static [&'static str],
    durations: Durations,
    duration_required: bool,
    /// Used for the credit estimate when the request has no duration.
    default_duration: i64,
    prompt_text_required: bool,
    /// Keys allowed besides `model`, `promptImage`, `promptText`, `ratio`,
    /// `duration`, `seed`.
    extra_keys: &'static [&'static str],
    /// `promptImage` array positions allowed.
    positions: &'static [&'static str],
    credits_per_second: u64,
}

const GEN4_RATIOS: &[&str] = &[
    "1280:720", "720:1280", "1104:832", "832:1104", "960:960", "1584:672",
];
const VEO_RATIOS: &[&str] = &["1280:720", "720:1280", "1080:1920", "1920:1080"];

/// The models of §1.2. Unknown keys are refused (Zod `unrecognized_keys`):
/// whether Runway's schemas are strict is UNVERIFIED, and refusing is the
/// safe reading — e.g. `negativePrompt` where a model has none.
fn spec(endpoint: Endpoint, model: &str) -> Option<ModelSpec> {
    let gen4_keys: &[&str] = &["contentModeration"];
    let veo31_keys: &[&str] = &["negativePrompt", "audio"];
    let image = endpoint == Endpoint::ImageToVideo;
    let spec = match model {
        "gen4_turbo" if image => ModelSpec {
            ratios: GEN4_RATIOS,
            durations: Durations::Range(2, 10),
            duration_required: false,
            default_duration: 10,
            prompt_text_required: false,
            extra_keys: gen4_keys,
            positions: &["first"],
            credits_per_second: 5,
        },
        "gen4.5" => ModelSpec {
            ratios: if image {
                GEN4_RATIOS
            } else {
                &["1280:720", "720:1280"]
            },
            durations: Durations::Range(2, 10),
            duration_required: true,
            default_duration: 10,
            prompt_text_required: true,
            extra_keys: gen4_keys,
            positions: &["first"],
            credits_per_second: 12,
        },
        "veo3.1" | "veo3.1_fast" => ModelSpec {
            ratios: VEO_RATIOS,
            durations: Durations::OneOf(&[4, 6, 8]),
            duration_required: false,
            default_duration: 8,
            prompt_text_required: !image,
            extra_keys: veo31_keys,
            positions: &["first", "last"],
            credits_per_second: if model == "veo3.1" { 40 } else { 15 },
        },
        _ => return None,
    };
    Some(spec)
}

/// What the simulator keeps of a valid request.
#[derive(Debug)]
struct Valid {
    prompt_text: Option<String>,
    credits: u64,
}

/// Zod-style issues (Zod 4 wording, as the live API answers: docs/provider-protocols.md
/// §1.6).
#[derive(Debug, Default)]
struct Issues(Vec<Value>);

impl Issues {
    fn invalid_type(&mut self, path: &[&str], expected: &str, got: Option<&Value>) {
        self.0.push(json!({
            "code": "invalid_type",
            "expected": expected,
            "path": path,
            "message": format!("Invalid input: expected {expected}, received {}", type_name(got)),
        }));
    }
    fn invalid_value(&mut self, path: &[&str], values: &[Value]) {
        let options: Vec<String> = values.iter().map(Value::to_string).collect();
        let message = if options.len() == 1 {
            format!("Invalid input: expected {}", options[0])
        } else {
            format!("Invalid option: expected one of {}", options.join("|"))
        };
        self.0.push(json!({
            "code": "invalid_value", "values": values, "path": path, "message": message,
        }));
    }
    fn too_big(&mut self, path: &[&str], origin: &str, maximum: i64) {
        let message = match origin {
            "string" => format!("Too big: expected string to have <={maximum} characters"),
            _ => format!("Too big: expected {origin} to be <={maximum}"),
        };
        self.0.push(json!({
            "code": "too_big", "origin": origin, "maximum": maximum, "inclusive": true,
            "path": path, "message": message,
        }));
    }
    fn too_small(&mut self, path: &[&str], origin: &str, minimum: i64) {
        self.0.push(json!({
            "code": "too_small", "origin": origin, "minimum": minimum, "inclusive": true,
            "path": path, "message": format!("Too small: expected {origin} to be >={minimum}"),
        }));
    }
    fn unrecognized(&mut self, path: &[&str], keys: &[String]) {
        let quoted: Vec<String> = keys.iter().map(|k| format!("\"{k}\"")).collect();
        let noun = if keys.len() == 1 { "key" } else { "keys" };
        self.0.push(json!({
            "code": "unrecognized_keys", "keys": keys, "path": path,
            "message": format!("Unrecognized {noun}: {}", quoted.join(", ")),
        }));
    }
    fn custom(&mut self, path: &[&str], message: &str) {
        self.0
            .push(json!({"code": "custom", "path": path, "message": message}));
    }
}

fn validate(request: &Value, endpoint: Endpoint) -> Result<Valid, Vec<Value>> {
    let mut issues = Issues::default();
    let Some(body) = request.as_object() else {
        issues.invalid_type(&[], "object", Some(request));
        return Err(issues.0);
    };
    let model = body.get("model");
    let Some(model_name) = model.and_then(Value::as_str) else {
        issues.invalid_type(&["model"], "string", model);
        return Err(issues.0);
    };
    let Some(spec) = spec(endpoint, model_name) else {
        // A discriminated union with no matching member.
        issues.0.push(json!({
            "code": "invalid_union", "errors": [], "note": "No matching discriminator",
            "discriminator": "model", "path": ["model"], "message": "Invalid input",
        }));
        return Err(issues.0);
    };

    let unknown: Vec<String> = body
        .keys()
        .filter(|k| {
            let base = ["model", "promptText", "ratio", "duration", "seed"];
            let image = endpoint == Endpoint::ImageToVideo && k.as_str() == "promptImage";
            !base.contains(&k.as_str()) && !image && !spec.extra_keys.contains(&k.as_str())
        })
        .cloned()
        .collect();
    if !unknown.is_empty() {
        issues.unrecognized(&[], &unknown);
    }

    if endpoint == Endpoint::ImageToVideo {
        match body.get("promptImage") {
            None => issues.invalid_type(&["promptImage"], "string", None),
            Some(image) => check_prompt_image(image, spec.positions, &mut issues),
        }
    }

    let prompt_text = match body.get("promptText") {
        None if spec.prompt_text_required => {
            issues.invalid_type(&["promptText"], "string", None);
            None
        }
        None => None,
        Some(Value::String(text)) => {
            // Zod counts string length in UTF-16 code units.
            if text.encode_utf16().count() > 1000 {
                issues.too_big(&["promptText"], "string", 1000);
            } else if text.is_empty() {
                issues.too_small(&["promptText"], "string", 1);
            }
            Some(text.clone())
        }
        Some(other) => {
            issues.invalid_type(&["promptText"], "string", Some(other));
            None
        }
    };

    match body.get("ratio") {
        Some(Value::String(r)) if spec.ratios.contains(&r.as_str()) => {}
        Some(Value::String(_)) => issues.invalid_value(
            &["ratio"],
            &spec.ratios.iter().map(|r| json!(r)).collect::<Vec<_>>(),
        ),
        other => issues.invalid_type(&["ratio"], "string", other),
    }

    let duration = match body.get("duration") {
        None => {
            if spec.duration_required {
                issues.invalid_type(&["duration"], "number", None);
            }
            spec.default_duration
        }
        Some(value) => match integer(value) {
            Some(d) => {
                match spec.durations {
                    Durations::Range(lo, hi) => {
                        if d < lo {
                            issues.too_small(&["duration"], "number", lo);
                        } else if d > hi {
                            issues.too_big(&["duration"], "number", hi);
                        }
                    }
                    Durations::OneOf(allowed) => {
                        if !allowed.contains(&d) {
                            issues.invalid_value(
                                &["duration"],
                                &allowed.iter().map(|d| json!(d)).collect::<Vec<_>>(),
                            );
                        }
                    }
                }
                d
            }
            None => {
                issues.invalid_type(&["duration"], "int", Some(value));
                spec.default_duration
            }
        },
    };

    if let Some(seed) = body.get("seed") {
        match integer(seed) {
            Some(s) if s < 0 => issues.too_small(&["seed"], "number", 0),
            Some(s) if s > 4_294_967_295 => issues.too_big(&["seed"], "number", 4_294_967_295),
            Some(_) => {}
            None => issues.invalid_type(&["seed"], "int", Some(seed)),
        }
    }
    if let Some(negative) = body.get("negativePrompt")
        && spec.extra_keys.contains(&"negativePrompt")
        && !negative.is_string()
    {
        issues.invalid_type(&["negativePrompt"], "string", Some(negative));
    }
    if let Some(audio) = body.get("audio")
        && spec.extra_keys.contains(&"audio")
        && !audio.is_boolean()
    {
        issues.invalid_type(&["audio"], "boolean", Some(audio));
    }
    if let Some(moderation) = body.get("contentModeration")
        && spec.extra_keys.contains(&"contentModeration")
    {
        check_content_moderation(moderation, &mut issues);
    }

    if issues.0.is_empty() {
        let credits = u64::try_from(duration).unwrap_or(0) * spec.credits_per_second;
        Ok(Valid {
            prompt_text,
            credits,
        })
    } else {
        Err(issues.0)
    }
}

/// An integer JSON number (Zod `int`: no fraction).
fn integer(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9e15)
                .map(|f| f as i64)
        }),
        _ => None,
    }
}

fn check_content_moderation(value: &Value, issues: &mut Issues) {
    let Some(fields) = value.as_object() else {
        issues.invalid_type(&["contentModeration"], "object", Some(value));
        return;
    };
    let unknown: Vec<String> = fields
        .keys()
        .filter(|k| k.as_str() != "publicFigureThreshold")
        .cloned()
        .collect();
    if !unknown.is_empty() {
        issues.unrecognized(&["contentModeration"], &unknown);
    }
    if let Some(threshold) = fields.get("publicFigureThreshold")
        && !matches!(threshold.as_str(), Some("auto" | "low"))
    {
        issues.invalid_value(
            &["contentModeration", "publicFigureThreshold"],
            &[json!("auto"), json!("low")],
        );
    }
}

/// `promptImage`: a URI string, or `[{uri, position}]` with a `first`.
fn check_prompt_image(value: &Value, positions: &[&str], issues: &mut Issues) {
    match value {
        Value::String(uri) => {
            if let Err(message) = check_image_uri(uri) {
                issues.custom(&["promptImage"], &message);
            }
        }
        Value::Array(items) => {
            if items.is_empty() || items.len() > positions.len() {
                issues.custom(
                    &["promptImage"],
                    &format!("promptImage must hold 1 to {} images", positions.len()),
                );
                return;
            }
            let mut seen = Vec::new();
            for item in items {
                let Some(fields) = item.as_object() else {
                    issues.invalid_type(&["promptImage"], "object", Some(item));
                    continue;
                };
                match fields.get("uri").and_then(Value::as_str) {
                    Some(uri) => {
                        if let Err(message) = check_image_uri(uri) {
                            issues.custom(&["promptImage", "uri"], &message);
                        }
                    }
                    None => {
                        issues.invalid_type(&["promptImage", "uri"], "string", fields.get("uri"));
                    }
                }
                match fields.get("position").and_then(Value::as_str) {
                    Some(p) if positions.contains(&p) && !seen.contains(&p) => seen.push(p),
                    _ => issues.invalid_value(
                        &["promptImage", "position"],
                        &positions.iter().map(|p| json!(p)).collect::<Vec<_>>(),
                    ),
                }
            }
            if !seen.is_empty() && !seen.contains(&"first") {
                issues.custom(&["promptImage"], "promptImage must include a `first` image");
            }
        }
        other => issues.invalid_type(&["promptImage"], "string", Some(other)),
    }
}

/// R-IN: HTTPS URLs on a domain name (not an IP), at most 2048 characters;
/// `runway://` upload URIs; `data:image/…;base64,` URIs up to 5 MB. The
/// simulator never fetches a URL.
fn check_image_uri(uri: &str) -> Result<(), String> {
    if let Some(rest) = uri.strip_prefix("data:") {
        if uri.len() > MAX_DATA_URI {
            return Err("Invalid asset: data URIs must be at most 5 MB".to_owned());
        }
        let Some((media, data)) = rest.split_once(";base64,") else {
            return Err("Invalid asset: data URIs must be base64-encoded".to_owned());
        };
        if !media.starts_with("image/") {
            return Err(format!("Invalid asset: unsupported media type {media}"));
        }
        if base64::engine::general_purpose::STANDARD
            .decode(data)
            .is_err()
        {
            return Err("Invalid asset: the data URI is not valid base64".to_owned());
        }
        return Ok(());
    }
    if uri.starts_with("runway://") {
        return Ok(());
    }
    if uri.len() > 2048 {
        return Err("Invalid asset URL: URLs must be at most 2048 characters".to_owned());
    }
    let url = url::Url::parse(uri).map_err(|_| "Invalid asset URL".to_owned())?;
    if url.scheme() != "https" {
        return Err("Invalid asset URL: only HTTPS URLs are supported".to_owned());
    }
    match url.host() {
        Some(url::Host::Domain(_)) => Ok(()),
        _ => Err("Invalid asset URL: the URL must use a domain name, not an IP address".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issues(body: &Value, endpoint: Endpoint) -> Vec<Value> {
        validate(body, endpoint).unwrap_err()
    }

    #[test]
    fn a_minimal_gen4_turbo_request_is_valid() {
        let v = validate(
            &json!({"model": "gen4_turbo", "promptImage": "https://example.com/a.png", "ratio": "1280:720"}),
            Endpoint::ImageToVideo,
        )
        .unwrap();
        assert_eq!(v.credits, 50);
    }

    #[test]
    fn gen4_turbo_is_image_only_and_takes_no_negative_prompt() {
        let i = issues(
            &json!({"model": "gen4_turbo", "promptText": "x", "ratio": "1280:720"}),
            Endpoint::TextToVideo,
        );
        assert_eq!(i[0]["code"], "invalid_union");
        let i = issues(
            &json!({"model": "gen4_turbo", "promptImage": "https://example.com/a.png", "ratio": "1280:720", "negativePrompt": "x"}),
            Endpoint::ImageToVideo,
        );
        assert_eq!(i[0]["code"], "unrecognized_keys");
        assert_eq!(i[0]["keys"], json!(["negativePrompt"]));
    }

    #[test]
    fn ratios_durations_and_seeds_are_checked_per_model() {
        let i = issues(
            &json!({"model": "veo3.1", "promptText": "x", "ratio": "960:960", "duration": 5, "seed": 1.5}),
            Endpoint::TextToVideo,
        );
        let codes: Vec<&str> = i.iter().map(|i| i["code"].as_str().unwrap()).collect();
        assert_eq!(codes, ["invalid_value", "invalid_value", "invalid_type"]);
        assert_eq!(i[0]["path"], json!(["ratio"]));
        assert_eq!(i[1]["path"], json!(["duration"]));
        assert_eq!(i[2]["path"], json!(["seed"]));
        let i = issues(
            &json!({"model": "gen4.5", "promptText": "x", "ratio": "1280:720", "duration": 11}),
            Endpoint::TextToVideo,
        );
        assert_eq!(i[0]["code"], "too_big");
        let i = issues(
            &json!({"model": "gen4.5", "promptText": "x", "ratio": "1280:720"}),
            Endpoint::TextToVideo,
        );
        assert_eq!(
            i[0]["message"],
            "Invalid input: expected number, received undefined"
        );
    }

    #[test]
    fn prompt_text_is_at_most_1000_utf16_units() {
        let long = "é".repeat(1001);
        let i = issues(
            &json!({"model": "veo3.1", "promptText": long, "ratio": "1280:720"}),
            Endpoint::TextToVideo,
        );
        assert_eq!(i[0]["code"], "too_big");
        assert!(
            validate(
                &json!({"model": "veo3.1", "promptText": "é".repeat(1000), "ratio": "1280:720"}),
                Endpoint::TextToVideo
            )
            .is_ok()
        );
    }

    #[test]
    fn prompt_images() {
        assert!(check_image_uri("data:image/png;base64,iVBORw0KGgo=").is_ok());
        assert!(check_image_uri("data:image/png;base64,???").is_err());
        assert!(check_image_uri("data:text/plain;base64,aGk=").is_err());
        assert!(check_image_uri("http://example.com/a.png").is_err());
        assert!(check_image_uri("https://127.0.0.1/a.png").is_err());
        assert!(check_image_uri("runway://upload/abc").is_ok());
        let mut i = Issues::default();
        check_prompt_image(
            &json!([{"uri": "https://example.com/a.png", "position": "last"}]),
            &["first", "last"],
            &mut i,
        );
        assert_eq!(i.0.len(), 1, "{:?}", i.0);
        let mut i = Issues::default();
        check_prompt_image(
            &json!([{"uri": "https://example.com/a.png", "position": "first"},
                    {"uri": "https://example.com/b.png", "position": "last"}]),
            &["first", "last"],
            &mut i,
        );
        assert!(i.0.is_empty(), "{:?}", i.0);
    }

    #[test]
    fn a_task_walks_and_ends_with_an_output_url() {
        let task = Task {
            owner: KeyHash::of("sim_a"),
            timeline: Timeline {
                submitted_ms: 0,
                render_ms: 1000,
            },
            outcome: Outcome::Success,
            report_progress: true,
            credits: 50,
        };
        assert_eq!(task_json("http://s", "t1", &task, 0)["status"], "PENDING");
        let running = task_json("http://s", "t1", &task, 500);
        assert_eq!(running["status"], "RUNNING");
        assert_eq!(running["progress"], 0.5);
        let done = task_json("http://s", "t1", &task, 1000);
        assert_eq!(done["status"], "SUCCEEDED");
        assert_eq!(done["output"], json!(["http://s/files/t1.mp4"]));
        assert_eq!(done["createdAt"], "1970-01-01T00:00:00.000Z");
    }
}
