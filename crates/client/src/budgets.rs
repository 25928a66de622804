//! Budgets: `/v1/budget` and `/v1/users/{user_id}/budget` (read with `usage:read`, set and
//! removed with `budgets:write`).

use byok_core::{BudgetLimit, BudgetView, PutBudget};
use reqwest::{Method, StatusCode};
use uuid::Uuid;

use crate::{Client, ClientError};

impl Client {
    /// The project's own limits, each with the current period's spent, reserved and
    /// remaining amounts (`GET /v1/budget`).
    pub async fn budget(&self) -> Result<BudgetView, ClientError> {
        self.call(Method::GET, &["v1", "budget"])
            .json_answer()
            .await
    }

    /// One user's limits with their standing (`GET /v1/users/{user_id}/budget`).
    pub async fn user_budget(&self, user: Uuid) -> Result<BudgetView, ClientError> {
        let user = user.to_string();
        self.call(Method::GET, &["v1", "users", &user, "budget"])
            .json_answer()
            .await
    }

    /// Replaces the project's limits with `limits` (`PUT /v1/budget`; none: removes them).
    pub async fn set_budget(&self, limits: &[BudgetLimit]) -> Result<BudgetView, ClientError> {
        self.put_budget(&["v1", "budget"], limits).await
    }

    /// Replaces one user's limits (`PUT /v1/users/{user_id}/budget`).
    pub async fn set_user_budget(
        &self,
        user: Uuid,
        limits: &[BudgetLimit],
    ) -> Result<BudgetView, ClientError> {
        let user = user.to_string();
        self.put_budget(&["v1", "users", &user, "budget"], limits)
            .await
    }

    /// Removes the project's own limits (`DELETE /v1/budget`).
    pub async fn delete_budget(&self) -> Result<(), ClientError> {
        self.delete_budget_at(&["v1", "budget"]).await
    }

    /// Removes one user's limits (`DELETE /v1/users/{user_id}/budget`).
    pub async fn delete_user_budget(&self, user: Uuid) -> Result<(), ClientError> {
        let user = user.to_string();
        self.delete_budget_at(&["v1", "users", &user, "budget"])
            .await
    }

    async fn put_budget(
        &self,
        path: &[&str],
        limits: &[BudgetLimit],
    ) -> Result<BudgetView, ClientError> {
        let body = PutBudget {
            limits: limits.to_vec(),
        };
        // A PUT of the whole set: repeating it is harmless, so it may be retried.
        self.call(Method::PUT, path)
            .json(&body)?
            .json_answer()
            .await
    }

    async fn delete_budget_at(&self, path: &[&str]) -> Result<(), ClientError> {
        let response = self.call(Method::DELETE, path).send().await?;
        crate::client::expect_status(&response, StatusCode::NO_CONTENT)
    }
}
