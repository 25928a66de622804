//! Batches of jobs: `/v1/batches…` (scopes `jobs:write`, `jobs:read`).

use byok_core::{BatchJobPage, BatchRequest, BatchView};
use reqwest::Method;
use uuid::Uuid;

use crate::client::REPLAYED;
use crate::provider_ids::Shape;
use crate::{Client, ClientError, IdempotencyKey};

/// The answer of [`Client::create_batch`].
#[derive(Debug, Clone, PartialEq)]
pub struct BatchCreated {
    /// The batch, its jobs `queued` (or, for a replay, as it is now).
    pub batch: BatchView,
    /// The `Idempotency-Key` had been used with this batch before: this is the first
    /// batch, and nothing new was queued.
    pub replayed: bool,
}

/// The page of [`Client::batch_jobs`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListBatchJobs {
    /// Page size, 1 to 100 (the server's default: 20).
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<Uuid>,
}

impl ListBatchJobs {
    /// The page after `page`; `None` after the last one.
    pub fn after(&self, page: &BatchJobPage) -> Option<ListBatchJobs> {
        page.next_cursor.map(|cursor| ListBatchJobs {
            cursor: Some(cursor),
            ..*self
        })
    }
}

impl Client {
    /// Enqueues 1–1,000 jobs as one unit (`POST /v1/batches`). Every job is checked as
    /// [`Client::create_job`] checks one, and one bad job refuses the batch: a 422
    /// `invalid_request` whose `details["items"]` lists every bad job by `index` (with its
    /// `code`, `message` and `field`); nothing is stored then.
    ///
    /// As with a job, an `idempotency_key` makes the call safe to retry (and it is retried
    /// by the policy); the same key with another batch is a 409 `conflict`. Without one it
    /// is sent once.
    pub async fn create_batch(
        &self,
        batch: &BatchRequest,
        idempotency_key: Option<&IdempotencyKey>,
    ) -> Result<BatchCreated, ClientError> {
        let response = self
            .call(Method::POST, &["v1", "batches"])
            .json(batch)?
            .idempotent_with(idempotency_key)
            .send()
            .await?;
        let replayed = response
            .headers()
            .get(REPLAYED)
            .is_some_and(|v| v == "true");
        let batch = crate::client::read_json(response).await?;
        Ok(BatchCreated { batch, replayed })
    }

    /// A batch with its jobs counted by status and its `progress`; a 404 `not_found` when
    /// it does not exist or belongs to another project.
    pub async fn get_batch(&self, id: Uuid) -> Result<BatchView, ClientError> {
        let id = id.to_string();
        self.call(Method::GET, &["v1", "batches", &id])
            .json_answer()
            .await
    }

    /// A page of a batch's jobs, in the batch's order. Pass [`ListBatchJobs::after`] for
    /// the next page.
    pub async fn batch_jobs(
        &self,
        id: Uuid,
        query: &ListBatchJobs,
    ) -> Result<BatchJobPage, ClientError> {
        let id = id.to_string();
        let mut call = self.call(Method::GET, &["v1", "batches", &id, "jobs"]);
        if let Some(limit) = query.limit {
            call = call.query("limit", &limit.to_string());
        }
        if let Some(cursor) = query.cursor {
            call = call.query("cursor", &cursor.to_string());
        }
        let (page, _) = call.json_with_providers(Shape::JobPage).await?;
        Ok(page)
    }

    /// Cancels every job of the batch still live; jobs already final stay as they are.
    /// Repeating it changes nothing more, so it is retried like a read. The batch as it
    /// stands after.
    pub async fn cancel_batch(&self, id: Uuid) -> Result<BatchView, ClientError> {
        let id = id.to_string();
        self.call(Method::POST, &["v1", "batches", &id, "cancel"])
            .json_answer()
            .await
    }
}
