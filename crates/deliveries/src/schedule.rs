//! When a failed delivery is tried again.

use std::time::Duration;

/// The pauses after each failed attempt: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h, about
/// 28 hours in all, as the Standard Webhooks guidance and Svix's schedule suggest
/// (<https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md>,
/// <https://docs.svix.com/retries>). Eight attempts, then the delivery is failed.
pub const DEFAULT_SCHEDULE: [Duration; 7] = [
    Duration::from_secs(5),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(5 * 3600),
    Duration::from_secs(10 * 3600),
    Duration::from_secs(10 * 3600),
];

/// The pauses between attempts; one attempt more than pauses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule(Vec<Duration>);

impl Default for RetrySchedule {
    fn default() -> Self {
        RetrySchedule(DEFAULT_SCHEDULE.to_vec())
    }
}

impl RetrySchedule {
    /// A schedule of these pauses (tests and benchmarks shorten it).
    pub fn new(pauses: Vec<Duration>) -> RetrySchedule {
        RetrySchedule(pauses)
    }

    /// Attempts in all.
    pub fn max_attempts(&self) -> u32 {
        u32::try_from(self.0.len()).unwrap_or(u32::MAX - 1) + 1
    }

    /// The pause after failed attempt `attempt` (1-based), with jitter (a uniform ±20%,
    /// so that deliveries failed together by one outage do not all return together);
    /// `None` after the last attempt.
    pub fn after(&self, attempt: u32) -> Option<Duration> {
        let index = usize::try_from(attempt.checked_sub(1)?).ok()?;
        let base = *self.0.get(index)?;
        let mut random = [0u8; 2];
        let unit = match getrandom::fill(&mut random) {
            Ok(()) => f64::from(u16::from_le_bytes(random)) / f64::from(u16::MAX),
            Err(_) => 0.5,
        };
        Some(base.mul_f64(0.8 + 0.4 * unit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eight_attempts_over_about_a_day_with_jitter_inside_twenty_percent() {
        let schedule = RetrySchedule::default();
        assert_eq!(schedule.max_attempts(), 8);
        let total: Duration = DEFAULT_SCHEDULE.iter().sum();
        assert!(total > Duration::from_secs(27 * 3600) && total < Duration::from_secs(29 * 3600));
        for attempt in 1..=7 {
            let base = DEFAULT_SCHEDULE[attempt as usize - 1];
            let pause = schedule.after(attempt).unwrap();
            assert!(
                pause >= base.mul_f64(0.8) && pause <= base.mul_f64(1.2),
                "{attempt}"
            );
        }
        assert_eq!(schedule.after(8), None);
        assert_eq!(schedule.after(0), None);
    }
}
