//! Enqueueing: the API and the workers (rescheduling follow-ups) push here.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::QueueError;
use crate::engine::{Engine, NewItem};

/// Pushes items of type `Args` to a queue. Cheap to clone.
pub struct Producer<Args> {
    engine: Arc<dyn Engine>,
    _args: PhantomData<fn(Args)>,
}

impl<Args> Clone for Producer<Args> {
    fn clone(&self) -> Self {
        Producer {
            engine: Arc::clone(&self.engine),
            _args: PhantomData,
        }
    }
}

impl<Args> std::fmt::Debug for Producer<Args> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("engine", &self.engine)
            .finish()
    }
}

impl<Args: Serialize> Producer<Args> {
    /// A producer on `engine`.
    pub fn new(engine: Arc<dyn Engine>) -> Self {
        Producer {
            engine,
            _args: PhantomData,
        }
    }

    /// Enqueues one item, due after `delay`.
    pub async fn push(&self, id: &str, args: &Args, delay: Duration) -> Result<(), QueueError> {
        let item = NewItem {
            id: id.to_owned(),
            payload: serde_json::to_string(args)?,
            delay,
            attempts: 0,
        };
        self.engine.push(std::slice::from_ref(&item)).await
    }

    /// Enqueues many items, due now, in as few round trips as possible.
    pub async fn push_bulk<'a, I>(&self, items: I) -> Result<(), QueueError>
    where
        I: IntoIterator<Item = (&'a str, &'a Args)>,
        Args: 'a,
    {
        let items = items
            .into_iter()
            .map(|(id, args)| Ok(NewItem::now(id, serde_json::to_string(args)?)))
            .collect::<Result<Vec<_>, QueueError>>()?;
        self.engine.push(&items).await
    }

    /// The engine underneath (inspection, readiness).
    pub fn engine(&self) -> &Arc<dyn Engine> {
        &self.engine
    }
}
