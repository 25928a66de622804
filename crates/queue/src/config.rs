//! Settings of a queue, shared by both engines.

use std::time::Duration;

/// How a queue behaves. Built from `queue.*` and `worker.*` settings.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// Prefix and Redis Cluster hash tag of every key: `{namespace}:…`.
    pub namespace: String,
    /// A delivered item not acknowledged or extended for this long goes to
    /// another worker.
    pub visibility_timeout: Duration,
    /// Attempts (failed runs plus crashed deliveries) before an item is dead.
    pub max_attempts: u32,
    /// Dead items kept, oldest dropped first. In Redis the cap is
    /// approximate (`MAXLEN ~`): up to `stream-node-max-entries` − 1 more
    /// (99 by default) may remain.
    pub dead_retention: u64,
    /// Items fetched per round trip, and the most a worker holds fetched but
    /// not yet started (so it never hoards work other workers could run).
    pub prefetch: usize,
    /// How long a blocking fetch waits before it returns empty (and the
    /// fetcher checks for shutdown).
    pub block: Duration,
    /// Delay of the first retry of a failed item without its own delay;
    /// doubled per attempt, capped at `max_retry_delay`.
    pub retry_base: Duration,
    /// Cap of the retry delay.
    pub max_retry_delay: Duration,
    /// Redis: how many hash tags (partitions) the work is spread over, so a Redis Cluster
    /// spreads it over its shards (1 to 64; the SQLite engine has one).
    pub partitions: usize,
}

impl QueueConfig {
    /// The defaults for `namespace`: those of `queue.*` and `worker.max_attempts` (the root
    /// README's Configuration table), and the engine's own.
    pub fn new(namespace: impl Into<String>) -> QueueConfig {
        QueueConfig {
            namespace: namespace.into(),
            visibility_timeout: Duration::from_secs(30),
            max_attempts: 8,
            dead_retention: 10_000,
            prefetch: 64,
            block: Duration::from_secs(1),
            retry_base: Duration::from_secs(1),
            max_retry_delay: Duration::from_secs(300),
            partitions: 1,
        }
    }

    /// The delay before retrying after `attempt` failed runs (1-based).
    pub fn retry_delay(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(20));
        self.retry_base
            .saturating_mul(factor)
            .min(self.max_retry_delay)
    }

    /// How often a worker renews the leases of the items it holds: a third of
    /// the visibility timeout, so two renewals can fail before one expires.
    pub fn lease_interval(&self) -> Duration {
        (self.visibility_timeout / 3).max(Duration::from_millis(50))
    }

    /// How often a worker looks for items whose lease expired.
    pub fn reclaim_interval(&self) -> Duration {
        (self.visibility_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(2))
    }
}
