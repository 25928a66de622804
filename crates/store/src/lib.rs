#![doc = include_str!("../README.md")]

mod batcher;
mod batches;
mod budgets;
mod connect;
mod credentials;
mod db;
mod error;
mod jobs;
mod outbox;
mod projects;
mod sessions;
mod sql_types;
mod step_batches;
mod tokens;
mod usage;
mod webhooks;

pub use batcher::{BatchAnswers, BatchLimits, Batcher};
pub use batches::{Batch, BatchInserted, BatchRepo, NewBatch};
pub use budgets::{BudgetCounter, BudgetRepo, Reserved, SpendScope, Standing, StoredLimit};
pub use connect::{ConnectLink, ConnectRepo, MAX_RETURN_URLS, NewConnectLink};
pub use credentials::{
    CheckRecord, CredentialFilter, CredentialRepo, KeyValidity, NewCredential, StepKey,
    StoredCredential,
};
pub use db::{Backend, SchemaStatus, Store, StoreOptions};
pub use error::StoreError;
pub use jobs::{
    Accepted, Cancelled, FallbackMove, Idempotency, Inserted, Job, JobEvent, JobFilter, JobRepo,
    NewJob, PROGRESS_EVENT_EVERY, UsagePlan,
};
pub use outbox::OutboxFeed;
pub use projects::{Project, ProjectRepo, is_valid_project_name};
pub use sessions::{Session, SessionRepo};
pub use step_batches::{JobBatches, StepRead};
pub use tokens::{ApiToken, NewToken, RevokeOutcome, TOKEN_PREFIX, TokenRepo};
pub use usage::{CostBasis, JobUsage, UsageQuery, UsageRepo};
pub use webhooks::{
    AttemptNext, AttemptRecord, Claim, Delivery, DeliveryStatus, DeliveryTarget, DeliveryWork,
    EndpointChange, MAX_ENDPOINTS_PER_PROJECT, MAX_KEPT_RESPONSE, NewEndpoint, SealedSecrets,
    StoredEvent, StoredSecret, WebhookEndpoint, WebhookRepo,
};

/// The current time at the precision both databases keep (microseconds),
/// so a value read back equals the value written.
pub fn now() -> chrono::DateTime<chrono::Utc> {
    use chrono::SubsecRound as _;
    chrono::Utc::now().trunc_subsecs(6)
}
