//! Luma Agents (`/luma`): the generations API of `agents.lumalabs.ai`,
//! docs/provider-protocols.md §10.
//!
//! - `POST /v1/generations`: a generation (`type` `video` on `ray-3.2`, or `image` on
//!   `uni-1`/`uni-1-max`); answers 201 with the generation, `queued` (§10.2).
//! - `GET /v1/generations/{id}`: the generation; `queued` → `processing` → `completed`
//!   (`output: [{type, url}]`, a presigned URL valid an hour) or `failed` (`failure_code`,
//!   `failure_reason`) (§10.3). There is no cancel and no delete.
//! - `GET /outputs/{id}/{file}?expires=…&signature=…`: the outputs, without auth as the
//!   presigned URLs; 403 once expired or with a wrong signature.
//!
//! Every API route needs `Authorization: Bearer sim_…`; errors are `{"detail": "…"}` (§10.4);
//! every API answer carries `X-Request-Id` (echoed when sent) and `X-API-Version`.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256};

use crate::clock::ms;
use crate::config::SimConfig;
use crate::http::type_name;
use crate::state::{Jobs, KeyHash, Outcome, Phase, Shared, Timeline, lock};
use crate::stats::{Event, Provider};
use crate::video;

/// Inline media may be up to 50 MB decoded (L-DOC error handling: 413 "Image exceeds 50 MB");
/// two frames as base64 fit in 150 MiB. Beyond it: 413.
const BODY_LIMIT: usize = 150 * 1024 * 1024;
/// The largest inline image (decoded).
const MEDIA_LIMIT: usize = 50 * 1000 * 1000;
/// Output URLs are presigned for an hour (L-SDK `generation_output.py`: "1hr expiry").
const URL_LIFETIME_MS: i64 = 3_600_000;
/// The `X-API-Version` the simulator answers with (the example of L-DOC rate limits).
const API_VERSION: &str = "2026-04-01";

/// What the simulator remembers of Luma: generations and the key that signs output URLs.
#[derive(Debug)]
pub(crate) struct Store {
    generations: Jobs<Generation>,
    /// Signs output URLs; made afresh on reset, so old URLs stop working.
    secret: [u8; 32],
}

impl Default for Store {
    fn default() -> Self {
        let mut secret = [0u8; 32];
        rand::fill(&mut secret[..]);
        Store {
            generations: Jobs::default(),
            secret,
        }
    }
}

/// A generation.
#[derive(Debug)]
pub(crate) struct Generation {
    owner: KeyHash,
    model: &'static str,
    kind: Kind,
    timeline: Timeline,
    outcome: Outcome,
}

/// The generation types the simulator serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Video,
    /// An image, as PNG or JPEG (`output_format`).
    Image {
        jpeg: bool,
    },
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Video => "video",
            Kind::Image { .. } => "image",
        }
    }

    fn file(self) -> &'static str {
        match self {
            Kind::Video => "output.mp4",
            Kind::Image { jpeg: false } => "output.png",
            Kind::Image { jpeg: true } => "output.jpg",
        }
    }
}

pub(crate) fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/v1/generations", post(create))
        .route("/v1/generations/{id}", get(get_generation))
        .fallback(not_found_route)
        .layer(axum::middleware::from_fn(api_headers))
        // Added after the layer: the presigned downloads are storage, not the API.
        .route("/outputs/{id}/{file}", get(output))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
}

/// `X-Request-Id` (the client's, when it sent a sensible one, else a new UUID) and
/// `X-API-Version` on every API answer (L-DOC rate limits, "On every response").
async fn api_headers(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let request_id = request
        .headers()
        .get("x-request-id")
        .filter(|v| {
            let b = v.as_bytes();
            !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic())
        })
        .cloned();
    let mut response = next.run(request).await;
    let request_id = request_id.unwrap_or_else(|| {
        HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
            .unwrap_or(HeaderValue::from_static("0"))
    });
    let headers = response.headers_mut();
    headers.insert("x-request-id", request_id);
    headers.insert("x-api-version", HeaderValue::from_static(API_VERSION));
    response
}

// ------------------------------------------------------------- errors --

