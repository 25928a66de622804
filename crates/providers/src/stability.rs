//! Stability AI's hosted API (providers.md §2): API-key credentials, checked with
//! `GET /v1/user/balance`.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::ACCEPT;
use secrecy::ExposeSecret;
use serde_json::Value;
use url::Url;

use crate::credentials::{self, api_key_of};
use crate::http::{self, Body};
use crate::{
    CredentialCheck, CredentialField, Credentials, CredentialsError, ProviderDescriptor,
    ProviderId, ProviderOptions, RegistryError, VideoProvider,
};

/// The real API host.
pub(crate) const DEFAULT_BASE_URL: &str = "https://api.stability.ai";
const DISPLAY_NAME: &str = "Stability AI";

/// The Stability AI adapter.
#[derive(Debug)]
pub(crate) struct StabilityProvider {
    descriptor: ProviderDescriptor,
    catalogue: byok_core::Catalogue,
    base_url: Url,
    http: reqwest::Client,
    request_timeout: Duration,
}

impl StabilityProvider {
    pub(crate) fn new(
        options: &ProviderOptions,
        http: reqwest::Client,
        request_timeout: Duration,
    ) -> Result<Self, RegistryError> {
        let catalogue = crate::catalogue::load(ProviderId::Stability, options.models.as_ref())?;
        Ok(StabilityProvider {
            descriptor: ProviderDescriptor {
                id: ProviderId::Stability,
                models: catalogue.models.clone(),
                capabilities: crate::catalogue::Capabilities::of(&catalogue),
                display_name: "Stability AI",
                description: "Stability AI's hosted API (Stable Video Diffusion \
                              image-to-video), billed to your Stability credits.",
                icon: "stability",
                credential_fields: vec![
                    CredentialField {
                        name: "api_key",
                        label: "API key",
                        required: true,
                        secret: true,
                        kind: "string",
                        description: "An API key (sk-…) from platform.stability.ai/account/keys.",
                    },
                    CredentialField {
                        name: "organization_id",
                        label: "Organization ID",
                        required: false,
                        secret: false,
                        kind: "string",
                        description: "Optional (org-…): sent as the Organization header to \
                                      bill an organization other than your default one.",
                    },
                ],
                rate_limits: options.rate_limits,
            },
            catalogue,
            base_url: http::parse_base_url(ProviderId::Stability, &options.base_url)?,
            http,
            request_timeout,
        })
    }
}

#[async_trait::async_trait]
impl VideoProvider for StabilityProvider {
    fn id(&self) -> ProviderId {
        ProviderId::Stability
    }

    fn descriptor(&self) -> &ProviderDescriptor {
        &self.descriptor
    }

    fn catalogue(&self) -> &byok_core::Catalogue {
        &self.catalogue
    }

    fn parse_credentials(&self, raw: &Value) -> Result<Credentials, CredentialsError> {
        credentials::parse_api_key(ProviderId::Stability, raw)
    }

    async fn check_credentials(&self, credentials: &Credentials) -> CredentialCheck {
        let (api_key, organization_id) = match api_key_of(credentials, ProviderId::Stability) {
            Ok(parts) => parts,
            Err(check) => return check,
        };
        let secret = api_key.expose_secret();
        let mut request = self
            .http
            .get(http::endpoint(&self.base_url, "/v1/user/balance"))
            .bearer_auth(secret)
            .header(ACCEPT, "application/json");
        if let Some(organization_id) = organization_id {
            request = request.header("Organization", organization_id);
        }
        match http::send_check(request, DISPLAY_NAME, self.request_timeout, &[secret]).await {
            Ok((status, body)) => classify(status, &body, secret),
            Err(check) => check,
        }
    }
    async fn submit(&self, _credentials: &Credentials, _request: crate::SubmitRequest<'_>) -> Result<crate::Submitted, byok_core::JobError> {
        Err(scaffold())
    }

    async fn poll(&self, _credentials: &Credentials, _provider_job_id: &str) -> Result<crate::RemoteStatus, byok_core::JobError> {
        Err(scaffold())
    }

    async fn cancel(&self, _credentials: &Credentials, _provider_job_id: &str) -> Result<crate::CancelOutcome, byok_core::JobError> {
        Err(scaffold())
    }

    async fn fetch_output(&self, _credentials: &Credentials, _output: &crate::VideoOutput) -> Result<crate::Video, byok_core::JobError> {
        Err(scaffold())
    }
}

// SCAFFOLD: replaced by the generation half of this adapter.
fn scaffold() -> byok_core::JobError {
    byok_core::JobError::permanent(byok_core::ErrorCode::Internal, "SCAFFOLD generation half not written yet")
}

/// Maps the answer of `GET /v1/user/balance`: 200 `{"credits": <number>}` is valid, 401
/// and 403 reject the key (or the organization it was sent with); anything else gives no
/// verdict, for the reasons given at Runway's `classify`.
fn classify(status: StatusCode, body: &Body, secret: &str) -> CredentialCheck {
    let json = body.json();
    let detail = json
        .as_ref()
        .and_then(error_text)
        .map(|text| http::sanitize(&text, &[secret]));
    let code = status.as_u16();
    let has_credits = json
        .as_ref()
        .and_then(|j| j.get("credits"))
        .is_some_and(Value::is_number);
    match code {
        200 if has_credits => CredentialCheck::Valid,
        200 => CredentialCheck::Unavailable {
            reason: "Stability AI answered the key check with an unexpected body (HTTP 200)"
                .to_owned(),
        },
        401 | 403 => CredentialCheck::Rejected {
            reason: http::with_detail(
                format!("Stability AI rejected the key (HTTP {code})"),
                detail,
            ),
        },
        429 => CredentialCheck::Unavailable {
            reason: http::with_detail(
                "Stability AI is rate limiting requests (HTTP 429); try again in a minute"
                    .to_owned(),
                detail,
            ),
        },
        _ => CredentialCheck::Unavailable {
            reason: http::with_detail(
                format!("Stability AI answered the key check with HTTP {code}"),
                detail,
            ),
        },
    }
}

/// Stability errors: v2beta `{"name","errors":[…]}`, v1 `{"name","message"}`
/// (providers.md §2.4). Prefer the human text, fall back to the name.
fn error_text(json: &Value) -> Option<String> {
    let errors = json
        .get("errors")
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(Value::as_str)
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .take(5)
                .collect::<Vec<_>>()
                .join("; ")
        })
        .filter(|s| !s.is_empty());
    errors.or_else(|| {
        http::first_text([
            json.get("message").and_then(Value::as_str),
            json.get("name").and_then(Value::as_str),
        ])
        .map(str::to_owned)
    })
}
