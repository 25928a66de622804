//! How long a run lasts, its seed, and the random draws both the driver and the fault
//! injector make from it.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng as _};

/// The fault phase of the short form (what `cargo test --workspace` runs).
const SHORT_SECONDS: u64 = 35;

/// A run's shape, read from the environment.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The seed of every random choice (`BYOK_CHAOS_SEED`, else drawn and printed).
    pub seed: u64,
    /// How long faults are injected and jobs submitted (`BYOK_CHAOS_SECONDS`).
    pub fault_phase: Duration,
    /// The long form: `BYOK_CHAOS_SECONDS` was set. Outages last as long as the issue
    /// says (PostgreSQL 10–30 s); the short form keeps them to seconds.
    pub long: bool,
}

impl Plan {
    pub fn from_env() -> Plan {
        let seconds = std::env::var("BYOK_CHAOS_SECONDS").ok().map(|s| {
            s.parse::<u64>()
                .unwrap_or_else(|_| panic!("BYOK_CHAOS_SECONDS={s} is not a number of seconds"))
        });
        let seed = std::env::var("BYOK_CHAOS_SEED").map_or_else(
            |_| rand::random::<u64>() >> 12,
            |s| {
                s.parse()
                    .unwrap_or_else(|_| panic!("BYOK_CHAOS_SEED={s} is not a number"))
            },
        );
        Plan {
            seed,
            fault_phase: Duration::from_secs(seconds.unwrap_or(SHORT_SECONDS)),
            long: seconds.is_some(),
        }
    }

    /// The random stream number `stream` of this run (the injector is 0, each user 1 + n),
    /// so that each part's choices replay from the seed whatever the others drew.
    pub fn rng(&self, stream: u64) -> StdRng {
        StdRng::seed_from_u64(self.seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    /// A draw from `span`'s range for this form.
    pub fn draw(&self, rng: &mut StdRng, span: &Span) -> Duration {
        let (low, high) = if self.long { span.long } else { span.short };
        between(rng, low, high)
    }

    /// How long the system has, once faults stop, to make every accepted job final: the
    /// rate limit alone can hold a job for a minute, and a submit left marked by a killed
    /// worker is decided 20 s after it began.
    pub fn drain_deadline(&self) -> Duration {
        Duration::from_secs(150) + self.fault_phase / 2
    }
}

/// A range of milliseconds in the short form and in the long one.
#[derive(Debug)]
pub struct Span {
    short: (u64, u64),
    long: (u64, u64),
}

/// The pause between two faults.
pub const FAULT_GAP: Span = Span {
    short: (1_500, 4_000),
    long: (4_000, 15_000),
};

/// How long a killed process stays down before it is started again.
pub const RESTART_DELAY: Span = Span {
    short: (0, 1_500),
    long: (0, 5_000),
};

/// How long Redis stays down when restarted.
pub const REDIS_DOWNTIME: Span = Span {
    short: (200, 2_000),
    long: (1_000, 10_000),
};

/// How long PostgreSQL stays stopped: 10–30 s in the long form, 3–5 s in the short one
/// (the same faults; the long outages are the long form's to prove).
pub const POSTGRES_OUTAGE: Span = Span {
    short: (3_000, 5_000),
    long: (10_000, 30_000),
};

/// A uniform draw from `low_ms` to `high_ms` milliseconds.
pub fn between(rng: &mut StdRng, low_ms: u64, high_ms: u64) -> Duration {
    Duration::from_millis(rng.random_range(low_ms..=high_ms))
}
