//! Batches: stored with their jobs all or nothing, idempotent per token and key, paged,
//! cancelled job by job, and completed exactly once, on both databases.

use std::sync::Arc;

use byok_core::{
    BatchCounts, BatchStatus, BatchView, DEFAULT_PROJECT_ID, ErrorCode, ErrorRecord, EventType,
    GenerationRequest, JobResult, JobStatus, ProviderId,
};
use byok_store::{
    Batch, BatchInserted, Idempotency, Job, NewBatch, NewEndpoint, NewJob, Store, StoreError,
};
use serde_json::json;
use tokio::sync::Barrier;
use uuid::Uuid;

use crate::{Backend, backends};

fn new_job(user: Uuid, prompt: &str) -> NewJob {
    let request = GenerationRequest {
        prompt: Some(prompt.into()),
        ..GenerationRequest::new(user, ProviderId::RUNWAY, "gen4_turbo")
    };
    NewJob {
        project_id: DEFAULT_PROJECT_ID,
        user_id: user,
        provider: ProviderId::RUNWAY,
        model: "gen4_turbo".into(),
        request,
        metadata: json!({ "prompt": prompt }),
        created_by_token: None,
        idempotency: None,
        batch_id: None,
        usage: Default::default(),
    }
}

pub(crate) fn new_batch(n: usize, token: Option<Uuid>, idem: Option<(&str, u8)>) -> NewBatch {
    let user = Uuid::new_v4();
    NewBatch {
        project_id: DEFAULT_PROJECT_ID,
        created_by_token: token,
        idempotency: idem.map(|(key, fingerprint)| Idempotency {
            key: key.into(),
            request_sha256: [fingerprint; 32],
        }),
        metadata: json!({ "campaign": "spring" }),
        jobs: (0..n)
            .map(|i| new_job(user, &format!("shot {i}")))
            .collect(),
    }
}

pub(crate) async fn create(store: &Store, new: NewBatch) -> (Batch, Vec<Job>) {
    match store.batches().create(new).await.unwrap() {
        BatchInserted::Created(batch, jobs) => (batch, jobs),
        other => panic!("expected a new batch, got {other:?}"),
    }
}

pub(crate) fn result() -> JobResult {
    serde_json::from_value(json!({ "bytes": 10, "content_type": "video/mp4" })).unwrap()
}

fn failure() -> ErrorRecord {
    ErrorRecord {
        code: ErrorCode::ContentRejected,
        message: "no".into(),
        retryable: false,
    }
}

/// Runs `sql` (a count) on the backend's database behind the store's back.
async fn count(b: &Backend, sql: &'static str, bind: Option<Uuid>) -> i64 {
    if b.name == "sqlite" {
        let pool = sqlx::SqlitePool::connect(&b.url).await.unwrap();
        let mut query = sqlx::query_scalar::<_, i64>(sql);
        if let Some(id) = bind {
            query = query.bind(id.hyphenated().to_string());
        }
        let n = query.fetch_one(&pool).await.unwrap();
        pool.close().await;
        n
    } else {
        let pool = sqlx::PgPool::connect(&b.url).await.unwrap();
        let mut query = sqlx::query_scalar::<_, i64>(sql);
        if let Some(id) = bind {
            query = query.bind(id);
        }
        let n = query.fetch_one(&pool).await.unwrap();
        pool.close().await;
        n
    }
}

/// Runs `sql` (DDL) on the backend's database behind the store's back.
async fn execute(b: &Backend, sql: &'static str) {
    if b.name == "sqlite" {
        let pool = sqlx::SqlitePool::connect(&b.url).await.unwrap();
        sqlx::raw_sql(sql).execute(&pool).await.unwrap();
        pool.close().await;
    } else {
        let pool = sqlx::PgPool::connect(&b.url).await.unwrap();
        sqlx::raw_sql(sql).execute(&pool).await.unwrap();
        pool.close().await;
    }
}

