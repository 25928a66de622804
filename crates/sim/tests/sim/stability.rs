//! Stability AI: docs/provider-protocols.md §2.

use std::time::Duration;

use base64::Engine as _;
use byok_sim::SimConfig;
use serde_json::Value;

use crate::helpers::{client, fast, jpeg, multipart, png, start, start_manual};

async fn submit(
    sim: &byok_sim::RunningSim,
    key: &str,
    parts: &[(&str, Option<&str>, &[u8])],
) -> reqwest::Response {
    let (content_type, body) = multipart(parts);
    client()
        .post(format!("{}/v2beta/image-to-video", sim.stability_url()))
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn submit_ok(sim: &byok_sim::RunningSim, key: &str, seed: &str) -> String {
    let image = png(1024, 576);
    let response = submit(
        sim,
        key,
        &[
            ("image", Some("frame.png"), &image),
            ("seed", None, seed.as_bytes()),
            ("cfg_scale", None, b"1.8"),
            ("motion_bucket_id", None, b"127"),
        ],
    )
    .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["id"].as_str().unwrap().to_owned()
}

fn result(sim: &byok_sim::RunningSim, key: &str, id: &str) -> reqwest::RequestBuilder {
    client()
        .get(format!(
            "{}/v2beta/image-to-video/result/{id}",
            sim.stability_url()
        ))
        .header("authorization", format!("Bearer {key}"))
}

/// Asserts the v2beta error shape and returns the body.
async fn v2_error(response: reqwest::Response, status: u16, name: &str) -> Value {
    assert_eq!(response.status(), status);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["name"], name, "{body}");
    assert!(body["id"].is_string(), "{body}");
    assert!(
        body["errors"].as_array().is_some_and(|e| !e.is_empty()),
        "{body}"
    );
    body
}

#[tokio::test]
async fn a_generation_is_in_progress_then_a_video_with_its_headers() {
    let sim = start_manual(Duration::from_secs(30)).await;
    let id = submit_ok(&sim, "sim_stab", "42").await;
    assert_eq!(id.len(), 64);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));

    let pending = result(&sim, "sim_stab", &id).send().await.unwrap();
    assert_eq!(pending.status(), 202);
    let body: Value = pending.json().await.unwrap();
    assert_eq!(body["status"], "in-progress");
    assert_eq!(body["id"], id.as_str());

    sim.clock().advance(Duration::from_secs(30));
    let video = result(&sim, "sim_stab", &id)
        .header("accept", "video/*")
        .send()
        .await
        .unwrap();
    assert_eq!(video.status(), 200);
    assert_eq!(video.headers()["content-type"], "video/mp4");
    assert_eq!(video.headers()["finish-reason"], "SUCCESS");
    assert_eq!(video.headers()["seed"], "42");
    let bytes = video.bytes().await.unwrap();
    assert_eq!(&bytes[4..8], b"ftyp");

    let as_json = result(&sim, "sim_stab", &id)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(as_json.status(), 200);
    assert_eq!(
        as_json.headers()["content-type"],
        "application/json; type=video/mp4"
    );
    let body: Value = as_json.json().await.unwrap();
    assert_eq!(body["finish_reason"], "SUCCESS");
    assert_eq!(body["seed"], 42);
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(body["video"].as_str().unwrap())
        .unwrap();
    assert_eq!(decoded, bytes);
}

