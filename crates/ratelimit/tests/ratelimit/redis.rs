//! The distributed limiter on real Redis: several limiter instances (each
//! with its own connection, as separate worker processes have) share one
//! key's quota. Windows are shrunk to seconds so the real script runs the
//! real rule in a few seconds; the provider is the test itself, stamping
//! each request's arrival on its own clock after a random transit delay.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use byok_core::{ProviderId, RateLimits};
use byok_ratelimit::{Acquire, Decision, KeyState, LimitKey, RateLimiter, RedisLimiter, Windows};
use uuid::Uuid;

use crate::{max_in_window, owner};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

async fn limiters(
    url: &str,
    namespace: &str,
    windows: Windows,
    n: usize,
) -> Vec<Arc<RedisLimiter>> {
    let mut out = Vec::new();
    for _ in 0..n {
        let limiter = RedisLimiter::connect(url, namespace)
            .await
            .expect("connect");
        out.push(Arc::new(limiter.with_windows(windows)));
    }
    out
}

/// A cheap per-task random source for transit delays.
fn jitter(state: &mut u64, max_ms: u64) -> Duration {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    ms(*state % (max_ms + 1))
}

#[tokio::test]
async fn workers_in_many_processes_keep_both_windows_at_the_providers_clock() {
    let Some(redis) = byok_testing::test_redis().await else {
        return;
    };
    keep_both_windows(&redis.url, &redis.namespace).await;
}

/// The same rule on a Redis Cluster (three primaries, three replicas): a key's log and block
/// share its namespace's slot, so each decision is still one script on one node.
#[tokio::test]
async fn on_a_redis_cluster_the_windows_hold_the_same() {
    let Some(url) = byok_testing::shared_redis_cluster() else {
        return;
    };
    keep_both_windows(url, &format!("test-{}", Uuid::new_v4().simple())).await;
}

