//! The apalis 1.0 backend over either engine, so `apalis::WorkerBuilder`,
//! `Monitor` and the tower layers (concurrency, timeout, catch-panic,
//! tracing) run on our queue unchanged.
//!
//! apalis's own `Persisted` helper runs fetch and acknowledgement strictly
//! one after the other and starves lease renewal while tasks are buffered
//! (apalis-core 1.0.0, `backend/persistence`; docs/queue-engine.md). This backend instead
//! runs three tasks per worker, started when the worker builds its service
//! stack (`BackendConfig::middleware`):
//!
//! - the **fetcher** keeps a small channel of fetched items filled, asking
//!   for at most as many as the channel has room for, so a worker never
//!   holds more unstarted work than `prefetch`;
//! - the **acknowledger** batches settlements (ack, reschedule, retry,
//!   dead) into one round trip per batch, concurrently with fetching;
//! - the **keeper** renews the leases of everything the worker holds,
//!   promotes due delayed items and takes over items of dead workers.
//!
//! `poll_next` only receives from the channel and decodes; nothing the
//! backend does can end the worker: Redis errors are logged and retried
//! with backoff, undecodable items go to dead.

use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use apalis_core::backend::{Backend, BackendConfig};
use apalis_core::error::{AbortError, BoxDynError, RetryAfterError};
use apalis_core::task::Task;
use apalis_core::task::builder::TaskBuilder;
use apalis_core::task::task_id::TaskId;
use apalis_core::worker::context::WorkerContext;
use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use tokio::sync::{Notify, mpsc};
use tower::{Layer, Service};

use crate::engine::{Consumer, Delivery, Engine, Settlement};
use crate::{Disposition, QueueConfig};

/// Deliveries a worker holds (fetched and not yet settled), by handle: the
/// leases the keeper renews.
#[derive(Debug, Default)]
struct Held(Mutex<HashMap<String, Delivery>>);

impl Held {
    fn insert(&self, d: &Delivery) {
        self.0
            .lock()
            .expect("held lock")
            .insert(d.handle.clone(), d.clone());
    }
    fn remove(&self, handle: &str) {
        self.0.lock().expect("held lock").remove(handle);
    }
    fn snapshot(&self) -> Vec<Delivery> {
        self.0
            .lock()
            .expect("held lock")
            .values()
            .cloned()
            .collect()
    }
}

/// State shared by a running worker's backend, its tasks and its ack layer.
#[derive(Debug)]
struct Shared {
    engine: Arc<dyn Engine>,
    name: String,
    held: Held,
    stop: AtomicBool,
    stop_notify: Notify,
    /// Wakes the keeper early (a reschedule was just written).
    keeper_wake: Notify,
}

impl Shared {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    async fn stopped(&self) {
        loop {
            let notified = self.stop_notify.notified();
            if self.stopping() {
                return;
            }
            notified.await;
        }
    }

    /// Sleeps `d`, or less if the worker stops.
    async fn pause(&self, d: Duration) {
        tokio::select! {
            () = tokio::time::sleep(d) => {}
            () = self.stopped() => {}
        }
    }
}

/// An apalis backend for items of type `Args` (JSON payloads) on `engine`.
pub struct QueueBackend<Args> {
    engine: Arc<dyn Engine>,
    running: Option<Running>,
    _args: PhantomData<fn() -> Args>,
}

struct Running {
    shared: Arc<Shared>,
    consumer: ConsumerSlot,
    rx: mpsc::Receiver<Delivery>,
    acks: mpsc::UnboundedSender<(Delivery, Settlement)>,
    fetcher: Option<tokio::task::JoinHandle<()>>,
    keeper: Option<tokio::task::JoinHandle<()>>,
    acker: Option<tokio::task::JoinHandle<()>>,
    closing: Option<BoxFuture<'static, ()>>,
}

