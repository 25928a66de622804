//! Synthesia: docs/provider-protocols.md §11. Synthesia publishes no official client library,
//! so every request here is written by hand from its API reference.

use std::time::Duration;

use byok_sim::{RunningSim, SimConfig, key_id};
use serde_json::{Value, json};

use crate::helpers::{client, fast, start, start_manual};

const AVATAR: &str = "anna_costume1_cameraA";

fn url(sim: &RunningSim, path: &str) -> String {
    format!("{}{path}", sim.synthesia_url())
}

/// Sends `request`; the status, the headers and the JSON answer (`Null` when not JSON).
async fn send(request: reqwest::RequestBuilder) -> (u16, reqwest::header::HeaderMap, Value) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (
        status,
        headers,
        response.json().await.unwrap_or(Value::Null),
    )
}

/// `POST /v2/videos` of `body` with the raw `key` in `Authorization`, as Synthesia asks.
async fn post(
    sim: &RunningSim,
    key: &str,
    body: &Value,
) -> (u16, reqwest::header::HeaderMap, Value) {
    send(
        client()
            .post(url(sim, "/v2/videos"))
            .header("authorization", key)
            .json(body),
    )
    .await
}

async fn get(sim: &RunningSim, path: &str, key: &str) -> (u16, Value) {
    let (status, _, body) = send(client().get(url(sim, path)).header("authorization", key)).await;
    (status, body)
}

fn scene(script: &str) -> Value {
    json!({"scriptText": script, "avatar": AVATAR, "background": "green_screen"})
}

/// Creates a one-scene video and returns it (200 asserted).
async fn create(sim: &RunningSim, key: &str, script: &str) -> Value {
    let (status, _, video) = post(sim, key, &json!({"input": [scene(script)], "test": true})).await;
    assert_eq!(status, 200, "{video}");
    video
}

