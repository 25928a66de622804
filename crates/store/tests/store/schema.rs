use byok_store::{SchemaStatus, Store, StoreError, StoreOptions};
use secrecy::SecretString;

#[tokio::test]
async fn migrations_apply_once_and_report_status() {
    let sqlite = byok_testing::test_sqlite();
    let mut urls = vec![sqlite.url.clone()];
    let pg = byok_testing::test_database().await;
    urls.extend(pg.as_ref().map(|db| db.url.clone()));

    for url in urls {
        let store = Store::connect(&SecretString::from(url.as_str()), &StoreOptions::default())
            .await
            .unwrap();
        assert!(matches!(store.schema_status().await.unwrap(), SchemaStatus::Pending(n) if n >= 1));
        assert!(matches!(
            store.require_current_schema().await,
            Err(StoreError::SchemaOutdated { .. })
        ));
        let applied = store.migrate().await.unwrap();
        assert!(applied >= 1);
        assert_eq!(store.schema_status().await.unwrap(), SchemaStatus::UpToDate);
        assert_eq!(
            store.migrate().await.unwrap(),
            0,
            "second run applies nothing"
        );
        store.require_current_schema().await.unwrap();
        store.ping().await.unwrap();
    }
}

#[tokio::test]
async fn the_sqlite_file_and_its_directory_are_created() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/data/byok.db");
    let url = format!("sqlite://{}", path.display());
    let store = Store::connect(&SecretString::from(url.as_str()), &StoreOptions::default())
        .await
        .unwrap();
    store.migrate().await.unwrap();
    assert!(path.is_file());
}

#[tokio::test]
async fn unsupported_and_unreachable_databases_are_clear_errors() {
    let err = Store::connect(&SecretString::from("mysql://x/y"), &StoreOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::UnsupportedUrl));

    let port = byok_testing::free_port();
    let options = StoreOptions {
        acquire_timeout: std::time::Duration::from_secs(2),
        ..StoreOptions::default()
    };
    let err = Store::connect(
        &SecretString::from(format!("postgres://postgres:hunter2@127.0.0.1:{port}/x")),
        &options,
    )
    .await
    .unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

#[tokio::test]
async fn the_data_directory_and_database_files_are_private_even_when_they_existed() {
    use std::os::unix::fs::PermissionsExt as _;
    let mode =
        |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("byok-data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let db = data.join("byok.db");
    // An existing, empty database file anyone may read (an empty file is an
    // empty SQLite database).
    std::fs::write(&db, b"").unwrap();
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();

    let url = format!("sqlite://{}", db.display());
    let store = Store::connect(&SecretString::from(url.as_str()), &StoreOptions::default())
        .await
        .unwrap();
    store.migrate().await.unwrap();
    assert_eq!(mode(&data), 0o700);
    for name in ["byok.db", "byok.db-wal", "byok.db-shm"] {
        assert_eq!(mode(&data.join(name)), 0o600, "{name}");
    }

    // A fresh one is created private.
    let fresh = root.path().join("new/dir/byok.db");
    let url = format!("sqlite://{}", fresh.display());
    let store = Store::connect(&SecretString::from(url.as_str()), &StoreOptions::default())
        .await
        .unwrap();
    store.migrate().await.unwrap();
    assert_eq!(mode(fresh.parent().unwrap()), 0o700);
    assert_eq!(mode(&fresh), 0o600);
    assert_eq!(mode(&root.path().join("new/dir/byok.db-wal")), 0o600);
}
