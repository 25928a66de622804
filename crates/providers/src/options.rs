//! How to reach the providers: base URLs, rate limits, network policy and timeouts.

use std::sync::Arc;
use std::time::Duration;

use byok_core::{Catalogue, ModelPrice, ProviderId, RateLimits};
use url::Url;

use crate::RegistryError;
use crate::declarative::Definition;
use crate::fetch::ImageWork;

/// Google's OAuth token endpoint, which every real service-account file names.
pub const GOOGLE_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";

/// How to reach one provider.
#[derive(Debug, Clone)]
pub struct ProviderOptions {
    /// `providers.<id>.base_url`; default the real host ([`ProviderId::defaults`], or the
    /// definition's `base_url` for a declared provider). For Veo
    /// the literal `{location}` is replaced by the credential's location; a base_url
    /// without it is used as is, e.g. a simulator.
    pub base_url: String,
    /// Per-key limits (`providers.<id>.rate_limit.*`).
    pub rate_limits: RateLimits,
    /// Time between status polls of a remote job (`providers.<id>.poll_interval`).
    pub poll_interval: Duration,
    /// `providers.<id>.models`: replaces the built-in catalogue when set.
    pub models: Option<Catalogue>,
    /// `[[providers.<id>.prices]]`: replace the catalogue's prices of the models they name.
    pub prices: Vec<ModelPrice>,
    /// `providers.<id>.max_requests_per_second`: every request to the provider waits
    /// for its turn at this pace; `None`: not paced.
    pub max_requests_per_second: Option<f64>,
}

impl ProviderOptions {
    /// The real host and the default per-key rate limits (docs/rate-limits.md) of a
    /// built-in provider, from [`ProviderId::defaults`]; `None` for a declared one.
    pub fn defaults(id: ProviderId) -> Option<ProviderOptions> {
        let defaults = id.defaults()?;
        Some(ProviderOptions {
            base_url: defaults.base_url.to_owned(),
            rate_limits: defaults.rate_limits,
            poll_interval: defaults.poll_interval,
            models: None,
            prices: Vec::new(),
            max_requests_per_second: None,
        })
    }

    /// What a definition says: its base URL, rate limits, poll interval and (as the
    /// built-in catalogue of a declared provider) its models.
    pub fn of_definition(definition: &Definition) -> ProviderOptions {
        ProviderOptions {
            base_url: definition.base_url.clone(),
            rate_limits: definition.rate_limit.into(),
            poll_interval: Duration::from_secs(definition.poll_interval_secs),
            models: None,
            prices: Vec::new(),
            max_requests_per_second: None,
        }
    }
}

/// Everything [`crate::Registry::new`] needs: the options of every built-in provider and of
/// every declared one ([`RegistryOptions::declare`]; [`RegistryOptions::provider`],
/// [`RegistryOptions::provider_mut`]) and what they share.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// The built-in providers in [`ProviderId::BUILT_IN`] order, then the declared ones in
    /// the order they were declared (the order of listings).
    providers: Vec<(ProviderId, ProviderOptions)>,
    /// The definitions of the declared providers, in the same order.
    definitions: Vec<Arc<Definition>>,
    /// `fetch.allow_private_networks`: when false, URLs taken from user input (the service
    /// account's `token_uri`) must be https and must not resolve to loopback, private,
    /// link-local, unspecified, CGNAT or other non-global addresses (see [`crate::net`]).
    /// Configured base URLs are trusted and not subject to it.
    pub allow_private_networks: bool,
    /// Per-request timeout for provider calls (default 30 s).
    pub request_timeout: Duration,
    /// Token endpoints a Veo service account's `token_uri` may name besides
    /// [`GOOGLE_TOKEN_URI`] (`providers.veo.token_uri_allowlist`; in simulate mode, the
    /// simulator's). Any other is refused when the credential is parsed: a key file is
    /// user input, and its `token_uri` decides where byok sends a signed assertion.
    pub token_uri_allowlist: Vec<Url>,
    /// Where the adapters decode and resize input images (Runway's re-encoding of a large
    /// image, Stability's fitting): the process's one [`ImageWork`], shared with the
    /// fetcher ([`crate::FetchOptions::images`]) so that one limit covers every decode.
    pub images: ImageWork,
}

impl RegistryOptions {
    /// The default per-request timeout.
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

    /// Every provider's [`ProviderOptions::defaults`] (real hosts, seed rate limits: Veo
    /// 10/min 100/h, Runway 5/min 50/h, Stability 3/min 30/h), private networks refused,
    /// 30 s timeout, an [`ImageWork`] of its own with the default limits.
    pub fn defaults() -> RegistryOptions {
        RegistryOptions {
            providers: ProviderId::BUILT_IN
                .into_iter()
                .filter_map(|id| Some((id, ProviderOptions::defaults(id)?)))
                .collect(),
            definitions: Vec::new(),
            allow_private_networks: false,
            request_timeout: Self::DEFAULT_REQUEST_TIMEOUT,
            token_uri_allowlist: Vec::new(),
            images: ImageWork::default(),
        }
    }

    /// The options of one provider; `None` when it is neither built in nor declared here.
    pub fn provider(&self, id: ProviderId) -> Option<&ProviderOptions> {
        self.providers
            .iter()
            .find(|(p, _)| *p == id)
            .map(|(_, options)| options)
    }

    /// The options of one provider, to change them
    /// (`options.provider_mut(ProviderId::RUNWAY).unwrap().base_url = …`).
    pub fn provider_mut(&mut self, id: ProviderId) -> Option<&mut ProviderOptions> {
        self.providers
            .iter_mut()
            .find(|(p, _)| *p == id)
            .map(|(_, options)| options)
    }

    /// Every provider these options configure, in listing order.
    pub fn ids(&self) -> impl Iterator<Item = ProviderId> + '_ {
        self.providers.iter().map(|(id, _)| *id)
    }

    /// Adds the provider `definition` describes (already checked by
    /// [`Definition::parse`]), with the options it states; the configuration may then
    /// change them through [`RegistryOptions::provider_mut`]. Its id is declared
    /// process-wide ([`ProviderId::declare`]). Refused: an id declared twice here.
    pub fn declare(&mut self, definition: Definition) -> Result<ProviderId, RegistryError> {
        let id = ProviderId::declare(&definition.id).map_err(|why| {
            RegistryError::BadDefinition(format!(
                "provider definition `{}`: id {why}",
                definition.id
            ))
        })?;
        if self.provider(id).is_some() {
            return Err(RegistryError::BadDefinition(format!(
                "provider `{id}` is defined twice"
            )));
        }
        self.providers
            .push((id, ProviderOptions::of_definition(&definition)));
        self.definitions.push(Arc::new(definition));
        Ok(id)
    }

    /// The declared providers' definitions, in declaration order.
    pub fn definitions(&self) -> &[Arc<Definition>] {
        &self.definitions
    }
}
