//! The embedded limiter: the algorithm of the Redis script, in process.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use byok_core::RateLimits;

use crate::{
    Acquire, Clock, Decision, IN_FLIGHT_RECHECK, KeyState, LimitKey, MAX_BLOCK, MonotonicClock,
    Permit, RateLimitError, RateLimiter, Windows,
};

/// The map is swept of idle keys when it has grown to twice its size after
/// the previous sweep (and at least this size), or a long window after the
/// previous sweep, whichever comes first: amortised O(1) per call, and idle
/// keys never outlive two long windows by much.
const MIN_SWEEP_LEN: usize = 64;

/// Rate limits for the embedded shape, where one process runs every worker:
/// per key, the latest time each permit can have reached the provider,
/// behind one mutex. Exact (see the crate documentation); memory is at most
/// `per_hour` entries per key used within the last long window, and idle
/// keys are evicted.
pub struct LocalLimiter {
    clock: Arc<dyn Clock>,
    windows: Windows,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    keys: HashMap<LimitKey, KeyLog>,
    /// The map is swept when it reaches this many keys.
    sweep_at_len: usize,
    /// When the map was last swept (clock time).
    last_sweep: Duration,
}

#[derive(Debug, Default)]
struct KeyLog {
    /// (score, permit id): the latest time each permit's submit reached the
    /// provider — its settlement, or grant + max submit time while in
    /// flight. Ordered by score.
    entries: BTreeSet<(Duration, u64)>,
    /// Each entry's score, by permit id.
    scores: HashMap<u64, Duration>,
    /// No grant before this time (zero: no block).
    blocked_until: Duration,
}

impl LocalLimiter {
    /// A limiter with minute/hour windows on the monotonic clock.
    pub fn new() -> LocalLimiter {
        LocalLimiter {
            clock: Arc::new(MonotonicClock::new()),
            windows: Windows::default(),
            state: Mutex::new(State {
                sweep_at_len: MIN_SWEEP_LEN,
                ..State::default()
            }),
        }
    }

    /// The same limiter reading time from `clock` (a [`crate::ManualClock`]
    /// in tests). Call before the first use: times already recorded belong
    /// to the old clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> LocalLimiter {
        self.clock = clock;
        self
    }

    /// The same limiter with other window lengths (tests).
    pub fn with_windows(mut self, windows: Windows) -> LocalLimiter {
        self.windows = windows;
        self
    }

    /// [`RateLimiter::acquire`], telling the grant time on this limiter's clock.
    pub fn decide(&self, key: &LimitKey, limits: RateLimits) -> Result<Decision, RateLimitError> {
        let limits = crate::checked(limits)?;
        let mut state = self.lock();
        // The clock is read under the lock, so decisions are made in the
        // order of their times.
        let now = self.clock.now();
        let decision = state
            .keys
            .entry(*key)
            .or_default()
            .decide(*key, now, limits, self.windows);
        state.maybe_sweep(now, self.windows);
        Ok(decision)
    }

    /// [`RateLimiter::finish`] without the async wrapper.
    pub fn settle(&self, permit: &Permit, sent: bool) {
        let mut state = self.lock();
        let now = self.clock.now();
        if let Some(log) = state.keys.get_mut(permit.key()) {
            log.settle(permit.id(), sent.then_some(now));
        }
    }

    /// How many keys the limiter holds state for (idle ones are evicted).
    pub fn tracked_keys(&self) -> usize {
        self.lock().keys.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Nothing inside the lock can panic half-way through an update, but a
        // poisoned lock must not turn every later call into a panic either.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for LocalLimiter {
    fn default() -> LocalLimiter {
        LocalLimiter::new()
    }
}

impl fmt::Debug for LocalLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalLimiter")
            .field("windows", &self.windows)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl RateLimiter for LocalLimiter {
    async fn acquire(&self, key: &LimitKey, limits: RateLimits) -> Result<Acquire, RateLimitError> {
        self.decide(key, limits).map(Acquire::from)
    }

    async fn finish(&self, permit: Permit, sent: bool) -> Result<(), RateLimitError> {
        self.settle(&permit, sent);
        Ok(())
    }

    async fn block(&self, key: &LimitKey, for_: Duration) -> Result<(), RateLimitError> {
        let mut state = self.lock();
        let now = self.clock.now();
        let log = state.keys.entry(*key).or_default();
        log.blocked_until = log.blocked_until.max(now + for_.min(MAX_BLOCK));
        tracing::debug!(key = %key, ?for_, "rate-limit key blocked");
        state.maybe_sweep(now, self.windows);
        Ok(())
    }

    async fn inspect(&self, key: &LimitKey) -> Result<KeyState, RateLimitError> {
        let state = self.lock();
        let now = self.clock.now();
        Ok(state
            .keys
            .get(key)
            .map(|log| log.standing(now, self.windows))
            .unwrap_or_default())
    }
}

