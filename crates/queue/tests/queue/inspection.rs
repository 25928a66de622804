//! What operators see and repair: counts, listings, retry, purge — on
//! every engine.

use std::sync::Arc;
use std::time::{Duration, Instant};

use byok_queue::{Engine, ItemState, SqliteEngine};

use crate::harness::{
    Act, Item, Kind, Runs, TestQueue, config, eventually, eventually_async, on, producer, queues,
    sqlite_queue, start_worker,
};

#[tokio::test]
async fn counts_listings_retry_and_purge() {
    for q in queues().await {
        inspection(&q).await;
    }
}

/// Waits until this machine's clock is past `at_ms`, an item's stamp: every
/// engine stamps in milliseconds of this clock (Redis runs on the same
/// machine), so an item written after this gets a later stamp.
async fn clock_passes(at_ms: u64) {
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    };
    assert!(
        eventually(Duration::from_secs(2), || now_ms() > at_ms).await,
        "the clock is at {} ms, not past {at_ms}",
        now_ms()
    );
}

async fn inspection(q: &TestQueue) {
    on(q);
    let engine = q.engine(q.config()).await;
    let p = producer(&engine);

    // Two dead items first, from a worker, one after the other: deaths are
    // stamped in milliseconds, and two in the same millisecond (in different
    // partitions) have no order to assert.
    p.push("dead-1", &Item { act: Act::Abort }, Duration::ZERO)
        .await
        .unwrap();
    p.push(
        "busy",
        &Item {
            act: Act::Sleep(2_500),
        },
        Duration::ZERO,
    )
    .await
    .unwrap();
    let runs = Runs::default();
    let worker = start_worker(engine.clone(), runs.clone(), 4);
    assert!(
        eventually_async(Duration::from_secs(5), || async {
            engine.stats().await.unwrap().dead == 1
        })
        .await
    );
    let dead_1 = engine.list(ItemState::Dead, 10).await.unwrap();
    clock_passes(dead_1[0].at_ms).await;
    p.push("dead-2", &Item { act: Act::Abort }, Duration::ZERO)
        .await
        .unwrap();
    assert!(eventually(Duration::from_secs(5), || runs.count() == 3).await);
    assert!(
        eventually_async(Duration::from_secs(5), || async {
            engine.stats().await.unwrap().dead == 2
        })
        .await
    );

    // Then items waiting in each state.
    for i in 0..3 {
        p.push(&format!("due-{i}"), &Item { act: Act::Ok }, Duration::ZERO)
            .await
            .unwrap();
    }
    p.push("later-1", &Item { act: Act::Ok }, Duration::from_secs(3600))
        .await
        .unwrap();
    p.push("later-2", &Item { act: Act::Ok }, Duration::from_secs(7200))
        .await
        .unwrap();
    // The worker is busy with `busy` only; the due items run at once, so
    // stop it before counting pending ones.
    assert!(eventually(Duration::from_secs(5), || runs.count() == 6).await);
    // A run is recorded when its handler returns, before the engine has
    // acknowledged it, so wait for the engine's own count to settle.
    assert!(
        eventually_async(Duration::from_secs(5), || async {
            engine.stats().await.unwrap().running == 1
        })
        .await,
        "{:?}",
        engine.stats().await.unwrap()
    );

    let stats = engine.stats().await.unwrap();
    assert_eq!(
        (stats.running, stats.scheduled, stats.dead),
        (1, 2, 2),
        "{stats:?}"
    );
    assert_eq!(stats.name, q.namespace);

    let running = engine.list(ItemState::Running, 10).await.unwrap();
    assert_eq!(running.len(), 1);
    assert_eq!(running[0].item_id, "busy");
    assert!(running[0].consumer.as_deref().unwrap().starts_with("test-"));
    assert_eq!(running[0].deliveries, 1);
    // The worker is seen, holding its one item.
    let workers = engine.workers().await.unwrap();
    assert_eq!(workers.len(), 1, "{workers:?}");
    assert_eq!(
        Some(workers[0].name.as_str()),
        running[0].consumer.as_deref()
    );
    assert_eq!(workers[0].running, 1);
    assert!(workers[0].idle_ms < 60_000, "{workers:?}");

    let scheduled = engine.list(ItemState::Scheduled, 10).await.unwrap();
    assert_eq!(
        scheduled
            .iter()
            .map(|s| s.item_id.as_str())
            .collect::<Vec<_>>(),
        ["later-1", "later-2"],
        "soonest first"
    );

    let dead = engine.list(ItemState::Dead, 10).await.unwrap();
    assert_eq!(
        dead.iter().map(|d| d.item_id.as_str()).collect::<Vec<_>>(),
        ["dead-2", "dead-1"],
        "newest first"
    );
    // Stopping lets `busy` finish.
    worker.stop().await;
    assert_eq!(
        engine.workers().await.unwrap(),
        [],
        "a worker that stopped has left"
    );

    // Pending items, with the oldest one's age, while no worker runs.
    let first_pushed = Instant::now();
    p.push("waiting-1", &Item { act: Act::Ok }, Duration::ZERO)
        .await
        .unwrap();
    // As above: a later millisecond, so the two have an order.
    let waiting_1 = engine.list(ItemState::Pending, 10).await.unwrap();
    assert_eq!(waiting_1.len(), 1, "{waiting_1:?}");
    clock_passes(waiting_1[0].at_ms).await;
    p.push("waiting-2", &Item { act: Act::Ok }, Duration::ZERO)
        .await
        .unwrap();
    let stats = engine.stats().await.unwrap();
    assert_eq!((stats.pending, stats.running), (2, 0), "{stats:?}");
    let pending = engine.list(ItemState::Pending, 10).await.unwrap();
    assert_eq!(
        pending
            .iter()
            .map(|p| p.item_id.as_str())
            .collect::<Vec<_>>(),
        ["waiting-1", "waiting-2"]
    );
    // The age grows while the items wait, and never beyond their wait.
    assert!(
        eventually_async(Duration::from_secs(10), || async {
            engine.stats().await.unwrap().oldest_pending_seconds >= 1
        })
        .await,
        "{:?}",
        engine.stats().await.unwrap()
    );
    let age = engine.stats().await.unwrap().oldest_pending_seconds;
    assert!(
        (1..=first_pushed.elapsed().as_secs()).contains(&age),
        "{age} s, {:?} after the push",
        first_pushed.elapsed()
    );

    // Retry one dead item by reference, then the rest.
    assert_eq!(
        engine
            .retry_dead(Some(&[dead[0].reference.clone()]))
            .await
            .unwrap(),
        1
    );
    // A reference of the engine's own form that names nothing is no error;
    // something that is no reference at all is.
    let unknown = match q.kind {
        Kind::Redis | Kind::Cluster => "0-1",
        Kind::Sqlite => "999999999",
    };
    assert_eq!(
        engine
            .retry_dead(Some(&[unknown.to_owned()]))
            .await
            .unwrap(),
        0,
        "unknown reference"
    );
    assert!(
        engine
            .retry_dead(Some(&["not-a-reference".to_owned()]))
            .await
            .is_err()
    );
    assert_eq!(engine.stats().await.unwrap().dead, 1);
    assert_eq!(engine.retry_dead(None).await.unwrap(), 1);
    let stats = engine.stats().await.unwrap();
    assert_eq!((stats.pending, stats.dead), (4, 0));
    let retried = engine.list(ItemState::Pending, 10).await.unwrap();
    assert!(
        retried
            .iter()
            .filter(|i| i.item_id.starts_with("dead-"))
            .all(|i| i.attempts == 0),
        "fresh attempts"
    );

    // Purge each state.
    assert!(
        engine.purge(ItemState::Running).await.is_err(),
        "running items are refused"
    );
    assert_eq!(engine.purge(ItemState::Pending).await.unwrap(), 4);
    assert_eq!(engine.purge(ItemState::Scheduled).await.unwrap(), 2);
    p.push("dead-3", &Item { act: Act::Abort }, Duration::ZERO)
        .await
        .unwrap();
    let runs = Runs::default();
    let worker = start_worker(engine.clone(), runs.clone(), 1);
    assert!(
        eventually_async(Duration::from_secs(5), || async {
            engine.stats().await.unwrap().dead == 1
        })
        .await
    );
    worker.stop().await;
    assert_eq!(engine.purge(ItemState::Dead).await.unwrap(), 1);
    let stats = engine.stats().await.unwrap();
    assert_eq!(
        (stats.pending, stats.scheduled, stats.running, stats.dead),
        (0, 0, 0, 0)
    );
    if q.kind == Kind::Sqlite {
        assert_eq!(q.sqlite_rows(None).await, 0, "nothing left");
    }
}

