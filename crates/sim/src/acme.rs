//! Acme (`/acme`): a fictional video API that exists only in the simulator, to exercise
//! declarative provider definitions (`definitions/acme.toml`) with every kind of answer a
//! definition can describe. No real provider speaks it; it is specified here and in
//! crates/sim/README.md ("Acme").
//!
//! - `GET /v1/account[?include=credits]`: the key check: 200 `{"data": {"id", "workspace",
//!   "credits"?}}`; 401 for a key that is not the simulator's, 403 for a revoked one.
//! - `POST /v1/models/{model}/videos`: a video; 201 `{"data": <video>}`, `PENDING`; the video
//!   echoes the body as `request` (an input image as its size and SHA-256). Models
//!   `acme-swift` (engine `swift-2`) and `acme-studio` (`studio-1`); `acme-classic` is
//!   retired (410), any other model 404.
//! - `GET /v1/videos/{id}`: `{"data": <video>}`; `PENDING` → `RUNNING` (`progress`, an integer
//!   0–100) → `SUCCEEDED` (`outputs: [{url, content_type}]`), `FAILED` (`error: {code,
//!   message}`: `CONTENT_MODERATED`, `INSUFFICIENT_CREDITS`, `INTERNAL_ERROR`,
//!   `RENDER_TIMEOUT`) or `CANCELED`. 404 for an unknown id, another key's or a forgotten
//!   video.
//! - `POST /v1/videos/{id}/cancel`: 200 with the video, `CANCELED` when it had not ended (an
//!   ended video is answered as it is).
//! - `GET /files/{id}/video.mp4`: a succeeded video's MP4, without auth.
//!
//! Every `/v1` route needs the key, in `X-Api-Key: <key>[; workspace=<name>]` or in the
//! query as `api_key=<key>` (not both), and `Acme-Version: 2024-06-01`. Errors are
//! `{"error": {"code", "message"}}`. The prompt picks the answer (as `moderation_trigger`
//! does for every protocol): at submit `acme:rate-limit` (429 with `X-RateLimit-Reset-Seconds`),
//! `acme:edge-limit` (429 with `Retry-After`), `acme:unavailable` (503), `acme:blocked` (451);
//! at the end of the render `acme:no-credits`, `acme:internal`, `acme:timeout` (a failure code
//! each) and `acme:canceled` (cancelled by Acme). Keys: `sim_…` valid, `sim_throttled…` one 429
//! on the first submit, `sim_broke…` 402 at submit, `sim_revoked…` 403 everywhere.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use base64::Engine as _;
use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256};

use crate::clock::ms;
use crate::config::SimConfig;
use crate::http::type_name;
use crate::state::{Jobs, KeyHash, Phase, Shared, Timeline, chance, lock};
use crate::stats::{Event, Provider};
use crate::video;

/// The API version every request must name in [`VERSION_HEADER`].
pub(crate) const API_VERSION: &str = "2024-06-01";
const VERSION_HEADER: &str = "acme-version";
const KEY_HEADER: &str = "x-api-key";
const KEY_PARAMETER: &str = "api_key";
/// The wait header of Acme's own rate limiter (seconds); its edge sends `Retry-After`.
pub(crate) const RESET_HEADER: &str = "x-ratelimit-reset-seconds";
/// An input image of 10 MB as base64 in JSON, and room for the rest.
const BODY_LIMIT: usize = 16 * 1024 * 1024;
/// The largest input image, decoded.
const IMAGE_LIMIT: usize = 10_000_000;
/// The longest prompt (and negative prompt), in characters.
const PROMPT_LIMIT: usize = 2000;
/// Every simulated video lasts two seconds.
const OUTPUT_SECONDS: u32 = 2;

/// Prompt markers that pick an answer at submit.
const RATE_LIMIT: &str = "acme:rate-limit";
const EDGE_LIMIT: &str = "acme:edge-limit";
const UNAVAILABLE: &str = "acme:unavailable";
const BLOCKED: &str = "acme:blocked";
/// Prompt markers that pick how a render ends.
const NO_CREDITS: &str = "acme:no-credits";
const INTERNAL: &str = "acme:internal";
const TIMEOUT: &str = "acme:timeout";
const CANCELED: &str = "acme:canceled";

/// A model Acme serves, by the name in the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Model {
    name: &'static str,
    /// The `engine` the body must name.
    engine: &'static str,
    image_to_video: bool,
    resolutions: &'static [&'static str],
    /// Whether it takes `negative_prompt` and `seed`.
    extras: bool,
    /// 1080p renders are 8 s only.
    long_1080p: bool,
}

