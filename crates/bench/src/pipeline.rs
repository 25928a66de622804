//! `byok-bench pipeline`: end-to-end jobs/s. Producers enqueue over HTTP
//! (`POST /v1/jobs`) while the worker takes each job through the whole
//! pipeline — open the user's sealed key, take a rate-limit permit, submit
//! to the simulated Runway, poll it, download the video, write it to
//! `output.dir`, mark the job succeeded — with the simulator at zero render
//! time and `providers.*.poll_interval = 0` (the first poll, right after the
//! submit, finds the job done). The figure is jobs / (first enqueue → last
//! job succeeded), on the distributed shape (PostgreSQL + Redis, API and
//! worker each with their own pools), and the same on the embedded shape
//! (SQLite) as an extra field.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use byok_client::ListJobs;
use byok_core::JobStatus;
use byok_sim::SimConfig;
use futures::StreamExt as _;
use serde_json::json;

use crate::common::{CpuSplit, production_logs, progress, round2};
use crate::http::{Connection, post_json};
use crate::statements::Ran;
use crate::system::{Shape, System, SystemOptions, job_body};
use crate::{Options, report};

/// Producer connections.
const CONNECTIONS: usize = 32;
/// Users with a key; jobs go round-robin to them.
const USERS: usize = 100;
/// `worker.concurrency`, the default.
const CONCURRENCY: usize = 256;

#[derive(Debug, Clone)]
struct Run {
    jobs: usize,
    /// Jobs/s, first enqueue to last success.
    rate: f64,
    /// Seconds the enqueueing took.
    enqueue_s: f64,
    total_s: f64,
    cores: CpuSplit,
    submits: u64,
    polls: u64,
    /// PostgreSQL statements of the timed jobs (distributed shape, when counted).
    statements: Option<Ran>,
    /// Updates of job rows per timed job, and of those the heap-only ones (when counted).
    updates: Option<(f64, f64)>,
}

pub fn system_options(shape: Shape) -> SystemOptions {
    SystemOptions {
        shape,
        sim: SimConfig {
            render_time: Duration::ZERO,
            stability_requests_per_10s: 0,
            fal_concurrency: 0,
            ..SimConfig::default()
        },
        poll_interval: Duration::ZERO,
        worker: true,
        concurrency: CONCURRENCY,
        users: USERS,
        edge_limits: true,
        budgets: false,
    }
}

