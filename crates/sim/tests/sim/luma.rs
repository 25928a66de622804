//! Luma Agents: docs/provider-protocols.md §10.

use std::time::Duration;

use base64::Engine as _;
use byok_sim::{RunningSim, SimConfig};
use serde_json::{Value, json};

use crate::helpers::{client, fast, png, start, start_manual};

fn url(sim: &RunningSim, path: &str) -> String {
    format!("{}{path}", sim.luma_url())
}

async fn send(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn post(sim: &RunningSim, key: &str, body: &Value) -> (u16, Value) {
    send(
        client()
            .post(url(sim, "/generations"))
            .bearer_auth(key)
            .json(body),
    )
    .await
}

async fn get(sim: &RunningSim, key: &str, id: &str) -> (u16, Value) {
    send(
        client()
            .get(url(sim, &format!("/generations/{id}")))
            .bearer_auth(key),
    )
    .await
}

fn video(prompt: &str) -> Value {
    json!({"model": "ray-3.2", "type": "video", "prompt": prompt, "aspect_ratio": "16:9",
           "video": {"resolution": "720p", "duration": "5s"}})
}

/// Creates a generation (201 asserted) and returns it.
async fn create(sim: &RunningSim, key: &str, body: &Value) -> Value {
    let (status, generation) = post(sim, key, body).await;
    assert_eq!(status, 201, "{generation}");
    generation
}

async fn generation(sim: &RunningSim, key: &str, id: &str) -> Value {
    let (status, body) = get(sim, key, id).await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn keys_are_checked_and_every_answer_names_its_request() {
    let sim = start(fast()).await;
    let response = client()
        .post(url(&sim, "/generations"))
        .json(&video("x"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["x-api-version"], "2026-04-01");
    assert_eq!(
        response.headers()["x-request-id"].to_str().unwrap().len(),
        36
    );
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"detail": "Missing API key"})
    );
    let (status, body) = post(&sim, "luma-not-a-sim-key", &video("x")).await;
    assert_eq!((status, body), (401, json!({"detail": "Invalid API key"})));
    let (status, _) = get(&sim, "luma-not-a-sim-key", "anything").await;
    assert_eq!(status, 401);

    // A request id the client sends is echoed.
    let response = client()
        .get(url(&sim, "/generations/nope"))
        .bearer_auth("sim_luma")
        .header("x-request-id", "req-42")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(response.headers()["x-request-id"], "req-42");
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"detail": "Generation not found"})
    );
    // Unknown routes, and the absent cancel and delete, are 404s in Luma's shape.
    for request in [
        client().get(url(&sim, "/nothing")),
        client().post(url(&sim, "/generations/abc/cancel")),
    ] {
        let (status, body) = send(request.bearer_auth("sim_luma")).await;
        assert_eq!((status, &body["detail"]), (404, &json!("Not Found")));
    }
    let response = client()
        .delete(url(&sim, "/generations/abc"))
        .bearer_auth("sim_luma")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);

    let stats = sim.stats().await;
    assert_eq!(stats.luma.totals.unauthorized, 3);
    assert!(
        stats
            .luma
            .keys
            .contains_key(&byok_sim::key_id("luma-not-a-sim-key"))
    );
    assert_eq!(stats.totals.unauthorized, 3);
}

