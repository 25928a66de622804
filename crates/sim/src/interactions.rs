//! Gemini Omni on Vertex AI: the Interactions API under `/vertex`, docs/provider-protocols.md
//! §3.10–3.15.
//!
//! - `POST /v1beta1/projects/{p}/locations/{l}/interactions`: creates a background
//!   interaction and answers it (status `queued`, or further if the render time is short);
//! - `GET …/interactions/{id}`: the interaction (`stream=false`; `include_input=false`
//!   leaves out the input step);
//! - `POST …/interactions/{id}/cancel`: cancels a running one and answers it.
//!
//! An interaction walks `queued` (the first tenth of the render time) → `in_progress` →
//! `completed`, with the video inline (base64 `data`) or, for `delivery: "uri"`, as a
//! `gs://` object under `gcs_uri` that `/storage` serves to the same account; or `failed`
//! with `errors` (`safety` for a moderated prompt, `api_error` at `failure_rate`); or
//! `cancelled`. Calls need a live token of an account of the project in the path (401
//! `UNAUTHENTICATED`, 403 `PERMISSION_DENIED`); errors are `google.rpc.Status` bodies as
//! elsewhere on Vertex AI. An interaction is visible only to tokens of the account that
//! created it. The models are the `gemini-` ids of `vertex_models`, served in `global` only.
//!
//! Where Google's documentation is silent the strict reading is taken: unknown fields are
//! refused, a video interaction must run in the background and be stored, and the input
//! must fit the task.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use serde_json::{Map, Value, json};

use crate::clock::ms;
use crate::http::type_name;
use crate::state::{Outcome, Phase, Shared, Timeline, Token, lock};
use crate::stats::{Event, Provider};
use crate::vertex::{Object, Source, authenticate, invalid, parse_gs, rpc_error, throttle_submit};
use crate::video;

/// Inline images and videos in JSON: as Vertex's other video routes.
const BODY_LIMIT: usize = 32 * 1024 * 1024;
/// Inline media are at most 20 MB (Vertex AI's limit for inline images).
const MAX_MEDIA: usize = 20 * 1024 * 1024;
/// The only location Omni is served in.
const LOCATION: &str = "global";
/// Output tokens per second of video, for `usage` (Google bills Omni's video this way).
const TOKENS_PER_SECOND: u64 = 5792;
/// No cancel yet.
const NOT_CANCELLED: i64 = i64::MIN;

/// The create body's top-level fields (google-genai `CreateModelInteraction`).
const CREATE_FIELDS: &[&str] = &[
    "model",
    "input",
    "background",
    "store",
    "stream",
    "generation_config",
    "response_format",
    "response_modalities",
    "response_mime_type",
    "webhook_config",
    "previous_interaction_id",
    "labels",
    "safety_settings",
    "system_instruction",
    "service_tier",
    "tools",
    "cached_content",
    "continuation_token",
    "environment",
    "agent",
    "agent_config",
];

/// `generation_config`'s fields (google-genai `GenerationConfig`).
const GENERATION_FIELDS: &[&str] = &[
    "image_config",
    "max_output_tokens",
    "seed",
    "speech_config",
    "stop_sequences",
    "temperature",
    "thinking_level",
    "thinking_summaries",
    "tool_choice",
    "top_p",
    "transcription_config",
    "video_config",
];

const TASKS: &[&str] = &[
    "text_to_video",
    "image_to_video",
    "reference_to_video",
    "edit",
    "extend",
    "upscale",
];

/// The image types of Vertex's Omni model page.
const IMAGE_TYPES: &[&str] = &[
    "image/png",
    "image/jpeg",
    "image/webp",
    "image/heic",
    "image/heif",
];

/// An interaction, as the simulator remembers it.
#[derive(Debug)]
pub(crate) struct Interaction {
    owner: String,
    project: String,
    model: String,
    timeline: Timeline,
    outcome: Outcome,
    /// When it was cancelled (unix ms), or [`NOT_CANCELLED`].
    cancelled_ms: AtomicI64,
    /// `gs://bucket/prefix/` of `delivery: "uri"`, as (bucket, prefix).
    storage: Option<(String, String)>,
    seconds: u32,
    /// The input's content blocks, as the input step echoes them.
    input: Arc<Vec<Value>>,
}

