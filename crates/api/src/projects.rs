//! `GET /v1/projects`: the projects, for operator tokens (`admin`).

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::AppState;
use crate::error::ApiError;

/// A project: one producer app or environment.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProjectResource {
    id: Uuid,
    /// Unique, e.g. `sceneflow-prod`; the first project is `default`.
    name: String,
    created_at: DateTime<Utc>,
}

/// The body of `GET /v1/projects`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProjectList {
    /// Oldest first.
    projects: Vec<ProjectResource>,
}

#[utoipa::path(
    get,
    path = "/v1/projects",
    operation_id = "list_projects",
    summary = "List the projects",
    tag = "projects",
    responses((status = 200, description = "Every project, oldest first", body = ProjectList)),
)]
pub(crate) async fn list(State(state): State<AppState>) -> Result<Json<ProjectList>, ApiError> {
    let projects = state
        .store()
        .projects()
        .list()
        .await
        .map_err(|e| ApiError::store(&e))?;
    Ok(Json(ProjectList {
        projects: projects
            .into_iter()
            .map(|p| ProjectResource {
                id: p.id,
                name: p.name,
                created_at: p.created_at,
            })
            .collect(),
    }))
}
