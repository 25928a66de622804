//! Gemini Omni on Vertex AI, the Interactions API: docs/provider-protocols.md §3.10–3.15.
//! Every request is written by hand from that page.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use byok_sim::{RunningSim, SimConfig};
use serde_json::{Value, json};

use crate::helpers::{access_token, client, fast, png, start, start_manual, unix_now};

const MODEL: &str = "gemini-omni-1.2-flash";

fn interactions_url(sim: &RunningSim, project: &str, location: &str) -> String {
    format!(
        "{}/v1beta1/projects/{project}/locations/{location}/interactions",
        sim.vertex_url()
    )
}

/// An account of `project` and a live token of it.
async fn account(sim: &RunningSim, project: &str, id: Option<&str>) -> (Value, String) {
    let account = sim.new_service_account_with_id(project, id).unwrap();
    let token = access_token(&account, unix_now()).await;
    (account, token)
}

fn text_body(prompt: &str) -> Value {
    json!({
        "model": MODEL, "background": true, "store": true,
        "input": [{"type": "user_input", "content": [{"type": "text", "text": prompt}]}],
        "generation_config": {"video_config": {"task": "text_to_video"}},
        "response_format": {"type": "video", "duration": "6s", "aspect_ratio": "16:9",
                            "resolution": "720p", "delivery": "inline"},
    })
}

