//! A job's whole walk, cancels, crashes mid-step and the sweeper.

use std::sync::Arc;
use std::time::Duration;

use byok_core::{ErrorCode, JobItem, JobStatus, ProviderId};
use byok_queue::Producer;
use byok_store::Cancelled;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::harness::{
    API_KEY, Harness, Options, TASK_ID, fake_mp4, mount_finishing_task, poll_until, task,
};

fn task_path() -> String {
    format!("/v1/tasks/{TASK_ID}")
}

async fn mount_accepting_submit(h: &Harness) {
    Mock::given(method("POST"))
        .and(path("/v1/text_to_video"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(serde_json::json!({ "id": TASK_ID })),
        )
        .mount(&h.runway)
        .await;
}

#[tokio::test]
async fn a_job_is_submitted_polled_and_its_video_kept() {
    let h = Harness::start(Options::default()).await;
    mount_accepting_submit(&h).await;
    mount_finishing_task(&h, 2).await;
    let job = h.enqueue("a lighthouse at dusk").await;

    let running = h
        .wait_for(job.id, "progress", |j| j.progress == Some(0.5))
        .await;
    assert_eq!(running.status, JobStatus::Running);
    let done = h.wait_final(job.id).await;
    assert_eq!(done.status, JobStatus::Succeeded, "{done:#?}");
    assert_eq!((done.attempts, done.progress), (1, Some(1.0)));
    assert_eq!(done.provider_job_id.as_deref(), Some(TASK_ID));
    let video = std::fs::read(h.output_dir.path().join(format!("{}.mp4", job.id))).unwrap();
    assert_eq!(
        video,
        fake_mp4(),
        "the video is kept in the video store (output.dir)"
    );
    let result = done.result.unwrap();
    assert_eq!(result.bytes, video.len() as u64);
    assert_eq!(result.content_type, "video/mp4");
    // The stored result names no route: the API renders video_url from the job id.

    let submits = h.requests("POST", "/v1/text_to_video").await;
    assert_eq!(submits.len(), 1);
    // The user's own key, opened from its sealed row, went to the provider.
    assert_eq!(
        submits[0].headers["authorization"],
        format!("Bearer {API_KEY}").as_str()
    );
    let body: serde_json::Value = serde_json::from_slice(&submits[0].body).unwrap();
    assert_eq!(body["promptText"], "a lighthouse at dusk");
    let history = h.history(job.id).await;
    assert_eq!(history, ["queued", "running", "succeeded"]);
    h.stop().await;
}

#[tokio::test]
async fn a_cancelled_job_is_cancelled_at_the_provider_once() {
    let h = Harness::start(Options::default()).await;
    mount_accepting_submit(&h).await;
    Mock::given(method("GET"))
        .and(path(task_path()))
        .respond_with(task(
            serde_json::json!({ "status": "RUNNING", "progress": 0.1 }),
        ))
        .mount(&h.runway)
        .await;
    Mock::given(method("DELETE"))
        .and(path(task_path()))
        .respond_with(ResponseTemplate::new(204))
        .mount(&h.runway)
        .await;
    let job = h.enqueue("a long take").await;
    h.wait_for(job.id, "the provider's job", |j| {
        j.provider_job_id.is_some()
    })
    .await;

    let Cancelled::Now(cancelled) = h
        .store
        .jobs()
        .cancel(job.id, "cancelled by the producer")
        .await
        .unwrap()
    else {
        panic!("a running job cancels")
    };
    assert_eq!(cancelled.error.unwrap().code, ErrorCode::Cancelled);
    // The API nudges a worker this way; the one holding the poll would too.
    h.push(job.id).await;
    let done = h
        .wait_for(job.id, "the cancel to reach the provider", |j| {
            j.cancel_sent_at.is_some()
        })
        .await;
    assert_eq!(done.status, JobStatus::Cancelled);
    assert_eq!(h.requests("DELETE", &task_path()).await.len(), 1);

    // Both queue items end: nothing polls or cancels again. Absence has no
    // signal to wait on, so give a wrongly surviving item a few poll periods.
    let polls = h.requests("GET", &task_path()).await.len();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        h.requests("GET", &task_path()).await.len(),
        polls,
        "no polls after the cancel"
    );
    assert_eq!(
        h.requests("DELETE", &task_path()).await.len(),
        1,
        "one cancel"
    );
    h.stop().await;
}

#[tokio::test]
async fn a_job_with_a_provider_job_resumes_polling_and_is_never_submitted_again() {
    let h = Harness::start(Options::default()).await;
    mount_accepting_submit(&h).await;
    mount_finishing_task(&h, 1).await;
    // A worker submitted, recorded the provider's id, and died.
    let job = h.store_job("resumed").await;
    assert!(h.store.jobs().begin_submit(job.id).await.unwrap());
    assert!(h.store.jobs().submitted(job.id, TASK_ID, 1).await.unwrap());
    h.push(job.id).await;

    let done = h.wait_final(job.id).await;
    assert_eq!(done.status, JobStatus::Succeeded, "{done:#?}");
    assert!(
        h.requests("POST", "/v1/text_to_video").await.is_empty(),
        "never submitted again"
    );
    assert!(!h.requests("GET", &task_path()).await.is_empty());
    h.stop().await;
}

