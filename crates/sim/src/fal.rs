//! fal.ai: the queue host (`/fal`, and the root of the TLS listener), the REST host's storage
//! token endpoint (`/fal-rest`, the key check) and the CDN (`/fal-media`),
//! docs/provider-protocols.md §8.
//!
//! - `POST /{app}` (`owner/alias[/path]`) → `{"request_id", "status": "IN_QUEUE",
//!   "queue_position", "response_url", "status_url", "cancel_url"}`; inputs validated per app
//!   (§8.9) with FastAPI-style 422s (`detail[].loc`).
//! - `GET /{owner}/{alias}/requests/{id}/status[?logs=1]`: `IN_QUEUE` (`queue_position`) →
//!   `IN_PROGRESS` (`logs`) → `COMPLETED` (`metrics.inference_time`; `error`/`error_type`
//!   when fal gave up on it).
//! - `GET /{owner}/{alias}/requests/{id}`: the app's output `{"video": {"url", …}}`, or the
//!   app's error (422 `content_policy_violation`, 503 request error).
//! - `PUT /{owner}/{alias}/requests/{id}/cancel` → 202 `CANCELLATION_REQUESTED`, 400
//!   `ALREADY_COMPLETED`, 404 `NOT_FOUND`.
//! - `POST /fal-rest/storage/auth/token?storage_type=fal-cdn-v3` → `{"token", "token_type",
//!   "base_url", "expires_at"}`.
//!
//! Every route but the CDN needs `Authorization: Key sim_…` (else 401). Follow-up URLs name
//! the app's owner and alias only, as fal's do (§8.2). fal queues the requests of an account
//! over its concurrency rather than refusing them (§8.6): each key has `fal_concurrency`
//! slots, and a request starts when one frees.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use axum::routing::{any, post};
use axum::{Extension, Router};
use base64::Engine as _;
use serde_json::{Map, Value, json};

use crate::clock::ms;
use crate::config::SimConfig;
use crate::http::{random_hex, type_name};
use crate::state::{Jobs, KeyHash, Outcome, Phase, Shared, Timeline, lock};
use crate::stats::{Event, Provider};
use crate::video;

/// Inputs carry images as data URIs (fal's cards allow up to 30 MB files); the body limit
/// leaves room for one of those.
const BODY_LIMIT: usize = 40 * 1024 * 1024;

/// Namespaces that put one more segment before an app's owner (F-PY `APP_NAMESPACES`).
const APP_NAMESPACES: [&str; 2] = ["workflows", "comfy"];

/// fal's lock of an account without credit (403), as reported in fal-ai/fal issues
/// (docs/provider-protocols.md §8.5). Keys starting `sim_broke` get it.
const BALANCE_LOCK: &str =
    "User is locked. Reason: Exhausted balance. Top up your balance at fal.ai/dashboard/billing.";

/// Where this mount of the queue host is reached: the base of the follow-up URLs it hands
/// out (`{public}/fal` on the plain listener, `https://127.0.0.1:{port}` on the TLS one).
#[derive(Debug, Clone)]
pub(crate) struct QueueBase(pub String);

/// The requests, and each key's slots.
#[derive(Debug, Default)]
pub(crate) struct Store {
    requests: Jobs<Request>,
    queues: HashMap<KeyHash, Queue>,
}

/// One key's concurrency: when each slot frees, and the requests still waiting for one.
#[derive(Debug, Default)]
struct Queue {
    slots: Vec<i64>,
    /// (start time, request id), in submit order (so in start order too).
    waiting: VecDeque<(i64, String)>,
}

impl Queue {
    /// The start of a request submitted at `now`: the earliest slot's free time (FIFO).
    /// A cancel does not give a slot back early (a simplification: fal's own order of
    /// events there is not documented).
    fn schedule(&mut self, id: &str, concurrency: u32, now: i64, render_ms: i64) -> i64 {
        if concurrency == 0 {
            return now;
        }
        self.slots.resize(concurrency as usize, 0);
        let (slot, free) = self
            .slots
            .iter()
            .copied()
            .enumerate()
            .min_by_key(|(_, free)| *free)
            .unwrap_or((0, now));
        let start = free.max(now);
        self.slots[slot] = start + render_ms;
        if start > now {
            self.waiting.push_back((start, id.to_owned()));
        }
        start
    }

    /// How many of the key's requests are ahead of `id` in the queue (0 when it has a slot).
    fn position(&mut self, id: &str, now: i64) -> usize {
        while self.waiting.front().is_some_and(|(start, _)| *start <= now) {
            self.waiting.pop_front();
        }
        self.waiting
            .iter()
            .position(|(_, waiting)| waiting == id)
            .unwrap_or(0)
    }

