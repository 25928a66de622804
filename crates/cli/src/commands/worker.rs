//! `byok worker`: runs jobs from the shared queue (distributed shape).

use std::process::ExitCode;

use byok_app::System;
use byok_config::Settings;

pub async fn run(settings: Settings) -> anyhow::Result<ExitCode> {
    let system = System::open(settings).await?;
    let metrics = system.serve_worker_metrics().await?;
    let worked = system.run_worker("worker", super::shutdown_signal()).await;
    if let Some(metrics) = metrics {
        metrics.abort();
    }
    system.close().await;
    worked?;
    Ok(ExitCode::SUCCESS)
}
