//! Retries against the API's real edge limit (`api.rate_limit`, a GCRA per token): a 429
//! with `Retry-After` is waited out and retried when the call may be repeated, and a
//! `POST /v1/jobs` without an `Idempotency-Key` is never repeated.

use std::time::Duration;

use byok_client::{
    ApiErrorCode, GenerationRequest, IdempotencyKey, ListJobs, ProviderId, PutCredentials,
};
use serde_json::json;
use uuid::Uuid;

use crate::{Logs, TestApi, sqlite_api_with};

/// One request per 2 s per token, none saved up: a second request right after the first
/// is refused with `Retry-After: 2` (the API rounds the wait up to whole seconds), and
/// granted again once that has passed.
async fn tight_api() -> TestApi {
    sqlite_api_with(|s| {
        s.api.rate_limit = Some(byok_config::RequestRate::parse("30/min, burst 1").unwrap());
    })
    .await
}

#[tokio::test]
async fn a_429_is_waited_out_and_retried_until_it_succeeds() {
    let api = tight_api().await;
    let token = api.token("jobs:read").await;
    let once = api.client_once(&token);
    let retrying = api.builder(&token).build().unwrap();

    // The limit is on: the token's one request is spent, the next is refused.
    once.providers().await.unwrap();
    let refused = once.providers().await.unwrap_err();
    assert_eq!(refused.code(), Some(ApiErrorCode::RateLimited), "{refused}");
    let retry_after = refused.retry_after().expect("a Retry-After");
    assert!(
        (Duration::from_secs(1)..=Duration::from_secs(2)).contains(&retry_after),
        "{retry_after:?}"
    );
    assert_eq!(refused.details()["policy"], "token");

    // The same call through the retrying client: refused first, then granted.
    let logs = Logs::capture();
    let listing = retrying.providers().await.unwrap();
    assert!(!listing.providers.is_empty());
    let retries = logs.retries();
    assert!(
        !retries.is_empty() && retries.iter().all(|l| l.contains("status=429")),
        "{}",
        logs.text()
    );
}

#[tokio::test]
async fn a_job_without_an_idempotency_key_is_sent_once_and_with_one_retried() {
    let api = tight_api().await;
    let user = Uuid::new_v4();
    // Keys and the listing of jobs through tokens of their own: each token has its own
    // budget.
    let keys = api.client();
    keys.put_credentials(
        user,
        "runway",
        &PutCredentials::new(json!({ "api_key": "sim_client_retries" })),
    )
    .await
    .unwrap();
    let token = api.token("jobs:read,jobs:write").await;
    let producer = api.builder(&token).build().unwrap();
    let request = GenerationRequest {
        prompt: Some("a storm over the hills".into()),
        ..GenerationRequest::new(user, ProviderId::RUNWAY, "gen4.5")
    };

    let logs = Logs::capture();
    producer
        .list_jobs(user, &ListJobs::default())
        .await
        .unwrap();
    // Without a key: refused by the limit and returned as it is, although the client
    // retries 429s of calls that may be repeated.
    let refused = producer.create_job(&request, None).await.unwrap_err();
    assert_eq!(refused.code(), Some(ApiErrorCode::RateLimited), "{refused}");
    assert!(refused.retry_after().is_some());
    assert!(logs.retries().is_empty(), "{}", logs.text());

    // With a key: refused by the same limit, waited out, retried, enqueued once.
    let key = IdempotencyKey::random();
    let enqueued = producer.create_job(&request, Some(&key)).await.unwrap();
    assert!(!enqueued.replayed);
    let retries = logs.retries();
    assert!(
        retries
            .iter()
            .any(|l| l.contains("status=429") && l.contains("/v1/jobs")),
        "{}",
        logs.text()
    );
    drop(logs);

    let reader = api.builder(&api.token("jobs:read").await).build().unwrap();
    let page = reader.list_jobs(user, &ListJobs::default()).await.unwrap();
    let ids: Vec<Uuid> = page.jobs.iter().map(|j| j.id).collect();
    assert_eq!(ids, [enqueued.job.id], "one job: the keyed one");
}

#[tokio::test]
async fn a_wait_longer_than_the_policy_allows_is_not_taken() {
    let api = sqlite_api_with(|s| {
        s.api.rate_limit = Some(byok_config::RequestRate::parse("1/h, burst 1").unwrap());
    })
    .await;
    let token = api.token("jobs:read").await;
    let client = api.builder(&token).build().unwrap();
    client.providers().await.unwrap();
    let logs = Logs::capture();
    // Bounded, so that a client that did wait the hour fails here rather than hangs.
    let refused = tokio::time::timeout(Duration::from_secs(20), client.providers())
        .await
        .expect("answered at once, without waiting")
        .unwrap_err();
    assert_eq!(refused.code(), Some(ApiErrorCode::RateLimited));
    assert!(
        refused.retry_after().unwrap() > Duration::from_secs(30),
        "{refused:?}"
    );
    assert!(logs.retries().is_empty(), "{}", logs.text());
}
