//! Replicate (`/replicate`): the predictions API of `api.replicate.com`,
//! docs/provider-protocols.md §9.
//!
//! - `GET /v1/account`: the token check (§9.6).
//! - `POST /v1/models/{owner}/{name}/predictions`: a prediction of an official model;
//!   `POST /v1/predictions` with `version`: a prediction of a model version (§9.2).
//!   Answer 201 with the prediction; `Prefer: wait[=n]` holds the answer until the prediction
//!   ends or `n` s (60 by default) pass; `Cancel-After: <duration>` sets a deadline.
//! - `GET /v1/predictions/{id}`, `POST /v1/predictions/{id}/cancel`: the prediction (§9.3);
//!   `starting` → `processing` (tqdm progress in `logs`) → `succeeded` (`output` URL, `metrics`),
//!   `failed` (`error`), `canceled`, or `aborted` when a deadline passed before the start.
//! - `POST /v1/files` (multipart `content`), `GET`/`DELETE /v1/files/{id}`: input files.
//! - `GET /delivery/{id}/output.mp4`: outputs, without auth like Replicate's delivery URLs, and
//!   gone an hour after the prediction ended (the prediction then says `data_removed`).
//!
//! Every API route needs `Authorization: Bearer sim_…` (or Replicate's older `Token` scheme);
//! errors are problem details `{title, detail, status}` (§9.4).

use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::multipart::MultipartRejection;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Multipart, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::clock::ms;
use crate::http::type_name;
use crate::state::{Jobs, KeyHash, Outcome, Shared, Timeline, lock};
use crate::stats::{Event, Provider};
use crate::video;

/// Create bodies carry data URLs; Replicate documents no cap, and advises data URLs only for
/// small files (≤ 256 KB), so 8 MiB is generous. Beyond it: 413.
const BODY_LIMIT: usize = 8 * 1024 * 1024;
/// Uploads through the files API: the official clients' documented limit is 100 MB.
const FILE_LIMIT: usize = 100 * 1024 * 1024;
/// Replicate removes the input, output, output files and logs of API predictions an hour
/// after they end (RP-DOC data retention, §9.3).
const DATA_RETENTION_MS: i64 = 3_600_000;
/// `Prefer: wait` holds the answer at most this long (RP-SDK: "between 1 and 60").
const MAX_WAIT_SECS: u64 = 60;

/// Replicate's predictions and files, as the simulator remembers them.
#[derive(Debug, Default)]
pub(crate) struct Store {
    predictions: Jobs<Prediction>,
    files: Jobs<File>,
}

/// A prediction.
#[derive(Debug)]
pub(crate) struct Prediction {
    owner: KeyHash,
    model: &'static str,
    /// The version id when created by version, `hidden` for an official model (as Replicate
    /// shows official models' versions).
    version: String,
    input: Value,
    timeline: Timeline,
    outcome: Outcome,
    report_progress: bool,
    /// When `Cancel-After` ends it (unix ms).
    deadline_ms: Option<i64>,
    /// When a cancel ended it (unix ms). A `Cell`: set through the shared reference the
    /// store hands out, under the store's lock.
    canceled_ms: Cell<Option<i64>>,
}

/// An uploaded file: its description only, never its bytes (nothing reads them back).
#[derive(Debug)]
pub(crate) struct File {
    owner: KeyHash,
    name: String,
    content_type: String,
    size: u64,
    sha256: String,
    metadata: Value,
    created_ms: i64,
}

pub(crate) fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/v1/account", get(account))
        .route(
            "/v1/models/{owner}/{name}/predictions",
            post(create_for_model),
        )
        .route("/v1/predictions", post(create_for_version))
        .route("/v1/predictions/{id}", get(get_prediction))
        .route("/v1/predictions/{id}/cancel", post(cancel))
        .route(
            "/v1/files",
            post(upload).layer(DefaultBodyLimit::max(FILE_LIMIT)),
        )
        .route("/v1/files/{id}", get(get_file).delete(delete_file))
        .route("/delivery/{id}/{file}", get(delivery))
        .fallback(not_found_route)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
}

// ------------------------------------------------------------- models --

/// What an input field takes (the model's Cog schema, §9.7).
#[derive(Debug, Clone, Copy)]
enum Kind {
    Text,
    /// A file: a data URL, an http(s) URL, or the URL of one of the token's uploaded files.
    File,
    Files,
    Integer(i64, i64),
    Number(f64, f64),
    Boolean,
    Choice(&'static [&'static str]),
}

#[derive(Debug)]
struct Field {
    name: &'static str,
    kind: Kind,
    required: bool,
}

const fn field(name: &'static str, kind: Kind) -> Field {
    Field {
        name,
        kind,
        required: false,
    }
}

const fn required(name: &'static str, kind: Kind) -> Field {
    Field {
        name,
        kind,
        required: true,
    }
}

/// A model the simulator runs.
#[derive(Debug)]
struct Model {
    name: &'static str,
    version: &'static str,
    /// Reachable by the official-model route.
    official: bool,
    fields: &'static [Field],
    /// The input checked for the moderation trigger.
    prompt: Option<&'static str>,
}