#[tokio::test]
async fn the_oldest_pending_age_is_the_oldest_due_items() {
    for q in queues().await {
        oldest_pending_age(&q).await;
    }
}

/// An item written straight into the queue as if it had fallen due 90 s
/// ago, then a fresh one: the age is the old one's.
async fn oldest_pending_age(q: &TestQueue) {
    on(q);
    let engine = q.engine(q.config()).await;
    let payload = serde_json::to_string(&Item { act: Act::Ok }).unwrap();
    match q.kind {
        Kind::Redis | Kind::Cluster => {
            let (_, url) = q.spec.split_once(':').unwrap();
            let timeouts = byok_redis::Timeouts {
                connect: Duration::from_secs(5),
                response: Duration::from_secs(5),
            };
            let mut conn = byok_redis::RedisConn::open_url(url, timeouts)
                .await
                .unwrap();
            let (secs, micros): (u64, u64) =
                redis::cmd("TIME").query_async(&mut conn).await.unwrap();
            let old_ms = secs * 1000 + micros / 1000 - 90_000;
            // The stream is empty (the namespace is fresh), so an entry id
            // from the past is accepted.
            let _: String = redis::cmd("XADD")
                .arg(format!("{{{}}}:jobs", q.namespace))
                .arg(format!("{old_ms}-0"))
                .arg("i")
                .arg("old")
                .arg("a")
                .arg(0)
                .arg("p")
                .arg(&payload)
                .query_async(&mut conn)
                .await
                .unwrap();
        }
        Kind::Sqlite => {
            let pool = sqlx::SqlitePool::connect(q.sqlite_url.as_deref().unwrap())
                .await
                .unwrap();
            let old_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as i64
                - 90_000;
            sqlx::query(
                "INSERT INTO queue_items (namespace, item_id, payload, state, run_at, enqueued_at)
                 VALUES (?1, 'old', ?2, 'ready', ?3, ?3)",
            )
            .bind(&q.namespace)
            .bind(&payload)
            .bind(old_ms)
            .execute(&pool)
            .await
            .unwrap();
            pool.close().await;
        }
    }
    producer(&engine)
        .push("new", &Item { act: Act::Ok }, Duration::ZERO)
        .await
        .unwrap();
    let stats = engine.stats().await.unwrap();
    assert_eq!(stats.pending, 2, "{stats:?}");
    assert!(
        (90..=100).contains(&stats.oldest_pending_seconds),
        "{stats:?}"
    );
    let pending = engine.list(ItemState::Pending, 10).await.unwrap();
    assert_eq!(
        pending
            .iter()
            .map(|p| p.item_id.as_str())
            .collect::<Vec<_>>(),
        ["old", "new"],
        "oldest first"
    );

    // The hand-written item is an ordinary one: it runs.
    let runs = Runs::default();
    let worker = start_worker(engine.clone(), runs.clone(), 2);
    assert!(
        eventually(Duration::from_secs(10), || runs.of("old").len() == 1
            && runs.of("new").len() == 1)
        .await
    );
    worker.stop().await;
    let stats = engine.stats().await.unwrap();
    assert_eq!(
        (stats.pending, stats.running, stats.oldest_pending_seconds),
        (0, 0, 0),
        "{stats:?}"
    );
}

