#![doc = include_str!("../README.md")]

mod redis_ledger;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use byok_core::{
    BudgetLimit, BudgetLimitView, BudgetPeriod, BudgetView, ProjectUser, ProviderId, Usd,
};
use byok_store::{
    BudgetCounter, CostBasis, Reserved, SpendScope, Standing, Store, StoreError, StoredLimit,
};
use chrono::{DateTime, Utc};
use uuid::Uuid;

pub use redis_ledger::RedisLedger;

/// Why a budget call did not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum BudgetError {
    /// The job would take a limit past what it allows; nothing was held.
    #[error("{0}")]
    Exceeded(Box<Refusal>),
    /// The database failed.
    #[error("database: {0}")]
    Store(#[from] StoreError),
    /// Redis failed or answered what the scripts never answer.
    #[error("redis: {0}")]
    Redis(String),
}

impl BudgetError {
    /// Whether the ledger could not be asked (the caller waits and asks again).
    pub fn is_unavailable(&self) -> bool {
        match self {
            BudgetError::Exceeded(_) => false,
            BudgetError::Store(e) => e.is_unavailable(),
            BudgetError::Redis(_) => true,
        }
    }
}

/// A job refused by a budget: which limit, and what it has left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The user whose budget refused; `None`: the project's.
    pub user_id: Option<Uuid>,
    /// The refusing limit's provider (`None`: every provider).
    pub provider: Option<String>,
    /// Its period.
    pub period: BudgetPeriod,
    /// Its limit.
    pub limit: Usd,
    /// What the period has left.
    pub remaining: Usd,
    /// The job's estimated cost; `None`: its model has no price, so no budget can bound it.
    pub estimate: Option<Usd>,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whose = if self.user_id.is_some() {
            "the user's"
        } else {
            "the project's"
        };
        let at = self
            .provider
            .as_deref()
            .map_or_else(String::new, |p| format!(" {p}"));
        match self.estimate {
            Some(estimate) => write!(
                f,
                "the job's estimated cost ({estimate}) is more than {whose}{at} {} budget of {} \
                 has left ({}); nothing was sent to the provider",
                self.period, self.limit, self.remaining
            ),
            None => write!(
                f,
                "the job's model has no price, so {whose}{at} {} budget of {} cannot bound it; \
                 set the model's price (providers.<id>.prices) or remove the limit",
                self.period, self.limit
            ),
        }
    }
}

/// What one job asks of the budgets: its owner, provider and estimated cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Charge {
    /// The job.
    pub job_id: Uuid,
    /// Whose job.
    pub owner: ProjectUser,
    /// At which provider.
    pub provider: ProviderId,
    /// Its estimated cost, fixed at enqueue; `None`: the model has no price.
    pub estimate: Option<Usd>,
}

/// Where the held amounts and spent figures live.
#[derive(Debug, Clone)]
enum Ledger {
    /// In the database, in transactions (the embedded shape).
    Database,
    /// In Redis, one script per change (the distributed shape).
    Redis(RedisLedger),
}

/// The budgets of every project: their limits (in the database) and the ledger that holds
/// each job's estimated cost from before its submit until it ends. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Budgets {
    store: Store,
    ledger: Ledger,
    /// How long a hold outlives its job's longest possible life before it counts as spent.
    hold: Duration,
    limits: Arc<LimitsCache>,
}

/// The limits that apply to an owner at a provider, kept for [`LIMITS_TTL`]: every enqueue
/// and every submit asks, and limits change rarely. A change made through this process
/// (`Budgets::set`) is seen at once; one made through another process within
/// [`LIMITS_TTL`].
#[derive(Debug, Default)]
struct LimitsCache {
    entries: Mutex<HashMap<(ProjectUser, ProviderId), CachedLimits>>,
}

/// When the limits were read, and the limits.
type CachedLimits = (Instant, Arc<Vec<StoredLimit>>);

/// How long a process keeps the limits it read.
pub const LIMITS_TTL: Duration = Duration::from_secs(5);
/// The most owners' limits a process keeps (past it, the cache starts over).
const LIMITS_KEPT: usize = 10_000;

/// How long past a hold's expected end, and past a period, the ledger keeps it.
const GRACE: Duration = Duration::from_secs(24 * 3600);

impl Budgets {
    /// Budgets whose ledger is in the database (the embedded shape): holds taken in
    /// transactions. `job_lifetime`: the longest a job may hold (`worker.job_timeout`
    /// and its time in the queue); a hold never settled counts as spent after it.
    pub fn in_database(store: Store, job_lifetime: Duration) -> Budgets {
        Budgets {
            store,
            ledger: Ledger::Database,
            hold: job_lifetime,
            limits: Arc::default(),
        }
    }

    /// Budgets whose ledger is in Redis (the distributed shape), on `ledger`.
    pub fn in_redis(store: Store, ledger: RedisLedger, job_lifetime: Duration) -> Budgets {
        Budgets {
            store,
            ledger: Ledger::Redis(ledger),
            hold: job_lifetime,
            limits: Arc::default(),
        }
    }

