//! `byok-bench dashboard`: latency of the operator dashboard's pages on a large jobs table.
//! The distributed shape's API (`byok-app`, PostgreSQL + Redis, no worker) over a scratch
//! database loaded with 1,000,000 jobs (`--quick`: 20,000) by one server-side `INSERT …
//! SELECT … FROM generate_series` per 100,000 rows. An admin token signs in over HTTP as a
//! browser would; then one keep-alive connection sends, one at a time, the overview, the jobs
//! page with several filters and a next page, in rounds, each request kind once a round. The
//! baseline is `GET /v1/jobs/{id}` in the same rounds on the same server: an authenticated
//! read of one row by its key, the cheapest store-backed request there is.
//!
//! The loaded jobs look like a busy deployment's: several projects (one tiny), thousands of
//! users (a few heavy ones), every built-in provider that has a model available, each job
//! with a model and request from its provider's catalogue; mostly succeeded, a few per cent
//! failed with a handful of error codes, some cancelled, the jobs still at a provider live;
//! created over the last seven days with a busy last hour (3 % of the jobs) so the overview's
//! chart and failures have data; ids UUIDv7 of their creation time, as the store makes them. The rows older than an hour are vacuumed
//! before the last hour's are written, as autovacuum would have done on a table that only
//! grows at its end, so the last hour's rows are the only ones not yet all-visible.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use byok_core::{GenerationRequest, JobStatus, ModelStatus, ProviderId, Scopes};
use byok_store::{JobFilter, NewToken};
use chrono::{DateTime, TimeDelta, Timelike as _, Utc};
use secrecy::ExposeSecret as _;
use serde_json::{Value, json};
use sqlx::{AssertSqlSafe, Connection as _, Executor as _, PgConnection, Row as _};
use uuid::Uuid;

use crate::common::{percentile, production_logs, progress, round2};
use crate::http::{Connection, get_with, post_form};
use crate::pipeline::system_options;
use crate::system::{Shape, System};
use crate::{Options, report};

/// The goal for each request kind's p99.
const GOAL_MS: f64 = 200.0;
/// Rows per `INSERT … SELECT`.
const CHUNK: i64 = 100_000;
/// The share of the jobs created in the last hour.
const LAST_HOUR_SHARE: f64 = 0.03;
/// The filter of the "failed" page: a provider and a project with about a tenth of the jobs
/// each, so their failed jobs are a few in ten thousand of the table.
const FAILED_PROVIDER: ProviderId = ProviderId::REPLICATE;
const FAILED_PROJECT: &str = "partner";
/// The error code of the "code" page: the rarest of the loaded ones.
const RARE_CODE: &str = "internal";

/// Sizes of one run.
struct Sizes {
    jobs: i64,
    users: i32,
    warmup_rounds: usize,
    rounds: usize,
}

/// The projects: name and the share of the users (per mille) in each.
const PROJECTS: [(&str, i32); 4] = [
    ("bench", 550),
    ("mobile", 300),
    (FAILED_PROJECT, 148),
    ("staging", 2),
];

/// The providers' shares of the jobs (per cent). Stability's only video model is retired (its
/// jobs are refused at enqueue), so it has none.
fn provider_share(id: ProviderId) -> i32 {
    match id {
        ProviderId::RUNWAY => 40,
        ProviderId::VEO => 28,
        ProviderId::FAL => 20,
        ProviderId::REPLICATE => 12,
        _ => 0,
    }
}

