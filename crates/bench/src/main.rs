//! `byok-bench`: benchmark programs. Every figure is printed beside a
//! baseline measured in the same run on the same machine where there is
//! one, because absolute numbers drift on shared machines while ratios hold.

mod common;
mod crypto;
mod dashboard;
mod enqueue;
mod http;
mod inflight;
mod limiter;
mod pipeline;
mod poll_cpu;
mod queue;
mod statements;
mod system;
mod webhooks;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Benchmarks of byok.
#[derive(Debug, Parser)]
#[command(name = "byok-bench", version, about)]
struct Cli {
    /// Sizes that finish quickly (CI-friendly); the full sizes otherwise.
    #[arg(long, global = true)]
    quick: bool,
    /// One JSON object per benchmark per line instead of a table.
    #[arg(long, global = true)]
    json: bool,
    /// Redis to measure against (default: REDIS_URL, else 127.0.0.1:6379).
    #[arg(long, global = true)]
    redis: Option<String>,
    /// PostgreSQL server to create scratch databases on (default:
    /// DATABASE_URL, else postgres://postgres@127.0.0.1:5432/postgres).
    #[arg(long, global = true)]
    database: Option<String>,
    /// `dashboard`: print `EXPLAIN (ANALYZE, BUFFERS)` of each dashboard query on the loaded
    /// table to stderr (the plans of docs/dashboard.md).
    #[arg(long, global = true)]
    explain: bool,
    /// `queue`: the partition count measured beside one partition, on the one Redis and on a
    /// Redis Cluster started for the run.
    #[arg(long, global = true, default_value_t = 4)]
    partitions: usize,
    /// The `byok` binary `inflight` runs as its worker process (default:
    /// `byok` beside this program, i.e. target/production/byok).
    #[arg(long, global = true)]
    byok_bin: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand)]
enum Command {
    /// No-op items/s through our queue engine, apalis-redis 1.0.0 and
    /// bullmq-official 1.4.4, in steady state at a small and a large
    /// backlog, and idle pickup latency.
    Queue,
    /// End-to-end jobs/s: HTTP enqueue → queue → worker → submit → poll →
    /// succeeded, against the in-process simulator at zero render time.
    Pipeline,
    /// `POST /v1/jobs` requests/s and latency under concurrent load.
    Enqueue,
    /// Memory and CPU of one `byok worker` process holding many jobs in
    /// flight at a slow provider.
    Inflight,
    /// Many workers on one key's quota: windows over quota and quota used.
    Limiter,
    /// Credential seal+open per second.
    Crypto,
    /// CPU per status poll of a declarative provider (Luma) beside a
    /// built-in one (Runway), same registry, simulator and run.
    PollCpu,
    /// Webhook deliveries/s to a loopback receiver beside the plain POST rate of the same
    /// client, and transition → delivery latency at low load.
    Webhooks,
    /// p50/p99 of the operator dashboard's overview and filtered jobs pages on 1,000,000
    /// jobs in PostgreSQL, beside an authenticated one-row read on the same server.
    Dashboard,
    /// Every benchmark, in the order above.
    All,
}

/// Options every benchmark gets.
#[derive(Debug, Clone)]
pub struct Options {
    pub quick: bool,
    pub json: bool,
    pub redis_url: String,
    pub database_url: String,
    pub byok_bin: Option<PathBuf>,
    pub explain: bool,
    pub partitions: usize,
    /// The server's statement counters, when it has them.
    pub statements: Option<statements::Statements>,
}

/// A PostgreSQL server of the benchmark's own (stopped when it is dropped, at the end),
/// preloading `pg_stat_statements` so that statements per job can be counted; durability as
/// a production server has it (`fsync` on). Without the server binaries: the one on
/// 127.0.0.1:5432.
async fn own_postgres() -> (String, Option<byok_testing::PostgresServer>) {
    let started = tokio::task::spawn_blocking(|| {
        byok_testing::spawn_postgres_with(&[
            "shared_preload_libraries=pg_stat_statements",
            "pg_stat_statements.track=all",
            "max_connections=300",
        ])
    })
    .await;
    let why = match started {
        Ok(Ok(server)) => return (server.url.clone(), Some(server)),
        Ok(Err(why)) => why,
        Err(e) => e.to_string(),
    };
    common::progress(&format!(
        "cannot start a PostgreSQL server of the benchmark's own ({why}): using 127.0.0.1:5432"
    ));
    (
        "postgres://postgres@127.0.0.1:5432/postgres".to_owned(),
        None,
    )
}

/// mimalloc rather than glibc's allocator: `perf` on a running system put glibc's `malloc`
/// and `free` at 14 % of the process's CPU (many small, short-lived allocations from
/// requests, queue items and JSON, freed on other threads). The benchmarks run the system
/// with the allocator the binary ships (docs/decisions.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Declared first, so dropped last: after the server below has stopped.
    let _finished_runs = common::RemoveFinishedRunsAtExit;
    // Kept until the end: dropping it stops the benchmark's own server.
    let (database_url, _own_server) = match cli.database.clone().or_else(|| {
        std::env::var("DATABASE_URL")
            .ok()
            .filter(|u| u.starts_with("postgres"))
    }) {
        Some(url) => (url, None),
        None => own_postgres().await,
    };
    let options = Options {
        quick: cli.quick,
        json: cli.json,
        redis_url: cli
            .redis
            .or_else(|| std::env::var("REDIS_URL").ok())
            .unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned()),
        database_url,
        byok_bin: cli.byok_bin,
        explain: cli.explain,
        partitions: cli.partitions,
        statements: None,
    };
    let options = Options {
        statements: statements::Statements::on(&options.database_url).await,
        ..options
    };
    if options.statements.is_none() {
        common::progress(
            "PostgreSQL statements per job are not counted: the server does not preload pg_stat_statements",
        );
    }
    common::init_logs();
    let all = cli.command == Command::All;
    let started = std::time::Instant::now();
    if all || cli.command == Command::Queue {
        queue::run(&options).await?;
    }
    if all || cli.command == Command::Pipeline {
        pipeline::run(&options).await?;
    }
    if all || cli.command == Command::Enqueue {
        enqueue::run(&options).await?;
    }
    if all || cli.command == Command::Inflight {
        inflight::run(&options).await?;
    }
    if all || cli.command == Command::Limiter {
        limiter::run(&options).await?;
    }
    if all || cli.command == Command::Crypto {
        crypto::run(&options)?;
    }
    if all || cli.command == Command::PollCpu {
        poll_cpu::run(&options).await?;
    }
    if all || cli.command == Command::Webhooks {
        webhooks::run(&options).await?;
    }
    if all || cli.command == Command::Dashboard {
        dashboard::run(&options).await?;
    }
    common::progress(&format!("done in {:.1} s", started.elapsed().as_secs_f64()));
    Ok(())
}

/// Prints one result: a JSON line, or a human line.
#[allow(clippy::print_stdout)]
pub fn report(options: &Options, result: &serde_json::Value, human: &str) {
    if options.json {
        println!("{result}");
    } else {
        println!("{human}");
    }
}
