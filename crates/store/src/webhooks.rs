//! Webhook endpoints, signing secrets and deliveries (docs/webhooks.md). Events themselves
//! are written by the changes that cause them (`outbox.rs`); this is everything else.
//!
//! Secrets are stored sealed (the caller seals them with the key ring, bound to the project
//! and endpoint); this crate never sees them in the clear. Rows are untrusted input: an
//! event type this build does not know is left out of an endpoint's subscriptions, and an
//! unknown delivery status reads as [`StoreError::Malformed`].

use std::collections::HashMap;

use byok_core::EventType;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;
use uuid::Uuid;

use crate::db::with_pool;
use crate::sql_types::{DbUuid, from_row};
use crate::{Store, StoreError};

/// Endpoints a project may have at most (each event is written once per subscribed
/// endpoint, so this bounds the write a transition costs).
pub const MAX_ENDPOINTS_PER_PROJECT: usize = 20;

/// A signing secret as stored: the current one sealed, and during a rotation the previous
/// one until it expires. `Debug` shows neither.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedSecrets {
    /// The current secret, sealed.
    pub current: String,
    /// The secret before the last rotation, sealed, while it still signs.
    pub previous: Option<String>,
    /// When the previous secret stops signing.
    pub previous_expires_at: Option<DateTime<Utc>>,
}

impl SealedSecrets {
    /// The sealed secrets that sign at `now`: the current one first, then the previous
    /// one until it expires.
    pub fn signing_at(&self, now: DateTime<Utc>) -> Vec<&str> {
        let mut secrets = vec![self.current.as_str()];
        if let (Some(previous), Some(until)) = (&self.previous, self.previous_expires_at)
            && now < until
        {
            secrets.push(previous);
        }
        secrets
    }
}

impl std::fmt::Debug for SealedSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedSecrets")
            .field("previous_expires_at", &self.previous_expires_at)
            .finish_non_exhaustive()
    }
}

/// A project's webhook endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookEndpoint {
    /// Its id.
    pub id: Uuid,
    /// Its project.
    pub project_id: Uuid,
    /// Where events are POSTed.
    pub url: String,
    /// The project's note.
    pub description: String,
    /// The event types it receives.
    pub events: Vec<EventType>,
    /// Its signing secrets, sealed.
    pub secrets: SealedSecrets,
    /// When deliveries stopped (`None`: enabled).
    pub disabled_at: Option<DateTime<Utc>>,
    /// Why: `410 Gone`, five days of failures, or the project.
    pub disabled_reason: Option<String>,
    /// The first failure of the current run of failures.
    pub failing_since: Option<DateTime<Utc>>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

/// An endpoint to create. The id is the caller's: the secret is sealed for it first.
#[derive(Debug, Clone)]
pub struct NewEndpoint {
    /// Its id (a UUIDv7).
    pub id: Uuid,
    /// Its project.
    pub project_id: Uuid,
    /// Where events are POSTed (checked by the caller).
    pub url: String,
    /// The project's note.
    pub description: String,
    /// The event types it receives (at least one).
    pub events: Vec<EventType>,
    /// Its signing secret, sealed for (project, id).
    pub sealed_secret: String,
}

/// A change to an endpoint; `None` keeps a field.
#[derive(Debug, Clone, Default)]
pub struct EndpointChange {
    /// A new URL (checked by the caller).
    pub url: Option<String>,
    /// A new note.
    pub description: Option<String>,
    /// New subscriptions (at least one).
    pub events: Option<Vec<EventType>>,
    /// `true` re-enables (forgetting the run of failures), `false` disables.
    pub enabled: Option<bool>,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Waiting for an attempt, or one is out.
    Pending,
    /// The receiver answered 2xx.
    Succeeded,
    /// Given up: every attempt failed, `410 Gone`, or the endpoint was disabled.
    Failed,
}

impl DeliveryStatus {
    fn parse(s: &str) -> Result<DeliveryStatus, StoreError> {
        match s {
            "pending" => Ok(DeliveryStatus::Pending),
            "succeeded" => Ok(DeliveryStatus::Succeeded),
            "failed" => Ok(DeliveryStatus::Failed),
            _ => Err(StoreError::Malformed("webhook_deliveries.status")),
        }
    }
}

/// One stored, sealed webhook secret, for re-sealing under a new key (`byok keys
/// rewrap`). `Debug` leaves the sealed value out.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredSecret {
    /// Its project.
    pub project_id: Uuid,
    /// Its endpoint; `None` for the project's job-webhook secret.
    pub endpoint_id: Option<Uuid>,
    /// The secret a rotation replaced (still signing until it expires), not the current one.
    pub previous: bool,
    /// The sealed value.
    pub sealed: String,
}

impl std::fmt::Debug for StoredSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredSecret")
            .field("project_id", &self.project_id)
            .field("endpoint_id", &self.endpoint_id)
            .field("previous", &self.previous)
            .finish_non_exhaustive()
    }
}

/// One event to one recipient.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// Its id.
    pub id: Uuid,
    /// The event (its id is the `webhook-id` of every attempt).
    pub event_id: Uuid,
    /// The event's type, as stored.
    pub event_type: String,
    /// What the event is about (a job or batch id).
    pub subject_id: Option<Uuid>,
    /// The endpoint; `None` for a job's own `webhook_url`.
    pub endpoint_id: Option<Uuid>,
    /// A job's own `webhook_url`.
    pub url: Option<String>,
    /// Its project.
    pub project_id: Uuid,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// Attempts made.
    pub attempts: u32,
    /// When the next attempt is due (pending only).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The receiver's last HTTP status.
    pub last_status_code: Option<u16>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// At most 1 KiB of the receiver's last answer.
    pub last_response: Option<String>,
    /// When the event happened.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
    /// When it succeeded or was given up.
    pub finished_at: Option<DateTime<Utc>>,
}

