//! How to reach the providers: base URLs, rate limits, network policy and timeouts.

use std::time::Duration;

use byok_core::{Catalogue, ProviderId};

use crate::RateLimits;

/// How to reach one provider.
#[derive(Debug, Clone)]
pub struct ProviderOptions {
    /// Runway default `https://api.dev.runwayml.com`, Stability `https://api.stability.ai`,
    /// Veo `https://{location}-aiplatform.googleapis.com` (the literal `{location}` is
    /// replaced by the credential's location; a base_url without it is used as is, e.g. a
    /// simulator).
    pub base_url: String,
    /// Per-key limits (`providers.<id>.rate_limit.*`).
    pub rate_limits: RateLimits,
    /// `providers.<id>.models`: replaces the built-in catalogue when set.
    pub models: Option<Catalogue>,
}

impl ProviderOptions {
    /// The real host and the seed rate limits (DESIGN §8) of `id`.
    pub fn defaults(id: ProviderId) -> ProviderOptions {
        let (base_url, per_minute, per_hour) = match id {
            ProviderId::Veo => (crate::veo::DEFAULT_BASE_URL, 10, 100),
            ProviderId::Runway => (crate::runway::DEFAULT_BASE_URL, 5, 50),
            ProviderId::Stability => (crate::stability::DEFAULT_BASE_URL, 3, 30),
        };
        ProviderOptions {
            base_url: base_url.to_owned(),
            rate_limits: RateLimits {
                per_minute,
                per_hour,
            },
            models: None,
        }
    }
}

/// Everything [`crate::Registry::new`] needs.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Google Veo on Vertex AI.
    pub veo: ProviderOptions,
    /// Runway.
    pub runway: ProviderOptions,
    /// Stability AI.
    pub stability: ProviderOptions,
    /// `fetch.allow_private_networks`: when false, URLs taken from user input (the service
    /// account's `token_uri`) must be https and must not resolve to loopback, private,
    /// link-local, unspecified, CGNAT or other non-global addresses (see [`crate::net`]).
    /// Configured base URLs are trusted and not subject to it.
    pub allow_private_networks: bool,
    /// Per-request timeout for provider calls (default 30 s).
    pub request_timeout: Duration,
}

impl RegistryOptions {
    /// The default per-request timeout.
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

    /// Real hosts, seed rate limits (Veo 10/min 100/h, Runway 5/min 50/h, Stability
    /// 3/min 30/h), private networks refused, 30 s timeout.
    pub fn defaults() -> RegistryOptions {
        RegistryOptions {
            veo: ProviderOptions::defaults(ProviderId::Veo),
            runway: ProviderOptions::defaults(ProviderId::Runway),
            stability: ProviderOptions::defaults(ProviderId::Stability),
            allow_private_networks: false,
            request_timeout: Self::DEFAULT_REQUEST_TIMEOUT,
        }
    }

    /// The options of one provider.
    pub fn provider(&self, id: ProviderId) -> &ProviderOptions {
        match id {
            ProviderId::Veo => &self.veo,
            ProviderId::Runway => &self.runway,
            ProviderId::Stability => &self.stability,
        }
    }
}
