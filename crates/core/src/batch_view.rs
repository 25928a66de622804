//! A batch as the API shows it: the body of `GET /v1/batches/{id}` (and of its create and
//! cancel answers), and the `data` of its `batch.completed` webhook event. The server renders
//! it from the stored batch; clients read it back.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::{GenerationRequest, JobStatus, JobView};

/// The most jobs one batch holds.
pub const MAX_BATCH_JOBS: usize = 1000;

/// The body of `POST /v1/batches`: 1–1,000 job requests, each exactly what `POST /v1/jobs`
/// takes, stored and queued as one unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// The jobs, in the order their results are listed (`GET /v1/batches/{id}/jobs`).
    #[cfg_attr(feature = "openapi", schema(min_items = 1, max_items = 1000))]
    pub jobs: Vec<GenerationRequest>,
    /// The producer's own JSON, returned with the batch untouched (default `{}`).
    #[serde(default = "empty_object")]
    #[cfg_attr(feature = "openapi", schema(value_type = Value))]
    pub metadata: Value,
}

fn empty_object() -> Value {
    Value::Object(serde_json::Map::new())
}

/// Jobs enqueued as one unit, and how far they got.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = Batch))]
pub struct BatchView {
    /// The batch id (a UUIDv7).
    pub id: Uuid,
    pub status: BatchStatus,
    /// How many jobs the batch holds (1–1,000).
    pub total: u32,
    /// How many of its jobs are in each status.
    pub counts: BatchCounts,
    /// The share of its jobs in a final status (succeeded, failed or cancelled), 0–1.
    #[cfg_attr(feature = "openapi", schema(minimum = 0.0, maximum = 1.0))]
    pub progress: f64,
    /// The producer's own JSON, untouched.
    #[cfg_attr(feature = "openapi", schema(value_type = Value))]
    pub metadata: Value,
    pub created_at: DateTime<Utc>,
    /// When its last job reached a final status.
    #[cfg_attr(feature = "openapi", schema(required))]
    pub finished_at: Option<DateTime<Utc>>,
}

/// A page of a batch's jobs: the body of `GET /v1/batches/{id}/jobs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BatchJobPage {
    /// The batch.
    pub batch_id: Uuid,
    /// In the order the batch listed them.
    pub jobs: Vec<JobView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    #[cfg_attr(feature = "openapi", schema(required))]
    pub next_cursor: Option<Uuid>,
}

/// Whether every job of a batch is final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = BatchStatus))]
#[serde(rename_all = "lowercase")]
pub enum BatchStatus {
    /// Some job is still queued, throttled or running.
    Running,
    /// Every job succeeded, failed or was cancelled (`batch.completed` was written).
    Completed,
}

/// A batch's jobs counted by status: every status is present, 0 when no job has it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BatchCounts {
    pub queued: u32,
    pub throttled: u32,
    pub running: u32,
    pub succeeded: u32,
    pub failed: u32,
    pub cancelled: u32,
}

impl BatchCounts {
    /// Adds `n` jobs in `status`.
    pub fn add(&mut self, status: JobStatus, n: u32) {
        let slot = match status {
            JobStatus::Queued => &mut self.queued,
            JobStatus::Throttled => &mut self.throttled,
            JobStatus::Running => &mut self.running,
            JobStatus::Succeeded => &mut self.succeeded,
            JobStatus::Failed => &mut self.failed,
            JobStatus::Cancelled => &mut self.cancelled,
        };
        *slot = slot.saturating_add(n);
    }

    /// How many jobs are in `status`.
    pub fn get(&self, status: JobStatus) -> u32 {
        match status {
            JobStatus::Queued => self.queued,
            JobStatus::Throttled => self.throttled,
            JobStatus::Running => self.running,
            JobStatus::Succeeded => self.succeeded,
            JobStatus::Failed => self.failed,
            JobStatus::Cancelled => self.cancelled,
        }
    }

    /// How many jobs are in a final status.
    pub fn finished(&self) -> u32 {
        self.succeeded
            .saturating_add(self.failed)
            .saturating_add(self.cancelled)
    }
}

impl BatchView {
    /// The share of `total` that `counts` says is final, 0–1 (0 for an empty total).
    pub fn progress_of(counts: &BatchCounts, total: u32) -> f64 {
        if total == 0 {
            return 0.0;
        }
        (f64::from(counts.finished()) / f64::from(total)).clamp(0.0, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "openapi")]
    #[test]
    fn the_status_schema_lists_its_wire_names() {
        use utoipa::PartialSchema as _;
        let schema = serde_json::to_value(BatchStatus::schema()).unwrap();
        assert_eq!(schema["enum"], serde_json::json!(["running", "completed"]));
        assert_eq!(
            serde_json::to_value([BatchStatus::Running, BatchStatus::Completed]).unwrap(),
            schema["enum"]
        );
    }

    #[test]
    fn counts_add_up_by_status_and_progress_counts_the_final_ones() {
        let mut counts = BatchCounts::default();
        counts.add(JobStatus::Queued, 2);
        counts.add(JobStatus::Succeeded, 1);
        counts.add(JobStatus::Failed, 1);
        counts.add(JobStatus::Cancelled, 0);
        assert_eq!(counts.get(JobStatus::Queued), 2);
        assert_eq!(counts.finished(), 2);
        assert!((BatchView::progress_of(&counts, 4) - 0.5).abs() < f64::EPSILON);
        assert_eq!(BatchView::progress_of(&counts, 0), 0.0);
        let json = serde_json::to_value(counts).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"queued": 2, "throttled": 0, "running": 0,
                               "succeeded": 1, "failed": 1, "cancelled": 0})
        );
    }

    #[test]
    fn the_view_reads_back_what_it_writes() {
        let view = BatchView {
            id: Uuid::nil(),
            status: BatchStatus::Completed,
            total: 1,
            counts: BatchCounts {
                succeeded: 1,
                ..BatchCounts::default()
            },
            progress: 1.0,
            metadata: serde_json::json!({ "order": 7 }),
            created_at: DateTime::UNIX_EPOCH,
            finished_at: Some(DateTime::UNIX_EPOCH),
        };
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(json["status"], "completed");
        assert_eq!(serde_json::from_value::<BatchView>(json).unwrap(), view);
    }
}
