//! A test worker: an apalis worker on our backend whose handler does what
//! each item says, and records every run.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apalis::prelude::*;
use byok_queue::{
    Delivery, Disposition, Engine, Producer, QueueBackend, QueueConfig, RedisEngine, SqliteEngine,
};
use byok_testing::{TestRedis, TestSqlite};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// What the handler does with an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Act {
    /// Succeed.
    Ok,
    /// Reschedule (not an attempt) this many times, 50 ms apart, then succeed.
    Reschedule(u32),
    /// Fail with a plain error every time.
    Fail,
    /// Fail the first n attempts, then succeed.
    FailFirst(u32),
    /// Abort: dead at once.
    Abort,
    /// Take this many milliseconds, then succeed.
    Sleep(u64),
    /// Kill the whole process (a poison item).
    Crash,
    /// Panic in the handler (caught by apalis's catch-panic layer where a
    /// worker has it).
    Panic,
}

/// The item type of the tests.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Item {
    pub act: Act,
}

/// Every run the handler saw: (item id, attempt, deliveries).
#[derive(Debug, Default, Clone)]
pub struct Runs(pub Arc<Mutex<Vec<(String, u32, u32)>>>);

impl Runs {
    pub fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }
    pub fn of(&self, id: &str) -> Vec<(u32, u32)> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.0 == id)
            .map(|r| (r.1, r.2))
            .collect()
    }
    pub fn per_item(&self) -> HashMap<String, usize> {
        let mut out = HashMap::new();
        for r in self.0.lock().unwrap().iter() {
            *out.entry(r.0.clone()).or_default() += 1;
        }
        out
    }
}

/// The handler of every test worker.
pub async fn handle(
    item: Item,
    delivery: Data<Delivery>,
    runs: Data<Runs>,
) -> Result<(), BoxDynError> {
    let attempt = delivery.attempt();
    // Earlier runs of this item are counted only where needed: a scan of
    // every run per run would make large drains quadratic.
    let reschedules_done = match item.act {
        Act::Reschedule(_) => runs.of(&delivery.item_id).len() as u32,
        _ => 0,
    };
    runs.0
        .0
        .lock()
        .unwrap()
        .push((delivery.item_id.clone(), attempt, delivery.deliveries));
    match item.act {
        Act::Ok => Ok(()),
        Act::Reschedule(n) if reschedules_done < n => Err(Disposition::Reschedule {
            after: Duration::from_millis(50),
        }
        .into()),
        Act::Reschedule(_) => Ok(()),
        Act::Fail => Err("always fails".into()),
        Act::FailFirst(n) if attempt <= n => Err(format!("fails on attempt {attempt}").into()),
        Act::FailFirst(_) => Ok(()),
        Act::Abort => Err(AbortError::new("refused for good").into()),
        Act::Sleep(ms) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(())
        }
        Act::Crash => std::process::abort(),
        Act::Panic => panic!("{PANIC_MESSAGE}"),
    }
}

/// What a panicking handler says.
pub const PANIC_MESSAGE: &str = "the handler panicked on purpose";

/// A running worker; stops (gracefully) when dropped or `stop`ped.
pub struct TestWorker {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<()>>,
}

impl TestWorker {
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(done) = self.done.take() {
            tokio::time::timeout(Duration::from_secs(20), done)
                .await
                .expect("worker stops")
                .unwrap();
        }
    }
}

impl Drop for TestWorker {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Starts a worker on `engine` with `concurrency` slots.
pub fn start_worker(engine: Arc<dyn Engine>, runs: Runs, concurrency: usize) -> TestWorker {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = WorkerBuilder::new(format!("test-{}", std::process::id()))
        .backend(QueueBackend::<Item>::new(engine))
        .data(runs)
        .concurrency(concurrency)
        .build(handle);
    let signal = async move {
        let _ = stopped.await;
        Ok::<(), std::io::Error>(())
    };
    let run = worker.run_until(signal);
    let done = tokio::spawn(async move {
        run.await.expect("worker ran");
    });
    TestWorker {
        stop: Some(stop),
        done: Some(done),
    }
}

/// A config for tests: short timeouts so crash recovery is quick.
pub fn config(namespace: &str) -> QueueConfig {
    let mut c = QueueConfig::new(namespace);
    c.visibility_timeout = Duration::from_secs(2);
    c.retry_base = Duration::from_millis(20);
    c.max_retry_delay = Duration::from_millis(200);
    c.max_attempts = 3;
    c.block = Duration::from_millis(500);
    c
}

pub async fn redis_engine(url: &str, config: QueueConfig) -> Arc<dyn Engine> {
    RedisEngine::connect(url, config)
        .await
        .expect("connect to redis")
}

/// Opens the engine an engine spec names: `redis:<redis url>`, `redis/<partitions>:<redis
/// url>` or `sqlite:<sqlite url>` (what child worker processes receive), with `config`
/// as given ([`spec_config`] reads the partitions a spec names).
pub async fn engine_from_spec(spec: &str, config: QueueConfig) -> Arc<dyn Engine> {
    match spec.split_once(':') {
        Some(("redis", url)) => redis_engine(url, config).await,
        Some((redis, url)) if redis.starts_with("redis/") => redis_engine(url, config).await,
        Some(("sqlite", url)) => SqliteEngine::connect(url, config)
            .await
            .expect("open the sqlite queue"),
        _ => panic!("not an engine spec: {spec}"),
    }
}

/// The test config for `namespace` on the engine `spec` names, with the partitions it names.
pub fn spec_config(spec: &str, namespace: &str) -> QueueConfig {
    let mut config = config(namespace);
    if let Some(partitions) = spec
        .split_once(':')
        .and_then(|(kind, _)| kind.strip_prefix("redis/"))
    {
        config.partitions = partitions.parse().expect("a partition count");
    }
    config
}

/// The engine a [`TestQueue`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Redis,
    /// A Redis Cluster of three primaries and three replicas (`redis+cluster://…`), the
    /// queue spread over [`CLUSTER_PARTITIONS`] partitions.
    Cluster,
    Sqlite,
}

