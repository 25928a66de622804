//! Google Veo on Vertex AI (providers.md §3b): service-account credentials, checked by
//! exchanging the key for an access token (see [`crate::vertex`]).

use std::sync::Arc;

use serde_json::Value;
use url::Url;

use crate::credentials::{self, DEFAULT_LOCATION};
use crate::http;
use crate::vertex::TokenSource;
use crate::{
    CredentialCheck, CredentialField, Credentials, CredentialsError, CredentialsKind,
    ProviderDescriptor, ProviderId, ProviderOptions, RegistryError, VideoProvider,
};

/// The real API host; `{location}` is replaced by the credentials' region.
pub(crate) const DEFAULT_BASE_URL: &str = "https://{location}-aiplatform.googleapis.com";
const LOCATION_PLACEHOLDER: &str = "{location}";

/// The Veo adapter.
#[derive(Debug)]
pub(crate) struct VeoProvider {
    descriptor: ProviderDescriptor,
    catalogue: byok_core::Catalogue,
    /// `providers.veo.base_url`, possibly containing `{location}`.
    base_url_template: String,
    tokens: Arc<TokenSource>,
    allow_private_networks: bool,
}

impl VeoProvider {
    pub(crate) fn new(
        options: &ProviderOptions,
        tokens: Arc<TokenSource>,
        allow_private_networks: bool,
    ) -> Result<Self, RegistryError> {
        let catalogue = crate::catalogue::load(ProviderId::Veo, options.models.as_ref())?;
        let provider = VeoProvider {
            descriptor: ProviderDescriptor {
                id: ProviderId::Veo,
                models: catalogue.models.clone(),
                capabilities: crate::catalogue::Capabilities::of(&catalogue),
                display_name: "Google Veo",
                description: "Google's Veo video models on Vertex AI, called with a Google \
                              Cloud service account and billed to its project.",
                icon: "veo",
                credential_fields: vec![
                    CredentialField {
                        name: "service_account",
                        label: "Service account key (JSON)",
                        required: true,
                        secret: true,
                        kind: "json",
                        description: "The JSON key file of a service account that has the \
                                      Vertex AI User role in the project to bill (the file \
                                      as an object, or its text).",
                    },
                    CredentialField {
                        name: "location",
                        label: "Location",
                        required: false,
                        secret: false,
                        kind: "string",
                        description: "Vertex AI region to run in; default us-central1.",
                    },
                ],
                rate_limits: options.rate_limits,
            },
            catalogue,
            base_url_template: options.base_url.trim().to_owned(),
            tokens,
            allow_private_networks,
        };
        // Validate the template as it will be used.
        provider
            .base_url_for(DEFAULT_LOCATION)
            .map_err(|e| match e {
                RegistryError::BadBaseUrl { reason, .. } => RegistryError::BadBaseUrl {
                    provider: ProviderId::Veo,
                    reason: format!("{reason} (with {LOCATION_PLACEHOLDER} = {DEFAULT_LOCATION})"),
                },
                other => other,
            })?;
        Ok(provider)
    }

    /// The Vertex AI base URL for `location`: `{location}` in the configured base URL is
    /// replaced by it. The `global` location has no regional host, so there
    /// `{location}-` is dropped (`https://aiplatform.googleapis.com`, as google-genai does).
    pub(crate) fn base_url_for(&self, location: &str) -> Result<Url, RegistryError> {
        let template = &self.base_url_template;
        let url = if location == "global" {
            template
                .replace(&format!("{LOCATION_PLACEHOLDER}-"), "")
                .replace(LOCATION_PLACEHOLDER, location)
        } else {
            template.replace(LOCATION_PLACEHOLDER, location)
        };
        http::parse_base_url(ProviderId::Veo, &url)
    }
}

#[async_trait::async_trait]
impl VideoProvider for VeoProvider {
    fn id(&self) -> ProviderId {
        ProviderId::Veo
    }

    fn descriptor(&self) -> &ProviderDescriptor {
        &self.descriptor
    }

    fn catalogue(&self) -> &byok_core::Catalogue {
        &self.catalogue
    }

    fn parse_credentials(&self, raw: &Value) -> Result<Credentials, CredentialsError> {
        credentials::parse_service_account(raw, self.allow_private_networks)
    }

    /// Exchanges the key for a new access token (never a cached one, so a key revoked
    /// since the last exchange is noticed); the new token then serves jobs from the cache.
    ///
    /// A successful exchange proves the key is live. It does not prove the account may
    /// use Vertex AI in `project_id`: that shows as 403 `PERMISSION_DENIED` on submit.
    async fn check_credentials(&self, credentials: &Credentials) -> CredentialCheck {
        match credentials.kind() {
            CredentialsKind::ServiceAccount { account, .. }
                if credentials.provider() == ProviderId::Veo =>
            {
                match self.tokens.fetch_fresh(account).await {
                    Ok(_) => CredentialCheck::Valid,
                    Err(err) => err.into(),
                }
            }
            _ => credentials::wrong_provider(credentials, ProviderId::Veo),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RateLimits;
    use std::time::Duration;

    fn provider(base_url: &str) -> Result<VeoProvider, RegistryError> {
        let tokens = Arc::new(TokenSource::new(false, Duration::from_secs(1)).unwrap());
        VeoProvider::new(
            &ProviderOptions {
                base_url: base_url.to_owned(),
                rate_limits: RateLimits {
                    per_minute: 1,
                    per_hour: 1,
                },
            },
            tokens,
            false,
        )
    }

    #[test]
    fn base_url_template_is_filled_per_location() {
        let veo = provider(DEFAULT_BASE_URL).unwrap();
        assert_eq!(
            veo.base_url_for("europe-west4").unwrap().as_str(),
            "https://europe-west4-aiplatform.googleapis.com/"
        );
        assert_eq!(
            veo.base_url_for("global").unwrap().as_str(),
            "https://aiplatform.googleapis.com/"
        );
        let sim = provider("http://127.0.0.1:9000/vertex").unwrap();
        assert_eq!(
            sim.base_url_for("us-central1").unwrap().as_str(),
            "http://127.0.0.1:9000/vertex"
        );
        let err = provider("https://{location}.x/?q").unwrap_err();
        assert!(
            err.to_string().starts_with("providers.veo.base_url"),
            "{err}"
        );
    }
}
