#![doc = include_str!("../README.md")]

mod clock;
mod local;
mod redis;

use std::fmt;
use std::time::Duration;

use byok_core::{DEFAULT_PROJECT_ID, ProjectUser, ProviderId, RateLimits};

pub use clock::{Clock, ManualClock, MonotonicClock};
pub use local::LocalLimiter;
pub use redis::RedisLimiter;

/// The one interface the workers use. Both implementations enforce the same
/// rule (see the crate documentation) and are used as `Arc<dyn RateLimiter>`.
#[async_trait::async_trait]
pub trait RateLimiter: Send + Sync + fmt::Debug {
    /// Takes a permit for one submit on `key` now, or says how long until
    /// one frees. A granted permit counts against both windows at once (as a
    /// submit still in flight); settle it with [`RateLimiter::finish`] when
    /// the submit is answered or abandoned. A [`Acquire::Wait`] records
    /// nothing.
    ///
    /// An error is never a permit: the caller waits a little and asks again.
    async fn acquire(&self, key: &LimitKey, limits: RateLimits) -> Result<Acquire, RateLimitError>;

    /// Settles a permit. `sent`: the request may have reached the provider,
    /// so the permit is stamped with now (a time after its arrival there);
    /// not sent: the permit is given back. A permit never settled (its
    /// worker died) keeps counting as in flight until
    /// [`Windows::max_submit_time`] after its grant, then as stamped then.
    async fn finish(&self, permit: Permit, sent: bool) -> Result<(), RateLimitError>;

    /// The provider throttled this key: nobody gets a permit for it until
    /// `for_` from now. A shorter block never shortens a longer one already
    /// in force.
    async fn block(&self, key: &LimitKey, for_: Duration) -> Result<(), RateLimitError>;

    /// What the limiter holds for `key` now, for operators (the dashboard's keys page).
    /// Reads only: it takes and changes nothing.
    async fn inspect(&self, key: &LimitKey) -> Result<KeyState, RateLimitError>;
}

/// A key's standing in the limiter at one moment ([`RateLimiter::inspect`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyState {
    /// Submits counted in the short window (`per_minute`'s), those in flight included.
    pub in_short_window: u64,
    /// Submits counted in the long window (`per_hour`'s), those in flight included.
    pub in_long_window: u64,
    /// Permits granted and not yet settled: submits on their way to the provider.
    pub in_flight: u64,
    /// How much longer the provider's block of the key lasts; `None`: not blocked.
    pub blocked_for: Option<Duration>,
}

/// The answer of [`RateLimiter::acquire`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquire {
    /// Submit now: the permit is already counted. Settle it with
    /// [`RateLimiter::finish`].
    Granted(Permit),
    /// No permit before about this much time has passed: asking again then
    /// succeeds unless another worker took the permit first.
    Wait(Duration),
}

/// A granted permit: one submit on one key. Settle it with
/// [`RateLimiter::finish`]; dropping it unsettled is safe (it stays counted
/// as in flight until [`Windows::max_submit_time`] has passed) but wastes
/// quota.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a permit must be settled with RateLimiter::finish"]
pub struct Permit {
    key: LimitKey,
    id: u64,
}

impl Permit {
    /// A permit for `key`, with a random id (unique among a key's permits
    /// in flight with overwhelming probability).
    pub(crate) fn new(key: LimitKey) -> Permit {
        let mut bytes = [0u8; 8];
        // Ids only need to differ among one key's permits in flight; should
        // the OS generator fail, the clock's nanoseconds still do.
        if getrandom::fill(&mut bytes).is_err() {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            bytes = nanos.to_le_bytes();
        }
        Permit {
            key,
            id: u64::from_le_bytes(bytes),
        }
    }

    /// The key the permit is for.
    pub fn key(&self) -> &LimitKey {
        &self.key
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }
}

