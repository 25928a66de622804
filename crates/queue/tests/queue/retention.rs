//! What stays behind after a large drain: in Redis no per-item keys, in
//! SQLite no rows, and nothing beyond the retention limits.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use byok_queue::ItemState;

use crate::harness::{
    Act, Item, Runs, config, eventually, eventually_async, producer, redis_engine, sqlite_queue,
    start_worker,
};

#[tokio::test]
async fn a_100k_backlog_drains_and_leaves_no_per_item_keys() {
    // Redis only: the SQLite counterpart is below.
    let Some(redis) = byok_testing::test_redis().await else {
        return;
    };
    let mut cfg = config(&redis.namespace);
    cfg.visibility_timeout = Duration::from_secs(30);
    let engine = redis_engine(&redis.url, cfg).await;
    let item = Item { act: Act::Ok };
    let ids: Vec<String> = (0..100_000).map(|i| format!("bulk-{i}")).collect();
    for chunk in ids.chunks(5000) {
        producer(&engine)
            .push_bulk(chunk.iter().map(|id| (id.as_str(), &item)))
            .await
            .unwrap();
    }
    assert_eq!(engine.stats().await.unwrap().pending, 100_000);

    let runs = Runs::default();
    let worker = start_worker(engine.clone(), runs.clone(), 64);
    assert!(
        eventually(Duration::from_secs(240), || runs.count() >= 100_000).await,
        "drained {}",
        runs.count()
    );
    worker.stop().await;
    assert_eq!(runs.per_item().len(), 100_000);

    let client = redis::Client::open(redis.url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    // SCAN is fine here: a test inspecting its own namespace, not the product.
    let mut keys: Vec<String> = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{{{}}}*", redis.namespace))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .unwrap();
        keys.extend(batch);
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    keys.sort();
    assert_eq!(
        keys,
        [format!("{{{}}}:jobs", redis.namespace)],
        "only the stream remains"
    );
    let len: u64 = redis::cmd("XLEN")
        .arg(&keys[0])
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(len, 0, "acknowledged entries are deleted");
    let groups: Vec<redis::Value> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(&keys[0])
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(groups.len(), 1);
    let consumers: Vec<redis::Value> = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(&keys[0])
        .arg("workers")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(consumers.is_empty(), "the stopped worker left the group");
    let memory: u64 = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(&keys[0])
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        memory < 64 * 1024,
        "the empty stream is small: {memory} bytes"
    );
}

#[tokio::test]
async fn a_20k_sqlite_drain_leaves_no_rows_and_dead_rows_stay_capped() {
    let q = sqlite_queue().await;
    let mut cfg = q.config();
    cfg.visibility_timeout = Duration::from_secs(30);
    cfg.dead_retention = 100;
    let engine = q.engine(cfg).await;
    let item = Item { act: Act::Ok };
    let ids: Vec<String> = (0..20_000).map(|i| format!("bulk-{i}")).collect();
    let pushed_at = Instant::now();
    for chunk in ids.chunks(5000) {
        producer(&engine)
            .push_bulk(chunk.iter().map(|id| (id.as_str(), &item)))
            .await
            .unwrap();
    }
    let push_time = pushed_at.elapsed();
    assert_eq!(engine.stats().await.unwrap().pending, 20_000);

    let runs = Runs::default();
    let started = Instant::now();
    let worker = start_worker(engine.clone(), runs.clone(), 64);
    assert!(
        eventually(Duration::from_secs(240), || runs.count() >= 20_000).await,
        "drained {}",
        runs.count()
    );
    let drain_time = started.elapsed();
    // A figure, not a claim (byok-bench measures properly): printed with --nocapture.
    println!(
        "sqlite: pushed 20000 items in {push_time:.2?} ({:.0}/s); one worker at concurrency 64 drained them in {drain_time:.2?} ({:.0} items/s, {} build)",
        20_000.0 / push_time.as_secs_f64(),
        20_000.0 / drain_time.as_secs_f64(),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
    );
    let per_item = runs.per_item();
    assert_eq!(per_item.len(), 20_000);
    assert!(per_item.values().all(|&n| n == 1), "each item exactly once");
    assert!(
        eventually_async(Duration::from_secs(10), || async {
            q.sqlite_rows(None).await == 0
        })
        .await,
        "completed items leave no rows ({} left)",
        q.sqlite_rows(None).await
    );

    // 300 aborted items: only the newest 100 dead rows are kept.
    let abort = Item { act: Act::Abort };
    let doomed: Vec<String> = (0..300).map(|i| format!("doomed-{i}")).collect();
    producer(&engine)
        .push_bulk(doomed.iter().map(|id| (id.as_str(), &abort)))
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(30), || runs.count() >= 20_300).await,
        "ran {}",
        runs.count()
    );
    assert!(
        eventually_async(Duration::from_secs(10), || async {
            engine.stats().await.unwrap().pending == 0 && q.sqlite_rows(Some("running")).await == 0
        })
        .await
    );
    worker.stop().await;
    assert_eq!(q.sqlite_rows(Some("dead")).await, 100);
    assert_eq!(q.sqlite_rows(None).await, 100, "dead rows only");
    assert_eq!(engine.stats().await.unwrap().dead, 100);
    assert_eq!(engine.list(ItemState::Dead, 1000).await.unwrap().len(), 100);
    assert_eq!(engine.purge(ItemState::Dead).await.unwrap(), 100);
    assert_eq!(q.sqlite_rows(None).await, 0);
}