/// Luma's error body: `{"detail": "…"}` (L-DOC error handling: "read `detail` for
/// specifics"). The texts are the simulator's own (UNVERIFIED).
fn detail(status: StatusCode, text: &str) -> Response {
    crate::http::json(status, &json!({ "detail": text }))
}

fn not_found() -> Response {
    detail(StatusCode::NOT_FOUND, "Generation not found")
}

async fn not_found_route() -> Response {
    detail(StatusCode::NOT_FOUND, "Not Found")
}

/// The 429 of the rate limiter, with `Retry-After` in seconds (L-DOC rate limits).
fn throttled(config: &SimConfig) -> Response {
    let secs = config.retry_after.as_secs_f64().ceil().max(1.0) as u64;
    let mut response = detail(StatusCode::TOO_MANY_REQUESTS, "Rate limit exceeded");
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    response
}

/// A refused request: 400 for a parameter that does not fit the schema, 422 for a
/// combination Luma rejects or bad media data, 413 for media too large (L-DOC error
/// handling).
#[derive(Debug)]
struct Refusal(StatusCode, String);

fn bad(text: impl Into<String>) -> Refusal {
    Refusal(StatusCode::BAD_REQUEST, text.into())
}

fn rejected(text: impl Into<String>) -> Refusal {
    Refusal(StatusCode::UNPROCESSABLE_ENTITY, text.into())
}

impl Refusal {
    fn response(&self) -> Response {
        detail(self.0, &self.1)
    }
}

// ------------------------------------------------------ authentication --

/// The key's hash when it is a simulator key (`sim_…`), else a 401.
fn authenticate(shared: &Shared, headers: &HeaderMap) -> Result<(KeyHash, bool), Response> {
    match crate::http::bearer(headers) {
        Some(key) if key.starts_with("sim_") => {
            Ok((KeyHash::of(key), key.starts_with("sim_throttled")))
        }
        Some(key) => {
            shared.record(
                Provider::Luma,
                Some(&KeyHash::of(key).id()),
                Event::Unauthorized,
            );
            Err(detail(StatusCode::UNAUTHORIZED, "Invalid API key"))
        }
        None => {
            shared.record(Provider::Luma, None, Event::Unauthorized);
            Err(detail(StatusCode::UNAUTHORIZED, "Missing API key"))
        }
    }
}

// ------------------------------------------------------------ creating --

/// `POST /v1/generations`. The 429 comes before any validation, as a rate limiter's would.
async fn create(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (key, special) = match authenticate(&shared, &headers) {
        Ok(key) => key,
        Err(response) => return response,
    };
    let id = key.id();
    let config = shared.config();
    if shared.throttle_submit(Provider::Luma, &id, special) {
        shared.record(Provider::Luma, Some(&id), Event::Throttled { submit: true });
        return throttled(&config);
    }
    let accepted = match accept(&shared, &key, body) {
        Ok(accepted) => accepted,
        Err(refusal) => {
            shared.record(Provider::Luma, Some(&id), Event::Rejected);
            return refusal.response();
        }
    };
    let generation_id = uuid::Uuid::new_v4().to_string();
    let now = shared.now_ms();
    let generation = Generation {
        owner: key,
        model: accepted.model,
        kind: accepted.kind,
        timeline: Timeline::starting_now(&shared, &config),
        outcome: Outcome::draw(&config, Some(&accepted.prompt)),
    };
    let mut store = lock(&shared.luma);
    let body = generation.to_json(&shared.public_url, &store.secret, &generation_id, now);
    store
        .generations
        .insert(generation_id.clone(), generation, now, ms(config.retention));
    drop(store);
    shared.record(Provider::Luma, Some(&id), Event::Accepted);
    tracing::debug!(generation = %generation_id, key = %id, "luma generation created");
    crate::http::json(StatusCode::CREATED, &body)
}

/// A create that passed every check.
#[derive(Debug)]
struct Accepted {
    model: &'static str,
    kind: Kind,
    prompt: String,
}

