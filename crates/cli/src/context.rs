//! Turning settings into the running parts every command shares.

use anyhow::Context as _;
use byok_config::{KeyRingSource, Settings};
use byok_crypto::KeyRing;
use byok_providers::{ProviderOptions, RateLimits, Registry, RegistryOptions};
use byok_store::{Backend, Store, StoreOptions};

/// Connects to the configured database. SQLite (the embedded shape) is
/// migrated on the spot so that a first run just works; PostgreSQL must
/// have been migrated with `byok migrate`, a release step that several
/// processes must not race.
pub async fn open_store(settings: &Settings) -> anyhow::Result<Store> {
    let store = Store::connect(&settings.database.url, &StoreOptions::default())
        .await
        .context("cannot connect to the database (database.url)")?;
    match store.backend() {
        Backend::Sqlite => {
            store
                .migrate()
                .await
                .context("cannot migrate the SQLite database")?;
        }
        Backend::Postgres => store.require_current_schema().await?,
    }
    Ok(store)
}

/// The key ring, with a warning when the embedded shape had to create one.
pub fn key_ring(settings: &Settings) -> anyhow::Result<KeyRing> {
    let (ring, source) = byok_config::load_key_ring(settings)?;
    match source {
        KeyRingSource::GeneratedKeyFile(path) => {
            tracing::warn!(
                path = %path.display(),
                "no encryption key configured: generated one for this embedded installation; back it up, because credentials sealed with it cannot be opened without it"
            );
        }
        KeyRingSource::KeyFile(path) => {
            tracing::info!(path = %path.display(), "using the embedded key file");
        }
        KeyRingSource::LegacyKeyOnly => {
            tracing::info!("using ENCRYPTION_KEY as the only key (id `seed`)");
        }
        KeyRingSource::Configured => {}
    }
    tracing::info!(
        primary = ring.primary_key_id(),
        keys = ring.key_ids().count(),
        "key ring loaded"
    );
    Ok(ring)
}

/// The provider adapters, pointed where the settings say.
pub fn providers(settings: &Settings) -> anyhow::Result<Registry> {
    let provider = |id| {
        let p = settings.providers.get(id);
        ProviderOptions {
            base_url: p.base_url.clone(),
            rate_limits: RateLimits {
                per_minute: p.rate_limit.per_minute,
                per_hour: p.rate_limit.per_hour,
            },
            models: p
                .models
                .clone()
                .map(|models| byok_core::Catalogue { models }),
        }
    };
    let options = RegistryOptions {
        veo: provider(byok_core::ProviderId::Veo),
        runway: provider(byok_core::ProviderId::Runway),
        stability: provider(byok_core::ProviderId::Stability),
        allow_private_networks: settings.fetch.allow_private_networks,
        request_timeout: RegistryOptions::DEFAULT_REQUEST_TIMEOUT,
    };
    Registry::new(&options).context("cannot set up the provider adapters")
}