/// [`Acquire`] with the limiter's clock reading of the grant, for tests and
/// diagnostics: `RedisLimiter::decide` and `LocalLimiter::decide` return it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Granted at `at` on the limiter's clock: time since the UNIX epoch on
    /// the Redis server for [`RedisLimiter`], time since the clock's origin
    /// for [`LocalLimiter`].
    Granted {
        /// When the grant was made.
        at: Duration,
        /// The permit to settle.
        permit: Permit,
    },
    /// As [`Acquire::Wait`].
    Wait(Duration),
}

impl From<Decision> for Acquire {
    fn from(decision: Decision) -> Acquire {
        match decision {
            Decision::Granted { permit, .. } => Acquire::Granted(permit),
            Decision::Wait(wait) => Acquire::Wait(wait),
        }
    }
}

/// Refuses quotas that could never grant anything: the workers would wait
/// forever without anyone noticing. A key's quotas are at most `per_minute`
/// grants in any short window and at most `per_hour` in any long window (60 s
/// and 3600 s unless the limiter was built with other [`Windows`]); an hour
/// quota below the minute's is not an error here, it simply binds.
pub(crate) fn checked(limits: RateLimits) -> Result<RateLimits, RateLimitError> {
    if limits.per_minute == 0 || limits.per_hour == 0 {
        return Err(RateLimitError::InvalidLimits(limits));
    }
    Ok(limits)
}

/// Whose quota a permit is taken from: a user's key at one provider. It is
/// identified by its owner (project and user) and provider, never by the key
/// material, so it can appear in logs and in Redis key names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LimitKey {
    provider: ProviderId,
    owner: ProjectUser,
}

impl LimitKey {
    /// The quota of `owner`'s key at `provider`.
    pub const fn new(provider: ProviderId, owner: ProjectUser) -> LimitKey {
        LimitKey { provider, owner }
    }

    /// The provider.
    pub const fn provider(&self) -> ProviderId {
        self.provider
    }

    /// The user who owns the key, in their project.
    pub const fn owner(&self) -> ProjectUser {
        self.owner
    }
}

/// `<provider>:<project uuid>:<user uuid>`; in the default project
/// `<provider>:<user uuid>`, the name keys had before projects existed, so
/// the windows of running deployments carry over.
impl fmt::Display for LimitKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.owner.project_id == DEFAULT_PROJECT_ID {
            write!(f, "{}:{}", self.provider, self.owner.user_id)
        } else {
            write!(
                f,
                "{}:{}:{}",
                self.provider, self.owner.project_id, self.owner.user_id
            )
        }
    }
}

/// The lengths of the two sliding windows, and how long a submit may take.
/// Production uses the default, 60 s and 3600 s, which is what
/// `per_minute` and `per_hour` mean; tests shrink them to run the real
/// algorithm in a second instead of an hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    short: Duration,
    long: Duration,
    max_submit_time: Duration,
}

impl Windows {
    /// A minute and an hour; submits take at most two minutes.
    pub const MINUTE_HOUR: Windows = Windows {
        short: Duration::from_secs(60),
        long: Duration::from_secs(3600),
        max_submit_time: Duration::from_secs(120),
    };

    /// The longest window (and submit time) accepted.
    pub const MAX: Duration = Duration::from_secs(30 * 24 * 3600);

    /// Windows of `short` (where `per_minute` applies) and `long` (where
    /// `per_hour` applies). Both at least a millisecond, `short ≤ long ≤`
    /// [`Windows::MAX`]. The submit time is [`Windows::MINUTE_HOUR`]'s
    /// unless set with [`Windows::with_max_submit_time`].
    pub fn new(short: Duration, long: Duration) -> Result<Windows, RateLimitError> {
        let millisecond = Duration::from_millis(1);
        if short < millisecond || long < short || long > Windows::MAX {
            return Err(RateLimitError::InvalidWindows { short, long });
        }
        Ok(Windows {
            short,
            long,
            max_submit_time: Windows::MINUTE_HOUR.max_submit_time,
        })
    }

