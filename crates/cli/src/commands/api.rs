//! `byok api`: the HTTP API of the distributed shape.

use std::future::Future;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use byok_api::{AppState, JobsSetup, QueueProbe};
use byok_config::Settings;
use byok_crypto::KeyRing;
use byok_providers::ImageFetcher;
use byok_queue::{Engine, Producer};
use byok_store::Store;
use secrecy::ExposeSecret as _;

use crate::context;

pub async fn run(settings: &Settings) -> anyhow::Result<ExitCode> {
    let key_ring = Arc::new(context::key_ring(settings)?);
    let store = context::open_store(settings).await?;
    let engine = context::queue_engine(settings).await?;
    let fetcher = context::image_fetcher(settings)?;
    let listener = tokio::net::TcpListener::bind(settings.api.listen)
        .await
        .with_context(|| format!("cannot listen on {} (api.listen)", settings.api.listen))?;
    let router = router(settings, store.clone(), key_ring, engine, fetcher)?;
    serve(settings, listener, router, super::shutdown_signal()).await?;
    store.close().await;
    tracing::info!("API stopped");
    Ok(ExitCode::SUCCESS)
}

/// The API's router on the given parts. `byok run` builds it beside a
/// worker, sharing the store, key ring, queue and fetcher.
pub fn router(
    settings: &Settings,
    store: Store,
    key_ring: Arc<KeyRing>,
    engine: Arc<dyn Engine>,
    fetcher: Arc<ImageFetcher>,
) -> anyhow::Result<axum::Router> {
    let providers = context::providers(settings)?;
    let queue = QueueProbe::from_url(settings.queue.url.expose_secret())
        .map_err(|_| byok_config_error("queue.url", "is not a valid Redis URL"))?;
    let state = AppState::new(
        store,
        key_ring,
        providers,
        queue,
        settings.api.max_body_bytes,
    )
    .with_jobs(JobsSetup {
        producer: Producer::new(engine),
        fetcher,
        output_dir: settings.output.dir.clone(),
    });
    Ok(byok_api::app(state))
}

/// Serves `router` on `listener` until `shutdown` resolves, then gives
/// requests in flight `worker.shutdown_grace` to finish.
pub async fn serve(
    settings: &Settings,
    listener: tokio::net::TcpListener,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let address = listener.local_addr()?;
    tracing::info!(%address, shape = ?settings.shape(), "API listening");
    byok_api::serve(listener, router, shutdown, settings.worker.shutdown_grace)
        .await
        .context("the API server failed")
}

fn byok_config_error(setting: &str, message: &str) -> anyhow::Error {
    anyhow::Error::new(byok_config::ConfigError {
        setting: setting.to_owned(),
        message: message.to_owned(),
    })
}
