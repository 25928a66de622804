//! Declarative provider definitions: a video provider described by a TOML file instead of
//! an adapter written in Rust (crates/providers/README.md, "Declarative definitions
//! (format)").
//!
//! This module holds the format ([`Definition`] and its parts), its loading and validation
//! ([`Definition::load`], [`Definition::parse`], [`load_dir`]; every refusal is a
//! [`DefinitionError`] naming the file, the provider and the field), and the two pure
//! pieces an adapter built from a definition needs: rendering a submit body from the
//! definition's template ([`Definition::render_submit`]) and reading the provider's answers
//! by the definition's JSON pointers ([`Definition::job_id`], [`Definition::read_poll`],
//! [`Definition::classify_status`]). The adapter that drives them (`adapter.rs`) is built by
//! the registry for every definition declared in its options
//! ([`crate::RegistryOptions::declare`]).

mod adapter;
mod error;
mod extract;
mod load;
mod template;

use std::collections::BTreeMap;

use byok_core::{ErrorCode, ModelSpec};
use serde::Deserialize;

pub(crate) use adapter::build;
pub use error::DefinitionError;
pub use extract::PollReading;
pub use load::{check_unique, load_dir};
pub use template::REQUEST_VARIABLES;

/// One provider, as an operator describes it (a `*.toml` file).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Definition {
    /// The provider's id: `[a-z0-9_-]{1,40}`, not one of the built-in providers.
    pub id: String,
    /// For people.
    pub display_name: String,
    /// For people.
    pub description: String,
    /// The icon's name, as the built-in providers' `icon`.
    pub icon: String,
    /// The API's base URL; every path is appended to it. `https` unless `allow_http`.
    pub base_url: String,
    /// Allows an `http://` base URL (the simulator, local tests). Off by default.
    #[serde(default)]
    pub allow_http: bool,
    /// Fixed headers sent with every request (an API version, …); not secret.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The credential form's fields; every value is secret.
    pub credential_fields: Vec<CredentialFieldDef>,
    /// How the credentials go on a request.
    pub auth: Auth,
    /// The cheap call that tells whether a key works.
    pub key_check: KeyCheck,
    /// Creating a job.
    pub submit: Submit,
    /// Asking where a job stands.
    pub poll: Poll,
    /// Cancelling a job, where the provider can.
    #[serde(default)]
    pub cancel: Option<Cancel>,
    /// How failed HTTP answers are classified.
    #[serde(default)]
    pub errors: Errors,
    /// Seconds between two polls of a job.
    pub poll_interval_secs: u64,
    /// Submits allowed per user key.
    pub rate_limit: RateLimit,
    /// The models, in `byok_core::Catalogue`'s format (`[[models]]`, with `[models.wire]`).
    pub models: Vec<ModelSpec>,
}

/// A field of the credential form (every value is treated as a secret).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialFieldDef {
    /// The key in the `"credentials"` object, `[a-z][a-z0-9_]{0,39}`; templates use it.
    pub name: String,
    /// For people.
    pub label: String,
    /// For people.
    pub description: String,
    /// Whether it must be given.
    pub required: bool,
}

/// How the credentials go on a request: exactly one of the three tables.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Auth {
    /// `Authorization: Bearer {field}`.
    Bearer(BearerAuth),
    /// A header whose value is a template over the credential fields.
    Header(NamedTemplate),
    /// A query parameter whose value is a template over the credential fields.
    Query(NamedTemplate),
}

/// `[auth.bearer]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BearerAuth {
    /// The credential field holding the token.
    pub field: String,
}

/// `[auth.header]` or `[auth.query]`: a name and a value template (`"Key {{ api_key }}"`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedTemplate {
    /// The header's or parameter's name.
    pub name: String,
    /// A minijinja template whose variables are the credential fields (no escaping).
    pub value: String,
}

/// An HTTP method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    /// GET
    Get,
    /// POST
    Post,
    /// PUT
    Put,
    /// PATCH
    Patch,
    /// DELETE
    Delete,
}

impl Method {
    /// The method's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }
}

/// `[key_check]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyCheck {
    /// The method.
    pub method: Method,
    /// The path after the base URL (may carry a query string).
    pub path: String,
    /// Statuses meaning the key works.
    pub valid: Vec<u16>,
    /// Statuses meaning the key is refused. Any other answer: no verdict.
    pub invalid: Vec<u16>,
}

/// `[submit]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Submit {
    /// The method (usually POST).
    pub method: Method,
    /// The path after the base URL: a template over `model` and `wire` (no escaping).
    pub path: String,
    /// The JSON body: a minijinja template over [`REQUEST_VARIABLES`], JSON auto-escaped
    /// (`{{ prompt }}` writes a JSON string, quotes included).
    pub body: String,
    /// Where the provider's job id is in the answer (RFC 6901 JSON pointer).
    pub job_id: String,
}

