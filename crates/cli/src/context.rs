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
    let mut options = RegistryOptions::defaults();
    for id in byok_core::ProviderId::ALL {
        let p = settings.providers.get(id);
        *options.provider_mut(id) = ProviderOptions {
            base_url: p.base_url.clone(),
            rate_limits: RateLimits {
                per_minute: p.rate_limit.per_minute,
                per_hour: p.rate_limit.per_hour,
            },
            models: p
                .models
                .clone()
                .map(|models| byok_core::Catalogue { models }),
        };
    }
    options.allow_private_networks = settings.fetch.allow_private_networks;
    options.request_timeout = RegistryOptions::DEFAULT_REQUEST_TIMEOUT;
    Registry::new(&options).context("cannot set up the provider adapters")
}

/// The queue the settings name: Redis Streams (`queue.url = redis://…`) or
/// the SQLite database itself (`queue.url = sqlite`, the embedded shape).
pub async fn queue_engine(
    settings: &Settings,
) -> anyhow::Result<std::sync::Arc<dyn byok_queue::Engine>> {
    use secrecy::ExposeSecret as _;
    let mut config = byok_queue::QueueConfig::new(settings.queue.namespace.clone());
    config.visibility_timeout = settings.queue.visibility_timeout;
    config.dead_retention = settings.queue.dead_retention;
    config.max_attempts = settings.worker.max_attempts;
    Ok(match settings.queue_kind() {
        byok_config::QueueUrl::Redis => {
            byok_queue::RedisEngine::connect(settings.queue.url.expose_secret(), config)
                .await
                .context("cannot connect to the queue (queue.url)")?
        }
        byok_config::QueueUrl::Sqlite => {
            byok_queue::SqliteEngine::connect(settings.database.url.expose_secret(), config)
                .await
                .context("cannot open the queue in the SQLite database (database.url)")?
        }
    })
}

/// The rate limiter shared by every worker: in Redis when the queue is
/// (distributed), in process otherwise (embedded: one process holds every
/// worker, so its memory is the whole truth).
pub async fn limiter(
    settings: &Settings,
) -> anyhow::Result<std::sync::Arc<dyn byok_ratelimit::RateLimiter>> {
    use secrecy::ExposeSecret as _;
    Ok(match settings.queue_kind() {
        byok_config::QueueUrl::Redis => std::sync::Arc::new(
            byok_ratelimit::RedisLimiter::connect(
                settings.queue.url.expose_secret(),
                &settings.queue.namespace,
            )
            .await
            .context("cannot reach Redis for the rate limiter (queue.url)")?,
        ),
        byok_config::QueueUrl::Sqlite => std::sync::Arc::new(byok_ratelimit::LocalLimiter::new()),
    })
}

/// The guarded fetcher of users' image URLs.
pub fn image_fetcher(
    settings: &Settings,
) -> anyhow::Result<std::sync::Arc<byok_providers::fetch::ImageFetcher>> {
    let options = byok_providers::fetch::FetchOptions {
        allow_private_networks: settings.fetch.allow_private_networks,
        ..Default::default()
    };
    Ok(std::sync::Arc::new(
        byok_providers::fetch::ImageFetcher::new(options)
            .context("cannot set up the image fetcher")?,
    ))
}

/// The job pipeline of a worker.
pub fn pipeline(
    settings: &Settings,
    store: Store,
    key_ring: std::sync::Arc<KeyRing>,
    registry: std::sync::Arc<Registry>,
    limiter: std::sync::Arc<dyn byok_ratelimit::RateLimiter>,
    fetcher: std::sync::Arc<byok_providers::fetch::ImageFetcher>,
) -> byok_worker::Pipeline {
    let pacing = byok_core::ProviderId::ALL
        .into_iter()
        .map(|id| {
            let p = settings.providers.get(id);
            let pacing = byok_worker::ProviderPacing {
                poll_interval: p.poll_interval,
                limits: byok_ratelimit::Limits {
                    per_minute: p.rate_limit.per_minute,
                    per_hour: p.rate_limit.per_hour,
                },
            };
            (id, pacing)
        })
        .collect();
    let pipeline_settings = byok_worker::PipelineSettings {
        max_attempts: settings.worker.max_attempts,
        job_timeout: settings.worker.job_timeout,
        request_timeout: RegistryOptions::DEFAULT_REQUEST_TIMEOUT,
        retry_backoff: byok_worker::RetryBackoff::default(),
        output_dir: settings.output.dir.clone(),
        pacing,
    };
    byok_worker::Pipeline::new(
        store,
        key_ring,
        registry,
        limiter,
        fetcher,
        pipeline_settings,
    )
}
