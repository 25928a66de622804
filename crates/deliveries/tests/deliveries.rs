//! Webhook delivery in process: a real store (SQLite), the real SQLite queue engine, the
//! relay, the delivery worker, and a receiver on loopback (axum) that verifies every
//! request with `byok_webhooks::verify` and answers as each test tells it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use byok_core::{DEFAULT_PROJECT_ID, EventType, GenerationRequest, JobResult, ProviderId};
use byok_crypto::{KeyId, KeyRing, WebhookSecretContext};
use byok_deliveries::{
    Deliverer, DeliveryItem, DeliveryOptions, DeliveryWorkerOptions, Relay, RetrySchedule,
    run_deliveries, sweep_stranded,
};
use byok_queue::{Engine, Producer, QueueConfig, SqliteEngine};
use byok_store::{DeliveryStatus, Inserted, NewEndpoint, NewJob, Store, StoreOptions};
use byok_webhooks::{SigningSecret, verify};
use secrecy::SecretString;
use serde_json::{Value, json};
use uuid::Uuid;

/// One request the receiver saw.
#[derive(Debug, Clone)]
struct Seen {
    id: String,
    verified: bool,
    body: Value,
    signatures: usize,
}

/// The receiver: records every request and answers `status` (or redirects).
#[derive(Clone)]
struct Receiver {
    seen: Arc<Mutex<Vec<Seen>>>,
    status: Arc<Mutex<u16>>,
    secrets: Arc<Mutex<Vec<String>>>,
    url: String,
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let receiver = Receiver {
            seen: Arc::default(),
            status: Arc::new(Mutex::new(204)),
            secrets: Arc::default(),
            url,
        };
        let state = receiver.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let state = state.clone();
                async move { state.receive(&headers, &body) }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        receiver
    }

    fn receive(&self, headers: &HeaderMap, body: &[u8]) -> axum::response::Response {
        use axum::response::IntoResponse as _;
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let secrets: Vec<SigningSecret> = self
            .secrets
            .lock()
            .unwrap()
            .iter()
            .map(|s| SigningSecret::parse(s).unwrap())
            .collect();
        let now = chrono::Utc::now().timestamp();
        let verified = verify(
            &secrets,
            &header("webhook-id"),
            &header("webhook-timestamp"),
            &header("webhook-signature"),
            body,
            now,
        )
        .is_ok();
        self.seen.lock().unwrap().push(Seen {
            id: header("webhook-id"),
            verified,
            body: serde_json::from_slice(body).unwrap_or(Value::Null),
            signatures: header("webhook-signature").split(' ').count(),
        });
        let status = *self.status.lock().unwrap();
        if status == 302 {
            return (
                StatusCode::FOUND,
                [("location", "http://169.254.169.254/latest")],
            )
                .into_response();
        }
        (StatusCode::from_u16(status).unwrap(), "x".repeat(4096)).into_response()
    }

    fn answer(&self, status: u16) {
        *self.status.lock().unwrap() = status;
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// A job walked to `succeeded` through `store`.
async fn succeeded_job_in(store: &Store) -> Uuid {
    let user = Uuid::new_v4();
    let new = NewJob {
        project_id: DEFAULT_PROJECT_ID,
        user_id: user,
        provider: ProviderId::RUNWAY,
        model: "gen4_turbo".into(),
        request: GenerationRequest::new(user, ProviderId::RUNWAY, "gen4_turbo"),
        metadata: json!({}),
        created_by_token: None,
        batch_id: None,
        idempotency: None,
        usage: Default::default(),
    };
    let Inserted::Created(job) = store.jobs().insert(&new).await.unwrap() else {
        panic!("a new job");
    };
    let jobs = store.jobs();
    assert!(jobs.begin_submit(job.id).await.unwrap());
    assert!(jobs.submitted(job.id, "task", 1).await.unwrap());
    let result: JobResult =
        serde_json::from_value(json!({ "bytes": 10, "content_type": "video/mp4" })).unwrap();
    assert!(jobs.succeed(job.id, &result).await.unwrap());
    job.id
}

struct Harness {
    store: Store,
    ring: Arc<KeyRing>,
    engine: Arc<dyn Engine>,
    receiver: Receiver,
    _relay: Relay,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    worker: Option<tokio::task::JoinHandle<Result<(), String>>>,
    _db: byok_testing::TestSqlite,
}

impl Harness {
    async fn start(schedule: Vec<Duration>, disable_after: Duration) -> Harness {
        Harness::start_with(DeliveryOptions {
            schedule: RetrySchedule::new(schedule),
            disable_after,
            allow_private_networks: true,
            ..DeliveryOptions::default()
        })
        .await
    }

    async fn start_with(options: DeliveryOptions) -> Harness {
        let db = byok_testing::test_sqlite();
        let store = Store::connect(
            &SecretString::from(db.url.clone()),
            &StoreOptions::default(),
        )
        .await
        .unwrap();
        store.migrate().await.unwrap();
        let engine: Arc<dyn Engine> =
            SqliteEngine::connect(&db.url, QueueConfig::new("test.webhooks"))
                .await
                .unwrap();
        let ring = Arc::new(
            KeyRing::single(
                KeyId::new("k1").unwrap(),
                &SecretString::from("22".repeat(32)),
            )
            .unwrap(),
        );
        let relay = Relay::start(store.clone(), Producer::new(Arc::clone(&engine)));
        let deliverer =
            Arc::new(Deliverer::new(store.clone(), Arc::clone(&ring), options).unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let worker = tokio::spawn(run_deliveries(
            Arc::clone(&engine),
            deliverer,
            DeliveryWorkerOptions {
                name: "test".into(),
                concurrency: 8,
                shutdown_grace: Duration::from_secs(5),
                retention: Duration::from_secs(3600),
            },
            async move {
                let _ = stopped.await;
            },
        ));
        Harness {
            store,
            ring,
            engine,
            receiver: Receiver::start().await,
            _relay: relay,
            stop: Some(stop),
            worker: Some(worker),
            _db: db,
        }
    }

    /// An endpoint subscribed to `events` at the receiver; the receiver knows its secret.
    async fn endpoint(&self, events: &[EventType]) -> Uuid {
        self.endpoint_at(&self.receiver.url, events).await
    }

    /// An endpoint at `url` subscribed to `events`; the receiver knows its secret.
    async fn endpoint_at(&self, url: &str, events: &[EventType]) -> Uuid {
        let id = Uuid::now_v7();
        let secret = SigningSecret::generate().unwrap();
        let context = WebhookSecretContext {
            project_id: DEFAULT_PROJECT_ID,
            endpoint_id: Some(id),
        };
        let sealed = self
            .ring
            .seal_webhook_secret(&context, secret.to_text().as_bytes())
            .unwrap();
        self.store
            .webhooks()
            .create_endpoint(&NewEndpoint {
                id,
                project_id: DEFAULT_PROJECT_ID,
                url: url.to_owned(),
                description: String::new(),
                events: events.to_vec(),
                sealed_secret: sealed,
            })
            .await
            .unwrap();
        self.receiver
            .secrets
            .lock()
            .unwrap()
            .push(secret.to_text().to_string());
        id
    }

    /// A job walked to `succeeded`.
    async fn succeeded_job(&self) -> Uuid {
        succeeded_job_in(&self.store).await
    }

    /// Waits until endpoint `id` is disabled; returns it.
    async fn disabled_endpoint(&self, id: Uuid, what: &str) -> byok_store::WebhookEndpoint {
        byok_testing::poll_until(what, async || {
            let e = self
                .store
                .webhooks()
                .endpoint(DEFAULT_PROJECT_ID, id)
                .await
                .unwrap()
                .unwrap();
            e.disabled_at.is_some().then_some(e)
        })
        .await
    }

    async fn wait_seen(&self, what: &str, cond: impl Fn(&[Seen]) -> bool) -> Vec<Seen> {
        byok_testing::poll_until(what, async || {
            let seen = self.receiver.seen();
            cond(&seen).then_some(seen)
        })
        .await
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.worker.take().unwrap().await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn every_event_arrives_signed_in_order_with_the_job_as_the_api_shows_it() {
    let h = Harness::start(vec![Duration::from_millis(50)], Duration::from_secs(3600)).await;
    h.endpoint(&EventType::ALL).await;
    let job = h.succeeded_job().await;
    let seen = h.wait_seen("both events", |s| s.len() >= 2).await;
    let types: Vec<&str> = seen
        .iter()
        .map(|s| s.body["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["job.running", "job.succeeded"]);
    assert!(seen.iter().all(|s| s.verified), "{seen:?}");
    assert_eq!(seen[1].body["data"]["id"], json!(job));
    assert_eq!(seen[1].body["data"]["status"], "succeeded");
    assert_eq!(
        seen[1].body["data"]["result"]["video_url"],
        format!("/v1/jobs/{job}/video")
    );
    // The running event shows the job as it was then.
    assert_eq!(seen[0].body["data"]["status"], "running");
    assert!(seen[0].body["data"]["result"].is_null());
    assert!(seen.iter().all(|s| s.id.starts_with("msg_")));
    h.stop().await;
}

#[tokio::test]
async fn a_receiver_that_fails_gets_the_same_webhook_id_until_it_answers_and_410_disables() {
    let h = Harness::start(
        vec![Duration::from_millis(50); 5],
        Duration::from_secs(3600),
    )
    .await;
    let endpoint = h.endpoint(&[EventType::JobSucceeded]).await;
    h.receiver.answer(503);
    h.succeeded_job().await;
    h.wait_seen("three failed attempts", |s| s.len() >= 3).await;
    h.receiver.answer(200);
    let seen = h.wait_seen("the delivery", |s| s.len() >= 4).await;
    let first = &seen[0].id;
    assert!(
        seen.iter().all(|s| &s.id == first && s.verified),
        "{seen:?}"
    );
    let delivery = byok_testing::poll_until("recorded", async || {
        let d = h
            .store
            .webhooks()
            .deliveries(DEFAULT_PROJECT_ID, endpoint, None, 10)
            .await
            .unwrap()
            .remove(0);
        (d.status == DeliveryStatus::Succeeded).then_some(d)
    })
    .await;
    assert_eq!(delivery.attempts as usize, seen.len());
    assert_eq!(delivery.last_status_code, Some(200));
    // Only 1 KiB of the answer is kept.
    assert_eq!(delivery.last_response.as_deref().map(str::len), Some(1024));

    h.receiver.answer(410);
    h.succeeded_job().await;
    let disabled = h.disabled_endpoint(endpoint, "disabled by 410").await;
    assert_eq!(
        disabled.disabled_reason.as_deref(),
        Some("the receiver answered 410 Gone")
    );
    let count = h.receiver.seen().len();
    h.receiver.answer(200);
    h.succeeded_job().await;
    // Nothing more is written for a disabled endpoint.
    assert_eq!(
        h.store
            .webhooks()
            .deliveries(DEFAULT_PROJECT_ID, endpoint, None, 10)
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(h.receiver.seen().len(), count);
    h.stop().await;
}

#[tokio::test]
async fn redirects_are_not_followed_and_attempts_end_failed_after_the_schedule() {
    let h = Harness::start(
        vec![Duration::from_millis(20); 2],
        Duration::from_secs(3600),
    )
    .await;
    let endpoint = h.endpoint(&[EventType::JobSucceeded]).await;
    h.receiver.answer(302);
    h.succeeded_job().await;
    let delivery = byok_testing::poll_until("failed after 3 attempts", async || {
        let d = h
            .store
            .webhooks()
            .deliveries(DEFAULT_PROJECT_ID, endpoint, None, 10)
            .await
            .unwrap()
            .remove(0);
        (d.status == DeliveryStatus::Failed).then_some(d)
    })
    .await;
    assert_eq!(delivery.attempts, 3);
    assert_eq!(
        h.receiver.seen().len(),
        3,
        "the redirect target was never asked"
    );
    assert!(
        delivery
            .last_error
            .unwrap()
            .contains("redirects are not followed")
    );
    // A manual retry makes one more attempt.
    h.receiver.answer(200);
    h.store
        .webhooks()
        .retry_delivery(DEFAULT_PROJECT_ID, delivery.id)
        .await
        .unwrap()
        .unwrap();
    h.wait_seen("the retried delivery", |s| s.len() == 4).await;
    h.stop().await;
}

#[tokio::test]
async fn an_endpoint_failing_longer_than_the_limit_is_disabled() {
    // A zero limit: the first failure is already "failing for too long".
    let h = Harness::start(vec![Duration::from_millis(20); 3], Duration::ZERO).await;
    let endpoint = h.endpoint(&[EventType::JobSucceeded]).await;
    h.receiver.answer(500);
    h.succeeded_job().await;
    let disabled = h.disabled_endpoint(endpoint, "disabled for failing").await;
    assert_eq!(
        disabled.disabled_reason.as_deref(),
        Some("every delivery failed for 5 days")
    );
    h.stop().await;
}

#[tokio::test]
async fn deliveries_no_relay_pushed_are_pushed_by_the_sweeper() {
    let h = Harness::start(vec![Duration::from_millis(20)], Duration::from_secs(3600)).await;
    h.endpoint(&[EventType::JobSucceeded]).await;
    // A second store on the same file, with no relay: its writes are what a process that
    // died right after committing a transition leaves behind.
    let orphan = Store::connect(
        &SecretString::from(h._db.url.clone()),
        &StoreOptions::default(),
    )
    .await
    .unwrap();
    succeeded_job_in(&orphan).await;
    let producer = Producer::<DeliveryItem>::new(Arc::clone(&h.engine));
    assert_eq!(
        sweep_stranded(
            &h.store,
            &producer,
            Duration::ZERO,
            Duration::from_secs(900)
        )
        .await
        .unwrap(),
        1
    );
    let seen = h.wait_seen("the swept delivery", |s| !s.is_empty()).await;
    assert_eq!(seen[0].body["type"], "job.succeeded");
    assert!(seen[0].verified);
    // Pushed and delivered: nothing is left for the next pass.
    byok_testing::poll_until("nothing stranded", async || {
        let n = sweep_stranded(
            &h.store,
            &producer,
            Duration::ZERO,
            Duration::from_secs(900),
        )
        .await
        .unwrap();
        (n == 0).then_some(())
    })
    .await;
    h.stop().await;
}

#[tokio::test]
async fn after_a_rotation_both_secrets_sign_until_the_old_one_expires() {
    let h = Harness::start(vec![Duration::from_millis(20)], Duration::from_secs(3600)).await;
    // The receiver keeps only the endpoint's first secret.
    let endpoint = h.endpoint(&[EventType::JobSucceeded]).await;
    let new = SigningSecret::generate().unwrap();
    let context = WebhookSecretContext {
        project_id: DEFAULT_PROJECT_ID,
        endpoint_id: Some(endpoint),
    };
    let sealed = h
        .ring
        .seal_webhook_secret(&context, new.to_text().as_bytes())
        .unwrap();
    let until = chrono::Utc::now() + chrono::Duration::hours(24);
    h.store
        .webhooks()
        .rotate_endpoint_secret(DEFAULT_PROJECT_ID, endpoint, &sealed, until)
        .await
        .unwrap()
        .unwrap();
    h.succeeded_job().await;
    let seen = h.wait_seen("a delivery", |s| !s.is_empty()).await;
    assert_eq!(seen[0].signatures, 2);
    assert!(seen[0].verified, "the old secret still verifies");
    // With the old secret expired, only the new one signs.
    h.store
        .webhooks()
        .rotate_endpoint_secret(DEFAULT_PROJECT_ID, endpoint, &sealed, chrono::Utc::now())
        .await
        .unwrap()
        .unwrap();
    h.receiver
        .secrets
        .lock()
        .unwrap()
        .push(new.to_text().to_string());
    h.succeeded_job().await;
    let seen = h.wait_seen("a second delivery", |s| s.len() >= 2).await;
    assert_eq!(seen[1].signatures, 1);
    assert!(seen[1].verified);
    h.stop().await;
}

/// With private networks not allowed (the production setting), a receiver on plain http,
/// at a private or metadata address, or at a name that resolves to one, is never
/// contacted: the attempt fails as refused. (The API refuses such URLs when they are
/// given; this is the check at sending time, which also covers a name whose address
/// changed since.)
#[tokio::test]
async fn receivers_on_private_networks_are_refused_when_sending() {
    let h = Harness::start_with(DeliveryOptions {
        schedule: RetrySchedule::new(Vec::new()),
        allow_private_networks: false,
        ..DeliveryOptions::default()
    })
    .await;
    let port = h
        .receiver
        .url
        .trim_start_matches("http://127.0.0.1:")
        .trim_end_matches("/hook")
        .to_owned();
    let urls = [
        h.receiver.url.clone(),
        format!("https://127.0.0.1:{port}/hook"),
        "https://10.0.0.7/hook".to_owned(),
        "https://169.254.169.254/latest/meta-data".to_owned(),
        format!("https://localhost:{port}/hook"),
    ];
    let mut endpoints = Vec::new();
    for url in &urls {
        endpoints.push(h.endpoint_at(url, &[EventType::JobSucceeded]).await);
    }
    h.succeeded_job().await;
    for (url, endpoint) in urls.iter().zip(endpoints) {
        let delivery = byok_testing::poll_until("the attempt is over", async || {
            let d = h
                .store
                .webhooks()
                .deliveries(DEFAULT_PROJECT_ID, endpoint, None, 10)
                .await
                .unwrap()
                .pop()?;
            (d.status == DeliveryStatus::Failed).then_some(d)
        })
        .await;
        let error = delivery.last_error.unwrap_or_default();
        assert!(error.starts_with("refused"), "{url}: {error}");
        assert_eq!(delivery.last_status_code, None, "{url}");
    }
    assert!(h.receiver.seen().is_empty(), "nothing reached the receiver");
    h.stop().await;
}
