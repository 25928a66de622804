//! Jobs are priced when they are enqueued (alone or in a batch), from their model's
//! catalogue entry; the price is what their usage row records when they end.

use byok_core::{JobResult, Usd};
use byok_store::CostBasis;
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use byok_core::Scopes;

use crate::{TestApi, apis, error_code, send, sqlite_api};

fn fal_job(user: Uuid, model: &str, duration: Option<u32>) -> Value {
    let mut job = json!({
        "user_id": user, "provider": "fal", "model": model, "prompt": "a lighthouse",
        "image_url": "https://93.184.215.14/first-frame.png",
    });
    if let Some(seconds) = duration {
        job["duration_seconds"] = json!(seconds);
    }
    job
}

/// Walks job `id` to `succeeded` behind the API's back, as a worker would.
async fn succeed(api: &TestApi, id: Uuid) {
    let jobs = api.store.jobs();
    assert!(jobs.begin_submit(id).await.unwrap());
    assert!(jobs.submitted(id, "req_1", 1).await.unwrap());
    let result: JobResult =
        serde_json::from_value(json!({ "bytes": 10, "content_type": "video/mp4" })).unwrap();
    assert!(jobs.succeed(id, &result).await.unwrap());
}

#[tokio::test]
async fn jobs_are_priced_at_enqueue_and_record_the_price_when_they_end() {
    for api in apis().await {
        let user = Uuid::new_v4();
        let path = format!("/v1/users/{user}/providers/fal/credentials");
        let key = json!({ "credentials": { "api_key": "fal-key-id:fal-key-secret-0123456789" }, "validate": false });
        let (status, body) = api.put_json(&path, &key).await;
        assert_eq!(status, 200, "{}: {body}", api.backend);

        let (status, alone) = send(api.req(Method::POST, "/v1/jobs").json(&fal_job(
            user,
            "kling-v2.1-master",
            Some(10),
        )))
        .await;
        assert_eq!(status, 202, "{alone}");
        let batch = json!({ "jobs": [
            fal_job(user, "kling-v2.1-master", None),
            fal_job(user, "hailuo-02-standard", Some(6)),
            fal_job(user, "luma-ray-2-flash", Some(5)),
        ]});
        let (status, created) = send(api.req(Method::POST, "/v1/batches").json(&batch)).await;
        assert_eq!(status, 202, "{created}");
        let (_, page) = api
            .get(&format!(
                "/v1/batches/{}/jobs",
                created["id"].as_str().unwrap()
            ))
            .await;
        let mut ids = vec![alone["id"].as_str().unwrap().parse::<Uuid>().unwrap()];
        ids.extend(
            page["jobs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|j| j["id"].as_str().unwrap().parse::<Uuid>().unwrap()),
        );
        for id in &ids {
            succeed(&api, *id).await;
        }
        let mut recorded = Vec::new();
        for id in &ids {
            let usage = api.store.usage().of_job(*id).await.unwrap().unwrap();
            recorded.push((usage.video_seconds, usage.cost, usage.cost_basis));
        }
        let usd = |micros| Some(Usd::from_micros(micros));
        assert_eq!(
            recorded,
            [
                (Some(10), usd(2_800_000), CostBasis::ListPrice),
                (Some(5), usd(1_400_000), CostBasis::ListPrice),
                (Some(6), usd(270_000), CostBasis::ListPrice),
                (Some(5), None, CostBasis::Unknown),
            ],
            "{}: the fal prices of the catalogue; Luma Ray 2 Flash has none",
            api.backend
        );

        // The project's report, and the user's, sum those rows.
        let (status, report) = api.get("/v1/usage?group_by=model").await;
        assert_eq!(status, 200, "{report}");
        assert_eq!(report["group_by"], "model");
        assert_eq!(report["total"]["jobs"], 4, "{report}");
        assert_eq!(report["total"]["succeeded"], 4);
        assert_eq!(report["total"]["video_seconds"], 26);
        assert_eq!(report["total"]["cost_usd"], 4.47, "{report}");
        assert_eq!(report["total"]["jobs_cost_unknown"], 1);
        let groups = report["groups"].as_array().unwrap();
        let models: Vec<&str> = groups
            .iter()
            .map(|g| g["model"].as_str().unwrap())
            .collect();
        assert_eq!(
            models,
            [
                "hailuo-02-standard",
                "kling-v2.1-master",
                "luma-ray-2-flash"
            ]
        );
        assert_eq!(groups[1]["cost_usd"], 4.2);
        assert_eq!(groups[1]["provider"], "fal");
        let (status, mine) = api
            .get(&format!("/v1/users/{user}/usage?group_by=day"))
            .await;
        assert_eq!(status, 200, "{mine}");
        assert_eq!(mine["user_id"], user.to_string());
        assert_eq!(mine["total"], report["total"]);
        let (_, nobody) = api
            .get(&format!("/v1/users/{}/usage", Uuid::new_v4()))
            .await;
        assert_eq!(nobody["total"]["jobs"], 0);
        assert_eq!(nobody["groups"], json!([]));
    }
}

/// Usage needs `usage:read`; bad query values are 400s naming the field.
#[tokio::test]
async fn usage_needs_its_scope_and_refuses_bad_queries() {
    let api = sqlite_api().await;
    let token = api
        .token(
            byok_core::DEFAULT_PROJECT_ID,
            Scopes::parse_list("jobs:read").unwrap(),
        )
        .await;
    let (status, body) = send(api.req_as(&token, Method::GET, "/v1/usage")).await;
    assert_eq!(
        (status, error_code(&body)),
        (403, "insufficient_scope"),
        "{body}"
    );
    for (query, field) in [
        ("group_by=week", "group_by"),
        ("from=yesterday", "from"),
        ("to=2026-13-01", "to"),
        ("from=2026-12-02&to=2026-12-01", "from"),
        ("from=2024-01-01&to=2026-01-01", "to"),
    ] {
        let (status, body) = api.get(&format!("/v1/usage?{query}")).await;
        assert_eq!(
            (status, error_code(&body)),
            (400, "bad_request"),
            "{query}: {body}"
        );
        assert_eq!(body["error"]["details"]["field"], field, "{query}");
    }
    let (status, body) = api.get("/v1/users/not-a-uuid/usage").await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = api
        .get("/v1/usage?from=2026-12-01&to=2026-12-02T00:00:00Z&group_by=user")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["from"], "2026-12-01T00:00:00Z");
}
