use byok_core::{DEFAULT_PROJECT_ID, ProjectUser, ProviderId};
use byok_store::{CheckRecord, KeyValidity, NewCredential};
use uuid::Uuid;

use crate::backends;

/// `user_id` in the default project.
fn owner(user_id: Uuid) -> ProjectUser {
    ProjectUser::new(DEFAULT_PROJECT_ID, user_id)
}

fn new(user: Uuid, provider: ProviderId, sealed: &str) -> NewCredential {
    NewCredential {
        owner: owner(user),
        provider,
        sealed: sealed.to_owned(),
        credential_hint: "key_…9f2c".to_owned(),
        validated_at: Some(byok_store::now()),
    }
}

#[tokio::test]
async fn upsert_keeps_one_row_per_user_and_provider() {
    for b in backends().await {
        let repo = b.store.credentials();
        let user = Uuid::new_v4();
        let first = repo
            .upsert(&new(user, ProviderId::RUNWAY, "v1:1:a:b"))
            .await
            .unwrap();
        let second = repo
            .upsert(&new(user, ProviderId::RUNWAY, "v1:1:c:d"))
            .await
            .unwrap();
        assert_eq!(first.id, second.id, "{}: same row replaced", b.name);
        assert_eq!(second.sealed, "v1:1:c:d");
        assert_eq!(second.created_at, first.created_at);
        assert!(second.updated_at >= first.updated_at);
        repo.upsert(&new(user, ProviderId::STABILITY, "v1:1:e:f"))
            .await
            .unwrap();
        repo.upsert(&new(Uuid::new_v4(), ProviderId::RUNWAY, "v1:1:g:h"))
            .await
            .unwrap();

        let mine = repo.list_for_user(owner(user)).await.unwrap();
        let names: Vec<_> = mine.iter().map(|c| c.provider_name.as_str()).collect();
        assert_eq!(names, ["runway", "stability"], "{}", b.name);

        // Concurrent saves of the same pair still leave one row.
        let racer = Uuid::new_v4();
        let saves = (0..10).map(|i| {
            let store = b.store.clone();
            tokio::spawn(async move {
                store
                    .credentials()
                    .upsert(&new(racer, ProviderId::VEO, &format!("v1:1:{i}:x")))
                    .await
            })
        });
        for save in saves {
            save.await.unwrap().unwrap();
        }
        assert_eq!(
            repo.list_for_user(owner(racer)).await.unwrap().len(),
            1,
            "{}",
            b.name
        );
    }
}

#[tokio::test]
async fn get_and_delete() {
    for b in backends().await {
        let repo = b.store.credentials();
        let user = Uuid::new_v4();
        assert!(
            repo.get(owner(user), ProviderId::RUNWAY)
                .await
                .unwrap()
                .is_none()
        );
        repo.upsert(&new(user, ProviderId::RUNWAY, "v1:1:a:b"))
            .await
            .unwrap();
        let got = repo
            .get(owner(user), ProviderId::RUNWAY)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.provider(), Some(ProviderId::RUNWAY));
        assert_eq!(got.credential_hint.as_deref(), Some("key_…9f2c"));
        assert!(got.is_valid);
        assert!(
            !format!("{got:?}").contains("v1:1:a:b"),
            "Debug hides the sealed text"
        );
        assert!(repo.delete(owner(user), ProviderId::RUNWAY).await.unwrap());
        assert!(!repo.delete(owner(user), ProviderId::RUNWAY).await.unwrap());
        assert!(
            repo.get(owner(user), ProviderId::RUNWAY)
                .await
                .unwrap()
                .is_none()
        );
    }
}

#[tokio::test]
async fn a_check_is_recorded_only_against_the_key_it_checked() {
    for b in backends().await {
        let repo = b.store.credentials();
        let user = Uuid::new_v4();
        let stored = repo
            .upsert(&new(user, ProviderId::RUNWAY, "v1:1:old:x"))
            .await
            .unwrap();
        let rejected = CheckRecord {
            is_valid: false,
            last_error: Some("Runway rejected the key (HTTP 401)".into()),
            validated_at: None,
        };
        // The key was replaced while the check ran: the verdict is dropped.
        repo.upsert(&new(user, ProviderId::RUNWAY, "v1:1:new:x"))
            .await
            .unwrap();
        assert!(
            repo.record_check(owner(user), ProviderId::RUNWAY, &stored.sealed, &rejected)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            repo.get(owner(user), ProviderId::RUNWAY)
                .await
                .unwrap()
                .unwrap()
                .is_valid
        );

        let updated = repo
            .record_check(owner(user), ProviderId::RUNWAY, "v1:1:new:x", &rejected)
            .await
            .unwrap()
            .unwrap();
        assert!(!updated.is_valid);
        assert_eq!(updated.last_error, rejected.last_error);
        // What enqueueing reads: the verdict without the sealed value.
        assert_eq!(
            repo.validity(owner(user), ProviderId::RUNWAY)
                .await
                .unwrap(),
            Some(KeyValidity {
                is_valid: false,
                last_error: rejected.last_error.clone(),
            })
        );
        assert_eq!(
            repo.validity(owner(user), ProviderId::STABILITY)
                .await
                .unwrap(),
            None
        );
        assert!(
            updated.validated_at.is_some(),
            "{}: validated_at kept when not confirmed",
            b.name
        );

        // A new save clears the error.
        let saved = repo
            .upsert(&new(user, ProviderId::RUNWAY, "v1:1:newer:x"))
            .await
            .unwrap();
        assert!(saved.is_valid && saved.last_error.is_none());
    }
}

