//! Runway: docs/provider-protocols.md §1.

use std::time::Duration;

use byok_sim::SimConfig;
use serde_json::{Value, json};

use crate::helpers::{client, fast, png_data_uri, start, start_manual};

const VERSION: &str = "2024-11-06";

fn post(url: String, key: &str, body: &Value) -> reqwest::RequestBuilder {
    client()
        .post(url)
        .bearer_auth(key)
        .header("X-Runway-Version", VERSION)
        .json(body)
}

fn get(url: String, key: &str) -> reqwest::RequestBuilder {
    client()
        .get(url)
        .bearer_auth(key)
        .header("X-Runway-Version", VERSION)
}

fn image_request() -> Value {
    json!({"model": "gen4_turbo", "promptImage": png_data_uri(), "promptText": "slow dolly-in",
           "ratio": "1280:720", "duration": 5, "seed": 42})
}

async fn create(sim: &byok_sim::RunningSim, key: &str, body: &Value) -> String {
    let response = post(format!("{}/v1/image_to_video", sim.runway_url()), key, body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let created: Value = response.json().await.unwrap();
    created["id"].as_str().unwrap().to_owned()
}

async fn task(sim: &byok_sim::RunningSim, key: &str, id: &str) -> (u16, Value) {
    let response = get(format!("{}/v1/tasks/{id}", sim.runway_url()), key)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_task_walks_pending_running_succeeded_and_serves_its_video() {
    let sim = start_manual(Duration::from_secs(10)).await;
    let id = create(&sim, "sim_walk", &image_request()).await;
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");

    let (status, pending) = task(&sim, "sim_walk", &id).await;
    assert_eq!(status, 200);
    assert_eq!(pending["status"], "PENDING");
    assert_eq!(pending["id"], id.as_str());
    let created = pending["createdAt"].as_str().unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(created).is_ok(),
        "{created}"
    );
    assert!(created.ends_with('Z'));

    sim.clock().advance(Duration::from_secs(5));
    let (_, running) = task(&sim, "sim_walk", &id).await;
    assert_eq!(running["status"], "RUNNING");
    assert_eq!(running["progress"], 0.5);

    sim.clock().advance(Duration::from_secs(5));
    let (_, done) = task(&sim, "sim_walk", &id).await;
    assert_eq!(done["status"], "SUCCEEDED", "{done}");
    assert_eq!(done["createdAt"], created);
    let output = done["output"][0].as_str().unwrap();
    assert_eq!(output, format!("{}/files/{id}.mp4", sim.base_url()));

    // Output URLs are pre-signed: no credentials.
    let video = client().get(output).send().await.unwrap();
    assert_eq!(video.status(), 200);
    assert_eq!(video.headers()["content-type"], "video/mp4");
    let bytes = video.bytes().await.unwrap();
    assert_eq!(&bytes[4..8], b"ftyp");
    let stamp = format!("byok-sim {id}");
    assert!(bytes.windows(stamp.len()).any(|w| w == stamp.as_bytes()));
}

#[tokio::test]
async fn progress_reporting_can_be_turned_off() {
    let sim = start_manual(Duration::from_secs(10)).await;
    sim.set_config(SimConfig {
        report_progress: false,
        ..sim.config()
    })
    .unwrap();
    let id = create(&sim, "sim_quiet", &image_request()).await;
    sim.clock().advance(Duration::from_secs(5));
    let (_, running) = task(&sim, "sim_quiet", &id).await;
    assert_eq!(running["status"], "RUNNING");
    assert!(running.get("progress").is_none(), "{running}");
}

#[tokio::test]
async fn text_to_video_accepts_its_models_and_gen4_turbo_is_image_only() {
    let sim = start(fast()).await;
    let url = format!("{}/v1/text_to_video", sim.runway_url());
    for body in [
        json!({"model": "veo3.1", "promptText": "a lighthouse", "ratio": "1920:1080", "duration": 6, "audio": false}),
        json!({"model": "veo3.1_fast", "promptText": "a lighthouse", "ratio": "720:1280", "negativePrompt": "blur"}),
        json!({"model": "gen4.5", "promptText": "a lighthouse", "ratio": "1280:720", "duration": 10, "seed": 7}),
    ] {
        let response = post(url.clone(), "sim_t2v", &body).send().await.unwrap();
        assert_eq!(response.status(), 200, "{body}");
        let id: Value = response.json().await.unwrap();
        let (_, done) = task(&sim, "sim_t2v", id["id"].as_str().unwrap()).await;
        assert_eq!(done["status"], "SUCCEEDED", "{body}");
    }
    let response = post(
        url,
        "sim_t2v",
        &json!({"model": "gen4_turbo", "promptText": "x", "ratio": "1280:720"}),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["issues"][0]["path"], json!(["model"]));
}

#[tokio::test]
async fn keys_must_be_simulator_keys_and_the_version_header_is_required() {
    let sim = start(fast()).await;
    let org = format!("{}/v1/organization", sim.runway_url());

    let none = client()
        .get(&org)
        .header("X-Runway-Version", VERSION)
        .send()
        .await
        .unwrap();
    assert_eq!(none.status(), 401);
    let body: Value = none.json().await.unwrap();
    assert!(body["error"].is_string(), "{body}");

    let real_looking = format!("key_{}", "ab".repeat(64));
    for key in [real_looking.as_str(), "sk-sim_x", "SIM_upper"] {
        let response = get(org.clone(), key).send().await.unwrap();
        assert_eq!(response.status(), 401, "{key}");
    }

    let no_version = client()
        .get(&org)
        .bearer_auth("sim_ok")
        .send()
        .await
        .unwrap();
    assert_eq!(no_version.status(), 400);
    let body: Value = no_version.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("X-Runway-Version"),
        "{body}"
    );
    let old_version = client()
        .get(&org)
        .bearer_auth("sim_ok")
        .header("X-Runway-Version", "2023-01-01")
        .send()
        .await
        .unwrap();
    assert_eq!(old_version.status(), 400);

    let ok = get(org, "sim_ok").send().await.unwrap();
    assert_eq!(ok.status(), 200);
    let body: Value = ok.json().await.unwrap();
    assert!(body["creditBalance"].is_number(), "{body}");
    assert!(body["tier"]["models"]["gen4_turbo"]["maxConcurrentGenerations"].is_number());
    assert!(body["usage"]["models"].is_object());

    let stats = sim.stats().await;
    assert_eq!(stats.runway.totals.unauthorized, 4);
}