pub(crate) async fn endpoint(store: &Store, events: &[EventType]) -> Uuid {
    let id = Uuid::now_v7();
    store
        .webhooks()
        .create_endpoint(&NewEndpoint {
            id,
            project_id: DEFAULT_PROJECT_ID,
            url: "https://hooks.example.com/byok".into(),
            description: "batches".into(),
            events: events.to_vec(),
            sealed_secret: "v2:k:sealed".into(),
        })
        .await
        .unwrap();
    id
}

/// How many `batch.completed` events were written about `batch`.
pub(crate) async fn completions(b: &Backend, batch: Uuid) -> i64 {
    count(
        b,
        "SELECT count(*) FROM webhook_events WHERE type = 'batch.completed' AND subject_id = $1",
        Some(batch),
    )
    .await
}

#[tokio::test]
async fn a_batch_is_stored_with_all_its_jobs_in_order() {
    for b in backends().await {
        let token = Uuid::new_v4();
        let (batch, jobs) = create(&b.store, new_batch(3, Some(token), None)).await;
        assert_eq!((batch.total, batch.remaining), (3, 3), "{}", b.name);
        assert_eq!(batch.counts.queued, 3);
        assert_eq!(batch.metadata, json!({ "campaign": "spring" }));
        assert_eq!(batch.created_by_token, Some(token));
        assert!(!batch.is_completed());
        assert_eq!(jobs.len(), 3);
        for (i, job) in jobs.iter().enumerate() {
            assert_eq!(job.batch_id, Some(batch.id), "{}", b.name);
            assert_eq!(job.status, JobStatus::Queued);
            assert_eq!(job.request.prompt.as_deref(), Some(&*format!("shot {i}")));
            assert!(
                b.store.jobs().awaiting_push(job.id).await.unwrap(),
                "the queue push confirms it"
            );
            assert_eq!(job.created_by_token, None);
        }
        // Read back the same, with the counts.
        let read = b
            .store
            .batches()
            .get(DEFAULT_PROJECT_ID, batch.id)
            .await
            .unwrap();
        assert_eq!(read.as_ref(), Some(&batch), "{}", b.name);
        assert_eq!(
            b.store.batches().counts(batch.id).await.unwrap(),
            batch.counts
        );
        let stored = b.store.jobs().get(jobs[1].id).await.unwrap().unwrap();
        assert_eq!(stored.batch_id, Some(batch.id));
        // Another project's batch is no batch; `get_by_id` (the deliveries') finds it.
        let other = b.store.projects().create("other").await.unwrap().id;
        assert_eq!(b.store.batches().get(other, batch.id).await.unwrap(), None);
        assert!(
            b.store
                .batches()
                .get_by_id(batch.id)
                .await
                .unwrap()
                .is_some()
        );
        assert_eq!(
            b.store.batches().get_by_id(Uuid::now_v7()).await.unwrap(),
            None
        );
        // The view: running, nothing final yet.
        let view = BatchView::from(batch);
        assert_eq!(view.status, BatchStatus::Running);
        assert_eq!(view.progress, 0.0);
    }
}