    /// The limits of the project (`user_id` `None`) or of one of its users, each with the
    /// current period's standing.
    pub async fn view(
        &self,
        project_id: Uuid,
        user_id: Option<Uuid>,
    ) -> Result<BudgetView, BudgetError> {
        let limits = self.store.budgets().limits(project_id, user_id).await?;
        let now = Utc::now();
        let counters: Vec<BudgetCounter> = limits
            .iter()
            .map(|limit| self.counter(project_id, limit, now))
            .collect();
        let standings = self.standing(&counters).await?;
        let views = limits
            .into_iter()
            .zip(counters.iter().zip(standings))
            .map(|(limit, (counter, standing))| BudgetLimitView {
                limit: BudgetLimit {
                    provider: limit.provider.as_deref().and_then(|p| p.parse().ok()),
                    period: limit.period,
                    limit_usd: limit.limit,
                },
                period_start: counter.scope.from,
                period_end: counter.scope.to,
                spent_usd: standing.spent,
                reserved_usd: standing.reserved,
                remaining_usd: remaining(limit.limit, standing),
            })
            .collect();
        Ok(BudgetView {
            user_id,
            limits: views,
        })
    }

    /// Replaces the limits of the project or one user (none: removes them) and returns the
    /// new view.
    pub async fn set(
        &self,
        project_id: Uuid,
        user_id: Option<Uuid>,
        limits: &[BudgetLimit],
    ) -> Result<BudgetView, BudgetError> {
        let stored: Vec<StoredLimit> = limits
            .iter()
            .map(|l| StoredLimit {
                user_id,
                provider: l.provider.map(|p| p.as_str().to_owned()),
                period: l.period,
                limit: l.limit_usd,
            })
            .collect();
        self.store
            .budgets()
            .replace(project_id, user_id, &stored)
            .await?;
        self.limits.clear();
        self.view(project_id, user_id).await
    }

    /// The check at enqueue: refuses a job that the current standing already cannot take
    /// (the reservation before its submit decides for good).
    pub async fn check(
        &self,
        owner: ProjectUser,
        provider: ProviderId,
        estimate: Option<Usd>,
    ) -> Result<(), BudgetError> {
        let limits = self.applicable(owner, provider).await?;
        if limits.is_empty() {
            return Ok(());
        }
        let now = Utc::now();
        let counters: Vec<BudgetCounter> = limits
            .iter()
            .map(|l| self.counter(owner.project_id, l, now))
            .collect();
        let standings = self.standing(&counters).await?;
        for (limit, standing) in limits.iter().zip(standings) {
            let left = remaining(limit.limit, standing);
            // No price: nothing could bound what the job costs.
            if estimate.is_none_or(|estimate| estimate > left) {
                return Err(refused(limit, left, estimate));
            }
        }
        Ok(())
    }

    /// Holds the job's estimated cost on every limit it counts against, or on none (then
    /// [`BudgetError::Exceeded`]). Safe to call again for a job that already holds: nothing
    /// more is held. No limit: nothing to hold.
    pub async fn reserve(&self, charge: &Charge) -> Result<(), BudgetError> {
        let limits = self.applicable(charge.owner, charge.provider).await?;
        if limits.is_empty() {
            return Ok(());
        }
        let now = Utc::now();
        let counters: Vec<BudgetCounter> = limits
            .iter()
            .map(|l| self.counter(charge.owner.project_id, l, now))
            .collect();
        let Some(estimate) = charge.estimate else {
            // No price: nothing could bound what the job costs.
            let standing = self.standing(&counters[..1]).await?;
            return Err(refused(
                &limits[0],
                remaining(limits[0].limit, standing[0]),
                None,
            ));
        };
        let hold_until = now + chrono_duration(self.hold);
        let reserved = match &self.ledger {
            Ledger::Database => {
                self.store
                    .budgets()
                    .reserve(charge.job_id, &counters, estimate, hold_until)
                    .await?
            }
            Ledger::Redis(redis) => {
                redis
                    .reserve(&self.store, charge.job_id, &counters, estimate, hold_until)
                    .await?
            }
        };
        match reserved {
            Reserved::Held => Ok(()),
            Reserved::Exceeded { counter, remaining } => {
                Err(refused(&limits[counter], remaining, Some(estimate)))
            }
        }
    }

    /// Settles what job `job_id` holds, once it has ended: the hold becomes what its usage
    /// row says it cost (nothing when the provider never accepted it; the whole hold when
    /// the cost is unknown). A job that holds nothing, or has not ended, is left alone;
    /// settling twice changes nothing.
    pub async fn settle(&self, job_id: Uuid) -> Result<(), BudgetError> {
        self.settle_with(job_id, None).await
    }

    /// [`Budgets::settle`] for a job the caller has just seen succeed: it cost `cost`, its
    /// list price (`None`: unknown), without reading its usage row.
    pub async fn settle_succeeded(
        &self,
        job_id: Uuid,
        cost: Option<Usd>,
    ) -> Result<(), BudgetError> {
        self.settle_with(job_id, Some(cost)).await
    }

