//! Webhook endpoints and batches through the client against the real API: an endpoint
//! made, read, changed, rotated and deleted; a batch enqueued (and replayed), paged,
//! completed and cancelled; its `batch.completed` received and verified with the
//! endpoint's secret.

use std::sync::{Arc, Mutex};

use byok_client::{
    ApiErrorCode, BatchRequest, BatchStatus, ClientError, EventType, GenerationRequest,
    IdempotencyKey, JobStatus, ListBatchJobs, ListDeliveries, NewWebhookEndpoint, ProviderId,
    PutCredentials, SigningSecret, UsageGroupBy, UsageSpan, WebhookDeliveryStatus,
    WebhookEndpointChange, verify_webhook,
};
use serde_json::json;
use uuid::Uuid;

use crate::{TestApi, apis};

/// A receiver on loopback: keeps every request's headers and body, answers 204.
async fn receiver() -> (String, Arc<Mutex<Vec<(http::HeaderMap, Vec<u8>)>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post({
            let seen = Arc::clone(&seen);
            move |headers: http::HeaderMap, body: axum::body::Bytes| {
                let seen = Arc::clone(&seen);
                async move {
                    seen.lock().unwrap().push((headers, body.to_vec()));
                    http::StatusCode::NO_CONTENT
                }
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

fn job(user: Uuid, n: usize) -> GenerationRequest {
    GenerationRequest {
        prompt: Some(format!("shot {n}")),
        duration_seconds: Some(5),
        ..GenerationRequest::new(user, ProviderId::RUNWAY, "gen4.5")
    }
}

#[tokio::test]
async fn endpoints_and_batches_round_trip_typed() {
    for api in apis().await {
        round_trip(&api).await;
    }
}

async fn round_trip(api: &TestApi) {
    let client = api.client();
    let backend = api.backend;
    let (url, seen) = receiver().await;

    // An endpoint: made (its secret shown once), listed, read, changed.
    let made = client
        .create_webhook(&NewWebhookEndpoint {
            url: url.clone(),
            events: vec![EventType::JobFailed],
            description: "client tests".into(),
        })
        .await
        .unwrap();
    let endpoint = made.endpoint.id;
    assert!(made.secret.starts_with("whsec_"), "{backend}");
    assert!(
        !format!("{made:?}").contains(&made.secret),
        "Debug hides it"
    );
    let listed = client.list_webhooks().await.unwrap();
    assert_eq!(listed.endpoints, vec![made.endpoint.clone()], "{backend}");
    let changed = client
        .update_webhook(
            endpoint,
            &WebhookEndpointChange {
                events: Some(vec![EventType::JobSucceeded, EventType::BatchCompleted]),
                ..WebhookEndpointChange::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        changed.events,
        vec![EventType::JobSucceeded, EventType::BatchCompleted]
    );
    assert_eq!(changed.description, "client tests", "kept");
    assert_eq!(client.get_webhook(endpoint).await.unwrap(), changed);
    let secret = SigningSecret::parse(&made.secret).unwrap();

    // A batch: refused whole when one job is bad, then enqueued, replayed, paged.
    let user = Uuid::new_v4();
    client
        .put_credentials(
            user,
            "runway",
            &PutCredentials::new(json!({ "api_key": "sim_client_batches" })),
        )
        .await
        .unwrap();
    let mut bad = BatchRequest {
        jobs: (0..3).map(|n| job(user, n)).collect(),
        metadata: json!({ "campaign": "spring" }),
    };
    bad.jobs[1].model = "no-such-model".into();
    match client.create_batch(&bad, None).await {
        Err(e @ ClientError::Api { .. }) => {
            assert_eq!(e.code(), Some(ApiErrorCode::InvalidRequest), "{e}");
            assert_eq!(e.details()["items"][0]["index"], 1, "{:?}", e.details());
        }
        other => panic!("{backend}: {other:?}"),
    }
    let request = BatchRequest {
        jobs: (0..3).map(|n| job(user, n)).collect(),
        metadata: json!({ "campaign": "spring" }),
    };
    let key = IdempotencyKey::random();
    let created = client.create_batch(&request, Some(&key)).await.unwrap();
    assert!(!created.replayed);
    assert_eq!(created.batch.total, 3);
    assert_eq!(created.batch.metadata, json!({ "campaign": "spring" }));
    let replay = client.create_batch(&request, Some(&key)).await.unwrap();
    assert!(replay.replayed, "{backend}");
    assert_eq!(replay.batch.id, created.batch.id);
    let id = created.batch.id;
    let first = client
        .batch_jobs(
            id,
            &ListBatchJobs {
                limit: Some(2),
                ..ListBatchJobs::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(first.batch_id, id);
    assert_eq!(first.jobs.len(), 2);
    let next = ListBatchJobs {
        limit: Some(2),
        ..ListBatchJobs::default()
    }
    .after(&first)
    .expect("a second page");
    let second = client.batch_jobs(id, &next).await.unwrap();
    assert_eq!(second.jobs.len(), 1);
    assert_eq!(second.next_cursor, None);
    let prompts: Vec<_> = first
        .jobs
        .iter()
        .chain(&second.jobs)
        .map(|j| j.request.prompt.clone().unwrap())
        .collect();
    assert_eq!(prompts, ["shot 0", "shot 1", "shot 2"], "the batch's order");

    // It completes; the endpoint hears `batch.completed` once, signed with its secret.
    let done = byok_testing::poll_until("the batch completes", async || {
        let batch = client.get_batch(id).await.unwrap();
        (batch.status == BatchStatus::Completed).then_some(batch)
    })
    .await;
    assert_eq!(done.counts.succeeded, 3, "{backend}: {done:?}");
    assert_eq!(done.progress, 1.0);
    let completed = byok_testing::poll_until("batch.completed arrives", async || {
        let seen = seen.lock().unwrap().clone();
        let events: Vec<_> = seen
            .iter()
            .map(|(headers, body)| verify_webhook(std::slice::from_ref(&secret), headers, body))
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        // Three job.succeeded and the batch's one.
        (events.len() >= 4).then_some(events)
    })
    .await;
    let batches: Vec<_> = completed
        .iter()
        .filter_map(|e| e.batch().unwrap())
        .collect();
    assert_eq!(batches.len(), 1, "{backend}: exactly one batch.completed");
    assert_eq!(batches[0], done, "the batch as GET shows it");
    let jobs: Vec<_> = completed.iter().filter_map(|e| e.job().unwrap()).collect();
    assert_eq!(jobs.len(), 3);
    assert!(jobs.iter().all(|j| j.status == JobStatus::Succeeded));
    // Cancelling a completed batch changes nothing.
    assert_eq!(client.cancel_batch(id).await.unwrap(), done);

    // Its deliveries, paged; one sent again.
    let deliveries = byok_testing::poll_until("four deliveries recorded", async || {
        let page = client
            .webhook_deliveries(endpoint, &ListDeliveries::default())
            .await
            .unwrap();
        (page.deliveries.len() == 4
            && page
                .deliveries
                .iter()
                .all(|d| d.status == WebhookDeliveryStatus::Succeeded))
        .then_some(page)
    })
    .await;
    let one = ListDeliveries {
        limit: Some(1),
        ..ListDeliveries::default()
    };
    let newest = client.webhook_deliveries(endpoint, &one).await.unwrap();
    assert_eq!(newest.deliveries, deliveries.deliveries[..1]);
    assert!(one.after(&newest).is_some());
    let again = client
        .retry_webhook_delivery(deliveries.deliveries[0].id)
        .await
        .unwrap();
    assert_eq!(again.status, WebhookDeliveryStatus::Pending);
    assert_eq!(again.webhook_id, deliveries.deliveries[0].webhook_id);

    // A rotation: a new secret; the old one still signs for a day.
    let rotated = client.rotate_webhook_secret(endpoint).await.unwrap();
    assert_ne!(rotated.secret, made.secret);
    assert!(rotated.endpoint.previous_secret_expires_at.is_some());
    let job_secret = client.rotate_job_webhook_secret().await.unwrap();
    assert!(job_secret.secret.starts_with("whsec_"));

    // Gone: a 404 after.
    client.delete_webhook(endpoint).await.unwrap();
    let gone = client.get_webhook(endpoint).await.unwrap_err();
    assert_eq!(
        gone.code(),
        Some(ApiErrorCode::NotFound),
        "{backend}: {gone}"
    );
}

/// The usage routes, typed: the batch's jobs are counted once they ended (Runway's models
/// have no built-in prices, so their cost is unknown, not zero).
#[tokio::test]
async fn usage_reads_back_typed() {
    for api in apis().await {
        let client = api.client();
        let user = Uuid::new_v4();
        client
            .put_credentials(
                user,
                "runway",
                &PutCredentials::new(json!({ "api_key": "sim_client_usage" })),
            )
            .await
            .unwrap();
        let batch = client
            .create_batch(
                &BatchRequest {
                    jobs: (0..2).map(|n| job(user, n)).collect(),
                    metadata: json!({}),
                },
                None,
            )
            .await
            .unwrap();
        byok_testing::poll_until("the batch completes", async || {
            let batch = client.get_batch(batch.batch.id).await.unwrap();
            (batch.status == BatchStatus::Completed).then_some(())
        })
        .await;
        let span = UsageSpan {
            group_by: Some(UsageGroupBy::Model),
            ..UsageSpan::default()
        };
        let mine = client.user_usage(user, &span).await.unwrap();
        assert_eq!(mine.user_id, Some(user));
        assert_eq!(mine.group_by, UsageGroupBy::Model);
        assert_eq!(
            (
                mine.total.jobs,
                mine.total.succeeded,
                mine.total.jobs_cost_unknown
            ),
            (2, 2, 2),
            "{}: {mine:?}",
            api.backend
        );
        assert_eq!(mine.total.video_seconds, 10);
        assert_eq!(mine.groups[0].model.as_deref(), Some("gen4.5"));
        let project = client.usage(&UsageSpan::default()).await.unwrap();
        assert!(project.total.jobs >= 2);
        let later = client
            .usage(&UsageSpan {
                from: Some(chrono::Utc::now() + chrono::Duration::hours(1)),
                to: Some(chrono::Utc::now() + chrono::Duration::hours(2)),
                group_by: None,
            })
            .await
            .unwrap();
        assert_eq!(later.total.jobs, 0);
    }
}
