//! The delay before retrying a transient failure: exponential (backon) with
//! full jitter.
//!
//! Full jitter (a uniform draw between zero and the exponential cap) spreads
//! the retries of many jobs that failed together — a provider outage ends
//! for everyone at once — instead of sending them back in a wave.

use std::time::Duration;

use backon::{BackoffBuilder as _, ExponentialBuilder};

/// How long to wait before retrying after failed attempt `n`: a uniform draw
/// in `[0, min(min_delay × 2^(n-1), max_delay)]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryBackoff {
    /// The cap of the first retry; doubled per attempt.
    pub min_delay: Duration,
    /// The largest cap.
    pub max_delay: Duration,
}

impl Default for RetryBackoff {
    /// One second, doubling to five minutes.
    fn default() -> RetryBackoff {
        RetryBackoff {
            min_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(300),
        }
    }
}

impl RetryBackoff {
    /// The delay before the retry that follows failed attempt `attempt` (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        full_jitter(self.cap(attempt), random_unit())
    }

    /// backon's exponential delay for the `attempt`-th retry (no jitter).
    pub fn cap(&self, attempt: u32) -> Duration {
        ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_factor(2.0)
            .without_max_times()
            .build()
            .nth(attempt.saturating_sub(1) as usize)
            .unwrap_or(self.max_delay)
    }
}

/// Between `base` (the provider's poll interval) and twice that,
/// uniformly: the pause before asking a provider again after a passing
/// fault of a safe request (a poll, a download).
pub(crate) fn jittered(base: Duration) -> Duration {
    let base = base.max(Duration::from_millis(1));
    base + full_jitter(base, random_unit())
}

/// A uniform draw in `[0, cap]`, from `unit` in `[0, 1)`.
fn full_jitter(cap: Duration, unit: f64) -> Duration {
    cap.mul_f64(unit.clamp(0.0, 1.0))
}

fn random_unit() -> f64 {
    let mut bytes = [0u8; 8];
    // The OS generator failing is not worth failing a job over: no jitter then.
    if getrandom::fill(&mut bytes).is_err() {
        return 1.0;
    }
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_double_from_one_second_to_five_minutes() {
        let backoff = RetryBackoff::default();
        let caps: Vec<u64> = (1..=10).map(|a| backoff.cap(a).as_secs()).collect();
        assert_eq!(caps, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300]);
        assert_eq!(backoff.cap(40), Duration::from_secs(300));
    }

    #[test]
    fn jitter_spans_zero_to_the_cap() {
        let cap = Duration::from_secs(8);
        assert_eq!(full_jitter(cap, 0.0), Duration::ZERO);
        assert_eq!(full_jitter(cap, 0.5), Duration::from_secs(4));
        assert!(full_jitter(cap, 0.999_999) <= cap);
        let draws: Vec<Duration> = (0..200).map(|_| RetryBackoff::default().delay(4)).collect();
        assert!(draws.iter().all(|d| *d <= Duration::from_secs(8)));
        assert!(
            draws.iter().any(|d| *d < Duration::from_secs(4))
                && draws.iter().any(|d| *d > Duration::from_secs(4)),
            "spread over the range"
        );
    }
}
