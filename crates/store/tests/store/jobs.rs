//! Jobs: every transition is a compare-and-set, on both databases.

use byok_core::{
    DEFAULT_PROJECT_ID, ErrorCode, ErrorRecord, GenerationRequest, JobResult, JobStatus,
    ProjectUser, ProviderId,
};
use byok_store::{Cancelled, Idempotency, Inserted, Job, NewJob, Store, StoreError};
use serde_json::json;
use uuid::Uuid;

use crate::{Backend, backends};

/// `user_id` in the default project.
fn owner(user_id: Uuid) -> ProjectUser {
    ProjectUser::new(DEFAULT_PROJECT_ID, user_id)
}

fn request(user: Uuid) -> GenerationRequest {
    serde_json::from_value(
        json!({ "user_id": user, "provider": "runway", "model": "gen4_turbo", "prompt": "a cat" }),
    )
    .unwrap()
}

pub(crate) fn new_job(user: Uuid, token: Option<Uuid>, idem: Option<(&str, u8)>) -> NewJob {
    NewJob {
        project_id: DEFAULT_PROJECT_ID,
        user_id: user,
        provider: ProviderId::RUNWAY,
        model: "gen4_turbo".into(),
        request: request(user),
        metadata: json!({ "scene": 7 }),
        created_by_token: token,
        batch_id: None,
        idempotency: idem.map(|(key, fingerprint)| Idempotency {
            key: key.into(),
            request_sha256: [fingerprint; 32],
        }),
        usage: Default::default(),
    }
}

pub(crate) async fn create(store: &Store, new: &NewJob) -> Job {
    match store.jobs().insert(new).await.unwrap() {
        Inserted::Created(job) => job,
        other => panic!("expected a new job, got {other:?}"),
    }
}

#[tokio::test]
async fn a_new_job_is_queued_unenqueued_with_its_request_and_history() {
    for b in backends().await {
        let user = Uuid::new_v4();
        let job = create(&b.store, &new_job(user, None, None)).await;
        assert_eq!(job.status, JobStatus::Queued, "{}", b.name);
        assert_eq!(job.attempts, 0);
        assert_eq!(job.provider(), Some(ProviderId::RUNWAY));
        assert_eq!(job.request, request(user));
        assert_eq!(job.metadata, json!({ "scene": 7 }));
        assert!(job.enqueued_at.is_none() && job.provider_job_id.is_none());
        assert_eq!(
            b.store.jobs().get(job.id).await.unwrap().as_ref(),
            Some(&job),
            "{}",
            b.name
        );
        assert_eq!(b.store.jobs().get(Uuid::new_v4()).await.unwrap(), None);
        let events = b.store.jobs().events(job.id).await.unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(
            (events[0].status.as_str(), events[0].message.as_str()),
            ("queued", "accepted")
        );
    }
}

#[tokio::test]
async fn idempotency_keys_replay_per_token_and_conflict_on_another_request() {
    for b in backends().await {
        let (user, token, other_token) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let first = create(&b.store, &new_job(user, Some(token), Some(("k-1", 1)))).await;
        match b
            .store
            .jobs()
            .insert(&new_job(user, Some(token), Some(("k-1", 1))))
            .await
            .unwrap()
        {
            Inserted::Replayed(job) => assert_eq!(job.id, first.id, "{}", b.name),
            other => panic!("{}: {other:?}", b.name),
        }
        match b
            .store
            .jobs()
            .insert(&new_job(user, Some(token), Some(("k-1", 2))))
            .await
            .unwrap()
        {
            Inserted::Conflict(job) => assert_eq!(job.id, first.id),
            other => panic!("{}: {other:?}", b.name),
        }
        // Keys are scoped to the token that used them.
        let other = create(
            &b.store,
            &new_job(user, Some(other_token), Some(("k-1", 2))),
        )
        .await;
        assert_ne!(other.id, first.id);
        // Without a key every request is a new job.
        let a = create(&b.store, &new_job(user, Some(token), None)).await;
        let c = create(&b.store, &new_job(user, Some(token), None)).await;
        assert_ne!(a.id, c.id);
        let too_long = "k".repeat(256);
        assert!(
            b.store
                .jobs()
                .insert(&new_job(user, Some(token), Some((&too_long, 1))))
                .await
                .is_err()
        );
    }
}