/// Seedance 2.0's input schema (https://replicate.com/bytedance/seedance-2.0/api). The
/// enums' members are not on the page: `resolution` takes the two seen in use, `aspect_ratio`
/// Seedance's ratio set (UNVERIFIED; the strict reading refuses anything else).
const SEEDANCE: &[Field] = &[
    required("prompt", Kind::Text),
    field("image", Kind::File),
    field("last_frame_image", Kind::File),
    field("reference_images", Kind::Files),
    field("reference_videos", Kind::Files),
    field("reference_audios", Kind::Files),
    field("duration", Kind::Integer(-1, 15)),
    field("resolution", Kind::Choice(&["480p", "720p"])),
    field(
        "aspect_ratio",
        Kind::Choice(&["16:9", "4:3", "1:1", "3:4", "9:16", "21:9", "adaptive"]),
    ),
    field("generate_audio", Kind::Boolean),
    field("seed", Kind::Integer(i64::MIN, i64::MAX)),
];

/// Stable Video Diffusion's inputs (https://replicate.com/stability-ai/stable-video-diffusion/api);
/// the numeric bounds are the ranges the model's code warns outside of (UNVERIFIED as schema
/// bounds).
const SVD: &[Field] = &[
    required("input_image", Kind::File),
    field(
        "video_length",
        Kind::Choice(&["14_frames_with_svd", "25_frames_with_svd_xt"]),
    ),
    field(
        "sizing_strategy",
        Kind::Choice(&[
            "maintain_aspect_ratio",
            "crop_to_16_9",
            "use_image_dimensions",
        ]),
    ),
    field("frames_per_second", Kind::Integer(5, 30)),
    field("motion_bucket_id", Kind::Integer(1, 255)),
    field("cond_aug", Kind::Number(0.0, 10.0)),
    field("decoding_t", Kind::Integer(1, 14)),
    field("seed", Kind::Integer(i64::MIN, i64::MAX)),
];

const MODELS: &[Model] = &[
    Model {
        name: "bytedance/seedance-2.0",
        version: "d456b64a60da3903c3692f7128d491004d021bbc2e1e19c63bccb117d3f4ab7b",
        official: true,
        fields: SEEDANCE,
        prompt: Some("prompt"),
    },
    Model {
        name: "bytedance/seedance-2.0-fast",
        version: "90388a62748fab7edda739f1df78e8cbc66cc9275cfe232888ce53dea3d5e7b5",
        official: true,
        fields: SEEDANCE,
        prompt: Some("prompt"),
    },
    Model {
        name: "stability-ai/stable-video-diffusion",
        version: "3f0457e4619daac51203dedb472816fd4af51f3149fa7a9e0b5ffcf1b8172438",
        official: false,
        fields: SVD,
        prompt: None,
    },
];

// ------------------------------------------------------------- errors --

/// Problem details (RFC 7807, §9.4). The media type is the RFC's; Replicate's own is
/// UNVERIFIED (clients parse the body whatever it is labelled).
fn problem(status: StatusCode, title: &str, detail: &str) -> Response {
    problem_body(
        status,
        &json!({"title": title, "detail": detail, "status": status.as_u16()}),
    )
}

fn problem_body(status: StatusCode, body: &Value) -> Response {
    let mut response = crate::http::json(status, body);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
}

fn not_found() -> Response {
    problem(StatusCode::NOT_FOUND, "Not found", "Not found.")
}

async fn not_found_route() -> Response {
    not_found()
}

/// One entry of a 422's `invalid_fields`.
#[derive(Debug)]
struct Invalid {
    kind: &'static str,
    field: String,
    description: String,
}

impl Invalid {
    fn new(kind: &'static str, field: &str, description: String) -> Invalid {
        Invalid {
            kind,
            field: field.to_owned(),
            description,
        }
    }
}

/// The 422 of an invalid body: `detail` lists `- field: description` lines, as Replicate's.
fn invalid(fields: &[Invalid]) -> Response {
    let detail: String = fields
        .iter()
        .map(|f| {
            if f.field.is_empty() {
                format!("- {}\n", f.description)
            } else {
                format!("- {}: {}\n", f.field, f.description)
            }
        })
        .collect();
    let invalid_fields: Vec<Value> = fields
        .iter()
        .map(|f| json!({"type": f.kind, "field": f.field, "description": f.description}))
        .collect();
    problem_body(
        StatusCode::UNPROCESSABLE_ENTITY,
        &json!({"detail": detail, "status": 422, "title": "Input validation failed",
                "invalid_fields": invalid_fields}),
    )
}

/// The 429 Replicate documents (RP-DOC rate limits): `{"detail": "Request was throttled. Your
/// rate limit resets in ~Ns."}`. No `Retry-After`: Replicate documents none, so the wait is
/// only in the text.
fn throttled(retry_after: Duration) -> Response {
    let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
    crate::http::json(
        StatusCode::TOO_MANY_REQUESTS,
        &json!({"detail": format!("Request was throttled. Your rate limit resets in ~{secs}s.")}),
    )
}

// ------------------------------------------------------ authentication --

/// The token of `Authorization: Bearer <token>` or Replicate's older `Token <token>`.
fn token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    let known = scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token");
    (known && !token.is_empty()).then_some(token)
}