#[tokio::test]
async fn a_video_walks_queued_processing_completed_and_downloads_while_presigned() {
    let sim = start_manual(Duration::from_secs(10)).await;
    let created = create(&sim, "sim_walk", &video("a lighthouse at dusk")).await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(uuid_like(&id), "{id}");
    assert_eq!(created["state"], "queued");
    assert_eq!(
        (&created["type"], &created["model"]),
        (&json!("video"), &json!("ray-3.2"))
    );
    assert_eq!(
        (
            &created["output"],
            &created["failure_code"],
            &created["failure_reason"]
        ),
        (&Value::Null, &Value::Null, &Value::Null)
    );
    let created_at = created["created_at"].as_str().unwrap();
    assert!(chrono::DateTime::parse_from_rfc3339(created_at).is_ok());

    sim.clock().advance(Duration::from_secs(5));
    assert_eq!(
        generation(&sim, "sim_walk", &id).await["state"],
        "processing"
    );
    sim.clock().advance(Duration::from_secs(5));
    let done = generation(&sim, "sim_walk", &id).await;
    assert_eq!(done["state"], "completed");
    assert_eq!(done["created_at"], created_at);
    assert_eq!(done["output"].as_array().unwrap().len(), 1);
    assert_eq!(done["output"][0]["type"], "video");
    let output = done["output"][0]["url"].as_str().unwrap().to_owned();
    assert!(
        output.starts_with(&format!("{}/luma/outputs/{id}/output.mp4?", sim.base_url())),
        "{output}"
    );

    // Presigned: no Authorization.
    let response = client().get(&output).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "video/mp4");
    let bytes = response.bytes().await.unwrap();
    assert_eq!(&bytes[4..8], b"ftyp");

    // A changed signature, or none, is refused.
    let tampered = format!("{}0", &output[..output.len() - 1]);
    let tampered = if tampered == output {
        format!("{}1", &output[..output.len() - 1])
    } else {
        tampered
    };
    assert_eq!(client().get(&tampered).send().await.unwrap().status(), 403);
    let bare = output.split('?').next().unwrap();
    assert_eq!(client().get(bare).send().await.unwrap().status(), 403);

    // An hour later the URL has expired; a fresh poll hands out a fresh one.
    sim.clock().advance(Duration::from_secs(3600));
    let response = client().get(&output).send().await.unwrap();
    assert_eq!(response.status(), 403);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("Request has expired")
    );
    let again = generation(&sim, "sim_walk", &id).await;
    let fresh = again["output"][0]["url"].as_str().unwrap();
    assert_ne!(fresh, output);
    assert_eq!(client().get(fresh).send().await.unwrap().status(), 200);

    // Another key does not see it.
    assert_eq!(get(&sim, "sim_other", &id).await.0, 404);

    let stats = sim.stats().await;
    let key = stats.luma.for_api_key("sim_walk").unwrap();
    assert_eq!((key.counters.submits, key.counters.accepted), (1, 1));
    assert_eq!(key.counters.polls, 3);
    // API requests and downloads alike are noted.
    assert!(stats.luma.request_times_ms.len() >= 9);
}

fn uuid_like(id: &str) -> bool {
    id.len() == 36 && id.chars().filter(|c| *c == '-').count() == 4
}

#[tokio::test]
async fn moderation_and_failures_end_in_failed_with_lumas_codes() {
    let sim = start(fast()).await;
    let moderated = create(&sim, "sim_mod", &video("please sim:moderate this")).await;
    assert_eq!(moderated["state"], "failed");
    assert_eq!(moderated["failure_code"], "content_moderated");
    assert!(moderated["failure_reason"].as_str().unwrap().len() > 10);
    assert_eq!(moderated["output"], Value::Null);
    let id = moderated["id"].as_str().unwrap();
    assert_eq!(generation(&sim, "sim_mod", id).await["state"], "failed");

    sim.set_config(SimConfig {
        failure_rate: 1.0,
        ..fast()
    })
    .unwrap();
    let failed = create(&sim, "sim_mod", &video("fine")).await;
    assert_eq!(failed["state"], "failed");
    assert_eq!(failed["failure_code"], "generation_failed");
    // A failed generation has no output to download.
    let path = format!(
        "/luma/outputs/{}/output.mp4",
        failed["id"].as_str().unwrap()
    );
    let response = client()
        .get(format!("{}{path}?expires=1&signature=x", sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
}

#[tokio::test]
async fn throttled_keys_get_one_429_with_retry_after() {
    let sim = start(SimConfig {
        retry_after: Duration::from_millis(2500),
        ..fast()
    })
    .await;
    let response = client()
        .post(url(&sim, "/generations"))
        .bearer_auth("sim_throttled_luma")
        // Not even read: the 429 comes first.
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "3");
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"detail": "Rate limit exceeded"})
    );
    create(&sim, "sim_throttled_luma", &video("x")).await;

    sim.set_config(SimConfig {
        throttle_rate: 1.0,
        ..fast()
    })
    .unwrap();
    assert_eq!(post(&sim, "sim_any", &video("x")).await.0, 429);
    let stats = sim.stats().await;
    let key = stats.luma.for_api_key("sim_throttled_luma").unwrap();
    assert_eq!(
        (
            key.counters.submits,
            key.counters.throttled,
            key.counters.accepted
        ),
        (2, 1, 1)
    );
    assert_eq!(key.submit_times_ms.len(), 2);
    assert_eq!(stats.luma.totals.throttled, 2);
}

