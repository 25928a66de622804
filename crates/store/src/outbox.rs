//! The webhook outbox: events written by the same statement (PostgreSQL) or transaction
//! (SQLite) as the change that causes them, one `webhook_deliveries` row per recipient
//! (docs/webhooks.md).
//!
//! An event is written only when someone will receive it: an enabled endpoint of the
//! project subscribed to its type, or (for job events) the job's own `webhook_url`. A
//! transition that wrote deliveries hands their ids to the process's [`OutboxFeed`] once
//! it has committed, so a relay can push them to the queue at once; a process that dies
//! before that leaves them to the sweeper (`WebhookRepo::stranded`), which is what keeps
//! delivery at-least-once.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;
use uuid::Uuid;

/// New deliveries written by this process, waiting for its relay to push them.
///
/// Only recorded while a relay is [`subscribe`](OutboxFeed::subscribe)d: a process without
/// one (an operator command) leaves its deliveries to the sweeper.
#[derive(Debug, Default)]
pub struct OutboxFeed {
    subscribed: AtomicBool,
    pending: Mutex<Vec<Uuid>>,
    ready: Notify,
}

/// Deliveries held for the relay at most; beyond it they wait for the sweeper (a relay
/// that stopped draining must not make the process grow without bound).
const MAX_PENDING: usize = 100_000;

impl OutboxFeed {
    /// From now on, record new deliveries for [`take`](OutboxFeed::take).
    pub fn subscribe(&self) {
        self.subscribed.store(true, Ordering::Release);
    }

    pub(crate) fn record(&self, ids: Vec<Uuid>) {
        if ids.is_empty() || !self.subscribed.load(Ordering::Acquire) {
            return;
        }
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let room = MAX_PENDING.saturating_sub(pending.len());
        pending.extend(ids.into_iter().take(room));
        drop(pending);
        self.ready.notify_one();
    }

    /// Waits until deliveries were recorded, then takes them all.
    pub async fn take(&self) -> Vec<Uuid> {
        loop {
            let taken =
                std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
            if !taken.is_empty() {
                return taken;
            }
            self.ready.notified().await;
        }
    }
}

/// The PostgreSQL CTEs that write job event `$event` for the rows of a preceding CTE
/// `changed` (which must return `*` of `generation_jobs`) where `$when` holds (an SQL
/// condition on `c`): the event with the job row as its data, and one delivery per
/// subscribed enabled endpoint plus one for the job's `webhook_url`, for each changed job
/// (`changed` may hold many: the worker's batched transitions). Defines `dl`, the new
/// deliveries. Starts with a comma.
macro_rules! pg_job_event_ctes {
    ($event:literal, $when:literal) => {
        concat!(
            ", targets AS (\
               SELECT c.id AS job_id, e.id AS endpoint_id, NULL::text AS url \
                 FROM webhook_endpoints e JOIN changed c ON e.project_id = c.project_id \
                WHERE ",
            $when,
            " AND e.disabled_at IS NULL \
                  AND e.events LIKE '% ",
            $event,
            " %' \
               UNION ALL \
               SELECT c.id, NULL, c.request->>'webhook_url' FROM changed c \
                WHERE ",
            $when,
            " AND c.request->>'webhook_url' IS NOT NULL), \
             ev AS (\
               INSERT INTO webhook_events (project_id, type, subject_id, occurred_at, data) \
               SELECT c.project_id, '",
            $event,
            "', c.id, c.updated_at, to_jsonb(c) \
                 FROM changed c WHERE EXISTS (SELECT 1 FROM targets t WHERE t.job_id = c.id) \
               RETURNING id, project_id, subject_id, occurred_at), \
             dl AS (\
               INSERT INTO webhook_deliveries \
                 (event_id, endpoint_id, url, project_id, status, next_attempt_at, created_at, \
                  updated_at) \
               SELECT ev.id, t.endpoint_id, t.url, ev.project_id, 'pending', ev.occurred_at, \
                      ev.occurred_at, ev.occurred_at \
                 FROM ev JOIN targets t ON t.job_id = ev.subject_id \
               RETURNING id)"
        )
    };
}
pub(crate) use pg_job_event_ctes;

