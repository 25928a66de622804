//! `byok migrate`

use std::process::ExitCode;

use byok_config::Settings;

pub async fn run(settings: &Settings) -> anyhow::Result<ExitCode> {
    let applied = byok_app::parts::migrate(settings).await?;
    #[allow(clippy::print_stdout)]
    {
        println!("applied {applied} migration(s); the schema is up to date");
    }
    Ok(ExitCode::SUCCESS)
}
