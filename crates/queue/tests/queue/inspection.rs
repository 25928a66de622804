//! What operators see and repair: counts, listings, retry, purge — on
//! every engine.

use std::sync::Arc;
use std::time::Duration;

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

async fn inspection(q: &TestQueue) {
    on(q);
    let engine = q.engine(q.config()).await;
    let p = producer(&engine);

    // Two dead items first, from a worker.
    p.push("dead-1", &Item { act: Act::Abort }, Duration::ZERO)
        .await
        .unwrap();
    p.push("dead-2", &Item { act: Act::Abort }, Duration::ZERO)
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

    // Pending items, with the oldest one's age, while no worker runs.
    p.push("waiting-1", &Item { act: Act::Ok }, Duration::ZERO)
        .await
        .unwrap();
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
    assert!(stats.oldest_pending_seconds < 60);

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
        Kind::Redis => "0-1",
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
