//! Workers that die, stall or lose Redis. The crash tests run on both
//! engines (a SQLite file is shared by the parent and the child workers).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use byok_queue::ItemState;

use crate::child::{ChildMode, child_runs, spawn_child};
use crate::harness::{
    Act, Item, Runs, TestQueue, config, eventually, eventually_async, on, producer, queues,
    redis_engine, start_worker,
};

#[tokio::test]
async fn a_killed_workers_item_completes_elsewhere_exactly_once_more() {
    for q in queues().await {
        killed_worker(&q).await;
    }
}

async fn killed_worker(q: &TestQueue) {
    on(q);
    let cfg = q.config();
    let visibility = cfg.visibility_timeout;
    let engine = q.engine(cfg).await;
    producer(&engine)
        .push("orphan", &Item { act: Act::Ok }, Duration::ZERO)
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let runs_file = dir.path().join("runs");
    let mut child = spawn_child(q, &runs_file, ChildMode::Hang);
    assert!(
        eventually(Duration::from_secs(20), || child_runs(&runs_file, "orphan")
            == 1)
        .await,
        "the child worker started the item"
    );
    child.child_mut().kill().expect("kill -9");
    let _ = child.child_mut().wait();
    let killed_at = Instant::now();

    let runs = Runs::default();
    let worker = start_worker(engine.clone(), runs.clone(), 4);
    assert!(
        eventually(visibility + Duration::from_secs(5), || runs
            .of("orphan")
            .len()
            == 1)
        .await,
        "{:?}: completed on another worker within visibility_timeout + 5 s",
        q.kind
    );
    let elapsed = killed_at.elapsed();
    // Give a duplicate every chance to show up before counting: a second
    // delivery could only come after another visibility timeout.
    assert!(
        !eventually(visibility + Duration::from_millis(500), || runs
            .of("orphan")
            .len()
            > 1)
        .await,
        "{:?}: delivered twice",
        q.kind
    );
    worker.stop().await;
    assert_eq!(
        runs.of("orphan"),
        [(2, 2)],
        "{:?}: delivered exactly once more, as attempt 2 (after {elapsed:?})",
        q.kind
    );
    let stats = engine.stats().await.unwrap();
    assert_eq!((stats.pending, stats.running, stats.dead), (0, 0, 0));
    if q.sqlite_url.is_some() {
        assert_eq!(q.sqlite_rows(None).await, 0, "no rows left");
    }
}

#[tokio::test]
async fn an_item_running_past_the_visibility_timeout_is_not_taken() {
    for q in queues().await {
        long_run(&q).await;
    }
}

async fn long_run(q: &TestQueue) {
    on(q);
    let cfg = q.config();
    let long = cfg.visibility_timeout * 3;
    let engine = q.engine(cfg).await;
    producer(&engine)
        .push(
            "long",
            &Item {
                act: Act::Sleep(long.as_millis() as u64),
            },
            Duration::ZERO,
        )
        .await
        .unwrap();
    let (a, b) = (Runs::default(), Runs::default());
    let first = start_worker(engine.clone(), a.clone(), 2);
    assert!(eventually(Duration::from_secs(5), || a.count() == 1).await);
    // A second, idle worker reclaims anything whose lease lapses.
    let second = start_worker(engine.clone(), b.clone(), 2);
    assert!(
        eventually_async(long + Duration::from_secs(5), || async {
            engine.stats().await.unwrap().running == 0
        })
        .await
    );
    first.stop().await;
    second.stop().await;
    assert_eq!(
        a.count() + b.count(),
        1,
        "{:?}: ran once: a {:?}, b {:?}",
        q.kind,
        a.per_item(),
        b.per_item()
    );
}

#[tokio::test]
async fn a_poison_item_is_dead_after_max_attempts_deliveries() {
    for q in queues().await {
        poison(&q).await;
    }
}

async fn poison(q: &TestQueue) {
    on(q);
    let cfg = q.config();
    let max = u64::from(cfg.max_attempts);
    let engine = q.engine(cfg).await;
    producer(&engine)
        .push("poison", &Item { act: Act::Ok }, Duration::ZERO)
        .await
        .unwrap();
    producer(&engine)
        .push(
            "innocent",
            &Item { act: Act::Ok },
            Duration::from_secs(3600),
        )
        .await
        .unwrap();

    // Each child worker dies running the item; the next one takes it over.
    let dir = tempfile::tempdir().unwrap();
    let runs_file = dir.path().join("runs");
    for generation in 1..=max + 2 {
        let mut child = spawn_child(q, &runs_file, ChildMode::Crash);
        let deadline = Instant::now() + Duration::from_secs(20);
        let exited = loop {
            if let Ok(Some(_)) = child.child_mut().try_wait() {
                break true;
            }
            if engine.stats().await.unwrap().dead == 1 || Instant::now() > deadline {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        if !exited {
            // This generation found the item already out of attempts.
            assert!(
                generation > max,
                "{:?}: generation {generation} neither crashed nor saw the item die",
                q.kind
            );
            break;
        }
    }
    assert!(
        eventually_async(Duration::from_secs(10), || async {
            engine.stats().await.unwrap().dead == 1
        })
        .await
    );
    assert_eq!(
        child_runs(&runs_file, "poison"),
        max,
        "{:?}: ran max_attempts times",
        q.kind
    );
    let dead = engine.list(ItemState::Dead, 10).await.unwrap();
    assert_eq!(dead[0].item_id, "poison");
    assert!(
        dead[0]
            .error
            .as_deref()
            .unwrap()
            .contains("without finishing"),
        "{:?}",
        dead[0]
    );
    assert_eq!(
        engine.stats().await.unwrap().scheduled,
        1,
        "other items are untouched"
    );
}

#[tokio::test]
async fn workers_survive_a_redis_restart_and_lose_nothing() {
    // Redis only: the SQLite engine has no server to lose.
    let Some(mut server) =
        byok_testing::spawn_redis(&["--appendonly", "yes", "--appendfsync", "always"])
    else {
        return;
    };
    let namespace = "restart";
    let engine = redis_engine(&server.url, config(namespace)).await;
    let ids: Vec<String> = (0..300).map(|i| format!("r-{i}")).collect();
    let item = Item { act: Act::Sleep(5) };
    producer(&engine)
        .push_bulk(ids.iter().map(|id| (id.as_str(), &item)))
        .await
        .unwrap();
    let runs = Runs::default();
    let worker = start_worker(engine.clone(), runs.clone(), 4);
    assert!(eventually(Duration::from_secs(20), || runs.count() >= 60).await);

    // kill -9 Redis and start it again on the same port and data directory.
    server.stop(false);
    assert!(server.start(), "Redis listens again");

    assert!(
        eventually(Duration::from_secs(60), || runs.per_item().len()
            == ids.len())
        .await,
        "every item ran after the restart ({} of {})",
        runs.per_item().len(),
        ids.len()
    );
    worker.stop().await;
    let seen: HashSet<String> = runs.per_item().into_keys().collect();
    assert_eq!(seen, ids.into_iter().collect::<HashSet<_>>());
    let stats = engine.stats().await.unwrap();
    assert_eq!(
        (stats.pending, stats.running, stats.dead),
        (0, 0, 0),
        "{stats:?}"
    );
}
