//! `byok`: one binary for every role of the system (docs/architecture.md).

mod cli;
mod commands;
mod table;
mod telemetry;

use std::process::ExitCode;

use clap::Parser as _;

/// Exit code for a bad or missing setting (64 and above are configuration errors).
const EXIT_CONFIG: u8 = 64;
/// Exit code for a runtime failure.
const EXIT_FAILURE: u8 = 1;

/// mimalloc rather than glibc's allocator: `perf` on a running system put glibc's `malloc`
/// and `free` at 14 % of the process's CPU (many small, short-lived allocations from
/// requests, queue items and JSON, freed on other threads). The benchmarks run the system
/// with the allocator the binary ships (docs/decisions.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    telemetry::init(cli.command.default_log_level());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => code,
        Err(error) => {
            // A configuration error is the operator's to fix: say which
            // setting, and use the distinct exit code scripts can test for.
            let config = error
                .downcast_ref::<byok_config::ConfigError>()
                .map(ToString::to_string)
                .or_else(|| {
                    error
                        .downcast_ref::<byok_app::AppError>()
                        .filter(|e| e.is_configuration())
                        .map(ToString::to_string)
                });
            if let Some(config) = config {
                eprintln!("error: {config}");
                return ExitCode::from(EXIT_CONFIG);
            }
            eprintln!("error: {error:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}