#[tokio::test]
async fn concurrent_requests_with_one_key_make_one_job() {
    for b in backends().await {
        let (user, token) = (Uuid::new_v4(), Uuid::new_v4());
        let new = new_job(user, Some(token), Some(("race", 9)));
        let attempts = (0..8).map(|_| {
            let store = b.store.clone();
            let new = new.clone();
            tokio::spawn(async move { store.jobs().insert(&new).await.unwrap() })
        });
        let mut created = 0;
        let mut ids = std::collections::HashSet::new();
        for outcome in futures_join(attempts).await {
            match outcome {
                Inserted::Created(job) => {
                    created += 1;
                    ids.insert(job.id);
                }
                Inserted::Replayed(job) => {
                    ids.insert(job.id);
                }
                Inserted::Conflict(job) => panic!("{}: same body is no conflict: {job:?}", b.name),
            }
        }
        assert_eq!((created, ids.len()), (1, 1), "{}", b.name);
    }
}

async fn futures_join<T: Send + 'static>(
    handles: impl Iterator<Item = tokio::task::JoinHandle<T>>,
) -> Vec<T> {
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test]
async fn the_submit_path_is_compare_and_set() {
    for b in backends().await {
        let jobs = b.store.jobs();
        let job = create(&b.store, &new_job(Uuid::new_v4(), None, None)).await;
        assert!(jobs.set_throttled(job.id).await.unwrap());
        assert!(
            !jobs.set_throttled(job.id).await.unwrap(),
            "{}: already throttled",
            b.name
        );
        assert!(jobs.begin_submit(job.id).await.unwrap());
        assert!(
            !jobs.begin_submit(job.id).await.unwrap(),
            "{}: one submit out at a time",
            b.name
        );
        let marked = jobs.get(job.id).await.unwrap().unwrap();
        assert!(marked.submit_started_at.is_some());

        // A definite refusal clears the mark and says why the job waits.
        assert!(jobs.submit_refused(job.id, 0, true, "429").await.unwrap());
        let waiting = jobs.get(job.id).await.unwrap().unwrap();
        assert_eq!(
            (waiting.status, waiting.submit_started_at),
            (JobStatus::Throttled, None)
        );
        assert!(jobs.begin_submit(job.id).await.unwrap());

        assert!(jobs.submitted(job.id, "task-1", 1).await.unwrap());
        assert!(
            !jobs.submitted(job.id, "task-2", 1).await.unwrap(),
            "{}: the first id stays",
            b.name
        );
        assert!(
            !jobs.begin_submit(job.id).await.unwrap(),
            "{}: never a second submit",
            b.name
        );
        let running = jobs.get(job.id).await.unwrap().unwrap();
        assert_eq!(running.status, JobStatus::Running);
        assert_eq!(running.provider_job_id.as_deref(), Some("task-1"));
        assert_eq!(running.attempts, 1);
        assert!(running.started_at.is_some() && running.submit_started_at.is_none());

        assert!(jobs.set_progress(job.id, 0.4).await.unwrap());
        assert_eq!(jobs.get(job.id).await.unwrap().unwrap().progress, Some(0.4));
        assert!(jobs.set_progress(job.id, 7.0).await.unwrap());
        assert_eq!(
            jobs.get(job.id).await.unwrap().unwrap().progress,
            Some(1.0),
            "clamped"
        );

        let result = JobResult {
            provider_urls: Vec::new(),
            bytes: 3,
            content_type: "video/mp4".to_owned(),
            note: None,
            provider_usage: byok_core::ProviderUsage {
                compute_ms: Some(41_200),
            },
        };
        assert!(jobs.succeed(job.id, &result).await.unwrap());
        let record = ErrorRecord {
            code: ErrorCode::Timeout,
            message: "late".into(),
            retryable: false,
        };
        assert!(
            !jobs.fail(job.id, &record, 2).await.unwrap(),
            "{}: final stays final",
            b.name
        );
        assert!(!jobs.set_progress(job.id, 0.1).await.unwrap());
        let done = jobs.get(job.id).await.unwrap().unwrap();
        assert_eq!(done.status, JobStatus::Succeeded);
        assert_eq!(done.result.as_ref(), Some(&result));
        assert!(done.finished_at.is_some() && done.error.is_none());
        let statuses: Vec<String> = jobs
            .events(job.id)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.status)
            .collect();
        assert_eq!(
            statuses,
            ["queued", "throttled", "throttled", "running", "succeeded"],
            "{}",
            b.name
        );
    }
}

