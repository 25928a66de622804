//! The whole system assembled in this process, as `byok run` (embedded:
//! one SQLite file, one store shared by the API and the worker, the limiter
//! in memory) or as `byok api` + `byok worker` would be (distributed:
//! PostgreSQL and Redis, the API and the worker each with their own pools
//! and connections), talking to the provider simulator over loopback HTTP.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use byok_api::{AppState, JobsSetup, QueueProbe};
use byok_core::{JobItem, ProviderId};
use byok_crypto::{KeyRing, SealContext};
use byok_providers::{FetchOptions, ImageFetcher, RateLimits, Registry, RegistryOptions};
use byok_queue::{Engine, Producer, QueueConfig, RedisEngine, SqliteEngine};
use byok_ratelimit::{Limits, LocalLimiter, RateLimiter, RedisLimiter};
use byok_sim::{RunningSim, SimConfig, Simulator};
use byok_store::{NewCredential, Store, StoreOptions};
use byok_worker::{Pipeline, PipelineSettings, ProviderPacing, RetryBackoff, WorkerOptions};
use secrecy::{ExposeSecret as _, SecretString};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::Options;
use crate::common::{ScratchDb, delete_matching};

/// The encryption key ring of benchmark systems.
pub const KEYS: &str = "1:5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";

/// Per-key limits so high that they never bind (the limiter still runs:
/// every submit takes and settles a permit).
pub const PER_MINUTE: u32 = 1_000_000;
pub const PER_HOUR: u32 = 60_000_000;

/// Which deployment shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// PostgreSQL + Redis Streams + the Redis limiter.
    Distributed,
    /// SQLite for the store and the queue, the limiter in memory.
    Embedded,
}

impl Shape {
    pub fn name(self) -> &'static str {
        match self {
            Shape::Distributed => "distributed (PostgreSQL + Redis)",
            Shape::Embedded => "embedded (SQLite)",
        }
    }
}

/// How a benchmark wants its system.
#[derive(Debug, Clone)]
pub struct SystemOptions {
    pub shape: Shape,
    pub sim: SimConfig,
    /// `providers.*.poll_interval`.
    pub poll_interval: Duration,
    /// Start a worker beside the API.
    pub worker: bool,
    /// `worker.concurrency`.
    pub concurrency: usize,
    /// Users with a stored Runway key; jobs go round-robin to them.
    pub users: usize,
}

/// A running system. [`System::stop`] ends it and removes its data.
pub struct System {
    pub api: SocketAddr,
    pub token: String,
    pub users: Vec<Uuid>,
    /// The API's store.
    pub store: Store,
    pub sim: RunningSim,
    stop: watch::Sender<bool>,
    api_task: JoinHandle<std::io::Result<()>>,
    worker_task: Option<JoinHandle<Result<(), byok_worker::RunError>>>,
    worker_store: Option<Store>,
    db: Option<ScratchDb>,
    namespace: String,
    redis_url: String,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for System {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("System")
            .field("api", &self.api)
            .finish_non_exhaustive()
    }
}

/// The simulator, with its routes on a loopback port.
pub async fn simulator(config: SimConfig) -> anyhow::Result<RunningSim> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    Ok(Simulator::new(config).start(listener).await?)
}

pub fn key_ring() -> anyhow::Result<Arc<KeyRing>> {
    Ok(Arc::new(KeyRing::parse(&SecretString::from(KEYS))?))
}

/// The adapters, pointed at the simulator.
pub fn registry(sim: &RunningSim) -> anyhow::Result<Registry> {
    let mut options = RegistryOptions::defaults();
    for id in ProviderId::ALL {
        let p = options.provider_mut(id);
        p.base_url = match id {
            ProviderId::Veo => sim.vertex_url(),
            ProviderId::Runway => sim.runway_url(),
            ProviderId::Stability => sim.stability_url(),
        };
        p.rate_limits = RateLimits {
            per_minute: PER_MINUTE,
            per_hour: PER_HOUR,
        };
    }
    options.allow_private_networks = true;
    Ok(Registry::new(&options)?)
}

/// Stores a sealed Runway key (`sim_…`, valid at the simulator) for each of
/// `n` new users.
pub async fn store_users(
    store: &Store,
    registry: &Registry,
    key_ring: &KeyRing,
    n: usize,
) -> anyhow::Result<Vec<Uuid>> {
    let adapter = registry.get(ProviderId::Runway);
    let mut users = Vec::with_capacity(n);
    for i in 0..n {
        let user = Uuid::new_v4();
        let credentials = adapter
            .parse_credentials(&serde_json::json!({ "api_key": format!("sim_bench_key_{i:04}") }))
            .map_err(|e| anyhow::anyhow!("credentials: {}", e.field))?;
        let sealed = key_ring.seal(
            &SealContext::new(user, ProviderId::Runway),
            &credentials.to_plaintext(),
        )?;
        store
            .credentials()
            .upsert(&NewCredential {
                user_id: user,
                provider: ProviderId::Runway,
                sealed,
                credential_hint: credentials.hint(),
                validated_at: None,
            })
            .await?;
        users.push(user);
    }
    Ok(users)
}

/// A Runway text-to-video request body for `user`.
pub fn job_body(user: Uuid) -> String {
    serde_json::json!({
        "user_id": user, "provider": "runway", "model": "gen4.5",
        "prompt": "a lighthouse at dusk, slow dolly in", "duration_seconds": 5,
    })
    .to_string()
}

