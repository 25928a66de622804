//! `byok-bench queue`: no-op items/s through our Redis Streams engine and
//! through apalis-redis 1.0.0 in its best configuration (`lock_tasks(false)`,
//! batch 64, 50 ms polling, the bounded promoter it needs past 8,000 due
//! jobs — ../shared/reference/apalis.md §5–6), at a small and a large
//! backlog, interleaved, on the same Redis; plus the idle pickup latency of
//! our engine.
//!
//! Both drain with one worker process at concurrency 64. A run is timed
//! from the first item's start to the last item's end (the steady drain),
//! so worker start-up is not counted against either side.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use apalis::prelude::*;
use byok_queue::{Producer, QueueBackend, QueueConfig, RedisEngine};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::Notify;

use crate::{Options, report};

/// The no-op item: a number and, for latency runs, when it was pushed.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct NoOp {
    n: u64,
    #[serde(default)]
    sent_us: u64,
}

/// Counts runs and notes when the first started and the target was reached.
#[derive(Debug)]
struct Counter {
    done: AtomicUsize,
    target: usize,
    first: OnceLock<Instant>,
    last: OnceLock<Instant>,
    reached: Notify,
    latencies: Mutex<Vec<Duration>>,
}

impl Counter {
    fn new(target: usize) -> Arc<Counter> {
        Arc::new(Counter {
            done: AtomicUsize::new(0),
            target,
            first: OnceLock::new(),
            last: OnceLock::new(),
            reached: Notify::new(),
            latencies: Mutex::new(Vec::new()),
        })
    }

    fn rate(&self) -> f64 {
        let (Some(first), Some(last)) = (self.first.get(), self.last.get()) else {
            return 0.0;
        };
        self.target as f64 / last.duration_since(*first).as_secs_f64().max(1e-9)
    }
}

/// The process's time origin, for latency payloads.
fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

fn micros_since_origin() -> u64 {
    u64::try_from(origin().elapsed().as_micros()).unwrap_or(u64::MAX)
}

async fn count(item: NoOp, counter: Data<Arc<Counter>>) -> Result<(), BoxDynError> {
    counter.first.get_or_init(Instant::now);
    if item.sent_us > 0 {
        let waited = micros_since_origin().saturating_sub(item.sent_us);
        counter
            .latencies
            .lock()
            .expect("latency lock")
            .push(Duration::from_micros(waited));
    }
    if counter.done.fetch_add(1, Ordering::AcqRel) + 1 == counter.target {
        counter.last.get_or_init(Instant::now);
        counter.reached.notify_one();
    }
    Ok(())
}

/// Runs an apalis worker until `counter` reaches its target, then stops it
/// gracefully. (A macro: apalis workers are typed by their whole service
/// stack, which a function signature would have to spell out.)
macro_rules! drive {
    ($worker:expr, $counter:expr) => {{
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let signal = async move {
            let _ = stopped.await;
            Ok::<(), std::io::Error>(())
        };
        let run = $worker.run_until(signal);
        let mut running = tokio::spawn(run);
        // A worker that dies (apalis-redis workers end on any backend error)
        // must fail the run at once, not after the deadline.
        tokio::select! {
            reached = tokio::time::timeout(Duration::from_secs(900), $counter.reached.notified()) => {
                let _ = stop.send(());
                running.await?.map_err(|e| anyhow::anyhow!("worker failed: {e}"))?;
                reached.map_err(|_| anyhow::anyhow!("the drain did not finish within 15 minutes"))?;
            }
            ended = &mut running => {
                ended?.map_err(|e| anyhow::anyhow!("worker failed: {e}"))?;
                anyhow::bail!("the worker stopped before the drain finished");
            }
        }
        anyhow::Ok(())
    }};
}

const CONCURRENCY: usize = 64;
const CHUNK: usize = 1000;

fn our_config(namespace: &str) -> QueueConfig {
    let mut config = QueueConfig::new(namespace);
    config.prefetch = 64;
    config.block = Duration::from_millis(200);
    config
}

