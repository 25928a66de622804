//! One module per subcommand.

mod api;
mod demo;
mod job;
mod keys;
mod migrate;
mod project;
mod providers;
mod queue;
mod run;
mod sim;
mod simulate;
mod token;
mod usage;
mod webhooks;
mod worker;

use std::process::ExitCode;

pub use providers::ProvidersCommand;

use crate::cli::{
    Cli, Command, JobCommand, KeysCommand, ProjectCommand, QueueCommand, TokenCommand,
    WebhooksCommand,
};

/// Runs the parsed command; `Err` is reported by `main` with the right exit code.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = cli.config.as_deref();
    match cli.command {
        Command::Keys(KeysCommand::Generate) => keys::generate(),
        Command::Keys(KeysCommand::Rewrap) => keys::rewrap(&byok_config::load(config)?).await,
        Command::Migrate => migrate::run(&byok_config::load(config)?).await,
        Command::Api => api::run(byok_config::load(config)?).await,
        Command::Worker => worker::run(byok_config::load(config)?).await,
        Command::Run(args) => run::run(config, args.simulate).await,
        Command::Demo => demo::run(config).await,
        Command::Project(ProjectCommand::Create(args)) => {
            project::create(&byok_config::load(config)?, &args).await
        }
        Command::Project(ProjectCommand::List(args)) => {
            project::list(&byok_config::load(config)?, &args).await
        }
        Command::Project(ProjectCommand::ReturnUrls(args)) => {
            project::return_urls(&byok_config::load(config)?, &args).await
        }
        Command::Token(TokenCommand::Create(args)) => {
            token::create(&byok_config::load(config)?, &args).await
        }
        Command::Token(TokenCommand::List(args)) => {
            token::list(&byok_config::load(config)?, &args).await
        }
        Command::Token(TokenCommand::Revoke(args)) => {
            token::revoke(&byok_config::load(config)?, &args).await
        }
        Command::Sim(args) => sim::run(&args).await,
        Command::Providers(ProvidersCommand::Check(args)) => providers::check(&args).await,
        Command::Queue(QueueCommand::Stats(args)) => {
            queue::stats(&byok_config::load(config)?, &args).await
        }
        Command::Queue(QueueCommand::List(args)) => {
            queue::list(&byok_config::load(config)?, &args).await
        }
        Command::Queue(QueueCommand::Retry(args)) => {
            queue::retry(&byok_config::load(config)?, &args).await
        }
        Command::Queue(QueueCommand::Purge(args)) => {
            queue::purge(&byok_config::load(config)?, &args).await
        }
        Command::Job(JobCommand::Show(args)) => job::show(&byok_config::load(config)?, &args).await,
        Command::Webhooks(WebhooksCommand::Deliveries(args)) => {
            webhooks::deliveries(&byok_config::load(config)?, &args).await
        }
        Command::Webhooks(WebhooksCommand::Retry(args)) => {
            webhooks::retry(&byok_config::load(config)?, &args).await
        }
        Command::Usage(args) => usage::report(&byok_config::load(config)?, &args).await,
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            // Without a SIGTERM handler only Ctrl-C stops the process.
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
    tracing::info!("shutdown requested");
}

/// The project a `--project NAME|ID` flag names (`None` when not given); a name no
/// project has is an error pointing at `byok project list`.
pub(crate) async fn project_flag(
    store: &byok_store::Store,
    flag: Option<&str>,
) -> anyhow::Result<Option<uuid::Uuid>> {
    let Some(name) = flag else {
        return Ok(None);
    };
    let project = store.projects().find(name).await?;
    let project = anyhow::Context::with_context(project, || {
        format!("--project: no project is named `{name}`; see `byok project list`")
    })?;
    Ok(Some(project.id))
}