/// One job row per `i` of `generate_series($2, $3)` out of `$1` jobs. The distributions come
/// from `hashint8extended(i, k)` (a different `k` per property), so a run loads the same
/// shape every time. Users are picked as `users × r²` (r uniform), so low-numbered users are
/// the heavy ones. A job whose run (20–300 s after its creation) ends after `$4` (now) is
/// still live. Failed jobs carry one of seven codes, the last three refused before any
/// provider accepted them (no provider job, no start).
const LOAD_SQL: &str = "
WITH g AS (
  SELECT i,
    CASE WHEN i <= $5
      THEN $4::timestamptz - interval '7 days'
           + (i - 1)::float8 / $5 * (interval '7 days' - interval '1 hour')
      ELSE $4::timestamptz - interval '1 hour'
           + (i - $5 - 1)::float8 / ($1 - $5) * interval '1 hour'
    END AS created,
    floor($6 * power((abs(hashint8extended(i, 1)) % 1000000) / 1000000.0, 2))::int AS u,
    width_bucket(abs(hashint8extended(i, 2)) % 100, $7::int[]) AS p,
    abs(hashint8extended(i, 3)) % 10000 AS status_r,
    20 + abs(hashint8extended(i, 4)) % 280 AS run_s,
    abs(hashint8extended(i, 5)) % 1000 AS code_r,
    md5(i::text) AS h
  FROM generate_series($2::bigint, $3::bigint) AS i
), j AS (
  SELECT g.*,
    md5('bench user ' || u)::uuid AS user_id,
    ($11::uuid[])[width_bucket(abs(hashint8extended(u, 6)) % 1000, $12::int[])] AS project_id,
    CASE
      WHEN created + run_s * interval '1 second' > $4 THEN
        CASE WHEN created + interval '3 seconds' > $4 THEN 'queued'
             WHEN status_r % 50 = 0 THEN 'throttled' ELSE 'running' END
      WHEN status_r < 300 THEN 'failed'
      WHEN status_r < 400 THEN 'cancelled'
      ELSE 'succeeded'
    END AS status,
    CASE WHEN code_r < 400 THEN 'provider_unavailable' WHEN code_r < 600 THEN 'timeout'
         WHEN code_r < 800 THEN 'content_rejected' WHEN code_r < 900 THEN 'credentials_invalid'
         WHEN code_r < 960 THEN 'invalid_request' WHEN code_r < 990 THEN 'insufficient_credits'
         ELSE 'internal' END AS code,
    code_r BETWEEN 800 AND 989 AS refused
  FROM g
), k AS (
  SELECT j.*,
    status IN ('succeeded', 'failed', 'cancelled') AS ended,
    status IN ('queued', 'throttled') OR (status = 'failed' AND refused) AS unaccepted
  FROM j
)
INSERT INTO generation_jobs (id, project_id, user_id, provider, model, status, progress,
  attempts, provider_job_id, request, result, error_code, error_message, error_retryable,
  metadata, created_at, updated_at, started_at, finished_at, enqueued_at, video_seconds)
SELECT
  (lpad(to_hex(floor(extract(epoch FROM created) * 1000)::bigint), 12, '0') || '7'
     || substr(h, 1, 3) || substr('89ab', (abs(hashint8extended(i, 7)) % 4)::int + 1, 1)
     || substr(h, 4, 15))::uuid,
  project_id, user_id, ($8::text[])[p], ($9::text[])[p], status,
  CASE status WHEN 'succeeded' THEN 1.0 WHEN 'running' THEN 0.5 END,
  CASE status WHEN 'queued' THEN 0 ELSE 1 END,
  CASE WHEN unaccepted THEN NULL ELSE 'bench-' || i END,
  jsonb_set(($10::jsonb[])[p], '{user_id}', to_jsonb(user_id::text)),
  CASE WHEN status = 'succeeded' THEN jsonb_build_object('provider_urls', '[]'::jsonb,
       'bytes', 1000000 + code_r * 5000, 'content_type', 'video/mp4', 'note', NULL,
       'provider_usage', jsonb_build_object('compute_ms', NULL)) END,
  CASE status WHEN 'failed' THEN code WHEN 'cancelled' THEN 'cancelled' END,
  CASE status WHEN 'failed' THEN 'the provider refused the job (' || code || ')'
              WHEN 'cancelled' THEN 'cancelled by the producer' END,
  CASE WHEN ended AND status <> 'succeeded' THEN false END,
  '{}'::jsonb,
  created,
  CASE WHEN ended THEN created + run_s * interval '1 second'
       WHEN unaccepted THEN created ELSE created + interval '2 seconds' END,
  CASE WHEN unaccepted THEN NULL ELSE created + interval '2 seconds' END,
  CASE WHEN ended THEN created + run_s * interval '1 second' END,
  created,
  ($13::int[])[p]
