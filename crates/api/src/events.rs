//! `GET /v1/jobs/{job_id}/events`: a job's history and progress as Server-Sent Events
//! (<https://html.spec.whatwg.org/multipage/server-sent-events.html>), for clients that
//! cannot receive webhooks, such as a browser's `EventSource`.
//!
//! Jobs are changed by workers, usually in other processes, and nothing tells the API when
//! they do (no cross-process signal exists today; PostgreSQL's `LISTEN`/`NOTIFY` would be
//! one, SQLite has none). So each open stream polls the job's row every [`POLL_EVERY`]:
//! one indexed read of its status, progress and `updated_at`, and only when those moved a
//! read of the new history entries and of the job. Streams are bounded per process
//! ([`MAX_STREAMS`]) and in time ([`MAX_LIFE`]); a client resumes with `Last-Event-ID`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use byok_core::{JobStatus, JobView};
use byok_store::{JobEvent, Store, StoreError};
use chrono::{DateTime, Utc};
use futures::Stream;
use serde::Serialize;
use serde_json::json;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tracing::Instrument as _;
use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{PartialSchema as _, ToSchema};
use uuid::Uuid;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiErrorCode};
use crate::extract::JobPath;

/// How often an open stream reads its job's row.
const POLL_EVERY: Duration = Duration::from_millis(500);
/// A comment (`: keep-alive`) after this long without an event, so that proxies that cut
/// idle connections leave the stream open.
const KEEP_ALIVE_EVERY: Duration = Duration::from_secs(15);
/// A stream ends after this long whatever its job does; the client resumes with
/// `Last-Event-ID`. Bounds what one request holds (a connection, a slot, its polls).
const MAX_LIFE: Duration = Duration::from_secs(60 * 60);
/// Open streams per API process; past it the answer is 503 with `Retry-After`.
const MAX_STREAMS: usize = 1_000;
/// The `Retry-After` of that 503, in seconds.
const RETRY_AFTER_SECS: u64 = 5;
/// History entries per read.
const PAGE: u32 = 100;

/// The streams open in this process.
static OPEN: Slots = Slots::new(MAX_STREAMS);

/// `GET /v1/jobs/{id}/events`
#[utoipa::path(
    get,
    path = "/v1/jobs/{job_id}/events",
    operation_id = "stream_job_events",
    summary = "Follow a job's events (Server-Sent Events)",
    tag = "jobs",
    params(
        ("job_id" = Uuid, Path, description = "The job (a UUID; anything else is a 400)"),
        (
            "Last-Event-ID" = Option<String>, Header,
            description = "The `id` of the last event received: the stream resumes after it, \
                sending nothing already seen and skipping nothing. Browsers' EventSource sends \
                it on every reconnect by itself. Anything that is not an id this route sends \
                is a 400 `bad_request` with `details.header`",
            max_length = 24, pattern = "^[0-9]{1,18}(\\.p[0-9]{1,4})?$",
        ),
    ),
    responses(
        (
            status = 200,
            description = "The job's events as Server-Sent Events, oldest first (the schema \
                describes one event, as OpenAPI 3.2's `itemSchema` does). First one per \
                entry of the job's history, named by the status the job had after it: \
                `job.queued`, `job.throttled`, `job.running`, `job.succeeded`, `job.failed`, \
                `job.cancelled` (entries that did not change the status repeat it); then, \
                while the job runs, `job.progress` whenever its stored progress moved (at a \
                resolution of 0.001). Each event's `data` is one JSON line shaped like a \
                webhook payload: `{\"type\":\"job.running\",\"timestamp\":\"<RFC 3339>\",\
                \"message\":\"<the history entry's>\",\"data\":<the Job, as GET \
                /v1/jobs/{job_id} returns it when the stream read it>}` (`message` on history \
                events only). Each event's `id` says where the stream stands: a history \
                event's is the entry's number (`42`), a progress event's the last entry's \
                number and the progress in thousandths (`42.p350`); send the last one back as \
                `Last-Event-ID` to resume. The body ends right after the events of a final \
                status, and otherwise after at most an hour (reconnect with Last-Event-ID). \
                The job is read every 0.5 s; a comment line `: keep-alive` is sent after 15 s \
                without an event. At most 1,000 streams are open per API process: past that \
                the answer is a 503 `service_unavailable` with `Retry-After`",
            content_type = "text/event-stream",
            body = JobStreamEvent,
        ),
        (
            status = 204,
            description = "The job is final and nothing follows Last-Event-ID: there is \
                nothing more to send, and a 204 tells an EventSource to stop reconnecting",
        ),
    ),
)]
pub(crate) async fn stream(
    State(state): State<AppState>,
    caller: Caller,
    JobPath(id): JobPath,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let from = last_event_id(&headers)?;
    // The project check and the 404 of `GET /v1/jobs/{id}`.
    crate::jobs::load(&state, &caller, id).await?;
    let Some(slot) = OPEN.take() else {
        return Ok(too_many_streams());
    };
    let mut follow = Follow::new(state.store().clone(), id, from, Some(slot), Timing::DEFAULT);
    // The first read is made here, before the response starts and so within the request
    // timeout: a database that is down is a 503 now rather than an empty stream, and a
    // final job with nothing after Last-Event-ID is a 204, which stops an EventSource from
    // reconnecting to it for ever.
    follow.poll().await.map_err(|e| e.into_api(id))?;
    if follow.finished && follow.ready.is_empty() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let mut response = Sse::new(follow.into_stream())
        .keep_alive(
            KeepAlive::new()
                .interval(KEEP_ALIVE_EVERY)
                .text("keep-alive"),
        )
        .into_response();
    // nginx buffers proxied responses unless told not to, which would hold events back.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// The name (`event:`) of a stream event, and the `type` of its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub(crate) enum JobEventType {
    #[serde(rename = "job.queued")]
    Queued,
    #[serde(rename = "job.throttled")]
    Throttled,
    #[serde(rename = "job.running")]
    Running,
    #[serde(rename = "job.succeeded")]
    Succeeded,
    #[serde(rename = "job.failed")]
    Failed,
    #[serde(rename = "job.cancelled")]
    Cancelled,
    #[serde(rename = "job.progress")]
    Progress,
}

