//! Synthesia (`/synthesia`): the Video API of `api.synthesia.io`, docs/provider-protocols.md §11.
//!
//! - `POST /v2/videos`: create a video from a script (`input`: scenes with `scriptText`,
//!   `avatar`, `background`, …). The answer is the video, `status: "in_progress"`.
//! - `GET /v2/videos/{id}`: the video; `in_progress` → `complete` (`download`, `duration`),
//!   `error` (a failed render) or `rejected` (moderated).
//! - `GET /v2/videos`: the key's videos (`limit`, `offset`, `source`): the cheap key check.
//! - `DELETE /v2/videos/{id}`: 204; the video is gone (404) afterwards.
//! - `GET /v2/templates`, `GET /v2/templates/{id}`: the key has no templates.
//! - `GET /download/{id}/video.mp4`: a complete video's MP4, without auth (Synthesia's download
//!   links are time-limited URLs that need no key).
//!
//! Every API route needs the raw API key in `Authorization` (no scheme). Errors are RFC 9457
//! problem details `{type, title, status, detail, code, requestId}` with a `Request-Id` header
//! (§11.5).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use axum::routing::get;
use serde_json::{Map, Value, json};

use crate::clock::ms;
use crate::state::{Jobs, KeyHash, Outcome, Phase, Shared, Timeline, lock};
use crate::stats::{Event, Provider};
use crate::video;

/// Create bodies are scripts (25 scenes at most); Synthesia documents no cap, so 1 MiB is
/// generous. Beyond it: 413 `payload_too_large`.
const BODY_LIMIT: usize = 1024 * 1024;
/// "Maximum 25 scenes per video" (SY-API `CreateVideoRequest.input`).
const MAX_SCENES: usize = 25;
/// Synthesia's documented per-minute limit of the create endpoint (SY-RL), sent back as
/// `RateLimit-Limit` with a 429.
const CREATE_LIMIT_PER_MINUTE: u32 = 60;
/// The simulator's video lasts two seconds (24 frames at 12 fps), written as Synthesia writes
/// durations (SY-VID: `"0:00:59.000000"`).
const DURATION: &str = "0:00:02.000000";

/// Stock avatars the simulator knows: the two the API reference names (`ActorSettings.seamless`
/// works "only with anna_costume1_cameraA and mia_costume1_cameraA"). Any other avatar is
/// refused with a 400 (an unknown stock or custom avatar).
pub(crate) const AVATARS: &[&str] = &["anna_costume1_cameraA", "mia_costume1_cameraA"];

/// Stock backgrounds (SY-API `Input.background`); a background may also be an uploaded asset's
/// id (a UUID) or an http(s) URL Synthesia downloads (never fetched here).
const BACKGROUNDS: &[&str] = &[
    "green_screen",
    "off_white",
    "warm_white",
    "light_pink",
    "soft_pink",
    "light_blue",
    "dark_blue",
    "soft_cyan",
    "strong_cyan",
    "light_orange",
    "soft_orange",
    "white_studio",
    "white_cafe",
    "luxury_lobby",
    "large_window",
    "white_meeting_room",
    "open_office",
];

const ASPECT_RATIOS: &[&str] = &["16:9", "9:16", "1:1", "4:5", "5:4"];
const VISIBILITIES: &[&str] = &["private", "public"];
const SOUNDTRACKS: &[&str] = &["corporate", "inspirational", "modern", "urban"];
const TRANSITIONS: &[&str] = &[
    "none",
    "fade",
    "fadeblack",
    "fadewhite",
    "fadescale",
    "wipeleft",
    "wiperight",
    "wipeup",
    "wipedown",
    "slideleft",
    "slideright",
    "slideup",
    "slidedown",
    "slideoverleft",
    "slideoverright",
    "slideoverup",
    "slideoverdown",
    "jumpcut",
];
const SOURCES: &[&str] = &["workspace", "shared_with_me", "my_videos"];

