//! Reading a job's history from a point, and the cheap stamp a watcher polls: what
//! `GET /v1/jobs/{id}/events` is made of, on both databases.

use byok_core::{DEFAULT_PROJECT_ID, GenerationRequest, JobStatus, ProviderId};
use byok_store::{Inserted, Job, NewJob, Store};
use serde_json::json;
use uuid::Uuid;

use crate::backends;

async fn create(store: &Store) -> Job {
    let user = Uuid::new_v4();
    let request: GenerationRequest = serde_json::from_value(
        json!({ "user_id": user, "provider": "runway", "model": "gen4_turbo", "prompt": "a cat" }),
    )
    .unwrap();
    let new = NewJob {
        project_id: DEFAULT_PROJECT_ID,
        user_id: user,
        provider: ProviderId::RUNWAY,
        model: "gen4_turbo".into(),
        request,
        metadata: json!({}),
        created_by_token: None,
        batch_id: None,
        idempotency: None,
        usage: Default::default(),
    };
    match store.jobs().insert(&new).await.unwrap() {
        Inserted::Created(job) => job,
        other => panic!("expected a new job, got {other:?}"),
    }
}

#[tokio::test]
async fn the_history_reads_on_from_any_entry_in_pages_with_its_row_ids() {
    for b in backends().await {
        let jobs = b.store.jobs();
        let job = create(&b.store).await;
        // Another job's entries interleave with this one's and are never read.
        let other = create(&b.store).await;
        assert!(jobs.set_throttled(job.id).await.unwrap());
        assert!(jobs.set_throttled(other.id).await.unwrap());
        assert!(jobs.begin_submit(job.id).await.unwrap());
        assert!(jobs.submitted(job.id, "task-1", 1).await.unwrap());
        assert!(jobs.set_progress(job.id, 0.5).await.unwrap());
        assert!(jobs.cancel(other.id, "not needed").await.is_ok());

        let all = jobs.events_after(job.id, 0, 100).await.unwrap();
        let statuses: Vec<&str> = all.iter().map(|(_, e)| e.status.as_str()).collect();
        assert_eq!(statuses, ["queued", "throttled", "running"], "{}", b.name);
        // The same entries `events` gives, in the same order, with increasing ids.
        let plain = jobs.events(job.id).await.unwrap();
        assert_eq!(
            all.iter().map(|(_, e)| e.clone()).collect::<Vec<_>>(),
            plain,
            "{}",
            b.name
        );
        assert!(all.windows(2).all(|w| w[0].0 < w[1].0), "{all:?}");
        assert_eq!(all[2].1.message, "accepted by the provider as task-1");

        // From the middle: exactly the rest.
        let rest = jobs.events_after(job.id, all[0].0, 100).await.unwrap();
        assert_eq!(rest, all[1..], "{}", b.name);
        // In pages of one, the whole history once.
        let mut paged = Vec::new();
        let mut after = 0;
        loop {
            let page = jobs.events_after(job.id, after, 1).await.unwrap();
            let Some((last, _)) = page.last() else { break };
            after = *last;
            assert_eq!(page.len(), 1);
            paged.extend(page);
        }
        assert_eq!(paged, all, "{}", b.name);
        // After the last entry, or for a job that does not exist: nothing.
        let last = all.last().unwrap().0;
        assert!(
            jobs.events_after(job.id, last, 100)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            jobs.events_after(Uuid::new_v4(), 0, 100)
                .await
                .unwrap()
                .is_empty()
        );

        // A later entry takes a higher id than every earlier one.
        assert!(jobs.cancel(job.id, "changed my mind").await.is_ok());
        let after_cancel = jobs.events_after(job.id, last, 100).await.unwrap();
        assert_eq!(after_cancel.len(), 1, "{}", b.name);
        assert!(after_cancel[0].0 > last);
        assert_eq!(
            (
                after_cancel[0].1.status.as_str(),
                after_cancel[0].1.message.as_str()
            ),
            ("cancelled", "changed my mind")
        );
    }
}

#[tokio::test]
async fn the_change_stamp_moves_with_every_change_a_reader_sees() {
    for b in backends().await {
        let jobs = b.store.jobs();
        let job = create(&b.store).await;
        assert_eq!(jobs.change_stamp(Uuid::new_v4()).await.unwrap(), None);
        let queued = jobs.change_stamp(job.id).await.unwrap().unwrap();
        assert_eq!(
            queued,
            (JobStatus::Queued, None, job.updated_at),
            "{}",
            b.name
        );
        // Nothing changed, nothing moved.
        assert_eq!(jobs.change_stamp(job.id).await.unwrap(), Some(queued));

        assert!(jobs.begin_submit(job.id).await.unwrap());
        assert!(jobs.submitted(job.id, "task-1", 1).await.unwrap());
        let running = jobs.change_stamp(job.id).await.unwrap().unwrap();
        assert_eq!(running.0, JobStatus::Running, "{}", b.name);
        assert_ne!(running, queued);

        assert!(jobs.set_progress(job.id, 0.25).await.unwrap());
        let progressed = jobs.change_stamp(job.id).await.unwrap().unwrap();
        assert_eq!(
            (progressed.0, progressed.1),
            (JobStatus::Running, Some(0.25))
        );
        // The stamp is the row's: the same values a full read gives.
        let row = jobs.get(job.id).await.unwrap().unwrap();
        assert_eq!(
            progressed,
            (row.status, row.progress, row.updated_at),
            "{}",
            b.name
        );
    }
}
