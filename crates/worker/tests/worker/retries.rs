//! The three failure classes: transient (backoff, attempts), permanent
//! (fail now; a rejected key is marked invalid), retry-after (the key is
//! blocked, no attempt counted); and the submit whose answer was lost.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use byok_core::{DEFAULT_PROJECT_ID, ErrorCode, JobStatus, ProjectUser, ProviderId};
use wiremock::matchers::{method, path};
use wiremock::{Mock, Request, Respond, ResponseTemplate};

use crate::harness::{Harness, Options, TASK_ID, mount_finishing_task};

const SUBMIT: &str = "/v1/text_to_video";

fn accepted() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(serde_json::json!({ "id": TASK_ID }))
}

/// Answers submits from a script (the last answer repeats) and notes when
/// each arrived.
#[derive(Clone)]
struct Scripted {
    answers: Arc<Vec<ResponseTemplate>>,
    arrivals: Arc<Mutex<Vec<Instant>>>,
}

impl Scripted {
    fn new(answers: Vec<ResponseTemplate>) -> Scripted {
        Scripted {
            answers: Arc::new(answers),
            arrivals: Arc::default(),
        }
    }
    fn arrivals(&self) -> Vec<Instant> {
        self.arrivals.lock().unwrap().clone()
    }
}

impl Respond for Scripted {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let mut arrivals = self.arrivals.lock().unwrap();
        arrivals.push(Instant::now());
        let n = arrivals.len().min(self.answers.len());
        self.answers[n - 1].clone()
    }
}

async fn mount_submits(h: &Harness, script: &Scripted) {
    Mock::given(method("POST"))
        .and(path(SUBMIT))
        .respond_with(script.clone())
        .mount(&h.runway)
        .await;
}

fn unavailable() -> ResponseTemplate {
    ResponseTemplate::new(503).set_body_json(serde_json::json!({ "error": "Service unavailable" }))
}

#[tokio::test]
async fn transient_failures_retry_until_max_attempts_then_fail_retryable() {
    let h = Harness::start(Options {
        max_attempts: 3,
        ..Options::default()
    })
    .await;
    let script = Scripted::new(vec![unavailable()]);
    mount_submits(&h, &script).await;
    let job = h.enqueue("never lucky").await;

    let done = h.wait_final(job.id).await;
    assert_eq!(done.status, JobStatus::Failed, "{done:#?}");
    let error = done.error.clone().unwrap();
    assert_eq!(
        (error.code, error.retryable),
        (ErrorCode::ProviderUnavailable, true)
    );
    assert_eq!(done.attempts, 3);
    assert_eq!(script.arrivals().len(), 3, "exactly max_attempts submits");
    assert!(done.provider_job_id.is_none() && done.submit_started_at.is_none());
    h.stop().await;
}

#[tokio::test]
async fn a_transient_failure_then_success_is_the_second_attempt() {
    let h = Harness::start(Options::default()).await;
    let script = Scripted::new(vec![unavailable(), accepted()]);
    mount_submits(&h, &script).await;
    mount_finishing_task(&h, 0).await;
    let job = h.enqueue("second time lucky").await;

    let done = h.wait_final(job.id).await;
    assert_eq!(
        (done.status, done.attempts),
        (JobStatus::Succeeded, 2),
        "{done:#?}"
    );
    assert_eq!(script.arrivals().len(), 2);
    h.stop().await;
}

#[tokio::test]
async fn a_permanent_rejection_fails_at_once() {
    let h = Harness::start(Options::default()).await;
    let invalid = ResponseTemplate::new(400).set_body_json(serde_json::json!({
        "error": "Validation of body failed",
        "issues": [{ "path": ["promptText"], "message": "Too long" }],
    }));
    let script = Scripted::new(vec![invalid]);
    mount_submits(&h, &script).await;
    let job = h.enqueue("refused").await;

    let done = h.wait_final(job.id).await;
    let error = done.error.unwrap();
    assert_eq!(
        (done.status, error.code, error.retryable),
        (JobStatus::Failed, ErrorCode::InvalidRequest, false)
    );
    assert_eq!(script.arrivals().len(), 1);
    h.stop().await;
}

