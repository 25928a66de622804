//! Budgets over HTTP: set, read and removed per project and per user; bad limits are 422s
//! naming the field with nothing stored; a job the standing cannot take is refused at
//! enqueue with what is left; no token gets past a budget.

use byok_core::Scopes;
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{TestApi, apis, error_code, send, sqlite_api};

async fn store_fal_key(api: &TestApi, user: Uuid) {
    let path = format!("/v1/users/{user}/providers/fal/credentials");
    let key = json!({ "credentials": { "api_key": "fal-key-id:fal-key-secret-0123456789" }, "validate": false });
    let (status, body) = api.put_json(&path, &key).await;
    assert_eq!(status, 200, "{}: {body}", api.backend);
}

/// Kling 2.1 Master at fal: $0.28 a second, so 5 s cost $1.40.
fn kling(user: Uuid) -> Value {
    json!({
        "user_id": user, "provider": "fal", "model": "kling-v2.1-master", "prompt": "a lighthouse",
        "image_url": "https://93.184.215.14/first-frame.png", "duration_seconds": 5,
    })
}

#[tokio::test]
async fn budgets_are_set_read_and_enforced_at_enqueue() {
    for api in apis().await {
        let user = Uuid::new_v4();
        store_fal_key(&api, user).await;
        let path = format!("/v1/users/{user}/budget");
        let (status, empty) = api.get(&path).await;
        assert_eq!(status, 200, "{empty}");
        assert_eq!(empty["limits"], json!([]));

        let limits = json!({ "limits": [
            { "provider": "fal", "period": "day", "limit_usd": "2" },
            { "period": "month", "limit_usd": 50 },
        ]});
        let (status, view) = send(api.req(Method::PUT, &path).json(&limits)).await;
        assert_eq!(status, 200, "{}: {view}", api.backend);
        assert_eq!(view["user_id"], user.to_string());
        let view_limits = view["limits"].as_array().unwrap();
        assert_eq!(view_limits.len(), 2);
        assert_eq!(view_limits[0]["period"], "month", "overall first: {view}");
        assert_eq!(view_limits[0]["limit_usd"], 50.0);
        assert_eq!(view_limits[0]["remaining_usd"], 50.0);
        assert_eq!(view_limits[1]["provider"], "fal");
        assert_eq!(view_limits[1]["spent_usd"], 0.0);
        assert!(
            view_limits[1]["period_start"]
                .as_str()
                .unwrap()
                .ends_with("T00:00:00Z")
        );
        let (_, read) = api.get(&path).await;
        assert_eq!(read, view);

        // $1.40 fits in $2; held by a worker, the next $1.40 would not.
        let (status, job) = send(api.req(Method::POST, "/v1/jobs").json(&kling(user))).await;
        assert_eq!(status, 202, "{job}");
        let job_id: Uuid = job["id"].as_str().unwrap().parse().unwrap();
        let held = byok_budgets::Charge {
            job_id,
            owner: byok_core::ProjectUser::new(byok_core::DEFAULT_PROJECT_ID, user),
            provider: byok_core::ProviderId::FAL,
            estimate: Some(byok_core::Usd::from_micros(1_400_000)),
        };
        api.budgets.reserve(&held).await.unwrap();
        let jobs_before = api
            .store
            .jobs()
            .list_for_user(
                byok_core::ProjectUser::new(byok_core::DEFAULT_PROJECT_ID, user),
                None,
                None,
                100,
            )
            .await
            .unwrap()
            .len();
        let (status, refused) = send(api.req(Method::POST, "/v1/jobs").json(&kling(user))).await;
        assert_eq!(
            (status, error_code(&refused)),
            (422, "budget_exceeded"),
            "{}: {refused}",
            api.backend
        );
        let details = &refused["error"]["details"];
        assert_eq!(details["remaining_usd"], 0.6, "{refused}");
        assert_eq!(details["estimated_cost_usd"], 1.4);
        assert_eq!(details["budget"]["provider"], "fal");
        assert_eq!(details["budget"]["period"], "day");
        assert_eq!(details["budget"]["user_id"], user.to_string());
        let jobs_after = api
            .store
            .jobs()
            .list_for_user(
                byok_core::ProjectUser::new(byok_core::DEFAULT_PROJECT_ID, user),
                None,
                None,
                100,
            )
            .await
            .unwrap()
            .len();
        assert_eq!(jobs_before, jobs_after, "nothing stored");

        // A model without a price cannot be bounded: refused while a limit applies.
        let mut luma = kling(user);
        luma["model"] = json!("luma-ray-2-flash");
        let (status, unpriced) = send(api.req(Method::POST, "/v1/jobs").json(&luma)).await;
        assert_eq!(
            (status, error_code(&unpriced)),
            (422, "budget_exceeded"),
            "{unpriced}"
        );
        assert_eq!(
            unpriced["error"]["details"]["estimated_cost_usd"],
            Value::Null
        );

        // The project's own budget binds every user; an admin token gets no pass.
        let other = Uuid::new_v4();
        store_fal_key(&api, other).await;
        let (status, body) = send(api.req(Method::PUT, "/v1/budget").json(&json!({ "limits": [
            { "period": "week", "limit_usd": "1.00" }
        ]})))
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body.get("user_id"), None);
        let admin = api
            .token(
                byok_core::DEFAULT_PROJECT_ID,
                Scopes::parse_list("jobs:write,admin").unwrap(),
            )
            .await;
        let (status, body) = send(
            api.req_as(&admin, Method::POST, "/v1/jobs")
                .json(&kling(other)),
        )
        .await;
        assert_eq!(
            (status, error_code(&body)),
            (422, "budget_exceeded"),
            "{body}"
        );
        assert_eq!(body["error"]["details"]["budget"]["user_id"], Value::Null);

        // Removed, the limits are gone and the job goes through.
        for path in [path.as_str(), "/v1/budget"] {
            let (status, _) = send(api.req(Method::DELETE, path)).await;
            assert_eq!(status, 204);
        }
        let (_, read) = api.get(&format!("/v1/users/{user}/budget")).await;
        assert_eq!(read["limits"], json!([]));
        let (status, body) = send(api.req(Method::POST, "/v1/jobs").json(&kling(other))).await;
        assert_eq!(status, 202, "{body}");
    }
}