#[tokio::test]
async fn a_batch_whose_job_the_database_refuses_stores_nothing() {
    for b in backends().await {
        // The last job of the batch is refused by the database, after the batch row and
        // the other jobs were written in the same transaction.
        let refuse = if b.name == "sqlite" {
            "CREATE TRIGGER refuse_job BEFORE INSERT ON generation_jobs \
             WHEN NEW.model = 'refused' BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;"
        } else {
            "CREATE FUNCTION refuse_job() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN IF NEW.model = 'refused' THEN RAISE EXCEPTION 'refused by the test'; END IF; \
             RETURN NEW; END $$; \
             CREATE TRIGGER refuse_job BEFORE INSERT ON generation_jobs \
             FOR EACH ROW EXECUTE FUNCTION refuse_job();"
        };
        execute(&b, refuse).await;
        let mut new = new_batch(5, Some(Uuid::new_v4()), Some(("k", 1)));
        new.jobs[4].model = "refused".into();
        let err = b.store.batches().create(new).await.unwrap_err();
        assert!(matches!(err, StoreError::Database(_)), "{}: {err}", b.name);
        assert_eq!(
            count(&b, "SELECT count(*) FROM batches", None).await,
            0,
            "{}",
            b.name
        );
        assert_eq!(
            count(&b, "SELECT count(*) FROM generation_jobs", None).await,
            0
        );
        assert_eq!(
            count(&b, "SELECT count(*) FROM generation_job_events", None).await,
            0
        );

        // Refused before the database: no job, too many keys, a bad key.
        let empty = new_batch(0, None, None);
        assert!(matches!(
            b.store.batches().create(empty).await,
            Err(StoreError::Invalid(_))
        ));
        let mut keyed = new_batch(2, None, None);
        keyed.jobs[1].idempotency = Some(Idempotency {
            key: "own".into(),
            request_sha256: [0; 32],
        });
        assert!(matches!(
            b.store.batches().create(keyed).await,
            Err(StoreError::Invalid(_))
        ));
        let long_key = "x".repeat(256);
        let long = new_batch(1, Some(Uuid::new_v4()), Some((&long_key, 1)));
        assert!(matches!(
            b.store.batches().create(long).await,
            Err(StoreError::Invalid(_))
        ));
        assert_eq!(count(&b, "SELECT count(*) FROM batches", None).await, 0);

        // The same batch without the refused job is stored whole.
        let (batch, jobs) = create(&b.store, new_batch(5, None, None)).await;
        assert_eq!(jobs.len(), 5);
        assert_eq!(
            count(
                &b,
                "SELECT count(*) FROM generation_jobs WHERE batch_id = $1",
                Some(batch.id)
            )
            .await,
            5
        );
    }
}

#[tokio::test]
async fn an_idempotency_key_replays_the_batch_or_conflicts_and_writes_nothing() {
    for b in backends().await {
        let token = Uuid::new_v4();
        let (first, _) = create(&b.store, new_batch(2, Some(token), Some(("key-1", 1)))).await;
        let replay = b
            .store
            .batches()
            .create(new_batch(2, Some(token), Some(("key-1", 1))))
            .await
            .unwrap();
        assert_eq!(replay, BatchInserted::Replayed(first.clone()), "{}", b.name);
        match b
            .store
            .batches()
            .create(new_batch(3, Some(token), Some(("key-1", 2))))
            .await
            .unwrap()
        {
            BatchInserted::Conflict(held) => assert_eq!(held.id, first.id),
            other => panic!("{}: expected a conflict, got {other:?}", b.name),
        }
        assert_eq!(count(&b, "SELECT count(*) FROM batches", None).await, 1);
        assert_eq!(
            count(&b, "SELECT count(*) FROM generation_jobs", None).await,
            2
        );
        // The key is the token's: another token's same key is another batch.
        let (other, _) = create(
            &b.store,
            new_batch(1, Some(Uuid::new_v4()), Some(("key-1", 1))),
        )
        .await;
        assert_ne!(other.id, first.id);
        // A replay of a batch that has moved on shows where it stands now.
        let jobs = b
            .store
            .batches()
            .jobs(DEFAULT_PROJECT_ID, first.id, None, 10)
            .await
            .unwrap();
        assert!(b.store.jobs().succeed(jobs[0].id, &result()).await.unwrap());
        match b
            .store
            .batches()
            .create(new_batch(2, Some(token), Some(("key-1", 1))))
            .await
            .unwrap()
        {
            BatchInserted::Replayed(now) => {
                assert_eq!((now.remaining, now.counts.succeeded), (1, 1), "{}", b.name);
            }
            other => panic!("{}: expected a replay, got {other:?}", b.name),
        }
    }
}

