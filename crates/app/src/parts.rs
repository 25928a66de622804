//! Each part of a system, made from the settings. [`crate::System`] puts
//! them together; the operator commands that need one part (`byok token`,
//! `byok queue`, `byok keys`) take just that one from here.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use byok_budgets::{Budgets, RedisLedger};
use byok_config::{ConfigError, KeyRingSource, QueueUrl, Settings};
use byok_core::{Catalogue, ProviderId};
use byok_crypto::KeyRing;
use byok_deliveries::{DeliveryOptions, DeliveryWorkerOptions, RetrySchedule};
use byok_providers::declarative::{Definition, check_unique, load_dir};
use byok_providers::{
    FetchOptions, ImageFetcher, ImageWork, ProviderOptions, Registry, RegistryOptions,
};
use byok_queue::{Engine, QueueConfig, RedisEngine, SqliteEngine};
use byok_ratelimit::{LocalLimiter, RateLimiter, RedisLimiter};
use byok_store::{Backend, Store, StoreOptions};
use byok_video_store::{VideoStore, VideoStoreConfig, VideoStoreError};
use byok_worker::{PipelineSettings, RetryBackoff, WorkerOptions};
use secrecy::ExposeSecret as _;

use crate::AppError;

/// Connects to the configured database. SQLite (the embedded shape) is
/// migrated on the spot so that a first run just works; PostgreSQL must
/// have been migrated with `byok migrate`, a release step that several
/// processes must not race.
pub async fn open_store(settings: &Settings) -> Result<Store, AppError> {
    let store = connect_store(settings).await?;
    let prepared = match store.backend() {
        Backend::Sqlite => store.migrate().await.map(drop),
        Backend::Postgres => store.require_current_schema().await,
    };
    prepared.map_err(|source| AppError::Database {
        what: "the database is not ready",
        source,
    })?;
    Ok(store)
}

/// Applies every pending migration to the configured database (`byok
/// migrate`, the release step of the distributed shape); returns how many.
pub async fn migrate(settings: &Settings) -> Result<usize, AppError> {
    let store = connect_store(settings).await?;
    let applied = store.migrate().await.map_err(|source| AppError::Database {
        what: "cannot migrate the database",
        source,
    });
    store.close().await;
    applied
}

async fn connect_store(settings: &Settings) -> Result<Store, AppError> {
    Store::connect(&settings.database.url, &StoreOptions::default())
        .await
        .map_err(|source| AppError::Database {
            what: "cannot connect to the database",
            source,
        })
}

/// The key ring, with a warning when the embedded shape had to create one.
pub fn key_ring(settings: &Settings) -> Result<KeyRing, AppError> {
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
    if settings.encryption.accept_legacy {
        tracing::warn!(
            "encryption.accept_legacy is on: the seed's legacy values open wherever they are read, although they are bound to no user, provider or project (a value copied into another row opens there); run `byok keys rewrap` and turn it off"
        );
    }
    tracing::debug!(
        primary = ring.primary_key_id(),
        keys = ring.key_ids().count(),
        "key ring loaded"
    );
    Ok(ring)
}

/// The provider adapters, pointed where the settings say, with each
/// provider's pacing (checked: a quota that can never grant is refused);
/// they resize input images in `images`. Declared providers come from their
/// definitions ([`definitions`]); a bad definition stops the system.
pub fn registry(settings: &Settings, images: &ImageWork) -> Result<Registry, AppError> {
    let mut options = RegistryOptions::defaults();
    options.images = images.clone();
    for (id, p) in settings.providers.built_in() {
        let built_in = ProviderOptions {
            base_url: p.base_url.clone(),
            rate_limits: p.rate_limit,
            poll_interval: p.poll_interval,
            models: p.models.clone().map(|models| Catalogue { models }),
            prices: p.prices.clone(),
            max_requests_per_second: p.max_requests_per_second,
        };
        match options.provider_mut(id) {
            Some(slot) => *slot = built_in,
            None => unreachable!("RegistryOptions::defaults holds every built-in provider"),
        }
    }
    for definition in definitions(settings)? {
        options.declare(definition).map_err(AppError::Providers)?;
    }
    for (name, given) in &settings.providers.declared {
        let declared = name.parse::<ProviderId>().ok();
        let Some(slot) = declared.and_then(|id| options.provider_mut(id)) else {
            return Err(AppError::Config(ConfigError {
                setting: format!("providers.{name}"),
                message: "names no built-in provider and no provider definition".to_owned(),
            }));
        };
        if let Some(base_url) = &given.base_url {
            slot.base_url = base_url.clone();
        }
        if let Some(rate_limits) = given.rate_limit {
            slot.rate_limits = rate_limits;
        }
        if let Some(poll_interval) = given.poll_interval {
            slot.poll_interval = poll_interval;
        }
        if let Some(models) = &given.models {
            slot.models = Some(Catalogue {
                models: models.clone(),
            });
        }
        if !given.prices.is_empty() {
            slot.prices = given.prices.clone();
        }
        if given.max_requests_per_second.is_some() {
            slot.max_requests_per_second = given.max_requests_per_second;
        }
    }
    options.allow_private_networks = settings.fetch.allow_private_networks;
    options.request_timeout = settings.worker.request_timeout;
    // Checked by byok-config: every entry parses.
    options.token_uri_allowlist = settings
        .providers
        .get(ProviderId::VEO)
        .map(|veo| veo.token_uri_allowlist.as_slice())
        .unwrap_or_default()
        .iter()
        .filter_map(|entry| entry.parse().ok())
        .collect();
    Registry::new(&options).map_err(AppError::Providers)
}

