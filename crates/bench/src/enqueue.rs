//! `byok-bench enqueue`: `POST /v1/jobs` requests/s and latency under
//! concurrent load, on the distributed shape's API alone (PostgreSQL +
//! Redis, no worker: jobs wait in the queue). Each request is the real
//! one: token check, body and catalogue checks, the user's stored key
//! looked up, the job and its first history entry written, its id pushed to
//! Redis, the job marked enqueued. The baseline is `GET /healthz` on the
//! same server with the same load generator: the HTTP stack and the load
//! generator alone, the ceiling no handler can pass on this machine. A
//! second system with the edge limits off (`api.rate_limit`,
//! `api.auth_failure_limit`) takes the same load: the limiters' cost.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use byok_client::ListJobs;
use byok_core::JobStatus;
use serde_json::json;

use crate::common::{CpuSplit, percentile, production_logs, progress, round2};
use crate::http::{Connection, get, post_json};
use crate::pipeline::system_options;
use crate::statements::Ran;
use crate::system::{Shape, System, job_body};
use crate::{Options, report};

/// Concurrent connections.
const CONNECTIONS: usize = 64;

#[derive(Debug, Clone)]
struct Load {
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    requests: usize,
    /// Every request answered, warm-up included.
    answered: usize,
    cores: CpuSplit,
    /// PostgreSQL statements of every request answered (when counted).
    statements: Option<Ran>,
}

/// Sends `requests` (round-robin per connection) on `connections`
/// connections for `warmup + window`; times the answers of the window.
// Through `crate::http`, the minimal load generator, not `byok-client`: a general client's
// CPU per request (its HTTP stack, decoding each answer) would come out of the same two
// cores as the server's and distort the figure.
async fn load(
    addr: SocketAddr,
    requests: Arc<Vec<Vec<u8>>>,
    expect: u16,
    connections: usize,
    warmup: Duration,
    window: Duration,
) -> anyhow::Result<Load> {
    let start = Instant::now();
    let (from, to) = (start + warmup, start + warmup + window);
    let mut tasks = Vec::new();
    let answered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for c in 0..connections {
        let requests = Arc::clone(&requests);
        let answered_count = Arc::clone(&answered);
        tasks.push(tokio::spawn(async move {
            let mut conn = Connection::open(addr).await?;
            let mut latencies = Vec::new();
            let mut i = c;
            loop {
                let sent = Instant::now();
                if sent >= to {
                    return anyhow::Ok(latencies);
                }
                let (status, body) = conn.send(&requests[i % requests.len()]).await?;
                let answered = Instant::now();
                if status != expect {
                    anyhow::bail!("answered {status}: {}", String::from_utf8_lossy(&body));
                }
                if sent >= from && answered <= to {
                    latencies.push(answered - sent);
                }
                answered_count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                i += connections;
            }
        }));
    }
    // CPU over the timed window only.
    tokio::time::sleep_until(from.into()).await;
    let cpu_before = CpuSplit::read();
    tokio::time::sleep_until(to.into()).await;
    let cores = cpu_before.cores_until(&CpuSplit::read(), window.as_secs_f64());
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    latencies.sort();
    Ok(Load {
        rate: latencies.len() as f64 / window.as_secs_f64(),
        p50_ms: percentile(&latencies, 0.5),
        p99_ms: percentile(&latencies, 0.99),
        requests: latencies.len(),
        answered: answered.load(std::sync::atomic::Ordering::Relaxed),
        cores,
        statements: None,
    })
}

/// `POST /v1/jobs` on a new API-only system, with or without the edge limits.
async fn post_jobs(
    options: &Options,
    edge_limits: bool,
    warmup: Duration,
    window: Duration,
) -> anyhow::Result<(System, anyhow::Result<Load>)> {
    let mut system_options = system_options(Shape::Distributed);
    system_options.worker = false;
    system_options.edge_limits = edge_limits;
    let system = System::start(options, &system_options).await?;
    let posts: Arc<Vec<Vec<u8>>> = Arc::new(
        system
            .users
            .iter()
            .map(|u| post_json(system.api, "/v1/jobs", &system.token, &job_body(*u)))
            .collect(),
    );
    let counting = system.count_statements(options).await?;
    let mut jobs = load(system.api, posts, 202, CONNECTIONS, warmup, window).await;
    if let (Ok(load), Some(counting)) = (&mut jobs, counting) {
        load.statements = Some(counting.ran().await?);
    }
    let jobs = match jobs {
        Ok(jobs) => check_stored(&system).await.map(|()| jobs),
        Err(e) => Err(e),
    };
    Ok((system, jobs))
}

