//! `byok-bench queue`: no-op items/s through our Redis Streams engine,
//! through apalis-redis 1.0.0 in its best configuration (`lock_tasks(false)`,
//! batch 64, 50 ms polling, the bounded promoter it needs past 8,000 due
//! jobs — see `APALIS_PROMOTE_LUA` and docs/decisions.md) and through
//! bullmq-official 1.4.4 (the official Rust BullMQ, completed jobs removed,
//! as our engine removes them), at a small and a large backlog, interleaved,
//! on the same Redis; plus the idle pickup latency of our engine.
//!
//! All three drain with one worker process at concurrency 64. Each rate is the
//! drain rate **at** a backlog, in steady state: the queue is filled to the
//! backlog, a worker drains it while a producer tops it back up (in
//! multiples of [`TOP_UP`], whenever that much room has opened), and a
//! fixed number of completions is timed after a warm-up. Small and large
//! backlogs see the same producer load, so their ratio isolates the
//! backlog's effect.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use apalis::prelude::*;
use byok_queue::{Producer, QueueBackend, QueueConfig, RedisEngine};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::Notify;

use crate::common::{delete_matching, median, percentile, progress};
use crate::{Options, report};

/// The no-op item: a number and, for latency runs, when it was pushed.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct NoOp {
    n: u64,
    #[serde(default)]
    sent_us: u64,
}

/// The top-up unit: the producer pushes whole multiples of it (at most
/// [`CHUNK`] per push) once that much room has opened, and is woken every
/// this many completions.
const TOP_UP: usize = 100;

/// Counts runs and notes when the `marks[0]`-th and `marks[1]`-th ended:
/// the measured window.
#[derive(Debug)]
struct Counter {
    done: AtomicUsize,
    marks: [usize; 2],
    at: [OnceLock<Instant>; 2],
    /// Notified when the window ends.
    reached: Notify,
    /// Notified every [`TOP_UP`] completions (room for a top-up).
    room: Notify,
    latencies: Mutex<Vec<Duration>>,
}

impl Counter {
    /// A counter timing completions `from` (exclusive) to `to` (inclusive).
    fn new(from: usize, to: usize) -> Arc<Counter> {
        Arc::new(Counter {
            done: AtomicUsize::new(0),
            marks: [from, to],
            at: [OnceLock::new(), OnceLock::new()],
            reached: Notify::new(),
            room: Notify::new(),
            latencies: Mutex::new(Vec::new()),
        })
    }

    fn finished(&self) -> bool {
        self.at[1].get().is_some()
    }

