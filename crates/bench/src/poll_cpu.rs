//! `byok-bench poll-cpu`: CPU time per status poll of a declarative provider
//! (Luma, from `crates/providers/definitions/luma.toml`) beside a built-in
//! adapter written in Rust (Runway: a bearer key and JSON answers, the
//! closest built-in shape to Luma's), in the same registry and the same run.
//!
//! One job is submitted on each to the simulator, which renders for an hour
//! so both stay running; then each is polled sequentially, one request at a
//! time, in interleaved rounds (every other round in reverse order) so that
//! drift of the machine cancels out of the ratio. The simulator runs in this
//! process but on a thread of its own (a current-thread runtime), so the CPU
//! is read three ways from `/proc/self/task/*/schedstat` (user + system, in
//! nanoseconds): the whole process, the simulator's thread, and the
//! difference, the client side (the adapter, reqwest, the runtime, and the
//! kernel's loopback work done on those threads). Both providers hit the same
//! kind of simulator handler (authenticate, look the job up, write its JSON),
//! so the whole-process figure compares fairly too; it is the headline.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use byok_core::GenerationRequest;
use byok_providers::declarative::Definition;
use byok_providers::{
    Credentials, ProviderId, Registry, RegistryOptions, RemoteStatus, SubmitRequest, VideoProvider,
};
use byok_sim::{SimConfig, Stats};
use serde_json::{Value, json};

use crate::common::{median, progress, round2};
use crate::system::simulator;
use crate::{Options, report};

/// The shipped Luma definition, compiled in so the benchmark runs from anywhere.
const LUMA_TOML: &str = include_str!("../../providers/definitions/luma.toml");
const LUMA_ORIGIN: &str = "crates/providers/definitions/luma.toml";
/// The goal: a declarative provider costs at most this much more per poll.
const GOAL_RATIO: f64 = 1.5;

/// CPU nanoseconds used so far by every live thread of this process (user +
/// system): the first field of `/proc/self/task/<tid>/schedstat`, which
/// counts in nanoseconds where `/proc/self/stat` counts 10 ms ticks. `None`
/// where the kernel does not expose it.
fn cpu_ns() -> Option<u64> {
    let mut total = 0u64;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        // A thread that ended between the listing and the read has nothing to add.
        total += schedstat_ns(&task.ok()?.path()).unwrap_or(0);
    }
    Some(total)
}

/// CPU nanoseconds used so far by the thread at `task` (`/proc/self/task/<tid>`).
fn schedstat_ns(task: &Path) -> Option<u64> {
    let stat = std::fs::read_to_string(task.join("schedstat")).ok()?;
    stat.split_whitespace().next()?.parse().ok()
}

/// A CPU reading: the whole process and the simulator's thread, in ns.
#[derive(Debug, Clone, Copy)]
struct Cpu {
    process: u64,
    sim: u64,
}

impl Cpu {
    fn read(sim_task: &Path) -> anyhow::Result<Cpu> {
        let no = || anyhow::anyhow!("cannot read /proc/self/task/*/schedstat");
        Ok(Cpu {
            process: cpu_ns().ok_or_else(no)?,
            sim: schedstat_ns(sim_task).ok_or_else(no)?,
        })
    }

    fn since(self, earlier: Cpu) -> Cpu {
        Cpu {
            process: self.process.saturating_sub(earlier.process),
            sim: self.sim.saturating_sub(earlier.sim),
        }
    }
}

/// Where the simulator's thread serves.
#[derive(Debug, Clone)]
struct SimUrls {
    runway: String,
    stability: String,
    vertex: String,
    fal: String,
    replicate: String,
    luma: String,
    token: String,
}

/// The simulator on a thread of its own, so its CPU can be told apart.
#[derive(Debug)]
struct SimThread {
    urls: SimUrls,
    /// `/proc/self/task/<tid>` of the simulator's thread.
    task: PathBuf,
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<anyhow::Result<Stats>>,
}

