//! Delivery, attempts, reschedules and dead letters, on every engine.

use std::sync::Arc;
use std::time::{Duration, Instant};

use byok_queue::{Consumer, Delivery, Engine, ItemState, NewItem, Settlement};

use crate::harness::{
    Act, Item, Kind, Runs, TestQueue, eventually, eventually_async, on, producer, queues,
    start_worker,
};

#[tokio::test]
async fn every_item_runs_once_and_nothing_is_left() {
    for q in queues().await {
        every_item_once(&q).await;
    }
}

async fn every_item_once(q: &TestQueue) {
    on(q);
    let engine = q.engine(q.config()).await;
    let ids: Vec<String> = (0..200).map(|i| format!("item-{i}")).collect();
    let item = Item { act: Act::Ok };
    producer(&engine)
        .push_bulk(ids.iter().map(|id| (id.as_str(), &item)))
        .await
        .unwrap();
    assert_eq!(engine.stats().await.unwrap().pending, 200);

    let runs = Runs::default();
    let worker = start_worker(engine.clone(), runs.clone(), 16);
    assert!(
        eventually(Duration::from_secs(20), || runs.count() >= 200).await,
        "ran {}",
        runs.count()
    );
    worker.stop().await;

    let per_item = runs.per_item();
    assert_eq!(per_item.len(), 200);
    assert!(per_item.values().all(|&n| n == 1), "each item exactly once");
    let stats = engine.stats().await.unwrap();
    assert_eq!(
        (stats.pending, stats.running, stats.scheduled, stats.dead),
        (0, 0, 0, 0),
        "{stats:?}"
    );
    if q.kind == Kind::Sqlite {
        assert_eq!(
            q.sqlite_rows(None).await,
            0,
            "completed items leave no rows"
        );
    }
}

#[tokio::test]
async fn a_reschedule_is_not_an_attempt_and_holds_no_slot() {
    for q in queues().await {
        reschedule(&q).await;
    }
}

async fn reschedule(q: &TestQueue) {
    on(q);
    let engine = q.engine(q.config()).await;
    let p = producer(&engine);
    p.push(
        "polling",
        &Item {
            act: Act::Reschedule(4),
        },
        Duration::ZERO,
    )
    .await
    .unwrap();
    let runs = Runs::default();
    // One slot: the other item can only run while the first waits between
    // reschedules, which is the point.
    let worker = start_worker(engine.clone(), runs.clone(), 1);
    assert!(eventually(Duration::from_secs(5), || runs.of("polling").len() == 1).await);
    p.push("other", &Item { act: Act::Ok }, Duration::ZERO)
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || runs.of("polling").len() == 5
            && runs.of("other").len() == 1)
        .await
    );
    worker.stop().await;

    let polling = runs.of("polling");
    assert!(
        polling.iter().all(|&(attempt, _)| attempt == 1),
        "never counted: {polling:?}"
    );
    let order: Vec<String> = runs.0.lock().unwrap().iter().map(|r| r.0.clone()).collect();
    let other_at = order.iter().position(|id| id == "other").unwrap();
    assert!(
        other_at < order.len() - 1,
        "the other item ran while the first waited: {order:?}"
    );
    assert_eq!(engine.stats().await.unwrap().dead, 0);
}

#[tokio::test]
async fn failures_are_retried_up_to_max_attempts_then_dead() {
    for q in queues().await {
        failures(&q).await;
    }
}