#[tokio::test]
async fn failures_resubmits_and_cancels() {
    for b in backends().await {
        let jobs = b.store.jobs();
        // A remote failure for a passing reason: back to queued, provider job forgotten.
        let job = create(&b.store, &new_job(Uuid::new_v4(), None, None)).await;
        assert!(jobs.begin_submit(job.id).await.unwrap());
        assert!(jobs.submitted(job.id, "op-1", 1).await.unwrap());
        assert!(jobs.resubmit(job.id, 1, "INTERNAL").await.unwrap());
        let again = jobs.get(job.id).await.unwrap().unwrap();
        assert_eq!(
            (again.status, again.provider_job_id.as_deref()),
            (JobStatus::Queued, None)
        );
        assert!(
            !jobs.resubmit(job.id, 1, "twice").await.unwrap(),
            "{}: only a running job",
            b.name
        );

        let record = ErrorRecord {
            code: ErrorCode::ContentRejected,
            message: "moderated".into(),
            retryable: false,
        };
        assert!(jobs.fail(job.id, &record, 3).await.unwrap());
        let failed = jobs.get(job.id).await.unwrap().unwrap();
        assert_eq!((failed.status, failed.attempts), (JobStatus::Failed, 3));
        assert_eq!(failed.error, Some(record));
        assert!(
            matches!(jobs.cancel(job.id, "by the producer").await.unwrap(), Cancelled::AlreadyFinal(j) if j.status == JobStatus::Failed)
        );
        assert_eq!(
            jobs.cancel(Uuid::new_v4(), "x").await.unwrap(),
            Cancelled::NotFound
        );

        // Cancelled while a submit is out: the provider's id is still recorded
        // (so the cancel can reach the provider), the status stays cancelled.
        let job = create(&b.store, &new_job(Uuid::new_v4(), None, None)).await;
        assert!(jobs.begin_submit(job.id).await.unwrap());
        let Cancelled::Now(cancelled) = jobs.cancel(job.id, "by the producer").await.unwrap()
        else {
            panic!("{}: a live job cancels", b.name)
        };
        assert_eq!(cancelled.status, JobStatus::Cancelled);
        assert_eq!(
            cancelled.error.as_ref().map(|e| e.code),
            Some(ErrorCode::Cancelled)
        );
        assert!(jobs.submitted(job.id, "late-task", 1).await.unwrap());
        let after = jobs.get(job.id).await.unwrap().unwrap();
        assert_eq!(
            (after.status, after.provider_job_id.as_deref()),
            (JobStatus::Cancelled, Some("late-task"))
        );
        assert!(after.cancel_sent_at.is_none());
        assert!(jobs.mark_cancel_sent(job.id).await.unwrap());
        assert!(
            !jobs.mark_cancel_sent(job.id).await.unwrap(),
            "{}: sent once",
            b.name
        );
        // A cancel the provider did not take gives its claim back.
        assert!(jobs.release_cancel_claim(job.id).await.unwrap());
        assert!(!jobs.release_cancel_claim(job.id).await.unwrap());
        assert!(jobs.mark_cancel_sent(job.id).await.unwrap());
    }
}

