//! Running the pipeline as an apalis worker on the queue, with the sweeper
//! and a bounded graceful shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use apalis::prelude::*;
use byok_core::JobItem;
use byok_queue::{Delivery, Engine, Producer, QueueBackend};

use crate::Pipeline;
use crate::sweeper::sweep_forever;

/// How a worker process runs.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// The worker's name (made unique per process by the queue).
    pub name: String,
    /// `worker.concurrency`: steps in flight.
    pub concurrency: usize,
    /// `worker.shutdown_grace`: how long steps in flight get on shutdown.
    pub shutdown_grace: Duration,
}

/// Why a worker stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// apalis reported the worker failed.
    #[error("worker failed: {0}")]
    Worker(String),
}

async fn handle(
    item: JobItem,
    delivery: Data<Delivery>,
    pipeline: Data<Arc<Pipeline>>,
) -> Result<(), BoxDynError> {
    pipeline
        .step(item.job_id, &delivery)
        .await
        .map_err(Into::into)
}

/// Runs jobs from `engine` until `shutdown` resolves, then stops fetching,
/// lets the steps in flight finish for up to `shutdown_grace`, hands the
/// fetched-but-unstarted items back, and returns. Steps still running after
/// the grace are abandoned; their items return to the queue after the
/// visibility timeout, and a job with a provider job id resumes polling.
pub async fn run_worker(
    engine: Arc<dyn Engine>,
    pipeline: Arc<Pipeline>,
    options: WorkerOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let signal = async move {
        let _ = stopped.await;
        Ok::<(), std::io::Error>(())
    };
    let worker = WorkerBuilder::new(options.name.clone())
        .backend(QueueBackend::<JobItem>::new(Arc::clone(&engine)))
        .data(Arc::clone(&pipeline))
        .concurrency(options.concurrency.max(1))
        .build(handle);
    let run = worker.run_until(signal);
    let mut running = tokio::spawn(run);

    let sweeper_stop = Arc::new(tokio::sync::Notify::new());
    let sweeper = tokio::spawn(sweep_forever(
        pipeline.store().clone(),
        Producer::<JobItem>::new(engine),
        Arc::clone(&sweeper_stop),
    ));

    tracing::info!(name = %options.name, concurrency = options.concurrency, "worker running");
    let early = tokio::select! {
        () = shutdown => None,
        ended = &mut running => Some(ended),
    };
    sweeper_stop.notify_one();
    let _ = sweeper.await;
    let ended = match early {
        Some(ended) => ended,
        None => {
            tracing::info!(
                grace_s = options.shutdown_grace.as_secs_f64(),
                "stopping: no new work, finishing steps in flight"
            );
            let _ = stop.send(());
            match tokio::time::timeout(options.shutdown_grace, &mut running).await {
                Ok(ended) => ended,
                Err(_) => {
                    running.abort();
                    tracing::warn!(
                        "steps still running after the grace period were abandoned; their jobs come back after the visibility timeout"
                    );
                    return Ok(());
                }
            }
        }
    };
    match ended {
        Ok(Ok(())) => {
            tracing::info!("worker stopped");
            Ok(())
        }
        Ok(Err(e)) => Err(RunError::Worker(e.to_string())),
        Err(e) => Err(RunError::Worker(e.to_string())),
    }
}