fn pipeline_settings(output_dir: &std::path::Path, poll_interval: Duration) -> PipelineSettings {
    let pacing: HashMap<ProviderId, ProviderPacing> = ProviderId::ALL
        .into_iter()
        .map(|id| {
            let pacing = ProviderPacing {
                poll_interval,
                limits: Limits {
                    per_minute: PER_MINUTE,
                    per_hour: PER_HOUR,
                },
            };
            (id, pacing)
        })
        .collect();
    PipelineSettings {
        max_attempts: 8,
        job_timeout: Duration::from_secs(30 * 60),
        request_timeout: RegistryOptions::DEFAULT_REQUEST_TIMEOUT,
        retry_backoff: RetryBackoff::default(),
        output_dir: output_dir.to_owned(),
        pacing,
    }
}

fn fetcher() -> anyhow::Result<Arc<ImageFetcher>> {
    Ok(Arc::new(ImageFetcher::new(FetchOptions {
        allow_private_networks: true,
        ..FetchOptions::default()
    })?))
}

impl System {
    pub async fn start(bench: &Options, options: &SystemOptions) -> anyhow::Result<System> {
        let dir = tempfile::Builder::new().prefix("byok-bench-").tempdir()?;
        let output_dir = dir.path().join("videos");
        let sim = simulator(options.sim.clone()).await?;
        let key_ring = key_ring()?;
        let namespace = format!("bench-{}", Uuid::new_v4().simple());
        let queue_config = QueueConfig::new(namespace.clone());
        let store_options = StoreOptions::default();

        let (db, api_store, worker_store, api_engine, worker_engine, limiter, queue_url) =
            match options.shape {
                Shape::Distributed => {
                    let db = ScratchDb::create(&bench.database_url).await?;
                    let url = SecretString::from(db.url.as_str());
                    let api_store = Store::connect(&url, &store_options).await?;
                    let worker_store = Store::connect(&url, &store_options).await?;
                    let api_engine: Arc<dyn Engine> =
                        RedisEngine::connect(&bench.redis_url, queue_config.clone()).await?;
                    let worker_engine: Arc<dyn Engine> =
                        RedisEngine::connect(&bench.redis_url, queue_config).await?;
                    let limiter: Arc<dyn RateLimiter> =
                        Arc::new(RedisLimiter::connect(&bench.redis_url, &namespace).await?);
                    (
                        Some(db),
                        api_store,
                        worker_store,
                        api_engine,
                        worker_engine,
                        limiter,
                        bench.redis_url.clone(),
                    )
                }
                Shape::Embedded => {
                    let url = format!("sqlite://{}/data/byok.db", dir.path().display());
                    let store =
                        Store::connect(&SecretString::from(url.as_str()), &store_options).await?;
                    store.migrate().await?;
                    let engine: Arc<dyn Engine> = SqliteEngine::connect(&url, queue_config).await?;
                    let limiter: Arc<dyn RateLimiter> = Arc::new(LocalLimiter::new());
                    (
                        None,
                        store.clone(),
                        store,
                        Arc::clone(&engine),
                        engine,
                        limiter,
                        "sqlite".to_owned(),
                    )
                }
            };

        let registry = registry(&sim)?;
        let users = store_users(&api_store, &registry, &key_ring, options.users).await?;
        let (_, token) = api_store.tokens().create("bench").await?;
        let fetcher = fetcher()?;

        let (stop, stop_rx) = watch::channel(false);
        let stopped = move |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        let worker_task = if options.worker {
            let pipeline = Arc::new(Pipeline::new(
                worker_store.clone(),
                Arc::clone(&key_ring),
                Arc::new(self::registry(&sim)?),
                limiter,
                Arc::clone(&fetcher),
                pipeline_settings(&output_dir, options.poll_interval),
            ));
            let worker_options = WorkerOptions {
                name: "bench".to_owned(),
                concurrency: options.concurrency,
                shutdown_grace: Duration::from_secs(5),
            };
            Some(tokio::spawn(byok_worker::run_worker(
                worker_engine,
                pipeline,
                worker_options,
                stopped(stop_rx.clone()),
            )))
        } else {
            None
        };

        let state = AppState::new(
            api_store.clone(),
            key_ring,
            registry,
            QueueProbe::from_url(&queue_url)?,
            1024 * 1024,
        )
        .with_jobs(JobsSetup {
            producer: Producer::<JobItem>::new(api_engine),
            fetcher,
            output_dir,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let api = listener.local_addr()?;
        let api_task = tokio::spawn(byok_api::serve(
            listener,
            byok_api::app(state),
            stopped(stop_rx),
            Duration::from_secs(5),
        ));
        let separate_worker_store = options.shape == Shape::Distributed;
        Ok(System {
            api,
            token: token.expose_secret().to_owned(),
            users,
            store: api_store,
            sim,
            stop,
            api_task,
            worker_task,
            worker_store: separate_worker_store.then_some(worker_store),
            db,
            namespace,
            redis_url: bench.redis_url.clone(),
            _dir: dir,
        })
    }

    /// Stops the API and the worker and removes the database, the Redis
    /// keys and the files.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        let served = self.api_task.await;
        let worked = match self.worker_task {
            Some(task) => Some(task.await),
            None => None,
        };
        self.store.close().await;
        if let Some(store) = &self.worker_store {
            store.close().await;
        }
        self.sim.shutdown().await;
        if let Some(db) = self.db {
            db.drop_now().await;
            delete_matching(&self.redis_url, &format!("{{{}}}*", self.namespace)).await?;
        }
        served??;
        if let Some(worked) = worked {
            worked??;
        }
        Ok(())
    }
}
