//! The queue engines against real Redis and SQLite, under real apalis
//! workers: delivery, retries and attempts, reschedules, dead letters,
//! inspection, crashes (kill -9 of a worker process), long runs past the
//! visibility timeout, Redis restarts, what remains after a drain, and the
//! backend under a `Monitor` with the tracing, timeout and catch-panic layers.
//! Engine-independent behaviour runs the same test body on both engines
//! (SQLite always; Redis when available).

mod child;
mod crashes;
mod harness;
mod inspection;
mod layers;
mod lifecycle;
mod partitions;
mod retention;
mod sqlite;