/// The token's hash when it is a simulator token (`sim_…`), else Replicate's 401 (§9.6).
fn authenticate(shared: &Shared, headers: &HeaderMap) -> Result<KeyHash, Response> {
    match token(headers) {
        Some(key) if key.starts_with("sim_") => Ok(KeyHash::of(key)),
        Some(key) => {
            shared.record(
                Provider::Replicate,
                Some(&KeyHash::of(key).id()),
                Event::Unauthorized,
            );
            Err(problem(
                StatusCode::UNAUTHORIZED,
                "Unauthenticated",
                "You did not pass a valid authentication token",
            ))
        }
        None => {
            shared.record(Provider::Replicate, None, Event::Unauthorized);
            Err(problem(
                StatusCode::UNAUTHORIZED,
                "Unauthenticated",
                "You did not pass an authentication token",
            ))
        }
    }
}

/// `GET /v1/account` (§9.6): the account of the token.
async fn account(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let key = match authenticate(&shared, &headers) {
        Ok(key) => key,
        Err(response) => return response,
    };
    crate::http::json(
        StatusCode::OK,
        &json!({"type": "user", "username": format!("sim-{}", &key.id()[..8]),
                "name": "Simulator user", "github_url": null}),
    )
}

// ------------------------------------------------------------ creating --

