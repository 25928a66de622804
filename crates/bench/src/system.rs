//! The whole system assembled in this process, as `byok run` (embedded:
//! one SQLite file, one store shared by the API and the worker, the limiter
//! in memory) or as `byok api` + `byok worker` would be (distributed:
//! PostgreSQL and Redis, the API and the worker each with their own pools
//! and connections), talking to the provider simulator over loopback HTTP.
//! Its users' keys are stored through the API with `byok-client`, as a
//! producer stores them; the measured requests use `crate::http` instead.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use byok_app::{Roles, Running};
use byok_client::{Client, PutCredentials};
use byok_config::Settings;
use byok_core::{ProjectUser, ProviderId, RateLimits, Scopes};
use byok_crypto::SealContext;
use byok_sim::{RunningSim, SimConfig, Simulator};
use byok_store::{NewCredential, NewToken, Store};
use secrecy::{ExposeSecret as _, SecretString};
use uuid::Uuid;

use crate::Options;
use crate::common::{ScratchDb, delete_matching};
use crate::statements::Counting;

/// The encryption key ring of benchmark systems.
pub const KEYS: &str = "1:5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";

/// Per-key limits so high that they never bind (the limiter still runs:
/// every submit takes and settles a permit).
pub const PER_MINUTE: u32 = 1_000_000;
pub const PER_HOUR: u32 = 60_000_000;

/// Which deployment shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// PostgreSQL + Redis Streams + the Redis limiter.
    Distributed,
    /// SQLite for the store and the queue, the limiter in memory.
    Embedded,
}

impl Shape {
    pub fn name(self) -> &'static str {
        match self {
            Shape::Distributed => "distributed (PostgreSQL + Redis)",
            Shape::Embedded => "embedded (SQLite)",
        }
    }
}

/// How a benchmark wants its system.
#[derive(Debug, Clone)]
pub struct SystemOptions {
    pub shape: Shape,
    pub sim: SimConfig,
    /// `providers.*.poll_interval`.
    pub poll_interval: Duration,
    /// Start a worker beside the API.
    pub worker: bool,
    /// `worker.concurrency`.
    pub concurrency: usize,
    /// Users with a stored Runway key; jobs go round-robin to them.
    pub users: usize,
    /// The API's edge limits (`api.rate_limit` at a rate no run reaches,
    /// `api.auth_failure_limit` as by default); off: both `off`.
    pub edge_limits: bool,
    /// Price Runway's gen4.5 ($0.10/s) and give the project a monthly budget and each user
    /// a daily one, both far above what a run spends: every job is checked at enqueue,
    /// reserves on two counters before its submit and settles when it ends.
    pub budgets: bool,
}

/// A running system, assembled by `byok-app` as `byok run` (embedded: one
/// process, one store shared by the API and the worker) or as `byok api` +
/// `byok worker` would be (distributed: the API and the worker each their
/// own `byok_app::System`, with their own pools and connections).
/// [`System::stop`] ends it and removes its data.
pub struct System {
    pub api: SocketAddr,
    pub token: String,
    /// A client of the API with `token`, for the calls around the measured ones (checks
    /// after a run); the measured load goes through `crate::http`.
    pub client: Client,
    pub users: Vec<Uuid>,
    /// The project of `token` and `users`.
    pub project: Uuid,
    /// The API's store.
    pub store: Store,
    pub sim: RunningSim,
    api_role: Running,
    worker_role: Option<Running>,
    db: Option<ScratchDb>,
    namespace: String,
    redis_url: String,
    /// Videos and the SQLite file: removed when the program ends
    /// ([`crate::common::remove_at_exit`]).
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for System {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("System")
            .field("api", &self.api)
            .finish_non_exhaustive()
    }
}

/// The simulator, with its routes on a loopback port.
pub async fn simulator(config: SimConfig) -> anyhow::Result<RunningSim> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    Ok(Simulator::new(config).start(listener).await?)
}

