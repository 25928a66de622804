//! Webhooks: the outbox written with the transitions, endpoints, and the delivery
//! bookkeeping, on both databases.

use byok_core::{
    DEFAULT_PROJECT_ID, ErrorCode, ErrorRecord, EventType, GenerationRequest, JobResult, JobView,
    ProjectUser, ProviderId,
};
use byok_store::{
    AttemptNext, AttemptRecord, CheckRecord, Claim, DeliveryStatus, DeliveryTarget, EndpointChange,
    Inserted, Job, NewCredential, NewEndpoint, NewJob, Store, StoreError,
};
use serde_json::json;
use uuid::Uuid;

use crate::backends;

fn new_job(user: Uuid, webhook_url: Option<&str>) -> NewJob {
    let mut request = GenerationRequest::new(user, ProviderId::RUNWAY, "gen4_turbo");
    request.prompt = Some("a cat".into());
    request.webhook_url = webhook_url.map(str::to_owned);
    NewJob {
        project_id: DEFAULT_PROJECT_ID,
        user_id: user,
        provider: ProviderId::RUNWAY,
        model: "gen4_turbo".into(),
        request,
        metadata: json!({ "scene": 7 }),
        created_by_token: None,
        batch_id: None,
        idempotency: None,
        usage: Default::default(),
    }
}

async fn create_job(store: &Store, new: &NewJob) -> Job {
    match store.jobs().insert(new).await.unwrap() {
        Inserted::Created(job) => job,
        other => panic!("expected a new job, got {other:?}"),
    }
}

async fn endpoint(store: &Store, events: &[EventType]) -> Uuid {
    let id = Uuid::now_v7();
    store
        .webhooks()
        .create_endpoint(&NewEndpoint {
            id,
            project_id: DEFAULT_PROJECT_ID,
            url: "https://hooks.example.com/byok".into(),
            description: "test".into(),
            events: events.to_vec(),
            sealed_secret: "v2:k:sealed".into(),
        })
        .await
        .unwrap();
    id
}

/// The types of the events delivered to `endpoint`, oldest first.
async fn delivered_types(store: &Store, endpoint: Uuid) -> Vec<String> {
    let mut types: Vec<String> = store
        .webhooks()
        .deliveries(DEFAULT_PROJECT_ID, endpoint, None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.event_type)
        .collect();
    types.reverse();
    types
}

#[tokio::test]
async fn each_transition_writes_its_event_for_subscribers_and_the_feed_gets_the_deliveries() {
    for b in backends().await {
        let store = &b.store;
        store.outbox().subscribe();
        // Nobody subscribed: a transition writes no event.
        let quiet = create_job(store, &new_job(Uuid::new_v4(), None)).await;
        assert!(store.jobs().begin_submit(quiet.id).await.unwrap());
        assert!(store.jobs().submitted(quiet.id, "task-0", 1).await.unwrap());

        let all = endpoint(store, &EventType::ALL).await;
        let finals = endpoint(store, &[EventType::JobSucceeded, EventType::JobFailed]).await;
        let job = create_job(store, &new_job(Uuid::new_v4(), None)).await;
        assert!(store.jobs().begin_submit(job.id).await.unwrap());
        assert!(store.jobs().submitted(job.id, "task-1", 1).await.unwrap());
        let running = store.outbox().take().await;
        assert_eq!(
            running.len(),
            1,
            "{}: one subscriber of job.running",
            b.name
        );

        assert!(store.jobs().set_progress(job.id, 0.25).await.unwrap());
        // Within 5 s of the last progress event: stored, no second event.
        assert!(store.jobs().set_progress(job.id, 0.5).await.unwrap());
        // The same progress again changes nothing.
        assert!(!store.jobs().set_progress(job.id, 0.5).await.unwrap());
        let result: JobResult =
            serde_json::from_value(json!({ "bytes": 10, "content_type": "video/mp4" })).unwrap();
        assert!(store.jobs().succeed(job.id, &result).await.unwrap());
        assert_eq!(
            delivered_types(store, all).await,
            ["job.running", "job.progress", "job.succeeded"],
            "{}",
            b.name
        );
        assert_eq!(delivered_types(store, finals).await, ["job.succeeded"]);

        // The event's data is the job as it was then, rendered as the API renders it.
        let deliveries = store
            .webhooks()
            .deliveries(DEFAULT_PROJECT_ID, all, None, 100)
            .await
            .unwrap();
        let succeeded = &deliveries[0];
        let work = store.webhooks().work(succeeded.id).await.unwrap().unwrap();
        assert_eq!(work.event.subject_id, Some(job.id));
        let snapshot = Job::from_snapshot(work.event.data.unwrap()).unwrap();
        let now = store.jobs().get(job.id).await.unwrap().unwrap();
        assert_eq!(JobView::from(snapshot), JobView::from(now), "{}", b.name);
        let running = deliveries.last().unwrap();
        let work = store.webhooks().work(running.id).await.unwrap().unwrap();
        let then = Job::from_snapshot(work.event.data.unwrap()).unwrap();
        assert_eq!(then.status, byok_core::JobStatus::Running, "{}", b.name);
        assert!(then.result.is_none());
        assert!(matches!(work.target, Some(DeliveryTarget::Endpoint(ref e)) if e.id == all));
    }
}

