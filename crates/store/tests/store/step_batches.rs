//! A worker's step statements for many jobs at once (`*_many`, and `JobBatches` gathering
//! concurrent steps into them): each job gets the answer, the history, the webhook events
//! and the batch count its own statement would have given it, on both databases.

use std::collections::HashMap;

use byok_core::{DEFAULT_PROJECT_ID, EventType, JobStatus};
use byok_store::{Accepted, JobBatches};
use uuid::Uuid;

use crate::backends;
use crate::batches::{completions, create as create_batch, endpoint, new_batch, result};
use crate::jobs::{create, new_job};

/// Who a delivery goes to: an endpoint, or a job's own URL.
type Receiver = (Option<Uuid>, Option<String>);

fn accepted(id: Uuid, remote: &str) -> Accepted {
    Accepted {
        id,
        provider_job_id: remote.to_owned(),
        attempt: 1,
    }
}

#[tokio::test]
async fn many_jobs_in_one_statement_each_get_their_own_answer_history_and_events() {
    for b in backends().await {
        let jobs = b.store.jobs();
        let subscriber = endpoint(
            &b.store,
            &[
                EventType::JobRunning,
                EventType::JobSucceeded,
                EventType::BatchCompleted,
            ],
        )
        .await;
        // A carries its own webhook URL, B does not: A's URL hears of A only.
        let mut with_url = new_job(Uuid::new_v4(), None, None);
        with_url.request.webhook_url = Some("https://a.example.com/hook".into());
        let a = create(&b.store, &with_url).await;
        let bj = create(&b.store, &new_job(Uuid::new_v4(), None, None)).await;
        let claimed_before = create(&b.store, &new_job(Uuid::new_v4(), None, None)).await;
        assert!(jobs.begin_submit(claimed_before.id).await.unwrap());

        // Reads: a missing job is None, a job asked twice is read twice.
        let missing = Uuid::now_v7();
        let read = jobs
            .get_many_for_step(&[a.id, missing, a.id])
            .await
            .unwrap();
        let ids: Vec<Option<Uuid>> = read
            .into_iter()
            .map(|r| r.unwrap().map(|(job, _key)| job.id))
            .collect();
        assert_eq!(ids, [Some(a.id), None, Some(a.id)], "{}", b.name);

        // Claims: a job given twice is claimed once; a claimed or missing one not at all.
        let claims = jobs
            .begin_submit_many(&[a.id, a.id, claimed_before.id, missing, bj.id])
            .await
            .unwrap();
        assert_eq!(claims, [true, false, false, false, true], "{}", b.name);

        // Accepted submits: the first of a job's two answers is recorded.
        let recorded = jobs
            .submitted_many(&[
                accepted(a.id, "task-a"),
                accepted(bj.id, "task-b"),
                accepted(a.id, "task-a2"),
                accepted(missing, "task-x"),
            ])
            .await
            .unwrap();
        assert_eq!(recorded, [true, true, false, false], "{}", b.name);
        for (job, remote) in [(a.id, "task-a"), (bj.id, "task-b")] {
            let running = jobs.get(job).await.unwrap().unwrap();
            assert_eq!(running.status, JobStatus::Running, "{}", b.name);
            assert_eq!(running.provider_job_id.as_deref(), Some(remote));
            assert!(running.submit_started_at.is_none() && running.started_at.is_some());
            let history: Vec<(String, String)> = jobs
                .events(job)
                .await
                .unwrap()
                .into_iter()
                .map(|e| (e.status, e.message))
                .collect();
            assert_eq!(
                history,
                [
                    ("queued".to_owned(), "accepted".to_owned()),
                    (
                        "running".to_owned(),
                        format!("accepted by the provider as {remote}")
                    )
                ],
                "{}",
                b.name
            );
        }

        let done = result();
        let succeeded = jobs
            .succeed_many(&[(a.id, &done), (bj.id, &done), (a.id, &done)])
            .await
            .unwrap();
        assert_eq!(succeeded, [true, true, false], "{}", b.name);
        for job in [a.id, bj.id] {
            let ended = jobs.get(job).await.unwrap().unwrap();
            assert_eq!(ended.status, JobStatus::Succeeded);
            assert_eq!(ended.result.as_ref(), Some(&done));
            assert!(
                b.store.usage().of_job(job).await.unwrap().is_some(),
                "{}",
                b.name
            );
        }

        // Every event went where it belongs: the endpoint heard both jobs twice, A's URL
        // heard A only.
        let deliveries = b
            .store
            .webhooks()
            .all_deliveries(Some(DEFAULT_PROJECT_ID), None, None, 100)
            .await
            .unwrap();
        let mut heard: HashMap<Receiver, Vec<(String, Uuid)>> = HashMap::new();
        for d in deliveries {
            heard
                .entry((d.endpoint_id, d.url))
                .or_default()
                .push((d.event_type, d.subject_id.unwrap()));
        }
        let mut at_endpoint = heard.remove(&(Some(subscriber), None)).unwrap_or_default();
        at_endpoint.sort();
        let mut expected = vec![
            ("job.running".to_owned(), a.id),
            ("job.running".to_owned(), bj.id),
            ("job.succeeded".to_owned(), a.id),
            ("job.succeeded".to_owned(), bj.id),
        ];
        expected.sort();
        assert_eq!(at_endpoint, expected, "{}", b.name);
        let mut at_url = heard
            .remove(&(None, Some("https://a.example.com/hook".to_owned())))
            .unwrap_or_default();
        at_url.sort();
        assert_eq!(
            at_url,
            [
                ("job.running".to_owned(), a.id),
                ("job.succeeded".to_owned(), a.id)
            ],
            "{}",
            b.name
        );
        assert!(heard.is_empty(), "{}: nothing else: {heard:?}", b.name);
    }
}

