//! One attempt of one delivery: claim it, sign it, POST it, record what happened.
//!
//! The delivery row is the truth: the queue item only says "look at delivery X". An
//! attempt starts with a compare-and-set claim on the row (attempts + 1, and a lease: the
//! row is not due again until the attempt is over or given up for lost), so a duplicate
//! queue item, the sweeper or a second worker can never send one attempt twice, and a
//! worker killed mid-send leaves a row that falls due again when its lease runs out.
//!
//! Claims and records of concurrent attempts are gathered into one statement each
//! (`coalesce.rs`): a worker with many attempts in flight pays two commits per batch,
//! not per delivery.

use std::sync::Arc;
use std::time::Duration;

use byok_crypto::{KeyRing, WebhookSecretContext};
use byok_metrics::metrics;
use byok_providers::net::{check_url, client_builder, policy_violation};
use byok_queue::Disposition;
use byok_store::{
    AttemptNext, AttemptRecord, Claim, DeliveryTarget, DeliveryWork, MAX_KEPT_RESPONSE,
    SealedSecrets, Store, StoreError,
};
use byok_webhooks::SigningSecret;
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret as _;
use uuid::Uuid;

use crate::coalesce::{Coalescer, StoreFailure};
use crate::payload::render;
use crate::schedule::RetrySchedule;

/// How deliveries are made.
#[derive(Debug, Clone)]
pub struct DeliveryOptions {
    /// How long a receiver has to answer (the whole request): 10 s.
    pub timeout: Duration,
    /// The pauses between attempts.
    pub schedule: RetrySchedule,
    /// An endpoint whose every delivery failed for this long is disabled: 5 days.
    pub disable_after: Duration,
    /// `fetch.allow_private_networks`: plain http and private addresses (local setups
    /// and tests); otherwise https to public addresses only.
    pub allow_private_networks: bool,
}

impl Default for DeliveryOptions {
    fn default() -> Self {
        DeliveryOptions {
            timeout: Duration::from_secs(10),
            schedule: RetrySchedule::default(),
            disable_after: Duration::from_secs(5 * 24 * 3600),
            allow_private_networks: false,
        }
    }
}

/// How much longer than the timeout an attempt's claim lasts before the attempt is
/// given up for lost (its worker died) and made again.
const LEASE_MARGIN: Duration = Duration::from_secs(5);

/// The pause before looking again when the database is unreachable (not an attempt).
const STORE_DOWN_RECHECK: Duration = Duration::from_secs(5);

/// Claims or records gathered into one statement at most.
const MAX_BATCH: usize = 256;
/// Claim (and record) statements out at once: enough to overlap round trips, few enough
/// to leave the pool's connections to everything else.
const STATEMENTS_IN_FLIGHT: usize = 4;

/// An attempt's outcome to record: (delivery, attempt number, outcome).
type Recording = (Uuid, u32, AttemptRecord);

/// Makes delivery attempts. Shared by a worker's tasks.
pub struct Deliverer {
    store: Store,
    key_ring: Arc<KeyRing>,
    client: reqwest::Client,
    options: DeliveryOptions,
    claims: Coalescer<Uuid, Claim>,
    records: Coalescer<Recording, bool>,
}

impl std::fmt::Debug for Deliverer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deliverer")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// How a POST went.
struct Sent {
    status_code: Option<u16>,
    error: Option<String>,
    response: Option<String>,
}

