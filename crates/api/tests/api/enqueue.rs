//! `POST /v1/jobs` stores each job and pushes its work item once, however many requests
//! arrive together (their inserts share a statement and their pushes one call to the
//! queue), and a push that fails after the insert is a 503 naming the stored job.

use std::collections::HashSet;

use byok_queue::ItemState;
use reqwest::Method;
use serde_json::Value;
use uuid::Uuid;

use crate::batches::{api_whose_queue_stopped, job, put_key};
use crate::{TestApi, apis, error_code};

async fn post_job(api: &TestApi, body: &Value, key: Option<&str>) -> reqwest::Response {
    let mut request = api.req(Method::POST, "/v1/jobs").json(body);
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    request.send().await.unwrap()
}

/// 60 requests at once, 10 of them repeating another's idempotency key: 50 jobs, each
/// pending in the queue exactly once, none left for the sweeper, and the repeats answered
/// with their first request's job.
#[tokio::test]
async fn concurrent_enqueues_push_each_new_job_once() {
    for api in apis().await {
        let user = Uuid::new_v4();
        put_key(&api, user).await;
        let requests = (0..60).map(|i| {
            let api = &api;
            async move {
                // Requests 50..60 repeat the keys (and bodies) of requests 0..10.
                let n = i % 50;
                let response = post_job(
                    api,
                    &job(user, &format!("prompt {n}")),
                    Some(&format!("k-{n}")),
                )
                .await;
                let status = response.status().as_u16();
                let body: Value = response.json().await.unwrap();
                assert_eq!(status, 202, "{}: {body}", api.backend);
                (n, body["id"].as_str().unwrap().parse::<Uuid>().unwrap())
            }
        });
        let answers = futures::future::join_all(requests).await;
        let mut by_key = std::collections::HashMap::new();
        for (n, id) in &answers {
            let first = *by_key.entry(*n).or_insert(*id);
            assert_eq!(first, *id, "{}: key k-{n} answered two jobs", api.backend);
        }
        let jobs: HashSet<Uuid> = by_key.values().copied().collect();
        assert_eq!(jobs.len(), 50, "{}", api.backend);

        let pending = api.engine.list(ItemState::Pending, 1000).await.unwrap();
        let pushed: Vec<Uuid> = pending
            .iter()
            .map(|item| item.item_id.parse().unwrap())
            .collect();
        assert_eq!(pushed.len(), 50, "{}: {pushed:?}", api.backend);
        assert_eq!(
            pushed.iter().copied().collect::<HashSet<_>>(),
            jobs,
            "{}",
            api.backend
        );
        for job in &jobs {
            // The enqueue mark is written in the background: wait for it, with a deadline.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while api.store.jobs().awaiting_push(*job).await.unwrap() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{}: job {job} still awaits its push mark",
                    api.backend
                );
                tokio::task::yield_now().await;
            }
        }
    }
}

/// The queue stops answering after the API started: the job is stored, the answer is a
/// 503 naming it, it stays for the sweeper, and a retry with the key gets the same job.
#[tokio::test]
async fn a_queue_failure_after_storing_answers_503_naming_the_job() {
    let Some((api, user)) = api_whose_queue_stopped().await else {
        return;
    };
    let body = job(user, "a lighthouse");
    let response = post_job(&api, &body, Some("retry-me")).await;
    let status = response.status().as_u16();
    let answer: Value = response.json().await.unwrap();
    assert_eq!(
        (status, error_code(&answer)),
        (503, "service_unavailable"),
        "{answer}"
    );
    let id: Uuid = answer["error"]["details"]["job_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(api.store.jobs().awaiting_push(id).await.unwrap());
    let replay = post_job(&api, &body, Some("retry-me")).await;
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    let replay: Value = replay.json().await.unwrap();
    assert_eq!(replay["id"].as_str(), Some(&*id.to_string()));
}
