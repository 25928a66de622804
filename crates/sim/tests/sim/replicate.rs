//! Replicate: docs/provider-protocols.md §9.

use std::time::Duration;

use byok_sim::{RunningSim, SimConfig};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::helpers::{client, fast, png, png_data_uri, start, start_manual};

const SEEDANCE: &str = "bytedance/seedance-2.0";
const SVD_VERSION: &str = "3f0457e4619daac51203dedb472816fd4af51f3149fa7a9e0b5ffcf1b8172438";

fn url(sim: &RunningSim, path: &str) -> String {
    format!("{}{path}", sim.replicate_url())
}

/// `POST` of `body` with `token`; the status and the JSON answer (`Null` when not JSON).
async fn post(sim: &RunningSim, path: &str, token: &str, body: &Value) -> (u16, Value) {
    send(client().post(url(sim, path)).bearer_auth(token).json(body)).await
}

async fn get(sim: &RunningSim, path: &str, token: &str) -> (u16, Value) {
    send(client().get(url(sim, path)).bearer_auth(token)).await
}

async fn send(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Creates a Seedance prediction and returns it (201 asserted).
async fn create(sim: &RunningSim, token: &str, input: Value) -> Value {
    let (status, prediction) = post(
        sim,
        &format!("/v1/models/{SEEDANCE}/predictions"),
        token,
        &json!({ "input": input }),
    )
    .await;
    assert_eq!(status, 201, "{prediction}");
    prediction
}

async fn prediction(sim: &RunningSim, token: &str, id: &str) -> Value {
    let (status, body) = get(sim, &format!("/v1/predictions/{id}"), token).await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn tokens_are_checked_with_replicates_401s() {
    let sim = start(fast()).await;
    let response = client().get(url(&sim, "/v1/account")).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"title": "Unauthenticated", "detail": "You did not pass an authentication token", "status": 401})
    );
    let (status, body) = get(&sim, "/v1/account", "r8_not_a_sim_token").await;
    assert_eq!(status, 401);
    assert_eq!(
        body["detail"],
        "You did not pass a valid authentication token"
    );

    let (status, account) = get(&sim, "/v1/account", "sim_account").await;
    assert_eq!(status, 200);
    assert_eq!(account["type"], "user");
    assert!(account["username"].as_str().unwrap().starts_with("sim-"));
    assert!(account["name"].is_string() && account["github_url"].is_null());
    // Replicate's older scheme works too.
    let (status, _) = send(
        client()
            .get(url(&sim, "/v1/account"))
            .header("authorization", "Token sim_account"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(sim.stats().await.replicate.totals.unauthorized, 2);
}

#[tokio::test]
async fn a_prediction_walks_to_success_and_its_output_is_removed_after_an_hour() {
    let sim = start_manual(Duration::from_secs(10)).await;
    let input = json!({"prompt": "a lighthouse", "duration": 5, "aspect_ratio": "9:16",
                       "resolution": "480p", "seed": 7});
    let created = create(&sim, "sim_walk", input.clone()).await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 26, "{id}");
    assert_eq!(created["status"], "starting");
    assert_eq!(created["model"], SEEDANCE);
    assert_eq!(created["version"], "hidden");
    assert_eq!(created["input"], input);
    assert_eq!(created["source"], "api");
    assert_eq!(
        (&created["output"], &created["error"], &created["logs"]),
        (&Value::Null, &Value::Null, &json!(""))
    );
    assert_eq!(created["data_removed"], false);
    assert_eq!(
        created["urls"]["get"],
        format!("{}/v1/predictions/{id}", sim.replicate_url())
    );
    assert_eq!(
        created["urls"]["cancel"],
        format!("{}/v1/predictions/{id}/cancel", sim.replicate_url())
    );
    assert!(created["started_at"].is_null() && created["completed_at"].is_null());
    let created_at = created["created_at"].as_str().unwrap();
    assert!(chrono::DateTime::parse_from_rfc3339(created_at).is_ok());

    sim.clock().advance(Duration::from_secs(5));
    let running = prediction(&sim, "sim_walk", &id).await;
    assert_eq!(running["status"], "processing");
    assert!(running["started_at"].is_string());
    let logs = running["logs"].as_str().unwrap();
    assert!(logs.contains(" 50%|█████     | 50/100"), "{logs}");

    sim.clock().advance(Duration::from_secs(5));
    let done = prediction(&sim, "sim_walk", &id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["created_at"], created_at);
    assert_eq!(done["metrics"]["predict_time"], 9.0);
    assert_eq!(done["metrics"]["total_time"], 10.0);
    let output = done["output"].as_str().unwrap().to_owned();
    assert_eq!(
        output,
        format!("{}/delivery/{id}/output.mp4", sim.replicate_url())
    );
    // Delivery URLs need no token.
    let video = client().get(&output).send().await.unwrap();
    assert_eq!(video.status(), 200);
    assert_eq!(video.headers()["content-type"], "video/mp4");
    let bytes = video.bytes().await.unwrap();
    assert_eq!(&bytes[4..8], b"ftyp");

    // An hour after the end the data is gone.
    sim.clock().advance(Duration::from_secs(3600));
    let removed = prediction(&sim, "sim_walk", &id).await;
    assert_eq!(removed["status"], "succeeded");
    assert_eq!(removed["data_removed"], true);
    assert_eq!(removed["output"], Value::Null);
    assert_eq!(removed["input"], json!({}));
    assert_eq!(removed["logs"], "");
    assert_eq!(client().get(&output).send().await.unwrap().status(), 404);

    let stats = sim.stats().await;
    let key = stats.replicate.for_api_key("sim_walk").unwrap();
    assert_eq!((key.counters.accepted, key.counters.polls), (1, 3));
    assert!(stats.replicate.request_times_ms.len() >= 6);
}