    fn forget(&mut self, id: &str) {
        self.waiting.retain(|(_, waiting)| waiting != id);
    }
}

/// A request, as the simulator remembers it.
#[derive(Debug)]
pub(crate) struct Request {
    owner: KeyHash,
    /// `[namespace/]owner/alias`: where its follow-up URLs live.
    root: String,
    /// From its start (a free slot), not its submit.
    timeline: Timeline,
    outcome: Outcome,
    cancelled_ms: Option<i64>,
    /// Stable Video Diffusion answers with the seed it used.
    seed: Option<u64>,
}

/// Where a request stands at some instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Queued,
    InProgress,
    Completed(Ending),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Success,
    /// The app's content checker refused the prompt: the result is a 422.
    Moderated,
    /// fal gave up on it (`runner_disconnected`): COMPLETED with `error`.
    Failed,
    Cancelled,
}

impl Request {
    fn state(&self, now: i64) -> Stage {
        if self.cancelled_ms.is_some_and(|at| at <= now) {
            return Stage::Completed(Ending::Cancelled);
        }
        match self.timeline.phase(now) {
            Phase::Pending => Stage::Queued,
            Phase::Running(_) => Stage::InProgress,
            Phase::Done => Stage::Completed(match self.outcome {
                Outcome::Success => Ending::Success,
                Outcome::Moderated => Ending::Moderated,
                Outcome::Failed => Ending::Failed,
            }),
        }
    }
}

/// The queue host, mounted at `base`.
pub(crate) fn router(base: String) -> Router<Arc<Shared>> {
    Router::new()
        .route("/{*path}", any(queue))
        .layer(Extension(QueueBase(base)))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
}

/// The REST host (`/fal-rest`): the storage token the key check mints.
pub(crate) fn rest_router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/storage/auth/token", post(storage_token))
        .fallback(not_found_route)
}

/// The TLS listener: fal's queue host at its root, as `queue.fal.run` serves it (what the
/// official client reaches through `FAL_QUEUE_RUN_HOST`), and the REST host beside it.
pub(crate) fn tls_router(shared: Arc<Shared>, base: String) -> Router {
    Router::new()
        .nest("/fal-rest", rest_router())
        .merge(router(base))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&shared),
            note_request,
        ))
        .with_state(shared)
}

/// Notes every request of the TLS listener under fal (the plain listener's are noted by
/// prefix in `lib.rs`).
async fn note_request(
    State(shared): State<Arc<Shared>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    shared.record_request(Provider::Fal);
    next.run(request).await
}

fn detail(status: StatusCode, text: &str) -> Response {
    crate::http::json(status, &json!({ "detail": text }))
}

async fn not_found_route() -> Response {
    detail(StatusCode::NOT_FOUND, "Not Found")
}

/// The key of `Authorization: Key <key>` (scheme case-insensitive).
fn fal_key(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, key) = value.split_once(' ')?;
    let key = key.trim();
    (scheme.eq_ignore_ascii_case("key") && !key.is_empty()).then_some(key)
}

/// A `sim_` key, or the 401 fal answers (the body is 3P, UNVERIFIED).
fn authenticate<'h>(shared: &Shared, headers: &'h HeaderMap) -> Result<&'h str, Response> {
    match fal_key(headers) {
        Some(key) if key.starts_with("sim_") => Ok(key),
        other => {
            let id = other.map(|k| KeyHash::of(k).id());
            shared.record(Provider::Fal, id.as_deref(), Event::Unauthorized);
            Err(detail(StatusCode::UNAUTHORIZED, "Unauthorized"))
        }
    }
}

// ------------------------------------------------------------------------------ routing --

/// What a path of the queue host asks for.
#[derive(Debug, PartialEq, Eq)]
enum Route<'a> {
    Submit(&'a str),
    Status {
        root: String,
        id: &'a str,
    },
    Result {
        root: String,
        id: &'a str,
    },
    Cancel {
        root: String,
        id: &'a str,
    },
    /// A request path with another method, or the SSE stream (not simulated).
    Unsupported,
}

