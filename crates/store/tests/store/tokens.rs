use byok_core::{DEFAULT_PROJECT_ID, Scope, Scopes};
use byok_store::{NewToken, RevokeOutcome, StoreError, TOKEN_PREFIX};
use secrecy::ExposeSecret;
use uuid::Uuid;

use crate::backends;

#[tokio::test]
async fn tokens_authenticate_until_revoked() {
    for b in backends().await {
        let repo = b.store.tokens();
        let (token, secret) = repo
            .create(&NewToken::new("producer-a", DEFAULT_PROJECT_ID))
            .await
            .unwrap();
        let secret = secret.expose_secret();
        assert!(secret.starts_with(TOKEN_PREFIX));
        assert_eq!(secret.len(), 48);

        let found = repo
            .authenticate(secret)
            .await
            .unwrap()
            .expect("valid token");
        assert_eq!(found.id, token.id);
        assert_eq!(found.name, "producer-a");
        assert!(found.last_used_at.is_some(), "{}: use is recorded", b.name);
        let listed = repo.list().await.unwrap();
        assert!(
            listed
                .iter()
                .any(|t| t.id == token.id && t.last_used_at.is_some())
        );

        let mut wrong = secret.to_owned();
        wrong.replace_range(10..11, if &secret[10..11] == "A" { "B" } else { "A" });
        assert!(repo.authenticate(&wrong).await.unwrap().is_none());
        assert!(repo.authenticate("").await.unwrap().is_none());
        assert!(repo.authenticate("byok_short").await.unwrap().is_none());

        assert_eq!(repo.revoke(token.id).await.unwrap(), RevokeOutcome::Revoked);
        assert!(
            repo.authenticate(secret).await.unwrap().is_none(),
            "{}: revoked",
            b.name
        );
        assert_eq!(
            repo.revoke(token.id).await.unwrap(),
            RevokeOutcome::AlreadyRevoked
        );
        assert_eq!(
            repo.revoke(Uuid::new_v4()).await.unwrap(),
            RevokeOutcome::NotFound
        );
        assert!(
            repo.list()
                .await
                .unwrap()
                .iter()
                .any(|t| t.id == token.id && t.revoked_at.is_some())
        );
    }
}

#[tokio::test]
async fn token_names_are_checked() {
    for b in backends().await {
        for bad in ["", "   ", "tab\there", &"x".repeat(101)] {
            assert!(
                matches!(
                    b.store
                        .tokens()
                        .create(&NewToken::new(bad, DEFAULT_PROJECT_ID))
                        .await,
                    Err(StoreError::Invalid(_))
                ),
                "{bad:?}"
            );
        }
    }
}

#[tokio::test]
async fn tokens_carry_their_project_scopes_and_expiry() {
    for b in backends().await {
        let project = b.store.projects().create("app-one").await.unwrap();
        assert!(matches!(
            b.store.projects().create("app-one").await,
            Err(StoreError::Conflict(_))
        ));
        assert!(matches!(
            b.store.projects().create("App One").await,
            Err(StoreError::Invalid(_))
        ));
        assert_eq!(
            b.store.projects().find("app-one").await.unwrap(),
            Some(project.clone())
        );
        assert_eq!(
            b.store
                .projects()
                .find(&project.id.to_string())
                .await
                .unwrap(),
            Some(project.clone())
        );

        let repo = b.store.tokens();
        let expires_at = byok_store::now() + chrono::Duration::days(30);
        let new = NewToken {
            scopes: Scopes::parse_list("jobs:read,admin").unwrap(),
            expires_at: Some(expires_at),
            ..NewToken::new("reader", project.id)
        };
        let (token, secret) = repo.create(&new).await.unwrap();
        let found = repo
            .authenticate(secret.expose_secret())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found.project_id, project.id, "{}", b.name);
        assert_eq!(found.scopes, new.scopes);
        assert!(found.scopes.contains(Scope::Admin));
        assert!(!found.scopes.contains(Scope::JobsWrite));
        assert_eq!(found.expires_at, Some(expires_at));
        assert!(!found.is_expired(byok_store::now()));
        assert!(found.is_expired(expires_at));
        let listed = repo.list().await.unwrap();
        assert!(listed.contains(&found), "{}", b.name);
        assert_eq!(token.id, found.id);

        // Refused before anything is written.
        for (bad, why) in [
            (
                NewToken {
                    scopes: Scopes::default(),
                    ..NewToken::new("none", project.id)
                },
                "no scope",
            ),
            (
                NewToken {
                    expires_at: Some(byok_store::now() - chrono::Duration::seconds(1)),
                    ..NewToken::new("past", project.id)
                },
                "expired already",
            ),
            (NewToken::new("nowhere", Uuid::now_v7()), "no such project"),
        ] {
            assert!(
                matches!(repo.create(&bad).await, Err(StoreError::Invalid(_))),
                "{}: {why}",
                b.name
            );
        }
        assert_eq!(repo.list().await.unwrap().len(), listed.len());
    }
}
