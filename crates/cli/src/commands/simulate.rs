//! The provider simulator in process, with the settings pointed at it:
//! `byok run --simulate` and `byok demo`.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use byok_config::{Environment, Settings};
use byok_core::ProviderId;
use byok_sim::{RunningSim, SimConfig, Simulator};

/// Where the simulator keeps the service accounts it trusts.
const SERVICE_ACCOUNTS: &str = "byok-data/sim-service-accounts";

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
) -> anyhow::Result<(Settings, RunningSim)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot open a port for the simulator")?;
    let sim = Simulator::new(config)
        .service_accounts_dir(SERVICE_ACCOUNTS)
        .start(listener)
        .await
        .context("cannot start the simulator")?;
    let mut overrides = vec![(
        "BYOK__FETCH__ALLOW_PRIVATE_NETWORKS".to_owned(),
        "true".to_owned(),
    )];
    for id in ProviderId::ALL {
        let section = id.as_str().to_ascii_uppercase();
        let base_url = match id {
            ProviderId::Veo => sim.vertex_url(),
            ProviderId::Runway => sim.runway_url(),
            ProviderId::Stability => sim.stability_url(),
        };
        overrides.push((format!("BYOK__PROVIDERS__{section}__BASE_URL"), base_url));
        if id == ProviderId::Veo {
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
    // The process environment first, the simulator's addresses last: they
    // win over anything configured.
    let env = Environment::from_pairs(std::env::vars().chain(overrides));
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
    start_with(config_file, config).await
}