#[tokio::test]
async fn a_jobs_own_webhook_url_gets_its_events_and_cancel_and_failure_write_theirs() {
    for b in backends().await {
        let store = &b.store;
        let url = "https://app.example.com/hook";
        let job = create_job(store, &new_job(Uuid::new_v4(), Some(url))).await;
        let store_c = store.clone();
        assert!(matches!(
            store_c
                .jobs()
                .cancel(job.id, "changed my mind")
                .await
                .unwrap(),
            byok_store::Cancelled::Now(_)
        ));
        let other = create_job(store, &new_job(Uuid::new_v4(), Some(url))).await;
        let error = ErrorRecord {
            code: ErrorCode::ContentRejected,
            message: "no".into(),
            retryable: false,
        };
        assert!(store.jobs().fail(other.id, &error, 1).await.unwrap());
        for (id, kind) in [(job.id, "job.cancelled"), (other.id, "job.failed")] {
            let pending = store
                .webhooks()
                .stranded(
                    chrono::Utc::now() + chrono::Duration::hours(1),
                    chrono::Utc::now() + chrono::Duration::hours(1),
                    100,
                )
                .await
                .unwrap();
            let mut found = false;
            for delivery in pending {
                let work = store.webhooks().work(delivery).await.unwrap().unwrap();
                if work.event.subject_id == Some(id) {
                    assert_eq!(work.event.event_type, kind, "{}", b.name);
                    assert!(matches!(
                        work.target,
                        Some(DeliveryTarget::JobUrl { url: ref u, secrets: None }) if u == url
                    ));
                    found = true;
                }
            }
            assert!(found, "{}: {kind} for the job's own URL", b.name);
        }
    }
}

#[tokio::test]
async fn a_key_found_invalid_writes_credential_invalidated_once_without_the_key() {
    for b in backends().await {
        let store = &b.store;
        let hook = endpoint(store, &[EventType::CredentialInvalidated]).await;
        let owner = ProjectUser::new(DEFAULT_PROJECT_ID, Uuid::new_v4());
        let stored = store
            .credentials()
            .upsert(&NewCredential {
                owner,
                provider: ProviderId::RUNWAY,
                sealed: "v2:k:SEALED-KEY-MATERIAL".into(),
                credential_hint: "key_…9f2c".into(),
                validated_at: None,
            })
            .await
            .unwrap();
        let rejected = CheckRecord {
            is_valid: false,
            last_error: Some("401: key revoked".into()),
            validated_at: None,
        };
        for _ in 0..2 {
            store
                .credentials()
                .record_check(owner, ProviderId::RUNWAY, &stored.sealed, &rejected)
                .await
                .unwrap();
        }
        let deliveries = store
            .webhooks()
            .deliveries(DEFAULT_PROJECT_ID, hook, None, 10)
            .await
            .unwrap();
        assert_eq!(
            deliveries.len(),
            1,
            "{}: only the change is an event",
            b.name
        );
        let work = store
            .webhooks()
            .work(deliveries[0].id)
            .await
            .unwrap()
            .unwrap();
        let data = work.event.data.unwrap();
        assert_eq!(data["user_id"], json!(owner.user_id));
        assert_eq!(data["provider"], "runway");
        assert_eq!(data["credential_hint"], "key_…9f2c");
        assert_eq!(data["reason"], "401: key revoked");
        assert!(!data.to_string().contains("SEALED-KEY-MATERIAL"));
    }
}