const MODELS: &[&str] = &["uni-1", "uni-1-max", "ray-3.2"];
const TYPES: &[&str] = &[
    "image",
    "image_edit",
    "video",
    "video_edit",
    "video_reframe",
    "layering",
];
/// Every aspect ratio of the schema (L-SDK `generation_create_params.py`).
const ASPECT_RATIOS: &[&str] = &[
    "3:1", "2:1", "21:9", "16:9", "4:3", "3:2", "1:1", "3:4", "2:3", "9:16", "1:2", "1:3",
];
/// Ray 3.2's (L-DOC video generation; Replicate's and GMI Cloud's pages of the model).
const VIDEO_ASPECT_RATIOS: &[&str] = &["9:16", "3:4", "1:1", "4:3", "16:9", "21:9"];
const TOP_LEVEL: &[&str] = &[
    "prompt",
    "aspect_ratio",
    "image_ref",
    "layering",
    "model",
    "output_format",
    "source",
    "style",
    "type",
    "user_id",
    "video",
    "web_search",
];
const VIDEO_FIELDS: &[&str] = &[
    "duration",
    "edit",
    "end_frame",
    "exr_export",
    "hdr",
    "keyframe_indexes",
    "keyframes",
    "loop",
    "resolution",
    "source_position",
    "start_frame",
];

/// A field's value, `None` when absent or `null` (the schema's optional fields are
/// nullable).
fn field<'a>(object: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    object.get(name).filter(|v| !v.is_null())
}

fn string<'a>(
    object: &'a Map<String, Value>,
    name: &str,
    path: &str,
) -> Result<Option<&'a str>, Refusal> {
    match field(object, name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(bad(format!(
            "{path}: expected a string, got {}",
            type_name(Some(other))
        ))),
    }
}

fn boolean(object: &Map<String, Value>, name: &str, path: &str) -> Result<bool, Refusal> {
    match field(object, name) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(bad(format!(
            "{path}: expected a boolean, got {}",
            type_name(Some(other))
        ))),
    }
}

fn choice<'a>(
    object: &'a Map<String, Value>,
    name: &str,
    path: &str,
    allowed: &[&str],
) -> Result<Option<&'a str>, Refusal> {
    let value = string(object, name, path)?;
    match value {
        Some(v) if !allowed.contains(&v) => Err(bad(format!(
            "{path}: '{v}' is not one of {}",
            allowed.join(", ")
        ))),
        _ => Ok(value),
    }
}

fn object<'a>(value: &'a Value, path: &str) -> Result<&'a Map<String, Value>, Refusal> {
    value.as_object().ok_or_else(|| {
        bad(format!(
            "{path}: expected an object, got {}",
            type_name(Some(value))
        ))
    })
}

fn only_known(object: &Map<String, Value>, known: &[&str], path: &str) -> Result<(), Refusal> {
    match object.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) if path.is_empty() => Err(bad(format!("{k}: extra fields are not permitted"))),
        Some(k) => Err(bad(format!("{path}.{k}: extra fields are not permitted"))),
        None => Ok(()),
    }
}