impl SimThread {
    async fn start(config: SimConfig) -> anyhow::Result<SimThread> {
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("poll-cpu-sim".to_owned())
            .spawn(move || -> anyhow::Result<Stats> {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                runtime.block_on(async move {
                    let sim = simulator(config).await?;
                    // `/proc/thread-self` is `<pid>/task/<tid>` of the reading thread.
                    let task = std::fs::read_link("/proc/thread-self")?;
                    let urls = SimUrls {
                        runway: sim.runway_url(),
                        stability: sim.stability_url(),
                        vertex: sim.vertex_url(),
                        fal: sim.fal_url(),
                        replicate: sim.replicate_url(),
                        luma: sim.luma_url(),
                        token: sim.token_url(),
                    };
                    let _ = ready_tx.send((urls, Path::new("/proc").join(task)));
                    // Stopped, or the benchmark gave up: either way, done.
                    let _ = stop_rx.await;
                    let stats = sim.stats().await;
                    sim.shutdown().await;
                    Ok(stats)
                })
            })?;
        match ready_rx.await {
            Ok((urls, task)) => Ok(SimThread {
                urls,
                task,
                stop,
                thread,
            }),
            Err(_) => Err(thread
                .join()
                .map_err(|_| anyhow::anyhow!("the simulator thread panicked"))?
                .err()
                .unwrap_or_else(|| anyhow::anyhow!("the simulator did not start"))),
        }
    }

    /// Stops the simulator; what it counted.
    async fn stop(self) -> anyhow::Result<Stats> {
        let _ = self.stop.send(());
        tokio::task::spawn_blocking(move || {
            self.thread
                .join()
                .map_err(|_| anyhow::anyhow!("the simulator thread panicked"))?
        })
        .await?
    }
}

/// One side of the comparison: a provider, its credentials and its running job.
struct Side {
    name: &'static str,
    adapter: std::sync::Arc<dyn VideoProvider>,
    credentials: Credentials,
    job: String,
}

impl Side {
    async fn open(
        registry: &Registry,
        id: ProviderId,
        name: &'static str,
        key: &str,
        fields: Value,
    ) -> anyhow::Result<Side> {
        let adapter = registry
            .get(id)
            .ok_or_else(|| anyhow::anyhow!("the registry has no `{id}`"))?;
        let credentials = adapter
            .parse_credentials(&json!({ "api_key": key }))
            .map_err(|e| anyhow::anyhow!("{name} credentials: {e}"))?;
        let mut body = json!({
            "user_id": "0190f4e2-7c1a-7d3e-9a4b-5c6d7e8f9a0b",
            "provider": id.as_str(),
        });
        if let Value::Object(fields) = fields {
            for (k, v) in fields {
                body[k] = v;
            }
        }
        let request: GenerationRequest = serde_json::from_value(body)?;
        let validated = adapter
            .validate(&request)
            .map_err(|e| anyhow::anyhow!("{name} request: {e}"))?;
        let submitted = adapter
            .submit(
                &credentials,
                SubmitRequest {
                    request: &validated,
                    image: None,
                },
            )
            .await
            .map_err(|e| anyhow::anyhow!("{name} submit: {}", e.message))?;
        Ok(Side {
            name,
            adapter,
            credentials,
            job: submitted.provider_job_id,
        })
    }

    /// Polls `n` times, one request at a time, checking that the job still runs.
    async fn polls(&self, n: usize, sim_task: &Path) -> anyhow::Result<Round> {
        let before = Cpu::read(sim_task)?;
        let started = Instant::now();
        for _ in 0..n {
            match self.adapter.poll(&self.credentials, &self.job).await {
                Ok(RemoteStatus::Queued | RemoteStatus::Running { .. }) => {}
                Ok(other) => anyhow::bail!("{} poll: the job left running: {other:?}", self.name),
                Err(e) => anyhow::bail!("{} poll: {}", self.name, e.message),
            }
        }
        let wall = started.elapsed();
        let cpu = Cpu::read(sim_task)?.since(before);
        let per_poll = |ns: u64| ns as f64 / 1000.0 / n as f64;
        Ok(Round {
            process_us: per_poll(cpu.process),
            sim_us: per_poll(cpu.sim),
            wall_us: wall.as_secs_f64() * 1e6 / n as f64,
        })
    }
}

