//! `GET /v1/projects` (operator tokens, scope `admin`).

use byok_core::ProjectList;
use reqwest::Method;

use crate::{Client, ClientError};

impl Client {
    /// Every project, oldest first. Needs a token with the `admin` scope (else a 403
    /// `insufficient_scope`).
    pub async fn projects(&self) -> Result<ProjectList, ClientError> {
        self.call(Method::GET, &["v1", "projects"])
            .json_answer()
            .await
    }
}