#[tokio::test]
async fn a_sim_throttled_key_gets_one_429_with_retry_after() {
    let sim = start(fast()).await;
    let url = format!("{}/v1/image_to_video", sim.runway_url());
    let first = post(url.clone(), "sim_throttled_1", &image_request())
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 429);
    assert_eq!(first.headers()["retry-after"], "2");
    let body: Value = first.json().await.unwrap();
    assert!(body["error"].is_string());
    for _ in 0..2 {
        let again = post(url.clone(), "sim_throttled_1", &image_request())
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 200);
    }
    // Another throttled key gets its own one 429.
    let other = post(url, "sim_throttled_2", &image_request())
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 429);
    let stats = sim.stats().await;
    let key = stats.runway.for_api_key("sim_throttled_1").unwrap();
    assert_eq!(
        (
            key.counters.submits,
            key.counters.throttled,
            key.counters.accepted
        ),
        (3, 1, 2)
    );
}

#[tokio::test]
async fn throttle_rate_one_answers_every_submit_429() {
    let sim = start(SimConfig {
        throttle_rate: 1.0,
        retry_after: Duration::from_millis(1500),
        ..fast()
    })
    .await;
    let response = post(
        format!("{}/v1/image_to_video", sim.runway_url()),
        "sim_busy",
        &image_request(),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "2", "rounded up");
}

#[tokio::test]
async fn invalid_bodies_get_zod_style_issues() {
    let sim = start(fast()).await;
    let url = format!("{}/v1/image_to_video", sim.runway_url());
    let response = post(
        url.clone(),
        "sim_v",
        &json!({"model": "gen4_turbo", "promptImage": "http://example.com/a.png", "ratio": "1:1",
                "duration": 11, "promptText": "x".repeat(1001), "negativePrompt": "no"}),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "Validation of body failed");
    assert_eq!(body["docUrl"], "https://docs.dev.runwayml.com/api");
    let issues = body["issues"].as_array().unwrap();
    let paths: Vec<&Value> = issues.iter().map(|i| &i["path"]).collect();
    for path in [
        json!([]),
        json!(["promptImage"]),
        json!(["promptText"]),
        json!(["ratio"]),
        json!(["duration"]),
    ] {
        assert!(paths.contains(&&path), "{path} in {body}");
    }
    for issue in issues {
        assert!(
            issue["code"].is_string() && issue["message"].is_string(),
            "{issue}"
        );
    }

    let missing = post(url.clone(), "sim_v", &json!({})).send().await.unwrap();
    assert_eq!(missing.status(), 400);
    let body: Value = missing.json().await.unwrap();
    assert_eq!(
        body["issues"][0]["message"],
        "Invalid input: expected string, received undefined"
    );

    let not_json = client()
        .post(&url)
        .bearer_auth("sim_v")
        .header("X-Runway-Version", VERSION)
        .header("content-type", "application/json")
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), 400);
    let body: Value = not_json.json().await.unwrap();
    assert!(body["error"].is_string());

    let huge = client()
        .post(&url)
        .bearer_auth("sim_v")
        .header("X-Runway-Version", VERSION)
        .header("content-type", "application/json")
        .body(vec![b' '; 9 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status(), 413);

    let stats = sim.stats().await;
    let key = stats.runway.for_api_key("sim_v").unwrap();
    assert_eq!((key.counters.rejected, key.counters.accepted), (4, 0));
}