#[tokio::test]
async fn a_users_jobs_page_newest_first_with_a_status_filter() {
    for b in backends().await {
        let user = Uuid::new_v4();
        let mut ids = Vec::new();
        for _ in 0..5 {
            ids.push(create(&b.store, &new_job(user, None, None)).await.id);
        }
        create(&b.store, &new_job(Uuid::new_v4(), None, None)).await;
        let record = ErrorRecord {
            code: ErrorCode::Internal,
            message: "x".into(),
            retryable: false,
        };
        b.store.jobs().fail(ids[1], &record, 1).await.unwrap();

        let page1 = b
            .store
            .jobs()
            .list_for_user(owner(user), None, None, 2)
            .await
            .unwrap();
        let page1_ids: Vec<Uuid> = page1.iter().map(|j| j.id).collect();
        assert_eq!(page1_ids, [ids[4], ids[3]], "{}", b.name);
        let page2 = b
            .store
            .jobs()
            .list_for_user(owner(user), None, Some(ids[3]), 10)
            .await
            .unwrap();
        let page2_ids: Vec<Uuid> = page2.iter().map(|j| j.id).collect();
        assert_eq!(page2_ids, [ids[2], ids[1], ids[0]], "{}", b.name);
        let failed = b
            .store
            .jobs()
            .list_for_user(owner(user), Some(JobStatus::Failed), None, 10)
            .await
            .unwrap();
        assert_eq!(failed.iter().map(|j| j.id).collect::<Vec<_>>(), [ids[1]]);
        let counts = b.store.jobs().count_by_status().await.unwrap();
        assert!(
            counts.contains(&(JobStatus::Failed, 1)) && counts.contains(&(JobStatus::Queued, 5)),
            "{counts:?}"
        );
    }
}

#[tokio::test]
async fn the_sweeper_sees_only_old_queued_jobs_that_never_reached_the_queue() {
    for b in backends().await {
        let jobs = b.store.jobs();
        let stranded = create(&b.store, &new_job(Uuid::new_v4(), None, None)).await;
        let queued = create(&b.store, &new_job(Uuid::new_v4(), None, None)).await;
        assert!(jobs.mark_enqueued(queued.id).await.unwrap());
        assert!(!jobs.mark_enqueued(queued.id).await.unwrap());
        let cancelled = create(&b.store, &new_job(Uuid::new_v4(), None, None)).await;
        jobs.cancel(cancelled.id, "x").await.unwrap();

        let later = chrono::Utc::now() + chrono::Duration::seconds(1);
        let found = jobs.unenqueued(later, 100).await.unwrap();
        assert!(found.contains(&stranded.id), "{}", b.name);
        assert!(
            !found.contains(&queued.id) && !found.contains(&cancelled.id),
            "{}",
            b.name
        );
        let earlier = stranded.created_at - chrono::Duration::seconds(1);
        assert!(
            !jobs
                .unenqueued(earlier, 100)
                .await
                .unwrap()
                .contains(&stranded.id),
            "too young"
        );
    }
}

