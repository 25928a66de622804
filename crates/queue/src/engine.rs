//! The small interface both storage engines implement: Redis Streams for the
//! distributed shape, SQLite for the embedded one. The apalis backend
//! ([`crate::QueueBackend`]) and the producer are written once against it.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::inspect::{ItemState, ListedItem, QueueStats};
use crate::{QueueConfig, QueueError};

/// An item to enqueue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewItem {
    /// The item's id (for the pipeline: the job id). Stays the same across
    /// retries and reschedules.
    pub id: String,
    /// The encoded arguments (JSON). Only ids belong here: payloads are
    /// stored in Redis, where secrets must never go.
    pub payload: String,
    /// Run no earlier than this from now.
    pub delay: Duration,
    /// Attempts already counted (0 for a new item).
    pub attempts: u32,
}

impl NewItem {
    /// An item due now.
    pub fn now(id: impl Into<String>, payload: impl Into<String>) -> NewItem {
        NewItem {
            id: id.into(),
            payload: payload.into(),
            delay: Duration::ZERO,
            attempts: 0,
        }
    }
}

/// An item delivered to a consumer.
#[derive(Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The item's id.
    pub item_id: String,
    /// The encoded arguments.
    pub payload: String,
    /// Attempts counted before this entry was created.
    pub attempts: u32,
    /// How many times this entry has been delivered (1 the first time; more
    /// after a worker crashed holding it).
    pub deliveries: u32,
    /// The engine's reference to this delivery (a stream entry id, a row).
    pub handle: String,
}

impl Delivery {
    /// The attempt this delivery is (1-based): earlier counted attempts plus
    /// deliveries of this entry, since a crash mid-run counts as an attempt.
    pub fn attempt(&self) -> u32 {
        self.attempts.saturating_add(self.deliveries)
    }
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("item_id", &self.item_id)
            .field("attempts", &self.attempts)
            .field("deliveries", &self.deliveries)
            .field("handle", &self.handle)
            .finish_non_exhaustive()
    }
}

/// What to do with a delivered item once its run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    /// Done: forget it.
    Ack,
    /// Run again after `after`; the run is not an attempt.
    Reschedule {
        /// The wait.
        after: Duration,
    },
    /// The run failed: run again after `after`, or dead when this was the
    /// last attempt (the engine decides, from `max_attempts`).
    Retry {
        /// The wait.
        after: Duration,
        /// Why it failed.
        error: String,
    },
    /// Dead now.
    Dead {
        /// Why.
        error: String,
    },
}

/// What a maintenance pass did.
#[derive(Debug, Default)]
pub struct Maintenance {
    /// Items whose lease had expired (their worker died), now delivered to
    /// this consumer.
    pub reclaimed: Vec<Delivery>,
    /// When the next delayed item falls due, if any is waiting.
    pub next_due: Option<Duration>,
}

/// A queue engine: shared by every producer and consumer of one namespace.
#[async_trait::async_trait]
pub trait Engine: Send + Sync + fmt::Debug + 'static {
    /// Its configuration.
    fn config(&self) -> &QueueConfig;

    /// Enqueues items (one round trip for the whole slice).
    async fn push(&self, items: &[NewItem]) -> Result<(), QueueError>;

    /// Opens a consumer with a name unique to this process.
    async fn consumer(&self, name: &str) -> Result<Arc<dyn Consumer>, QueueError>;

    /// Counts per state and the oldest pending item's age.
    async fn stats(&self) -> Result<QueueStats, QueueError>;

    /// Up to `limit` items in `state`, oldest first (dead: newest first).
    async fn list(&self, state: ItemState, limit: usize) -> Result<Vec<ListedItem>, QueueError>;

    /// Moves dead items back to pending, by dead-entry reference (`None`:
    /// all of them). Returns how many moved.
    async fn retry_dead(&self, refs: Option<&[String]>) -> Result<u64, QueueError>;

    /// Deletes every item in `state` (pending, scheduled or dead; running
    /// items belong to live workers and are refused). Returns how many.
    async fn purge(&self, state: ItemState) -> Result<u64, QueueError>;

    /// A cheap round trip, for readiness.
    async fn ping(&self) -> Result<(), QueueError>;
}

/// One worker process's view of the queue. Methods take `&self`: the
/// fetcher, the acknowledger and the keeper of a worker run concurrently.
#[async_trait::async_trait]
pub trait Consumer: Send + Sync + fmt::Debug {
    /// The consumer's name.
    fn name(&self) -> &str;

    /// Up to `max` due items, waiting up to the configured block time when
    /// none is due.
    async fn fetch(&self, max: usize) -> Result<Vec<Delivery>, QueueError>;

    /// Applies settlements (one round trip for the batch where possible).
    async fn settle(&self, batch: &[(Delivery, Settlement)]) -> Result<(), QueueError>;

    /// Renews the leases of deliveries this consumer still holds, so long
    /// runs are never taken by another worker.
    async fn extend(&self, held: &[Delivery]) -> Result<(), QueueError>;

    /// Promotes due delayed items and reclaims items whose lease expired
    /// (dead-lettering those out of attempts).
    async fn maintain(&self) -> Result<Maintenance, QueueError>;

    /// Hands fetched but unstarted deliveries back (graceful shutdown).
    async fn release(&self, unstarted: &[Delivery]) -> Result<(), QueueError>;

    /// Leaves the queue: removes this consumer if it holds nothing.
    async fn close(&self) -> Result<(), QueueError>;
}