impl KeyLog {
    fn decide(
        &mut self,
        key: LimitKey,
        now: Duration,
        limits: RateLimits,
        windows: Windows,
    ) -> Decision {
        // Entries at or before now − long are outside every window from now on.
        while let Some(&(score, id)) = self.entries.first()
            && score + windows.long() <= now
        {
            self.entries.pop_first();
            self.scores.remove(&id);
        }
        let wait = self
            .blocked_until
            .saturating_sub(now)
            .max(self.window_wait(now, limits.per_minute, windows.short()))
            .max(self.window_wait(now, limits.per_hour, windows.long()));
        if wait > Duration::ZERO {
            return Decision::Wait(wait);
        }
        let mut permit = Permit::new(key);
        while self.scores.contains_key(&permit.id()) {
            permit = Permit::new(key);
        }
        let score = now + windows.max_submit_time();
        self.entries.insert((score, permit.id()));
        self.scores.insert(permit.id(), score);
        Decision::Granted { at: now, permit }
    }

    /// Time until fewer than `quota` entries score above now − window: the
    /// `quota`-th highest must leave the window, at its score + window; a
    /// short recheck when that entry is still in flight (its score is a
    /// presumption in the future). Zero when it already has (or does not exist).
    fn window_wait(&self, now: Duration, quota: u32, window: Duration) -> Duration {
        let nth = usize::try_from(quota)
            .unwrap_or(usize::MAX)
            .saturating_sub(1);
        match self.entries.iter().rev().nth(nth) {
            Some(&(score, _)) if score > now => (score + window - now).min(IN_FLIGHT_RECHECK),
            Some(&(score, _)) => (score + window).saturating_sub(now),
            None => Duration::ZERO,
        }
    }

    /// The counts an acquire at `now` would see: an entry counts in a window while its score
    /// is after now − window (in flight: a presumed arrival, after now).
    fn standing(&self, now: Duration, windows: Windows) -> KeyState {
        let after = |t: Option<Duration>| {
            self.entries
                .iter()
                .rev()
                .take_while(|&&(score, _)| t.is_none_or(|t| score > t))
                .count() as u64
        };
        KeyState {
            in_short_window: after(now.checked_sub(windows.short())),
            in_long_window: after(now.checked_sub(windows.long())),
            in_flight: after(Some(now)),
            blocked_for: (self.blocked_until > now).then(|| self.blocked_until - now),
        }
    }

    /// Stamps the permit `id` at `sent_at`, or gives it back (`None`).
    fn settle(&mut self, id: u64, sent_at: Option<Duration>) {
        let Some(score) = self.scores.remove(&id) else {
            return;
        };
        self.entries.remove(&(score, id));
        if let Some(at) = sent_at {
            self.entries.insert((at, id));
            self.scores.insert(id, at);
        }
    }

    /// Nothing here can influence a decision any more.
    fn idle(&self, now: Duration, long: Duration) -> bool {
        self.blocked_until <= now
            && self
                .entries
                .last()
                .is_none_or(|&(newest, _)| newest + long <= now)
    }
}

impl State {
    fn maybe_sweep(&mut self, now: Duration, windows: Windows) {
        let long = windows.long();
        if self.keys.len() < self.sweep_at_len && now < self.last_sweep + long {
            return;
        }
        self.keys.retain(|_, log| !log.idle(now, long));
        self.sweep_at_len = (self.keys.len() * 2).max(MIN_SWEEP_LEN);
        self.last_sweep = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ManualClock;
    use byok_core::ProviderId;
    use uuid::Uuid;

    fn owner(user_id: Uuid) -> byok_core::ProjectUser {
        byok_core::ProjectUser::new(byok_core::DEFAULT_PROJECT_ID, user_id)
    }

    #[test]
    fn idle_keys_are_evicted() {
        let clock = ManualClock::new(Duration::from_secs(1));
        let limiter = LocalLimiter::new().with_clock(Arc::new(clock.clone()));
        let limits = RateLimits {
            per_minute: 5,
            per_hour: 50,
        };
        for _ in 0..1000 {
            let key = LimitKey::new(ProviderId::VEO, owner(Uuid::new_v4()));
            assert!(matches!(
                limiter.decide(&key, limits),
                Ok(Decision::Granted { .. })
            ));
        }
        assert_eq!(
            limiter.tracked_keys(),
            1000,
            "no key is dropped while its grants are in the long window"
        );
        clock.advance(Windows::MINUTE_HOUR.long() + Windows::MINUTE_HOUR.max_submit_time());
        let key = LimitKey::new(ProviderId::VEO, owner(Uuid::new_v4()));
        limiter.decide(&key, limits).unwrap();
        assert_eq!(
            limiter.tracked_keys(),
            1,
            "a long window after their last permit could have arrived, the idle keys are gone"
        );
    }

    #[test]
    fn a_block_keeps_its_key_until_it_ends() {
        let clock = ManualClock::new(Duration::ZERO);
        let limiter = LocalLimiter::new().with_clock(Arc::new(clock.clone()));
        let key = LimitKey::new(ProviderId::RUNWAY, owner(Uuid::new_v4()));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(limiter.block(&key, Duration::from_secs(7200)))
            .unwrap();
        clock.advance(Duration::from_secs(3601));
        let limits = RateLimits {
            per_minute: 1,
            per_hour: 1,
        };
        // A long window has passed: this call sweeps, and must keep the blocked key.
        let other = LimitKey::new(ProviderId::VEO, owner(Uuid::new_v4()));
        limiter.decide(&other, limits).unwrap();
        assert_eq!(limiter.tracked_keys(), 2);
        assert_eq!(
            limiter.decide(&key, limits).unwrap(),
            Decision::Wait(Duration::from_secs(7200 - 3601))
        );
    }
}