/// Where an interaction stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Queued,
    InProgress,
    Completed,
    Failed,
    Cancelled,
}

impl Status {
    fn wire(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::InProgress => "in_progress",
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
        }
    }

    fn running(self) -> bool {
        matches!(self, Status::Queued | Status::InProgress)
    }
}

impl Interaction {
    fn cancelled_at(&self) -> Option<i64> {
        let at = self.cancelled_ms.load(Ordering::Relaxed);
        (at != NOT_CANCELLED).then_some(at)
    }

    fn state(&self, now_ms: i64) -> Status {
        if self.cancelled_at().is_some() {
            return Status::Cancelled;
        }
        match self.timeline.phase(now_ms) {
            Phase::Pending => Status::Queued,
            Phase::Running(_) => Status::InProgress,
            Phase::Done if self.outcome == Outcome::Success => Status::Completed,
            Phase::Done => Status::Failed,
        }
    }

    /// When it last changed.
    fn updated_ms(&self, now_ms: i64) -> i64 {
        let submitted = self.timeline.submitted_ms;
        let render = self.timeline.render_ms;
        match self.state(now_ms) {
            Status::Cancelled => self.cancelled_at().unwrap_or(submitted),
            Status::Queued => submitted,
            Status::InProgress => submitted + render / 10,
            Status::Completed | Status::Failed => submitted + render,
        }
    }
}

pub(crate) fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route(
            "/{version}/projects/{project}/locations/{location}/interactions",
            post(create),
        )
        .route(
            "/{version}/projects/{project}/locations/{location}/interactions/{id}",
            get(fetch),
        )
        .route(
            "/{version}/projects/{project}/locations/{location}/interactions/{id}/cancel",
            post(cancel),
        )
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
}

/// Whether the video of interaction `id` exists (for `/storage`): it completed.
pub(crate) fn output_written(shared: &Shared, id: &str, now_ms: i64, retention_ms: i64) -> bool {
    lock(&shared.interactions)
        .get(id, now_ms, retention_ms)
        .is_some_and(|it| it.state(now_ms) == Status::Completed)
}

#[derive(Debug, serde::Deserialize)]
struct ApiPath {
    version: String,
    project: String,
    location: String,
}

#[derive(Debug, serde::Deserialize)]
struct ItemPath {
    version: String,
    project: String,
    location: String,
    id: String,
}

/// The token of a call on `project`, or its 401/403. Interactions are served in
/// `v1beta1` only (google-genai's Vertex version).
fn caller(
    shared: &Shared,
    headers: &HeaderMap,
    version: &str,
    project: &str,
    location: &str,
    permission: &str,
) -> Result<Token, Response> {
    if version != "v1beta1" {
        return Err(rpc_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "The requested URL was not found on this server.",
        ));
    }
    let token = authenticate(shared, headers)?;
    if project != token.project_id {
        // The permission names are the simulator's guess (UNVERIFIED).
        return Err(rpc_error(
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            &format!(
                "Permission 'aiplatform.interactions.{permission}' denied on resource \
                 '//aiplatform.googleapis.com/projects/{project}/locations/{location}' (or it may not exist)."
            ),
        ));
    }
    Ok(token)
}

