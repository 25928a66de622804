//! The body of `GET /v1/projects`, shared by the server and clients.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A project: one producer app or environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = ProjectResource))]
#[serde(deny_unknown_fields)]
pub struct ProjectView {
    pub id: Uuid,
    /// Unique, e.g. `sceneflow-prod`; the first project is `default`.
    pub name: String,
    pub created_at: DateTime<Utc>,
}

/// The body of `GET /v1/projects`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ProjectList {
    /// Oldest first.
    pub projects: Vec<ProjectView>,
}
