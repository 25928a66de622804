//! The backend under apalis's own machinery, unchanged: workers run by a
//! `Monitor`, with the tower layers the pipeline uses (tracing, timeout,
//! catch-panic, concurrency) — on every engine.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use apalis::prelude::*;
use byok_queue::{Engine, ItemState, QueueBackend};
use tracing::field::{Field, Visit};
use tracing::span;

use crate::harness::{
    Act, Item, Kind, PANIC_MESSAGE, Runs, TestQueue, eventually, eventually_async, handle, on,
    producer, queues,
};

/// A worker run by a `Monitor`; `stop` shuts the monitor down gracefully
/// and checks that it ended without error.
struct Monitored {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<Result<(), MonitorError>>,
    /// Worker starts the monitor saw: 1 unless the worker died and came back.
    starts: Arc<AtomicUsize>,
}

impl Monitored {
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let ended = tokio::time::timeout(Duration::from_secs(20), self.done)
            .await
            .expect("the monitor shuts down")
            .expect("the monitor task did not panic");
        if let Err(e) = ended {
            panic!("the monitor ended with an error: {e}");
        }
        assert_eq!(
            self.starts.load(Ordering::SeqCst),
            1,
            "the worker started once and never died"
        );
    }

    fn is_running(&self) -> bool {
        !self.done.is_finished()
    }
}

/// Starts a `Monitor` running one worker on `engine` with the tracing,
/// timeout, catch-panic and concurrency layers. A worker that fails is not
/// restarted (the monitor would end with its error), so a worker that
/// survives is seen to survive.
fn start_monitored(
    engine: Arc<dyn Engine>,
    runs: Runs,
    concurrency: usize,
    timeout: Duration,
) -> Monitored {
    let starts = Arc::new(AtomicUsize::new(0));
    let monitor = Monitor::new()
        .on_event({
            let starts = Arc::clone(&starts);
            move |_, event| {
                if matches!(event, Event::Start) {
                    starts.fetch_add(1, Ordering::SeqCst);
                }
            }
        })
        .register(move |_restarts| {
            WorkerBuilder::new(format!("monitored-{}", std::process::id()))
                .backend(QueueBackend::<Item>::new(Arc::clone(&engine)))
                .data(runs.clone())
                .enable_tracing()
                .timeout(timeout)
                .catch_panic()
                .concurrency(concurrency)
                .build(handle)
        });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let signal = async move {
        let _ = stopped.await;
        Ok(())
    };
    let done = tokio::spawn(monitor.run_with_signal(signal));
    Monitored {
        stop: Some(stop),
        done,
        starts,
    }
}

/// The spans apalis's tracing layer opened: (name, fields).
#[derive(Debug, Default)]
struct Spans(Mutex<Vec<(String, HashMap<String, String>)>>);

impl Spans {
    /// How many `task` spans were opened, per task id.
    fn tasks(&self) -> HashMap<String, usize> {
        let mut out = HashMap::new();
        for (name, fields) in self.0.lock().unwrap().iter() {
            if name == "task" {
                let id = fields.get("task_id").cloned().unwrap_or_default();
                *out.entry(id).or_default() += 1;
            }
        }
        out
    }
}

/// A minimal `tracing` subscriber that records the spans of apalis's
/// tracing layer and ignores everything else.
struct Recorder {
    spans: &'static Spans,
    next_id: AtomicU64,
}

#[derive(Default)]
struct Fields(HashMap<String, String>);

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl tracing::Subscriber for Recorder {
    fn enabled(&self, meta: &tracing::Metadata<'_>) -> bool {
        meta.is_span() && meta.target().starts_with("apalis::layers::tracing")
    }
    fn new_span(&self, span: &span::Attributes<'_>) -> span::Id {
        let mut fields = Fields::default();
        span.record(&mut fields);
        self.spans
            .0
            .lock()
            .unwrap()
            .push((span.metadata().name().to_owned(), fields.0));
        span::Id::from_u64(self.next_id.fetch_add(1, Ordering::Relaxed) + 1)
    }
    fn record(&self, _: &span::Id, _: &span::Record<'_>) {}
    fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}
    fn event(&self, _: &tracing::Event<'_>) {}
    fn enter(&self, _: &span::Id) {}
    fn exit(&self, _: &span::Id) {}
}

/// The spans recorded by this test binary's global subscriber, installed on
/// first use. Global, not per thread: with a single thread-local subscriber,
/// `tracing` caches "never" for callsites first reached on other threads
/// (other tests), and spans would go missing at random.
fn recorded_spans() -> &'static Spans {
    static SPANS: OnceLock<&'static Spans> = OnceLock::new();
    let spans = *SPANS.get_or_init(|| {
        let spans: &'static Spans = Box::leak(Box::default());
        tracing::subscriber::set_global_default(Recorder {
            spans,
            next_id: AtomicU64::new(0),
        })
        .expect("no other global subscriber in this test binary");
        spans
    });
    // A callsite registering on another thread while the subscriber was
    // being installed may have cached a stale interest.
    tracing::callsite::rebuild_interest_cache();
    spans
}

#[tokio::test]
async fn a_monitored_worker_with_tracing_timeout_and_catch_panic_runs_every_item() {
    let spans = recorded_spans();
    for q in queues().await {
        monitored_drain(&q, spans).await;
    }
}