const MODELS: &[Model] = &[
    Model {
        name: "acme-swift",
        engine: "swift-2",
        image_to_video: true,
        resolutions: &["720p"],
        extras: true,
        long_1080p: false,
    },
    Model {
        name: "acme-studio",
        engine: "studio-1",
        image_to_video: false,
        resolutions: &["720p", "1080p"],
        extras: false,
        long_1080p: true,
    },
];
/// Models Acme no longer serves: 410.
const RETIRED: &[&str] = &["acme-classic"];
const DURATIONS: &[u64] = &[4, 8];
/// `(aspect_ratio, resolution, size)`: the only sizes Acme renders.
const SIZES: &[(&str, &str, &str)] = &[
    ("16:9", "720p", "1280x720"),
    ("9:16", "720p", "720x1280"),
    ("1:1", "720p", "720x720"),
    ("16:9", "1080p", "1920x1080"),
    ("9:16", "1080p", "1080x1920"),
    ("1:1", "1080p", "1080x1080"),
];
const IMAGE_TYPES: &[&str] = &["image/png", "image/jpeg", "image/webp"];

/// Acme's videos.
#[derive(Debug, Default)]
pub(crate) struct Store {
    videos: Jobs<Video>,
}

/// A video.
#[derive(Debug)]
pub(crate) struct Video {
    owner: KeyHash,
    model: &'static str,
    workspace: Option<String>,
    /// The create body as received, echoed in every answer (an input image as its size and
    /// SHA-256).
    request: Value,
    timeline: Timeline,
    ending: Ending,
    report_progress: bool,
    /// When a cancel arrived before the end.
    cancelled_ms: Option<i64>,
}

/// How a render ends, drawn at submit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Success,
    Failed(Failure),
    /// Acme cancelled it itself (an operator, a policy sweep).
    Canceled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    Moderated,
    NoCredits,
    Internal,
    Timeout,
}

impl Failure {
    fn code(self) -> &'static str {
        match self {
            Failure::Moderated => "CONTENT_MODERATED",
            Failure::NoCredits => "INSUFFICIENT_CREDITS",
            Failure::Internal => "INTERNAL_ERROR",
            Failure::Timeout => "RENDER_TIMEOUT",
        }
    }

    fn message(self) -> &'static str {
        match self {
            Failure::Moderated => "The video was blocked by content moderation",
            Failure::NoCredits => "The account ran out of credits during the render",
            Failure::Internal => "An internal error stopped the render",
            Failure::Timeout => "The render did not finish in time",
        }
    }
}

impl Ending {
    /// The moderation trigger, then the markers, then `failure_rate`.
    fn draw(config: &SimConfig, prompt: &str) -> Ending {
        let trigger = config.moderation_trigger.as_str();
        if !trigger.is_empty() && prompt.contains(trigger) {
            Ending::Failed(Failure::Moderated)
        } else if prompt.contains(NO_CREDITS) {
            Ending::Failed(Failure::NoCredits)
        } else if prompt.contains(INTERNAL) {
            Ending::Failed(Failure::Internal)
        } else if prompt.contains(TIMEOUT) {
            Ending::Failed(Failure::Timeout)
        } else if prompt.contains(CANCELED) {
            Ending::Canceled
        } else if chance(config.failure_rate) {
            Ending::Failed(Failure::Internal)
        } else {
            Ending::Success
        }
    }
}

pub(crate) fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/v1/account", get(account))
        .route("/v1/models/{model}/videos", post(create))
        .route("/v1/videos/{id}", get(retrieve))
        .route("/v1/videos/{id}/cancel", post(cancel))
        .route("/files/{id}/{file}", get(download))
        .fallback(not_found_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
}

// ------------------------------------------------------------- errors --

/// Acme's error body.
fn error(status: StatusCode, code: &str, message: &str) -> Response {
    crate::http::json(
        status,
        &json!({ "error": { "code": code, "message": message } }),
    )
}

fn invalid(message: impl AsRef<str>) -> Response {
    error(StatusCode::BAD_REQUEST, "invalid_request", message.as_ref())
}

fn unprocessable(message: impl AsRef<str>) -> Response {
    error(
        StatusCode::UNPROCESSABLE_ENTITY,
        "unprocessable",
        message.as_ref(),
    )
}

