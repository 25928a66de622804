//! The API over real HTTP, on a real store, with the providers played by
//! local mock servers that record every request they get.

mod credentials;
mod errors;
mod health;
mod openapi;
mod providers;

use std::time::Duration;

use byok_api::{AppState, QueueProbe};
use byok_crypto::KeyRing;
use byok_providers::{ProviderId, ProviderOptions, RateLimits, Registry, RegistryOptions};
use byok_store::{Store, StoreOptions};
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::Value;
use wiremock::MockServer;

/// A running API with its own store and mock providers.
#[derive(Debug)]
pub struct TestApi {
    pub base: String,
    pub http: reqwest::Client,
    pub token: String,
    pub store: Store,
    pub db_url: String,
    pub runway: MockServer,
    pub stability: MockServer,
    pub backend: &'static str,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _db: DbGuard,
}

#[derive(Debug)]
#[allow(dead_code)] // held for Drop
enum DbGuard {
    Sqlite(byok_testing::TestSqlite),
    Postgres(byok_testing::TestDatabase),
}

impl Drop for TestApi {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub const KEY_RING: &str = "1:1111111111111111111111111111111111111111111111111111111111111111";

/// APIs on SQLite and, when available, PostgreSQL.
pub async fn apis() -> Vec<TestApi> {
    let mut out = vec![sqlite_api().await];
    if let Some(db) = byok_testing::test_database().await {
        let url = db.url.clone();
        out.push(
            start(
                &url,
                DbGuard::Postgres(db),
                "postgres",
                QueueProbe::InStore,
                1 << 20,
            )
            .await,
        );
    }
    out
}

pub async fn sqlite_api() -> TestApi {
    sqlite_api_with(QueueProbe::InStore, 1 << 20).await
}

pub async fn sqlite_api_with(queue: QueueProbe, max_body_bytes: usize) -> TestApi {
    let db = byok_testing::test_sqlite();
    let url = db.url.clone();
    start(&url, DbGuard::Sqlite(db), "sqlite", queue, max_body_bytes).await
}

async fn start(
    db_url: &str,
    guard: DbGuard,
    backend: &'static str,
    queue: QueueProbe,
    max_body_bytes: usize,
) -> TestApi {
    let store = Store::connect(&SecretString::from(db_url), &StoreOptions::default())
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let (_, token) = store.tokens().create("tests").await.unwrap();

    let runway = MockServer::start().await;
    let stability = MockServer::start().await;
    let limits = RateLimits {
        per_minute: 5,
        per_hour: 50,
    };
    let mut options = RegistryOptions::defaults();
    for (id, base_url) in [
        (ProviderId::Veo, "http://127.0.0.1:9".to_owned()),
        (ProviderId::Runway, runway.uri()),
        (ProviderId::Stability, stability.uri()),
    ] {
        *options.provider_mut(id) = ProviderOptions {
            base_url,
            rate_limits: limits,
            models: None,
        };
    }
    options.allow_private_networks = true;
    options.request_timeout = Duration::from_secs(5);
    let registry = Registry::new(&options).unwrap();
    let ring = KeyRing::parse(&SecretString::from(KEY_RING)).unwrap();
    let state = AppState::new(store.clone(), ring, registry, queue, max_body_bytes);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(byok_api::serve(
        listener,
        byok_api::app(state),
        async move {
            let _ = stopped.await;
        },
        Duration::from_secs(1),
    ));
    TestApi {
        base,
        http: reqwest::Client::new(),
        token: token.expose_secret().to_owned(),
        store,
        db_url: db_url.to_owned(),
        runway,
        stability,
        backend,
        stop: Some(stop),
        _db: guard,
    }
}

impl TestApi {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
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