    /// `known`: the cost when the caller knows it (`Some(None)`: known to be unknown).
    async fn settle_with(
        &self,
        job_id: Uuid,
        known: Option<Option<Usd>>,
    ) -> Result<(), BudgetError> {
        let held = match &self.ledger {
            Ledger::Database => self.store.budgets().holds(job_id).await?.then_some(None),
            Ledger::Redis(redis) => redis.held(job_id).await?.map(Some),
        };
        let Some(held) = held else {
            return Ok(());
        };
        let cost = match known {
            Some(cost) => cost,
            None => {
                let Some(usage) = self.store.usage().of_job(job_id).await? else {
                    return Ok(());
                };
                match usage.cost_basis {
                    CostBasis::NotAccepted => Some(Usd::ZERO),
                    CostBasis::ListPrice => usage.cost,
                    CostBasis::Unknown => None,
                }
            }
        };
        match (&self.ledger, held) {
            (Ledger::Redis(redis), Some(names)) => redis.settle(job_id, &names, cost).await?,
            _ => self.store.budgets().settle(job_id, cost).await?,
        }
        Ok(())
    }

    /// Gives back everything job `job_id` holds, spending nothing: for a job that left its
    /// provider before the provider accepted anything (a move to its next fallback, which
    /// reserves anew on its own provider).
    pub async fn release(&self, job_id: Uuid) -> Result<(), BudgetError> {
        match &self.ledger {
            Ledger::Database => self.store.budgets().settle(job_id, Some(Usd::ZERO)).await?,
            Ledger::Redis(redis) => {
                if let Some(names) = redis.held(job_id).await? {
                    redis.settle(job_id, &names, Some(Usd::ZERO)).await?;
                }
            }
        }
        Ok(())
    }

    /// Whether job `job_id` holds anything now.
    pub async fn holds(&self, job_id: Uuid) -> Result<bool, BudgetError> {
        match &self.ledger {
            Ledger::Database => Ok(self.store.budgets().holds(job_id).await?),
            Ledger::Redis(redis) => Ok(redis.held(job_id).await?.is_some()),
        }
    }

    /// The limits that apply to `owner`'s jobs at `provider`: the project's and the
    /// user's, overall and at that provider ([`LimitsCache`]).
    async fn applicable(
        &self,
        owner: ProjectUser,
        provider: ProviderId,
    ) -> Result<Arc<Vec<StoredLimit>>, BudgetError> {
        if let Some(limits) = self.limits.get(owner, provider) {
            return Ok(limits);
        }
        let limits = Arc::new(
            self.store
                .budgets()
                .applicable(owner, provider.as_str())
                .await?,
        );
        self.limits.put(owner, provider, Arc::clone(&limits));
        Ok(limits)
    }

    async fn standing(&self, counters: &[BudgetCounter]) -> Result<Vec<Standing>, BudgetError> {
        match &self.ledger {
            Ledger::Database => Ok(self.store.budgets().standing(counters).await?),
            Ledger::Redis(redis) => redis.standing(&self.store, counters).await,
        }
    }

    /// The counter of `limit` in the period containing `now`.
    fn counter(&self, project_id: Uuid, limit: &StoredLimit, now: DateTime<Utc>) -> BudgetCounter {
        let (from, to) = limit.period.bounds(now);
        let name = format!(
            "{project_id}:{}:{}:{}:{}",
            limit
                .user_id
                .map_or_else(|| "-".to_owned(), |u| u.to_string()),
            limit.provider.as_deref().unwrap_or("*"),
            limit.period,
            from.format("%Y-%m-%d"),
        );
        BudgetCounter {
            name,
            scope: SpendScope {
                project_id,
                user_id: limit.user_id,
                provider: limit.provider.clone(),
                from,
                to,
            },
            limit: limit.limit,
            expires_at: to + chrono_duration(self.hold + GRACE),
        }
    }
}

impl LimitsCache {
    fn get(&self, owner: ProjectUser, provider: ProviderId) -> Option<Arc<Vec<StoredLimit>>> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(&(owner, provider))
            .filter(|(read, _)| read.elapsed() < LIMITS_TTL)
            .map(|(_, limits)| Arc::clone(limits))
    }

    fn put(&self, owner: ProjectUser, provider: ProviderId, limits: Arc<Vec<StoredLimit>>) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= LIMITS_KEPT {
            entries.clear();
        }
        entries.insert((owner, provider), (Instant::now(), limits));
    }

    fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

/// What `limit` leaves after what is spent and held, never below zero.
fn remaining(limit: Usd, standing: Standing) -> Usd {
    let used = standing
        .spent
        .micros()
        .saturating_add(standing.reserved.micros());
    Usd::from_micros(limit.micros().saturating_sub(used).max(0))
}

fn refused(limit: &StoredLimit, remaining: Usd, estimate: Option<Usd>) -> BudgetError {
    BudgetError::Exceeded(Box::new(Refusal {
        user_id: limit.user_id,
        provider: limit.provider.clone(),
        period: limit.period,
        limit: limit.limit,
        remaining,
        estimate,
    }))
}

fn chrono_duration(d: Duration) -> chrono::TimeDelta {
    chrono::TimeDelta::from_std(d).unwrap_or(chrono::TimeDelta::MAX)
}