/// `[ns/]owner/alias/requests/{id}[/status|/cancel]` are a request's; any other path is an
/// app (a submit). `requests` cannot be an app's alias: fal's own URLs would be ambiguous.
fn route<'a>(method: &Method, path: &'a str) -> Route<'a> {
    let segments: Vec<&str> = path.split('/').collect();
    let root_len = if APP_NAMESPACES.contains(&segments[0]) {
        3
    } else {
        2
    };
    if segments.len() >= root_len + 2 && segments[root_len] == "requests" {
        let root = segments[..root_len].join("/");
        let id = segments[root_len + 1];
        return match (method, &segments[root_len + 2..]) {
            (&Method::GET, []) => Route::Result { root, id },
            (&Method::GET, ["status"]) => Route::Status { root, id },
            (&Method::PUT, ["cancel"]) => Route::Cancel { root, id },
            _ => Route::Unsupported,
        };
    }
    if method == Method::POST {
        Route::Submit(path)
    } else {
        Route::Unsupported
    }
}

async fn queue(
    State(shared): State<Arc<Shared>>,
    Extension(base): Extension<QueueBase>,
    method: Method,
    Path(path): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let key = match authenticate(&shared, &headers) {
        Ok(key) => key,
        Err(response) => return response,
    };
    match route(&method, &path) {
        Route::Submit(app) => submit(&shared, &base, key, app, body),
        Route::Status { root, id } => status(&shared, &base, key, &root, id, query.as_deref()),
        Route::Result { root, id } => result(&shared, key, &root, id),
        Route::Cancel { root, id } => cancel(&shared, key, &root, id),
        Route::Unsupported => detail(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed"),
    }
}

// ------------------------------------------------------------------------------- submit --

fn submit(
    shared: &Shared,
    base: &QueueBase,
    key: &str,
    app: &str,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let owner = KeyHash::of(key);
    let id = owner.id();
    if key.starts_with("sim_broke") {
        shared.record(Provider::Fal, Some(&id), Event::Rejected);
        return detail(StatusCode::FORBIDDEN, BALANCE_LOCK);
    }
    let config = shared.config();
    if shared.throttle_submit(Provider::Fal, &id, key.starts_with("sim_throttled")) {
        shared.record(Provider::Fal, Some(&id), Event::Throttled { submit: true });
        return throttled(&config);
    }
    let Some(spec) = app_spec(app) else {
        shared.record(Provider::Fal, Some(&id), Event::Rejected);
        // UNVERIFIED: fal's answer for an app it does not serve.
        return detail(
            StatusCode::NOT_FOUND,
            &format!("Application '{app}' not found"),
        );
    };
    let input = match body_object(body) {
        Ok(input) => input,
        Err(problem) => {
            shared.record(Provider::Fal, Some(&id), Event::Rejected);
            return unprocessable(&[problem]);
        }
    };
    let problems = spec.validate(&input);
    if !problems.is_empty() {
        shared.record(Provider::Fal, Some(&id), Event::Rejected);
        return unprocessable(&problems);
    }
    let request_id = uuid::Uuid::new_v4().to_string();
    let now = shared.now_ms();
    let render_ms = ms(config.render_time);
    let mut store = lock(&shared.fal);
    let start = store.queues.entry(owner).or_default().schedule(
        &request_id,
        config.fal_concurrency,
        now,
        render_ms,
    );
    let root = queue_root(app);
    let request = Request {
        owner,
        root: root.clone(),
        timeline: Timeline {
            submitted_ms: start,
            render_ms,
        },
        outcome: Outcome::draw(&config, input.get("prompt").and_then(Value::as_str)),
        cancelled_ms: None,
        seed: input.get("seed").and_then(Value::as_u64),
    };
    store
        .requests
        .insert(request_id.clone(), request, now, ms(config.retention));
    let position = store
        .queues
        .get_mut(&owner)
        .map_or(0, |q| q.position(&request_id, now));
    drop(store);
    shared.record(Provider::Fal, Some(&id), Event::Accepted);
    tracing::debug!(request = %request_id, key = %id, app, "fal request queued");
    let mut body = urls(base, &root, &request_id);
    if let Some(fields) = body.as_object_mut() {
        fields.insert("gateway_request_id".into(), json!(request_id));
        fields.insert("status".into(), json!("IN_QUEUE"));
        fields.insert("queue_position".into(), json!(position));
    }
    with_request_id(crate::http::json(StatusCode::OK, &body), &request_id)
}

/// A 429 with the standard retry header. fal documents none for the queue (its own
/// retries absorb rate limits, §8.6; UNVERIFIED): the simulator sends `Retry-After` so that
/// the `retry_after` knob applies as for Runway.
fn throttled(config: &SimConfig) -> Response {
    let secs = config.retry_after.as_secs_f64().ceil().max(0.0) as u64;
    let mut response = detail(
        StatusCode::TOO_MANY_REQUESTS,
        "Too many requests. Please slow down.",
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    response
}

/// The body as a JSON object, or the problem FastAPI reports.
fn body_object(body: Result<Bytes, BytesRejection>) -> Result<Map<String, Value>, Value> {
    let body = body.map_err(|r| problem(&[], &r.body_text(), "value_error"))?;
    parse_object(&body)
}

fn parse_object(body: &[u8]) -> Result<Map<String, Value>, Value> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(input)) => Ok(input),
        Ok(_) => Err(problem(&[], "value is not a valid dict", "type_error.dict")),
        Err(e) => Err(problem(
            &[],
            &format!("Expecting value: {e}"),
            "value_error.jsondecode",
        )),
    }
}