/// Drains `n` no-op items through our engine; returns items/s.
async fn ours(options: &Options, n: usize) -> anyhow::Result<f64> {
    let namespace = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let engine = RedisEngine::connect(&options.redis_url, our_config(&namespace)).await?;
    let producer = Producer::<NoOp>::new(engine.clone());
    let items: Vec<(String, NoOp)> = (0..n as u64)
        .map(|i| (format!("i{i}"), NoOp { n: i, sent_us: 0 }))
        .collect();
    for chunk in items.chunks(CHUNK) {
        producer
            .push_bulk(chunk.iter().map(|(id, item)| (id.as_str(), item)))
            .await?;
    }
    let counter = Counter::new(n);
    let worker = WorkerBuilder::new("bench-ours")
        .backend(QueueBackend::<NoOp>::new(engine))
        .data(Arc::clone(&counter))
        .concurrency(CONCURRENCY)
        .build(count);
    drive!(worker, counter)?;
    delete_matching(&options.redis_url, &format!("{{{namespace}}}*")).await?;
    Ok(counter.rate())
}

/// The bounded promoter apalis-redis 1.0.0 needs once 8,000 jobs are due
/// (../shared/reference/apalis.md §6.1): without it every fetch fails.
const APALIS_PROMOTE_LUA: &str = r#"
local ids = redis.call('zrangebyscore', KEYS[1], 0, ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
if #ids > 0 then
  redis.call('rpush', KEYS[2], unpack(ids))
  redis.call('zrem', KEYS[1], unpack(ids))
  redis.call('del', KEYS[3])
  redis.call('lpush', KEYS[3], 1)
end
return #ids
"#;

/// Moves every due apalis-redis job to its active list, 1,000 at a time.
async fn promote_all(
    conn: &mut redis::aio::ConnectionManager,
    config: &apalis_redis::Config,
) -> redis::RedisResult<()> {
    let script = redis::Script::new(APALIS_PROMOTE_LUA);
    loop {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let moved: usize = script
            .key(config.scheduled_jobs_set())
            .key(config.active_jobs_list())
            .key(config.signal_list())
            .arg(now + 1)
            .arg(1000)
            .invoke_async(conn)
            .await?;
        if moved < 1000 {
            return Ok(());
        }
    }
}

/// Drains `n` no-op items through apalis-redis 1.0.0; returns items/s.
async fn apalis_redis(options: &Options, n: usize) -> anyhow::Result<f64> {
    let queue = format!("bench-apalis-{}", uuid::Uuid::new_v4().simple());
    let conn = apalis_redis::connect(options.redis_url.as_str()).await?;
    let config = apalis_redis::Config::default()
        .queue(&queue)
        .batch_size(64)
        .lock_tasks(false)
        .persist_results(true);
    let mut storage =
        apalis_redis::RedisStorage::<NoOp>::new(conn.clone()).with_config(config.clone());
    let items: Vec<NoOp> = (0..n as u64).map(|i| NoOp { n: i, sent_us: 0 }).collect();
    for chunk in items.chunks(CHUNK) {
        storage.push_bulk(chunk.to_vec()).await?;
    }
    // Promote everything first: the worker's own fetch promotes all due jobs
    // at once and fails past 8,000.
    promote_all(&mut conn.clone(), &config).await?;
    let promoter_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let promoter = {
        let stop = Arc::clone(&promoter_stop);
        let mut conn = conn.clone();
        let config = config.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let _ = promote_all(&mut conn, &config).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let counter = Counter::new(n);
    let backend = storage
        .clone()
        .poll_with_interval(Duration::from_millis(50));
    let worker = WorkerBuilder::new(format!("bench-apalis-{}", uuid::Uuid::new_v4().simple()))
        .backend(backend)
        .data(Arc::clone(&counter))
        .concurrency(CONCURRENCY)
        .build(count);
    let result = drive!(worker, counter);
    promoter_stop.store(true, Ordering::Relaxed);
    let _ = promoter.await;
    result?;
    delete_matching(&options.redis_url, &format!("{queue}*")).await?;
    Ok(counter.rate())
}

/// Push-to-start latency of single items into an idle worker of our engine.
async fn pickup_latency(options: &Options, samples: usize) -> anyhow::Result<Vec<Duration>> {
    let namespace = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let engine = RedisEngine::connect(&options.redis_url, our_config(&namespace)).await?;
    let producer = Producer::<NoOp>::new(engine.clone());
    let counter = Counter::new(samples);
    let worker = WorkerBuilder::new("bench-latency")
        .backend(QueueBackend::<NoOp>::new(engine))
        .data(Arc::clone(&counter))
        .concurrency(CONCURRENCY)
        .build(count);
    let pusher = async {
        // Let the worker settle into its blocking read first.
        tokio::time::sleep(Duration::from_millis(300)).await;
        for i in 0..samples as u64 {
            producer
                .push(
                    &format!("l{i}"),
                    &NoOp {
                        n: i,
                        sent_us: micros_since_origin(),
                    },
                    Duration::ZERO,
                )
                .await?;
            // Idle between samples: each push meets a worker waiting in XREADGROUP.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        anyhow::Ok(())
    };
    let (driven, pushed) = tokio::join!(async { drive!(worker, counter) }, pusher);
    driven?;
    pushed?;
    delete_matching(&options.redis_url, &format!("{{{namespace}}}*")).await?;
    let mut latencies = counter.latencies.lock().expect("latency lock").clone();
    latencies.sort();
    Ok(latencies)
}

async fn delete_matching(url: &str, pattern: &str) -> anyhow::Result<()> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let mut cursor = 0u64;
    loop {
        // The benchmark's own keys only, after its run.
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await?;
        if !keys.is_empty() {
            let _: i64 = redis::cmd("DEL").arg(keys).query_async(&mut conn).await?;
        }
        cursor = next;
        if cursor == 0 {
            return Ok(());
        }
    }
}

/// Progress goes to stderr, so stdout holds only results.
#[allow(clippy::print_stderr)]
fn progress(line: &str) {
    eprintln!("{line}");
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index].as_secs_f64() * 1000.0
}

/// Runs the queue benchmark and prints its figures.
pub async fn run(options: &Options) -> anyhow::Result<()> {
    let (small, large, reps) = if options.quick {
        (1_000, 20_000, 1)
    } else {
        (1_000, 100_000, 3)
    };
    let mut runs: [Vec<f64>; 4] = Default::default();
    // Interleaved, so that a noisy minute hurts both sides alike.
    for rep in 1..=reps {
        for _ in 0..3 {
            runs[0].push(ours(options, small).await?);
            runs[1].push(apalis_redis(options, small).await?);
        }
        runs[2].push(ours(options, large).await?);
        runs[3].push(apalis_redis(options, large).await?);
        progress(&format!(
            "queue: round {rep}/{reps}: ours {:.0}/{:.0}, apalis-redis {:.0}/{:.0} items/s ({small}/{large} backlog)",
            runs[0].last().copied().unwrap_or(0.0),
            runs[2].last().copied().unwrap_or(0.0),
            runs[1].last().copied().unwrap_or(0.0),
            runs[3].last().copied().unwrap_or(0.0),
        ));
    }
    let [ours_small, base_small, ours_large, base_large] = runs.map(median);
    let latencies = pickup_latency(options, if options.quick { 50 } else { 200 }).await?;
    let (p50, p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));
    let result = json!({
        "name": "queue",
        "value": ours_large.round(),
        "unit": "items/s",
        "baseline": base_large.round(),
        "baseline_name": "apalis-redis 1.0.0 (lock_tasks false, batch 64)",
        "ratio": ours_large / base_large,
        "backlog_ratio": ours_large / ours_small,
        "backlog_small": small,
        "backlog_large": large,
        "value_small": ours_small.round(),
        "baseline_small": base_small.round(),
        "ratio_small": ours_small / base_small,
        "concurrency": CONCURRENCY,
        "pickup_p50_ms": p50,
        "pickup_p99_ms": p99,
    });
    let human = format!(
        "queue     ours {ours_large:>9.0} items/s at {large} backlog, {ours_small:>9.0} at {small} (backlog ratio {:.2})\n          apalis-redis {base_large:>9.0} items/s at {large}, {base_small:>9.0} at {small}  → ratio {:.2} / {:.2}\n          idle pickup latency p50 {p50:.1} ms, p99 {p99:.1} ms",
        ours_large / ours_small,
        ours_large / base_large,
        ours_small / base_small,
    );
    report(options, &result, &human);
    Ok(())
}
