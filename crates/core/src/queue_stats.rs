//! A work queue's depth: what the queue engine reports, the operator CLI
//! prints and the metrics export.

use serde::Serialize;

/// Counts of one queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueueStats {
    /// The queue's name (its namespace).
    pub name: String,
    /// Due, not yet delivered.
    pub pending: u64,
    /// Waiting for their time.
    pub scheduled: u64,
    /// Held by workers.
    pub running: u64,
    /// Dead.
    pub dead: u64,
    /// Age of the oldest pending item, in whole seconds (0 when none).
    pub oldest_pending_seconds: u64,
}
