//! Runway's developer API (providers.md §1): API-key credentials, checked with
//! `GET /v1/organization`.

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

/// The real API host (not `api.runwayml.com`, providers.md §1.1).
pub(crate) const DEFAULT_BASE_URL: &str = "https://api.dev.runwayml.com";
/// `X-Runway-Version`, required on every request; the SDK's default since 2024-11.
pub(crate) const API_VERSION: &str = "2024-11-06";
const DISPLAY_NAME: &str = "Runway";

/// The Runway adapter.
#[derive(Debug)]
pub(crate) struct RunwayProvider {
    descriptor: ProviderDescriptor,
    catalogue: byok_core::Catalogue,
    base_url: Url,
    http: reqwest::Client,
    request_timeout: Duration,
}

impl RunwayProvider {
    pub(crate) fn new(
        options: &ProviderOptions,
        http: reqwest::Client,
        request_timeout: Duration,
    ) -> Result<Self, RegistryError> {
        let catalogue = crate::catalogue::load(ProviderId::Runway, options.models.as_ref())?;
        Ok(RunwayProvider {
            descriptor: ProviderDescriptor {
                id: ProviderId::Runway,
                models: catalogue.models.clone(),
                capabilities: crate::catalogue::Capabilities::of(&catalogue),
                display_name: "Runway ML",
                description: "Runway's Gen-4 video models through the Runway developer API \
                              (api.dev.runwayml.com), billed to your Runway organization.",
                icon: "runway",
                credential_fields: vec![
                    CredentialField {
                        name: "api_key",
                        label: "API key",
                        required: true,
                        secret: true,
                        kind: "string",
                        description: "A developer API key (key_…) from dev.runwayml.com.",
                    },
                    CredentialField {
                        name: "organization_id",
                        label: "Organization ID",
                        required: false,
                        secret: false,
                        kind: "string",
                        description: "Optional, for your reference; Runway keys already \
                                      belong to one organization.",
                    },
                ],
                rate_limits: options.rate_limits,
            },
            catalogue,
            base_url: http::parse_base_url(ProviderId::Runway, &options.base_url)?,
            http,
            request_timeout,
        })
    }
}

#[async_trait::async_trait]
impl VideoProvider for RunwayProvider {
    fn id(&self) -> ProviderId {
        ProviderId::Runway
    }

    fn descriptor(&self) -> &ProviderDescriptor {
        &self.descriptor
    }

    fn catalogue(&self) -> &byok_core::Catalogue {
        &self.catalogue
    }

    fn parse_credentials(&self, raw: &Value) -> Result<Credentials, CredentialsError> {
        credentials::parse_api_key(ProviderId::Runway, raw)
    }

    async fn check_credentials(&self, credentials: &Credentials) -> CredentialCheck {
        let (api_key, _) = match api_key_of(credentials, ProviderId::Runway) {
            Ok(parts) => parts,
            Err(check) => return check,
        };
        let secret = api_key.expose_secret();
        let request = self
            .http
            .get(http::endpoint(&self.base_url, "/v1/organization"))
            .bearer_auth(secret)
            .header("X-Runway-Version", API_VERSION)
            .header(ACCEPT, "application/json");
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

/// Maps the answer of `GET /v1/organization`.
///
/// 200 with a JSON object is valid; 401 and 403 reject the key. Everything else gives no
/// verdict: 429 and 5xx are transient, and other 4xx (400 for a version header Runway no
/// longer accepts, 404 for a wrong base URL, …) say something about our request, not the
/// key. Marking a working key invalid would stop its owner's jobs, so only the statuses
/// that unambiguously mean "bad key" reject it.
fn classify(status: StatusCode, body: &Body, secret: &str) -> CredentialCheck {
    let json = body.json();
    let detail = json
        .as_ref()
        .and_then(error_text)
        .map(|text| http::sanitize(text, &[secret]));
    let code = status.as_u16();
    match code {
        200 if json.as_ref().is_some_and(Value::is_object) => CredentialCheck::Valid,
        200 => CredentialCheck::Unavailable {
            reason: "Runway answered the key check with an unexpected body (HTTP 200)".to_owned(),
        },
        401 | 403 => CredentialCheck::Rejected {
            reason: http::with_detail(format!("Runway rejected the key (HTTP {code})"), detail),
        },
        429 => CredentialCheck::Unavailable {
            reason: http::with_detail(
                "Runway is rate limiting requests (HTTP 429); try again later".to_owned(),
                detail,
            ),
        },
        _ => CredentialCheck::Unavailable {
            reason: http::with_detail(
                format!("Runway answered the key check with HTTP {code}"),
                detail,
            ),
        },
    }
}

/// Runway errors are `{"error": "…", …}` (providers.md §1.6); tolerate `message` too.
fn error_text(json: &Value) -> Option<&str> {
    http::first_text([
        json.get("error").and_then(Value::as_str),
        json.get("error")
            .and_then(|e| e.get("message"))
            .and_then(Value::as_str),
        json.get("message").and_then(Value::as_str),
    ])
}
