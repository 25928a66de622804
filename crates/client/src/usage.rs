//! Usage: `/v1/usage` and `/v1/users/{user_id}/usage` (scope `usage:read`).

use byok_core::{UsageGroupBy, UsageReport};
use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::Method;
use uuid::Uuid;

use crate::{Client, ClientError};

/// The span and grouping of [`Client::usage`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageSpan {
    /// Jobs that ended at or after this time (the server's default: the month's start).
    pub from: Option<DateTime<Utc>>,
    /// … and before this one (default: now). At most 366 days after `from`.
    pub to: Option<DateTime<Utc>>,
    /// How to group (default: by provider).
    pub group_by: Option<UsageGroupBy>,
}

impl Client {
    /// What the project's jobs that ended in `span` made and cost, per group and in total
    /// (`GET /v1/usage`). Costs are estimates from list prices fixed when each job was
    /// enqueued; `jobs_cost_unknown` counts the jobs whose cost is not known.
    pub async fn usage(&self, span: &UsageSpan) -> Result<UsageReport, ClientError> {
        self.usage_at(&["v1", "usage"], span).await
    }

    /// The same for one user (`GET /v1/users/{user_id}/usage`).
    pub async fn user_usage(
        &self,
        user: Uuid,
        span: &UsageSpan,
    ) -> Result<UsageReport, ClientError> {
        let user = user.to_string();
        self.usage_at(&["v1", "users", &user, "usage"], span).await
    }

    async fn usage_at(&self, path: &[&str], span: &UsageSpan) -> Result<UsageReport, ClientError> {
        let mut call = self.call(Method::GET, path);
        let time = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::AutoSi, true);
        if let Some(from) = span.from {
            call = call.query("from", &time(from));
        }
        if let Some(to) = span.to {
            call = call.query("to", &time(to));
        }
        if let Some(group_by) = span.group_by {
            call = call.query("group_by", group_by.as_str());
        }
        call.json_answer().await
    }
}
