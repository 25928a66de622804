//! The credential routes end to end, on both databases.

use byok_core::{DEFAULT_PROJECT_ID, ProjectUser, ProviderId};
use byok_crypto::{KeyRing, SealContext};
use reqwest::Method;
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::{Value, json};
use uuid::Uuid;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::{KEY_RING, TestApi, apis, error_code, runway_accepts, send, sqlite_api};

/// `user_id` in the default project.
fn owner(user_id: Uuid) -> ProjectUser {
    ProjectUser::new(DEFAULT_PROJECT_ID, user_id)
}

const KEY_A: &str = "key_aaaa0000111122223333444455556666777788889999aaaabbbbccccddddeeee";
const KEY_B: &str = "key_bbbb0000111122223333444455556666777788889999aaaabbbbccccddddeeee";

fn creds_path(user: Uuid, provider: &str) -> String {
    format!("/v1/users/{user}/providers/{provider}/credentials")
}

fn assert_no_secret(body: &Value) {
    let text = body.to_string();
    assert!(
        !text.contains(KEY_A) && !text.contains(KEY_B),
        "secret in a response: {text}"
    );
}

async fn requests_to(server: &MockServer) -> usize {
    server.received_requests().await.unwrap_or_default().len()
}

#[tokio::test]
async fn a_validated_key_is_stored_sealed_and_summarised() {
    for api in apis().await {
        runway_accepts(&api.runway, &[KEY_A]).await;
        let user = Uuid::new_v4();
        let (status, body) = api
            .put_json(
                &creds_path(user, "runway"),
                &json!({ "credentials": { "api_key": KEY_A } }),
            )
            .await;
        assert_eq!(status, 200, "{}: {body}", api.backend);
        assert_no_secret(&body);
        assert_eq!(body["provider"], "runway");
        assert_eq!(body["connected"], true);
        assert_eq!(body["is_valid"], true);
        assert_eq!(body["credential_hint"], "key_…eeee");
        assert!(body["validated_at"].is_string(), "{body}");
        assert!(body["last_error"].is_null());

        // The check went to Runway with the key and the version header.
        let requests = api.runway.received_requests().await.unwrap();
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].headers["x-runway-version"], "2024-11-06");

        // Stored sealed and bound to this user and provider.
        let row = api
            .store
            .credentials()
            .get(owner(user), ProviderId::RUNWAY)
            .await
            .unwrap()
            .unwrap();
        assert!(row.sealed.starts_with("v2:1:"), "{}", row.sealed);
        assert!(!row.sealed.contains(KEY_A));
        let ring = KeyRing::parse(&SecretString::from(KEY_RING)).unwrap();
        let opened = ring
            .open(
                &SealContext::new(owner(user), ProviderId::RUNWAY),
                &row.sealed,
            )
            .unwrap();
        let stored: Value = serde_json::from_slice(opened.expose_secret()).unwrap();
        assert_eq!(stored["api_key"], KEY_A);

        let (status, one) = api.get(&format!("/v1/users/{user}/providers/runway")).await;
        assert_eq!((status, &one), (200, &body));
        let (status, all) = api.get(&format!("/v1/users/{user}/providers")).await;
        assert_eq!(status, 200);
        assert_no_secret(&all);
        let providers = all["providers"].as_array().unwrap();
        assert_eq!(providers.len(), ProviderId::BUILT_IN.len());
        let connected: Vec<_> = providers
            .iter()
            .filter(|p| p["connected"] == true)
            .map(|p| p["provider"].clone())
            .collect();
        assert_eq!(connected, [json!("runway")]);
        let (status, body) = api
            .get(&format!("/v1/users/{user}/providers/stability"))
            .await;
        assert_eq!((status, error_code(&body)), (404, "not_found"));
    }
}

