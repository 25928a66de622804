//! `byok-bench limiter`: many workers on one key's quota. Several
//! `RedisLimiter` instances (each with its own connection, as separate
//! worker processes have) and many tasks on each keep asking for permits;
//! a granted submit reaches the "provider" after a random transit delay
//! (where it is stamped on the provider's clock, here this process's) and
//! is answered after another, then settled. Windows are shrunk to seconds
//! (the real script runs the real rule, with `Windows::new`), and both bind:
//! `per_hour` is below what the short window alone would allow.
//!
//! - `violations`: submits that arrived at the provider while one of its
//!   windows (`[t − window, t]`) already held the quota;
//! - `utilization`: submits that arrived in the first `k` long windows from
//!   the first arrival, over the most any limiter could have let arrive
//!   there (`k × min(per_hour, per_minute × long / short)`).
//!
//! Two baselines run the same way in the same run: the common Redis recipe,
//! fixed windows counted with `INCR` + `PEXPIRE`, granting while the counts
//! are within quota; and `governor`'s GCRA, the usual in-process limiter,
//! one limiter per window shared by every task (the embedded shape's best
//! case: one process, no network). It runs twice: with a burst of the
//! window's quota (what "N per minute" is usually configured as) and with a
//! burst of 1 (evenly spaced submits). Neither can keep the sliding-window
//! rule and use the quota at once; the figures show which half each gives up.

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use byok_core::{ProviderId, RateLimits};
use byok_ratelimit::{Acquire, LimitKey, RateLimiter, RedisLimiter, Windows};
use governor::clock::Clock;
use serde_json::json;

use crate::common::{delete_matching, progress};
use crate::{Options, report};

/// Limiter instances ("worker processes") and tasks on each.
const INSTANCES: usize = 4;
const TASKS_PER_INSTANCE: usize = 16;

#[derive(Debug, Clone, Copy)]
struct Setup {
    short: Duration,
    long: Duration,
    limits: RateLimits,
    /// Long windows timed for utilization.
    long_windows: u32,
    /// Longest transit each way (grant → arrival, arrival → answer).
    transit: Duration,
}

impl Setup {
    fn bound(&self) -> f64 {
        let per_long_by_short =
            f64::from(self.limits.per_minute) * self.long.as_secs_f64() / self.short.as_secs_f64();
        f64::from(self.long_windows) * f64::from(self.limits.per_hour).min(per_long_by_short)
    }

    fn run_for(&self) -> Duration {
        self.long * self.long_windows + self.short
    }
}

#[derive(Debug, Clone)]
struct Outcome {
    violations: usize,
    max_short: usize,
    max_long: usize,
    utilization: f64,
    arrivals: usize,
}

/// A cheap per-task random source for transit delays.
fn jitter(state: &mut u64, max: Duration) -> Duration {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    let max_us = max.as_micros() as u64;
    Duration::from_micros(*state % (max_us + 1))
}

/// The common fixed-window recipe, for the baseline.
#[derive(Clone)]
struct FixedWindow {
    conn: redis::aio::MultiplexedConnection,
    prefix: String,
    setup: Setup,
}

impl FixedWindow {
    /// `None`: granted; `Some(wait)`: over quota until the window ends.
    async fn acquire(&self) -> anyhow::Result<Option<Duration>> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?;
        for (name, window, quota) in [
            ("s", self.setup.short, self.setup.limits.per_minute),
            ("l", self.setup.long, self.setup.limits.per_hour),
        ] {
            let index = now.as_millis() / window.as_millis();
            let key = format!("{}:{name}:{index}", self.prefix);
            let (count, _): (u64, i64) = redis::pipe()
                .cmd("INCR")
                .arg(&key)
                .cmd("PEXPIRE")
                .arg(&key)
                .arg(window.as_millis() as u64 * 2)
                .query_async(&mut self.conn.clone())
                .await?;
            if count > u64::from(quota) {
                let end = Duration::from_millis(((index + 1) * window.as_millis()) as u64);
                return Ok(Some(end.saturating_sub(now).max(Duration::from_millis(1))));
            }
        }
        Ok(None)
    }
}

/// `governor`'s GCRA, one direct limiter per window.
struct Gcra {
    short: governor::DefaultDirectRateLimiter,
    long: governor::DefaultDirectRateLimiter,
}

impl Gcra {
    /// `burst_of_quota`: each window's burst is its quota; else 1.
    fn new(setup: Setup, burst_of_quota: bool) -> anyhow::Result<Self> {
        let quota = |window: Duration, count: u32| -> anyhow::Result<governor::Quota> {
            let count = NonZeroU32::new(count).ok_or_else(|| anyhow::anyhow!("zero quota"))?;
            let quota = governor::Quota::with_period(window / count.get())
                .ok_or_else(|| anyhow::anyhow!("zero period"))?;
            Ok(if burst_of_quota {
                quota.allow_burst(count)
            } else {
                quota
            })
        };
        Ok(Self {
            short: governor::RateLimiter::direct(quota(setup.short, setup.limits.per_minute)?),
            long: governor::RateLimiter::direct(quota(setup.long, setup.limits.per_hour)?),
        })
    }

