//! The rule of the crate, for both limiters: no window at the provider's
//! clock holds more submits than its quota, whatever the delays between a
//! grant, the request's arrival at the provider and its answer; and with a
//! backlog the quota is used.

mod redis;
mod simulated;

use std::time::Duration;

/// The most entries of `times` (sorted or not) in any half-open window
/// `[t, t + window)`: how a provider counts.
pub fn max_in_window(times: &[Duration], window: Duration) -> usize {
    let mut times = times.to_vec();
    times.sort_unstable();
    let mut best = 0;
    let mut start = 0;
    for end in 0..times.len() {
        while times[end] - times[start] >= window {
            start += 1;
        }
        best = best.max(end - start + 1);
    }
    best
}

#[test]
fn max_in_window_counts_half_open_windows() {
    let ms = Duration::from_millis;
    assert_eq!(max_in_window(&[], ms(10)), 0);
    assert_eq!(max_in_window(&[ms(0), ms(9), ms(10), ms(19)], ms(10)), 2);
    assert_eq!(max_in_window(&[ms(5), ms(0), ms(9)], ms(10)), 3);
}

/// `user_id` in the default project.
pub fn owner(user_id: uuid::Uuid) -> byok_core::ProjectUser {
    byok_core::ProjectUser::new(byok_core::DEFAULT_PROJECT_ID, user_id)
}
