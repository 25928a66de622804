//! A test worker: an apalis worker on our backend whose handler does what
//! each item says, and records every run.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apalis::prelude::*;
use byok_queue::{Delivery, Disposition, Engine, Producer, QueueBackend, QueueConfig, RedisEngine};
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

async fn handle(item: Item, delivery: Data<Delivery>, runs: Data<Runs>) -> Result<(), BoxDynError> {
    let attempt = delivery.attempt();
    let reschedules_done = runs.of(&delivery.item_id).len() as u32;
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
    }
}

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