    /// The longest a submit can take from its grant until it reaches the
    /// provider, or until its worker gives up on it: an unsettled permit is
    /// presumed to arrive at the provider this long after its grant. It
    /// must exceed the providers' request timeout. Capped at [`Windows::MAX`].
    pub fn with_max_submit_time(mut self, max_submit_time: Duration) -> Windows {
        self.max_submit_time = max_submit_time.min(Windows::MAX);
        self
    }

    /// The window of `per_minute`.
    pub const fn short(&self) -> Duration {
        self.short
    }

    /// The window of `per_hour`.
    pub const fn long(&self) -> Duration {
        self.long
    }

    /// See [`Windows::with_max_submit_time`].
    pub const fn max_submit_time(&self) -> Duration {
        self.max_submit_time
    }
}

impl Default for Windows {
    fn default() -> Windows {
        Windows::MINUTE_HOUR
    }
}

/// How soon a waiter asks again when the permit that binds is still in
/// flight: its stamp (and so the exact wait) is known once its submit is
/// answered, usually within a second.
pub(crate) const IN_FLIGHT_RECHECK: Duration = Duration::from_millis(500);

/// The limiter could not decide. Never a permit: workers wait a little and
/// ask again.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RateLimitError {
    /// Redis answered with an error (including a failing script) or could
    /// not be reached.
    #[error("rate limiter redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    /// `queue.url` is not a Redis URL.
    #[error("rate limiter: queue.url: {0}")]
    Url(#[from] byok_redis::RedisUrlError),
    /// The script answered something this code does not understand.
    #[error("rate limiter script answered unexpectedly: {0}")]
    Protocol(String),
    /// A quota of zero.
    #[error("invalid rate limits {0:?}: per_minute and per_hour must be at least 1")]
    InvalidLimits(RateLimits),
    /// Window lengths out of range.
    #[error(
        "invalid rate-limit windows (short {short:?}, long {long:?}): need 1 ms ≤ short ≤ long ≤ 30 days"
    )]
    InvalidWindows {
        /// The short window asked for.
        short: Duration,
        /// The long window asked for.
        long: Duration,
    },
}

/// Blocks longer than this are cut to it: a provider's retry time beyond a
/// month is an error on its side, and keeping times far in the future would
/// risk overflowing the arithmetic of either store.
pub const MAX_BLOCK: Duration = Windows::MAX;

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn a_limit_key_displays_provider_and_owner_only() {
        let user = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001);
        let project = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0002);
        let key = LimitKey::new(ProviderId::RUNWAY, ProjectUser::new(project, user));
        assert_eq!(key.to_string(), format!("runway:{project}:{user}"));
        assert_eq!(key.provider(), ProviderId::RUNWAY);
        assert_eq!(key.owner(), ProjectUser::new(project, user));
        let before_projects = LimitKey::new(
            ProviderId::RUNWAY,
            ProjectUser::new(DEFAULT_PROJECT_ID, user),
        );
        assert_eq!(before_projects.to_string(), format!("runway:{user}"));
    }

    #[test]
    fn windows_are_validated() {
        let ms = Duration::from_millis;
        assert_eq!(Windows::default().short(), Duration::from_secs(60));
        assert_eq!(Windows::default().long(), Duration::from_secs(3600));
        assert!(Windows::new(ms(600), ms(1800)).is_ok());
        assert!(Windows::new(ms(600), ms(600)).is_ok());
        assert!(Windows::new(Duration::ZERO, ms(10)).is_err());
        assert!(Windows::new(ms(601), ms(600)).is_err());
        assert!(Windows::new(ms(1), Windows::MAX + ms(1)).is_err());
    }

    #[test]
    fn zero_quotas_are_refused() {
        let l = |per_minute, per_hour| {
            checked(RateLimits {
                per_minute,
                per_hour,
            })
        };
        assert!(l(1, 1).is_ok());
        assert!(
            l(10, 5).is_ok(),
            "per_hour below per_minute binds, not an error"
        );
        assert!(matches!(l(0, 5), Err(RateLimitError::InvalidLimits(_))));
        assert!(l(5, 0).is_err());
    }
}
