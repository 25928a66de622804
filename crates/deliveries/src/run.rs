//! Running deliveries as an apalis worker on their own queue, with the sweeper beside it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use apalis::prelude::*;
use byok_queue::{Delivery, Engine, Producer, QueueBackend};
use byok_store::Store;
use tokio::sync::Notify;

use crate::relay::{PushError, push_deliveries};
use crate::{Deliverer, DeliveryItem};

/// How the delivery worker runs.
#[derive(Debug, Clone)]
pub struct DeliveryWorkerOptions {
    /// The worker's name (made unique per process by the queue).
    pub name: String,
    /// Attempts in flight at once (`webhooks.concurrency`): each mostly waits on a
    /// receiver, for up to the timeout.
    pub concurrency: usize,
    /// How long attempts in flight get on shutdown.
    pub shutdown_grace: Duration,
    /// Events (and their deliveries) are deleted this long after they happened, once no
    /// delivery of theirs is pending (`webhooks.retention`).
    pub retention: Duration,
}

/// How often the sweeper looks.
const SWEEP_EVERY: Duration = Duration::from_secs(15);
/// A delivery younger than this may still be on its way from its writer's relay.
const UNPUSHED_GRACE: Duration = Duration::from_secs(30);
/// A pending delivery this far past due has lost its queue item (a due item is taken
/// within moments, and a lost lease comes back within the visibility timeout).
const OVERDUE: Duration = Duration::from_secs(15 * 60);
/// Deliveries pushed per pass at most.
const SWEEP_BATCH: u32 = 1000;
/// Events pruned per pass at most.
const PRUNE_BATCH: u32 = 1000;

async fn handle(
    item: DeliveryItem,
    _delivery: Data<Delivery>,
    deliverer: Data<Arc<Deliverer>>,
) -> Result<(), BoxDynError> {
    deliverer
        .deliver(item.delivery_id)
        .await
        .map_err(Into::into)
}

/// Delivers webhooks from `engine` until `shutdown` resolves, then lets attempts in
/// flight finish for up to the grace and returns. An attempt abandoned then is given up
/// for lost when its lease ends and made again (at least once: the receiver may see it
/// twice, with the same `webhook-id`).
pub async fn run_deliveries(
    engine: Arc<dyn Engine>,
    deliverer: Arc<Deliverer>,
    options: DeliveryWorkerOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let signal = async move {
        let _ = stopped.await;
        Ok::<(), std::io::Error>(())
    };
    let worker = WorkerBuilder::new(options.name.clone())
        .backend(QueueBackend::<DeliveryItem>::new(Arc::clone(&engine)))
        .data(Arc::clone(&deliverer))
        .concurrency(options.concurrency.max(1))
        .build(handle);
    let mut running = tokio::spawn(worker.run_until(signal));

    let sweeper_stop = Arc::new(Notify::new());
    let sweeper = tokio::spawn(sweep_forever(
        deliverer.store().clone(),
        Producer::new(engine),
        options.retention,
        Arc::clone(&sweeper_stop),
    ));
    tracing::info!(name = %options.name, concurrency = options.concurrency, "webhook deliveries running");
    let early = tokio::select! {
        () = shutdown => None,
        ended = &mut running => Some(ended),
    };
    sweeper_stop.notify_one();
    let _ = sweeper.await;
    let ended = match early {
        Some(ended) => ended,
        None => {
            let _ = stop.send(());
            match tokio::time::timeout(options.shutdown_grace, &mut running).await {
                Ok(ended) => ended,
                Err(_) => {
                    running.abort();
                    tracing::warn!(
                        "webhook attempts still out after the grace were abandoned; they are made again when their lease ends"
                    );
                    return Ok(());
                }
            }
        }
    };
    match ended {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

async fn sweep_forever(
    store: Store,
    producer: Producer<DeliveryItem>,
    retention: Duration,
    stop: Arc<Notify>,
) {
    loop {
        if let Err(e) = sweep_stranded(&store, &producer, UNPUSHED_GRACE, OVERDUE).await {
            tracing::warn!(error = %e, "webhook sweeper pass failed; trying again later");
        }
        let cutoff = chrono::Utc::now()
            - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::days(30));
        if let Err(e) = store.webhooks().prune(cutoff, PRUNE_BATCH).await {
            tracing::warn!(error = %e, "pruning old webhook events failed; trying again later");
        }
        tokio::select! {
            () = tokio::time::sleep(SWEEP_EVERY) => {}
            () = stop.notified() => return,
        }
    }
}

/// One pass: pushes pending deliveries never pushed for `unpushed_grace` (their writer
/// died before its relay pushed them) or overdue by `overdue` (their queue item was
/// lost). Several workers may sweep: a delivery pushed twice is attempted once, the
/// attempt being a compare-and-set claim. Returns how many were pushed.
pub async fn sweep_stranded(
    store: &Store,
    producer: &Producer<DeliveryItem>,
    unpushed_grace: Duration,
    overdue: Duration,
) -> Result<usize, PushError> {
    let now = chrono::Utc::now();
    let ago = |d: Duration| now - chrono::Duration::from_std(d).unwrap_or_default();
    let stranded = store
        .webhooks()
        .stranded(ago(unpushed_grace), ago(overdue), SWEEP_BATCH)
        .await?;
    push_deliveries(store, producer, &stranded).await?;
    if !stranded.is_empty() {
        tracing::warn!(
            count = stranded.len(),
            "pushed webhook deliveries whose queue item was missing"
        );
    }
    Ok(stranded.len())
}