    /// `None`: granted; `Some(wait)`: denied for that long. A cell taken
    /// from the short window when the long one then says no is not given
    /// back: governor has no refund, which is how it is used.
    fn acquire(&self) -> Option<Duration> {
        for limiter in [&self.short, &self.long] {
            if let Err(not_until) = limiter.check() {
                return Some(not_until.wait_time_from(limiter.clock().now()));
            }
        }
        None
    }
}

enum Side {
    Ours(Vec<Arc<RedisLimiter>>),
    Fixed(Vec<FixedWindow>),
    Governor(Arc<Gcra>),
}

async fn hammer(side: &Side, setup: Setup) -> anyhow::Result<Vec<Duration>> {
    let key = LimitKey::new(
        ProviderId::RUNWAY,
        byok_core::ProjectUser::new(byok_core::DEFAULT_PROJECT_ID, uuid::Uuid::new_v4()),
    );
    let start = Instant::now();
    let run_for = setup.run_for();
    let arrivals: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let mut tasks = Vec::new();
    for worker in 0..INSTANCES * TASKS_PER_INSTANCE {
        let arrivals = Arc::clone(&arrivals);
        let mut rng = 0x9E37_79B9_7F4A_7C15 ^ (worker as u64 + 1);
        let arrive = move |rng: &mut u64| {
            let arrivals = Arc::clone(&arrivals);
            let (out, back) = (jitter(rng, setup.transit), jitter(rng, setup.transit));
            async move {
                tokio::time::sleep(out).await;
                arrivals.lock().expect("arrivals").push(start.elapsed());
                tokio::time::sleep(back).await;
            }
        };
        match side {
            Side::Ours(limiters) => {
                let limiter = Arc::clone(&limiters[worker % limiters.len()]);
                tasks.push(tokio::spawn(async move {
                    while start.elapsed() < run_for {
                        match limiter.acquire(&key, setup.limits).await? {
                            // What a worker does: reschedule its item for that long.
                            Acquire::Wait(wait) => tokio::time::sleep(wait).await,
                            Acquire::Granted(permit) => {
                                arrive(&mut rng).await;
                                limiter.finish(permit, true).await?;
                            }
                        }
                    }
                    anyhow::Ok(())
                }));
            }
            Side::Fixed(limiters) => {
                let limiter = limiters[worker % limiters.len()].clone();
                tasks.push(tokio::spawn(async move {
                    while start.elapsed() < run_for {
                        match limiter.acquire().await? {
                            Some(wait) => tokio::time::sleep(wait).await,
                            None => arrive(&mut rng).await,
                        }
                    }
                    anyhow::Ok(())
                }));
            }
            Side::Governor(limiter) => {
                let limiter = Arc::clone(limiter);
                tasks.push(tokio::spawn(async move {
                    while start.elapsed() < run_for {
                        match limiter.acquire() {
                            Some(wait) => tokio::time::sleep(wait).await,
                            None => arrive(&mut rng).await,
                        }
                    }
                    anyhow::Ok(())
                }));
            }
        }
    }
    for task in tasks {
        task.await??;
    }
    let mut arrivals = arrivals.lock().expect("arrivals").clone();
    arrivals.sort_unstable();
    Ok(arrivals)
}

/// Per arrival, how many arrivals the window ending at it holds.
fn window_counts(sorted: &[Duration], window: Duration) -> Vec<usize> {
    let mut start = 0;
    (0..sorted.len())
        .map(|end| {
            while sorted[end] - sorted[start] >= window {
                start += 1;
            }
            end - start + 1
        })
        .collect()
}

impl Outcome {
    fn summary(&self, name: &str) -> String {
        format!(
            "{name}: {} violations, {:.1} % used (most {} short, {} long)",
            self.violations,
            self.utilization * 100.0,
            self.max_short,
            self.max_long
        )
    }
}

fn judge(arrivals: &[Duration], setup: Setup) -> Outcome {
    let short = window_counts(arrivals, setup.short);
    let long = window_counts(arrivals, setup.long);
    let violations = short
        .iter()
        .zip(&long)
        .filter(|(s, l)| {
            **s > setup.limits.per_minute as usize || **l > setup.limits.per_hour as usize
        })
        .count();
    let timed = arrivals.first().map_or(0, |first| {
        arrivals
            .iter()
            .filter(|t| **t - *first < setup.long * setup.long_windows)
            .count()
    });
    Outcome {
        violations,
        max_short: short.iter().copied().max().unwrap_or(0),
        max_long: long.iter().copied().max().unwrap_or(0),
        utilization: timed as f64 / setup.bound(),
        arrivals: arrivals.len(),
    }
}