impl JobEventType {
    /// The event of a history entry: named by the status the job had after it.
    fn of(status: JobStatus) -> Self {
        match status {
            JobStatus::Queued => JobEventType::Queued,
            JobStatus::Throttled => JobEventType::Throttled,
            JobStatus::Running => JobEventType::Running,
            JobStatus::Succeeded => JobEventType::Succeeded,
            JobStatus::Failed => JobEventType::Failed,
            JobStatus::Cancelled => JobEventType::Cancelled,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            JobEventType::Queued => "job.queued",
            JobEventType::Throttled => "job.throttled",
            JobEventType::Running => "job.running",
            JobEventType::Succeeded => "job.succeeded",
            JobEventType::Failed => "job.failed",
            JobEventType::Cancelled => "job.cancelled",
            JobEventType::Progress => "job.progress",
        }
    }
}

/// The `data:` of a stream event: what happened and the job, shaped like a webhook payload.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct JobEventPayload<'a> {
    #[serde(rename = "type")]
    event_type: JobEventType,
    /// When: the history entry's time, or for `job.progress` the job's `updated_at`.
    timestamp: DateTime<Utc>,
    /// The history entry's message; history events only.
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
    /// The job as `GET /v1/jobs/{job_id}` returns it when the stream read it (never older
    /// than the entry it comes with).
    data: &'a JobView,
}

/// The pattern of an event id (and of `Last-Event-ID`).
const ID_PATTERN: &str = "^[0-9]{1,18}(\\.p[0-9]{1,4})?$";

/// One event of `GET /v1/jobs/{job_id}/events`, for the OpenAPI document: the fields of a
/// Server-Sent Event, as OpenAPI 3.2's `itemSchema` of a `text/event-stream` describes them
/// (and as tools read the `schema` of one before 3.2).
#[derive(Debug)]
pub(crate) struct JobStreamEvent;