/// The checks of a create (§10.2). The schema is the official client's; what it leaves to
/// the server (the model's aspect ratios, the combinations) follows Luma's guides, and
/// unknown fields are refused (the strict reading; UNVERIFIED).
fn accept(
    shared: &Shared,
    key: &KeyHash,
    body: Result<Bytes, BytesRejection>,
) -> Result<Accepted, Refusal> {
    let body = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Refusal(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Request body too large".into(),
            )
        } else {
            bad(r.body_text())
        }
    })?;
    let request: Value =
        serde_json::from_slice(&body).map_err(|e| bad(format!("Invalid JSON body: {e}")))?;
    let request = object(&request, "body")?;
    only_known(request, TOP_LEVEL, "")?;
    let prompt = match request.get("prompt") {
        None | Some(Value::Null) => return Err(bad("prompt: field required")),
        Some(Value::String(p)) if p.trim().is_empty() => {
            return Err(bad("prompt: must not be empty"));
        }
        Some(Value::String(p)) => p.clone(),
        Some(other) => {
            return Err(bad(format!(
                "prompt: expected a string, got {}",
                type_name(Some(other))
            )));
        }
    };
    let kind_name = choice(request, "type", "type", TYPES)?.unwrap_or("image");
    // `uni-1` is the default (L-SDK `generation_create_params.py`).
    let model = choice(request, "model", "model", MODELS)?.unwrap_or("uni-1");
    let model = MODELS
        .iter()
        .copied()
        .find(|m| *m == model)
        .unwrap_or("uni-1");
    let aspect_ratio = choice(request, "aspect_ratio", "aspect_ratio", ASPECT_RATIOS)?;
    let output_format = choice(request, "output_format", "output_format", &["png", "jpeg"])?;
    choice(request, "style", "style", &["auto", "manga"])?;
    string(request, "user_id", "user_id")?;
    boolean(request, "web_search", "web_search")?;
    let kind = match kind_name {
        "video" => {
            if model != "ray-3.2" {
                return Err(rejected(format!(
                    "model '{model}' does not support type 'video'; use ray-3.2"
                )));
            }
            if let Some(ratio) = aspect_ratio
                && !VIDEO_ASPECT_RATIOS.contains(&ratio)
            {
                return Err(rejected(format!(
                    "aspect_ratio '{ratio}' is not supported by ray-3.2 (one of {})",
                    VIDEO_ASPECT_RATIOS.join(", ")
                )));
            }
            for name in ["image_ref", "output_format", "source", "layering"] {
                if field(request, name).is_some() {
                    return Err(rejected(format!("{name} is not valid for type 'video'")));
                }
            }
            if let Some(options) = field(request, "video") {
                check_video(shared, key, object(options, "video")?)?;
            }
            Kind::Video
        }
        "image" => {
            if model == "ray-3.2" {
                return Err(rejected(
                    "model 'ray-3.2' does not support type 'image'; use uni-1 or uni-1-max",
                ));
            }
            for name in ["video", "source", "layering"] {
                if field(request, name).is_some() {
                    return Err(rejected(format!("{name} is not valid for type 'image'")));
                }
            }
            if let Some(refs) = field(request, "image_ref") {
                let refs = refs.as_array().ok_or_else(|| {
                    bad(format!(
                        "image_ref: expected an array, got {}",
                        type_name(Some(refs))
                    ))
                })?;
                if refs.len() > 9 {
                    return Err(rejected("image_ref: at most 9 images for type 'image'"));
                }
                for (i, r) in refs.iter().enumerate() {
                    check_ref(shared, key, r, &format!("image_ref.{i}"))?;
                }
            }
            Kind::Image {
                jpeg: output_format == Some("jpeg"),
            }
        }
        other => {
            return Err(rejected(format!(
                "type '{other}' is not served by the simulator (only video and image)"
            )));
        }
    };
    Ok(Accepted {
        model,
        kind,
        prompt,
    })
}

