//! The embedded limiter on a hand-driven clock: many simulated workers,
//! random delays before the request reaches the provider and before its
//! answer comes back, refunds and workers that die holding a permit. Hours
//! of traffic run in milliseconds, and every run is reproducible.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::Duration;

use byok_core::{ProviderId, RateLimits};
use byok_ratelimit::{Decision, LimitKey, LocalLimiter, ManualClock, Permit, Windows};
use uuid::Uuid;

use crate::{max_in_window, owner};

/// A small deterministic generator (xorshift64*): reproducible runs
/// without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn millis(&mut self, max: u64) -> Duration {
        Duration::from_millis(self.below(max + 1))
    }
}

#[derive(Debug)]
enum Event {
    /// A worker asks for a permit.
    Ask { worker: usize },
    /// A granted request reaches the provider.
    Arrive { worker: usize, permit: Permit },
    /// Its answer is back: the worker settles the permit.
    Answered { worker: usize, permit: Permit },
}

struct Outcome {
    arrivals: Vec<Duration>,
    grants: usize,
}

struct Scenario {
    seed: u64,
    workers: usize,
    limits: RateLimits,
    windows: Windows,
    /// Longest delay from grant to arrival, and from arrival to answer (ms).
    max_transit_ms: u64,
    /// Per mille of grants given back unsent (the submit was never made).
    refund_per_mille: u64,
    /// Per mille of grants whose worker dies after sending, never settling.
    crash_per_mille: u64,
    /// Simulated time.
    run_for: Duration,
}

impl Scenario {
    fn run(&self) -> Outcome {
        let clock = ManualClock::new(Duration::from_secs(1_000));
        let limiter = LocalLimiter::new()
            .with_clock(Arc::new(clock.clone()))
            .with_windows(self.windows);
        let key = LimitKey::new(ProviderId::RUNWAY, owner(Uuid::from_u128(7)));
        let start = Duration::from_secs(1_000);
        let mut rng = Rng(self.seed);
        let mut timeline = Timeline::default();
        for worker in 0..self.workers {
            timeline.push(start, Event::Ask { worker });
        }
        let mut arrivals = Vec::new();
        let mut grants = 0;
        while let Some((at, event)) = timeline.pop() {
            if at > start + self.run_for {
                break;
            }
            clock.set(at);
            match event {
                Event::Ask { worker } => match limiter.decide(&key, self.limits).unwrap() {
                    Decision::Granted {
                        at: granted,
                        permit,
                    } => {
                        assert_eq!(granted, at);
                        grants += 1;
                        if rng.below(1000) < self.refund_per_mille {
                            // Given back before anything was sent.
                            limiter.settle(&permit, false);
                            timeline.push(at, Event::Ask { worker });
                        } else {
                            let arrive = at + rng.millis(self.max_transit_ms);
                            timeline.push(arrive, Event::Arrive { worker, permit });
                        }
                    }
                    Decision::Wait(wait) => {
                        assert!(wait > Duration::ZERO);
                        timeline.push(at + wait, Event::Ask { worker });
                    }
                },
                Event::Arrive { worker, permit } => {
                    arrivals.push(at - start);
                    if rng.below(1000) < self.crash_per_mille {
                        // The worker died: the permit is never settled, and
                        // a fresh worker takes its place.
                        drop(permit);
                        timeline.push(at, Event::Ask { worker });
                    } else {
                        let answered = at + rng.millis(self.max_transit_ms);
                        timeline.push(answered, Event::Answered { worker, permit });
                    }
                }
                Event::Answered { worker, permit } => {
                    limiter.settle(&permit, true);
                    timeline.push(at, Event::Ask { worker });
                }
            }
        }
        Outcome { arrivals, grants }
    }
}

/// Events by time, in the order they were scheduled among equal times.
#[derive(Default)]
struct Timeline {
    queue: BinaryHeap<Reverse<(Duration, usize)>>,
    events: Vec<Option<Event>>,
}

impl Timeline {
    fn push(&mut self, at: Duration, event: Event) {
        self.events.push(Some(event));
        self.queue.push(Reverse((at, self.events.len() - 1)));
    }

    fn pop(&mut self) -> Option<(Duration, Event)> {
        let Reverse((at, index)) = self.queue.pop()?;
        Some((at, self.events[index].take().expect("each event runs once")))
    }
}

fn minute_hour(per_minute: u32, per_hour: u32) -> RateLimits {
    RateLimits {
        per_minute,
        per_hour,
    }
}

