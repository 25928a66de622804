//! The set of configured providers.

use std::sync::Arc;

use byok_core::ProviderId;

use crate::http::USER_AGENT;
use crate::runway::RunwayProvider;
use crate::stability::StabilityProvider;
use crate::veo::VeoProvider;
use crate::vertex::TokenSource;
use crate::{RegistryOptions, VideoProvider};

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
    /// The HTTP client could not be built (TLS initialisation).
    #[error("could not build the HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
}

/// Every provider of [`ProviderId::ALL`], configured.
#[derive(Debug)]
pub struct Registry {
    /// Indexed like [`ProviderId::ALL`].
    providers: [Arc<dyn VideoProvider>; ProviderId::ALL.len()],
}

impl Registry {
    /// Builds every adapter from `options`.
    pub fn new(options: &RegistryOptions) -> Result<Registry, RegistryError> {
        // One client for the configured (trusted) provider hosts. Redirects are not
        // followed: provider APIs do not redirect, and a redirect would carry our
        // attention (not the Authorization header, which reqwest drops) elsewhere.
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .timeout(options.request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(RegistryError::HttpClient)?;
        let tokens = Arc::new(
            TokenSource::new(options.allow_private_networks, options.request_timeout)
                .map_err(RegistryError::HttpClient)?,
        );

        let providers =
            ProviderId::ALL.map(|id| -> Result<Arc<dyn VideoProvider>, RegistryError> {
                let provider_options = options.provider(id);
                Ok(match id {
                    ProviderId::Veo => Arc::new(VeoProvider::new(
                        provider_options,
                        Arc::clone(&tokens),
                        options.allow_private_networks,
                    )?),
                    ProviderId::Runway => Arc::new(RunwayProvider::new(
                        provider_options,
                        http.clone(),
                        options.request_timeout,
                        options.allow_private_networks,
                    )?),
                    ProviderId::Stability => Arc::new(StabilityProvider::new(
                        provider_options,
                        http.clone(),
                        options.request_timeout,
                    )?),
                })
            });
        let [veo, runway, stability] = providers;
        Ok(Registry {
            providers: [veo?, runway?, stability?],
        })
    }

    /// The adapter of `id`. Every [`ProviderId`] is present.
    pub fn get(&self, id: ProviderId) -> Arc<dyn VideoProvider> {
        Arc::clone(&self.providers[index(id)])
    }

    /// Every adapter, in [`ProviderId::ALL`] order.
    pub fn all(&self) -> impl Iterator<Item = &Arc<dyn VideoProvider>> {
        self.providers.iter()
    }
}

fn index(id: ProviderId) -> usize {
    match id {
        ProviderId::Veo => 0,
        ProviderId::Runway => 1,
        ProviderId::Stability => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_matches_all_order() {
        for (i, id) in ProviderId::ALL.into_iter().enumerate() {
            assert_eq!(index(id), i);
        }
    }
}
