//! The small interface both storage engines implement: Redis Streams for the
//! distributed shape, SQLite for the embedded one. The apalis backend
//! ([`crate::QueueBackend`]) and the producer are written once against it.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use byok_core::QueueStats;

use crate::inspect::{ItemState, ListedItem, WorkerSeen};
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

/// What a settlement does to the stored item. Both engines apply the same
/// plan, so attempts are counted identically whatever stores them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Done: delete the entry.
    Done,
    /// A new entry, due after `after`, with `attempts` counted.
    Again {
        /// Attempts to store on the new entry.
        attempts: u32,
        /// The wait.
        after: Duration,
    },
    /// Dead with `error`.
    Dead {
        /// Attempts to store on the dead entry.
        attempts: u32,
        /// Why.
        error: String,
    },
}

/// Turns a settlement of `d` into what the engine stores. Additions
/// saturate: counts read back from storage are untrusted.
pub(crate) fn plan(config: &QueueConfig, d: &Delivery, settlement: &Settlement) -> Plan {
    match settlement {
        Settlement::Ack => Plan::Done,
        // Not an attempt, but crashed deliveries of this entry were.
        Settlement::Reschedule { after } => Plan::Again {
            attempts: d.attempts.saturating_add(d.deliveries.saturating_sub(1)),
            after: *after,
        },
        Settlement::Retry { after, error } => {
            if d.attempt() >= config.max_attempts {
                Plan::Dead {
                    attempts: d.attempt(),
                    error: format!(
                        "attempt {} of {} failed: {error}",
                        d.attempt(),
                        config.max_attempts
                    ),
                }
            } else {
                Plan::Again {
                    attempts: d.attempt(),
                    after: *after,
                }
            }
        }
        Settlement::Dead { error } => Plan::Dead {
            attempts: d.attempt(),
            error: error.clone(),
        },
    }
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

    /// The workers (consumers) the queue has seen, most recently seen first. Redis keeps a
    /// consumer until it leaves or its idle time passes the cleanup threshold; the SQLite
    /// engine notes each consumer when it opens and at most every 5 s from its maintenance
    /// passes, and forgets one an hour after its last.
    async fn workers(&self) -> Result<Vec<WorkerSeen>, QueueError>;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(attempts: u32, deliveries: u32) -> Delivery {
        Delivery {
            item_id: "i".into(),
            payload: "{}".into(),
            attempts,
            deliveries,
            handle: "h".into(),
        }
    }

    #[test]
    fn plans_count_attempts_like_the_readme_says() {
        let mut config = QueueConfig::new("t");
        config.max_attempts = 3;
        let after = Duration::from_millis(7);
        let retry = Settlement::Retry {
            after,
            error: "boom".into(),
        };
        assert_eq!(plan(&config, &delivery(0, 1), &Settlement::Ack), Plan::Done);
        // A reschedule is not an attempt; a crashed delivery before it was.
        assert_eq!(
            plan(&config, &delivery(1, 2), &Settlement::Reschedule { after }),
            Plan::Again { attempts: 2, after }
        );
        assert_eq!(
            plan(&config, &delivery(1, 1), &retry),
            Plan::Again { attempts: 2, after }
        );
        assert_eq!(
            plan(&config, &delivery(2, 1), &retry),
            Plan::Dead {
                attempts: 3,
                error: "attempt 3 of 3 failed: boom".into()
            }
        );
        // Odd stored counts saturate instead of overflowing.
        assert_eq!(
            plan(
                &config,
                &delivery(u32::MAX, 5),
                &Settlement::Reschedule { after }
            ),
            Plan::Again {
                attempts: u32::MAX,
                after
            }
        );
    }
}
