//! The bodies of the `/v1/webhooks` routes, shared by the server and clients.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::EventType;

/// The body of `POST /v1/webhooks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewWebhookEndpoint {
    /// Where to POST events: https, and a public address (`fetch.allow_private_networks`
    /// admits plain http and private addresses, for local setups).
    #[cfg_attr(feature = "openapi", schema(max_length = 2048))]
    pub url: String,
    /// The event types to receive (at least one).
    pub events: Vec<EventType>,
    /// A note for people.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_length = 500))]
    pub description: String,
}

/// The body of `PATCH /v1/webhooks/{id}`: members left out stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct WebhookEndpointChange {
    /// A new URL (checked as on creation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// New subscriptions (at least one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<EventType>>,
    /// A new note.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `true` re-enables a disabled endpoint (forgetting its failures); `false` pauses it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// A webhook endpoint (never its secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebhookEndpointView {
    /// Its id.
    pub id: Uuid,
    /// Where events are POSTed.
    pub url: String,
    /// The event types it receives.
    pub events: Vec<EventType>,
    /// The project's note.
    pub description: String,
    /// Whether deliveries are made.
    pub enabled: bool,
    /// Why deliveries stopped: `the receiver answered 410 Gone`, `every delivery failed
    /// for 5 days`, or `disabled by the project`.
    #[cfg_attr(feature = "openapi", schema(required))]
    pub disabled_reason: Option<String>,
    /// When deliveries stopped.
    #[cfg_attr(feature = "openapi", schema(required))]
    pub disabled_at: Option<DateTime<Utc>>,
    /// Since when every delivery failed (none while the last one succeeded).
    #[cfg_attr(feature = "openapi", schema(required))]
    pub failing_since: Option<DateTime<Utc>>,
    /// Until when the secret replaced by the last rotation still signs (each delivery
    /// carries both signatures until then).
    #[cfg_attr(feature = "openapi", schema(required))]
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

/// An endpoint with its signing secret: the answer of creation and rotation, the only
/// time the secret is shown.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebhookEndpointWithSecret {
    /// The endpoint.
    #[serde(flatten)]
    pub endpoint: WebhookEndpointView,
    /// The signing secret, `whsec_<base64>`, as the Standard Webhooks libraries take it.
    /// Shown once.
    #[cfg_attr(
        feature = "openapi",
        schema(example = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    )]
    pub secret: String,
}

impl std::fmt::Debug for WebhookEndpointWithSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookEndpointWithSecret")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

/// The project's endpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebhookEndpointList {
    /// Oldest first.
    pub endpoints: Vec<WebhookEndpointView>,
}

/// The answer of `POST /v1/webhooks/job-secret`: the project's secret for jobs' own
/// `webhook_url`s, shown once.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobWebhookSecret {
    /// `whsec_<base64>`.
    pub secret: String,
    /// Until when the secret it replaced still signs (none on the first).
    #[cfg_attr(feature = "openapi", schema(required))]
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for JobWebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobWebhookSecret")
            .field(
                "previous_secret_expires_at",
                &self.previous_secret_expires_at,
            )
            .finish_non_exhaustive()
    }
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum WebhookDeliveryStatus {
    /// An attempt is due or out.
    Pending,
    /// The receiver answered 2xx.
    Succeeded,
    /// Given up.
    Failed,
}

/// One event sent (or being sent) to one endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebhookDelivery {
    /// The delivery's id.
    pub id: Uuid,
    /// The event's id: the `webhook-id` header of every attempt, `msg_<hex>`.
    pub webhook_id: String,
    /// The event's type.
    pub event_type: String,
    /// What it is about (a job or batch id).
    #[cfg_attr(feature = "openapi", schema(required))]
    pub subject_id: Option<Uuid>,
    /// Where it stands.
    pub status: WebhookDeliveryStatus,
    /// Attempts made.
    pub attempts: u32,
    /// When the next attempt is due.
    #[cfg_attr(feature = "openapi", schema(required))]
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The receiver's last HTTP status.
    #[cfg_attr(feature = "openapi", schema(required))]
    pub last_status_code: Option<u16>,
    /// Why the last attempt failed.
    #[cfg_attr(feature = "openapi", schema(required))]
    pub last_error: Option<String>,
    /// At most 1 KiB of the receiver's last answer.
    #[cfg_attr(feature = "openapi", schema(required))]
    pub last_response: Option<String>,
    /// When the event happened.
    pub created_at: DateTime<Utc>,
    /// When it succeeded or was given up.
    #[cfg_attr(feature = "openapi", schema(required))]
    pub finished_at: Option<DateTime<Utc>>,
}

/// A page of an endpoint's deliveries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebhookDeliveryPage {
    /// Newest first.
    pub deliveries: Vec<WebhookDelivery>,
    /// Pass as `cursor` for the next (older) page; `null` on the last page.
    #[cfg_attr(feature = "openapi", schema(required))]
    pub next_cursor: Option<Uuid>,
}

/// The body every webhook delivery and event-stream event carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebhookPayload {
    /// What happened.
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// When it happened.
    pub timestamp: DateTime<Utc>,
    /// What it happened to, as the API shows it: a job (`job.*`), a batch
    /// (`batch.completed`), or the user's key without key material
    /// (`credential.invalidated`: `user_id`, `provider`, `credential_hint`, `reason`,
    /// `invalidated_at`).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub data: serde_json::Value,
}
