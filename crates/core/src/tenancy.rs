//! Projects, the users inside them, and what a producer token may do.
//!
//! A project is one producer app or environment ("sceneflow-prod"). Users,
//! their stored keys, their jobs and the tokens that act for them belong to
//! one project: the same user id in two projects is two users, and nothing
//! of one project is visible through a token of another.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

/// The project everything made before projects existed belongs to, named
/// `default`. A fixed id, the same in every database, because values sealed
/// before projects existed (`v1:`) carry no project and open only here.
pub const DEFAULT_PROJECT_ID: Uuid = Uuid::nil();

/// The name of [`DEFAULT_PROJECT_ID`].
pub const DEFAULT_PROJECT_NAME: &str = "default";

/// A user of a producer app: the project and the app's own user id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProjectUser {
    /// The project the user belongs to.
    pub project_id: Uuid,
    /// The producer app's id for the user.
    pub user_id: Uuid,
}

impl ProjectUser {
    /// `user_id` of `project_id`.
    pub fn new(project_id: Uuid, user_id: Uuid) -> Self {
        Self {
            project_id,
            user_id,
        }
    }
}

/// What a producer token may do. Written `area:action`, as in OAuth 2.0
/// scopes (RFC 6749 §3.3): space-free strings, compared exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// List and read a user's stored keys (hints and status, never the key).
    CredentialsRead,
    /// Store, replace, check and delete a user's keys.
    CredentialsWrite,
    /// Read jobs and download their videos.
    JobsRead,
    /// Enqueue and cancel jobs.
    JobsWrite,
    /// Manage the project's webhook endpoints, their secrets and deliveries.
    Webhooks,
    /// Read the project's usage and estimated spend, and its budgets.
    UsageRead,
    /// Set and remove the project's and its users' budgets.
    BudgetsWrite,
    /// The operator dashboard, read-only: every page, no action.
    DashboardRead,
    /// Operator actions: projects, the dashboard.
    Admin,
}

impl Scope {
    /// Every scope, in the order they are listed.
    pub const ALL: [Scope; 9] = [
        Scope::CredentialsRead,
        Scope::CredentialsWrite,
        Scope::JobsRead,
        Scope::JobsWrite,
        Scope::Webhooks,
        Scope::UsageRead,
        Scope::BudgetsWrite,
        Scope::DashboardRead,
        Scope::Admin,
    ];

    /// The scope's name, e.g. `jobs:read`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::CredentialsRead => "credentials:read",
            Scope::CredentialsWrite => "credentials:write",
            Scope::JobsRead => "jobs:read",
            Scope::JobsWrite => "jobs:write",
            Scope::Webhooks => "webhooks",
            Scope::UsageRead => "usage:read",
            Scope::BudgetsWrite => "budgets:write",
            Scope::DashboardRead => "dashboard:read",
            Scope::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no scope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown scope `{0}`; scopes are credentials:read, credentials:write, jobs:read, jobs:write, webhooks, usage:read, budgets:write, dashboard:read, admin"
)]
pub struct UnknownScope(pub String);

impl FromStr for Scope {
    type Err = UnknownScope;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| UnknownScope(s.chars().take(64).collect()))
    }
}

/// A token's set of scopes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scopes(BTreeSet<Scope>);

impl Scopes {
    /// What a token gets when none are named: everything a producer app
    /// does (today's behaviour inside its project), not operator actions nor the
    /// operator dashboard.
    pub fn producer() -> Scopes {
        Scopes(
            Scope::ALL
                .into_iter()
                .filter(|s| !matches!(s, Scope::Admin | Scope::DashboardRead))
                .collect(),
        )
    }

    /// Whether `scope` is granted.
    pub fn contains(&self, scope: Scope) -> bool {
        self.0.contains(&scope)
    }

    /// The scopes, in [`Scope::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = Scope> + '_ {
        self.0.iter().copied()
    }

    /// Whether no scope is granted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Parses a list separated by commas or spaces (`jobs:read,jobs:write`,
    /// or the stored `jobs:read jobs:write`). Repeats collapse; an unknown
    /// name is an error, never silently dropped.
    pub fn parse_list(list: &str) -> Result<Scopes, UnknownScope> {
        list.split([',', ' '])
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::parse)
            .collect::<Result<BTreeSet<_>, _>>()
            .map(Scopes)
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        Scopes(iter.into_iter().collect())
    }
}

/// Space-separated, the stored form and OAuth's.
impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, scope) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(scope.as_str())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_round_trip_through_their_names_and_lists() {
        for scope in Scope::ALL {
            assert_eq!(scope.as_str().parse::<Scope>().unwrap(), scope);
        }
        let scopes = Scopes::parse_list("jobs:write, jobs:read,jobs:read").unwrap();
        assert_eq!(scopes.to_string(), "jobs:read jobs:write");
        assert_eq!(Scopes::parse_list(&scopes.to_string()).unwrap(), scopes);
        assert_eq!(
            Scopes::parse_list("jobs:read,jobs:delete").unwrap_err(),
            UnknownScope("jobs:delete".into())
        );
        assert!(Scopes::parse_list("").unwrap().is_empty());
    }

    #[test]
    fn producer_tokens_get_everything_but_admin() {
        let producer = Scopes::producer();
        assert!(!producer.contains(Scope::Admin));
        assert_eq!(
            producer.to_string(),
            "credentials:read credentials:write jobs:read jobs:write webhooks usage:read budgets:write"
        );
    }
}
