//! `byok-bench inflight`: one real `byok worker` process (the release
//! binary, spawned with the distributed shape's settings) holding many jobs
//! at a slow provider: the simulator renders for an hour, so every job is
//! submitted once and then polled at Runway's default interval (5 s) for
//! the whole window. Measured on the worker process alone, from /proc:
//! `VmRSS` at the end of the window (and `VmHWM`, its peak), and
//! utime + stime over the window divided by its length (cores).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use byok_core::{GenerationRequest, JobItem, JobStatus, ProviderId};
use byok_queue::Producer;
use byok_sim::SimConfig;
use byok_store::{Inserted, NewJob, Store};
use serde_json::json;

use crate::common::{CpuSplit, ScratchDb, cpu_seconds, delete_matching, round2, status_kib};
use crate::system::{KEYS, PER_HOUR, PER_MINUTE, settings, simulator, store_users};
use crate::{Options, report};

/// Users with a key; jobs go round-robin to them.
const USERS: usize = 100;
/// Runway's default `providers.runway.poll_interval`.
const POLL_INTERVAL_S: u64 = 5;

fn byok_binary(options: &Options) -> anyhow::Result<PathBuf> {
    let path = match &options.byok_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .map(|d| d.join("byok"))
            .ok_or_else(|| anyhow::anyhow!("no directory beside this program"))?,
    };
    if !path.is_file() {
        anyhow::bail!(
            "{} not found: build it with `cargo build --profile production -p byok` (or pass --byok-bin)",
            path.display()
        );
    }
    Ok(path)
}