/// FastAPI's 422 (pydantic v1 shape, as fal's clients read it: `detail[].loc/msg/type`).
fn unprocessable(problems: &[Value]) -> Response {
    crate::http::json(
        StatusCode::UNPROCESSABLE_ENTITY,
        &json!({ "detail": problems }),
    )
}

fn problem(loc: &[&str], msg: &str, kind: &str) -> Value {
    let mut path = vec![json!("body")];
    path.extend(loc.iter().map(|l| json!(l)));
    json!({"loc": path, "msg": msg, "type": kind})
}

/// `[ns/]owner/alias` of an app id.
fn queue_root(app: &str) -> String {
    let segments: Vec<&str> = app.split('/').collect();
    let len = if APP_NAMESPACES.contains(&segments[0]) {
        3
    } else {
        2
    };
    segments[..len.min(segments.len())].join("/")
}

/// The follow-up URLs fal hands out: owner/alias only, never the app's sub-path.
fn urls(base: &QueueBase, root: &str, id: &str) -> Value {
    let response_url = format!("{}/{root}/requests/{id}", base.0);
    json!({
        "request_id": id,
        "response_url": response_url,
        "status_url": format!("{response_url}/status"),
        "cancel_url": format!("{response_url}/cancel"),
    })
}

fn with_request_id(mut response: Response, id: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(id) {
        response.headers_mut().insert("x-fal-request-id", value);
    }
    response
}

// -------------------------------------------------------------------------- follow-ups --

/// The request `id` of this key under `root`. Another key's request, or one under another
/// app, does not exist for the caller.
fn lookup<T>(
    shared: &Shared,
    key: &str,
    root: &str,
    id: &str,
    then: impl FnOnce(&mut Store, i64) -> T,
) -> Option<T> {
    let owner = KeyHash::of(key);
    let now = shared.now_ms();
    let retention = ms(shared.config().retention);
    let mut store = lock(&shared.fal);
    let found = store
        .requests
        .get(id, now, retention)
        .is_some_and(|r| r.owner == owner && r.root == root);
    found.then(|| then(&mut store, now))
}

fn request_not_found() -> Response {
    detail(StatusCode::NOT_FOUND, "Request not found")
}

