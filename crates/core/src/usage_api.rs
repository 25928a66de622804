//! The body of `GET /v1/usage` and `GET /v1/users/{user_id}/usage`, shared by the server and
//! clients: what ended jobs made and cost, summed per group.

use chrono::{DateTime, Datelike as _, NaiveDate, TimeZone as _, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Usd;

/// How usage is grouped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum UsageGroupBy {
    /// One group per provider.
    #[default]
    Provider,
    /// One per provider and model.
    Model,
    /// One per calendar day (UTC) the jobs ended on.
    Day,
    /// One per user.
    User,
}

impl UsageGroupBy {
    /// The name in a query string.
    pub fn as_str(self) -> &'static str {
        match self {
            UsageGroupBy::Provider => "provider",
            UsageGroupBy::Model => "model",
            UsageGroupBy::Day => "day",
            UsageGroupBy::User => "user",
        }
    }
}

impl std::str::FromStr for UsageGroupBy {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        [
            UsageGroupBy::Provider,
            UsageGroupBy::Model,
            UsageGroupBy::Day,
            UsageGroupBy::User,
        ]
        .into_iter()
        .find(|g| g.as_str() == s)
        .ok_or(())
    }
}

/// The sums of some ended jobs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UsageTotals {
    /// Jobs that ended (succeeded, failed or cancelled).
    pub jobs: u64,
    /// Of which succeeded.
    pub succeeded: u64,
    /// Seconds of video the succeeded jobs asked for.
    pub video_seconds: u64,
    /// The estimated cost of the jobs whose cost is known, in US dollars: list prices of
    /// the succeeded ones (fixed when each was enqueued), nothing for those the provider
    /// never accepted.
    pub cost_usd: Usd,
    /// Jobs whose cost is unknown, not in `cost_usd`: their model has no known prices, or
    /// they failed or were cancelled after the provider may have started them.
    pub jobs_cost_unknown: u64,
    /// The providers' own compute figures, summed, in milliseconds (Replicate, fal).
    pub provider_compute_ms: u64,
}

impl UsageTotals {
    /// `self` and `other` together.
    pub fn plus(self, other: UsageTotals) -> UsageTotals {
        UsageTotals {
            jobs: self.jobs.saturating_add(other.jobs),
            succeeded: self.succeeded.saturating_add(other.succeeded),
            video_seconds: self.video_seconds.saturating_add(other.video_seconds),
            cost_usd: self.cost_usd.plus(other.cost_usd).unwrap_or(self.cost_usd),
            jobs_cost_unknown: self
                .jobs_cost_unknown
                .saturating_add(other.jobs_cost_unknown),
            provider_compute_ms: self
                .provider_compute_ms
                .saturating_add(other.provider_compute_ms),
        }
    }
}

/// One group's sums: the key members of the grouping asked for, and the totals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UsageGroupView {
    /// The provider (`group_by=provider` or `model`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub provider: Option<String>,
    /// The model (`group_by=model`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub model: Option<String>,
    /// The day, `YYYY-MM-DD` in UTC (`group_by=day`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub day: Option<String>,
    /// The user (`group_by=user`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub user_id: Option<Uuid>,
    /// Its sums.
    #[serde(flatten)]
    pub totals: UsageTotals,
}

/// The answer of the usage routes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UsageReport {
    /// Jobs that ended at or after this time …
    pub from: DateTime<Utc>,
    /// … and before this one.
    pub to: DateTime<Utc>,
    /// Only this user's jobs (`GET /v1/users/{user_id}/usage`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub user_id: Option<Uuid>,
    /// How `groups` are made.
    pub group_by: UsageGroupBy,
    /// Every group together.
    pub total: UsageTotals,
    /// The groups, ordered by their key.
    pub groups: Vec<UsageGroupView>,
}

/// A time of a usage query: RFC 3339 (`2026-12-01T00:00:00Z`), or a day (`2026-12-01`,
/// its start in UTC); `None` otherwise.
pub fn parse_usage_time(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Some(time.with_timezone(&Utc));
    }
    let day = NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
    Some(Utc.from_utc_datetime(&day.and_hms_opt(0, 0, 0)?))
}

/// The first instant of `time`'s month, UTC: where a usage query starts by default.
pub fn usage_month_start(time: DateTime<Utc>) -> DateTime<Utc> {
    NaiveDate::from_ymd_opt(time.year(), time.month(), 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map_or(time, |d| Utc.from_utc_datetime(&d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc_3339_or_days() {
        assert_eq!(
            parse_usage_time("2026-12-01").unwrap().to_rfc3339(),
            "2026-12-01T00:00:00+00:00"
        );
        assert_eq!(
            parse_usage_time("2026-12-01T10:00:00+02:00")
                .unwrap()
                .to_rfc3339(),
            "2026-12-01T08:00:00+00:00"
        );
        for bad in ["yesterday", "2026-13-01", "", "1733011200"] {
            assert_eq!(parse_usage_time(bad), None, "{bad}");
        }
        let mid = parse_usage_time("2026-02-17T13:14:15Z").unwrap();
        assert_eq!(
            usage_month_start(mid).to_rfc3339(),
            "2026-02-01T00:00:00+00:00"
        );
    }

    #[test]
    fn group_names_read_back() {
        for g in [
            UsageGroupBy::Provider,
            UsageGroupBy::Model,
            UsageGroupBy::Day,
            UsageGroupBy::User,
        ] {
            assert_eq!(g.as_str().parse::<UsageGroupBy>(), Ok(g));
            assert_eq!(serde_json::to_value(g).unwrap(), g.as_str());
        }
        assert!("week".parse::<UsageGroupBy>().is_err());
    }
}
