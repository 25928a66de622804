//! `byok api`: the HTTP API of the distributed shape.

use std::process::ExitCode;

use anyhow::Context as _;
use byok_api::{AppState, QueueProbe};
use byok_config::Settings;
use secrecy::ExposeSecret as _;

use crate::context;

pub async fn run(settings: &Settings) -> anyhow::Result<ExitCode> {
    let key_ring = context::key_ring(settings)?;
    let providers = context::providers(settings)?;
    let store = context::open_store(settings).await?;
    let queue = QueueProbe::from_url(settings.queue.url.expose_secret())
        .map_err(|_| byok_config_error("queue.url", "is not a valid Redis URL"))?;

    let state = AppState::new(
        store.clone(),
        key_ring,
        providers,
        queue,
        settings.api.max_body_bytes,
    );
    let listener = tokio::net::TcpListener::bind(settings.api.listen)
        .await
        .with_context(|| format!("cannot listen on {} (api.listen)", settings.api.listen))?;
    let address = listener.local_addr()?;
    tracing::info!(%address, shape = ?settings.shape(), "API listening");

    byok_api::serve(
        listener,
        byok_api::app(state),
        super::shutdown_signal(),
        settings.worker.shutdown_grace,
    )
    .await
    .context("the API server failed")?;
    store.close().await;
    tracing::info!("API stopped");
    Ok(ExitCode::SUCCESS)
}

fn byok_config_error(setting: &str, message: &str) -> anyhow::Error {
    anyhow::Error::new(byok_config::ConfigError {
        setting: setting.to_owned(),
        message: message.to_owned(),
    })
}
