//! Upgrading a database filled before projects existed: everything moves
//! into the project `default`, tokens keep working, keys keep opening.

use aes_gcm::aead::{Aead as _, KeyInit as _, Payload};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use byok_core::{DEFAULT_PROJECT_ID, ProjectUser, ProviderId, Scopes};
use byok_crypto::{KeyRing, SealContext};
use byok_store::{Store, StoreOptions};
use secrecy::{ExposeSecret as _, SecretString};
use sha2::{Digest as _, Sha256};
use sqlx::migrate::Migrator;
use uuid::Uuid;

/// The last migration before projects.
const BEFORE_PROJECTS: i64 = 20261201000004;
const KEY_HEX: &str = "3333333333333333333333333333333333333333333333333333333333333333";
const TOKEN: &str = "byok_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
const SECRET: &[u8] = br#"{"api_key":"key_0123456789abcdef"}"#;

/// `migrator` cut down to the migrations a build before projects had.
/// How many of `migrator`'s migrations come after the last one [`before_projects`] keeps:
/// the projects migration and every later one.
fn from_projects_on(migrator: &Migrator) -> u64 {
    migrator
        .iter()
        .filter(|m| m.version > BEFORE_PROJECTS)
        .count() as u64
}

fn before_projects(mut migrator: Migrator) -> Migrator {
    let kept: Vec<_> = migrator
        .iter()
        .filter(|m| m.version <= BEFORE_PROJECTS)
        .cloned()
        .collect();
    assert!(
        kept.len() < migrator.iter().count(),
        "the projects migration exists"
    );
    migrator.migrations = kept.into();
    migrator
}

/// A `v1:` value as such a build sealed it: AES-256-GCM under key `1`, with
/// the AAD that names no project.
fn seal_v1(user: Uuid, provider: ProviderId) -> String {
    let context = SealContext::new(ProjectUser::new(DEFAULT_PROJECT_ID, user), provider);
    let aad = byok_crypto::canonical_aad_v1(&context, "1");
    let key: Vec<u8> = (0..32).map(|_| 0x33).collect();
    let cipher = aes_gcm::Aes256Gcm::new_from_slice(&key).unwrap();
    let nonce = [9u8; 12];
    let body = cipher
        .encrypt(
            &nonce.into(),
            Payload {
                msg: SECRET,
                aad: &aad,
            },
        )
        .unwrap();
    format!(
        "v1:1:{}:{}",
        URL_SAFE_NO_PAD.encode(nonce),
        URL_SAFE_NO_PAD.encode(body)
    )
}

/// The rows a database before projects holds: one key, one token, one job
/// with its history. Written as that build wrote them, in SQL.
struct OldRows {
    user: Uuid,
    credential: Uuid,
    token: Uuid,
    job: Uuid,
    sealed: String,
}

impl OldRows {
    fn new() -> Self {
        let user = Uuid::new_v4();
        OldRows {
            user,
            credential: Uuid::now_v7(),
            token: Uuid::now_v7(),
            job: Uuid::now_v7(),
            sealed: seal_v1(user, ProviderId::RUNWAY),
        }
    }
}

macro_rules! insert_old_rows {
    ($pool:expr, $rows:expr, $uuid:expr) => {{
        let rows: &OldRows = $rows;
        let now = byok_store::now();
        sqlx::query(
            "INSERT INTO user_provider_configs \
               (id, user_id, provider_name, encrypted_credentials, is_valid, created_at, updated_at, \
                credential_hint) VALUES ($1, $2, 'runway', $3, TRUE, $4, $4, 'key_…cdef')",
        )
        .bind($uuid(rows.credential))
        .bind($uuid(rows.user))
        .bind(&rows.sealed)
        .bind(now)
        .execute($pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO api_tokens (id, name, token_sha256, created_at) VALUES ($1, 'old', $2, $3)",
        )
        .bind($uuid(rows.token))
        .bind(Sha256::digest(TOKEN.as_bytes()).to_vec())
        .bind(now)
        .execute($pool)
        .await
        .unwrap();
        let request = serde_json::json!({
            "user_id": rows.user, "provider": "runway", "model": "gen4.5", "prompt": "a cat"
        });
        sqlx::query(
            "INSERT INTO generation_jobs \
               (id, user_id, provider, model, status, attempts, request, metadata, created_by_token, \
                created_at, updated_at, enqueued_at) \
             VALUES ($1, $2, 'runway', 'gen4.5', 'queued', 0, $3, $4, $5, $6, $6, $6)",
        )
        .bind($uuid(rows.job))
        .bind($uuid(rows.user))
        .bind(sqlx::types::Json(&request))
        .bind(sqlx::types::Json(serde_json::json!({})))
        .bind($uuid(rows.token))
        .bind(now)
        .execute($pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO generation_job_events (job_id, at, status, message) VALUES ($1, $2, 'queued', 'accepted')",
        )
        .bind($uuid(rows.job))
        .bind(now)
        .execute($pool)
        .await
        .unwrap();
    }};
}

