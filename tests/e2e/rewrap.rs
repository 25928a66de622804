//! `byok keys rewrap` moves every stored credential to the primary key,
//! including the seed's legacy values, without losing or mixing any.

use byok_core::EventType;
use byok_core::{DEFAULT_PROJECT_ID, ProjectUser, ProviderId};
use byok_crypto::{KeyRing, SealContext, WebhookSecretContext};
use byok_store::{NewCredential, NewEndpoint, Store, StoreOptions};
use secrecy::{ExposeSecret as _, SecretString};
use uuid::Uuid;

use crate::helpers::run;

const OLD: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const NEW: &str = "2222222222222222222222222222222222222222222222222222222222222222";

/// Legacy values written by Python's `cryptography` (see crates/crypto/tests/fixtures).
fn legacy_vectors() -> (String, Vec<(String, String)>) {
    let fixture: serde_json::Value = serde_json::from_str(include_str!(
        "../../crates/crypto/tests/fixtures/legacy_vectors.json"
    ))
    .unwrap();
    let vectors = fixture["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["plaintext"].as_str().unwrap().to_owned(),
                v["sealed"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    (fixture["key_hex"].as_str().unwrap().to_owned(), vectors)
}

fn ring(spec: &str) -> KeyRing {
    KeyRing::parse(&SecretString::from(spec)).unwrap()
}

async fn save(store: &Store, user: Uuid, provider: ProviderId, sealed: String) {
    store
        .credentials()
        .upsert(&NewCredential {
            owner: ProjectUser::new(DEFAULT_PROJECT_ID, user),
            provider,
            sealed,
            credential_hint: "hint".into(),
            validated_at: None,
        })
        .await
        .unwrap();
}

async fn rewrap_on(url: &str) {
    let store = Store::connect(&SecretString::from(url), &StoreOptions::default())
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let (legacy_key, vectors) = legacy_vectors();
    let old = ring(&format!("1:{OLD}"));
    let new = ring(&format!("2:{NEW}"));
    let users: Vec<Uuid> = (0..6).map(|_| Uuid::new_v4()).collect();
    let third = r#"{"api_key":"key_v1_under_the_old_key"}"#;
    let fourth = r#"{"api_key":"key_already_current"}"#;

    save(&store, users[0], ProviderId::RUNWAY, vectors[0].1.clone()).await;
    save(
        &store,
        users[1],
        ProviderId::STABILITY,
        vectors[1].1.clone(),
    )
    .await;
    save(
        &store,
        users[2],
        ProviderId::RUNWAY,
        old.seal(
            &SealContext::new(
                ProjectUser::new(DEFAULT_PROJECT_ID, users[2]),
                ProviderId::RUNWAY,
            ),
            third.as_bytes(),
        )
        .unwrap(),
    )
    .await;
    save(
        &store,
        users[3],
        ProviderId::VEO,
        new.seal(
            &SealContext::new(
                ProjectUser::new(DEFAULT_PROJECT_ID, users[3]),
                ProviderId::VEO,
            ),
            fourth.as_bytes(),
        )
        .unwrap(),
    )
    .await;
    // Sealed for users[5] but stored in users[4]'s row: must not be "repaired" into a valid value.
    save(
        &store,
        users[4],
        ProviderId::RUNWAY,
        old.seal(
            &SealContext::new(
                ProjectUser::new(DEFAULT_PROJECT_ID, users[5]),
                ProviderId::RUNWAY,
            ),
            b"{}",
        )
        .unwrap(),
    )
    .await;

    // Webhook secrets: an endpoint's current and previous one under the old key; the
    // project's job-webhook secret under the new one, its previous under the old.
    let endpoint = Uuid::now_v7();
    let endpoint_context = WebhookSecretContext {
        project_id: DEFAULT_PROJECT_ID,
        endpoint_id: Some(endpoint),
    };
    let project_context = WebhookSecretContext {
        project_id: DEFAULT_PROJECT_ID,
        endpoint_id: None,
    };
    store
        .webhooks()
        .create_endpoint(&NewEndpoint {
            id: endpoint,
            project_id: DEFAULT_PROJECT_ID,
            url: "https://hooks.example.com/byok".into(),
            description: String::new(),
            events: vec![EventType::JobSucceeded],
            sealed_secret: old
                .seal_webhook_secret(&endpoint_context, b"whsec_first")
                .unwrap(),
        })
        .await
        .unwrap();
    let until = chrono::Utc::now() + chrono::Duration::hours(24);
    store
        .webhooks()
        .rotate_endpoint_secret(
            DEFAULT_PROJECT_ID,
            endpoint,
            &old.seal_webhook_secret(&endpoint_context, b"whsec_second")
                .unwrap(),
            until,
        )
        .await
        .unwrap()
        .unwrap();
    for (ring, secret) in [(&old, b"whsec_job_1"), (&new, b"whsec_job_2")] {
        store
            .webhooks()
            .put_project_secret(
                DEFAULT_PROJECT_ID,
                &ring.seal_webhook_secret(&project_context, secret).unwrap(),
                until,
            )
            .await
            .unwrap();
    }

    let dir = tempfile::tempdir().unwrap();
    let keys = format!("2:{NEW},1:{OLD}");
    // The queue is not used by a rewrap, but PostgreSQL settings name one.
    let queue = if url.starts_with("sqlite") {
        "sqlite"
    } else {
        "redis://127.0.0.1:1"
    };
    let env = [
        ("BYOK__DATABASE__URL", url),
        ("BYOK__QUEUE__URL", queue),
        ("BYOK__ENCRYPTION__KEYS", keys.as_str()),
        ("ENCRYPTION_KEY", legacy_key.as_str()),
    ];

    let first = run(dir.path(), &env, &["keys", "rewrap"]).await;
    assert_eq!(first.code, 1, "one row cannot be opened: {}", first.stderr);
    assert_eq!(
        first.stdout.lines().collect::<Vec<_>>(),
        [
            "rewrapped 3 of 5 credential(s) under key `2` (1 already current, 1 failed)",
            "rewrapped 3 of 4 webhook secret(s) under key `2` (1 already current, 0 failed)",
        ]
    );
    let hook = store
        .webhooks()
        .endpoint(DEFAULT_PROJECT_ID, endpoint)
        .await
        .unwrap()
        .unwrap();
    let previous = hook.secrets.previous.clone().unwrap();
    for (sealed, plaintext) in [
        (&hook.secrets.current, "whsec_second"),
        (&previous, "whsec_first"),
    ] {
        assert!(sealed.starts_with("v2:2:"), "{sealed}");
        let opened = new.open_webhook_secret(&endpoint_context, sealed).unwrap();
        assert_eq!(opened.expose_secret().as_slice(), plaintext.as_bytes());
    }
    let job_secrets = store
        .webhooks()
        .project_secret(DEFAULT_PROJECT_ID)
        .await
        .unwrap()
        .unwrap();
    for (sealed, plaintext) in [
        (&job_secrets.current, "whsec_job_2"),
        (job_secrets.previous.as_ref().unwrap(), "whsec_job_1"),
    ] {
        assert!(sealed.starts_with("v2:2:"), "{sealed}");
        let opened = new.open_webhook_secret(&project_context, sealed).unwrap();
        assert_eq!(opened.expose_secret().as_slice(), plaintext.as_bytes());
    }

    assert!(
        first.stderr.contains(&users[4].to_string()),
        "{}",
        first.stderr
    );
    assert!(
        first.stderr.contains("failed authentication"),
        "{}",
        first.stderr
    );

    // Everything readable is now under key 2 alone, with its content intact.
    let expectations = [
        (users[0], ProviderId::RUNWAY, vectors[0].0.as_str()),
        (users[1], ProviderId::STABILITY, vectors[1].0.as_str()),
        (users[2], ProviderId::RUNWAY, third),
        (users[3], ProviderId::VEO, fourth),
    ];
    for (user, provider, plaintext) in expectations {
        let row = store
            .credentials()
            .get(ProjectUser::new(DEFAULT_PROJECT_ID, user), provider)
            .await
            .unwrap()
            .unwrap();
        assert!(row.sealed.starts_with("v2:2:"), "{}", row.sealed);
        let opened = new
            .open(
                &SealContext::new(ProjectUser::new(DEFAULT_PROJECT_ID, user), provider),
                &row.sealed,
            )
            .unwrap();
        assert_eq!(opened.expose_secret().as_slice(), plaintext.as_bytes());
    }
    let bad = store
        .credentials()
        .get(
            ProjectUser::new(DEFAULT_PROJECT_ID, users[4]),
            ProviderId::RUNWAY,
        )
        .await
        .unwrap()
        .unwrap();
    assert!(
        bad.sealed.starts_with("v2:1:"),
        "the unreadable row is left as it was"
    );

    let second = run(dir.path(), &env, &["keys", "rewrap"]).await;
    assert_eq!(
        second.stdout.lines().collect::<Vec<_>>(),
        [
            "rewrapped 0 of 5 credential(s) under key `2` (4 already current, 1 failed)",
            "rewrapped 0 of 4 webhook secret(s) under key `2` (4 already current, 0 failed)",
        ]
    );

    store
        .credentials()
        .delete(
            ProjectUser::new(DEFAULT_PROJECT_ID, users[4]),
            ProviderId::RUNWAY,
        )
        .await
        .unwrap();
    let third_run = run(dir.path(), &env, &["keys", "rewrap"]).await;
    assert_eq!(third_run.code, 0, "{}", third_run.stderr);
    assert_eq!(
        third_run.stdout.lines().next(),
        Some("rewrapped 0 of 4 credential(s) under key `2` (4 already current, 0 failed)")
    );
    store.close().await;
}

#[tokio::test]
async fn rewrap_on_sqlite() {
    let db = byok_testing::test_sqlite();
    rewrap_on(&db.url).await;
}

#[tokio::test]
async fn rewrap_on_postgres() {
    let Some(db) = byok_testing::test_database().await else {
        return;
    };
    rewrap_on(&db.url).await;
}