async fn create(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(path): Path<ApiPath>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let token = match caller(
        &shared,
        &headers,
        &path.version,
        &path.project,
        &path.location,
        "create",
    ) {
        Ok(token) => token,
        Err(response) => return response,
    };
    let email = token.client_email.as_str();
    let rejected = |response: Response| {
        shared.record(Provider::Vertex, Some(email), Event::Rejected);
        response
    };
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            let status = if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                "OUT_OF_RANGE"
            } else {
                "INVALID_ARGUMENT"
            };
            return rejected(rpc_error(
                rejection.status(),
                status,
                &rejection.body_text(),
            ));
        }
    };
    let config = shared.config();
    let request: Value = match serde_json::from_slice(&body) {
        Ok(value) => value,
        Err(e) => return rejected(invalid(&format!("Invalid JSON payload received. {e}"))),
    };
    // The model first: a model that does not exist (or not here) is a 404, as a retired
    // one is.
    let model = request.get("model").and_then(Value::as_str).unwrap_or("");
    let served = config.vertex_models.iter().any(|m| m == model) && model.starts_with("gemini-");
    if !served || path.location != LOCATION {
        return rejected(rpc_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            &format!(
                "Publisher Model `projects/{}/locations/{}/publishers/google/models/{model}` not found.",
                path.project, path.location
            ),
        ));
    }
    // A 429 comes before the body is checked, as a quota would.
    if let Some(throttled) = throttle_submit(
        &shared,
        email,
        config.retry_after,
        "generate_content_requests_per_minute_per_project_per_base_model",
        model,
    ) {
        return throttled;
    }
    let valid = match validate(&request, model) {
        Ok(valid) => valid,
        Err(message) => return rejected(invalid(&message)),
    };
    let id = new_id();
    let now = shared.now_ms();
    let retention = ms(config.retention);
    if let Some((bucket, prefix)) = &valid.storage {
        lock(&shared.objects).insert(
            format!("{bucket}/{prefix}{id}/sample_0.mp4"),
            Object {
                owner: email.to_owned(),
                source: Source::Interaction(id.clone()),
            },
            now,
            retention,
        );
    }
    let interaction = Interaction {
        owner: email.to_owned(),
        project: path.project,
        model: model.to_owned(),
        timeline: Timeline::starting_now(&shared, &config),
        outcome: Outcome::draw(&config, Some(&valid.text)),
        cancelled_ms: AtomicI64::new(NOT_CANCELLED),
        storage: valid.storage,
        seconds: valid.seconds,
        input: Arc::new(valid.input),
    };
    let answer = interaction_json(&id, &interaction, now, true);
    lock(&shared.interactions).insert(id.clone(), interaction, now, retention);
    shared.record(Provider::Vertex, Some(email), Event::Accepted);
    tracing::debug!(interaction = %id, account = %email, "vertex interaction created");
    crate::http::json(StatusCode::OK, &answer)
}

async fn fetch(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(path): Path<ItemPath>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let token = match caller(
        &shared,
        &headers,
        &path.version,
        &path.project,
        &path.location,
        "get",
    ) {
        Ok(token) => token,
        Err(response) => return response,
    };
    shared.record(Provider::Vertex, Some(&token.client_email), Event::Poll);
    match query.get("stream").map(String::as_str) {
        None | Some("false") => {}
        Some("true") => return invalid("byok-sim does not stream interactions (stream=false)."),
        Some(other) => {
            return invalid(&format!(
                "Invalid value at 'stream' (TYPE_BOOL), \"{other}\""
            ));
        }
    }
    let include_input = match query.get("include_input").map(String::as_str) {
        None | Some("true") => true,
        Some("false") => false,
        Some(other) => {
            return invalid(&format!(
                "Invalid value at 'include_input' (TYPE_BOOL), \"{other}\""
            ));
        }
    };
    let config = shared.config();
    let now = shared.now_ms();
    let mut interactions = lock(&shared.interactions);
    let Some(interaction) = find(&mut interactions, &token, &path, now, ms(config.retention))
    else {
        drop(interactions);
        return interaction_not_found(&path.id);
    };
    let body = interaction_json(&path.id, interaction, now, include_input);
    drop(interactions);
    crate::http::json(StatusCode::OK, &body)
}

