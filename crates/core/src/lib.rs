#![doc = include_str!("../README.md")]

mod api_error;
mod batch_view;
mod budget;
mod catalogue;
mod credential_api;
mod error_code;
mod job_error;
mod job_page;
mod job_result;
mod job_status;
mod job_view;
#[cfg(all(test, feature = "openapi"))]
mod openapi_tests;
mod pricing;
mod project_api;
mod provider_api;
mod provider_id;
mod queue_stats;
mod rate_limits;
mod request;
mod routing;
mod tenancy;
mod usage_api;
mod webhook_api;
mod webhook_event;

pub use api_error::{ApiErrorBody, ApiErrorCode, ApiErrorResponse, UnknownApiErrorCode};
pub use batch_view::{
    BatchCounts, BatchJobPage, BatchRequest, BatchStatus, BatchView, MAX_BATCH_JOBS,
};
pub use budget::{
    BudgetLimit, BudgetLimitView, BudgetPeriod, BudgetView, MAX_BUDGET_LIMITS, PutBudget,
};
pub use catalogue::{
    Catalogue, Format, Mode, ModelRef, ModelSpec, ModelStatus, PROMPT_MAX_CHARS_CEILING,
    PromptRules, Requirement, Retirement, ValidatedRequest,
};
pub use credential_api::{
    ConnectLinkView, CredentialCheckOutcome, CredentialCheckResult, CredentialList,
    CredentialSummary, CredentialTest, NewConnectLink, PutCredentials,
};
pub use error_code::ErrorCode;
pub use job_error::{ErrorRecord, JobError, RetryClass};
pub use job_page::JobPage;
pub use job_result::{JobResult, ProviderUsage};
pub use job_status::JobStatus;
pub use job_view::{JobResultView, JobView, RouteStep};
pub use pricing::{ModelPrice, Pricing, SecondRate, Usd};
pub use project_api::{ProjectList, ProjectView};
pub use provider_api::{Capabilities, CredentialField, ProviderInfo, ProviderList};
pub use provider_id::{
    InvalidProviderId, MAX_PROVIDER_ID_LEN, ProviderDefaults, ProviderId, UnknownProvider,
};
pub use queue_stats::QueueStats;
pub use rate_limits::RateLimits;
pub use request::{Fallback, GenerationRequest, MAX_FALLBACKS, ValidationError};
pub use routing::{
    Auto, AutoRequest, Exclusion, JobRequest, RoutedChoice, RoutingDecision, RoutingStrategy,
};
pub use tenancy::{
    DEFAULT_PROJECT_ID, DEFAULT_PROJECT_NAME, ProjectUser, Scope, Scopes, UnknownScope,
};
pub use usage_api::{
    UsageGroupBy, UsageGroupView, UsageReport, UsageTotals, parse_usage_time, usage_month_start,
};
pub use webhook_api::{
    JobWebhookSecret, NewWebhookEndpoint, WebhookDelivery, WebhookDeliveryPage,
    WebhookDeliveryStatus, WebhookEndpointChange, WebhookEndpointList, WebhookEndpointView,
    WebhookEndpointWithSecret, WebhookPayload,
};
pub use webhook_event::{EventType, UnknownEventType};

/// The payload of a generation job's queue item: the job's id, nothing else.
/// The store holds the truth about the job; credentials and requests never
/// travel through the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobItem {
    /// The `generation_jobs` row this item drives.
    pub job_id: uuid::Uuid,
}
