//! `GET /v1/projects`: the projects, for operator tokens (`admin`).

use axum::Json;
use axum::extract::State;
use byok_core::{ProjectList, ProjectView};

use crate::AppState;
use crate::error::ApiError;

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
            .map(|p| ProjectView {
                id: p.id,
                name: p.name,
                created_at: p.created_at,
            })
            .collect(),
    }))
}
