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
async fn a_new_job_is_queued_awaiting_its_push_with_its_request_and_history() {
    for b in backends().await {
        let user = Uuid::new_v4();
        let job = create(&b.store, &new_job(user, None, None)).await;
        assert_eq!(job.status, JobStatus::Queued, "{}", b.name);
        assert_eq!(job.attempts, 0);
        assert_eq!(job.provider(), Some(ProviderId::RUNWAY));
        assert_eq!(job.request, request(user));
        assert_eq!(job.metadata, json!({ "scene": 7 }));
        // Accepted for the queue as it is stored; the push itself is not confirmed yet.
        assert_eq!(job.enqueued_at, Some(job.created_at), "{}", b.name);
        assert!(job.provider_job_id.is_none());
        assert!(b.store.jobs().awaiting_push(job.id).await.unwrap());
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
async fn the_sweeper_sees_only_old_queued_jobs_whose_push_was_never_confirmed() {
    for b in backends().await {
        let jobs = b.store.jobs();
        let stranded = create(&b.store, &new_job(Uuid::new_v4(), None, None)).await;
        assert!(jobs.awaiting_push(stranded.id).await.unwrap(), "{}", b.name);
        let queued = create(&b.store, &new_job(Uuid::new_v4(), None, None)).await;
        assert!(jobs.mark_enqueued(queued.id).await.unwrap());
        assert!(!jobs.mark_enqueued(queued.id).await.unwrap());
        assert!(!jobs.awaiting_push(queued.id).await.unwrap());
        let cancelled = create(&b.store, &new_job(Uuid::new_v4(), None, None)).await;
        jobs.cancel(cancelled.id, "x").await.unwrap();
        // A job the previous build stored and never marked: no waiting entry, its
        // `enqueued_at` unset. An upgrade must not strand it.
        let legacy = create(&b.store, &new_job(Uuid::new_v4(), None, None)).await;
        as_stored_unmarked_by_the_previous_build(&b, legacy.id).await;
        assert!(jobs.awaiting_push(legacy.id).await.unwrap(), "{}", b.name);

        let later = chrono::Utc::now() + chrono::Duration::seconds(1);
        let found = jobs.unenqueued(later, 100).await.unwrap();
        assert!(
            found.contains(&stranded.id) && found.contains(&legacy.id),
            "{}: {found:?}",
            b.name
        );
        assert!(
            !found.contains(&queued.id) && !found.contains(&cancelled.id),
            "{}",
            b.name
        );
        assert_eq!(found.len(), 2, "{}", b.name);
        assert_eq!(
            jobs.unenqueued(later, 1).await.unwrap().len(),
            1,
            "the limit"
        );
        let earlier = stranded.created_at - chrono::Duration::seconds(1);
        assert!(
            jobs.unenqueued(earlier, 100).await.unwrap().is_empty(),
            "too young"
        );

        // The cancelled job needs no push: its entry is dropped, the waiting ones stay.
        assert!(!jobs.awaiting_push(cancelled.id).await.unwrap());
        assert_eq!(
            jobs.forget_unpushed_not_queued(earlier).await.unwrap(),
            0,
            "too young"
        );
        assert_eq!(
            jobs.forget_unpushed_not_queued(later).await.unwrap(),
            1,
            "{}",
            b.name
        );
        assert!(jobs.awaiting_push(stranded.id).await.unwrap());

        // The sweeper's mark confirms both kinds.
        for id in [stranded.id, legacy.id] {
            assert!(jobs.mark_enqueued(id).await.unwrap(), "{}", b.name);
            assert!(!jobs.awaiting_push(id).await.unwrap());
        }
        assert!(
            jobs.get(legacy.id)
                .await
                .unwrap()
                .unwrap()
                .enqueued_at
                .is_some()
        );
        assert!(jobs.unenqueued(later, 100).await.unwrap().is_empty());
    }
}

/// Makes job `id` look as the build before `unpushed_jobs` left a job it stored and never
/// marked: `enqueued_at` unset and no waiting entry.
async fn as_stored_unmarked_by_the_previous_build(b: &Backend, id: Uuid) {
    for sql in [
        "UPDATE generation_jobs SET enqueued_at = NULL WHERE id = $1",
        "DELETE FROM unpushed_jobs WHERE job_id = $1",
    ] {
        assert_eq!(behind_the_store(b, sql, None, id).await, 1, "{sql}");
    }
}

/// Runs `sql` on the backend's database behind the store's back, binding `value` (when
/// given) and then job `id`; returns how many rows it changed.
async fn behind_the_store(b: &Backend, sql: &str, value: Option<&str>, id: Uuid) -> u64 {
    // The same statement on either pool type; only the id's encoding differs.
    macro_rules! run {
        ($pool:expr, $id:expr) => {{
            let pool = $pool;
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()));
            if let Some(value) = value {
                query = query.bind(value.to_owned());
            }
            let changed = query.bind($id).execute(&pool).await.unwrap();
            pool.close().await;
            changed.rows_affected()
        }};
    }
    if b.name == "sqlite" {
        run!(
            sqlx::SqlitePool::connect(&b.url).await.unwrap(),
            id.hyphenated().to_string()
        )
    } else {
        run!(sqlx::PgPool::connect(&b.url).await.unwrap(), id)
    }
}

/// Sets a JSON column of a job row to `value` behind the store's back
/// (`column` is one of this file's literals).
async fn set_json_column(b: &Backend, id: Uuid, column: &str, value: &str) {
    let sql = if b.name == "sqlite" {
        format!("UPDATE generation_jobs SET {column} = $1 WHERE id = $2")
    } else {
        format!("UPDATE generation_jobs SET {column} = $1::jsonb WHERE id = $2")
    };
    assert_eq!(behind_the_store(b, &sql, Some(value), id).await, 1);
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