/// The PostgreSQL CTEs a final transition adds after [`pg_job_event_ctes`]: each batch
/// counts off its jobs among the changed rows (grouped first: an `UPDATE … FROM` changes a
/// row once however many rows it joins), under the batch row's lock, so of two transitions
/// ending a batch's last two jobs at the same instant exactly one sees zero; that one sets
/// `finished_at` and writes `batch.completed`. Defines `bdl`, its deliveries.
macro_rules! pg_batch_completion_ctes {
    () => {
        ", bdec AS (\
           UPDATE batches b SET remaining = b.remaining - LEAST(c.n, b.remaining), \
                  finished_at = CASE WHEN b.remaining <= c.n THEN c.at ELSE b.finished_at END \
             FROM (SELECT batch_id, count(*)::int AS n, max(updated_at) AS at FROM changed \
                    WHERE batch_id IS NOT NULL GROUP BY batch_id) c \
            WHERE b.id = c.batch_id AND b.remaining > 0 \
           RETURNING b.id, b.project_id, b.remaining, b.finished_at), \
         btargets AS (\
           SELECT d.id AS batch_id, e.id AS endpoint_id FROM webhook_endpoints e JOIN bdec d \
               ON e.project_id = d.project_id \
            WHERE d.remaining = 0 AND e.disabled_at IS NULL \
              AND e.events LIKE '% batch.completed %'), \
         bev AS (\
           INSERT INTO webhook_events (project_id, type, subject_id, occurred_at) \
           SELECT d.project_id, 'batch.completed', d.id, d.finished_at FROM bdec d \
            WHERE d.remaining = 0 AND EXISTS (SELECT 1 FROM btargets t WHERE t.batch_id = d.id) \
           RETURNING id, project_id, subject_id, occurred_at), \
         bdl AS (\
           INSERT INTO webhook_deliveries \
             (event_id, endpoint_id, project_id, status, next_attempt_at, created_at, updated_at) \
           SELECT bev.id, t.endpoint_id, bev.project_id, 'pending', bev.occurred_at, \
                  bev.occurred_at, bev.occurred_at \
             FROM bev JOIN btargets t ON t.batch_id = bev.subject_id \
           RETURNING id)"
    };
}
pub(crate) use pg_batch_completion_ctes;

/// Whether the changed job row `$c` was never accepted by its provider: no provider job,
/// no submit in flight, no submit whose answer was lost. Such a job cost nothing.
macro_rules! never_accepted {
    ($c:literal) => {
        concat!(
            "(",
            $c,
            "provider_job_id IS NULL AND ",
            $c,
            "submit_started_at IS NULL AND \
             coalesce(",
            $c,
            "error_code, '') <> 'submit_outcome_unknown')"
        )
    };
}
pub(crate) use never_accepted;

/// The cost columns of a job's usage row from the ended job row `$c` (docs/usage.md):
/// `cost_micros, cost_basis`.
macro_rules! usage_cost {
    ($c:literal) => {
        concat!(
            "CASE WHEN ",
            $c,
            "status = 'succeeded' THEN ",
            $c,
            "estimated_cost_micros \
                  WHEN ",
            $crate::outbox::never_accepted!($c),
            " THEN 0 END, \
             CASE WHEN ",
            $c,
            "status = 'succeeded' AND ",
            $c,
            "estimated_cost_micros IS NOT NULL \
                    THEN 'list_price' \
                  WHEN ",
            $c,
            "status <> 'succeeded' AND ",
            $crate::outbox::never_accepted!($c),
            " THEN 'not_accepted' ELSE 'unknown' END"
        )
    };
}
pub(crate) use usage_cost;

/// The CTE of a final transition (PostgreSQL) that writes the job's usage row from the
/// changed row `changed`, in the same statement.
macro_rules! pg_usage_cte {
    () => {
        concat!(
            ", usage AS (\
               INSERT INTO job_usage (job_id, project_id, user_id, provider, model, outcome, \
                 video_seconds, resolution, cost_micros, cost_basis, provider_compute_ms, \
                 ended_at) \
               SELECT c.id, c.project_id, c.user_id, c.provider, c.model, c.status, \
                      c.video_seconds, c.resolution, ",
            $crate::outbox::usage_cost!("c."),
            ", CASE WHEN jsonb_typeof(c.result #> '{provider_usage,compute_ms}') = 'number' \
                    THEN (c.result #>> '{provider_usage,compute_ms}')::bigint END, \
                  c.updated_at \
                 FROM changed c WHERE c.status IN ('succeeded', 'failed', 'cancelled') \
               ON CONFLICT (job_id) DO NOTHING)"
        )
    };
}
pub(crate) use pg_usage_cte;

