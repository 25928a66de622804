use secrecy::SecretString;

use crate::{error_code, send, sqlite_api, sqlite_api_with};

#[tokio::test]
async fn liveness_and_readiness_on_the_embedded_shape() {
    let api = sqlite_api().await;
    let (status, body) = send(api.http.get(api.url("/healthz"))).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    let (status, body) = send(api.http.get(api.url("/readyz"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["checks"]["store"], "ok");
    assert_eq!(body["checks"]["queue"], "ok");
}

#[tokio::test]
async fn readiness_asks_the_queue_engine_and_names_the_failed_dependency() {
    // A Redis of the test's own, with a password, that the test then stops.
    let Some(redis) = byok_testing::spawn_redis(&["--requirepass", "secretpw"]) else {
        return;
    };
    let url = format!("redis://:secretpw@127.0.0.1:{}", redis.port);
    let api = sqlite_api_with(|s| s.queue.url = SecretString::from(url)).await;
    let (status, body) = send(api.http.get(api.url("/readyz"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["checks"]["queue"], "ok");

    drop(redis);
    let (status, body) = send(api.http.get(api.url("/readyz"))).await;
    assert_eq!(
        (status, error_code(&body)),
        (503, "service_unavailable"),
        "{body}"
    );
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("queue") && !message.contains("store"),
        "{message}"
    );
    assert_eq!(body["error"]["details"]["checks"]["store"], "ok");
    assert!(!body.to_string().contains("secretpw"), "{body}");

    // Liveness does not depend on the queue.
    let (status, _) = send(api.http.get(api.url("/healthz"))).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn readiness_fails_when_the_database_is_gone() {
    let api = sqlite_api().await;
    api.store.close().await;
    let (status, body) = send(api.http.get(api.url("/readyz"))).await;
    assert_eq!(
        (status, error_code(&body)),
        (503, "service_unavailable"),
        "{body}"
    );
    assert!(body["error"]["message"].as_str().unwrap().contains("store"));
    // Authenticated routes answer 503 as well, not 500.
    let (status, body) = api.get("/v1/providers").await;
    assert_eq!(
        (status, error_code(&body)),
        (503, "service_unavailable"),
        "{body}"
    );
}