FROM k ORDER BY i";

/// What every built-in provider's loaded jobs ask for: its name, a model of its catalogue and
/// a request the catalogue accepts for it (its user filled in per row).
struct ProviderRequests {
    names: Vec<String>,
    models: Vec<String>,
    requests: Vec<Value>,
    seconds: Vec<i32>,
    /// Each provider's lower bound in 0–99 (for `width_bucket`).
    from: Vec<i32>,
}

fn provider_requests(system: &System) -> anyhow::Result<ProviderRequests> {
    let mut out = ProviderRequests {
        names: Vec::new(),
        models: Vec::new(),
        requests: Vec::new(),
        seconds: Vec::new(),
        from: Vec::new(),
    };
    let mut from = 0;
    for id in ProviderId::BUILT_IN {
        if provider_share(id) == 0 {
            continue;
        }
        let adapter = system
            .api_system()
            .registry()
            .get(id)
            .ok_or_else(|| anyhow::anyhow!("{id} is not in the registry"))?;
        let catalogue = adapter.catalogue();
        // The first available model that takes a text prompt, else a first frame (an
        // image-to-video model) with or without one.
        let image = "https://images.example.com/bench/first-frame.png";
        let (request, validated) = catalogue
            .models
            .iter()
            .filter(|m| m.status == ModelStatus::Available)
            .flat_map(|m| {
                let (user, provider, model) = (Uuid::nil(), id.as_str(), m.id.as_str());
                [
                    json!({ "user_id": user, "provider": provider, "model": model,
                            "prompt": "a lighthouse at dusk, slow dolly in" }),
                    json!({ "user_id": user, "provider": provider, "model": model,
                            "prompt": "slow dolly in", "image_url": image }),
                    json!({ "user_id": user, "provider": provider, "model": model,
                            "image_url": image }),
                ]
            })
            .find_map(|candidate| {
                let request: GenerationRequest = serde_json::from_value(candidate).ok()?;
                let validated = catalogue.validate(&request).ok()?;
                Some((request, validated))
            })
            .ok_or_else(|| anyhow::anyhow!("{id}: no model takes a prompt or a first frame"))?;
        out.names.push(id.as_str().to_owned());
        out.models.push(request.model.clone());
        out.requests.push(serde_json::to_value(&request)?);
        out.seconds.push(
            validated
                .duration_seconds
                .and_then(|s| i32::try_from(s).ok())
                .unwrap_or(5),
        );
        out.from.push(from);
        from += provider_share(id);
    }
    Ok(out)
}

/// Loads `sizes.jobs` jobs into the system's database; returns the seconds it took.
async fn load(
    db: &mut PgConnection,
    system: &System,
    projects: &[Uuid],
    sizes: &Sizes,
    now: DateTime<Utc>,
) -> anyhow::Result<f64> {
    let providers = provider_requests(system)?;
    let project_from: Vec<i32> = PROJECTS
        .iter()
        .scan(0, |from, (_, share)| {
            let this = *from;
            *from += share;
            Some(this)
        })
        .collect();
    // Rows before the last hour, then the last hour's: two ranges of `i`.
    let older = ((sizes.jobs as f64) * (1.0 - LAST_HOUR_SHARE)).ceil() as i64;
    let started = Instant::now();
    let chunk = |from: i64, to: i64| {
        sqlx::query(LOAD_SQL)
            .bind(sizes.jobs)
            .bind(from)
            .bind(to)
            .bind(now)
            .bind(older)
            .bind(sizes.users)
            .bind(&providers.from)
            .bind(&providers.names)
            .bind(&providers.models)
            .bind(&providers.requests)
            .bind(projects)
            .bind(&project_from)
            .bind(&providers.seconds)
    };
    for (first, last) in [(1, older), (older + 1, sizes.jobs)] {
        let mut from = first;
        while from <= last {
            let to = (from + CHUNK - 1).min(last);
            chunk(from, to).execute(&mut *db).await?;
            progress(&format!(
                "dashboard: {to} of {} jobs loaded ({:.1} s)",
                sizes.jobs,
                started.elapsed().as_secs_f64()
            ));
            from = to + 1;
        }
        // What autovacuum would have done to the older rows long before; the last hour's
        // rows are left as fresh ones are: statistics, but not yet all-visible.
        let maintenance = if last == older {
            "VACUUM (ANALYZE) generation_jobs"
        } else {
            "ANALYZE generation_jobs"
        };
        db.execute(maintenance).await?;
    }
    Ok(started.elapsed().as_secs_f64())
}