    /// Items/s over the measured window.
    fn rate(&self) -> f64 {
        let (Some(from), Some(to)) = (self.at[0].get(), self.at[1].get()) else {
            return 0.0;
        };
        (self.marks[1] - self.marks[0]) as f64 / to.duration_since(*from).as_secs_f64().max(1e-9)
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

impl Counter {
    /// One run ended (its item was pushed at `sent_us`, when non-zero).
    fn record(&self, sent_us: u64) {
        if sent_us > 0 {
            let waited = micros_since_origin().saturating_sub(sent_us);
            self.latencies
                .lock()
                .expect("latency lock")
                .push(Duration::from_micros(waited));
        }
        let n = self.done.fetch_add(1, Ordering::AcqRel) + 1;
        if n == self.marks[0] {
            self.at[0].get_or_init(Instant::now);
        }
        if n == self.marks[1] {
            self.at[1].get_or_init(Instant::now);
            self.reached.notify_one();
        }
        if n.is_multiple_of(TOP_UP) {
            self.room.notify_one();
        }
    }
}

async fn count(item: NoOp, counter: Data<Arc<Counter>>) -> Result<(), BoxDynError> {
    counter.record(item.sent_us);
    Ok(())
}

/// A stop signal for `Worker::run_until`, and its trigger.
fn stop_signal() -> (
    tokio::sync::oneshot::Sender<()>,
    impl Future<Output = std::io::Result<()>> + Send + 'static,
) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    (stop, async move {
        let _ = stopped.await;
        Ok(())
    })
}

/// Runs a worker (its `run_until` future) while `feed` runs, until the
/// counter's window ends; then stops the worker gracefully. A worker that
/// dies (apalis-redis workers end on any backend error) fails the run at
/// once, not after the deadline.
async fn drive<R, F>(
    run: R,
    stop: tokio::sync::oneshot::Sender<()>,
    counter: &Counter,
    feed: F,
) -> anyhow::Result<()>
where
    R: Future<Output = Result<(), WorkerError>> + Send + 'static,
    F: Future<Output = anyhow::Result<()>>,
{
    let mut running = tokio::spawn(run);
    let finished = async {
        feed.await?;
        tokio::time::timeout(Duration::from_secs(900), counter.reached.notified())
            .await
            .map_err(|_| anyhow::anyhow!("the run did not finish within 15 minutes"))
    };
    tokio::select! {
        finished = finished => {
            let _ = stop.send(());
            running.await?.map_err(|e| anyhow::anyhow!("worker failed: {e}"))?;
            finished?;
        }
        ended = &mut running => {
            ended?.map_err(|e| anyhow::anyhow!("worker failed: {e}"))?;
            anyhow::bail!("the worker stopped before the run finished");
        }
    }
    Ok(())
}

type BoxFuture<T> = std::pin::Pin<Box<dyn Future<Output = T> + Send>>;

/// Pushes items `start..start + n`.
type Push = Box<dyn FnMut(usize, usize) -> BoxFuture<anyhow::Result<()>> + Send>;

/// What a top-up loop saw during the measured window.
#[derive(Debug, Clone, Copy, Default)]
struct Held {
    /// Lowest and highest backlog.
    low: usize,
    high: usize,
    /// CPU seconds used (this process and Redis), if readable.
    cpu: Option<f64>,
    /// Of which the Redis server's.
    redis_cpu: Option<f64>,
}

/// Keeps `pushed − done` (the backlog: waiting, prefetched and running
/// items) near `backlog` until the counter's window ends.
async fn top_up(
    counter: &Counter,
    backlog: usize,
    mut pushed: usize,
    push: &mut Push,
    probe: &mut CpuProbe,
) -> anyhow::Result<Held> {
    let (mut low, mut high) = (usize::MAX, 0);
    let mut cpu_start = None;
    while !counter.finished() {
        let outstanding = pushed.saturating_sub(counter.done.load(Ordering::Acquire));
        if counter.at[0].get().is_some() {
            if cpu_start.is_none() {
                cpu_start = Some(probe.read().await);
            }
            low = low.min(outstanding);
            high = high.max(outstanding);
        }
        let room = backlog.saturating_sub(outstanding);
        if room >= TOP_UP {
            // Whole top-ups only, at most a push's worth at once.
            let n = (room - room % TOP_UP).min(CHUNK);
            push(pushed, n).await?;
            pushed += n;
        } else {
            // Room opens every TOP_UP completions; the timeout only guards
            // against a wake-up taken before this wait began.
            let _ = tokio::time::timeout(Duration::from_millis(20), counter.room.notified()).await;
        }
    }
    let cpu_end = probe.read().await;
    let (cpu, redis_cpu) = match (cpu_start.flatten(), cpu_end) {
        (Some(start), Some(end)) => (
            Some(end.0 + end.1 - start.0 - start.1),
            Some(end.0 - start.0),
        ),
        _ => (None, None),
    };
    Ok(Held {
        low,
        high,
        cpu,
        redis_cpu,
    })
}

/// Reads the CPU time used so far by this process and by the Redis server:
/// per item, a cost that other processes' load on a shared machine barely
/// moves, unlike the wall-clock rate.
/// On a cluster, every node's server is read and their CPU added up.
struct CpuProbe(Vec<redis::aio::MultiplexedConnection>);

impl CpuProbe {
    async fn new(servers: &[String]) -> anyhow::Result<CpuProbe> {
        let mut conns = Vec::new();
        for url in servers {
            let client = redis::Client::open(url.as_str())?;
            conns.push(client.get_multiplexed_async_connection().await?);
        }
        Ok(CpuProbe(conns))
    }

