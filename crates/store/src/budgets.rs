//! Budgets (docs/budgets.md): `budget_limits`, the limits a project sets for itself and its
//! users; and the ledger of the embedded shape, `budget_counters` and `budget_reservations`,
//! which holds each job's estimated cost from before its submit until it ends. (The
//! distributed shape keeps the same ledger in Redis, `byok-budgets`; both read the spend of
//! a period that has no counter yet from `job_usage`, [`BudgetRepo::spent_in`].)

use byok_core::{BudgetPeriod, ProjectUser, Usd};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::db::with_pool;
use crate::sql_types::{DbUuid, from_row};
use crate::{Store, StoreError};

/// One stored limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredLimit {
    /// The user it is for; `None`: the project's own.
    pub user_id: Option<Uuid>,
    /// Only jobs at this provider count; `None`: every job.
    pub provider: Option<String>,
    /// The calendar period it resets with.
    pub period: BudgetPeriod,
    /// The most one period's jobs may cost.
    pub limit: Usd,
}

from_row! {
    struct LimitRow {
        user_id: Option<DbUuid>,
        provider: Option<String>,
        period: String,
        limit_micros: i64,
    }
}

impl TryFrom<LimitRow> for StoredLimit {
    type Error = StoreError;

    fn try_from(row: LimitRow) -> Result<Self, StoreError> {
        Ok(StoredLimit {
            user_id: row.user_id.map(Uuid::from),
            provider: row.provider,
            period: row
                .period
                .parse()
                .map_err(|()| StoreError::Malformed("budget_limits.period"))?,
            limit: Usd::from_micros(row.limit_micros),
        })
    }
}

/// Whose spend, where, and when: what a counter counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpendScope {
    /// The project.
    pub project_id: Uuid,
    /// One user's jobs only; `None`: the whole project's.
    pub user_id: Option<Uuid>,
    /// One provider's jobs only; `None`: every provider's.
    pub provider: Option<String>,
    /// The period's first instant.
    pub from: DateTime<Utc>,
    /// The next period's first instant.
    pub to: DateTime<Utc>,
}

/// One counter of the ledger: a limit in one period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetCounter {
    /// Its name, the same for the same scope and period whatever the limit.
    pub name: String,
    /// What it counts (to start it from the recorded usage).
    pub scope: SpendScope,
    /// The limit.
    pub limit: Usd,
    /// When it may be dropped: well after its period, and after any job that could hold it.
    pub expires_at: DateTime<Utc>,
}

/// Where a counter stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Standing {
    /// What ended jobs spent in the period.
    pub spent: Usd,
    /// What jobs at the provider hold.
    pub reserved: Usd,
}

/// The answer of [`BudgetRepo::reserve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reserved {
    /// The job holds its amount on every counter (now, or already before).
    Held,
    /// Counter `counter` (an index into the caller's list) has only `remaining` left;
    /// nothing was held.
    Exceeded {
        /// The refusing counter.
        counter: usize,
        /// What it has left.
        remaining: Usd,
    },
}

/// Budget queries.
#[derive(Debug, Clone, Copy)]
pub struct BudgetRepo<'a> {
    store: &'a Store,
}

impl<'a> BudgetRepo<'a> {
    pub(crate) fn new(store: &'a Store) -> Self {
        Self { store }
    }

    /// The limits of one scope: the project's own (`user_id` `None`) or one user's, by
    /// provider (overall first) then period.
    pub async fn limits(
        &self,
        project_id: Uuid,
        user_id: Option<Uuid>,
    ) -> Result<Vec<StoredLimit>, StoreError> {
        let rows: Vec<LimitRow> = with_pool!(self.store, |pool| sqlx::query_as(
            "SELECT user_id, provider, period, limit_micros FROM budget_limits \
             WHERE project_id = $1 AND ((user_id IS NULL AND $2 IS NULL) OR user_id = $2)"
        )
        .bind(DbUuid(project_id))
        .bind(user_id.map(DbUuid))
        .fetch_all(pool)
        .await?);
        sorted(rows)
    }