/// `sql`'s rows of a name and a count, as a JSON object.
async fn counts(db: &mut PgConnection, sql: &'static str) -> anyhow::Result<Value> {
    let rows: Vec<(String, i64)> = sqlx::query_as(sql).fetch_all(db).await?;
    Ok(rows
        .into_iter()
        .map(|(name, n)| (name, Value::from(n)))
        .collect::<serde_json::Map<_, _>>()
        .into())
}

/// Counts that describe the loaded table, for the report.
async fn shape(db: &mut PgConnection, projects: &[(String, Uuid)]) -> anyhow::Result<Value> {
    let status = counts(
        db,
        "SELECT status, count(*) FROM generation_jobs GROUP BY 1 ORDER BY 2 DESC",
    )
    .await?;
    let codes = counts(
        db,
        "SELECT error_code, count(*) FROM generation_jobs WHERE status = 'failed' \
         GROUP BY 1 ORDER BY 2 DESC",
    )
    .await?;
    let providers = counts(
        db,
        "SELECT provider, count(*) FROM generation_jobs GROUP BY 1 ORDER BY 2 DESC",
    )
    .await?;
    let models: Vec<(String, String)> =
        sqlx::query_as("SELECT DISTINCT provider, model FROM generation_jobs ORDER BY 1")
            .fetch_all(&mut *db)
            .await?;
    let per_project: Vec<(Uuid, i64)> =
        sqlx::query_as("SELECT project_id, count(*) FROM generation_jobs GROUP BY 1")
            .fetch_all(&mut *db)
            .await?;
    let named: serde_json::Map<String, Value> = projects
        .iter()
        .map(|(name, id)| {
            let n = per_project
                .iter()
                .find(|(p, _)| p == id)
                .map_or(0, |(_, n)| *n);
            (name.clone(), Value::from(n))
        })
        .collect();
    let users = sqlx::query(
        "SELECT count(*) AS users, max(n) AS most, \
           percentile_disc(0.5) WITHIN GROUP (ORDER BY n) AS median \
         FROM (SELECT count(*) AS n FROM generation_jobs GROUP BY user_id) AS per_user",
    )
    .fetch_one(&mut *db)
    .await?;
    let last_hour: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM generation_jobs \
         WHERE finished_at IS NOT NULL AND finished_at >= now() - interval '1 hour'",
    )
    .fetch_one(&mut *db)
    .await?;
    let sizes: Vec<(String, i64)> = sqlx::query_as(
        "SELECT c.relname::text, pg_relation_size(c.oid) FROM pg_class c \
         WHERE c.oid = 'generation_jobs'::regclass \
            OR c.oid IN (SELECT indexrelid FROM pg_index \
                         WHERE indrelid = 'generation_jobs'::regclass) \
         ORDER BY 1",
    )
    .fetch_all(&mut *db)
    .await?;
    let mib = |rows: Vec<(String, i64)>| -> Value {
        rows.into_iter()
            .map(|(k, bytes)| (k, json!(round2(bytes as f64 / 1_048_576.0))))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    Ok(json!({
        "status": status,
        "failed_by_code": codes,
        "providers": providers,
        "models": models
            .into_iter()
            .map(|(provider, model)| (provider, Value::from(model)))
            .collect::<serde_json::Map<_, _>>(),
        "projects": named,
        "users": users.try_get::<i64, _>("users")?,
        "jobs_per_user_median": users.try_get::<i64, _>("median")?,
        "jobs_per_user_most": users.try_get::<i64, _>("most")?,
        "ended_last_hour": last_hour,
        "mib": mib(sizes),
    }))
}

