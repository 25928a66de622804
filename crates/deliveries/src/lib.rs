#![doc = include_str!("../README.md")]

mod coalesce;
mod deliver;
mod payload;
mod relay;
mod run;
mod schedule;

pub use deliver::{Deliverer, DeliveryOptions};
pub use payload::render;
pub use relay::{PushError, Relay, push_deliveries};
pub use run::{DeliveryWorkerOptions, run_deliveries, sweep_stranded};
pub use schedule::{DEFAULT_SCHEDULE, RetrySchedule};

/// The payload of a webhook delivery's queue item: the delivery's id, nothing else (the
/// event, the URL and the secret stay in the database).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryItem {
    /// The `webhook_deliveries` row this item drives.
    pub delivery_id: uuid::Uuid,
}