/// The settings of a benchmark system: the built-in defaults with the
/// database, the queue, the key ring and every provider pointed at the
/// simulator, limits that never bind (the API's per-token limit stays on,
/// checked on every request, at a rate no run reaches).
pub fn settings(
    database_url: &str,
    queue_url: &str,
    namespace: &str,
    sim: &RunningSim,
    dir: &Path,
) -> Settings {
    let mut settings = byok_config::defaults();
    settings.database.url = SecretString::from(database_url);
    settings.queue.url = SecretString::from(queue_url);
    settings.queue.namespace = namespace.to_owned();
    settings.encryption.keys = Some(SecretString::from(KEYS));
    settings.output.dir = dir.join("videos");
    settings.fetch.allow_private_networks = true;
    settings.worker.shutdown_grace = Duration::from_secs(5);
    settings.api.rate_limit =
        Some(byok_config::RequestRate::parse("1000000/s, burst 1000000").expect("a valid rate"));
    for id in ProviderId::BUILT_IN {
        let p = settings.providers.get_mut(id).unwrap();
        p.base_url = match id {
            ProviderId::VEO => sim.vertex_url(),
            ProviderId::RUNWAY => sim.runway_url(),
            ProviderId::STABILITY => sim.stability_url(),
            ProviderId::FAL => sim.fal_url(),
            ProviderId::REPLICATE => sim.replicate_url(),
            // Only built-in providers are listed above.
            _ => continue,
        };
        p.rate_limit = RateLimits {
            per_minute: PER_MINUTE,
            per_hour: PER_HOUR,
        };
    }
    // The simulator's service accounts name its own token endpoint.
    settings
        .providers
        .get_mut(ProviderId::VEO)
        .unwrap()
        .token_uri_allowlist = vec![sim.token_url()];
    settings
}

/// Stores a Runway key (`sim_…`, valid at the simulator) for each of `n` new
/// users through the API (`PUT …/credentials`, checked with the simulator), as a
/// producer does; `client` acts in the users' project.
pub async fn put_users(client: &Client, n: usize) -> anyhow::Result<Vec<Uuid>> {
    let mut users = Vec::with_capacity(n);
    for i in 0..n {
        let user = Uuid::new_v4();
        let key = serde_json::json!({ "api_key": format!("sim_bench_key_{i:04}") });
        client
            .put_credentials(user, ProviderId::RUNWAY.as_str(), &PutCredentials::new(key))
            .await?;
        users.push(user);
    }
    Ok(users)
}

/// Stores a sealed Runway key (`sim_…`, valid at the simulator) for each of
/// `n` new users of `project`, as the credential API stores them, straight in
/// the store: for `inflight`, which runs no API.
pub async fn store_users(
    system: &byok_app::System,
    project: Uuid,
    n: usize,
) -> anyhow::Result<Vec<Uuid>> {
    let adapter = system.registry().get(ProviderId::RUNWAY).unwrap();
    let mut users = Vec::with_capacity(n);
    for i in 0..n {
        let user = Uuid::new_v4();
        let credentials = adapter
            .parse_credentials(&serde_json::json!({ "api_key": format!("sim_bench_key_{i:04}") }))
            .map_err(|e| anyhow::anyhow!("credentials: {}", e.field))?;
        let sealed = system.key_ring().seal(
            &SealContext::new(ProjectUser::new(project, user), ProviderId::RUNWAY),
            &credentials.to_plaintext(),
        )?;
        system
            .store()
            .credentials()
            .upsert(&NewCredential {
                owner: ProjectUser::new(project, user),
                provider: ProviderId::RUNWAY,
                sealed,
                credential_hint: credentials.hint(),
                validated_at: None,
            })
            .await?;
        users.push(user);
    }
    Ok(users)
}

/// The price of [`job_body`]'s model in budget runs: $0.10 a second.
fn bench_price() -> byok_core::ModelPrice {
    serde_json::from_value(serde_json::json!({
        "model": "gen4.5", "per_second": [{ "usd": 0.1 }],
        "source": "https://docs.dev.runwayml.com/guides/pricing/", "as_of": "2026-12-04",
    }))
    .expect("a valid price")
}

/// A monthly budget for the project and a daily one per user, none of which a run reaches.
async fn set_budgets(store: &Store, project: Uuid, users: &[Uuid]) -> anyhow::Result<()> {
    let limit = |user_id, period, dollars: i64| byok_store::StoredLimit {
        user_id,
        provider: None,
        period,
        limit: byok_core::Usd::from_micros(dollars * 1_000_000),
    };
    store
        .budgets()
        .replace(
            project,
            None,
            &[limit(None, byok_core::BudgetPeriod::Month, 10_000_000)],
        )
        .await?;
    for user in users {
        store
            .budgets()
            .replace(
                project,
                Some(*user),
                &[limit(Some(*user), byok_core::BudgetPeriod::Day, 1_000_000)],
            )
            .await?;
    }
    Ok(())
}

/// A Runway text-to-video request body for `user`.
pub fn job_body(user: Uuid) -> String {
    serde_json::json!({
        "user_id": user, "provider": "runway", "model": "gen4.5",
        "prompt": "a lighthouse at dusk, slow dolly in", "duration_seconds": 5,
    })
    .to_string()
}