async fn create(sim: &RunningSim, token: &str, project: &str, body: &Value) -> reqwest::Response {
    client()
        .post(interactions_url(sim, project, "global"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// Creates `body` and returns the interaction's id.
async fn created(sim: &RunningSim, token: &str, project: &str, body: &Value) -> String {
    let response = create(sim, token, project, body).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    answer["id"].as_str().unwrap().to_owned()
}

async fn get(sim: &RunningSim, token: &str, project: &str, id: &str, query: &str) -> (u16, Value) {
    let url = format!("{}/{id}{query}", interactions_url(sim, project, "global"));
    let response = client().get(url).bearer_auth(token).send().await.unwrap();
    (
        response.status().as_u16(),
        response.json().await.unwrap_or(Value::Null),
    )
}

async fn cancel(sim: &RunningSim, token: &str, project: &str, id: &str) -> (u16, Value) {
    let url = format!("{}/{id}/cancel", interactions_url(sim, project, "global"));
    // No body, said as one, as google-genai's client does.
    let response = client()
        .post(url)
        .bearer_auth(token)
        .header("content-length", "0")
        .send()
        .await
        .unwrap();
    (
        response.status().as_u16(),
        response.json().await.unwrap_or(Value::Null),
    )
}

/// Asserts a google.rpc.Status error.
fn assert_rpc(status: u16, body: &Value, code: u16, name: &str) {
    assert_eq!(status, code, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert_eq!(body["error"]["status"], name, "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
}

async fn rpc(response: reqwest::Response, code: u16, name: &str) -> Value {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    assert_rpc(status, &body, code, name);
    body
}

fn model_output(interaction: &Value) -> &Value {
    interaction["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["type"] == "model_output")
        .unwrap_or_else(|| panic!("no model_output in {interaction}"))
}

#[tokio::test]
async fn an_interaction_walks_queued_in_progress_completed_with_the_video_inline() {
    let sim = start_manual(Duration::from_secs(10)).await;
    let (account, token) = account(&sim, "omni-a", None).await;
    let response = create(&sim, &token, "omni-a", &text_body("a lighthouse at dusk")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["status"], "queued");
    assert_eq!(answer["model"], MODEL);
    assert!(
        answer["created"].as_str().unwrap().ends_with('Z'),
        "{answer}"
    );
    // The answer echoes the input as a user_input step.
    assert_eq!(
        answer["steps"],
        json!([{"type": "user_input", "content": [{"type": "text", "text": "a lighthouse at dusk"}]}])
    );
    let id = answer["id"].as_str().unwrap().to_owned();
    assert!(
        id.len() >= 20
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "{id}"
    );

    sim.clock().advance(Duration::from_secs(2));
    let (status, running) = get(&sim, &token, "omni-a", &id, "?stream=false").await;
    assert_eq!((status, &running["status"]), (200, &json!("in_progress")));
    assert!(running.get("errors").is_none());

    sim.clock().advance(Duration::from_secs(8));
    let (status, done) = get(
        &sim,
        &token,
        "omni-a",
        &id,
        "?stream=false&include_input=false",
    )
    .await;
    assert_eq!((status, &done["status"]), (200, &json!("completed")));
    // include_input=false: only the output.
    let steps = done["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 1, "{done}");
    let video = &model_output(&done)["content"][0];
    assert_eq!(
        (&video["type"], &video["mime_type"]),
        (&json!("video"), &json!("video/mp4"))
    );
    let bytes = STANDARD.decode(video["data"].as_str().unwrap()).unwrap();
    assert_eq!(&bytes[4..8], b"ftyp");
    assert_eq!(done["usage"]["total_output_tokens"], 6 * 5792);
    // Without include_input the input comes back too.
    let (_, with_input) = get(&sim, &token, "omni-a", &id, "").await;
    assert_eq!(with_input["steps"][0]["type"], "user_input");

    let stats = sim.stats().await;
    let key = &stats.vertex.keys[account["client_email"].as_str().unwrap()];
    assert_eq!((key.counters.submits, key.counters.accepted), (1, 1));
    assert_eq!(key.counters.polls, 3);
}

#[tokio::test]
async fn image_to_video_with_uri_delivery_writes_a_cloud_storage_object_for_its_account() {
    let sim = start_manual(Duration::from_secs(4)).await;
    let (account, token) = account(&sim, "omni-b", None).await;
    let (_, stranger) = account_of_same_project(&sim).await;
    let body = json!({
        "model": MODEL, "background": true,
        "input": [{"type": "text", "text": "animate this"},
                  {"type": "image", "data": STANDARD.encode(png(320, 180)), "mime_type": "image/png"}],
        "generation_config": {"video_config": {"task": "image_to_video"}},
        "response_format": [{"type": "video", "duration": "4s", "delivery": "uri",
                             "gcs_uri": "gs://omni-out/jobs"}],
    });
    let id = created(&sim, &token, "omni-b", &body).await;
    let object = format!(
        "{}/storage/v1/b/omni-out/o/jobs%2F{id}%2Fsample_0.mp4?alt=media",
        sim.storage_url()
    );
    let download = |token: String| {
        let object = object.clone();
        async move {
            client()
                .get(object)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
        }
    };
    // Not written before the interaction completes.
    assert_eq!(download(token.clone()).await.status(), 404);

    sim.clock().advance(Duration::from_secs(4));
    let (_, done) = get(&sim, &token, "omni-b", &id, "?stream=false").await;
    assert_eq!(done["status"], "completed");
    let uri = model_output(&done)["content"][0]["uri"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(uri, format!("gs://omni-out/jobs/{id}/sample_0.mp4"));
    let response = download(token.clone()).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "video/mp4");
    assert_eq!(&response.bytes().await.unwrap()[4..8], b"ftyp");
    // Another account of the project may not read it.
    assert_eq!(download(stranger).await.status(), 403);
    let email = account["client_email"].as_str().unwrap();
    assert_eq!(sim.stats().await.vertex.keys[email].counters.accepted, 1);
}

async fn account_of_same_project(sim: &RunningSim) -> (Value, String) {
    account(sim, "omni-b", Some("other-account")).await
}

#[tokio::test]
async fn a_running_interaction_is_cancelled_and_a_finished_one_is_not() {
    let sim = start_manual(Duration::from_secs(10)).await;
    let (account, token) = account(&sim, "omni-c", None).await;
    let id = created(&sim, &token, "omni-c", &text_body("a slow dolly shot")).await;
    sim.clock().advance(Duration::from_secs(3));
    let (status, cancelled) = cancel(&sim, &token, "omni-c", &id).await;
    assert_eq!(
        (status, &cancelled["status"]),
        (200, &json!("cancelled")),
        "{cancelled}"
    );
    // It stays cancelled: no video later.
    sim.clock().advance(Duration::from_secs(30));
    let (_, later) = get(&sim, &token, "omni-c", &id, "?stream=false").await;
    assert_eq!(later["status"], "cancelled");
    assert!(
        later["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["type"] != "model_output")
    );
    // Cancelling again, or cancelling a completed interaction, is a failed precondition.
    let (status, again) = cancel(&sim, &token, "omni-c", &id).await;
    assert_rpc(status, &again, 400, "FAILED_PRECONDITION");
    let finished = created(&sim, &token, "omni-c", &text_body("a quick pan")).await;
    sim.clock().advance(Duration::from_secs(10));
    let (status, body) = cancel(&sim, &token, "omni-c", &finished).await;
    assert_rpc(status, &body, 400, "FAILED_PRECONDITION");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("completed"),
        "{body}"
    );
    // Unknown ids are 404.
    let (status, body) = cancel(&sim, &token, "omni-c", "nope").await;
    assert_rpc(status, &body, 404, "NOT_FOUND");
    // A POST without a length is refused before the API, as Google's front end does.
    let bare = client()
        .post(format!(
            "{}/{finished}/cancel",
            interactions_url(&sim, "omni-c", "global")
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(bare.status(), 411);
    assert!(bare.text().await.unwrap().contains("Content-length"));

    let email = account["client_email"].as_str().unwrap();
    assert_eq!(sim.stats().await.vertex.keys[email].counters.cancels, 4);
}

#[tokio::test]
async fn moderated_prompts_and_failures_end_failed_with_errors() {
    let sim = start(fast()).await;
    let (_, token) = account(&sim, "omni-d", None).await;
    let id = created(
        &sim,
        &token,
        "omni-d",
        &text_body("please sim:moderate this"),
    )
    .await;
    let (_, moderated) = get(&sim, &token, "omni-d", &id, "?stream=false").await;
    assert_eq!(moderated["status"], "failed");
    assert_eq!(moderated["errors"][0]["code"], "safety");

    sim.set_config(SimConfig {
        failure_rate: 1.0,
        ..fast()
    })
    .unwrap();
    let id = created(&sim, &token, "omni-d", &text_body("a cat")).await;
    let (_, failed) = get(&sim, &token, "omni-d", &id, "?stream=false").await;
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["errors"][0]["code"], "api_error");
}

#[tokio::test]
async fn credentials_models_locations_and_bodies_are_checked() {
    let sim = start(fast()).await;
    let (_, token) = account(&sim, "omni-e", None).await;
    let (_, other) = account(&sim, "omni-f", None).await;
    let body = text_body("a cat");

    // No token, a token of another project.
    let response = client()
        .post(interactions_url(&sim, "omni-e", "global"))
        .json(&body)
        .send()
        .await
        .unwrap();
    rpc(response, 401, "UNAUTHENTICATED").await;
    rpc(
        create(&sim, &other, "omni-e", &body).await,
        403,
        "PERMISSION_DENIED",
    )
    .await;

    // A model that is not served, a Veo model, a regional location, another version.
    for model in ["gemini-omni-0.9-flash", "veo-3.1-generate-001"] {
        let mut body = body.clone();
        body["model"] = json!(model);
        rpc(
            create(&sim, &token, "omni-e", &body).await,
            404,
            "NOT_FOUND",
        )
        .await;
    }
    let regional = client()
        .post(interactions_url(&sim, "omni-e", "us-central1"))
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await
        .unwrap();
    rpc(regional, 404, "NOT_FOUND").await;
    let v1 = client()
        .post(format!(
            "{}/v1/projects/omni-e/locations/global/interactions",
            sim.vertex_url()
        ))
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(v1.status(), 404);

    // Bodies the API refuses.
    for change in [
        json!({"background": false}),
        json!({"surprise": true}),
        json!({"response_format": {"type": "video", "duration": "20s"}}),
        json!({"response_format": {"type": "video", "delivery": "uri"}}),
        json!({"generation_config": {"video_config": {"task": "image_to_video"}}}),
    ] {
        let mut bad = body.clone();
        for (k, v) in change.as_object().unwrap() {
            bad[k] = v.clone();
        }
        let answer = rpc(
            create(&sim, &token, "omni-e", &bad).await,
            400,
            "INVALID_ARGUMENT",
        )
        .await;
        assert!(!answer["error"]["message"].as_str().unwrap().is_empty());
    }
    let garbage = client()
        .post(interactions_url(&sim, "omni-e", "global"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    rpc(garbage, 400, "INVALID_ARGUMENT").await;

    // Another account's interaction is unknown to it; streaming is not served.
    let id = created(&sim, &token, "omni-e", &body).await;
    let (_, stranger) = account(&sim, "omni-e", Some("stranger")).await;
    let (status, answer) = get(&sim, &stranger, "omni-e", &id, "?stream=false").await;
    assert_rpc(status, &answer, 404, "NOT_FOUND");
    let (status, answer) = get(&sim, &token, "omni-e", &id, "?stream=true").await;
    assert_rpc(status, &answer, 400, "INVALID_ARGUMENT");
}

#[tokio::test]
async fn a_throttled_service_account_gets_one_429_with_retry_info() {
    let sim = start(SimConfig {
        retry_after: Duration::from_millis(1500),
        ..fast()
    })
    .await;
    let (account, token) = account(&sim, "omni-g", Some("sim-throttled-omni")).await;
    let body = rpc(
        create(&sim, &token, "omni-g", &text_body("a cat")).await,
        429,
        "RESOURCE_EXHAUSTED",
    )
    .await;
    assert_eq!(
        body["error"]["details"][0],
        json!({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1.5s"})
    );
    created(&sim, &token, "omni-g", &text_body("a cat")).await;
    let stats = sim.stats().await;
    let key = &stats.vertex.keys[account["client_email"].as_str().unwrap()];
    assert_eq!(
        (
            key.counters.submits,
            key.counters.throttled,
            key.counters.accepted
        ),
        (2, 1, 1)
    );
}