#[test]
fn no_window_at_the_provider_holds_more_than_the_quota_whatever_the_delays() {
    for seed in 1..=20u64 {
        let scenario = Scenario {
            seed,
            workers: 12,
            limits: minute_hour(6, 50),
            windows: Windows::MINUTE_HOUR,
            max_transit_ms: 2_000,
            refund_per_mille: 100,
            crash_per_mille: 20,
            run_for: Duration::from_secs(3 * 3600),
        };
        let out = scenario.run();
        let minute = max_in_window(&out.arrivals, Duration::from_secs(60));
        let hour = max_in_window(&out.arrivals, Duration::from_secs(3600));
        assert!(minute <= 6, "seed {seed}: {minute} submits in one minute");
        assert!(hour <= 50, "seed {seed}: {hour} submits in one hour");
        // The hour quota binds: three hours hold nearly three hours' worth.
        assert!(
            out.arrivals.len() >= 3 * 50 - 6,
            "seed {seed}: only {} submits",
            out.arrivals.len()
        );
        assert!(out.grants >= out.arrivals.len());
    }
}

#[test]
fn with_a_backlog_the_minute_quota_is_used_from_the_first_second() {
    for seed in 1..=20u64 {
        let scenario = Scenario {
            seed,
            workers: 20,
            limits: minute_hour(6, 1_000),
            windows: Windows::MINUTE_HOUR,
            max_transit_ms: 300,
            refund_per_mille: 0,
            crash_per_mille: 0,
            run_for: Duration::from_secs(600),
        };
        let out = scenario.run();
        let mut arrivals = out.arrivals.clone();
        arrivals.sort_unstable();
        let first = arrivals[0];
        let in_first_61s = arrivals
            .iter()
            .filter(|t| **t - first < Duration::from_secs(61))
            .count();
        assert!(
            in_first_61s >= 5,
            "seed {seed}: {in_first_61s} submits in the first 61 s"
        );
        assert!(
            max_in_window(&arrivals, Duration::from_secs(60)) <= 6,
            "seed {seed}"
        );
        // Ten minutes with transit delays of up to 0.6 s a round trip: every
        // window of the quota is used but for the time answers take.
        assert!(
            arrivals.len() >= 6 * 9,
            "seed {seed}: {} submits in 10 minutes",
            arrivals.len()
        );
    }
}

#[test]
fn short_windows_behave_like_minutes_and_hours() {
    // The windows tests shrink to run the real algorithm quickly.
    let windows = Windows::new(Duration::from_millis(600), Duration::from_millis(3_000))
        .unwrap()
        .with_max_submit_time(Duration::from_millis(400));
    for seed in 1..=10u64 {
        let out = Scenario {
            seed,
            workers: 8,
            limits: minute_hour(4, 9),
            windows,
            max_transit_ms: 150,
            refund_per_mille: 100,
            crash_per_mille: 50,
            run_for: Duration::from_secs(30),
        }
        .run();
        assert!(
            max_in_window(&out.arrivals, Duration::from_millis(600)) <= 4,
            "seed {seed}"
        );
        assert!(
            max_in_window(&out.arrivals, Duration::from_millis(3_000)) <= 9,
            "seed {seed}"
        );
        // Ten long windows in 30 s, nine submits each, less the time answers take.
        assert!(
            out.arrivals.len() >= 80,
            "seed {seed}: {}",
            out.arrivals.len()
        );
    }
}

