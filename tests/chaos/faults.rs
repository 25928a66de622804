//! The fault injector: at random times, from the run's seed, it kills and restarts the
//! system's parts. Faults come one at a time, but outages (a process or a server left
//! down for a while) overlap later faults. Every fault is logged with when its part went
//! down and when it was back, which the checks use to explain a failed job.

use std::time::{Duration, Instant};

use byok_testing::PostgresStop;
use rand::RngExt as _;
use rand::rngs::StdRng;

use crate::plan::{FAULT_GAP, POSTGRES_OUTAGE, Plan, REDIS_DOWNTIME, RESTART_DELAY};
use crate::system::{System, Topology};

/// What was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    WorkerKill,
    ApiKill,
    RedisKill,
    RedisShutdown,
    PrimaryKill,
    PostgresFast,
    PostgresImmediate,
}

impl FaultKind {
    pub const ALL: [FaultKind; 7] = [
        FaultKind::WorkerKill,
        FaultKind::ApiKill,
        FaultKind::RedisKill,
        FaultKind::RedisShutdown,
        FaultKind::PrimaryKill,
        FaultKind::PostgresFast,
        FaultKind::PostgresImmediate,
    ];

    pub fn describe(self) -> &'static str {
        match self {
            FaultKind::WorkerKill => "worker SIGKILL, restarted",
            FaultKind::ApiKill => "API SIGKILL, restarted",
            FaultKind::RedisKill => "Redis SIGKILL, restarted",
            FaultKind::RedisShutdown => "Redis SHUTDOWN (SIGTERM), restarted",
            FaultKind::PrimaryKill => "Redis primary SIGKILL, replica took over",
            FaultKind::PostgresFast => "PostgreSQL stopped (fast), restarted",
            FaultKind::PostgresImmediate => "PostgreSQL stopped (immediate), restarted",
        }
    }

    /// How often it is drawn, relative to the others, where it applies.
    fn weight(self, topology: Topology) -> u32 {
        match (self, topology) {
            (FaultKind::WorkerKill, _) => 30,
            (FaultKind::ApiKill, _) => 15,
            (FaultKind::RedisKill | FaultKind::RedisShutdown, Topology::SingleRedis) => 10,
            (FaultKind::PrimaryKill, Topology::Cluster) => 20,
            (FaultKind::PostgresFast | FaultKind::PostgresImmediate, _) => 8,
            (FaultKind::RedisKill | FaultKind::RedisShutdown, Topology::Cluster)
            | (FaultKind::PrimaryKill, Topology::SingleRedis) => 0,
        }
    }
}

/// One fault: its kind, its target, and from when until when (unix ms) its part was
/// down.
#[derive(Debug, Clone)]
pub struct Fault {
    pub kind: FaultKind,
    pub target: String,
    pub from_ms: i64,
    pub until_ms: i64,
}

impl Fault {
    /// Whether the fault took a server away (PostgreSQL, Redis, a Redis primary).
    pub fn is_outage(&self) -> bool {
        !matches!(self.kind, FaultKind::WorkerKill | FaultKind::ApiKill)
    }

    /// Whether the part was down at some time within `[from_ms, until_ms]`.
    pub fn overlaps(&self, from_ms: i64, until_ms: i64) -> bool {
        self.from_ms <= until_ms && self.until_ms >= from_ms
    }
}

/// What must be started again, and when.
#[derive(Debug)]
struct Pending {
    at: Instant,
    part: Part,
    /// The fault's index in the log.
    fault: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Worker(usize),
    Api,
    Redis,
    Postgres,
}

/// How often the supervisor looks for processes that exited on their own.
const SUPERVISE_EVERY: Duration = Duration::from_millis(500);

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Injects faults for the plan's fault phase, then starts everything that is down and
/// returns the log.
pub async fn inject(sys: &mut System, plan: &Plan, topology: Topology) -> Vec<Fault> {
    let mut injector = Injector {
        rng: plan.rng(0),
        log: Vec::new(),
        pending: Vec::new(),
    };
    let end = Instant::now() + plan.fault_phase;
    let mut next = Instant::now() + plan.draw(&mut injector.rng, &FAULT_GAP);
    loop {
        sys.supervise();
        injector.restore(sys, Instant::now());
        let now = Instant::now();
        if now >= end {
            break;
        }
        if now >= next {
            injector.one(sys, plan, topology).await;
            next = Instant::now() + plan.draw(&mut injector.rng, &FAULT_GAP);
        }
        let wake = injector
            .pending
            .iter()
            .map(|p| p.at)
            .chain([next, end, Instant::now() + SUPERVISE_EVERY])
            .min()
            .unwrap_or(end);
        // A driver's pause between faults: nothing to wait on but the time it chose.
        tokio::time::sleep_until(wake.into()).await;
    }
    // The faults stop: whatever is down comes back now.
    injector.restore(sys, Instant::now() + Duration::from_secs(24 * 3600));
    sys.supervise();
    injector.log
}