/// A stored event.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// Its id: the `webhook-id`.
    pub id: Uuid,
    /// Its type, as stored.
    pub event_type: String,
    /// What it is about.
    pub subject_id: Option<Uuid>,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// What it says (see the migration for what each type stores).
    pub data: Option<Value>,
}

/// Who receives a delivery.
#[derive(Debug, Clone, PartialEq)]
pub enum DeliveryTarget {
    /// A project's endpoint.
    Endpoint(WebhookEndpoint),
    /// A job's own `webhook_url`, signed with the project's job-webhook secret (`None`
    /// when the project has none: the delivery cannot be signed and fails).
    JobUrl {
        /// The URL.
        url: String,
        /// The project's job-webhook secrets.
        secrets: Option<SealedSecrets>,
    },
}

/// Everything an attempt needs.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryWork {
    /// The delivery.
    pub delivery: Delivery,
    /// Its event.
    pub event: StoredEvent,
    /// Its recipient; `None` when the endpoint was deleted meanwhile.
    pub target: Option<DeliveryTarget>,
}

/// How an attempt ended, to record.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRecord {
    /// The receiver's HTTP status, when it answered.
    pub status_code: Option<u16>,
    /// Why it failed.
    pub error: Option<String>,
    /// At most 1 KiB of the answer (longer text is cut here too).
    pub response: Option<String>,
    /// What follows.
    pub next: AttemptNext,
}

/// What follows an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptNext {
    /// Delivered.
    Succeeded,
    /// Try again at this time.
    RetryAt(DateTime<Utc>),
    /// Given up.
    Failed,
}

/// The largest answer kept from a receiver.
pub const MAX_KEPT_RESPONSE: usize = 1024;

from_row! {
    struct EndpointRow {
        id: DbUuid,
        project_id: DbUuid,
        url: String,
        description: String,
        events: String,
        sealed_secret: String,
        previous_sealed_secret: Option<String>,
        previous_expires_at: Option<DateTime<Utc>>,
        disabled_at: Option<DateTime<Utc>>,
        disabled_reason: Option<String>,
        failing_since: Option<DateTime<Utc>>,
        created_at: DateTime<Utc>,
        updated_at: DateTime<Utc>,
    }
}

macro_rules! endpoint_columns {
    () => {
        "id, project_id, url, description, events, sealed_secret, previous_sealed_secret, \
         previous_expires_at, disabled_at, disabled_reason, failing_since, created_at, updated_at"
    };
}