/// `JobRepo::ended_per_minute`'s statement on PostgreSQL.
const ENDED_PER_MINUTE_SQL: &str = "\
SELECT to_char(minute, 'YYYY-MM-DD\"T\"HH24:MI') AS minute, status, n FROM \
  (SELECT date_trunc('minute', finished_at AT TIME ZONE 'UTC') AS minute, status, \
          count(*) AS n FROM generation_jobs \
   WHERE status IN ('succeeded', 'failed', 'cancelled') \
     AND finished_at IS NOT NULL AND finished_at >= $1 \
   GROUP BY 1, 2) AS ended \
ORDER BY 1, 2";

/// `JobRepo::failures_since`'s statement.
const FAILURES_SINCE_SQL: &str = "\
SELECT error_code, count(*) FROM generation_jobs \
WHERE finished_at IS NOT NULL AND finished_at >= $1 AND status = 'failed' \
GROUP BY error_code ORDER BY count(*) DESC, error_code";

/// A value bound to a plan's statement.
enum Bind {
    Text(String),
    Id(Uuid),
    Time(DateTime<Utc>),
    Int(i64),
}

/// The statement `JobRepo::search` builds for `filter`, with its values in the order it binds
/// them, for a page of 50. Its column list is shortened to `*`, which changes no plan.
fn search_statement(filter: &JobFilter) -> (String, Vec<Bind>) {
    let conditions = [
        ("id <", filter.before.map(Bind::Id)),
        (
            "status =",
            filter.status.map(|s| Bind::Text(s.as_str().to_owned())),
        ),
        ("provider =", filter.provider.clone().map(Bind::Text)),
        ("project_id =", filter.project_id.map(Bind::Id)),
        ("user_id =", filter.user_id.map(Bind::Id)),
        ("error_code =", filter.error_code.clone().map(Bind::Text)),
        ("created_at >=", filter.since.map(Bind::Time)),
    ];
    let mut sql = "SELECT * FROM generation_jobs WHERE TRUE".to_owned();
    let mut binds = Vec::new();
    for (condition, bind) in conditions {
        if let Some(bind) = bind {
            binds.push(bind);
            sql.push_str(&format!(" AND {condition} ${}", binds.len()));
        }
    }
    binds.push(Bind::Int(50));
    sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", binds.len()));
    (sql, binds)
}

/// The jobs page's query string for `filter` (without `since`, which no page measured uses).
fn page_query(filter: &JobFilter) -> String {
    let pairs = [
        ("status", filter.status.map(|s| s.as_str().to_owned())),
        ("provider", filter.provider.clone()),
        ("project", filter.project_id.map(|id| id.to_string())),
        ("user", filter.user_id.map(|id| id.to_string())),
        ("code", filter.error_code.clone()),
        ("before", filter.before.map(|id| id.to_string())),
    ];
    let query: Vec<String> = pairs
        .into_iter()
        .filter_map(|(name, value)| Some(format!("{name}={}", form_encode(&value?))))
        .collect();
    if query.is_empty() {
        String::new()
    } else {
        format!("?{}", query.join("&"))
    }
}

/// Prints `EXPLAIN (ANALYZE, BUFFERS)` of `sql` with `binds` to stderr: planned with the
/// values bound, as the store's statements are (an unnamed statement).
async fn explain(
    db: &mut PgConnection,
    name: &str,
    sql: &str,
    binds: Vec<Bind>,
) -> anyhow::Result<()> {
    let text = format!("EXPLAIN (ANALYZE, BUFFERS) {sql}");
    let mut query = sqlx::query(AssertSqlSafe(text));
    let mut shown = Vec::new();
    for bind in binds {
        query = match bind {
            Bind::Text(v) => {
                shown.push(format!("'{v}'"));
                query.bind(v)
            }
            Bind::Id(v) => {
                shown.push(format!("'{v}'"));
                query.bind(v)
            }
            Bind::Time(v) => {
                shown.push(format!("'{}'", v.to_rfc3339()));
                query.bind(v)
            }
            Bind::Int(v) => {
                shown.push(v.to_string());
                query.bind(v)
            }
        };
    }
    let rows = query.persistent(false).fetch_all(&mut *db).await?;
    let mut out = format!("\n-- {name}\n-- {sql}\n-- with {}\n", shown.join(", "));
    for row in rows {
        out.push_str(&row.try_get::<String, _>(0)?);
        out.push('\n');
    }
    progress(&out);
    Ok(())
}