#[tokio::test]
async fn the_redis_dead_stream_stays_within_dead_retention() {
    let Some(redis) = byok_testing::test_redis().await else {
        return;
    };
    let mut cfg = config(&redis.namespace);
    cfg.dead_retention = 100;
    let engine = redis_engine(&redis.url, cfg).await;
    let client = redis::Client::open(redis.url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    // `MAXLEN ~` trims whole stream nodes only: the stream keeps at least
    // `dead_retention` entries and fewer than one node more.
    let (_, node_entries): (String, u64) = redis::cmd("CONFIG")
        .arg("GET")
        .arg("stream-node-max-entries")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(node_entries > 0, "nodes of bounded size");
    let (low, high) = (100, 100 + node_entries - 1);
    let dead_key = format!("{{{}}}:dead", redis.namespace);

    let abort = Item { act: Act::Abort };
    let doomed: Vec<String> = (0..1_000).map(|i| format!("doomed-{i}")).collect();
    producer(&engine)
        .push_bulk(doomed.iter().map(|id| (id.as_str(), &abort)))
        .await
        .unwrap();
    let runs = Runs::default();
    let worker = start_worker(engine.clone(), runs.clone(), 64);
    // Watch the dead stream while the items die.
    let most = AtomicU64::new(0);
    let drained = eventually_async(Duration::from_secs(60), || {
        let mut conn = conn.clone();
        let (dead_key, engine, runs, most) = (&dead_key, &engine, &runs, &most);
        async move {
            let len: u64 = redis::cmd("XLEN")
                .arg(dead_key)
                .query_async(&mut conn)
                .await
                .unwrap();
            most.fetch_max(len, Ordering::Relaxed);
            let s = engine.stats().await.unwrap();
            runs.count() >= 1_000 && (s.pending, s.running) == (0, 0)
        }
    })
    .await;
    worker.stop().await;
    assert!(drained, "ran {}", runs.count());
    assert_eq!(runs.per_item().len(), 1_000, "every item ran once");

    let len: u64 = redis::cmd("XLEN")
        .arg(&dead_key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        (low..=high).contains(&len),
        "{len} dead entries kept; expected {low}..={high}"
    );
    let most = most.into_inner();
    assert!(most <= high, "at most {high} at any time; saw {most}");
    assert_eq!(engine.stats().await.unwrap().dead, len);
    let dead = engine.list(ItemState::Dead, 1000).await.unwrap();
    assert_eq!(dead.len() as u64, len);
    assert!(dead.iter().all(|d| d.item_id.starts_with("doomed-")));
}