/// After the timed part: the first user's jobs, read back through the API as a producer
/// would, are stored and queued (no worker runs here).
async fn check_stored(system: &System) -> anyhow::Result<()> {
    let query = ListJobs {
        limit: Some(1),
        ..ListJobs::default()
    };
    let page = system.client.list_jobs(system.users[0], &query).await?;
    match page.jobs.first() {
        Some(job) if job.status == JobStatus::Queued => Ok(()),
        Some(job) => anyhow::bail!("job {} is {}, not queued", job.id, job.status),
        None => anyhow::bail!("the first user has no jobs after the load"),
    }
}

pub async fn run(options: &Options) -> anyhow::Result<()> {
    let (warmup, window) = if options.quick {
        (Duration::from_millis(300), Duration::from_secs(2))
    } else {
        (Duration::from_secs(2), Duration::from_secs(10))
    };
    production_logs(true);
    let (unlimited_system, unlimited) = post_jobs(options, false, warmup, window).await?;
    unlimited_system.stop().await?;
    let (system, jobs) = post_jobs(options, true, warmup, window).await?;
    let health = match &jobs {
        Ok(_) => {
            let gets = Arc::new(vec![get(system.api, "/healthz")]);
            load(system.api, gets, 200, CONNECTIONS, warmup, window).await
        }
        Err(_) => Err(anyhow::anyhow!("not run")),
    };
    production_logs(false);
    system.stop().await?;
    let (jobs, health, unlimited) = (jobs?, health?, unlimited?);
    progress(&format!(
        "enqueue: POST /v1/jobs {:.0}/s p50 {:.2} ms p99 {:.2} ms ({}); GET /healthz {:.0}/s p99 {:.2} ms ({}); edge limits off: POST {:.0}/s p99 {:.2} ms",
        jobs.rate,
        jobs.p50_ms,
        jobs.p99_ms,
        jobs.cores.human(),
        health.rate,
        health.p99_ms,
        health.cores.human(),
        unlimited.rate,
        unlimited.p99_ms,
    ));
    let statements = jobs
        .statements
        .as_ref()
        .map(|r| round2(r.per(jobs.answered)));
    if let Some(ran) = &jobs.statements {
        progress(&format!(
            "enqueue: {:.2} PostgreSQL statements per POST /v1/jobs; the most frequent, per request (calls, execution time):\n            {}",
            ran.per(jobs.answered),
            ran.top_human(jobs.answered)
        ));
    }
    let result = json!({
        "name": "enqueue",
        "statements_per_request": statements,
        "value": jobs.rate.round(),
        "unit": "requests/s",
        "p50_ms": round2(jobs.p50_ms),
        "p99_ms": round2(jobs.p99_ms),
        "requests": jobs.requests,
        "seconds": window.as_secs_f64(),
        "connections": CONNECTIONS,
        "cores": jobs.cores.json(),
        "baseline": health.rate.round(),
        "baseline_name": "GET /healthz on the same server and load generator",
        "baseline_p99_ms": round2(health.p99_ms),
        "ratio": jobs.rate / health.rate,
        "edge_limits_off": unlimited.rate.round(),
        "edge_limits_off_p99_ms": round2(unlimited.p99_ms),
        "shape": "distributed (PostgreSQL + Redis), API only",
    });
    let human = format!(
        "enqueue   POST /v1/jobs {:>7.0} requests/s, p50 {:.2} ms, p99 {:.2} ms ({CONNECTIONS} connections, {} s; {})\n          GET /healthz  {:>7.0} requests/s, p99 {:.2} ms (same server, same load generator) → ratio {:.2}\n          POST /v1/jobs {:>7.0} requests/s, p99 {:.2} ms with the edge limits off (a system of its own, same load)",
        jobs.rate,
        jobs.p50_ms,
        jobs.p99_ms,
        window.as_secs(),
        jobs.cores.human(),
        health.rate,
        health.p99_ms,
        jobs.rate / health.rate,
        unlimited.rate,
        unlimited.p99_ms,
    ) + &format!(
        "\n          PostgreSQL statements per request (pg_stat_statements, every connection): {}",
        statements.map_or_else(|| "not counted".to_owned(), |n| format!("{n:.2}"))
    );
    report(options, &result, &human);
    Ok(())
}
