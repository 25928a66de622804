//! The pipeline in process against a scripted Runway (wiremock), on the
//! embedded parts (SQLite store and queue, in-process limiter): retries and
//! their limits, permanent failures, rejected keys, lost submits, throttling,
//! flaky polls, cancels and the sweeper. Each request the provider receives
//! is counted, so "never sent twice" is checked, not assumed.

mod harness;
mod lifecycle;
mod retries;
