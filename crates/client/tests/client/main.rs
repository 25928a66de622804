//! The client against the real API: the whole system assembled in this process by
//! `byok-app` as `byok run` does (API and worker), on loopback, with the provider
//! simulator behind it.

mod errors;
mod hooks_and_batches;
mod retries;
mod round_trip;
mod webhooks;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use byok_app::{Roles, Running};
use byok_client::{Client, ClientBuilder, RetryPolicy};
use byok_config::Settings;
use byok_core::{DEFAULT_PROJECT_ID, ProviderId, RateLimits, Scopes};
use byok_sim::{RunningSim, SimConfig, Simulator};
use byok_store::{NewToken, Store};
use secrecy::{ExposeSecret as _, SecretString};

pub const KEY_RING: &str = "1:3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c";

/// A running system: the API (with a worker beside it) and the simulated providers.
pub struct TestApi {
    pub base: String,
    /// A producer token of the default project (every scope but `admin`).
    pub token: String,
    pub store: Store,
    pub sim: RunningSim,
    pub backend: &'static str,
    /// Dropped with the test: stops the API and the worker.
    _running: Running,
    _data: Box<dyn std::any::Any + Send>,
}

impl std::fmt::Debug for TestApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestApi")
            .field("base", &self.base)
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

/// Systems on SQLite and, when available, on PostgreSQL with its queue in Redis.
pub async fn apis() -> Vec<TestApi> {
    let mut out = vec![sqlite_api_with(|_| {}).await];
    if let Some(db) = byok_testing::test_database().await
        && let Some(redis) = byok_testing::test_redis().await
    {
        let (url, queue, namespace) = (db.url.clone(), redis.url.clone(), redis.namespace.clone());
        let api = start("postgres", Box::new((db, redis)), |s| {
            s.database.url = SecretString::from(url);
            s.queue.url = SecretString::from(queue);
            s.queue.namespace = namespace;
        })
        .await;
        out.push(api);
    }
    out
}

/// A system on SQLite with some settings changed.
pub async fn sqlite_api_with(tweak: impl FnOnce(&mut Settings)) -> TestApi {
    let db = byok_testing::test_sqlite();
    let url = db.url.clone();
    start("sqlite", Box::new(db), |s| {
        s.database.url = SecretString::from(url);
        s.queue.url = SecretString::from("sqlite");
        tweak(s);
    })
    .await
}

async fn start(
    backend: &'static str,
    data: Box<dyn std::any::Any + Send>,
    tweak: impl FnOnce(&mut Settings),
) -> TestApi {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim = Simulator::new(SimConfig {
        render_time: Duration::from_millis(200),
        stability_requests_per_10s: 0,
        fal_concurrency: 0,
        ..SimConfig::default()
    })
    .start(listener)
    .await
    .unwrap();
    let videos = tempfile::tempdir().unwrap();
    let mut settings = byok_config::defaults();
    settings.encryption.keys = Some(SecretString::from(KEY_RING));
    settings.output.dir = videos.path().to_path_buf();
    settings.fetch.allow_private_networks = true;
    settings.worker.shutdown_grace = Duration::from_secs(1);
    for id in ProviderId::BUILT_IN {
        let provider = settings.providers.get_mut(id).unwrap();
        provider.base_url = match id {
            ProviderId::VEO => sim.vertex_url(),
            ProviderId::RUNWAY => sim.runway_url(),
            ProviderId::STABILITY => sim.stability_url(),
            ProviderId::FAL => sim.fal_url(),
            ProviderId::REPLICATE => sim.replicate_url(),
            _ => continue,
        };
        provider.poll_interval = Duration::from_millis(100);
        provider.rate_limit = RateLimits {
            per_minute: 1000,
            per_hour: 60_000,
        };
    }
    tweak(&mut settings);
    byok_app::parts::migrate(&settings).await.unwrap();
    settings.api.listen = "127.0.0.1:0".parse().unwrap();
    let listener = byok_app::bind_api(&settings).await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let running = byok_app::start(settings, Roles::both(listener))
        .await
        .expect("the system starts");
    let store = running.system().store().clone();
    let (_, token) = store
        .tokens()
        .create(&NewToken::new("client tests", DEFAULT_PROJECT_ID))
        .await
        .unwrap();
    TestApi {
        base,
        token: token.expose_secret().to_owned(),
        store,
        sim,
        backend,
        _running: running,
        _data: Box::new((data, videos)),
    }
}

impl TestApi {
    /// A client with the producer token and the default settings.
    pub fn client(&self) -> Client {
        Client::new(&self.base, &self.token).unwrap()
    }

    /// Settings for a client with `token`.
    pub fn builder(&self, token: &str) -> ClientBuilder {
        Client::builder(&self.base, token)
    }

    /// A client that never retries, with `token`.
    pub fn client_once(&self, token: &str) -> Client {
        self.builder(token)
            .retry(RetryPolicy::none())
            .build()
            .unwrap()
    }

    /// A new token of the default project with `scopes`; the secret.
    pub async fn token(&self, scopes: &str) -> String {
        let new = NewToken {
            scopes: Scopes::parse_list(scopes).unwrap(),
            ..NewToken::new("client tests", DEFAULT_PROJECT_ID)
        };
        let (_, secret) = self.store.tokens().create(&new).await.unwrap();
        secret.expose_secret().to_owned()
    }
}

/// The log lines written while it is held, on this thread (the client's calls in a
/// `#[tokio::test]`, whose runtime runs on the test's thread), from `debug` up.
#[allow(missing_debug_implementations)] // test support; the guard has no Debug
pub struct Logs {
    lines: Arc<Mutex<Vec<u8>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

impl Logs {
    pub fn capture() -> Logs {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let writer = Arc::clone(&lines);
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || Writer(Arc::clone(&writer)))
            .finish();
        Logs {
            lines,
            _guard: tracing::subscriber::set_default(subscriber),
        }
    }

    /// What was logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.lines.lock().unwrap()).into_owned()
    }

    /// The client's retry lines so far.
    pub fn retries(&self) -> Vec<String> {
        self.text()
            .lines()
            .filter(|l| l.contains("byok_client") && l.contains("retrying"))
            .map(str::to_owned)
            .collect()
    }
}

struct Writer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Writer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