async fn not_found_route() -> Response {
    error(StatusCode::NOT_FOUND, "not_found", "No such route")
}

async fn method_not_allowed() -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "The method is not allowed on this route",
    )
}

fn no_video(id: &str) -> Response {
    let shown: String = id.chars().take(64).collect();
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        &format!("No video `{shown}`"),
    )
}

/// Acme's rate limiter: 429 with the seconds to wait in [`RESET_HEADER`].
fn rate_limited(config: &SimConfig) -> Response {
    let mut response = error(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        "Rate limit exceeded: wait before creating another video",
    );
    response
        .headers_mut()
        .insert(RESET_HEADER, HeaderValue::from(wait_secs(config)));
    response
}

/// Acme's edge: 429 with the standard `Retry-After`.
fn edge_limited(config: &SimConfig) -> Response {
    let mut response = error(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_requests",
        "Too many requests at the edge",
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(wait_secs(config)));
    response
}

/// `retry_after`, rounded up to whole seconds, at least 1.
fn wait_secs(config: &SimConfig) -> u64 {
    config.retry_after.as_secs_f64().ceil().max(1.0) as u64
}

// ------------------------------------------------------ authentication --

/// Who is calling.
#[derive(Debug)]
struct Caller {
    key: KeyHash,
    /// The key's name prefix picks special behaviour.
    throttled: bool,
    broke: bool,
    workspace: Option<String>,
}

/// The key and workspace of `X-Api-Key: <key>[; workspace=<name>]`; `Err` when malformed.
fn parse_key_header(value: &str) -> Result<(&str, Option<&str>), ()> {
    let (key, rest) = match value.split_once(';') {
        Some((key, rest)) => (key.trim(), Some(rest.trim())),
        None => (value.trim(), None),
    };
    let workspace = match rest {
        None => None,
        Some(rest) => {
            let name = rest.strip_prefix("workspace=").ok_or(())?;
            let ok = (1..=64).contains(&name.len())
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !ok {
                return Err(());
            }
            Some(name)
        }
    };
    if key.is_empty() {
        return Err(());
    }
    Ok((key, workspace))
}

/// The caller of a `/v1` request: the key (header or query, not both) must be a simulator
/// key that is not revoked, and `Acme-Version` must be [`API_VERSION`].
fn authenticate(
    shared: &Shared,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<Caller, Response> {
    let from_query: Vec<String> = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .filter(|(name, _)| name == KEY_PARAMETER)
        .map(|(_, value)| value.into_owned())
        .collect();
    let from_header = headers.get(KEY_HEADER);
    let unauthorized = |key: Option<&str>, code: &str, message: &str| {
        shared.record(
            Provider::Acme,
            key.map(|k| KeyHash::of(k).id()).as_deref(),
            Event::Unauthorized,
        );
        error(StatusCode::UNAUTHORIZED, code, message)
    };
    let (key, workspace) = match (from_header, from_query.as_slice()) {
        (Some(_), [_, ..]) | (None, [_, _, ..]) => {
            return Err(invalid(
                "Give the API key once: in X-Api-Key or as api_key, not both",
            ));
        }
        (None, []) => {
            return Err(unauthorized(
                None,
                "missing_api_key",
                "Missing API key: send X-Api-Key",
            ));
        }
        (None, [key]) => (key.as_str(), None),
        (Some(value), []) => {
            let parsed = value.to_str().map_err(|_| ()).and_then(parse_key_header);
            match parsed {
                Ok(parsed) => parsed,
                Err(()) => {
                    return Err(unauthorized(
                        None,
                        "malformed_api_key",
                        "X-Api-Key must be `<key>` or `<key>; workspace=<name>`",
                    ));
                }
            }
        }
    };
    if !key.starts_with("sim_") {
        return Err(unauthorized(
            Some(key),
            "invalid_api_key",
            "The API key is not valid",
        ));
    }
    let hash = KeyHash::of(key);
    if key.starts_with("sim_revoked") {
        shared.record(Provider::Acme, Some(&hash.id()), Event::Unauthorized);
        return Err(error(
            StatusCode::FORBIDDEN,
            "key_revoked",
            "This API key has been revoked",
        ));
    }
    match headers.get(VERSION_HEADER).map(HeaderValue::to_str) {
        Some(Ok(API_VERSION)) => {}
        None => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "version_required",
                &format!("The Acme-Version header is required ({API_VERSION})"),
            ));
        }
        Some(_) => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "unsupported_version",
                &format!("Acme-Version must be {API_VERSION}"),
            ));
        }
    }
    Ok(Caller {
        key: hash,
        throttled: key.starts_with("sim_throttled"),
        broke: key.starts_with("sim_broke"),
        workspace: workspace.map(str::to_owned),
    })
}

