//! The body of `GET /v1/users/{user_id}/jobs`, shared by the server and clients.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::JobView;

/// A page of jobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct JobPage {
    pub user_id: Uuid,
    /// Newest first.
    pub jobs: Vec<JobView>,
    /// Pass as `cursor` for the next (older) page; `null` on the last page.
    #[cfg_attr(feature = "openapi", schema(required))]
    pub next_cursor: Option<Uuid>,
}
