//! The set of configured providers: [`PROVIDERS`], one [`ProviderSpec`] per built-in
//! provider, is the only list of adapters written in Rust; the declared providers come from
//! their definitions ([`RegistryOptions::declare`]). Everything else (the registry, the
//! catalogues, the descriptors of `GET /v1/providers`) is derived from those two.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use byok_core::{Catalogue, ModelStatus, ProviderId, RateLimits};

use crate::catalogue::Capabilities;
use crate::fetch::ImageWork;
use crate::http::USER_AGENT;
use crate::pace::Pace;
use crate::vertex::TokenSource;
use crate::{
    CredentialField, ProviderDescriptor, ProviderOptions, RegistryOptions, VideoProvider, fal,
    replicate, runway, stability, veo,
};

/// Every adapter of this build, one line per built-in provider, in [`ProviderId::BUILT_IN`]
/// order (the length is checked at compile time, the order by a unit test).
pub(crate) const PROVIDERS: [&ProviderSpec; ProviderId::BUILT_IN.len()] = [
    &veo::SPEC,
    &runway::SPEC,
    &stability::SPEC,
    &fal::SPEC,
    &replicate::SPEC,
];

/// What a provider module declares about itself (its `SPEC` constant). The defaults of its
/// settings (base URL, seed rate limits, poll interval) are IO-free data shared with the
/// configuration, so they sit beside its id in `byok_core::ProviderId`
/// ([`ProviderId::defaults`]).
#[derive(Debug)]
pub(crate) struct ProviderSpec {
    /// Which provider.
    pub(crate) id: ProviderId,
    /// Human name for listings ("Runway ML").
    pub(crate) display_name: &'static str,
    /// One sentence on what the provider is and how it is reached.
    pub(crate) description: &'static str,
    /// Stable icon slug.
    pub(crate) icon: &'static str,
    /// The fields of the `credentials` object, in display order.
    pub(crate) credential_fields: &'static [CredentialField],
    /// The built-in catalogue: `include_str!("../catalogue/<id>.toml")`.
    pub(crate) catalogue: &'static str,
    /// Builds the adapter.
    pub(crate) build: fn(Setup<'_>) -> Result<Arc<dyn VideoProvider>, RegistryError>,
}

/// Everything an adapter is built from: its options, its checked catalogue and descriptor,
/// and what the registry shares between adapters.
#[derive(Debug)]
pub(crate) struct Setup<'a> {
    /// `providers.<id>.*`.
    pub(crate) options: &'a ProviderOptions,
    /// The descriptor of `GET /v1/providers`: the spec's text, the catalogue's models and
    /// their capabilities, the configured rate limits.
    pub(crate) descriptor: ProviderDescriptor,
    /// `providers.<id>.models`, else the built-in catalogue; checked for coherence.
    pub(crate) catalogue: Catalogue,
    /// The client for configured (trusted) provider hosts: `request_timeout` per request,
    /// redirects not followed.
    pub(crate) http: reqwest::Client,
    /// The Vertex access-token cache (shared, so a token is exchanged once per account).
    pub(crate) tokens: Arc<TokenSource>,
    /// `fetch.allow_private_networks`, for URLs that come from outside.
    pub(crate) allow_private_networks: bool,
    /// Token endpoints allowed besides Google's (Veo).
    pub(crate) token_uri_allowlist: Vec<url::Url>,
    /// Per-request timeout for provider calls.
    pub(crate) request_timeout: Duration,
    /// The provider's outbound pace (`max_requests_per_second`): every request the
    /// adapter sends waits on it.
    pub(crate) pace: Pace,
    /// Where input images are decoded and resized ([`RegistryOptions::images`]).
    pub(crate) images: ImageWork,
}

/// What `GET /v1/providers` says about a provider besides its catalogue: its spec's text or
/// its definition's.
pub(crate) struct Text {
    pub(crate) display_name: Cow<'static, str>,
    pub(crate) description: Cow<'static, str>,
    pub(crate) icon: Cow<'static, str>,
    pub(crate) credential_fields: Vec<CredentialField>,
}

