//! `byok-bench webhooks`: webhook deliveries per second from PostgreSQL + Redis to a
//! receiver on loopback, beside the plain HTTP POST rate of the same HTTP client at the same
//! concurrency (what delivery costs on top of the POST itself: the claim and the record in
//! PostgreSQL, the queue, opening the secret, rendering and signing); and, at low load, the
//! time from a job's transition (the event's timestamp) to its arrival at the receiver.
//!
//! The events are real: jobs stored and failed through the store, whose transitions write
//! the outbox rows, one delivery each to one endpoint.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use byok_core::{
    DEFAULT_PROJECT_ID, ErrorCode, ErrorRecord, EventType, GenerationRequest, ProviderId,
};
use byok_crypto::{KeyRing, WebhookSecretContext};
use byok_deliveries::{
    Deliverer, DeliveryItem, DeliveryOptions, DeliveryWorkerOptions, Relay, push_deliveries,
    run_deliveries,
};
use byok_queue::{Engine, Producer, QueueConfig, RedisEngine};
use byok_store::{Inserted, NewEndpoint, NewJob, Store, StoreOptions};
use byok_webhooks::SigningSecret;
use serde_json::json;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::common::{ScratchDb, delete_matching, percentile, progress, round2};
use crate::system::KEYS;
use crate::{Options, report};

/// Attempts in flight (`webhooks.concurrency`'s default).
const CONCURRENCY: usize = 128;

/// What the receiver counts.
#[derive(Default)]
struct Received {
    count: AtomicU64,
    target: AtomicU64,
    latencies: std::sync::Mutex<Vec<Duration>>,
    done: Notify,
}

/// A receiver on loopback: answers 204, counts, and notes how long after its event each
/// delivery arrived (from the payload's `timestamp`).
async fn receiver(received: Arc<Received>) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let received = Arc::clone(&received);
            async move {
                if let Ok(payload) = serde_json::from_slice::<serde_json::Value>(&body)
                    && let Some(at) = payload["timestamp"].as_str()
                    && let Ok(at) = chrono::DateTime::parse_from_rfc3339(at)
                {
                    let late = (chrono::Utc::now() - at.with_timezone(&chrono::Utc))
                        .to_std()
                        .unwrap_or_default();
                    received.latencies.lock().unwrap().push(late);
                }
                let n = received.count.fetch_add(1, Ordering::AcqRel) + 1;
                if n == received.target.load(Ordering::Acquire) {
                    received.done.notify_one();
                }
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(url)
}

impl Received {
    fn expect(&self, target: u64) {
        self.count.store(0, Ordering::Release);
        self.latencies.lock().unwrap().clear();
        self.target.store(target, Ordering::Release);
    }