fn status(
    shared: &Shared,
    base: &QueueBase,
    key: &str,
    root: &str,
    id: &str,
    query: Option<&str>,
) -> Response {
    shared.record(Provider::Fal, Some(&KeyHash::of(key).id()), Event::Poll);
    let with_logs = query
        .unwrap_or_default()
        .split('&')
        .any(|pair| matches!(pair, "logs=1" | "logs=true" | "logs=True"));
    let retention = ms(shared.config().retention);
    let answer = lookup(shared, key, root, id, |store, now| {
        let request = store.requests.get(id, now, retention)?;
        let state = request.state(now);
        let inference_secs = request.timeline.render_ms as f64 / 1000.0;
        let position = match state {
            Stage::Queued => {
                let owner = request.owner;
                store
                    .queues
                    .get_mut(&owner)
                    .map_or(0, |q| q.position(id, now))
            }
            _ => 0,
        };
        Some((state, inference_secs, position))
    })
    .flatten();
    let Some((state, inference_secs, position)) = answer else {
        return request_not_found();
    };
    let logs = || {
        with_logs.then(|| {
            json!([{"message": "Generating video", "level": "INFO", "source": "USER",
                    "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)}])
        })
    };
    let mut body = urls(base, root, id);
    let Some(fields) = body.as_object_mut() else {
        return request_not_found();
    };
    match state {
        Stage::Queued => {
            fields.insert("status".into(), json!("IN_QUEUE"));
            fields.insert("queue_position".into(), json!(position));
        }
        Stage::InProgress => {
            fields.insert("status".into(), json!("IN_PROGRESS"));
            fields.insert("logs".into(), json!(logs()));
        }
        Stage::Completed(ending) => {
            fields.insert("status".into(), json!("COMPLETED"));
            fields.insert("logs".into(), json!(logs()));
            // UNVERIFIED which failures fal reports here and which only in the result: the
            // simulator reports its own gave-ups (and cancels) here, and leaves the app's
            // refusals (moderation) to the result, so clients meet both.
            match ending {
                Ending::Success | Ending::Moderated => {
                    fields.insert(
                        "metrics".into(),
                        json!({ "inference_time": inference_secs }),
                    );
                }
                Ending::Failed => {
                    fields.insert("metrics".into(), json!({}));
                    fields.insert("error".into(), json!("Runner disconnected unexpectedly"));
                    fields.insert("error_type".into(), json!("runner_disconnected"));
                }
                Ending::Cancelled => {
                    fields.insert("metrics".into(), json!({}));
                    fields.insert("error".into(), json!("Request was cancelled"));
                }
            }
        }
    }
    with_request_id(crate::http::json(StatusCode::OK, &body), id)
}

fn result(shared: &Shared, key: &str, root: &str, id: &str) -> Response {
    let retention = ms(shared.config().retention);
    let found = lookup(shared, key, root, id, |store, now| {
        store
            .requests
            .get(id, now, retention)
            .map(|r| (r.state(now), r.seed))
    })
    .flatten();
    let Some((state, seed)) = found else {
        return request_not_found();
    };
    let response = match state {
        // UNVERIFIED: fal's answer for a result asked for too early.
        Stage::Queued | Stage::InProgress => {
            detail(StatusCode::BAD_REQUEST, "Request is still in progress")
        }
        Stage::Completed(Ending::Success) => {
            crate::http::json(StatusCode::OK, &output(shared, id, seed))
        }
        Stage::Completed(Ending::Moderated) => unprocessable(&[json!({
            "loc": ["body", "prompt"], "msg": "The content was flagged by a content checker.",
            "type": "content_policy_violation",
            "url": "https://docs.fal.ai/errors#content_policy_violation",
        })]),
        Stage::Completed(Ending::Failed) => {
            let mut response = crate::http::json(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"detail": "Runner disconnected unexpectedly", "error_type": "runner_disconnected"}),
            );
            response.headers_mut().insert(
                "x-fal-error-type",
                HeaderValue::from_static("runner_disconnected"),
            );
            response
        }
        Stage::Completed(Ending::Cancelled) => {
            detail(StatusCode::BAD_REQUEST, "Request was cancelled")
        }
    };
    with_request_id(response, id)
}

/// The output every video app of §8.9 answers: `{"video": File}` (and SVD's seed).
fn output(shared: &Shared, id: &str, seed: Option<u64>) -> Value {
    let size = video::mp4_for(id).len() as u64 + shared.config().video_padding_bytes;
    let mut body = json!({"video": {
        "url": format!("{}/fal-media/files/{id}/output.mp4", shared.public_url),
        "content_type": "video/mp4", "file_name": "output.mp4", "file_size": size,
    }});
    if let (Some(seed), Some(fields)) = (seed, body.as_object_mut()) {
        fields.insert("seed".into(), json!(seed));
    }
    body
}

/// A queued request leaves the queue; a running one gets the cancellation signal, which the
/// simulated app honours at once. Either way it ends COMPLETED with `error`. Status codes per
/// outcome are third-party readings (§8.3).
fn cancel(shared: &Shared, key: &str, root: &str, id: &str) -> Response {
    shared.record(Provider::Fal, Some(&KeyHash::of(key).id()), Event::Cancel);
    let retention = ms(shared.config().retention);
    let outcome = lookup(shared, key, root, id, |store, now| {
        let owner = KeyHash::of(key);
        let state = store
            .requests
            .get(id, now, retention)
            .map(|r| r.state(now))?;
        if matches!(state, Stage::Completed(_)) {
            return Some(false);
        }
        if let Some(request) = store.requests.get_mut(id, now, retention) {
            request.cancelled_ms = Some(now);
        }
        if let Some(queue) = store.queues.get_mut(&owner) {
            queue.forget(id);
        }
        Some(true)
    })
    .flatten();
    match outcome {
        None => crate::http::json(StatusCode::NOT_FOUND, &json!({"status": "NOT_FOUND"})),
        Some(false) => crate::http::json(
            StatusCode::BAD_REQUEST,
            &json!({"status": "ALREADY_COMPLETED"}),
        ),
        Some(true) => crate::http::json(
            StatusCode::ACCEPTED,
            &json!({"status": "CANCELLATION_REQUESTED"}),
        ),
    }
}

/// `GET /fal-media/files/{id}/output.mp4`: a finished request's video. No auth: fal's CDN
/// URLs are public (their lifecycle is the account's setting).
pub(crate) async fn file(
    State(shared): State<Arc<Shared>>,
    Path((id, file)): Path<(String, String)>,
) -> Response {
    let config = shared.config();
    let now = shared.now_ms();
    let done = file == "output.mp4"
        && lock(&shared.fal)
            .requests
            .get(&id, now, ms(config.retention))
            .is_some_and(|r| r.state(now) == Stage::Completed(Ending::Success));
    if !done {
        return detail(StatusCode::NOT_FOUND, "Not Found");
    }
    video::download_response(video::mp4_for(&id), config.video_padding_bytes)
}

// ----------------------------------------------------------------------------- key check --

/// `POST /storage/auth/token?storage_type=fal-cdn-v3` with `{}`: a short-lived CDN upload
/// token (F-PY `CDNTokenManager`). A locked account is refused (403), as its uploads are.
async fn storage_token(
    State(shared): State<Arc<Shared>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let key = match authenticate(&shared, &headers) {
        Ok(key) => key,
        Err(response) => return response,
    };
    if key.starts_with("sim_broke") {
        return detail(StatusCode::FORBIDDEN, BALANCE_LOCK);
    }
    let storage_type = query
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| pair.strip_prefix("storage_type=").map(str::to_owned));
    if !matches!(
        storage_type.as_deref(),
        Some("fal-cdn-v3" | "fal-cdn" | "gcs")
    ) {
        return unprocessable(&[json!({"loc": ["query", "storage_type"],
            "msg": "value is not a valid enumeration member; permitted: 'fal-cdn', 'fal-cdn-v3', 'gcs'",
            "type": "type_error.enum"})]);
    }
    if let Err(problem) = body_object(body) {
        return unprocessable(&[problem]);
    }
    let expires = chrono::DateTime::from_timestamp_millis(shared.now_ms() + 3_600_000)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, false);
    crate::http::json(
        StatusCode::OK,
        &json!({"token": random_hex(32), "token_type": "Bearer",
                "base_url": format!("{}/fal-media", shared.public_url), "expires_at": expires}),
    )
}