impl From<EndpointRow> for WebhookEndpoint {
    fn from(row: EndpointRow) -> Self {
        WebhookEndpoint {
            id: row.id.0,
            project_id: row.project_id.0,
            url: row.url,
            description: row.description,
            // A type a later build wrote and this one does not know is not delivered here.
            events: row
                .events
                .split_whitespace()
                .filter_map(|t| t.parse().ok())
                .collect(),
            secrets: SealedSecrets {
                current: row.sealed_secret,
                previous: row.previous_sealed_secret,
                previous_expires_at: row.previous_expires_at,
            },
            disabled_at: row.disabled_at,
            disabled_reason: row.disabled_reason,
            failing_since: row.failing_since,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

from_row! {
    struct DeliveryRow {
        id: DbUuid,
        event_id: DbUuid,
        event_type: String,
        subject_id: Option<DbUuid>,
        endpoint_id: Option<DbUuid>,
        url: Option<String>,
        project_id: DbUuid,
        status: String,
        attempts: i32,
        next_attempt_at: Option<DateTime<Utc>>,
        last_status_code: Option<i32>,
        last_error: Option<String>,
        last_response: Option<String>,
        created_at: DateTime<Utc>,
        updated_at: DateTime<Utc>,
        finished_at: Option<DateTime<Utc>>,
    }
}

macro_rules! delivery_columns {
    () => {
        "d.id, d.event_id, ev.type AS event_type, ev.subject_id, d.endpoint_id, d.url, \
         d.project_id, d.status, d.attempts, d.next_attempt_at, d.last_status_code, \
         d.last_error, d.last_response, d.created_at, d.updated_at, d.finished_at"
    };
}

impl TryFrom<DeliveryRow> for Delivery {
    type Error = StoreError;

    fn try_from(row: DeliveryRow) -> Result<Self, StoreError> {
        Ok(Delivery {
            id: row.id.0,
            event_id: row.event_id.0,
            event_type: row.event_type,
            subject_id: row.subject_id.map(|s| s.0),
            endpoint_id: row.endpoint_id.map(|e| e.0),
            url: row.url,
            project_id: row.project_id.0,
            status: DeliveryStatus::parse(&row.status)?,
            attempts: u32::try_from(row.attempts.max(0)).unwrap_or(0),
            next_attempt_at: row.next_attempt_at,
            last_status_code: row.last_status_code.and_then(|c| u16::try_from(c).ok()),
            last_error: row.last_error,
            last_response: row.last_response,
            created_at: row.created_at,
            updated_at: row.updated_at,
            finished_at: row.finished_at,
        })
    }
}

from_row! {
    /// A delivery with its event and recipient, as one joined row.
    struct WorkRow {
        id: DbUuid,
        event_id: DbUuid,
        event_type: String,
        subject_id: Option<DbUuid>,
        endpoint_id: Option<DbUuid>,
        url: Option<String>,
        project_id: DbUuid,
        status: String,
        attempts: i32,
        next_attempt_at: Option<DateTime<Utc>>,
        last_status_code: Option<i32>,
        last_error: Option<String>,
        last_response: Option<String>,
        created_at: DateTime<Utc>,
        updated_at: DateTime<Utc>,
        finished_at: Option<DateTime<Utc>>,
        event_occurred_at: DateTime<Utc>,
        event_data: Option<Json<Value>>,
        ep_id: Option<DbUuid>,
        ep_url: Option<String>,
        ep_description: Option<String>,
        ep_events: Option<String>,
        ep_sealed_secret: Option<String>,
        ep_previous_sealed_secret: Option<String>,
        ep_previous_expires_at: Option<DateTime<Utc>>,
        ep_disabled_at: Option<DateTime<Utc>>,
        ep_disabled_reason: Option<String>,
        ep_failing_since: Option<DateTime<Utc>>,
        ep_created_at: Option<DateTime<Utc>>,
        ep_updated_at: Option<DateTime<Utc>>,
        ps_sealed_secret: Option<String>,
        ps_previous_sealed_secret: Option<String>,
        ps_previous_expires_at: Option<DateTime<Utc>>,
    }
}

/// The columns of a [`WorkRow`], the delivery being `d`.
macro_rules! work_columns {
    () => {
        concat!(
            delivery_columns!(),
            ", ev.occurred_at AS event_occurred_at, ev.data AS event_data, \
             e.id AS ep_id, e.url AS ep_url, e.description AS ep_description, \
             e.events AS ep_events, e.sealed_secret AS ep_sealed_secret, \
             e.previous_sealed_secret AS ep_previous_sealed_secret, \
             e.previous_expires_at AS ep_previous_expires_at, e.disabled_at AS ep_disabled_at, \
             e.disabled_reason AS ep_disabled_reason, e.failing_since AS ep_failing_since, \
             e.created_at AS ep_created_at, e.updated_at AS ep_updated_at, \
             ps.sealed_secret AS ps_sealed_secret, \
             ps.previous_sealed_secret AS ps_previous_sealed_secret, \
             ps.previous_expires_at AS ps_previous_expires_at"
        )
    };
}

/// The joins of a [`WorkRow`] onto the delivery `d`: its event, its endpoint (of the same
/// project), and for a job's own URL the project's job-webhook secret.
macro_rules! work_joins {
    () => {
        "JOIN webhook_events ev ON ev.id = d.event_id \
         LEFT JOIN webhook_endpoints e ON e.id = d.endpoint_id AND e.project_id = d.project_id \
         LEFT JOIN webhook_project_secrets ps \
           ON d.endpoint_id IS NULL AND ps.project_id = d.project_id"
    };
}

impl TryFrom<WorkRow> for DeliveryWork {
    type Error = StoreError;

    fn try_from(row: WorkRow) -> Result<Self, StoreError> {
        let delivery = Delivery::try_from(DeliveryRow {
            id: row.id,
            event_id: row.event_id,
            event_type: row.event_type,
            subject_id: row.subject_id,
            endpoint_id: row.endpoint_id,
            url: row.url,
            project_id: row.project_id,
            status: row.status,
            attempts: row.attempts,
            next_attempt_at: row.next_attempt_at,
            last_status_code: row.last_status_code,
            last_error: row.last_error,
            last_response: row.last_response,
            created_at: row.created_at,
            updated_at: row.updated_at,
            finished_at: row.finished_at,
        })?;
        let event = StoredEvent {
            id: delivery.event_id,
            event_type: delivery.event_type.clone(),
            subject_id: delivery.subject_id,
            occurred_at: row.event_occurred_at,
            data: row.event_data.map(|d| d.0),
        };
        let target = match (&delivery.endpoint_id, &delivery.url) {
            (Some(_), _) => match (
                row.ep_id,
                row.ep_url,
                row.ep_events,
                row.ep_sealed_secret,
                row.ep_created_at,
                row.ep_updated_at,
            ) {
                (
                    Some(id),
                    Some(url),
                    Some(events),
                    Some(current),
                    Some(created),
                    Some(updated),
                ) => Some(DeliveryTarget::Endpoint(WebhookEndpoint::from(
                    EndpointRow {
                        id,
                        project_id: DbUuid(delivery.project_id),
                        url,
                        description: row.ep_description.unwrap_or_default(),
                        events,
                        sealed_secret: current,
                        previous_sealed_secret: row.ep_previous_sealed_secret,
                        previous_expires_at: row.ep_previous_expires_at,
                        disabled_at: row.ep_disabled_at,
                        disabled_reason: row.ep_disabled_reason,
                        failing_since: row.ep_failing_since,
                        created_at: created,
                        updated_at: updated,
                    },
                ))),
                // Deleted meanwhile.
                _ => None,
            },
            (None, Some(url)) => Some(DeliveryTarget::JobUrl {
                url: url.clone(),
                secrets: row.ps_sealed_secret.map(|current| SealedSecrets {
                    current,
                    previous: row.ps_previous_sealed_secret,
                    previous_expires_at: row.ps_previous_expires_at,
                }),
            }),
            (None, None) => None,
        };
        Ok(DeliveryWork {
            delivery,
            event,
            target,
        })
    }
}

/// What claiming a delivery's next attempt found.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// The attempt is the caller's; its number is `delivery.attempts` (already counted).
    Claimed(Box<DeliveryWork>),
    /// Pending, but not due before this time (a retry's queue item came early, or an
    /// attempt is out and this is a duplicate item).
    NotDue(DateTime<Utc>),
    /// Succeeded, failed or deleted: nothing to do.
    Finished,
}

/// One attempt's outcome as the columns it is written to.
struct RecordColumns<'a> {
    id: Uuid,
    attempt: i32,
    status: &'static str,
    next_attempt_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    status_code: Option<i32>,
    error: Option<&'a str>,
    response: Option<&'a str>,
}

impl<'a> RecordColumns<'a> {
    fn new(id: Uuid, attempt: u32, record: &'a AttemptRecord, now: DateTime<Utc>) -> Self {
        let (status, next_attempt_at, finished_at) = match record.next {
            AttemptNext::Succeeded => ("succeeded", None, Some(now)),
            AttemptNext::RetryAt(at) => ("pending", Some(at), None),
            AttemptNext::Failed => ("failed", None, Some(now)),
        };
        RecordColumns {
            id,
            attempt: i32::try_from(attempt).unwrap_or(i32::MAX),
            status,
            next_attempt_at,
            finished_at,
            status_code: record.status_code.map(i32::from),
            error: record.error.as_deref().map(|e| clip_bytes(e, 2000)),
            response: record
                .response
                .as_deref()
                .map(|r| clip_bytes(r, MAX_KEPT_RESPONSE)),
        }
    }
}

/// Subscriptions as stored: space-separated with a space at each end, so one type
/// matches with `LIKE '% type %'`.
fn stored_events(events: &[EventType]) -> String {
    let mut out = String::from(" ");
    for event in events {
        out.push_str(event.as_str());
        out.push(' ');
    }
    out
}

/// At most `max` bytes of `s`, cut on a character boundary.
fn clip_bytes(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Queries on the webhook tables.
#[derive(Debug, Clone, Copy)]
pub struct WebhookRepo<'a> {
    store: &'a Store,
}

impl<'a> WebhookRepo<'a> {
    pub(crate) fn new(store: &'a Store) -> Self {
        Self { store }
    }

