//! fal's generation half: `POST {queue}/{app}`, `GET …/requests/{id}/status`,
//! `GET …/requests/{id}` (the result), `PUT …/requests/{id}/cancel` and the output download,
//! against wiremock. Requests are asserted exactly; every answer class of
//! docs/provider-protocols.md §8.5 is mapped to its code and retry class.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use byok_core::{ErrorCode, ProviderUsage, RetryClass};
use byok_providers::{
    CancelOutcome, InputImage, JobError, ProviderId, Registry, RemoteStatus, Submitted, VideoOutput,
};
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::fal::FAL_KEY;
use crate::support::FetchVideo as _;
use crate::support::{
    self, Adapter, adapter, assert_a_cut_submit_is_outcome_unknown_but_a_refused_one_is_not,
    assert_a_non_image_is_refused_before_sending, assert_a_timed_out_submit_is_outcome_unknown,
    assert_class, assert_downloads_fail, assert_exact_headers, assert_no_requests,
    assert_output_urls_are_refused, assert_the_output_is_downloaded_without_credentials,
    closed_port, fake_mp4, generation_request, input_png, json_body, mount, noise_png,
    only_request, registry, validate_and_submit,
};

const REQUEST_ID: &str = "764cabcf-b745-4b3e-ae38-1200304cf45b";
const KLING_APP: &str = "/fal-ai/kling-video/v2.1/master/image-to-video";
const LUMA_T2V_APP: &str = "/fal-ai/luma-dream-machine/ray-2-flash";
/// The job id of a Kling request: the path of fal's `response_url`.
const KLING_JOB: &str = "fal-ai/kling-video/requests/764cabcf-b745-4b3e-ae38-1200304cf45b";
const KLING_REQUEST_PATH: &str =
    "/fal-ai/kling-video/requests/764cabcf-b745-4b3e-ae38-1200304cf45b";

fn fal(registry: &Registry) -> Adapter {
    adapter(registry, ProviderId::FAL, &json!({"api_key": FAL_KEY}))
}

/// Validates `fields` for fal and submits them with `image`.
async fn submit(
    registry: &Registry,
    fields: Value,
    image: Option<&InputImage>,
) -> Result<Submitted, JobError> {
    let (fal, credentials) = fal(registry);
    validate_and_submit(fal.as_ref(), &credentials, fields, image).await
}

/// What fal answers a submit (F-PY `submit`, F-JS `queue.ts`).
fn queued(server: &str, root: &str) -> ResponseTemplate {
    let base = format!("{server}/{root}/requests/{REQUEST_ID}");
    ResponseTemplate::new(200).set_body_json(json!({
        "request_id": REQUEST_ID, "gateway_request_id": REQUEST_ID,
        "status": "IN_QUEUE", "queue_position": 0,
        "response_url": base, "status_url": format!("{base}/status"),
        "cancel_url": format!("{base}/cancel"),
    }))
}

fn submit_headers(request: &wiremock::Request) {
    assert_exact_headers(
        request,
        &[
            ("authorization", &format!("Key {FAL_KEY}")),
            ("content-type", "application/json"),
            ("accept", "application/json"),
            ("content-length", &request.body.len().to_string()),
        ],
    );
}

fn data_uri(image: &InputImage) -> String {
    format!("data:image/png;base64,{}", STANDARD.encode(&image.bytes))
}

// ---------------------------------------------------------------------------------------
// Conformance: the inputs as each app's card names and types them.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn text_to_video_sends_the_apps_own_field_names_and_types() {
    let server = MockServer::start().await;
    mount(
        &server,
        "POST",
        LUMA_T2V_APP,
        queued(&server.uri(), "fal-ai/luma-dream-machine"),
    )
    .await;
    let submitted = submit(
        &registry(&server.uri()),
        json!({"model": "luma-ray-2-flash", "prompt": "a red fox in snow", "duration_seconds": 9,
               "aspect_ratio": "9:16", "resolution": "720p"}),
        None,
    )
    .await
    .expect("submitted");
    // The job id is the path of the response_url: owner/alias, never the app's sub-path.
    assert_eq!(
        submitted.provider_job_id,
        format!("fal-ai/luma-dream-machine/requests/{REQUEST_ID}")
    );
    let request = only_request(&server).await;
    assert_eq!(request.method.as_str(), "POST");
    assert_eq!(request.url.path(), LUMA_T2V_APP);
    assert_eq!(request.url.query(), None);
    submit_headers(&request);
    // Value equality tells "9s" from 9: Luma writes its lengths with the unit.
    assert_eq!(
        json_body(&request),
        json!({"prompt": "a red fox in snow", "duration": "9s", "aspect_ratio": "9:16",
               "resolution": "720p"})
    );
}

#[tokio::test]
async fn image_to_video_sends_the_fetched_image_as_a_data_uri() {
    let server = MockServer::start().await;
    mount(
        &server,
        "POST",
        KLING_APP,
        queued(&server.uri(), "fal-ai/kling-video"),
    )
    .await;
    let image = input_png(40, 30);
    let submitted = submit(
        &registry(&server.uri()),
        json!({"model": "kling-v2.1-master", "prompt": "slow dolly-in",
               "image_url": "https://images.example/a.png", "duration_seconds": 10}),
        Some(&image),
    )
    .await
    .expect("submitted");
    assert_eq!(submitted.provider_job_id, KLING_JOB);
    let request = only_request(&server).await;
    assert_eq!(request.url.path(), KLING_APP);
    submit_headers(&request);
    // Kling's durations are strings; no shape: the video takes the image's.
    let body = json_body(&request);
    assert_eq!(
        body,
        json!({"prompt": "slow dolly-in", "duration": "10", "image_url": data_uri(&image)})
    );
    // fal gets exactly the bytes that were fetched and checked, never the producer's URL.
    let b64 = body["image_url"]
        .as_str()
        .and_then(|u| u.strip_prefix("data:image/png;base64,"))
        .expect("a PNG data URI");
    assert_eq!(STANDARD.decode(b64).expect("base64"), image.bytes);
}