async fn create_for_model(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path((owner, name)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    create(&shared, &headers, body, Some(format!("{owner}/{name}"))).await
}

async fn create_for_version(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    create(&shared, &headers, body, None).await
}

/// A create: by official model (`official` = its `owner/name`) or by `version`. The 429
/// comes before any validation, as a rate limiter's would.
async fn create(
    shared: &Arc<Shared>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    official: Option<String>,
) -> Response {
    let key = match authenticate(shared, headers) {
        Ok(key) => key,
        Err(response) => return response,
    };
    let id = key.id();
    let config = shared.config();
    let special = token(headers).is_some_and(|k| k.starts_with("sim_throttled"));
    if shared.throttle_submit(Provider::Replicate, &id, special) {
        shared.record(
            Provider::Replicate,
            Some(&id),
            Event::Throttled { submit: true },
        );
        return throttled(config.retry_after);
    }
    let accepted = match accept(shared, headers, body, official.as_deref(), &key) {
        Ok(accepted) => accepted,
        Err(response) => {
            shared.record(Provider::Replicate, Some(&id), Event::Rejected);
            return response;
        }
    };
    let prediction_id = new_id();
    let now = shared.now_ms();
    let prediction = Prediction {
        owner: key,
        model: accepted.model.name,
        version: accepted.version,
        outcome: Outcome::draw(&config, accepted.prompt.as_deref()),
        input: accepted.input,
        timeline: Timeline::starting_now(shared, &config),
        report_progress: config.report_progress,
        deadline_ms: accepted.cancel_after.map(|d| now + ms(d)),
        canceled_ms: Cell::new(None),
    };
    let ends_ms = prediction.timeline.submitted_ms + prediction.timeline.render_ms;
    lock(&shared.replicate).predictions.insert(
        prediction_id.clone(),
        prediction,
        now,
        ms(config.retention),
    );
    shared.record(Provider::Replicate, Some(&id), Event::Accepted);
    tracing::debug!(prediction = %prediction_id, key = %id, "replicate prediction created");
    if let Some(wait) = accepted.wait {
        // Held until the prediction ends or the wait is over (whichever is first), then
        // answered as it is then. The clock may be a manual one that does not move: the
        // answer is then simply the prediction as it stands.
        let left = u64::try_from(ends_ms - now).unwrap_or(0);
        let hold = Duration::from_millis(left).min(wait);
        if !hold.is_zero() {
            tokio::time::sleep(hold).await;
        }
    }
    match prediction_json(shared, &prediction_id, &key) {
        Some(body) => crate::http::json(StatusCode::CREATED, &body),
        // Forgotten while held (a reset): as Replicate would after its retention.
        None => not_found(),
    }
}

/// A create that passed every check.
struct Accepted {
    model: &'static Model,
    version: String,
    input: Value,
    prompt: Option<String>,
    wait: Option<Duration>,
    cancel_after: Option<Duration>,
}

/// The checks of a create, in Replicate's order: the body's shape, the model or version, the
/// headers, the input.
fn accept(
    shared: &Shared,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    official: Option<&str>,
    key: &KeyHash,
) -> Result<Accepted, Response> {
    let body = body.map_err(|rejection| {
        problem(
            rejection.status(),
            "Invalid request",
            &rejection.body_text(),
        )
    })?;
    let request: Value = serde_json::from_slice(&body).map_err(|e| {
        problem(
            StatusCode::BAD_REQUEST,
            "Invalid JSON",
            &format!("The request body is not valid JSON: {e}"),
        )
    })?;
    check_request(&request, official.is_none()).map_err(|fields| invalid(&fields))?;
    let (model, version) = match official {
        Some(name) => {
            // Only official models have this route; any other name is not found (the strict
            // reading of an unknown model; Replicate's exact answer is UNVERIFIED).
            let model = MODELS
                .iter()
                .find(|m| m.official && m.name == name)
                .ok_or_else(not_found)?;
            (model, "hidden".to_owned())
        }
        None => {
            // The version id alone (what the official client sends), or
            // `owner/name:<id>` (the form of Replicate's API reference).
            let given = request["version"].as_str().unwrap_or_default();
            let (named, asked) = match given.rsplit_once(':') {
                Some((name, id)) => (Some(name), id),
                None => (None, given),
            };
            let model = MODELS
                .iter()
                .find(|m| m.version == asked && named.is_none_or(|n| n == m.name))
                .ok_or_else(|| {
                problem(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Invalid version or not permitted",
                    "The specified version does not exist (or perhaps you don't have permission to use it?)",
                )
            })?;
            (model, asked.to_owned())
        }
    };
    let wait = prefer_wait(headers);
    let cancel_after = cancel_after(headers)?;
    let input = request.get("input").cloned().unwrap_or(Value::Null);
    check_input(shared, key, model, &input).map_err(|fields| invalid(&fields))?;
    let prompt = model
        .prompt
        .and_then(|field| input.get(field))
        .and_then(Value::as_str)
        .map(str::to_owned);
    Ok(Accepted {
        model,
        version,
        input,
        prompt,
        wait,
        cancel_after,
    })
}

/// The top level of a create body (RP-SDK `_create_prediction_body`): `input`, `version` for
/// the versioned route, and the optional `webhook`, `webhook_completed`,
/// `webhook_events_filter`, `stream`. Anything else is refused, as Replicate refuses
/// "Additional property model is not allowed". Webhooks are accepted and never called: the
/// simulator makes no outbound requests.
fn check_request(request: &Value, versioned: bool) -> Result<(), Vec<Invalid>> {
    let Some(body) = request.as_object() else {
        return Err(vec![Invalid::new(
            "invalid_type",
            "",
            format!(
                "Invalid type. Expected: object, given: {}",
                json_type(request)
            ),
        )]);
    };
    let mut errors = Vec::new();
    for name in ["input"].into_iter().chain(versioned.then_some("version")) {
        if !body.contains_key(name) {
            errors.push(Invalid::new("required", "", format!("{name} is required")));
        }
    }
    if let Some(version) = body.get("version")
        && !version.is_string()
    {
        errors.push(invalid_type("version", "string", version));
    }
    for (name, value) in body {
        match name.as_str() {
            "input" => {}
            "version" if versioned => {}
            "webhook" | "webhook_completed" => {
                let https = value
                    .as_str()
                    .and_then(|s| url::Url::parse(s).ok())
                    .is_some_and(|u| u.scheme() == "https");
                if !https {
                    errors.push(Invalid::new(
                        "format",
                        name,
                        "Does not match format 'uri' (an https URL)".to_owned(),
                    ));
                }
            }
            "webhook_events_filter" => {
                let events = ["start", "output", "logs", "completed"];
                let valid = value.as_array().is_some_and(|items| {
                    items
                        .iter()
                        .all(|e| e.as_str().is_some_and(|e| events.contains(&e)))
                });
                if !valid {
                    errors.push(Invalid::new(
                        "enum",
                        name,
                        format!(
                            "{name} items must be one of the following: {}",
                            quoted(&events)
                        ),
                    ));
                }
            }
            "stream" if !value.is_boolean() => errors.push(invalid_type(name, "boolean", value)),
            "stream" => {}
            other => errors.push(Invalid::new(
                "additional_property_not_allowed",
                "",
                format!("Additional property {other} is not allowed"),
            )),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// The model's `input` against its schema. Unknown inputs are refused (whether Replicate
/// refuses them is UNVERIFIED; the strict reading notices a misspelt field).
fn check_input(
    shared: &Shared,
    key: &KeyHash,
    model: &Model,
    input: &Value,
) -> Result<(), Vec<Invalid>> {
    let Some(input) = input.as_object() else {
        return Err(vec![invalid_type("input", "object", input)]);
    };
    let mut errors = Vec::new();
    for f in model.fields.iter().filter(|f| f.required) {
        if !input.contains_key(f.name) {
            errors.push(Invalid::new(
                "required",
                "input",
                format!("{} is required", f.name),
            ));
        }
    }
    for (name, value) in input {
        let Some(f) = model.fields.iter().find(|f| f.name == name) else {
            errors.push(Invalid::new(
                "additional_property_not_allowed",
                "input",
                format!("Additional property {name} is not allowed"),
            ));
            continue;
        };
        if let Err(invalid) = check_value(shared, key, f, value) {
            errors.push(invalid);
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn check_value(shared: &Shared, key: &KeyHash, f: &Field, value: &Value) -> Result<(), Invalid> {
    let path = format!("input.{}", f.name);
    match f.kind {
        Kind::Text if value.is_string() => Ok(()),
        Kind::Text => Err(invalid_type(&path, "string", value)),
        Kind::Boolean if value.is_boolean() => Ok(()),
        Kind::Boolean => Err(invalid_type(&path, "boolean", value)),
        Kind::Integer(min, max) => {
            let Some(n) = integer(value) else {
                return Err(invalid_type(&path, "integer", value));
            };
            bounds(&path, n as f64, min as f64, max as f64)
        }
        Kind::Number(min, max) => {
            let Some(n) = value.as_f64() else {
                return Err(invalid_type(&path, "number", value));
            };
            bounds(&path, n, min, max)
        }
        Kind::Choice(choices) => match value.as_str() {
            Some(v) if choices.contains(&v) => Ok(()),
            _ => Err(Invalid::new(
                "enum",
                &path,
                format!(
                    "{} must be one of the following: {}",
                    f.name,
                    quoted(choices)
                ),
            )),
        },
        Kind::File => check_file(shared, key, &path, value),
        Kind::Files => {
            let Some(items) = value.as_array() else {
                return Err(invalid_type(&path, "array", value));
            };
            items
                .iter()
                .try_for_each(|item| check_file(shared, key, &path, item))
        }
    }
}

fn bounds(path: &str, n: f64, min: f64, max: f64) -> Result<(), Invalid> {
    if n < min {
        Err(Invalid::new(
            "number_gte",
            path,
            format!("Must be greater than or equal to {min}"),
        ))
    } else if n > max {
        Err(Invalid::new(
            "number_lte",
            path,
            format!("Must be less than or equal to {max}"),
        ))
    } else {
        Ok(())
    }
}

/// A file input (§9.2): a `data:` URL of base64 data, an http(s) URL (never fetched), or the
/// `urls.get` of a file the same token uploaded.
fn check_file(shared: &Shared, key: &KeyHash, path: &str, value: &Value) -> Result<(), Invalid> {
    let Some(uri) = value.as_str() else {
        return Err(invalid_type(path, "string", value));
    };
    let bad = |why: &str| {
        Invalid::new(
            "format",
            path,
            format!("Does not match format 'uri': {why}"),
        )
    };
    if let Some(rest) = uri.strip_prefix("data:") {
        let (_, data) = rest
            .split_once(";base64,")
            .ok_or_else(|| bad("a data URL must be base64"))?;
        base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|_| bad("the data URL's base64 is invalid"))?;
        return Ok(());
    }
    let url = url::Url::parse(uri).map_err(|_| bad("not a URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("only http(s) and data URLs are taken"));
    }
    let files_prefix = format!("{}/replicate/v1/files/", shared.public_url);
    if let Some(file_id) = uri.strip_prefix(&files_prefix) {
        let config = shared.config();
        let now = shared.now_ms();
        let mine = lock(&shared.replicate)
            .files
            .get(file_id, now, ms(config.retention))
            .is_some_and(|f| f.owner == *key);
        if !mine {
            return Err(bad("no such file"));
        }
    }
    Ok(())
}

fn invalid_type(path: &str, expected: &str, value: &Value) -> Invalid {
    Invalid::new(
        "invalid_type",
        path,
        format!(
            "Invalid type. Expected: {expected}, given: {}",
            json_type(value)
        ),
    )
}

/// JSON Schema's name of a value's type (integers apart from other numbers).
fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        other => type_name(Some(other)),
    }
}

/// An integral JSON number (`5` or `5.0`).
fn integer(value: &Value) -> Option<i64> {
    let n = value.as_number()?;
    n.as_i64().or_else(|| {
        n.as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() < 9e15)
            .map(|f| f as i64)
    })
}

fn quoted(items: &[&str]) -> String {
    items
        .iter()
        .map(|i| format!("\"{i}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `Prefer: wait` (60 s) or `wait=n` (1–60 s) (RP-SDK `_create_prediction_headers`). Other
/// preferences, or a wait out of range, are ignored, as RFC 7240 asks of a server that
/// cannot honour a preference.
fn prefer_wait(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find_map(|token| match token.split_once('=') {
            None if token.eq_ignore_ascii_case("wait") => Some(MAX_WAIT_SECS),
            Some((name, secs)) if name.trim().eq_ignore_ascii_case("wait") => secs
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|s| (1..=MAX_WAIT_SECS).contains(s)),
            _ => None,
        })
        .map(Duration::from_secs)
}

/// `Cancel-After: <duration>` (RP-DOC changelog 2025-10-16, e.g. `1m`): Go-style durations
/// (`30s`, `1m30s`, `500ms`, `2h`). An unreadable one is refused (400), the strict reading.
fn cancel_after(headers: &HeaderMap) -> Result<Option<Duration>, Response> {
    let Some(value) = headers.get("cancel-after") else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(go_duration)
        .map(Some)
        .ok_or_else(|| {
            problem(
                StatusCode::BAD_REQUEST,
                "Invalid Cancel-After header",
                "Cancel-After must be a duration such as 30s, 5m or 1h",
            )
        })
}

/// A Go duration string: one or more `<number><unit>` with units `ms`, `s`, `m`, `h`.
fn go_duration(text: &str) -> Option<Duration> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = 0.0;
    while !rest.is_empty() {
        let end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let value: f64 = rest[..end].parse().ok()?;
        rest = &rest[end..];
        let (unit, scale) = [("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)]
            .into_iter()
            .find(|(unit, _)| rest.starts_with(unit))?;
        rest = &rest[unit.len()..];
        total += value * scale;
    }
    (total.is_finite() && total <= 86_400.0 * 365.0).then(|| Duration::from_secs_f64(total))
}

/// A prediction id: 26 characters of lowercase base32, like Replicate's.
fn new_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
    (0..26)
        .map(|_| char::from(ALPHABET[rand::random_range(0..ALPHABET.len())]))
        .collect()
}

// ------------------------------------------------------ the prediction --

/// Where a prediction stands at some instant.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Walk {
    status: &'static str,
    started_ms: Option<i64>,
    completed_ms: Option<i64>,
    /// Share rendered, while `processing`.
    progress: Option<f64>,
}

impl Prediction {
    /// `starting` for the first tenth of the render time, then `processing`, then the drawn
    /// outcome; a cancel or a passed deadline ends it early (`aborted` when the deadline
    /// passed before it started).
    fn walk(&self, now_ms: i64) -> Walk {
        let Timeline {
            submitted_ms,
            render_ms,
        } = self.timeline;
        // The same boundaries as `Timeline::phase`: running once elapsed * 10 >= render.
        let start = submitted_ms + (render_ms + 9) / 10;
        let done = submitted_ms + render_ms;
        let interruption = match (self.canceled_ms.get(), self.deadline_ms) {
            (Some(c), Some(d)) if d < c => Some((d, true)),
            (Some(c), _) => Some((c, false)),
            (None, Some(d)) => Some((d, true)),
            (None, None) => None,
        };
        if let Some((stop, by_deadline)) = interruption
            && stop < done
            && now_ms >= stop
        {
            let started = stop >= start;
            let status = if !started && by_deadline {
                "aborted"
            } else {
                "canceled"
            };
            return Walk {
                status,
                started_ms: started.then_some(start),
                completed_ms: Some(stop),
                progress: None,
            };
        }
        if now_ms >= done {
            let status = match self.outcome {
                Outcome::Success => "succeeded",
                Outcome::Moderated | Outcome::Failed => "failed",
            };
            return Walk {
                status,
                started_ms: Some(start.min(done)),
                completed_ms: Some(done),
                progress: None,
            };
        }
        if now_ms >= start {
            let share = (now_ms - submitted_ms) as f64 / render_ms.max(1) as f64;
            return Walk {
                status: "processing",
                started_ms: Some(start),
                completed_ms: None,
                progress: Some(share.clamp(0.0, 1.0)),
            };
        }
        Walk {
            status: "starting",
            started_ms: None,
            completed_ms: None,
            progress: None,
        }
    }

    /// The prediction as `GET /v1/predictions/{id}` shows it (§9.3).
    fn to_json(&self, public_url: &str, id: &str, now_ms: i64) -> Value {
        let walk = self.walk(now_ms);
        let removed = walk
            .completed_ms
            .is_some_and(|done| now_ms >= done + DATA_RETENTION_MS);
        let api = format!("{public_url}/replicate/v1/predictions/{id}");
        let mut body = json!({
            "id": id,
            "model": self.model,
            "version": self.version,
            "input": if removed { json!({}) } else { self.input.clone() },
            "logs": if removed { String::new() } else { self.logs(&walk) },
            "output": null,
            "data_removed": removed,
            "error": null,
            "status": walk.status,
            "source": "api",
            "created_at": timestamp(self.timeline.submitted_ms),
            "started_at": walk.started_ms.map(timestamp),
            "completed_at": walk.completed_ms.map(timestamp),
            "urls": {
                "cancel": format!("{api}/cancel"),
                "get": api,
                "web": format!("https://replicate.com/p/{id}"),
            },
        });
        if let (Some(started), Some(completed)) = (walk.started_ms, walk.completed_ms) {
            body["metrics"] = json!({
                "predict_time": (completed - started) as f64 / 1000.0,
                "total_time": (completed - self.timeline.submitted_ms) as f64 / 1000.0,
            });
        }
        match (walk.status, self.outcome) {
            ("succeeded", _) if !removed => {
                body["output"] = json!(format!("{public_url}/replicate/delivery/{id}/output.mp4"));
            }
            ("failed", Outcome::Moderated) => {
                body["error"] = json!(
                    "The input or output was flagged as sensitive. Please try again with different inputs. (E005)"
                );
            }
            ("failed", _) => {
                body["error"] = json!("Prediction interrupted; please retry (code: PA)");
            }
            _ => {}
        }
        body
    }

    /// What the model printed: a seed line and a tqdm bar (when progress is reported).
    fn logs(&self, walk: &Walk) -> String {
        let bar = |share: f64| {
            let percent = (share * 100.0).floor() as u32;
            let filled = (percent / 10) as usize;
            format!(
                "{percent:>3}%|{}{}| {percent}/100 [00:00<00:00, 10.00it/s]",
                "█".repeat(filled),
                " ".repeat(10 - filled.min(10))
            )
        };
        let head = "Using seed: 42";
        match walk.status {
            "starting" => String::new(),
            "processing" if self.report_progress => {
                format!("{head}\n{}", bar(walk.progress.unwrap_or(0.0)))
            }
            "succeeded" if self.report_progress => format!("{head}\n{}", bar(1.0)),
            _ => head.to_owned(),
        }
    }
}

/// RFC 3339 with microseconds, as Replicate writes its timestamps.
fn timestamp(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// The prediction `id` of `key` as JSON, if it exists for that key.
fn prediction_json(shared: &Shared, id: &str, key: &KeyHash) -> Option<Value> {
    let config = shared.config();
    let now = shared.now_ms();
    let mut store = lock(&shared.replicate);
    store
        .predictions
        .get(id, now, ms(config.retention))
        .filter(|p| p.owner == *key)
        .map(|p| p.to_json(&shared.public_url, id, now))
}

async fn get_prediction(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let key = match authenticate(&shared, &headers) {
        Ok(key) => key,
        Err(response) => return response,
    };
    shared.record(Provider::Replicate, Some(&key.id()), Event::Poll);
    match prediction_json(&shared, &id, &key) {
        Some(body) => crate::http::json(StatusCode::OK, &body),
        // Another token's prediction does not exist for this one.
        None => not_found(),
    }
}

/// `POST /v1/predictions/{id}/cancel` (§9.3): a prediction that has not ended is `canceled`
/// now; one that has ended stays as it is. Either way the answer is the prediction.
async fn cancel(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let key = match authenticate(&shared, &headers) {
        Ok(key) => key,
        Err(response) => return response,
    };
    shared.record(Provider::Replicate, Some(&key.id()), Event::Cancel);
    let config = shared.config();
    let now = shared.now_ms();
    let mut store = lock(&shared.replicate);
    let Some(prediction) = store
        .predictions
        .get(&id, now, ms(config.retention))
        .filter(|p| p.owner == key)
    else {
        return not_found();
    };
    if matches!(prediction.walk(now).status, "starting" | "processing") {
        prediction.canceled_ms.set(Some(now));
    }
    let body = prediction.to_json(&shared.public_url, &id, now);
    drop(store);
    crate::http::json(StatusCode::OK, &body)
}

/// `GET /delivery/{id}/output.mp4`: a succeeded prediction's video, without auth (Replicate's
/// delivery URLs are unguessable instead), until its data is removed.
async fn delivery(
    State(shared): State<Arc<Shared>>,
    Path((id, file)): Path<(String, String)>,
) -> Response {
    let config = shared.config();
    let now = shared.now_ms();
    let available = file == "output.mp4"
        && lock(&shared.replicate)
            .predictions
            .get(&id, now, ms(config.retention))
            .is_some_and(|p| {
                let walk = p.walk(now);
                walk.status == "succeeded"
                    && walk
                        .completed_ms
                        .is_some_and(|done| now < done + DATA_RETENTION_MS)
            });
    if !available {
        return StatusCode::NOT_FOUND.into_response();
    }
    video::download_response(video::mp4_for(&id), config.video_padding_bytes)
}

// --------------------------------------------------------------- files --

/// `POST /v1/files` (§9.2): multipart with the file as `content` (its filename and type from
/// the part, or the `filename` and `type` fields), and optional `metadata` (JSON). Answers
/// 201 with the file, whose `urls.get` a prediction's input can name.
async fn upload(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Response {
    let key = match authenticate(&shared, &headers) {
        Ok(key) => key,
        Err(response) => return response,
    };
    let form = match read_upload(multipart).await {
        Ok(form) => form,
        Err(response) => return response,
    };
    let config = shared.config();
    let now = shared.now_ms();
    let file_id = new_id();
    let file = File {
        owner: key,
        name: form.name,
        content_type: form.content_type,
        size: form.size,
        sha256: form.sha256,
        metadata: form.metadata,
        created_ms: now,
    };
    let body = file_json(&shared.public_url, &file_id, &file, ms(config.retention));
    lock(&shared.replicate)
        .files
        .insert(file_id, file, now, ms(config.retention));
    crate::http::json(StatusCode::CREATED, &body)
}

/// An upload as read.
struct Upload {
    name: String,
    content_type: String,
    size: u64,
    sha256: String,
    metadata: Value,
}

async fn read_upload(multipart: Result<Multipart, MultipartRejection>) -> Result<Upload, Response> {
    let bad = |detail: &str| problem(StatusCode::BAD_REQUEST, "Invalid file", detail);
    let mut multipart =
        multipart.map_err(|_| bad("The request body must be multipart/form-data"))?;
    let mut content: Option<(Option<String>, Option<String>, u64, String)> = None;
    let (mut filename, mut content_type, mut metadata) = (None, None, json!({}));
    loop {
        let mut part = match multipart.next_field().await {
            Ok(Some(part)) => part,
            Ok(None) => break,
            Err(e) => return Err(problem(e.status(), "Invalid file", &e.body_text())),
        };
        let name = part.name().unwrap_or_default().to_owned();
        if name == "content" {
            let part_name = part.file_name().map(str::to_owned);
            let part_type = part.content_type().map(str::to_owned);
            // Hashed as it streams: the bytes are never kept.
            let mut hasher = Sha256::new();
            let mut size = 0u64;
            loop {
                match part.chunk().await {
                    Ok(Some(chunk)) => {
                        size += chunk.len() as u64;
                        hasher.update(&chunk);
                    }
                    Ok(None) => break,
                    Err(e) => return Err(problem(e.status(), "Invalid file", &e.body_text())),
                }
            }
            content = Some((part_name, part_type, size, hex::encode(hasher.finalize())));
            continue;
        }
        let text = match part.text().await {
            Ok(text) => text,
            Err(e) => return Err(problem(e.status(), "Invalid file", &e.body_text())),
        };
        match name.as_str() {
            "filename" => filename = Some(text),
            "type" => content_type = Some(text),
            "metadata" => match serde_json::from_str::<Value>(&text) {
                Ok(value @ Value::Object(_)) => metadata = value,
                _ => return Err(bad("metadata must be a JSON object")),
            },
            other => return Err(bad(&format!("Unknown field {other}"))),
        }
    }
    let (part_name, part_type, size, sha256) = content.ok_or_else(|| bad("content is required"))?;
    let name = filename.or(part_name).unwrap_or_else(|| "file".to_owned());
    if name.len() > 255 {
        return Err(bad("filename must be at most 255 bytes"));
    }
    Ok(Upload {
        name,
        content_type: content_type
            .or(part_type)
            .unwrap_or_else(|| "application/octet-stream".to_owned()),
        size,
        sha256,
        metadata,
    })
}

/// A file as the files API shows it (the fields of RP-SDK `File`). It expires with the
/// simulator's `retention` (Replicate's own expiry is UNVERIFIED).
fn file_json(public_url: &str, id: &str, file: &File, retention_ms: i64) -> Value {
    json!({
        "id": id,
        "name": file.name,
        "content_type": file.content_type,
        "size": file.size,
        "etag": format!("\"{}\"", &file.sha256[..32]),
        "checksums": {"sha256": file.sha256},
        "metadata": file.metadata,
        "created_at": timestamp(file.created_ms),
        "expires_at": timestamp(file.created_ms + retention_ms),
        "urls": {"get": format!("{public_url}/replicate/v1/files/{id}")},
    })
}

async fn get_file(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let key = match authenticate(&shared, &headers) {
        Ok(key) => key,
        Err(response) => return response,
    };
    let config = shared.config();
    let now = shared.now_ms();
    let retention = ms(config.retention);
    let body = lock(&shared.replicate)
        .files
        .get(&id, now, retention)
        .filter(|f| f.owner == key)
        .map(|f| file_json(&shared.public_url, &id, f, retention));
    match body {
        Some(body) => crate::http::json(StatusCode::OK, &body),
        None => not_found(),
    }
}

async fn delete_file(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let key = match authenticate(&shared, &headers) {
        Ok(key) => key,
        Err(response) => return response,
    };
    let config = shared.config();
    let now = shared.now_ms();
    let mut store = lock(&shared.replicate);
    let mine = store
        .files
        .get(&id, now, ms(config.retention))
        .is_some_and(|f| f.owner == key);
    if mine {
        store.files.remove(&id);
        StatusCode::NO_CONTENT.into_response()
    } else {
        not_found()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prediction(outcome: Outcome) -> Prediction {
        Prediction {
            owner: KeyHash::of("sim_a"),
            model: "bytedance/seedance-2.0",
            version: "hidden".to_owned(),
            input: json!({"prompt": "x"}),
            timeline: Timeline {
                submitted_ms: 0,
                render_ms: 1000,
            },
            outcome,
            report_progress: true,
            deadline_ms: None,
            canceled_ms: Cell::new(None),
        }
    }

    #[test]
    fn a_prediction_walks_to_its_outcome_and_its_data_is_removed_after_an_hour() {
        let p = prediction(Outcome::Success);
        assert_eq!(p.walk(99).status, "starting");
        let running = p.to_json("http://s", "p1", 500);
        assert_eq!(running["status"], "processing");
        assert_eq!(running["started_at"], "1970-01-01T00:00:00.100000Z");
        assert!(
            running["logs"]
                .as_str()
                .unwrap()
                .ends_with(" 50%|█████     | 50/100 [00:00<00:00, 10.00it/s]"),
            "{running}"
        );
        let done = p.to_json("http://s", "p1", 1000);
        assert_eq!(done["status"], "succeeded");
        assert_eq!(done["output"], "http://s/replicate/delivery/p1/output.mp4");
        assert_eq!(done["metrics"]["predict_time"], 0.9);
        assert_eq!(
            done["urls"]["cancel"],
            "http://s/replicate/v1/predictions/p1/cancel"
        );
        let later = p.to_json("http://s", "p1", 1000 + DATA_RETENTION_MS);
        assert_eq!(later["data_removed"], true);
        assert_eq!(later["output"], Value::Null);
        let failed = prediction(Outcome::Moderated).to_json("http://s", "p2", 1000);
        assert_eq!(failed["status"], "failed");
        assert!(failed["error"].as_str().unwrap().contains("(E005)"));
    }

    #[test]
    fn cancels_and_deadlines_end_a_prediction_early() {
        let p = prediction(Outcome::Success);
        p.canceled_ms.set(Some(50));
        let walk = p.walk(60);
        assert_eq!((walk.status, walk.started_ms), ("canceled", None));
        p.canceled_ms.set(Some(500));
        assert_eq!(p.walk(400).status, "processing");
        assert_eq!(p.walk(600).status, "canceled");
        let mut p = prediction(Outcome::Success);
        p.deadline_ms = Some(50);
        assert_eq!(p.walk(49).status, "starting");
        assert_eq!(p.walk(50).status, "aborted");
        p.deadline_ms = Some(700);
        assert_eq!(p.walk(800).status, "canceled");
        p.deadline_ms = Some(5000);
        assert_eq!(p.walk(1000).status, "succeeded");
    }

    #[test]
    fn durations_and_preferences() {
        assert_eq!(go_duration("1m"), Some(Duration::from_secs(60)));
        assert_eq!(go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(go_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(go_duration("2h"), Some(Duration::from_secs(7200)));
        for bad in ["", "5", "soon", "5 s", "1d"] {
            assert_eq!(go_duration(bad), None, "{bad}");
        }
        let headers = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert("prefer", HeaderValue::from_static(v));
            h
        };
        assert_eq!(prefer_wait(&headers("wait")), Some(Duration::from_secs(60)));
        assert_eq!(
            prefer_wait(&headers("wait=5")),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            prefer_wait(&headers("respond-async, wait=2")),
            Some(Duration::from_secs(2))
        );
        assert_eq!(prefer_wait(&headers("wait=0")), None);
        assert_eq!(prefer_wait(&headers("wait=61")), None);
        assert_eq!(prefer_wait(&HeaderMap::new()), None);
    }

    #[test]
    fn ids_look_like_replicates() {
        let id = new_id();
        assert_eq!(id.len(), 26);
        assert!(
            id.chars()
                .all(|c| c.is_ascii_lowercase() || ('2'..='7').contains(&c))
        );
        assert_ne!(id, new_id());
    }
}