    /// Seconds of CPU (user + system) of Redis and of this process, or
    /// `None` where they cannot be read.
    async fn read(&mut self) -> Option<(f64, f64)> {
        let mut redis = 0.0;
        for conn in &mut self.0 {
            let info: String = redis::cmd("INFO").arg("cpu").query_async(conn).await.ok()?;
            redis += info
                .lines()
                .filter_map(|l| {
                    l.strip_prefix("used_cpu_user:")
                        .or_else(|| l.strip_prefix("used_cpu_sys:"))
                })
                .filter_map(|v| v.trim().parse::<f64>().ok())
                .sum::<f64>();
        }
        // Fields 14 and 15 of /proc/self/stat: user and system time of all
        // threads, in clock ticks (USER_HZ, 100 on Linux).
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks: f64 =
            fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
        Some((redis, ticks / 100.0))
    }
}

/// How long a steady-state run lasts, in completions.
#[derive(Debug, Clone, Copy)]
struct Window {
    warmup: usize,
    measured: usize,
    /// Keep the backlog topped up (steady state); otherwise drain what was
    /// filled, with no producer running.
    keep: bool,
}

impl Window {
    /// The backlog the producer keeps while timing.
    fn target(&self, backlog: usize) -> usize {
        if self.keep { backlog } else { 0 }
    }
}

/// One steady-state run's result.
#[derive(Debug, Clone, Copy)]
struct Steady {
    /// Items/s.
    rate: f64,
    held: Held,
    /// CPU µs per timed item (this process and Redis), if readable.
    cpu_us: Option<f64>,
    /// Of which the Redis server's.
    redis_us: Option<f64>,
}

impl Steady {
    fn new(counter: &Counter, held: Held) -> Steady {
        let measured = (counter.marks[1] - counter.marks[0]) as f64;
        Steady {
            rate: counter.rate(),
            held,
            cpu_us: held.cpu.map(|cpu| cpu * 1e6 / measured),
            redis_us: held.redis_cpu.map(|cpu| cpu * 1e6 / measured),
        }
    }
}

const CONCURRENCY: usize = 64;
const CHUNK: usize = 1000;

fn our_config(namespace: &str) -> QueueConfig {
    let mut config = QueueConfig::new(namespace);
    config.prefetch = 64;
    config.block = Duration::from_millis(200);
    config
}

fn no_ops(start: usize, n: usize) -> Vec<(String, NoOp)> {
    (start..start + n)
        .map(|i| {
            (
                format!("i{i}"),
                NoOp {
                    n: i as u64,
                    sent_us: 0,
                },
            )
        })
        .collect()
}

/// Where our engine runs: one Redis (`options.redis_url`) or a cluster, and the partitions.
struct Server<'a> {
    /// What `queue.url` would say.
    url: &'a str,
    /// Every server, for the CPU probe (one, or the cluster's nodes).
    servers: Vec<String>,
    /// A cluster: its keys are left to it (it is dropped after the run).
    cluster: bool,
    partitions: usize,
}

impl Server<'_> {
    fn single(options: &Options) -> Server<'_> {
        Server {
            url: &options.redis_url,
            servers: vec![options.redis_url.clone()],
            cluster: false,
            partitions: 1,
        }
    }
}

/// Our engine's drain rate at `backlog` on one Redis, one partition.
async fn ours(options: &Options, backlog: usize, window: Window) -> anyhow::Result<Steady> {
    ours_on(&Server::single(options), backlog, window).await
}