async fn keep_both_windows(url: &str, namespace: &str) {
    let windows = Windows::new(ms(1_000), ms(4_000))
        .unwrap()
        .with_max_submit_time(ms(500));
    let limits = RateLimits {
        per_minute: 5,
        per_hour: 12,
    };
    let key = LimitKey::new(ProviderId::RUNWAY, owner(Uuid::new_v4()));
    let limiters = limiters(url, namespace, windows, 4).await;

    let start = Instant::now();
    let run_for = ms(9_000);
    let arrivals: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let mut tasks = Vec::new();
    for worker in 0..16u64 {
        let limiter = Arc::clone(&limiters[worker as usize % limiters.len()]);
        let arrivals = Arc::clone(&arrivals);
        tasks.push(tokio::spawn(async move {
            let mut rng = 0x9E37_79B9_7F4A_7C15 ^ (worker + 1);
            while start.elapsed() < run_for {
                match limiter.acquire(&key, limits).await.expect("redis answers") {
                    // Waiting out the limiter's answer is what a worker does
                    // (by rescheduling its queue item for that long).
                    Acquire::Wait(wait) => tokio::time::sleep(wait).await,
                    Acquire::Granted(permit) => {
                        if jitter(&mut rng, 9) == ms(0) {
                            // Given back unsent (the image fetch failed, say).
                            limiter.finish(permit, false).await.unwrap();
                            continue;
                        }
                        tokio::time::sleep(jitter(&mut rng, 60)).await;
                        arrivals.lock().unwrap().push(start.elapsed());
                        tokio::time::sleep(jitter(&mut rng, 60)).await;
                        limiter.finish(permit, true).await.unwrap();
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let mut arrivals = arrivals.lock().unwrap().clone();
    arrivals.sort_unstable();
    let short = max_in_window(&arrivals, windows.short());
    let long = max_in_window(&arrivals, windows.long());
    assert!(
        short <= 5,
        "{short} submits in one short window: {arrivals:?}"
    );
    assert!(
        long <= 12,
        "{long} submits in one long window: {arrivals:?}"
    );
    // The quota is used: the first short window (plus a sixtieth, as a
    // minute plus a second) holds all but one of its submits, and two
    // long windows fill completely within 9 s.
    let first = arrivals[0];
    let early = arrivals
        .iter()
        .filter(|t| **t - first < ms(1_000 + 17))
        .count();
    assert!(
        early >= 4,
        "{early} submits in the first short window: {arrivals:?}"
    );
    assert!(
        arrivals.len() >= 24,
        "only {} submits: {arrivals:?}",
        arrivals.len()
    );
}

#[tokio::test]
async fn an_unsettled_permit_holds_its_place_and_a_settled_one_counts_from_its_stamp() {
    let Some(redis) = byok_testing::test_redis().await else {
        return;
    };
    let windows = Windows::new(ms(800), ms(800))
        .unwrap()
        .with_max_submit_time(ms(30_000));
    let limiter = limiters(&redis.url, &redis.namespace, windows, 1)
        .await
        .remove(0);
    let key = LimitKey::new(ProviderId::VEO, owner(Uuid::new_v4()));
    let one = RateLimits {
        per_minute: 1,
        per_hour: 1,
    };

    let Decision::Granted {
        at: granted,
        permit,
    } = limiter.decide(&key, one).await.unwrap()
    else {
        panic!("the first permit is free")
    };
    // In flight: a waiter is told to ask again soon, not after 30 s.
    let Decision::Wait(wait) = limiter.decide(&key, one).await.unwrap() else {
        panic!("quota of one")
    };
    assert!(wait <= ms(500), "{wait:?}");

    limiter.finish(permit, true).await.unwrap();
    let Decision::Wait(wait) = limiter.decide(&key, one).await.unwrap() else {
        panic!("still counted")
    };
    assert!(
        wait > ms(500) && wait <= ms(800),
        "a settled permit counts a window from its stamp: {wait:?}"
    );

    // A permit given back is free again at once.
    let other = LimitKey::new(ProviderId::VEO, owner(Uuid::new_v4()));
    let Decision::Granted { permit, at } = limiter.decide(&other, one).await.unwrap() else {
        panic!()
    };
    assert!(at >= granted, "grant times are the Redis server's clock");
    limiter.finish(permit, false).await.unwrap();
    assert!(matches!(
        limiter.decide(&other, one).await.unwrap(),
        Decision::Granted { .. }
    ));
}

#[tokio::test]
async fn a_block_reaches_every_process_and_keys_hold_only_ids() {
    let Some(redis) = byok_testing::test_redis().await else {
        return;
    };
    let ls = limiters(&redis.url, &redis.namespace, Windows::MINUTE_HOUR, 2).await;
    let user = Uuid::new_v4();
    let key = LimitKey::new(ProviderId::STABILITY, owner(user));
    let many = RateLimits {
        per_minute: 100,
        per_hour: 1000,
    };
    ls[0].block(&key, Duration::from_secs(30)).await.unwrap();
    ls[0].block(&key, Duration::from_secs(2)).await.unwrap();
    match ls[1].acquire(&key, many).await.unwrap() {
        Acquire::Wait(wait) => assert!(
            wait > Duration::from_secs(28),
            "the longer block stands: {wait:?}"
        ),
        other => panic!("blocked on every process: {other:?}"),
    }
    let elsewhere = LimitKey::new(ProviderId::RUNWAY, owner(user));
    let Acquire::Granted(permit) = ls[1].acquire(&elsewhere, many).await.unwrap() else {
        panic!("another provider's key is not blocked")
    };
    ls[1].finish(permit, true).await.unwrap();

    // The keys: one log and one block per limit key, named by provider and
    // user id, under the namespace's hash tag, all expiring.
    let client = redis::Client::open(redis.url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut names: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{{{}}}:rl:*", redis.namespace))
        .query_async(&mut conn)
        .await
        .unwrap();
    names.sort();
    assert_eq!(
        names,
        [ls[0].log_key(&elsewhere), ls[0].block_key(&key)],
        "{names:?}"
    );
    assert!(names.iter().all(|n| n.contains(&user.to_string())));
    for name in &names {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(name)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(ttl > 0, "{name} expires");
    }
    assert!(
        ls[0]
            .acquire(
                &key,
                RateLimits {
                    per_minute: 0,
                    per_hour: 1
                }
            )
            .await
            .is_err()
    );
}

#[tokio::test]
async fn inspect_counts_what_acquire_counts_and_changes_nothing() {
    let Some(redis) = byok_testing::test_redis().await else {
        return;
    };
    let limiter = limiters(&redis.url, &redis.namespace, Windows::MINUTE_HOUR, 1)
        .await
        .remove(0);
    let key = LimitKey::new(ProviderId::RUNWAY, owner(Uuid::new_v4()));
    assert_eq!(
        limiter.inspect(&key).await.unwrap(),
        KeyState::default(),
        "an unknown key holds nothing"
    );
    let three = RateLimits {
        per_minute: 3,
        per_hour: 10,
    };
    let mut permits = Vec::new();
    for _ in 0..3 {
        let Acquire::Granted(permit) = limiter.acquire(&key, three).await.unwrap() else {
            panic!("within quota")
        };
        permits.push(permit);
    }
    let in_flight = permits.pop().unwrap();
    for permit in permits {
        limiter.finish(permit, true).await.unwrap();
    }
    limiter.block(&key, Duration::from_secs(30)).await.unwrap();
    let state = limiter.inspect(&key).await.unwrap();
    assert_eq!(
        (state.in_short_window, state.in_long_window, state.in_flight),
        (3, 3, 1)
    );
    let blocked = state.blocked_for.expect("blocked");
    assert!(blocked > Duration::from_secs(28) && blocked <= Duration::from_secs(30));
    assert_eq!(
        limiter.inspect(&key).await.unwrap().in_long_window,
        3,
        "reading takes no permit"
    );
    limiter.finish(in_flight, false).await.unwrap();
    assert_eq!(
        limiter.inspect(&key).await.unwrap().in_short_window,
        2,
        "a permit given back no longer counts"
    );
}
