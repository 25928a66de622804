//! `byok run [--simulate]`: the API and a worker in one process (the
//! embedded shape: SQLite for everything, the rate limiter in memory).
//! `--simulate` starts the provider simulator in process first and points
//! every provider at it.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use byok_config::Settings;
use byok_store::Store;
use byok_worker::{RunError, run_worker};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::context;

pub async fn run(config: Option<&Path>, simulate: bool) -> anyhow::Result<ExitCode> {
    let (settings, sim) = if simulate {
        let (settings, sim) = super::simulate::start(config).await?;
        (settings, Some(sim))
    } else {
        (byok_config::load(config)?, None)
    };
    let listener = tokio::net::TcpListener::bind(settings.api.listen)
        .await
        .with_context(|| format!("cannot listen on {} (api.listen)", settings.api.listen))?;
    let system = Embedded::start(&settings, listener).await?;
    super::shutdown_signal().await;
    let stopped = system.stop().await;
    if let Some(sim) = sim {
        sim.shutdown().await;
    }
    stopped?;
    Ok(ExitCode::SUCCESS)
}

/// The API and a worker running in this process. `stop` ends both.
pub struct Embedded {
    store: Store,
    address: SocketAddr,
    stop: watch::Sender<bool>,
    api: JoinHandle<anyhow::Result<()>>,
    worker: JoinHandle<Result<(), RunError>>,
}

impl Embedded {
    /// Starts the API on `listener` and a worker, sharing the store, the key
    /// ring, the queue and the image fetcher.
    pub async fn start(
        settings: &Settings,
        listener: tokio::net::TcpListener,
    ) -> anyhow::Result<Embedded> {
        let key_ring = Arc::new(context::key_ring(settings)?);
        let store = context::open_store(settings).await?;
        let engine = context::queue_engine(settings).await?;
        let limiter = context::limiter(settings).await?;
        let fetcher = context::image_fetcher(settings)?;
        let address = listener.local_addr()?;

        // One signal stops both halves.
        let (stop, stop_rx) = watch::channel(false);
        let stopped = move |mut rx: watch::Receiver<bool>| async move {
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
        let router = super::api::router(settings, store.clone(), key_ring, engine, fetcher)?;
        tracing::info!(%address, "API listening (embedded: API and worker in one process)");
        let grace = settings.worker.shutdown_grace;
        let api = tokio::spawn(async move {
            byok_api::serve(listener, router, stopped(stop_rx), grace)
                .await
                .context("the API server failed")
        });
        Ok(Embedded {
            store,
            address,
            stop,
            api,
            worker,
        })
    }

    /// Where the API listens.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The store both halves use.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Stops fetching and serving, lets work in flight finish within
    /// `worker.shutdown_grace`, and closes the store.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        let served = self.api.await.context("the API task failed")?;
        let worked = self.worker.await.context("the worker task failed")?;
        self.store.close().await;
        served?;
        worked.context("the worker failed")?;
        Ok(())
    }
}