#[tokio::test]
async fn a_random_seed_is_chosen_and_reported_when_none_is_given() {
    let sim = start(fast()).await;
    let image = jpeg(576, 1024);
    let response = submit(&sim, "sim_seed", &[("image", Some("a.jpg"), &image)]).await;
    assert_eq!(response.status(), 200);
    let id: Value = response.json().await.unwrap();
    let done = result(&sim, "sim_seed", id["id"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 200);
    let seed: u64 = done.headers()["seed"].to_str().unwrap().parse().unwrap();
    assert!((1..=4_294_967_294).contains(&seed));
}

#[tokio::test]
async fn only_multipart_bodies_are_accepted() {
    let sim = start(fast()).await;
    let response = client()
        .post(format!("{}/v2beta/image-to-video", sim.stability_url()))
        .bearer_auth("sim_mp")
        .json(&serde_json::json!({"image": "x"}))
        .send()
        .await
        .unwrap();
    v2_error(response, 400, "bad_request").await;
}

#[tokio::test]
async fn images_must_be_png_or_jpeg_of_three_sizes_and_at_most_10_mib() {
    let sim = start(fast()).await;
    let square = png(1000, 1000);
    let body = v2_error(
        submit(&sim, "sim_img", &[("image", Some("a.png"), &square)]).await,
        400,
        "bad_request",
    )
    .await;
    assert!(
        body["errors"][0].as_str().unwrap().contains("1000x1000"),
        "{body}"
    );

    let gif = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;";
    v2_error(
        submit(&sim, "sim_img", &[("image", Some("a.gif"), gif)]).await,
        400,
        "bad_request",
    )
    .await;
    v2_error(
        submit(&sim, "sim_img", &[("seed", None, b"1")]).await,
        400,
        "bad_request",
    )
    .await;

    for (w, h) in [(1024, 576), (576, 1024), (768, 768)] {
        let ok = png(w, h);
        let response = submit(&sim, "sim_img", &[("image", Some("a.png"), &ok)]).await;
        assert_eq!(response.status(), 200, "{w}x{h}");
    }

    // Just over 10 MiB: refused by the simulator's own check.
    let mut big = png(1024, 576);
    big.resize(10 * 1024 * 1024 + 1, 0);
    v2_error(
        submit(&sim, "sim_img", &[("image", Some("a.png"), &big)]).await,
        413,
        "payload_too_large",
    )
    .await;
    // Far over: cut off while reading.
    big.resize(16 * 1024 * 1024, 0);
    let response = submit(&sim, "sim_img", &[("image", Some("a.png"), &big)]).await;
    assert_eq!(response.status(), 413);
}

#[tokio::test]
async fn the_optional_fields_are_validated() {
    let sim = start(fast()).await;
    let image = png(768, 768);
    let body = v2_error(
        submit(
            &sim,
            "sim_fields",
            &[
                ("image", Some("a.png"), &image),
                ("seed", None, b"4294967295"),
                ("cfg_scale", None, b"10.5"),
                ("motion_bucket_id", None, b"0"),
                ("motion_bucket", None, b"12"),
            ],
        )
        .await,
        400,
        "bad_request",
    )
    .await;
    let errors: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    for field in ["seed:", "cfg_scale:", "motion_bucket_id:", "motion_bucket:"] {
        assert!(
            errors.iter().any(|e| e.starts_with(field)),
            "{field} in {errors:?}"
        );
    }
    let response = submit(
        &sim,
        "sim_fields",
        &[
            ("image", Some("a.png"), &image),
            ("seed", None, b"4294967294"),
            ("cfg_scale", None, b"0"),
            ("motion_bucket_id", None, b"255"),
        ],
    )
    .await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn keys_must_be_simulator_keys() {
    let sim = start(fast()).await;
    let image = png(768, 768);
    let (content_type, body) = multipart(&[("image", Some("a.png"), &image)]);
    let anonymous = client()
        .post(format!("{}/v2beta/image-to-video", sim.stability_url()))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    v2_error(anonymous, 401, "unauthorized").await;
    v2_error(
        submit(&sim, "sk-realkey", &[("image", Some("a.png"), &image)]).await,
        401,
        "unauthorized",
    )
    .await;
    v2_error(
        result(&sim, "sk-realkey", &"0".repeat(64))
            .send()
            .await
            .unwrap(),
        401,
        "unauthorized",
    )
    .await;

    let balance = |key: &'static str| {
        client()
            .get(format!("{}/v1/user/balance", sim.stability_url()))
            .bearer_auth(key)
            .send()
    };
    let bad = balance("sk-realkey").await.unwrap();
    assert_eq!(bad.status(), 401);
    let body: Value = bad.json().await.unwrap();
    // v1 endpoints use {id, name, message} (S-SPEC).
    assert_eq!(body["name"], "unauthorized");
    assert!(
        body["message"].is_string() && body["id"].is_string(),
        "{body}"
    );
    let ok = balance("sim_bal").await.unwrap();
    assert_eq!(ok.status(), 200);
    let body: Value = ok.json().await.unwrap();
    assert!(body["credits"].is_f64(), "{body}");
}

#[tokio::test]
async fn a_sim_throttled_key_gets_one_429_without_a_retry_header() {
    let sim = start(fast()).await;
    let image = png(768, 768);
    let first = submit(&sim, "sim_throttled_s", &[("image", Some("a.png"), &image)]).await;
    // Stability documents no Retry-After header.
    assert!(first.headers().get("retry-after").is_none());
    v2_error(first, 429, "rate_limit_exceeded").await;
    let second = submit(&sim, "sim_throttled_s", &[("image", Some("a.png"), &image)]).await;
    assert_eq!(second.status(), 200);
}

#[tokio::test]
async fn the_moderation_seed_is_refused_and_the_filtered_seed_is_blurred() {
    let sim = start(fast()).await;
    let image = png(1024, 576);
    let body = v2_error(
        submit(
            &sim,
            "sim_mod",
            &[("image", Some("a.png"), &image), ("seed", None, b"666")],
        )
        .await,
        403,
        "content_moderation",
    )
    .await;
    assert!(body["errors"][0].as_str().unwrap().contains("moderation"));

    let id = submit_ok(&sim, "sim_mod", "667").await;
    let done = result(&sim, "sim_mod", &id).send().await.unwrap();
    assert_eq!(done.status(), 200);
    assert_eq!(done.headers()["finish-reason"], "CONTENT_FILTERED");
}

#[tokio::test]
async fn failure_rate_one_fails_every_result_with_500() {
    let sim = start(SimConfig {
        failure_rate: 1.0,
        ..fast()
    })
    .await;
    let id = submit_ok(&sim, "sim_fail", "1").await;
    for _ in 0..2 {
        let done = result(&sim, "sim_fail", &id).send().await.unwrap();
        v2_error(done, 500, "internal_error").await;
    }
}

#[tokio::test]
async fn results_belong_to_their_key() {
    let sim = start(fast()).await;
    let id = submit_ok(&sim, "sim_mine", "5").await;
    v2_error(
        result(&sim, "sim_yours", &id).send().await.unwrap(),
        404,
        "not_found",
    )
    .await;
    v2_error(
        result(&sim, "sim_mine", &"f".repeat(64))
            .send()
            .await
            .unwrap(),
        404,
        "not_found",
    )
    .await;
    assert_eq!(
        result(&sim, "sim_mine", &id).send().await.unwrap().status(),
        200
    );
}

#[tokio::test]
async fn the_burst_limit_locks_a_key_out_for_60_seconds() {
    let sim = start_manual(Duration::ZERO).await;
    sim.set_config(SimConfig {
        stability_requests_per_10s: 3,
        ..sim.config()
    })
    .unwrap();
    let id = submit_ok(&sim, "sim_burst", "9").await;
    for _ in 0..2 {
        assert_eq!(
            result(&sim, "sim_burst", &id)
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    v2_error(
        result(&sim, "sim_burst", &id).send().await.unwrap(),
        429,
        "rate_limit_exceeded",
    )
    .await;
    // Other keys are not affected.
    assert_eq!(submit_ok(&sim, "sim_calm", "9").await.len(), 64);
    sim.clock().advance(Duration::from_secs(30));
    assert_eq!(
        result(&sim, "sim_burst", &id)
            .send()
            .await
            .unwrap()
            .status(),
        429
    );
    sim.clock().advance(Duration::from_secs(31));
    assert_eq!(
        result(&sim, "sim_burst", &id)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let stats = sim.stats().await;
    assert_eq!(
        stats
            .stability
            .for_api_key("sim_burst")
            .unwrap()
            .counters
            .throttled,
        2
    );
}
