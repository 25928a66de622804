//! A system: the parts every role shares, opened once from the settings.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use byok_api::{ApiParts, AppState};
use byok_config::Settings;
use byok_crypto::KeyRing;
use byok_providers::{ImageFetcher, Registry};
use byok_queue::Engine;
use byok_store::Store;
use byok_video_store::VideoStore;
use byok_worker::Pipeline;
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
    fetcher: Arc<ImageFetcher>,
    videos: VideoStore,
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
        let registry = Arc::new(parts::registry(&settings)?);
        let fetcher = Arc::new(parts::image_fetcher(&settings)?);
        let videos = parts::video_store(&settings)?;
        let store = parts::open_store(&settings).await?;
        let engine = match parts::queue_engine(&settings).await {
            Ok(engine) => engine,
            Err(e) => {
                store.close().await;
                return Err(e);
            }
        };
        Ok(System {
            settings: Arc::new(settings),
            store,
            key_ring,
            registry,
            engine,
            fetcher,
            videos,
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

    /// Where finished videos are kept.
    pub fn videos(&self) -> &VideoStore {
        &self.videos
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
            videos: self.videos.clone(),
            max_body_bytes: self.settings.api.max_body_bytes,
        }))
    }

    /// Serves the API on `listener` until `shutdown` resolves, then gives
    /// requests in flight `worker.shutdown_grace` to finish.
    pub async fn serve_api(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), AppError> {
        if let Ok(address) = listener.local_addr() {
            tracing::info!(%address, shape = ?self.settings.shape(), "API listening");
        }
        byok_api::serve(
            listener,
            self.router(),
            shutdown,
            self.settings.worker.shutdown_grace,
        )
        .await
        .map_err(AppError::Serve)
    }

    /// A worker's job pipeline on this system's parts, with the rate
    /// limiter the shape calls for (Redis when the queue is Redis, in
    /// process otherwise).
    pub async fn pipeline(&self) -> Result<Pipeline, AppError> {
        let limiter = parts::limiter(&self.settings).await?;
        Ok(Pipeline::new(
            self.store.clone(),
            Arc::clone(&self.key_ring),
            Arc::clone(&self.registry),
            limiter,
            Arc::clone(&self.fetcher),
            self.videos.clone(),
            parts::pipeline_settings(&self.settings),
        ))
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
        let run = byok_worker::run_worker(
            Arc::clone(&self.engine),
            pipeline,
            parts::worker_options(&self.settings, role),
            shutdown,
        );
        Ok(async move { run.await.map_err(AppError::Worker) })
    }

    /// Serves `GET /metrics` and `GET /healthz` on `worker.metrics_listen`
    /// when it is set. The task ends when aborted or with the process.
    pub async fn serve_worker_metrics(&self) -> Result<Option<JoinHandle<()>>, AppError> {
        let Some(address) = self.settings.worker.metrics_listen else {
            return Ok(None);
        };
        let listener = TcpListener::bind(address)
            .await
            .map_err(|source| AppError::Listen {
                setting: "worker.metrics_listen",
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
        tracing::info!(%address, "worker metrics listening");
        Ok(Some(tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!(error = %e, "the metrics server stopped");
            }
        })))
    }

    /// Closes the store's connections (the queue's close with the engine).
    pub async fn close(&self) {
        self.store.close().await;
    }
}

/// Binds `api.listen`.
pub async fn bind_api(settings: &Settings) -> Result<TcpListener, AppError> {
    let address = settings.api.listen;
    TcpListener::bind(address)
        .await
        .map_err(|source| AppError::Listen {
            setting: "api.listen",
            address,
            source,
        })
}
