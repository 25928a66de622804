//! `job_usage`: what each ended job made and cost (docs/usage.md). The rows are written by
//! the final transitions themselves (`outbox.rs`, `usage_cost!`), in the same statement or
//! transaction as the job's change; this module reads them.

use byok_core::{UsageGroupBy, UsageGroupView, UsageTotals, Usd};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::db::with_pool;
use crate::sql_types::{DbUuid, from_row};
use crate::{Store, StoreError};

/// What a job's recorded cost is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CostBasis {
    /// It succeeded: its list price when it was enqueued (unknown when the model had none).
    ListPrice,
    /// The provider never accepted it: nothing.
    NotAccepted,
    /// It failed or was cancelled after the provider may have started it.
    Unknown,
}

impl CostBasis {
    fn parse(s: &str) -> Result<CostBasis, StoreError> {
        match s {
            "list_price" => Ok(CostBasis::ListPrice),
            "not_accepted" => Ok(CostBasis::NotAccepted),
            "unknown" => Ok(CostBasis::Unknown),
            _ => Err(StoreError::Malformed("job_usage.cost_basis")),
        }
    }
}

/// One ended job's usage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobUsage {
    /// The job.
    pub job_id: Uuid,
    /// Its project.
    pub project_id: Uuid,
    /// Whose key it ran on.
    pub user_id: Uuid,
    /// The provider.
    pub provider: String,
    /// The model.
    pub model: String,
    /// `succeeded`, `failed` or `cancelled`.
    pub outcome: String,
    /// Seconds of video asked for.
    pub video_seconds: Option<u32>,
    /// The resolution asked for.
    pub resolution: Option<String>,
    /// What the provider will have charged; `None`: unknown.
    pub cost: Option<Usd>,
    /// What `cost` is.
    pub cost_basis: CostBasis,
    /// The provider's own compute figure, in milliseconds.
    pub provider_compute_ms: Option<u64>,
    /// When the job ended.
    pub ended_at: DateTime<Utc>,
}

from_row! {
    struct UsageRow {
        job_id: DbUuid,
        project_id: DbUuid,
        user_id: DbUuid,
        provider: String,
        model: String,
        outcome: String,
        video_seconds: Option<i32>,
        resolution: Option<String>,
        cost_micros: Option<i64>,
        cost_basis: String,
        provider_compute_ms: Option<i64>,
        ended_at: DateTime<Utc>,
    }
}

impl TryFrom<UsageRow> for JobUsage {
    type Error = StoreError;

    fn try_from(row: UsageRow) -> Result<Self, StoreError> {
        Ok(JobUsage {
            job_id: row.job_id.0,
            project_id: row.project_id.0,
            user_id: row.user_id.0,
            provider: row.provider,
            model: row.model,
            outcome: row.outcome,
            video_seconds: row.video_seconds.and_then(|s| u32::try_from(s).ok()),
            resolution: row.resolution,
            cost: row.cost_micros.map(Usd::from_micros),
            cost_basis: CostBasis::parse(&row.cost_basis)?,
            provider_compute_ms: row.provider_compute_ms.and_then(|m| u64::try_from(m).ok()),
            ended_at: row.ended_at,
        })
    }
}

/// Which usage to sum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageQuery {
    /// The project; `None`: every project (operators).
    pub project_id: Option<Uuid>,
    /// Only this user's jobs.
    pub user_id: Option<Uuid>,
    /// Jobs that ended at or after this time.
    pub from: DateTime<Utc>,
    /// … and before this one.
    pub to: DateTime<Utc>,
    /// How.
    pub group_by: UsageGroupBy,
}

from_row! {
    struct GroupRow {
        provider: Option<String>,
        model: Option<String>,
        day: Option<String>,
        user_id: Option<DbUuid>,
        jobs: i64,
        succeeded: i64,
        video_seconds: i64,
        cost_micros: i64,
        jobs_cost_unknown: i64,
        provider_compute_ms: i64,
    }
}