/// One side's figures in one round, per poll.
#[derive(Debug, Clone, Copy)]
struct Round {
    /// µs of CPU of the whole process.
    process_us: f64,
    /// µs of CPU of the simulator's thread.
    sim_us: f64,
    /// µs of wall time.
    wall_us: f64,
}

impl Round {
    /// µs of CPU outside the simulator's thread: the client side.
    fn client_us(&self) -> f64 {
        (self.process_us - self.sim_us).max(0.0)
    }
}

/// The medians of one side's rounds.
#[derive(Debug, Clone, Copy)]
struct Medians {
    process_us: f64,
    client_us: f64,
    sim_us: f64,
    wall_us: f64,
}

impl Medians {
    fn of(rounds: &[Round]) -> Medians {
        let m = |f: fn(&Round) -> f64| median(rounds.iter().map(f).collect());
        Medians {
            process_us: m(|r| r.process_us),
            client_us: m(Round::client_us),
            sim_us: m(|r| r.sim_us),
            wall_us: m(|r| r.wall_us),
        }
    }
}

/// The registry a worker would have: every built-in provider and the Luma
/// definition, all pointed at the simulator.
fn registry(urls: &SimUrls) -> anyhow::Result<(Registry, ProviderId)> {
    let mut options = RegistryOptions::defaults();
    for (id, url) in [
        (ProviderId::RUNWAY, &urls.runway),
        (ProviderId::STABILITY, &urls.stability),
        (ProviderId::VEO, &urls.vertex),
        (ProviderId::FAL, &urls.fal),
        (ProviderId::REPLICATE, &urls.replicate),
    ] {
        if let Some(provider) = options.provider_mut(id) {
            provider.base_url.clone_from(url);
        }
    }
    let luma = Definition::parse(LUMA_TOML, LUMA_ORIGIN)
        .map_err(|e| anyhow::anyhow!("the Luma definition: {e}"))?;
    let luma = options.declare(luma)?;
    options
        .provider_mut(luma)
        .ok_or_else(|| anyhow::anyhow!("luma was not declared"))?
        .base_url
        .clone_from(&urls.luma);
    options.allow_private_networks = true;
    options.token_uri_allowlist = vec![urls.token.parse()?];
    Ok((Registry::new(&options)?, luma))
}

fn ratio3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