#[tokio::test]
async fn requests_are_checked_against_the_schema_and_lumas_rules() {
    let sim = start(fast()).await;
    let frame = base64::engine::general_purpose::STANDARD.encode(png(64, 36));
    let ok =
        |video: Value| json!({"model": "ray-3.2", "type": "video", "prompt": "p", "video": video});
    // 400: off the schema.
    let cases_400 = [
        json!("a string"),
        json!({"model": "ray-3.2", "type": "video"}),
        json!({"prompt": 7}),
        json!({"prompt": " "}),
        json!({"prompt": "p", "colour": "blue"}),
        json!({"prompt": "p", "model": "ray-2"}),
        json!({"prompt": "p", "type": "music"}),
        json!({"prompt": "p", "aspect_ratio": "5:4"}),
        ok(json!({"duration": "9s"})),
        ok(json!({"resolution": "4k"})),
        ok(json!({"loop": "yes"})),
        ok(json!({"fps": 24})),
        ok(
            json!({"start_frame": {"url": "https://example.com/a.png", "data": frame,
                                  "media_type": "image/png"}}),
        ),
        ok(json!({"start_frame": {}})),
        ok(json!({"start_frame": {"data": frame}})),
        ok(json!({"keyframes": [{"url": "https://example.com/a.png"}],
                  "keyframe_indexes": [-1]})),
    ];
    for body in &cases_400 {
        let (status, answer) = post(&sim, "sim_checks", body).await;
        assert_eq!(status, 400, "{body} → {answer}");
        assert!(answer["detail"].is_string(), "{answer}");
    }
    let response = client()
        .post(url(&sim, "/generations"))
        .bearer_auth("sim_checks")
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);

    // 422: combinations Luma rejects, and bad media.
    let cases_422 = [
        json!({"prompt": "p", "type": "video"}),
        json!({"prompt": "p", "type": "video", "model": "uni-1"}),
        json!({"prompt": "p", "type": "image", "model": "ray-3.2"}),
        json!({"prompt": "p", "type": "video_edit", "model": "ray-3.2"}),
        json!({"model": "ray-3.2", "type": "video", "prompt": "p", "aspect_ratio": "3:1"}),
        json!({"model": "ray-3.2", "type": "video", "prompt": "p",
               "image_ref": [{"url": "https://example.com/a.png"}]}),
        ok(json!({"duration": "10s", "loop": true})),
        ok(json!({"hdr": true, "loop": true})),
        ok(json!({"exr_export": true})),
        ok(json!({"hdr": true, "resolution": "540p"})),
        ok(json!({"duration": "10s", "start_frame": {"url": "https://example.com/a.png"}})),
        ok(json!({"edit": {"strength": "subtle"}})),
        ok(json!({"source_position": {}})),
        ok(json!({"keyframes": [{"url": "https://example.com/a.png"}]})),
        ok(json!({"keyframes": [{"url": "https://example.com/a.png"}],
                  "keyframe_indexes": [0, 60]})),
        ok(json!({"keyframes": [{"url": "https://example.com/a.png"}],
                  "keyframe_indexes": [121]})),
        ok(
            json!({"loop": true, "keyframes": [{"url": "https://example.com/a.png"}],
                  "keyframe_indexes": [0]}),
        ),
        ok(json!({"start_frame": {"url": "ftp://example.com/a.png"}})),
        ok(json!({"start_frame": {"data": "@@@", "media_type": "image/png"}})),
        ok(json!({"start_frame": {"data": frame, "media_type": "video/mp4"}})),
        ok(json!({"start_frame": {"generation_id": "00000000-0000-4000-8000-000000000000"}})),
        ok(json!({"start_frame": {"file_id": "00000000-0000-4000-8000-000000000000"}})),
    ];
    for body in &cases_422 {
        let (status, answer) = post(&sim, "sim_checks", body).await;
        assert_eq!(status, 422, "{body} → {answer}");
        assert!(answer["detail"].is_string(), "{answer}");
    }

    // Accepted: every anchor form, keyframes over 10 s, HDR with EXR, nulls for optional
    // fields.
    let first = create(&sim, "sim_checks", &video("first")).await;
    let first_id = first["id"].as_str().unwrap();
    for body in [
        ok(
            json!({"start_frame": {"data": frame, "media_type": "image/png"},
                  "end_frame": {"url": "https://example.com/b.jpg"}, "loop": true}),
        ),
        ok(json!({"start_frame": {"generation_id": first_id}})),
        ok(
            json!({"duration": "10s", "keyframes": [{"url": "https://example.com/a.png"},
                  {"data": frame, "media_type": "image/png"}], "keyframe_indexes": [0, 240]}),
        ),
        ok(json!({"hdr": true, "exr_export": true, "resolution": "1080p"})),
        ok(json!({"resolution": "360p", "duration": null, "end_frame": null})),
        // Far over the simulator's default 64 KiB body cap: Luma takes inline images.
        ok(json!({"start_frame": {"data": "AAAA".repeat(1 << 20), "media_type": "image/png"}})),
        json!({"model": "ray-3.2", "type": "video", "prompt": "p", "aspect_ratio": null,
               "user_id": "u-1", "video": null, "web_search": false, "style": "auto"}),
    ] {
        create(&sim, "sim_checks", &body).await;
    }
    // Another key's generation cannot be extended.
    let (status, _) = post(
        &sim,
        "sim_stranger",
        &ok(json!({"start_frame": {"generation_id": first_id}})),
    )
    .await;
    assert_eq!(status, 422);

    let stats = sim.stats().await;
    let key = stats.luma.for_api_key("sim_checks").unwrap();
    assert_eq!(key.counters.accepted, 8);
    assert_eq!(
        key.counters.rejected as usize,
        cases_400.len() + 1 + cases_422.len()
    );
}