#[tokio::test]
async fn a_rejected_key_is_a_422_with_the_providers_reason_and_nothing_is_stored() {
    for api in apis().await {
        runway_accepts(&api.runway, &[KEY_A]).await;
        let user = Uuid::new_v4();
        let (status, body) = api
            .put_json(
                &creds_path(user, "runway"),
                &json!({ "credentials": { "api_key": KEY_B } }),
            )
            .await;
        assert_eq!(
            (status, error_code(&body)),
            (422, "credentials_invalid"),
            "{}: {body}",
            api.backend
        );
        assert!(
            body["error"]["details"]["provider_reason"]
                .as_str()
                .unwrap()
                .contains("Invalid API key provided"),
            "{body}"
        );
        assert_no_secret(&body);
        assert!(
            api.store
                .credentials()
                .get(owner(user), ProviderId::RUNWAY)
                .await
                .unwrap()
                .is_none()
        );
    }
}

#[tokio::test]
async fn an_unreachable_provider_stores_nothing_unless_validation_is_skipped() {
    let api = sqlite_api().await;
    Mock::given(method("GET"))
        .and(path("/v1/user/balance"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&api.stability)
        .await;
    let user = Uuid::new_v4();
    let body = json!({ "credentials": { "api_key": "sk-test-0123456789abcdef" } });
    let (status, reply) = api.put_json(&creds_path(user, "stability"), &body).await;
    assert_eq!(
        (status, error_code(&reply)),
        (503, "provider_unavailable"),
        "{reply}"
    );
    assert!(
        api.store
            .credentials()
            .get(owner(user), ProviderId::STABILITY)
            .await
            .unwrap()
            .is_none()
    );
    assert!(!reply.to_string().contains("sk-test-0123456789abcdef"));

    let before = requests_to(&api.stability).await;
    let unchecked = json!({ "credentials": { "api_key": "sk-test-0123456789abcdef", "organization_id": "org-7" }, "validate": false });
    let (status, reply) = api
        .put_json(&creds_path(user, "stability"), &unchecked)
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        requests_to(&api.stability).await,
        before,
        "validate:false asks nobody"
    );
    assert!(reply["validated_at"].is_null());
    assert_eq!(reply["is_valid"], true);
}

#[tokio::test]
async fn test_rechecks_the_stored_key_and_records_the_verdict() {
    for api in apis().await {
        runway_accepts(&api.runway, &[KEY_A]).await;
        let user = Uuid::new_v4();
        let (status, _) = api
            .put_json(
                &creds_path(user, "runway"),
                &json!({ "credentials": { "api_key": KEY_A } }),
            )
            .await;
        assert_eq!(status, 200);

        let test = format!("/v1/users/{user}/providers/runway/test");
        let (status, body) = api.post(&test).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["check"]["result"], "valid");
        assert_eq!(body["is_valid"], true);

        // The key is revoked at Runway: the next test says so and records it.
        api.runway.reset().await;
        runway_accepts(&api.runway, &[]).await;
        let (status, body) = api.post(&test).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body["check"]["result"], "rejected",
            "{}: {body}",
            api.backend
        );
        assert_eq!(body["is_valid"], false);
        assert!(
            body["last_error"]
                .as_str()
                .unwrap()
                .contains("Invalid API key provided")
        );
        assert_no_secret(&body);
        let row = api
            .store
            .credentials()
            .get(owner(user), ProviderId::RUNWAY)
            .await
            .unwrap()
            .unwrap();
        assert!(!row.is_valid);

        let (status, body) = api
            .post(&format!(
                "/v1/users/{}/providers/runway/test",
                Uuid::new_v4()
            ))
            .await;
        assert_eq!((status, error_code(&body)), (404, "not_found"));
    }
}