async fn cancel(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(path): Path<ItemPath>,
) -> Response {
    if !headers.contains_key(header::CONTENT_LENGTH)
        && !headers.contains_key(header::TRANSFER_ENCODING)
    {
        return length_required();
    }
    let token = match caller(
        &shared,
        &headers,
        &path.version,
        &path.project,
        &path.location,
        "cancel",
    ) {
        Ok(token) => token,
        Err(response) => return response,
    };
    shared.record(Provider::Vertex, Some(&token.client_email), Event::Cancel);
    let config = shared.config();
    let now = shared.now_ms();
    let mut interactions = lock(&shared.interactions);
    let Some(interaction) = find(&mut interactions, &token, &path, now, ms(config.retention))
    else {
        drop(interactions);
        return interaction_not_found(&path.id);
    };
    let state = interaction.state(now);
    if !state.running() {
        drop(interactions);
        // Google cancels only background interactions that are still running; what it
        // answers for the others is UNVERIFIED.
        return rpc_error(
            StatusCode::BAD_REQUEST,
            "FAILED_PRECONDITION",
            &format!(
                "Only running background interactions can be cancelled; interaction `{}` is {}.",
                path.id,
                state.wire()
            ),
        );
    }
    interaction.cancelled_ms.store(now, Ordering::Relaxed);
    let body = interaction_json(&path.id, interaction, now, false);
    drop(interactions);
    tracing::debug!(interaction = %path.id, "vertex interaction cancelled");
    crate::http::json(StatusCode::OK, &body)
}

/// The interaction of `path`, when it exists, is the caller's and lives where the path
/// says.
fn find<'a>(
    interactions: &'a mut crate::state::Jobs<Interaction>,
    token: &Token,
    path: &ItemPath,
    now_ms: i64,
    retention_ms: i64,
) -> Option<&'a Interaction> {
    interactions
        .get(&path.id, now_ms, retention_ms)
        .filter(|it| {
            it.owner == token.client_email
                && it.project == path.project
                && path.location == LOCATION
        })
}

/// Google's front end on a POST without a length: an HTML page, before any API code runs.
fn length_required() -> Response {
    let mut response = (
        StatusCode::LENGTH_REQUIRED,
        "<!DOCTYPE html>\n<html lang=en><title>Error 411 (Length Required)!!1</title>\n\
         <p><b>411.</b> <ins>That's an error.</ins>\n\
         <p>POST requests require a <code>Content-length</code> header. \
         <ins>That's all we know.</ins>\n",
    )
        .into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=UTF-8"),
    );
    response
}

fn interaction_not_found(id: &str) -> Response {
    rpc_error(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        &format!("Interaction `{id}` not found."),
    )
}

