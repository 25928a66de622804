//! A worker in a process of its own, for the tests that kill workers.
//!
//! The test binary starts itself again with `--exact child::worker_process
//! --ignored` and `BYOK_QUEUE_CHILD` set; the run below then serves a queue
//! (on either engine: the spec says which; a SQLite file is shared with the
//! parent) until it is killed, or kills itself on a poison item. It records
//! every run by appending the item id to a file, which works whatever the
//! engine and survives the process's death.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use apalis::prelude::*;
use byok_queue::{Delivery, QueueBackend};
use byok_testing::ChildGuard;

use crate::harness::{Item, TestQueue, engine_from_spec, spec_config};

/// How a child's handler behaves.
#[derive(Debug, Clone, Copy)]
pub enum ChildMode {
    /// Every item runs forever (until the process is killed).
    Hang,
    /// Every item kills the process.
    Crash,
}

/// Starts a child worker process on `queue`, recording its runs in `runs`.
pub fn spawn_child(queue: &TestQueue, runs: &Path, mode: ChildMode) -> ChildGuard {
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
        .env("BYOK_QUEUE_CHILD_ENGINE", &queue.spec)
        .env("BYOK_QUEUE_CHILD_NS", &queue.namespace)
        .env("BYOK_QUEUE_CHILD_RUNS", runs)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn child worker");
    ChildGuard::new(child)
}

/// How many times child workers ran `id`, per their run file.
pub fn child_runs(runs: &Path, id: &str) -> u64 {
    std::fs::read_to_string(runs)
        .unwrap_or_default()
        .lines()
        .filter(|line| *line == id)
        .count() as u64
}

async fn child_handle(
    _item: Item,
    delivery: Data<Delivery>,
    target: Data<(PathBuf, String)>,
) -> Result<(), BoxDynError> {
    let (runs, mode) = &*target;
    // One write(2) of one line, complete before the process can die.
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(runs)?
        .write_all(format!("{}\n", delivery.item_id).as_bytes())?;
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
    let (Ok(mode), Ok(spec), Ok(namespace), Some(runs)) = (
        std::env::var("BYOK_QUEUE_CHILD"),
        std::env::var("BYOK_QUEUE_CHILD_ENGINE"),
        std::env::var("BYOK_QUEUE_CHILD_NS"),
        std::env::var_os("BYOK_QUEUE_CHILD_RUNS"),
    ) else {
        return;
    };
    let engine = engine_from_spec(&spec, spec_config(&spec, &namespace)).await;
    let worker = WorkerBuilder::new(format!("child-{}", std::process::id()))
        .backend(QueueBackend::<Item>::new(engine))
        .data((PathBuf::from(runs), mode))
        .concurrency(4)
        .build(child_handle);
    worker.run().await.expect("child worker");
}