/// `video` of a `type: video` request (L-SDK `video_options_param.py`, L-DOC video generation).
fn check_video(shared: &Shared, key: &KeyHash, video: &Map<String, Value>) -> Result<(), Refusal> {
    only_known(video, VIDEO_FIELDS, "video")?;
    let duration = choice(video, "duration", "video.duration", &["5s", "10s"])?;
    let resolution = choice(
        video,
        "resolution",
        "video.resolution",
        &["360p", "540p", "720p", "1080p"],
    )?;
    let looping = boolean(video, "loop", "video.loop")?;
    let hdr = boolean(video, "hdr", "video.hdr")?;
    let exr = boolean(video, "exr_export", "video.exr_export")?;
    if field(video, "edit").is_some() {
        return Err(rejected("video.edit is only valid for type 'video_edit'"));
    }
    if field(video, "source_position").is_some() {
        return Err(rejected(
            "video.source_position is only valid for type 'video_reframe'",
        ));
    }
    let ten = duration == Some("10s");
    let mut anchors = false;
    for name in ["start_frame", "end_frame"] {
        if let Some(r) = field(video, name) {
            check_ref(shared, key, r, &format!("video.{name}"))?;
            anchors = true;
        }
    }
    if looping && (ten || hdr) {
        return Err(rejected(
            "video.loop is not supported with duration 10s or hdr",
        ));
    }
    if exr && !hdr {
        return Err(rejected("video.exr_export requires video.hdr"));
    }
    if hdr && matches!(resolution, Some("360p" | "540p")) {
        return Err(rejected("video.hdr requires resolution 720p or 1080p"));
    }
    if anchors && ten {
        return Err(rejected(
            "video.start_frame and video.end_frame are not supported with duration 10s; use keyframes",
        ));
    }
    let keyframes = field(video, "keyframes");
    let indexes = field(video, "keyframe_indexes");
    match (keyframes, indexes) {
        (None, None) => Ok(()),
        (Some(frames), Some(indexes)) => {
            if anchors || looping {
                return Err(rejected(
                    "video.keyframes cannot be combined with start_frame, end_frame or loop",
                ));
            }
            let frames = frames.as_array().ok_or_else(|| {
                bad(format!(
                    "video.keyframes: expected an array, got {}",
                    type_name(Some(frames))
                ))
            })?;
            let indexes = indexes.as_array().ok_or_else(|| {
                bad(format!(
                    "video.keyframe_indexes: expected an array, got {}",
                    type_name(Some(indexes))
                ))
            })?;
            if frames.is_empty() || frames.len() > 64 {
                return Err(rejected("video.keyframes: 1 to 64 keyframes"));
            }
            if frames.len() != indexes.len() {
                return Err(rejected(
                    "video.keyframe_indexes must match video.keyframes in length",
                ));
            }
            for (i, r) in frames.iter().enumerate() {
                check_ref(shared, key, r, &format!("video.keyframes.{i}"))?;
            }
            // The duration × 24 fps grid: 5s → 0..120, 10s → 0..240.
            let last: u64 = if ten { 240 } else { 120 };
            let mut seen = std::collections::HashSet::new();
            for (i, index) in indexes.iter().enumerate() {
                let n = index.as_u64().ok_or_else(|| {
                    bad(format!(
                        "video.keyframe_indexes.{i}: expected a non-negative integer"
                    ))
                })?;
                if n > last {
                    return Err(rejected(format!(
                        "video.keyframe_indexes.{i}: {n} is past the last frame ({last})"
                    )));
                }
                if !seen.insert(n) {
                    return Err(rejected(format!(
                        "video.keyframe_indexes.{i}: {n} is repeated"
                    )));
                }
            }
            Ok(())
        }
        _ => Err(rejected(
            "video.keyframes and video.keyframe_indexes go together",
        )),
    }
}

/// An image reference (L-SDK `image_ref_param.py`): exactly one of `url`, `data` (with
/// `media_type`), `generation_id` (a prior generation of the same key) or `file_id` (the
/// Files API, not simulated: refused). URLs are never fetched.
fn check_ref(shared: &Shared, key: &KeyHash, value: &Value, path: &str) -> Result<(), Refusal> {
    let r = object(value, path)?;
    only_known(
        r,
        &["url", "data", "media_type", "generation_id", "file_id"],
        path,
    )?;
    let url = string(r, "url", &format!("{path}.url"))?;
    let data = string(r, "data", &format!("{path}.data"))?;
    let media_type = string(r, "media_type", &format!("{path}.media_type"))?;
    let generation = string(r, "generation_id", &format!("{path}.generation_id"))?;
    let file = string(r, "file_id", &format!("{path}.file_id"))?;
    let given = [url, data, generation, file].iter().flatten().count();
    if given != 1 {
        return Err(bad(format!(
            "{path}: provide exactly one of url, data, generation_id or file_id"
        )));
    }
    if let Some(media_type) = media_type
        && !media_type.starts_with("image/")
    {
        return Err(rejected(format!(
            "{path}.media_type: '{media_type}' is not an image type"
        )));
    }
    if let Some(url) = url {
        let ok = url::Url::parse(url)
            .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
        if !ok {
            return Err(rejected(format!("{path}.url: not a fetchable http(s) URL")));
        }
    }
    if let Some(data) = data {
        if media_type.is_none() {
            return Err(bad(format!("{path}.media_type: required with data")));
        }
        // Decoded size first from the length, without decoding a huge string.
        if data.len() / 4 * 3 > MEDIA_LIMIT + 2 {
            return Err(Refusal(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("{path}.data: image exceeds 50 MB"),
            ));
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|_| rejected(format!("{path}.data: invalid base64 data")))?;
        if decoded.is_empty() {
            return Err(rejected(format!("{path}.data: empty image")));
        }
    }
    if let Some(generation) = generation {
        let config = shared.config();
        let now = shared.now_ms();
        let known = lock(&shared.luma)
            .generations
            .get(generation, now, ms(config.retention))
            .is_some_and(|g| {
                g.owner == *key && g.state(now) == "completed" && g.kind == Kind::Video
            });
        if !known {
            return Err(rejected(format!(
                "{path}.generation_id: no completed video generation '{generation}'"
            )));
        }
    }
    if let Some(file) = file {
        return Err(rejected(format!("{path}.file_id: file '{file}' not found")));
    }
    Ok(())
}