/// A new interaction id: URL-safe base64 of random bytes, as Google's look.
fn new_id() -> String {
    let mut bytes = [0u8; 24];
    rand::fill(&mut bytes[..]);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn iso(unix_ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(unix_ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// The Interaction resource (google-genai `interaction.py`) at `now_ms`.
fn interaction_json(id: &str, it: &Interaction, now_ms: i64, include_input: bool) -> Value {
    let state = it.state(now_ms);
    let mut steps = Vec::new();
    if include_input {
        steps.push(json!({"type": "user_input", "content": *it.input}));
    }
    let mut body = json!({
        "id": id,
        "status": state.wire(),
        "model": it.model,
        "created": iso(it.timeline.submitted_ms),
        "updated": iso(it.updated_ms(now_ms)),
    });
    match state {
        Status::Completed => {
            let video = match &it.storage {
                Some((bucket, prefix)) => json!({
                    "type": "video",
                    "uri": format!("gs://{bucket}/{prefix}{id}/sample_0.mp4"),
                    "mime_type": "video/mp4",
                }),
                None => json!({
                    "type": "video",
                    "data": base64::engine::general_purpose::STANDARD
                        .encode(video::mp4_for(&format!("{id}/0"))),
                    "mime_type": "video/mp4",
                }),
            };
            steps.push(json!({"type": "model_output", "content": [video]}));
            let output = u64::from(it.seconds) * TOKENS_PER_SECOND;
            body["usage"] = json!({"total_output_tokens": output, "total_tokens": output});
        }
        Status::Failed => {
            body["errors"] = match it.outcome {
                Outcome::Moderated => json!([{
                    "code": "safety",
                    "message": "The request was blocked because it may violate Google's usage policies.",
                }]),
                _ => json!([{"code": "api_error", "message": "Internal error encountered."}]),
            };
        }
        Status::Queued | Status::InProgress | Status::Cancelled => {}
    }
    body["steps"] = Value::Array(steps);
    body
}

// ---------------------------------------------------------- validation --

/// What the simulator keeps of a valid create.
#[derive(Debug)]
struct Valid {
    /// The text of the input, for the moderation trigger.
    text: String,
    input: Vec<Value>,
    storage: Option<(String, String)>,
    seconds: u32,
}

/// Media counts of an input, for the task's rules.
#[derive(Debug, Default)]
struct Media {
    images: usize,
    videos: usize,
}

fn validate(request: &Value, model: &str) -> Result<Valid, String> {
    let Some(top) = request.as_object() else {
        return Err("Invalid JSON payload received. Expected an object.".to_owned());
    };
    if let Some(unknown) = top.keys().find(|k| !CREATE_FIELDS.contains(&k.as_str())) {
        return Err(format!(
            "Invalid JSON payload received. Unknown name \"{unknown}\": Cannot find field."
        ));
    }
    for key in [
        "agent",
        "agent_config",
        "tools",
        "previous_interaction_id",
        "continuation_token",
        "cached_content",
        "environment",
    ] {
        if top.contains_key(key) {
            return Err(format!(
                "{key} is not supported by byok-sim's video interactions."
            ));
        }
    }
    let flag = |key: &str| -> Result<Option<bool>, String> {
        match top.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(format!(
                "Invalid value at '{key}' (TYPE_BOOL), {}",
                type_name(Some(other))
            )),
        }
    };
    if flag("background")? != Some(true) {
        // A foreground create would hold the connection for the whole render.
        return Err(
            "byok-sim runs video interactions in the background only (background: true)."
                .to_owned(),
        );
    }
    if flag("store")? == Some(false) {
        return Err("A background interaction must be stored (store: true).".to_owned());
    }
    if flag("stream")? == Some(true) {
        return Err("byok-sim does not stream interactions (stream: false).".to_owned());
    }
    let (input, text, media) = input_of(top.get("input"))?;
    let task = task_of(top.get("generation_config"))?;
    check_task(task, &text, &media)?;
    let (seconds, storage) = response_format(top.get("response_format"), model)?;
    Ok(Valid {
        text,
        input,
        storage,
        seconds,
    })
}

/// The input's content blocks, its text and its media. google-genai sends a string, one
/// content block, a list of them, or `user_input` steps holding them.
fn input_of(input: Option<&Value>) -> Result<(Vec<Value>, String, Media), String> {
    let blocks: Vec<Value> = match input {
        None | Some(Value::Null) => return Err("input is required.".to_owned()),
        Some(Value::String(text)) => vec![json!({"type": "text", "text": text})],
        Some(Value::Object(block)) => vec![Value::Object(block.clone())],
        Some(Value::Array(items)) if items.is_empty() => {
            return Err("input must not be empty.".to_owned());
        }
        Some(Value::Array(items)) => {
            let steps = items.iter().all(|i| {
                i.get("content").is_some()
                    || i.get("type").and_then(Value::as_str) == Some("user_input")
            });
            if steps {
                let mut blocks = Vec::new();
                for (i, step) in items.iter().enumerate() {
                    if step.get("type").and_then(Value::as_str) != Some("user_input") {
                        return Err(format!(
                            "input[{i}]: byok-sim accepts user_input steps only."
                        ));
                    }
                    match step.get("content") {
                        Some(Value::Array(content)) => blocks.extend(content.iter().cloned()),
                        _ => return Err(format!("input[{i}].content must be a list.")),
                    }
                }
                blocks
            } else {
                items.clone()
            }
        }
        Some(other) => {
            return Err(format!(
                "Invalid value at 'input': {}.",
                type_name(Some(other))
            ));
        }
    };
    let mut text = String::new();
    let mut media = Media::default();
    for (i, block) in blocks.iter().enumerate() {
        check_block(block, i, &mut text, &mut media)?;
    }
    Ok((blocks, text, media))
}

fn check_block(
    block: &Value,
    i: usize,
    text: &mut String,
    media: &mut Media,
) -> Result<(), String> {
    let Some(fields) = block.as_object() else {
        return Err(format!("input content [{i}] must be an object."));
    };
    let kind = fields.get("type").and_then(Value::as_str).unwrap_or("");
    let allowed: &[&str] = match kind {
        "text" => &["type", "text", "annotations"],
        "image" => &["type", "data", "uri", "mime_type", "resolution"],
        "video" => &[
            "type",
            "data",
            "uri",
            "mime_type",
            "resolution",
            "processing",
            "name",
        ],
        "audio" => {
            return Err(format!(
                "input content [{i}]: audio inputs are not supported by the Omni video models."
            ));
        }
        other => {
            return Err(format!(
                "input content [{i}]: unsupported content type `{other}`."
            ));
        }
    };
    if let Some(unknown) = fields.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(format!(
            "Invalid JSON payload received. Unknown name \"{unknown}\" in input content [{i}]: Cannot find field."
        ));
    }
    match kind {
        "text" => match fields.get("text") {
            Some(Value::String(t)) => {
                if !text.is_empty() {
                    text.push('\n');
                }
                text.push_str(t);
                Ok(())
            }
            _ => Err(format!("input content [{i}].text must be a string.")),
        },
        "image" => {
            media.images += 1;
            check_media(fields, i, |mime| IMAGE_TYPES.contains(&mime))
        }
        _ => {
            media.videos += 1;
            check_media(fields, i, |mime| mime.starts_with("video/"))
        }
    }
}

/// An image or video block: exactly one of `data` (base64, with its `mime_type`) and a
/// `gs://` `uri`; inline images must be of the type they say (PNG, JPEG and WebP are
/// sniffed).
fn check_media(
    fields: &Map<String, Value>,
    i: usize,
    mime_ok: impl Fn(&str) -> bool,
) -> Result<(), String> {
    let string = |key: &str| match fields.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(other) => Err(format!(
            "Invalid value at 'input content [{i}].{key}': expected a string, got {}.",
            type_name(Some(other))
        )),
    };
    let (data, uri, mime) = (string("data")?, string("uri")?, string("mime_type")?);
    if let Some(mime) = mime
        && !mime_ok(mime)
    {
        return Err(format!(
            "input content [{i}].mime_type `{mime}` is not supported."
        ));
    }
    match (data, uri) {
        (Some(_), Some(_)) | (None, None) => Err(format!(
            "input content [{i}]: exactly one of data and uri must be set."
        )),
        (None, Some(uri)) => parse_gs(uri)
            .map(|_| ())
            .ok_or_else(|| format!("input content [{i}].uri must be a gs:// URI.")),
        (Some(b64), None) => {
            let Some(mime) = mime else {
                return Err(format!(
                    "input content [{i}].mime_type is required with data."
                ));
            };
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .or_else(|_| {
                    base64::engine::general_purpose::URL_SAFE_NO_PAD
                        .decode(b64.trim_end_matches('='))
                })
                .map_err(|_| format!("input content [{i}].data is not valid base64."))?;
            if bytes.len() > MAX_MEDIA {
                return Err(format!("input content [{i}] is larger than 20 MB."));
            }
            let sniffed = match mime {
                "image/png" => Some(image::ImageFormat::Png),
                "image/jpeg" => Some(image::ImageFormat::Jpeg),
                "image/webp" => Some(image::ImageFormat::WebP),
                _ => None,
            };
            if let Some(expected) = sniffed
                && image::guess_format(&bytes).ok() != Some(expected)
            {
                return Err(format!(
                    "Unable to decode input content [{i}]: the bytes are not a {mime} image."
                ));
            }
            Ok(())
        }
    }
}