impl System {
    pub async fn start(bench: &Options, options: &SystemOptions) -> anyhow::Result<System> {
        let dir = tempfile::Builder::new().prefix("byok-bench-").tempdir()?;
        let sim = simulator(options.sim.clone()).await?;
        let namespace = format!("bench-{}", Uuid::new_v4().simple());
        let (db, database_url, queue_url) = match options.shape {
            Shape::Distributed => {
                let db = ScratchDb::create(&bench.database_url).await?;
                let url = db.url.clone();
                (Some(db), url, bench.redis_url.clone())
            }
            Shape::Embedded => {
                let url = format!("sqlite://{}/data/byok.db", dir.path().display());
                (None, url, "sqlite".to_owned())
            }
        };
        let concurrency = u32::try_from(options.concurrency)?;
        let system_settings = || {
            let mut settings = settings(&database_url, &queue_url, &namespace, &sim, dir.path());
            for id in ProviderId::BUILT_IN {
                settings.providers.get_mut(id).unwrap().poll_interval = options.poll_interval;
            }
            settings.worker.concurrency = concurrency;
            if options.budgets {
                settings
                    .providers
                    .get_mut(ProviderId::RUNWAY)
                    .unwrap()
                    .prices = vec![bench_price()];
            }
            if !options.edge_limits {
                settings.api.rate_limit = None;
                settings.api.auth_failure_limit = None;
            }
            settings
        };

        // Bound as `byok api` binds (its listen backlog), on a free loopback port.
        let listener = byok_app::bind_api(&{
            let mut settings = system_settings();
            settings.api.listen = "127.0.0.1:0".parse()?;
            settings
        })
        .await?;
        let api = listener.local_addr()?;
        // Embedded: one process, one system, both roles. Distributed: the
        // worker is a system of its own, as a `byok worker` process is.
        let (api_roles, worker_settings) = match (options.shape, options.worker) {
            (Shape::Embedded, true) => (Roles::both(listener), None),
            (_, false) => (Roles::api(listener), None),
            (Shape::Distributed, true) => (Roles::api(listener), Some(system_settings())),
        };
        let api_role = byok_app::start(system_settings(), api_roles).await?;
        let worker_role = match worker_settings {
            Some(settings) => Some(byok_app::start(settings, Roles::worker("bench")).await?),
            None => None,
        };
        // A project of its own and a token scoped as a producer's would be; the
        // users' keys through a token of their own (`credentials:write`), revoked
        // once they are stored.
        let store = api_role.system().store().clone();
        let project = store.projects().create("bench").await?.id;
        let base = format!("http://{api}");
        let (keys_token, keys_secret) = store
            .tokens()
            .create(&NewToken {
                scopes: Scopes::parse_list("credentials:write")?,
                ..NewToken::new("bench keys", project)
            })
            .await?;
        let users = put_users(
            &Client::new(&base, keys_secret.expose_secret())?,
            options.users,
        )
        .await?;
        store.tokens().revoke(keys_token.id).await?;
        if options.budgets {
            set_budgets(&store, project, &users).await?;
        }
        let (_, token) = store
            .tokens()
            .create(&NewToken {
                scopes: Scopes::parse_list("jobs:read,jobs:write")?,
                ..NewToken::new("bench", project)
            })
            .await?;
        let client = Client::new(&base, token.expose_secret())?;
        Ok(System {
            api,
            token: token.expose_secret().to_owned(),
            client,
            users,
            project,
            store,
            sim,
            api_role,
            worker_role,
            db,
            namespace,
            redis_url: bench.redis_url.clone(),
            dir,
        })
    }

    /// Counts the scratch database's statements from now, when the server has the
    /// counters (`None`: embedded, or a server without `pg_stat_statements`).
    pub async fn count_statements(&self, bench: &Options) -> anyhow::Result<Option<Counting>> {
        match (&bench.statements, &self.db) {
            (Some(statements), Some(db)) => Ok(Some(statements.start(db.name(), &db.url).await?)),
            _ => Ok(None),
        }
    }

    /// The distributed shape's scratch database (`None`: embedded).
    pub fn database_url(&self) -> Option<&str> {
        self.db.as_ref().map(|db| db.url.as_str())
    }

    /// The API's system: its settings' provider registry, key ring and store.
    pub fn api_system(&self) -> &byok_app::System {
        self.api_role.system()
    }

    /// Stops the API and the worker and removes the database, the Redis
    /// keys and the files.
    pub async fn stop(self) -> anyhow::Result<()> {
        let served = self.api_role.stop().await;
        let worked = match self.worker_role {
            Some(worker) => worker.stop().await,
            None => Ok(()),
        };
        self.sim.shutdown().await;
        if let Some(db) = self.db {
            db.drop_now().await;
            // `{ns}…` and the webhook deliveries' queue, `{ns.webhooks}…`.
            delete_matching(&self.redis_url, &format!("{{{}*", self.namespace)).await?;
        }
        crate::common::remove_at_exit(self.dir);
        served?;
        worked?;
        Ok(())
    }
}