async fn failures(q: &TestQueue) {
    on(q);
    let engine = q.engine(q.config()).await;
    let p = producer(&engine);
    p.push("hopeless", &Item { act: Act::Fail }, Duration::ZERO)
        .await
        .unwrap();
    p.push(
        "flaky",
        &Item {
            act: Act::FailFirst(2),
        },
        Duration::ZERO,
    )
    .await
    .unwrap();
    p.push("refused", &Item { act: Act::Abort }, Duration::ZERO)
        .await
        .unwrap();
    let runs = Runs::default();
    let worker = start_worker(engine.clone(), runs.clone(), 4);
    assert!(
        eventually_async(Duration::from_secs(10), || async {
            engine.stats().await.unwrap().dead == 2
        })
        .await
    );
    assert!(eventually(Duration::from_secs(5), || runs.of("flaky").len() == 3).await);
    worker.stop().await;

    // max_attempts = 3, honoured exactly.
    let attempts: Vec<u32> = runs.of("hopeless").iter().map(|r| r.0).collect();
    assert_eq!(attempts, [1, 2, 3]);
    assert_eq!(
        runs.of("flaky").iter().map(|r| r.0).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(runs.of("refused").len(), 1, "an abort is dead at once");

    let dead = engine.list(ItemState::Dead, 10).await.unwrap();
    let hopeless = dead.iter().find(|d| d.item_id == "hopeless").unwrap();
    assert!(
        hopeless
            .error
            .as_deref()
            .unwrap()
            .contains("attempt 3 of 3 failed: always fails"),
        "{hopeless:?}"
    );
    assert_eq!(hopeless.attempts, 3);
    let refused = dead.iter().find(|d| d.item_id == "refused").unwrap();
    assert!(
        refused
            .error
            .as_deref()
            .unwrap()
            .contains("refused for good"),
        "{refused:?}"
    );
    if q.kind == Kind::Sqlite {
        assert_eq!(q.sqlite_rows(None).await, 2, "only the dead rows remain");
    }
}

#[tokio::test]
async fn an_undecodable_item_is_dead_and_the_worker_carries_on() {
    for q in queues().await {
        undecodable(&q).await;
    }
}

async fn undecodable(q: &TestQueue) {
    on(q);
    let engine = q.engine(q.config()).await;
    engine
        .push(&[NewItem::now("garbage", "not json")])
        .await
        .unwrap();
    producer(&engine)
        .push("fine", &Item { act: Act::Ok }, Duration::ZERO)
        .await
        .unwrap();
    let runs = Runs::default();
    let worker = start_worker(engine.clone(), runs.clone(), 2);
    assert!(eventually(Duration::from_secs(5), || runs.of("fine").len() == 1).await);
    assert!(
        eventually_async(Duration::from_secs(5), || async {
            engine.stats().await.unwrap().dead == 1
        })
        .await
    );
    worker.stop().await;
    let dead = engine.list(ItemState::Dead, 10).await.unwrap();
    assert_eq!(dead[0].item_id, "garbage");
    assert!(dead[0].error.as_deref().unwrap().contains("undecodable"));
    assert!(runs.of("garbage").is_empty());
}

#[tokio::test]
async fn delayed_items_wait_for_their_time() {
    for q in queues().await {
        delayed(&q).await;
    }
}

async fn delayed(q: &TestQueue) {
    on(q);
    let engine = q.engine(q.config()).await;
    let p = producer(&engine);
    let pushed = Instant::now();
    p.push("later", &Item { act: Act::Ok }, Duration::from_millis(600))
        .await
        .unwrap();
    p.push(
        "much-later",
        &Item { act: Act::Ok },
        Duration::from_secs(3600),
    )
    .await
    .unwrap();
    assert_eq!(engine.stats().await.unwrap().scheduled, 2);
    let runs = Runs::default();
    let worker = start_worker(engine.clone(), runs.clone(), 2);
    assert!(eventually(Duration::from_secs(5), || runs.of("later").len() == 1).await);
    assert!(
        pushed.elapsed() >= Duration::from_millis(600),
        "{:?}: ran before its time",
        q.kind
    );
    worker.stop().await;
    assert!(runs.of("much-later").is_empty());
    assert_eq!(engine.stats().await.unwrap().scheduled, 1);
}

#[tokio::test]
async fn a_graceful_stop_hands_unstarted_items_back() {
    for q in queues().await {
        graceful_stop(&q).await;
    }
}

async fn graceful_stop(q: &TestQueue) {
    on(q);
    let mut cfg = q.config();
    cfg.prefetch = 8;
    let engine = q.engine(cfg).await;
    let item = Item {
        act: Act::Sleep(400),
    };
    let ids: Vec<String> = (0..6).map(|i| format!("slow-{i}")).collect();
    producer(&engine)
        .push_bulk(ids.iter().map(|id| (id.as_str(), &item)))
        .await
        .unwrap();
    let runs = Runs::default();
    let worker = start_worker(engine.clone(), runs.clone(), 1);
    assert!(eventually(Duration::from_secs(5), || runs.count() == 1).await);
    worker.stop().await;
    assert_eq!(
        runs.count(),
        1,
        "the started item finished; no other started"
    );
    let stats = engine.stats().await.unwrap();
    assert_eq!(
        (stats.pending, stats.running),
        (5, 0),
        "the buffered items went back: {stats:?}"
    );

    let again = Runs::default();
    let worker = start_worker(engine.clone(), again.clone(), 6);
    assert!(eventually(Duration::from_secs(10), || again.count() == 5).await);
    worker.stop().await;
    assert!(again.per_item().values().all(|&n| n == 1));
    assert!(
        again.0.lock().unwrap().iter().all(|r| r.1 == 1),
        "handing back is not an attempt"
    );
}

/// Waits (up to 10 s) until `consumer`'s maintenance takes over an item
/// whose lease expired.
async fn reclaim_one(consumer: &Arc<dyn Consumer>) -> Delivery {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut m = consumer.maintain().await.unwrap();
        if let Some(d) = m.reclaimed.pop() {
            return d;
        }
        assert!(Instant::now() < deadline, "the lease never expired");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn counts(engine: &Arc<dyn Engine>) -> (u64, u64, u64, u64) {
    let s = engine.stats().await.unwrap();
    (s.pending, s.scheduled, s.running, s.dead)
}

#[tokio::test]
async fn a_stale_settlement_changes_nothing() {
    for q in queues().await {
        stale_settlement(&q).await;
    }
}

/// A worker that stalled past its lease finds its item taken over: its late
/// retry, dead letter and lease renewal are ignored, and its late ack of
/// the old entry cannot touch the item's next entry. Driven through the
/// engine interface directly, the same way on both engines.
async fn stale_settlement(q: &TestQueue) {
    on(q);
    let mut cfg = q.config();
    cfg.visibility_timeout = Duration::from_millis(300);
    let engine = q.engine(cfg).await;
    engine.push(&[NewItem::now("x", "{}")]).await.unwrap();
    let a = engine.consumer("stale-a").await.unwrap();
    let b = engine.consumer("stale-b").await.unwrap();
    let first = a.fetch(10).await.unwrap().pop().expect("a got the item");
    assert_eq!((first.attempts, first.deliveries), (0, 1));

    let taken = reclaim_one(&b).await;
    assert_eq!(taken.handle, first.handle, "the same entry, taken over");
    assert_eq!(taken.deliveries, 2);

    let late = |s: Settlement| vec![(first.clone(), s)];
    a.settle(&late(Settlement::Retry {
        after: Duration::ZERO,
        error: "late".into(),
    }))
    .await
    .unwrap();
    a.settle(&late(Settlement::Dead {
        error: "late".into(),
    }))
    .await
    .unwrap();
    a.extend(std::slice::from_ref(&first)).await.unwrap();
    assert_eq!(counts(&engine).await, (0, 0, 1, 0), "{:?}", q.kind);
    let running = engine.list(ItemState::Running, 10).await.unwrap();
    assert_eq!(running[0].consumer.as_deref(), Some("stale-b"));

    // B reschedules it: a new entry, with the crashed delivery counted.
    b.settle(&[(
        taken,
        Settlement::Reschedule {
            after: Duration::ZERO,
        },
    )])
    .await
    .unwrap();
    assert_eq!(counts(&engine).await, (1, 0, 0, 0), "{:?}", q.kind);
    let next = a.fetch(10).await.unwrap().pop().expect("the new entry");
    assert_ne!(next.handle, first.handle);
    assert_eq!((next.attempts, next.deliveries), (1, 1));

    // A's late ack of the first entry leaves the new one running.
    a.settle(&late(Settlement::Ack)).await.unwrap();
    assert_eq!(counts(&engine).await, (0, 0, 1, 0), "{:?}", q.kind);
    a.settle(&[(next, Settlement::Ack)]).await.unwrap();
    assert_eq!(counts(&engine).await, (0, 0, 0, 0), "{:?}", q.kind);
    if q.kind == Kind::Sqlite {
        assert_eq!(q.sqlite_rows(None).await, 0);
    }
}

#[tokio::test]
async fn a_blocked_fetch_wakes_for_a_push() {
    for q in queues().await {
        fetch_wakes(&q).await;
    }
}

async fn fetch_wakes(q: &TestQueue) {
    on(q);
    let mut cfg = q.config();
    cfg.block = Duration::from_secs(20);
    let engine = q.engine(cfg).await;
    let consumer = engine.consumer("waiter").await.unwrap();
    let waiting = tokio::spawn({
        let consumer = Arc::clone(&consumer);
        async move {
            let started = Instant::now();
            (consumer.fetch(10).await.unwrap(), started.elapsed())
        }
    });
    // Push only once the fetch is waiting (nothing was due when it looked).
    assert!(
        !eventually(Duration::from_millis(300), || waiting.is_finished()).await,
        "an empty fetch returned before its block time"
    );
    engine.push(&[NewItem::now("wake", "{}")]).await.unwrap();
    let (got, waited) = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("woken long before the 20 s block time")
        .unwrap();
    assert_eq!(got.len(), 1, "{:?}", q.kind);
    assert_eq!(got[0].item_id, "wake");
    assert!(waited < Duration::from_secs(10), "{waited:?}");
    consumer
        .settle(&[(got[0].clone(), Settlement::Ack)])
        .await
        .unwrap();
}
