//! `queue.partitions` on Redis and on the Redis Cluster: items spread over every partition,
//! and the count changed on a live queue, down and up, with producers and workers that
//! disagree about it meanwhile: every item runs, once.

use std::sync::Arc;
use std::time::Duration;

use byok_queue::{Engine, NewItem};
use byok_redis::{RedisConn, Timeouts};

use crate::harness::{
    Act, Item, Runs, TestQueue, cluster_queue, eventually, eventually_async, on, redis_queue,
    start_worker,
};

#[tokio::test]
async fn changing_the_partition_count_on_a_live_queue_loses_nothing() {
    let queues: Vec<TestQueue> = redis_queue()
        .await
        .into_iter()
        .chain(cluster_queue())
        .collect();
    for q in queues {
        change_partitions(&q).await;
    }
}

async fn engine_with(q: &TestQueue, partitions: usize) -> Arc<dyn Engine> {
    let mut config = q.config();
    config.partitions = partitions;
    q.engine(config).await
}

async fn raw(q: &TestQueue) -> RedisConn {
    let (_, url) = q.spec.split_once(':').unwrap();
    let timeouts = Timeouts {
        connect: Duration::from_secs(5),
        response: Duration::from_secs(5),
    };
    RedisConn::open_url(url, timeouts).await.unwrap()
}

async fn length(conn: &mut RedisConn, key: &str) -> u64 {
    redis::cmd("XLEN").arg(key).query_async(conn).await.unwrap()
}

/// Entries ever added to a stream (`XINFO STREAM`'s `entries-added`): counts what went
/// through a partition even after its items ran and were deleted.
async fn added(conn: &mut RedisConn, key: &str) -> u64 {
    let info: redis::Value = redis::cmd("XINFO")
        .arg("STREAM")
        .arg(key)
        .query_async(conn)
        .await
        .unwrap();
    let fields: Vec<(String, redis::Value)> = match info {
        redis::Value::Map(pairs) => pairs
            .into_iter()
            .map(|(k, v)| (redis::from_redis_value(k).unwrap(), v))
            .collect(),
        redis::Value::Array(items) => items
            .chunks(2)
            .map(|c| (redis::from_redis_value(c[0].clone()).unwrap(), c[1].clone()))
            .collect(),
        other => panic!("XINFO STREAM answered {other:?}"),
    };
    let (_, value) = fields
        .into_iter()
        .find(|(k, _)| k == "entries-added")
        .expect("Redis 7 reports entries-added");
    redis::from_redis_value(value).unwrap()
}

async fn recorded(conn: &mut RedisConn, ns: &str) -> Option<String> {
    redis::cmd("GET")
        .arg(format!("{{{ns}}}:partitions"))
        .query_async(conn)
        .await
        .unwrap()
}

/// `n` items named `<prefix>-<i>`: most succeed at once; every fifth fails its first attempt
/// (so it waits in a partition's delayed set before running again) and every seventh runs
/// later than pushed.
fn items(prefix: &str, n: usize) -> Vec<NewItem> {
    (0..n)
        .map(|i| {
            let act = if i % 5 == 0 {
                Act::FailFirst(1)
            } else {
                Act::Ok
            };
            NewItem {
                delay: if i % 7 == 0 {
                    Duration::from_millis(300)
                } else {
                    Duration::ZERO
                },
                ..NewItem::now(
                    format!("{prefix}-{i}"),
                    serde_json::to_string(&Item { act }).unwrap(),
                )
            }
        })
        .collect()
}

/// Runs each item should have had: two for those failing their first attempt.
fn expected_runs(pushed: &[NewItem]) -> usize {
    pushed
        .iter()
        .map(|item| {
            if item.payload.contains("FailFirst") {
                2
            } else {
                1
            }
        })
        .sum()
}

