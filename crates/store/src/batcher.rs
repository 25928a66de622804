//! Requests of many concurrent callers gathered into one statement: the API's job inserts
//! and a worker's step statements ([`crate::JobBatches`]) go through it.
//!
//! Why: one statement per request costs PostgreSQL a round trip, an executor start-up and a
//! commit each, and measured with `byok-bench`, that per-statement cost, not the rows
//! changed, was the bound of both the enqueue route and the pipeline.
//!
//! Why no timer: a task takes every request waiting when one of its writers is free, so at
//! low load each request runs at once, alone, and under load the requests that arrive while
//! earlier statements run form the next batch. Nothing waits for a batch to fill.
//!
//! Failure handling: a statement the database refuses is run again for each of its requests
//! alone (one of them may be the cause, and each then gets its own answer). When the
//! database is unreachable every request of the batch gets that error, rather than trying
//! each alone against a database that is not there, and rather than running again a
//! statement that may have committed. Statements run again must be safe to repeat: a
//! compare-and-set, or an insert guarded by an idempotency key.

use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::{Store, StoreError};

/// Answers for a batch's inputs, one per input and in order; `Err` when the statement
/// itself failed.
pub type BatchAnswers<O> = Result<Vec<Result<O, StoreError>>, StoreError>;

/// Runs one statement for a batch's inputs.
type Many<I, O> =
    Arc<dyn Fn(Store, Arc<Vec<I>>) -> BoxFuture<'static, BatchAnswers<O>> + Send + Sync>;

/// How a [`Batcher`] runs its statements.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// Statements in flight at once. More than one, so that a statement that stalls (a
    /// checkpoint, a lock) leaves another running while the next batch forms; few, since
    /// fewer writers make larger batches, which cost the database less per request.
    pub writers: usize,
    /// Most requests in one statement.
    pub max_batch: usize,
    /// Requests waiting beyond this run alone: the database is behind, and memory should
    /// not grow.
    pub backlog: usize,
}

struct Request<I, O> {
    input: I,
    reply: oneshot::Sender<Result<O, StoreError>>,
}

/// One kind of statement, batched: requests go to a task that runs them in batches with
/// the statement given to [`Batcher::start`].
pub struct Batcher<I, O> {
    sender: mpsc::Sender<Request<I, O>>,
    store: Store,
    many: Many<I, O>,
}

impl<I, O> std::fmt::Debug for Batcher<I, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field(
                "waiting",
                &(self.sender.max_capacity() - self.sender.capacity()),
            )
            .finish_non_exhaustive()
    }
}

impl<I: Clone + Send + Sync + 'static, O: Send + 'static> Batcher<I, O> {
    /// Starts the batching task on the current Tokio runtime; `None` outside one (the
    /// caller then runs its own statements). `many` runs one statement for a batch of
    /// inputs and answers each, in order.
    pub fn start<F, Fut>(store: &Store, limits: BatchLimits, many: F) -> Option<Self>
    where
        F: Fn(Store, Arc<Vec<I>>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = BatchAnswers<O>> + Send + 'static,
    {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let many: Many<I, O> = Arc::new(move |store, inputs| Box::pin(many(store, inputs)));
        let (sender, receiver) = mpsc::channel(limits.backlog.max(1));
        runtime.spawn(gather(store.clone(), receiver, Arc::clone(&many), limits));
        Some(Batcher {
            sender,
            store: store.clone(),
            many,
        })
    }

    /// Runs `input` in the next batch and returns its answer.
    pub async fn run(&self, input: I) -> Result<O, StoreError> {
        let (reply, answer) = oneshot::channel();
        match self.sender.try_send(Request { input, reply }) {
            Ok(()) => match answer.await {
                Ok(answer) => answer,
                // The task answers every request it takes; no answer means the runtime is
                // shutting down mid-statement, and the outcome is unknown.
                Err(_) => Err(unavailable("the batched statement was not answered")),
            },
            Err(
                mpsc::error::TrySendError::Full(request)
                | mpsc::error::TrySendError::Closed(request),
            ) => alone(&self.store, &self.many, request.input).await,
        }
    }
}

/// Runs `input` in a statement of its own.
async fn alone<I, O>(store: &Store, many: &Many<I, O>, input: I) -> Result<O, StoreError> {
    many(store.clone(), Arc::new(vec![input]))
        .await?
        .into_iter()
        .next()
        .unwrap_or_else(|| Err(StoreError::Invalid("a statement gave no answer")))
}

/// An unreachable database, told to each requester of a batch (the driver's error cannot
/// be copied; its text is kept).
fn unavailable(why: &str) -> StoreError {
    StoreError::Unavailable(sqlx::Error::Io(std::io::Error::other(why.to_owned())))
}

async fn gather<I, O>(
    store: Store,
    mut receiver: mpsc::Receiver<Request<I, O>>,
    many: Many<I, O>,
    limits: BatchLimits,
) where
    I: Clone + Send + Sync + 'static,
    O: Send + 'static,
{
    let writers = Arc::new(Semaphore::new(limits.writers.max(1)));
    let max_batch = limits.max_batch.max(1);
    loop {
        // A free writer first, then the batch: while every writer is busy, requests gather
        // in the channel for the next one.
        let Ok(writer) = Arc::clone(&writers).acquire_owned().await else {
            return;
        };
        let mut batch = Vec::with_capacity(max_batch);
        if receiver.recv_many(&mut batch, max_batch).await == 0 {
            return;
        }
        let (store, many) = (store.clone(), Arc::clone(&many));
        tokio::spawn(async move {
            answer_batch(&store, &many, batch).await;
            drop(writer);
        });
    }
}

async fn answer_batch<I: Clone, O>(store: &Store, many: &Many<I, O>, batch: Vec<Request<I, O>>) {
    let (inputs, replies): (Vec<I>, Vec<_>) = batch.into_iter().map(|r| (r.input, r.reply)).unzip();
    let inputs = Arc::new(inputs);
    // A requester that stopped waiting is gone (here and below); what the statement did for
    // it stays done.
    match many(store.clone(), Arc::clone(&inputs)).await {
        Ok(answers) if answers.len() == replies.len() => {
            for (reply, answer) in replies.into_iter().zip(answers) {
                let _ = reply.send(answer);
            }
        }
        Ok(_) => {
            tracing::error!("a batched statement answered the wrong number of requests");
            for reply in replies {
                let _ = reply.send(Err(StoreError::Invalid(
                    "a batched statement answered the wrong number of requests",
                )));
            }
        }
        Err(e) if replies.len() == 1 => {
            if let Some(reply) = replies.into_iter().next() {
                let _ = reply.send(Err(e));
            }
        }
        Err(StoreError::Unavailable(e)) => {
            let why = e.to_string();
            tracing::warn!(requests = replies.len(), error = %why, "the database is unreachable; a batched statement failed");
            for reply in replies {
                let _ = reply.send(Err(unavailable(&why)));
            }
        }
        Err(e) => {
            tracing::warn!(requests = replies.len(), error = %e, "a batched statement was refused; running its requests one by one");
            for (input, reply) in inputs.iter().zip(replies) {
                let _ = reply.send(alone(store, many, input.clone()).await);
            }
        }
    }
}
