//! The sweeper: pushes jobs that were stored but never reached the queue
//! (the API crashed, or the queue refused, between insert and push).

use std::sync::Arc;
use std::time::Duration;

use byok_core::JobItem;
use byok_queue::{Producer, QueueError};
use byok_store::{Store, StoreError};
use tokio::sync::Notify;

/// How often to look.
const EVERY: Duration = Duration::from_secs(15);
/// A job younger than this may still be on its way to the queue.
const GRACE: Duration = Duration::from_secs(30);
/// Jobs pushed per pass at most (the next pass takes the rest).
const BATCH: u32 = 500;

/// Why a sweep stopped early.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    /// Reading or marking jobs failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The queue refused the push.
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// Re-pushes unqueued jobs until `stop` is notified. Several workers may
/// sweep at once: a job pushed twice is harmless, every step is a
/// compare-and-set on its row.
pub(crate) async fn sweep_forever(store: Store, producer: Producer<JobItem>, stop: Arc<Notify>) {
    loop {
        if let Err(e) = sweep_stranded(&store, &producer, GRACE).await {
            tracing::warn!(error = %e, "sweeper pass failed; trying again later");
        }
        tokio::select! {
            () = tokio::time::sleep(EVERY) => {}
            () = stop.notified() => return,
        }
    }
}

/// One pass: pushes up to 500 `queued` jobs created more than `older_than`
/// ago whose push was never confirmed, and marks them enqueued; drops the
/// waiting entries of jobs that need no push any more. Returns how many were
/// pushed.
pub async fn sweep_stranded(
    store: &Store,
    producer: &Producer<JobItem>,
    older_than: Duration,
) -> Result<usize, SweepError> {
    let cutoff = chrono::Duration::from_std(older_than)
        .ok()
        .and_then(|d| chrono::Utc::now().checked_sub_signed(d))
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
    // Entries of jobs that need no push any more (cancelled first, or a lost mark of a job
    // that has run since) would otherwise wait forever.
    store.jobs().forget_unpushed_not_queued(cutoff).await?;
    let stranded = store.jobs().unenqueued(cutoff, BATCH).await?;
    for job_id in &stranded {
        producer
            .push(
                &job_id.to_string(),
                &JobItem { job_id: *job_id },
                Duration::ZERO,
            )
            .await?;
        store.jobs().mark_enqueued(*job_id).await?;
    }
    if !stranded.is_empty() {
        tracing::warn!(
            count = stranded.len(),
            "pushed jobs that had never reached the queue"
        );
    }
    Ok(stranded.len())
}