/// `[poll]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Poll {
    /// The method (usually GET).
    pub method: Method,
    /// The path after the base URL, with `{id}` (the job id, percent-encoded) once.
    pub path: String,
    /// Where the state is (pointer).
    pub state: String,
    /// The provider's states → ours (`queued`, `running`, `succeeded`, `failed`,
    /// `cancelled`); at least one must be `succeeded`.
    pub states: BTreeMap<String, String>,
    /// Where the progress is (pointer), when the provider reports it.
    #[serde(default)]
    pub progress: Option<String>,
    /// What a progress of 100 % reads: `1` (the default) or `100`.
    #[serde(default = "one")]
    pub progress_scale: f64,
    /// Where the video's URL is (pointer; `/output/0/url` reaches into an array). Exactly
    /// one of `video_url` and `video_base64`.
    #[serde(default)]
    pub video_url: Option<String>,
    /// Where the video itself is, base64-encoded in the answer (pointer), for APIs that
    /// return the bytes rather than a URL.
    #[serde(default)]
    pub video_base64: Option<String>,
    /// Where a failure's code is (pointer). Without it, or when it reads nothing, the
    /// provider's state stands as the code.
    #[serde(default)]
    pub failure_code: Option<String>,
    /// Where a failure's text is (pointer).
    #[serde(default)]
    pub failure_message: Option<String>,
    /// Provider failure codes → our error code and retry class.
    #[serde(default)]
    pub failure_codes: BTreeMap<String, ErrorRule>,
    /// What an unmapped failure is; default `provider_unavailable`, permanent.
    #[serde(default = "failure_default")]
    pub failure_default: ErrorRule,
}

fn one() -> f64 {
    1.0
}

fn failure_default() -> ErrorRule {
    ErrorRule {
        code: ErrorCode::ProviderUnavailable,
        retry: Retry::Permanent,
    }
}

/// `[cancel]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cancel {
    /// The method.
    pub method: Method,
    /// The path after the base URL, with `{id}` once.
    pub path: String,
}

/// Our error code and what to do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorRule {
    /// The stable code (`byok_core::ErrorCode`'s wire name).
    pub code: ErrorCode,
    /// The retry class; `permanent` unless said.
    #[serde(default)]
    pub retry: Retry,
}

/// A retry class (docs/job-lifecycle.md, "Failure classes").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Retry {
    /// No retry.
    #[default]
    Permanent,
    /// Retry with backoff.
    Transient,
    /// Throttled: wait (the provider's header, else 60 s), without counting an attempt.
    RetryAfter,
}

/// `[errors]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Errors {
    /// Where the provider's message is in an error body (pointer).
    #[serde(default)]
    pub message: Option<String>,
    /// A header giving the seconds to wait on `retry_after` (besides the standard
    /// `retry-after-ms` / `Retry-After`), e.g. `RateLimit-Reset`.
    #[serde(default)]
    pub wait_header: Option<String>,
    /// HTTP status (`"402"`) → rule, over the common table ([`Errors::rule`]).
    #[serde(default)]
    pub status: BTreeMap<String, ErrorRule>,
}

/// `[rate_limit]`: submits per user key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Per rolling minute.
    pub per_minute: u32,
    /// Per rolling hour.
    pub per_hour: u32,
}

impl From<RateLimit> for byok_core::RateLimits {
    fn from(r: RateLimit) -> Self {
        byok_core::RateLimits {
            per_minute: r.per_minute,
            per_hour: r.per_hour,
        }
    }
}

/// Where a job stands, in our words (the values of `poll.states`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Accepted, not started.
    Queued,
    /// Rendering.
    Running,
    /// Done, with a video.
    Succeeded,
    /// Done, without one.
    Failed,
    /// Cancelled at the provider.
    Cancelled,
}

impl State {
    /// Every state's name, as definitions write it.
    pub const NAMES: [&'static str; 5] = ["queued", "running", "succeeded", "failed", "cancelled"];

    /// The state named `name`.
    pub fn parse(name: &str) -> Option<State> {
        Some(match name {
            "queued" => State::Queued,
            "running" => State::Running,
            "succeeded" => State::Succeeded,
            "failed" => State::Failed,
            "cancelled" => State::Cancelled,
            _ => return None,
        })
    }
}

impl Errors {
    /// The rule for an HTTP status: the definition's own, else the common table
    /// (`classify::by_status`): 400/413/422 `invalid_request`, 401/403
    /// `credentials_invalid`, 402 `insufficient_credits`, 404/410 `model_retired` (all
    /// permanent), 429 retry-after, 408 and 5xx `provider_unavailable` transient, anything
    /// else `provider_unavailable` permanent.
    pub fn rule(&self, status: u16) -> ErrorRule {
        if let Some(rule) = self.status.get(&status.to_string()) {
            return *rule;
        }
        let (code, retry) = match status {
            400 | 413 | 422 => (ErrorCode::InvalidRequest, Retry::Permanent),
            401 | 403 => (ErrorCode::CredentialsInvalid, Retry::Permanent),
            402 => (ErrorCode::InsufficientCredits, Retry::Permanent),
            404 | 410 => (ErrorCode::ModelRetired, Retry::Permanent),
            429 => (ErrorCode::ProviderUnavailable, Retry::RetryAfter),
            408 | 500..=599 => (ErrorCode::ProviderUnavailable, Retry::Transient),
            _ => (ErrorCode::ProviderUnavailable, Retry::Permanent),
        };
        ErrorRule { code, retry }
    }
}

impl Definition {
    /// The models as a catalogue.
    pub fn catalogue(&self) -> byok_core::Catalogue {
        byok_core::Catalogue {
            models: self.models.clone(),
        }
    }

    /// The poll path for a job id (percent-encoded as one path segment).
    pub fn poll_path(&self, job_id: &str) -> String {
        self.poll.path.replace("{id}", &encode_segment(job_id))
    }

    /// The cancel path for a job id, when the provider can cancel.
    pub fn cancel_path(&self, job_id: &str) -> Option<String> {
        self.cancel
            .as_ref()
            .map(|c| c.path.replace("{id}", &encode_segment(job_id)))
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn encode_segment(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
