//! The API over real HTTP, on a real store, with the providers played by
//! local mock servers that record every request they get.

mod batches;
mod budgets;
mod connect;
mod credentials;
mod dashboard;
mod edge;
mod enqueue;
mod errors;
mod fallbacks;
mod health;
mod job_events;
mod openapi;
mod providers;
mod recent_answers;
mod routing;
mod tenancy;
mod usage;
mod webhooks;

use std::time::Duration;

use byok_app::{Roles, Running};
use byok_config::Settings;
use byok_core::{DEFAULT_PROJECT_ID, ProviderId, RateLimits, Scopes};
use byok_store::{NewToken, Store};
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::{Value, json};
use uuid::Uuid;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// A running API with its own store and mock providers, assembled by
/// `byok-app` as `byok api` is.
#[derive(Debug)]
pub struct TestApi {
    pub base: String,
    pub http: reqwest::Client,
    pub token: String,
    pub store: Store,
    /// The API's budgets (to hold amounts as a worker would).
    pub budgets: byok_budgets::Budgets,
    /// The API's queue engine (to make queue items as workers would).
    pub engine: std::sync::Arc<dyn byok_queue::Engine>,
    /// The rate limiter (to take permits as workers would).
    pub limiter: std::sync::Arc<dyn byok_ratelimit::RateLimiter>,
    pub db_url: String,
    pub runway: MockServer,
    pub stability: MockServer,
    pub backend: &'static str,
    /// Dropped with the API: its stop signal goes with it.
    _running: Running,
    _db: DbGuard,
}

#[derive(Debug)]
#[allow(dead_code)] // held for Drop
enum DbGuard {
    Sqlite(byok_testing::TestSqlite),
    Postgres(byok_testing::TestDatabase, byok_testing::TestRedis),
}

pub const KEY_RING: &str = "1:1111111111111111111111111111111111111111111111111111111111111111";

/// APIs on SQLite and, when available, PostgreSQL (with its queue in Redis).
pub async fn apis() -> Vec<TestApi> {
    let mut out = vec![sqlite_api().await];
    if let Some(db) = byok_testing::test_database().await
        && let Some(redis) = byok_testing::test_redis().await
    {
        let url = db.url.clone();
        let (queue_url, namespace) = (redis.url.clone(), redis.namespace.clone());
        out.push(
            start(&url, DbGuard::Postgres(db, redis), "postgres", |s| {
                s.queue.url = SecretString::from(queue_url);
                s.queue.namespace = namespace;
            })
            .await,
        );
    }
    out
}

pub async fn sqlite_api() -> TestApi {
    sqlite_api_with(|_| {}).await
}

/// An API on SQLite with some settings changed.
pub async fn sqlite_api_with(tweak: impl FnOnce(&mut Settings)) -> TestApi {
    let db = byok_testing::test_sqlite();
    let url = db.url.clone();
    start(&url, DbGuard::Sqlite(db), "sqlite", tweak).await
}

/// The settings of a test API: `db_url`, the test key ring, Runway and
/// Stability at `runway` and `stability`, Veo at a port nothing listens on,
/// 5/min and 50/h per key, 5 s per provider request.
pub fn settings(db_url: &str, runway: &MockServer, stability: &MockServer) -> Settings {
    let mut settings = byok_config::defaults();
    settings.database.url = SecretString::from(db_url);
    settings.encryption.keys = Some(SecretString::from(KEY_RING));
    settings.fetch.allow_private_networks = true;
    settings.worker.request_timeout = Duration::from_secs(5);
    settings.worker.shutdown_grace = Duration::from_secs(1);
    // Every request reads its token and keys: tests change rows behind the API's back (a
    // revoked or expired token) and expect the next request to see it. The recent answers
    // have tests of their own (`recent_answers.rs`).
    settings.api.cache_ttl = Duration::ZERO;
    for (id, base_url) in [
        (ProviderId::VEO, "http://127.0.0.1:9".to_owned()),
        (ProviderId::RUNWAY, runway.uri()),
        (ProviderId::STABILITY, stability.uri()),
        (ProviderId::FAL, "http://127.0.0.1:9".to_owned()),
        (ProviderId::REPLICATE, "http://127.0.0.1:9".to_owned()),
    ] {
        let provider = settings.providers.get_mut(id).unwrap();
        provider.base_url = base_url;
        provider.rate_limit = RateLimits {
            per_minute: 5,
            per_hour: 50,
        };
    }
    settings
}