#[tokio::test]
async fn the_rewrap_walk_pages_in_id_order_and_swaps_with_compare_and_set() {
    for b in backends().await {
        let repo = b.store.credentials();
        let user = Uuid::new_v4();
        for p in ProviderId::BUILT_IN {
            repo.upsert(&new(user, p, &format!("legacy-{p}")))
                .await
                .unwrap();
        }
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = repo.page_after(after, 2).await.unwrap();
            if page.is_empty() {
                break;
            }
            after = page.last().map(|c| c.id);
            seen.extend(page);
        }
        let mine: Vec<_> = seen.iter().filter(|c| c.user_id == user).collect();
        assert_eq!(mine.len(), ProviderId::BUILT_IN.len(), "{}", b.name);
        let ids: Vec<_> = seen.iter().map(|c| c.id).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);

        let row = mine[0];
        assert!(
            repo.replace_sealed(row.id, &row.sealed, "v1:2:new:x")
                .await
                .unwrap()
        );
        assert!(
            !repo
                .replace_sealed(row.id, &row.sealed, "v1:2:other:x")
                .await
                .unwrap(),
            "stale expectation"
        );
        let now = repo
            .get(owner(user), row.provider().unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(now.sealed, "v1:2:new:x");
    }
}

#[tokio::test]
async fn rows_naming_unknown_providers_are_listed_not_fatal() {
    for b in backends().await {
        let user = Uuid::new_v4();
        b.store
            .credentials()
            .upsert(&new(user, ProviderId::RUNWAY, "v1:1:a:b"))
            .await
            .unwrap();
        insert_raw_row(&b.url, user, "sora").await;
        let rows = b
            .store
            .credentials()
            .list_for_user(owner(user))
            .await
            .unwrap();
        let providers: Vec<_> = rows.iter().map(|r| r.provider()).collect();
        assert_eq!(providers, [Some(ProviderId::RUNWAY), None], "{}", b.name);
    }
}

async fn insert_raw_row(url: &str, user: Uuid, provider: &str) {
    let now = byok_store::now();
    if url.starts_with("sqlite") {
        let pool = sqlx::SqlitePool::connect(url).await.unwrap();
        sqlx::query("INSERT INTO user_provider_configs (id, user_id, provider_name, encrypted_credentials, created_at, updated_at) VALUES ($1, $2, $3, 'x', $4, $4)")
            .bind(Uuid::new_v4().hyphenated().to_string())
            .bind(user.hyphenated().to_string())
            .bind(provider)
            .bind(now)
            .execute(&pool)
            .await
            .unwrap();
    } else {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        sqlx::query("INSERT INTO user_provider_configs (id, user_id, provider_name, encrypted_credentials) VALUES ($1, $2, $3, 'x')")
            .bind(Uuid::new_v4())
            .bind(user)
            .bind(provider)
            .execute(&pool)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_step_reads_its_job_and_the_key_for_the_jobs_provider_in_one_query() {
    for b in backends().await {
        let user = Uuid::new_v4();
        let job = crate::jobs::create(&b.store, &crate::jobs::new_job(user, None, None)).await;
        let (read, key) = b.store.jobs().get_for_step(job.id).await.unwrap().unwrap();
        assert_eq!(read.id, job.id, "{}", b.name);
        assert_eq!(key, None, "{}: no key stored yet", b.name);

        // A key for another provider, and the same user in another project, are not the
        // job's key.
        let repo = b.store.credentials();
        repo.upsert(&new(user, ProviderId::STABILITY, "v2:1:other-provider"))
            .await
            .unwrap();
        let project = b.store.projects().create("elsewhere").await.unwrap().id;
        repo.upsert(&NewCredential {
            owner: ProjectUser::new(project, user),
            ..new(user, ProviderId::RUNWAY, "v2:1:other-project")
        })
        .await
        .unwrap();
        let (_, key) = b.store.jobs().get_for_step(job.id).await.unwrap().unwrap();
        assert_eq!(key, None, "{}", b.name);

        repo.upsert(&new(user, ProviderId::RUNWAY, "v2:1:the-key"))
            .await
            .unwrap();
        repo.record_check(
            owner(user),
            ProviderId::RUNWAY,
            "v2:1:the-key",
            &CheckRecord {
                is_valid: false,
                last_error: Some("rejected".into()),
                validated_at: None,
            },
        )
        .await
        .unwrap();
        let (_, key) = b.store.jobs().get_for_step(job.id).await.unwrap().unwrap();
        let key = key.expect("the job's key");
        assert_eq!(
            (key.sealed.as_str(), key.is_valid, key.last_error.as_deref()),
            ("v2:1:the-key", false, Some("rejected")),
            "{}",
            b.name
        );
        assert!(
            !format!("{key:?}").contains("the-key"),
            "Debug hides the value"
        );
        assert!(
            b.store
                .jobs()
                .get_for_step(Uuid::new_v4())
                .await
                .unwrap()
                .is_none()
        );
    }
}
