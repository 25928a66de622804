//! Bad input gets the documented status and error shape, never a 500.

use reqwest::Method;
use serde_json::json;

use crate::{error_code, send, sqlite_api, sqlite_api_with};

const USER: &str = "0b6c1d2e-3f40-4a5b-8c6d-7e8f90a1b2c3";

#[tokio::test]
async fn missing_unknown_and_revoked_tokens_are_401() {
    let api = sqlite_api().await;
    let path = format!("/v1/users/{USER}/providers");

    let (status, body) = send(api.http.get(api.url(&path))).await;
    assert_eq!((status, error_code(&body)), (401, "unauthorized"));

    let response = api.http.get(api.url(&path)).send().await.unwrap();
    assert_eq!(response.headers()["www-authenticate"], "Bearer");

    for bad in [
        "byok_nope",
        "Basic abc",
        &format!("byok_{}", "A".repeat(43)),
    ] {
        let (status, body) = send(api.http.get(api.url(&path)).bearer_auth(bad)).await;
        assert_eq!((status, error_code(&body)), (401, "unauthorized"), "{bad}");
    }
    let (status, body) = send(
        api.http
            .get(api.url(&path))
            .header("authorization", api.token.clone()),
    )
    .await;
    assert_eq!(
        (status, error_code(&body)),
        (401, "unauthorized"),
        "no Bearer scheme"
    );

    let (status, _) = api.get(&path).await;
    assert_eq!(status, 200);
    let token = api.store.tokens().list().await.unwrap()[0].id;
    api.store.tokens().revoke(token).await.unwrap();
    let (status, body) = api.get(&path).await;
    assert_eq!(
        (status, error_code(&body)),
        (401, "unauthorized"),
        "revoked"
    );
}

#[tokio::test]
async fn malformed_bodies_wrong_types_and_sizes() {
    let api = sqlite_api_with(|s| s.api.max_body_bytes = 2048).await;
    let path = format!("/v1/users/{USER}/providers/runway/credentials");
    let put = || api.req(Method::PUT, &path);

    let (status, body) = send(
        put()
            .header("content-type", "application/json")
            .body("{\"credentials\": {"),
    )
    .await;
    assert_eq!((status, error_code(&body)), (400, "bad_request"), "{body}");

    let (status, body) = send(
        put()
            .header("content-type", "application/json")
            .body("{} trailing"),
    )
    .await;
    assert_eq!((status, error_code(&body)), (400, "bad_request"), "{body}");

    let (status, body) = send(put().header("content-type", "text/plain").body("{}")).await;
    assert_eq!((status, error_code(&body)), (415, "unsupported_media_type"));
    let (status, body) = send(put().body("{}")).await;
    assert_eq!(
        (status, error_code(&body)),
        (415, "unsupported_media_type"),
        "no content type"
    );

    let huge = json!({ "credentials": { "api_key": "k".repeat(4096) } });
    let (status, body) = send(put().json(&huge)).await;
    assert_eq!(
        (status, error_code(&body)),
        (413, "payload_too_large"),
        "{body}"
    );

    let (status, body) = send(put().json(&json!({ "validate": true }))).await;
    assert_eq!(
        (status, error_code(&body)),
        (422, "invalid_request"),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("credentials"),
        "{body}"
    );

    let (status, body) = send(put().json(&json!({ "credentials": {}, "validate": "yes" }))).await;
    assert_eq!((status, error_code(&body)), (422, "invalid_request"));
    assert_eq!(body["error"]["details"]["field"], "validate", "{body}");

    let (status, body) = send(put().json(&json!({ "credentials": {}, "extra": 1 }))).await;
    assert_eq!(
        (status, error_code(&body)),
        (422, "invalid_request"),
        "{body}"
    );

    let (status, body) =
        send(put().json(&json!({ "credentials": { "organization_id": "o" } }))).await;
    assert_eq!((status, error_code(&body)), (422, "invalid_request"));
    assert_eq!(
        body["error"]["details"]["field"], "credentials.api_key",
        "{body}"
    );

    // Nothing was stored by any of that.
    assert!(
        api.store
            .credentials()
            .list_for_user(byok_core::ProjectUser::new(
                byok_core::DEFAULT_PROJECT_ID,
                USER.parse().unwrap()
            ))
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn bad_paths_and_methods() {
    let api = sqlite_api().await;

    let (status, body) = api.get("/v1/users/not-a-uuid/providers").await;
    assert_eq!((status, error_code(&body)), (400, "bad_request"));
    assert_eq!(body["error"]["details"]["field"], "user_id");

    let (status, body) = api.get("/v1/users/not-a-uuid/providers/runway").await;
    assert_eq!((status, error_code(&body)), (400, "bad_request"));

    let (status, body) = api.get(&format!("/v1/users/{USER}/providers/sora")).await;
    assert_eq!((status, error_code(&body)), (404, "not_found"));
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown provider"),
        "{body}"
    );

    let (status, body) = api.get("/v1/nothing-here").await;
    assert_eq!((status, error_code(&body)), (404, "not_found"));
    let (status, body) = send(api.http.get(api.url("/nothing"))).await;
    assert_eq!(
        (status, error_code(&body)),
        (404, "not_found"),
        "404 without a token too"
    );

    let (status, body) =
        send(api.req(Method::PATCH, &format!("/v1/users/{USER}/providers/runway"))).await;
    assert_eq!((status, error_code(&body)), (405, "method_not_allowed"));
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let api = sqlite_api().await;
    for response in [
        api.http.get(api.url("/healthz")).send().await.unwrap(),
        api.http.get(api.url("/v1/providers")).send().await.unwrap(),
        api.req(Method::GET, "/v1/users/x/providers")
            .send()
            .await
            .unwrap(),
        api.req(Method::GET, "/v1/providers").send().await.unwrap(),
    ] {
        let id = response
            .headers()
            .get("x-request-id")
            .expect("x-request-id");
        assert!(uuid::Uuid::parse_str(id.to_str().unwrap()).is_ok());
    }
    let echoed = api
        .http
        .get(api.url("/healthz"))
        .header("x-request-id", "caller-chosen-id")
        .send()
        .await
        .unwrap();
    assert_eq!(echoed.headers()["x-request-id"], "caller-chosen-id");
}