/// One kind of request measured.
struct Kind {
    name: &'static str,
    request: Vec<u8>,
    latencies: Vec<Duration>,
}

impl Kind {
    fn new(name: &'static str, request: Vec<u8>) -> Kind {
        Kind {
            name,
            request,
            latencies: Vec::new(),
        }
    }

    fn summary(&mut self) -> (f64, f64, f64) {
        self.latencies.sort();
        (
            percentile(&self.latencies, 0.5),
            percentile(&self.latencies, 0.99),
            percentile(&self.latencies, 1.0),
        )
    }
}

/// `text` as `application/x-www-form-urlencoded` writes it.
fn form_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Signs in with `token` as the sign-in form does; the cookie it sets (`name=value`).
async fn sign_in(conn: &mut Connection, api: SocketAddr, token: &str) -> anyhow::Result<String> {
    let body = format!("token={}", form_encode(token));
    let (status, head, _) = conn
        .exchange(&post_form(api, "/dashboard/sign-in", &body))
        .await?;
    anyhow::ensure!(status == 303, "sign-in answered {status}");
    head.split("\r\n")
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            if !name.eq_ignore_ascii_case("set-cookie") {
                return None;
            }
            let pair = value.trim().split(';').next()?;
            pair.starts_with("byok_session=").then(|| pair.to_owned())
        })
        .ok_or_else(|| anyhow::anyhow!("the sign-in set no `byok_session` cookie"))
}

/// Sends `request` once and checks the answer: 200, holding each of `expect`.
async fn check(
    conn: &mut Connection,
    name: &str,
    request: &[u8],
    expect: &[String],
) -> anyhow::Result<()> {
    let (status, body) = conn.send(request).await?;
    let body = String::from_utf8_lossy(&body);
    anyhow::ensure!(status == 200, "{name} answered {status}: {body}");
    for text in expect {
        anyhow::ensure!(
            body.contains(text.as_str()),
            "{name}: no `{text}` in the page"
        );
    }
    Ok(())
}

/// The first id of a page of `filter`, and its last when it is full.
async fn page_ends(system: &System, filter: &JobFilter) -> anyhow::Result<(Uuid, Option<Uuid>)> {
    let page = system.store.jobs().search(filter, 50).await?;
    let first = page
        .first()
        .map(|j| j.id)
        .ok_or_else(|| anyhow::anyhow!("no job matches {filter:?}"))?;
    let last = (page.len() == 50)
        .then(|| page.last().map(|j| j.id))
        .flatten();
    Ok((first, last))
}

pub async fn run(options: &Options) -> anyhow::Result<()> {
    let sizes = if options.quick {
        Sizes {
            jobs: 20_000,
            users: 500,
            warmup_rounds: 5,
            rounds: 50,
        }
    } else {
        Sizes {
            jobs: 1_000_000,
            users: 5_000,
            warmup_rounds: 20,
            rounds: 300,
        }
    };
    let mut system_options = system_options(Shape::Distributed);
    system_options.worker = false;
    system_options.users = 0;
    let system = System::start(options, &system_options).await?;
    let measured = measure(options, &system, &sizes).await;
    production_logs(false);
    system.stop().await?;
    measured
}

