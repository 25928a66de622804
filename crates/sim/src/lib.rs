#![doc = include_str!("../README.md")]
// Handlers return early answers as `Err(Response)`: large, but moved once,
// and the answer is the point.
#![allow(clippy::result_large_err)]

mod acme;
mod clock;
mod config;
mod control;
mod fal;
mod http;
mod interactions;
mod luma;
mod oauth;
mod replicate;
mod runway;
mod service_account;
mod stability;
mod state;
mod stats;
mod synthesia;
mod tls;
mod vertex;
mod video;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use clock::Clock;
pub use config::{ConfigError, SimConfig};
pub use control::Fault;
pub use service_account::{generate_service_account, save_service_account};
pub use stats::{
    AcceptedSubmit, Counters, KeyStats, ProviderStats, REQUEST_TIMES_KEPT, Stats, key_id,
};

use oauth::TrustStore;
use state::Shared;

/// Why the simulator could not start or make a service account.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A file or socket operation failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A service account could not be made, read or trusted.
    #[error("service account: {0}")]
    ServiceAccount(String),
    /// A knob is out of range.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// A simulator to start: the knobs plus what is fixed for its lifetime.
#[derive(Debug, Clone, Default)]
pub struct Simulator {
    config: SimConfig,
    public_url: Option<String>,
    service_accounts_dir: Option<PathBuf>,
    clock: Clock,
    tls: Option<SocketAddr>,
}

impl Simulator {
    /// A simulator with these knobs, the wall clock, no trusted directory,
    /// and its listening address as public URL.
    pub fn new(config: SimConfig) -> Simulator {
        Simulator {
            config,
            ..Simulator::default()
        }
    }

    /// The base of the absolute URLs it hands out (Runway outputs, the
    /// `token_uri` of new service accounts), e.g. `http://sim:9090`.
    /// Default `http://<listening address>` (127.0.0.1 when listening on
    /// all interfaces).
    pub fn public_url(mut self, url: impl Into<String>) -> Simulator {
        self.public_url = Some(url.into().trim_end_matches('/').to_owned());
        self
    }

    /// Trust the service-account JSON files of `dir` (read at start and
    /// again when an unknown `iss` arrives); new accounts made through
    /// [`RunningSim::new_service_account`] are also written there.
    pub fn service_accounts_dir(mut self, dir: impl Into<PathBuf>) -> Simulator {
        self.service_accounts_dir = Some(dir.into());
        self
    }

    /// Also listen on `addr` with TLS, serving fal's queue host at its root (as
    /// `queue.fal.run` does) and its REST host under `/fal-rest`, for clients that speak only
    /// https (the official `fal-client`). The certificate is made at start for 127.0.0.1, ::1
    /// and localhost and signed by a CA of the simulator's own:
    /// [`RunningSim::tls_ca_pem`] is what a client trusts.
    pub fn tls(mut self, addr: SocketAddr) -> Simulator {
        self.tls = Some(addr);
        self
    }

    /// Use this clock (e.g. [`Clock::manual`] to step through job states).
    pub fn clock(mut self, clock: Clock) -> Simulator {
        self.clock = clock;
        self
    }

    /// Serves on `listener` until the returned handle is shut down or
    /// dropped.
    pub async fn start(self, listener: TcpListener) -> Result<RunningSim, SimError> {
        self.config.validate()?;
        let mut addr = listener.local_addr()?;
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        let local_addr = listener.local_addr()?;
        let public_url = self.public_url.unwrap_or_else(|| format!("http://{addr}"));
        let trust = TrustStore::new(self.service_accounts_dir);
        let shared = Arc::new(Shared::new(self.config, self.clock, public_url, trust));
        let initial = oauth::rescan(&shared).await;
        tracing::info!(
            address = %local_addr,
            public_url = %shared.public_url,
            trusted_service_accounts = initial,
            "provider simulator listening"
        );
        let tls = match self.tls {
            Some(addr) => Some(TlsServer::start(&shared, addr).await?),
            None => None,
        };
        let (tx, rx) = oneshot::channel::<()>();
        let app = router(Arc::clone(&shared));
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async {
                let _ = rx.await;
            });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "the provider simulator stopped");
            }
        });
        Ok(RunningSim {
            shared,
            local_addr,
            shutdown: Some(tx),
            task: Some(task),
            tls,
        })
    }
}

/// Starts a simulator with `config` on `listener` (see [`Simulator`] for
/// the other settings).
pub async fn start(config: SimConfig, listener: TcpListener) -> Result<RunningSim, SimError> {
    Simulator::new(config).start(listener).await
}