// ------------------------------------------------------------- account --

/// `GET /v1/account[?include=credits]`: the key check.
async fn account(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let caller = match authenticate(&shared, &headers, query.as_deref()) {
        Ok(caller) => caller,
        Err(response) => return response,
    };
    let mut credits = false;
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match (name.as_ref(), value.as_ref()) {
            ("include", "credits") => credits = true,
            ("include", other) => return invalid(format!("include: unknown value `{other}`")),
            _ => {}
        }
    }
    let mut data = json!({
        "id": format!("acct_{}", caller.key.id()),
        "workspace": caller.workspace,
    });
    if credits {
        data["credits"] = json!(if caller.broke { 0 } else { 1000 });
    }
    crate::http::json(StatusCode::OK, &json!({ "data": data }))
}

// ------------------------------------------------------------ creating --

/// `POST /v1/models/{model}/videos`. A 429 of the throttled key comes before the body is
/// read, as a rate limiter's would; the prompt's markers after it is checked.
async fn create(
    State(shared): State<Arc<Shared>>,
    Path(model): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let caller = match authenticate(&shared, &headers, query.as_deref()) {
        Ok(caller) => caller,
        Err(response) => return response,
    };
    let id = caller.key.id();
    let config = shared.config();
    let rejected = |response: Response| {
        shared.record(Provider::Acme, Some(&id), Event::Rejected);
        response
    };
    if RETIRED.contains(&model.as_str()) {
        return rejected(error(
            StatusCode::GONE,
            "model_retired",
            &format!("The model `{model}` has been retired"),
        ));
    }
    let Some(model) = MODELS.iter().find(|m| m.name == model) else {
        let shown: String = model.chars().take(64).collect();
        return rejected(error(
            StatusCode::NOT_FOUND,
            "model_not_found",
            &format!("No model `{shown}`"),
        ));
    };
    if shared.throttle_submit(Provider::Acme, &id, caller.throttled) {
        shared.record(Provider::Acme, Some(&id), Event::Throttled { submit: true });
        return rate_limited(&config);
    }
    if caller.broke {
        return rejected(error(
            StatusCode::PAYMENT_REQUIRED,
            "insufficient_credits",
            "The account has no credits left",
        ));
    }
    let (request, prompt) = match accept(model, body) {
        Ok(accepted) => accepted,
        Err(response) => return rejected(response),
    };
    if prompt.contains(RATE_LIMIT) {
        shared.record(Provider::Acme, Some(&id), Event::Throttled { submit: true });
        return rate_limited(&config);
    }
    if prompt.contains(EDGE_LIMIT) {
        shared.record(Provider::Acme, Some(&id), Event::Throttled { submit: true });
        return edge_limited(&config);
    }
    if prompt.contains(UNAVAILABLE) {
        // Not a submit Acme saw through: counted only in `request_times_ms`.
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "The render farm is at capacity; try again shortly",
        );
    }
    if prompt.contains(BLOCKED) {
        return rejected(error(
            StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS,
            "prompt_blocked",
            "The prompt was refused by the content policy",
        ));
    }
    let video_id = format!("vid_{}", crate::http::random_hex(16));
    let now = shared.now_ms();
    let video = Video {
        owner: caller.key,
        model: model.name,
        workspace: caller.workspace,
        request,
        timeline: Timeline::starting_now(&shared, &config),
        ending: Ending::draw(&config, &prompt),
        report_progress: config.report_progress,
        cancelled_ms: None,
    };
    let body = video.to_json(&shared.public_url, &video_id, now);
    lock(&shared.acme)
        .videos
        .insert(video_id.clone(), video, now, ms(config.retention));
    shared.record(Provider::Acme, Some(&id), Event::Accepted);
    tracing::debug!(video = %video_id, key = %id, "acme video created");
    crate::http::json(StatusCode::CREATED, &json!({ "data": body }))
}

