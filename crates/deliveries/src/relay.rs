//! The relay: pushes the deliveries this process's transitions wrote to the queue as
//! soon as they are committed. What it misses (the process died first, the queue was
//! down) the sweeper pushes later, so it is a shortcut, never the only path.

use byok_queue::Producer;
use byok_store::Store;
use uuid::Uuid;

use crate::DeliveryItem;

/// The process's relay task.
#[derive(Debug)]
pub struct Relay {
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    /// Starts relaying `store`'s new deliveries to `producer`.
    pub fn start(store: Store, producer: Producer<DeliveryItem>) -> Relay {
        store.outbox().subscribe();
        let task = tokio::spawn(async move {
            loop {
                let ids = store.outbox().take().await;
                // Batched: whatever accumulated while the last push was out goes in one
                // round trip.
                if let Err(e) = push_deliveries(&store, &producer, &ids).await {
                    tracing::warn!(error = %e, count = ids.len(), "could not push webhook deliveries; the sweeper will");
                }
            }
        });
        Relay { task }
    }

    /// Stops relaying (what is not pushed yet is the sweeper's).
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Pushes one queue item per delivery and notes them pushed.
pub async fn push_deliveries(
    store: &Store,
    producer: &Producer<DeliveryItem>,
    ids: &[Uuid],
) -> Result<(), PushError> {
    if ids.is_empty() {
        return Ok(());
    }
    let items: Vec<(String, DeliveryItem)> = ids
        .iter()
        .map(|id| (id.to_string(), DeliveryItem { delivery_id: *id }))
        .collect();
    producer
        .push_bulk(items.iter().map(|(id, item)| (id.as_str(), item)))
        .await?;
    store.webhooks().mark_pushed(ids).await?;
    Ok(())
}

/// Why deliveries could not be pushed.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The queue refused.
    #[error(transparent)]
    Queue(#[from] byok_queue::QueueError),
    /// Noting them pushed failed (they may be pushed again: harmless).
    #[error(transparent)]
    Store(#[from] byok_store::StoreError),
}
