//! Webhook endpoints and their deliveries: `/v1/webhooks…` (scope `webhooks`).
//!
//! Creating an endpoint, rotating a secret and asking for another attempt are sent once:
//! each changes something a second attempt would change again (a second endpoint, a
//! second rotation that replaces the secret just shown). Reads, updates and deletes are
//! retried by the policy.

use byok_core::{
    JobWebhookSecret, NewWebhookEndpoint, WebhookDelivery, WebhookDeliveryPage,
    WebhookEndpointChange, WebhookEndpointList, WebhookEndpointView, WebhookEndpointWithSecret,
};
use reqwest::{Method, StatusCode};
use uuid::Uuid;

use crate::{Client, ClientError};

/// The page of [`Client::webhook_deliveries`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListDeliveries {
    /// Page size, 1 to 100 (the server's default: 20).
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<Uuid>,
}

impl ListDeliveries {
    /// The page after `page`; `None` after the last one.
    pub fn after(&self, page: &WebhookDeliveryPage) -> Option<ListDeliveries> {
        page.next_cursor.map(|cursor| ListDeliveries {
            cursor: Some(cursor),
            ..*self
        })
    }
}

impl Client {
    /// Adds an endpoint (`POST /v1/webhooks`) and returns it with its signing secret, shown
    /// this once: keep it where the receiver can read it. The URL must be https to a
    /// public address (a 422 `invalid_request` on `url` otherwise); an unknown event type
    /// is a 422 on `events`. Sent once.
    pub async fn create_webhook(
        &self,
        endpoint: &NewWebhookEndpoint,
    ) -> Result<WebhookEndpointWithSecret, ClientError> {
        self.call(Method::POST, &["v1", "webhooks"])
            .json(endpoint)?
            .once()
            .json_answer()
            .await
    }

    /// The project's endpoints, oldest first (never their secrets).
    pub async fn list_webhooks(&self) -> Result<WebhookEndpointList, ClientError> {
        self.call(Method::GET, &["v1", "webhooks"])
            .json_answer()
            .await
    }

    /// One endpoint; a 404 `not_found` when it does not exist or belongs to another
    /// project.
    pub async fn get_webhook(&self, id: Uuid) -> Result<WebhookEndpointView, ClientError> {
        let id = id.to_string();
        self.call(Method::GET, &["v1", "webhooks", &id])
            .json_answer()
            .await
    }

    /// Changes an endpoint (`PATCH /v1/webhooks/{id}`): members left `None` stay;
    /// `enabled: Some(true)` re-enables a disabled one.
    pub async fn update_webhook(
        &self,
        id: Uuid,
        change: &WebhookEndpointChange,
    ) -> Result<WebhookEndpointView, ClientError> {
        let id = id.to_string();
        self.call(Method::PATCH, &["v1", "webhooks", &id])
            .json(change)?
            .json_answer()
            .await
    }

    /// Removes an endpoint; its deliveries still pending are dropped. A 404 `not_found`
    /// when there is none (also on a retry whose first attempt removed it).
    pub async fn delete_webhook(&self, id: Uuid) -> Result<(), ClientError> {
        let id = id.to_string();
        let response = self
            .call(Method::DELETE, &["v1", "webhooks", &id])
            .send()
            .await?;
        crate::client::expect_status(&response, StatusCode::NO_CONTENT)
    }

    /// Gives an endpoint a new signing secret, shown this once; the old one keeps signing
    /// for 24 hours (each delivery carries both signatures meanwhile). Sent once.
    pub async fn rotate_webhook_secret(
        &self,
        id: Uuid,
    ) -> Result<WebhookEndpointWithSecret, ClientError> {
        let id = id.to_string();
        self.call(Method::POST, &["v1", "webhooks", &id, "rotate-secret"])
            .once()
            .json_answer()
            .await
    }

    /// Makes (or rotates) the project's secret for jobs' own `webhook_url`s, shown this
    /// once; a secret it replaces keeps signing for 24 hours. Sent once.
    pub async fn rotate_job_webhook_secret(&self) -> Result<JobWebhookSecret, ClientError> {
        self.call(Method::POST, &["v1", "webhooks", "job-secret"])
            .once()
            .json_answer()
            .await
    }

    /// A page of an endpoint's deliveries, newest first: event, attempts, last status,
    /// next try. Pass [`ListDeliveries::after`] for the next page.
    pub async fn webhook_deliveries(
        &self,
        endpoint: Uuid,
        query: &ListDeliveries,
    ) -> Result<WebhookDeliveryPage, ClientError> {
        let endpoint = endpoint.to_string();
        let mut call = self.call(Method::GET, &["v1", "webhooks", &endpoint, "deliveries"]);
        if let Some(limit) = query.limit {
            call = call.query("limit", &limit.to_string());
        }
        if let Some(cursor) = query.cursor {
            call = call.query("cursor", &cursor.to_string());
        }
        call.json_answer().await
    }

    /// One more attempt of a finished delivery (same `webhook-id`); a 409 `conflict` while
    /// it is still pending. Sent once.
    pub async fn retry_webhook_delivery(
        &self,
        delivery: Uuid,
    ) -> Result<WebhookDelivery, ClientError> {
        let delivery = delivery.to_string();
        self.call(
            Method::POST,
            &["v1", "webhooks", "deliveries", &delivery, "retry"],
        )
        .once()
        .json_answer()
        .await
    }
}
