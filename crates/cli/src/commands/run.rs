//! `byok run`: the API and a worker in one process (the embedded shape:
//! SQLite for everything, the rate limiter in memory).

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use byok_config::Settings;
use byok_worker::run_worker;

use crate::context;

pub async fn run(settings: &Settings) -> anyhow::Result<ExitCode> {
    let key_ring = Arc::new(context::key_ring(settings)?);
    let store = context::open_store(settings).await?;
    let engine = context::queue_engine(settings).await?;
    let limiter = context::limiter(settings).await?;
    let fetcher = context::image_fetcher(settings)?;

    // One signal stops both halves.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };

    let pipeline = Arc::new(context::pipeline(
        settings,
        store.clone(),
        Arc::clone(&key_ring),
        Arc::new(context::providers(settings)?),
        limiter,
        Arc::clone(&fetcher),
    ));
    let worker = tokio::spawn(run_worker(
        Arc::clone(&engine),
        pipeline,
        super::worker::options(settings, "run"),
        stopped(stop_rx.clone()),
    ));
    let api = super::api::serve(
        settings,
        store.clone(),
        key_ring,
        engine,
        fetcher,
        stopped(stop_rx),
    );

    let signal = tokio::spawn(async move {
        super::shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let served = api.await;
    signal.abort();
    let worked = worker.await.context("the worker task failed")?;
    served?;
    worked.context("the worker failed")?;
    store.close().await;
    Ok(ExitCode::SUCCESS)
}