/// `generation_config.video_config.task`, when given.
fn task_of(config: Option<&Value>) -> Result<Option<&str>, String> {
    let config = match config {
        None => return Ok(None),
        Some(Value::Object(c)) => c,
        Some(_) => return Err("generation_config must be an object.".to_owned()),
    };
    if let Some(unknown) = config
        .keys()
        .find(|k| !GENERATION_FIELDS.contains(&k.as_str()))
    {
        return Err(format!(
            "Invalid JSON payload received. Unknown name \"{unknown}\" at 'generation_config': Cannot find field."
        ));
    }
    if let Some(seed) = config.get("seed")
        && !seed.is_i64()
    {
        return Err("Invalid value at 'generation_config.seed' (TYPE_INT32).".to_owned());
    }
    let video = match config.get("video_config") {
        None => return Ok(None),
        Some(Value::Object(v)) => v,
        Some(_) => return Err("generation_config.video_config must be an object.".to_owned()),
    };
    if let Some(unknown) = video.keys().find(|k| k.as_str() != "task") {
        return Err(format!(
            "Invalid JSON payload received. Unknown name \"{unknown}\" at 'generation_config.video_config': Cannot find field."
        ));
    }
    match video.get("task") {
        None => Ok(None),
        Some(Value::String(task)) if TASKS.contains(&task.as_str()) => Ok(Some(task)),
        Some(other) => Err(format!(
            "Invalid value at 'generation_config.video_config.task': {other}. Supported: {}.",
            TASKS.join(", ")
        )),
    }
}

