//! The store against real PostgreSQL and SQLite: every behaviour is checked
//! on both, since the embedded and distributed shapes must agree.

mod at_rest;
mod batches;
mod credentials;
mod dashboard;
mod job_events;
mod jobs;
mod schema;
mod step_batches;
mod tokens;
mod upgrade;
mod usage;
mod webhooks;

use byok_store::{Store, StoreOptions};
use secrecy::SecretString;

/// A migrated store plus whatever keeps its database alive.
#[derive(Debug)]
pub struct Backend {
    pub name: &'static str,
    pub store: Store,
    pub url: String,
    _guard: Guard,
}

#[allow(dead_code)] // the guards are held only for their Drop
#[derive(Debug)]
enum Guard {
    Postgres(byok_testing::TestDatabase),
    Sqlite(byok_testing::TestSqlite),
}

/// SQLite always; PostgreSQL when available (a SKIPPED line otherwise, a
/// failure under BYOK_TEST_SERVICES=required).
pub async fn backends() -> Vec<Backend> {
    let mut out = Vec::new();
    let sqlite = byok_testing::test_sqlite();
    out.push(Backend {
        name: "sqlite",
        store: connect(&sqlite.url).await,
        url: sqlite.url.clone(),
        _guard: Guard::Sqlite(sqlite),
    });
    if let Some(db) = byok_testing::test_database().await {
        out.push(Backend {
            name: "postgres",
            store: connect(&db.url).await,
            url: db.url.clone(),
            _guard: Guard::Postgres(db),
        });
    }
    out
}

async fn connect(url: &str) -> Store {
    let store = Store::connect(&SecretString::from(url), &StoreOptions::default())
        .await
        .expect("connect");
    store.migrate().await.expect("migrate");
    store
}