async fn start(
    db_url: &str,
    guard: DbGuard,
    backend: &'static str,
    tweak: impl FnOnce(&mut Settings),
) -> TestApi {
    let runway = MockServer::start().await;
    let stability = MockServer::start().await;
    let mut settings = settings(db_url, &runway, &stability);
    tweak(&mut settings);
    // What `byok migrate` does before a release (SQLite migrates at start).
    byok_app::parts::migrate(&settings).await.unwrap();
    settings.api.listen = "127.0.0.1:0".parse().unwrap();
    let listener = byok_app::bind_api(&settings).await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let running = byok_app::start(settings, Roles::api(listener))
        .await
        .expect("the API starts");
    let store = running.system().store().clone();
    let budgets = running.system().budgets().clone();
    let engine = std::sync::Arc::clone(running.system().engine());
    let limiter = std::sync::Arc::clone(running.system().limiter());
    let (_, token) = store
        .tokens()
        .create(&NewToken::new("tests", DEFAULT_PROJECT_ID))
        .await
        .unwrap();
    TestApi {
        base,
        http: reqwest::Client::new(),
        token: token.expose_secret().to_owned(),
        store,
        budgets,
        engine,
        limiter,
        db_url: db_url.to_owned(),
        runway,
        stability,
        backend,
        _running: running,
        _db: guard,
    }
}

impl TestApi {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A new project's id.
    pub async fn project(&self, name: &str) -> Uuid {
        self.store.projects().create(name).await.unwrap().id
    }

    /// A token of `project` with `scopes`; the secret.
    pub async fn token(&self, project: Uuid, scopes: Scopes) -> String {
        let new = NewToken {
            scopes,
            ..NewToken::new("tests", project)
        };
        let (_, secret) = self.store.tokens().create(&new).await.unwrap();
        secret.expose_secret().to_owned()
    }

    /// A request with `token`.
    pub fn req_as(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
    ) -> reqwest::RequestBuilder {
        self.http.request(method, self.url(path)).bearer_auth(token)
    }

    /// An authenticated request.
    pub fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.url(path))
            .bearer_auth(&self.token)
    }

    pub async fn put_json(&self, path: &str, body: &Value) -> (u16, Value) {
        send(self.req(reqwest::Method::PUT, path).json(body)).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        send(self.req(reqwest::Method::GET, path)).await
    }

    pub async fn post(&self, path: &str) -> (u16, Value) {
        send(self.req(reqwest::Method::POST, path)).await
    }
}

/// Sends and returns the status and the JSON body (`Null` when empty).
pub async fn send(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("non-JSON body ({e}): {text}"))
    };
    (status, body)
}

/// Asserts the documented error shape and returns the code.
pub fn error_code(body: &Value) -> &str {
    let error = body
        .get("error")
        .unwrap_or_else(|| panic!("no error object: {body}"));
    assert!(error["message"].is_string(), "message: {body}");
    assert!(
        error.get("details").is_some(),
        "details present (maybe null): {body}"
    );
    assert_eq!(
        body.as_object().unwrap().len(),
        1,
        "only `error` at the top: {body}"
    );
    error["code"]
        .as_str()
        .unwrap_or_else(|| panic!("code: {body}"))
}

/// Runway's organization endpoint accepting exactly `keys`, rejecting the rest as Runway does.
pub async fn runway_accepts(server: &MockServer, keys: &[&str]) {
    for key in keys {
        Mock::given(method("GET"))
            .and(path("/v1/organization"))
            .and(header("authorization", format!("Bearer {key}").as_str()))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "creditBalance": 100, "tier": {"maxMonthlyCreditSpend": 1000, "models": {}}, "usage": {"models": {}}
            })))
            .with_priority(1)
            .mount(server)
            .await;
    }
    Mock::given(method("GET"))
        .and(path("/v1/organization"))
        .respond_with(
            ResponseTemplate::new(401)
                .set_body_json(json!({ "error": "Invalid API key provided" })),
        )
        .with_priority(10)
        .mount(server)
        .await;
}