/// Our engine's drain rate at `backlog` on `server`.
async fn ours_on(server: &Server<'_>, backlog: usize, window: Window) -> anyhow::Result<Steady> {
    let namespace = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let mut config = our_config(&namespace);
    config.partitions = server.partitions;
    let engine = RedisEngine::connect(server.url, config).await?;
    let producer = Producer::<NoOp>::new(engine.clone());
    let mut push: Push = Box::new(move |start, n| {
        let producer = producer.clone();
        Box::pin(async move {
            let items = no_ops(start, n);
            producer
                .push_bulk(items.iter().map(|(id, item)| (id.as_str(), item)))
                .await?;
            Ok(())
        })
    });
    for start in (0..backlog).step_by(CHUNK) {
        push(start, CHUNK.min(backlog - start)).await?;
    }
    let counter = Counter::new(window.warmup, window.warmup + window.measured);
    let worker = WorkerBuilder::new("bench-ours")
        .backend(QueueBackend::<NoOp>::new(engine))
        .data(Arc::clone(&counter))
        .concurrency(CONCURRENCY)
        .build(count);
    let mut probe = CpuProbe::new(&server.servers).await?;
    let (stop, signal) = stop_signal();
    let mut held = Held::default();
    drive(worker.run_until(signal), stop, &counter, async {
        held = top_up(
            &counter,
            window.target(backlog),
            backlog,
            &mut push,
            &mut probe,
        )
        .await?;
        Ok(())
    })
    .await?;
    if !server.cluster {
        // `{ns}*` matches every partition's keys (`{ns:1}:…` too).
        delete_matching(server.url, &format!("{{{namespace}*")).await?;
    }
    Ok(Steady::new(&counter, held))
}

/// The bounded promoter apalis-redis 1.0.0 needs once 8,000 jobs are due
/// (its `fetch_next.lua` promotes every due id with one Lua `unpack`, which
/// fails past about 8,000 values): without it every fetch fails.
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