/// Synthesia's videos, as the simulator remembers them.
#[derive(Debug, Default)]
pub(crate) struct Store {
    videos: Jobs<Video>,
    /// Ids in creation order, for the list (forgotten and deleted ids are skipped).
    order: Vec<String>,
}

/// A video.
#[derive(Debug)]
pub(crate) struct Video {
    owner: KeyHash,
    /// The create body's fields that the video echoes (`title`, `description`, `visibility`,
    /// `aspectRatio`, `input`, `callbackId`, `ctaSettings`, `test`, …), defaults filled in.
    fields: Map<String, Value>,
    timeline: Timeline,
    outcome: Outcome,
}

pub(crate) fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/v2/videos", get(list).post(create))
        .route("/v2/videos/{id}", get(retrieve).delete(delete))
        .route("/v2/templates", get(templates))
        .route("/v2/templates/{id}", get(template))
        .route("/download/{id}/{file}", get(download))
        .fallback(not_found_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
}

// ------------------------------------------------------------- errors --

/// An RFC 9457 problem as Synthesia's error page describes it (SY-ERR): `code` is the stable
/// string, `type` links to the page's anchor, `requestId` is also the `Request-Id` header.
/// `status` is the RFC's member (whether Synthesia includes it is UNVERIFIED).
fn problem(status: StatusCode, code: &str, title: &str, detail: &str) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let body = json!({
        "type": format!("https://docs.synthesia.io/reference/errors#{code}"),
        "title": title,
        "status": status.as_u16(),
        "detail": detail,
        "code": code,
        "requestId": request_id,
    });
    let mut response = crate::http::json(status, &body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        headers.insert("request-id", value);
    }
    response
}

fn not_found(detail: &str) -> Response {
    problem(StatusCode::NOT_FOUND, "not_found", "Not found", detail)
}

fn invalid(problems: &[String]) -> Response {
    problem(
        StatusCode::BAD_REQUEST,
        "validation_error",
        "Invalid request",
        &problems.join("; "),
    )
}

async fn not_found_route() -> Response {
    not_found("No such route.")
}

async fn method_not_allowed() -> Response {
    problem(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "Method not allowed",
        "The method is not allowed on this route.",
    )
}

/// The documented 429 (SY-RL): `RateLimit-Limit` names the limit breached, `RateLimit-Reset`
/// the seconds to wait. No `Retry-After` (Synthesia documents none).
fn throttled(retry_after: Duration) -> Response {
    let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
    let mut response = problem(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        "Rate limit exceeded",
        &format!("Rate limit of {CREATE_LIMIT_PER_MINUTE} requests per minute exceeded."),
    );
    let headers = response.headers_mut();
    headers.insert(
        "ratelimit-limit",
        HeaderValue::from(CREATE_LIMIT_PER_MINUTE),
    );
    headers.insert("ratelimit-reset", HeaderValue::from(secs));
    response
}

// ------------------------------------------------------ authentication --

/// The raw key of `Authorization: <key>` (Synthesia sends no scheme, SY-AUTH).
fn api_key(headers: &HeaderMap) -> Option<&str> {
    let key = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    (!key.is_empty()).then_some(key)
}

/// The key's hash when it is a simulator key (`sim_…`), else 401 `unauthenticated`. A
/// `Bearer sim_…` value is not a raw key and is refused, as a wrong key is.
fn authenticate(shared: &Shared, headers: &HeaderMap) -> Result<KeyHash, Response> {
    match api_key(headers) {
        Some(key) if key.starts_with("sim_") => Ok(KeyHash::of(key)),
        Some(key) => {
            shared.record(
                Provider::Synthesia,
                Some(&KeyHash::of(key).id()),
                Event::Unauthorized,
            );
            Err(problem(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "Unauthenticated",
                "The API key is not valid.",
            ))
        }
        None => {
            shared.record(Provider::Synthesia, None, Event::Unauthorized);
            Err(problem(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "Unauthenticated",
                "Missing API key in the Authorization header.",
            ))
        }
    }
}

