//! `byok worker`: runs jobs from the shared queue (distributed shape).

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use axum::http::header;
use axum::routing::get;
use byok_config::Settings;
use byok_queue::Engine;
use byok_store::Store;
use byok_worker::{WorkerOptions, run_worker};

use crate::context;

pub async fn run(settings: &Settings) -> anyhow::Result<ExitCode> {
    let key_ring = Arc::new(context::key_ring(settings)?);
    let registry = Arc::new(context::providers(settings)?);
    let fetcher = context::image_fetcher(settings)?;
    let store = context::open_store(settings).await?;
    let engine = context::queue_engine(settings).await?;
    let limiter = context::limiter(settings).await?;
    let pipeline = Arc::new(context::pipeline(
        settings,
        store.clone(),
        key_ring,
        registry,
        limiter,
        fetcher,
    ));
    let metrics = serve_metrics(settings, Arc::clone(&engine), store.clone()).await?;
    let worked = run_worker(
        engine,
        pipeline,
        options(settings, "worker"),
        super::shutdown_signal(),
    )
    .await;
    if let Some(metrics) = metrics {
        metrics.abort();
    }
    worked.context("the worker failed")?;
    store.close().await;
    Ok(ExitCode::SUCCESS)
}

/// Serves `GET /metrics` (and `GET /healthz`) on `worker.metrics_listen`
/// when it is set; the task ends when aborted or with the process.
pub async fn serve_metrics(
    settings: &Settings,
    engine: Arc<dyn Engine>,
    store: Store,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    let Some(address) = settings.worker.metrics_listen else {
        return Ok(None);
    };
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address} (worker.metrics_listen)"))?;
    let scrape = move || {
        let (engine, store) = (Arc::clone(&engine), store.clone());
        async move {
            let text = byok_metrics::scrape(Some(engine.as_ref()), Some(&store)).await;
            ([(header::CONTENT_TYPE, byok_metrics::CONTENT_TYPE)], text)
        }
    };
    let app = Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(|| async { "ok" }));
    tracing::info!(%address, "worker metrics listening");
    Ok(Some(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "the metrics server stopped");
        }
    })))
}

/// Worker options from the settings; the name carries the host and process
/// so an operator can tell consumers apart in `XINFO CONSUMERS`.
pub fn options(settings: &Settings, role: &str) -> WorkerOptions {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "host".to_owned());
    WorkerOptions {
        name: format!("{role}-{host}-{}", std::process::id()),
        concurrency: settings.worker.concurrency as usize,
        shutdown_grace: settings.worker.shutdown_grace,
    }
}