impl<Args> std::fmt::Debug for QueueBackend<Args> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueBackend")
            .field("engine", &self.engine)
            .field(
                "consumer",
                &self.running.as_ref().map(|r| r.shared.name.clone()),
            )
            .finish()
    }
}

impl<Args> Clone for QueueBackend<Args> {
    /// A fresh, not yet started backend on the same engine: a worker the
    /// Monitor restarts must not inherit the old worker's leases.
    fn clone(&self) -> Self {
        QueueBackend {
            engine: Arc::clone(&self.engine),
            running: None,
            _args: PhantomData,
        }
    }
}

impl<Args> QueueBackend<Args> {
    /// A backend on `engine`.
    pub fn new(engine: Arc<dyn Engine>) -> Self {
        QueueBackend {
            engine,
            running: None,
            _args: PhantomData,
        }
    }

    fn start(&mut self, worker_name: &str) -> AckLayer {
        let config = self.engine.config().clone();
        // Unique per process and per (re)start: Redis consumers are
        // per-name, and a reused name would inherit a dead worker's entries.
        let name = format!(
            "{worker_name}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let shared = Arc::new(Shared {
            engine: Arc::clone(&self.engine),
            name,
            held: Held::default(),
            stop: AtomicBool::new(false),
            stop_notify: Notify::new(),
            keeper_wake: Notify::new(),
        });
        let consumer = ConsumerSlot::new(Arc::clone(&shared));
        let (tx, rx) = mpsc::channel(config.prefetch.max(1));
        let (acks, acks_rx) = mpsc::unbounded_channel();
        let fetcher = tokio::spawn(fetcher(Arc::clone(&shared), consumer.clone(), tx.clone()));
        let keeper = tokio::spawn(keeper(Arc::clone(&shared), consumer.clone(), tx));
        let acker = tokio::spawn(acknowledger(Arc::clone(&shared), consumer.clone(), acks_rx));
        tracing::info!(consumer = %shared.name, namespace = %config.namespace, "queue consumer started");
        let layer = AckLayer {
            shared: Arc::clone(&shared),
            acks: acks.clone(),
            config,
        };
        self.running = Some(Running {
            shared,
            consumer,
            rx,
            acks,
            fetcher: Some(fetcher),
            keeper: Some(keeper),
            acker: Some(acker),
            closing: None,
        });
        layer
    }
}

/// The consumer of a running worker, opened on first use and reopened after
/// failures, shared by its three tasks.
#[derive(Clone)]
struct ConsumerSlot {
    shared: Arc<Shared>,
    inner: Arc<tokio::sync::OnceCell<Arc<dyn Consumer>>>,
}

impl ConsumerSlot {
    fn new(shared: Arc<Shared>) -> Self {
        ConsumerSlot {
            shared,
            inner: Arc::new(tokio::sync::OnceCell::new()),
        }
    }

    async fn get(&self) -> Result<Arc<dyn Consumer>, crate::QueueError> {
        self.inner
            .get_or_try_init(|| self.shared.engine.consumer(&self.shared.name))
            .await
            .cloned()
    }
}

/// Exponential backoff for a task's failures: 100 ms doubling to 5 s.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Self {
        Backoff(Duration::from_millis(100))
    }
    fn next(&mut self) -> Duration {
        let d = self.0;
        self.0 = (self.0 * 2).min(Duration::from_secs(5));
        d
    }
    fn reset(&mut self) {
        self.0 = Duration::from_millis(100);
    }
}