/// Posts `n` jobs on `connections` connections; returns when all answered 202.
// Measured: through `crate::http`, the minimal load generator, not `byok-client`, whose
// per-request work (a general HTTP client, JSON decoding of each job) would take CPU from
// the server measured on the same cores and lower the figure.
pub async fn enqueue(system: &System, n: usize, connections: usize) -> anyhow::Result<()> {
    let next = Arc::new(AtomicUsize::new(0));
    let requests: Arc<Vec<Vec<u8>>> = Arc::new(
        system
            .users
            .iter()
            .map(|u| post_json(system.api, "/v1/jobs", &system.token, &job_body(*u)))
            .collect(),
    );
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (next, requests, addr) = (Arc::clone(&next), Arc::clone(&requests), system.api);
        tasks.push(tokio::spawn(async move {
            let mut conn = Connection::open(addr).await?;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return anyhow::Ok(());
                }
                let (status, body) = conn.send(&requests[i % requests.len()]).await?;
                if status != 202 {
                    anyhow::bail!(
                        "POST /v1/jobs answered {status}: {}",
                        String::from_utf8_lossy(&body)
                    );
                }
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// Waits until `jobs` more jobs than `finished_before` have finished in this process (the
/// worker runs here), then until the store holds no live job (queued, throttled, running).
/// The wait reads the process's own counter while the system works: counting live rows
/// every few milliseconds would scan thousands of index entries each time and take a good
/// part of PostgreSQL's CPU away from the system being measured.
async fn wait_all_final(
    system: &System,
    finished_before: u64,
    jobs: usize,
    deadline: Duration,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let target = finished_before + jobs as u64;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while byok_metrics::metrics().jobs_finished_count() < target {
        if started.elapsed() > deadline {
            anyhow::bail!(
                "{} of {jobs} jobs finished after {deadline:?}",
                byok_metrics::metrics()
                    .jobs_finished_count()
                    .saturating_sub(finished_before)
            );
        }
        tick.tick().await;
    }
    // The counter moves after each final write; the store has the last word.
    loop {
        let live: u64 = system
            .store
            .jobs()
            .count_live()
            .await?
            .iter()
            .map(|(_, n)| n)
            .sum();
        if live == 0 {
            return Ok(());
        }
        if started.elapsed() > deadline {
            anyhow::bail!("{live} jobs still live after {deadline:?}");
        }
        tick.tick().await;
    }
}

async fn succeeded(system: &System) -> anyhow::Result<u64> {
    Ok(system
        .store
        .jobs()
        .count_by_status()
        .await?
        .into_iter()
        .find(|(s, _)| *s == JobStatus::Succeeded)
        .map_or(0, |(_, n)| n))
}

/// After the timed part: the newest job of the first user, read and downloaded through
/// the API as its producer would, succeeded with its whole video.
async fn check_a_job(system: &System) -> anyhow::Result<()> {
    let query = ListJobs {
        limit: Some(1),
        ..ListJobs::default()
    };
    let page = system.client.list_jobs(system.users[0], &query).await?;
    let job = page
        .jobs
        .first()
        .ok_or_else(|| anyhow::anyhow!("the first user has no jobs"))?;
    let (JobStatus::Succeeded, Some(result)) = (&job.status, &job.result) else {
        anyhow::bail!("job {} is {}, without a result", job.id, job.status);
    };
    let mut video = system.client.video_stream(job.id).await?;
    let mut size = 0;
    while let Some(chunk) = video.next().await {
        size += chunk?.len() as u64;
    }
    if size != result.stored.bytes {
        anyhow::bail!(
            "job {}: {size} bytes downloaded, {} stored",
            job.id,
            result.stored.bytes
        );
    }
    Ok(())
}

async fn measure(
    options: &Options,
    shape: Shape,
    budgets: bool,
    jobs: usize,
    warmup: usize,
) -> anyhow::Result<Run> {
    let system = System::start(
        options,
        &SystemOptions {
            budgets,
            ..system_options(shape)
        },
    )
    .await?;
    // Warm-up: connections, prepared statements, the first files.
    let finished_before = byok_metrics::metrics().jobs_finished_count();
    enqueue(&system, warmup, CONNECTIONS).await?;
    wait_all_final(&system, finished_before, warmup, Duration::from_secs(120)).await?;
    let stats_before = system.sim.stats().await.runway.totals;
    let counting = system.count_statements(options).await?;

    let finished_before = byok_metrics::metrics().jobs_finished_count();
    let cpu_before = CpuSplit::read();
    let started = Instant::now();
    enqueue(&system, jobs, CONNECTIONS).await?;
    let enqueue_s = started.elapsed().as_secs_f64();
    wait_all_final(&system, finished_before, jobs, Duration::from_secs(900)).await?;
    let total_s = started.elapsed().as_secs_f64();
    let cores = cpu_before.cores_until(&CpuSplit::read(), total_s);
    let (statements, updates) = match &counting {
        Some(counting) => {
            let ran = counting.ran().await?;
            let (updates, hot) = counting.job_updates().await?;
            (
                Some(ran),
                Some((updates as f64 / jobs as f64, hot as f64 / jobs as f64)),
            )
        }
        None => (None, None),
    };

    let done = succeeded(&system).await?;
    let stats = system.sim.stats().await.runway.totals;
    let checked = check_a_job(&system).await;
    system.stop().await?;
    checked?;
    if done != (warmup + jobs) as u64 {
        anyhow::bail!(
            "{} of {} jobs succeeded on the {} shape",
            done,
            warmup + jobs,
            shape.name()
        );
    }
    let run = Run {
        jobs,
        rate: jobs as f64 / total_s,
        enqueue_s,
        total_s,
        cores,
        submits: stats.submits - stats_before.submits,
        polls: stats.polls - stats_before.polls,
        statements,
        updates,
    };
    if let Some(ran) = &run.statements {
        progress(&format!(
            "pipeline: {}{}: {:.2} PostgreSQL statements per job; the most frequent, per job (calls, execution time):\n            {}",
            shape.name(),
            if budgets { " with budgets" } else { "" },
            ran.per(run.jobs),
            ran.top_human(run.jobs)
        ));
    }
    if let Some((updates, hot)) = run.updates {
        progress(&format!(
            "pipeline: {}: {updates:.2} updates of the job row per job, {hot:.2} of them heap-only: {:.2} full rewrites",
            shape.name(),
            updates - hot
        ));
    }
    progress(&format!(
        "pipeline: {}{}: {} jobs in {:.2} s = {:.0} jobs/s (enqueued in {:.2} s; {} submits, {} polls; {})",
        shape.name(),
        if budgets { " with budgets" } else { "" },
        run.jobs,
        run.total_s,
        run.rate,
        run.enqueue_s,
        run.submits,
        run.polls,
        run.cores.human()
    ));
    Ok(run)
}

pub async fn run(options: &Options) -> anyhow::Result<()> {
    let (distributed_jobs, embedded_jobs, warmup) = if options.quick {
        (1_000, 500, 100)
    } else {
        (20_000, 10_000, 500)
    };
    production_logs(true);
    let runs = async {
        let distributed =
            measure(options, Shape::Distributed, false, distributed_jobs, warmup).await?;
        let budgeted = measure(options, Shape::Distributed, true, distributed_jobs, warmup).await?;
        let embedded = measure(options, Shape::Embedded, false, embedded_jobs, warmup).await?;
        let embedded_budgeted =
            measure(options, Shape::Embedded, true, embedded_jobs, warmup).await?;
        anyhow::Ok((distributed, budgeted, embedded, embedded_budgeted))
    };
    let runs = runs.await;
    production_logs(false);
    let (distributed, budgeted, embedded, embedded_budgeted) = runs?;
    // What budgets add per job: CPU time of every process (the bench's own, PostgreSQL,
    // Redis) over the run, per job, with budgets minus without.
    let cpu_us_per_job = |run: &Run| run.cores.total() * run.total_s * 1e6 / run.jobs as f64;
    let budget_cost_us = cpu_us_per_job(&budgeted) - cpu_us_per_job(&distributed);
    let embedded_budget_cost_us = cpu_us_per_job(&embedded_budgeted) - cpu_us_per_job(&embedded);
    let statements_per_job = |run: &Run| run.statements.as_ref().map(|r| round2(r.per(run.jobs)));
    let mut result = json!({
        "name": "pipeline",
        "value": distributed.rate.round(),
        "unit": "jobs/s",
        "shape": "distributed (PostgreSQL + Redis)",
        "jobs": distributed.jobs,
        "seconds": round2(distributed.total_s),
        "enqueue_seconds": round2(distributed.enqueue_s),
        "cores": distributed.cores.json(),
        "embedded": embedded.rate.round(),
        "embedded_jobs": embedded.jobs,
        "embedded_cores": embedded.cores.json(),
        "render_time_ms": 0,
        "poll_interval_ms": 0,
        "connections": CONNECTIONS,
        "concurrency": CONCURRENCY,
        "users": USERS,
        "sim_polls_per_job": distributed.polls as f64 / distributed.jobs as f64,
        "with_budgets": budgeted.rate.round(),
        "with_budgets_cores": budgeted.cores.json(),
        "budgets_cpu_us_per_job": budget_cost_us.round(),
        "embedded_with_budgets": embedded_budgeted.rate.round(),
        "embedded_budgets_cpu_us_per_job": embedded_budget_cost_us.round(),
        "statements_per_job": statements_per_job(&distributed),
        "job_row_updates_per_job": distributed.updates.map(|(u, _)| round2(u)),
        "job_row_full_rewrites_per_job": distributed.updates.map(|(u, hot)| round2(u - hot)),
        "with_budgets_statements_per_job": statements_per_job(&budgeted),
    });
    if let Some(ran) = &distributed.statements {
        result["statements_top"] = ran.top_json(distributed.jobs);
    }
    let human = format!(
        "pipeline  distributed {:>7.0} jobs/s ({} jobs in {:.1} s; {})\n          embedded    {:>7.0} jobs/s ({} jobs in {:.1} s; {})\n          HTTP enqueue on {CONNECTIONS} connections while one worker (concurrency {CONCURRENCY}) runs each job: key, permit, submit, poll, download, succeeded; render time 0, poll interval 0",
        distributed.rate,
        distributed.jobs,
        distributed.total_s,
        distributed.cores.human(),
        embedded.rate,
        embedded.jobs,
        embedded.total_s,
        embedded.cores.human(),
    ) + &format!(
        "\n          with budgets (a project and a user limit on every job: checked at enqueue, held before submit, settled at the end):\n          distributed {:>7.0} jobs/s ({}), {:+.0} µs CPU per job\n          embedded    {:>7.0} jobs/s ({}), {:+.0} µs CPU per job",
        budgeted.rate,
        budgeted.cores.human(),
        budget_cost_us,
        embedded_budgeted.rate,
        embedded_budgeted.cores.human(),
        embedded_budget_cost_us,
    );
    let statements = |run: &Run| {
        statements_per_job(run).map_or_else(|| "not counted".to_owned(), |n| format!("{n:.2}"))
    };
    let rewrites = distributed.updates.map_or_else(
        || "not counted".to_owned(),
        |(updates, hot)| {
            format!(
                "{updates:.2} updates of its row, {:.2} of them full rewrites (not heap-only)",
                updates - hot
            )
        },
    );
    let human = format!(
        "{human}\n          PostgreSQL statements per job (pg_stat_statements, every connection): {} distributed, {} with budgets; per job {rewrites}",
        statements(&distributed),
        statements(&budgeted)
    );
    report(options, &result, &human);
    Ok(())
}
