//! `byok api`: the HTTP API of the distributed shape.

use std::process::ExitCode;

use byok_app::System;
use byok_config::Settings;

pub async fn run(settings: Settings) -> anyhow::Result<ExitCode> {
    let listener = byok_app::bind_api(&settings).await?;
    let system = System::open(settings).await?;
    let served = system.serve_api(listener, super::shutdown_signal()).await;
    system.close().await;
    served?;
    tracing::info!("API stopped");
    Ok(ExitCode::SUCCESS)
}
