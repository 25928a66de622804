//! `byok sim`: the provider simulator as a standalone server (crates/sim/README.md),
//! or, with `--new-service-account FILE`, a one-shot that writes a trusted
//! service account.

use std::process::ExitCode;

use anyhow::Context as _;
use byok_sim::{SimConfig, Simulator};

use crate::cli::SimArgs;

pub async fn run(args: &SimArgs) -> anyhow::Result<ExitCode> {
    let public_url = args
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", args.listen));
    if let Some(file) = &args.new_service_account {
        return new_service_account(args, &public_url, file);
    }

    let mut config = SimConfig::default();
    if let Some(render_time) = args.render_time {
        config.render_time = render_time;
    }
    if let Some(share) = args.failure_rate {
        config.failure_rate = share;
    }
    if let Some(share) = args.throttle_rate {
        config.throttle_rate = share;
    }
    if let Some(lifetime) = args.token_lifetime {
        config.token_lifetime = lifetime;
    }
    config.validate().context("invalid simulator setting")?;

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {} (--listen)", args.listen))?;
    let mut simulator = Simulator::new(config).service_accounts_dir(&args.service_accounts);
    if let Some(url) = &args.public_url {
        simulator = simulator.public_url(url);
    }
    if let Some(addr) = args.tls_listen {
        simulator = simulator.tls(addr);
    }
    let sim = simulator
        .start(listener)
        .await
        .context("cannot start the simulator")?;
    if let (Some(file), Some(pem)) = (&args.tls_ca_file, sim.tls_ca_pem()) {
        std::fs::write(file, pem)
            .with_context(|| format!("cannot write {} (--tls-ca-file)", file.display()))?;
    }
    tracing::info!(
        runway = %sim.runway_url(),
        stability = %sim.stability_url(),
        vertex = %sim.vertex_url(),
        fal = %sim.fal_url(),
        replicate = %sim.replicate_url(),
        luma = %sim.luma_url(),
        synthesia = %sim.synthesia_url(),
        acme = %sim.acme_url(),
        fal_tls = sim.tls_url().unwrap_or("-"),
        token = %sim.token_url(),
        service_accounts = %args.service_accounts.display(),
        "simulator ready; keys starting with sim_ are valid"
    );
    super::shutdown_signal().await;
    sim.shutdown().await;
    tracing::info!("simulator stopped");
    Ok(ExitCode::SUCCESS)
}

/// Writes a fresh service account to `file` and into the trusted directory;
/// prints its `client_email`.
#[allow(clippy::print_stdout)]
fn new_service_account(
    args: &SimArgs,
    public_url: &str,
    file: &std::path::Path,
) -> anyhow::Result<ExitCode> {
    let account = byok_sim::generate_service_account(public_url, &args.project_id, None)
        .context("cannot make a service account")?;
    let trusted =
        byok_sim::save_service_account(&account, &args.service_accounts).with_context(|| {
            format!(
                "cannot write into {} (--service-accounts)",
                args.service_accounts.display()
            )
        })?;
    let text = serde_json::to_string_pretty(&account)?;
    write_private(file, &text).with_context(|| format!("cannot write {}", file.display()))?;
    println!("{}", account["client_email"].as_str().unwrap_or_default());
    tracing::info!(file = %file.display(), trusted = %trusted.display(), "service account written");
    Ok(ExitCode::SUCCESS)
}

/// Writes `text` to `path`, readable by the owner only: it holds a private key.
fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")
}