#[tokio::test]
async fn each_catalogue_app_gets_its_inputs() {
    let cases = [
        (
            json!({"model": "hailuo-02-standard", "prompt": "a cave", "image_url": "https://i.example/a.png"}),
            "/fal-ai/minimax/hailuo-02/standard/image-to-video",
            "fal-ai/minimax",
            json!({"prompt": "a cave", "duration": "6"}),
        ),
        (
            json!({"model": "hailuo-2.3-standard", "prompt": "a storm", "duration_seconds": 10}),
            "/fal-ai/minimax/hailuo-2.3/standard/text-to-video",
            "fal-ai/minimax",
            json!({"prompt": "a storm", "duration": "10"}),
        ),
        (
            json!({"model": "stable-video", "image_url": "https://i.example/a.png", "seed": 42}),
            "/fal-ai/stable-video",
            "fal-ai/stable-video",
            json!({"seed": 42}),
        ),
        (
            json!({"model": "luma-ray-2-flash", "prompt": "a kite", "image_url": "https://i.example/a.png"}),
            "/fal-ai/luma-dream-machine/ray-2-flash/image-to-video",
            "fal-ai/luma-dream-machine",
            json!({"prompt": "a kite", "duration": "5s", "aspect_ratio": "16:9", "resolution": "540p"}),
        ),
    ];
    let image = input_png(16, 9);
    for (fields, app, root, mut expected) in cases {
        let server = MockServer::start().await;
        mount(&server, "POST", app, queued(&server.uri(), root)).await;
        let with_image = fields.get("image_url").is_some();
        let submitted = submit(
            &registry(&server.uri()),
            fields,
            with_image.then_some(&image),
        )
        .await
        .unwrap_or_else(|e| panic!("{app}: {e}"));
        assert_eq!(
            submitted.provider_job_id,
            format!("{root}/requests/{REQUEST_ID}")
        );
        if with_image {
            expected["image_url"] = data_uri(&image).into();
        }
        let request = only_request(&server).await;
        assert_eq!(request.url.path(), app);
        assert_eq!(json_body(&request), expected, "{app}");
    }
}

#[tokio::test]
async fn an_image_too_big_to_send_inline_is_re_encoded_below_the_limit() {
    // Noise does not compress: a 2400x1500 noise PNG is ~10.8 MB, whose data URI would
    // exceed the 10 MB the adapter sends inline.
    let image = noise_png(2400, 1500);
    assert!(
        image.bytes.len() / 3 * 4 > 10_000_000,
        "the test image must be too big"
    );
    let server = MockServer::start().await;
    mount(
        &server,
        "POST",
        KLING_APP,
        queued(&server.uri(), "fal-ai/kling-video"),
    )
    .await;
    submit(
        &registry(&server.uri()),
        json!({"model": "kling-v2.1-master", "prompt": "x", "image_url": "https://i.example/a.png"}),
        Some(&image),
    )
    .await
    .expect("submitted");
    let body = json_body(&only_request(&server).await);
    let uri = body["image_url"].as_str().expect("string");
    assert!(uri.len() <= 10_000_000, "{}", uri.len());
    let jpeg = STANDARD
        .decode(uri.strip_prefix("data:image/jpeg;base64,").expect("a JPEG"))
        .expect("base64");
    let decoded = image::load_from_memory(&jpeg).expect("decodes");
    assert_eq!((decoded.width(), decoded.height()), (2048, 1280));
}

#[tokio::test]
async fn a_non_image_is_refused_before_anything_is_sent() {
    assert_a_non_image_is_refused_before_sending(async |registry, image| {
        submit(
            registry,
            json!({"model": "stable-video", "image_url": "https://i.example/a.png"}),
            Some(image),
        )
        .await
    })
    .await;
}

#[test]
fn validate_refuses_a_shape_the_app_cannot_be_told() {
    let registry = registry("http://127.0.0.1:9");
    let fal = registry.get(ProviderId::FAL).unwrap();
    let validate = |fields: Value| fal.validate(&generation_request("fal", fields));
    // Kling's image-to-video takes the image's shape: naming one would be silently ignored.
    let err = validate(json!({"model": "kling-v2.1-master", "prompt": "x",
                              "image_url": "https://i.example/a.png", "aspect_ratio": "9:16"}))
    .expect_err("no aspect input");
    assert_eq!(err.field, "aspect_ratio");
    let err = validate(json!({"model": "hailuo-02-standard", "prompt": "x",
                              "image_url": "https://i.example/a.png", "resolution": "768p"}))
    .expect_err("no resolution input");
    assert_eq!(err.field, "resolution");
    // Luma has inputs for both, in both modes.
    let ok = validate(json!({"model": "luma-ray-2-flash", "prompt": "x",
                             "image_url": "https://i.example/a.png", "aspect_ratio": "21:9", "resolution": "1080p"}))
    .expect("valid");
    assert_eq!(ok.format.expect("a format").wire, "21:9");
    // The catalogue's own rules still apply.
    assert_eq!(
        validate(
            json!({"model": "stable-video", "prompt": "x", "image_url": "https://i.example/a.png"})
        )
        .expect_err("no prompt")
        .field,
        "prompt"
    );
    assert_eq!(
        validate(json!({"model": "kling-v2.1-master", "prompt": "x",
                        "image_url": "https://i.example/a.png", "duration_seconds": 6}))
        .expect_err("5 or 10")
        .field,
        "duration_seconds"
    );
    assert_eq!(
        validate(json!({"model": "nope", "prompt": "x"}))
            .expect_err("unknown")
            .field,
        "model"
    );
}

// ---------------------------------------------------------------------------------------
// Status, result, cancel.
// ---------------------------------------------------------------------------------------

fn status(fields: Value) -> ResponseTemplate {
    let base = format!("https://queue.fal.run{KLING_REQUEST_PATH}");
    let mut body = json!({"request_id": REQUEST_ID, "response_url": base,
                          "status_url": format!("{base}/status"), "cancel_url": format!("{base}/cancel")});
    if let (Some(body), Value::Object(fields)) = (body.as_object_mut(), fields) {
        body.extend(fields);
    }
    ResponseTemplate::new(200).set_body_json(body)
}

fn status_path() -> String {
    format!("{KLING_REQUEST_PATH}/status")
}

/// Polls once against a mock answering the status with `status_answer` and the result
/// with `result_answer`; returns the outcome and the requests made.
async fn poll_with(
    status_answer: ResponseTemplate,
    result_answer: Option<ResponseTemplate>,
) -> (Result<RemoteStatus, JobError>, Vec<wiremock::Request>) {
    let server = MockServer::start().await;
    mount(&server, "GET", &status_path(), status_answer).await;
    if let Some(result) = result_answer {
        mount(&server, "GET", KLING_REQUEST_PATH, result).await;
    }
    let registry = registry(&server.uri());
    let (fal, credentials) = fal(&registry);
    let outcome = fal.poll(&credentials, KLING_JOB).await;
    (outcome, server.received_requests().await.expect("recorded"))
}

fn get_headers(request: &wiremock::Request) {
    assert_exact_headers(
        request,
        &[
            ("authorization", &format!("Key {FAL_KEY}")),
            ("accept", "application/json"),
        ],
    );
}