#[tokio::test]
async fn moderation_and_failures_end_as_replicate_reports_them() {
    let sim = start(fast()).await;
    let moderated = create(&sim, "sim_outcomes", json!({"prompt": "sim:moderate me"})).await;
    let moderated = prediction(&sim, "sim_outcomes", moderated["id"].as_str().unwrap()).await;
    assert_eq!(moderated["status"], "failed");
    assert_eq!(
        moderated["error"],
        "The input or output was flagged as sensitive. Please try again with different inputs. (E005)"
    );
    assert_eq!(moderated["output"], Value::Null);
    sim.set_config(SimConfig {
        failure_rate: 1.0,
        ..fast()
    })
    .unwrap();
    let failed = create(&sim, "sim_outcomes", json!({"prompt": "a cat"})).await;
    let failed = prediction(&sim, "sim_outcomes", failed["id"].as_str().unwrap()).await;
    assert_eq!(failed["status"], "failed");
    assert_eq!(
        failed["error"],
        "Prediction interrupted; please retry (code: PA)"
    );
}

#[tokio::test]
async fn versions_run_community_models_and_unknown_models_are_refused() {
    let sim = start(fast()).await;
    let (status, created) = post(
        &sim,
        "/v1/predictions",
        "sim_versions",
        &json!({"version": SVD_VERSION, "input": {"input_image": png_data_uri(),
                "sizing_strategy": "crop_to_16_9", "seed": 1}}),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["model"], "stability-ai/stable-video-diffusion");
    assert_eq!(created["version"], SVD_VERSION);
    // The reference's form, `owner/name:<id>`, names the same version.
    let (status, named) = post(
        &sim,
        "/v1/predictions",
        "sim_versions",
        &json!({"version": format!("stability-ai/stable-video-diffusion:{SVD_VERSION}"),
                "input": {"input_image": png_data_uri()}}),
    )
    .await;
    assert_eq!((status, &named["version"]), (201, &json!(SVD_VERSION)));
    let (status, _) = post(
        &sim,
        "/v1/predictions",
        "sim_versions",
        &json!({"version": format!("bytedance/seedance-2.0:{SVD_VERSION}"),
                "input": {"input_image": png_data_uri()}}),
    )
    .await;
    assert_eq!(status, 422, "a version of another model");

    let (status, body) = post(
        &sim,
        "/v1/predictions",
        "sim_versions",
        &json!({"version": "0".repeat(64), "input": {}}),
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(body["title"], "Invalid version or not permitted");
    // A community model has no official-model route; an unknown model is not found.
    for model in ["stability-ai/stable-video-diffusion", "nobody/nothing"] {
        let (status, body) = post(
            &sim,
            &format!("/v1/models/{model}/predictions"),
            "sim_versions",
            &json!({"input": {"prompt": "x"}}),
        )
        .await;
        assert_eq!(status, 404, "{model}");
        assert_eq!(body["title"], "Not found");
    }
    let key = sim.stats().await.replicate;
    let key = key.for_api_key("sim_versions").unwrap();
    assert_eq!((key.counters.accepted, key.counters.rejected), (2, 4));
}

#[tokio::test]
async fn bodies_and_inputs_are_validated_with_invalid_fields() {
    let sim = start(fast()).await;
    let refused = async |path: &str, body: Value| {
        let (status, answer) = post(&sim, path, "sim_validation", &body).await;
        assert_eq!(status, 422, "{body}: {answer}");
        assert_eq!(answer["title"], "Input validation failed");
        assert_eq!(answer["status"], 422);
        answer
    };
    let model = format!("/v1/models/{SEEDANCE}/predictions");

    let answer = refused(&model, json!({"input": {"prompt": "x", "duration": 99}})).await;
    assert_eq!(
        answer["invalid_fields"],
        json!([{"type": "number_lte", "field": "input.duration",
                "description": "Must be less than or equal to 15"}])
    );
    assert_eq!(
        answer["detail"],
        "- input.duration: Must be less than or equal to 15\n"
    );

    let answer = refused(
        &model,
        json!({"input": {"duration": "5", "aspect_ratio": "2:1", "colour": "red"}}),
    )
    .await;
    let mut fields: Vec<(&str, &str)> = answer["invalid_fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["type"].as_str().unwrap(), f["field"].as_str().unwrap()))
        .collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        [
            ("additional_property_not_allowed", "input"),
            ("enum", "input.aspect_ratio"),
            ("invalid_type", "input.duration"),
            ("required", "input"),
        ],
        "{answer}"
    );
    assert!(
        answer["detail"]
            .as_str()
            .unwrap()
            .contains("- input: prompt is required\n"),
        "{answer}"
    );

    let answer = refused(&model, json!({"model": SEEDANCE, "input": {"prompt": "x"}})).await;
    assert_eq!(
        answer["invalid_fields"][0]["description"],
        "Additional property model is not allowed"
    );
    let answer = refused("/v1/predictions", json!({"input": {}})).await;
    assert_eq!(
        answer["invalid_fields"],
        json!([{"type": "required", "field": "", "description": "version is required"}])
    );
    let answer = refused(
        &model,
        json!({"input": {"prompt": "x", "image": "data:image/png;base64,???"}}),
    )
    .await;
    assert_eq!(answer["invalid_fields"][0]["field"], "input.image");
    let answer = refused(
        &model,
        json!({"input": {"prompt": "x"}, "webhook": "http://example.com/hook"}),
    )
    .await;
    assert_eq!(answer["invalid_fields"][0]["field"], "webhook");

    // Not JSON at all.
    let (status, answer) = send(
        client()
            .post(url(&sim, &model))
            .bearer_auth("sim_validation")
            .header("content-type", "application/json")
            .body("{"),
    )
    .await;
    assert_eq!(status, 400);
    assert!(answer["detail"].is_string());
    assert_eq!(
        sim.stats()
            .await
            .replicate
            .for_api_key("sim_validation")
            .unwrap()
            .counters
            .rejected,
        7
    );
}

#[tokio::test]
async fn cancel_ends_a_running_prediction_and_leaves_an_ended_one() {
    let sim = start_manual(Duration::from_secs(10)).await;
    let id = create(&sim, "sim_cancel", json!({"prompt": "a cat"})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    sim.clock().advance(Duration::from_secs(2));
    let (status, canceled) = post(
        &sim,
        &format!("/v1/predictions/{id}/cancel"),
        "sim_cancel",
        &json!(null),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(canceled["status"], "canceled");
    assert!(canceled["completed_at"].is_string() && canceled["started_at"].is_string());
    sim.clock().advance(Duration::from_secs(60));
    assert_eq!(
        prediction(&sim, "sim_cancel", &id).await["status"],
        "canceled"
    );
    // Another token's prediction does not exist for this one.
    let (status, _) = post(
        &sim,
        &format!("/v1/predictions/{id}/cancel"),
        "sim_other",
        &json!(null),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = get(&sim, &format!("/v1/predictions/{id}"), "sim_other").await;
    assert_eq!(status, 404);

    let done = create(&sim, "sim_cancel", json!({"prompt": "a dog"})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    sim.clock().advance(Duration::from_secs(10));
    let (status, ended) = post(
        &sim,
        &format!("/v1/predictions/{done}/cancel"),
        "sim_cancel",
        &json!(null),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        ended["status"], "succeeded",
        "an ended prediction stays as it is"
    );
    assert_eq!(
        sim.stats()
            .await
            .replicate
            .for_api_key("sim_cancel")
            .unwrap()
            .counters
            .cancels,
        2
    );
}

#[tokio::test]
async fn a_deadline_aborts_a_prediction_that_has_not_started() {
    let sim = start_manual(Duration::from_secs(100)).await;
    let created = |after: &'static str| {
        client()
            .post(url(&sim, &format!("/v1/models/{SEEDANCE}/predictions")))
            .bearer_auth("sim_deadline")
            .header("cancel-after", after)
            .json(&json!({"input": {"prompt": "x"}}))
    };
    let (status, aborted) = send(created("5s")).await;
    assert_eq!(status, 201);
    let (_, canceled) = send(created("1m")).await;
    sim.clock().advance(Duration::from_secs(61));
    let aborted = prediction(&sim, "sim_deadline", aborted["id"].as_str().unwrap()).await;
    assert_eq!(aborted["status"], "aborted");
    assert!(aborted["started_at"].is_null());
    let canceled = prediction(&sim, "sim_deadline", canceled["id"].as_str().unwrap()).await;
    assert_eq!(canceled["status"], "canceled", "running at its deadline");
    let (status, _) = send(created("soon")).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn prefer_wait_holds_the_answer_until_the_prediction_ends() {
    let sim = start(SimConfig {
        render_time: Duration::from_millis(100),
        ..SimConfig::default()
    })
    .await;
    let (status, done) = send(
        client()
            .post(url(&sim, &format!("/v1/models/{SEEDANCE}/predictions")))
            .bearer_auth("sim_wait")
            .header("prefer", "wait=5")
            .json(&json!({"input": {"prompt": "x"}})),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(done["status"], "succeeded", "{done}");
    assert!(done["output"].is_string());
}

#[tokio::test]
async fn a_throttled_token_gets_replicates_429_once() {
    let sim = start(SimConfig {
        retry_after: Duration::from_millis(2500),
        ..fast()
    })
    .await;
    let response = client()
        .post(url(&sim, &format!("/v1/models/{SEEDANCE}/predictions")))
        .bearer_auth("sim_throttled_once")
        .json(&json!({"input": {"prompt": "x"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    // Replicate documents the body only: the wait is in its text.
    assert!(response.headers().get("retry-after").is_none());
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"detail": "Request was throttled. Your rate limit resets in ~3s."})
    );
    create(&sim, "sim_throttled_once", json!({"prompt": "x"})).await;
    let stats = sim.stats().await;
    let key = stats.replicate.for_api_key("sim_throttled_once").unwrap();
    assert_eq!(
        (
            key.counters.submits,
            key.counters.throttled,
            key.counters.accepted
        ),
        (2, 1, 1)
    );
}

/// A multipart body with `content` (a file of `content_type`) and the text `fields`.
fn upload_body(content: &[u8], content_type: &str, fields: &[(&str, &str)]) -> (String, Vec<u8>) {
    let boundary = "byok-replicate-test-boundary";
    let mut body = Vec::new();
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"content\"; filename=\"frame.png\"\r\nContent-Type: {content_type}\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(content);
    body.extend_from_slice(b"\r\n");
    for (name, value) in fields {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

async fn upload(
    sim: &RunningSim,
    token: &str,
    content: &[u8],
    fields: &[(&str, &str)],
) -> (u16, Value) {
    let (content_type, body) = upload_body(content, "image/png", fields);
    send(
        client()
            .post(url(sim, "/v1/files"))
            .bearer_auth(token)
            .header("content-type", content_type)
            .body(body),
    )
    .await
}

#[tokio::test]
async fn uploaded_files_can_be_named_in_an_input_by_their_owner_only() {
    let sim = start(fast()).await;
    let image = png(320, 180);
    let (status, file) = upload(&sim, "sim_files", &image, &[("metadata", "{\"order\": 7}")]).await;
    assert_eq!(status, 201, "{file}");
    assert_eq!(file["name"], "frame.png");
    assert_eq!(file["content_type"], "image/png");
    assert_eq!(file["size"], image.len());
    assert_eq!(
        file["checksums"]["sha256"],
        hex::encode(Sha256::digest(&image))
    );
    assert_eq!(file["metadata"], json!({"order": 7}));
    let id = file["id"].as_str().unwrap();
    let file_url = file["urls"]["get"].as_str().unwrap();
    assert_eq!(file_url, format!("{}/v1/files/{id}", sim.replicate_url()));
    assert_eq!(
        get(&sim, &format!("/v1/files/{id}"), "sim_files").await,
        (200, file.clone())
    );
    assert_eq!(
        get(&sim, &format!("/v1/files/{id}"), "sim_other").await.0,
        404
    );

    let with_file = async |token: &str| {
        post(
            &sim,
            &format!("/v1/models/{SEEDANCE}/predictions"),
            token,
            &json!({"input": {"prompt": "x", "image": file_url}}),
        )
        .await
    };
    assert_eq!(with_file("sim_files").await.0, 201);
    let (status, refused) = with_file("sim_other").await;
    assert_eq!(status, 422, "another token's file: {refused}");
    assert_eq!(refused["invalid_fields"][0]["field"], "input.image");

    let deleted = client()
        .delete(url(&sim, &format!("/v1/files/{id}")))
        .bearer_auth("sim_files")
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    assert_eq!(
        get(&sim, &format!("/v1/files/{id}"), "sim_files").await.0,
        404
    );

    let (status, _) = upload(&sim, "sim_files", &image, &[("metadata", "[1]")]).await;
    assert_eq!(status, 400);
    let (status, _) = upload(&sim, "r8_bad", &image, &[]).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn reset_forgets_predictions() {
    let sim = start(fast()).await;
    let id = create(&sim, "sim_reset", json!({"prompt": "x"})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    sim.reset();
    assert_eq!(sim.stats().await.replicate, Default::default());
    assert_eq!(
        get(&sim, &format!("/v1/predictions/{id}"), "sim_reset")
            .await
            .0,
        404
    );
}
