//! A system: the parts every role shares, opened once from the settings.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use byok_api::{ApiParts, AppState, EdgeLimits, ServeOptions};
use byok_budgets::Budgets;
use byok_config::Settings;
use byok_crypto::KeyRing;
use byok_deliveries::{Deliverer, Relay};
use byok_providers::{ImageFetcher, Registry};
use byok_queue::{Engine, Producer};
use byok_ratelimit::RateLimiter;
use byok_store::Store;
use byok_video_store::VideoStore;
use byok_worker::{Pipeline, PipelineParts};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::{AppError, parts};

/// The parts of a running byok system, made from one [`Settings`]: the
/// store, the key ring, the provider registry (with each provider's pacing),
/// the queue engine and the image fetcher. The API and the worker are built
/// on them ([`System::router`], [`System::run_worker`]); in one process
/// (`byok run`) both share one `System`. Cheap to share by reference; clone
/// the parts you need out of it.
pub struct System {
    settings: Arc<Settings>,
    store: Store,
    key_ring: Arc<KeyRing>,
    registry: Arc<Registry>,
    engine: Arc<dyn Engine>,
    webhook_engine: Arc<dyn Engine>,
    fetcher: Arc<ImageFetcher>,
    videos: VideoStore,
    budgets: Budgets,
    /// The per-key rate limits: one per system, so that in one process (`byok run`) the
    /// workers and the dashboard's keys page see the same windows.
    limiter: Arc<dyn RateLimiter>,
    /// Pushes the webhook deliveries this process's writes create.
    _relay: Relay,
}

impl std::fmt::Debug for System {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("System")
            .field("shape", &self.settings.shape())
            .field("store", &self.store.backend())
            .field("queue", &self.engine.config().namespace)
            .finish_non_exhaustive()
    }
}

impl System {
    /// Opens every shared part. Configuration problems come first (before
    /// any connection is tried), then the database, then the queue.
    pub async fn open(settings: Settings) -> Result<System, AppError> {
        let key_ring = Arc::new(parts::key_ring(&settings)?);
        let images = parts::image_work(&settings);
        let registry = Arc::new(parts::registry(&settings, &images)?);
        let fetcher = Arc::new(parts::image_fetcher(&settings, &images)?);
        let videos = parts::video_store(&settings)?;
        let store = parts::open_store(&settings).await?;
        let engines = async {
            Ok::<_, AppError>((
                parts::queue_engine(&settings).await?,
                parts::webhook_engine(&settings).await?,
            ))
        };
        let (engine, webhook_engine) = match engines.await {
            Ok(engines) => engines,
            Err(e) => {
                store.close().await;
                return Err(e);
            }
        };
        let budgets = match parts::budgets(&settings, &store).await {
            Ok(budgets) => budgets,
            Err(e) => {
                store.close().await;
                return Err(e);
            }
        };
        let limiter = match parts::limiter(&settings).await {
            Ok(limiter) => limiter,
            Err(e) => {
                store.close().await;
                return Err(e);
            }
        };
        let relay = Relay::start(store.clone(), Producer::new(Arc::clone(&webhook_engine)));
        Ok(System {
            settings: Arc::new(settings),
            store,
            key_ring,
            registry,
            engine,
            webhook_engine,
            fetcher,
            videos,
            budgets,
            limiter,
            _relay: relay,
        })
    }

    /// The settings the system was opened with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Jobs, credentials and tokens.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The key ring that seals and opens users' keys.
    pub fn key_ring(&self) -> &Arc<KeyRing> {
        &self.key_ring
    }

    /// The provider adapters and their pacing.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The queue engine.
    pub fn engine(&self) -> &Arc<dyn Engine> {
        &self.engine
    }

    /// The queue of webhook deliveries.
    pub fn webhook_engine(&self) -> &Arc<dyn Engine> {
        &self.webhook_engine
    }

    /// Where finished videos are kept.
    pub fn videos(&self) -> &VideoStore {
        &self.videos
    }

    /// The budgets and their ledger.
    pub fn budgets(&self) -> &Budgets {
        &self.budgets
    }

    /// The per-key rate limiter the workers take submit permits from.
    pub fn limiter(&self) -> &Arc<dyn RateLimiter> {
        &self.limiter
    }

    /// The HTTP API on this system's parts. Call inside a Tokio runtime
    /// (the API starts its batching tasks).
    pub fn router(&self) -> Router {
        byok_api::app(AppState::new(ApiParts {
            store: self.store.clone(),
            key_ring: Arc::clone(&self.key_ring),
            providers: Arc::clone(&self.registry),
            engine: Arc::clone(&self.engine),
            fetcher: Arc::clone(&self.fetcher),
            budgets: self.budgets.clone(),
            limiter: Arc::clone(&self.limiter),
            videos: self.videos.clone(),
            max_body_bytes: self.settings.api.max_body_bytes,
            max_batch_body_bytes: self.settings.api.max_batch_body_bytes,
            edge_limits: EdgeLimits {
                per_token: self.settings.api.rate_limit,
                auth_failures: self.settings.api.auth_failure_limit,
                trusted_proxies: self.settings.api.trusted_proxies.clone(),
            },
            request_timeout: self.settings.api.request_timeout,
            serve_metrics: self.settings.api.metrics_listen.is_none(),
            public_url: self.settings.api.public_url.clone(),
            cache_ttl: self.settings.api.cache_ttl,
        }))
    }

