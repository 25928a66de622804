//! Waiting for state that only shows in what a system writes.

use std::time::{Duration, Instant};

/// How long [`poll_until`] waits before the test fails.
const DEADLINE: Duration = Duration::from_secs(20);
/// How often [`poll_until`] asks again.
const EVERY: Duration = Duration::from_millis(20);

/// Asks `probe` until it answers `Some` (up to 20 s; then the test fails
/// naming `what`). Polling is right where the system under test tells the
/// test nothing but what it writes to the database or the queue, which is
/// what a producer sees too: there is no signal to wait on.
pub async fn poll_until<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(EVERY).await;
    }
}
