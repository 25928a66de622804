//! A job's fallbacks are checked at enqueue like the job's own provider and model, each
//! problem a 422 naming its entry, with nothing stored.

use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{error_code, send, sqlite_api};

#[tokio::test]
async fn each_fallback_is_checked_at_enqueue_naming_its_entry() {
    let api = sqlite_api().await;
    let user = Uuid::new_v4();
    for (provider, key) in [
        (
            "runway",
            json!({ "api_key": "key_runway_0123456789abcdef" }),
        ),
        (
            "fal",
            json!({ "api_key": "fal-key-id:fal-key-secret-0123456789" }),
        ),
    ] {
        let path = format!("/v1/users/{user}/providers/{provider}/credentials");
        let (status, body) = api
            .put_json(&path, &json!({ "credentials": key, "validate": false }))
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let job = |fallbacks: Value| {
        json!({
            "user_id": user, "provider": "runway", "model": "gen4.5", "prompt": "a lighthouse",
            "duration_seconds": 5, "fallbacks": fallbacks,
        })
    };
    let luma = json!({ "provider": "fal", "model": "luma-ray-2-flash" });
    let five_luma: Vec<Value> = (0..6).map(|_| luma.clone()).collect();
    for (fallbacks, code, field) in [
        (
            json!([{ "provider": "nope", "model": "x" }]),
            "invalid_request",
            "fallbacks[0].provider",
        ),
        (
            json!([{ "provider": "fal", "model": "no-such-model" }]),
            "invalid_request",
            "fallbacks[0].model",
        ),
        (
            json!([luma, { "provider": "replicate", "model": "bytedance/seedance-2.0-fast" }]),
            "credentials_missing",
            "fallbacks[1]",
        ),
        (
            json!([{ "provider": "fal", "model": "luma-ray-2-flash", "duration_seconds": 600 }]),
            "invalid_request",
            "fallbacks[0].duration_seconds",
        ),
        (
            json!([{ "provider": "runway", "model": "gen4.5" }]),
            "invalid_request",
            "fallbacks[0]",
        ),
        (json!([luma, luma]), "invalid_request", "fallbacks[1]"),
        (
            json!([{ "provider": "fal", "model": "luma-ray-2-flash", "colour": "red" }]),
            "invalid_request",
            "fallbacks[0]",
        ),
        (json!(five_luma), "invalid_request", "fallbacks"),
    ] {
        let (status, body) = send(
            api.req(Method::POST, "/v1/jobs")
                .json(&job(fallbacks.clone())),
        )
        .await;
        assert_eq!(
            (status, error_code(&body)),
            (422, code),
            "{fallbacks}: {body}"
        );
        let named = body["error"]["details"]["field"]
            .as_str()
            .unwrap_or_default();
        assert!(
            named.starts_with(field),
            "{fallbacks}: named {named}, not {field}"
        );
    }
    let owner = byok_core::ProjectUser::new(byok_core::DEFAULT_PROJECT_ID, user);
    let stored = api
        .store
        .jobs()
        .list_for_user(owner, None, None, 10)
        .await
        .unwrap();
    assert!(stored.is_empty(), "nothing stored: {stored:?}");

    let (status, body) = send(api.req(Method::POST, "/v1/jobs").json(&job(json!([luma])))).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["request"]["fallbacks"], json!([luma]));
    assert_eq!(
        body.get("route"),
        None,
        "a job that never moved has no route"
    );
}
