//! fal.ai at the simulator (docs/provider-protocols.md §8), by hand: the queue host under
//! `/fal` and at the root of the TLS listener, the key check under `/fal-rest`, the CDN under
//! `/fal-media`.

use std::time::Duration;

use byok_sim::{Clock, SimConfig, Simulator};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{client, fast, png_data_uri, start, start_with};

const APP: &str = "fal-ai/kling-video/v2.1/master/image-to-video";
const KEY: &str = "sim_fal_test";

fn kling_input() -> Value {
    json!({"prompt": "slow dolly-in", "image_url": png_data_uri(), "duration": "10"})
}

async fn post(
    url: &str,
    key: Option<&str>,
    body: &Value,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let mut request = client().post(url).json(body);
    if let Some(key) = key {
        request = request.header("authorization", format!("Key {key}"));
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    (
        status,
        headers,
        response.json().await.unwrap_or(Value::Null),
    )
}

async fn call(method: reqwest::Method, url: &str, key: &str) -> (StatusCode, Value) {
    let response = client()
        .request(method, url)
        .header("authorization", format!("Key {key}"))
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn get(url: &str, key: &str) -> (StatusCode, Value) {
    call(reqwest::Method::GET, url, key).await
}

#[tokio::test]
async fn a_request_walks_the_queue_to_its_video() {
    let clock = Clock::manual();
    let sim = start_with(
        Simulator::new(SimConfig {
            render_time: Duration::from_secs(10),
            ..SimConfig::default()
        })
        .clock(clock.clone()),
    )
    .await;
    let base = sim.fal_url();
    let (status, headers, submitted) =
        post(&format!("{base}/{APP}"), Some(KEY), &kling_input()).await;
    assert_eq!(status, StatusCode::OK, "{submitted}");
    let id = submitted["request_id"].as_str().unwrap().to_owned();
    assert_eq!(headers["x-fal-request-id"], id.as_str());
    // The follow-up URLs name the owner and alias only (F-PY from_request_id).
    let response_url = format!("{base}/fal-ai/kling-video/requests/{id}");
    assert_eq!(
        submitted,
        json!({"request_id": id, "gateway_request_id": id, "status": "IN_QUEUE", "queue_position": 0,
               "response_url": response_url, "status_url": format!("{response_url}/status"),
               "cancel_url": format!("{response_url}/cancel")})
    );
    let status_url = format!("{response_url}/status");

    let (code, body) = get(&status_url, KEY).await;
    assert_eq!(
        (code, &body["status"], &body["queue_position"]),
        (StatusCode::OK, &json!("IN_QUEUE"), &json!(0))
    );
    // Too early for the result.
    let (code, body) = get(&response_url, KEY).await;
    assert_eq!(
        (code, body),
        (
            StatusCode::BAD_REQUEST,
            json!({"detail": "Request is still in progress"})
        )
    );

    clock.advance(Duration::from_secs(5));
    let (_, body) = get(&format!("{status_url}?logs=0"), KEY).await;
    assert_eq!(
        (&body["status"], &body["logs"]),
        (&json!("IN_PROGRESS"), &Value::Null)
    );
    let (_, body) = get(&format!("{status_url}?logs=1"), KEY).await;
    assert_eq!(body["logs"][0]["level"], "INFO");
    assert_eq!(body["logs"][0]["source"], "USER");

    clock.advance(Duration::from_secs(5));
    let (_, body) = get(&format!("{status_url}?logs=false"), KEY).await;
    assert_eq!(body["status"], "COMPLETED");
    assert_eq!(body["metrics"], json!({"inference_time": 10.0}));
    assert!(body.get("error").is_none(), "{body}");
    assert_eq!(body["response_url"], response_url.as_str());

    let (code, result) = get(&response_url, KEY).await;
    assert_eq!(code, StatusCode::OK);
    let video = &result["video"];
    assert_eq!(
        (&video["content_type"], &video["file_name"]),
        (&json!("video/mp4"), &json!("output.mp4"))
    );
    let url = video["url"].as_str().unwrap();
    assert_eq!(
        url,
        format!("{}/fal-media/files/{id}/output.mp4", sim.base_url())
    );
    // The CDN needs no key.
    let file = client().get(url).send().await.unwrap();
    assert_eq!(file.status(), StatusCode::OK);
    let bytes = file.bytes().await.unwrap();
    assert_eq!(&bytes[4..8], b"ftyp");
    assert_eq!(video["file_size"], bytes.len());

    let stats = sim.stats().await;
    let counters = &stats.fal.for_api_key(KEY).unwrap().counters;
    assert_eq!(
        (counters.submits, counters.accepted, counters.polls),
        (1, 1, 4)
    );
    // Every request to fal's hosts, the CDN download included.
    assert_eq!(stats.fal.request_times_ms.len(), 8);
}

#[tokio::test]
async fn a_keys_requests_over_its_concurrency_wait_in_line() {
    let clock = Clock::manual();
    let sim = start_with(
        Simulator::new(SimConfig {
            render_time: Duration::from_secs(10),
            fal_concurrency: 1,
            ..SimConfig::default()
        })
        .clock(clock.clone()),
    )
    .await;
    let submit_url = format!("{}/{APP}", sim.fal_url());
    let mut ids = Vec::new();
    // The first starts at once; the others wait: the second is first in line.
    for expected_position in [0, 0, 1] {
        let (status, _, body) = post(&submit_url, Some(KEY), &kling_input()).await;
        assert_eq!(
            (status, &body["queue_position"]),
            (StatusCode::OK, &json!(expected_position))
        );
        ids.push(body["request_id"].as_str().unwrap().to_owned());
    }
    let position = |body: &Value| body["queue_position"].as_u64();
    let status_of = |id: &str| format!("{}/fal-ai/kling-video/requests/{id}/status", sim.fal_url());
    assert_eq!(position(&get(&status_of(&ids[1]), KEY).await.1), Some(0));
    assert_eq!(position(&get(&status_of(&ids[2]), KEY).await.1), Some(1));
    // Another key has its own slots.
    let (_, _, other) = post(&submit_url, Some("sim_fal_other"), &kling_input()).await;
    clock.advance(Duration::from_secs(2));
    let other_id = other["request_id"].as_str().unwrap();
    assert_eq!(
        get(&status_of(other_id), "sim_fal_other").await.1["status"],
        "IN_PROGRESS"
    );
    // When the first ends, the second runs and the third moves up.
    clock.advance(Duration::from_secs(10));
    assert_eq!(get(&status_of(&ids[0]), KEY).await.1["status"], "COMPLETED");
    assert_eq!(
        get(&status_of(&ids[1]), KEY).await.1["status"],
        "IN_PROGRESS"
    );
    assert_eq!(position(&get(&status_of(&ids[2]), KEY).await.1), Some(0));
}

#[tokio::test]
async fn inputs_are_validated_with_fastapis_422() {
    let sim = start(fast()).await;
    let url = format!("{}/{APP}", sim.fal_url());
    let (status, _, body) = post(
        &url,
        Some(KEY),
        &json!({"image_url": "http://10.0.0.1/a.png", "duration": 5, "seed": 1}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let locs: Vec<&Value> = body["detail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| &d["loc"])
        .collect();
    assert_eq!(
        locs,
        [
            &json!(["body", "prompt"]),
            &json!(["body", "image_url"]),
            &json!(["body", "duration"]),
            &json!(["body", "seed"])
        ]
    );
    assert_eq!(
        body["detail"][0],
        json!({"loc": ["body", "prompt"], "msg": "field required", "type": "value_error.missing"})
    );
    assert_eq!(body["detail"][2]["type"], "type_error.enum");
    assert_eq!(body["detail"][3]["type"], "value_error.extra");
    let (status, _, body) = post(&url, Some(KEY), &json!([1, 2])).await;
    assert_eq!(
        (status, &body["detail"][0]["type"]),
        (StatusCode::UNPROCESSABLE_ENTITY, &json!("type_error.dict"))
    );
    // Luma writes its lengths with the unit.
    let luma = format!("{}/fal-ai/luma-dream-machine/ray-2-flash", sim.fal_url());
    let (status, _, _) = post(
        &luma,
        Some(KEY),
        &json!({"prompt": "x", "duration": "9s", "aspect_ratio": "9:21", "resolution": "1080p"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, body) = post(&luma, Some(KEY), &json!({"prompt": "x", "duration": "9"})).await;
    assert_eq!(
        (status, &body["detail"][0]["loc"]),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            &json!(["body", "duration"])
        )
    );
    let stats = sim.stats().await;
    let counters = &stats.fal.for_api_key(KEY).unwrap().counters;
    assert_eq!(
        (counters.submits, counters.rejected, counters.accepted),
        (4, 3, 1)
    );
}

#[tokio::test]
async fn keys_apps_and_requests_that_do_not_exist() {
    let sim = start(fast()).await;
    let url = format!("{}/{APP}", sim.fal_url());
    for key in [None, Some("fal_real_looking_key")] {
        let (status, _, body) = post(&url, key, &kling_input()).await;
        assert_eq!(
            (status, body),
            (StatusCode::UNAUTHORIZED, json!({"detail": "Unauthorized"}))
        );
    }
    let (status, _, body) = post(
        &format!("{}/fal-ai/no-such-app", sim.fal_url()),
        Some(KEY),
        &json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (_, _, submitted) = post(&url, Some(KEY), &kling_input()).await;
    let response_url = submitted["response_url"].as_str().unwrap();
    // Another key's request, or the same id under another app, is not found.
    assert_eq!(
        get(response_url, "sim_someone_else").await.0,
        StatusCode::NOT_FOUND
    );
    let elsewhere = response_url.replace("kling-video", "stable-video");
    assert_eq!(get(&elsewhere, KEY).await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        get(
            &format!("{}/fal-ai/kling-video/requests/nope/status", sim.fal_url()),
            KEY
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
    // The SSE stream is not simulated; a request path takes only its own methods.
    assert_eq!(
        get(&format!("{response_url}/status/stream"), KEY).await.0,
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(
        call(reqwest::Method::DELETE, response_url, KEY).await.0,
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(sim.stats().await.fal.totals.unauthorized, 2);
}

#[tokio::test]
async fn cancel_outcomes() {
    let sim = start(SimConfig {
        render_time: Duration::from_secs(600),
        ..fast()
    })
    .await;
    let url = format!("{}/{APP}", sim.fal_url());
    let (_, _, submitted) = post(&url, Some(KEY), &kling_input()).await;
    let cancel_url = submitted["cancel_url"].as_str().unwrap();
    let (status, body) = call(reqwest::Method::PUT, cancel_url, KEY).await;
    assert_eq!(
        (status, body),
        (
            StatusCode::ACCEPTED,
            json!({"status": "CANCELLATION_REQUESTED"})
        )
    );
    // It is over, without a video.
    let (_, body) = get(submitted["status_url"].as_str().unwrap(), KEY).await;
    assert_eq!(
        (&body["status"], &body["error"]),
        (&json!("COMPLETED"), &json!("Request was cancelled"))
    );
    let (status, body) = call(reqwest::Method::PUT, cancel_url, KEY).await;
    assert_eq!(
        (status, body),
        (
            StatusCode::BAD_REQUEST,
            json!({"status": "ALREADY_COMPLETED"})
        )
    );
    let (status, body) = call(reqwest::Method::PUT, cancel_url, "sim_someone_else").await;
    assert_eq!(
        (status, body),
        (StatusCode::NOT_FOUND, json!({"status": "NOT_FOUND"}))
    );
    assert_eq!(
        sim.stats()
            .await
            .fal
            .for_api_key(KEY)
            .unwrap()
            .counters
            .cancels,
        2
    );
}

#[tokio::test]
async fn failures_moderation_throttling_and_locked_accounts() {
    let sim = start(SimConfig {
        failure_rate: 1.0,
        retry_after: Duration::from_millis(2500),
        ..fast()
    })
    .await;
    let url = format!("{}/{APP}", sim.fal_url());
    // fal gave up on the request: COMPLETED carries the error, the result is a request error.
    let (_, _, failed) = post(&url, Some(KEY), &kling_input()).await;
    let (_, body) = get(failed["status_url"].as_str().unwrap(), KEY).await;
    assert_eq!(
        (&body["status"], &body["error_type"]),
        (&json!("COMPLETED"), &json!("runner_disconnected"))
    );
    let response = client()
        .get(failed["response_url"].as_str().unwrap())
        .header("authorization", format!("Key {KEY}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        response.headers()["x-fal-error-type"],
        "runner_disconnected"
    );
    // The app's content checker: COMPLETED, then a 422 with the type.
    let mut moderated = kling_input();
    moderated["prompt"] = json!("please sim:moderate this");
    let (_, _, submitted) = post(&url, Some(KEY), &moderated).await;
    let (_, body) = get(submitted["status_url"].as_str().unwrap(), KEY).await;
    assert!(body.get("error").is_none(), "{body}");
    let (status, body) = get(submitted["response_url"].as_str().unwrap(), KEY).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        (&body["detail"][0]["type"], &body["detail"][0]["loc"]),
        (
            &json!("content_policy_violation"),
            &json!(["body", "prompt"])
        )
    );
    // sim_throttled: one 429 with Retry-After (seconds, rounded up), then accepted.
    let (status, headers, _) = post(&url, Some("sim_throttled_fal"), &kling_input()).await;
    assert_eq!(
        (status, &headers["retry-after"]),
        (
            StatusCode::TOO_MANY_REQUESTS,
            &"3".parse::<reqwest::header::HeaderValue>().unwrap()
        )
    );
    assert_eq!(
        post(&url, Some("sim_throttled_fal"), &kling_input())
            .await
            .0,
        StatusCode::OK
    );
    // sim_broke: fal's lock of an account without credit.
    let (status, _, body) = post(&url, Some("sim_broke_fal"), &kling_input()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .starts_with("User is locked. Reason: Exhausted balance.")
    );
    let stats = sim.stats().await;
    let throttled = &stats.fal.for_api_key("sim_throttled_fal").unwrap().counters;
    assert_eq!((throttled.throttled, throttled.accepted), (1, 1));
}

#[tokio::test]
async fn the_key_check_mints_a_storage_token() {
    let sim = start(fast()).await;
    let url = format!(
        "{}/fal-rest/storage/auth/token?storage_type=fal-cdn-v3",
        sim.base_url()
    );
    let (status, _, body) = post(&url, Some(KEY), &json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["token"].as_str().unwrap().len(), 64);
    assert!(
        chrono::DateTime::parse_from_rfc3339(body["expires_at"].as_str().unwrap()).is_ok(),
        "{body}"
    );
    assert_eq!(
        post(&url, Some("nope"), &json!({})).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        post(&url, Some("sim_broke_x"), &json!({})).await.0,
        StatusCode::FORBIDDEN
    );
    let without = format!("{}/fal-rest/storage/auth/token", sim.base_url());
    assert_eq!(
        post(&without, Some(KEY), &json!({})).await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
}

#[tokio::test]
async fn the_tls_listener_serves_the_queue_host_at_its_root() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim = Simulator::new(fast())
        .tls("127.0.0.1:0".parse().unwrap())
        .start(listener)
        .await
        .unwrap();
    let tls_url = sim.tls_url().unwrap().to_owned();
    assert!(tls_url.starts_with("https://127.0.0.1:"), "{tls_url}");
    let ca = reqwest::Certificate::from_pem(sim.tls_ca_pem().unwrap().as_bytes()).unwrap();
    let trusting = reqwest::Client::builder()
        .tls_certs_only([ca])
        .build()
        .unwrap();
    let submitted: Value = trusting
        .post(format!("{tls_url}/{APP}"))
        .header("authorization", format!("Key {KEY}"))
        .json(&kling_input())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // The URLs it hands out are its own.
    let status_url = submitted["status_url"].as_str().unwrap();
    assert!(
        status_url.starts_with(&format!("{tls_url}/fal-ai/kling-video/requests/")),
        "{status_url}"
    );
    let status: Value = trusting
        .get(status_url)
        .header("authorization", format!("Key {KEY}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["status"], "COMPLETED");
    let token = trusting
        .post(format!(
            "{tls_url}/fal-rest/storage/auth/token?storage_type=fal-cdn-v3"
        ))
        .header("authorization", format!("Key {KEY}"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(token.status(), StatusCode::OK);
    // A client that does not trust the simulator's CA gets no connection.
    let refused = client().get(status_url).send().await;
    assert!(refused.is_err());
    let stats = sim.stats().await;
    assert_eq!(stats.fal.for_api_key(KEY).unwrap().counters.accepted, 1);
    sim.shutdown().await;
}