/// apalis-redis 1.0.0's drain rate at `backlog`.
async fn apalis_redis(options: &Options, backlog: usize, window: Window) -> anyhow::Result<Steady> {
    let queue = format!("bench-apalis-{}", uuid::Uuid::new_v4().simple());
    let conn = apalis_redis::connect(options.redis_url.as_str()).await?;
    let config = apalis_redis::Config::default()
        .queue(&queue)
        .batch_size(64)
        .lock_tasks(false)
        .persist_results(true);
    let storage = apalis_redis::RedisStorage::<NoOp>::new(conn.clone()).with_config(config.clone());
    let mut push: Push = {
        let storage = storage.clone();
        Box::new(move |start, n| {
            let mut storage = storage.clone();
            Box::pin(async move {
                let items: Vec<NoOp> = no_ops(start, n).into_iter().map(|(_, item)| item).collect();
                storage.push_bulk(items).await?;
                Ok(())
            })
        })
    };
    for start in (0..backlog).step_by(CHUNK) {
        push(start, CHUNK.min(backlog - start)).await?;
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
    let counter = Counter::new(window.warmup, window.warmup + window.measured);
    let backend = storage.poll_with_interval(Duration::from_millis(50));
    let worker = WorkerBuilder::new(format!("bench-apalis-{}", uuid::Uuid::new_v4().simple()))
        .backend(backend)
        .data(Arc::clone(&counter))
        .concurrency(CONCURRENCY)
        .build(count);
    let mut probe = CpuProbe::new(std::slice::from_ref(&options.redis_url)).await?;
    let (stop, signal) = stop_signal();
    let mut held = Held::default();
    let result = drive(worker.run_until(signal), stop, &counter, async {
        held = top_up(
            &counter,
            window.target(backlog),
            backlog,
            &mut push,
            &mut probe,
        )
        .await?;
        Ok(())
    })
    .await;
    promoter_stop.store(true, Ordering::Relaxed);
    let _ = promoter.await;
    result?;
    delete_matching(&options.redis_url, &format!("{queue}*")).await?;
    Ok(Steady::new(&counter, held))
}

/// bullmq-official 1.4.4's drain rate at `backlog`: completed jobs removed
/// at once (its faster setting; keeping them also costs memory), the
/// worker's other options at their defaults.
async fn bullmq(options: &Options, backlog: usize, window: Window) -> anyhow::Result<Steady> {
    use bullmq::options::RedisConnectionOptions;
    use bullmq::types::RemoveOnFinish;
    use bullmq::worker::WorkerEvent;
    use bullmq::{BulkJob, Queue, QueueOptions, Worker, WorkerOptions};
    let prefix = format!("bench-bull-{}", uuid::Uuid::new_v4().simple());
    let connection = RedisConnectionOptions::default().url(options.redis_url.as_str());
    let queue = Arc::new(
        Queue::with_options(
            "q",
            QueueOptions::default()
                .connection(connection.clone())
                .prefix(prefix.as_str()),
        )
        .await?,
    );
    let mut push: Push = {
        let queue = Arc::clone(&queue);
        Box::new(move |start, n| {
            let queue = Arc::clone(&queue);
            Box::pin(async move {
                let jobs = no_ops(start, n)
                    .into_iter()
                    .map(|(_, item)| BulkJob::new("noop", item))
                    .collect();
                queue.add_bulk(jobs).await?;
                Ok(())
            })
        })
    };
    for start in (0..backlog).step_by(CHUNK) {
        push(start, CHUNK.min(backlog - start)).await?;
    }
    let counter = Counter::new(window.warmup, window.warmup + window.measured);
    let processor = {
        let counter = Arc::clone(&counter);
        move |job: bullmq::Job, _token| {
            let counter = Arc::clone(&counter);
            async move {
                let sent_us = job
                    .data()
                    .get("sent_us")
                    .and_then(serde_json::Value::as_u64)
                    .unwrap_or(0);
                counter.record(sent_us);
                Ok(serde_json::Value::Null)
            }
        }
    };
    let mut probe = CpuProbe::new(std::slice::from_ref(&options.redis_url)).await?;
    let worker = Arc::new(
        Worker::with_options(
            "q",
            processor,
            WorkerOptions::default()
                .connection(connection)
                .prefix(prefix.as_str())
                .concurrency(CONCURRENCY)
                .remove_on_complete(RemoveOnFinish::Bool(true)),
        )
        .await?,
    );
    // Its events go to an unbounded channel: read them, as an application
    // does, so they do not pile up.
    let events = {
        let worker = Arc::clone(&worker);
        tokio::spawn(async move {
            while let Some(event) = worker.next_event().await {
                if matches!(event, WorkerEvent::Closed) {
                    break;
                }
            }
        })
    };
    let held = tokio::time::timeout(
        Duration::from_secs(900),
        top_up(
            &counter,
            window.target(backlog),
            backlog,
            &mut push,
            &mut probe,
        ),
    )
    .await
    .unwrap_or_else(|_| Err(anyhow::anyhow!("the run did not finish within 15 minutes")));
    worker.close(5_000).await?;
    events.abort();
    let held = held?;
    delete_matching(&options.redis_url, &format!("{prefix}:*")).await?;
    Ok(Steady::new(&counter, held))
}

/// Push-to-start latency of single items into an idle worker of our engine.
async fn pickup_latency(options: &Options, samples: usize) -> anyhow::Result<Vec<Duration>> {
    let namespace = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let engine = RedisEngine::connect(&options.redis_url, our_config(&namespace)).await?;
    let producer = Producer::<NoOp>::new(engine.clone());
    let counter = Counter::new(1, samples);
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
    let (stop, signal) = stop_signal();
    drive(worker.run_until(signal), stop, &counter, pusher).await?;
    delete_matching(&options.redis_url, &format!("{{{namespace}}}*")).await?;
    let mut latencies = counter.latencies.lock().expect("latency lock").clone();
    latencies.sort();
    Ok(latencies)
}

/// Runs the queue benchmark and prints its figures.
pub async fn run(options: &Options) -> anyhow::Result<()> {
    let (small, large, reps, window) = if options.quick {
        let window = Window {
            warmup: 3_000,
            measured: 15_000,
            keep: true,
        };
        (1_000, 10_000, 1, window)
    } else {
        let window = Window {
            warmup: 50_000,
            measured: 200_000,
            keep: true,
        };
        (1_000, 100_000, 3, window)
    };
    // 0 ours small, 1 apalis-redis small, 2 ours large, 3 apalis-redis
    // large, 4 bullmq small, 5 bullmq large.
    let mut runs: [Vec<Steady>; 6] = Default::default();
    let held = |s: &Steady| format!("{}–{}", s.held.low, s.held.high);
    let cpu = |s: &Steady| s.cpu_us.map_or("?".to_owned(), |us| format!("{us:.1}"));
    // Interleaved, so that a noisy minute hurts every figure alike: each
    // side's two backlogs run back to back (their ratio is the figure that
    // matters most), and every other round runs in reverse order.
    for rep in 1..=reps {
        let mut order = [0, 2, 1, 3, 4, 5];
        if rep % 2 == 0 {
            order.reverse();
        }
        for i in order {
            let backlog = if matches!(i, 0 | 1 | 4) { small } else { large };
            let steady = match i {
                0 | 2 => ours(options, backlog, window).await?,
                1 | 3 => apalis_redis(options, backlog, window).await?,
                _ => bullmq(options, backlog, window).await?,
            };
            runs[i].push(steady);
        }
        let last = |i: usize| runs[i].last().copied().expect("just measured");
        progress(&format!(
            "queue: round {rep}/{reps}: ours {:.0}/{:.0}, apalis-redis {:.0}/{:.0}, bullmq {:.0}/{:.0} items/s at {small}/{large} backlog (this round's backlog ratio {:.2}; CPU µs/item ours {} / {}, apalis-redis {} / {}, bullmq {} / {}; backlog held at {} / {}, {} / {}, {} / {})",
            last(0).rate,
            last(2).rate,
            last(1).rate,
            last(3).rate,
            last(4).rate,
            last(5).rate,
            last(2).rate / last(0).rate,
            cpu(&last(0)),
            cpu(&last(2)),
            cpu(&last(1)),
            cpu(&last(3)),
            cpu(&last(4)),
            cpu(&last(5)),
            held(&last(0)),
            held(&last(2)),
            held(&last(1)),
            held(&last(3)),
            held(&last(4)),
            held(&last(5)),
        ));
    }
    // The backlog ratio of each round compares two back-to-back runs, so
    // load that drifts between rounds cancels out of it.
    let round_ratios: Vec<f64> = runs[2]
        .iter()
        .zip(&runs[0])
        .map(|(large, small)| large.rate / small.rate)
        .collect();
    let backlog_ratio = median(round_ratios.clone());
    // The same for the CPU cost per item (large / small: above 1 is costlier).
    let cpu_ratios: Option<Vec<f64>> = runs[2]
        .iter()
        .zip(&runs[0])
        .map(|(large, small)| Some(large.cpu_us? / small.cpu_us?))
        .collect();
    let cpu_of = |r: &[Steady]| -> Option<f64> {
        r.iter()
            .map(|s| s.cpu_us)
            .collect::<Option<Vec<f64>>>()
            .map(median)
    };
    let (cpu_small, cpu_large) = (cpu_of(&runs[0]), cpu_of(&runs[2]));
    let (cpu_base, cpu_bull) = (cpu_of(&runs[3]), cpu_of(&runs[5]));
    let redis_of = |r: &[Steady]| -> Option<f64> {
        r.iter()
            .map(|s| s.redis_us)
            .collect::<Option<Vec<f64>>>()
            .map(median)
    };
    let redis_us = [&runs[2], &runs[3], &runs[5]].map(|r| redis_of(r));
    let cpu_backlog_ratio = cpu_ratios.clone().map(median);
    let [
        ours_small,
        base_small,
        ours_large,
        base_large,
        bull_small,
        bull_large,
    ] = runs.map(|r| median(r.iter().map(|s| s.rate).collect()));
    // Once more as a plain drain of a filled queue, no producer running: the
    // usual way queue libraries are measured, comparable with their own figures.
    let drain = Window {
        warmup: 1,
        measured: large - 1,
        keep: false,
    };
    let drain_ours = ours(options, large, drain).await?.rate;
    let drain_base = apalis_redis(options, large, drain).await?.rate;
    let drain_bull = bullmq(options, large, drain).await?.rate;
    progress(&format!(
        "queue: plain drain of {large} filled items: ours {drain_ours:.0}, apalis-redis {drain_base:.0}, bullmq {drain_bull:.0} items/s"
    ));
    let latencies = pickup_latency(options, if options.quick { 50 } else { 200 }).await?;
    let (p50, p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));
    let spread = spread(options, large).await?;
    let mut result = json!({
        "name": "queue",
        "value": ours_large.round(),
        "unit": "items/s",
        "baseline": base_large.round(),
        "baseline_name": "apalis-redis 1.0.0 (lock_tasks false, batch 64)",
        "ratio": ours_large / base_large,
        "bullmq": bull_large.round(),
        "bullmq_name": "bullmq-official 1.4.4 (remove_on_complete)",
        "ratio_bullmq": ours_large / bull_large,
        "backlog_ratio": backlog_ratio,
        "backlog_ratio_rounds": round_ratios,
        "backlog_small": small,
        "backlog_large": large,
        "value_small": ours_small.round(),
        "baseline_small": base_small.round(),
        "ratio_small": ours_small / base_small,
        "bullmq_small": bull_small.round(),
        "ratio_bullmq_small": ours_small / bull_small,
        "concurrency": CONCURRENCY,
        "warmup_items": window.warmup,
        "measured_items": window.measured,
        "top_up": TOP_UP,
        "rounds": reps,
        "cpu_us_per_item": cpu_large,
        "cpu_us_per_item_small": cpu_small,
        "cpu_backlog_ratio": cpu_backlog_ratio,
        "baseline_cpu_us_per_item": cpu_base,
        "bullmq_cpu_us_per_item": cpu_bull,
        "redis_us_per_item": redis_us[0],
        "baseline_redis_us_per_item": redis_us[1],
        "bullmq_redis_us_per_item": redis_us[2],
        "drain_only": drain_ours.round(),
        "drain_only_baseline": drain_base.round(),
        "drain_only_bullmq": drain_bull.round(),
        "pickup_p50_ms": p50,
        "pickup_p99_ms": p99,
    });
    let ratios = |r: &[f64]| {
        r.iter()
            .map(|r| format!("{r:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let cpu_line = match (cpu_large, cpu_small, &cpu_ratios, cpu_backlog_ratio) {
        (Some(large_us), Some(small_us), Some(rounds), Some(ratio)) => format!(
            "\n          ours CPU (this process + Redis) {large_us:.1} µs/item at {large}, {small_us:.1} at {small} (ratio {ratio:.2}, median of the rounds' {})",
            ratios(rounds)
        ),
        _ => String::new(),
    };
    let us = |v: Option<f64>| v.map_or("?".to_owned(), |us| format!("{us:.1}"));
    let cpu_line = format!(
        "{cpu_line}\n          CPU µs/item at {large} (process + Redis, of which Redis): ours {} ({}), apalis-redis {} ({}), bullmq {} ({})",
        us(cpu_large),
        us(redis_us[0]),
        us(cpu_base),
        us(redis_us[1]),
        us(cpu_bull),
        us(redis_us[2]),
    );
    let human = format!(
        "queue     ours {ours_large:>9.0} items/s at {large} backlog, {ours_small:>9.0} at {small} (backlog ratio {backlog_ratio:.2}, median of the rounds' {}){cpu_line}\n          apalis-redis {base_large:>9.0} items/s at {large}, {base_small:>9.0} at {small}  → ratio {:.2} / {:.2}\n          bullmq {bull_large:>9.0} items/s at {large}, {bull_small:>9.0} at {small}  → ratio {:.2} / {:.2}\n          steady state: {} completions timed after {} of warm-up, backlog topped up in steps of {TOP_UP}, median of {reps}\n          plain drain of {large} filled items (no producer): ours {drain_ours:.0}, apalis-redis {drain_base:.0}, bullmq {drain_bull:.0} items/s\n          idle pickup latency p50 {p50:.1} ms, p99 {p99:.1} ms",
        ratios(&round_ratios),
        ours_large / base_large,
        ours_small / base_small,
        ours_large / bull_large,
        ours_small / bull_small,
        window.measured,
        window.warmup,
    );
    let human = format!("{human}\n{}", spread.human(large));
    result["partitions"] = spread.json();
    report(options, &result, &human);
    Ok(())
}

/// `queue.partitions`: our engine at one backlog with one partition beside
/// `options.partitions`, on the one Redis and on a Redis Cluster started for the run.
struct Spread {
    partitions: usize,
    rounds: usize,
    /// Rate and CPU µs per item (process + every Redis server): one Redis with 1 and with
    /// `partitions` partitions, then the cluster with 1 and with `partitions`.
    figures: [(f64, Option<f64>); 4],
    /// The cluster could not be started (no `redis-server`): its figures are missing.
    cluster: bool,
}

impl Spread {
    fn json(&self) -> serde_json::Value {
        let [single_one, single_n, cluster_one, cluster_n] = self.figures;
        json!({
            "partitions": self.partitions,
            "rounds": self.rounds,
            "one_redis_1": single_one.0.round(),
            "one_redis_n": single_n.0.round(),
            "cluster_1": self.cluster.then_some(cluster_one.0.round()),
            "cluster_n": self.cluster.then_some(cluster_n.0.round()),
            "cpu_us_one_redis_1": single_one.1,
            "cpu_us_one_redis_n": single_n.1,
            "cpu_us_cluster_1": cluster_one.1,
            "cpu_us_cluster_n": cluster_n.1,
        })
    }

    fn human(&self, backlog: usize) -> String {
        let n = self.partitions;
        let figure = |(rate, cpu): (f64, Option<f64>)| {
            format!(
                "{rate:>7.0} items/s ({} µs CPU/item)",
                cpu.map_or("?".to_owned(), |us| format!("{us:.1}"))
            )
        };
        let [single_one, single_n, cluster_one, cluster_n] = self.figures;
        let cluster = if self.cluster {
            format!(
                "\n          Redis Cluster (3 primaries + 3 replicas, AOF): 1 partition {}, {n} partitions {}  → {:.2}x",
                figure(cluster_one),
                figure(cluster_n),
                cluster_n.0 / cluster_one.0
            )
        } else {
            "\n          Redis Cluster: not measured (redis-server cannot start one here)"
                .to_owned()
        };
        format!(
            "partitions at {backlog} backlog, median of {} rounds, interleaved:\n          one Redis: 1 partition {}, {n} partitions {}  → {:.2}x{cluster}",
            self.rounds,
            figure(single_one),
            figure(single_n),
            single_n.0 / single_one.0,
        )
    }
}

async fn spread(options: &Options, backlog: usize) -> anyhow::Result<Spread> {
    let (rounds, window) = if options.quick {
        let window = Window {
            warmup: 2_000,
            measured: 10_000,
            keep: true,
        };
        (1, window)
    } else {
        let window = Window {
            warmup: 20_000,
            measured: 100_000,
            keep: true,
        };
        (3, window)
    };
    let partitions = options.partitions;
    // The cluster's nodes are stopped when it is dropped, at the end of this section.
    let cluster = tokio::task::spawn_blocking(byok_testing::spawn_redis_cluster).await?;
    let mut servers = vec![
        Server::single(options),
        Server {
            partitions,
            ..Server::single(options)
        },
    ];
    if let Some(cluster) = &cluster {
        let nodes: Vec<String> = cluster.nodes.iter().map(|n| n.url.clone()).collect();
        for n in [1, partitions] {
            servers.push(Server {
                url: &cluster.url,
                servers: nodes.clone(),
                cluster: true,
                partitions: n,
            });
        }
    }
    let mut runs: Vec<Vec<Steady>> = vec![Vec::new(); servers.len()];
    for round in 1..=rounds {
        let mut order: Vec<usize> = (0..servers.len()).collect();
        if round % 2 == 0 {
            order.reverse();
        }
        for i in order {
            runs[i].push(ours_on(&servers[i], backlog, window).await?);
        }
        progress(&format!(
            "queue: partitions round {round}/{rounds}: {}",
            runs.iter()
                .zip(&servers)
                .map(|(r, s)| format!(
                    "{} {} partition(s) {:.0}",
                    if s.cluster { "cluster" } else { "one Redis" },
                    s.partitions,
                    r.last().map_or(0.0, |s| s.rate)
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let figure = |i: usize| -> (f64, Option<f64>) {
        let Some(r) = runs.get(i) else {
            return (0.0, None);
        };
        let rate = median(r.iter().map(|s| s.rate).collect());
        let cpu = r
            .iter()
            .map(|s| s.cpu_us)
            .collect::<Option<Vec<f64>>>()
            .map(median);
        (rate, cpu)
    };
    Ok(Spread {
        partitions,
        rounds,
        figures: [figure(0), figure(1), figure(2), figure(3)],
        cluster: cluster.is_some(),
    })
}
