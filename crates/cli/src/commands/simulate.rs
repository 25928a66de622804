//! The provider simulator in process, with the settings pointed at it:
//! `byok run --simulate` and `byok demo`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use byok_config::{Environment, Settings};
use byok_core::ProviderId;
use byok_sim::{RunningSim, SimConfig, Simulator};

/// Where the simulator keeps the service accounts it trusts, in the data directory.
const SERVICE_ACCOUNTS: &str = "sim-service-accounts";

/// Where a simulated run keeps its data.
#[derive(Debug, Clone)]
pub enum Home {
    /// Wherever the settings say (`byok run --simulate`: `./byok-data` by default).
    Configured,
    /// Only in this directory, whatever the environment says about databases, queues,
    /// keys or outputs (`byok demo`): a demo must never touch a real installation.
    Private(PathBuf),
}

/// The variables a private home ignores: they point at a real installation.
fn points_elsewhere(name: &str) -> bool {
    matches!(name, "DATABASE_URL" | "REDIS_URL" | "ENCRYPTION_KEY")
        || [
            "BYOK__DATABASE__",
            "BYOK__QUEUE__",
            "BYOK__OUTPUT__",
            "BYOK__ENCRYPTION__",
        ]
        .iter()
        .any(|prefix| name.starts_with(prefix))
}

/// How often jobs are polled at the simulator: it renders in seconds, and
/// a first run should not wait for the real providers' poll intervals.
const POLL_INTERVAL: &str = "500ms";

/// Starts the simulator on a free loopback port with `config`, then loads
/// the settings with every provider's base URL pointing at it (and private
/// networks allowed, since it is on loopback). Everything else comes from
/// the usual layers.
pub async fn start_with(
    config_file: Option<&Path>,
    config: SimConfig,
    home: &Home,
) -> anyhow::Result<(Settings, RunningSim)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot open a port for the simulator")?;
    let data_dir = match home {
        Home::Configured => PathBuf::from("byok-data"),
        Home::Private(dir) => dir.clone(),
    };
    let sim = Simulator::new(config)
        .service_accounts_dir(data_dir.join(SERVICE_ACCOUNTS))
        .start(listener)
        .await
        .context("cannot start the simulator")?;
    let mut overrides = vec![(
        "BYOK__FETCH__ALLOW_PRIVATE_NETWORKS".to_owned(),
        "true".to_owned(),
    )];
    for id in ProviderId::BUILT_IN {
        let section = id.as_str().to_ascii_uppercase();
        let base_url = match id {
            ProviderId::VEO => sim.vertex_url(),
            ProviderId::RUNWAY => sim.runway_url(),
            ProviderId::STABILITY => sim.stability_url(),
            ProviderId::FAL => sim.fal_url(),
            ProviderId::REPLICATE => sim.replicate_url(),
            // Only built-in providers are listed above.
            _ => continue,
        };
        overrides.push((format!("BYOK__PROVIDERS__{section}__BASE_URL"), base_url));
        if id == ProviderId::VEO {
            // The simulator's service accounts name its own token endpoint.
            overrides.push((
                "BYOK__PROVIDERS__VEO__TOKEN_URI_ALLOWLIST".to_owned(),
                sim.token_url(),
            ));
        }
        overrides.push((
            format!("BYOK__PROVIDERS__{section}__POLL_INTERVAL"),
            POLL_INTERVAL.to_owned(),
        ));
    }
    let mut process_env: Vec<(String, String)> = std::env::vars().collect();
    if let Home::Private(dir) = home {
        let ignored: Vec<String> = process_env
            .iter()
            .filter(|(name, _)| points_elsewhere(name))
            .map(|(name, _)| name.clone())
            .collect();
        if !ignored.is_empty() {
            eprintln!(
                "byok demo: ignoring {} (the demo keeps everything in its own temporary directory)",
                ignored.join(", ")
            );
        }
        process_env.retain(|(name, _)| !points_elsewhere(name));
        let videos = dir.join("videos");
        overrides.extend([
            (
                "BYOK__DATABASE__URL".to_owned(),
                format!("sqlite://{}", dir.join("byok.db").display()),
            ),
            ("BYOK__QUEUE__URL".to_owned(), "sqlite".to_owned()),
            ("BYOK__OUTPUT__DIR".to_owned(), videos.display().to_string()),
            (
                "BYOK__OUTPUT__URL".to_owned(),
                format!("file://{}", videos.display()),
            ),
        ]);
    }
    // The process environment first, the simulator's addresses last: they
    // win over anything configured.
    let env = Environment::from_pairs(process_env.into_iter().chain(overrides));
    let settings = byok_config::load_from(config_file, &env)?;
    tracing::info!(
        simulator = %sim.base_url(),
        "simulated providers: keys starting with sim_ are valid"
    );
    Ok((settings, sim))
}

/// [`start_with`] the simulator's defaults, rendering in two seconds.
pub async fn start(config_file: Option<&Path>) -> anyhow::Result<(Settings, RunningSim)> {
    let config = SimConfig {
        render_time: Duration::from_secs(2),
        ..SimConfig::default()
    };
    start_with(config_file, config, &Home::Configured).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_private_home_ignores_what_points_at_a_real_installation() {
        for name in [
            "DATABASE_URL",
            "REDIS_URL",
            "ENCRYPTION_KEY",
            "BYOK__DATABASE__URL",
            "BYOK__QUEUE__NAMESPACE",
            "BYOK__OUTPUT__URL",
            "BYOK__ENCRYPTION__KEYS",
        ] {
            assert!(points_elsewhere(name), "{name}");
        }
        for name in [
            "PATH",
            "RUST_LOG",
            "BYOK__WORKER__CONCURRENCY",
            "AWS_ACCESS_KEY_ID",
        ] {
            assert!(!points_elsewhere(name), "{name}");
        }
    }
}