    /// Every limit a job of `owner` at `provider` counts against: the project's and the
    /// user's, overall and at that provider.
    pub async fn applicable(
        &self,
        owner: ProjectUser,
        provider: &str,
    ) -> Result<Vec<StoredLimit>, StoreError> {
        let rows: Vec<LimitRow> = with_pool!(self.store, |pool| sqlx::query_as(
            "SELECT user_id, provider, period, limit_micros FROM budget_limits \
             WHERE project_id = $1 AND (user_id IS NULL OR user_id = $2) \
               AND (provider IS NULL OR provider = $3)"
        )
        .bind(DbUuid(owner.project_id))
        .bind(DbUuid(owner.user_id))
        .bind(provider)
        .fetch_all(pool)
        .await?);
        sorted(rows)
    }

    /// Replaces the limits of one scope with `limits` (none: removes them), in one
    /// transaction. Two limits for the same provider and period are
    /// [`StoreError::Invalid`]. The ledger's counters are named by scope, not by row, so a
    /// limit set again keeps its period's figures.
    pub async fn replace(
        &self,
        project_id: Uuid,
        user_id: Option<Uuid>,
        limits: &[StoredLimit],
    ) -> Result<(), StoreError> {
        let mut seen = std::collections::HashSet::new();
        if !limits.iter().all(|l| seen.insert((&l.provider, l.period))) {
            return Err(StoreError::Invalid(
                "at most one limit per provider (or none) and period",
            ));
        }
        let now = crate::now();
        let _write = self.store.write_guard().await;
        with_pool!(self.store, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "DELETE FROM budget_limits \
                 WHERE project_id = $1 AND ((user_id IS NULL AND $2 IS NULL) OR user_id = $2)",
            )
            .bind(DbUuid(project_id))
            .bind(user_id.map(DbUuid))
            .execute(&mut *tx)
            .await?;
            for limit in limits {
                sqlx::query(
                    "INSERT INTO budget_limits \
                       (project_id, user_id, provider, period, limit_micros, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(DbUuid(project_id))
                .bind(user_id.map(DbUuid))
                .bind(limit.provider.as_deref())
                .bind(limit.period.as_str())
                .bind(limit.limit.micros())
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// What the jobs of `scope` that ended in its span cost, from `job_usage`: a job whose
    /// cost is unknown (it failed after the provider may have started it) counts its whole
    /// estimate.
    pub async fn spent_in(&self, scope: &SpendScope) -> Result<Usd, StoreError> {
        let micros: i64 = with_pool!(self.store, |pool| sqlx::query_scalar(SPENT_IN)
            .bind(DbUuid(scope.project_id))
            .bind(scope.user_id.map(DbUuid))
            .bind(scope.provider.as_deref())
            .bind(scope.from)
            .bind(scope.to)
            .fetch_one(pool)
            .await?);
        Ok(Usd::from_micros(micros))
    }

    /// Where each counter stands (a counter not made yet: what its scope spent so far, and
    /// nothing held).
    pub async fn standing(&self, counters: &[BudgetCounter]) -> Result<Vec<Standing>, StoreError> {
        let mut out = Vec::with_capacity(counters.len());
        for counter in counters {
            let row: Option<(i64, i64)> = with_pool!(self.store, |pool| sqlx::query_as(
                "SELECT spent_micros, reserved_micros FROM budget_counters WHERE counter = $1"
            )
            .bind(&counter.name)
            .fetch_optional(pool)
            .await?);
            out.push(match row {
                Some((spent, reserved)) => Standing {
                    spent: Usd::from_micros(spent),
                    reserved: Usd::from_micros(reserved),
                },
                None => Standing {
                    spent: self.spent_in(&counter.scope).await?,
                    reserved: Usd::ZERO,
                },
            });
        }
        Ok(out)
    }

    /// Holds `amount` for job `job_id` on every counter, or on none: in one transaction,
    /// each counter's conditional update (`spent + reserved + amount <= limit`) locks its
    /// row until the commit, so concurrent reservations on PostgreSQL queue behind each
    /// other and re-check, and on SQLite the process's write lock orders them. Counters
    /// are taken in name order, so two reservations never wait for each other's rows.
    /// A job already holding is [`Reserved::Held`] again, nothing added.
    ///
    /// Only when a counter refuses does it look further: a counter not made yet is made
    /// (its spent figure summed from the recorded usage) and its update tried again; and
    /// holds past their `hold_until` (the job's end was never settled) are counted as
    /// spent, in a transaction of their own, before the whole reservation is tried once
    /// more.
    pub async fn reserve(
        &self,
        job_id: Uuid,
        counters: &[BudgetCounter],
        amount: Usd,
        hold_until: DateTime<Utc>,
    ) -> Result<Reserved, StoreError> {
        let first = self
            .try_reserve(job_id, counters, amount, hold_until)
            .await?;
        if first == Reserved::Held || !self.sweep_lapsed(counters).await? {
            return Ok(first);
        }
        self.try_reserve(job_id, counters, amount, hold_until).await
    }

    /// Counts the holds on `counters` past their lapse time as spent, in a transaction of
    /// its own; whether there were any.
    async fn sweep_lapsed(&self, counters: &[BudgetCounter]) -> Result<bool, StoreError> {
        let mut names: Vec<&str> = counters.iter().map(|c| c.name.as_str()).collect();
        names.sort_unstable();
        let now = crate::now();
        let _write = self.store.write_guard().await;
        let any = with_pool!(self.store, |pool| {
            let mut tx = pool.begin().await?;
            let mut any = false;
            for name in &names {
                let lapsed: Vec<i64> = sqlx::query_scalar(
                    "DELETE FROM budget_reservations \
                     WHERE counter = $1 AND expires_at <= $2 RETURNING amount_micros",
                )
                .bind(*name)
                .bind(now)
                .fetch_all(&mut *tx)
                .await?;
                let lapsed = lapsed.iter().fold(0i64, |sum, n| sum.saturating_add(*n));
                if lapsed > 0 {
                    any = true;
                    sqlx::query(
                        "UPDATE budget_counters SET spent_micros = spent_micros + $2, \
                           reserved_micros = reserved_micros - $2 \
                         WHERE counter = $1",
                    )
                    .bind(*name)
                    .bind(lapsed)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            tx.commit().await?;
            any
        });
        Ok(any)
    }

    async fn try_reserve(
        &self,
        job_id: Uuid,
        counters: &[BudgetCounter],
        amount: Usd,
        hold_until: DateTime<Utc>,
    ) -> Result<Reserved, StoreError> {
        let mut order: Vec<usize> = (0..counters.len()).collect();
        order.sort_by(|&a, &b| counters[a].name.cmp(&counters[b].name));
        let now = crate::now();
        let _write = self.store.write_guard().await;
        let reserved = with_pool!(self.store, |pool| {
            let mut tx = pool.begin().await?;
            let held: Option<i64> = sqlx::query_scalar(
                "SELECT CAST(1 AS BIGINT) FROM budget_reservations WHERE job_id = $1 LIMIT 1",
            )
            .bind(DbUuid(job_id))
            .fetch_optional(&mut *tx)
            .await?;
            if held.is_some() {
                tx.commit().await?;
                return Ok(Reserved::Held);
            }
            let mut outcome = Reserved::Held;
            for &i in &order {
                let counter = &counters[i];
                let take = || {
                    sqlx::query_scalar::<_, i64>(
                        "UPDATE budget_counters SET reserved_micros = reserved_micros + $2 \
                         WHERE counter = $1 AND spent_micros + reserved_micros + $2 <= $3 \
                         RETURNING spent_micros",
                    )
                    .bind(&counter.name)
                    .bind(amount.micros())
                    .bind(counter.limit.micros())
                };
                let standing_of = || {
                    sqlx::query_as::<_, (i64, i64)>(
                        "SELECT spent_micros, reserved_micros FROM budget_counters \
                         WHERE counter = $1",
                    )
                    .bind(&counter.name)
                };
                let mut taken = take().fetch_optional(&mut *tx).await?;
                if taken.is_none() {
                    let standing = standing_of().fetch_optional(&mut *tx).await?;
                    let used = match standing {
                        // Not made yet: from the recorded usage (and, while at it, counters
                        // long past go).
                        None => {
                            let spent = self.spent_in(&counter.scope).await?;
                            sqlx::query("DELETE FROM budget_counters WHERE expires_at <= $1")
                                .bind(now)
                                .execute(&mut *tx)
                                .await?;
                            sqlx::query(
                                "INSERT INTO budget_counters \
                                   (counter, spent_micros, reserved_micros, expires_at) \
                                 VALUES ($1, $2, 0, $3) ON CONFLICT (counter) DO NOTHING",
                            )
                            .bind(&counter.name)
                            .bind(spent.micros())
                            .bind(counter.expires_at)
                            .execute(&mut *tx)
                            .await?;
                            spent.micros()
                        }
                        Some((spent, reserved)) => spent.saturating_add(reserved),
                    };
                    taken = take().fetch_optional(&mut *tx).await?;
                    if taken.is_none() {
                        // The row another reservation made meanwhile (our insert found it and
                        // did nothing) holds what is used now, not the usage read above.
                        let now_used = standing_of().fetch_optional(&mut *tx).await?;
                        let used = now_used
                            .map_or(used, |(spent, reserved)| spent.saturating_add(reserved));
                        outcome = Reserved::Exceeded {
                            counter: i,
                            remaining: Usd::from_micros(
                                counter.limit.micros().saturating_sub(used).max(0),
                            ),
                        };
                        break;
                    }
                }
                sqlx::query(
                    "INSERT INTO budget_reservations (job_id, counter, amount_micros, expires_at) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(DbUuid(job_id))
                .bind(&counter.name)
                .bind(amount.micros())
                .bind(hold_until)
                .execute(&mut *tx)
                .await?;
            }
            match outcome {
                Reserved::Held => tx.commit().await?,
                Reserved::Exceeded { .. } => tx.rollback().await?,
            }
            Ok::<_, StoreError>(outcome)
        })?;
        Ok(reserved)
    }

    /// Whether job `job_id` holds anything.
    pub async fn holds(&self, job_id: Uuid) -> Result<bool, StoreError> {
        let held: Option<i64> = with_pool!(self.store, |pool| sqlx::query_scalar(
            "SELECT CAST(1 AS BIGINT) FROM budget_reservations WHERE job_id = $1 LIMIT 1"
        )
        .bind(DbUuid(job_id))
        .fetch_optional(pool)
        .await?);
        Ok(held.is_some())
    }

    /// Ends job `job_id`'s holds: each counter's hold becomes `cost` spent (`None`: the
    /// cost is unknown, the whole hold is spent). Settling twice changes nothing.
    pub async fn settle(&self, job_id: Uuid, cost: Option<Usd>) -> Result<(), StoreError> {
        let _write = self.store.write_guard().await;
        with_pool!(self.store, |pool| {
            let mut tx = pool.begin().await?;
            let holds: Vec<(String, i64)> = sqlx::query_as(
                "DELETE FROM budget_reservations WHERE job_id = $1 \
                 RETURNING counter, amount_micros",
            )
            .bind(DbUuid(job_id))
            .fetch_all(&mut *tx)
            .await?;
            let mut holds = holds;
            holds.sort();
            for (counter, held) in holds {
                sqlx::query(
                    "UPDATE budget_counters SET \
                       spent_micros = spent_micros + $2, reserved_micros = reserved_micros - $3 \
                     WHERE counter = $1",
                )
                .bind(&counter)
                .bind(cost.map_or(held, Usd::micros))
                .bind(held)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }
}

/// The spend of a scope in a span, as [`BudgetRepo::spent_in`] defines it.
const SPENT_IN: &str = "SELECT CAST(coalesce(sum(coalesce(u.cost_micros, j.estimated_cost_micros, 0)), 0) \
       AS BIGINT) \
     FROM job_usage u LEFT JOIN generation_jobs j ON j.id = u.job_id \
     WHERE u.project_id = $1 AND ($2 IS NULL OR u.user_id = $2) \
       AND ($3 IS NULL OR u.provider = $3) AND u.ended_at >= $4 AND u.ended_at < $5";

fn sorted(rows: Vec<LimitRow>) -> Result<Vec<StoredLimit>, StoreError> {
    let mut limits = rows
        .into_iter()
        .map(StoredLimit::try_from)
        .collect::<Result<Vec<_>, _>>()?;
    limits.sort_by(|a, b| {
        (a.user_id, &a.provider, a.period).cmp(&(b.user_id, &b.provider, b.period))
    });
    Ok(limits)
}