/// The sums every group reports, as SQL both databases read.
const SUMS: &str = "count(*) AS jobs, \
     CAST(coalesce(sum(CASE WHEN outcome = 'succeeded' THEN 1 ELSE 0 END), 0) AS BIGINT) \
       AS succeeded, \
     CAST(coalesce(sum(CASE WHEN outcome = 'succeeded' THEN video_seconds ELSE 0 END), 0) \
       AS BIGINT) AS video_seconds, \
     CAST(coalesce(sum(cost_micros), 0) AS BIGINT) AS cost_micros, \
     CAST(coalesce(sum(CASE WHEN cost_micros IS NULL THEN 1 ELSE 0 END), 0) AS BIGINT) \
       AS jobs_cost_unknown, \
     CAST(coalesce(sum(provider_compute_ms), 0) AS BIGINT) AS provider_compute_ms";

/// Queries on `job_usage`.
#[derive(Debug, Clone, Copy)]
pub struct UsageRepo<'a> {
    store: &'a Store,
}

impl<'a> UsageRepo<'a> {
    pub(crate) fn new(store: &'a Store) -> Self {
        Self { store }
    }

    /// The usage row of job `id`, once it ended.
    pub async fn of_job(&self, id: Uuid) -> Result<Option<JobUsage>, StoreError> {
        let row: Option<UsageRow> = with_pool!(self.store, |pool| sqlx::query_as(
            "SELECT job_id, project_id, user_id, provider, model, outcome, video_seconds, \
               resolution, cost_micros, cost_basis, provider_compute_ms, ended_at \
             FROM job_usage WHERE job_id = $1"
        )
        .bind(DbUuid(id))
        .fetch_optional(pool)
        .await?);
        row.map(JobUsage::try_from).transpose()
    }

    /// The project's (or one user's) usage between `from` and `to`, summed per group, in
    /// the groups' order.
    pub async fn summary(&self, query: &UsageQuery) -> Result<Vec<UsageGroupView>, StoreError> {
        let postgres = matches!(self.store.db, crate::db::Db::Postgres(_));
        // The group's columns: closed sets of SQL chosen here, never text from a request.
        let (text_null, uuid_null, day) = if postgres {
            (
                "NULL::text",
                "NULL::uuid",
                "to_char(ended_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
            )
        } else {
            ("NULL", "NULL", "substr(ended_at, 1, 10)")
        };
        let (keys, group) = match query.group_by {
            UsageGroupBy::Provider => (
                format!(
                    "provider, {text_null} AS model, {text_null} AS day, {uuid_null} AS user_id"
                ),
                "provider".to_owned(),
            ),
            UsageGroupBy::Model => (
                format!("provider, model, {text_null} AS day, {uuid_null} AS user_id"),
                "provider, model".to_owned(),
            ),
            UsageGroupBy::Day => (
                format!(
                    "{text_null} AS provider, {text_null} AS model, {day} AS day, \
                     {uuid_null} AS user_id"
                ),
                day.to_owned(),
            ),
            UsageGroupBy::User => (
                format!(
                    "{text_null} AS provider, {text_null} AS model, {text_null} AS day, user_id"
                ),
                "user_id".to_owned(),
            ),
        };
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {keys}, {SUMS} FROM job_usage \
             WHERE ($1 IS NULL OR project_id = $1) AND ($2 IS NULL OR user_id = $2) \
               AND ended_at >= $3 AND ended_at < $4 \
             GROUP BY {group} ORDER BY {group}"
        ));
        let rows: Vec<GroupRow> = with_pool!(self.store, |pool| sqlx::query_as(sql)
            .bind(query.project_id.map(DbUuid))
            .bind(query.user_id.map(DbUuid))
            .bind(query.from)
            .bind(query.to)
            .fetch_all(pool)
            .await?);
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        Ok(rows
            .into_iter()
            .map(|r| UsageGroupView {
                provider: r.provider,
                model: r.model,
                day: r.day,
                user_id: r.user_id.map(|u| u.0),
                totals: UsageTotals {
                    jobs: count(r.jobs),
                    succeeded: count(r.succeeded),
                    video_seconds: count(r.video_seconds),
                    cost_usd: Usd::from_micros(r.cost_micros),
                    jobs_cost_unknown: count(r.jobs_cost_unknown),
                    provider_compute_ms: count(r.provider_compute_ms),
                },
            })
            .collect())
    }
}