// ------------------------------------------------------------ creating --

/// `POST /v2/videos`. The 429 comes before any validation, as a rate limiter's would.
async fn create(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let key = match authenticate(&shared, &headers) {
        Ok(key) => key,
        Err(response) => return response,
    };
    let id = key.id();
    let config = shared.config();
    let raw = api_key(&headers).unwrap_or_default();
    let special = raw.starts_with("sim_throttled");
    if shared.throttle_submit(Provider::Synthesia, &id, special) {
        shared.record(
            Provider::Synthesia,
            Some(&id),
            Event::Throttled { submit: true },
        );
        return throttled(config.retry_after);
    }
    let fields = match accept(&headers, body) {
        Ok(fields) => fields,
        Err(response) => {
            shared.record(Provider::Synthesia, Some(&id), Event::Rejected);
            return response;
        }
    };
    // A `sim_broke…` key's account has used its quota: real videos are refused, test videos
    // (free, not counted towards the quota, SY-API `test`) still render.
    if raw.starts_with("sim_broke") && fields.get("test") != Some(&Value::Bool(true)) {
        shared.record(Provider::Synthesia, Some(&id), Event::Rejected);
        return problem(
            StatusCode::PAYMENT_REQUIRED,
            "quota_exceeded",
            "Quota exceeded",
            "You have used all the video minutes of your plan.",
        );
    }
    let script: String = fields
        .get("input")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|scene| scene.get("scriptText").and_then(Value::as_str))
        .collect::<Vec<_>>()
        .join("\n");
    let video_id = uuid::Uuid::new_v4().to_string();
    let now = shared.now_ms();
    let video = Video {
        owner: key,
        fields,
        timeline: Timeline::starting_now(&shared, &config),
        outcome: Outcome::draw(&config, Some(&script)),
    };
    let body = video.to_json(&shared.public_url, &video_id, now);
    let mut store = lock(&shared.synthesia);
    store
        .videos
        .insert(video_id.clone(), video, now, ms(config.retention));
    store.order.push(video_id.clone());
    drop(store);
    shared.record(Provider::Synthesia, Some(&id), Event::Accepted);
    tracing::debug!(video = %video_id, key = %id, "synthesia video created");
    // The reference documents 200 for this create (and 201 for the template route).
    crate::http::json(StatusCode::OK, &body)
}

/// The checks of a create body; the fields the video keeps, with their defaults.
fn accept(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Map<String, Value>, Response> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            problem(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "Payload too large",
                "The request body is too large.",
            )
        } else {
            problem(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "Bad request",
                &rejection.body_text(),
            )
        }
    })?;
    let json_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json_type {
        return Err(problem(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Unsupported media type",
            "The request body must be application/json.",
        ));
    }
    let request: Value = serde_json::from_slice(&body).map_err(|e| {
        problem(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "Bad request",
            &format!("The request body is not valid JSON: {e}"),
        )
    })?;
    let Value::Object(mut fields) = request else {
        return Err(invalid(&[
            "The request body must be a JSON object.".to_owned()
        ]));
    };
    let problems = check_request(&fields);
    if !problems.is_empty() {
        return Err(invalid(&problems));
    }
    for (name, default) in [
        ("title", json!("")),
        ("description", json!("")),
        ("visibility", json!("private")),
        ("aspectRatio", json!("16:9")),
        ("test", json!(false)),
    ] {
        fields.entry(name).or_insert(default);
    }
    Ok(fields)
}

fn expect_string(problems: &mut Vec<String>, path: &str, value: &Value) -> Option<String> {
    match value.as_str() {
        Some(s) => Some(s.to_owned()),
        None => {
            problems.push(format!("{path}: must be a string"));
            None
        }
    }
}

fn expect_enum(problems: &mut Vec<String>, path: &str, value: &Value, choices: &[&str]) {
    if !value.as_str().is_some_and(|v| choices.contains(&v)) {
        problems.push(format!("{path}: must be one of {}", choices.join(", ")));
    }
}