// ------------------------------------------------------ the generation --

impl Generation {
    /// `queued` for the first tenth of the render time, then `processing`, then the drawn
    /// outcome.
    fn state(&self, now_ms: i64) -> &'static str {
        match self.timeline.phase(now_ms) {
            Phase::Pending => "queued",
            Phase::Running(_) => "processing",
            Phase::Done if self.outcome == Outcome::Success => "completed",
            Phase::Done => "failed",
        }
    }

    /// The generation as `GET /v1/generations/{id}` shows it (L-SDK `generation.py`).
    fn to_json(&self, public_url: &str, secret: &[u8; 32], id: &str, now_ms: i64) -> Value {
        let state = self.state(now_ms);
        let (code, reason) = match (state, self.outcome) {
            ("failed", Outcome::Moderated) => (
                json!("content_moderated"),
                json!("The prompt or an input image violated the content guidelines"),
            ),
            ("failed", _) => (
                json!("generation_failed"),
                json!("Internal model error during generation"),
            ),
            _ => (Value::Null, Value::Null),
        };
        let output = if state == "completed" {
            let file = self.kind.file();
            let expires = (now_ms + URL_LIFETIME_MS) / 1000;
            let signature = sign(secret, id, file, expires);
            json!([{
                "type": self.kind.name(),
                "url": format!(
                    "{public_url}/luma/outputs/{id}/{file}?expires={expires}&signature={signature}"
                ),
            }])
        } else {
            Value::Null
        };
        json!({
            "id": id,
            "created_at": timestamp(self.timeline.submitted_ms),
            "model": self.model,
            "state": state,
            "type": self.kind.name(),
            "failure_code": code,
            "failure_reason": reason,
            "output": output,
        })
    }
}

/// RFC 3339 in UTC with milliseconds (the format is UNVERIFIED; the client keeps a string).
fn timestamp(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The signature of an output URL: 32 hex of SHA-256 over the store's secret and the URL's
/// parts.
fn sign(secret: &[u8; 32], id: &str, file: &str, expires: i64) -> String {
    let mut hasher = Sha256::new();
    hasher.update(secret);
    hasher.update(format!("{id}/{file}?{expires}").as_bytes());
    hex::encode(&hasher.finalize()[..16])
}

async fn get_generation(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let (key, _) = match authenticate(&shared, &headers) {
        Ok(key) => key,
        Err(response) => return response,
    };
    shared.record(Provider::Luma, Some(&key.id()), Event::Poll);
    let config = shared.config();
    let now = shared.now_ms();
    let mut store = lock(&shared.luma);
    let Store {
        generations,
        secret,
    } = &mut *store;
    // Another key's generation does not exist for this one.
    match generations
        .get(&id, now, ms(config.retention))
        .filter(|g| g.owner == key)
    {
        Some(g) => {
            let body = g.to_json(&shared.public_url, secret, &id, now);
            drop(store);
            crate::http::json(StatusCode::OK, &body)
        }
        None => not_found(),
    }
}

#[derive(Debug, serde::Deserialize)]
struct Presigned {
    expires: Option<String>,
    signature: Option<String>,
}

/// The storage's refusal of a presigned URL (its body is UNVERIFIED: an S3-style error).
fn denied(message: &str) -> Response {
    let mut response = (
        StatusCode::FORBIDDEN,
        format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessDenied</Code><Message>{message}</Message></Error>"),
    )
        .into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml"),
    );
    response
}