fn router(shared: Arc<Shared>) -> Router {
    let fal_base = format!("{}/fal", shared.public_url);
    Router::new()
        .nest("/runway", runway::router())
        .nest("/stability", stability::router())
        .nest("/vertex", vertex::router())
        .nest("/replicate", replicate::router())
        .nest("/luma", luma::router())
        .nest("/synthesia", synthesia::router())
        .nest("/acme", acme::router())
        .nest("/fal", fal::router(fal_base))
        .nest("/fal-rest", fal::rest_router())
        .route("/fal-media/files/{id}/{file}", get(fal::file))
        .route("/oauth2/token", post(oauth::token))
        .route(
            "/storage/storage/v1/b/{bucket}/o/{*object}",
            get(vertex::download),
        )
        .route("/files/{file}", get(runway::file))
        .route("/_sim/stats", get(control::stats))
        .route(
            "/_sim/config",
            get(control::get_config).put(control::put_config),
        )
        .route(
            "/_sim/faults",
            get(control::get_faults).post(control::post_fault),
        )
        .route("/_sim/reset", post(control::reset))
        .route("/_sim/service-accounts", get(control::service_accounts))
        .fallback(control::not_found)
        // Token requests and knob changes are small.
        .layer(DefaultBodyLimit::max(64 * 1024))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&shared),
            note_request,
        ))
        .with_state(shared)
}

/// Notes every request's arrival under its provider (`ProviderStats::request_times_ms`),
/// before any handler: what a client's pacing sends is what the log shows. A pending
/// [`Fault`] for the provider answers the request instead of its handler.
async fn note_request(
    axum::extract::State(shared): axum::extract::State<Arc<Shared>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let path = request.uri().path();
    let provider = if path.starts_with("/runway/") || path.starts_with("/files/") {
        Some(stats::Provider::Runway)
    } else if path.starts_with("/stability/") {
        Some(stats::Provider::Stability)
    } else if path.starts_with("/vertex/") || path.starts_with("/storage/") {
        Some(stats::Provider::Vertex)
    } else if path.starts_with("/replicate/") {
        Some(stats::Provider::Replicate)
    } else if path.starts_with("/luma/") {
        Some(stats::Provider::Luma)
    } else if path.starts_with("/synthesia/") {
        Some(stats::Provider::Synthesia)
    } else if path.starts_with("/acme/") {
        Some(stats::Provider::Acme)
    } else if ["/fal/", "/fal-rest/", "/fal-media/"]
        .iter()
        .any(|prefix| path.starts_with(prefix))
    {
        Some(stats::Provider::Fal)
    } else {
        None
    };
    if let Some(provider) = provider {
        shared.record_request(provider);
        if let Some(fault) = shared.faults.take(provider) {
            return fault;
        }
    }
    next.run(request).await
}

/// A running simulator. Stops when dropped, or on
/// [`shutdown`](RunningSim::shutdown), which also waits for open requests.
#[derive(Debug)]
pub struct RunningSim {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    tls: Option<TlsServer>,
}