fn is_uuid(s: &str) -> bool {
    uuid::Uuid::try_parse(s).is_ok()
}

fn is_http_url(s: &str) -> bool {
    url::Url::parse(s).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
}

/// `CreateVideoRequest` (SY-API). Unknown fields are refused (whether Synthesia refuses them is
/// UNVERIFIED; the strict reading notices a misspelt field).
fn check_request(fields: &Map<String, Value>) -> Vec<String> {
    let mut problems = Vec::new();
    match fields.get("input") {
        None => problems.push("input: field required".to_owned()),
        Some(Value::Array(scenes)) if scenes.is_empty() => {
            problems.push("input: must hold at least one scene".to_owned());
        }
        Some(Value::Array(scenes)) if scenes.len() > MAX_SCENES => {
            problems.push(format!("input: at most {MAX_SCENES} scenes per video"));
        }
        Some(Value::Array(scenes)) => {
            for (i, scene) in scenes.iter().enumerate() {
                check_scene(&mut problems, &format!("input[{i}]"), scene);
            }
        }
        Some(_) => problems.push("input: must be an array".to_owned()),
    }
    for (name, value) in fields {
        let name = name.as_str();
        match name {
            "input" => {}
            "title" | "description" | "callbackId" => {
                expect_string(&mut problems, name, value);
            }
            "visibility" => expect_enum(&mut problems, name, value, VISIBILITIES),
            "aspectRatio" => expect_enum(&mut problems, name, value, ASPECT_RATIOS),
            "soundtrack" => expect_enum(&mut problems, name, value, SOUNDTRACKS),
            "test" if !value.is_boolean() => problems.push("test: must be a boolean".to_owned()),
            "test" => {}
            "folderId" if value.is_null() => {}
            "folderId" => {
                if expect_string(&mut problems, name, value).is_some_and(|s| !is_uuid(&s)) {
                    problems.push("folderId: must be a UUID".to_owned());
                }
            }
            "ctaSettings" => match value.as_object() {
                Some(cta) => {
                    for part in ["label", "url"] {
                        match cta.get(part) {
                            Some(v) => {
                                expect_string(&mut problems, &format!("ctaSettings.{part}"), v);
                            }
                            None => problems.push(format!("ctaSettings.{part}: field required")),
                        }
                    }
                }
                None => problems.push("ctaSettings: must be an object".to_owned()),
            },
            "soundSettings" if value.is_object() => {}
            "soundSettings" => problems.push("soundSettings: must be an object".to_owned()),
            other => problems.push(format!("{other}: unknown field")),
        }
    }
    problems
}