#[tokio::test]
async fn attempts_are_claimed_once_recorded_once_and_disabled_endpoints_get_nothing_new() {
    for b in backends().await {
        let store = &b.store;
        let hook = endpoint(store, &[EventType::JobFailed]).await;
        let job = create_job(store, &new_job(Uuid::new_v4(), None)).await;
        let error = ErrorRecord {
            code: ErrorCode::Internal,
            message: "x".into(),
            retryable: false,
        };
        assert!(store.jobs().fail(job.id, &error, 1).await.unwrap());
        let delivery = store
            .webhooks()
            .deliveries(DEFAULT_PROJECT_ID, hook, None, 10)
            .await
            .unwrap()
            .remove(0);
        assert_eq!(delivery.status, DeliveryStatus::Pending);
        let lease = byok_store::now() + chrono::Duration::seconds(60);
        let unknown = Uuid::now_v7();
        let claims = store
            .webhooks()
            .claim(&[unknown, delivery.id, delivery.id], lease)
            .await
            .unwrap();
        assert_eq!(claims[0], Claim::Finished, "{}: no such delivery", b.name);
        let Claim::Claimed(work) = &claims[1] else {
            panic!(
                "{}: the pending, due delivery is claimed: {claims:?}",
                b.name
            );
        };
        assert_eq!(work.delivery.attempts, 1, "the claim counts the attempt");
        assert_eq!(work.event.event_type, "job.failed");
        assert!(
            matches!(&work.target, Some(DeliveryTarget::Endpoint(e)) if e.id == hook),
            "{}",
            b.name
        );
        assert!(
            matches!(claims[2], Claim::Finished | Claim::NotDue(_)),
            "{}: the same id twice in one batch is claimed once: {claims:?}",
            b.name
        );
        assert_eq!(
            store.webhooks().claim(&[delivery.id], lease).await.unwrap(),
            vec![Claim::NotDue(lease)],
            "{}: an attempt is out until its lease ends",
            b.name
        );
        let retry_at = byok_store::now() + chrono::Duration::seconds(5);
        let failed = AttemptRecord {
            status_code: Some(500),
            error: Some("HTTP 500".into()),
            response: Some("x".repeat(5000)),
            next: AttemptNext::RetryAt(retry_at),
        };
        assert_eq!(
            store
                .webhooks()
                .record_attempts(&[(delivery.id, 1, failed.clone()), (delivery.id, 7, failed)])
                .await
                .unwrap(),
            vec![true, false],
            "{}: only the delivery's latest attempt is recorded",
            b.name
        );
        let now = store
            .webhooks()
            .delivery(DEFAULT_PROJECT_ID, delivery.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(now.attempts, 1);
        assert_eq!(now.last_status_code, Some(500));
        assert_eq!(
            now.last_response.as_deref().map(str::len),
            Some(1024),
            "{}",
            b.name
        );
        // Not due yet: no second claim.
        assert_eq!(
            store.webhooks().claim(&[delivery.id], lease).await.unwrap(),
            vec![Claim::NotDue(retry_at)],
            "{}",
            b.name
        );
        // A retry of a pending delivery is refused; of a finished one, allowed.
        assert!(
            store
                .webhooks()
                .retry_delivery(DEFAULT_PROJECT_ID, delivery.id)
                .await
                .unwrap()
                .is_none()
        );

        assert!(
            store
                .webhooks()
                .disable_endpoint(hook, "410 Gone")
                .await
                .unwrap()
        );
        assert!(
            !store
                .webhooks()
                .disable_endpoint(hook, "410 Gone")
                .await
                .unwrap()
        );
        let again = create_job(store, &new_job(Uuid::new_v4(), None)).await;
        assert!(store.jobs().fail(again.id, &error, 1).await.unwrap());
        assert_eq!(
            store
                .webhooks()
                .deliveries(DEFAULT_PROJECT_ID, hook, None, 10)
                .await
                .unwrap()
                .len(),
            1,
            "{}: a disabled endpoint gets no new deliveries",
            b.name
        );
        // Re-enabling forgets the failures.
        let enabled = store
            .webhooks()
            .update_endpoint(
                DEFAULT_PROJECT_ID,
                hook,
                &EndpointChange {
                    enabled: Some(true),
                    ..EndpointChange::default()
                },
            )
            .await
            .unwrap()
            .unwrap();
        assert!(enabled.disabled_at.is_none() && enabled.disabled_reason.is_none());
    }
}

#[tokio::test]
async fn endpoints_are_bounded_per_project_and_scoped_to_it() {
    for b in backends().await {
        let store = &b.store;
        let first = endpoint(store, &[EventType::JobFailed]).await;
        for _ in 1..byok_store::MAX_ENDPOINTS_PER_PROJECT {
            endpoint(store, &[EventType::JobFailed]).await;
        }
        let refused = store
            .webhooks()
            .create_endpoint(&NewEndpoint {
                id: Uuid::now_v7(),
                project_id: DEFAULT_PROJECT_ID,
                url: "https://x.example.com".into(),
                description: String::new(),
                events: vec![EventType::JobFailed],
                sealed_secret: "v2:k:s".into(),
            })
            .await;
        assert!(
            matches!(refused, Err(StoreError::Conflict(_))),
            "{}",
            b.name
        );
        let elsewhere = Uuid::now_v7();
        assert!(
            store
                .webhooks()
                .endpoint(elsewhere, first)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            !store
                .webhooks()
                .delete_endpoint(elsewhere, first)
                .await
                .unwrap()
        );
        assert!(
            store
                .webhooks()
                .delete_endpoint(DEFAULT_PROJECT_ID, first)
                .await
                .unwrap()
        );
        let listed = store
            .webhooks()
            .endpoints(DEFAULT_PROJECT_ID)
            .await
            .unwrap();
        assert_eq!(listed.len(), byok_store::MAX_ENDPOINTS_PER_PROJECT - 1);
        assert!(format!("{:?}", listed[0]).contains("SealedSecrets"));
        assert!(!format!("{:?}", listed[0]).contains("v2:k:sealed"));
    }
}

/// Claims made in batches by racing workers (the same ids, at once) give each attempt to
/// exactly one of them, and every claimed attempt is recorded in one batch.
#[tokio::test]
async fn racing_batch_claims_take_each_attempt_once() {
    for b in backends().await {
        let store = &b.store;
        let hook = endpoint(store, &[EventType::JobFailed]).await;
        let error = ErrorRecord {
            code: ErrorCode::Internal,
            message: "x".into(),
            retryable: false,
        };
        for _ in 0..40 {
            let job = create_job(store, &new_job(Uuid::new_v4(), None)).await;
            assert!(store.jobs().fail(job.id, &error, 1).await.unwrap());
        }
        let ids: Vec<Uuid> = store
            .webhooks()
            .deliveries(DEFAULT_PROJECT_ID, hook, None, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.id)
            .collect();
        assert_eq!(ids.len(), 40);
        let lease = byok_store::now() + chrono::Duration::seconds(60);
        let mut reversed = ids.clone();
        reversed.reverse();
        let repo = store.webhooks();
        let (a, b_claims, c) = tokio::join!(
            repo.claim(&ids, lease),
            repo.claim(&reversed, lease),
            repo.claim(&ids[..20], lease),
        );
        let claimed: Vec<Uuid> = [a.unwrap(), b_claims.unwrap(), c.unwrap()]
            .into_iter()
            .flatten()
            .filter_map(|claim| match claim {
                Claim::Claimed(work) => Some(work.delivery.id),
                Claim::NotDue(at) => {
                    assert_eq!(at, lease, "{}: the loser sees the winner's lease", b.name);
                    None
                }
                Claim::Finished => panic!("{}: every delivery is pending", b.name),
            })
            .collect();
        let mut unique = claimed.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(claimed.len(), 40, "{}: each attempt claimed once", b.name);
        assert_eq!(unique.len(), 40, "{}", b.name);

        let done = AttemptRecord {
            status_code: Some(204),
            error: None,
            response: None,
            next: AttemptNext::Succeeded,
        };
        let records: Vec<_> = ids.iter().map(|id| (*id, 1, done.clone())).collect();
        assert_eq!(
            store.webhooks().record_attempts(&records).await.unwrap(),
            vec![true; 40],
            "{}",
            b.name
        );
        let finished = store
            .webhooks()
            .deliveries(DEFAULT_PROJECT_ID, hook, None, 100)
            .await
            .unwrap();
        assert!(
            finished
                .iter()
                .all(|d| d.status == DeliveryStatus::Succeeded && d.last_status_code == Some(204)),
            "{}",
            b.name
        );
        assert_eq!(
            store.webhooks().claim(&ids[..1], lease).await.unwrap(),
            vec![Claim::Finished],
            "{}",
            b.name
        );
    }
}

/// A move to the next fallback changes the job's provider, model, request and estimate,
/// appends the route and writes `job.fallback`; it never applies once a submit is out or a
/// provider accepted the job, nor twice from the same provider.
#[tokio::test]
async fn a_job_falls_back_only_before_any_provider_accepted_it() {
    for b in backends().await {
        let store = &b.store;
        let subscriber = endpoint(store, &[EventType::JobFallback]).await;
        let user = Uuid::new_v4();
        let mut new = new_job(user, None);
        new.request.fallbacks = vec![
            serde_json::from_value(
                json!({ "provider": "fal", "model": "luma-ray-2-flash", "prompt": "a dog" }),
            )
            .unwrap(),
        ];
        let job = create_job(store, &new).await;
        let mv = |job: &Job| byok_store::FallbackMove {
            from: ProviderId::RUNWAY,
            request: job.request.fallback_request(0).unwrap(),
            usage: byok_store::UsagePlan {
                video_seconds: Some(5),
                resolution: None,
                estimated_cost: Some(byok_core::Usd::from_micros(250_000)),
            },
            route: vec![byok_core::RouteStep {
                provider: "runway".into(),
                model: "gen4_turbo".into(),
                reason: "credentials_invalid".into(),
                message: "401".into(),
                at: chrono::Utc::now(),
            }],
        };
        // A submit out: the provider may have the job; no move.
        assert!(store.jobs().begin_submit(job.id).await.unwrap());
        assert!(
            !store.jobs().fall_back(job.id, &mv(&job)).await.unwrap(),
            "{}",
            b.name
        );
        assert!(
            store
                .jobs()
                .submit_refused(job.id, 1, false, "401")
                .await
                .unwrap()
        );

        assert!(
            store.jobs().fall_back(job.id, &mv(&job)).await.unwrap(),
            "{}",
            b.name
        );
        let moved = store.jobs().get(job.id).await.unwrap().unwrap();
        assert_eq!(
            (moved.provider_name.as_str(), moved.model.as_str()),
            ("fal", "luma-ray-2-flash")
        );
        assert_eq!(moved.request.prompt.as_deref(), Some("a dog"));
        assert!(moved.request.fallbacks.is_empty());
        assert_eq!(
            (moved.status, moved.attempts),
            (byok_core::JobStatus::Queued, 0)
        );
        assert_eq!(
            moved.estimated_cost,
            Some(byok_core::Usd::from_micros(250_000))
        );
        assert_eq!(moved.route.len(), 1);
        assert_eq!(moved.route[0].reason, "credentials_invalid");
        // Not twice from the provider it left.
        assert!(!store.jobs().fall_back(job.id, &mv(&job)).await.unwrap());
        assert_eq!(
            delivered_types(store, subscriber).await,
            ["job.fallback"],
            "{}",
            b.name
        );
        let history = store.jobs().events(job.id).await.unwrap();
        assert!(
            history
                .last()
                .unwrap()
                .message
                .starts_with("moved from runway/gen4_turbo to fal/luma-ray-2-flash"),
            "{history:?}"
        );
        // The event's data is the moved job, its route included.
        let deliveries = store
            .webhooks()
            .deliveries(DEFAULT_PROJECT_ID, subscriber, None, 10)
            .await
            .unwrap();
        let claimed = store
            .webhooks()
            .claim(
                &[deliveries[0].id],
                chrono::Utc::now() + chrono::TimeDelta::seconds(30),
            )
            .await
            .unwrap();
        let Claim::Claimed(work) = &claimed[0] else {
            panic!("{claimed:?}");
        };
        let data = JobView::from(Job::from_snapshot(work.event.data.clone().unwrap()).unwrap());
        assert_eq!(data.provider, "fal");
        assert_eq!(data.route.len(), 1, "{}: {data:?}", b.name);

        // Once accepted by a provider, never.
        let accepted = create_job(store, &new).await;
        assert!(store.jobs().begin_submit(accepted.id).await.unwrap());
        assert!(
            store
                .jobs()
                .submitted(accepted.id, "task-9", 1)
                .await
                .unwrap()
        );
        assert!(
            !store
                .jobs()
                .fall_back(accepted.id, &mv(&accepted))
                .await
                .unwrap()
        );
    }
}
