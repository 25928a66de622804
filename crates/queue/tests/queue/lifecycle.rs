//! Delivery, attempts, reschedules and dead letters on Redis.

use std::time::Duration;

use byok_queue::{ItemState, NewItem};

use crate::harness::{
    Act, Item, Runs, config, eventually, eventually_async, producer, redis_engine, start_worker,
};

#[tokio::test]
async fn every_item_runs_once_and_nothing_is_left() {
    let Some(redis) = byok_testing::test_redis().await else {
        return;
    };
    let engine = redis_engine(&redis.url, config(&redis.namespace)).await;
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
}

#[tokio::test]
async fn a_reschedule_is_not_an_attempt_and_holds_no_slot() {
    let Some(redis) = byok_testing::test_redis().await else {
        return;
    };
    let engine = redis_engine(&redis.url, config(&redis.namespace)).await;
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
    let Some(redis) = byok_testing::test_redis().await else {
        return;
    };
    let engine = redis_engine(&redis.url, config(&redis.namespace)).await;
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
}

#[tokio::test]
async fn an_undecodable_item_is_dead_and_the_worker_carries_on() {
    let Some(redis) = byok_testing::test_redis().await else {
        return;
    };
    let engine = redis_engine(&redis.url, config(&redis.namespace)).await;
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
    let Some(redis) = byok_testing::test_redis().await else {
        return;
    };
    let engine = redis_engine(&redis.url, config(&redis.namespace)).await;
    let p = producer(&engine);
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
    worker.stop().await;
    assert!(runs.of("much-later").is_empty());
    assert_eq!(engine.stats().await.unwrap().scheduled, 1);
}

#[tokio::test]
async fn a_graceful_stop_hands_unstarted_items_back() {
    let Some(redis) = byok_testing::test_redis().await else {
        return;
    };
    let mut cfg = config(&redis.namespace);
    cfg.prefetch = 8;
    let engine = redis_engine(&redis.url, cfg).await;
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
