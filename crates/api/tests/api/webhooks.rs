//! `/v1/webhooks`: endpoints, secrets, deliveries; the receiver URL guard; scopes and
//! projects.

use byok_core::{
    DEFAULT_PROJECT_ID, ErrorCode, ErrorRecord, GenerationRequest, ProviderId, Scopes,
};
use byok_store::{Inserted, NewJob};
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{TestApi, apis, error_code, send, sqlite_api_with};

async fn create(api: &TestApi, body: Value) -> (u16, Value) {
    send(api.req(Method::POST, "/v1/webhooks").json(&body)).await
}

fn endpoint_body(url: &str) -> Value {
    json!({ "url": url, "events": ["job.succeeded", "job.failed"], "description": "app" })
}

#[tokio::test]
async fn endpoints_are_created_with_a_secret_shown_once_changed_rotated_and_deleted() {
    for api in apis().await {
        let (status, created) = create(&api, endpoint_body("http://127.0.0.1:9/hook")).await;
        assert_eq!(status, 201, "{}: {created}", api.backend);
        let secret = created["secret"].as_str().unwrap().to_owned();
        assert!(secret.starts_with("whsec_"), "{created}");
        assert_eq!(created["events"], json!(["job.succeeded", "job.failed"]));
        assert_eq!(created["enabled"], true);
        let id = created["id"].as_str().unwrap().to_owned();

        let (status, got) = api.get(&format!("/v1/webhooks/{id}")).await;
        assert_eq!(status, 200);
        assert!(got.get("secret").is_none(), "never shown again: {got}");
        assert!(!got.to_string().contains(&secret[6..]));
        let (_, listed) = api.get("/v1/webhooks").await;
        assert_eq!(listed["endpoints"].as_array().unwrap().len(), 1);

        let (status, changed) = send(
            api.req(Method::PATCH, &format!("/v1/webhooks/{id}"))
                .json(&json!({ "events": ["job.cancelled"], "enabled": false })),
        )
        .await;
        assert_eq!(status, 200, "{changed}");
        assert_eq!(changed["events"], json!(["job.cancelled"]));
        assert_eq!(changed["enabled"], false);
        assert_eq!(changed["disabled_reason"], "disabled by the project");
        assert_eq!(changed["url"], "http://127.0.0.1:9/hook");

        let (status, rotated) = api.post(&format!("/v1/webhooks/{id}/rotate-secret")).await;
        assert_eq!(status, 200, "{rotated}");
        let new_secret = rotated["secret"].as_str().unwrap();
        assert!(new_secret.starts_with("whsec_") && new_secret != secret);
        let until: chrono::DateTime<chrono::Utc> =
            serde_json::from_value(rotated["previous_secret_expires_at"].clone()).unwrap();
        let overlap = until - chrono::Utc::now();
        assert!(overlap > chrono::Duration::hours(23) && overlap <= chrono::Duration::hours(24));

        let (status, _) = send(api.req(Method::DELETE, &format!("/v1/webhooks/{id}"))).await;
        assert_eq!(status, 204);
        let (status, body) = api.get(&format!("/v1/webhooks/{id}")).await;
        assert_eq!((status, error_code(&body)), (404, "not_found"));
    }
}

#[tokio::test]
async fn bad_endpoints_are_refused_with_the_field_named_and_nothing_stored() {
    let api = sqlite_api_with(|s| s.fetch.allow_private_networks = false).await;
    let cases = [
        (
            json!({ "url": "https://hooks.example.com", "events": ["job.started"] }),
            "events[0]",
        ),
        (
            json!({ "url": "https://hooks.example.com", "events": [] }),
            "events",
        ),
        (endpoint_body("http://hooks.example.com/x"), "url"),
        (endpoint_body("https://10.0.0.7/x"), "url"),
        (
            endpoint_body("https://169.254.169.254/latest/meta-data"),
            "url",
        ),
        (endpoint_body("https://[::1]/x"), "url"),
        (endpoint_body("https://localhost/x"), "url"),
        (endpoint_body("ftp://hooks.example.com/x"), "url"),
        (
            endpoint_body(&format!("https://h.example.com/{}", "a".repeat(2100))),
            "url",
        ),
        (
            json!({ "url": "https://hooks.example.com", "events": ["job.failed"], "description": "x".repeat(501) }),
            "description",
        ),
    ];
    for (body, field) in cases {
        let (status, answer) = create(&api, body.clone()).await;
        assert_eq!(status, 422, "{body}: {answer}");
        assert_eq!(error_code(&answer), "invalid_request");
        assert_eq!(answer["error"]["details"]["field"], field, "{answer}");
    }
    let (_, listed) = api.get("/v1/webhooks").await;
    assert_eq!(listed["endpoints"], json!([]));
}