/// The provider definitions the settings name: the `[[providers.definitions]]` of the
/// configuration file, then the `*.toml` files of `providers.definitions_dir` (in name
/// order). Each is checked; the first bad one is the error, naming its file, provider and
/// field. An id defined twice is refused, naming both places.
pub fn definitions(settings: &Settings) -> Result<Vec<Definition>, AppError> {
    let mut found: Vec<(PathBuf, Definition)> = Vec::new();
    for inline in &settings.providers.definitions {
        let definition =
            Definition::parse(&inline.text, &inline.origin).map_err(AppError::Definition)?;
        found.push((PathBuf::from(&inline.origin), definition));
    }
    if let Some(dir) = &settings.providers.definitions_dir {
        found.extend(load_dir(dir).map_err(AppError::Definition)?);
    }
    check_unique(&found).map_err(AppError::Definition)?;
    Ok(found
        .into_iter()
        .map(|(_, definition)| definition)
        .collect())
}

/// The queue the settings name: Redis Streams (`queue.url = redis://…`) or
/// the SQLite database itself (`queue.url = sqlite`, the embedded shape).
pub async fn queue_engine(settings: &Settings) -> Result<Arc<dyn Engine>, AppError> {
    let mut config = QueueConfig::new(settings.queue.namespace.clone());
    config.visibility_timeout = settings.queue.visibility_timeout;
    config.dead_retention = settings.queue.dead_retention;
    config.max_attempts = settings.worker.max_attempts;
    config.partitions = settings.queue.partitions;
    engine_on(settings, config).await
}

/// The queue of webhook deliveries: the same server (or file) as the jobs' queue, in the
/// namespace `<queue.namespace>.webhooks`, so a slow receiver never delays a job step.
/// A delivery's retries are reschedules (the delivery row counts its attempts), so the
/// queue's own attempts count only workers that died mid-attempt.
pub async fn webhook_engine(settings: &Settings) -> Result<Arc<dyn Engine>, AppError> {
    let mut config = QueueConfig::new(format!("{}.webhooks", settings.queue.namespace));
    config.visibility_timeout = settings.queue.visibility_timeout;
    config.dead_retention = settings.queue.dead_retention;
    config.max_attempts = 25;
    config.partitions = settings.queue.partitions;
    engine_on(settings, config).await
}

/// The options of webhook delivery attempts.
pub fn delivery_options(settings: &Settings) -> DeliveryOptions {
    DeliveryOptions {
        schedule: RetrySchedule::new(settings.webhooks.retry_schedule.clone()),
        allow_private_networks: settings.fetch.allow_private_networks,
        ..DeliveryOptions::default()
    }
}

/// How a worker process runs webhook deliveries; `role` goes into the consumer's name.
pub fn delivery_worker_options(settings: &Settings, role: &str) -> DeliveryWorkerOptions {
    DeliveryWorkerOptions {
        name: format!("{role}-webhooks"),
        concurrency: usize::try_from(settings.webhooks.concurrency).unwrap_or(1),
        shutdown_grace: settings.worker.shutdown_grace,
        retention: settings.webhooks.retention,
    }
}

async fn engine_on(settings: &Settings, config: QueueConfig) -> Result<Arc<dyn Engine>, AppError> {
    Ok(match settings.queue_kind() {
        QueueUrl::Redis => RedisEngine::connect(settings.queue.url.expose_secret(), config)
            .await
            .map_err(|source| AppError::Queue {
                setting: "queue.url",
                source,
            })?,
        QueueUrl::Sqlite => SqliteEngine::connect(settings.database.url.expose_secret(), config)
            .await
            .map_err(|source| AppError::Queue {
                setting: "database.url",
                source,
            })?,
    })
}