/// SQLite's `json_object` of a job row: the columns a job event's data is rendered from,
/// under the names PostgreSQL's `to_jsonb` gives them.
macro_rules! sqlite_job_snapshot {
    () => {
        "json_object('id', id, 'project_id', project_id, 'user_id', user_id, \
           'provider', provider, 'model', model, 'status', status, 'progress', progress, \
           'attempts', attempts, 'provider_job_id', provider_job_id, 'request', json(request), \
           'result', json(result), 'error_code', error_code, 'error_message', error_message, \
           'error_retryable', CASE error_retryable WHEN 1 THEN json('true') \
                                WHEN 0 THEN json('false') END, \
           'metadata', json(metadata), 'created_at', created_at, 'updated_at', updated_at, \
           'started_at', started_at, 'finished_at', finished_at, 'batch_id', batch_id, \
           'route', json(route))"
    };
}

/// Inside SQLite transaction `$tx`, after a transition of job `$job_id`: writes event
/// `$event` (an `Option<&str>`) when anyone receives it and, when `$final`, counts the job off its
/// batch (writing `batch.completed` for the last one). Evaluates to the new deliveries'
/// ids. SQLite admits one writer at a time, so the batch count needs no further lock.
macro_rules! sqlite_job_event {
    ($tx:expr, $job_id:expr, $event:expr, $final:expr) => {{
        let job_id: ::uuid::Uuid = $job_id;
        let event: Option<&str> = $event;
        let mut deliveries: Vec<::uuid::Uuid> = Vec::new();
        let (project_id, webhook_url, batch_id, at): (
            $crate::sql_types::DbUuid,
            Option<String>,
            Option<$crate::sql_types::DbUuid>,
            ::chrono::DateTime<::chrono::Utc>,
        ) = sqlx::query_as(
            "SELECT project_id, request ->> 'webhook_url', batch_id, updated_at \
               FROM generation_jobs WHERE id = $1",
        )
        .bind($crate::sql_types::DbUuid(job_id))
        .fetch_one(&mut *$tx)
        .await?;
        if let Some(event) = event {
        let endpoints = $crate::outbox::subscribers!($tx, project_id, event);
        if !endpoints.is_empty() || webhook_url.is_some() {
            let event_id = ::uuid::Uuid::now_v7();
            sqlx::query(concat!(
                "INSERT INTO webhook_events (id, project_id, type, subject_id, occurred_at, data) \
                 SELECT $1, project_id, $2, id, updated_at, ",
                $crate::outbox::sqlite_job_snapshot!(),
                " FROM generation_jobs WHERE id = $3"
            ))
            .bind($crate::sql_types::DbUuid(event_id))
            .bind(event)
            .bind($crate::sql_types::DbUuid(job_id))
            .execute(&mut *$tx)
            .await?;
            let targets = endpoints
                .into_iter()
                .map(|e| (Some(e), None))
                .chain(webhook_url.map(|url| (None, Some(url))));
            for (endpoint, url) in targets {
                deliveries.push(
                    $crate::outbox::insert_delivery!($tx, event_id, endpoint, url, project_id, at),
                );
            }
        }
        }
        if $final {
            // The job's usage row, from the row just ended (docs/usage.md).
            sqlx::query(concat!(
                "INSERT INTO job_usage (job_id, project_id, user_id, provider, model, outcome, \
                   video_seconds, resolution, cost_micros, cost_basis, provider_compute_ms, \
                   ended_at) \
                 SELECT id, project_id, user_id, provider, model, status, video_seconds, \
                        resolution, ",
                $crate::outbox::usage_cost!(""),
                ", CASE WHEN json_type(result, '$.provider_usage.compute_ms') = 'integer' \
                        THEN json_extract(result, '$.provider_usage.compute_ms') END, \
                   updated_at \
                   FROM generation_jobs \
                  WHERE id = $1 AND status IN ('succeeded', 'failed', 'cancelled') \
                 ON CONFLICT (job_id) DO NOTHING"
            ))
            .bind($crate::sql_types::DbUuid(job_id))
            .execute(&mut *$tx)
            .await?;
            if let Some(batch_id) = batch_id {
                // `remaining > 0`: a count already at zero is never driven below it
                // (which the CHECK would refuse, failing the job's transition).
                let left: Option<i64> = sqlx::query_scalar(
                    "UPDATE batches SET remaining = remaining - 1, \
                       finished_at = CASE WHEN remaining = 1 THEN $1 ELSE finished_at END \
                     WHERE id = $2 AND remaining > 0 RETURNING remaining",
                )
                .bind(at)
                .bind(batch_id)
                .fetch_optional(&mut *$tx)
                .await?;
                let done = (left == Some(0)).then_some((at,));
                if let Some((finished,)) = done {
                    let endpoints =
                        $crate::outbox::subscribers!($tx, project_id, "batch.completed");
                    if !endpoints.is_empty() {
                        let event_id = ::uuid::Uuid::now_v7();
                        sqlx::query(
                            "INSERT INTO webhook_events \
                               (id, project_id, type, subject_id, occurred_at) \
                             VALUES ($1, $2, 'batch.completed', $3, $4)",
                        )
                        .bind($crate::sql_types::DbUuid(event_id))
                        .bind(project_id)
                        .bind(batch_id)
                        .bind(finished)
                        .execute(&mut *$tx)
                        .await?;
                        for endpoint in endpoints {
                            deliveries.push($crate::outbox::insert_delivery!(
                                $tx,
                                event_id,
                                Some(endpoint),
                                None::<String>,
                                project_id,
                                finished
                            ));
                        }
                    }
                }
            }
        }
        deliveries
    }};
}
pub(crate) use {sqlite_job_event, sqlite_job_snapshot};