/// Asserts a problem-details answer with `code`; returns its `detail`.
fn assert_problem(
    status: u16,
    headers: &reqwest::header::HeaderMap,
    body: &Value,
    expected: u16,
    code: &str,
) -> String {
    assert_eq!(status, expected, "{body}");
    assert_eq!(headers["content-type"], "application/problem+json");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], expected);
    assert_eq!(
        body["type"],
        format!("https://docs.synthesia.io/reference/errors#{code}")
    );
    assert!(body["title"].is_string());
    assert_eq!(headers["request-id"], body["requestId"].as_str().unwrap());
    body["detail"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn keys_are_raw_in_authorization_and_others_get_401() {
    let sim = start(fast()).await;
    let (status, headers, body) = send(client().get(url(&sim, "/v2/videos"))).await;
    assert_problem(status, &headers, &body, 401, "unauthenticated");
    let (status, headers, body) = send(
        client()
            .get(url(&sim, "/v2/videos"))
            .header("authorization", "not-a-sim-key"),
    )
    .await;
    assert_problem(status, &headers, &body, 401, "unauthenticated");
    // A scheme is not part of Synthesia's header: `Bearer sim_…` is not a valid key.
    let (status, headers, body) = send(
        client()
            .get(url(&sim, "/v2/videos"))
            .header("authorization", "Bearer sim_key"),
    )
    .await;
    assert_problem(status, &headers, &body, 401, "unauthenticated");
    // Every route asks for the key.
    let (status, headers, body) = post(&sim, "wrong", &json!({"input": [scene("hi")]})).await;
    assert_problem(status, &headers, &body, 401, "unauthenticated");

    // The cheap key check: the list.
    let (status, list) = get(&sim, "/v2/videos?limit=1", "sim_key").await;
    assert_eq!(status, 200);
    assert_eq!(list, json!({"videos": [], "nextOffset": 0}));
    let stats = sim.stats().await.synthesia;
    assert_eq!(stats.totals.unauthorized, 4);
    assert_eq!(stats.totals.submits, 0);
}

#[tokio::test]
async fn a_video_walks_from_in_progress_to_complete_and_downloads_without_a_key() {
    let sim = start_manual(Duration::from_secs(10)).await;
    let body = json!({
        "input": [{"scriptText": "Hello from the simulator", "avatar": AVATAR,
                   "background": "off_white",
                   "avatarSettings": {"horizontalAlign": "left", "scale": 0.8,
                                      "style": "rectangular", "seamless": false}},
                  {"scriptText": "Second scene", "avatar": "mia_costume1_cameraA",
                   "background": "https://example.com/office.png", "transition": "fade"}],
        "title": "Welcome", "description": "A first video", "visibility": "public",
        "aspectRatio": "9:16", "test": true, "callbackId": "customer-42",
        "ctaSettings": {"label": "Learn more", "url": "https://example.com"},
    });
    let (status, _, created) = post(&sim, "sim_walk", &body).await;
    assert_eq!(status, 200, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(uuid::Uuid::try_parse(&id).is_ok(), "{id}");
    assert_eq!(created["status"], "in_progress");
    for field in [
        "input",
        "title",
        "description",
        "visibility",
        "aspectRatio",
        "test",
        "callbackId",
        "ctaSettings",
    ] {
        assert_eq!(created[field], body[field], "{field}");
    }
    let created_at = created["createdAt"].as_i64().unwrap();
    assert_eq!(created["lastUpdatedAt"], created_at);
    assert!(created.get("download").is_none() && created.get("duration").is_none());

    sim.clock().advance(Duration::from_secs(5));
    let (status, running) = get(&sim, &format!("/v2/videos/{id}"), "sim_walk").await;
    assert_eq!(status, 200);
    assert_eq!(running["status"], "in_progress");

    sim.clock().advance(Duration::from_secs(5));
    let (status, done) = get(&sim, &format!("/v2/videos/{id}"), "sim_walk").await;
    assert_eq!(status, 200);
    assert_eq!(done["status"], "complete", "{done}");
    assert_eq!(done["createdAt"], created_at);
    assert_eq!(done["lastUpdatedAt"], created_at + 10);
    assert_eq!(done["duration"], "0:00:02.000000");
    let download = done["download"].as_str().unwrap();
    assert_eq!(
        download,
        format!("{}/download/{id}/video.mp4", sim.synthesia_url())
    );
    let video = client().get(download).send().await.unwrap();
    assert_eq!(video.status(), 200);
    assert_eq!(video.headers()["content-type"], "video/mp4");
    let bytes = video.bytes().await.unwrap();
    assert_eq!(&bytes[4..8], b"ftyp");

    // Another key's video does not exist for this one.
    let (status, _) = get(&sim, &format!("/v2/videos/{id}"), "sim_other").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn defaults_are_filled_in() {
    let sim = start(fast()).await;
    let (status, _, video) = post(&sim, "sim_defaults", &json!({"input": [scene("hi")]})).await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            &video["title"],
            &video["description"],
            &video["visibility"],
            &video["aspectRatio"],
            &video["test"]
        ),
        (
            &json!(""),
            &json!(""),
            &json!("private"),
            &json!("16:9"),
            &json!(false)
        )
    );
    // Render time 0: complete at once.
    assert_eq!(video["status"], "complete");
}

#[tokio::test]
async fn moderated_scripts_are_rejected_and_failures_end_in_error() {
    let sim = start(fast()).await;
    let video = create(&sim, "sim_mod", "please sim:moderate this").await;
    assert_eq!(video["status"], "rejected");
    assert!(video.get("download").is_none());
    let id = video["id"].as_str().unwrap();
    let direct = client()
        .get(url(&sim, &format!("/download/{id}/video.mp4")))
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status(), 404);

    sim.set_config(SimConfig {
        failure_rate: 1.0,
        ..fast()
    })
    .unwrap();
    let failed = create(&sim, "sim_fail", "a fine script").await;
    assert_eq!(failed["status"], "error");
    assert!(failed.get("download").is_none());
}