async fn fetcher(shared: Arc<Shared>, consumer: ConsumerSlot, tx: mpsc::Sender<Delivery>) {
    let mut backoff = Backoff::new();
    while !shared.stopping() {
        // Wait for room first: fetching what cannot be started would take
        // items away from idle workers.
        let permit = tokio::select! {
            permit = tx.reserve() => match permit { Ok(p) => p, Err(_) => return },
            () = shared.stopped() => return,
        };
        let want = 1 + tx.capacity();
        // A fetch is never abandoned half-way (even on stop): Redis may
        // already have assigned the entries to us, and dropping the answer
        // would strand them until the visibility timeout.
        let fetched = match consumer.get().await {
            Ok(c) => c.fetch(want).await,
            Err(e) => Err(e),
        };
        match fetched {
            Ok(items) => {
                backoff.reset();
                let mut items = items.into_iter();
                if let Some(first) = items.next() {
                    shared.held.insert(&first);
                    permit.send(first);
                }
                for item in items {
                    shared.held.insert(&item);
                    if let Err(e) = tx.try_send(item) {
                        // Cannot happen (we asked for no more than the free
                        // room), but never lose an item: hand it back.
                        let item = match e {
                            mpsc::error::TrySendError::Full(i)
                            | mpsc::error::TrySendError::Closed(i) => i,
                        };
                        release(&shared, &consumer, vec![item]).await;
                    }
                }
            }
            Err(e) => {
                drop(permit);
                let wait = backoff.next();
                tracing::warn!(consumer = %shared.name, error = %e, retry_in_ms = wait.as_millis() as u64, "queue fetch failed; retrying");
                shared.pause(wait).await;
            }
        }
    }
}

async fn release(shared: &Shared, consumer: &ConsumerSlot, items: Vec<Delivery>) {
    if items.is_empty() {
        return;
    }
    for d in &items {
        shared.held.remove(&d.handle);
    }
    let result = match consumer.get().await {
        Ok(c) => c.release(&items).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => {
            tracing::info!(consumer = %shared.name, count = items.len(), "handed unstarted items back");
        }
        // They stay leased to this consumer and return after the
        // visibility timeout: delayed, never lost.
        Err(e) => {
            tracing::warn!(consumer = %shared.name, error = %e, count = items.len(), "could not hand items back; they return after the visibility timeout");
        }
    }
}

async fn keeper(shared: Arc<Shared>, consumer: ConsumerSlot, tx: mpsc::Sender<Delivery>) {
    let config = shared.engine.config().clone();
    let lease_every = config.lease_interval();
    let mut last_lease = tokio::time::Instant::now();
    let mut backoff = Backoff::new();
    while !shared.stopping() {
        let c = match consumer.get().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "queue keeper cannot open its consumer; retrying");
                shared.pause(backoff.next()).await;
                continue;
            }
        };
        let mut next = config.reclaim_interval();
        if last_lease.elapsed() >= lease_every {
            let held = shared.held.snapshot();
            if !held.is_empty()
                && let Err(e) = c.extend(&held).await
            {
                tracing::warn!(consumer = %shared.name, error = %e, "lease renewal failed; retrying");
            }
            last_lease = tokio::time::Instant::now();
        }
        match c.maintain().await {
            Ok(m) => {
                backoff.reset();
                if let Some(due) = m.next_due {
                    next = next.min(due.max(Duration::from_millis(5)));
                }
                let mut back = Vec::new();
                for d in m.reclaimed {
                    shared.held.insert(&d);
                    // Never wait for room here: lease renewal must go on.
                    if let Err(e) = tx.try_send(d) {
                        back.push(match e {
                            mpsc::error::TrySendError::Full(d)
                            | mpsc::error::TrySendError::Closed(d) => d,
                        });
                    }
                }
                release(&shared, &consumer, back).await;
            }
            Err(e) => {
                next = backoff.next();
                tracing::warn!(consumer = %shared.name, error = %e, "queue maintenance failed; retrying");
            }
        }
        next = next.min(
            lease_every
                .saturating_sub(last_lease.elapsed())
                .max(Duration::from_millis(5)),
        );
        tokio::select! {
            () = tokio::time::sleep(next) => {}
            () = shared.keeper_wake.notified() => {}
            () = shared.stopped() => {}
        }
    }
}

/// Most settlements written per round trip.
const SETTLE_BATCH: usize = 512;