/// The object at `name` of `object` (`path` names it in errors).
fn object<'a>(
    object: &'a Map<String, Value>,
    name: &str,
) -> Result<&'a Map<String, Value>, Response> {
    match object.get(name) {
        Some(Value::Object(inner)) => Ok(inner),
        None => Err(invalid(format!("{name}: field required"))),
        Some(other) => Err(invalid(format!(
            "{name}: expected an object, got {}",
            type_name(Some(other))
        ))),
    }
}

fn only_known(object: &Map<String, Value>, known: &[&str], path: &str) -> Result<(), Response> {
    match object.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) if path.is_empty() => Err(invalid(format!("{k}: unknown field"))),
        Some(k) => Err(invalid(format!("{path}.{k}: unknown field"))),
        None => Ok(()),
    }
}

/// A string or `null` (absent is `null` too).
fn text<'a>(
    object: &'a Map<String, Value>,
    name: &str,
    path: &str,
) -> Result<Option<&'a str>, Response> {
    match object.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(invalid(format!(
            "{path}: expected a string, got {}",
            type_name(Some(other))
        ))),
    }
}

fn required<'a>(
    object: &'a Map<String, Value>,
    name: &str,
    path: &str,
) -> Result<&'a str, Response> {
    text(object, name, path)?.ok_or_else(|| invalid(format!("{path}: field required")))
}

/// The checks of a create body (400 off the schema, 413 for a large image, 422 for what
/// the model cannot do); the body as the video echoes it, and its prompt.
fn accept(model: &Model, body: Result<Bytes, BytesRejection>) -> Result<(Value, String), Response> {
    let body = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "The request body is too large",
            )
        } else {
            invalid(r.body_text())
        }
    })?;
    let request: Value =
        serde_json::from_slice(&body).map_err(|e| invalid(format!("The body is not JSON: {e}")))?;
    let Value::Object(top) = &request else {
        return Err(invalid("The body must be a JSON object"));
    };
    only_known(top, &["engine", "task", "input", "output"], "")?;
    let engine = required(top, "engine", "engine")?;
    if engine != model.engine {
        return Err(unprocessable(format!(
            "engine: `{engine}` is not the engine of {} ({})",
            model.name, model.engine
        )));
    }
    let image_task = match required(top, "task", "task")? {
        "text_to_video" => false,
        "image_to_video" => true,
        other => {
            return Err(invalid(format!(
                "task: `{other}` is not text_to_video or image_to_video"
            )));
        }
    };
    let input = object(top, "input")?;
    only_known(input, &["prompt", "negative_prompt", "image"], "input")?;
    let prompt = text(input, "prompt", "input.prompt")?.unwrap_or_default();
    let negative = text(input, "negative_prompt", "input.negative_prompt")?;
    for (path, value) in [
        ("input.prompt", Some(prompt)),
        ("input.negative_prompt", negative),
    ] {
        if value.is_some_and(|v| v.chars().count() > PROMPT_LIMIT) {
            return Err(invalid(format!(
                "{path}: at most {PROMPT_LIMIT} characters"
            )));
        }
    }
    if negative.is_some() && !model.extras {
        return Err(unprocessable(format!(
            "input.negative_prompt: {} takes none",
            model.engine
        )));
    }
    let image = match input.get("image") {
        None | Some(Value::Null) => None,
        Some(image) => Some(check_image(image)?),
    };
    if image_task {
        if !model.image_to_video {
            return Err(unprocessable(format!(
                "task: {} renders text_to_video only",
                model.engine
            )));
        }
        if image.is_none() {
            return Err(invalid("input.image: required for image_to_video"));
        }
    } else {
        if image.is_some() {
            return Err(invalid("input.image: only for image_to_video"));
        }
        if prompt.trim().is_empty() {
            return Err(invalid("input.prompt: required for text_to_video"));
        }
    }
    let output = object(top, "output")?;
    only_known(
        output,
        &[
            "duration_seconds",
            "aspect_ratio",
            "resolution",
            "size",
            "seed",
        ],
        "output",
    )?;
    let duration = match output.get("duration_seconds") {
        Some(Value::Number(n)) if n.as_u64().is_some() => n.as_u64().unwrap_or_default(),
        None => return Err(invalid("output.duration_seconds: field required")),
        Some(other) => {
            return Err(invalid(format!(
                "output.duration_seconds: expected an integer, got {}",
                type_name(Some(other))
            )));
        }
    };
    if !DURATIONS.contains(&duration) {
        return Err(unprocessable("output.duration_seconds: 4 or 8"));
    }
    let aspect_ratio = required(output, "aspect_ratio", "output.aspect_ratio")?;
    let resolution = required(output, "resolution", "output.resolution")?;
    let size = required(output, "size", "output.size")?;
    let Some((_, _, expected)) = SIZES
        .iter()
        .find(|(a, r, _)| *a == aspect_ratio && *r == resolution)
    else {
        return Err(unprocessable(format!(
            "output: {aspect_ratio} at {resolution} is not a size Acme renders"
        )));
    };
    if !model.resolutions.contains(&resolution) {
        return Err(unprocessable(format!(
            "output.resolution: {} renders {}",
            model.engine,
            model.resolutions.join(", ")
        )));
    }
    if size != *expected {
        return Err(unprocessable(format!(
            "output.size: `{size}` is not {aspect_ratio} at {resolution} ({expected})"
        )));
    }
    if model.long_1080p && resolution == "1080p" && duration != 8 {
        return Err(unprocessable(format!(
            "output.duration_seconds: {} renders 1080p in 8 s only",
            model.engine
        )));
    }
    match output.get("seed") {
        None | Some(Value::Null) => {}
        Some(Value::Number(n)) if n.as_u64().is_some_and(|s| s <= u64::from(u32::MAX)) => {
            if !model.extras {
                return Err(unprocessable(format!(
                    "output.seed: {} takes none",
                    model.engine
                )));
            }
        }
        Some(_) => return Err(invalid("output.seed: an integer from 0 to 4294967295")),
    }
    let prompt = prompt.to_owned();
    let mut echo = request;
    if let Some(summary) = image {
        echo["input"]["image"] = summary;
    }
    Ok((echo, prompt))
}