/// One scene (`Input`, SY-API): `avatar` and `background` required, a script as `scriptText`
/// or as `scriptAudio` with its `scriptLanguage`.
fn check_scene(problems: &mut Vec<String>, path: &str, scene: &Value) {
    let Some(scene) = scene.as_object() else {
        problems.push(format!("{path}: must be an object"));
        return;
    };
    for required in ["avatar", "background"] {
        if !scene.contains_key(required) {
            problems.push(format!("{path}.{required}: field required"));
        }
    }
    // A scene without any script is refused (UNVERIFIED: the schema requires neither, but a
    // talking avatar needs something to say).
    if !scene.contains_key("scriptText") && !scene.contains_key("scriptAudio") {
        problems.push(format!("{path}: scriptText or scriptAudio is required"));
    }
    if scene.contains_key("scriptAudio") && !scene.contains_key("scriptLanguage") {
        problems.push(format!("{path}.scriptLanguage: required with scriptAudio"));
    }
    for (name, value) in scene {
        let field = format!("{path}.{name}");
        match name.as_str() {
            "avatar" => {
                if let Some(avatar) = expect_string(problems, &field, value)
                    && !AVATARS.contains(&avatar.as_str())
                {
                    problems.push(format!("{field}: unknown avatar '{avatar}'"));
                }
            }
            "background" => {
                if let Some(bg) = expect_string(problems, &field, value)
                    && !(BACKGROUNDS.contains(&bg.as_str()) || is_uuid(&bg) || is_http_url(&bg))
                {
                    problems.push(format!("{field}: unknown background '{bg}'"));
                }
            }
            "scriptText" => {
                if expect_string(problems, &field, value).is_some_and(|s| s.trim().is_empty()) {
                    problems.push(format!("{field}: must not be empty"));
                }
            }
            "scriptAudio" => {
                if expect_string(problems, &field, value).is_some_and(|s| !is_uuid(&s)) {
                    problems.push(format!("{field}: must be the id of uploaded script audio"));
                }
            }
            "scriptLanguage" => {
                // A BCP 47-like code (`en-US`, `fil`, `es-001`); the full list of the reference
                // is not copied here.
                let valid = value.as_str().is_some_and(|s| {
                    !s.is_empty()
                        && s.len() <= 8
                        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                });
                if !valid {
                    problems.push(format!("{field}: must be a language code such as en-US"));
                }
            }
            "avatarSettings" => check_avatar_settings(problems, &field, value),
            "transition" if value.is_null() => {}
            "transition" => expect_enum(problems, &field, value, TRANSITIONS),
            "backgroundSettings" | "soundSettings" if value.is_object() => {}
            "backgroundSettings" | "soundSettings" => {
                problems.push(format!("{field}: must be an object"));
            }
            other => problems.push(format!("{path}.{other}: unknown field")),
        }
    }
}

/// `ActorSettings` (SY-API).
fn check_avatar_settings(problems: &mut Vec<String>, path: &str, value: &Value) {
    let Some(settings) = value.as_object() else {
        problems.push(format!("{path}: must be an object"));
        return;
    };
    for (name, value) in settings {
        let field = format!("{path}.{name}");
        match name.as_str() {
            "voice" | "horizontalAlign" | "scale" if value.is_null() => {}
            "voice" => {
                if expect_string(problems, &field, value).is_some_and(|s| !is_uuid(&s)) {
                    problems.push(format!("{field}: must be a voice id (a UUID)"));
                }
            }
            "horizontalAlign" => expect_enum(problems, &field, value, &["left", "center", "right"]),
            "style" => expect_enum(
                problems,
                &field,
                value,
                &["circular", "rectangular", "voiceOnly"],
            ),
            "scale" if !value.is_number() => problems.push(format!("{field}: must be a number")),
            "scale" => {}
            "seamless" if !value.is_boolean() => {
                problems.push(format!("{field}: must be a boolean"));
            }
            "seamless" => {}
            "backgroundColor" => {
                let valid = value.as_str().is_some_and(|s| {
                    s.strip_prefix('#').is_some_and(|hex| {
                        matches!(hex.len(), 3 | 6) && hex.chars().all(|c| c.is_ascii_hexdigit())
                    })
                });
                if !valid {
                    problems.push(format!("{field}: must be a HEX colour such as #F2F7FF"));
                }
            }
            other => problems.push(format!("{path}.{other}: unknown field")),
        }
    }
}

// ------------------------------------------------------------- reading --

impl Video {
    /// The video as the API shows it at `now_ms` (SY-VID).
    fn to_json(&self, public_url: &str, id: &str, now_ms: i64) -> Value {
        let mut body = Value::Object(self.fields.clone());
        let created_s = self.timeline.submitted_ms.div_euclid(1000);
        let ended_ms = self.timeline.submitted_ms + self.timeline.render_ms;
        let status = match (self.timeline.phase(now_ms), self.outcome) {
            (Phase::Pending | Phase::Running(_), _) => "in_progress",
            (Phase::Done, Outcome::Success) => "complete",
            (Phase::Done, Outcome::Moderated) => "rejected",
            (Phase::Done, Outcome::Failed) => "error",
        };
        body["id"] = json!(id);
        body["status"] = json!(status);
        body["createdAt"] = json!(created_s);
        body["lastUpdatedAt"] = json!(if status == "in_progress" {
            created_s
        } else {
            ended_ms.div_euclid(1000)
        });
        if status == "complete" {
            body["download"] = json!(format!("{public_url}/synthesia/download/{id}/video.mp4"));
            body["duration"] = json!(DURATION);
        }
        body
    }
}