impl<'a> Setup<'a> {
    /// The setup of the built-in `spec` from the registry's options: loads and checks the
    /// catalogue, builds the descriptor.
    pub(crate) fn new(
        spec: &ProviderSpec,
        registry: &'a RegistryOptions,
        http: reqwest::Client,
        tokens: Arc<TokenSource>,
    ) -> Result<Setup<'a>, RegistryError> {
        let text = Text {
            display_name: Cow::Borrowed(spec.display_name),
            description: Cow::Borrowed(spec.description),
            icon: Cow::Borrowed(spec.icon),
            credential_fields: spec.credential_fields.to_vec(),
        };
        let built_in = || crate::catalogue::parse_built_in(spec);
        Setup::of(spec.id, text, built_in, registry, http, tokens)
    }

    /// The setup of provider `id` described by `text`, whose own catalogue `built_in` gives
    /// unless `providers.<id>.models` replaces it.
    pub(crate) fn of(
        id: ProviderId,
        text: Text,
        built_in: impl FnOnce() -> Result<Catalogue, RegistryError>,
        registry: &'a RegistryOptions,
        http: reqwest::Client,
        tokens: Arc<TokenSource>,
    ) -> Result<Setup<'a>, RegistryError> {
        let options = registry
            .provider(id)
            .ok_or(RegistryError::NotConfigured { provider: id })?;
        let mut catalogue = match &options.models {
            Some(configured) => configured.clone(),
            None => built_in()?,
        };
        crate::catalogue::set_prices(id, &mut catalogue, &options.prices)?;
        let catalogue = crate::catalogue::check(id, catalogue)?;
        let descriptor = ProviderDescriptor {
            id,
            display_name: text.display_name,
            description: text.description,
            icon: text.icon,
            status: if catalogue
                .models
                .iter()
                .any(|m| m.status == ModelStatus::Available)
            {
                ModelStatus::Available
            } else {
                ModelStatus::Retired
            },
            models: catalogue.models.clone(),
            capabilities: Capabilities::of(&catalogue),
            credential_fields: text.credential_fields,
            rate_limits: options.rate_limits,
        };
        Ok(Setup {
            options,
            descriptor,
            catalogue,
            http,
            tokens,
            allow_private_networks: registry.allow_private_networks,
            token_uri_allowlist: registry.token_uri_allowlist.clone(),
            request_timeout: registry.request_timeout,
            pace: Pace::new(options.max_requests_per_second),
            images: registry.images.clone(),
        })
    }
}

/// Why the providers could not be set up from configuration.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A `providers.<id>.base_url` is not usable.
    #[error("providers.{provider}.base_url: {reason}")]
    BadBaseUrl {
        /// Whose base URL.
        provider: ProviderId,
        /// What is wrong with it.
        reason: String,
    },
    /// A provider's catalogue (`providers.<id>.models` or the built-in one) is not coherent.
    #[error("providers.{provider}.models: {reason}")]
    BadCatalogue {
        /// Whose catalogue.
        provider: ProviderId,
        /// What is wrong with it.
        reason: String,
    },
    /// `providers.<id>.prices` names a model the catalogue lacks, or one twice.
    #[error("providers.{provider}.prices: {reason}")]
    BadPrices {
        /// Whose prices.
        provider: ProviderId,
        /// What is wrong with them.
        reason: String,
    },
    /// A provider's `rate_limit.*` could never grant a submit.
    #[error("providers.{provider}.rate_limit.{field}: {reason}")]
    BadRateLimits {
        /// Whose limits.
        provider: ProviderId,
        /// `per_minute` or `per_hour`.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A provider has no options (a programming error of the caller: every built-in
    /// provider has them, and declared ones get them from their definition).
    #[error("provider `{provider}` is not configured")]
    NotConfigured {
        /// Which provider.
        provider: ProviderId,
    },
    /// A provider definition cannot be added (its id is taken, or declared twice).
    #[error("{0}")]
    BadDefinition(String),
    /// The HTTP client could not be built (TLS initialisation).
    #[error("could not build the HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
}

/// Every provider of a deployment, configured: the built-in ones, then the declared ones.
#[derive(Debug)]
pub struct Registry {
    /// In listing order.
    providers: Vec<Configured>,
}

/// One provider of the registry.
#[derive(Debug)]
struct Configured {
    adapter: Arc<dyn VideoProvider>,
    pacing: Pacing,
}

/// How the worker paces one provider: the per-key submit quota and the time between
/// polls, as configured (`providers.<id>.rate_limit.*`, `providers.<id>.poll_interval`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pacing {
    /// Submits per user key.
    pub rate_limits: RateLimits,
    /// Time between status polls of a remote job.
    pub poll_interval: Duration,
}

