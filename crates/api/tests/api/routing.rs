//! `"provider": "auto"`: the API builds the chain from the providers where the user has a
//! valid key and a model fits, cheapest first, keeps the decision on the job, and refuses an
//! impossible job with every provider's reason.

use byok_core::{ModelPrice, ProviderId};
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{TestApi, error_code, send, sqlite_api_with};

fn price(model: &str, usd_per_second: f64) -> ModelPrice {
    serde_json::from_value(json!({
        "model": model, "per_second": [{ "usd": usd_per_second }],
        "source": "https://example.com/contract-prices", "as_of": "2026-12-04",
    }))
    .unwrap()
}

/// An API with contract prices for Runway's and Replicate's models (fal's two priced apps
/// keep their catalogue prices), and a user with keys at Runway, fal and Replicate.
async fn priced_api() -> (TestApi, Uuid) {
    let api = sqlite_api_with(|s| {
        s.providers.get_mut(ProviderId::RUNWAY).unwrap().prices =
            vec![price("gen4.5", 0.12), price("gen4_turbo", 0.05)];
        s.providers.get_mut(ProviderId::REPLICATE).unwrap().prices =
            vec![price("bytedance/seedance-2.0-fast", 0.08)];
    })
    .await;
    let user = Uuid::new_v4();
    for (provider, key) in [
        ("runway", "key_runway_0123456789abcdef"),
        ("fal", "fal-key-id:fal-key-secret-0123456789"),
        ("replicate", "r8_0123456789abcdef0123456789abcdef"),
    ] {
        let path = format!("/v1/users/{user}/providers/{provider}/credentials");
        let body = json!({ "credentials": { "api_key": key }, "validate": false });
        let (status, answer) = api.put_json(&path, &body).await;
        assert_eq!(status, 200, "{provider}: {answer}");
    }
    (api, user)
}