/// The input must fit the task (inferred from the media when none is said).
fn check_task(task: Option<&str>, text: &str, media: &Media) -> Result<(), String> {
    let fits = match task {
        None => media.images + media.videos > 0 || !text.trim().is_empty(),
        Some("text_to_video") => media.images + media.videos == 0 && !text.trim().is_empty(),
        Some("image_to_video") => (1..=2).contains(&media.images) && media.videos == 0,
        Some("reference_to_video") => {
            media.images + media.videos > 0 && media.images <= 6 && media.videos <= 3
        }
        Some(_) => media.videos == 1,
    };
    if fits {
        Ok(())
    } else {
        Err(format!(
            "The input does not fit the task `{}` ({} image(s), {} video(s), {} text).",
            task.unwrap_or("inferred"),
            media.images,
            media.videos,
            if text.trim().is_empty() { "no" } else { "some" }
        ))
    }
}

/// `response_format` (one object or a list): the video's `duration` (`"<n>s"`),
/// `aspect_ratio`, `resolution`, `delivery` and `gcs_uri` (required for `uri` delivery on
/// Vertex). Returns (seconds, storage).
fn response_format(
    format: Option<&Value>,
    model: &str,
) -> Result<(u32, Option<(String, String)>), String> {
    let formats: Vec<&Value> = match format {
        None => Vec::new(),
        Some(Value::Array(items)) => items.iter().collect(),
        Some(other) => vec![other],
    };
    let mut seconds = 8;
    let mut storage = None;
    let longest = if model.starts_with("gemini-omni-1.2") {
        15
    } else {
        10
    };
    for (i, format) in formats.iter().enumerate() {
        let Some(fields) = format.as_object() else {
            return Err(format!("response_format[{i}] must be an object."));
        };
        if fields.get("type").and_then(Value::as_str) != Some("video") {
            return Err(format!(
                "response_format[{i}]: the Omni video models answer with type `video` only."
            ));
        }
        const KEYS: &[&str] = &[
            "type",
            "duration",
            "aspect_ratio",
            "resolution",
            "delivery",
            "gcs_uri",
        ];
        if let Some(unknown) = fields.keys().find(|k| !KEYS.contains(&k.as_str())) {
            return Err(format!(
                "Invalid JSON payload received. Unknown name \"{unknown}\" at 'response_format[{i}]': Cannot find field."
            ));
        }
        let string = |key: &str| -> Result<Option<&str>, String> {
            match fields.get(key) {
                None => Ok(None),
                Some(Value::String(s)) => Ok(Some(s)),
                Some(other) => Err(format!(
                    "Invalid value at 'response_format[{i}].{key}': expected a string, got {}.",
                    type_name(Some(other))
                )),
            }
        };
        if let Some(duration) = string("duration")? {
            let n = duration
                .strip_suffix('s')
                .and_then(|n| n.parse::<u32>().ok())
                .filter(|n| (3..=longest).contains(n))
                .ok_or_else(|| {
                    format!(
                        "Unsupported value for response_format[{i}].duration: `{duration}`. Supported durations are 3s to {longest}s."
                    )
                })?;
            seconds = n;
        }
        let one_of = |key: &str, allowed: &[&str]| -> Result<Option<String>, String> {
            match string(key)? {
                Some(v) if !allowed.contains(&v) => Err(format!(
                    "Unsupported value for response_format[{i}].{key}: `{v}`. Supported values: {}.",
                    allowed.join(", ")
                )),
                v => Ok(v.map(str::to_owned)),
            }
        };
        one_of("aspect_ratio", &["16:9", "9:16"])?;
        let resolutions: &[&str] = if model == "gemini-omni-flash-preview" {
            &["720p"]
        } else {
            &["360p", "720p", "1080p", "4k"]
        };
        one_of("resolution", resolutions)?;
        let delivery = one_of("delivery", &["inline", "uri"])?;
        let gcs_uri = string("gcs_uri")?;
        storage = match (delivery.as_deref(), gcs_uri) {
            (Some("uri"), Some(uri)) => Some(parse_gs(uri).ok_or_else(|| {
                format!(
                    "response_format[{i}].gcs_uri `{uri}` is not a valid gs://bucket/prefix URI."
                )
            })?),
            (Some("uri"), None) => {
                return Err(format!(
                    "response_format[{i}].gcs_uri is required on Vertex AI when delivery is `uri`."
                ));
            }
            (_, Some(_)) => {
                return Err(format!(
                    "response_format[{i}].gcs_uri is only used with delivery `uri`."
                ));
            }
            (_, None) => None,
        };
    }
    Ok((seconds, storage))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODEL: &str = "gemini-omni-1.2-flash";

    fn body(extra: Value) -> Value {
        let mut body = json!({"model": MODEL, "background": true, "input": "a cat"});
        if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
            b.extend(e);
        }
        body
    }

    #[test]
    fn every_input_form_of_the_client_is_read() {
        let png = base64::engine::general_purpose::STANDARD.encode(b"\x89PNG\r\n\x1a\n0000");
        for input in [
            json!("a cat"),
            json!({"type": "text", "text": "a cat"}),
            json!([{"type": "text", "text": "a cat"}, {"type": "image", "data": png, "mime_type": "image/png"}]),
            json!([{"type": "user_input", "content": [{"type": "text", "text": "a cat"}]}]),
        ] {
            let valid = validate(&body(json!({"input": input.clone()})), MODEL)
                .unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(valid.text, "a cat");
        }
    }

    #[test]
    fn bad_creates_are_refused() {
        let png = base64::engine::general_purpose::STANDARD.encode(b"\x89PNG\r\n\x1a\n0000");
        for bad in [
            json!({"background": false}),
            json!({"store": false}),
            json!({"stream": true}),
            json!({"extra": 1}),
            json!({"input": []}),
            json!({"input": [{"type": "audio", "data": "AAAA", "mime_type": "audio/mp3"}]}),
            json!({"input": [{"type": "image", "data": png}]}),
            json!({"input": [{"type": "image", "data": png, "mime_type": "image/jpeg"}]}),
            json!({"input": [{"type": "image", "uri": "https://x/y.png", "mime_type": "image/png"}]}),
            json!({"generation_config": {"video_config": {"task": "dream"}}}),
            json!({"generation_config": {"video_config": {"task": "image_to_video"}}}),
            json!({"generation_config": {"sampling": 1}}),
            json!({"response_format": {"type": "video", "duration": "16s"}}),
            json!({"response_format": {"type": "video", "duration": "8"}}),
            json!({"response_format": {"type": "video", "aspect_ratio": "1:1"}}),
            json!({"response_format": {"type": "video", "delivery": "uri"}}),
            json!({"response_format": {"type": "video", "gcs_uri": "gs://bucket/x"}}),
            json!({"response_format": [{"type": "text"}]}),
            json!({"tools": []}),
        ] {
            assert!(validate(&body(bad.clone()), MODEL).is_err(), "{bad}");
        }
        assert!(
            validate(
                &body(json!({"response_format": {"type": "video", "duration": "15s"}})),
                "gemini-omni-1.1-flash-preview"
            )
            .is_err()
        );
    }

    #[test]
    fn uri_delivery_names_the_bucket() {
        let valid = validate(
            &body(
                json!({"response_format": [{"type": "video", "duration": "5s",
                "delivery": "uri", "gcs_uri": "gs://my-bucket/out"}]}),
            ),
            MODEL,
        )
        .unwrap();
        assert_eq!(valid.seconds, 5);
        assert_eq!(valid.storage, Some(("my-bucket".into(), "out/".into())));
    }
}
