//! `byok migrate`

use std::process::ExitCode;

use anyhow::Context as _;
use byok_config::Settings;
use byok_store::{Store, StoreOptions};

pub async fn run(settings: &Settings) -> anyhow::Result<ExitCode> {
    let store = Store::connect(&settings.database.url, &StoreOptions::default())
        .await
        .context("cannot connect to the database (database.url)")?;
    let applied = store.migrate().await?;
    #[allow(clippy::print_stdout)]
    {
        println!("applied {applied} migration(s); the schema is up to date");
    }
    store.close().await;
    Ok(ExitCode::SUCCESS)
}