#[tokio::test]
async fn images_complete_with_a_png_or_a_jpeg() {
    let sim = start(fast()).await;
    for (body, content_type, file) in [
        (json!({"prompt": "a lighthouse"}), "image/png", "output.png"),
        (
            json!({"prompt": "a lighthouse", "model": "uni-1-max", "type": "image",
                   "output_format": "jpeg", "aspect_ratio": "3:1",
                   "image_ref": [{"url": "https://example.com/style.png"}]}),
            "image/jpeg",
            "output.jpg",
        ),
    ] {
        let image = create(&sim, "sim_images", &body).await;
        assert_eq!(image["type"], "image");
        assert_eq!(image["state"], "completed");
        let output = image["output"][0]["url"].as_str().unwrap();
        assert_eq!(image["output"][0]["type"], "image");
        assert!(output.contains(file), "{output}");
        let response = client().get(output).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], content_type);
        let bytes = response.bytes().await.unwrap();
        assert!(image::load_from_memory(&bytes).is_ok());
    }
    let (status, _) = post(
        &sim,
        "sim_images",
        &json!({"prompt": "p", "video": {"duration": "5s"}}),
    )
    .await;
    assert_eq!(status, 422);
}

#[tokio::test]
async fn generations_are_forgotten_after_retention() {
    let sim = start_manual(Duration::ZERO).await;
    sim.set_config(SimConfig {
        render_time: Duration::ZERO,
        retention: Duration::from_secs(60),
        ..SimConfig::default()
    })
    .unwrap();
    let created = create(&sim, "sim_retained", &video("x")).await;
    let id = created["id"].as_str().unwrap();
    let output = created["output"][0]["url"].as_str().unwrap().to_owned();
    sim.clock().advance(Duration::from_secs(60));
    assert_eq!(get(&sim, "sim_retained", id).await.0, 404);
    // Its URL has not expired, but the output is gone.
    assert_eq!(client().get(&output).send().await.unwrap().status(), 404);
    // A reset forgets everything, and the URLs signed before it.
    let created = create(&sim, "sim_retained", &video("y")).await;
    let output = created["output"][0]["url"].as_str().unwrap().to_owned();
    sim.reset();
    assert_eq!(client().get(&output).send().await.unwrap().status(), 403);
    assert_eq!(sim.stats().await.luma.totals, byok_sim::Counters::default());
}