/// A queue of the test's own: a fresh namespace on the shared test Redis,
/// or a fresh, migrated SQLite file. Cleaned up when dropped.
#[derive(Debug)]
pub struct TestQueue {
    pub kind: Kind,
    /// `redis:<url>` or `sqlite:<url>`, for [`engine_from_spec`].
    pub spec: String,
    pub namespace: String,
    /// The SQLite URL (SQLite queues).
    pub sqlite_url: Option<String>,
    _redis: Option<TestRedis>,
    _sqlite: Option<TestSqlite>,
}

impl TestQueue {
    /// The test config for this queue's namespace (and its partitions).
    pub fn config(&self) -> QueueConfig {
        spec_config(&self.spec, &self.namespace)
    }

    pub async fn engine(&self, config: QueueConfig) -> Arc<dyn Engine> {
        engine_from_spec(&self.spec, config).await
    }

    /// SQLite: the rows this namespace has in `queue_items` (in `state`, or
    /// all). Completed items must leave none.
    pub async fn sqlite_rows(&self, state: Option<&str>) -> u64 {
        let url = self.sqlite_url.as_deref().expect("a sqlite queue");
        let pool = sqlx::SqlitePool::connect(url).await.expect("open sqlite");
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM queue_items WHERE namespace = ?1 AND (?2 IS NULL OR state = ?2)",
        )
        .bind(&self.namespace)
        .bind(state)
        .fetch_one(&pool)
        .await
        .expect("count rows");
        pool.close().await;
        u64::try_from(n).expect("a count")
    }
}

/// A fresh SQLite file with the store's migrations applied (which create
/// the queue table); always available.
pub async fn sqlite_queue() -> TestQueue {
    let db = byok_testing::test_sqlite();
    let store = byok_store::Store::connect(
        &SecretString::from(db.url.as_str()),
        &byok_store::StoreOptions::default(),
    )
    .await
    .expect("open the sqlite database");
    store.migrate().await.expect("migrate");
    store.close().await;
    TestQueue {
        kind: Kind::Sqlite,
        spec: format!("sqlite:{}", db.url),
        namespace: format!("test-{}", uuid::Uuid::new_v4().simple()),
        sqlite_url: Some(db.url.clone()),
        _redis: None,
        _sqlite: Some(db),
    }
}

/// A namespace of its own on the test Redis, or `None` (after a SKIPPED
/// line) when there is no Redis.
pub async fn redis_queue() -> Option<TestQueue> {
    let redis = byok_testing::test_redis().await?;
    Some(TestQueue {
        kind: Kind::Redis,
        spec: format!("redis:{}", redis.url),
        namespace: redis.namespace.clone(),
        sqlite_url: None,
        _redis: Some(redis),
        _sqlite: None,
    })
}

/// The partitions of a queue on the test cluster: more than its three shards, so the suite
/// runs every behaviour across partitions, and some shard serves two.
pub const CLUSTER_PARTITIONS: usize = 4;

/// A namespace of its own on the test process's Redis Cluster, or `None` (after a SKIPPED
/// line) when no cluster can be started.
pub fn cluster_queue() -> Option<TestQueue> {
    let url = byok_testing::shared_redis_cluster()?;
    Some(TestQueue {
        kind: Kind::Cluster,
        spec: format!("redis/{CLUSTER_PARTITIONS}:{url}"),
        namespace: format!("test-{}", uuid::Uuid::new_v4().simple()),
        sqlite_url: None,
        _redis: None,
        _sqlite: None,
    })
}

/// A queue on every engine available: SQLite always, Redis and a Redis Cluster when they
/// can be had. Tests of engine-independent behaviour run their body on each.
pub async fn queues() -> Vec<TestQueue> {
    let mut queues = vec![sqlite_queue().await];
    queues.extend(redis_queue().await);
    queues.extend(cluster_queue());
    queues
}

/// Announces which engine the following assertions are about (test output
/// is shown on failure).
pub fn on(q: &TestQueue) {
    eprintln!("--- on {:?} ({})", q.kind, q.namespace);
}

pub fn producer(engine: &Arc<dyn Engine>) -> Producer<Item> {
    Producer::new(Arc::clone(engine))
}

/// Waits until `cond` holds or `deadline` passes; true if it held.
pub async fn eventually<F: FnMut() -> bool>(deadline: Duration, mut cond: F) -> bool {
    let start = Instant::now();
    while start.elapsed() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cond()
}

/// Like [`eventually`] with an async condition.
pub async fn eventually_async<F, Fut>(deadline: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < deadline {
        if cond().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond().await
}