async fn acknowledger(
    shared: Arc<Shared>,
    consumer: ConsumerSlot,
    mut rx: mpsc::UnboundedReceiver<(Delivery, Settlement)>,
) {
    loop {
        let first = tokio::select! {
            item = rx.recv() => match item { Some(i) => i, None => return },
            () = shared.stopped() => match rx.try_recv() { Ok(i) => i, Err(_) => return },
        };
        // Under load, settlements pile up while the last batch is written, and
        // go out together; when idle, each goes at once.
        let mut batch = vec![first];
        while batch.len() < SETTLE_BATCH {
            match rx.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        let wake_keeper = batch.iter().any(|(_, s)| !matches!(s, Settlement::Ack));
        let mut backoff = Backoff::new();
        for attempt in 1..=5 {
            let result = match consumer.get().await {
                Ok(c) => c.settle(&batch).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => break,
                Err(e) if attempt < 5 => {
                    tracing::warn!(consumer = %shared.name, error = %e, "settling items failed; retrying");
                    tokio::time::sleep(backoff.next()).await;
                }
                // Settling is idempotent; the items stay leased and come back
                // after the visibility timeout (at least once, never lost).
                Err(e) => {
                    tracing::error!(consumer = %shared.name, error = %e, count = batch.len(), "could not settle items; they will run again");
                }
            }
        }
        if wake_keeper {
            shared.keeper_wake.notify_one();
        }
    }
}

impl<Args> Backend for QueueBackend<Args>
where
    Args: DeserializeOwned + Send + 'static,
{
    type Task = Task<Args>;
    type Error = std::io::Error;

    fn poll_ready(
        &mut self,
        _cx: &mut Context<'_>,
        _worker: &WorkerContext,
    ) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Option<Result<Self::Task, Self::Error>>> {
        if self.running.is_none() {
            // `middleware` normally starts the backend; a worker driven
            // without it still gets one.
            let _ = self.start(worker.name());
        }
        let running = self.running.as_mut().expect("started above");
        loop {
            let Some(delivery) = std::task::ready!(running.rx.poll_recv(cx)) else {
                return Poll::Ready(None);
            };
            match decode::<Args>(&delivery) {
                Ok(args) => {
                    let config = running.shared.engine.config();
                    // LifecycleLayer adds one when the run starts.
                    let task = TaskBuilder::new(args)
                        .task_id(TaskId::from_string(delivery.item_id.clone()))
                        .attempt(delivery.attempt().saturating_sub(1) as usize)
                        .max_attempts(config.max_attempts as usize)
                        .data(delivery)
                        .build();
                    return Poll::Ready(Some(Ok(task)));
                }
                Err(error) => {
                    tracing::error!(item = %delivery.item_id, %error, "undecodable queue item: moved to dead");
                    running.shared.held.remove(&delivery.handle);
                    let _ = running.acks.send((delivery, Settlement::Dead { error }));
                }
            }
        }
    }

    fn poll_close(
        &mut self,
        cx: &mut Context<'_>,
        _worker: &WorkerContext,
    ) -> Poll<Result<(), Self::Error>> {
        let Some(running) = self.running.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        if running.closing.is_none() {
            let shared = Arc::clone(&running.shared);
            shared.stop.store(true, Ordering::Release);
            shared.stop_notify.notify_waiters();
            let fetcher = running.fetcher.take();
            let keeper = running.keeper.take();
            let acker = running.acker.take();
            // Everything still in the channel was fetched but never started.
            let mut rx = std::mem::replace(&mut running.rx, mpsc::channel(1).1);
            let consumer = running.consumer.clone();
            running.closing = Some(Box::pin(async move {
                for task in [fetcher, keeper].into_iter().flatten() {
                    let _ = task.await;
                }
                rx.close();
                let mut unstarted = Vec::new();
                while let Some(d) = rx.recv().await {
                    unstarted.push(d);
                }
                release(&shared, &consumer, unstarted).await;
                if let Some(acker) = acker {
                    let _ = acker.await;
                }
                if let Ok(c) = consumer.get().await
                    && let Err(e) = c.close().await
                {
                    tracing::warn!(consumer = %shared.name, error = %e, "could not leave the queue cleanly");
                }
                tracing::info!(consumer = %shared.name, "queue consumer stopped");
            }));
        }
        let closing = running.closing.as_mut().expect("set above");
        closing.as_mut().poll(cx).map(Ok)
    }
}

fn decode<Args: DeserializeOwned>(delivery: &Delivery) -> Result<Args, String> {
    if delivery.item_id.is_empty() {
        return Err("malformed queue entry (no item id)".to_owned());
    }
    serde_json::from_str(&delivery.payload).map_err(|e| format!("undecodable payload: {e}"))
}

impl<Args> BackendConfig for QueueBackend<Args>
where
    Args: DeserializeOwned + Send + 'static,
{
    type Args = Args;
    type Id = String;
    type Kind = apalis_core::backend::finalize::Ephemeral;
    type Config = QueueConfig;
    type Layer = AckLayer;

    fn config(&self) -> &Self::Config {
        self.engine.config()
    }

    fn middleware(&mut self, worker: &mut WorkerContext) -> Self::Layer {
        self.start(worker.name())
    }
}

/// The backend's layer: when a run ends, turns its result into a
/// settlement for the acknowledger. It sits outside the user's layers, so
/// it sees timeouts and caught panics as errors.
#[derive(Debug, Clone)]
pub struct AckLayer {
    shared: Arc<Shared>,
    acks: mpsc::UnboundedSender<(Delivery, Settlement)>,
    config: QueueConfig,
}

impl<S> Layer<S> for AckLayer {
    type Service = AckService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AckService {
            inner,
            layer: self.clone(),
        }
    }
}