#[test]
fn a_permit_counts_as_in_flight_until_settled_then_from_its_stamp() {
    let clock = ManualClock::new(Duration::from_secs(10));
    let windows = Windows::MINUTE_HOUR.with_max_submit_time(Duration::from_secs(30));
    let limiter = LocalLimiter::new()
        .with_clock(Arc::new(clock.clone()))
        .with_windows(windows);
    let key = LimitKey::new(ProviderId::VEO, owner(Uuid::from_u128(1)));
    let one = minute_hour(1, 100);
    let Decision::Granted { permit, .. } = limiter.decide(&key, one).unwrap() else {
        panic!("first is free")
    };

    // In flight, the permit fills the window; the waiter is told to ask
    // again soon, since the stamp is not known yet.
    let Decision::Wait(wait) = limiter.decide(&key, one).unwrap() else {
        panic!("quota of one")
    };
    assert!(wait <= Duration::from_secs(1), "{wait:?}");

    // Answered 5 s after the grant: the window runs from then.
    clock.advance(Duration::from_secs(5));
    limiter.settle(&permit, true);
    assert_eq!(
        limiter.decide(&key, one).unwrap(),
        Decision::Wait(Duration::from_secs(60))
    );
    clock.advance(Duration::from_secs(60));
    assert!(matches!(
        limiter.decide(&key, one).unwrap(),
        Decision::Granted { .. }
    ));

    // A permit given back unsent frees its place at once.
    let other = LimitKey::new(ProviderId::VEO, owner(Uuid::from_u128(2)));
    let Decision::Granted { permit, .. } = limiter.decide(&other, one).unwrap() else {
        panic!()
    };
    limiter.settle(&permit, false);
    let Decision::Granted { permit: again, .. } = limiter.decide(&other, one).unwrap() else {
        panic!("a refunded permit is free again")
    };

    // A permit never settled (its worker died) is presumed to have arrived
    // at the latest possible time: grant + max submit time.
    drop(again);
    clock.advance(Duration::from_secs(29));
    assert!(matches!(
        limiter.decide(&other, one).unwrap(),
        Decision::Wait(_)
    ));
    clock.advance(Duration::from_secs(1 + 59));
    assert!(
        matches!(limiter.decide(&other, one).unwrap(), Decision::Wait(w) if w == Duration::from_secs(1))
    );
    clock.advance(Duration::from_secs(1));
    assert!(matches!(
        limiter.decide(&other, one).unwrap(),
        Decision::Granted { .. }
    ));
}

#[tokio::test]
async fn a_block_stops_every_grant_until_it_ends_and_never_shortens() {
    use byok_ratelimit::RateLimiter as _;
    let clock = ManualClock::new(Duration::ZERO);
    let limiter = LocalLimiter::new().with_clock(Arc::new(clock.clone()));
    let key = LimitKey::new(ProviderId::STABILITY, owner(Uuid::from_u128(3)));
    let many = minute_hour(100, 1000);
    limiter.block(&key, Duration::from_secs(30)).await.unwrap();
    limiter.block(&key, Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        limiter.decide(&key, many).unwrap(),
        Decision::Wait(Duration::from_secs(30))
    );
    clock.advance(Duration::from_secs(30));
    assert!(matches!(
        limiter.decide(&key, many).unwrap(),
        Decision::Granted { .. }
    ));
    // Other keys were never blocked.
    let other = LimitKey::new(ProviderId::STABILITY, owner(Uuid::from_u128(4)));
    assert!(matches!(
        limiter.decide(&other, many).unwrap(),
        Decision::Granted { .. }
    ));
    assert!(
        limiter.decide(&other, minute_hour(0, 1)).is_err(),
        "a zero quota is refused"
    );
}

#[tokio::test]
async fn inspect_counts_each_window_as_acquire_does() {
    use byok_ratelimit::{KeyState, RateLimiter as _};
    let clock = ManualClock::new(Duration::from_secs(10));
    let windows = Windows::MINUTE_HOUR.with_max_submit_time(Duration::from_secs(30));
    let limiter = LocalLimiter::new()
        .with_clock(Arc::new(clock.clone()))
        .with_windows(windows);
    let key = LimitKey::new(ProviderId::RUNWAY, owner(Uuid::from_u128(4)));
    assert_eq!(limiter.inspect(&key).await.unwrap(), KeyState::default());
    let quota = minute_hour(5, 50);
    let mut sent = Vec::new();
    for _ in 0..3 {
        let Decision::Granted { permit, .. } = limiter.decide(&key, quota).unwrap() else {
            panic!("within quota")
        };
        sent.push(permit);
    }
    let in_flight = sent.pop().unwrap();
    for permit in &sent {
        limiter.settle(permit, true);
    }
    limiter.block(&key, Duration::from_secs(20)).await.unwrap();
    assert_eq!(
        limiter.inspect(&key).await.unwrap(),
        KeyState {
            in_short_window: 3,
            in_long_window: 3,
            in_flight: 1,
            blocked_for: Some(Duration::from_secs(20)),
        }
    );
    // A minute later the settled two left the short window; the one in flight is still
    // presumed on its way (its worker has 30 s from the grant, then it counts from then).
    clock.advance(Duration::from_secs(61));
    assert_eq!(
        limiter.inspect(&key).await.unwrap(),
        KeyState {
            in_short_window: 1,
            in_long_window: 3,
            in_flight: 0,
            blocked_for: None,
        }
    );
    limiter.settle(&in_flight, false);
    assert_eq!(limiter.inspect(&key).await.unwrap().in_long_window, 2);
}
