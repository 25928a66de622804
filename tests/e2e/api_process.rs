//! `byok api` as a process: both shapes, readiness, and a clean SIGTERM.

use std::os::unix::fs::PermissionsExt as _;
use std::time::{Duration, Instant};

use crate::helpers::{byok, run, terminate, wait_until_ready};

const KEYS: &str = "1:2222222222222222222222222222222222222222222222222222222222222222";

#[tokio::test]
async fn the_distributed_shape_serves_after_migrate_and_stops_on_sigterm() {
    let Some(db) = byok_testing::test_database().await else {
        return;
    };
    let Some(redis) = byok_testing::test_redis().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = byok_testing::free_port().to_string();
    let listen = format!("127.0.0.1:{port}");
    let env: Vec<(&str, &str)> = vec![
        ("DATABASE_URL", &db.url),
        ("REDIS_URL", &redis.url),
        ("BYOK__ENCRYPTION__KEYS", KEYS),
        ("BYOK__API__LISTEN", &listen),
        ("BYOK__WORKER__SHUTDOWN_GRACE", "5s"),
    ];

    // Before `byok migrate`, the API refuses to run on an old schema.
    let early = run(dir.path(), &env, &["api"]).await;
    assert_eq!(early.code, 1, "{}", early.stderr);
    assert!(early.stderr.contains("byok migrate"), "{}", early.stderr);

    let migrated = run(dir.path(), &env, &["migrate"]).await;
    assert_eq!(migrated.code, 0, "{}", migrated.stderr);
    // Every migration the repository holds.
    let migrations = std::fs::read_dir(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../migrations/postgres"
    ))
    .unwrap()
    .filter(|e| {
        e.as_ref()
            .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "sql"))
    })
    .count();
    assert!(
        migrated
            .stdout
            .starts_with(&format!("applied {migrations} migration(s)")),
        "{}",
        migrated.stdout
    );
    let again = run(dir.path(), &env, &["migrate"]).await;
    assert!(
        again.stdout.starts_with("applied 0 migration(s)"),
        "{}",
        again.stdout
    );

    let token = run(dir.path(), &env, &["token", "create", "--name", "e2e"]).await;
    let token = token.stdout.lines().next().unwrap().to_owned();

    let mut api = byok(dir.path(), &env).arg("api").spawn().unwrap();
    let base = format!("http://{listen}");
    assert!(
        wait_until_ready(&format!("{base}/readyz"), Duration::from_secs(20)).await,
        "API never became ready"
    );

    let client = reqwest::Client::new();
    let providers = client
        .get(format!("{base}/v1/providers"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(providers.status(), 200);
    let user = "0b6c1d2e-3f40-4a5b-8c6d-7e8f90a1b2c3";
    let put = client
        .put(format!("{base}/v1/users/{user}/providers/runway/credentials"))
        .bearer_auth(&token)
        .json(&serde_json::json!({ "credentials": { "api_key": "key_e2e_secret_value_0001" }, "validate": false }))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    let summary: serde_json::Value = put.json().await.unwrap();
    assert_eq!(summary["credential_hint"], "key_…0001");

    let started = Instant::now();
    terminate(api.id().unwrap());
    let status = tokio::time::timeout(Duration::from_secs(10), api.wait())
        .await
        .expect("exits")
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "stopped within the grace period"
    );
}

#[tokio::test]
async fn the_embedded_shape_needs_nothing_but_a_folder() {
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", byok_testing::free_port());
    let env = [("BYOK__API__LISTEN", listen.as_str())];
    let mut api = byok(dir.path(), &env).arg("api").spawn().unwrap();
    assert!(wait_until_ready(&format!("http://{listen}/readyz"), Duration::from_secs(20)).await);
    assert!(dir.path().join("byok-data/byok.db").is_file());
    // With no key configured, the first run made one, readable by the owner only.
    let key = dir.path().join("byok-data/encryption.key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    terminate(api.id().unwrap());
    let status = tokio::time::timeout(Duration::from_secs(10), api.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
}
