//! Budgets: how much a project, or one of its users, may spend in a calendar period, overall
//! or at one provider (docs/budgets.md). The types here are shared by the server, the
//! workers and clients; the ledger that enforces them is `byok-budgets`.

use chrono::{DateTime, Datelike as _, Days, Months, NaiveDate, TimeZone as _, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{ProviderId, Usd};

/// The most limits one budget (a project's, or one user's) may have.
pub const MAX_BUDGET_LIMITS: usize = 20;

/// The calendar period a limit resets with, in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum BudgetPeriod {
    /// From 00:00 UTC to the next.
    Day,
    /// From Monday 00:00 UTC (ISO 8601 weeks) to the next.
    Week,
    /// From the first of the month, 00:00 UTC, to the first of the next.
    Month,
}

impl BudgetPeriod {
    /// Every period, in the order listings show them.
    pub const ALL: [BudgetPeriod; 3] = [BudgetPeriod::Day, BudgetPeriod::Week, BudgetPeriod::Month];

    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            BudgetPeriod::Day => "day",
            BudgetPeriod::Week => "week",
            BudgetPeriod::Month => "month",
        }
    }

    /// The period containing `at`: its first instant and the first instant of the next.
    pub fn bounds(self, at: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
        let day = at.date_naive();
        let (start, end) = match self {
            BudgetPeriod::Day => (day, day + Days::new(1)),
            BudgetPeriod::Week => {
                let monday = day - Days::new(u64::from(day.weekday().num_days_from_monday()));
                (monday, monday + Days::new(7))
            }
            BudgetPeriod::Month => {
                let first = NaiveDate::from_ymd_opt(day.year(), day.month(), 1).unwrap_or(day);
                (first, first + Months::new(1))
            }
        };
        let midnight = |d: NaiveDate| Utc.from_utc_datetime(&d.and_time(chrono::NaiveTime::MIN));
        (midnight(start), midnight(end))
    }
}

impl std::fmt::Display for BudgetPeriod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for BudgetPeriod {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        BudgetPeriod::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or(())
    }
}

/// One limit of a budget: at most `limit_usd` in each `period`, at `provider` or (none)
/// at every provider together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BudgetLimit {
    /// Only jobs at this provider count; absent: every job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "runway"))]
    pub provider: Option<ProviderId>,
    /// The calendar period (UTC) the limit resets with.
    pub period: BudgetPeriod,
    /// The most the jobs may cost in one period, in US dollars.
    pub limit_usd: Usd,
}

/// The body of `PUT /v1/budget` and `PUT /v1/users/{user_id}/budget`: the whole set of
/// limits, replacing the one before (an empty list removes them all). At most one limit per
/// provider (or none) and period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PutBudget {
    /// The limits.
    pub limits: Vec<BudgetLimit>,
}

/// A limit and where the current period stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BudgetLimitView {
    /// The limit.
    #[serde(flatten)]
    pub limit: BudgetLimit,
    /// The current period's first instant.
    pub period_start: DateTime<Utc>,
    /// The next period's first instant.
    pub period_end: DateTime<Utc>,
    /// What the jobs that ended in this period cost (as far as known; a job whose cost is
    /// unknown counts its whole estimate).
    pub spent_usd: Usd,
    /// The estimates held by jobs at the provider now.
    pub reserved_usd: Usd,
    /// `limit − spent − reserved`, never below zero: the most the next job may cost.
    pub remaining_usd: Usd,
}

/// A project's or a user's budget, with each limit's current standing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BudgetView {
    /// The user the budget is for; absent: the project's own budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<Uuid>,
    /// The limits, by provider (overall first) then period.
    pub limits: Vec<BudgetLimitView>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn periods_are_calendar_utc() {
        let now = at("2026-12-31T23:59:59Z");
        assert_eq!(
            BudgetPeriod::Day.bounds(now),
            (at("2026-12-31T00:00:00Z"), at("2027-01-01T00:00:00Z"))
        );
        // 2026-12-31 is a Thursday.
        assert_eq!(
            BudgetPeriod::Week.bounds(now),
            (at("2026-12-28T00:00:00Z"), at("2027-01-04T00:00:00Z"))
        );
        assert_eq!(
            BudgetPeriod::Month.bounds(now),
            (at("2026-12-01T00:00:00Z"), at("2027-01-01T00:00:00Z"))
        );
        assert_eq!(
            BudgetPeriod::Month.bounds(at("2028-02-29T12:00:00Z")),
            (at("2028-02-01T00:00:00Z"), at("2028-03-01T00:00:00Z"))
        );
        // A Monday's midnight starts its own week.
        assert_eq!(
            BudgetPeriod::Week.bounds(at("2026-11-30T00:00:00Z")).0,
            at("2026-11-30T00:00:00Z")
        );
    }

    #[test]
    fn limits_read_decimal_dollars() {
        let body: PutBudget = serde_json::from_str(
            r#"{"limits":[{"period":"month","limit_usd":"10.50"},{"provider":"runway","period":"day","limit_usd":"2"}]}"#,
        )
        .unwrap();
        assert_eq!(body.limits[0].limit_usd, Usd::from_micros(10_500_000));
        assert_eq!(body.limits[1].provider, Some(ProviderId::RUNWAY));
        assert!("fortnight".parse::<BudgetPeriod>().is_err());
    }
}