fn chain(job: &Value) -> Vec<(String, String)> {
    job["request"]["routing"]["chain"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["provider"].as_str().unwrap().to_owned(),
                c["model"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(p, m)| ((*p).to_owned(), (*m).to_owned()))
        .collect()
}

#[tokio::test]
async fn auto_chooses_the_cheapest_capable_provider_for_each_need() {
    let (api, user) = priced_api().await;
    let auto = |extra: Value| {
        let mut body = json!({ "user_id": user, "provider": "auto", "prompt": "a lighthouse" });
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };

    // Text to video, 5 s: Replicate $0.40, Runway gen4.5 $0.60, fal's Luma (no price) last.
    let (status, text) = send(
        api.req(Method::POST, "/v1/jobs")
            .json(&auto(json!({ "duration_seconds": 5 }))),
    )
    .await;
    assert_eq!(status, 202, "{text}");
    assert_eq!(
        chain(&text),
        pairs(&[
            ("replicate", "bytedance/seedance-2.0-fast"),
            ("runway", "gen4.5"),
            ("fal", "luma-ray-2-flash"),
        ]),
        "{text}"
    );
    assert_eq!(
        (text["provider"].as_str(), text["model"].as_str()),
        (Some("replicate"), Some("bytedance/seedance-2.0-fast"))
    );
    assert_eq!(
        text["request"]["fallbacks"],
        json!([
            { "provider": "runway", "model": "gen4.5" },
            { "provider": "fal", "model": "luma-ray-2-flash" },
        ])
    );
    assert_eq!(
        text["request"]["routing"]["chain"][0]["estimated_cost_usd"],
        0.4
    );
    assert_eq!(text["request"]["routing"]["strategy"], "cheapest");
    let excluded: Vec<&str> = text["request"]["routing"]["excluded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["provider"].as_str().unwrap())
        .collect();
    assert_eq!(excluded, ["veo", "stability"], "no key at either: {text}");

    // Image to video, 6 s: fal's Hailuo 02 $0.27, Runway's gen4_turbo $0.30 (cheaper there
    // than gen4.5), Replicate $0.48.
    let (status, image) = send(api.req(Method::POST, "/v1/jobs").json(&auto(json!({
        "duration_seconds": 6, "image_url": "https://93.184.215.14/first-frame.png",
    }))))
    .await;
    assert_eq!(status, 202, "{image}");
    assert_eq!(
        chain(&image),
        pairs(&[
            ("fal", "hailuo-02-standard"),
            ("runway", "gen4_turbo"),
            ("replicate", "bytedance/seedance-2.0-fast"),
        ]),
        "{image}"
    );

    // Text to video, 3 s: only Runway makes 3 s; the others say why not.
    let (status, short) = send(
        api.req(Method::POST, "/v1/jobs")
            .json(&auto(json!({ "duration_seconds": 3 }))),
    )
    .await;
    assert_eq!(status, 202, "{short}");
    assert_eq!(chain(&short), pairs(&[("runway", "gen4.5")]), "{short}");
    assert_eq!(short["request"].get("fallbacks"), None);
    let reasons = short["request"]["routing"]["excluded"].to_string();
    assert!(reasons.contains("no model fits"), "{reasons}");

    // 1 s: nobody. Every provider is named with its reason; nothing is stored.
    let owner = byok_core::ProjectUser::new(byok_core::DEFAULT_PROJECT_ID, user);
    let before = api
        .store
        .jobs()
        .list_for_user(owner, None, None, 100)
        .await
        .unwrap()
        .len();
    let (status, refused) = send(
        api.req(Method::POST, "/v1/jobs")
            .json(&auto(json!({ "duration_seconds": 1 }))),
    )
    .await;
    assert_eq!(
        (status, error_code(&refused)),
        (422, "no_capable_provider"),
        "{refused}"
    );
    let excluded = refused["error"]["details"]["excluded"].as_array().unwrap();
    let named: Vec<&str> = excluded
        .iter()
        .map(|e| e["provider"].as_str().unwrap())
        .collect();
    assert_eq!(
        named,
        ["veo", "runway", "stability", "fal", "replicate"],
        "{refused}"
    );
    for exclusion in excluded {
        let reason = exclusion["reason"].as_str().unwrap();
        assert!(
            reason.contains("no stored key") || reason.contains("no model fits"),
            "{reason}"
        );
    }
    let after = api
        .store
        .jobs()
        .list_for_user(owner, None, None, 100)
        .await
        .unwrap()
        .len();
    assert_eq!(before, after);

    // `fastest` without any history here falls back to cost: the same order as cheapest.
    let (status, fastest) = send(api.req(Method::POST, "/v1/jobs").json(&auto(
        json!({ "duration_seconds": 5, "routing": "fastest" }),
    )))
    .await;
    assert_eq!(status, 202, "{fastest}");
    assert_eq!(chain(&fastest), chain(&text));
    assert_eq!(fastest["request"]["routing"]["strategy"], "fastest");

    // A replay of the same auto body with the same key is the same job.
    let body = auto(json!({ "duration_seconds": 5 }));
    let first = send(
        api.req(Method::POST, "/v1/jobs")
            .header("idempotency-key", "auto-1")
            .json(&body),
    )
    .await;
    let again = send(
        api.req(Method::POST, "/v1/jobs")
            .header("idempotency-key", "auto-1")
            .json(&body),
    )
    .await;
    assert_eq!((first.0, again.0), (202, 202));
    assert_eq!(first.1["id"], again.1["id"]);
}

#[tokio::test]
async fn auto_refuses_what_it_cannot_combine() {
    let (api, user) = priced_api().await;
    for (body, field) in [
        (
            json!({ "user_id": user, "provider": "auto", "prompt": "x", "fallbacks": [{ "provider": "fal", "model": "luma-ray-2-flash" }] }),
            "fallbacks",
        ),
        (
            json!({ "user_id": user, "provider": "auto", "model": "gen4.5", "prompt": "x" }),
            "model",
        ),
        (
            json!({ "user_id": user, "provider": "auto", "prompt": "x", "routing": "slowest" }),
            "routing",
        ),
        (
            json!({ "user_id": user, "provider": "runway", "model": "gen4.5", "prompt": "x", "routing": "cheapest" }),
            "routing",
        ),
        (
            json!({ "user_id": user, "provider": "auto", "prompt": "x", "colour": "red" }),
            "",
        ),
    ] {
        let (status, refused) = send(api.req(Method::POST, "/v1/jobs").json(&body)).await;
        assert_eq!(
            (status, error_code(&refused)),
            (422, "invalid_request"),
            "{body}: {refused}"
        );
        let named = refused["error"]["details"]["field"]
            .as_str()
            .unwrap_or_default();
        assert!(named.starts_with(field), "{body}: named {named}");
    }
    // In a batch, an auto job is one job like any other.
    let batch = json!({ "jobs": [
        { "user_id": user, "provider": "auto", "prompt": "a", "duration_seconds": 5 },
        { "user_id": user, "provider": "auto", "prompt": "b", "duration_seconds": 1 },
    ]});
    let (status, refused) = send(api.req(Method::POST, "/v1/batches").json(&batch)).await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["error"]["details"]["items"][0]["index"], 1);
    assert_eq!(
        refused["error"]["details"]["items"][0]["code"],
        "no_capable_provider"
    );
}

/// `fastest` puts the providers this installation has measured first, by their median time
/// to finish, and the rest after them by cost.
#[tokio::test]
async fn fastest_prefers_what_this_installation_has_measured() {
    let (api, user) = priced_api().await;
    // One gen4.5 job that ran at Runway, walked to the end as a worker would.
    let body = json!({ "user_id": user, "provider": "runway", "model": "gen4.5", "prompt": "a", "duration_seconds": 5 });
    let (status, done) = send(api.req(Method::POST, "/v1/jobs").json(&body)).await;
    assert_eq!(status, 202, "{done}");
    let id: Uuid = done["id"].as_str().unwrap().parse().unwrap();
    let jobs = api.store.jobs();
    assert!(jobs.begin_submit(id).await.unwrap());
    assert!(jobs.submitted(id, "task-1", 1).await.unwrap());
    let result =
        serde_json::from_value(json!({ "bytes": 1, "content_type": "video/mp4" })).unwrap();
    assert!(jobs.succeed(id, &result).await.unwrap());

    let auto = json!({ "user_id": user, "provider": "auto", "prompt": "b", "duration_seconds": 5, "routing": "fastest" });
    let (status, fastest) = send(api.req(Method::POST, "/v1/jobs").json(&auto)).await;
    assert_eq!(status, 202, "{fastest}");
    assert_eq!(
        chain(&fastest),
        pairs(&[
            ("runway", "gen4.5"),
            ("replicate", "bytedance/seedance-2.0-fast"),
            ("fal", "luma-ray-2-flash"),
        ]),
        "{fastest}"
    );
    let first = &fastest["request"]["routing"]["chain"][0];
    assert!(first["median_finish_seconds"].is_number(), "{first}");
    assert_eq!(
        fastest["request"]["routing"]["chain"][1].get("median_finish_seconds"),
        None
    );
}
