//! A worker in a process of its own, for the tests that kill workers.
//!
//! The test binary starts itself again with `--exact child::worker_process
//! --ignored` and `BYOK_QUEUE_CHILD` set; the run below then serves a queue
//! until it is killed (or kills itself on a poison item).

use std::time::Duration;

use apalis::prelude::*;
use byok_queue::{Delivery, QueueBackend};
use byok_testing::ChildGuard;

use crate::harness::{Item, config, redis_engine};

/// The key where child workers count their runs per item.
pub fn runs_key(namespace: &str) -> String {
    format!("{{{namespace}}}:test-runs")
}

/// How a child's handler behaves.
#[derive(Debug, Clone, Copy)]
pub enum ChildMode {
    /// Every item runs forever (until the process is killed).
    Hang,
    /// Every item kills the process.
    Crash,
}

/// Starts a child worker process on `namespace` at `url`.
pub fn spawn_child(url: &str, namespace: &str, mode: ChildMode) -> ChildGuard {
    let exe = std::env::current_exe().expect("test executable");
    let child = std::process::Command::new(exe)
        .args([
            "--exact",
            "child::worker_process",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(
            "BYOK_QUEUE_CHILD",
            match mode {
                ChildMode::Hang => "hang",
                ChildMode::Crash => "crash",
            },
        )
        .env("BYOK_QUEUE_CHILD_URL", url)
        .env("BYOK_QUEUE_CHILD_NS", namespace)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn child worker");
    ChildGuard::new(child)
}

async fn child_handle(
    _item: Item,
    delivery: Data<Delivery>,
    target: Data<(String, String, String)>,
) -> Result<(), BoxDynError> {
    let (url, namespace, mode) = &*target;
    let client = redis::Client::open(url.as_str())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let _: i64 = redis::cmd("HINCRBY")
        .arg(runs_key(namespace))
        .arg(&delivery.item_id)
        .arg(1)
        .query_async(&mut conn)
        .await?;
    if mode == "crash" {
        std::process::abort();
    }
    // Hang: a run that outlives its process.
    tokio::time::sleep(Duration::from_secs(3600)).await;
    Ok(())
}

#[tokio::test]
#[ignore = "entry point of the worker process that the crash tests start and kill; it does nothing when run by itself"]
async fn worker_process() {
    let (Ok(mode), Ok(url), Ok(namespace)) = (
        std::env::var("BYOK_QUEUE_CHILD"),
        std::env::var("BYOK_QUEUE_CHILD_URL"),
        std::env::var("BYOK_QUEUE_CHILD_NS"),
    ) else {
        return;
    };
    let engine = redis_engine(&url, config(&namespace)).await;
    let worker = WorkerBuilder::new(format!("child-{}", std::process::id()))
        .backend(QueueBackend::<Item>::new(engine))
        .data((url, namespace, mode))
        .concurrency(4)
        .build(child_handle);
    worker.run().await.expect("child worker");
}