#[tokio::test]
async fn a_jobs_webhook_url_needs_a_safe_url_and_the_projects_job_secret() {
    let api = sqlite_api_with(|s| s.fetch.allow_private_networks = false).await;
    let user = Uuid::new_v4();
    let job = |url: &str| {
        json!({ "user_id": user, "provider": "runway", "model": "gen4.5",
                "prompt": "a cat", "webhook_url": url })
    };
    for url in [
        "http://app.example.com/hook",
        "https://192.168.1.2/hook",
        "https://169.254.169.254/",
    ] {
        let (status, body) = send(api.req(Method::POST, "/v1/jobs").json(&job(url))).await;
        assert_eq!(status, 422, "{url}: {body}");
        assert_eq!(body["error"]["details"]["field"], "webhook_url", "{body}");
    }
    let (status, body) = send(
        api.req(Method::POST, "/v1/jobs")
            .json(&job("https://93.184.215.14/hook")),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/v1/webhooks/job-secret"),
        "{body}"
    );
    let (status, first) = api.post("/v1/webhooks/job-secret").await;
    assert_eq!(status, 200, "{first}");
    assert!(first["secret"].as_str().unwrap().starts_with("whsec_"));
    assert!(first["previous_secret_expires_at"].is_null());
    let (_, second) = api.post("/v1/webhooks/job-secret").await;
    assert_ne!(first["secret"], second["secret"]);
    assert!(second["previous_secret_expires_at"].is_string());
    // Nothing was stored by the refused enqueues.
    assert!(
        api.store
            .jobs()
            .list_for_user(
                byok_core::ProjectUser::new(DEFAULT_PROJECT_ID, user),
                None,
                None,
                10
            )
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn webhooks_need_their_scope_and_stay_inside_their_project() {
    for api in apis().await {
        let (_, created) = create(&api, endpoint_body("http://127.0.0.1:9/hook")).await;
        let id = created["id"].as_str().unwrap().to_owned();
        let jobs_only = api
            .token(
                DEFAULT_PROJECT_ID,
                Scopes::parse_list("jobs:read,jobs:write").unwrap(),
            )
            .await;
        let (status, body) = send(api.req_as(&jobs_only, Method::GET, "/v1/webhooks")).await;
        assert_eq!((status, error_code(&body)), (403, "insufficient_scope"));
        assert_eq!(body["error"]["details"]["scope"], "webhooks");

        let other = api
            .project(&format!("other-{}", Uuid::new_v4().simple()))
            .await;
        let outsider = api.token(other, Scopes::producer()).await;
        let missing = Uuid::now_v7();
        for path in [
            format!("/v1/webhooks/{id}"),
            format!("/v1/webhooks/{id}/deliveries"),
        ] {
            let (status, theirs) = send(api.req_as(&outsider, Method::GET, &path)).await;
            let (_, none) = send(api.req_as(
                &outsider,
                Method::GET,
                &path.replace(&id, &missing.to_string()),
            ))
            .await;
            assert_eq!(status, 404, "{path}");
            assert_eq!(theirs, none, "no existence oracle on {path}");
        }
        let (status, _) = send(api.req_as(
            &outsider,
            Method::POST,
            &format!("/v1/webhooks/{id}/rotate-secret"),
        ))
        .await;
        assert_eq!(status, 404);
        let (status, _) =
            send(api.req_as(&outsider, Method::DELETE, &format!("/v1/webhooks/{id}"))).await;
        assert_eq!(status, 404);
        let (_, listed) = send(api.req_as(&outsider, Method::GET, "/v1/webhooks")).await;
        assert_eq!(listed["endpoints"], json!([]), "{}", api.backend);
    }
}

#[tokio::test]
async fn deliveries_are_listed_by_endpoint_and_retried_only_when_finished() {
    for api in apis().await {
        let (_, created) = create(&api, endpoint_body("http://127.0.0.1:9/hook")).await;
        let id = created["id"].as_str().unwrap().to_owned();
        // Three failed jobs: three job.failed deliveries (this test runs no worker, so they
        // stay pending).
        for _ in 0..3 {
            let user = Uuid::new_v4();
            let new = NewJob {
                project_id: DEFAULT_PROJECT_ID,
                user_id: user,
                provider: ProviderId::RUNWAY,
                model: "gen4_turbo".into(),
                request: GenerationRequest::new(user, ProviderId::RUNWAY, "gen4_turbo"),
                metadata: json!({}),
                created_by_token: None,
                idempotency: None,
                batch_id: None,
                usage: Default::default(),
            };
            let Inserted::Created(job) = api.store.jobs().insert(&new).await.unwrap() else {
                panic!("created");
            };
            let error = ErrorRecord {
                code: ErrorCode::ContentRejected,
                message: "refused".into(),
                retryable: false,
            };
            assert!(api.store.jobs().fail(job.id, &error, 1).await.unwrap());
        }
        let (status, page) = api
            .get(&format!("/v1/webhooks/{id}/deliveries?limit=2"))
            .await;
        assert_eq!(status, 200, "{page}");
        let deliveries = page["deliveries"].as_array().unwrap();
        assert_eq!(deliveries.len(), 2);
        assert_eq!(deliveries[0]["event_type"], "job.failed");
        assert_eq!(deliveries[0]["status"], "pending");
        assert!(
            deliveries[0]["webhook_id"]
                .as_str()
                .unwrap()
                .starts_with("msg_")
        );
        let cursor = page["next_cursor"].as_str().unwrap();
        let (_, rest) = api
            .get(&format!(
                "/v1/webhooks/{id}/deliveries?limit=2&cursor={cursor}"
            ))
            .await;
        assert_eq!(rest["deliveries"].as_array().unwrap().len(), 1, "{rest}");
        assert!(rest["next_cursor"].is_null());

        let delivery = deliveries[0]["id"].as_str().unwrap();
        let (status, body) = api
            .post(&format!("/v1/webhooks/deliveries/{delivery}/retry"))
            .await;
        assert_eq!((status, error_code(&body)), (409, "conflict"), "{body}");
        let (status, body) = api
            .post(&format!("/v1/webhooks/deliveries/{}/retry", Uuid::now_v7()))
            .await;
        assert_eq!((status, error_code(&body)), (404, "not_found"));
        for bad in ["limit=0", "limit=101", "cursor=nope"] {
            let (status, body) = api
                .get(&format!("/v1/webhooks/{id}/deliveries?{bad}"))
                .await;
            assert_eq!((status, error_code(&body)), (400, "bad_request"), "{bad}");
        }
    }
}