/// See [`AckLayer`].
#[derive(Debug, Clone)]
pub struct AckService<S> {
    inner: S,
    layer: AckLayer,
}

impl<S, Args> Service<Task<Args>> for AckService<S>
where
    S: Service<Task<Args>>,
    S::Future: Send + 'static,
    S::Error: Into<BoxDynError>,
    S::Response: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxDynError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxDynError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, task: Task<Args>) -> Self::Future {
        let delivery = task.ctx().data().get::<Delivery>().cloned();
        let run = self.inner.call(task);
        let layer = self.layer.clone();
        Box::pin(async move {
            let result = run.await.map_err(Into::into);
            if let Some(delivery) = delivery {
                let settlement = match &result {
                    Ok(_) => Settlement::Ack,
                    Err(e) => settlement_for(e.as_ref(), &delivery, &layer.config),
                };
                layer.shared.held.remove(&delivery.handle);
                // The acknowledger outlives every run (it stops only after
                // the worker drained), so this send does not fail.
                let _ = layer.acks.send((delivery, settlement));
            }
            result
        })
    }
}

/// What a failed run means for its item.
fn settlement_for(
    error: &(dyn std::error::Error + Send + Sync + 'static),
    delivery: &Delivery,
    config: &QueueConfig,
) -> Settlement {
    if let Some(d) = error.downcast_ref::<Disposition>() {
        return match d {
            Disposition::Reschedule { after } => Settlement::Reschedule { after: *after },
            Disposition::Retry { after, error } => Settlement::Retry {
                after: *after,
                error: error.clone(),
            },
            Disposition::Abort { error } => Settlement::Dead {
                error: error.clone(),
            },
        };
    }
    if error.downcast_ref::<AbortError>().is_some() {
        return Settlement::Dead {
            error: error.to_string(),
        };
    }
    if let Some(r) = error.downcast_ref::<RetryAfterError>() {
        return Settlement::Retry {
            after: r.get_duration(),
            error: r.to_string(),
        };
    }
    Settlement::Retry {
        after: config.retry_delay(delivery.attempt()),
        error: error.to_string(),
    }
}