#[tokio::test]
async fn invalid_bodies_get_400s_413s_and_415s() {
    let sim = start(fast()).await;
    let key = "sim_invalid";
    // An unknown avatar.
    let (status, headers, body) = post(
        &sim,
        key,
        &json!({"input": [
        {"scriptText": "hi", "avatar": "nobody_costume9", "background": "green_screen"}]}),
    )
    .await;
    let detail = assert_problem(status, &headers, &body, 400, "validation_error");
    assert!(
        detail.contains("input[0].avatar: unknown avatar 'nobody_costume9'"),
        "{detail}"
    );
    for (bad, needle) in [
        (json!({}), "input: field required"),
        (json!({"input": []}), "input: must hold at least one scene"),
        (
            json!({"input": [scene("hi")], "aspectRatio": "2:1"}),
            "aspectRatio",
        ),
        (
            json!({"input": [scene("hi")], "visibility": "secret"}),
            "visibility",
        ),
        (
            json!({"input": [scene("hi")], "test": "yes"}),
            "test: must be a boolean",
        ),
        (
            json!({"input": [scene("hi")], "prompt": "x"}),
            "prompt: unknown field",
        ),
        (
            json!({"input": [{"scriptText": "hi", "avatar": AVATAR}]}),
            "input[0].background: field required",
        ),
        (
            json!({"input": [{"avatar": AVATAR, "background": "green_screen"}]}),
            "scriptText or scriptAudio",
        ),
        (
            json!({"input": [{"scriptText": "hi", "avatar": AVATAR, "background": "moon"}]}),
            "unknown background",
        ),
        (
            json!({"input": [{"scriptText": "hi", "avatar": AVATAR, "background": "green_screen",
                           "avatarSettings": {"voice": "en-US-Jenny"}}]}),
            "avatarSettings.voice",
        ),
        (
            json!({"input": [{"scriptAudio": uuid::Uuid::new_v4().to_string(), "avatar": AVATAR,
                           "background": "green_screen"}]}),
            "scriptLanguage: required",
        ),
        (json!({"input": vec![scene("hi"); 26]}), "at most 25 scenes"),
        (json!([1, 2]), "JSON object"),
    ] {
        let (status, headers, body) = post(&sim, key, &bad).await;
        let detail = assert_problem(status, &headers, &body, 400, "validation_error");
        assert!(detail.contains(needle), "{bad}: {detail}");
    }
    // Not JSON.
    let (status, headers, body) = send(
        client()
            .post(url(&sim, "/v2/videos"))
            .header("authorization", key)
            .header("content-type", "application/json")
            .body("{"),
    )
    .await;
    assert_problem(status, &headers, &body, 400, "bad_request");
    // Not labelled JSON.
    let (status, headers, body) = send(
        client()
            .post(url(&sim, "/v2/videos"))
            .header("authorization", key)
            .header("content-type", "text/plain")
            .body(json!({"input": [scene("hi")]}).to_string()),
    )
    .await;
    assert_problem(status, &headers, &body, 415, "unsupported_media_type");
    // Too large.
    let huge = json!({"input": [scene(&"a".repeat(1024 * 1024))]});
    let (status, headers, body) = post(&sim, key, &huge).await;
    assert_problem(status, &headers, &body, 413, "payload_too_large");

    let stats = sim.stats().await.synthesia;
    let mine = stats.for_api_key(key).unwrap();
    assert_eq!(mine.counters.rejected, 17);
    assert_eq!(mine.counters.accepted, 0);
}

#[tokio::test]
async fn throttled_keys_get_synthesias_429_once() {
    let sim = start(fast()).await;
    let body = json!({"input": [scene("hi")]});
    let (status, headers, problem) = post(&sim, "sim_throttled_1", &body).await;
    assert_problem(status, &headers, &problem, 429, "rate_limited");
    assert_eq!(headers["ratelimit-limit"], "60");
    assert_eq!(headers["ratelimit-reset"], "2");
    assert!(headers.get("retry-after").is_none());
    let (status, _, _) = post(&sim, "sim_throttled_1", &body).await;
    assert_eq!(status, 200);

    sim.set_config(SimConfig {
        throttle_rate: 1.0,
        retry_after: Duration::from_millis(4500),
        ..fast()
    })
    .unwrap();
    let (status, headers, _) = post(&sim, "sim_any", &body).await;
    assert_eq!(status, 429);
    assert_eq!(headers["ratelimit-reset"], "5");
    let stats = sim.stats().await.synthesia;
    assert_eq!(stats.totals.throttled, 2);
    assert_eq!(stats.totals.submits, 3);
    assert_eq!(stats.totals.accepted, 1);
}

#[tokio::test]
async fn an_exhausted_quota_refuses_real_videos_but_not_test_ones() {
    let sim = start(fast()).await;
    let (status, headers, body) = post(&sim, "sim_broke_1", &json!({"input": [scene("hi")]})).await;
    assert_problem(status, &headers, &body, 402, "quota_exceeded");
    let video = create(&sim, "sim_broke_1", "hi").await;
    assert_eq!(video["test"], true);
}

