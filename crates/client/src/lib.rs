#![doc = include_str!("../README.md")]

// One module per group of routes, each an `impl Client` block over `client::Call`; a new
// group of routes is a new module here.
mod batches;
mod budgets;
mod client;
mod credentials;
mod error;
mod idempotency;
mod job_events;
mod jobs;
mod projects;
mod provider_ids;
mod providers;
mod retry;
mod usage;
mod verify;
mod video;
mod webhooks;

pub use batches::{BatchCreated, ListBatchJobs};
pub use client::{Client, ClientBuilder};
pub use error::ClientError;
pub use idempotency::{IdempotencyKey, InvalidIdempotencyKey};
pub use job_events::{JobEvent, JobEvents};
pub use jobs::{Enqueued, ListJobs};
pub use provider_ids::provider_id;
pub use retry::RetryPolicy;
pub use usage::UsageSpan;
pub use verify::{WebhookError, WebhookEvent, verify_webhook};
pub use video::VideoStream;
pub use webhooks::ListDeliveries;

/// The API's bodies, shared with the server (`byok-core`).
pub use byok_core::{
    ApiErrorCode, BatchCounts, BatchJobPage, BatchRequest, BatchStatus, BatchView, BudgetLimit,
    BudgetLimitView, BudgetPeriod, BudgetView, Capabilities, ConnectLinkView,
    CredentialCheckOutcome, CredentialCheckResult, CredentialField, CredentialList,
    CredentialSummary, CredentialTest, ErrorCode, ErrorRecord, EventType, Fallback, Format,
    GenerationRequest, JobPage, JobResult, JobResultView, JobStatus, JobView, JobWebhookSecret,
    Mode, ModelRef, ModelSpec, ModelStatus, NewWebhookEndpoint, Pricing, ProjectList, ProjectView,
    PromptRules, ProviderId, ProviderInfo, ProviderList, ProviderUsage, PutCredentials, RateLimits,
    Requirement, Retirement, RouteStep, SecondRate, UsageGroupBy, UsageGroupView, UsageReport,
    UsageTotals, Usd, WebhookDelivery, WebhookDeliveryPage, WebhookDeliveryStatus,
    WebhookEndpointChange, WebhookEndpointList, WebhookEndpointView, WebhookEndpointWithSecret,
    WebhookPayload,
};
/// An endpoint's signing secret (`whsec_…`), for [`verify_webhook`].
pub use byok_webhooks::{SigningSecret, TOLERANCE as WEBHOOK_TOLERANCE, VerifyError};