pub async fn run(options: &Options) -> anyhow::Result<()> {
    let (polls, rounds, warmup) = if options.quick {
        (500, 3, 200)
    } else {
        (1_000, 15, 1_000)
    };
    let sim = SimThread::start(SimConfig {
        render_time: Duration::from_secs(3600),
        ..SimConfig::default()
    })
    .await?;
    let measured = measure(&sim, polls, rounds, warmup).await;
    let stats = sim.stop().await?;
    let (builtin, declarative) = measured?;
    // Every poll reached the simulator and nothing else did.
    let expected = (warmup + polls * rounds) as u64;
    let counted = (stats.runway.totals.polls, stats.luma.totals.polls);
    if counted != (expected, expected) {
        anyhow::bail!(
            "the simulator answered {} Runway and {} Luma polls, not {expected} each",
            counted.0,
            counted.1
        );
    }
    // Ratios per round (declarative / built-in, measured back to back), then their median.
    let ratios = |f: fn(&Round) -> f64| -> Vec<f64> {
        builtin
            .iter()
            .zip(&declarative)
            .map(|(b, d)| f(d) / f(b).max(1e-9))
            .collect()
    };
    let process_ratios = ratios(|r| r.process_us);
    let client_ratios = ratios(Round::client_us);
    let ratio = median(process_ratios.clone());
    let client_ratio = median(client_ratios.clone());
    let (ours, base) = (Medians::of(&declarative), Medians::of(&builtin));
    let list = |v: &[f64]| {
        v.iter()
            .map(|r| format!("{r:.3}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    progress(&format!(
        "poll-cpu: {rounds} rounds of {polls} polls each: luma (declarative) {:.1} µs CPU/poll ({:.1} client + {:.1} simulator), runway (built-in) {:.1} µs ({:.1} + {:.1}); ratio {ratio:.3} (rounds: {}), client-side ratio {client_ratio:.3} (rounds: {})",
        ours.process_us,
        ours.client_us,
        ours.sim_us,
        base.process_us,
        base.client_us,
        base.sim_us,
        list(&process_ratios),
        list(&client_ratios),
    ));
    let result = json!({
        "name": "poll-cpu",
        "value": round2(ours.process_us),
        "unit": "µs CPU/poll",
        "provider": "luma (declarative definition)",
        "baseline": round2(base.process_us),
        "baseline_name": "runway (built-in adapter), same registry, simulator and run",
        "ratio": ratio3(ratio),
        "ratio_rounds": process_ratios.iter().copied().map(ratio3).collect::<Vec<_>>(),
        "goal_ratio": GOAL_RATIO,
        "client_us_per_poll": round2(ours.client_us),
        "baseline_client_us_per_poll": round2(base.client_us),
        "client_ratio": ratio3(client_ratio),
        "client_ratio_rounds": client_ratios.iter().copied().map(ratio3).collect::<Vec<_>>(),
        "sim_us_per_poll": round2(ours.sim_us),
        "baseline_sim_us_per_poll": round2(base.sim_us),
        "wall_us_per_poll": round2(ours.wall_us),
        "baseline_wall_us_per_poll": round2(base.wall_us),
        "polls": polls,
        "rounds": rounds,
        "warmup_polls": warmup,
        "includes": "the whole process: client and in-process simulator (split out in client_* and sim_*)",
    });
    let human = format!(
        "poll-cpu  {:>9.1} µs CPU per Luma poll (declarative) vs {:.1} µs per Runway poll (built-in) → ratio {ratio:.2} (goal ≤ {GOAL_RATIO}); client side alone {:.1} vs {:.1} µs → {client_ratio:.2}; {:.0} / {:.0} µs wall\n          CPU of the whole process, the in-process simulator's answers ({:.1} / {:.1} µs) included; median of {rounds} interleaved rounds of {polls} sequential polls",
        ours.process_us,
        base.process_us,
        ours.client_us,
        base.client_us,
        ours.wall_us,
        base.wall_us,
        ours.sim_us,
        base.sim_us,
    );
    report(options, &result, &human);
    Ok(())
}

/// Submits a job on each side, warms both up and runs the rounds; each side's rounds.
async fn measure(
    sim: &SimThread,
    polls: usize,
    rounds: usize,
    warmup: usize,
) -> anyhow::Result<(Vec<Round>, Vec<Round>)> {
    let (registry, luma_id) = registry(&sim.urls)?;
    let runway = Side::open(
        &registry,
        ProviderId::RUNWAY,
        "runway",
        "sim_bench_runway",
        json!({ "model": "gen4.5", "prompt": "a lighthouse at dusk", "aspect_ratio": "16:9", "duration_seconds": 5 }),
    )
    .await?;
    let luma = Side::open(
        &registry,
        luma_id,
        "luma",
        "sim_bench_luma",
        json!({ "model": "ray-3.2", "prompt": "a lighthouse at dusk", "aspect_ratio": "16:9", "resolution": "720p", "duration_seconds": 5 }),
    )
    .await?;
    let task = sim.task.as_path();
    // Warm-up: connections open, allocator and caches settled, on both.
    runway.polls(warmup, task).await?;
    luma.polls(warmup, task).await?;
    let (mut builtin, mut declarative) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        // Every other round in reverse order, so neither side always goes first.
        if round % 2 == 0 {
            builtin.push(runway.polls(polls, task).await?);
            declarative.push(luma.polls(polls, task).await?);
        } else {
            declarative.push(luma.polls(polls, task).await?);
            builtin.push(runway.polls(polls, task).await?);
        }
    }
    Ok((builtin, declarative))
}
