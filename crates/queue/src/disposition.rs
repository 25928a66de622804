//! What a handler tells the queue when it does not simply succeed.

use std::fmt;
use std::time::Duration;

/// Returned as a handler's error to choose what happens to the item. Any
/// other error is a failed attempt, retried with backoff until
/// `max_attempts`; a panic caught by apalis's catch-panic layer and
/// apalis's `AbortError` are [`Disposition::Abort`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Run the item again after `after` **without counting an attempt**
    /// and without holding a worker slot meanwhile: waiting for a rate-limit
    /// window, or for the next poll of a remote operation.
    Reschedule {
        /// How long to wait.
        after: Duration,
    },
    /// This attempt failed: run again after `after` if attempts remain, else
    /// the item is dead with `error`.
    Retry {
        /// How long to wait.
        after: Duration,
        /// Why it failed (kept on the dead item if it is the last attempt).
        error: String,
    },
    /// Give up now: the item is dead with `error`, whatever attempts remain.
    Abort {
        /// Why.
        error: String,
    },
}

impl fmt::Display for Disposition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Disposition::Reschedule { after } => {
                write!(f, "rescheduled in {} ms", after.as_millis())
            }
            Disposition::Retry { after, error } => {
                write!(f, "retry in {} ms: {error}", after.as_millis())
            }
            Disposition::Abort { error } => write!(f, "aborted: {error}"),
        }
    }
}

impl std::error::Error for Disposition {}