/// Stores and queues `n` jobs, as the API does (the API itself is measured
/// by `enqueue`).
async fn enqueue(
    store: &Store,
    producer: &Producer<JobItem>,
    users: &[uuid::Uuid],
    n: usize,
) -> anyhow::Result<()> {
    let mut tasks = Vec::new();
    let per_task = n.div_ceil(16);
    for t in 0..16 {
        let (store, producer, users) = (store.clone(), producer.clone(), users.to_vec());
        tasks.push(tokio::spawn(async move {
            for i in (t * per_task)..((t + 1) * per_task).min(n) {
                let user = users[i % users.len()];
                let request = GenerationRequest {
                    prompt: Some("a lighthouse at dusk, slow dolly in".to_owned()),
                    duration_seconds: Some(5),
                    ..GenerationRequest::new(user, ProviderId::RUNWAY, "gen4.5")
                };
                let new = NewJob {
                    project_id: byok_core::DEFAULT_PROJECT_ID,
                    user_id: user,
                    provider: ProviderId::RUNWAY,
                    model: "gen4.5".into(),
                    request,
                    metadata: json!({}),
                    created_by_token: None,
                    batch_id: None,
                    idempotency: None,
                    usage: Default::default(),
                };
                let Inserted::Created(job) = store.jobs().insert(&new).await? else {
                    anyhow::bail!("no idempotency key, yet not created");
                };
                producer
                    .push(
                        &job.id.to_string(),
                        &JobItem { job_id: job.id },
                        Duration::ZERO,
                    )
                    .await?;
                store.jobs().mark_enqueued(job.id).await?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

async fn running(store: &Store) -> anyhow::Result<u64> {
    Ok(store
        .jobs()
        .count_live()
        .await?
        .into_iter()
        .find(|(s, _)| *s == JobStatus::Running)
        .map_or(0, |(_, n)| n))
}

pub async fn run(options: &Options) -> anyhow::Result<()> {
    let (jobs, window, settle) = if options.quick {
        (1_000, Duration::from_secs(5), Duration::from_secs(2))
    } else {
        (
            10_000,
            Duration::from_secs(30),
            Duration::from_secs(POLL_INTERVAL_S + 1),
        )
    };
    let binary = byok_binary(options)?;
    let sim = simulator(SimConfig {
        render_time: Duration::from_secs(3600),
        stability_requests_per_10s: 0,
        fal_concurrency: 0,
        ..SimConfig::default()
    })
    .await?;
    let db = ScratchDb::create(&options.database_url).await?;
    let namespace = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let dir = tempfile::Builder::new().prefix("byok-bench-").tempdir()?;
    // The producer's side, as the API has it: the same settings as the
    // worker process gets below.
    let producer_side = byok_app::System::open(settings(
        &db.url,
        &options.redis_url,
        &namespace,
        &sim,
        dir.path(),
    ))
    .await?;
    let users = store_users(&producer_side, byok_core::DEFAULT_PROJECT_ID, USERS).await?;
    let store = producer_side.store().clone();
    let producer = Producer::<JobItem>::new(std::sync::Arc::clone(producer_side.engine()));

    let env: Vec<(String, String)> = vec![
        ("DATABASE_URL".into(), db.url.clone()),
        ("REDIS_URL".into(), options.redis_url.clone()),
        ("BYOK__QUEUE__NAMESPACE".into(), namespace.clone()),
        ("BYOK__ENCRYPTION__KEYS".into(), KEYS.into()),
        (
            "BYOK__OUTPUT__DIR".into(),
            dir.path().join("videos").display().to_string(),
        ),
        ("BYOK__FETCH__ALLOW_PRIVATE_NETWORKS".into(), "true".into()),
        ("BYOK__PROVIDERS__RUNWAY__BASE_URL".into(), sim.runway_url()),
        (
            "BYOK__PROVIDERS__RUNWAY__RATE_LIMIT__PER_MINUTE".into(),
            PER_MINUTE.to_string(),
        ),
        (
            "BYOK__PROVIDERS__RUNWAY__RATE_LIMIT__PER_HOUR".into(),
            PER_HOUR.to_string(),
        ),
    ];
    let log = std::fs::File::create(dir.path().join("worker.log"))?;
    let mut child = tokio::process::Command::new(&binary)
        .arg("worker")
        .current_dir(dir.path())
        .env_remove("RUST_LOG")
        .env_remove("BYOK_LOG_FORMAT")
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()?;
    let pid = child
        .id()
        .ok_or_else(|| anyhow::anyhow!("the worker exited at once"))?
        .to_string();

    let measured = async {
        // Idle first: started, connected, waiting for work.
        tokio::time::sleep(Duration::from_secs(1)).await;
        if let Some(status) = child.try_wait()? {
            anyhow::bail!(
                "the worker exited ({status}); see {}",
                dir.path().join("worker.log").display()
            );
        }
        let idle_kib = status_kib(&pid, "VmRSS").unwrap_or(0);

        let started = Instant::now();
        enqueue(&store, &producer, &users, jobs).await?;
        loop {
            let n = running(&store).await?;
            if n >= jobs as u64 {
                break;
            }
            if started.elapsed() > Duration::from_secs(600) {
                anyhow::bail!("only {n} of {jobs} jobs reached the provider in 10 minutes");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let submitted_s = started.elapsed().as_secs_f64();
        // One full poll cycle before timing, so every job is in its rhythm
        // (`--quick`: a short settle only).
        tokio::time::sleep(settle).await;

        let polls_before = sim.stats().await.runway.totals.polls;
        let machine_before = CpuSplit::read();
        let cpu_before = cpu_seconds(&pid).unwrap_or(0.0);
        let t0 = Instant::now();
        tokio::time::sleep(window).await;
        let secs = t0.elapsed().as_secs_f64();
        let cpu = (cpu_seconds(&pid).unwrap_or(0.0) - cpu_before) / secs;
        let machine = machine_before.cores_until(&CpuSplit::read(), secs);
        let polls = sim.stats().await.runway.totals.polls - polls_before;
        let rss_kib = status_kib(&pid, "VmRSS").unwrap_or(0);
        let hwm_kib = status_kib(&pid, "VmHWM").unwrap_or(0);
        let still = running(&store).await?;
        anyhow::Ok((
            idle_kib,
            submitted_s,
            cpu,
            polls as f64 / secs,
            rss_kib,
            hwm_kib,
            still,
            machine,
        ))
    }
    .await;

    let _ = child.kill().await;
    producer_side.close().await;
    sim.shutdown().await;
    db.drop_now().await;
    // `{ns}…` and the webhook deliveries' queue, `{ns.webhooks}…`.
    delete_matching(&options.redis_url, &format!("{{{namespace}*")).await?;
    let (idle_kib, submitted_s, cores, polls_per_s, rss_kib, hwm_kib, still, machine) = measured?;
    if still < jobs as u64 {
        anyhow::bail!("{still} of {jobs} jobs were still running at the end of the window");
    }
    let mib = |kib: u64| kib as f64 / 1024.0;
    let per_job_kib = rss_kib.saturating_sub(idle_kib) as f64 / jobs as f64;
    let result = json!({
        "name": "inflight",
        "value": round2(mib(rss_kib)),
        "unit": "MiB",
        "jobs": jobs,
        "rss_mib": round2(mib(rss_kib)),
        "peak_rss_mib": round2(mib(hwm_kib)),
        "idle_rss_mib": round2(mib(idle_kib)),
        "kib_per_job": round2(per_job_kib),
        "cpu_cores": round2(cores),
        "polls_per_s": polls_per_s.round(),
        "polls_per_s_due": (jobs as f64 / POLL_INTERVAL_S as f64).round(),
        "postgres_cores": round2(machine.postgres),
        "redis_cores": round2(machine.redis),
        "simulator_cores": round2(machine.bench),
        "poll_interval_s": POLL_INTERVAL_S,
        "window_s": window.as_secs(),
        "submitted_in_s": round2(submitted_s),
        "method": "byok worker release binary as its own process; /proc/<pid>/status VmRSS, /proc/<pid>/stat utime+stime over the window",
    });
    let human = format!(
        "inflight  {jobs} jobs at the provider on one `byok worker`: RSS {:.1} MiB (peak {:.1}, idle {:.1}: {:.2} KiB/job), {:.2} cores while polling {:.0}/s ({:.0}/s due at every {POLL_INTERVAL_S} s; {} s window; all submitted in {:.1} s)\n          meanwhile postgres {:.2}, redis {:.2}, the simulator's process {:.2} cores",
        mib(rss_kib),
        mib(hwm_kib),
        mib(idle_kib),
        per_job_kib,
        cores,
        polls_per_s,
        jobs as f64 / POLL_INTERVAL_S as f64,
        window.as_secs(),
        submitted_s,
        machine.postgres,
        machine.redis,
        machine.bench,
    );
    report(options, &result, &human);
    Ok(())
}