/// Swaps the sealed values of two rows directly in the database, as an
/// attacker with write access (or a bad migration) could.
async fn swap_sealed_values(api: &TestApi, a: Uuid, b: Uuid) {
    let sealed_a = api
        .store
        .credentials()
        .get(owner(a), ProviderId::RUNWAY)
        .await
        .unwrap()
        .unwrap()
        .sealed;
    let sealed_b = api
        .store
        .credentials()
        .get(owner(b), ProviderId::RUNWAY)
        .await
        .unwrap()
        .unwrap()
        .sealed;
    let sql = "UPDATE user_provider_configs SET encrypted_credentials = $1 WHERE user_id = $2 AND provider_name = 'runway'";
    for (user, sealed) in [(a, &sealed_b), (b, &sealed_a)] {
        let affected = if api.db_url.starts_with("sqlite") {
            let pool = sqlx::SqlitePool::connect(&api.db_url).await.unwrap();
            let user = user.hyphenated().to_string();
            sqlx::query(sql)
                .bind(sealed)
                .bind(user)
                .execute(&pool)
                .await
                .unwrap()
                .rows_affected()
        } else {
            let pool = sqlx::PgPool::connect(&api.db_url).await.unwrap();
            sqlx::query(sql)
                .bind(sealed)
                .bind(user)
                .execute(&pool)
                .await
                .unwrap()
                .rows_affected()
        };
        assert_eq!(affected, 1);
    }
}

#[tokio::test]
async fn a_sealed_value_swapped_between_users_is_unreadable_and_never_sent() {
    for api in apis().await {
        runway_accepts(&api.runway, &[KEY_A, KEY_B]).await;
        let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
        for (user, key) in [(alice, KEY_A), (bob, KEY_B)] {
            let (status, body) = api
                .put_json(
                    &creds_path(user, "runway"),
                    &json!({ "credentials": { "api_key": key } }),
                )
                .await;
            assert_eq!(status, 200, "{body}");
        }
        swap_sealed_values(&api, alice, bob).await;
        let before = requests_to(&api.runway).await;

        let (status, body) = api
            .post(&format!("/v1/users/{alice}/providers/runway/test"))
            .await;
        assert_eq!(status, 200, "{}: {body}", api.backend);
        assert_eq!(body["check"]["result"], "unreadable", "{body}");
        assert_eq!(body["is_valid"], false);
        assert!(
            body["last_error"]
                .as_str()
                .unwrap()
                .starts_with("credentials_unreadable"),
            "{body}"
        );
        assert_no_secret(&body);
        assert_eq!(
            requests_to(&api.runway).await,
            before,
            "{}: no key was sent anywhere",
            api.backend
        );

        let (status, body) = api
            .post(&format!("/v1/users/{bob}/providers/runway/test"))
            .await;
        assert_eq!(
            (status, body["check"]["result"].as_str()),
            (200, Some("unreadable"))
        );
        assert_eq!(requests_to(&api.runway).await, before);
    }
}

#[tokio::test]
async fn delete_removes_the_row() {
    for api in apis().await {
        let user = Uuid::new_v4();
        let body = json!({ "credentials": { "api_key": KEY_A }, "validate": false });
        assert_eq!(
            api.put_json(&creds_path(user, "runway"), &body).await.0,
            200
        );
        let path = format!("/v1/users/{user}/providers/runway");
        let (status, body) = send(api.req(Method::DELETE, &path)).await;
        assert_eq!((status, body), (204, Value::Null));
        assert!(
            api.store
                .credentials()
                .get(owner(user), ProviderId::RUNWAY)
                .await
                .unwrap()
                .is_none()
        );
        let (status, body) = send(api.req(Method::DELETE, &path)).await;
        assert_eq!((status, error_code(&body)), (404, "not_found"));
        let (status, _) = api.get(&path).await;
        assert_eq!(status, 404);
    }
}

#[tokio::test]
async fn the_provider_catalogue_lists_every_provider_without_secrets() {
    let api = sqlite_api().await;
    let (status, body) = api.get("/v1/providers").await;
    assert_eq!(status, 200);
    let ids: Vec<_> = body["providers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].clone())
        .collect();
    assert_eq!(
        ids,
        [
            json!("veo"),
            json!("runway"),
            json!("stability"),
            json!("fal"),
            json!("replicate")
        ]
    );
    for p in body["providers"].as_array().unwrap() {
        assert!(
            p["display_name"].is_string() && p["description"].is_string() && p["icon"].is_string(),
            "{p}"
        );
        assert!(
            !p["credential_fields"].as_array().unwrap().is_empty(),
            "{p}"
        );
        assert!(
            p["rate_limits"]["per_minute"].is_u64() && p["rate_limits"]["per_hour"].is_u64(),
            "{p}"
        );
    }
}