#[tokio::test]
async fn a_completed_request_is_polled_then_its_result_fetched() {
    let (outcome, requests) = poll_with(
        status(json!({"status": "COMPLETED", "logs": null, "metrics": {"inference_time": 41.25}})),
        Some(ResponseTemplate::new(200).set_body_json(json!({
            "video": {"url": "https://v3.fal.media/files/penguin/out.mp4", "content_type": "video/mp4",
                      "file_name": "out.mp4", "file_size": 1_234_567}}))),
    )
    .await;
    assert_eq!(
        outcome,
        Ok(RemoteStatus::Succeeded(
            VideoOutput::Urls(vec!["https://v3.fal.media/files/penguin/out.mp4".into()]),
            ProviderUsage::from_compute_seconds(Some(41.25)),
        ))
    );
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].method.as_str(), "GET");
    assert_eq!(requests[0].url.path(), status_path());
    assert_eq!(requests[0].url.query(), Some("logs=0"));
    get_headers(&requests[0]);
    assert_eq!(requests[1].method.as_str(), "GET");
    assert_eq!(requests[1].url.path(), KLING_REQUEST_PATH);
    assert_eq!(requests[1].url.query(), None);
    get_headers(&requests[1]);
}

#[tokio::test]
async fn queue_states_map_to_remote_statuses() {
    // Waiting in fal's own queue (over the account's concurrency) is queued, not refused.
    let (outcome, _) = poll_with(
        status(json!({"status": "IN_QUEUE", "queue_position": 3})),
        None,
    )
    .await;
    assert_eq!(outcome, Ok(RemoteStatus::Queued));
    let (outcome, _) = poll_with(
        status(
            json!({"status": "IN_PROGRESS", "logs": [{"message": "step 3/30", "level": "INFO",
                      "source": "USER", "timestamp": "2026-12-03T16:00:00Z"}]}),
        ),
        None,
    )
    .await;
    assert_eq!(outcome, Ok(RemoteStatus::Running { progress: None }));
    // No inference_time (legacy apps send no metrics): no figure.
    let (outcome, _) = poll_with(
        status(json!({"status": "COMPLETED", "logs": null})),
        Some(
            ResponseTemplate::new(200)
                .set_body_json(json!({"video": {"url": "https://v3.fal.media/x.mp4"}})),
        ),
    )
    .await;
    assert!(
        matches!(
            outcome,
            Ok(RemoteStatus::Succeeded(
                _,
                ProviderUsage { compute_ms: None }
            ))
        ),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn completed_with_an_error_fails_without_fetching_the_result() {
    use ErrorCode::*;
    use RetryClass::*;
    let cases = [
        (
            json!({"error": "Request timed out", "error_type": "request_timeout"}),
            ProviderUnavailable,
            Transient,
        ),
        (
            json!({"error": "Runner disconnected", "error_type": "runner_disconnected"}),
            ProviderUnavailable,
            Transient,
        ),
        (
            json!({"error": "flagged", "error_type": "content_policy_violation"}),
            ContentRejected,
            Permanent,
        ),
        (
            json!({"error": "Something odd"}),
            ProviderUnavailable,
            Permanent,
        ),
        (
            json!({"error_type": "brand_new_type"}),
            ProviderUnavailable,
            Permanent,
        ),
    ];
    for (fields, code, class) in cases {
        let mut body = json!({"status": "COMPLETED", "logs": null, "metrics": {}});
        if let (Some(body), Value::Object(fields)) = (body.as_object_mut(), fields.clone()) {
            body.extend(fields);
        }
        let (outcome, requests) = poll_with(status(body), None).await;
        let Ok(RemoteStatus::Failed(err)) = outcome else {
            panic!("{fields}: {outcome:?}")
        };
        assert_class(&err, code, class, &fields.to_string());
        assert_eq!(requests.len(), 1, "{fields}: the result is not fetched");
    }
}

#[tokio::test]
async fn result_answers_are_classified() {
    use ErrorCode::*;
    use RetryClass::*;
    let validation = json!({"detail": [{"loc": ["body", "duration"], "msg": "value is not a valid enumeration member",
                                        "type": "type_error.enum", "ctx": {"enum_values": ["5", "10"]}}]});
    let moderation = json!({"detail": [{"loc": ["body", "prompt"], "msg": "The content was flagged by a content checker.",
                                        "type": "content_policy_violation", "url": "https://docs.fal.ai/errors#content_policy_violation"}]});
    type Case = (
        &'static str,
        ResponseTemplate,
        Result<(ErrorCode, RetryClass), (ErrorCode, RetryClass)>,
    );
    let cases: Vec<Case> = vec![
        ("422 validation", ResponseTemplate::new(422).set_body_json(validation), Ok((InvalidRequest, Permanent))),
        ("422 moderation", ResponseTemplate::new(422).set_body_json(moderation), Ok((ContentRejected, Permanent))),
        (
            "503 request error",
            ResponseTemplate::new(503)
                .insert_header("x-fal-error-type", "runner_scheduling_failure")
                .set_body_json(json!({"detail": "No runner could be allocated", "error_type": "runner_scheduling_failure"})),
            Ok((ProviderUnavailable, Transient)),
        ),
        (
            "504 timeout in the body only",
            ResponseTemplate::new(504).set_body_json(json!({"detail": "Request timed out", "error_type": "request_timeout"})),
            Ok((ProviderUnavailable, Transient)),
        ),
        (
            // fal bills no 5xx failure: an unknown type there may be submitted again.
            "500 request error of an unknown type",
            ResponseTemplate::new(500).set_body_json(json!({"detail": "Something new", "error_type": "brand_new_type"})),
            Ok((ProviderUnavailable, Transient)),
        ),
        (
            // A 429 is a throttle, whatever error type comes with it: wait and ask again.
            "429 with an error type",
            ResponseTemplate::new(429)
                .insert_header("retry-after", "5")
                .insert_header("x-fal-error-type", "rate_limited")
                .set_body_json(json!({"detail": "Too many requests", "error_type": "rate_limited"})),
            Err((ProviderUnavailable, RetryAfter(Duration::from_secs(5)))),
        ),
        (
            "401 with an error type",
            ResponseTemplate::new(401)
                .insert_header("x-fal-error-type", "unauthorized")
                .set_body_json(json!({"detail": "Unauthorized", "error_type": "unauthorized"})),
            Err((CredentialsInvalid, Permanent)),
        ),
        ("200 without a video", ResponseTemplate::new(200).set_body_json(json!({"images": []})), Ok((ProviderUnavailable, Permanent))),
        ("502 from a proxy", ResponseTemplate::new(502).set_body_string("<html>nginx</html>"), Err((ProviderUnavailable, Transient))),
        ("200 not JSON", ResponseTemplate::new(200).set_body_string("<html>"), Err((ProviderUnavailable, Transient))),
        ("404 expired", ResponseTemplate::new(404).set_body_json(json!({"detail": "Not Found"})), Err((ProviderUnavailable, Permanent))),
        ("401", ResponseTemplate::new(401).set_body_json(json!({"detail": "Unauthorized"})), Err((CredentialsInvalid, Permanent))),
    ];
    for (case, response, expected) in cases {
        let (outcome, requests) = poll_with(
            status(json!({"status": "COMPLETED", "logs": null})),
            Some(response),
        )
        .await;
        assert_eq!(requests.len(), 2, "{case}");
        match (outcome, expected) {
            (Ok(RemoteStatus::Failed(err)), Ok((code, class))) => {
                assert_class(&err, code, class, case);
            }
            (Err(err), Err((code, class))) => assert_class(&err, code, class, case),
            (other, _) => panic!("{case}: {other:?}"),
        }
    }
    // The field fal names is in the message, with ours beside it.
    let (outcome, _) = poll_with(
        status(json!({"status": "COMPLETED", "logs": null})),
        Some(
            ResponseTemplate::new(422)
                .set_body_json(json!({"detail": [{"loc": ["body", "image_url"],
            "msg": "Could not download the image", "type": "file_download_error"}]})),
        ),
    )
    .await;
    let Ok(RemoteStatus::Failed(err)) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(
        err.message,
        "fal refused the request (HTTP 422): `image_url`: Could not download the image"
    );
}

#[tokio::test]
async fn status_errors_are_classified() {
    use ErrorCode::*;
    use RetryClass::*;
    let cases = [
        (
            "unknown status",
            status(json!({"status": "SOMETHING_NEW"})),
            ProviderUnavailable,
            Transient,
        ),
        (
            "no status",
            status(json!({})),
            ProviderUnavailable,
            Transient,
        ),
        (
            "not JSON",
            ResponseTemplate::new(200).set_body_string("<html>"),
            ProviderUnavailable,
            Transient,
        ),
        (
            "array",
            ResponseTemplate::new(200).set_body_json(json!([1])),
            ProviderUnavailable,
            Transient,
        ),
        (
            "404",
            ResponseTemplate::new(404).set_body_json(json!({"detail": "Request not found"})),
            ProviderUnavailable,
            Permanent,
        ),
        (
            "401",
            ResponseTemplate::new(401).set_body_json(json!({"detail": "Unauthorized"})),
            CredentialsInvalid,
            Permanent,
        ),
        (
            "429",
            ResponseTemplate::new(429).insert_header("retry-after", "3"),
            ProviderUnavailable,
            RetryAfter(Duration::from_secs(3)),
        ),
        (
            "500",
            ResponseTemplate::new(500),
            ProviderUnavailable,
            Transient,
        ),
        (
            "503",
            ResponseTemplate::new(503).set_body_string("nginx"),
            ProviderUnavailable,
            Transient,
        ),
    ];
    for (case, response, code, class) in cases {
        let (outcome, requests) = poll_with(response, None).await;
        let err = outcome.expect_err(case);
        assert_class(&err, code, class, case);
        assert_eq!(requests.len(), 1, "{case}");
    }
}

#[tokio::test]
async fn a_provider_job_id_cannot_change_the_path_or_the_host() {
    let server = MockServer::start().await;
    let registry = registry(&server.uri());
    let (fal, credentials) = fal(&registry);
    for hostile in [
        "https://evil.example/fal-ai/kling-video/requests/x",
        "fal-ai/kling-video/requests/../../x",
        "fal-ai/kling-video/requests/a%2F..",
        "fal-ai/kling-video/requests/a?b",
        "fal-ai/kling-video/v2.1/requests/x",
        "",
    ] {
        let err = fal.poll(&credentials, hostile).await.expect_err(hostile);
        assert_class(&err, ErrorCode::Internal, RetryClass::Permanent, hostile);
        let err = fal.cancel(&credentials, hostile).await.expect_err(hostile);
        assert_class(&err, ErrorCode::Internal, RetryClass::Permanent, hostile);
    }
    assert_no_requests(&server).await;
}

#[tokio::test]
async fn the_urls_of_fals_answers_are_never_followed() {
    // The submit answer names another host for the follow-up calls (a compromised or
    // misbehaving answer): the poll still goes to the configured base, with the key.
    let server = MockServer::start().await;
    let elsewhere = format!(
        "http://127.0.0.1:{}/steal/requests/{REQUEST_ID}",
        closed_port()
    );
    mount(
        &server,
        "POST",
        KLING_APP,
        ResponseTemplate::new(200).set_body_json(json!({
            "request_id": REQUEST_ID, "status": "IN_QUEUE", "queue_position": 0,
            "response_url": elsewhere, "status_url": format!("{elsewhere}/status"),
            "cancel_url": format!("{elsewhere}/cancel")})),
    )
    .await;
    mount(
        &server,
        "GET",
        &status_path(),
        status(json!({"status": "IN_PROGRESS", "logs": null})),
    )
    .await;
    let registry = registry(&server.uri());
    let (fal, credentials) = fal(&registry);
    let image = input_png(8, 8);
    let submitted = submit(
        &registry,
        json!({"model": "kling-v2.1-master", "prompt": "x", "image_url": "https://i.example/a.png"}),
        Some(&image),
    )
    .await
    .expect("submitted");
    assert_eq!(submitted.provider_job_id, KLING_JOB);
    assert_eq!(
        fal.poll(&credentials, &submitted.provider_job_id).await,
        Ok(RemoteStatus::Running { progress: None })
    );
    assert_eq!(server.received_requests().await.expect("recorded").len(), 2);
}

async fn cancel_answered_with(
    response: ResponseTemplate,
) -> (Result<CancelOutcome, JobError>, MockServer) {
    let server = MockServer::start().await;
    mount(
        &server,
        "PUT",
        &format!("{KLING_REQUEST_PATH}/cancel"),
        response,
    )
    .await;
    let registry = registry(&server.uri());
    let (fal, credentials) = fal(&registry);
    (fal.cancel(&credentials, KLING_JOB).await, server)
}

#[tokio::test]
async fn cancel_sends_exactly_the_documented_request() {
    let (outcome, server) = cancel_answered_with(
        ResponseTemplate::new(202).set_body_json(json!({"status": "CANCELLATION_REQUESTED"})),
    )
    .await;
    assert_eq!(outcome, Ok(CancelOutcome::Cancelled));
    let request = only_request(&server).await;
    assert_eq!(request.method.as_str(), "PUT");
    assert_eq!(request.url.path(), format!("{KLING_REQUEST_PATH}/cancel"));
    assert_eq!(request.url.query(), None);
    assert!(request.body.is_empty());
    assert_exact_headers(
        &request,
        &[
            ("authorization", &format!("Key {FAL_KEY}")),
            ("accept", "application/json"),
            ("content-length", "0"),
        ],
    );
}

#[tokio::test]
async fn cancel_outcomes() {
    use CancelOutcome::{Cancelled, NotSupported};
    let cases = [
        (
            "removed from the queue",
            ResponseTemplate::new(200).set_body_json(json!({"status": "OK"})),
            Cancelled,
        ),
        (
            "running app signalled",
            ResponseTemplate::new(202).set_body_json(json!({"status": "CANCELLATION_REQUESTED"})),
            Cancelled,
        ),
        (
            "too late",
            ResponseTemplate::new(400).set_body_json(json!({"status": "ALREADY_COMPLETED"})),
            NotSupported,
        ),
        (
            "gone",
            ResponseTemplate::new(404).set_body_json(json!({"status": "NOT_FOUND"})),
            Cancelled,
        ),
        ("gone, no body", ResponseTemplate::new(404), Cancelled),
        ("2xx, no body", ResponseTemplate::new(202), Cancelled),
    ];
    for (case, response, expected) in cases {
        assert_eq!(
            cancel_answered_with(response).await.0,
            Ok(expected),
            "{case}"
        );
    }
    let errors = [
        (
            "401",
            ResponseTemplate::new(401).set_body_json(json!({"detail": "Unauthorized"})),
            ErrorCode::CredentialsInvalid,
            RetryClass::Permanent,
        ),
        (
            "500",
            ResponseTemplate::new(500),
            ErrorCode::ProviderUnavailable,
            RetryClass::Transient,
        ),
        (
            "429",
            ResponseTemplate::new(429),
            ErrorCode::ProviderUnavailable,
            RetryClass::RetryAfter(Duration::from_secs(60)),
        ),
    ];
    for (case, response, code, class) in errors {
        let err = cancel_answered_with(response).await.0.expect_err(case);
        assert_class(&err, code, class, case);
    }
}

// ---------------------------------------------------------------------------------------
// Submit answers.
// ---------------------------------------------------------------------------------------

async fn submit_answered_with(response: ResponseTemplate) -> Result<Submitted, JobError> {
    let server = MockServer::start().await;
    mount(&server, "POST", LUMA_T2V_APP, response).await;
    submit(
        &registry(&server.uri()),
        json!({"model": "luma-ray-2-flash", "prompt": "a fox"}),
        None,
    )
    .await
}

#[tokio::test]
async fn submit_answers_are_classified() {
    use ErrorCode::*;
    use RetryClass::*;
    let cases: Vec<(&str, ResponseTemplate, ErrorCode, RetryClass, &str)> = vec![
        ("401", ResponseTemplate::new(401).set_body_json(json!({"detail": "Unauthorized"})),
         CredentialsInvalid, Permanent, "fal.ai rejected the key (HTTP 401): Unauthorized"),
        ("403", ResponseTemplate::new(403).set_body_json(json!({"detail": "Forbidden"})),
         CredentialsInvalid, Permanent, "fal refused the key (HTTP 403): Forbidden"),
        ("403 balance", ResponseTemplate::new(403).set_body_json(json!({"detail": "User is locked. Reason: Exhausted balance. Top up your balance at fal.ai/dashboard/billing."})),
         InsufficientCredits, Permanent, "fal has locked the account for its balance (HTTP 403): User is locked. Reason: Exhausted balance. Top up your balance at fal.ai/dashboard/billing."),
        ("403 admin lock", ResponseTemplate::new(403).set_body_json(json!({"detail": "User is locked. Reason: Admin lock. Please contact support@fal.ai"})),
         CredentialsInvalid, Permanent, "fal has locked the account (HTTP 403): User is locked. Reason: Admin lock. Please contact support@fal.ai"),
        ("422 field", ResponseTemplate::new(422).set_body_json(json!({"detail": [{"loc": ["body", "duration"], "msg": "value is not a valid enumeration member; permitted: '5s', '9s'", "type": "type_error.enum"}]})),
         InvalidRequest, Permanent, "fal refused the request (HTTP 422): `duration` (our `duration_seconds`): value is not a valid enumeration member; permitted: '5s', '9s'"),
        ("422 missing", ResponseTemplate::new(422).set_body_json(json!({"detail": [{"loc": ["body", "prompt"], "msg": "field required", "type": "value_error.missing"}]})),
         InvalidRequest, Permanent, "fal refused the request (HTTP 422): `prompt`: field required"),
        ("422 text", ResponseTemplate::new(422).set_body_json(json!({"detail": "Invalid input"})),
         InvalidRequest, Permanent, "fal refused the request (HTTP 422): Invalid input"),
        ("422 moderation", ResponseTemplate::new(422).set_body_json(json!({"detail": [{"loc": ["body", "prompt"], "msg": "The content was flagged by a content checker.", "type": "content_policy_violation"}]})),
         ContentRejected, Permanent, "fal's content checker refused the request (HTTP 422): `prompt`: The content was flagged by a content checker."),
        ("404 app", ResponseTemplate::new(404).set_body_json(json!({"detail": "Application not found"})),
         ModelRetired, Permanent, "fal no longer serves this app (HTTP 404): Application not found"),
        ("429 retry-after", ResponseTemplate::new(429).insert_header("retry-after", "7").set_body_json(json!({"detail": "Too many requests"})),
         ProviderUnavailable, RetryAfter(Duration::from_secs(7)), "fal.ai is throttling this key (HTTP 429): Too many requests"),
        ("429 bare", ResponseTemplate::new(429),
         ProviderUnavailable, RetryAfter(Duration::from_secs(60)), "fal.ai is throttling this key (HTTP 429)"),
        ("500", ResponseTemplate::new(500).set_body_json(json!({"detail": "Internal Server Error"})),
         ProviderUnavailable, Transient, "fal.ai failed (HTTP 500): Internal Server Error"),
        ("503 html", ResponseTemplate::new(503).set_body_string("<html>nginx</html>"),
         ProviderUnavailable, Transient, "fal.ai failed (HTTP 503): <html>nginx</html>"),
        ("2xx without request_id", ResponseTemplate::new(200).set_body_json(json!({"status": "IN_QUEUE"})),
         SubmitOutcomeUnknown, Permanent, "fal accepted the submit (HTTP 200) but its answer carries no usable request_id; it is not re-sent, because it may have queued a billable request"),
        ("2xx hostile request_id", ResponseTemplate::new(200).set_body_json(json!({"request_id": "../../admin"})),
         SubmitOutcomeUnknown, Permanent, "fal accepted the submit (HTTP 200) but its answer carries no usable request_id; it is not re-sent, because it may have queued a billable request"),
        ("2xx not JSON", ResponseTemplate::new(200).set_body_string("ok"),
         SubmitOutcomeUnknown, Permanent, "fal accepted the submit (HTTP 200) but its answer carries no usable request_id; it is not re-sent, because it may have queued a billable request"),
    ];
    for (case, response, code, class, message) in cases {
        let err = submit_answered_with(response).await.expect_err(case);
        assert_class(&err, code, class, case);
        assert_eq!(err.message, message, "{case}");
    }
}

#[tokio::test]
async fn provider_text_is_sanitized() {
    let err = submit_answered_with(
        ResponseTemplate::new(401)
            .set_body_json(json!({"detail": format!("key {FAL_KEY} is\nnot allowed")})),
    )
    .await
    .expect_err("401");
    assert!(!err.message.contains(FAL_KEY), "{}", err.message);
    assert!(
        err.message.ends_with("key [REDACTED] is not allowed"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn a_submit_whose_answer_is_lost_is_never_retried() {
    let server = MockServer::start().await;
    mount(
        &server,
        "POST",
        LUMA_T2V_APP,
        queued(&server.uri(), "fal-ai/luma-dream-machine").set_delay(Duration::from_secs(10)),
    )
    .await;
    assert_a_timed_out_submit_is_outcome_unknown(&server, async |registry| {
        submit(
            registry,
            json!({"model": "luma-ray-2-flash", "prompt": "a fox"}),
            None,
        )
        .await
    })
    .await;
}

#[tokio::test]
async fn a_submit_cut_off_after_it_was_sent_is_outcome_unknown_but_a_refused_one_is_not() {
    let request = assert_a_cut_submit_is_outcome_unknown_but_a_refused_one_is_not(
        "fal.ai",
        FAL_KEY,
        async |registry| {
            submit(
                registry,
                json!({"model": "luma-ray-2-flash", "prompt": "a fox", "duration_seconds": 9}),
                None,
            )
            .await
        },
    )
    .await;
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("POST", LUMA_T2V_APP)
    );
    assert_eq!(
        request.header("authorization"),
        Some(format!("Key {FAL_KEY}").as_str())
    );
    let body: Value = serde_json::from_slice(&request.body).expect("the whole JSON body");
    assert_eq!(
        body,
        json!({"prompt": "a fox", "duration": "9s", "aspect_ratio": "16:9", "resolution": "540p"})
    );
}

// ---------------------------------------------------------------------------------------
// Output download.
// ---------------------------------------------------------------------------------------

/// A CDN URL at a fresh mock answering `response`.
async fn download_answered_with(
    response: ResponseTemplate,
) -> (Result<byok_providers::Video, JobError>, MockServer) {
    support::download_answered_with(fal, "/files/penguin/out.mp4", response).await
}

#[tokio::test]
async fn the_output_is_downloaded_without_the_key() {
    // fal's CDN URLs need no credential: the key never leaves for the CDN host.
    assert_the_output_is_downloaded_without_credentials(fal, "/files/penguin/out.mp4").await;
}

#[tokio::test]
async fn output_types_and_failures_are_checked() {
    let mp4 = fake_mp4(100);
    let (video, _) = download_answered_with(
        ResponseTemplate::new(200).set_body_raw(mp4.clone(), "application/octet-stream"),
    )
    .await;
    assert_eq!(video.expect("ftyp").content_type, "video/mp4");
    use ErrorCode::*;
    use RetryClass::*;
    let refused = [
        (
            "html",
            ResponseTemplate::new(200).set_body_raw("<html>no</html>", "text/html"),
            ProviderUnavailable,
            Permanent,
        ),
        (
            "gone",
            ResponseTemplate::new(404),
            ProviderUnavailable,
            Permanent,
        ),
        (
            "cdn down",
            ResponseTemplate::new(503),
            ProviderUnavailable,
            Transient,
        ),
        (
            "empty",
            ResponseTemplate::new(200).set_body_raw(Vec::new(), "video/mp4"),
            ProviderUnavailable,
            Transient,
        ),
    ];
    assert_downloads_fail(fal, "/files/penguin/out.mp4", refused.into()).await;
}

#[tokio::test]
async fn output_urls_follow_the_private_network_policy() {
    assert_output_urls_are_refused(
        fal,
        &[
            "http://127.0.0.1:9/out.mp4",
            "https://169.254.169.254/latest/",
            "https://[::1]/out.mp4",
            "file:///etc/passwd",
            "https://user:pass@v3.fal.media/out.mp4",
        ],
    )
    .await;
}

// ---------------------------------------------------------------------------------------
// A whole job at the mock.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn submit_poll_succeed_download() {
    let server = MockServer::start().await;
    let mp4 = fake_mp4(10_000);
    mount(
        &server,
        "POST",
        KLING_APP,
        queued(&server.uri(), "fal-ai/kling-video"),
    )
    .await;
    Mock::given(method("GET"))
        .and(path(status_path()))
        .respond_with(status(json!({"status": "IN_QUEUE", "queue_position": 1})))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(status_path()))
        .respond_with(status(
            json!({"status": "COMPLETED", "logs": null, "metrics": {"inference_time": 12.5}}),
        ))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(KLING_REQUEST_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "video": {"url": format!("{}/files/penguin/out.mp4", server.uri()), "content_type": "video/mp4"}})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/files/penguin/out.mp4"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(mp4.clone(), "video/mp4"))
        .expect(1)
        .mount(&server)
        .await;
    let registry = registry(&server.uri());
    let (fal, credentials) = fal(&registry);
    let image = input_png(64, 36);
    let submitted = submit(
        &registry,
        json!({"model": "kling-v2.1-master", "prompt": "slow dolly-in", "image_url": "https://images.example/a.png"}),
        Some(&image),
    )
    .await
    .expect("submitted");
    assert_eq!(
        fal.poll(&credentials, &submitted.provider_job_id).await,
        Ok(RemoteStatus::Queued)
    );
    let RemoteStatus::Succeeded(output, usage) = fal
        .poll(&credentials, &submitted.provider_job_id)
        .await
        .expect("polled")
    else {
        panic!("not succeeded")
    };
    assert_eq!(usage.compute_ms, Some(12_500));
    let video = fal
        .fetch_video(&credentials, &output)
        .await
        .expect("downloaded");
    assert_eq!(video.bytes, mp4);
}

// ---------------------------------------------------------------------------------------
// Against the simulator (crates/sim), an independent reading of the same protocol.
// ---------------------------------------------------------------------------------------

mod against_the_simulator {
    use std::time::Duration;

    use byok_core::{ErrorCode, RetryClass};
    use byok_providers::{
        CancelOutcome, CredentialCheck, ProviderId, Registry, RegistryOptions, RemoteStatus,
        VideoOutput,
    };
    use byok_sim::{Clock, RunningSim, SimConfig};
    use serde_json::{Value, json};

    use crate::sim_lifecycle::{credentials, poll_to_end, sim_with, submit};
    use crate::support::FetchVideo as _;
    use crate::support::{assert_class, input_png, is_mp4};

    async fn fal_sim(config: SimConfig) -> RunningSim {
        sim_with(config, Clock::system()).await
    }

    fn quick() -> SimConfig {
        SimConfig {
            render_time: Duration::from_millis(150),
            retry_after: Duration::from_secs(3),
            ..SimConfig::default()
        }
    }

    fn options(sim: &RunningSim) -> RegistryOptions {
        let mut options = RegistryOptions::defaults();
        options.provider_mut(ProviderId::FAL).unwrap().base_url = sim.fal_url();
        options.allow_private_networks = true;
        options.request_timeout = Duration::from_secs(10);
        options
    }

    fn registry(sim: &RunningSim) -> Registry {
        Registry::new(&options(sim)).unwrap()
    }

    fn key(api_key: &str, registry: &Registry) -> byok_providers::Credentials {
        credentials(
            &*registry.get(ProviderId::FAL).unwrap(),
            &json!({ "api_key": api_key }),
        )
    }

    #[tokio::test]
    async fn every_catalogue_app_runs_a_job_to_video_bytes() {
        let sim = fal_sim(quick()).await;
        let registry = registry(&sim);
        let fal = registry.get(ProviderId::FAL).unwrap();
        let creds = key("sim_fal_lifecycle", &registry);
        let image = input_png(1280, 720);
        let jobs: Vec<(Value, bool)> = vec![
            (
                json!({"model": "luma-ray-2-flash", "prompt": "a lighthouse at dusk", "aspect_ratio": "9:16", "resolution": "720p", "duration_seconds": 9}),
                false,
            ),
            (
                json!({"model": "luma-ray-2-flash", "prompt": "waves", "image_url": "https://i.example/a.png"}),
                true,
            ),
            (
                json!({"model": "kling-v2.1-master", "prompt": "slow dolly-in", "image_url": "https://i.example/a.png", "duration_seconds": 10}),
                true,
            ),
            (
                json!({"model": "hailuo-02-standard", "prompt": "a cave", "image_url": "https://i.example/a.png"}),
                true,
            ),
            (
                json!({"model": "hailuo-2.3-standard", "prompt": "a storm"}),
                false,
            ),
            (
                json!({"model": "stable-video", "image_url": "https://i.example/a.png", "seed": 7}),
                true,
            ),
        ];
        for (fields, with_image) in jobs {
            let case = fields.to_string();
            let id = submit(&*fal, &creds, fields, with_image.then_some(&image))
                .await
                .unwrap_or_else(|e| panic!("{case}: {e}"));
            let (status, _) = poll_to_end(&*fal, &creds, &id).await;
            let RemoteStatus::Succeeded(output, usage) = status else {
                panic!("{case}: {status:?}")
            };
            assert_eq!(
                usage.compute_ms,
                Some(150),
                "{case}: metrics.inference_time"
            );
            assert!(
                matches!(&output, VideoOutput::Urls(urls) if urls.len() == 1),
                "{case}"
            );
            let video = fal.fetch_video(&creds, &output).await.expect("downloaded");
            assert!(is_mp4(&video.bytes), "{case}");
            assert_eq!(video.content_type, "video/mp4");
        }
        let stats = sim.stats().await;
        let counters = &stats.fal.for_api_key("sim_fal_lifecycle").unwrap().counters;
        assert_eq!((counters.accepted, counters.rejected), (6, 0));
    }

    #[tokio::test]
    async fn requests_over_the_concurrency_wait_in_fals_queue() {
        // One slot: the second request waits IN_QUEUE (queued for us, never refused) until
        // the first is done, then runs. The simulator's clock is stepped by hand.
        let clock = Clock::manual();
        let sim = sim_with(
            SimConfig {
                render_time: Duration::from_secs(10),
                fal_concurrency: 1,
                ..SimConfig::default()
            },
            clock.clone(),
        )
        .await;
        let registry = registry(&sim);
        let fal = registry.get(ProviderId::FAL).unwrap();
        let creds = key("sim_fal_queue", &registry);
        let fields = json!({"model": "hailuo-2.3-standard", "prompt": "a storm"});
        let first = submit(&*fal, &creds, fields.clone(), None).await.unwrap();
        let second = submit(&*fal, &creds, fields, None).await.unwrap();
        clock.advance(Duration::from_secs(5));
        assert_eq!(
            fal.poll(&creds, &first).await,
            Ok(RemoteStatus::Running { progress: None })
        );
        assert_eq!(fal.poll(&creds, &second).await, Ok(RemoteStatus::Queued));
        clock.advance(Duration::from_secs(10));
        assert!(matches!(
            fal.poll(&creds, &first).await,
            Ok(RemoteStatus::Succeeded(..))
        ));
        assert_eq!(
            fal.poll(&creds, &second).await,
            Ok(RemoteStatus::Running { progress: None })
        );
        clock.advance(Duration::from_secs(5));
        assert!(matches!(
            fal.poll(&creds, &second).await,
            Ok(RemoteStatus::Succeeded(..))
        ));
    }

    #[tokio::test]
    async fn cancel_then_cancel_again() {
        let sim = fal_sim(SimConfig {
            render_time: Duration::from_secs(600),
            ..quick()
        })
        .await;
        let registry = registry(&sim);
        let fal = registry.get(ProviderId::FAL).unwrap();
        let creds = key("sim_fal_cancel", &registry);
        let id = submit(
            &*fal,
            &creds,
            json!({"model": "hailuo-2.3-standard", "prompt": "x"}),
            None,
        )
        .await
        .unwrap();
        assert_eq!(fal.cancel(&creds, &id).await, Ok(CancelOutcome::Cancelled));
        // The request ended, without a video; a second cancel comes too late.
        let Ok(RemoteStatus::Failed(err)) = fal.poll(&creds, &id).await else {
            panic!("a cancelled request is over")
        };
        assert_class(
            &err,
            ErrorCode::ProviderUnavailable,
            RetryClass::Permanent,
            "cancelled",
        );
        assert_eq!(
            fal.cancel(&creds, &id).await,
            Ok(CancelOutcome::NotSupported)
        );
        // Another key's request does not exist for this key.
        let other = key("sim_fal_someone_else", &registry);
        assert_eq!(fal.cancel(&other, &id).await, Ok(CancelOutcome::Cancelled));
        let err = fal.poll(&other, &id).await.expect_err("not theirs");
        assert_class(
            &err,
            ErrorCode::ProviderUnavailable,
            RetryClass::Permanent,
            "404",
        );
        let counters = sim
            .stats()
            .await
            .fal
            .for_api_key("sim_fal_cancel")
            .unwrap()
            .counters
            .clone();
        assert_eq!(counters.cancels, 2);
    }

    #[tokio::test]
    async fn a_throttled_key_waits_as_told_then_gets_in() {
        let sim = fal_sim(quick()).await;
        let registry = registry(&sim);
        let fal = registry.get(ProviderId::FAL).unwrap();
        let creds = key("sim_throttled_fal", &registry);
        let fields = json!({"model": "hailuo-2.3-standard", "prompt": "x"});
        let err = submit(&*fal, &creds, fields.clone(), None)
            .await
            .expect_err("429");
        assert_class(
            &err,
            ErrorCode::ProviderUnavailable,
            RetryClass::RetryAfter(Duration::from_secs(3)),
            "429",
        );
        submit(&*fal, &creds, fields, None)
            .await
            .expect("the second submit gets in");
        let stats = sim.stats().await;
        let counters = &stats.fal.for_api_key("sim_throttled_fal").unwrap().counters;
        assert_eq!(
            (counters.submits, counters.throttled, counters.accepted),
            (2, 1, 1)
        );
    }

    #[tokio::test]
    async fn moderation_failures_and_locks_are_classified_as_fal_answers_them() {
        let sim = fal_sim(quick()).await;
        let registry = registry(&sim);
        let fal = registry.get(ProviderId::FAL).unwrap();
        let creds = key("sim_fal_outcomes", &registry);
        // The app's content checker refuses the prompt: the result is a 422.
        let id = submit(
            &*fal,
            &creds,
            json!({"model": "hailuo-2.3-standard", "prompt": "sim:moderate this"}),
            None,
        )
        .await
        .unwrap();
        let (status, _) = poll_to_end(&*fal, &creds, &id).await;
        let RemoteStatus::Failed(err) = status else {
            panic!("{status:?}")
        };
        assert_class(
            &err,
            ErrorCode::ContentRejected,
            RetryClass::Permanent,
            "moderated",
        );
        // fal gives up on the request: COMPLETED with an error, a new submit may do.
        sim.set_config(SimConfig {
            failure_rate: 1.0,
            ..quick()
        })
        .unwrap();
        let id = submit(
            &*fal,
            &creds,
            json!({"model": "hailuo-2.3-standard", "prompt": "x"}),
            None,
        )
        .await
        .unwrap();
        let (status, _) = poll_to_end(&*fal, &creds, &id).await;
        let RemoteStatus::Failed(err) = status else {
            panic!("{status:?}")
        };
        assert_class(
            &err,
            ErrorCode::ProviderUnavailable,
            RetryClass::Transient,
            "gave up",
        );
        assert!(
            err.message.contains("runner_disconnected"),
            "{}",
            err.message
        );
        // An account out of credit.
        let broke = key("sim_broke_fal", &registry);
        let err = submit(
            &*fal,
            &broke,
            json!({"model": "hailuo-2.3-standard", "prompt": "x"}),
            None,
        )
        .await
        .expect_err("locked");
        assert_class(
            &err,
            ErrorCode::InsufficientCredits,
            RetryClass::Permanent,
            "locked",
        );
        // A bad key.
        let bad = key("fal_not_a_sim_key", &registry);
        let err = submit(
            &*fal,
            &bad,
            json!({"model": "hailuo-2.3-standard", "prompt": "x"}),
            None,
        )
        .await
        .expect_err("401");
        assert_class(
            &err,
            ErrorCode::CredentialsInvalid,
            RetryClass::Permanent,
            "bad key",
        );
    }

    #[tokio::test]
    async fn key_checks_reach_the_rest_host_beside_the_queue() {
        let sim = fal_sim(quick()).await;
        let registry = registry(&sim);
        let fal = registry.get(ProviderId::FAL).unwrap();
        assert_eq!(
            fal.check_credentials(&key("sim_fal_check", &registry))
                .await,
            CredentialCheck::Valid
        );
        assert_eq!(
            fal.check_credentials(&key("sim_broke_check", &registry))
                .await,
            CredentialCheck::Valid
        );
        assert!(matches!(
            fal.check_credentials(&key("not_sim", &registry)).await,
            CredentialCheck::Rejected { .. }
        ));
    }

    #[tokio::test]
    async fn an_app_fed_the_wrong_input_is_refused_naming_the_field() {
        // The catalogue is data: a deployment that writes Kling's duration as an integer
        // (the card says a string) gets fal's 422, naming the field and ours.
        let sim = fal_sim(quick()).await;
        let mut options = options(&sim);
        let mut catalogue = crate::fal::with_builtin_models(json!({
            "id": "kling", "display_name": "Kling", "modes": ["image_to_video"],
            "prompt": {"text_to_video": "unsupported", "image_to_video": "required", "max_chars": 100},
            "durations": [5, 10], "default_duration": 5, "format_from_image": true,
            "formats": [{"aspect_ratio": "16:9", "wire": "16:9"}],
            "wire": {"image_to_video": {"app": "fal-ai/kling-video/v2.1/master/image-to-video",
                     "prompt": "prompt", "image": "image_url", "duration": "duration",
                     "duration_format": "integer"}}}));
        options.provider_mut(ProviderId::FAL).unwrap().models = Some(catalogue.clone());
        let registry = Registry::new(&options).unwrap();
        let fal = registry.get(ProviderId::FAL).unwrap();
        let creds = key("sim_fal_wire", &registry);
        let image = input_png(64, 36);
        let err = submit(
            &*fal,
            &creds,
            json!({"model": "kling", "prompt": "x", "image_url": "https://i.example/a.png"}),
            Some(&image),
        )
        .await
        .expect_err("422");
        assert_class(
            &err,
            ErrorCode::InvalidRequest,
            RetryClass::Permanent,
            "422",
        );
        assert!(
            err.message.contains("`duration` (our `duration_seconds`)"),
            "{}",
            err.message
        );
        // An app fal does not serve: the model is retired.
        catalogue.models[0].wire["image_to_video"]["app"] = json!("fal-ai/kling-video/v0/gone");
        options.provider_mut(ProviderId::FAL).unwrap().models = Some(catalogue);
        let registry = Registry::new(&options).unwrap();
        let err = submit(
            &*registry.get(ProviderId::FAL).unwrap(),
            &creds,
            json!({"model": "kling", "prompt": "x", "image_url": "https://i.example/a.png"}),
            Some(&image),
        )
        .await
        .expect_err("404");
        assert_class(&err, ErrorCode::ModelRetired, RetryClass::Permanent, "404");
    }
}