impl Deliverer {
    /// A deliverer; fails only when no HTTP client can be built (no TLS roots). Call it
    /// inside a Tokio runtime: it starts the tasks that gather claims and records.
    pub fn new(
        store: Store,
        key_ring: Arc<KeyRing>,
        options: DeliveryOptions,
    ) -> Result<Deliverer, reqwest::Error> {
        // Redirects are never followed (`client_builder`): a receiver that redirects
        // fails the attempt, and the redirect cannot point us at a private address.
        let client = client_builder(options.allow_private_networks)
            .timeout(options.timeout)
            .user_agent(concat!("byok-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let lease = options.timeout + LEASE_MARGIN;
        let claims = Coalescer::start(MAX_BATCH, STATEMENTS_IN_FLIGHT, {
            let store = store.clone();
            move |ids: Vec<Uuid>| {
                let store = store.clone();
                async move { store.webhooks().claim(&ids, later(Utc::now(), lease)).await }
            }
        });
        let records = Coalescer::start(MAX_BATCH, STATEMENTS_IN_FLIGHT, {
            let store = store.clone();
            move |records: Vec<Recording>| {
                let store = store.clone();
                async move { store.webhooks().record_attempts(&records).await }
            }
        });
        Ok(Deliverer {
            store,
            key_ring,
            client,
            options,
            claims,
            records,
        })
    }

    /// The store deliveries are read from.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Handles one queue delivery of delivery `id`: `Ok` acknowledges the item (done,
    /// gone, or another worker's), `Err` reschedules it (a retry later, or the database
    /// is down).
    pub async fn deliver(&self, id: Uuid) -> Result<(), Disposition> {
        match self.attempt(id).await {
            Ok(next) => next,
            Err(e) if e.unavailable => Err(Disposition::Reschedule {
                after: STORE_DOWN_RECHECK,
            }),
            Err(e) => {
                // Not a passing outage: the row stays as it is (pending ones are found
                // again by the sweeper when overdue), the queue item goes.
                tracing::error!(delivery.id = %id, error = %e, "webhook delivery cannot be read; dropped");
                Ok(())
            }
        }
    }

    async fn attempt(&self, id: Uuid) -> Result<Result<(), Disposition>, StoreFailure> {
        let work = match self.claims.call(id).await? {
            Claim::Claimed(work) => work,
            Claim::Finished => return Ok(Ok(())),
            // Early: a retry's item, or a duplicate while an attempt is out.
            Claim::NotDue(due) => {
                return Ok(Err(Disposition::Reschedule {
                    after: (due - Utc::now()).to_std().unwrap_or_default(),
                }));
            }
        };
        let attempt = work.delivery.attempts;
        let record = self.send(&work, attempt).await?;
        let next = record.next;
        self.records.call((id, attempt, record)).await?;
        Ok(match next {
            AttemptNext::RetryAt(at) => Err(Disposition::Reschedule {
                after: (at - Utc::now()).to_std().unwrap_or_default(),
            }),
            AttemptNext::Succeeded | AttemptNext::Failed => Ok(()),
        })
    }

    /// Makes attempt `attempt` and decides what follows; endpoint bookkeeping (its run of
    /// failures, disabling it) is done here too.
    async fn send(&self, work: &DeliveryWork, attempt: u32) -> Result<AttemptRecord, StoreError> {
        let give_up = |error: &str| AttemptRecord {
            status_code: None,
            error: Some(error.to_owned()),
            response: None,
            next: AttemptNext::Failed,
        };
        let project_id = work.delivery.project_id;
        let (url, secrets, endpoint_id) = match &work.target {
            None => return Ok(give_up("the endpoint no longer exists")),
            Some(DeliveryTarget::Endpoint(endpoint)) => {
                if endpoint.disabled_at.is_some() {
                    metrics().webhook_attempt("refused");
                    return Ok(give_up("the endpoint is disabled"));
                }
                let context = WebhookSecretContext {
                    project_id,
                    endpoint_id: Some(endpoint.id),
                };
                (
                    endpoint.url.as_str(),
                    Some((context, &endpoint.secrets)),
                    Some(endpoint.id),
                )
            }
            Some(DeliveryTarget::JobUrl { url, secrets }) => {
                let context = WebhookSecretContext {
                    project_id,
                    endpoint_id: None,
                };
                (url.as_str(), secrets.as_ref().map(|s| (context, s)), None)
            }
        };
        let Some((context, sealed)) = secrets else {
            metrics().webhook_attempt("refused");
            return Ok(give_up(
                "the project has no job-webhook secret to sign with",
            ));
        };
        let Some(secrets) = self.open(&context, sealed) else {
            metrics().webhook_attempt("refused");
            return Ok(give_up(
                "the signing secret cannot be opened with this key ring",
            ));
        };
        let body = render(&self.store, &work.event).await?;
        let sent = self
            .post(url, &secrets, &message_id(work.event.id), &body)
            .await;

        let now = Utc::now();
        let status = sent.status_code;
        if status.is_some_and(|s| (200..300).contains(&s)) {
            // Only an endpoint in a run of failures has one to end: the common case costs
            // no write.
            if let Some(DeliveryTarget::Endpoint(endpoint)) = &work.target
                && endpoint.failing_since.is_some()
            {
                self.store
                    .webhooks()
                    .endpoint_succeeded(endpoint.id)
                    .await?;
            }
            metrics().webhook_attempt("delivered");
            metrics().webhook_delivered_after(
                (now - work.event.occurred_at).to_std().unwrap_or_default(),
            );
            return Ok(AttemptRecord {
                next: AttemptNext::Succeeded,
                ..record(sent)
            });
        }
        if status == Some(410) {
            metrics().webhook_attempt("gone");
            if let Some(endpoint) = endpoint_id
                && self
                    .store
                    .webhooks()
                    .disable_endpoint(endpoint, "the receiver answered 410 Gone")
                    .await?
            {
                metrics().webhook_endpoint_disabled("gone");
                tracing::warn!(endpoint.id = %endpoint, "webhook endpoint answered 410 Gone: disabled");
            }
            return Ok(AttemptRecord {
                next: AttemptNext::Failed,
                ..record(sent)
            });
        }
        if let Some(endpoint) = endpoint_id
            && let Some(since) = self.store.webhooks().endpoint_failed(endpoint).await?
            && (now - since).to_std().unwrap_or_default() >= self.options.disable_after
        {
            if self
                .store
                .webhooks()
                .disable_endpoint(endpoint, "every delivery failed for 5 days")
                .await?
            {
                metrics().webhook_endpoint_disabled("failing");
                tracing::warn!(
                    endpoint.id = %endpoint,
                    failing_since = %since,
                    "webhook endpoint disabled: every delivery failed for {} days",
                    self.options.disable_after.as_secs() / 86_400
                );
            }
            metrics().webhook_attempt("failed");
            return Ok(AttemptRecord {
                next: AttemptNext::Failed,
                ..record(sent)
            });
        }
        Ok(match self.options.schedule.after(attempt) {
            Some(pause) => {
                metrics().webhook_attempt("retry");
                AttemptRecord {
                    next: AttemptNext::RetryAt(later(now, pause)),
                    ..record(sent)
                }
            }
            None => {
                metrics().webhook_attempt("failed");
                AttemptRecord {
                    next: AttemptNext::Failed,
                    ..record(sent)
                }
            }
        })
    }

    /// The secrets that sign now, opened; `None` when one cannot be opened.
    fn open(
        &self,
        context: &WebhookSecretContext,
        sealed: &SealedSecrets,
    ) -> Option<Vec<SigningSecret>> {
        sealed
            .signing_at(Utc::now())
            .into_iter()
            .map(|s| {
                let plain = self.key_ring.open_webhook_secret(context, s).ok()?;
                let text = std::str::from_utf8(plain.expose_secret()).ok()?;
                SigningSecret::parse(text).ok()
            })
            .collect()
    }

    async fn post(&self, url: &str, secrets: &[SigningSecret], msg_id: &str, body: &[u8]) -> Sent {
        let failed = |error: String| Sent {
            status_code: None,
            error: Some(error),
            response: None,
        };
        let Ok(parsed) = url::Url::parse(url) else {
            return failed("the URL does not parse".to_owned());
        };
        if let Err(e) = check_url(&parsed, self.options.allow_private_networks) {
            return failed(format!("refused: {e}"));
        }
        let timestamp = Utc::now().timestamp();
        let signature = secrets
            .iter()
            .map(|s| s.sign(msg_id, timestamp, body))
            .collect::<Vec<_>>()
            .join(" ");
        let sent = self
            .client
            .post(parsed)
            .header("content-type", "application/json")
            .header("webhook-id", msg_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body.to_vec())
            .send()
            .await;
        let mut response = match sent {
            Ok(response) => response,
            Err(e) => {
                let why = match policy_violation(&e) {
                    Some(policy) => format!("refused: {policy}"),
                    None if e.is_timeout() => {
                        format!("no answer within {} s", self.options.timeout.as_secs())
                    }
                    None if e.is_connect() => "could not connect".to_owned(),
                    None => "the request failed".to_owned(),
                };
                return failed(why);
            }
        };
        let status = response.status().as_u16();
        // At most 1 KiB of the answer is read, kept, or ever shown: a receiver cannot
        // fill the database or hold the worker with a long body.
        let mut kept = Vec::new();
        while kept.len() < MAX_KEPT_RESPONSE {
            match response.chunk().await {
                Ok(Some(chunk)) => kept.extend_from_slice(&chunk),
                _ => break,
            }
        }
        kept.truncate(MAX_KEPT_RESPONSE);
        let text = String::from_utf8_lossy(&kept).into_owned();
        let error = match status {
            200..=299 => None,
            300..=399 => Some(format!("HTTP {status}: redirects are not followed")),
            _ => Some(format!("HTTP {status}")),
        };
        Sent {
            status_code: Some(status),
            error,
            response: (!text.is_empty()).then_some(text),
        }
    }
}

fn record(sent: Sent) -> AttemptRecord {
    AttemptRecord {
        status_code: sent.status_code,
        error: sent.error,
        response: sent.response,
        next: AttemptNext::Failed,
    }
}

fn later(now: DateTime<Utc>, pause: Duration) -> DateTime<Utc> {
    now + chrono::Duration::from_std(pause).unwrap_or_else(|_| chrono::Duration::days(1))
}

/// The `webhook-id` of an event: the same on every attempt and for every recipient, so
/// receivers can drop repeats.
pub(crate) fn message_id(event_id: Uuid) -> String {
    format!("msg_{}", event_id.simple())
}