#[tokio::test]
async fn concurrent_creates_with_one_key_make_one_batch() {
    for b in backends().await {
        let store = Arc::new(b.store.clone());
        let token = Uuid::new_v4();
        let barrier = Arc::new(Barrier::new(4));
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let (store, barrier) = (Arc::clone(&store), Arc::clone(&barrier));
                tokio::spawn(async move {
                    barrier.wait().await;
                    store
                        .batches()
                        .create(new_batch(3, Some(token), Some(("raced", 9))))
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut created = 0;
        let mut ids = Vec::new();
        for task in tasks {
            match task.await.unwrap() {
                BatchInserted::Created(batch, _) => {
                    created += 1;
                    ids.push(batch.id);
                }
                BatchInserted::Replayed(batch) => ids.push(batch.id),
                BatchInserted::Conflict(batch) => panic!("{}: conflict {batch:?}", b.name),
            }
        }
        assert_eq!(created, 1, "{}", b.name);
        ids.dedup();
        assert_eq!(ids.len(), 1, "{}: every answer names the one batch", b.name);
        assert_eq!(
            count(&b, "SELECT count(*) FROM generation_jobs", None).await,
            3
        );
    }
}

#[tokio::test]
async fn jobs_page_in_creation_order_within_the_project() {
    for b in backends().await {
        let (batch, jobs) = create(&b.store, new_batch(5, None, None)).await;
        let repo = b.store.batches();
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = repo
                .jobs(DEFAULT_PROJECT_ID, batch.id, after, 2)
                .await
                .unwrap();
            if page.is_empty() {
                break;
            }
            assert!(page.len() <= 2);
            after = page.last().map(|j| j.id);
            seen.extend(page.into_iter().map(|j| j.id));
        }
        let expected: Vec<Uuid> = jobs.iter().map(|j| j.id).collect();
        assert_eq!(seen, expected, "{}", b.name);
        let other = b.store.projects().create("elsewhere").await.unwrap().id;
        assert!(
            repo.jobs(other, batch.id, None, 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            repo.jobs(DEFAULT_PROJECT_ID, Uuid::now_v7(), None, 10)
                .await
                .unwrap()
                .is_empty()
        );
    }
}

#[tokio::test]
async fn the_last_final_job_completes_the_batch_once() {
    for b in backends().await {
        let subscriber = endpoint(&b.store, &[EventType::BatchCompleted]).await;
        let (batch, jobs) = create(&b.store, new_batch(3, None, None)).await;
        assert!(b.store.jobs().succeed(jobs[0].id, &result()).await.unwrap());
        assert!(
            b.store
                .jobs()
                .fail(jobs[1].id, &failure(), 1)
                .await
                .unwrap()
        );
        let now = b
            .store
            .batches()
            .get_by_id(batch.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(now.remaining, 1, "{}", b.name);
        assert!(!now.is_completed());
        assert_eq!(completions(&b, batch.id).await, 0);

        let cancelled = b.store.jobs().cancel(jobs[2].id, "stop").await.unwrap();
        assert!(matches!(cancelled, byok_store::Cancelled::Now(_)));
        let done = b
            .store
            .batches()
            .get_by_id(batch.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(done.remaining, 0);
        assert!(done.is_completed(), "{}", b.name);
        assert_eq!(
            done.counts,
            BatchCounts {
                succeeded: 1,
                failed: 1,
                cancelled: 1,
                ..BatchCounts::default()
            }
        );
        assert_eq!(completions(&b, batch.id).await, 1, "{}", b.name);
        let view = BatchView::from(done);
        assert_eq!((view.status, view.progress), (BatchStatus::Completed, 1.0));
        // Its delivery went to the subscriber.
        let delivered = b
            .store
            .webhooks()
            .deliveries(DEFAULT_PROJECT_ID, subscriber, None, 10)
            .await
            .unwrap();
        assert_eq!(delivered.len(), 1, "{}", b.name);
        assert_eq!(delivered[0].event_type, "batch.completed");
    }
}

#[tokio::test]
async fn cancelling_a_batch_cancels_its_live_jobs_and_completes_it() {
    for b in backends().await {
        endpoint(
            &b.store,
            &[EventType::BatchCompleted, EventType::JobCancelled],
        )
        .await;
        let (batch, jobs) = create(&b.store, new_batch(4, None, None)).await;
        assert!(b.store.jobs().succeed(jobs[0].id, &result()).await.unwrap());
        assert!(b.store.jobs().begin_submit(jobs[1].id).await.unwrap());
        assert!(
            b.store
                .jobs()
                .submitted(jobs[1].id, "task-1", 1)
                .await
                .unwrap()
        );
        let other = b.store.projects().create("not-yours").await.unwrap().id;
        assert_eq!(
            b.store
                .batches()
                .cancel(other, batch.id, "no")
                .await
                .unwrap(),
            None,
            "{}: another project's batch is not found",
            b.name
        );
        assert_eq!(
            b.store
                .batches()
                .cancel(DEFAULT_PROJECT_ID, Uuid::now_v7(), "no")
                .await
                .unwrap(),
            None
        );

        let cancelled = b
            .store
            .batches()
            .cancel(DEFAULT_PROJECT_ID, batch.id, "cancelled by the producer")
            .await
            .unwrap()
            .unwrap();
        let ids: Vec<Uuid> = cancelled.iter().map(|j| j.id).collect();
        assert_eq!(ids, [jobs[1].id, jobs[2].id, jobs[3].id], "{}", b.name);
        assert!(cancelled.iter().all(|j| j.status == JobStatus::Cancelled));
        // The running one keeps its provider job, for the worker's remote cancel.
        assert_eq!(cancelled[0].provider_job_id.as_deref(), Some("task-1"));
        let done = b
            .store
            .batches()
            .get_by_id(batch.id)
            .await
            .unwrap()
            .unwrap();
        assert!(done.is_completed(), "{}", b.name);
        assert_eq!((done.counts.succeeded, done.counts.cancelled), (1, 3));
        assert_eq!(completions(&b, batch.id).await, 1);
        assert_eq!(
            count(
                &b,
                "SELECT count(*) FROM webhook_events WHERE type = 'job.cancelled'",
                None
            )
            .await,
            3
        );
        // Again: nothing left to cancel, nothing written.
        let again = b
            .store
            .batches()
            .cancel(DEFAULT_PROJECT_ID, batch.id, "again")
            .await
            .unwrap();
        assert_eq!(again, Some(Vec::new()));
        assert_eq!(completions(&b, batch.id).await, 1, "{}", b.name);
    }
}

/// Two workers ending a batch's last two jobs at the same instant: the batch row's lock
/// makes exactly one of the transitions see `remaining` reach zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_final_transitions_complete_a_batch_exactly_once() {
    for b in backends().await {
        if b.name != "postgres" {
            // SQLite admits one writer at a time: no two transitions overlap there.
            continue;
        }
        endpoint(&b.store, &[EventType::BatchCompleted]).await;
        let store = Arc::new(b.store.clone());
        for round in 0..50 {
            let (batch, jobs) = create(&store, new_batch(2, None, None)).await;
            let barrier = Arc::new(Barrier::new(2));
            let succeed = {
                let (store, barrier, id) = (Arc::clone(&store), Arc::clone(&barrier), jobs[0].id);
                tokio::spawn(async move {
                    barrier.wait().await;
                    store.jobs().succeed(id, &result()).await.unwrap()
                })
            };
            let fail = {
                let (store, barrier, id) = (Arc::clone(&store), Arc::clone(&barrier), jobs[1].id);
                tokio::spawn(async move {
                    barrier.wait().await;
                    store.jobs().fail(id, &failure(), 1).await.unwrap()
                })
            };
            assert!(
                succeed.await.unwrap() && fail.await.unwrap(),
                "round {round}"
            );
            assert_eq!(completions(&b, batch.id).await, 1, "round {round}");
            let done = store.batches().get_by_id(batch.id).await.unwrap().unwrap();
            assert_eq!(done.remaining, 0, "round {round}");
            assert!(done.is_completed(), "round {round}");
        }
    }
}