async fn check_upgraded(store: &Store, rows: &OldRows, backend: &str) {
    let projects = store.projects().list().await.unwrap();
    assert_eq!(projects.len(), 1, "{backend}");
    assert_eq!(
        (projects[0].id, projects[0].name.as_str()),
        (DEFAULT_PROJECT_ID, "default")
    );

    // The token authenticates, in `default`, with what it could do before.
    let token = store
        .tokens()
        .authenticate(TOKEN)
        .await
        .unwrap()
        .expect(backend);
    assert_eq!(token.id, rows.token);
    assert_eq!(token.project_id, DEFAULT_PROJECT_ID);
    // Exactly what it could do then: scopes added later (`webhooks`) are not granted.
    assert_eq!(
        token.scopes,
        Scopes::parse_list("credentials:read credentials:write jobs:read jobs:write").unwrap()
    );
    assert_eq!(token.expires_at, None);

    // The key is the default project's user's, and it still opens.
    let owner = ProjectUser::new(DEFAULT_PROJECT_ID, rows.user);
    let credential = store
        .credentials()
        .get(owner, ProviderId::RUNWAY)
        .await
        .unwrap()
        .expect(backend);
    assert_eq!(
        (credential.id, credential.sealed.as_str()),
        (rows.credential, rows.sealed.as_str())
    );
    let ring = KeyRing::parse(&SecretString::from(format!(
        "2:{},1:{KEY_HEX}",
        "4".repeat(64)
    )))
    .unwrap();
    let opened = ring
        .open(
            &SealContext::new(owner, ProviderId::RUNWAY),
            &credential.sealed,
        )
        .unwrap();
    assert_eq!(opened.expose_secret().as_slice(), SECRET);
    // ...and `byok keys rewrap` turns it into a v2 value of the default project.
    let resealed = ring
        .reseal(
            &SealContext::new(owner, ProviderId::RUNWAY),
            &credential.sealed,
        )
        .unwrap()
        .expect("v1 is not current");
    assert!(resealed.starts_with("v2:2:"));

    // The job is the default project's, with its history.
    let job = store.jobs().get(rows.job).await.unwrap().expect(backend);
    assert_eq!(job.project_id, DEFAULT_PROJECT_ID);
    assert_eq!(job.owner(), owner);
    let listed = store
        .jobs()
        .list_for_user(owner, None, None, 10)
        .await
        .unwrap();
    assert_eq!(listed.iter().map(|j| j.id).collect::<Vec<_>>(), [rows.job]);
    assert_eq!(store.jobs().events(rows.job).await.unwrap().len(), 1);
    // It was pushed and marked before: nothing for the sweeper.
    assert!(!store.jobs().awaiting_push(rows.job).await.unwrap());
}

async fn assert_imported_into_default(store: &Store, user: Uuid) {
    let owner = ProjectUser::new(DEFAULT_PROJECT_ID, user);
    let imported = store
        .credentials()
        .get(owner, ProviderId::VEO)
        .await
        .unwrap();
    assert!(
        imported.is_some(),
        "the imported row is the default project's"
    );
}

async fn connect(url: &str) -> Store {
    Store::connect(&SecretString::from(url), &StoreOptions::default())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_sqlite_database_filled_before_projects_upgrades_without_losing_anything() {
    let db = byok_testing::test_sqlite();
    let pool = sqlx::SqlitePool::connect(&db.url).await.unwrap();
    before_projects(sqlx::migrate!("../../migrations/sqlite"))
        .run(&pool)
        .await
        .unwrap();
    let rows = OldRows::new();
    insert_old_rows!(&pool, &rows, |id: Uuid| id.hyphenated().to_string());

    let store = connect(&db.url).await;
    // The projects migration and the later ones.
    assert_eq!(
        store.migrate().await.unwrap() as u64,
        from_projects_on(&sqlx::migrate!("../../migrations/sqlite"))
    );
    check_upgraded(&store, &rows, "sqlite").await;

    // Rows imported from the seed's system, which has neither an id
    // default nor projects, go in as they are, into `default`.
    sqlx::query(
        "INSERT INTO user_provider_configs \
           (user_id, provider_name, encrypted_credentials, created_at, updated_at) \
         VALUES ($1, 'veo', 'v1:1:a:b', '2026-01-01T00:00:00+00:00', '2026-01-01T00:00:00+00:00')",
    )
    .bind(rows.user.hyphenated().to_string())
    .execute(&pool)
    .await
    .unwrap();
    let id: String =
        sqlx::query_scalar("SELECT id FROM user_provider_configs WHERE provider_name = 'veo'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(Uuid::parse_str(&id).unwrap().get_version_num(), 4, "{id}");
    assert_imported_into_default(&store, rows.user).await;
}

#[tokio::test]
async fn a_postgres_database_filled_before_projects_upgrades_without_losing_anything() {
    let Some(db) = byok_testing::test_database().await else {
        return;
    };
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    before_projects(sqlx::migrate!("../../migrations/postgres"))
        .run(&pool)
        .await
        .unwrap();
    let rows = OldRows::new();
    insert_old_rows!(&pool, &rows, |id: Uuid| id);

    let store = connect(&db.url).await;
    // The projects migration, the one dropping the jobs' project foreign key, and the
    // later ones.
    assert_eq!(
        store.migrate().await.unwrap() as u64,
        from_projects_on(&sqlx::migrate!("../../migrations/postgres"))
    );
    check_upgraded(&store, &rows, "postgres").await;

    let id: Uuid = sqlx::query_scalar(
        "INSERT INTO user_provider_configs \
           (user_id, provider_name, encrypted_credentials, created_at, updated_at) \
         VALUES ($1, 'veo', 'v1:1:a:b', now(), now()) RETURNING id",
    )
    .bind(rows.user)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(id.get_version_num(), 4);
    assert_imported_into_default(&store, rows.user).await;
}
