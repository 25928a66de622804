//! `generation_jobs`: the truth about every job (docs/job-lifecycle.md). The queue only
//! carries ids that point here.
//!
//! Every change of a job is a compare-and-set: an `UPDATE … WHERE` naming
//! the state the change starts from, so a duplicate queue delivery, a
//! second worker or a cancel racing a worker can never move a job
//! backwards or out of a final state. Each method says whether its change
//! applied. A change of status also appends to `generation_job_events` in
//! the same transaction, which is the job's history.
//!
//! Rows are untrusted input: an error code this build does not know reads
//! back as `internal` (its message kept), a provider name it does not know
//! as `provider() == None`, odd counters are clamped. The JSON columns
//! `request` and `result` are read into their types; one that does not fit
//! (or an unknown status) makes the row [`StoreError::Malformed`], naming
//! the column.

use std::collections::HashMap;

use byok_core::{
    ErrorCode, ErrorRecord, GenerationRequest, JobResult, JobResultView, JobStatus, JobView,
    ProjectUser, ProviderId, RouteStep,
};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;
use uuid::Uuid;

use crate::db::with_pool;
use crate::sql_types::{DbUuid, from_row};
use crate::{Store, StoreError};

/// At most one `job.progress` event per job per this long.
pub const PROGRESS_EVENT_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Column list shared by every query that returns a job row.
macro_rules! job_columns {
    () => {
        "id, project_id, user_id, provider, model, status, progress, attempts, provider_job_id, request, \
         result, error_code, error_message, error_retryable, metadata, created_by_token, \
         idempotency_key, request_sha256, created_at, updated_at, started_at, finished_at, \
         enqueued_at, submit_started_at, cancel_sent_at, batch_id, estimated_cost_micros, route"
    };
}
pub(crate) use job_columns;

/// The statuses a job can still leave, as SQL (a macro, for `concat!`).
/// Condition `$c` in a form no index can serve (`(…) IS TRUE`, the same truth for a
/// non-null condition), for the batch statements that find their rows by primary key. Why:
/// the planner estimates `status IN ('queued', …)` from statistics that mostly see ended
/// jobs, and then prefers walking the partial index of live statuses and matching the ids
/// against it, which is cheap while few jobs are live but visits every live job when a
/// backlog forms: measured at 45 ms for a batch of 10 with 20,000 jobs queued, against
/// 0.6 ms through the primary key.
macro_rules! by_key_only {
    ($c:expr) => {
        concat!("(", $c, ") IS TRUE")
    };
}

macro_rules! live {
    () => {
        "('queued', 'throttled', 'running')"
    };
}

/// One job's insert on SQLite, up to its `RETURNING` list (PostgreSQL inserts
/// a whole batch in one statement, in [`JobRepo::insert_many`]).
macro_rules! insert_job_sql {
    () => {
        "INSERT INTO generation_jobs \
           (id, project_id, user_id, provider, model, status, attempts, request, metadata, \
            created_by_token, idempotency_key, request_sha256, created_at, updated_at, \
            enqueued_at, batch_id, video_seconds, resolution, estimated_cost_micros) \
         VALUES ($1, $11, $2, $3, $4, 'queued', 0, $5, $6, $7, $8, $9, $10, $10, $10, $12, \
                 $13, $14, $15) \
         ON CONFLICT (created_by_token, idempotency_key) WHERE idempotency_key IS NOT NULL \
         DO NOTHING RETURNING "
    };
}

/// Appends a history entry for job `$id` inside transaction `$tx`. A macro
/// rather than a function so that it compiles inside each arm of
/// `with_pool!`, for each database's own transaction type.
macro_rules! record_event {
    ($tx:expr, $id:expr, $status:expr, $message:expr, $detail:expr) => {
        sqlx::query(
            "INSERT INTO generation_job_events (job_id, at, status, message, detail) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(DbUuid($id))
        .bind(crate::now())
        .bind($status)
        .bind($message)
        .bind($detail.map(Json))
        .execute(&mut *$tx)
        .await?
    };
}

/// Runs one compare-and-set `UPDATE` (`$sql`, without `RETURNING`; binds
/// applied by `$bind`), and when it applied records `$message` in the job's
/// history, atomically. Evaluates to whether the update applied.
///
/// On PostgreSQL this is one statement, one round trip: the update in a
/// data-modifying `WITH` and the history entry inserted from its returned
/// row (at the row's new `updated_at`), `$msg_param` being the placeholder
/// after the update's own. On SQLite, where `WITH` cannot hold an `UPDATE`
/// and a statement costs no network trip, it is the update and the insert
/// in one transaction.
macro_rules! transition {
    ($store:expr, $id:expr, $sql:expr, $msg_param:literal, $message:expr, |$q:ident| $bind:expr) => {{
        let id: Uuid = $id;
        let message: &str = $message;
        match &$store.db {
            $crate::db::Db::Postgres(pool) => {
                let $q = sqlx::query_scalar::<_, String>(concat!(
                    "WITH changed AS (",
                    $sql,
                    " RETURNING id, status, updated_at) \
                     INSERT INTO generation_job_events (job_id, at, status, message) \
                     SELECT id, updated_at, status, ",
                    $msg_param,
                    " FROM changed RETURNING status"
                ));
                let status: Option<String> = $bind.bind(message).fetch_optional(pool).await?;
                status.is_some()
            }
            $crate::db::Db::Sqlite(pool) => {
                let _write = $store.write_guard().await;
                let mut tx = pool.begin().await?;
                let $q = sqlx::query_scalar::<_, String>(concat!($sql, " RETURNING status"));
                let status: Option<String> = $bind.fetch_optional(&mut *tx).await?;
                if let Some(status) = &status {
                    record_event!(tx, id, status.as_str(), message, None::<Value>);
                }
                tx.commit().await?;
                status.is_some()
            }
        }
    }};
}

/// [`transition!`] for a change that causes webhook event `$event` (a literal such as
/// `"job.running"`): with the row change and its history entry, the event and its
/// deliveries are written atomically (docs/webhooks.md) when anyone receives them and the
/// new row satisfies `$pg_when` (SQL on the changed row `c`) / `$sqlite_when` (SQL on the
/// updated row). `final` after the event: the job ended, so it is counted off its batch.
/// Evaluates to whether the update applied; the new deliveries go to the store's feed.
macro_rules! event_transition {
    ($store:expr, $id:expr, $sql:expr, $msg_param:literal, $message:expr,
     history = $history:tt, event = $event:literal, pg_when = $pg_when:literal,
     sqlite_when = $sqlite_when:literal, final = $final:tt, |$q:ident| $bind:expr) => {{
        let id: Uuid = $id;
        let message: &str = $message;
        let (applied, deliveries) = match &$store.db {
            $crate::db::Db::Postgres(pool) => {
                let $q = sqlx::query_as::<_, (String, Vec<Uuid>)>(concat!(
                    "WITH changed AS (",
                    $sql,
                    " RETURNING *)",
                    event_transition!(@pg_history $history, $msg_param),
                    $crate::outbox::pg_job_event_ctes!($event, $pg_when),
                    event_transition!(@pg_batch $final),
                    " SELECT status, ",
                    event_transition!(@pg_deliveries $final),
                    " FROM changed"
                ));
                let row: Option<(String, Vec<Uuid>)> = event_transition!(@pg_bind_message
                    $history, $bind, message).fetch_optional(pool).await?;
                match row {
                    Some((_, deliveries)) => (true, deliveries),
                    None => (false, Vec::new()),
                }
            }
            $crate::db::Db::Sqlite(pool) => {
                let _write = $store.write_guard().await;
                let mut tx = pool.begin().await?;
                let $q = sqlx::query_as::<_, (String, bool)>(concat!(
                    $sql,
                    " RETURNING status, ",
                    $sqlite_when
                ));
                let row: Option<(String, bool)> = $bind.fetch_optional(&mut *tx).await?;
                let mut deliveries = Vec::new();
                if let Some((status, emit)) = &row {
                    if $history {
                        record_event!(tx, id, status.as_str(), message, None::<Value>);
                    }
                    if *emit || $final {
                        let event = emit.then_some($event);
                        deliveries = $crate::outbox::sqlite_job_event!(tx, id, event, $final);
                    }
                }
                tx.commit().await?;
                (row.is_some(), deliveries)
            }
        };
        $store.outbox().record(deliveries);
        applied
    }};
    (@pg_history true, $msg_param:literal) => {
        concat!(
            ", hist AS (INSERT INTO generation_job_events (job_id, at, status, message) \
               SELECT id, updated_at, status, ",
            $msg_param,
            " FROM changed)"
        )
    };
    (@pg_history false, $msg_param:literal) => { "" };
    (@pg_bind_message true, $query:expr, $message:expr) => { $query.bind($message) };
    (@pg_bind_message false, $query:expr, $message:expr) => {{ let _ = $message; $query }};
    (@pg_batch true) => {
        concat!($crate::outbox::pg_batch_completion_ctes!(), $crate::outbox::pg_usage_cte!())
    };
    (@pg_batch false) => { "" };
    (@pg_deliveries true) => { "ARRAY(SELECT id FROM dl UNION ALL SELECT id FROM bdl)" };
    (@pg_deliveries false) => { "ARRAY(SELECT id FROM dl)" };
}

/// A step's read: the job's columns and the user's key for its provider, of the jobs where
/// `$condition` holds. The key's columns come from a subquery whose every column is
/// renamed, so the job's unqualified column names stay unambiguous on both databases
/// (SQLite has no LATERAL); PostgreSQL plans it as a join on the credential table's unique
/// index.
macro_rules! step_read {
    ($condition:literal) => {
        concat!(
            "SELECT ",
            job_columns!(),
            ", k.key_sealed, k.key_is_valid, k.key_last_error \
             FROM generation_jobs LEFT JOIN (\
               SELECT project_id AS key_project, user_id AS key_user, \
                      provider_name AS key_provider, encrypted_credentials AS key_sealed, \
                      is_valid AS key_is_valid, last_error AS key_last_error \
               FROM user_provider_configs) k \
             ON k.key_project = generation_jobs.project_id \
               AND k.key_user = generation_jobs.user_id \
               AND k.key_provider = generation_jobs.provider \
             WHERE ",
            $condition
        )
    };
}

from_row! {
    pub(crate) struct JobRow {
        id: DbUuid,
        project_id: DbUuid,
        user_id: DbUuid,
        provider: String,
        model: String,
        status: String,
        progress: Option<f64>,
        attempts: i32,
        provider_job_id: Option<String>,
        request: Json<Value>,
        result: Option<Json<Value>>,
        error_code: Option<String>,
        error_message: Option<String>,
        error_retryable: Option<bool>,
        metadata: Json<Value>,
        created_by_token: Option<DbUuid>,
        idempotency_key: Option<String>,
        request_sha256: Option<Vec<u8>>,
        created_at: DateTime<Utc>,
        updated_at: DateTime<Utc>,
        started_at: Option<DateTime<Utc>>,
        finished_at: Option<DateTime<Utc>>,
        enqueued_at: Option<DateTime<Utc>>,
        submit_started_at: Option<DateTime<Utc>>,
        cancel_sent_at: Option<DateTime<Utc>>,
        batch_id: Option<DbUuid>,
        estimated_cost_micros: Option<i64>,
        route: Option<Json<Value>>,
    }
}

impl TryFrom<JobRow> for Job {
    type Error = StoreError;

    fn try_from(row: JobRow) -> Result<Job, StoreError> {
        // The CHECK constraint keeps unknown statuses out; a row that has one
        // anyway is refused rather than guessed at.
        let status = row
            .status
            .parse::<JobStatus>()
            .map_err(|_| StoreError::Malformed("generation_jobs.status"))?;
        // The JSON columns were written from these types; one that does not
        // read back is refused like an unknown status.
        let request: GenerationRequest = serde_json::from_value(row.request.0)
            .map_err(|_| StoreError::Malformed("generation_jobs.request"))?;
        let result: Option<JobResult> = row
            .result
            .map(|r| serde_json::from_value(r.0))
            .transpose()
            .map_err(|_| StoreError::Malformed("generation_jobs.result"))?;
        let error = row.error_code.map(|code| ErrorRecord {
            code: serde_json::from_value(Value::String(code)).unwrap_or(ErrorCode::Internal),
            message: row.error_message.unwrap_or_default(),
            retryable: row.error_retryable.unwrap_or(false),
        });
        let route = read_route(row.route.map(|r| r.0))
            .map_err(|()| StoreError::Malformed("generation_jobs.route"))?;
        Ok(Job {
            id: row.id.0,
            project_id: row.project_id.0,
            user_id: row.user_id.0,
            provider_name: row.provider,
            model: row.model,
            status,
            progress: row
                .progress
                .filter(|p| p.is_finite())
                .map(|p| p.clamp(0.0, 1.0)),
            attempts: u32::try_from(row.attempts.max(0)).unwrap_or(u32::MAX),
            provider_job_id: row.provider_job_id,
            request,
            result,
            error,
            metadata: row.metadata.0,
            created_by_token: row.created_by_token.map(|t| t.0),
            idempotency_key: row.idempotency_key,
            request_sha256: row.request_sha256,
            created_at: row.created_at,
            updated_at: row.updated_at,
            started_at: row.started_at,
            finished_at: row.finished_at,
            enqueued_at: row.enqueued_at,
            submit_started_at: row.submit_started_at,
            cancel_sent_at: row.cancel_sent_at,
            batch_id: row.batch_id.map(Uuid::from),
            estimated_cost: row.estimated_cost_micros.map(byok_core::Usd::from_micros),
            route,
        })
    }
}

/// A submit the provider accepted, for [`JobRepo::submitted_many`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The job.
    pub id: Uuid,
    /// The provider's id for it.
    pub provider_job_id: String,
    /// The delivery attempt that sent it.
    pub attempt: u32,
}