struct Injector {
    rng: StdRng,
    log: Vec<Fault>,
    pending: Vec<Pending>,
}

impl Injector {
    /// Starts again each part whose time has come by `now`.
    fn restore(&mut self, sys: &mut System, now: Instant) {
        let (due, later): (Vec<Pending>, Vec<Pending>) =
            self.pending.drain(..).partition(|p| p.at <= now);
        self.pending = later;
        for pending in due {
            match pending.part {
                Part::Worker(index) => sys.start_process(&format!("worker-{index}")),
                Part::Api => sys.start_process("api"),
                Part::Redis => sys.start_redis(),
                Part::Postgres => sys.start_postgres(),
            }
            self.log[pending.fault].until_ms = now_ms();
        }
    }

    fn is_down(&self, part: Part) -> bool {
        self.pending.iter().any(|p| p.part == part)
    }

    /// Draws one fault among those that apply now and injects it.
    async fn one(&mut self, sys: &mut System, plan: &Plan, topology: Topology) {
        let workers = sys.running_workers();
        let applies = |kind: FaultKind| match kind {
            FaultKind::WorkerKill => !workers.is_empty(),
            FaultKind::ApiKill => sys.d.api_running(),
            FaultKind::RedisKill | FaultKind::RedisShutdown | FaultKind::PrimaryKill => {
                !self.is_down(Part::Redis)
            }
            FaultKind::PostgresFast | FaultKind::PostgresImmediate => sys.postgres_running(),
        };
        let choices: Vec<(FaultKind, u32)> = FaultKind::ALL
            .into_iter()
            .map(|kind| (kind, kind.weight(topology)))
            .filter(|(kind, weight)| *weight > 0 && applies(*kind))
            .collect();
        let total: u32 = choices.iter().map(|(_, w)| w).sum();
        if total == 0 {
            return;
        }
        let mut draw = self.rng.random_range(0..total);
        let kind = choices
            .iter()
            .find(|(_, weight)| {
                let hit = draw < *weight;
                draw = draw.saturating_sub(*weight);
                hit
            })
            .map_or(FaultKind::WorkerKill, |(kind, _)| *kind);
        let from_ms = now_ms();
        let (target, back_after, part) = match kind {
            FaultKind::WorkerKill => {
                let index = workers[self.rng.random_range(0..workers.len())];
                sys.d.kill_worker(index).await;
                (
                    format!("worker-{index}"),
                    plan.draw(&mut self.rng, &RESTART_DELAY),
                    Some(Part::Worker(index)),
                )
            }
            FaultKind::ApiKill => {
                sys.d.kill_api().await;
                (
                    "api".to_owned(),
                    plan.draw(&mut self.rng, &RESTART_DELAY),
                    Some(Part::Api),
                )
            }
            FaultKind::RedisKill | FaultKind::RedisShutdown => {
                sys.stop_redis(kind == FaultKind::RedisShutdown);
                (
                    "redis".to_owned(),
                    plan.draw(&mut self.rng, &REDIS_DOWNTIME),
                    Some(Part::Redis),
                )
            }
            FaultKind::PrimaryKill => (sys.fail_over(), Duration::ZERO, None),
            FaultKind::PostgresFast | FaultKind::PostgresImmediate => {
                sys.stop_postgres(if kind == FaultKind::PostgresFast {
                    PostgresStop::Fast
                } else {
                    PostgresStop::Immediate
                });
                (
                    "postgres".to_owned(),
                    plan.draw(&mut self.rng, &POSTGRES_OUTAGE),
                    Some(Part::Postgres),
                )
            }
        };
        self.log.push(Fault {
            kind,
            target,
            from_ms,
            until_ms: if part.is_some() { i64::MAX } else { now_ms() },
        });
        if let Some(part) = part {
            self.pending.push(Pending {
                at: Instant::now() + back_after,
                part,
                fault: self.log.len() - 1,
            });
        }
    }
}