// ---------------------------------------------------------------------- the apps' inputs --

/// What one input field takes.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Text,
    /// An https URL or a `data:image/…;base64,` URI (never fetched).
    Image,
    OneOf(&'static [&'static str]),
    Integer(i64, i64),
    Number(f64, f64),
    Bool,
}

#[derive(Debug)]
struct Field {
    name: &'static str,
    kind: Kind,
    required: bool,
}

const fn field(name: &'static str, kind: Kind, required: bool) -> Field {
    Field {
        name,
        kind,
        required,
    }
}

/// One app's inputs, from its model card (§8.9). Unknown fields are refused (the strict
/// reading: whether fal's apps ignore extra fields, as pydantic does by default, is
/// UNVERIFIED).
#[derive(Debug)]
struct AppSpec {
    id: &'static str,
    fields: &'static [Field],
}

const LUMA_RATIOS: Kind = Kind::OneOf(&["16:9", "9:16", "4:3", "3:4", "21:9", "9:21"]);
const LUMA_RESOLUTIONS: Kind = Kind::OneOf(&["540p", "720p", "1080p"]);
const LUMA_DURATIONS: Kind = Kind::OneOf(&["5s", "9s"]);

const APPS: &[AppSpec] = &[
    AppSpec {
        id: "fal-ai/kling-video/v2.1/master/image-to-video",
        fields: &[
            field("prompt", Kind::Text, true),
            field("image_url", Kind::Image, true),
            field("duration", Kind::OneOf(&["5", "10"]), false),
            field("negative_prompt", Kind::Text, false),
            field("cfg_scale", Kind::Number(0.0, 1.0), false),
        ],
    },
    AppSpec {
        id: "fal-ai/minimax/hailuo-02/standard/image-to-video",
        fields: &[
            field("prompt", Kind::Text, true),
            field("image_url", Kind::Image, true),
            field("duration", Kind::OneOf(&["6", "10"]), false),
            field("prompt_optimizer", Kind::Bool, false),
        ],
    },
    AppSpec {
        id: "fal-ai/minimax/hailuo-2.3/standard/text-to-video",
        fields: &[
            field("prompt", Kind::Text, true),
            field("prompt_optimizer", Kind::Bool, false),
            field("duration", Kind::OneOf(&["6", "10"]), false),
        ],
    },
    AppSpec {
        id: "fal-ai/luma-dream-machine/ray-2-flash",
        fields: &[
            field("prompt", Kind::Text, true),
            field("aspect_ratio", LUMA_RATIOS, false),
            field("loop", Kind::Bool, false),
            field("resolution", LUMA_RESOLUTIONS, false),
            field("duration", LUMA_DURATIONS, false),
        ],
    },
    AppSpec {
        id: "fal-ai/luma-dream-machine/ray-2-flash/image-to-video",
        fields: &[
            field("prompt", Kind::Text, true),
            field("image_url", Kind::Image, false),
            field("end_image_url", Kind::Image, false),
            field("aspect_ratio", LUMA_RATIOS, false),
            field("loop", Kind::Bool, false),
            field("resolution", LUMA_RESOLUTIONS, false),
            field("duration", LUMA_DURATIONS, false),
        ],
    },
    AppSpec {
        id: "fal-ai/stable-video",
        fields: &[
            field("image_url", Kind::Image, true),
            field("seed", Kind::Integer(0, u32::MAX as i64), false),
            field("motion_bucket_id", Kind::Integer(1, 255), false),
            field("cond_aug", Kind::Number(0.0, 10.0), false),
            field("fps", Kind::Integer(1, 100), false),
        ],
    },
];