/// One generation job as stored. Serialises with every column (the
/// operator's view; the API shows producers a subset).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Job {
    /// UUIDv7: ids sort by creation time.
    pub id: Uuid,
    /// The project it was enqueued in.
    pub project_id: Uuid,
    /// Whose key pays (a user of the project).
    pub user_id: Uuid,
    /// The stored provider name (see [`Job::provider`]).
    #[serde(rename = "provider")]
    pub provider_name: String,
    /// The model id.
    pub model: String,
    /// Where it stands.
    pub status: JobStatus,
    /// 0–1 while running, when the provider says; 1 once succeeded.
    pub progress: Option<f64>,
    /// The number of the latest attempt (0 before the first submit).
    /// Waiting for a rate-limit window or between polls is not an attempt.
    pub attempts: u32,
    /// The provider's id of the remote job, recorded the moment the
    /// provider accepted the submit.
    pub provider_job_id: Option<String>,
    /// The neutral request as accepted.
    pub request: GenerationRequest,
    /// What it produced, once succeeded.
    pub result: Option<JobResult>,
    /// Why it failed (or `cancelled`).
    pub error: Option<ErrorRecord>,
    /// The producer's own data, untouched.
    pub metadata: Value,
    /// The producer token that enqueued it.
    pub created_by_token: Option<Uuid>,
    /// The producer's `Idempotency-Key`.
    pub idempotency_key: Option<String>,
    /// SHA-256 of the canonical request, to tell a replay from a conflict.
    #[serde(serialize_with = "hex_opt")]
    pub request_sha256: Option<Vec<u8>>,
    /// Accepted.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
    /// First accepted by the provider.
    pub started_at: Option<DateTime<Utc>>,
    /// Reached a final status.
    pub finished_at: Option<DateTime<Utc>>,
    /// When it was accepted for the queue: its creation time for jobs stored since
    /// `unpushed_jobs` (whether the push itself is confirmed is
    /// [`JobRepo::awaiting_push`]); for jobs of earlier builds, when their push was
    /// confirmed (`None`: not yet, the sweeper will push it).
    pub enqueued_at: Option<DateTime<Utc>>,
    /// A submit is out and its answer not recorded yet.
    pub submit_started_at: Option<DateTime<Utc>>,
    /// The provider was told to cancel.
    pub cancel_sent_at: Option<DateTime<Utc>>,
    /// The batch it was enqueued in (`POST /v1/batches`).
    pub batch_id: Option<Uuid>,
    /// Its list price, fixed when it was enqueued (or when it moved to a fallback);
    /// `None`: unknown.
    pub estimated_cost: Option<byok_core::Usd>,
    /// The providers it left for its next fallback, in order.
    pub route: Vec<RouteStep>,
}

/// What [`JobRepo::search`] matches; `None` fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobFilter {
    /// In this status.
    pub status: Option<JobStatus>,
    /// At this provider.
    pub provider: Option<String>,
    /// Of this project.
    pub project_id: Option<Uuid>,
    /// Of this user (in any project unless `project_id`).
    pub user_id: Option<Uuid>,
    /// Failed with this error code.
    pub error_code: Option<String>,
    /// Created at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Older than this job (the page cursor).
    pub before: Option<Uuid>,
}

/// A job moving to its next fallback ([`JobRepo::fall_back`]).
#[derive(Debug, Clone)]
pub struct FallbackMove {
    /// The provider it leaves (the compare-and-set: a job already moved is left alone).
    pub from: ProviderId,
    /// The request of the entry it moves to: that provider and model, with the entries
    /// after it as its fallbacks.
    pub request: GenerationRequest,
    /// That entry's length, resolution and list price.
    pub usage: UsagePlan,
    /// Its route so far with the provider it leaves appended.
    pub route: Vec<RouteStep>,
}

impl Job {
    /// The provider, when the stored name is one this build knows.
    pub fn provider(&self) -> Option<ProviderId> {
        self.provider_name.parse().ok()
    }

    /// The user whose key pays, in the job's project.
    pub fn owner(&self) -> ProjectUser {
        ProjectUser::new(self.project_id, self.user_id)
    }
}

/// A job row as a job event stores it (`to_jsonb` of the row on PostgreSQL, the same
/// names from `json_object` on SQLite): what the event's data is rendered from.
#[derive(serde::Deserialize)]
struct JobSnapshot {
    id: Uuid,
    project_id: Uuid,
    user_id: Uuid,
    provider: String,
    model: String,
    status: String,
    progress: Option<f64>,
    attempts: i64,
    provider_job_id: Option<String>,
    request: Value,
    result: Option<Value>,
    error_code: Option<String>,
    error_message: Option<String>,
    error_retryable: Option<bool>,
    metadata: Value,
    #[serde(deserialize_with = "snapshot_time")]
    created_at: DateTime<Utc>,
    #[serde(deserialize_with = "snapshot_time")]
    updated_at: DateTime<Utc>,
    #[serde(default, deserialize_with = "snapshot_time_opt")]
    started_at: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "snapshot_time_opt")]
    finished_at: Option<DateTime<Utc>>,
    #[serde(default)]
    batch_id: Option<Uuid>,
    #[serde(default)]
    route: Option<Value>,
}

/// A timestamp as either database writes it into JSON: RFC 3339, or SQLite's text form
/// with a space for the `T`.
fn parse_snapshot_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .or_else(|_| DateTime::parse_from_rfc3339(&text.replacen(' ', "T", 1)))
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn snapshot_time<'de, D: serde::Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
    let text = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
    parse_snapshot_time(&text).ok_or_else(|| serde::de::Error::custom("not a timestamp"))
}