async fn change_partitions(q: &TestQueue) {
    on(q);
    let ns = q.namespace.clone();
    let mut conn = raw(q).await;
    let mut pushed = Vec::new();

    // A producer with four partitions: items land in every one of them.
    let four = engine_with(q, 4).await;
    assert_eq!(recorded(&mut conn, &ns).await.as_deref(), Some("4"));
    let first = items("first", 200);
    four.push(&first).await.unwrap();
    pushed.extend(first);
    for partition in 1..4 {
        let key = format!("{{{ns}:{partition}}}:jobs");
        assert!(length(&mut conn, &key).await > 20, "{key} holds items");
    }
    assert!(length(&mut conn, &format!("{{{ns}}}:jobs")).await > 20);
    let stats = four.stats().await.unwrap();
    assert_eq!(stats.pending + stats.scheduled, 200, "{stats:?}");

    // Workers set to two partitions read all four while the record says four, run
    // everything, then retire partitions 2 and 3 and lower the record.
    let two = engine_with(q, 2).await;
    let runs = Runs::default();
    let worker = start_worker(two.clone(), runs.clone(), 16);
    let want = expected_runs(&pushed);
    assert!(
        eventually(Duration::from_secs(30), || runs.count() >= want).await,
        "ran {} of {want}",
        runs.count()
    );
    assert!(
        eventually_async(Duration::from_secs(20), || {
            let mut conn = conn.clone();
            let ns = ns.clone();
            async move { recorded(&mut conn, &ns).await.as_deref() == Some("2") }
        })
        .await,
        "the empty partitions above two were retired: {}",
        state(&mut conn, &ns).await
    );

    // The producer still set to four: what it would put in a retired partition goes to
    // partition 0, and runs.
    let second = items("second", 100);
    four.push(&second).await.unwrap();
    pushed.extend(second);
    for partition in 2..4 {
        let key = format!("{{{ns}:{partition}}}:jobs");
        assert_eq!(length(&mut conn, &key).await, 0, "{key} is retired");
    }
    let want = expected_runs(&pushed);
    assert!(
        eventually(Duration::from_secs(30), || runs.count() >= want).await,
        "ran {} of {want}",
        runs.count()
    );

    // A producer set to three: partition 2 comes back; the workers (still set to two)
    // follow the record and run what lands there.
    let three = engine_with(q, 3).await;
    assert_eq!(recorded(&mut conn, &ns).await.as_deref(), Some("3"));
    let partition_two = format!("{{{ns}:2}}:jobs");
    let added_before = added(&mut conn, &partition_two).await;
    let third = items("third", 100);
    three.push(&third).await.unwrap();
    pushed.extend(third);
    assert!(
        added(&mut conn, &partition_two).await >= added_before + 15,
        "partition 2 takes items again"
    );
    let want = expected_runs(&pushed);
    assert!(
        eventually(Duration::from_secs(30), || runs.count() >= want).await,
        "ran {} of {want}",
        runs.count()
    );
    worker.stop().await;

    // Every item ran as often as it should, none more; nothing is left anywhere.
    let per_item = runs.per_item();
    assert_eq!(per_item.len(), pushed.len(), "every item ran");
    for item in &pushed {
        let expected = if item.payload.contains("FailFirst") {
            2
        } else {
            1
        };
        assert_eq!(per_item.get(&item.id), Some(&expected), "{}", item.id);
    }
    assert_eq!(runs.count(), want, "no run twice");
    let stats = three.stats().await.unwrap();
    assert_eq!(
        (stats.pending, stats.scheduled, stats.running, stats.dead),
        (0, 0, 0, 0),
        "{stats:?}"
    );
}

async fn state(conn: &mut RedisConn, ns: &str) -> String {
    let mut out = format!("recorded {:?};", recorded(conn, ns).await);
    for p in 0..4 {
        let tag = if p == 0 {
            format!("{{{ns}}}")
        } else {
            format!("{{{ns}:{p}}}")
        };
        let jobs = length(conn, &format!("{tag}:jobs")).await;
        let dead = length(conn, &format!("{tag}:dead")).await;
        let delayed: u64 = redis::cmd("ZCARD")
            .arg(format!("{tag}:delayed"))
            .query_async(conn)
            .await
            .unwrap();
        let retired: bool = redis::cmd("EXISTS")
            .arg(format!("{tag}:retired"))
            .query_async(conn)
            .await
            .unwrap();
        out += &format!(" p{p}: jobs {jobs} delayed {delayed} dead {dead} retired {retired};");
    }
    out
}