/// The budgets, with the ledger the shape calls for: Redis when the queue is Redis (every
/// worker reserves against the same figures), the database otherwise. A hold outlives its
/// job's longest life (`worker.job_timeout`, plus an hour for the queue and the download)
/// before it counts as spent.
pub async fn budgets(settings: &Settings, store: &Store) -> Result<Budgets, AppError> {
    let lifetime = settings.worker.job_timeout + Duration::from_secs(3600);
    Ok(match settings.queue_kind() {
        QueueUrl::Redis => Budgets::in_redis(
            store.clone(),
            RedisLedger::connect(
                settings.queue.url.expose_secret(),
                &settings.queue.namespace,
            )
            .await
            .map_err(AppError::Budgets)?,
            lifetime,
        ),
        QueueUrl::Sqlite => Budgets::in_database(store.clone(), lifetime),
    })
}

/// The rate limiter shared by every worker: in Redis when the queue is
/// (distributed), in process otherwise (embedded: one process holds every
/// worker, so its memory is the whole truth).
pub async fn limiter(settings: &Settings) -> Result<Arc<dyn RateLimiter>, AppError> {
    Ok(match settings.queue_kind() {
        QueueUrl::Redis => Arc::new(
            RedisLimiter::connect(
                settings.queue.url.expose_secret(),
                &settings.queue.namespace,
            )
            .await
            .map_err(AppError::Limiter)?,
        ),
        QueueUrl::Sqlite => Arc::new(LocalLimiter::new()),
    })
}

/// Where a process decodes and resizes users' images: one per process, given
/// to the fetcher and the registry, so that `fetch.max_concurrent_decodes`
/// bounds all of them together.
pub fn image_work(settings: &Settings) -> ImageWork {
    ImageWork::new(
        settings.fetch.max_concurrent_decodes as usize,
        settings.fetch.max_decoded_bytes,
    )
}

/// The guarded fetcher of users' image URLs; it decodes them in `images`.
pub fn image_fetcher(settings: &Settings, images: &ImageWork) -> Result<ImageFetcher, AppError> {
    let options = FetchOptions {
        allow_private_networks: settings.fetch.allow_private_networks,
        images: images.clone(),
        ..FetchOptions::default()
    };
    ImageFetcher::new(options).map_err(AppError::Fetcher)
}

/// Where finished videos are kept (`output.url`, else the directory
/// `output.dir`). No network call: an unreachable store shows at first use
/// and in readiness.
pub fn video_store(settings: &Settings) -> Result<VideoStore, AppError> {
    let url = match &settings.output.url {
        Some(url) => url.expose_secret().to_owned(),
        None => settings.output.dir.display().to_string(),
    };
    let config = VideoStoreConfig {
        presign: settings.output.presign,
        presign_ttl: settings.output.presign_ttl,
        ..VideoStoreConfig::new(url)
    };
    VideoStore::open(&config).map_err(|e| match e {
        VideoStoreError::Config(message) => {
            let setting = if settings.output.url.is_some() {
                "output.url"
            } else {
                "output.dir"
            };
            AppError::Config(ConfigError {
                setting: setting.to_owned(),
                message,
            })
        }
        other => AppError::VideoStore(other),
    })
}

/// The pipeline's settings from `worker.*`.
pub fn pipeline_settings(settings: &Settings) -> PipelineSettings {
    PipelineSettings {
        max_attempts: settings.worker.max_attempts,
        job_timeout: settings.worker.job_timeout,
        request_timeout: settings.worker.request_timeout,
        retry_backoff: RetryBackoff {
            min_delay: settings.worker.retry_min_delay,
            max_delay: settings.worker.retry_max_delay,
        },
        fallback_after_block: settings.worker.fallback_after_block,
    }
}

/// Worker options from the settings; the name carries the role, the host
/// and the process so an operator can tell consumers apart (`XINFO
/// CONSUMERS`, `byok queue list --state running`).
pub fn worker_options(settings: &Settings, role: &str) -> WorkerOptions {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "host".to_owned());
    WorkerOptions {
        name: format!("{role}-{host}-{}", std::process::id()),
        concurrency: settings.worker.concurrency as usize,
        shutdown_grace: settings.worker.shutdown_grace,
    }
}