#[tokio::test]
async fn two_jobs_of_a_batch_in_one_statement_count_twice_and_complete_it_once() {
    for b in backends().await {
        let jobs = b.store.jobs();
        endpoint(&b.store, &[EventType::BatchCompleted]).await;
        let (batch, members) = create_batch(&b.store, new_batch(3, None, None)).await;
        let done = result();
        let first_two: Vec<(Uuid, &_)> = members[..2].iter().map(|j| (j.id, &done)).collect();
        assert_eq!(jobs.succeed_many(&first_two).await.unwrap(), [true, true]);
        let now = b
            .store
            .batches()
            .get_by_id(batch.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(now.remaining, 1, "{}", b.name);
        assert_eq!(completions(&b, batch.id).await, 0, "{}", b.name);

        assert_eq!(
            jobs.succeed_many(&[(members[2].id, &done), (members[0].id, &done)])
                .await
                .unwrap(),
            [true, false]
        );
        let ended = b
            .store
            .batches()
            .get_by_id(batch.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ended.remaining, 0, "{}", b.name);
        assert!(ended.is_completed(), "{}", b.name);
        assert_eq!(completions(&b, batch.id).await, 1, "{}", b.name);
    }
}

#[tokio::test]
async fn concurrent_steps_through_job_batches_claim_each_job_exactly_once() {
    for b in backends().await {
        let steps = JobBatches::start(&b.store);
        let mut ids = Vec::new();
        for _ in 0..40 {
            ids.push(
                create(&b.store, &new_job(Uuid::new_v4(), None, None))
                    .await
                    .id,
            );
        }
        // Two deliveries of every job race for its submit.
        let claims = futures::future::join_all(ids.iter().chain(&ids).map(|id| {
            let steps = steps.clone();
            let id = *id;
            async move { (id, steps.begin_submit(id).await.unwrap()) }
        }))
        .await;
        let mut claimed: HashMap<Uuid, usize> = HashMap::new();
        for (id, won) in claims {
            *claimed.entry(id).or_default() += usize::from(won);
        }
        assert!(
            ids.iter().all(|id| claimed[id] == 1),
            "{}: every job claimed exactly once: {claimed:?}",
            b.name
        );

        let done = result();
        let ended = futures::future::join_all(ids.iter().map(|id| {
            let (steps, done) = (steps.clone(), done.clone());
            let id = *id;
            async move {
                let read = steps.get_for_step(id).await.unwrap().unwrap().0;
                assert!(read.submit_started_at.is_some());
                let recorded = steps.submitted(id, &format!("task-{id}"), 1).await.unwrap();
                let succeeded = steps.succeed(id, &done).await.unwrap();
                recorded && succeeded
            }
        }))
        .await;
        assert!(ended.iter().all(|ok| *ok), "{}", b.name);
        for id in &ids {
            let statuses: Vec<String> = b
                .store
                .jobs()
                .events(*id)
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.status)
                .collect();
            assert_eq!(statuses, ["queued", "running", "succeeded"], "{}", b.name);
        }
    }
}