impl utoipa::PartialSchema for JobStreamEvent {
    fn schema() -> RefOr<Schema> {
        let content_schema = json!({
            "$ref": format!("#/components/schemas/{}", JobEventPayload::name())
        });
        ObjectBuilder::new()
            .description(Some(
                "One Server-Sent Event of the stream (its fields; the body is a sequence of \
                 them)",
            ))
            .property("event", Ref::from_schema_name(JobEventType::name()))
            .required("event")
            .property(
                "id",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(ID_PATTERN))
                    .description(Some(
                        "Where the stream stands: a history entry's number (`42`), or for \
                         `job.progress` that of the last entry and the progress in thousandths \
                         (`42.p350`). Sent back as `Last-Event-ID` to resume",
                    )),
            )
            .required("id")
            .property(
                "data",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .content_media_type("application/json")
                    .description(Some("One line of JSON: a `JobEventPayload`"))
                    // utoipa has no `contentSchema` (JSON Schema 2020-12); an extension map
                    // serialises its keys as they are.
                    .extensions(Some(Extensions::from_iter([(
                        "contentSchema",
                        content_schema,
                    )]))),
            )
            .required("data")
            .into()
    }
}

impl ToSchema for JobStreamEvent {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        for (name, schema) in [
            (JobEventPayload::name(), JobEventPayload::schema()),
            (JobEventType::name(), JobEventType::schema()),
        ] {
            schemas.push((name.into_owned(), schema));
        }
        <JobEventPayload<'_> as ToSchema>::schemas(schemas);
    }
}

/// Where a stream stands: after the history entry numbered `history` (0: before the
/// first), and with the progress in thousandths last sent since that entry, if any. It is
/// what each event's `id` says and what `Last-Event-ID` brings back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Position {
    history: i64,
    progress: Option<u16>,
}

impl Position {
    /// `42` or `42.p350`; `None` for anything else.
    fn parse(raw: &str) -> Option<Position> {
        let number = |s: &str| {
            (!s.is_empty() && s.len() <= 18 && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse::<i64>().ok())
                .flatten()
        };
        let (history, progress) = match raw.split_once(".p") {
            Some((history, progress)) => (history, Some(progress)),
            None => (raw, None),
        };
        let history = number(history)?;
        let progress = match progress {
            None => None,
            Some(p) => Some(
                number(p)
                    .and_then(|p| u16::try_from(p).ok())
                    .filter(|p| *p <= 1000)?,
            ),
        };
        Some(Position { history, progress })
    }

    /// The event id that names this position.
    fn id(self) -> String {
        match self.progress {
            None => self.history.to_string(),
            Some(p) => format!("{}.p{p}", self.history),
        }
    }
}

/// The position `Last-Event-ID` names; the start without one. An empty value is no id
/// (what the SSE specification means by an empty last event id).
fn last_event_id(headers: &HeaderMap) -> Result<Position, ApiError> {
    let Some(value) = headers.get("last-event-id") else {
        return Ok(Position::default());
    };
    match value.to_str() {
        Ok("") => Some(Position::default()),
        Ok(raw) => Position::parse(raw),
        Err(_) => None,
    }
    .ok_or_else(|| {
        ApiError::bad_request(
            "Last-Event-ID must be the id of an event of this stream: `<entry>` or \
             `<entry>.p<progress in thousandths>`, e.g. `42` or `42.p350`",
        )
        .with_details(json!({ "header": "Last-Event-ID" }))
    })
}

/// The 503 past [`MAX_STREAMS`].
fn too_many_streams() -> Response {
    tracing::warn!(
        max = MAX_STREAMS,
        "refused a job event stream: too many open in this process"
    );
    let mut response = ApiError::new(
        ApiErrorCode::ServiceUnavailable,
        format!(
            "this server has {MAX_STREAMS} event streams open, its most; retry after the time \
             in Retry-After"
        ),
    )
    .with_details(json!({ "retry_after_seconds": RETRY_AFTER_SECS }))
    .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
    response
}

/// A counted set of places, one per open stream.
#[derive(Debug)]
struct Slots {
    open: AtomicUsize,
    max: usize,
}

impl Slots {
    const fn new(max: usize) -> Self {
        Slots {
            open: AtomicUsize::new(0),
            max,
        }
    }

    /// A place, unless all are taken; it is given back when dropped.
    fn take(&self) -> Option<Slot<'_>> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < self.max).then_some(open + 1)
            })
            .ok()
            .map(|_| Slot(self))
    }
}

/// One place of [`Slots`], held by a stream for as long as its body lives: the body is
/// dropped when it ends or the client goes away, and the place with it.
#[derive(Debug)]
struct Slot<'a>(&'a Slots);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// How often a stream polls and how long it lives.
#[derive(Debug, Clone, Copy)]
struct Timing {
    poll_every: Duration,
    max_life: Duration,
}

