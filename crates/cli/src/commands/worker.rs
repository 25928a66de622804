//! `byok worker`: runs jobs from the shared queue (distributed shape).

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use byok_config::Settings;
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
    run_worker(
        engine,
        pipeline,
        options(settings, "worker"),
        super::shutdown_signal(),
    )
    .await
    .context("the worker failed")?;
    store.close().await;
    Ok(ExitCode::SUCCESS)
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
