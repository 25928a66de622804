//! Many waiting attempts, one statement: the delivery worker's tasks each need their
//! delivery claimed and, later, their attempt recorded. Asked one at a time that is two
//! PostgreSQL commits per delivery; a [`Coalescer`] gathers the requests that arrive while
//! the previous statement is out and makes them one statement.
//!
//! There is no timer: when idle a request goes at once (no latency added at low load),
//! and under load the requests pile up behind the statements in flight and go together.

use std::future::Future;
use std::sync::Arc;

use byok_store::StoreError;
use tokio::sync::{Semaphore, mpsc, oneshot};

/// The database failed a request (for a batch: every request in it gets this).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub(crate) struct StoreFailure {
    /// The database was unreachable (try again later) rather than the request wrong.
    pub(crate) unavailable: bool,
    message: String,
}

impl From<&StoreError> for StoreFailure {
    fn from(e: &StoreError) -> Self {
        StoreFailure {
            unavailable: e.is_unavailable(),
            message: e.to_string(),
        }
    }
}

impl From<StoreError> for StoreFailure {
    fn from(e: StoreError) -> Self {
        StoreFailure::from(&e)
    }
}

type Waiting<Req, Resp> = (Req, oneshot::Sender<Result<Resp, StoreFailure>>);

/// Gathers requests into batches for one batch function.
pub(crate) struct Coalescer<Req, Resp> {
    requests: mpsc::UnboundedSender<Waiting<Req, Resp>>,
}

impl<Req: Send + 'static, Resp: Send + 'static> Coalescer<Req, Resp> {
    /// Starts the gathering task (on the current Tokio runtime): batches of at most
    /// `max_batch` requests, at most `in_flight` statements at once, each made by `run`,
    /// which answers a batch in its order. The task ends when the coalescer is dropped.
    pub(crate) fn start<F, Fut>(max_batch: usize, in_flight: usize, run: F) -> Self
    where
        F: Fn(Vec<Req>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<Resp>, StoreError>> + Send + 'static,
    {
        let (requests, mut waiting) = mpsc::unbounded_channel::<Waiting<Req, Resp>>();
        let slots = Arc::new(Semaphore::new(in_flight.max(1)));
        let max_batch = max_batch.max(1);
        tokio::spawn(async move {
            loop {
                // A slot first, then the requests: those arriving while every slot is
                // busy join the next batch instead of waiting behind it one by one.
                let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
                    return;
                };
                let Some(first) = waiting.recv().await else {
                    return;
                };
                let mut batch = vec![first];
                while batch.len() < max_batch {
                    match waiting.try_recv() {
                        Ok(request) => batch.push(request),
                        Err(_) => break,
                    }
                }
                let (requests, answers): (Vec<Req>, Vec<_>) = batch.into_iter().unzip();
                let statement = run(requests);
                tokio::spawn(async move {
                    let _slot = slot;
                    match statement.await {
                        Ok(results) if results.len() == answers.len() => {
                            for (answer, result) in answers.into_iter().zip(results) {
                                let _ = answer.send(Ok(result));
                            }
                        }
                        Ok(_) => {
                            let error = StoreFailure {
                                unavailable: false,
                                message: "a batch was answered with the wrong number of results"
                                    .to_owned(),
                            };
                            for answer in answers {
                                let _ = answer.send(Err(error.clone()));
                            }
                        }
                        Err(e) => {
                            let error = StoreFailure::from(&e);
                            for answer in answers {
                                let _ = answer.send(Err(error.clone()));
                            }
                        }
                    }
                });
            }
        });
        Coalescer { requests }
    }

    /// Makes `request` in the next batch and waits for its answer.
    pub(crate) async fn call(&self, request: Req) -> Result<Resp, StoreFailure> {
        // A batch task that panicked drops its answers: like an unreachable database,
        // the attempt is simply made later.
        self.submit(request)?.await.map_err(|_| stopping())?
    }

    /// Queues `request` for the next batch; the answer comes on the receiver.
    fn submit(
        &self,
        request: Req,
    ) -> Result<oneshot::Receiver<Result<Resp, StoreFailure>>, StoreFailure> {
        let (answer, answered) = oneshot::channel();
        self.requests
            .send((request, answer))
            .map_err(|_| stopping())?;
        Ok(answered)
    }
}

fn stopping() -> StoreFailure {
    StoreFailure {
        unavailable: true,
        message: "the delivery worker is stopping".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Requests made while a statement is out go together in the next one, each caller
    /// gets its own answer, and an error reaches every caller of its batch.
    #[tokio::test]
    async fn requests_waiting_behind_a_statement_share_the_next_one() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let gate = Arc::new(tokio::sync::Notify::new());
        let coalescer = {
            let (sizes, gate) = (Arc::clone(&sizes), Arc::clone(&gate));
            Coalescer::start(64, 1, move |batch: Vec<u32>| {
                let (sizes, gate) = (Arc::clone(&sizes), Arc::clone(&gate));
                async move {
                    sizes.lock().unwrap().push(batch.len());
                    if batch == [1] {
                        // The first statement stays out until the others are queued.
                        gate.notified().await;
                    }
                    if batch.contains(&999) {
                        return Err(StoreError::Invalid("999"));
                    }
                    Ok(batch.into_iter().map(|n| n * 2).collect::<Vec<_>>())
                }
            })
        };
        let first = coalescer.submit(1).unwrap();
        byok_testing::poll_until("the first statement is out", async || {
            (!sizes.lock().unwrap().is_empty()).then_some(())
        })
        .await;
        // Queued while the only slot is taken.
        let rest: Vec<_> = (2..=10).map(|n| coalescer.submit(n).unwrap()).collect();
        gate.notify_one();
        assert_eq!(first.await.unwrap().unwrap(), 2);
        for (n, answer) in (2..=10).zip(rest) {
            assert_eq!(answer.await.unwrap().unwrap(), n * 2);
        }
        assert_eq!(*sizes.lock().unwrap(), vec![1, 9]);

        let failing: Vec<_> = [7, 999].map(|n| coalescer.submit(n).unwrap()).into();
        for answer in failing {
            let error = answer
                .await
                .unwrap()
                .expect_err("the batch with 999 failed");
            assert!(!error.unavailable);
        }
        assert_eq!(sizes.lock().unwrap().last(), Some(&2));
        drop(coalescer);
    }
}
