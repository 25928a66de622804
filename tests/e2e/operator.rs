//! The operator CLI (`byok queue …`, `byok job show`) on both shapes: the
//! embedded SQLite file and PostgreSQL + Redis. The test writes the queue's
//! states itself through the engine (pending, scheduled and dead items),
//! then reads and repairs them with the real binary.

use std::sync::Arc;
use std::time::Duration;

use byok_core::{DEFAULT_PROJECT_ID, GenerationRequest, JobItem, JobResult, ProviderId, Usd};
use byok_queue::{Engine, NewItem, QueueConfig, RedisEngine, Settlement, SqliteEngine};
use byok_store::{Inserted, NewJob, Store, StoreOptions, UsagePlan};
use secrecy::SecretString;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{Output, run};

const KEYS: &str = "1:3333333333333333333333333333333333333333333333333333333333333333";

struct Shape {
    name: &'static str,
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    store: Store,
    engine: Arc<dyn Engine>,
    namespace: String,
    _services: Vec<Box<dyn std::any::Any>>,
}

impl Shape {
    async fn byok(&self, args: &[&str]) -> Output {
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        run(self.dir.path(), &env, args).await
    }

    async fn json(&self, args: &[&str]) -> Value {
        let out = self.byok(args).await;
        assert_eq!(out.code, 0, "{}: byok {args:?}: {}", self.name, out.stderr);
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("{}: {e}: {}", self.name, out.stdout))
    }
}

async fn embedded() -> Shape {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/data/byok.db", dir.path().display());
    let store = Store::connect(&SecretString::from(url.as_str()), &StoreOptions::default())
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let engine: Arc<dyn Engine> = SqliteEngine::connect(&url, QueueConfig::new("byok"))
        .await
        .unwrap();
    Shape {
        name: "embedded",
        env: vec![
            ("BYOK__DATABASE__URL".into(), url),
            ("BYOK__ENCRYPTION__KEYS".into(), KEYS.into()),
        ],
        dir,
        store,
        engine,
        namespace: "byok".into(),
        _services: Vec::new(),
    }
}

async fn distributed() -> Option<Shape> {
    let db = byok_testing::test_database().await?;
    let redis = byok_testing::test_redis().await?;
    let store = Store::connect(
        &SecretString::from(db.url.as_str()),
        &StoreOptions::default(),
    )
    .await
    .unwrap();
    store.migrate().await.unwrap();
    let engine: Arc<dyn Engine> =
        RedisEngine::connect(&redis.url, QueueConfig::new(redis.namespace.clone()))
            .await
            .unwrap();
    Some(Shape {
        name: "distributed",
        dir: tempfile::tempdir().unwrap(),
        env: vec![
            ("DATABASE_URL".into(), db.url.clone()),
            ("REDIS_URL".into(), redis.url.clone()),
            ("BYOK__QUEUE__NAMESPACE".into(), redis.namespace.clone()),
            ("BYOK__ENCRYPTION__KEYS".into(), KEYS.into()),
        ],
        store,
        engine,
        namespace: redis.namespace.clone(),
        _services: vec![Box::new(db), Box::new(redis)],
    })
}

async fn stored_job(store: &Store) -> Uuid {
    let user = Uuid::new_v4();
    let new = NewJob {
        project_id: DEFAULT_PROJECT_ID,
        user_id: user,
        provider: ProviderId::RUNWAY,
        model: "gen4.5".into(),
        request: GenerationRequest {
            prompt: Some("x".to_owned()),
            ..GenerationRequest::new(user, ProviderId::RUNWAY, "gen4.5")
        },
        metadata: json!({}),
        created_by_token: None,
        batch_id: None,
        idempotency: None,
        usage: Default::default(),
    };
    match store.jobs().insert(&new).await.unwrap() {
        Inserted::Created(job) => job.id,
        other => panic!("{other:?}"),
    }
}

fn payload(id: Uuid) -> String {
    serde_json::to_string(&JobItem { job_id: id }).unwrap()
}