/// `{"data": <base64>, "media_type": "image/png" | "image/jpeg" | "image/webp"}`, whose
/// bytes are of that type. Returns what the video echoes in its place: `{media_type,
/// bytes, sha256}` (the size and SHA-256 of the decoded image), so answers stay small.
fn check_image(image: &Value) -> Result<Value, Response> {
    let Value::Object(image) = image else {
        return Err(invalid(format!(
            "input.image: expected an object, got {}",
            type_name(Some(image))
        )));
    };
    only_known(image, &["data", "media_type"], "input.image")?;
    let data = required(image, "data", "input.image.data")?;
    let media_type = required(image, "media_type", "input.image.media_type")?;
    if !IMAGE_TYPES.contains(&media_type) {
        return Err(unprocessable(format!(
            "input.image.media_type: one of {}",
            IMAGE_TYPES.join(", ")
        )));
    }
    // The decoded size from the length first, without decoding a huge string.
    if data.len() / 4 * 3 > IMAGE_LIMIT + 2 {
        return Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "input.image: larger than 10 MB",
        ));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|_| invalid("input.image.data: not base64"))?;
    let sniffed = if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("image/jpeg")
    } else if bytes.len() > 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some("image/webp")
    } else {
        None
    };
    if sniffed != Some(media_type) {
        return Err(unprocessable(format!(
            "input.image: the data is not {media_type}"
        )));
    }
    Ok(json!({
        "media_type": media_type,
        "bytes": bytes.len(),
        "sha256": hex::encode(Sha256::digest(&bytes)),
    }))
}

// ------------------------------------------------------------- reading --

impl Video {
    /// The status at `now_ms`.
    fn status(&self, now_ms: i64) -> &'static str {
        if self.cancelled_ms.is_some_and(|at| at <= now_ms) {
            return "CANCELED";
        }
        match (self.timeline.phase(now_ms), self.ending) {
            (Phase::Pending, _) => "PENDING",
            (Phase::Running(_), _) => "RUNNING",
            (Phase::Done, Ending::Success) => "SUCCEEDED",
            (Phase::Done, Ending::Failed(_)) => "FAILED",
            (Phase::Done, Ending::Canceled) => "CANCELED",
        }
    }

    fn ended(&self, now_ms: i64) -> bool {
        !matches!(self.status(now_ms), "PENDING" | "RUNNING")
    }

    /// The video as the API shows it at `now_ms` (the inside of `{"data": …}`).
    fn to_json(&self, public_url: &str, id: &str, now_ms: i64) -> Value {
        let status = self.status(now_ms);
        let progress = match (status, self.timeline.phase(now_ms)) {
            ("PENDING", _) => json!(0),
            ("RUNNING", Phase::Running(share)) if self.report_progress => {
                json!(((share * 100.0).floor() as u64).min(99))
            }
            ("SUCCEEDED", _) => json!(100),
            _ => Value::Null,
        };
        let outputs = if status == "SUCCEEDED" {
            json!([{
                "url": format!("{public_url}/acme/files/{id}/video.mp4"),
                "content_type": "video/mp4",
                "duration_seconds": OUTPUT_SECONDS,
            }])
        } else {
            json!([])
        };
        let error = match (status, self.ending) {
            ("FAILED", Ending::Failed(failure)) => {
                json!({ "code": failure.code(), "message": failure.message() })
            }
            _ => Value::Null,
        };
        json!({
            "id": id,
            "object": "video",
            "model": self.model,
            "workspace": self.workspace,
            "status": status,
            "progress": progress,
            "created_at": timestamp(self.timeline.submitted_ms),
            "request": self.request,
            "outputs": outputs,
            "error": error,
        })
    }
}

