//! `api.cache_ttl`: the token lookups and "has a valid key" answers an API process reuses,
//! and the bound they put on how late a change made elsewhere takes effect.

use std::time::Duration;

use byok_core::{ProjectUser, ProviderId};
use byok_store::CheckRecord;
use reqwest::Method;
use serde_json::json;
use uuid::Uuid;

use crate::{TestApi, error_code, send, sqlite_api_with};

async fn api_with_ttl(ttl: Duration) -> TestApi {
    sqlite_api_with(|s| s.api.cache_ttl = ttl).await
}

async fn store_key(api: &TestApi, user: Uuid) {
    let path = format!("/v1/users/{user}/providers/runway/credentials");
    let body =
        json!({ "credentials": { "api_key": "key_runway_0123456789abcdef" }, "validate": false });
    let (status, answer) = api.put_json(&path, &body).await;
    assert_eq!(status, 200, "{answer}");
}

async fn enqueue(api: &TestApi, user: Uuid) -> (u16, serde_json::Value) {
    send(api.req(Method::POST, "/v1/jobs").json(&json!({
        "user_id": user, "provider": "runway", "model": "gen4.5", "prompt": "a lighthouse",
    })))
    .await
}

#[tokio::test]
async fn a_token_revoked_elsewhere_is_refused_once_the_ttl_has_passed() {
    let ttl = Duration::from_millis(400);
    let api = api_with_ttl(ttl).await;
    let (status, _) = api.get("/v1/providers").await;
    assert_eq!(status, 200);
    // Revoked as `byok token revoke` does it: in the database, by another process.
    let token = api.store.tokens().list().await.unwrap()[0].id;
    api.store.tokens().revoke(token).await.unwrap();
    // The bound: once the answer read before the revocation is older than the ttl, the
    // token is refused. (Waiting is the point here: the bound is a time.)
    tokio::time::sleep(ttl).await;
    let (status, body) = api.get("/v1/providers").await;
    assert_eq!((status, error_code(&body)), (401, "unauthorized"), "{body}");
}

#[tokio::test]
async fn within_the_ttl_a_revoked_token_still_passes_and_its_expiry_does_not() {
    let api = api_with_ttl(Duration::from_secs(60)).await;
    let (status, _) = api.get("/v1/providers").await;
    assert_eq!(status, 200);
    let token = api.store.tokens().list().await.unwrap()[0].id;
    api.store.tokens().revoke(token).await.unwrap();
    let (status, _) = api.get("/v1/providers").await;
    assert_eq!(
        status, 200,
        "the documented bound: a revocation elsewhere waits for the ttl"
    );

    // An unknown token is never kept: each attempt is read (and refused) again.
    let bad = format!("byok_{}", "B".repeat(43));
    for _ in 0..2 {
        let (status, _) = send(api.http.get(api.url("/v1/providers")).bearer_auth(&bad)).await;
        assert_eq!(status, 401);
    }
}

#[tokio::test]
async fn a_key_deleted_through_this_api_is_missing_at_once_and_a_new_one_usable_at_once() {
    let api = api_with_ttl(Duration::from_secs(60)).await;
    let user = Uuid::new_v4();
    // No key: refused, and that answer is not kept.
    let (status, body) = enqueue(&api, user).await;
    assert_eq!(
        (status, error_code(&body)),
        (422, "credentials_missing"),
        "{body}"
    );
    store_key(&api, user).await;
    let (status, body) = enqueue(&api, user).await;
    assert_eq!(
        status, 202,
        "a key stored a moment ago is usable at once: {body}"
    );

    let path = format!("/v1/users/{user}/providers/runway");
    let (status, _) = send(api.req(Method::DELETE, &path)).await;
    assert_eq!(status, 204);
    let (status, body) = enqueue(&api, user).await;
    assert_eq!(
        (status, error_code(&body)),
        (422, "credentials_missing"),
        "{body}"
    );
}

#[tokio::test]
async fn a_key_found_invalid_elsewhere_passes_the_api_until_the_ttl_and_never_a_worker() {
    let api = api_with_ttl(Duration::from_secs(60)).await;
    let user = Uuid::new_v4();
    store_key(&api, user).await;
    let (status, _) = enqueue(&api, user).await;
    assert_eq!(status, 202);
    // A worker (another process) finds the key rejected by the provider.
    let owner = ProjectUser::new(byok_core::DEFAULT_PROJECT_ID, user);
    let stored = api
        .store
        .credentials()
        .get(owner, ProviderId::RUNWAY)
        .await
        .unwrap()
        .unwrap();
    api.store
        .credentials()
        .record_check(
            owner,
            ProviderId::RUNWAY,
            &stored.sealed,
            &CheckRecord {
                is_valid: false,
                last_error: Some("401 from the provider".into()),
                validated_at: None,
            },
        )
        .await
        .unwrap();
    // Within the ttl this process still accepts the job; the worker reads the key with the
    // job (one query) and sees it invalid.
    let (status, body) = enqueue(&api, user).await;
    assert_eq!(status, 202, "{body}");
    let id: Uuid = body["id"].as_str().unwrap().parse().unwrap();
    let (_, key) = api.store.jobs().get_for_step(id).await.unwrap().unwrap();
    assert!(!key.expect("the job's key").is_valid);
}