#[tokio::test]
async fn a_submit_left_in_flight_by_a_dead_worker_is_never_resent() {
    let h = Harness::start(Options::default()).await;
    mount_accepting_submit(&h).await;
    // A worker marked the submit as leaving, and died before any answer
    // was recorded: whether the provider got it is unknown.
    let job = h.store_job("maybe sent").await;
    assert!(h.store.jobs().begin_submit(job.id).await.unwrap());
    backdate_submit(&h, job.id).await;
    h.push(job.id).await;

    let done = h.wait_final(job.id).await;
    assert_eq!(done.status, JobStatus::Failed);
    let error = done.error.unwrap();
    assert_eq!(
        (error.code, error.retryable),
        (ErrorCode::SubmitOutcomeUnknown, false)
    );
    assert!(
        h.requests("POST", "/v1/text_to_video").await.is_empty(),
        "not re-sent"
    );
    h.stop().await;
}

/// Moves the job's submit mark an hour back, as if its worker died then.
async fn backdate_submit(h: &Harness, id: uuid::Uuid) {
    let long_ago = chrono::Utc::now() - chrono::Duration::hours(1);
    let pool = sqlx::SqlitePool::connect(&sqlite_url(h)).await.unwrap();
    let changed = sqlx::query("UPDATE generation_jobs SET submit_started_at = ?1 WHERE id = ?2")
        .bind(long_ago)
        .bind(id.hyphenated().to_string())
        .execute(&pool)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(changed, 1);
    pool.close().await;
}

#[tokio::test]
async fn a_job_whose_stored_request_does_not_read_fails_at_once() {
    let h = Harness::start(Options::default()).await;
    mount_accepting_submit(&h).await;
    let job = h.store_job("soon unreadable").await;
    // Written behind the store's back: JSON that is no GenerationRequest.
    let pool = sqlx::SqlitePool::connect(&sqlite_url(&h)).await.unwrap();
    let changed = sqlx::query("UPDATE generation_jobs SET request = ?1 WHERE id = ?2")
        .bind(r#"{"prompt":5}"#)
        .bind(job.id.hyphenated().to_string())
        .execute(&pool)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(changed, 1);
    h.push(job.id).await;

    // The store cannot load the row any more, so read its columns.
    let (status, code, message, retryable) = poll_until("the job to fail", async || {
        let row: (String, Option<String>, Option<String>, Option<bool>) = sqlx::query_as(
            "SELECT status, error_code, error_message, error_retryable \
             FROM generation_jobs WHERE id = ?1",
        )
        .bind(job.id.hyphenated().to_string())
        .fetch_one(&pool)
        .await
        .unwrap();
        (row.0 != "queued").then_some(row)
    })
    .await;
    pool.close().await;
    assert_eq!(
        (
            status.as_str(),
            code.as_deref(),
            message.as_deref(),
            retryable
        ),
        (
            "failed",
            Some("internal"),
            Some("the stored job is malformed (generation_jobs.request)"),
            Some(false)
        )
    );
    let history = h.history(job.id).await;
    assert_eq!(history, ["queued", "failed"]);
    assert!(
        h.requests("POST", "/v1/text_to_video").await.is_empty(),
        "nothing was sent"
    );
    h.stop().await;
}

#[tokio::test]
async fn a_job_whose_model_retired_after_enqueue_fails_model_retired_unsent() {
    // The deployment's catalogue now marks gen4.5 retired (a provider announced its end
    // after the job was accepted): the job fails at its submit step and nothing is sent.
    let registry = byok_providers::Registry::new(&byok_providers::RegistryOptions::defaults())
        .expect("the built-in registry");
    let mut models = registry
        .get(ProviderId::RUNWAY)
        .unwrap()
        .catalogue()
        .models
        .clone();
    let gen45 = models
        .iter_mut()
        .find(|m| m.id == "gen4.5")
        .expect("gen4.5 in the catalogue");
    gen45.status = byok_core::ModelStatus::Retired;
    gen45.retirement = Some(byok_core::Retirement {
        date: "2026-12-01".into(),
        source: "https://provider.example/notice".into(),
        alternatives: Vec::new(),
    });
    let h = Harness::start(Options {
        runway_models: Some(models),
        ..Options::default()
    })
    .await;
    mount_accepting_submit(&h).await;
    let job = h.enqueue("made before the notice").await;
    let done = h.wait_final(job.id).await;
    assert_eq!(done.status, JobStatus::Failed);
    let error = done.error.expect("an error");
    assert_eq!(error.code, ErrorCode::ModelRetired);
    assert!(!error.retryable);
    assert!(error.message.contains("2026-12-01"), "{}", error.message);
    assert!(
        h.requests("POST", "/v1/text_to_video").await.is_empty(),
        "nothing was sent"
    );
    h.stop().await;
}

fn sqlite_url(h: &Harness) -> String {
    h.sqlite_url().to_owned()
}

#[tokio::test]
async fn a_job_that_never_reached_the_queue_is_pushed_by_the_sweeper() {
    let h = Harness::start(Options::default()).await;
    mount_accepting_submit(&h).await;
    mount_finishing_task(&h, 0).await;
    // Stored, but the API died before pushing it.
    let job = h.store_job("stranded").await;
    assert!(h.store.jobs().awaiting_push(job.id).await.unwrap());
    let producer = Producer::<JobItem>::new(Arc::clone(&h.engine));
    let young = byok_worker::sweep_stranded(&h.store, &producer, Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(
        young, 0,
        "a job younger than the grace may still be on its way"
    );
    let pushed = byok_worker::sweep_stranded(&h.store, &producer, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(pushed, 1);
    assert!(!h.store.jobs().awaiting_push(job.id).await.unwrap());
    assert_eq!(
        byok_worker::sweep_stranded(&h.store, &producer, Duration::ZERO)
            .await
            .unwrap(),
        0
    );

    let done = h.wait_final(job.id).await;
    assert_eq!(done.status, JobStatus::Succeeded, "{done:#?}");
    assert_eq!(h.requests("POST", "/v1/text_to_video").await.len(), 1);
    h.stop().await;
}
