//! `byok run [--simulate]`: the API and a worker in one process (the
//! embedded shape: SQLite for everything, the rate limiter in memory).
//! `--simulate` starts the provider simulator in process first and points
//! every provider at it.

use std::path::Path;
use std::process::ExitCode;

use byok_app::Roles;

pub async fn run(config: Option<&Path>, simulate: bool) -> anyhow::Result<ExitCode> {
    let (settings, sim) = if simulate {
        let (settings, sim) = super::simulate::start(config).await?;
        (settings, Some(sim))
    } else {
        (byok_config::load(config)?, None)
    };
    let listener = byok_app::bind_api(&settings).await?;
    let running = byok_app::start(settings, Roles::both(listener)).await?;
    tracing::info!("API and worker running in this process");
    super::shutdown_signal().await;
    let stopped = running.stop().await;
    if let Some(sim) = sim {
        sim.shutdown().await;
    }
    stopped?;
    Ok(ExitCode::SUCCESS)
}
