//! What only the SQLite engine has: a schema to check, rows anyone may have
//! edited, and its own wake-up for delayed items.

use std::sync::Arc;
use std::time::{Duration, Instant};

use byok_queue::{Engine, ItemState, QueueError, SqliteEngine};

use crate::harness::{
    Act, Item, Runs, config, eventually_async, producer, sqlite_queue, start_worker,
};

#[tokio::test]
async fn opening_a_database_without_the_queue_table_says_to_run_migrations() {
    let db = byok_testing::test_sqlite();
    let err = SqliteEngine::connect(&db.url, config("q"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, QueueError::Invalid(m) if m.contains("queue_items") && m.contains("run migrations")),
        "{err}"
    );
}

/// Rows written by hand with odd values (out-of-range counts, a payload
/// that is not UTF-8, an empty id, a lease long expired with an absurd
/// delivery count): the engine reads them without failing, the worker
/// dead-letters what it cannot run and runs the rest.
#[tokio::test]
async fn odd_rows_are_read_without_failing() {
    let q = sqlite_queue().await;
    let engine = q.engine(q.config()).await;
    let pool = sqlx::SqlitePool::connect(q.sqlite_url.as_deref().unwrap())
        .await
        .unwrap();
    let ok = serde_json::to_string(&Item { act: Act::Ok }).unwrap();
    for (id, payload, state, attempts, deliveries, lease) in [
        ("negative", ok.as_str(), "ready", -5i64, -3i64, None),
        ("huge", ok.as_str(), "ready", 9_999_999_999, 0, None),
        ("", ok.as_str(), "ready", 0, 0, None),
        ("poisoned", ok.as_str(), "running", 0, i64::MAX, Some(0i64)),
    ] {
        sqlx::query(
            "INSERT INTO queue_items (namespace, item_id, payload, state, run_at, attempts,
                                      deliveries, lease_owner, lease_until, enqueued_at)
             VALUES (?1, ?2, ?3, ?4, 0, ?5, ?6, CASE WHEN ?7 IS NOT NULL THEN 'gone' END, ?7, 0)",
        )
        .bind(&q.namespace)
        .bind(id)
        .bind(payload)
        .bind(state)
        .bind(attempts)
        .bind(deliveries)
        .bind(lease)
        .execute(&pool)
        .await
        .unwrap();
    }
    sqlx::query(
        "INSERT INTO queue_items (namespace, item_id, payload, state, run_at, enqueued_at)
         VALUES (?1, 'not-utf8', X'FF00FE', 'ready', 0, 0)",
    )
    .bind(&q.namespace)
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;

    let stats = engine.stats().await.unwrap();
    assert_eq!((stats.pending, stats.running), (4, 1), "{stats:?}");
    for state in ItemState::ALL {
        engine.list(state, 10).await.unwrap();
    }

    let runs = Runs::default();
    let worker = start_worker(engine.clone(), runs.clone(), 4);
    assert!(
        eventually_async(Duration::from_secs(10), || async {
            let s = engine.stats().await.unwrap();
            (s.pending, s.running, s.dead) == (0, 0, 3)
        })
        .await,
        "{:?}",
        engine.stats().await.unwrap()
    );
    worker.stop().await;
    let ran: Vec<String> = runs.per_item().into_keys().collect();
    assert_eq!(ran.len(), 2, "{ran:?}");
    assert!(ran.contains(&"negative".to_owned()) && ran.contains(&"huge".to_owned()));
    assert_eq!(
        runs.of("negative"),
        [(1, 1)],
        "a negative count reads as none"
    );
    let dead = engine.list(ItemState::Dead, 10).await.unwrap();
    let reasons: Vec<(&str, &str)> = dead
        .iter()
        .map(|d| (d.item_id.as_str(), d.error.as_deref().unwrap_or("")))
        .collect();
    assert!(
        reasons
            .iter()
            .any(|(id, e)| id.is_empty() && e.contains("malformed")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|(id, e)| *id == "not-utf8" && e.contains("undecodable")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|(id, e)| *id == "poisoned" && e.contains("without finishing")),
        "{reasons:?}"
    );
}

#[tokio::test]
async fn a_blocked_fetch_wakes_when_a_delayed_item_falls_due() {
    let q = sqlite_queue().await;
    let mut cfg = q.config();
    cfg.block = Duration::from_secs(20);
    let engine: Arc<dyn Engine> = q.engine(cfg).await;
    let pushed = Instant::now();
    producer(&engine)
        .push("soon", &Item { act: Act::Ok }, Duration::from_millis(300))
        .await
        .unwrap();
    // No keeper and no push: only the fetch's own wake-up can deliver it
    // before the block time ends.
    let consumer = engine.consumer("waiter").await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), consumer.fetch(10))
        .await
        .expect("woken long before the 20 s block time")
        .unwrap();
    assert_eq!(got.len(), 1);
    assert!(
        pushed.elapsed() >= Duration::from_millis(300),
        "not before its time"
    );
}
