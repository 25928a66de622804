//! What stays in Redis after a large drain: no per-item keys, nothing
//! beyond the retention limits.

use std::time::Duration;

use crate::harness::{Act, Item, Runs, config, eventually, producer, redis_engine, start_worker};

#[tokio::test]
async fn a_100k_backlog_drains_and_leaves_no_per_item_keys() {
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