/// RFC 3339 in UTC, seconds.
fn timestamp(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// `GET /v1/videos/{id}`.
async fn retrieve(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let caller = match authenticate(&shared, &headers, query.as_deref()) {
        Ok(caller) => caller,
        Err(response) => return response,
    };
    shared.record(Provider::Acme, Some(&caller.key.id()), Event::Poll);
    let config = shared.config();
    let now = shared.now_ms();
    let body = lock(&shared.acme)
        .videos
        .get(&id, now, ms(config.retention))
        .filter(|v| v.owner == caller.key)
        .map(|v| v.to_json(&shared.public_url, &id, now));
    match body {
        Some(body) => crate::http::json(StatusCode::OK, &json!({ "data": body })),
        // Another key's video does not exist for this one.
        None => no_video(&id),
    }
}

/// `POST /v1/videos/{id}/cancel`: a video that has not ended is `CANCELED` from now on; an
/// ended one is answered as it is (a cancel is idempotent).
async fn cancel(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let caller = match authenticate(&shared, &headers, query.as_deref()) {
        Ok(caller) => caller,
        Err(response) => return response,
    };
    shared.record(Provider::Acme, Some(&caller.key.id()), Event::Cancel);
    let config = shared.config();
    let now = shared.now_ms();
    let mut store = lock(&shared.acme);
    let Some(video) = store
        .videos
        .get_mut(&id, now, ms(config.retention))
        .filter(|v| v.owner == caller.key)
    else {
        return no_video(&id);
    };
    if !video.ended(now) {
        video.cancelled_ms = Some(now);
    }
    let body = video.to_json(&shared.public_url, &id, now);
    drop(store);
    crate::http::json(StatusCode::OK, &json!({ "data": body }))
}

/// `GET /files/{id}/video.mp4`: a succeeded video's MP4, without auth, while the video is
/// remembered.
async fn download(
    State(shared): State<Arc<Shared>>,
    Path((id, file)): Path<(String, String)>,
) -> Response {
    let config = shared.config();
    let now = shared.now_ms();
    let succeeded = file == "video.mp4"
        && lock(&shared.acme)
            .videos
            .get(&id, now, ms(config.retention))
            .is_some_and(|v| v.status(now) == "SUCCEEDED");
    if !succeeded {
        return no_video(&id);
    }
    video::download_response(video::mp4_for(&id), config.video_padding_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn video(ending: Ending) -> Video {
        Video {
            owner: KeyHash::of("sim_a"),
            model: "acme-swift",
            workspace: None,
            request: json!({"engine": "swift-2"}),
            timeline: Timeline {
                submitted_ms: 10_000,
                render_ms: 10_000,
            },
            ending,
            report_progress: true,
            cancelled_ms: None,
        }
    }

    #[test]
    fn a_video_walks_pending_running_then_its_ending() {
        let v = video(Ending::Success);
        let at = |ms| v.to_json("http://s", "vid_1", ms);
        assert_eq!(
            (at(10_000)["status"].clone(), at(10_000)["progress"].clone()),
            (json!("PENDING"), json!(0))
        );
        assert_eq!(
            (at(15_000)["status"].clone(), at(15_000)["progress"].clone()),
            (json!("RUNNING"), json!(50))
        );
        let done = at(20_000);
        assert_eq!(done["status"], "SUCCEEDED");
        assert_eq!(done["progress"], 100);
        assert_eq!(
            done["outputs"][0]["url"],
            "http://s/acme/files/vid_1/video.mp4"
        );
        assert_eq!(done["error"], Value::Null);
        assert_eq!(done["request"]["engine"], "swift-2");

        for (failure, code) in [
            (Failure::Moderated, "CONTENT_MODERATED"),
            (Failure::NoCredits, "INSUFFICIENT_CREDITS"),
            (Failure::Internal, "INTERNAL_ERROR"),
            (Failure::Timeout, "RENDER_TIMEOUT"),
        ] {
            let failed = video(Ending::Failed(failure)).to_json("http://s", "v", 20_000);
            assert_eq!(failed["status"], "FAILED");
            assert_eq!(failed["error"]["code"], code);
            assert_eq!(failed["outputs"], json!([]));
            assert_eq!(failed["progress"], Value::Null);
        }
        assert_eq!(video(Ending::Canceled).status(20_000), "CANCELED");
        let mut cancelled = video(Ending::Success);
        cancelled.cancelled_ms = Some(12_000);
        assert_eq!(cancelled.status(11_999), "RUNNING");
        assert_eq!(cancelled.status(30_000), "CANCELED");
    }

    #[test]
    fn the_prompt_picks_the_ending() {
        let config = SimConfig::default();
        let draw = |p: &str| Ending::draw(&config, p);
        assert_eq!(draw("a cat"), Ending::Success);
        assert_eq!(draw("sim:moderate"), Ending::Failed(Failure::Moderated));
        assert_eq!(
            draw("x acme:no-credits"),
            Ending::Failed(Failure::NoCredits)
        );
        assert_eq!(draw("acme:internal"), Ending::Failed(Failure::Internal));
        assert_eq!(draw("acme:timeout"), Ending::Failed(Failure::Timeout));
        assert_eq!(draw("acme:canceled"), Ending::Canceled);
    }

    #[test]
    fn key_headers() {
        assert_eq!(parse_key_header("sim_a"), Ok(("sim_a", None)));
        assert_eq!(
            parse_key_header(" sim_a ; workspace=team-1"),
            Ok(("sim_a", Some("team-1")))
        );
        for bad in [
            "",
            "sim_a; ws=x",
            "sim_a; workspace=",
            "sim_a; workspace=a b",
            "; workspace=x",
        ] {
            assert_eq!(parse_key_header(bad), Err(()), "{bad}");
        }
    }

    fn body(value: &Value) -> Result<Bytes, BytesRejection> {
        Ok(Bytes::from(value.to_string()))
    }

    fn text_body() -> Value {
        json!({
            "engine": "swift-2",
            "task": "text_to_video",
            "input": {"prompt": "a cat", "negative_prompt": null, "image": null},
            "output": {"duration_seconds": 4, "aspect_ratio": "16:9", "resolution": "720p",
                       "size": "1280x720", "seed": 7},
        })
    }

    #[test]
    fn bodies_are_checked_strictly() {
        let swift = &MODELS[0];
        let studio = &MODELS[1];
        assert_eq!(accept(swift, body(&text_body())).unwrap().1, "a cat");
        let status = |model: &Model, change: &dyn Fn(&mut Value)| {
            let mut b = text_body();
            change(&mut b);
            accept(model, body(&b)).unwrap_err().status().as_u16()
        };
        assert_eq!(status(swift, &|b| b["colour"] = json!(1)), 400);
        assert_eq!(status(swift, &|b| b["input"]["prompt"] = json!(" ")), 400);
        assert_eq!(
            status(swift, &|b| b["output"]["size"] = json!("720x720")),
            422
        );
        assert_eq!(
            status(swift, &|b| b["output"]["duration_seconds"] = json!(5)),
            422
        );
        assert_eq!(status(swift, &|b| b["task"] = json!("image_to_video")), 400);
        assert_eq!(
            status(studio, &|b| b["engine"] = json!("studio-1")),
            422,
            "no seed"
        );
        let png = base64::engine::general_purpose::STANDARD.encode(b"\x89PNG\r\n\x1a\nrest");
        let mut image = text_body();
        image["task"] = json!("image_to_video");
        image["input"]["image"] = json!({"data": png, "media_type": "image/png"});
        let echoed = accept(swift, body(&image)).unwrap().0;
        assert_eq!(echoed["input"]["image"]["bytes"], 12);
        assert_eq!(echoed["input"]["image"]["media_type"], "image/png");
        image["input"]["image"]["media_type"] = json!("image/jpeg");
        assert_eq!(accept(swift, body(&image)).unwrap_err().status(), 422);
    }
}