/// `GET /v2/videos/{id}`.
async fn retrieve(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let key = match authenticate(&shared, &headers) {
        Ok(key) => key,
        Err(response) => return response,
    };
    shared.record(Provider::Synthesia, Some(&key.id()), Event::Poll);
    let config = shared.config();
    let now = shared.now_ms();
    let body = lock(&shared.synthesia)
        .videos
        .get(&id, now, ms(config.retention))
        .filter(|v| v.owner == key)
        .map(|v| v.to_json(&shared.public_url, &id, now));
    match body {
        Some(body) => crate::http::json(StatusCode::OK, &body),
        // Another key's video does not exist for this one.
        None => not_found("Video ID was not found."),
    }
}

/// The query of a list: `limit` (1–100, default 20), `offset` (≥ 0), `source` (repeatable).
fn list_query(query: Option<&str>) -> Result<(usize, usize), Response> {
    let (mut limit, mut offset) = (20usize, 0usize);
    let mut problems = Vec::new();
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match name.as_ref() {
            "limit" => match value.parse::<usize>() {
                Ok(n) if (1..=100).contains(&n) => limit = n,
                _ => problems.push("limit: must be an integer between 1 and 100".to_owned()),
            },
            "offset" => match value.parse::<usize>() {
                Ok(n) => offset = n,
                _ => problems.push("offset: must be an integer of at least 0".to_owned()),
            },
            "source" if !SOURCES.contains(&value.as_ref()) => {
                problems.push(format!("source: must be one of {}", SOURCES.join(", ")));
            }
            // Other query parameters are ignored, as web frameworks do.
            _ => {}
        }
    }
    if problems.is_empty() {
        Ok((limit, offset))
    } else {
        Err(invalid(&problems))
    }
}

/// `GET /v2/videos`: the key's videos, newest first, and the next page's `nextOffset`. Every
/// API-key check can use it: it creates nothing and costs nothing.
async fn list(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let key = match authenticate(&shared, &headers) {
        Ok(key) => key,
        Err(response) => return response,
    };
    let (limit, offset) = match list_query(query.as_deref()) {
        Ok(page) => page,
        Err(response) => return response,
    };
    let config = shared.config();
    let now = shared.now_ms();
    let retention = ms(config.retention);
    let mut guard = lock(&shared.synthesia);
    let Store { videos, order } = &mut *guard;
    // Drop ids of forgotten or deleted videos while walking.
    order.retain(|id| videos.get(id, now, retention).is_some());
    let mine: Vec<Value> = order
        .iter()
        .rev()
        .filter_map(|id| {
            videos
                .get(id, now, retention)
                .filter(|v| v.owner == key)
                .map(|v| v.to_json(&shared.public_url, id, now))
        })
        .skip(offset)
        .take(limit)
        .collect();
    drop(guard);
    let next = offset + mine.len();
    crate::http::json(StatusCode::OK, &json!({"videos": mine, "nextOffset": next}))
}

/// `DELETE /v2/videos/{id}` (SY-API): 204; another key's or an unknown video 404.
async fn delete(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let key = match authenticate(&shared, &headers) {
        Ok(key) => key,
        Err(response) => return response,
    };
    shared.record(Provider::Synthesia, Some(&key.id()), Event::Cancel);
    let config = shared.config();
    let now = shared.now_ms();
    let mut store = lock(&shared.synthesia);
    let mine = store
        .videos
        .get(&id, now, ms(config.retention))
        .is_some_and(|v| v.owner == key);
    if !mine {
        return not_found("Video ID was not found.");
    }
    store.videos.remove(&id);
    store.order.retain(|other| *other != id);
    StatusCode::NO_CONTENT.into_response()
}