#[tokio::test]
async fn the_list_pages_through_the_keys_videos_newest_first() {
    let sim = start(fast()).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(create(&sim, "sim_lister", &format!("video {i}")).await["id"].clone());
    }
    create(&sim, "sim_someone_else", "not mine").await;
    let (status, page) = get(&sim, "/v2/videos?limit=2", "sim_lister").await;
    assert_eq!(status, 200);
    let listed: Vec<_> = page["videos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].clone())
        .collect();
    assert_eq!(listed, [ids[2].clone(), ids[1].clone()]);
    assert_eq!(page["nextOffset"], 2);
    let (_, rest) = get(
        &sim,
        "/v2/videos?limit=2&offset=2&source=my_videos",
        "sim_lister",
    )
    .await;
    assert_eq!(rest["videos"].as_array().unwrap().len(), 1);
    assert_eq!(rest["videos"][0]["id"], ids[0]);
    assert_eq!(rest["videos"][0]["status"], "complete");
    assert_eq!(rest["nextOffset"], 3);
    for bad in [
        "limit=0",
        "limit=101",
        "limit=x",
        "offset=-1",
        "source=everything",
    ] {
        let (status, headers, body) = send(
            client()
                .get(url(&sim, &format!("/v2/videos?{bad}")))
                .header("authorization", "sim_lister"),
        )
        .await;
        assert_problem(status, &headers, &body, 400, "validation_error");
    }
}

#[tokio::test]
async fn a_deleted_video_is_gone() {
    let sim = start(fast()).await;
    let id = create(&sim, "sim_deleter", "hi").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let delete = |key: &'static str| {
        client()
            .delete(url(&sim, &format!("/v2/videos/{id}")))
            .header("authorization", key)
    };
    // Another key cannot delete it.
    let (status, headers, body) = send(delete("sim_stranger")).await;
    assert_problem(status, &headers, &body, 404, "not_found");
    let response = delete("sim_deleter").send().await.unwrap();
    assert_eq!(response.status(), 204);
    assert!(response.bytes().await.unwrap().is_empty());
    let (status, body) = get(&sim, &format!("/v2/videos/{id}"), "sim_deleter").await;
    assert_eq!(status, 404, "{body}");
    let (status, _, _) = send(delete("sim_deleter")).await;
    assert_eq!(status, 404);
    let video = client()
        .get(url(&sim, &format!("/download/{id}/video.mp4")))
        .send()
        .await
        .unwrap();
    assert_eq!(video.status(), 404);
    let (_, list) = get(&sim, "/v2/videos", "sim_deleter").await;
    assert_eq!(list["videos"], json!([]));
    assert_eq!(sim.stats().await.synthesia.totals.cancels, 3);
}

#[tokio::test]
async fn templates_unknown_routes_and_methods() {
    let sim = start(fast()).await;
    let (status, templates) = get(&sim, "/v2/templates?source=synthesia", "sim_t").await;
    assert_eq!(status, 200);
    assert_eq!(templates["templates"], json!([]));
    let (status, headers, body) = send(
        client()
            .get(url(
                &sim,
                "/v2/templates/8a7b1c2d-0000-4000-8000-000000000000",
            ))
            .header("authorization", "sim_t"),
    )
    .await;
    assert_problem(status, &headers, &body, 404, "not_found");
    let (status, headers, body) = send(
        client()
            .get(url(&sim, "/v2/avatars"))
            .header("authorization", "sim_t"),
    )
    .await;
    assert_problem(status, &headers, &body, 404, "not_found");
    let (status, headers, body) = send(
        client()
            .put(url(&sim, "/v2/videos"))
            .header("authorization", "sim_t"),
    )
    .await;
    assert_problem(status, &headers, &body, 405, "method_not_allowed");
    let (status, body) = get(&sim, "/v2/videos/no-such-video", "sim_t").await;
    assert_eq!((status, &body["code"]), (404, &json!("not_found")));
    let missing = client()
        .get(url(&sim, "/download/no-such-video/video.mp4"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn stats_name_keys_by_their_hash_only() {
    let sim = start(fast()).await;
    let key = "sim_secret_synthesia_key";
    let id = create(&sim, key, "hi").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    get(&sim, &format!("/v2/videos/{id}"), key).await;
    get(&sim, &format!("/v2/videos/{id}"), key).await;
    let stats = sim.stats().await;
    let mine = stats.synthesia.for_api_key(key).unwrap();
    assert_eq!(mine.counters.submits, 1);
    assert_eq!(mine.counters.accepted, 1);
    assert_eq!(mine.counters.polls, 2);
    assert_eq!(mine.submit_times_ms.len(), 1);
    assert!(stats.synthesia.keys.contains_key(&key_id(key)));
    assert_eq!(stats.synthesia.request_times_ms.len(), 3);
    assert_eq!(stats.totals.accepted, 1);
    let served: Value = client()
        .get(format!("{}/_sim/stats", sim.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(served["synthesia"]["totals"]["polls"], 2);
    assert!(!served.to_string().contains("secret"));
    sim.reset();
    assert_eq!(sim.stats().await.synthesia.totals.submits, 0);
    let (status, _) = get(&sim, &format!("/v2/videos/{id}"), key).await;
    assert_eq!(status, 404);
}