    /// Creates an endpoint. [`StoreError::Conflict`] when the project already has
    /// [`MAX_ENDPOINTS_PER_PROJECT`].
    pub async fn create_endpoint(&self, new: &NewEndpoint) -> Result<WebhookEndpoint, StoreError> {
        let now = crate::now();
        let _write = self.store.write_guard().await;
        // The count and the insert in one statement: two creates racing past the limit
        // can at worst both see one slot left, a bound of one over, never unbounded.
        let row: Option<EndpointRow> = with_pool!(self.store, |pool| sqlx::query_as(concat!(
            "INSERT INTO webhook_endpoints \
               (id, project_id, url, description, events, sealed_secret, created_at, updated_at) \
             SELECT $1, $2, $3, $4, $5, $6, $7, $7 \
              WHERE (SELECT count(*) FROM webhook_endpoints WHERE project_id = $2) < $8 \
             RETURNING ",
            endpoint_columns!()
        ))
        .bind(DbUuid(new.id))
        .bind(DbUuid(new.project_id))
        .bind(&new.url)
        .bind(&new.description)
        .bind(stored_events(&new.events))
        .bind(&new.sealed_secret)
        .bind(now)
        .bind(i64::try_from(MAX_ENDPOINTS_PER_PROJECT).unwrap_or(i64::MAX))
        .fetch_optional(pool)
        .await?);
        row.map(Into::into).ok_or(StoreError::Conflict(
            "the project already has the most webhook endpoints allowed",
        ))
    }

    /// The project's endpoint `id`.
    pub async fn endpoint(
        &self,
        project_id: Uuid,
        id: Uuid,
    ) -> Result<Option<WebhookEndpoint>, StoreError> {
        let row: Option<EndpointRow> = with_pool!(self.store, |pool| sqlx::query_as(concat!(
            "SELECT ",
            endpoint_columns!(),
            " FROM webhook_endpoints WHERE project_id = $1 AND id = $2"
        ))
        .bind(DbUuid(project_id))
        .bind(DbUuid(id))
        .fetch_optional(pool)
        .await?);
        Ok(row.map(Into::into))
    }

