//! Generation jobs: `/v1/jobs…` and `/v1/users/{user_id}/jobs` (scopes `jobs:read`,
//! `jobs:write`).

use std::time::Duration;

use byok_core::{GenerationRequest, JobPage, JobStatus, JobView};
use reqwest::Method;
use tokio::time::Instant;
use uuid::Uuid;

use crate::client::REPLAYED;
use crate::provider_ids::Shape;
use crate::{Client, ClientError, IdempotencyKey};

/// The answer of [`Client::create_job`].
#[derive(Debug, Clone, PartialEq)]
pub struct Enqueued {
    /// The job, `queued` (or, for a replay, as it is now).
    pub job: JobView,
    /// The `Idempotency-Key` had been used with this request before: this is the first
    /// job, and nothing new was queued.
    pub replayed: bool,
}

/// The filter and page of [`Client::list_jobs`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListJobs {
    /// Only jobs in this status.
    pub status: Option<JobStatus>,
    /// Page size, 1 to 100 (the server's default: 20).
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<Uuid>,
}

impl ListJobs {
    /// The same filter for the page after `page`; `None` after the last page.
    pub fn after(&self, page: &JobPage) -> Option<ListJobs> {
        page.next_cursor.map(|cursor| ListJobs {
            cursor: Some(cursor),
            ..self.clone()
        })
    }
}

impl Client {
    /// Enqueues a job (`POST /v1/jobs`). Everything is checked before anything is stored:
    /// the request's shape and the model's catalogue (422 `invalid_request`,
    /// `model_retired`), `image_url`, the user's key (`credentials_missing`,
    /// `credentials_invalid`).
    ///
    /// With an `idempotency_key` the call is retried like a read (429, 503, connections
    /// that failed): the server returns the first job for a repeated key, so a retry cannot
    /// enqueue twice, including after a 503 that came once the job was stored. Without one
    /// it is sent once and every error is returned: a second attempt could enqueue a
    /// second job.
    pub async fn create_job(
        &self,
        request: &GenerationRequest,
        idempotency_key: Option<&IdempotencyKey>,
    ) -> Result<Enqueued, ClientError> {
        let (job, headers) = self
            .call(Method::POST, &["v1", "jobs"])
            .json(request)?
            .idempotent_with(idempotency_key)
            .json_with_providers(Shape::Job)
            .await?;
        let replayed = headers.get(REPLAYED).is_some_and(|v| v == "true");
        Ok(Enqueued { job, replayed })
    }

    /// The job; a 404 `not_found` when it does not exist or belongs to another project.
    pub async fn get_job(&self, id: Uuid) -> Result<JobView, ClientError> {
        let id = id.to_string();
        let (job, _) = self
            .call(Method::GET, &["v1", "jobs", &id])
            .json_with_providers(Shape::Job)
            .await?;
        Ok(job)
    }

    /// Cancels a live job (`POST /v1/jobs/{id}/cancel`); a worker cancels it at the provider
    /// where it can. A final job is a 409 `conflict` whose `details.status` says which. Sent
    /// once: a retry after a first attempt that went through would answer that 409.
    pub async fn cancel_job(&self, id: Uuid) -> Result<JobView, ClientError> {
        let id = id.to_string();
        let (job, _) = self
            .call(Method::POST, &["v1", "jobs", &id, "cancel"])
            .once()
            .json_with_providers(Shape::Job)
            .await?;
        Ok(job)
    }

    /// A page of `user`'s jobs, newest first. Pass [`ListJobs::after`] for the next page.
    pub async fn list_jobs(&self, user: Uuid, query: &ListJobs) -> Result<JobPage, ClientError> {
        let user = user.to_string();
        let mut call = self.call(Method::GET, &["v1", "users", &user, "jobs"]);
        if let Some(status) = query.status {
            call = call.query("status", status.as_str());
        }
        if let Some(limit) = query.limit {
            call = call.query("limit", &limit.to_string());
        }
        if let Some(cursor) = query.cursor {
            call = call.query("cursor", &cursor.to_string());
        }
        let (page, _) = call.json_with_providers(Shape::JobPage).await?;
        Ok(page)
    }

    /// Reads the job every `poll_every` until it is final (`succeeded`, `failed`,
    /// `cancelled`) and returns it; after `timeout`, [`ClientError::WaitTimedOut`] with its
    /// last state. Each read is retried by the policy like any read. A program with many
    /// jobs in flight is better served by webhooks ([`verify_webhook`](crate::verify_webhook))
    /// or [`Client::job_events`].
    pub async fn wait_for_job(
        &self,
        id: Uuid,
        poll_every: Duration,
        timeout: Duration,
    ) -> Result<JobView, ClientError> {
        let deadline = Instant::now() + timeout;
        loop {
            let job = self.get_job(id).await?;
            if job.status.is_terminal() {
                return Ok(job);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(ClientError::WaitTimedOut {
                    job: Box::new(job),
                    waited: timeout,
                });
            }
            // The API is a producer's only window on a job without webhooks: looking again
            // is how it learns that the job moved.
            tokio::time::sleep(poll_every.min(deadline - now)).await;
        }
    }
}