fn app_spec(id: &str) -> Option<&'static AppSpec> {
    APPS.iter().find(|app| app.id == id)
}

impl AppSpec {
    /// The problems of `input`, as pydantic v1 names them; none when it is valid.
    fn validate(&self, input: &Map<String, Value>) -> Vec<Value> {
        let mut problems = Vec::new();
        for f in self.fields {
            match input.get(f.name) {
                None | Some(Value::Null) if f.required => {
                    problems.push(problem(&[f.name], "field required", "value_error.missing"));
                }
                None | Some(Value::Null) => {}
                Some(value) => {
                    if let Err((msg, kind)) = check(f.kind, value) {
                        problems.push(problem(&[f.name], &msg, kind));
                    }
                }
            }
        }
        for name in input.keys() {
            if !self.fields.iter().any(|f| f.name == name) {
                problems.push(problem(
                    &[name],
                    "extra fields not permitted",
                    "value_error.extra",
                ));
            }
        }
        problems
    }
}

fn check(kind: Kind, value: &Value) -> Result<(), (String, &'static str)> {
    let wrong = |expected: &str, kind: &'static str| {
        Err((
            format!("{expected} type expected, got {}", type_name(Some(value))),
            kind,
        ))
    };
    match kind {
        Kind::Text => match value {
            Value::String(s) if s.trim().is_empty() => Err((
                "ensure this value has at least 1 characters".to_owned(),
                "value_error.any_str.min_length",
            )),
            Value::String(_) => Ok(()),
            _ => wrong("str", "type_error.str"),
        },
        Kind::Image => match value {
            Value::String(uri) => check_image(uri).map_err(|msg| (msg, "value_error.url")),
            _ => wrong("str", "type_error.str"),
        },
        Kind::OneOf(allowed) => match value {
            Value::String(s) if allowed.contains(&s.as_str()) => Ok(()),
            _ => {
                let permitted: Vec<String> = allowed.iter().map(|a| format!("'{a}'")).collect();
                Err((
                    format!(
                        "value is not a valid enumeration member; permitted: {}",
                        permitted.join(", ")
                    ),
                    "type_error.enum",
                ))
            }
        },
        Kind::Integer(min, max) => match value.as_i64() {
            Some(n) if n < min => Err((
                format!("ensure this value is greater than or equal to {min}"),
                "value_error.number.not_ge",
            )),
            Some(n) if n > max => Err((
                format!("ensure this value is less than or equal to {max}"),
                "value_error.number.not_le",
            )),
            Some(_) => Ok(()),
            None => Err((
                "value is not a valid integer".to_owned(),
                "type_error.integer",
            )),
        },
        Kind::Number(min, max) => match value.as_f64() {
            Some(n) if n < min || n > max => Err((
                format!("ensure this value is between {min} and {max}"),
                "value_error.number.not_in_range",
            )),
            Some(_) => Ok(()),
            None => Err(("value is not a valid float".to_owned(), "type_error.float")),
        },
        Kind::Bool => match value {
            Value::Bool(_) => Ok(()),
            _ => Err((
                "value could not be parsed to a boolean".to_owned(),
                "type_error.bool",
            )),
        },
    }
}

