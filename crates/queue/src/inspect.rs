//! What operators see of a queue.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// The states an item can be in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ItemState {
    /// Due, waiting for a worker.
    Pending,
    /// Waiting for its time (a retry, a reschedule, a delayed push).
    Scheduled,
    /// Delivered to a worker that holds its lease.
    Running,
    /// Out of attempts or aborted; kept up to `queue.dead_retention`.
    Dead,
}

impl ItemState {
    /// Every state.
    pub const ALL: [ItemState; 4] = [
        ItemState::Pending,
        ItemState::Scheduled,
        ItemState::Running,
        ItemState::Dead,
    ];

    /// The name used by the CLI.
    pub const fn as_str(self) -> &'static str {
        match self {
            ItemState::Pending => "pending",
            ItemState::Scheduled => "scheduled",
            ItemState::Running => "running",
            ItemState::Dead => "dead",
        }
    }
}

impl fmt::Display for ItemState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ItemState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ItemState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| "expected one of pending, scheduled, running, dead".to_owned())
    }
}

/// One item, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListedItem {
    /// The engine's reference (stream entry id, row id): what `retry` takes.
    pub reference: String,
    /// The item's id.
    pub item_id: String,
    /// Its state.
    pub state: ItemState,
    /// Attempts counted so far.
    pub attempts: u32,
    /// Deliveries of the current entry (running items).
    pub deliveries: u32,
    /// The worker holding it (running items).
    pub consumer: Option<String>,
    /// Unix milliseconds: when it was enqueued (pending), falls due
    /// (scheduled), was delivered (running), or died (dead).
    pub at_ms: u64,
    /// Why it died (dead items).
    pub error: Option<String>,
    /// The payload (ids only).
    pub payload: String,
}

/// A worker the queue has seen: a consumer that fetched recently.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkerSeen {
    /// The consumer's name (role, host and process: see `byok worker`).
    pub name: String,
    /// Items it holds (running).
    pub running: u64,
    /// Milliseconds since it last fetched or renewed.
    pub idle_ms: u64,
}