impl Timing {
    const DEFAULT: Timing = Timing {
        poll_every: POLL_EVERY,
        max_life: MAX_LIFE,
    };
}

/// Why a stream stopped early.
#[derive(Debug, thiserror::Error)]
enum FollowError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("a history entry has an unknown status")]
    UnknownStatus,
    #[error("the job does not serialise: {0}")]
    Json(#[from] serde_json::Error),
}

impl FollowError {
    fn into_api(self, job_id: Uuid) -> ApiError {
        match self {
            FollowError::Store(e) => ApiError::store(&e),
            other => {
                tracing::error!(job.id = %job_id, error = %other, "cannot stream the job's events");
                ApiError::internal(&other)
            }
        }
    }
}

/// What [`JobRepo::change_stamp`](byok_store::JobRepo::change_stamp) returns.
type Stamp = (JobStatus, Option<f64>, DateTime<Utc>);

/// One open stream: where it stands and what it has to send.
#[derive(Debug)]
struct Follow {
    store: Store,
    job_id: Uuid,
    at: Position,
    /// The row's stamp when it was last read in full; `None` before the first read.
    stamp: Option<Stamp>,
    /// Events read and not yet sent.
    ready: VecDeque<Event>,
    /// Nothing more to read: send what is ready, then end.
    finished: bool,
    tick: Interval,
    ends_at: Instant,
    /// The request's span (with its `x-request-id`): the body is polled outside it.
    span: tracing::Span,
    _slot: Option<Slot<'static>>,
}

impl Follow {
    fn new(
        store: Store,
        job_id: Uuid,
        at: Position,
        slot: Option<Slot<'static>>,
        timing: Timing,
    ) -> Self {
        let now = Instant::now();
        let mut tick = tokio::time::interval_at(now + timing.poll_every, timing.poll_every);
        // A slow read delays the next one rather than causing a burst after it.
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Follow {
            store,
            job_id,
            at,
            stamp: None,
            ready: VecDeque::new(),
            finished: false,
            tick,
            ends_at: now + timing.max_life,
            span: tracing::Span::current(),
            _slot: slot,
        }
    }