/// fal's file inputs: a URL it can fetch, or a data URI (fal's CDN page, §8.2). The
/// simulator fetches nothing: an https URL on a domain, or a well-formed image data URI.
fn check_image(uri: &str) -> Result<(), String> {
    if let Some(rest) = uri.strip_prefix("data:") {
        let Some((media, data)) = rest.split_once(";base64,") else {
            return Err("data URIs must be base64-encoded".to_owned());
        };
        if !media.starts_with("image/") {
            return Err(format!("unsupported media type {media}"));
        }
        return base64::engine::general_purpose::STANDARD
            .decode(data)
            .map(|_| ())
            .map_err(|_| "the data URI is not valid base64".to_owned());
    }
    let url = url::Url::parse(uri).map_err(|_| "invalid or missing URL scheme".to_owned())?;
    match (url.scheme(), url.host()) {
        ("https", Some(url::Host::Domain(_))) => Ok(()),
        ("https", _) => Err("URL host must be a domain name".to_owned()),
        _ => Err("URL scheme not permitted".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_route_to_submits_and_request_calls() {
        assert_eq!(
            route(
                &Method::POST,
                "fal-ai/kling-video/v2.1/master/image-to-video"
            ),
            Route::Submit("fal-ai/kling-video/v2.1/master/image-to-video")
        );
        assert_eq!(
            route(&Method::GET, "fal-ai/kling-video/requests/r1/status"),
            Route::Status {
                root: "fal-ai/kling-video".into(),
                id: "r1"
            }
        );
        assert_eq!(
            route(&Method::GET, "fal-ai/kling-video/requests/r1"),
            Route::Result {
                root: "fal-ai/kling-video".into(),
                id: "r1"
            }
        );
        assert_eq!(
            route(&Method::PUT, "workflows/me/flow/requests/r1/cancel"),
            Route::Cancel {
                root: "workflows/me/flow".into(),
                id: "r1"
            }
        );
        assert_eq!(
            route(&Method::GET, "fal-ai/kling-video/requests/r1/status/stream"),
            Route::Unsupported
        );
        assert_eq!(
            route(&Method::DELETE, "fal-ai/kling-video/requests/r1"),
            Route::Unsupported
        );
        assert_eq!(
            route(&Method::GET, "fal-ai/stable-video"),
            Route::Unsupported
        );
        assert_eq!(
            queue_root("fal-ai/kling-video/v2.1/master/image-to-video"),
            "fal-ai/kling-video"
        );
        assert_eq!(queue_root("workflows/me/flow/x"), "workflows/me/flow");
    }

    #[test]
    fn inputs_are_checked_as_pydantic_reports_them() {
        let kling = app_spec("fal-ai/kling-video/v2.1/master/image-to-video").unwrap();
        let ok = json!({"prompt": "x", "image_url": "data:image/png;base64,iVBORw0KGgo=", "duration": "10"});
        assert!(kling.validate(ok.as_object().unwrap()).is_empty());
        let bad = json!({"image_url": "http://1.2.3.4/a.png", "duration": 5, "colour": "red"});
        let problems = kling.validate(bad.as_object().unwrap());
        let locs: Vec<Value> = problems.iter().map(|p| p["loc"].clone()).collect();
        assert_eq!(
            locs,
            [
                json!(["body", "prompt"]),
                json!(["body", "image_url"]),
                json!(["body", "duration"]),
                json!(["body", "colour"])
            ]
        );
        assert_eq!(problems[0]["type"], "value_error.missing");
        assert_eq!(
            problems[2]["msg"],
            "value is not a valid enumeration member; permitted: '5', '10'"
        );
        assert_eq!(problems[3]["type"], "value_error.extra");
        let svd = app_spec("fal-ai/stable-video").unwrap();
        let problems = svd.validate(
            json!({"image_url": "https://x.example/a.png", "seed": -1})
                .as_object()
                .unwrap(),
        );
        assert_eq!(problems[0]["type"], "value_error.number.not_ge");
    }

    #[test]
    fn a_keys_slots_queue_its_requests_in_order() {
        let mut q = Queue::default();
        // Two slots: the first two start at once, the third when the first frees.
        assert_eq!(q.schedule("a", 2, 0, 1000), 0);
        assert_eq!(q.schedule("b", 2, 10, 1000), 10);
        assert_eq!(q.schedule("c", 2, 20, 1000), 1000);
        assert_eq!(q.schedule("d", 2, 30, 1000), 1010);
        assert_eq!(q.position("c", 500), 0);
        assert_eq!(q.position("d", 500), 1);
        q.forget("c");
        assert_eq!(q.position("d", 500), 0);
        assert_eq!(q.position("d", 1010), 0);
        // No limit: everything starts at once.
        assert_eq!(Queue::default().schedule("e", 0, 5, 1000), 5);
    }
}
