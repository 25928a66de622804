//! `projects`: one producer app or environment each. Users, their keys and
//! jobs, and the tokens acting for them belong to one project.

use std::fmt;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::db::with_pool;
use crate::sql_types::{DbUuid, from_row};
use crate::{Store, StoreError};

/// A project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    /// Its id (UUIDv7; the `default` project's is the nil UUID).
    pub id: Uuid,
    /// Its unique name, e.g. `sceneflow-prod`.
    pub name: String,
    /// Created.
    pub created_at: DateTime<Utc>,
}

from_row! {
    struct ProjectRow {
        id: DbUuid,
        name: String,
        created_at: DateTime<Utc>,
    }
}

impl From<ProjectRow> for Project {
    fn from(row: ProjectRow) -> Self {
        Project {
            id: row.id.0,
            name: row.name,
            created_at: row.created_at,
        }
    }
}

/// Whether `name` is a valid project name: 1 to 64 characters of lowercase
/// letters, digits, `-`, `_` and `.`, starting with a letter or digit. Names
/// appear in commands, URLs and logs, so they stay plain.
pub fn is_valid_project_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
        })
}

/// Queries on `projects`.
#[derive(Clone, Copy)]
pub struct ProjectRepo<'a> {
    store: &'a Store,
}

impl fmt::Debug for ProjectRepo<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProjectRepo")
    }
}

impl<'a> ProjectRepo<'a> {
    pub(crate) fn new(store: &'a Store) -> Self {
        Self { store }
    }

    /// Creates a project. A name already taken is
    /// [`StoreError::Conflict`]; an invalid one [`StoreError::Invalid`].
    pub async fn create(&self, name: &str) -> Result<Project, StoreError> {
        if !is_valid_project_name(name) {
            return Err(StoreError::Invalid(
                "a project name is 1-64 characters of a-z 0-9 - _ . starting with a letter or digit",
            ));
        }
        let project = Project {
            id: Uuid::now_v7(),
            name: name.to_owned(),
            created_at: crate::now(),
        };
        let _write = self.store.write_guard().await;
        let inserted = with_pool!(self.store, |pool| sqlx::query(
            "INSERT INTO projects (id, name, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO NOTHING"
        )
        .bind(DbUuid(project.id))
        .bind(&project.name)
        .bind(project.created_at)
        .execute(pool)
        .await?
        .rows_affected());
        if inserted == 0 {
            return Err(StoreError::Conflict("a project with this name exists"));
        }
        Ok(project)
    }

    /// Every project, oldest first.
    pub async fn list(&self) -> Result<Vec<Project>, StoreError> {
        let rows: Vec<ProjectRow> = with_pool!(self.store, |pool| sqlx::query_as(
            "SELECT id, name, created_at FROM projects ORDER BY created_at, id"
        )
        .fetch_all(pool)
        .await?);
        Ok(rows.into_iter().map(Project::from).collect())
    }

    /// The project with this id.
    pub async fn get(&self, id: Uuid) -> Result<Option<Project>, StoreError> {
        let row: Option<ProjectRow> = with_pool!(self.store, |pool| sqlx::query_as(
            "SELECT id, name, created_at FROM projects WHERE id = $1"
        )
        .bind(DbUuid(id))
        .fetch_optional(pool)
        .await?);
        Ok(row.map(Project::from))
    }

    /// The project named by `name_or_id`: its name, or its id.
    pub async fn find(&self, name_or_id: &str) -> Result<Option<Project>, StoreError> {
        if let Ok(id) = Uuid::parse_str(name_or_id) {
            return self.get(id).await;
        }
        let row: Option<ProjectRow> = with_pool!(self.store, |pool| sqlx::query_as(
            "SELECT id, name, created_at FROM projects WHERE name = $1"
        )
        .bind(name_or_id)
        .fetch_optional(pool)
        .await?);
        Ok(row.map(Project::from))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_names_are_plain() {
        for good in ["default", "sceneflow-prod", "a", "app_2.staging", "9lives"] {
            assert!(is_valid_project_name(good), "{good}");
        }
        let long = "a".repeat(65);
        for bad in ["", "Prod", "-x", ".x", "a b", "a/b", "é", long.as_str()] {
            assert!(!is_valid_project_name(bad), "{bad}");
        }
    }
}