fn snapshot_time_opt<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<DateTime<Utc>>, D::Error> {
    let text = <Option<std::borrow::Cow<'de, str>> as serde::Deserialize>::deserialize(d)?;
    text.map(|t| parse_snapshot_time(&t).ok_or_else(|| serde::de::Error::custom("not a timestamp")))
        .transpose()
}

impl Job {
    /// The job as a job event's stored data says it was (`webhook_events.data`), read as
    /// untrusted as any row: [`StoreError::Malformed`] when it does not fit.
    pub fn from_snapshot(data: Value) -> Result<Job, StoreError> {
        let malformed = || StoreError::Malformed("webhook_events.data");
        let s: JobSnapshot = serde_json::from_value(data).map_err(|_| malformed())?;
        let status = s.status.parse::<JobStatus>().map_err(|_| malformed())?;
        let request: GenerationRequest =
            serde_json::from_value(s.request).map_err(|_| malformed())?;
        let result: Option<JobResult> = s
            .result
            .filter(|r| !r.is_null())
            .map(serde_json::from_value)
            .transpose()
            .map_err(|_| malformed())?;
        let error = s.error_code.map(|code| ErrorRecord {
            code: serde_json::from_value(Value::String(code)).unwrap_or(ErrorCode::Internal),
            message: s.error_message.unwrap_or_default(),
            retryable: s.error_retryable.unwrap_or(false),
        });
        Ok(Job {
            id: s.id,
            project_id: s.project_id,
            user_id: s.user_id,
            provider_name: s.provider,
            model: s.model,
            status,
            progress: s
                .progress
                .filter(|p| p.is_finite())
                .map(|p| p.clamp(0.0, 1.0)),
            attempts: u32::try_from(s.attempts.max(0)).unwrap_or(u32::MAX),
            provider_job_id: s.provider_job_id,
            request,
            result,
            error,
            metadata: s.metadata,
            created_by_token: None,
            idempotency_key: None,
            request_sha256: None,
            created_at: s.created_at,
            updated_at: s.updated_at,
            started_at: s.started_at,
            finished_at: s.finished_at,
            enqueued_at: None,
            submit_started_at: None,
            cancel_sent_at: None,
            batch_id: s.batch_id,
            // Not part of what an event renders.
            estimated_cost: None,
            route: read_route(s.route).map_err(|()| malformed())?,
        })
    }
}

impl From<Job> for JobView {
    fn from(job: Job) -> Self {
        JobView {
            id: job.id,
            user_id: job.user_id,
            provider: job.provider_name,
            model: job.model,
            status: job.status,
            progress: job.progress,
            attempts: job.attempts,
            provider_job_id: job.provider_job_id,
            request: job.request,
            result: job.result.map(|stored| JobResultView {
                video_url: JobResultView::video_route(job.id),
                stored,
            }),
            error: job.error,
            metadata: job.metadata,
            created_at: job.created_at,
            updated_at: job.updated_at,
            started_at: job.started_at,
            finished_at: job.finished_at,
            route: job.route,
        }
    }
}

/// A stored `route` (NULL: the job never moved).
pub(crate) fn read_route(value: Option<Value>) -> Result<Vec<RouteStep>, ()> {
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(value) => serde_json::from_value(value).map_err(|_| ()),
    }
}

/// A job to create.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// The project it is enqueued in (the token's).
    pub project_id: Uuid,
    /// Whose key pays.
    pub user_id: Uuid,
    /// Which provider.
    pub provider: ProviderId,
    /// The model id.
    pub model: String,
    /// The neutral request (stored as its JSON).
    pub request: GenerationRequest,
    /// The producer's own data.
    pub metadata: Value,
    /// The producer token that enqueues it.
    pub created_by_token: Option<Uuid>,
    /// Replays of the same key by the same token return the same job.
    pub idempotency: Option<Idempotency>,
    /// The batch it belongs to (set by `BatchRepo::create`, which stores the batch with it).
    pub batch_id: Option<Uuid>,
    /// Its length, resolution and list price, as the API found them at enqueue.
    pub usage: UsagePlan,
}

/// What a job will make and cost, fixed at enqueue from the model's catalogue entry; its
/// usage row when it ends is written from these (docs/usage.md).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsagePlan {
    /// Seconds of video asked for (the model's default when the request names none);
    /// `None` when the model's length is not selectable.
    pub video_seconds: Option<u32>,
    /// The resolution asked for, when the model has one.
    pub resolution: Option<String>,
    /// The list price; `None`: the model has no known prices.
    pub estimated_cost: Option<byok_core::Usd>,
}

impl UsagePlan {
    /// The plan of a request `validated` against `model`, its catalogue entry: the request's
    /// length (or the model's default), its resolution and its list price.
    pub fn of(
        model: Option<&byok_core::ModelSpec>,
        validated: &byok_core::ValidatedRequest,
    ) -> Self {
        UsagePlan {
            video_seconds: validated
                .duration_seconds
                .or(model.and_then(|m| m.default_duration)),
            resolution: validated.format.as_ref().and_then(|f| f.resolution.clone()),
            estimated_cost: model.and_then(|m| m.estimate(validated)),
        }
    }
}

/// An `Idempotency-Key` and the fingerprint of the request it came with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idempotency {
    /// The producer's key (scoped to its token).
    pub key: String,
    /// SHA-256 of the canonical request.
    pub request_sha256: [u8; 32],
}

/// What [`JobRepo::insert`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Inserted {
    /// A new job.
    Created(Job),
    /// The token already used this idempotency key for the same request:
    /// that job, unchanged.
    Replayed(Job),
    /// The token already used this idempotency key for another request.
    Conflict(Job),
}

/// What [`JobRepo::cancel`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Cancelled {
    /// The job is now cancelled.
    Now(Job),
    /// It had already reached a final status.
    AlreadyFinal(Job),
    /// No such job.
    NotFound,
}

fn hex_opt<S: serde::Serializer>(bytes: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
    match bytes {
        Some(b) => s.serialize_str(&hex::encode(b)),
        None => s.serialize_none(),
    }
}

from_row! {
    /// One entry of a job's history.
    #[derive(Debug, Clone, PartialEq, serde::Serialize)]
    pub struct JobEvent {
        /// When.
        pub at: DateTime<Utc>,
        /// The status the job had after it.
        pub status: String,
        /// What happened.
        pub message: String,
    }
}

/// Queries on `generation_jobs`.
#[derive(Debug, Clone, Copy)]
pub struct JobRepo<'a> {
    store: &'a Store,
}

impl<'a> JobRepo<'a> {
    pub(crate) fn new(store: &'a Store) -> Self {
        Self { store }
    }

    /// Creates a `queued` job awaiting its push ([`awaiting_push`](Self::awaiting_push)
    /// until [`mark_enqueued`](Self::mark_enqueued)). With an idempotency
    /// key already used by the same token, nothing is written and the
    /// earlier job comes back as a replay (same request) or a conflict.
    pub async fn insert(&self, new: &NewJob) -> Result<Inserted, StoreError> {
        self.insert_many(std::slice::from_ref(new))
            .await?
            .pop()
            .unwrap_or(Err(StoreError::Invalid("no answer for the job")))
    }

    /// [`insert`](Self::insert) for many jobs in one write: one statement on
    /// PostgreSQL, one transaction on SQLite. The answers come in the order
    /// of `news`; two jobs of the batch with the same token and key behave
    /// as if sent one after the other (the first is created, the second
    /// replays or conflicts with it).
    ///
    /// The outer error is the write's: with it, none of the batch was
    /// stored, unless the database became unreachable while committing
    /// ([`StoreError::is_unavailable`]), when the outcome is unknown. The
    /// inner ones are reading back the job that holds a reused key, after
    /// the write.
    pub async fn insert_many(
        &self,
        news: &[NewJob],
    ) -> Result<Vec<Result<Inserted, StoreError>>, StoreError> {
        if news.iter().any(|new| {
            new.idempotency
                .as_ref()
                .is_some_and(|i| i.key.is_empty() || i.key.len() > 255)
        }) {
            return Err(StoreError::Invalid("an idempotency key is 1-255 bytes"));
        }
        let now = crate::now();
        let ids: Vec<Uuid> = news.iter().map(|_| Uuid::now_v7()).collect();
        let created: Vec<JobRow> = match &self.store.db {
            crate::db::Db::Postgres(pool) => pg_insert_rows(pool, news, &ids, now).await?,
            crate::db::Db::Sqlite(pool) => {
                let _write = self.store.write_guard().await;
                let mut tx = pool.begin().await?;
                let created = sqlite_insert_rows(&mut tx, news, &ids, now).await?;
                tx.commit().await?;
                created
            }
        };
        // A stored row this build cannot read back fails the batch although
        // it was written: impossible for rows just written by this build.
        let mut created: HashMap<Uuid, Job> = created
            .into_iter()
            .map(|row| Job::try_from(row).map(|job| (job.id, job)))
            .collect::<Result<_, _>>()?;
        let mut answers = Vec::with_capacity(news.len());
        for (new, id) in news.iter().zip(&ids) {
            answers.push(match created.remove(id) {
                Some(job) => Ok(Inserted::Created(job)),
                None => self.earlier_use_of_key(new).await,
            });
        }
        Ok(answers)
    }