    /// The project's endpoints, oldest first.
    pub async fn endpoints(&self, project_id: Uuid) -> Result<Vec<WebhookEndpoint>, StoreError> {
        let rows: Vec<EndpointRow> = with_pool!(self.store, |pool| sqlx::query_as(concat!(
            "SELECT ",
            endpoint_columns!(),
            " FROM webhook_endpoints WHERE project_id = $1 ORDER BY id"
        ))
        .bind(DbUuid(project_id))
        .fetch_all(pool)
        .await?);
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// Applies `change` to the project's endpoint `id`; `None` when there is none.
    pub async fn update_endpoint(
        &self,
        project_id: Uuid,
        id: Uuid,
        change: &EndpointChange,
    ) -> Result<Option<WebhookEndpoint>, StoreError> {
        let now = crate::now();
        let _write = self.store.write_guard().await;
        let row: Option<EndpointRow> = with_pool!(self.store, |pool| sqlx::query_as(concat!(
            "UPDATE webhook_endpoints SET url = COALESCE($3, url), \
               description = COALESCE($4, description), events = COALESCE($5, events), \
               disabled_at = CASE WHEN $6 = 1 THEN NULL \
                                  WHEN $6 = 0 THEN COALESCE(disabled_at, $7) \
                                  ELSE disabled_at END, \
               disabled_reason = CASE WHEN $6 = 1 THEN NULL \
                                      WHEN $6 = 0 AND disabled_at IS NULL \
                                        THEN 'disabled by the project' \
                                      ELSE disabled_reason END, \
               failing_since = CASE WHEN $6 = 1 THEN NULL ELSE failing_since END, \
               updated_at = $7 \
             WHERE project_id = $1 AND id = $2 RETURNING ",
            endpoint_columns!()
        ))
        .bind(DbUuid(project_id))
        .bind(DbUuid(id))
        .bind(change.url.as_deref())
        .bind(change.description.as_deref())
        .bind(change.events.as_deref().map(stored_events))
        .bind(change.enabled.map(i32::from))
        .bind(now)
        .fetch_optional(pool)
        .await?);
        Ok(row.map(Into::into))
    }

    /// Deletes the project's endpoint `id` and its deliveries; false when there was none.
    pub async fn delete_endpoint(&self, project_id: Uuid, id: Uuid) -> Result<bool, StoreError> {
        let _write = self.store.write_guard().await;
        let deleted = with_pool!(self.store, |pool| sqlx::query(
            "DELETE FROM webhook_endpoints WHERE project_id = $1 AND id = $2"
        )
        .bind(DbUuid(project_id))
        .bind(DbUuid(id))
        .execute(pool)
        .await?
        .rows_affected());
        Ok(deleted > 0)
    }

    /// Makes `new_sealed` the endpoint's secret; the one it replaces keeps signing until
    /// `previous_until`. `None` when there is no such endpoint.
    pub async fn rotate_endpoint_secret(
        &self,
        project_id: Uuid,
        id: Uuid,
        new_sealed: &str,
        previous_until: DateTime<Utc>,
    ) -> Result<Option<WebhookEndpoint>, StoreError> {
        let _write = self.store.write_guard().await;
        let row: Option<EndpointRow> = with_pool!(self.store, |pool| sqlx::query_as(concat!(
            "UPDATE webhook_endpoints SET previous_sealed_secret = sealed_secret, \
               previous_expires_at = $3, sealed_secret = $4, updated_at = $5 \
             WHERE project_id = $1 AND id = $2 RETURNING ",
            endpoint_columns!()
        ))
        .bind(DbUuid(project_id))
        .bind(DbUuid(id))
        .bind(previous_until)
        .bind(new_sealed)
        .bind(crate::now())
        .fetch_optional(pool)
        .await?);
        Ok(row.map(Into::into))
    }

    /// The project's job-webhook secrets, if it made one.
    pub async fn project_secret(
        &self,
        project_id: Uuid,
    ) -> Result<Option<SealedSecrets>, StoreError> {
        let row: Option<(String, Option<String>, Option<DateTime<Utc>>)> =
            with_pool!(self.store, |pool| sqlx::query_as(
                "SELECT sealed_secret, previous_sealed_secret, previous_expires_at \
                 FROM webhook_project_secrets WHERE project_id = $1"
            )
            .bind(DbUuid(project_id))
            .fetch_optional(pool)
            .await?);
        Ok(
            row.map(|(current, previous, previous_expires_at)| SealedSecrets {
                current,
                previous,
                previous_expires_at,
            }),
        )
    }

    /// Makes `new_sealed` the project's job-webhook secret; one it replaces keeps
    /// signing until `previous_until`.
    pub async fn put_project_secret(
        &self,
        project_id: Uuid,
        new_sealed: &str,
        previous_until: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let _write = self.store.write_guard().await;
        with_pool!(self.store, |pool| {
            sqlx::query(
            "INSERT INTO webhook_project_secrets (project_id, sealed_secret, created_at, updated_at) \
             VALUES ($1, $2, $3, $3) \
             ON CONFLICT (project_id) DO UPDATE SET \
               previous_sealed_secret = webhook_project_secrets.sealed_secret, \
               previous_expires_at = $4, sealed_secret = excluded.sealed_secret, \
               updated_at = excluded.updated_at"
        )
        .bind(DbUuid(project_id))
        .bind(new_sealed)
        .bind(crate::now())
        .bind(previous_until)
        .execute(pool)
        .await?;
        });
        Ok(())
    }

    /// Every stored webhook secret (endpoints' and projects' job-webhook secrets, current
    /// and previous), for `byok keys rewrap`. There are at most
    /// [`MAX_ENDPOINTS_PER_PROJECT`] endpoints per project, so this is read in one go.
    pub async fn sealed_secrets(&self) -> Result<Vec<StoredSecret>, StoreError> {
        type Row = (DbUuid, Option<DbUuid>, String, Option<String>);
        let rows: Vec<Row> = with_pool!(self.store, |pool| sqlx::query_as(
            "SELECT project_id, id, sealed_secret, previous_sealed_secret \
               FROM webhook_endpoints \
             UNION ALL \
             SELECT project_id, NULL, sealed_secret, previous_sealed_secret \
               FROM webhook_project_secrets \
             ORDER BY 1, 2"
        )
        .fetch_all(pool)
        .await?);
        let mut secrets = Vec::with_capacity(rows.len());
        for (project, endpoint, current, previous) in rows {
            let (project_id, endpoint_id) = (project.0, endpoint.map(|e| e.0));
            secrets.push(StoredSecret {
                project_id,
                endpoint_id,
                previous: false,
                sealed: current,
            });
            if let Some(sealed) = previous {
                secrets.push(StoredSecret {
                    project_id,
                    endpoint_id,
                    previous: true,
                    sealed,
                });
            }
        }
        Ok(secrets)
    }

    /// Replaces `secret`'s sealed value with `resealed`, only if it is still the value
    /// read (a rotation meanwhile wins); whether it was replaced.
    pub async fn replace_sealed_secret(
        &self,
        secret: &StoredSecret,
        resealed: &str,
    ) -> Result<bool, StoreError> {
        let sql = match (secret.endpoint_id.is_some(), secret.previous) {
            (true, false) => {
                "UPDATE webhook_endpoints SET sealed_secret = $3 \
                 WHERE project_id = $1 AND id = $2 AND sealed_secret = $4"
            }
            (true, true) => {
                "UPDATE webhook_endpoints SET previous_sealed_secret = $3 \
                 WHERE project_id = $1 AND id = $2 AND previous_sealed_secret = $4"
            }
            (false, false) => {
                "UPDATE webhook_project_secrets SET sealed_secret = $3 \
                 WHERE project_id = $1 AND $2 IS NULL AND sealed_secret = $4"
            }
            (false, true) => {
                "UPDATE webhook_project_secrets SET previous_sealed_secret = $3 \
                 WHERE project_id = $1 AND $2 IS NULL AND previous_sealed_secret = $4"
            }
        };
        let _write = self.store.write_guard().await;
        let replaced = with_pool!(self.store, |pool| sqlx::query(sql)
            .bind(DbUuid(secret.project_id))
            .bind(secret.endpoint_id.map(DbUuid))
            .bind(resealed)
            .bind(&secret.sealed)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(replaced == 1)
    }

    /// Up to `limit` deliveries of the project's endpoint, newest first, older than the
    /// delivery `before` (the last of the previous page).
    pub async fn deliveries(
        &self,
        project_id: Uuid,
        endpoint_id: Uuid,
        before: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<Delivery>, StoreError> {
        let rows: Vec<DeliveryRow> = with_pool!(self.store, |pool| sqlx::query_as(concat!(
            "SELECT ",
            delivery_columns!(),
            " FROM webhook_deliveries d JOIN webhook_events ev ON ev.id = d.event_id \
              WHERE d.project_id = $1 AND d.endpoint_id = $2 \
                AND ($3 IS NULL OR (d.created_at, d.id) < \
                     (SELECT c.created_at, c.id FROM webhook_deliveries c WHERE c.id = $3)) \
              ORDER BY d.created_at DESC, d.id DESC LIMIT $4"
        ))
        .bind(DbUuid(project_id))
        .bind(DbUuid(endpoint_id))
        .bind(before.map(DbUuid))
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await?);
        rows.into_iter().map(Delivery::try_from).collect()
    }

    /// Up to `limit` deliveries across projects, newest first, for operators: of one
    /// project, one endpoint and one status when given.
    pub async fn all_deliveries(
        &self,
        project_id: Option<Uuid>,
        endpoint_id: Option<Uuid>,
        status: Option<DeliveryStatus>,
        limit: u32,
    ) -> Result<Vec<Delivery>, StoreError> {
        let status = status.map(|s| match s {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Succeeded => "succeeded",
            DeliveryStatus::Failed => "failed",
        });
        let rows: Vec<DeliveryRow> = with_pool!(self.store, |pool| sqlx::query_as(concat!(
            "SELECT ",
            delivery_columns!(),
            " FROM webhook_deliveries d JOIN webhook_events ev ON ev.id = d.event_id \
              WHERE ($1 IS NULL OR d.project_id = $1) AND ($2 IS NULL OR d.endpoint_id = $2) \
                AND ($3 IS NULL OR d.status = $3) \
              ORDER BY d.created_at DESC, d.id DESC LIMIT $4"
        ))
        .bind(project_id.map(DbUuid))
        .bind(endpoint_id.map(DbUuid))
        .bind(status)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await?);
        rows.into_iter().map(Delivery::try_from).collect()
    }

    /// The project's delivery `id`.
    pub async fn delivery(
        &self,
        project_id: Uuid,
        id: Uuid,
    ) -> Result<Option<Delivery>, StoreError> {
        let row: Option<DeliveryRow> = with_pool!(self.store, |pool| sqlx::query_as(concat!(
            "SELECT ",
            delivery_columns!(),
            " FROM webhook_deliveries d JOIN webhook_events ev ON ev.id = d.event_id \
              WHERE d.project_id = $1 AND d.id = $2"
        ))
        .bind(DbUuid(project_id))
        .bind(DbUuid(id))
        .fetch_optional(pool)
        .await?);
        row.map(Delivery::try_from).transpose()
    }

    /// Sends a finished delivery once more: it becomes pending, due now, for one more
    /// attempt (the attempts already made still count, so a failure ends it again).
    /// `None` when there is no such delivery or it is still pending.
    pub async fn retry_delivery(
        &self,
        project_id: Uuid,
        id: Uuid,
    ) -> Result<Option<Delivery>, StoreError> {
        let now = crate::now();
        let _write = self.store.write_guard().await;
        let changed = with_pool!(self.store, |pool| sqlx::query(
            "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = $3, \
               enqueued_at = NULL, finished_at = NULL, updated_at = $3 \
             WHERE project_id = $1 AND id = $2 AND status <> 'pending'"
        )
        .bind(DbUuid(project_id))
        .bind(DbUuid(id))
        .bind(now)
        .execute(pool)
        .await?
        .rows_affected());
        drop(_write);
        if changed == 0 {
            return Ok(None);
        }
        self.store.outbox().record(vec![id]);
        self.delivery(project_id, id).await
    }

    /// The delivery, its event and its recipient (one query), for operators and tests;
    /// attempts take theirs with [`WebhookRepo::claim`].
    pub async fn work(&self, id: Uuid) -> Result<Option<DeliveryWork>, StoreError> {
        let row: Option<WorkRow> = with_pool!(self.store, |pool| sqlx::query_as(concat!(
            "SELECT ",
            work_columns!(),
            " FROM webhook_deliveries d ",
            work_joins!(),
            " WHERE d.id = $1"
        ))
        .bind(DbUuid(id))
        .fetch_optional(pool)
        .await?);
        row.map(DeliveryWork::try_from).transpose()
    }

    /// Takes the next attempt of each of these deliveries that is pending and due, in one
    /// statement (the delivery worker gathers the ids its tasks are waiting on): one more
    /// attempt counted, and the delivery not due again before `lease_until` (when an
    /// attempt still unrecorded is given up for lost). The answer is in the order of
    /// `ids`. Compare-and-set on the row: a duplicate queue item, the sweeper or a second
    /// worker never gets the same attempt.
    pub async fn claim(
        &self,
        ids: &[Uuid],
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<Claim>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let now = crate::now();
        let mut claimed: HashMap<Uuid, DeliveryWork> = HashMap::with_capacity(ids.len());
        // Why each unclaimed one was not: (status, next attempt).
        let mut unclaimed: HashMap<Uuid, (String, Option<DateTime<Utc>>)> = HashMap::new();
        let _write = self.store.write_guard().await;
        match &self.store.db {
            crate::db::Db::Postgres(pool) => {
                // Rows locked in one order by every statement (see record_attempts).
                let mut sorted = ids.to_vec();
                sorted.sort_unstable();
                sorted.dedup();
                let rows: Vec<WorkRow> = sqlx::query_as(concat!(
                    "WITH d AS (UPDATE webhook_deliveries \
                       SET attempts = attempts + 1, next_attempt_at = $2, updated_at = $3 \
                       WHERE id = ANY($1) AND status = 'pending' \
                         AND (next_attempt_at IS NULL OR next_attempt_at <= $3) \
                       RETURNING *) \
                     SELECT ",
                    work_columns!(),
                    " FROM d ",
                    work_joins!()
                ))
                .bind(&sorted)
                .bind(lease_until)
                .bind(now)
                .fetch_all(pool)
                .await?;
                for row in rows {
                    let work = DeliveryWork::try_from(row)?;
                    claimed.insert(work.delivery.id, work);
                }
                if claimed.len() < sorted.len() {
                    let rest: Vec<Uuid> = sorted
                        .iter()
                        .filter(|id| !claimed.contains_key(id))
                        .copied()
                        .collect();
                    let rows: Vec<(Uuid, String, Option<DateTime<Utc>>)> = sqlx::query_as(
                        "SELECT id, status, next_attempt_at FROM webhook_deliveries \
                         WHERE id = ANY($1)",
                    )
                    .bind(&rest)
                    .fetch_all(pool)
                    .await?;
                    unclaimed.extend(rows.into_iter().map(|(id, s, at)| (id, (s, at))));
                }
            }
            crate::db::Db::Sqlite(pool) => {
                // One writer at a time here anyway: one transaction, one commit.
                let mut tx = pool.begin().await?;
                for id in ids {
                    let taken = sqlx::query(
                        "UPDATE webhook_deliveries \
                           SET attempts = attempts + 1, next_attempt_at = $2, updated_at = $3 \
                         WHERE id = $1 AND status = 'pending' \
                           AND (next_attempt_at IS NULL OR next_attempt_at <= $3)",
                    )
                    .bind(DbUuid(*id))
                    .bind(lease_until)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if taken == 1 {
                        let row: WorkRow = sqlx::query_as(concat!(
                            "SELECT ",
                            work_columns!(),
                            " FROM webhook_deliveries d ",
                            work_joins!(),
                            " WHERE d.id = $1"
                        ))
                        .bind(DbUuid(*id))
                        .fetch_one(&mut *tx)
                        .await?;
                        claimed.insert(*id, DeliveryWork::try_from(row)?);
                    } else {
                        let row: Option<(String, Option<DateTime<Utc>>)> = sqlx::query_as(
                            "SELECT status, next_attempt_at FROM webhook_deliveries WHERE id = $1",
                        )
                        .bind(DbUuid(*id))
                        .fetch_optional(&mut *tx)
                        .await?;
                        if let Some(row) = row {
                            unclaimed.insert(*id, row);
                        }
                    }
                }
                tx.commit().await?;
            }
        }
        Ok(ids
            .iter()
            .map(|id| match claimed.remove(id) {
                Some(work) => Claim::Claimed(Box::new(work)),
                None => match unclaimed.remove(id) {
                    Some((status, Some(due))) if status == "pending" => Claim::NotDue(due),
                    // Finished, gone, or a status this build does not know: nothing to do.
                    _ => Claim::Finished,
                },
            })
            .collect())
    }

    /// Records how each attempt ended, in one statement: `(delivery, attempt number,
    /// outcome)`, each only while that attempt is still its delivery's latest and the
    /// delivery is pending. The answer (recorded or not) is in the order given.
    pub async fn record_attempts(
        &self,
        records: &[(Uuid, u32, AttemptRecord)],
    ) -> Result<Vec<bool>, StoreError> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let now = crate::now();
        let mut columns = records
            .iter()
            .map(|(id, attempt, record)| RecordColumns::new(*id, *attempt, record, now))
            .collect::<Vec<_>>();
        // Rows locked in one order by every statement: concurrent batches cannot
        // deadlock on each other.
        columns.sort_by_key(|c| c.id);
        let _write = self.store.write_guard().await;
        // (delivery, attempt) pairs recorded.
        let recorded: std::collections::HashSet<(Uuid, i32)> = match &self.store.db {
            crate::db::Db::Postgres(pool) => {
                let rows: Vec<(Uuid, i32)> = sqlx::query_as(
                    "UPDATE webhook_deliveries d SET status = v.status, \
                       next_attempt_at = v.next_attempt_at, finished_at = v.finished_at, \
                       last_status_code = v.status_code, last_error = v.error, \
                       last_response = v.response, updated_at = $9 \
                     FROM unnest($1::uuid[], $2::int4[], $3::text[], $4::timestamptz[], \
                                 $5::timestamptz[], $6::int4[], $7::text[], $8::text[]) \
                       AS v(id, attempt, status, next_attempt_at, finished_at, status_code, \
                            error, response) \
                     WHERE d.id = v.id AND d.attempts = v.attempt AND d.status = 'pending' \
                     RETURNING d.id, v.attempt",
                )
                .bind(columns.iter().map(|c| c.id).collect::<Vec<_>>())
                .bind(columns.iter().map(|c| c.attempt).collect::<Vec<_>>())
                .bind(columns.iter().map(|c| c.status).collect::<Vec<_>>())
                .bind(
                    columns
                        .iter()
                        .map(|c| c.next_attempt_at)
                        .collect::<Vec<_>>(),
                )
                .bind(columns.iter().map(|c| c.finished_at).collect::<Vec<_>>())
                .bind(columns.iter().map(|c| c.status_code).collect::<Vec<_>>())
                .bind(columns.iter().map(|c| c.error).collect::<Vec<_>>())
                .bind(columns.iter().map(|c| c.response).collect::<Vec<_>>())
                .bind(now)
                .fetch_all(pool)
                .await?;
                rows.into_iter().collect()
            }
            crate::db::Db::Sqlite(pool) => {
                let mut tx = pool.begin().await?;
                let mut done = std::collections::HashSet::new();
                for c in &columns {
                    let changed = sqlx::query(
                        "UPDATE webhook_deliveries SET status = $3, next_attempt_at = $4, \
                           finished_at = $5, last_status_code = $6, last_error = $7, \
                           last_response = $8, updated_at = $9 \
                         WHERE id = $1 AND attempts = $2 AND status = 'pending'",
                    )
                    .bind(DbUuid(c.id))
                    .bind(c.attempt)
                    .bind(c.status)
                    .bind(c.next_attempt_at)
                    .bind(c.finished_at)
                    .bind(c.status_code)
                    .bind(c.error)
                    .bind(c.response)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if changed == 1 {
                        done.insert((c.id, c.attempt));
                    }
                }
                tx.commit().await?;
                done
            }
        };
        Ok(records
            .iter()
            .map(|(id, attempt, _)| {
                recorded.contains(&(*id, i32::try_from(*attempt).unwrap_or(i32::MAX)))
            })
            .collect())
    }

    /// Notes a delivery the endpoint accepted: its run of failures ends.
    pub async fn endpoint_succeeded(&self, endpoint_id: Uuid) -> Result<(), StoreError> {
        let _write = self.store.write_guard().await;
        with_pool!(self.store, |pool| {
            sqlx::query(
                "UPDATE webhook_endpoints SET failing_since = NULL \
                 WHERE id = $1 AND failing_since IS NOT NULL",
            )
            .bind(DbUuid(endpoint_id))
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Notes a failed delivery; returns when the endpoint's run of failures began
    /// (`None` when the endpoint is gone).
    pub async fn endpoint_failed(
        &self,
        endpoint_id: Uuid,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let _write = self.store.write_guard().await;
        let since: Option<Option<DateTime<Utc>>> = with_pool!(self.store, |pool| {
            sqlx::query_scalar(
                "UPDATE webhook_endpoints SET failing_since = COALESCE(failing_since, $2) \
                 WHERE id = $1 RETURNING failing_since",
            )
            .bind(DbUuid(endpoint_id))
            .bind(crate::now())
            .fetch_optional(pool)
            .await?
        });
        Ok(since.flatten())
    }

    /// Stops deliveries to an endpoint for `reason`; true for the one caller that did.
    pub async fn disable_endpoint(
        &self,
        endpoint_id: Uuid,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let now = crate::now();
        let _write = self.store.write_guard().await;
        let disabled = with_pool!(self.store, |pool| {
            sqlx::query(
            "UPDATE webhook_endpoints SET disabled_at = $2, disabled_reason = $3, updated_at = $2 \
             WHERE id = $1 AND disabled_at IS NULL"
        )
        .bind(DbUuid(endpoint_id))
        .bind(now)
        .bind(clip_bytes(reason, 500))
        .execute(pool)
        .await?
        .rows_affected()
        });
        Ok(disabled == 1)
    }

    /// Notes that the queue holds items for these deliveries; a delivery whose attempt
    /// was overdue becomes due now, so the sweeper does not push it again at once.
    pub async fn mark_pushed(&self, ids: &[Uuid]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let now = crate::now();
        let _write = self.store.write_guard().await;
        match &self.store.db {
            crate::db::Db::Postgres(pool) => {
                sqlx::query(
                    "UPDATE webhook_deliveries SET enqueued_at = $1, \
                       next_attempt_at = GREATEST(next_attempt_at, $1) \
                     WHERE status = 'pending' AND id = ANY($2)",
                )
                .bind(now)
                .bind(ids)
                .execute(pool)
                .await?;
            }
            crate::db::Db::Sqlite(pool) => {
                let mut tx = pool.begin().await?;
                for id in ids {
                    sqlx::query(
                        "UPDATE webhook_deliveries SET enqueued_at = $1, \
                           next_attempt_at = max(next_attempt_at, $1) \
                         WHERE status = 'pending' AND id = $2",
                    )
                    .bind(now)
                    .bind(DbUuid(*id))
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
            }
        }
        Ok(())
    }

    /// Up to `limit` pending deliveries whose queue item is missing: never pushed and
    /// created before `unpushed_before` (the process that wrote them died first), or due
    /// before `overdue_before` (their item was lost). Oldest first.
    pub async fn stranded(
        &self,
        unpushed_before: DateTime<Utc>,
        overdue_before: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Uuid>, StoreError> {
        let ids: Vec<DbUuid> = with_pool!(self.store, |pool| sqlx::query_scalar(
            "SELECT id FROM webhook_deliveries \
             WHERE status = 'pending' \
               AND ((enqueued_at IS NULL AND created_at < $1) OR next_attempt_at < $2) \
             ORDER BY next_attempt_at LIMIT $3"
        )
        .bind(unpushed_before)
        .bind(overdue_before)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await?);
        Ok(ids.into_iter().map(Uuid::from).collect())
    }

    /// Deletes up to `limit` events older than `before` with no pending delivery (their
    /// deliveries go with them); returns how many.
    pub async fn prune(&self, before: DateTime<Utc>, limit: u32) -> Result<u64, StoreError> {
        let _write = self.store.write_guard().await;
        let pruned = with_pool!(self.store, |pool| sqlx::query(
            "DELETE FROM webhook_events WHERE id IN (\
               SELECT e.id FROM webhook_events e WHERE e.occurred_at < $1 \
                 AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d \
                                  WHERE d.event_id = e.id AND d.status = 'pending') \
               LIMIT $2)"
        )
        .bind(before)
        .bind(i64::from(limit))
        .execute(pool)
        .await?
        .rows_affected());
        Ok(pruned)
    }
}