/// `GET /outputs/{id}/{file}?expires=…&signature=…`: a completed generation's output,
/// without auth, while its URL is valid.
async fn output(
    State(shared): State<Arc<Shared>>,
    Path((id, file)): Path<(String, String)>,
    query: Result<Query<Presigned>, QueryRejection>,
) -> Response {
    let Ok(Query(Presigned {
        expires: Some(expires),
        signature: Some(signature),
    })) = query
    else {
        return denied("Query-string authentication requires the expires and signature parameters");
    };
    let config = shared.config();
    let now = shared.now_ms();
    let Ok(expires) = expires.parse::<i64>() else {
        return denied("Invalid expires");
    };
    let mut store = lock(&shared.luma);
    if sign(&store.secret, &id, &file, expires) != signature {
        return denied(
            "The request signature we calculated does not match the signature you provided",
        );
    }
    if now >= expires.saturating_mul(1000) {
        return denied("Request has expired");
    }
    let kind = store
        .generations
        .get(&id, now, ms(config.retention))
        .filter(|g| g.state(now) == "completed" && g.kind.file() == file)
        .map(|g| g.kind);
    drop(store);
    match kind {
        Some(Kind::Video) => {
            video::download_response(video::mp4_for(&id), config.video_padding_bytes)
        }
        Some(Kind::Image { jpeg }) => image_response(jpeg),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// A 64×36 gradient, as PNG or JPEG.
fn image_response(jpeg: bool) -> Response {
    let picture = image::RgbImage::from_fn(64, 36, |x, y| {
        image::Rgb([(x * 4) as u8, (y * 7) as u8, 128])
    });
    let (format, content_type) = if jpeg {
        (image::ImageFormat::Jpeg, "image/jpeg")
    } else {
        (image::ImageFormat::Png, "image/png")
    };
    let mut bytes = Vec::new();
    if picture
        .write_to(&mut std::io::Cursor::new(&mut bytes), format)
        .is_err()
    {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let mut response = bytes.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generation_walks_queued_processing_then_its_outcome() {
        let g = |outcome| Generation {
            owner: KeyHash::of("sim_x"),
            model: "ray-3.2",
            kind: Kind::Video,
            timeline: Timeline {
                submitted_ms: 1000,
                render_ms: 1000,
            },
            outcome,
        };
        let ok = g(Outcome::Success);
        assert_eq!(ok.state(1000), "queued");
        assert_eq!(ok.state(1500), "processing");
        assert_eq!(ok.state(2000), "completed");
        let secret = [7u8; 32];
        let body = ok.to_json("http://sim", &secret, "abc", 2000);
        let url = body["output"][0]["url"].as_str().unwrap();
        assert!(url.starts_with("http://sim/luma/outputs/abc/output.mp4?expires=3602&signature="));
        assert_eq!(body["failure_code"], Value::Null);
        let moderated = g(Outcome::Moderated).to_json("http://sim", &secret, "abc", 2000);
        assert_eq!(moderated["state"], "failed");
        assert_eq!(moderated["failure_code"], "content_moderated");
        assert_eq!(moderated["output"], Value::Null);
        let failed = g(Outcome::Failed).to_json("http://sim", &secret, "abc", 2000);
        assert_eq!(failed["failure_code"], "generation_failed");
    }

    #[test]
    fn signatures_bind_id_file_and_expiry() {
        let secret = [1u8; 32];
        let s = sign(&secret, "a", "output.mp4", 10);
        assert_eq!(s.len(), 32);
        assert_ne!(s, sign(&secret, "b", "output.mp4", 10));
        assert_ne!(s, sign(&secret, "a", "output.png", 10));
        assert_ne!(s, sign(&secret, "a", "output.mp4", 11));
        assert_ne!(s, sign(&[2u8; 32], "a", "output.mp4", 10));
    }
}