/// The enabled endpoints of project `$project` (a `DbUuid`) subscribed to `$event`, inside
/// transaction `$tx` (the same SQL on both databases).
macro_rules! subscribers {
    ($tx:expr, $project:expr, $event:expr) => {{
        let endpoints: Vec<$crate::sql_types::DbUuid> = sqlx::query_scalar(
            "SELECT id FROM webhook_endpoints \
             WHERE project_id = $1 AND disabled_at IS NULL AND events LIKE $2",
        )
        .bind($project)
        .bind(format!("% {} %", $event))
        .fetch_all(&mut *$tx)
        .await?;
        endpoints
    }};
}
pub(crate) use subscribers;

/// Inserts one pending delivery (inside transaction `$tx`, either database) and evaluates to
/// its id.
macro_rules! insert_delivery {
    ($tx:expr, $event_id:expr, $endpoint:expr, $url:expr, $project:expr, $at:expr) => {{
        let id = ::uuid::Uuid::now_v7();
        sqlx::query(
            "INSERT INTO webhook_deliveries \
               (id, event_id, endpoint_id, url, project_id, status, next_attempt_at, created_at, \
                updated_at) \
             VALUES ($1, $2, $3, $4, $5, 'pending', $6, $6, $6)",
        )
        .bind($crate::sql_types::DbUuid(id))
        .bind($crate::sql_types::DbUuid($event_id))
        .bind($endpoint)
        .bind($url)
        .bind($project)
        .bind($at)
        .execute(&mut *$tx)
        .await?;
        id
    }};
}
pub(crate) use insert_delivery;

/// Inside transaction `$tx` (either database): writes event `$event` of project `$project`
/// (a `Uuid`) about `$subject` with `$data` (JSON) for every enabled endpoint subscribed to
/// it, when there is one. Evaluates to the new deliveries' ids.
macro_rules! subscribed_event {
    ($tx:expr, $project:expr, $event:expr, $subject:expr, $at:expr, $data:expr) => {{
        let project = $crate::sql_types::DbUuid($project);
        let event: &str = $event;
        let at: ::chrono::DateTime<::chrono::Utc> = $at;
        let endpoints = $crate::outbox::subscribers!($tx, project, event);
        let mut deliveries: Vec<::uuid::Uuid> = Vec::new();
        if !endpoints.is_empty() {
            let event_id = ::uuid::Uuid::now_v7();
            sqlx::query(
                "INSERT INTO webhook_events (id, project_id, type, subject_id, occurred_at, data) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind($crate::sql_types::DbUuid(event_id))
            .bind(project)
            .bind(event)
            .bind($subject.map($crate::sql_types::DbUuid))
            .bind(at)
            .bind(sqlx::types::Json($data))
            .execute(&mut *$tx)
            .await?;
            for endpoint in endpoints {
                deliveries.push($crate::outbox::insert_delivery!(
                    $tx,
                    event_id,
                    Some(endpoint),
                    None::<String>,
                    project,
                    at
                ));
            }
        }
        deliveries
    }};
}
pub(crate) use subscribed_event;