    /// Serves the API on `listener` until `shutdown` resolves, then gives
    /// requests in flight `worker.shutdown_grace` to finish; and `/metrics` on
    /// `api.metrics_listen` meanwhile, when it is set.
    pub async fn serve_api(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), AppError> {
        let metrics = match self.settings.api.metrics_listen {
            Some(address) => Some(self.serve_metrics("api.metrics_listen", address).await?),
            None => None,
        };
        if let Ok(address) = listener.local_addr() {
            tracing::info!(%address, shape = ?self.settings.shape(), "API listening");
        }
        let api = &self.settings.api;
        let served = byok_api::serve(
            listener,
            self.router(),
            shutdown,
            ServeOptions {
                header_read_timeout: api.header_read_timeout,
                max_connections: api.max_connections,
                grace: self.settings.worker.shutdown_grace,
            },
        )
        .await
        .map_err(AppError::Serve);
        if let Some(metrics) = metrics {
            metrics.abort();
        }
        served
    }

    /// A worker's job pipeline on this system's parts, with the rate
    /// limiter the shape calls for (Redis when the queue is Redis, in
    /// process otherwise).
    pub async fn pipeline(&self) -> Result<Pipeline, AppError> {
        let limiter = Arc::clone(&self.limiter);
        Ok(Pipeline::new(PipelineParts {
            store: self.store.clone(),
            key_ring: Arc::clone(&self.key_ring),
            providers: Arc::clone(&self.registry),
            limiter,
            budgets: self.budgets.clone(),
            fetcher: Arc::clone(&self.fetcher),
            videos: self.videos.clone(),
            settings: parts::pipeline_settings(&self.settings),
        }))
    }

    /// Runs a worker until `shutdown` resolves, then drains it within
    /// `worker.shutdown_grace`. `role` goes into the consumer's name.
    pub async fn run_worker(
        &self,
        role: &str,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), AppError> {
        self.worker(role, shutdown).await?.await
    }

    /// A worker, ready to run: its pipeline (and the limiter's connection)
    /// made now, so an unreachable limiter fails here rather than inside a
    /// spawned task; the returned future runs it as [`System::run_worker`] does.
    pub async fn worker(
        &self,
        role: &str,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<impl Future<Output = Result<(), AppError>> + Send + 'static, AppError> {
        let pipeline = Arc::new(self.pipeline().await?);
        let deliverer = Arc::new(
            Deliverer::new(
                self.store.clone(),
                Arc::clone(&self.key_ring),
                parts::delivery_options(&self.settings),
            )
            .map_err(AppError::HttpClient)?,
        );
        // One shutdown signal for both workers of the process.
        let shutdown = futures::FutureExt::shared(Box::pin(shutdown));
        let run = byok_worker::run_worker(
            Arc::clone(&self.engine),
            pipeline,
            parts::worker_options(&self.settings, role),
            shutdown.clone(),
        );
        let deliveries = byok_deliveries::run_deliveries(
            Arc::clone(&self.webhook_engine),
            deliverer,
            parts::delivery_worker_options(&self.settings, role),
            shutdown,
        );
        Ok(async move {
            let (worked, delivered) = tokio::join!(run, deliveries);
            worked.map_err(AppError::Worker)?;
            delivered.map_err(AppError::Deliveries)
        })
    }

    /// Serves `GET /metrics` and `GET /healthz` on `worker.metrics_listen`
    /// when it is set. The task ends when aborted or with the process.
    pub async fn serve_worker_metrics(&self) -> Result<Option<JoinHandle<()>>, AppError> {
        match self.settings.worker.metrics_listen {
            Some(address) => Ok(Some(
                self.serve_metrics("worker.metrics_listen", address).await?,
            )),
            None => Ok(None),
        }
    }

    /// Serves `GET /metrics` and `GET /healthz` on `address` (named by
    /// `setting`) until the task is aborted.
    async fn serve_metrics(
        &self,
        setting: &'static str,
        address: std::net::SocketAddr,
    ) -> Result<JoinHandle<()>, AppError> {
        let listener = TcpListener::bind(address)
            .await
            .map_err(|source| AppError::Listen {
                setting,
                address,
                source,
            })?;
        let (engine, store) = (Arc::clone(&self.engine), self.store.clone());
        let scrape = move || {
            let (engine, store) = (Arc::clone(&engine), store.clone());
            async move {
                let text = byok_api::metrics_text(engine.as_ref(), &store).await;
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        byok_api::METRICS_CONTENT_TYPE,
                    )],
                    text,
                )
            }
        };
        let app = Router::new()
            .route("/metrics", axum::routing::get(scrape))
            .route("/healthz", axum::routing::get(|| async { "ok" }));
        tracing::info!(%address, setting, "metrics listening");
        Ok(tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!(error = %e, "the metrics server stopped");
            }
        }))
    }

    /// Closes the store's connections (the queue's close with the engine).
    pub async fn close(&self) {
        self.store.close().await;
    }
}

/// The listen backlog of the API's socket: connections the kernel completes before the
/// server accepts them. The usual default (128) overflows when a few hundred clients
/// connect at once, and the overflow shows as resets and one-second stalls; the kernel
/// caps it at `net.core.somaxconn`.
const API_BACKLOG: u32 = 1024;

/// Binds `api.listen`.
pub async fn bind_api(settings: &Settings) -> Result<TcpListener, AppError> {
    let address = settings.api.listen;
    let bind = || -> std::io::Result<TcpListener> {
        let socket = match address {
            std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        // As std and tokio do: a restarted API can bind while old connections linger.
        socket.set_reuseaddr(true)?;
        socket.bind(address)?;
        socket.listen(API_BACKLOG)
    };
    bind().map_err(|source| AppError::Listen {
        setting: "api.listen",
        address,
        source,
    })
}