    /// After an insert skipped `new` for its idempotency key: the job that
    /// holds the key, as a replay (same request) or a conflict.
    async fn earlier_use_of_key(&self, new: &NewJob) -> Result<Inserted, StoreError> {
        let (key, sha) = match &new.idempotency {
            Some(i) => (Some(i.key.as_str()), Some(&i.request_sha256[..])),
            None => (None, None),
        };
        let existing: JobRow = with_pool!(self.store, |pool| sqlx::query_as(concat!(
            "SELECT ",
            job_columns!(),
            " FROM generation_jobs WHERE created_by_token = $1 AND idempotency_key = $2"
        ))
        .bind(new.created_by_token.map(DbUuid))
        .bind(key)
        .fetch_one(pool)
        .await?);
        let existing: Job = existing.try_into()?;
        if existing.request_sha256.as_deref() == sha {
            Ok(Inserted::Replayed(existing))
        } else {
            Ok(Inserted::Conflict(existing))
        }
    }

    /// The job, if it exists.
    pub async fn get(&self, id: Uuid) -> Result<Option<Job>, StoreError> {
        let row: Option<JobRow> = with_pool!(self.store, |pool| sqlx::query_as(concat!(
            "SELECT ",
            job_columns!(),
            " FROM generation_jobs WHERE id = $1"
        ))
        .bind(DbUuid(id))
        .fetch_optional(pool)
        .await?);
        row.map(Job::try_from).transpose()
    }

    /// The job and the user's key for its (current) provider, in one read: what a worker
    /// step needs, so a step costs one query before its work, not two.
    pub async fn get_for_step(
        &self,
        id: Uuid,
    ) -> Result<Option<(Job, Option<crate::StepKey>)>, StoreError> {
        let row: Option<(JobRow, crate::credentials::StepKeyColumns)> =
            with_pool!(self.store, |pool| {
                match sqlx::query(step_read!("generation_jobs.id = $1"))
                    .bind(DbUuid(id))
                    .fetch_optional(pool)
                    .await?
                {
                    Some(row) => Some((
                        sqlx::FromRow::from_row(&row)?,
                        sqlx::FromRow::from_row(&row)?,
                    )),
                    None => None,
                }
            });
        match row {
            Some((job, key)) => Ok(Some((Job::try_from(job)?, key.into_key()))),
            None => Ok(None),
        }
    }

    /// [`Self::get_for_step`] for many jobs in one read: an answer per id, in order (`None`
    /// for a job that does not exist; a row that does not read is that id's error, not the
    /// batch's).
    pub async fn get_many_for_step(
        &self,
        ids: &[Uuid],
    ) -> Result<Vec<Result<Option<(Job, Option<crate::StepKey>)>, StoreError>>, StoreError> {
        let crate::db::Db::Postgres(pool) = &self.store.db else {
            let mut answers = Vec::with_capacity(ids.len());
            for id in ids {
                answers.push(self.get_for_step(*id).await);
            }
            return Ok(answers);
        };
        let rows = sqlx::query(step_read!("generation_jobs.id = ANY($1)"))
            .bind(ids)
            .fetch_all(pool)
            .await?;
        // A row that does not decode fails the read (as it does for one job); one whose
        // values this build cannot read is that job's answer only.
        let mut found: HashMap<Uuid, Result<(Job, Option<crate::StepKey>), &'static str>> =
            HashMap::with_capacity(rows.len());
        for row in &rows {
            let job: JobRow = sqlx::FromRow::from_row(row)?;
            let key: crate::credentials::StepKeyColumns = sqlx::FromRow::from_row(row)?;
            let id = job.id.0;
            let read = match Job::try_from(job) {
                Ok(job) => Ok((job, key.into_key())),
                Err(StoreError::Malformed(column)) => Err(column),
                Err(other) => return Err(other),
            };
            found.insert(id, read);
        }
        let answers = ids
            .iter()
            .map(|id| match found.get(id) {
                None => Ok(None),
                Some(Ok(read)) => Ok(Some(read.clone())),
                Some(Err(column)) => Err(StoreError::Malformed(column)),
            })
            .collect();
        Ok(answers)
    }