#[tokio::test]
async fn moderated_prompts_fail_with_safety_input_text() {
    let sim = start(fast()).await;
    let mut body = image_request();
    body["promptText"] = json!("please sim:moderate this");
    let id = create(&sim, "sim_mod", &body).await;
    let (_, done) = task(&sim, "sim_mod", &id).await;
    assert_eq!(done["status"], "FAILED");
    assert_eq!(done["failureCode"], "SAFETY.INPUT.TEXT");
    assert!(done["failure"].is_string());
    assert!(done.get("output").is_none());
    let file = client()
        .get(format!("{}/files/{id}.mp4", sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(file.status(), 404);
}

#[tokio::test]
async fn failure_rate_one_fails_every_task_with_internal() {
    let sim = start(SimConfig {
        failure_rate: 1.0,
        ..fast()
    })
    .await;
    for _ in 0..3 {
        let id = create(&sim, "sim_fail", &image_request()).await;
        let (_, done) = task(&sim, "sim_fail", &id).await;
        assert_eq!(done["status"], "FAILED");
        assert_eq!(done["failureCode"], "INTERNAL");
    }
}

#[tokio::test]
async fn tasks_belong_to_the_key_that_created_them() {
    let sim = start(fast()).await;
    let id = create(&sim, "sim_owner", &image_request()).await;
    let (status, _) = task(&sim, "sim_other", &id).await;
    assert_eq!(status, 404);
    let delete = client()
        .delete(format!("{}/v1/tasks/{id}", sim.runway_url()))
        .bearer_auth("sim_other")
        .header("X-Runway-Version", VERSION)
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), 404);
    let (status, body) = task(&sim, "sim_owner", &id).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("SUCCEEDED")));
    let (status, body) = task(&sim, "sim_owner", "no-such-task").await;
    assert_eq!(status, 404);
    assert!(body["error"].is_string());
}

#[tokio::test]
async fn cancel_deletes_the_task() {
    let sim = start_manual(Duration::from_secs(60)).await;
    let id = create(&sim, "sim_cancel", &image_request()).await;
    let url = format!("{}/v1/tasks/{id}", sim.runway_url());
    let delete = || {
        client()
            .delete(&url)
            .bearer_auth("sim_cancel")
            .header("X-Runway-Version", VERSION)
            .header("accept", "*/*")
            .send()
    };
    let first = delete().await.unwrap();
    assert_eq!(first.status(), 204);
    assert!(first.bytes().await.unwrap().is_empty());
    let (status, _) = task(&sim, "sim_cancel", &id).await;
    assert_eq!(status, 404);
    assert_eq!(delete().await.unwrap().status(), 404);
    sim.clock().advance(Duration::from_secs(60));
    let file = client()
        .get(format!("{}/files/{id}.mp4", sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(file.status(), 404);
    let stats = sim.stats().await;
    assert_eq!(
        stats
            .runway
            .for_api_key("sim_cancel")
            .unwrap()
            .counters
            .cancels,
        2
    );
}

#[tokio::test]
async fn unknown_runway_routes_are_404_in_runways_shape() {
    let sim = start(fast()).await;
    let response = get(format!("{}/v1/nothing", sim.runway_url()), "sim_x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"].is_string());
    let wrong_method = client()
        .put(format!("{}/v1/image_to_video", sim.runway_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_method.status(), 405);
}

#[tokio::test]
async fn padded_downloads_end_in_a_free_box_of_the_padding() {
    let sim = start(fast()).await;
    let id = create(&sim, "sim_pad", &image_request()).await;
    let (_, done) = task(&sim, "sim_pad", &id).await;
    assert_eq!(done["status"], "SUCCEEDED", "{done}");
    let url = format!("{}/files/{id}.mp4", sim.base_url());
    let plain = client()
        .get(&url)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();

    let padding: u64 = 300_000;
    sim.set_config(SimConfig {
        video_padding_bytes: padding,
        ..fast()
    })
    .unwrap();
    let padded = client().get(&url).send().await.unwrap();
    assert_eq!(padded.status(), 200);
    assert_eq!(padded.headers()["content-type"], "video/mp4");
    assert_eq!(
        padded.content_length(),
        Some(plain.len() as u64 + padding),
        "Content-Length announces the padding"
    );
    let padded = padded.bytes().await.unwrap();
    assert_eq!(padded.len() as u64, plain.len() as u64 + padding);
    // The same MP4, then one top-level `free` box that players skip.
    assert_eq!(&padded[..plain.len()], &plain[..]);
    let tail = &padded[plain.len()..];
    assert_eq!(tail[..4], u32::try_from(padding).unwrap().to_be_bytes());
    assert_eq!(&tail[4..8], b"free");
    assert!(tail[8..].iter().all(|&b| b == 0));

    let refused = SimConfig {
        video_padding_bytes: 3,
        ..fast()
    };
    assert!(sim.set_config(refused).is_err(), "less than a box header");
}