/// The TLS listener of a running simulator ([`Simulator::tls`]).
#[derive(Debug)]
struct TlsServer {
    url: String,
    ca_pem: String,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TlsServer {
    async fn start(shared: &Arc<Shared>, addr: SocketAddr) -> Result<TlsServer, SimError> {
        let listener = TcpListener::bind(addr).await?;
        let mut local = listener.local_addr()?;
        if local.ip().is_unspecified() {
            local.set_ip(match local {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        let url = format!("https://{local}");
        let identity = tls::identity()?;
        let listener = tls::TlsListener::new(listener, &identity)?;
        let app = fal::tls_router(Arc::clone(shared), url.clone());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async {
                let _ = rx.await;
            });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "the simulator's TLS listener stopped");
            }
        });
        tracing::info!(%url, "provider simulator listening with TLS (fal's queue host)");
        Ok(TlsServer {
            url,
            ca_pem: identity.ca_pem,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl RunningSim {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The public URL, e.g. `http://127.0.0.1:9090` (no trailing slash).
    pub fn base_url(&self) -> &str {
        &self.shared.public_url
    }

    /// Base URL for a Runway client: `{base}/runway`.
    pub fn runway_url(&self) -> String {
        format!("{}/runway", self.base_url())
    }

    /// Base URL for a Stability client: `{base}/stability`.
    pub fn stability_url(&self) -> String {
        format!("{}/stability", self.base_url())
    }

    /// API root for a Vertex AI client: `{base}/vertex`.
    pub fn vertex_url(&self) -> String {
        format!("{}/vertex", self.base_url())
    }

    /// Base URL for fal's queue API: `{base}/fal` (its other hosts are served beside it,
    /// crates/sim/README.md).
    pub fn fal_url(&self) -> String {
        format!("{}/fal", self.base_url())
    }

    /// The TLS listener's base URL, `https://127.0.0.1:{port}` (fal's queue host at its
    /// root; `/fal-rest` beside it), when started with [`Simulator::tls`]. For fal's client:
    /// `FAL_QUEUE_RUN_HOST` = this without `https://`.
    pub fn tls_url(&self) -> Option<&str> {
        self.tls.as_ref().map(|t| t.url.as_str())
    }

    /// The PEM of the CA that signed the TLS listener's certificate: what a client trusts
    /// (`SSL_CERT_FILE` for Python), when started with [`Simulator::tls`].
    pub fn tls_ca_pem(&self) -> Option<&str> {
        self.tls.as_ref().map(|t| t.ca_pem.as_str())
    }

    /// Base URL for a Replicate client: `{base}/replicate`.
    pub fn replicate_url(&self) -> String {
        format!("{}/replicate", self.base_url())
    }

    /// Base URL for a Synthesia client, the counterpart of `https://api.synthesia.io`:
    /// `{base}/synthesia` (its routes follow: `/v2/videos`, …; videos download from
    /// `{base}/synthesia/download/{id}/video.mp4`).
    pub fn synthesia_url(&self) -> String {
        format!("{}/synthesia", self.base_url())
    }

    /// Base URL for a Luma Agents client, the counterpart of `https://agents.lumalabs.ai/v1`:
    /// `{base}/luma/v1` (the official client's `base_url` / `LUMA_BASE_URL`; it appends
    /// `/generations`). Outputs download from `{base}/luma/outputs/…` (presigned, no auth).
    pub fn luma_url(&self) -> String {
        format!("{}/luma/v1", self.base_url())
    }

    /// Base URL for the Acme test API (the simulator's own protocol for declarative
    /// definitions, `definitions/acme.toml`): `{base}/acme/v1`. Videos download from
    /// `{base}/acme/files/{id}/video.mp4` (no auth).
    pub fn acme_url(&self) -> String {
        format!("{}/acme/v1", self.base_url())
    }

    /// The OAuth token endpoint: `{base}/oauth2/token`.
    pub fn token_url(&self) -> String {
        format!("{}/oauth2/token", self.base_url())
    }

    /// Base URL for Cloud Storage downloads: `{base}/storage` (+ the JSON
    /// API path `/storage/v1/b/{bucket}/o/{object}?alt=media`).
    pub fn storage_url(&self) -> String {
        format!("{}/storage", self.base_url())
    }

    /// What the simulator has seen so far.
    pub async fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// The knobs in force.
    pub fn config(&self) -> SimConfig {
        (*self.shared.config()).clone()
    }

    /// Replaces the knobs (jobs already submitted keep theirs).
    pub fn set_config(&self, config: SimConfig) -> Result<(), ConfigError> {
        config.validate()?;
        self.shared.set_config(config);
        Ok(())
    }

    /// Answers `fault.count` of the provider's next requests with `fault` instead of
    /// serving them (after any faults already waiting for it); [`reset`](RunningSim::reset)
    /// drops the pending ones. Refused: an unknown provider, a status outside 200–599, a
    /// count outside 1–1000.
    pub fn inject_fault(&self, fault: Fault) -> Result<(), ConfigError> {
        self.shared.faults.add(fault)
    }

    /// Forgets jobs, tokens, stats, pending faults and throttling history.
    pub fn reset(&self) {
        self.shared.reset();
    }

    /// The simulator's clock (advance it when it is a manual one).
    pub fn clock(&self) -> &Clock {
        &self.shared.clock
    }

    /// A fresh service account, trusted at once (and saved into the trusted
    /// directory when there is one). Returns the JSON a client loads, with
    /// `token_uri` pointing at this simulator.
    pub fn new_service_account(&self, project_id: &str) -> Result<serde_json::Value, SimError> {
        self.new_service_account_with_id(project_id, None)
    }

    /// [`new_service_account`](RunningSim::new_service_account) with a chosen
    /// account id (`client_email` = `{id}@{project}.iam.gserviceaccount.com`);
    /// an id starting with `sim-throttled` gets one 429 first.
    pub fn new_service_account_with_id(
        &self,
        project_id: &str,
        account_id: Option<&str>,
    ) -> Result<serde_json::Value, SimError> {
        let account = generate_service_account(self.base_url(), project_id, account_id)?;
        self.trust_service_account(&account)?;
        if let Some(dir) = self.shared.trust.dir() {
            save_service_account(&account, dir)?;
        }
        Ok(account)
    }

    /// Trusts a service-account JSON made elsewhere (its public key is
    /// derived from its private key).
    pub fn trust_service_account(&self, account: &serde_json::Value) -> Result<(), SimError> {
        self.shared.trust.trust(service_account::parse(account)?);
        Ok(())
    }

    /// Stops accepting connections and waits (up to 5 s) for open requests.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(tls) = self.tls.as_mut() {
            tls.stop();
            if let Some(mut task) = tls.task.take()
                && tokio::time::timeout(Duration::from_secs(5), &mut task)
                    .await
                    .is_err()
            {
                task.abort();
            }
        }
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(Duration::from_secs(5), &mut task)
                .await
                .is_err()
        {
            task.abort();
        }
    }
}

impl Drop for RunningSim {
    /// Stops accepting connections at once; open connections finish the
    /// request they are serving and close (the server task ends by itself).
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(tls) = self.tls.as_mut() {
            tls.stop();
        }
    }
}