#[tokio::test]
async fn namespaces_share_a_sqlite_file_without_seeing_each_other() {
    let q = sqlite_queue().await;
    let url = q.sqlite_url.clone().unwrap();
    let mine = q.engine(q.config()).await;
    let theirs: Arc<dyn Engine> = SqliteEngine::connect(&url, config("another-queue"))
        .await
        .unwrap();
    producer(&mine)
        .push("mine", &Item { act: Act::Ok }, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(theirs.stats().await.unwrap().pending, 0);
    assert!(
        theirs
            .list(ItemState::Pending, 10)
            .await
            .unwrap()
            .is_empty()
    );

    let runs = Runs::default();
    let worker = start_worker(theirs.clone(), runs.clone(), 2);
    producer(&theirs)
        .push("theirs", &Item { act: Act::Ok }, Duration::ZERO)
        .await
        .unwrap();
    assert!(eventually(Duration::from_secs(5), || runs.of("theirs").len() == 1).await);
    worker.stop().await;
    assert!(
        runs.of("mine").is_empty(),
        "a worker serves its own namespace only"
    );
    assert_eq!(mine.stats().await.unwrap().pending, 1);
    assert_eq!(theirs.purge(ItemState::Pending).await.unwrap(), 0);
    assert_eq!(mine.stats().await.unwrap().pending, 1);
}
