//! Receiving webhooks: checking a delivery's Standard Webhooks signature
//! (<https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md>)
//! with `byok-webhooks`, and reading its payload.

use std::time::{SystemTime, UNIX_EPOCH};

use byok_core::{BatchView, EventType, JobView};
use byok_webhooks::{SigningSecret, VerifyError};
use chrono::{DateTime, Utc};
use http::HeaderMap;
use serde::Deserialize;
use serde_json::Value;

use crate::provider_ids::{self, Shape};

/// One verified delivery: the payload `{type, timestamp, data}` and the delivery's id.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookEvent {
    /// The `webhook-id` header: the same on every attempt of one event, so a receiver that
    /// remembers the ids it handled handles each event once.
    pub id: String,
    /// What happened, e.g. `job.succeeded` (kept as sent: [`WebhookEvent::kind`] reads it,
    /// and a type newer than this client is still delivered).
    pub event_type: String,
    /// When it happened.
    pub timestamp: DateTime<Utc>,
    /// What it happened to: a job (`job.*`), a batch (`batch.completed`), or a user's key
    /// without key material (`credential.invalidated`).
    pub data: Value,
}

/// Why a delivery is refused: answer it with a 4xx and do not act on it.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// `webhook-id`, `webhook-timestamp` or `webhook-signature` is missing or not text.
    #[error("the delivery has no usable `{0}` header")]
    MissingHeader(&'static str),
    /// The signature does not verify with any of the secrets, or the timestamp is outside
    /// the tolerance (a replay).
    #[error("the delivery does not verify: {0}")]
    Signature(#[from] VerifyError),
    /// Signed, but not a payload (or its `data` is not what its type says).
    #[error("the delivery's body is not an event: {0}")]
    Payload(#[source] serde_json::Error),
}

#[derive(Deserialize)]
struct Payload {
    #[serde(rename = "type")]
    event_type: String,
    timestamp: DateTime<Utc>,
    data: Value,
}

/// Verifies a delivery as it arrived (its headers and the body's exact bytes) against the
/// endpoint's `secrets` (several while a secret is rotated: the old and the new one), and
/// returns its event. The timestamp must be within
/// [`TOLERANCE`](byok_webhooks::TOLERANCE) of this machine's clock. Verify before parsing:
/// the bytes signed are the body as sent, not a re-serialisation.
pub fn verify_webhook(
    secrets: &[SigningSecret],
    headers: &HeaderMap,
    body: &[u8],
) -> Result<WebhookEvent, WebhookError> {
    let header = |name: &'static str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .ok_or(WebhookError::MissingHeader(name))
    };
    let id = header("webhook-id")?;
    let timestamp = header("webhook-timestamp")?;
    let signature = header("webhook-signature")?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    byok_webhooks::verify(secrets, id, timestamp, signature, body, now)?;
    let payload: Payload = serde_json::from_slice(body).map_err(WebhookError::Payload)?;
    Ok(WebhookEvent {
        id: id.to_owned(),
        event_type: payload.event_type,
        timestamp: payload.timestamp,
        data: payload.data,
    })
}

impl WebhookEvent {
    /// The event's type, when this client knows it.
    pub fn kind(&self) -> Option<EventType> {
        self.event_type.parse().ok()
    }

    /// The job of a `job.*` event (as `GET /v1/jobs/{id}` showed it when the event was
    /// made); `None` for other events.
    pub fn job(&self) -> Result<Option<JobView>, WebhookError> {
        if !self.kind().is_some_and(EventType::is_job_event) {
            return Ok(None);
        }
        provider_ids::decode_value(self.data.clone(), Shape::Job)
            .map(Some)
            .map_err(WebhookError::Payload)
    }

    /// The batch of a `batch.completed` event (as `GET /v1/batches/{id}` shows it); `None`
    /// for other events.
    pub fn batch(&self) -> Result<Option<BatchView>, WebhookError> {
        if self.kind() != Some(EventType::BatchCompleted) {
            return Ok(None);
        }
        serde_json::from_value(self.data.clone())
            .map(Some)
            .map_err(WebhookError::Payload)
    }
}