/// `GET /v2/templates`: the simulator's keys have no templates of their own, and the
/// simulator offers none (creating from a template is not simulated).
async fn templates(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    if let Err(response) = authenticate(&shared, &headers) {
        return response;
    }
    let mut offset = 0usize;
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        let valid = match name.as_ref() {
            "limit" => value.parse::<usize>().is_ok_and(|n| (1..=100).contains(&n)),
            "offset" => value.parse::<usize>().inspect(|n| offset = *n).is_ok(),
            "source" => ["workspace", "synthesia"].contains(&value.as_ref()),
            _ => true,
        };
        if !valid {
            return invalid(&[format!("{name}: invalid value '{value}'")]);
        }
    }
    crate::http::json(
        StatusCode::OK,
        &json!({"templates": [], "nextOffset": offset}),
    )
}

/// `GET /v2/templates/{id}`: 404 ("Template not found").
async fn template(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Err(response) = authenticate(&shared, &headers) {
        return response;
    }
    not_found("Template not found.")
}

/// `GET /download/{id}/video.mp4`: a complete video's MP4, without auth (as Synthesia's
/// time-limited download links), while the video exists.
async fn download(
    State(shared): State<Arc<Shared>>,
    Path((id, file)): Path<(String, String)>,
) -> Response {
    let config = shared.config();
    let now = shared.now_ms();
    let complete = file == "video.mp4"
        && lock(&shared.synthesia)
            .videos
            .get(&id, now, ms(config.retention))
            .is_some_and(|v| v.outcome == Outcome::Success && v.timeline.phase(now) == Phase::Done);
    if !complete {
        return StatusCode::NOT_FOUND.into_response();
    }
    video::download_response(video::mp4_for(&id), config.video_padding_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn video(outcome: Outcome) -> Video {
        let Value::Object(fields) = json!({"title": "t", "input": []}) else {
            unreachable!()
        };
        Video {
            owner: KeyHash::of("sim_a"),
            fields,
            timeline: Timeline {
                submitted_ms: 10_000,
                render_ms: 5_000,
            },
            outcome,
        }
    }

    #[test]
    fn a_video_walks_to_its_outcome() {
        let v = video(Outcome::Success);
        let running = v.to_json("http://s", "v1", 12_000);
        assert_eq!(running["status"], "in_progress");
        assert_eq!(running["createdAt"], 10);
        assert_eq!(running["lastUpdatedAt"], 10);
        assert!(running.get("download").is_none());
        let done = v.to_json("http://s", "v1", 15_000);
        assert_eq!(done["status"], "complete");
        assert_eq!(done["lastUpdatedAt"], 15);
        assert_eq!(done["download"], "http://s/synthesia/download/v1/video.mp4");
        assert_eq!(done["duration"], DURATION);
        assert_eq!(
            video(Outcome::Moderated).to_json("http://s", "v", 15_000)["status"],
            "rejected"
        );
        let failed = video(Outcome::Failed).to_json("http://s", "v", 15_000);
        assert_eq!(failed["status"], "error");
        assert!(failed.get("download").is_none());
    }

    #[test]
    fn bodies_are_checked_field_by_field() {
        let check = |body: Value| check_request(body.as_object().unwrap());
        assert!(
            check(json!({"input": [{"scriptText": "hi", "avatar": AVATARS[0],
                                    "background": "green_screen"}]}))
            .is_empty()
        );
        let problems = check(json!({"input": [{"scriptText": "hi", "avatar": "nobody",
                                              "background": "https://example.com/bg.png"}],
                                    "aspectRatio": "2:1", "colour": 1}));
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("input[0].avatar: unknown avatar 'nobody'"));
        assert!(check(json!({})).contains(&"input: field required".to_owned()));
        assert!(!check(json!({"input": "x"})).is_empty());
    }
}