impl Registry {
    /// Builds every adapter from `options`: the built-in ones and one per declared
    /// definition.
    pub fn new(options: &RegistryOptions) -> Result<Registry, RegistryError> {
        let http = trusted_client(options.request_timeout)?;
        let tokens = Arc::new(
            TokenSource::new(options.allow_private_networks, options.request_timeout)
                .map_err(RegistryError::HttpClient)?,
        );
        let mut adapters = Vec::new();
        for spec in PROVIDERS {
            let setup = Setup::new(spec, options, http.clone(), Arc::clone(&tokens))?;
            let adapter = (spec.build)(setup)?;
            debug_assert_eq!(adapter.id(), spec.id);
            adapters.push(adapter);
        }
        for definition in options.definitions() {
            adapters.push(crate::declarative::build(
                definition,
                options,
                http.clone(),
                Arc::clone(&tokens),
            )?);
        }
        check_alternatives(&adapters)?;
        let providers = adapters
            .into_iter()
            .map(|adapter| {
                let id = adapter.id();
                let options = options
                    .provider(id)
                    .ok_or(RegistryError::NotConfigured { provider: id })?;
                let rate_limits = options.rate_limits.check().map_err(|(field, reason)| {
                    RegistryError::BadRateLimits {
                        provider: id,
                        field,
                        reason,
                    }
                })?;
                Ok(Configured {
                    adapter,
                    pacing: Pacing {
                        rate_limits,
                        poll_interval: options.poll_interval,
                    },
                })
            })
            .collect::<Result<_, RegistryError>>()?;
        Ok(Registry { providers })
    }

    fn entry(&self, id: ProviderId) -> Option<&Configured> {
        // A handful of providers: a scan of interned ids is as quick as a map.
        self.providers.iter().find(|p| p.adapter.id() == id)
    }

    /// The quota and poll interval of `id`; `None` when this deployment has no such
    /// provider.
    pub fn pacing(&self, id: ProviderId) -> Option<Pacing> {
        self.entry(id).map(|p| p.pacing)
    }

    /// The adapter of `id`; `None` when this deployment has no such provider (a declared
    /// provider whose definition was removed, or one declared by another system of the
    /// same process).
    pub fn get(&self, id: ProviderId) -> Option<Arc<dyn VideoProvider>> {
        self.entry(id).map(|p| Arc::clone(&p.adapter))
    }

    /// Every adapter, built-in ones first, in listing order.
    pub fn all(&self) -> impl Iterator<Item = &Arc<dyn VideoProvider>> {
        self.providers.iter().map(|p| &p.adapter)
    }
}

/// A retired model's alternatives must be models other providers of this deployment
/// offer and can run: the error of a refused job points users at them.
fn check_alternatives(providers: &[Arc<dyn VideoProvider>]) -> Result<(), RegistryError> {
    for provider in providers {
        for model in &provider.catalogue().models {
            let Some(retirement) = &model.retirement else {
                continue;
            };
            for alternative in &retirement.alternatives {
                let offered = providers
                    .iter()
                    .find(|p| p.id() == alternative.provider)
                    .and_then(|p| p.catalogue().model(&alternative.model))
                    .is_some_and(|m| m.status == ModelStatus::Available);
                if !offered {
                    return Err(RegistryError::BadCatalogue {
                        provider: provider.id(),
                        reason: format!(
                            "model `{}`: retirement.alternatives names {alternative}, which is \
                             not an available model of that provider's catalogue",
                            model.id
                        ),
                    });
                }
            }
        }
    }
    Ok(())
}

/// One client for the configured (trusted) provider hosts. Redirects are not followed:
/// provider APIs do not redirect, and a redirect would carry our attention (not the
/// Authorization header, which reqwest drops) elsewhere.
pub(crate) fn trusted_client(request_timeout: Duration) -> Result<reqwest::Client, RegistryError> {
    reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .timeout(request_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(RegistryError::HttpClient)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spec_is_its_providers_and_builds_with_the_defaults() {
        let registry = Registry::new(&RegistryOptions::defaults()).unwrap();
        for (spec, id) in PROVIDERS.iter().zip(ProviderId::BUILT_IN) {
            assert_eq!(spec.id, id);
            let adapter = registry.get(id).unwrap();
            assert_eq!(adapter.id(), id);
            assert_eq!(adapter.descriptor().display_name, spec.display_name);
        }
    }
}