    /// The events as a stream: what is ready, then a poll every tick, until the job is
    /// final, the stream's life is over or a read fails. Failing ends the body cleanly
    /// (a database error mid-stream is logged, never a panic); the client resumes from the
    /// last id it got, so ending loses nothing.
    fn into_stream(self) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
        futures::stream::unfold(self, |mut follow| async move {
            loop {
                if let Some(event) = follow.ready.pop_front() {
                    return Some((Ok(event), follow));
                }
                if follow.finished || Instant::now() >= follow.ends_at {
                    return None;
                }
                follow.tick.tick().await;
                let span = follow.span.clone();
                if let Err(e) = follow.poll().instrument(span.clone()).await {
                    span.in_scope(|| {
                        tracing::warn!(
                            job.id = %follow.job_id,
                            error = %e,
                            "a job event stream ended early; its client resumes with Last-Event-ID"
                        );
                    });
                    follow.finished = true;
                }
            }
        })
    }

    /// Reads the job if its row changed, and queues the events that follow where the
    /// stream stands.
    async fn poll(&mut self) -> Result<(), FollowError> {
        let jobs = self.store.jobs();
        let Some(stamp) = jobs.change_stamp(self.job_id).await? else {
            // The job is gone (nothing deletes jobs today): nothing more will come.
            self.finished = true;
            return Ok(());
        };
        if self.stamp == Some(stamp) {
            return Ok(());
        }
        // The entries first, then the job: the job shown is never older than an entry
        // shown with it.
        let mut entries = self.entries_after(self.at.history).await?;
        let Some(job) = jobs.get(self.job_id).await? else {
            self.finished = true;
            return Ok(());
        };
        if job.status.is_terminal() {
            // The job may have become final between the two reads: the entries written
            // meanwhile are read now, after it, so the stream never ends before them.
            let after = entries.last().map_or(self.at.history, |(row, _)| *row);
            entries.extend(self.entries_after(after).await?);
            self.finished = true;
        }
        // Remembered only now: had a read failed, the next poll reads again.
        self.stamp = Some(stamp);
        let (status, progress, updated_at) = (job.status, job.progress, job.updated_at);
        let view = JobView::from(job);
        for (row, entry) in &entries {
            let status: JobStatus = entry
                .status
                .parse()
                .map_err(|_| FollowError::UnknownStatus)?;
            // A new entry starts afresh: the client has seen no progress since it.
            self.at = Position {
                history: *row,
                progress: None,
            };
            self.push(&JobEventPayload {
                event_type: JobEventType::of(status),
                timestamp: entry.at,
                message: Some(&entry.message),
                data: &view,
            })?;
        }
        if !self.finished
            && status == JobStatus::Running
            && let Some(progress) = progress
        {
            // Progress is clamped to 0–1 when read, so this is 0–1000.
            let thousandths = (progress * 1000.0).round() as u16;
            if self.at.progress != Some(thousandths) {
                self.at.progress = Some(thousandths);
                self.push(&JobEventPayload {
                    event_type: JobEventType::Progress,
                    timestamp: updated_at,
                    message: None,
                    data: &view,
                })?;
            }
        }
        Ok(())
    }

    /// Every history entry after `after`, read a page at a time.
    async fn entries_after(&self, mut after: i64) -> Result<Vec<(i64, JobEvent)>, StoreError> {
        let mut entries = Vec::new();
        loop {
            let page = self
                .store
                .jobs()
                .events_after(self.job_id, after, PAGE)
                .await?;
            let full = page.len() == PAGE as usize;
            if let Some((row, _)) = page.last() {
                after = *row;
            }
            entries.extend(page);
            if !full {
                return Ok(entries);
            }
        }
    }

    /// Queues the event of `payload` at the current position. The name is one of
    /// [`JobEventType`], the id digits and the data one line of JSON (serde_json escapes
    /// line breaks): none holds a character `Event` refuses.
    fn push(&mut self, payload: &JobEventPayload<'_>) -> Result<(), FollowError> {
        let data = serde_json::to_string(payload)?;
        self.ready.push_back(
            Event::default()
                .event(payload.event_type.as_str())
                .id(self.at.id())
                .data(data),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use byok_core::{DEFAULT_PROJECT_ID, GenerationRequest, ProviderId};
    use byok_store::{Inserted, NewJob, StoreOptions};
    use futures::StreamExt as _;
    use secrecy::SecretString;

    #[test]
    fn positions_are_the_ids_this_route_sends_and_nothing_else() {
        for (raw, history, progress) in [
            ("0", 0, None),
            ("42", 42, None),
            ("42.p0", 42, Some(0)),
            ("42.p350", 42, Some(350)),
            ("7.p1000", 7, Some(1000)),
        ] {
            let position = Position::parse(raw).unwrap();
            assert_eq!(position, Position { history, progress }, "{raw}");
            assert_eq!(position.id(), raw);
        }
        for bad in [
            "",
            "-1",
            "+1",
            " 1",
            "1 ",
            "abc",
            "1.p",
            ".p1",
            "1.p1001",
            "1.p-1",
            "1.q5",
            "1.p5.p6",
            "1.5",
            "9999999999999999999",
            "1.p99999999999999999999",
        ] {
            assert_eq!(Position::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_header_is_optional_and_a_bad_one_is_a_400_naming_it() {
        let mut headers = HeaderMap::new();
        assert_eq!(last_event_id(&headers).unwrap(), Position::default());
        headers.insert("last-event-id", HeaderValue::from_static(""));
        assert_eq!(last_event_id(&headers).unwrap(), Position::default());
        headers.insert("last-event-id", HeaderValue::from_static("12.p500"));
        assert_eq!(
            last_event_id(&headers).unwrap(),
            Position {
                history: 12,
                progress: Some(500)
            }
        );
        headers.insert("last-event-id", HeaderValue::from_static("twelve"));
        let error = last_event_id(&headers).unwrap_err();
        assert_eq!(error.code(), ApiErrorCode::BadRequest);
        assert_eq!(error.details()["header"], "Last-Event-ID");
        headers.insert("last-event-id", HeaderValue::from_bytes(b"1\xff").unwrap());
        assert!(last_event_id(&headers).is_err());
    }

    #[test]
    fn slots_run_out_and_come_back_when_dropped() {
        let slots = Slots::new(2);
        let a = slots.take().unwrap();
        let b = slots.take().unwrap();
        assert!(slots.take().is_none());
        drop(a);
        let c = slots.take().unwrap();
        assert!(slots.take().is_none());
        drop((b, c));
        assert_eq!(slots.open.load(Ordering::Acquire), 0);
    }

    #[tokio::test]
    async fn too_many_streams_is_a_503_with_retry_after() {
        let response = too_many_streams();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "5");
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["code"], "service_unavailable", "{body}");
    }

    #[test]
    fn the_document_describes_each_event_and_its_payload() {
        let doc = serde_json::to_value(crate::openapi()).unwrap();
        let operation = &doc["paths"]["/v1/jobs/{job_id}/events"]["get"];
        assert_eq!(operation["operationId"], "stream_job_events");
        assert_eq!(
            operation["responses"]["200"]["content"]["text/event-stream"]["schema"]["$ref"],
            "#/components/schemas/JobStreamEvent"
        );
        let schemas = &doc["components"]["schemas"];
        let event = &schemas["JobStreamEvent"];
        assert_eq!(event["required"], json!(["event", "id", "data"]), "{event}");
        assert_eq!(event["properties"]["id"]["pattern"], ID_PATTERN);
        assert_eq!(
            event["properties"]["data"]["contentSchema"]["$ref"],
            "#/components/schemas/JobEventPayload"
        );
        let names: Vec<&str> = schemas["JobEventType"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap())
            .collect();
        for status in JobStatus::ALL {
            assert!(
                names.contains(&JobEventType::of(status).as_str()),
                "{names:?}"
            );
        }
        assert!(names.contains(&"job.progress"));
        let payload = &schemas["JobEventPayload"];
        assert_eq!(
            payload["properties"]["data"]["$ref"],
            "#/components/schemas/Job"
        );
        // The header's pattern is the ids' pattern.
        let header = operation["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "Last-Event-ID")
            .unwrap();
        assert_eq!(header["schema"]["pattern"], ID_PATTERN);
    }

    async fn store_with_a_job() -> (byok_testing::TestSqlite, Store, Uuid) {
        let db = byok_testing::test_sqlite();
        let store = Store::connect(
            &SecretString::from(db.url.clone()),
            &StoreOptions::default(),
        )
        .await
        .unwrap();
        store.migrate().await.unwrap();
        let user = Uuid::new_v4();
        let new = NewJob {
            project_id: DEFAULT_PROJECT_ID,
            user_id: user,
            provider: ProviderId::RUNWAY,
            model: "gen4_turbo".into(),
            request: GenerationRequest::new(user, ProviderId::RUNWAY, "gen4_turbo"),
            metadata: json!({}),
            created_by_token: None,
            batch_id: None,
            idempotency: None,
            usage: Default::default(),
        };
        let Inserted::Created(job) = store.jobs().insert(&new).await.unwrap() else {
            panic!("a new job");
        };
        (db, store, job.id)
    }

    #[tokio::test]
    async fn a_stream_ends_at_its_maximum_life_though_its_job_goes_on() {
        let (_db, store, id) = store_with_a_job().await;
        let timing = Timing {
            poll_every: Duration::from_millis(10),
            max_life: Duration::from_millis(200),
        };
        let started = std::time::Instant::now();
        let follow = Follow::new(store.clone(), id, Position::default(), None, timing);
        let events: Vec<_> = tokio::time::timeout(
            Duration::from_secs(20),
            follow.into_stream().collect::<Vec<_>>(),
        )
        .await
        .expect("the stream ends by itself");
        assert!(started.elapsed() >= timing.max_life);
        // The one entry (`accepted`), then nothing: the job is still queued.
        assert_eq!(events.len(), 1);
        let live = store.jobs().get(id).await.unwrap().unwrap();
        assert_eq!(live.status, JobStatus::Queued);
    }

    #[tokio::test]
    async fn a_store_failure_ends_the_stream_without_a_panic() {
        let (_db, store, id) = store_with_a_job().await;
        let timing = Timing {
            poll_every: Duration::from_millis(10),
            max_life: MAX_LIFE,
        };
        let mut follow = Follow::new(store.clone(), id, Position::default(), None, timing);
        follow.poll().await.unwrap();
        let mut stream = Box::pin(follow.into_stream());
        assert!(stream.next().await.is_some(), "the first entry");
        store.close().await;
        let rest = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .expect("the stream ends by itself");
        assert!(rest.is_none());
    }
}