/// One dead item ("doomed", with a last error), two pending job items and
/// one scheduled one.
async fn fill(shape: &Shape) -> (Uuid, Uuid) {
    let doomed = NewItem::now(
        "doomed",
        "{\"job_id\":\"00000000-0000-0000-0000-000000000000\"}",
    );
    shape.engine.push(&[doomed]).await.unwrap();
    let consumer = shape.engine.consumer("operator-test").await.unwrap();
    let fetched = consumer.fetch(10).await.unwrap();
    assert_eq!(fetched.len(), 1, "{}", shape.name);
    let dead = Settlement::Dead {
        error: "the provider melted\nsecond line".into(),
    };
    consumer
        .settle(&[(fetched[0].clone(), dead)])
        .await
        .unwrap();
    consumer.close().await.unwrap();

    let (a, b) = (
        stored_job(&shape.store).await,
        stored_job(&shape.store).await,
    );
    let later = NewItem {
        delay: Duration::from_secs(3600),
        ..NewItem::now("later", payload(Uuid::new_v4()))
    };
    shape
        .engine
        .push(&[
            NewItem::now(a.to_string(), payload(a)),
            NewItem::now(b.to_string(), payload(b)),
            later,
        ])
        .await
        .unwrap();
    (a, b)
}

async fn operate(shape: Shape) {
    let name = shape.name;
    let (a, b) = fill(&shape).await;

    let stats = shape.json(&["queue", "stats", "--json"]).await;
    assert_eq!(
        stats,
        json!({ "queues": [{ "name": shape.namespace, "pending": 2, "scheduled": 1, "running": 0, "dead": 1,
                              "oldest_pending_seconds": stats["queues"][0]["oldest_pending_seconds"] }] }),
        "{name}"
    );
    let human = shape.byok(&["queue", "stats"]).await;
    assert!(
        human.stdout.starts_with("QUEUE") && human.stdout.contains(&shape.namespace),
        "{name}: {}",
        human.stdout
    );

    let pending = shape
        .json(&["queue", "list", "--state", "pending", "--json"])
        .await;
    let ids: Vec<&str> = pending["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["item_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [a.to_string(), b.to_string()], "{name}: oldest first");
    let dead = shape.byok(&["queue", "list", "--state", "dead"]).await;
    assert!(
        dead.stdout.contains("doomed") && dead.stdout.contains("the provider melted second line"),
        "{name}: {}",
        dead.stdout
    );

    let missing = shape.byok(&["queue", "retry", "nothing-like-it"]).await;
    assert_eq!(missing.code, 1, "{name}: {}", missing.stderr);
    assert!(
        missing.stderr.contains("nothing-like-it"),
        "{name}: {}",
        missing.stderr
    );
    let retried = shape.byok(&["queue", "retry", "doomed"]).await;
    assert_eq!(
        (retried.code, retried.stdout.trim()),
        (0, "moved 1 dead item(s) back to pending"),
        "{name}: {}",
        retried.stderr
    );
    let stats = shape.json(&["queue", "stats", "--json"]).await;
    assert_eq!(
        (
            stats["queues"][0]["pending"].as_u64(),
            stats["queues"][0]["dead"].as_u64()
        ),
        (Some(3), Some(0)),
        "{name}"
    );
    assert_eq!(
        shape
            .byok(&["queue", "retry", "--all-dead"])
            .await
            .stdout
            .trim(),
        "moved 0 dead item(s) back to pending"
    );

    let running = shape.byok(&["queue", "purge", "--state", "running"]).await;
    assert_eq!(running.code, 1, "{name}: running items are refused");
    let purged = shape
        .byok(&["queue", "purge", "--state", "scheduled"])
        .await;
    assert_eq!(
        (purged.code, purged.stdout.trim()),
        (0, "purged 1 scheduled item(s)"),
        "{name}: {}",
        purged.stderr
    );
    let stats = shape.json(&["queue", "stats", "--json"]).await;
    assert_eq!(stats["queues"][0]["scheduled"], 0, "{name}");

    // One job with its history.
    shape.store.jobs().set_throttled(a).await.unwrap();
    let shown = shape.json(&["job", "show", &a.to_string(), "--json"]).await;
    assert_eq!(shown["job"]["id"], a.to_string());
    assert_eq!(shown["job"]["status"], "throttled");
    assert_eq!(shown["awaiting_push"], false, "{name}: pushed and taken");
    let history: Vec<&str> = shown["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(history, ["queued", "throttled"], "{name}");
    let human = shape.byok(&["job", "show", &a.to_string()]).await;
    assert_eq!(human.code, 0);
    assert!(
        human.stdout.contains("throttled") && human.stdout.contains("gen4.5"),
        "{name}: {}",
        human.stdout
    );
    assert!(
        human
            .stdout
            .contains("waiting for the key's rate-limit window"),
        "{name}: {}",
        human.stdout
    );
    let unknown = shape
        .byok(&["job", "show", &Uuid::new_v4().to_string()])
        .await;
    assert_eq!(unknown.code, 1, "{name}");

    // Usage errors are exit code 2.
    assert_eq!(
        shape.byok(&["queue", "list"]).await.code,
        2,
        "{name}: --state is required"
    );
    assert_eq!(
        shape.byok(&["queue", "retry"]).await.code,
        2,
        "{name}: ids or --all-dead"
    );
    assert_eq!(
        shape.byok(&["queue", "list", "--state", "done"]).await.code,
        2,
        "{name}"
    );
}

#[tokio::test]
async fn the_operator_cli_reads_and_repairs_the_embedded_queue() {
    operate(embedded().await).await;
}

#[tokio::test]
async fn the_operator_cli_reads_and_repairs_the_redis_queue() {
    let Some(shape) = distributed().await else {
        return;
    };
    operate(shape).await;
}

/// `byok usage`: the sums of the jobs' recorded usage, as a table and as the API's JSON,
/// on both databases; a bad flag is refused naming it.
async fn usage_report(shape: Shape) {
    let store = &shape.store;
    let user = Uuid::new_v4();
    let mut ended = Vec::new();
    for (model, cost) in [
        ("gen4.5", Some(500_000)),
        ("gen4.5", None),
        ("gen4_turbo", Some(250_000)),
    ] {
        let new = NewJob {
            project_id: DEFAULT_PROJECT_ID,
            user_id: user,
            provider: ProviderId::RUNWAY,
            model: model.into(),
            request: GenerationRequest {
                prompt: Some("x".to_owned()),
                ..GenerationRequest::new(user, ProviderId::RUNWAY, model)
            },
            metadata: json!({}),
            created_by_token: None,
            batch_id: None,
            idempotency: None,
            usage: UsagePlan {
                video_seconds: Some(5),
                resolution: None,
                estimated_cost: cost.map(Usd::from_micros),
            },
        };
        let Inserted::Created(job) = store.jobs().insert(&new).await.unwrap() else {
            panic!("a new job");
        };
        ended.push(job.id);
    }
    let result: JobResult =
        serde_json::from_value(json!({ "bytes": 1, "content_type": "video/mp4" })).unwrap();
    for id in &ended[..2] {
        assert!(store.jobs().begin_submit(*id).await.unwrap());
        assert!(store.jobs().submitted(*id, "task", 1).await.unwrap());
        assert!(store.jobs().succeed(*id, &result).await.unwrap());
    }
    store.jobs().cancel(ended[2], "not needed").await.unwrap();

    let report = shape
        .json(&[
            "usage",
            "--group-by",
            "model",
            "--project",
            "default",
            "--json",
        ])
        .await;
    assert_eq!(report["group_by"], "model", "{}", shape.name);
    assert_eq!(report["total"]["jobs"], 3, "{}: {report}", shape.name);
    assert_eq!(report["total"]["succeeded"], 2);
    assert_eq!(report["total"]["cost_usd"], 0.5, "{report}");
    assert_eq!(report["total"]["jobs_cost_unknown"], 1);
    let models: Vec<&str> = report["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["model"].as_str().unwrap())
        .collect();
    assert_eq!(models, ["gen4.5", "gen4_turbo"]);

    let table = shape.byok(&["usage", "--user", &user.to_string()]).await;
    assert_eq!(table.code, 0, "{}", table.stderr);
    let total = table
        .stdout
        .lines()
        .find(|l| l.starts_with("TOTAL"))
        .unwrap_or_else(|| panic!("{}: {}", shape.name, table.stdout));
    assert!(total.contains("0.5"), "{total}");

    let bad = shape.byok(&["usage", "--group-by", "week"]).await;
    assert_ne!(bad.code, 0);
    assert!(bad.stderr.contains("--group-by"), "{}", bad.stderr);
    let bad = shape.byok(&["usage", "--from", "yesterday"]).await;
    assert_ne!(bad.code, 0);
    assert!(bad.stderr.contains("--from"), "{}", bad.stderr);
}

#[tokio::test]
async fn byok_usage_sums_the_embedded_jobs() {
    usage_report(embedded().await).await;
}

#[tokio::test]
async fn byok_usage_sums_the_postgres_jobs() {
    let Some(shape) = distributed().await else {
        return;
    };
    usage_report(shape).await;
}
