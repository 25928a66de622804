//! The simulator's time: the wall clock, or a manual clock that tests move.
//!
//! Everything time-based reads this clock: job progress, token expiry, the
//! stats' timestamps, Stability's burst limit. JWT `iat`/`exp` are checked
//! against it too, so a manual clock should start near real time when real
//! clients (which sign with the wall clock) talk to the simulator.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A clock in unix milliseconds. Cheap to clone; clones share the time.
#[derive(Debug, Clone)]
pub struct Clock {
    /// `None`: the wall clock. `Some`: manual time, in unix ms.
    manual: Option<Arc<AtomicI64>>,
}

impl Default for Clock {
    fn default() -> Self {
        Clock::system()
    }
}

impl Clock {
    /// The wall clock.
    pub fn system() -> Clock {
        Clock { manual: None }
    }

    /// A clock that stands still at the current wall time until
    /// [`advance`](Clock::advance)d.
    pub fn manual() -> Clock {
        Clock {
            manual: Some(Arc::new(AtomicI64::new(wall_ms()))),
        }
    }

    /// Moves a manual clock forward. Does nothing to the wall clock.
    pub fn advance(&self, by: Duration) {
        if let Some(ms) = &self.manual {
            let by = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
            ms.fetch_add(by, Ordering::SeqCst);
        }
    }

    /// Now, in milliseconds since the unix epoch.
    pub fn now_ms(&self) -> i64 {
        match &self.manual {
            Some(ms) => ms.load(Ordering::SeqCst),
            None => wall_ms(),
        }
    }
}

fn wall_ms() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

/// A duration in whole milliseconds, saturating.
pub fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told_and_clones_share_it() {
        let clock = Clock::manual();
        let copy = clock.clone();
        let start = clock.now_ms();
        assert_eq!(copy.now_ms(), start);
        copy.advance(Duration::from_millis(1500));
        assert_eq!(clock.now_ms(), start + 1500);
    }

    #[test]
    fn the_system_clock_is_near_wall_time() {
        let now = Clock::system().now_ms();
        assert!((now - wall_ms()).abs() < 1000);
    }
}
