//! `byok-bench`: benchmark programs. Every figure is printed beside a
//! baseline measured in the same run on the same machine, because absolute
//! numbers drift on shared machines while ratios hold.

mod queue;

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
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// No-op items/s through our queue engine and apalis-redis 1.0.0, in
    /// steady state at a small and a large backlog, and idle pickup latency.
    Queue,
    /// Every benchmark.
    All,
}

/// Options every benchmark gets.
#[derive(Debug, Clone)]
pub struct Options {
    pub quick: bool,
    pub json: bool,
    pub redis_url: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let options = Options {
        quick: cli.quick,
        json: cli.json,
        redis_url: cli
            .redis
            .or_else(|| std::env::var("REDIS_URL").ok())
            .unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned()),
    };
    match cli.command {
        Command::Queue | Command::All => queue::run(&options).await?,
    }
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