#[tokio::test]
async fn marking_many_jobs_enqueued_marks_each_once_and_only_those() {
    for b in backends().await {
        let jobs = b.store.jobs();
        let mut marked = Vec::new();
        for _ in 0..3 {
            marked.push(
                create(&b.store, &new_job(Uuid::new_v4(), None, None))
                    .await
                    .id,
            );
        }
        let untouched = create(&b.store, &new_job(Uuid::new_v4(), None, None)).await;
        assert!(jobs.mark_enqueued(marked[0]).await.unwrap());
        let before = jobs.get(marked[0]).await.unwrap().unwrap().enqueued_at;

        // One already marked, one unknown id, one repeated: two newly marked.
        let mut ids = marked.clone();
        ids.push(Uuid::new_v4());
        ids.push(marked[1]);
        assert_eq!(
            jobs.mark_enqueued_many(&ids).await.unwrap(),
            2,
            "{}",
            b.name
        );
        assert_eq!(
            jobs.mark_enqueued_many(&ids).await.unwrap(),
            0,
            "{}",
            b.name
        );
        assert_eq!(jobs.mark_enqueued_many(&[]).await.unwrap(), 0);

        for id in &marked {
            assert!(jobs.get(*id).await.unwrap().unwrap().enqueued_at.is_some());
        }
        assert_eq!(
            jobs.get(marked[0]).await.unwrap().unwrap().enqueued_at,
            before,
            "an earlier mark stays"
        );
        let later = chrono::Utc::now() + chrono::Duration::seconds(1);
        let stranded = jobs.unenqueued(later, 100).await.unwrap();
        assert!(stranded.contains(&untouched.id), "{}", b.name);
        assert!(!marked.iter().any(|id| stranded.contains(id)), "{}", b.name);
    }
}