    async fn wait(&self, deadline: Duration) -> anyhow::Result<()> {
        let reached = async {
            loop {
                let notified = self.done.notified();
                if self.count.load(Ordering::Acquire) >= self.target.load(Ordering::Acquire) {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(deadline, reached).await.map_err(|_| {
            anyhow::anyhow!(
                "only {} of {} deliveries arrived",
                self.count.load(Ordering::Acquire),
                self.target.load(Ordering::Acquire)
            )
        })
    }
}

/// Stores `n` jobs and fails them: `n` `job.failed` events, one delivery each.
async fn failed_jobs(store: &Store, n: usize) -> anyhow::Result<()> {
    let error = ErrorRecord {
        code: ErrorCode::ContentRejected,
        message: "refused by the provider".into(),
        retryable: false,
    };
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let news: Vec<NewJob> = chunk
            .iter()
            .map(|_| {
                let user = Uuid::new_v4();
                NewJob {
                    project_id: DEFAULT_PROJECT_ID,
                    user_id: user,
                    provider: ProviderId::RUNWAY,
                    model: "gen4.5".into(),
                    request: GenerationRequest {
                        prompt: Some("a lighthouse at dawn, waves rolling in".into()),
                        ..GenerationRequest::new(user, ProviderId::RUNWAY, "gen4.5")
                    },
                    metadata: json!({ "order": 42 }),
                    created_by_token: None,
                    idempotency: None,
                    batch_id: None,
                    usage: Default::default(),
                }
            })
            .collect();
        let mut fails = Vec::new();
        for inserted in store.jobs().insert_many(&news).await? {
            if let Inserted::Created(job) = inserted? {
                fails.push(job.id);
            }
        }
        // A few at a time, as workers would.
        let jobs = store.jobs();
        for ids in fails.chunks(16) {
            let mut pending = Vec::new();
            for id in ids {
                pending.push(jobs.fail(*id, &error, 1));
            }
            for done in futures::future::join_all(pending).await {
                done?;
            }
        }
    }
    Ok(())
}

pub async fn run(options: &Options) -> anyhow::Result<()> {
    let n: usize = if options.quick { 3_000 } else { 20_000 };
    let latency_events: usize = if options.quick { 100 } else { 400 };
    progress(&format!(
        "webhooks: {n} deliveries, then {latency_events} at low load"
    ));
    let db = ScratchDb::create(&options.database_url).await?;
    let namespace = format!("bench-{}.webhooks", Uuid::new_v4().simple());
    let outcome = measure(options, &db, &namespace, n, latency_events).await;
    db.drop_now().await;
    delete_matching(&options.redis_url, &format!("{{{namespace}}}*")).await?;
    outcome
}

async fn measure(
    options: &Options,
    db: &ScratchDb,
    namespace: &str,
    n: usize,
    latency_events: usize,
) -> anyhow::Result<()> {
    let store = Store::connect(
        &secrecy::SecretString::from(db.url.as_str()),
        &StoreOptions {
            max_connections: 32,
            ..StoreOptions::default()
        },
    )
    .await?;
    let mut config = QueueConfig::new(namespace);
    config.max_attempts = 25;
    let engine: Arc<dyn Engine> = RedisEngine::connect(&options.redis_url, config).await?;
    let ring = Arc::new(KeyRing::parse(&secrecy::SecretString::from(KEYS))?);
    let received = Arc::new(Received::default());
    let url = receiver(Arc::clone(&received)).await?;

    let endpoint = Uuid::now_v7();
    let secret = SigningSecret::generate()?;
    let context = WebhookSecretContext {
        project_id: DEFAULT_PROJECT_ID,
        endpoint_id: Some(endpoint),
    };
    store
        .webhooks()
        .create_endpoint(&NewEndpoint {
            id: endpoint,
            project_id: DEFAULT_PROJECT_ID,
            url: url.clone(),
            description: "bench".into(),
            events: vec![EventType::JobFailed],
            sealed_secret: ring.seal_webhook_secret(&context, secret.to_text().as_bytes())?,
        })
        .await?;

    // The events first (not measured), their queue items pushed.
    failed_jobs(&store, n).await?;
    let pending = store
        .webhooks()
        .stranded(
            chrono::Utc::now() + chrono::Duration::hours(1),
            chrono::Utc::now() + chrono::Duration::hours(1),
            u32::try_from(n).unwrap_or(u32::MAX),
        )
        .await?;
    anyhow::ensure!(
        pending.len() == n,
        "{} deliveries written of {n}",
        pending.len()
    );
    let producer = Producer::<DeliveryItem>::new(Arc::clone(&engine));
    for chunk in pending.chunks(1000) {
        push_deliveries(&store, &producer, chunk).await?;
    }

    // Deliveries per second: the worker drains the backlog.
    received.expect(n as u64);
    let deliverer = Arc::new(Deliverer::new(
        store.clone(),
        Arc::clone(&ring),
        DeliveryOptions {
            allow_private_networks: true,
            ..DeliveryOptions::default()
        },
    )?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let started = Instant::now();
    let worker = tokio::spawn(run_deliveries(
        Arc::clone(&engine),
        deliverer,
        DeliveryWorkerOptions {
            name: "bench".into(),
            concurrency: CONCURRENCY,
            shutdown_grace: Duration::from_secs(5),
            retention: Duration::from_secs(30 * 86_400),
        },
        async move {
            let _ = stopped.await;
        },
    ));
    received.wait(Duration::from_secs(600)).await?;
    let delivery_rate = n as f64 / started.elapsed().as_secs_f64();

    // The same client (policy, timeout) POSTing the same bodies, same concurrency.
    let client = byok_providers::net::client_builder(true)
        .timeout(Duration::from_secs(10))
        .build()?;
    let body = Arc::new(serde_json::to_vec(&json!({
        "type": "job.failed",
        "timestamp": chrono::Utc::now(),
        "data": { "id": Uuid::now_v7(), "status": "failed", "padding": "x".repeat(700) },
    }))?);
    received.expect(n as u64);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut posters = Vec::new();
    for _ in 0..CONCURRENCY {
        let (client, url, body, next) = (
            client.clone(),
            url.clone(),
            Arc::clone(&body),
            Arc::clone(&next),
        );
        posters.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::AcqRel) < n as u64 {
                let _ = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.to_vec())
                    .send()
                    .await;
            }
        }));
    }
    for poster in posters {
        poster.await?;
    }
    let post_rate = n as f64 / started.elapsed().as_secs_f64();

    // Low load: events one at a time through the relay, each timed from its transition.
    let _relay = Relay::start(store.clone(), producer);
    received.expect(latency_events as u64);
    let mut every = tokio::time::interval(Duration::from_millis(20));
    for _ in 0..latency_events {
        every.tick().await;
        failed_jobs(&store, 1).await?;
    }
    received.wait(Duration::from_secs(120)).await?;
    let mut latencies = received.latencies.lock().unwrap().clone();
    latencies.sort();
    let (p50, p99) = (percentile(&latencies, 0.50), percentile(&latencies, 0.99));

    let _ = stop.send(());
    worker.await?.map_err(|e| anyhow::anyhow!(e))?;
    store.close().await;
    report(
        options,
        &json!({
            "benchmark": "webhooks",
            "deliveries": n,
            "deliveries_per_s": round2(delivery_rate),
            "baseline_plain_post_per_s": round2(post_rate),
            "concurrency": CONCURRENCY,
            "low_load_events": latency_events,
            "transition_to_delivery_p50_ms": round2(p50),
            "transition_to_delivery_p99_ms": round2(p99),
        }),
        &format!(
            "webhooks: {:.0} deliveries/s (PostgreSQL + Redis, {CONCURRENCY} in flight) vs {:.0} plain POST/s of the same client; \
             at 50 events/s transition → delivery p50 {p50:.1} ms, p99 {p99:.1} ms",
            delivery_rate, post_rate
        ),
    );
    Ok(())
}