async fn monitored_drain(q: &TestQueue, spans: &Spans) {
    on(q);
    let engine = q.engine(q.config()).await;
    let ids: Vec<String> = (0..100)
        .map(|i| format!("{}-item-{i}", q.namespace))
        .collect();
    let ok = Item { act: Act::Ok };
    producer(&engine)
        .push_bulk(ids.iter().map(|id| (id.as_str(), &ok)))
        .await
        .unwrap();
    // A run well within the timeout is not cut off.
    let quick_id = format!("{}-quick", q.namespace);
    producer(&engine)
        .push(
            &quick_id,
            &Item {
                act: Act::Sleep(20),
            },
            Duration::ZERO,
        )
        .await
        .unwrap();

    let runs = Runs::default();
    let worker = start_monitored(engine.clone(), runs.clone(), 8, Duration::from_secs(10));
    assert!(
        eventually(Duration::from_secs(20), || runs.count() >= 101).await,
        "ran {}",
        runs.count()
    );
    assert!(
        eventually_async(Duration::from_secs(10), || async {
            let s = engine.stats().await.unwrap();
            (s.pending, s.scheduled, s.running, s.dead) == (0, 0, 0, 0)
        })
        .await,
        "{:?}",
        engine.stats().await.unwrap()
    );
    worker.stop().await;

    let per_item = runs.per_item();
    assert_eq!(per_item.len(), 101);
    assert!(per_item.values().all(|&n| n == 1), "each item exactly once");
    // apalis's tracing layer wrapped every run in its `task` span, named
    // by our item id.
    let tasks = spans.tasks();
    for id in ids.iter().chain([&quick_id]) {
        assert_eq!(tasks.get(id), Some(&1), "one task span for {id}");
    }
    if q.kind == Kind::Sqlite {
        assert_eq!(q.sqlite_rows(None).await, 0, "nothing left");
    }
}

#[tokio::test]
async fn a_panicking_handler_is_dead_at_once_and_the_worker_carries_on() {
    for q in queues().await {
        panicking(&q).await;
    }
}

async fn panicking(q: &TestQueue) {
    on(q);
    let engine = q.engine(q.config()).await;
    let p = producer(&engine);
    p.push("panics", &Item { act: Act::Panic }, Duration::ZERO)
        .await
        .unwrap();
    let runs = Runs::default();
    // One slot: the items after the panic run on the very worker that
    // caught it.
    let worker = start_monitored(engine.clone(), runs.clone(), 1, Duration::from_secs(10));
    assert!(
        eventually_async(Duration::from_secs(10), || async {
            engine.stats().await.unwrap().dead == 1
        })
        .await,
        "{:?}",
        engine.stats().await.unwrap()
    );
    for i in 0..3 {
        p.push(
            &format!("after-{i}"),
            &Item { act: Act::Ok },
            Duration::ZERO,
        )
        .await
        .unwrap();
    }
    assert!(
        eventually(Duration::from_secs(10), || (0..3)
            .all(|i| runs.of(&format!("after-{i}")).len() == 1))
        .await,
        "the worker went on after the panic: {:?}",
        runs.per_item()
    );
    assert!(
        worker.is_running(),
        "the monitor is still running its worker"
    );
    worker.stop().await;

    // max_attempts is 3, yet a panic is not retried: catch-panic makes it
    // an abort.
    assert_eq!(runs.of("panics"), [(1, 1)], "run once");
    let dead = engine.list(ItemState::Dead, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].item_id, "panics");
    assert_eq!(dead[0].attempts, 1);
    let error = dead[0].error.as_deref().unwrap_or("");
    assert!(error.contains(PANIC_MESSAGE), "{error}");
    let stats = engine.stats().await.unwrap();
    assert_eq!((stats.pending, stats.running, stats.scheduled), (0, 0, 0));
}

#[tokio::test]
async fn a_run_past_the_timeout_is_a_failed_attempt_retried_then_dead() {
    for q in queues().await {
        timed_out(&q).await;
    }
}

async fn timed_out(q: &TestQueue) {
    on(q);
    let engine = q.engine(q.config()).await;
    let p = producer(&engine);
    // Far longer than the timeout (and than the whole test's deadline):
    // only the timeout layer can end these runs.
    p.push(
        "stuck",
        &Item {
            act: Act::Sleep(600_000),
        },
        Duration::ZERO,
    )
    .await
    .unwrap();
    let runs = Runs::default();
    let worker = start_monitored(engine.clone(), runs.clone(), 2, Duration::from_millis(200));
    assert!(
        eventually_async(Duration::from_secs(20), || async {
            engine.stats().await.unwrap().dead == 1
        })
        .await,
        "{:?}",
        engine.stats().await.unwrap()
    );
    // The worker still works after its timeouts.
    p.push("next", &Item { act: Act::Ok }, Duration::ZERO)
        .await
        .unwrap();
    assert!(eventually(Duration::from_secs(10), || runs.of("next").len() == 1).await);
    worker.stop().await;

    // Each timed-out run was a counted attempt: max_attempts = 3, exactly.
    let attempts: Vec<u32> = runs.of("stuck").iter().map(|r| r.0).collect();
    assert_eq!(attempts, [1, 2, 3]);
    let dead = engine.list(ItemState::Dead, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].item_id, "stuck");
    assert_eq!(dead[0].attempts, 3);
    let error = dead[0].error.as_deref().unwrap_or("");
    assert!(
        error.contains("attempt 3 of 3 failed") && error.contains("timed out"),
        "{error}"
    );
    let stats = engine.stats().await.unwrap();
    assert_eq!((stats.pending, stats.running, stats.scheduled), (0, 0, 0));
}
