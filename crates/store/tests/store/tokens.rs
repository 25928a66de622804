use byok_store::{RevokeOutcome, StoreError, TOKEN_PREFIX};
use secrecy::ExposeSecret;
use uuid::Uuid;

use crate::backends;

#[tokio::test]
async fn tokens_authenticate_until_revoked() {
    for b in backends().await {
        let repo = b.store.tokens();
        let (token, secret) = repo.create("producer-a").await.unwrap();
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
                    b.store.tokens().create(bad).await,
                    Err(StoreError::Invalid(_))
                ),
                "{bad:?}"
            );
        }
    }
}