#[tokio::test]
async fn a_batch_insert_answers_each_job_as_single_inserts_would() {
    for b in backends().await {
        let jobs = b.store.jobs();
        let (user, token) = (Uuid::new_v4(), Uuid::new_v4());
        let earlier = create(&b.store, &new_job(user, Some(token), Some(("before", 1)))).await;
        let batch = [
            new_job(user, Some(token), None),
            new_job(user, Some(token), Some(("before", 1))), // replays `earlier`
            new_job(user, Some(token), Some(("before", 2))), // conflicts with it
            new_job(user, Some(token), Some(("fresh", 3))),
            new_job(user, Some(token), Some(("fresh", 3))), // replays the row above
            new_job(user, Some(token), Some(("fresh", 4))), // conflicts with it
            new_job(user, Some(Uuid::new_v4()), Some(("fresh", 3))), // another token's key
            new_job(user, None, None),
        ];
        let answers: Vec<Inserted> = jobs
            .insert_many(&batch)
            .await
            .unwrap()
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(answers.len(), batch.len(), "{}", b.name);
        let created = |i: usize| match &answers[i] {
            Inserted::Created(job) => job.clone(),
            other => panic!("{}: job {i}: expected created, got {other:?}", b.name),
        };
        let (first, fresh, other_token, last) = (created(0), created(3), created(6), created(7));
        assert!(matches!(&answers[1], Inserted::Replayed(j) if j.id == earlier.id));
        assert!(matches!(&answers[2], Inserted::Conflict(j) if j.id == earlier.id));
        assert!(matches!(&answers[4], Inserted::Replayed(j) if j.id == fresh.id));
        assert!(matches!(&answers[5], Inserted::Conflict(j) if j.id == fresh.id));
        assert_ne!(other_token.id, fresh.id);

        // Each created job is stored whole, with its history, as `insert` does.
        for job in [&first, &fresh, &other_token, &last] {
            assert_eq!(
                jobs.get(job.id).await.unwrap().as_ref(),
                Some(job),
                "{}",
                b.name
            );
            assert_eq!(job.status, JobStatus::Queued);
            assert_eq!(job.metadata, json!({ "scene": 7 }));
            assert!(job.enqueued_at.is_none());
            let events = jobs.events(job.id).await.unwrap();
            assert_eq!(events.len(), 1, "{}", b.name);
            assert_eq!(
                (events[0].status.as_str(), events[0].message.as_str()),
                ("queued", "accepted")
            );
        }
        assert_eq!(fresh.idempotency_key.as_deref(), Some("fresh"));
        assert_eq!(fresh.request_sha256.as_deref(), Some(&[3u8; 32][..]));
        assert_eq!(first.created_by_token, Some(token));
        assert_eq!(last.created_by_token, None);
        assert_eq!(
            jobs.list_for_user(owner(user), None, None, 100)
                .await
                .unwrap()
                .len(),
            5
        );
        assert!(jobs.insert_many(&[]).await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn a_refused_batch_stores_nothing() {
    for b in backends().await {
        let user = Uuid::new_v4();
        let mut bad = new_job(user, Some(Uuid::new_v4()), Some(("k", 1)));
        bad.idempotency.as_mut().unwrap().key = "x".repeat(256);
        assert!(matches!(
            b.store
                .jobs()
                .insert_many(&[new_job(user, None, None), bad])
                .await,
            Err(StoreError::Invalid(_))
        ));
        // A row the database refuses (PostgreSQL stores no U+0000 in JSONB).
        let mut nul = new_job(user, None, None);
        nul.metadata = json!({ "note": "a\u{0}b" });
        if b.name == "postgres" {
            assert!(
                b.store
                    .jobs()
                    .insert_many(&[new_job(user, None, None), nul])
                    .await
                    .is_err()
            );
        }
        assert!(
            b.store
                .jobs()
                .list_for_user(owner(user), None, None, 10)
                .await
                .unwrap()
                .is_empty(),
            "{}",
            b.name
        );
    }
}

/// Sets a JSON column of a job row to `value` behind the store's back
/// (`column` is one of this file's literals).
async fn set_json_column(b: &Backend, id: Uuid, column: &str, value: &str) {
    let changed = if b.name == "sqlite" {
        let pool = sqlx::SqlitePool::connect(&b.url).await.unwrap();
        let sql = format!("UPDATE generation_jobs SET {column} = $1 WHERE id = $2");
        let changed = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(value)
            .bind(id.hyphenated().to_string())
            .execute(&pool)
            .await
            .unwrap()
            .rows_affected();
        pool.close().await;
        changed
    } else {
        let pool = sqlx::PgPool::connect(&b.url).await.unwrap();
        let sql = format!("UPDATE generation_jobs SET {column} = $1::jsonb WHERE id = $2");
        let changed = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(value)
            .bind(id)
            .execute(&pool)
            .await
            .unwrap()
            .rows_affected();
        pool.close().await;
        changed
    };
    assert_eq!(changed, 1);
}

#[tokio::test]
async fn a_request_or_result_that_does_not_fit_its_type_makes_the_row_malformed() {
    for b in backends().await {
        let user = Uuid::new_v4();
        let jobs = b.store.jobs();
        let job = create(&b.store, &new_job(user, None, None)).await;

        // A result written before `JobResult` existed, with its `video_url`, reads.
        set_json_column(
            &b,
            job.id,
            "result",
            r#"{"video_url":"/v1/jobs/x/video","provider_urls":[],"bytes":7,"content_type":"video/mp4","note":null}"#,
        )
        .await;
        let read = jobs.get(job.id).await.unwrap().unwrap();
        assert_eq!(
            read.result.map(|r| (r.bytes, r.content_type)),
            Some((7, "video/mp4".to_owned())),
            "{}",
            b.name
        );

        set_json_column(&b, job.id, "result", r#"{"bytes":"many"}"#).await;
        assert!(
            matches!(
                jobs.get(job.id).await,
                Err(StoreError::Malformed("generation_jobs.result"))
            ),
            "{}",
            b.name
        );

        let job = create(&b.store, &new_job(user, None, None)).await;
        set_json_column(&b, job.id, "request", r#"{"prompt":5}"#).await;
        for read in [
            jobs.get(job.id).await,
            jobs.list_for_user(owner(user), None, None, 10)
                .await
                .map(|mut page| page.pop()),
        ] {
            assert!(
                matches!(read, Err(StoreError::Malformed("generation_jobs.request"))),
                "{}: {read:?}",
                b.name
            );
        }
        // The row can still be failed without reading it.
        let error = ErrorRecord {
            code: ErrorCode::Internal,
            message: "malformed".into(),
            retryable: false,
        };
        assert!(jobs.fail(job.id, &error, 1).await.unwrap(), "{}", b.name);
    }
}