#[tokio::test]
async fn a_rejected_key_fails_the_job_and_is_marked_invalid_for_the_next() {
    let h = Harness::start(Options::default()).await;
    let script = Scripted::new(vec![
        ResponseTemplate::new(401).set_body_json(serde_json::json!({ "error": "Invalid API key" })),
    ]);
    mount_submits(&h, &script).await;
    let first = h.enqueue("bad key").await;
    let done = h.wait_final(first.id).await;
    assert_eq!(done.error.unwrap().code, ErrorCode::CredentialsInvalid);

    let stored = h
        .store
        .credentials()
        .get(
            ProjectUser::new(DEFAULT_PROJECT_ID, h.user),
            ProviderId::RUNWAY,
        )
        .await
        .unwrap()
        .unwrap();
    assert!(!stored.is_valid, "the stored key is marked invalid");
    assert!(stored.last_error.is_some());

    // The next job fails fast, without sending the dead key again.
    let second = h.enqueue("same key").await;
    let done = h.wait_final(second.id).await;
    assert_eq!(done.error.unwrap().code, ErrorCode::CredentialsInvalid);
    assert_eq!(script.arrivals().len(), 1);
    h.stop().await;
}

#[tokio::test]
async fn a_submit_whose_answer_is_lost_fails_and_is_never_sent_again() {
    let h = Harness::start(Options {
        request_timeout: Duration::from_millis(300),
        ..Options::default()
    })
    .await;
    // The provider takes the request and answers after the worker gave up.
    let script = Scripted::new(vec![accepted().set_delay(Duration::from_secs(2))]);
    mount_submits(&h, &script).await;
    let job = h.enqueue("into the void").await;

    let done = h.wait_final(job.id).await;
    let error = done.error.unwrap();
    assert_eq!(
        (done.status, error.code, error.retryable),
        (JobStatus::Failed, ErrorCode::SubmitOutcomeUnknown, false)
    );
    assert_eq!(script.arrivals().len(), 1, "sent once, never again");
    h.stop().await;
}

#[tokio::test]
async fn a_429_blocks_the_key_for_its_retry_time_and_is_not_an_attempt() {
    let h = Harness::start(Options::default()).await;
    let throttled = ResponseTemplate::new(429)
        .insert_header("Retry-After", "1")
        .set_body_json(serde_json::json!({ "error": "Rate limited" }));
    let script = Scripted::new(vec![throttled, accepted()]);
    mount_submits(&h, &script).await;
    mount_finishing_task(&h, 0).await;
    let first = h.enqueue("one").await;
    // Once the 429 is in (the job waits as `throttled`), the key is blocked
    // on every worker: a job enqueued now must wait too.
    h.wait_for(first.id, "the 429", |j| {
        j.status == JobStatus::Throttled && j.submit_started_at.is_none()
    })
    .await;
    let second = h.enqueue("two").await;

    let (a, b) = (h.wait_final(first.id).await, h.wait_final(second.id).await);
    assert_eq!(
        (a.status, b.status),
        (JobStatus::Succeeded, JobStatus::Succeeded)
    );
    assert_eq!(
        (a.attempts, b.attempts),
        (1, 1),
        "waiting out a 429 is not an attempt"
    );
    let arrivals = script.arrivals();
    assert_eq!(arrivals.len(), 3, "one 429, then each job once");
    // Nothing was sent on this key before the provider's retry time.
    for later in &arrivals[1..] {
        assert!(
            *later - arrivals[0] >= Duration::from_secs(1),
            "{:?}",
            *later - arrivals[0]
        );
    }
    h.stop().await;
}

#[tokio::test]
async fn flaky_polls_are_asked_again_without_counting_attempts() {
    let h = Harness::start(Options {
        max_attempts: 2,
        ..Options::default()
    })
    .await;
    mount_submits(&h, &Scripted::new(vec![accepted()])).await;
    Mock::given(method("GET"))
        .and(path(format!("/v1/tasks/{TASK_ID}")))
        .respond_with(unavailable())
        .up_to_n_times(3)
        .mount(&h.runway)
        .await;
    mount_finishing_task(&h, 0).await;
    let job = h.enqueue("patience").await;

    let done = h.wait_final(job.id).await;
    assert_eq!(
        (done.status, done.attempts),
        (JobStatus::Succeeded, 1),
        "{done:#?}"
    );
    h.stop().await;
}