pub async fn run(options: &Options) -> anyhow::Result<()> {
    let setup = if options.quick {
        Setup {
            short: Duration::from_secs(1),
            long: Duration::from_secs(3),
            limits: RateLimits {
                per_minute: 10,
                per_hour: 25,
            },
            long_windows: 1,
            transit: Duration::from_millis(10),
        }
    } else {
        Setup {
            short: Duration::from_secs(5),
            long: Duration::from_secs(15),
            limits: RateLimits {
                per_minute: 20,
                per_hour: 50,
            },
            long_windows: 2,
            transit: Duration::from_millis(50),
        }
    };
    let namespace = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let windows = Windows::new(setup.short, setup.long)?.with_max_submit_time(setup.short);
    let mut ours = Vec::new();
    let mut fixed = Vec::new();
    for _ in 0..INSTANCES {
        let limiter = RedisLimiter::connect(&options.redis_url, &namespace).await?;
        ours.push(Arc::new(limiter.with_windows(windows)));
        let client = redis::Client::open(options.redis_url.as_str())?;
        fixed.push(FixedWindow {
            conn: client.get_multiplexed_async_connection().await?,
            prefix: format!("{{{namespace}}}:fixed"),
            setup,
        });
    }
    // The four run side by side on separate keys: each is light (its tasks
    // mostly wait), and one run's length instead of four keeps `all --quick`
    // under a minute.
    let (ours, fixed) = (Side::Ours(ours), Side::Fixed(fixed));
    let gcra_burst = Side::Governor(Arc::new(Gcra::new(setup, true)?));
    let gcra_paced = Side::Governor(Arc::new(Gcra::new(setup, false)?));
    let arrivals = tokio::join!(
        hammer(&ours, setup),
        hammer(&fixed, setup),
        hammer(&gcra_burst, setup),
        hammer(&gcra_paced, setup),
    );
    delete_matching(&options.redis_url, &format!("{{{namespace}}}*")).await?;
    let (ours, fixed, gcra_burst, gcra_paced) = (
        judge(&arrivals.0?, setup),
        judge(&arrivals.1?, setup),
        judge(&arrivals.2?, setup),
        judge(&arrivals.3?, setup),
    );
    progress(&format!(
        "limiter: ours {} violations, utilization {:.3}, most in a window {}/{} short, {}/{} long ({} submits); fixed windows {} violations, utilization {:.3}, most {} short, {} long; {}; {}",
        ours.violations,
        ours.utilization,
        ours.max_short,
        setup.limits.per_minute,
        ours.max_long,
        setup.limits.per_hour,
        ours.arrivals,
        fixed.violations,
        fixed.utilization,
        fixed.max_short,
        fixed.max_long,
        gcra_burst.summary("governor, burst = quota"),
        gcra_paced.summary("governor, burst 1"),
    ));
    let result = json!({
        "name": "limiter",
        "value": ours.violations,
        "unit": "violations",
        "violations": ours.violations,
        "utilization": (ours.utilization * 1000.0).round() / 1000.0,
        "max_in_short_window": ours.max_short,
        "max_in_long_window": ours.max_long,
        "submits": ours.arrivals,
        "baseline_name": "fixed windows, INCR + PEXPIRE",
        "baseline_violations": fixed.violations,
        "baseline_utilization": (fixed.utilization * 1000.0).round() / 1000.0,
        "baseline_max_in_short_window": fixed.max_short,
        "baseline_max_in_long_window": fixed.max_long,
        "governor_name": "governor 0.10 GCRA in process, burst = each window's quota",
        "governor_violations": gcra_burst.violations,
        "governor_utilization": (gcra_burst.utilization * 1000.0).round() / 1000.0,
        "governor_max_in_short_window": gcra_burst.max_short,
        "governor_max_in_long_window": gcra_burst.max_long,
        "governor_paced_name": "governor 0.10 GCRA in process, burst 1",
        "governor_paced_violations": gcra_paced.violations,
        "governor_paced_utilization": (gcra_paced.utilization * 1000.0).round() / 1000.0,
        "governor_paced_max_in_short_window": gcra_paced.max_short,
        "governor_paced_max_in_long_window": gcra_paced.max_long,
        "short_window_s": setup.short.as_secs_f64(),
        "long_window_s": setup.long.as_secs_f64(),
        "per_short_window": setup.limits.per_minute,
        "per_long_window": setup.limits.per_hour,
        "long_windows_timed": setup.long_windows,
        "transit_ms_max": setup.transit.as_millis() as u64,
        "limiter_instances": INSTANCES,
        "tasks": INSTANCES * TASKS_PER_INSTANCE,
    });
    let human = format!(
        "limiter   ours: {} violations, {:.1} % of the quota used (most in one window {}/{} short, {}/{} long)\n          fixed windows (INCR): {} violations, {:.1} % used (most {} short, {} long)\n          {}\n          {}\n          {} tasks on {} limiters, windows {} s / {} s, transit ≤ {} ms each way",
        ours.violations,
        ours.utilization * 100.0,
        ours.max_short,
        setup.limits.per_minute,
        ours.max_long,
        setup.limits.per_hour,
        fixed.violations,
        fixed.utilization * 100.0,
        fixed.max_short,
        fixed.max_long,
        gcra_burst.summary("governor GCRA, burst = quota"),
        gcra_paced.summary("governor GCRA, burst 1"),
        INSTANCES * TASKS_PER_INSTANCE,
        INSTANCES,
        setup.short.as_secs_f64(),
        setup.long.as_secs_f64(),
        setup.transit.as_millis(),
    );
    report(options, &result, &human);
    Ok(())
}