    /// Up to `limit` of the user's jobs, newest first, older than `before`
    /// (the last id of the previous page) and with `status` when given.
    pub async fn list_for_user(
        &self,
        owner: ProjectUser,
        status: Option<JobStatus>,
        before: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<Job>, StoreError> {
        // Ids are UUIDv7, so id order is creation order; the max UUID as the
        // default bound keeps one query shape (and one index walk).
        let before = DbUuid(before.unwrap_or(Uuid::max()));
        let limit = i64::from(limit);
        let rows: Vec<JobRow> = match status {
            Some(status) => with_pool!(self.store, |pool| sqlx::query_as(concat!(
                "SELECT ",
                job_columns!(),
                " FROM generation_jobs WHERE project_id = $5 AND user_id = $1 AND status = $2 \
                 AND id < $3 ORDER BY id DESC LIMIT $4"
            ))
            .bind(DbUuid(owner.user_id))
            .bind(status.as_str())
            .bind(before)
            .bind(limit)
            .bind(DbUuid(owner.project_id))
            .fetch_all(pool)
            .await?),
            None => with_pool!(self.store, |pool| sqlx::query_as(concat!(
                "SELECT ",
                job_columns!(),
                " FROM generation_jobs WHERE project_id = $4 AND user_id = $1 AND id < $2 \
                 ORDER BY id DESC LIMIT $3"
            ))
            .bind(DbUuid(owner.user_id))
            .bind(before)
            .bind(limit)
            .bind(DbUuid(owner.project_id))
            .fetch_all(pool)
            .await?),
        };
        rows.into_iter().map(Job::try_from).collect()
    }

    /// The job's history, oldest first.
    pub async fn events(&self, id: Uuid) -> Result<Vec<JobEvent>, StoreError> {
        let events: Vec<JobEvent> = with_pool!(self.store, |pool| {
            sqlx::query_as(
            "SELECT at, status, message FROM generation_job_events WHERE job_id = $1 ORDER BY id"
        )
        .bind(DbUuid(id))
        .fetch_all(pool)
        .await?
        });
        Ok(events)
    }

    /// Up to `limit` entries of the job's history after the entry with row id `after` (0:
    /// from the start), oldest first, each with its row id: where a reader of the history
    /// stands (`GET /v1/jobs/{id}/events`).
    ///
    /// Reading on after the last id seen misses nothing: a job's entries are written only by
    /// the change they record, in the same statement or transaction, which holds the job's row
    /// (PostgreSQL's row lock of the `UPDATE`; SQLite's one writer) until it commits, so a
    /// job's entries take their ids in the order they become visible.
    pub async fn events_after(
        &self,
        id: Uuid,
        after: i64,
        limit: u32,
    ) -> Result<Vec<(i64, JobEvent)>, StoreError> {
        let rows: Vec<(i64, DateTime<Utc>, String, String)> =
            with_pool!(self.store, |pool| sqlx::query_as(
                "SELECT id, at, status, message FROM generation_job_events \
                 WHERE job_id = $1 AND id > $2 ORDER BY id LIMIT $3"
            )
            .bind(DbUuid(id))
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?);
        Ok(rows
            .into_iter()
            .map(|(row, at, status, message)| {
                (
                    row,
                    JobEvent {
                        at,
                        status,
                        message,
                    },
                )
            })
            .collect())
    }

    /// Appends `message` to a job's history under its current status, changing nothing
    /// else: an operator's note (a retry names the job it made). `false`: no such job.
    pub async fn note(&self, id: Uuid, message: &str) -> Result<bool, StoreError> {
        let _write = self.store.write_guard().await;
        let affected = with_pool!(self.store, |pool| sqlx::query(
            "INSERT INTO generation_job_events (job_id, at, status, message) \
             SELECT id, $1, status, $2 FROM generation_jobs WHERE id = $3"
        )
        .bind(crate::now())
        .bind(clip(message, 500))
        .bind(DbUuid(id))
        .execute(pool)
        .await?
        .rows_affected());
        Ok(affected == 1)
    }

    /// The job's status, progress and `updated_at`, without the rest of the row: every
    /// change of the job moves `updated_at`, so a watcher compares these to learn cheaply
    /// whether to read more. `None` when there is no such job.
    pub async fn change_stamp(
        &self,
        id: Uuid,
    ) -> Result<Option<(JobStatus, Option<f64>, DateTime<Utc>)>, StoreError> {
        let row: Option<(String, Option<f64>, DateTime<Utc>)> =
            with_pool!(self.store, |pool| sqlx::query_as(
                "SELECT status, progress, updated_at FROM generation_jobs WHERE id = $1"
            )
            .bind(DbUuid(id))
            .fetch_optional(pool)
            .await?);
        row.map(|(status, progress, updated_at)| {
            let status = status
                .parse::<JobStatus>()
                .map_err(|_| StoreError::Malformed("generation_jobs.status"))?;
            Ok((status, progress, updated_at))
        })
        .transpose()
    }

    /// Notes that the queue holds the job's work item: the job leaves `unpushed_jobs`, and a
    /// job stored by an earlier build (no entry there, `enqueued_at` unset) gets its
    /// `enqueued_at`. Returns whether the job was waiting for its push. The sweeper's path,
    /// and a request's when no batching task runs; requests mark through
    /// [`mark_enqueued_many`](Self::mark_enqueued_many).
    pub async fn mark_enqueued(&self, id: Uuid) -> Result<bool, StoreError> {
        let _write = self.store.write_guard().await;
        let waited = with_pool!(self.store, |pool| sqlx::query(
            "DELETE FROM unpushed_jobs WHERE job_id = $1"
        )
        .bind(DbUuid(id))
        .execute(pool)
        .await?
        .rows_affected());
        let legacy = with_pool!(self.store, |pool| sqlx::query(
            "UPDATE generation_jobs SET enqueued_at = $1 WHERE id = $2 AND enqueued_at IS NULL"
        )
        .bind(crate::now())
        .bind(DbUuid(id))
        .execute(pool)
        .await?
        .rows_affected());
        Ok(waited + legacy > 0)
    }

    /// Notes that the queue holds the work items of jobs this build stored (their entries
    /// leave `unpushed_jobs`; the job rows are not written), many in one write: one
    /// statement on PostgreSQL, one transaction on SQLite. Returns how many were waiting.
    pub async fn mark_enqueued_many(&self, ids: &[Uuid]) -> Result<u64, StoreError> {
        if ids.is_empty() {
            return Ok(0);
        }
        match &self.store.db {
            crate::db::Db::Postgres(pool) => Ok(sqlx::query(
                "DELETE FROM unpushed_jobs WHERE job_id = ANY($1)",
            )
            .bind(ids)
            .execute(pool)
            .await?
            .rows_affected()),
            crate::db::Db::Sqlite(pool) => {
                let _write = self.store.write_guard().await;
                let mut tx = pool.begin().await?;
                let mut affected = 0;
                for id in ids {
                    affected += sqlx::query("DELETE FROM unpushed_jobs WHERE job_id = $1")
                        .bind(DbUuid(*id))
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                }
                tx.commit().await?;
                Ok(affected)
            }
        }
    }

    /// Whether the job is `queued` and its push to the queue not confirmed yet: the
    /// sweeper pushes it once it is older than its grace period. (A job that moved on
    /// needs no push, whatever its mark says.)
    pub async fn awaiting_push(&self, id: Uuid) -> Result<bool, StoreError> {
        Ok(with_pool!(self.store, |pool| sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM generation_jobs j \
                            WHERE j.id = $1 AND j.status = 'queued' \
                              AND (j.enqueued_at IS NULL \
                                   OR EXISTS (SELECT 1 FROM unpushed_jobs u \
                                              WHERE u.job_id = $1)))"
        )
        .bind(DbUuid(id))
        .fetch_one(pool)
        .await?))
    }

    /// Up to `limit` queued jobs created before `cutoff` whose push was never confirmed,
    /// oldest first: the sweeper's work. Both kinds: entries of `unpushed_jobs`, and jobs an
    /// earlier build stored and never marked (`enqueued_at` unset).
    pub async fn unenqueued(
        &self,
        cutoff: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Uuid>, StoreError> {
        let waiting: Vec<DbUuid> = with_pool!(self.store, |pool| sqlx::query_scalar(
            "SELECT u.job_id FROM unpushed_jobs u \
               JOIN generation_jobs j ON j.id = u.job_id AND j.status = 'queued' \
             WHERE u.created_at < $1 ORDER BY u.created_at LIMIT $2"
        )
        .bind(cutoff)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await?);
        let left = limit.saturating_sub(u32::try_from(waiting.len()).unwrap_or(u32::MAX));
        let legacy: Vec<DbUuid> = if left == 0 {
            Vec::new()
        } else {
            with_pool!(self.store, |pool| sqlx::query_scalar(
                "SELECT id FROM generation_jobs \
                 WHERE enqueued_at IS NULL AND status = 'queued' AND created_at < $1 \
                 ORDER BY created_at LIMIT $2"
            )
            .bind(cutoff)
            .bind(i64::from(left))
            .fetch_all(pool)
            .await?)
        };
        Ok(waiting.into_iter().chain(legacy).map(Uuid::from).collect())
    }

    /// Drops the `unpushed_jobs` entries older than `cutoff` of jobs that no longer need a
    /// push: no longer `queued` (cancelled before their push, or pushed and moved on while
    /// their mark was lost), or gone. Returns how many were dropped.
    pub async fn forget_unpushed_not_queued(
        &self,
        cutoff: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let _write = self.store.write_guard().await;
        Ok(with_pool!(self.store, |pool| sqlx::query(
            "DELETE FROM unpushed_jobs WHERE created_at < $1 AND NOT EXISTS \
               (SELECT 1 FROM generation_jobs j \
                WHERE j.id = unpushed_jobs.job_id AND j.status = 'queued')"
        )
        .bind(cutoff)
        .execute(pool)
        .await?
        .rows_affected()))
    }

    /// `queued` → `throttled`: waiting for the key's rate-limit window.
    pub async fn set_throttled(&self, id: Uuid) -> Result<bool, StoreError> {
        Ok(transition!(
            self.store,
            id,
            "UPDATE generation_jobs SET status = 'throttled', updated_at = $1 \
             WHERE id = $2 AND status = 'queued'",
            "$3",
            "waiting for the key's rate-limit window",
            |q| q.bind(crate::now()).bind(DbUuid(id))
        ))
    }

    /// Marks a submit as leaving for the provider. Applies only to a live
    /// job with no provider job and no other submit out: the one guard that
    /// keeps two workers from both submitting.
    pub async fn begin_submit(&self, id: Uuid) -> Result<bool, StoreError> {
        let _write = self.store.write_guard().await;
        let affected = with_pool!(self.store, |pool| sqlx::query(
            "UPDATE generation_jobs SET submit_started_at = $1, updated_at = $1 \
             WHERE id = $2 AND status IN ('queued', 'throttled') \
               AND provider_job_id IS NULL AND submit_started_at IS NULL"
        )
        .bind(crate::now())
        .bind(DbUuid(id))
        .execute(pool)
        .await?
        .rows_affected());
        Ok(affected == 1)
    }

    /// The provider accepted the submit of attempt `attempt`: records its job
    /// id and moves the job to `running`. The id is recorded even when the
    /// job was cancelled meanwhile, so that the cancel can reach the provider.
    pub async fn submitted(
        &self,
        id: Uuid,
        provider_job_id: &str,
        attempt: u32,
    ) -> Result<bool, StoreError> {
        let message = accepted_message(provider_job_id);
        Ok(event_transition!(
            self.store,
            id,
            "UPDATE generation_jobs SET provider_job_id = $1, submit_started_at = NULL, \
               status = CASE WHEN status IN ('queued', 'throttled') THEN 'running' ELSE status END, \
               attempts = $2, started_at = COALESCE(started_at, $3), updated_at = $3 \
             WHERE id = $4 AND provider_job_id IS NULL",
            "$5",
            &message,
            history = true,
            event = "job.running",
            pg_when = "c.status = 'running'",
            sqlite_when = "status = 'running'",
            final = false,
            |q| q
                .bind(provider_job_id)
                .bind(db_attempt(attempt))
                .bind(crate::now())
                .bind(DbUuid(id))
        ))
    }

    /// [`Self::begin_submit`] for many jobs in one statement: an answer per id, in order.
    /// An id given twice is claimed at most once (its first place).
    pub async fn begin_submit_many(&self, ids: &[Uuid]) -> Result<Vec<bool>, StoreError> {
        let crate::db::Db::Postgres(pool) = &self.store.db else {
            let mut answers = Vec::with_capacity(ids.len());
            for id in ids {
                answers.push(self.begin_submit(*id).await?);
            }
            return Ok(answers);
        };
        // `(…) IS TRUE`: the same condition, in a form no index serves (see
        // `by_key_only!`).
        let claimed: Vec<Uuid> = sqlx::query_scalar(concat!(
            "UPDATE generation_jobs SET submit_started_at = $1, updated_at = $1 \
             WHERE id = ANY($2) AND ",
            by_key_only!("status IN ('queued', 'throttled')"),
            " AND provider_job_id IS NULL AND submit_started_at IS NULL \
             RETURNING id"
        ))
        .bind(crate::now())
        .bind(ids)
        .fetch_all(pool)
        .await?;
        Ok(answers_in_order(ids, &first_places(ids), &claimed))
    }

    /// [`Self::submitted`] for many accepted submits in one statement (with their history
    /// entries and `job.running` events): an answer per submit, in order. A job given twice
    /// is recorded once, with its first submit.
    pub async fn submitted_many(&self, accepted: &[Accepted]) -> Result<Vec<bool>, StoreError> {
        let crate::db::Db::Postgres(pool) = &self.store.db else {
            let mut answers = Vec::with_capacity(accepted.len());
            for a in accepted {
                answers.push(self.submitted(a.id, &a.provider_job_id, a.attempt).await?);
            }
            return Ok(answers);
        };
        let ids: Vec<Uuid> = accepted.iter().map(|a| a.id).collect();
        let first = first_places(&ids);
        let unique = || accepted.iter().zip(&first).filter(|(_, first)| **first);
        let (changed, deliveries): (Vec<Uuid>, Vec<Uuid>) = sqlx::query_as(concat!(
            "WITH input AS (\
               SELECT * FROM unnest($1::uuid[], $2::text[], $3::int4[], $4::text[]) \
                 AS i(id, remote, attempts, message)), \
             changed AS (\
               UPDATE generation_jobs j SET provider_job_id = i.remote, submit_started_at = NULL, \
                 status = CASE WHEN j.status IN ('queued', 'throttled') THEN 'running' \
                               ELSE j.status END, \
                 attempts = i.attempts, started_at = COALESCE(j.started_at, $5), updated_at = $5 \
               FROM input i WHERE j.id = i.id AND j.provider_job_id IS NULL \
               RETURNING j.*), \
             hist AS (INSERT INTO generation_job_events (job_id, at, status, message) \
               SELECT c.id, c.updated_at, c.status, i.message \
                 FROM changed c JOIN input i ON i.id = c.id)",
            crate::outbox::pg_job_event_ctes!("job.running", "c.status = 'running'"),
            " SELECT ARRAY(SELECT id FROM changed), ARRAY(SELECT id FROM dl)"
        ))
        .bind(unique().map(|(a, _)| a.id).collect::<Vec<_>>())
        .bind(
            unique()
                .map(|(a, _)| a.provider_job_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            unique()
                .map(|(a, _)| db_attempt(a.attempt))
                .collect::<Vec<_>>(),
        )
        .bind(
            unique()
                .map(|(a, _)| accepted_message(&a.provider_job_id))
                .collect::<Vec<_>>(),
        )
        .bind(crate::now())
        .fetch_one(pool)
        .await?;
        self.store.outbox().record(deliveries);
        Ok(answers_in_order(&ids, &first, &changed))
    }

    /// The operator's search (the dashboard's jobs page): jobs matching every filter set,
    /// newest first, before the cursor `before` (an id), at most `limit`. A row that does
    /// not read is left out rather than failing the page.
    pub async fn search(&self, filter: &JobFilter, limit: u32) -> Result<Vec<Job>, StoreError> {
        // Only the filters that are set become conditions, each value bound, never written
        // into the SQL. With conditions such as `($1 IS NULL OR status = $1)`, one statement
        // served every combination of filters and its cached plan could use no index for the
        // ones set: it walked the primary key and filtered, the whole table for a rare value.
        // The statement is also planned for each call with its values (`persistent(false)`:
        // PostgreSQL plans its unnamed statement with the values bound) rather than cached,
        // since the right index depends on them: a rare error code, user or status is read
        // through its index newest first, a common one by walking the primary key backwards,
        // and the partial index of statuses (generation_jobs_status_newest) serves
        // `status = $1` only when the planner sees the value (docs/dashboard.md,
        // "Performance").
        let rows: Vec<JobRow> = with_pool!(self.store, |pool| {
            // `TRUE`, so that each filter set adds ` AND` and its condition.
            let mut query = crate::db::query_builder(
                pool,
                concat!(
                    "SELECT ",
                    job_columns!(),
                    " FROM generation_jobs WHERE TRUE"
                ),
            );
            if let Some(before) = filter.before {
                query.push(" AND id < ").push_bind(DbUuid(before));
            }
            if let Some(status) = filter.status {
                query.push(" AND status = ").push_bind(status.as_str());
            }
            if let Some(provider) = filter.provider.as_deref() {
                query.push(" AND provider = ").push_bind(provider);
            }
            if let Some(project_id) = filter.project_id {
                query
                    .push(" AND project_id = ")
                    .push_bind(DbUuid(project_id));
            }
            if let Some(user_id) = filter.user_id {
                query.push(" AND user_id = ").push_bind(DbUuid(user_id));
            }
            if let Some(code) = filter.error_code.as_deref() {
                query.push(" AND error_code = ").push_bind(code);
            }
            if let Some(since) = filter.since {
                query.push(" AND created_at >= ").push_bind(since);
            }
            query
                .push(" ORDER BY id DESC LIMIT ")
                .push_bind(i64::from(limit));
            query
                .build_query_as()
                .persistent(false)
                .fetch_all(pool)
                .await?
        });
        Ok(rows
            .into_iter()
            .filter_map(|r| Job::try_from(r).ok())
            .collect())
    }

    /// Jobs that ended at or after `since`, counted per minute (UTC, the minute's start) and
    /// final status, oldest minute first: the dashboard's chart.
    pub async fn ended_per_minute(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<(DateTime<Utc>, JobStatus, u64)>, StoreError> {
        let postgres = matches!(self.store.db, crate::db::Db::Postgres(_));
        // A closed choice of SQL per database, never text from a request. PostgreSQL groups
        // by the truncated time and writes only each group's minute as text: formatting
        // every row (tens of thousands in a busy hour) cost more than the rest of the query.
        let (minute, label) = if postgres {
            (
                "date_trunc('minute', finished_at AT TIME ZONE 'UTC')",
                "to_char(minute, 'YYYY-MM-DD\"T\"HH24:MI')",
            )
        } else {
            ("substr(replace(finished_at, ' ', 'T'), 1, 16)", "minute")
        };
        // Each final status is named so that both databases read one range of
        // generation_jobs_finished (status, finished_at) per status; a job has an end time
        // only in a final status.
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {label} AS minute, status, n FROM \
               (SELECT {minute} AS minute, status, count(*) AS n FROM generation_jobs \
                WHERE status IN ('succeeded', 'failed', 'cancelled') \
                  AND finished_at IS NOT NULL AND finished_at >= $1 \
                GROUP BY 1, 2) AS ended \
             ORDER BY 1, 2"
        ));
        let rows: Vec<(String, String, i64)> = with_pool!(self.store, |pool| sqlx::query_as(sql)
            .bind(since)
            .fetch_all(pool)
            .await?);
        Ok(rows
            .into_iter()
            .filter_map(|(minute, status, n)| {
                let at = chrono::NaiveDateTime::parse_from_str(&minute, "%Y-%m-%dT%H:%M").ok()?;
                Some((
                    at.and_utc(),
                    status.parse().ok()?,
                    u64::try_from(n).unwrap_or(0),
                ))
            })
            .collect())
    }

    /// Jobs that failed at or after `since`, counted per error code, most first.
    pub async fn failures_since(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let rows: Vec<(Option<String>, i64)> = with_pool!(self.store, |pool| sqlx::query_as(
            "SELECT error_code, count(*) FROM generation_jobs \
             WHERE finished_at IS NOT NULL AND finished_at >= $1 AND status = 'failed' \
             GROUP BY error_code ORDER BY count(*) DESC, error_code"
        )
        .bind(since)
        .fetch_all(pool)
        .await?);
        Ok(rows
            .into_iter()
            .map(|(code, n)| {
                (
                    code.unwrap_or_else(|| "internal".into()),
                    u64::try_from(n).unwrap_or(0),
                )
            })
            .collect())
    }

    /// How long the newest succeeded jobs (at most `limit`, finished since `since`) took at
    /// their provider, from its acceptance to the video kept: `(provider, model, seconds)`.
    pub async fn recent_finish_times(
        &self,
        since: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<(String, String, f64)>, StoreError> {
        let rows: Vec<(String, String, DateTime<Utc>, DateTime<Utc>)> =
            with_pool!(self.store, |pool| sqlx::query_as(
                "SELECT provider, model, started_at, finished_at FROM generation_jobs \
                 WHERE finished_at IS NOT NULL AND finished_at >= $1 AND status = 'succeeded' \
                   AND started_at IS NOT NULL \
                 ORDER BY finished_at DESC LIMIT $2"
            )
            .bind(since)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?);
        Ok(rows
            .into_iter()
            .map(|(provider, model, started, finished)| {
                let seconds = (finished - started).num_milliseconds().max(0) as f64 / 1000.0;
                (provider, model, seconds)
            })
            .collect())
    }

    /// Moves a job that failed before any provider accepted it to its next fallback:
    /// provider, model, request and estimate become the entry's, the route records the
    /// provider it left, and it is `queued` again with no attempts. Applies only while the
    /// job is live, on `mv.from`, with no provider job and no submit out (never after a
    /// provider may have started it). Writes `job.fallback` for the project's endpoints and
    /// the job's own `webhook_url`, with the history entry, atomically.
    pub async fn fall_back(&self, id: Uuid, mv: &FallbackMove) -> Result<bool, StoreError> {
        let Some(left) = mv.route.last() else {
            return Err(StoreError::Invalid("a move names the provider it leaves"));
        };
        let message = format!(
            "moved from {}/{} to {}/{}: {}",
            left.provider,
            left.model,
            mv.request.provider,
            clip(&mv.request.model, 100),
            clip(&left.message, 400)
        );
        let request =
            serde_json::to_value(&mv.request).map_err(|_| StoreError::Invalid("request"))?;
        let route = serde_json::to_value(&mv.route).map_err(|_| StoreError::Invalid("route"))?;
        Ok(event_transition!(
            self.store,
            id,
            "UPDATE generation_jobs SET provider = $1, model = $2, request = $3, \
               video_seconds = $4, resolution = $5, estimated_cost_micros = $6, route = $7, \
               status = 'queued', attempts = 0, progress = NULL, updated_at = $8 \
             WHERE id = $9 AND provider = $10 AND status IN ('queued', 'throttled') \
               AND provider_job_id IS NULL AND submit_started_at IS NULL",
            "$11",
            &message,
            history = true,
            event = "job.fallback",
            pg_when = "TRUE",
            sqlite_when = "1",
            final = false,
            |q| q
                .bind(mv.request.provider.as_str())
                .bind(&mv.request.model)
                .bind(Json(request))
                .bind(mv.usage.video_seconds.map(db_seconds))
                .bind(mv.usage.resolution.as_deref())
                .bind(mv.usage.estimated_cost.map(byok_core::Usd::micros))
                .bind(Json(route))
                .bind(crate::now())
                .bind(DbUuid(id))
                .bind(mv.from.as_str())
        ))
    }

    /// The provider definitely refused the submit of attempt `attempt` (no
    /// remote job exists): the mark goes and the job waits again, as
    /// `throttled` when the provider throttled the key, else `queued`.
    pub async fn submit_refused(
        &self,
        id: Uuid,
        attempt: u32,
        throttled: bool,
        why: &str,
    ) -> Result<bool, StoreError> {
        let status = if throttled { "throttled" } else { "queued" };
        let message = format!("the provider refused the submit: {}", clip(why, 500));
        Ok(transition!(
            self.store,
            id,
            "UPDATE generation_jobs SET submit_started_at = NULL, attempts = $1, updated_at = $2, \
               status = CASE WHEN status IN ('queued', 'throttled') THEN $3 ELSE status END \
             WHERE id = $4 AND provider_job_id IS NULL",
            "$5",
            &message,
            |q| q
                .bind(db_attempt(attempt))
                .bind(crate::now())
                .bind(status)
                .bind(DbUuid(id))
        ))
    }

    /// The remote job failed for a passing reason and billed nothing: the
    /// job goes back to `queued` for a fresh submit.
    pub async fn resubmit(&self, id: Uuid, attempt: u32, why: &str) -> Result<bool, StoreError> {
        let message = format!(
            "the provider's job failed; submitting again: {}",
            clip(why, 500)
        );
        Ok(transition!(
            self.store,
            id,
            "UPDATE generation_jobs SET status = 'queued', provider_job_id = NULL, \
               submit_started_at = NULL, progress = NULL, attempts = $1, updated_at = $2 \
             WHERE id = $3 AND status = 'running'",
            "$4",
            &message,
            |q| q
                .bind(db_attempt(attempt))
                .bind(crate::now())
                .bind(DbUuid(id))
        ))
    }

    /// Progress of a running job, when it moved (no history entry: it changes often). A
    /// `job.progress` event is written with it at most once per job per
    /// [`PROGRESS_EVENT_EVERY`].
    pub async fn set_progress(&self, id: Uuid, progress: f64) -> Result<bool, StoreError> {
        if !progress.is_finite() {
            return Ok(false);
        }
        let now = crate::now();
        let last_event_before = now
            - chrono::Duration::from_std(PROGRESS_EVENT_EVERY).unwrap_or(chrono::Duration::zero());
        let progress = progress.clamp(0.0, 1.0);
        // `progress_event_at` doubles as the throttle: it moves to `now` only when the last
        // event is old enough, and the event is written exactly when it moved.
        Ok(event_transition!(
            self.store,
            id,
            "UPDATE generation_jobs SET progress = $1, updated_at = $2, \
               progress_event_at = CASE WHEN progress_event_at IS NULL OR progress_event_at <= $3 \
                                        THEN $2 ELSE progress_event_at END \
             WHERE id = $4 AND status = 'running' AND (progress IS NULL OR progress <> $1)",
            "$5",
            "progress",
            history = false,
            event = "job.progress",
            pg_when = "c.progress_event_at = c.updated_at",
            sqlite_when = "progress_event_at = updated_at",
            final = false,
            |q| q
                .bind(progress)
                .bind(now)
                .bind(last_event_before)
                .bind(DbUuid(id))
        ))
    }

    /// A live job → `succeeded` with `result`.
    pub async fn succeed(&self, id: Uuid, result: &JobResult) -> Result<bool, StoreError> {
        Ok(event_transition!(
            self.store,
            id,
            concat!(
                "UPDATE generation_jobs SET status = 'succeeded', result = $1, progress = 1, \
                   submit_started_at = NULL, finished_at = $2, updated_at = $2 \
                 WHERE id = $3 AND status IN ",
                live!()
            ),
            "$4",
            "succeeded",
            history = true,
            event = "job.succeeded",
            pg_when = "TRUE",
            sqlite_when = "TRUE",
            final = true,
            |q| q.bind(Json(result)).bind(crate::now()).bind(DbUuid(id))
        ))
    }

    /// [`Self::succeed`] for many jobs in one statement (with their history entries,
    /// `job.succeeded` events, batch counts and usage rows): an answer per job, in order. A
    /// job given twice succeeds once, with its first result.
    pub async fn succeed_many(&self, done: &[(Uuid, &JobResult)]) -> Result<Vec<bool>, StoreError> {
        let crate::db::Db::Postgres(pool) = &self.store.db else {
            let mut answers = Vec::with_capacity(done.len());
            for (id, result) in done {
                answers.push(self.succeed(*id, result).await?);
            }
            return Ok(answers);
        };
        let ids: Vec<Uuid> = done.iter().map(|(id, _)| *id).collect();
        let first = first_places(&ids);
        let unique = || done.iter().zip(&first).filter(|(_, first)| **first);
        let (changed, deliveries): (Vec<Uuid>, Vec<Uuid>) = sqlx::query_as(concat!(
            "WITH input AS (\
               SELECT * FROM unnest($1::uuid[], $2::jsonb[]) AS i(id, result)), \
             changed AS (\
               UPDATE generation_jobs j SET status = 'succeeded', result = i.result, \
                 progress = 1, submit_started_at = NULL, finished_at = $3, updated_at = $3 \
               FROM input i WHERE j.id = i.id AND ",
            by_key_only!(concat!("j.status IN ", live!())),
            " RETURNING j.*), \
             hist AS (INSERT INTO generation_job_events (job_id, at, status, message) \
               SELECT id, updated_at, status, 'succeeded' FROM changed)",
            crate::outbox::pg_job_event_ctes!("job.succeeded", "TRUE"),
            crate::outbox::pg_batch_completion_ctes!(),
            crate::outbox::pg_usage_cte!(),
            " SELECT ARRAY(SELECT id FROM changed), \
                     ARRAY(SELECT id FROM dl UNION ALL SELECT id FROM bdl)"
        ))
        .bind(unique().map(|((id, _), _)| *id).collect::<Vec<_>>())
        .bind(
            unique()
                .map(|((_, result), _)| Json(*result))
                .collect::<Vec<_>>(),
        )
        .bind(crate::now())
        .fetch_one(pool)
        .await?;
        self.store.outbox().record(deliveries);
        Ok(answers_in_order(&ids, &first, &changed))
    }

    /// A live job → `failed` with `error`; `attempt` is kept when higher
    /// than the stored count.
    pub async fn fail(
        &self,
        id: Uuid,
        error: &ErrorRecord,
        attempt: u32,
    ) -> Result<bool, StoreError> {
        let message = format!("failed: {}: {}", error.code, clip(&error.message, 500));
        Ok(event_transition!(
            self.store,
            id,
            concat!(
                "UPDATE generation_jobs SET status = 'failed', error_code = $1, error_message = $2, \
                   error_retryable = $3, attempts = CASE WHEN attempts > $4 THEN attempts ELSE $4 END, \
                   submit_started_at = NULL, finished_at = $5, updated_at = $5 \
                 WHERE id = $6 AND status IN ",
                live!()
            ),
            "$7",
            &message,
            history = true,
            event = "job.failed",
            pg_when = "TRUE",
            sqlite_when = "TRUE",
            final = true,
            |q| q
                .bind(error.code.as_str())
                .bind(clip(&error.message, 2000))
                .bind(error.retryable)
                .bind(db_attempt(attempt))
                .bind(crate::now())
                .bind(DbUuid(id))
        ))
    }

    /// A live job → `cancelled` (error code `cancelled`, with `why`), with its
    /// `job.cancelled` event (and `batch.completed` for a batch's last job).
    pub async fn cancel(&self, id: Uuid, why: &str) -> Result<Cancelled, StoreError> {
        let now = crate::now();
        let why = clip(why, 500);
        let (row, deliveries): (Option<JobRow>, Vec<Uuid>) = match &self.store.db {
            crate::db::Db::Postgres(pool) => {
                use sqlx::{FromRow as _, Row as _};
                let row = sqlx::query(concat!(
                    "WITH changed AS (\
                       UPDATE generation_jobs SET status = 'cancelled', error_code = 'cancelled', \
                         error_message = $1, error_retryable = FALSE, finished_at = $2, \
                         updated_at = $2 \
                       WHERE id = $3 AND status IN ",
                    live!(),
                    " RETURNING *), \
                     hist AS (INSERT INTO generation_job_events (job_id, at, status, message) \
                       SELECT id, updated_at, status, $1 FROM changed)",
                    crate::outbox::pg_job_event_ctes!("job.cancelled", "TRUE"),
                    crate::outbox::pg_batch_completion_ctes!(),
                    crate::outbox::pg_usage_cte!(),
                    " SELECT ",
                    job_columns!(),
                    ", ARRAY(SELECT id FROM dl UNION ALL SELECT id FROM bdl) AS deliveries \
                     FROM changed"
                ))
                .bind(why)
                .bind(now)
                .bind(DbUuid(id))
                .fetch_optional(pool)
                .await?;
                match row {
                    Some(row) => (
                        Some(JobRow::from_row(&row)?),
                        row.try_get::<Vec<Uuid>, _>("deliveries")?,
                    ),
                    None => (None, Vec::new()),
                }
            }
            crate::db::Db::Sqlite(pool) => {
                let _write = self.store.write_guard().await;
                let mut tx = pool.begin().await?;
                let row: Option<JobRow> = sqlx::query_as(concat!(
                    "UPDATE generation_jobs SET status = 'cancelled', error_code = 'cancelled', \
                       error_message = $1, error_retryable = FALSE, finished_at = $2, updated_at = $2 \
                     WHERE id = $3 AND status IN ",
                    live!(),
                    " RETURNING ",
                    job_columns!()
                ))
                .bind(why)
                .bind(now)
                .bind(DbUuid(id))
                .fetch_optional(&mut *tx)
                .await?;
                let mut deliveries = Vec::new();
                if row.is_some() {
                    record_event!(tx, id, "cancelled", why, None::<Value>);
                    deliveries =
                        crate::outbox::sqlite_job_event!(tx, id, Some("job.cancelled"), true);
                }
                tx.commit().await?;
                (row, deliveries)
            }
        };
        self.store.outbox().record(deliveries);
        match row {
            Some(row) => Ok(Cancelled::Now(row.try_into()?)),
            None => Ok(match self.get(id).await? {
                Some(job) => Cancelled::AlreadyFinal(job),
                None => Cancelled::NotFound,
            }),
        }
    }

    /// Claims the sending of the remote job's cancel: true for exactly one caller
    /// (a compare-and-set on `cancel_sent_at`), which then sends it.
    pub async fn mark_cancel_sent(&self, id: Uuid) -> Result<bool, StoreError> {
        Ok(transition!(
            self.store,
            id,
            "UPDATE generation_jobs SET cancel_sent_at = $1, updated_at = $1 \
             WHERE id = $2 AND cancel_sent_at IS NULL",
            "$3",
            "the provider was asked to cancel the remote job",
            |q| q.bind(crate::now()).bind(DbUuid(id))
        ))
    }

    /// Gives up a claim of [`mark_cancel_sent`](Self::mark_cancel_sent) whose cancel the
    /// provider did not take, so a later delivery of the job may send it again.
    pub async fn release_cancel_claim(&self, id: Uuid) -> Result<bool, StoreError> {
        let _write = self.store.write_guard().await;
        let affected = with_pool!(self.store, |pool| sqlx::query(
            "UPDATE generation_jobs SET cancel_sent_at = NULL \
             WHERE id = $1 AND cancel_sent_at IS NOT NULL"
        )
        .bind(DbUuid(id))
        .execute(pool)
        .await?
        .rows_affected());
        Ok(affected == 1)
    }

    /// How many jobs are in each live status (queued, throttled, running):
    /// proportional to the live jobs, not to the table (a partial index).
    pub async fn count_live(&self) -> Result<Vec<(JobStatus, u64)>, StoreError> {
        let rows: Vec<(String, i64)> = with_pool!(self.store, |pool| sqlx::query_as(concat!(
            "SELECT status, count(*) FROM generation_jobs WHERE status IN ",
            live!(),
            " GROUP BY status"
        ))
        .fetch_all(pool)
        .await?);
        Ok(rows
            .into_iter()
            .filter_map(|(s, n)| Some((s.parse().ok()?, u64::try_from(n).unwrap_or(0))))
            .collect())
    }

    /// How many jobs are in each status (for metrics and the operator CLI).
    pub async fn count_by_status(&self) -> Result<Vec<(JobStatus, u64)>, StoreError> {
        let rows: Vec<(String, i64)> = with_pool!(self.store, |pool| sqlx::query_as(
            "SELECT status, count(*) FROM generation_jobs GROUP BY status"
        )
        .fetch_all(pool)
        .await?);
        Ok(rows
            .into_iter()
            .filter_map(|(s, n)| Some((s.parse().ok()?, u64::try_from(n).unwrap_or(0))))
            .collect())
    }
}

/// Writes `news` (with their `ids`) as `queued` jobs with their first history entries on
/// PostgreSQL, in one statement on `db` (the pool, or a transaction that writes more with
/// them): the rows created, without those whose idempotency key was already taken.
///
/// The unique index on (created_by_token, idempotency_key) decides races between requests
/// with the same key: one inserts, the others find the row. Each job and its first history
/// entry are written atomically, the entries inserted from the returned rows.
pub(crate) async fn pg_insert_rows<'c>(
    db: impl sqlx::PgExecutor<'c>,
    news: &[NewJob],
    ids: &[Uuid],
    now: DateTime<Utc>,
) -> Result<Vec<JobRow>, StoreError> {
    // Columns as arrays, zipped back into rows by `unnest`; the conflict rule applies per
    // row, so a row whose key an earlier row of the batch took is skipped too.
    Ok(sqlx::query_as(concat!(
        "WITH input AS (\
           SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], \
                                $5::jsonb[], $6::jsonb[], $7::uuid[], $8::text[], \
                                $9::bytea[], $11::uuid[], $12::uuid[], $13::int4[], \
                                $14::text[], $15::int8[]) WITH ORDINALITY \
             AS t(id, user_id, provider, model, request, metadata, \
                  created_by_token, idempotency_key, request_sha256, project_id, batch_id, \
                  video_seconds, resolution, estimated_cost_micros, n)), \
         created AS (\
           INSERT INTO generation_jobs \
             (id, project_id, user_id, provider, model, status, attempts, request, \
              metadata, created_by_token, idempotency_key, request_sha256, \
              created_at, updated_at, enqueued_at, batch_id, video_seconds, resolution, \
              estimated_cost_micros) \
           SELECT id, project_id, user_id, provider, model, 'queued', 0, request, \
                  metadata, \
                  created_by_token, idempotency_key, request_sha256, $10, $10, $10, batch_id, \
                  video_seconds, resolution, estimated_cost_micros \
             FROM input ORDER BY n \
           ON CONFLICT (created_by_token, idempotency_key) \
             WHERE idempotency_key IS NOT NULL DO NOTHING \
           RETURNING ",
        job_columns!(),
        "), accepted AS (\
           INSERT INTO generation_job_events (job_id, at, status, message) \
           SELECT id, created_at, status, 'accepted' FROM created), \
         unpushed AS (\
           INSERT INTO unpushed_jobs (job_id, created_at) SELECT id, created_at FROM created) \
         SELECT ",
        job_columns!(),
        " FROM created"
    ))
    .bind(ids)
    .bind(news.iter().map(|n| n.user_id).collect::<Vec<_>>())
    .bind(news.iter().map(|n| n.provider.as_str()).collect::<Vec<_>>())
    .bind(news.iter().map(|n| n.model.as_str()).collect::<Vec<_>>())
    .bind(news.iter().map(|n| Json(&n.request)).collect::<Vec<_>>())
    .bind(news.iter().map(|n| Json(&n.metadata)).collect::<Vec<_>>())
    .bind(news.iter().map(|n| n.created_by_token).collect::<Vec<_>>())
    .bind(
        news.iter()
            .map(|n| n.idempotency.as_ref().map(|i| i.key.as_str()))
            .collect::<Vec<_>>(),
    )
    .bind(
        news.iter()
            .map(|n| n.idempotency.as_ref().map(|i| &i.request_sha256[..]))
            .collect::<Vec<_>>(),
    )
    .bind(now)
    .bind(news.iter().map(|n| n.project_id).collect::<Vec<_>>())
    .bind(news.iter().map(|n| n.batch_id).collect::<Vec<_>>())
    .bind(
        news.iter()
            .map(|n| n.usage.video_seconds.map(db_seconds))
            .collect::<Vec<_>>(),
    )
    .bind(
        news.iter()
            .map(|n| n.usage.resolution.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind(
        news.iter()
            .map(|n| n.usage.estimated_cost.map(byok_core::Usd::micros))
            .collect::<Vec<_>>(),
    )
    .fetch_all(db)
    .await?)
}

/// [`pg_insert_rows`] on SQLite, inside transaction `tx` (SQLite has no data-modifying
/// `WITH`: a job and its first history entry are two statements of the caller's
/// transaction, which holds the write lock).
pub(crate) async fn sqlite_insert_rows(
    tx: &mut sqlx::SqliteConnection,
    news: &[NewJob],
    ids: &[Uuid],
    now: DateTime<Utc>,
) -> Result<Vec<JobRow>, StoreError> {
    let mut created = Vec::with_capacity(news.len());
    for (new, id) in news.iter().zip(ids) {
        let (key, sha) = match &new.idempotency {
            Some(i) => (Some(i.key.as_str()), Some(&i.request_sha256[..])),
            None => (None, None),
        };
        let row: Option<JobRow> = sqlx::query_as(concat!(insert_job_sql!(), job_columns!()))
            .bind(DbUuid(*id))
            .bind(DbUuid(new.user_id))
            .bind(new.provider.as_str())
            .bind(&new.model)
            .bind(Json(&new.request))
            .bind(Json(&new.metadata))
            .bind(new.created_by_token.map(DbUuid))
            .bind(key)
            .bind(sha)
            .bind(now)
            .bind(DbUuid(new.project_id))
            .bind(new.batch_id.map(DbUuid))
            .bind(new.usage.video_seconds.map(db_seconds))
            .bind(new.usage.resolution.as_deref())
            .bind(new.usage.estimated_cost.map(byok_core::Usd::micros))
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(row) = row {
            record_event!(tx, *id, "queued", "accepted", None::<Value>);
            sqlx::query("INSERT INTO unpushed_jobs (job_id, created_at) VALUES ($1, $2)")
                .bind(DbUuid(*id))
                .bind(now)
                .execute(&mut *tx)
                .await?;
            created.push(row);
        }
    }
    Ok(created)
}

/// An attempt number as the `INTEGER` column holds it.
/// The history message of an accepted submit.
fn accepted_message(provider_job_id: &str) -> String {
    format!("accepted by the provider as {}", clip(provider_job_id, 200))
}

/// For each id, whether it is the first place the id appears: a batch statement takes
/// each job once, and a later place of the same job answers `false`, as the second of two
/// compare-and-sets would.
fn first_places(ids: &[Uuid]) -> Vec<bool> {
    let mut seen = std::collections::HashSet::with_capacity(ids.len());
    ids.iter().map(|id| seen.insert(*id)).collect()
}

/// A batch statement's answer per id, in order: whether its row changed (`changed`, the
/// ids it returned), at the id's first place only (`first`, from [`first_places`]).
fn answers_in_order(ids: &[Uuid], first: &[bool], changed: &[Uuid]) -> Vec<bool> {
    let changed: std::collections::HashSet<&Uuid> = changed.iter().collect();
    ids.iter()
        .zip(first)
        .map(|(id, first)| *first && changed.contains(id))
        .collect()
}

fn db_attempt(attempt: u32) -> i32 {
    i32::try_from(attempt).unwrap_or(i32::MAX)
}

/// At most `max` characters of `s` (history and error messages are for
/// people, and bounded so a provider cannot fill the database).
fn clip(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((at, _)) => &s[..at],
        None => s,
    }
}

/// Seconds of video as the database's INTEGER (a catalogue's lengths are small).
fn db_seconds(seconds: u32) -> i32 {
    i32::try_from(seconds).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::clip;

    #[test]
    fn clip_cuts_on_character_boundaries() {
        assert_eq!(clip("abc", 5), "abc");
        assert_eq!(clip("abcdef", 3), "abc");
        assert_eq!(clip("ééé", 2), "éé");
    }
}