/// Each bad limit is a 422 naming its field, and the limits in force stay as they were.
#[tokio::test]
async fn bad_limits_are_refused_naming_the_field() {
    let api = sqlite_api().await;
    let path = format!("/v1/users/{}/budget", Uuid::new_v4());
    let good = json!({ "limits": [{ "period": "month", "limit_usd": "10" }] });
    let (status, before) = send(api.req(Method::PUT, &path).json(&good)).await;
    assert_eq!(status, 200, "{before}");
    let limit = |l: Value| json!({ "limits": [{ "period": "month", "limit_usd": "10" }, l] });
    let too_many: Vec<Value> = (0..21)
        .map(|i| json!({ "period": "day", "limit_usd": i }))
        .collect();
    for (body, field) in [
        (
            limit(json!({ "period": "day", "limit_usd": "-1" })),
            "limits[1].limit_usd",
        ),
        (
            limit(json!({ "period": "day", "limit_usd": -0.5 })),
            "limits[1].limit_usd",
        ),
        (
            limit(json!({ "period": "day", "limit_usd": "ten" })),
            "limits[1].limit_usd",
        ),
        (
            limit(json!({ "period": "day", "limit_usd": "1.0000001" })),
            "limits[1].limit_usd",
        ),
        (limit(json!({ "period": "day" })), "limits[1]"),
        (
            limit(json!({ "period": "fortnight", "limit_usd": "1" })),
            "limits[1].period",
        ),
        (
            limit(json!({ "provider": "nope", "period": "day", "limit_usd": "1" })),
            "limits[1].provider",
        ),
        (
            limit(json!({ "period": "month", "limit_usd": "2" })),
            "limits[1]",
        ),
        (json!({ "limits": too_many }), "limits"),
        (json!({}), "limits"),
    ] {
        let (status, refused) = send(api.req(Method::PUT, &path).json(&body)).await;
        assert_eq!(
            (status, error_code(&refused)),
            (422, "invalid_request"),
            "{body}: {refused}"
        );
        let named = refused["error"]["details"]["field"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            named.starts_with(field),
            "{body}: named {named}, not {field}"
        );
    }
    let (_, after) = api.get(&path).await;
    assert_eq!(after, before, "nothing changed");

    // Setting needs budgets:write; reading, usage:read.
    let reader = api
        .token(
            byok_core::DEFAULT_PROJECT_ID,
            Scopes::parse_list("usage:read").unwrap(),
        )
        .await;
    let (status, body) = send(api.req_as(&reader, Method::GET, &path)).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = send(api.req_as(&reader, Method::PUT, &path).json(&good)).await;
    assert_eq!(
        (status, error_code(&body)),
        (403, "insufficient_scope"),
        "{body}"
    );
    assert_eq!(body["error"]["details"]["scope"], "budgets:write");
    let (status, body) = send(api.req_as(&reader, Method::DELETE, &path)).await;
    assert_eq!(status, 403, "{body}");
}