async fn measure(options: &Options, system: &System, sizes: &Sizes) -> anyhow::Result<()> {
    let url = system
        .database_url()
        .ok_or_else(|| anyhow::anyhow!("the distributed shape has a database"))?;
    let mut db = PgConnection::connect(url).await?;
    let mut projects = vec![(PROJECTS[0].0.to_owned(), system.project)];
    for (name, _) in &PROJECTS[1..] {
        projects.push((
            (*name).to_owned(),
            system.store.projects().create(name).await?.id,
        ));
    }
    let project_ids: Vec<Uuid> = projects.iter().map(|(_, id)| *id).collect();
    let now = Utc::now();
    let load_seconds = load(&mut db, system, &project_ids, sizes, now).await?;
    let data = shape(&mut db, &projects).await?;
    progress(&format!("dashboard: loaded in {load_seconds:.1} s: {data}"));

    // The filters measured, and the ids the pages must show.
    let partner = projects
        .iter()
        .find(|(name, _)| name == FAILED_PROJECT)
        .map(|(_, id)| *id)
        .ok_or_else(|| anyhow::anyhow!("no project {FAILED_PROJECT}"))?;
    let failed = JobFilter {
        status: Some(JobStatus::Failed),
        provider: Some(FAILED_PROVIDER.as_str().to_owned()),
        project_id: Some(partner),
        ..JobFilter::default()
    };
    // A user with the median number of jobs.
    let user: Uuid = sqlx::query_scalar(
        "SELECT user_id FROM generation_jobs GROUP BY user_id ORDER BY count(*), user_id \
         OFFSET (SELECT count(DISTINCT user_id) / 2 FROM generation_jobs) LIMIT 1",
    )
    .fetch_one(&mut db)
    .await?;
    let by_user = JobFilter {
        user_id: Some(user),
        ..JobFilter::default()
    };
    let by_code = JobFilter {
        error_code: Some(RARE_CODE.to_owned()),
        ..JobFilter::default()
    };
    let (_, failed_last) = page_ends(system, &failed).await?;
    // At the small size the failed filter has less than a page; the next page measured is
    // then the one of the same filter without the project.
    let paged = if failed_last.is_some() {
        failed.clone()
    } else {
        JobFilter {
            project_id: None,
            ..failed.clone()
        }
    };
    let paged_last = page_ends(system, &paged)
        .await?
        .1
        .ok_or_else(|| anyhow::anyhow!("no page of failed jobs is full"))?;
    let pages = [
        ("jobs", JobFilter::default()),
        ("jobs_failed", failed),
        (
            "jobs_failed_next",
            JobFilter {
                before: Some(paged_last),
                ..paged
            },
        ),
        ("jobs_user", by_user),
        ("jobs_code", by_code),
    ];
    // Every status's rows read back as jobs (the pages skip a row that does not).
    for status in JobStatus::ALL {
        let filter = JobFilter {
            status: Some(status),
            ..JobFilter::default()
        };
        if let Some(job) = system.store.jobs().search(&filter, 1).await?.first() {
            anyhow::ensure!(
                system.store.jobs().get(job.id).await?.is_some(),
                "a {status} job does not read back"
            );
        }
    }
    // The baseline reads a job of the bench project, which its token sees.
    let (own_job, _) = page_ends(
        system,
        &JobFilter {
            project_id: Some(system.project),
            ..JobFilter::default()
        },
    )
    .await?;

    let (_, admin) = system
        .store
        .tokens()
        .create(&NewToken {
            scopes: Scopes::parse_list("admin")?,
            ..NewToken::new("bench dashboard", system.project)
        })
        .await?;
    let api = system.api;
    let mut conn = Connection::open(api).await?;
    production_logs(true);
    let cookie = sign_in(&mut conn, api, admin.expose_secret()).await?;
    let cookie = format!("Cookie: {cookie}");
    // Each request once, checked: the overview's chart and failures have the last hour's
    // jobs; each jobs page starts with the job the store's search puts first and, when full,
    // links to its next page from its last job; the baseline finds its job.
    let mut kinds = vec![Kind::new("overview", get_with(api, "/dashboard", &cookie))];
    let mut expects = vec![vec![
        "Jobs ended per minute".to_owned(),
        "provider_unavailable".to_owned(),
    ]];
    for (name, filter) in &pages {
        let path = format!("/dashboard/jobs{}", page_query(filter));
        kinds.push(Kind::new(name, get_with(api, &path, &cookie)));
        let (first, last) = page_ends(system, filter).await?;
        let mut expect = vec![first.to_string()];
        expect.extend(last.map(|last| format!("before={last}")));
        expects.push(expect);
    }
    kinds.push(Kind::new(
        "baseline",
        get_with(
            api,
            &format!("/v1/jobs/{own_job}"),
            &format!("Authorization: Bearer {}", system.token),
        ),
    ));
    expects.push(vec![own_job.to_string()]);
    for (kind, expect) in kinds.iter().zip(&expects) {
        check(&mut conn, kind.name, &kind.request, expect).await?;
    }
    progress(&format!(
        "dashboard: {} warm-up rounds, then {} rounds of {} requests",
        sizes.warmup_rounds,
        sizes.rounds,
        kinds.len()
    ));
    for round in 0..sizes.warmup_rounds + sizes.rounds {
        for kind in &mut kinds {
            let sent = Instant::now();
            let (status, _) = conn.send(&kind.request).await?;
            let took = sent.elapsed();
            anyhow::ensure!(status == 200, "{} answered {status}", kind.name);
            if round >= sizes.warmup_rounds {
                kind.latencies.push(took);
            }
        }
    }
    production_logs(false);

    if options.explain {
        // The overview's two statements as JobRepo writes them on PostgreSQL, with the times
        // the overview binds: the minute an hour ago (the chart's first bar), an hour ago.
        let start = minute_of(Utc::now()) - TimeDelta::minutes(59);
        explain(
            &mut db,
            "overview: JobRepo::ended_per_minute",
            ENDED_PER_MINUTE_SQL,
            vec![Bind::Time(start)],
        )
        .await?;
        explain(
            &mut db,
            "overview: JobRepo::failures_since",
            FAILURES_SINCE_SQL,
            vec![Bind::Time(Utc::now() - TimeDelta::hours(1))],
        )
        .await?;
        for (name, filter) in &pages {
            let (sql, binds) = search_statement(filter);
            explain(&mut db, &format!("{name}: JobRepo::search"), &sql, binds).await?;
        }
    }
    let _ = db.close().await;

    let mut results = serde_json::Map::new();
    let mut lines = Vec::new();
    let mut worst: (f64, &str) = (0.0, "");
    let mut baseline = (0.0, 0.0);
    for kind in &mut kinds {
        let (p50, p99, max) = kind.summary();
        if kind.name == "baseline" {
            baseline = (p50, p99);
        } else if p99 > worst.0 {
            worst = (p99, kind.name);
        }
        results.insert(
            kind.name.to_owned(),
            json!({ "p50_ms": round2(p50), "p99_ms": round2(p99), "max_ms": round2(max) }),
        );
        lines.push(format!(
            "          {:<17} p50 {p50:>7.2} ms  p99 {p99:>7.2} ms  max {max:>7.2} ms",
            kind.name
        ));
    }
    let result = json!({
        "name": "dashboard",
        "value": round2(worst.0),
        "unit": "ms (worst p99)",
        "worst": worst.1,
        "goal_ms": GOAL_MS,
        "requests": results,
        "baseline": round2(baseline.1),
        "baseline_p50_ms": round2(baseline.0),
        "baseline_name": "GET /v1/jobs/{id} (a producer token, one row by its key) on the same server, in the same rounds",
        "ratio": worst.0 / baseline.1.max(1e-9),
        "jobs": sizes.jobs,
        "rounds": sizes.rounds,
        "warmup_rounds": sizes.warmup_rounds,
        "load_seconds": round2(load_seconds),
        "data": data,
        "pages": pages
            .iter()
            .map(|(name, filter)| ((*name).to_owned(), Value::from(page_query(filter))))
            .collect::<serde_json::Map<_, _>>(),
        "jobs_user": "a user with the median number of jobs",
        "shape": "distributed (PostgreSQL + Redis), API only",
    });
    let human = format!(
        "dashboard {} jobs (loaded in {load_seconds:.1} s), one connection, {} rounds after {} warm-up; worst p99 {:.2} ms ({}), goal < {GOAL_MS:.0} ms\n{}",
        sizes.jobs,
        sizes.rounds,
        sizes.warmup_rounds,
        worst.0,
        worst.1,
        lines.join("\n"),
    );
    report(options, &result, &human);
    Ok(())
}

fn minute_of(at: DateTime<Utc>) -> DateTime<Utc> {
    at.with_second(0)
        .and_then(|t| t.with_nanosecond(0))
        .unwrap_or(at)
}
