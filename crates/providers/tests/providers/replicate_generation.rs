//! Replicate's generation half against wiremock: the create routes (official model, version),
//! input images inline or through the files API, `GET /v1/predictions/{id}`, the cancel and
//! the output download. Requests are asserted exactly; every answer class of
//! docs/provider-protocols.md §9 is mapped to its code and retry class. Then the whole
//! lifecycle against the simulator.

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use byok_core::{ErrorCode, ProviderUsage, RetryClass};
use byok_providers::{
    CancelOutcome, CredentialCheck, Credentials, InputImage, JobError, ProviderId, Registry,
    RemoteStatus, Submitted, VideoOutput, VideoProvider,
};
use byok_sim::{Clock, SimConfig};
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::replicate::REPLICATE_TOKEN;
use crate::sim_lifecycle::{
    credentials, poll_to_end, registry as sim_registry, sim_with, submit as submit_at_sim,
};
use crate::support::FetchVideo as _;
use crate::support::{
    self, Adapter, adapter, assert_a_cut_submit_is_outcome_unknown_but_a_refused_one_is_not,
    assert_a_non_image_is_refused_before_sending, assert_a_timed_out_submit_is_outcome_unknown,
    assert_class, assert_downloads_fail, assert_exact_headers, assert_output_urls_are_refused,
    assert_the_output_is_downloaded_without_credentials, fake_mp4, input_png, is_mp4, json_body,
    mount, noise_png, only_request, parse_multipart, registry, validate_and_submit,
};

const PREDICTION_ID: &str = "gm3qorzdhgbfurvjtvhg6dckhu";
const SEEDANCE_PATH: &str = "/v1/models/bytedance/seedance-2.0/predictions";
const SVD_VERSION: &str = "3f0457e4619daac51203dedb472816fd4af51f3149fa7a9e0b5ffcf1b8172438";

fn replicate(registry: &Registry) -> Adapter {
    adapter(
        registry,
        ProviderId::REPLICATE,
        &json!({"api_key": REPLICATE_TOKEN}),
    )
}

/// Validates `fields` for Replicate and submits them with `image`.
async fn submit(
    registry: &Registry,
    fields: Value,
    image: Option<&InputImage>,
) -> Result<Submitted, JobError> {
    let (replicate, credentials) = replicate(registry);
    validate_and_submit(replicate.as_ref(), &credentials, fields, image).await
}

/// A prediction as Replicate shows it, with `fields` merged in.
fn prediction(fields: Value) -> Value {
    let mut body = json!({
        "id": PREDICTION_ID, "model": "bytedance/seedance-2.0", "version": "hidden",
        "input": {"prompt": "a fox"}, "logs": "", "output": null, "data_removed": false,
        "error": null, "status": "starting", "source": "api",
        "created_at": "2026-10-09T14:00:00.000000Z", "started_at": null, "completed_at": null,
        "urls": {"cancel": format!("https://api.replicate.com/v1/predictions/{PREDICTION_ID}/cancel"),
                 "get": format!("https://api.replicate.com/v1/predictions/{PREDICTION_ID}"),
                 "web": format!("https://replicate.com/p/{PREDICTION_ID}")},
    });
    let Value::Object(fields) = fields else {
        panic!("fields must be an object")
    };
    for (k, v) in fields {
        body[k] = v;
    }
    body
}

fn created() -> ResponseTemplate {
    ResponseTemplate::new(201).set_body_json(prediction(json!({})))
}

async fn mount_post(server: &MockServer, endpoint: &str, response: ResponseTemplate) {
    mount(server, "POST", endpoint, response).await;
}

fn create_headers(request: &wiremock::Request) {
    assert_exact_headers(
        request,
        &[
            ("authorization", &format!("Bearer {REPLICATE_TOKEN}")),
            ("accept", "application/json"),
            ("content-type", "application/json"),
            ("content-length", &request.body.len().to_string()),
        ],
    );
}

#[tokio::test]
async fn an_official_model_is_created_on_its_model_route_with_integers() {
    let server = MockServer::start().await;
    mount_post(&server, SEEDANCE_PATH, created()).await;
    let submitted = submit(
        &registry(&server.uri()),
        json!({"model": "bytedance/seedance-2.0", "prompt": "a red fox in snow",
               "duration_seconds": 7, "aspect_ratio": "9:16", "resolution": "480p", "seed": 42}),
        None,
    )
    .await
    .expect("submitted");
    assert_eq!(submitted.provider_job_id, PREDICTION_ID);

    let request = only_request(&server).await;
    assert_eq!(request.method.as_str(), "POST");
    assert_eq!(request.url.path(), SEEDANCE_PATH);
    assert_eq!(request.url.query(), None);
    create_headers(&request);
    // Value equality tells 7 from "7": duration and seed are JSON integers. No `version`
    // (the official route runs the latest) and no `Prefer: wait`.
    assert_eq!(
        json_body(&request),
        json!({"input": {"prompt": "a red fox in snow", "duration": 7, "aspect_ratio": "9:16",
                         "resolution": "480p", "seed": 42}})
    );
}

#[tokio::test]
async fn the_catalogue_defaults_are_sent() {
    let server = MockServer::start().await;
    mount_post(
        &server,
        "/v1/models/bytedance/seedance-2.0-fast/predictions",
        created(),
    )
    .await;
    submit(
        &registry(&server.uri()),
        json!({"model": "bytedance/seedance-2.0-fast", "prompt": "waves"}),
        None,
    )
    .await
    .expect("submitted");
    assert_eq!(
        json_body(&only_request(&server).await),
        json!({"input": {"prompt": "waves", "duration": 5, "aspect_ratio": "16:9",
                         "resolution": "720p"}})
    );
}

#[tokio::test]
async fn a_community_model_is_created_by_version_with_a_small_image_inline() {
    let server = MockServer::start().await;
    mount_post(&server, "/v1/predictions", created()).await;
    let image = input_png(40, 30);
    submit(
        &registry(&server.uri()),
        json!({"model": "stability-ai/stable-video-diffusion", "seed": 3,
               "image_url": "https://images.example/a.png"}),
        Some(&image),
    )
    .await
    .expect("submitted");

    let request = only_request(&server).await;
    assert_eq!(request.url.path(), "/v1/predictions");
    create_headers(&request);
    let body = json_body(&request);
    assert_eq!(
        body,
        json!({"version": SVD_VERSION, "input": {
            "input_image": format!("data:image/png;base64,{}", STANDARD.encode(&image.bytes)),
            "sizing_strategy": "crop_to_16_9", "seed": 3}})
    );
    // The data URL decodes to exactly the bytes that were fetched and checked.
    let uri = body["input"]["input_image"].as_str().expect("string");
    let b64 = uri.strip_prefix("data:image/png;base64,").expect("prefix");
    assert_eq!(STANDARD.decode(b64).expect("base64"), image.bytes);
}

#[tokio::test]
async fn answers_echoing_an_inline_image_are_read_whole() {
    // The largest image sent inline: its data URL comes back in the prediction's `input`, in
    // the create's answer and in every poll.
    let image = noise_png(150, 150);
    let mut bytes = image.bytes.clone();
    bytes.resize(256 * 1024, 0);
    let data_url = format!("data:image/png;base64,{}", STANDARD.encode(&bytes));
    let echoed = |fields: Value| {
        let mut body = prediction(fields);
        body["input"] = json!({"prompt": "a fox", "image": data_url});
        // The field order of Replicate's answers is not ours to choose: the id comes last.
        let id = body
            .as_object_mut()
            .expect("an object")
            .remove("id")
            .expect("an id");
        body["id"] = id;
        body
    };
    let server = MockServer::start().await;
    mount_post(
        &server,
        SEEDANCE_PATH,
        ResponseTemplate::new(201).set_body_json(echoed(json!({}))),
    )
    .await;
    let small = InputImage {
        bytes,
        ..image.clone()
    };
    let submitted = submit(
        &registry(&server.uri()),
        json!({"model": "bytedance/seedance-2.0", "prompt": "a fox",
               "image_url": "https://images.example/a.png"}),
        Some(&small),
    )
    .await
    .expect("the create's answer is read whole");
    assert_eq!(submitted.provider_job_id, PREDICTION_ID);
    let requests = server.received_requests().await.expect("recorded");
    assert_eq!(requests.len(), 1, "inline, no upload");

    let url = "https://replicate.delivery/xezq/abc/tmpvideo.mp4";
    assert_eq!(
        poll_answered_with(
            ResponseTemplate::new(200)
                .set_body_json(echoed(json!({"status": "succeeded", "output": url})))
        )
        .await,
        Ok(RemoteStatus::Succeeded(
            VideoOutput::Urls(vec![url.into()]),
            ProviderUsage::NONE
        ))
    );
}

#[tokio::test]
async fn an_image_over_256_kb_is_uploaded_with_the_files_api_first() {
    let server = MockServer::start().await;
    let file_url = "https://api.replicate.com/v1/files/cneqzikepnug6xezperrr4z55o";
    mount_post(
        &server,
        "/v1/files",
        ResponseTemplate::new(201).set_body_json(json!({
            "id": "cneqzikepnug6xezperrr4z55o", "name": "input.png", "content_type": "image/png",
            "size": 1, "etag": "\"x\"", "checksums": {}, "metadata": {},
            "created_at": "2026-10-09T14:00:00Z", "expires_at": null,
            "urls": {"get": file_url}})),
    )
    .await;
    mount_post(&server, SEEDANCE_PATH, created()).await;
    let image = noise_png(300, 300);
    assert!(image.bytes.len() > 256 * 1024, "{}", image.bytes.len());
    submit(
        &registry(&server.uri()),
        json!({"model": "bytedance/seedance-2.0", "prompt": "slow dolly-in",
               "image_url": "https://images.example/a.png"}),
        Some(&image),
    )
    .await
    .expect("submitted");

    let requests = server.received_requests().await.expect("recorded");
    assert_eq!(requests.len(), 2, "the upload, then the create");
    let upload = &requests[0];
    assert_eq!(
        (upload.method.as_str(), upload.url.path()),
        ("POST", "/v1/files")
    );
    let content_type = upload
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .expect("content type");
    assert_exact_headers(
        upload,
        &[
            ("authorization", &format!("Bearer {REPLICATE_TOKEN}")),
            ("accept", "application/json"),
            ("content-type", content_type),
            ("content-length", &upload.body.len().to_string()),
        ],
    );
    let parts = parse_multipart(content_type, &upload.body);
    assert_eq!(parts.len(), 1, "{parts:?}");
    assert_eq!(parts[0].name, "content");
    assert_eq!(parts[0].filename.as_deref(), Some("input.png"));
    assert_eq!(parts[0].content_type.as_deref(), Some("image/png"));
    assert_eq!(parts[0].data, image.bytes);

    let create = &requests[1];
    assert_eq!(create.url.path(), SEEDANCE_PATH);
    assert_eq!(
        json_body(create),
        json!({"input": {"prompt": "slow dolly-in", "image": file_url, "duration": 5,
                         "aspect_ratio": "16:9", "resolution": "720p"}})
    );
}

#[tokio::test]
async fn a_failed_upload_is_classified_and_no_prediction_is_created() {
    use ErrorCode::*;
    use RetryClass::*;
    let cases: Vec<(&str, ResponseTemplate, ErrorCode, RetryClass)> = vec![
        (
            "401",
            ResponseTemplate::new(401).set_body_json(
                json!({"title": "Unauthenticated", "detail": "You did not pass a valid authentication token", "status": 401}),
            ),
            CredentialsInvalid,
            Permanent,
        ),
        (
            "413",
            ResponseTemplate::new(413),
            InvalidRequest,
            Permanent,
        ),
        (
            "429",
            ResponseTemplate::new(429)
                .set_body_json(json!({"detail": "Request was throttled. Your rate limit resets in ~4s."})),
            ProviderUnavailable,
            RetryAfter(Duration::from_secs(4)),
        ),
        (
            "503",
            ResponseTemplate::new(503),
            ProviderUnavailable,
            Transient,
        ),
        (
            "404: no files API there, which says nothing about the model",
            ResponseTemplate::new(404),
            ProviderUnavailable,
            Permanent,
        ),
        (
            "201 without urls",
            ResponseTemplate::new(201).set_body_json(json!({"id": "f1"})),
            ProviderUnavailable,
            Transient,
        ),
        (
            "201 with a urls.get that is no URL",
            ResponseTemplate::new(201).set_body_json(json!({"id": "f1", "urls": {"get": "f1"}})),
            ProviderUnavailable,
            Transient,
        ),
    ];
    let image = noise_png(300, 300);
    for (case, response, code, class) in cases {
        let server = MockServer::start().await;
        mount_post(&server, "/v1/files", response).await;
        mount_post(&server, SEEDANCE_PATH, created()).await;
        let err = submit(
            &registry(&server.uri()),
            json!({"model": "bytedance/seedance-2.0", "prompt": "x",
                   "image_url": "https://images.example/a.png"}),
            Some(&image),
        )
        .await
        .expect_err(case);
        assert_class(&err, code, class, case);
        let requests = server.received_requests().await.expect("recorded");
        assert_eq!(requests.len(), 1, "{case}: only the upload was sent");
    }
}

#[tokio::test]
async fn an_input_that_is_not_an_image_is_refused_before_sending() {
    assert_a_non_image_is_refused_before_sending(async |registry, image| {
        submit(
            registry,
            json!({"model": "stability-ai/stable-video-diffusion",
                   "image_url": "https://images.example/a.png"}),
            Some(image),
        )
        .await
    })
    .await;
}

#[tokio::test]
async fn poll_and_cancel_send_exactly_the_documented_requests() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!("/v1/predictions/{PREDICTION_ID}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(prediction(json!({}))))
        .expect(1)
        .mount(&server)
        .await;
    let registry = registry(&server.uri());
    let (replicate, credentials) = replicate(&registry);
    assert_eq!(
        replicate.poll(&credentials, PREDICTION_ID).await,
        Ok(RemoteStatus::Queued)
    );
    let request = only_request(&server).await;
    assert_eq!(request.method.as_str(), "GET");
    assert!(request.body.is_empty());
    assert_exact_headers(
        &request,
        &[
            ("authorization", &format!("Bearer {REPLICATE_TOKEN}")),
            ("accept", "application/json"),
        ],
    );

    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!("/v1/predictions/{PREDICTION_ID}/cancel")))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(prediction(json!({"status": "canceled"}))),
        )
        .expect(1)
        .mount(&server)
        .await;
    let registry = support::registry(&server.uri());
    let (replicate, credentials) = self::replicate(&registry);
    assert_eq!(
        replicate.cancel(&credentials, PREDICTION_ID).await,
        Ok(CancelOutcome::Cancelled)
    );
    let request = only_request(&server).await;
    assert_eq!(request.method.as_str(), "POST");
    assert!(request.body.is_empty());
    assert_exact_headers(
        &request,
        &[
            ("authorization", &format!("Bearer {REPLICATE_TOKEN}")),
            ("accept", "application/json"),
            ("content-length", "0"),
        ],
    );
}

#[tokio::test]
async fn a_prediction_id_cannot_change_the_path() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(prediction(json!({}))))
        .mount(&server)
        .await;
    let registry = registry(&server.uri());
    let (replicate, credentials) = replicate(&registry);
    replicate
        .poll(&credentials, "../account?x=1")
        .await
        .expect("polled");
    let request = only_request(&server).await;
    assert_eq!(request.url.path(), "/v1/predictions/..%2Faccount%3Fx=1");
    assert_eq!(request.url.query(), None);
}

// ---------------------------------------------------------------------------------------
// Poll answers.
// ---------------------------------------------------------------------------------------

async fn poll_answered_with(response: ResponseTemplate) -> Result<RemoteStatus, JobError> {
    let at = format!("/v1/predictions/{PREDICTION_ID}");
    support::poll_answered_with(replicate, &at, PREDICTION_ID, response)
        .await
        .0
}

fn answer(fields: Value) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(prediction(fields))
}

#[tokio::test]
async fn prediction_states_map_to_remote_statuses() {
    let url = "https://replicate.delivery/xezq/abc/tmpvideo.mp4";
    let running = |progress: Option<f64>| Ok(RemoteStatus::Running { progress });
    let cases: Vec<(Value, Result<RemoteStatus, JobError>)> = vec![
        (json!({"status": "starting"}), Ok(RemoteStatus::Queued)),
        (json!({"status": "processing"}), running(None)),
        (
            json!({"status": "processing", "logs": "Using seed: 7\n 45%|████▌     | 45/100 [00:01<00:01]"}),
            running(Some(0.45)),
        ),
        (
            json!({"status": "processing", "logs": "loading weights"}),
            running(None),
        ),
        (
            json!({"status": "succeeded", "output": url, "metrics": {"predict_time": 41.2, "total_time": 43.0}}),
            Ok(RemoteStatus::Succeeded(
                VideoOutput::Urls(vec![url.into()]),
                ProviderUsage {
                    compute_ms: Some(41_200),
                },
            )),
        ),
        (
            json!({"status": "succeeded", "output": [url, 7, "not a url", "https://replicate.delivery/b.mp4"]}),
            Ok(RemoteStatus::Succeeded(
                VideoOutput::Urls(vec![url.into(), "https://replicate.delivery/b.mp4".into()]),
                ProviderUsage::NONE,
            )),
        ),
        (
            json!({"status": "succeeded", "output": url, "metrics": {"predict_time": -3}}),
            Ok(RemoteStatus::Succeeded(
                VideoOutput::Urls(vec![url.into()]),
                ProviderUsage::NONE,
            )),
        ),
        (json!({"status": "canceled"}), Ok(RemoteStatus::Cancelled)),
    ];
    for (fields, expected) in cases {
        assert_eq!(
            poll_answered_with(answer(fields.clone())).await,
            expected,
            "{fields}"
        );
    }
}

#[tokio::test]
async fn failed_and_aborted_predictions_are_classified_by_their_text() {
    use ErrorCode::*;
    use RetryClass::*;
    let cases = [
        (
            json!({"status": "failed", "error": "The input or output was flagged as sensitive. Please try again with different inputs. (E005)"}),
            ContentRejected,
            Permanent,
            "Replicate's model refused the content: The input or output was flagged as sensitive. Please try again with different inputs. (E005)",
        ),
        (
            json!({"status": "failed", "error": "NSFW content detected. Try running it again, or try a different prompt."}),
            ContentRejected,
            Permanent,
            "Replicate's model refused the content: NSFW content detected. Try running it again, or try a different prompt.",
        ),
        (
            json!({"status": "failed", "error": "Prediction interrupted; please retry (code: PA)"}),
            ProviderUnavailable,
            Transient,
            "Replicate lost the prediction on its side: Prediction interrupted; please retry (code: PA)",
        ),
        (
            json!({"status": "failed", "error": "CUDA out of memory"}),
            ProviderUnavailable,
            Permanent,
            "the prediction failed at Replicate: CUDA out of memory",
        ),
        (
            json!({"status": "failed", "error": {"message": "odd shape"}}),
            ProviderUnavailable,
            Permanent,
            "the prediction failed at Replicate: {\"message\":\"odd shape\"}",
        ),
        (
            json!({"status": "failed", "error": format!("token {REPLICATE_TOKEN} broke")}),
            ProviderUnavailable,
            Permanent,
            "the prediction failed at Replicate: token [REDACTED] broke",
        ),
        (
            json!({"status": "aborted"}),
            ProviderUnavailable,
            Transient,
            "Replicate aborted the prediction before it started (its deadline passed)",
        ),
    ];
    for (fields, code, class, message) in cases {
        let status = poll_answered_with(answer(fields.clone()))
            .await
            .expect("an ended prediction is an answer, not a poll error");
        let RemoteStatus::Failed(err) = status else {
            panic!("{fields}: {status:?}")
        };
        assert_class(&err, code, class, &fields.to_string());
        assert_eq!(err.message, message);
    }
}

#[tokio::test]
async fn poll_errors_are_classified() {
    use ErrorCode::*;
    use RetryClass::*;
    let cases: Vec<(&str, ResponseTemplate, ErrorCode, RetryClass)> = vec![
        (
            "404 unknown",
            ResponseTemplate::new(404)
                .set_body_json(json!({"title": "Not found", "detail": "Not found.", "status": 404})),
            ProviderUnavailable,
            Permanent,
        ),
        (
            "401",
            ResponseTemplate::new(401).set_body_json(
                json!({"title": "Unauthenticated", "detail": "You did not pass a valid authentication token", "status": 401}),
            ),
            CredentialsInvalid,
            Permanent,
        ),
        (
            "429 with its text",
            ResponseTemplate::new(429)
                .set_body_json(json!({"detail": "Request was throttled. Your rate limit resets in ~12s."})),
            ProviderUnavailable,
            RetryAfter(Duration::from_secs(12)),
        ),
        (
            "502",
            ResponseTemplate::new(502),
            ProviderUnavailable,
            Transient,
        ),
        (
            "504: a poll is safe to repeat",
            ResponseTemplate::new(504),
            ProviderUnavailable,
            Transient,
        ),
        (
            "200 not json",
            ResponseTemplate::new(200).set_body_string("<html>"),
            ProviderUnavailable,
            Transient,
        ),
        (
            "200 unknown status",
            answer(json!({"status": "dreaming"})),
            ProviderUnavailable,
            Transient,
        ),
        (
            "succeeded without output yet",
            answer(json!({"status": "succeeded"})),
            ProviderUnavailable,
            Transient,
        ),
        (
            "succeeded, output deleted after an hour",
            answer(json!({"status": "succeeded", "data_removed": true})),
            ProviderUnavailable,
            Permanent,
        ),
        (
            "succeeded, output deleted but still listed",
            answer(json!({"status": "succeeded", "data_removed": true,
                          "output": "https://replicate.delivery/xezq/abc/tmpvideo.mp4"})),
            ProviderUnavailable,
            Permanent,
        ),
        (
            "succeeded with text, not a file",
            answer(json!({"status": "succeeded", "output": "a poem"})),
            ProviderUnavailable,
            Permanent,
        ),
    ];
    for (case, response, code, class) in cases {
        let err = poll_answered_with(response).await.expect_err(case);
        assert_class(&err, code, class, case);
    }
}

#[tokio::test]
async fn cancel_outcomes() {
    use ErrorCode::*;
    use RetryClass::*;
    for (status, body) in [
        (200, prediction(json!({"status": "canceled"}))),
        // Already ended: it runs (and bills) no more, which is what a cancel is for.
        (200, prediction(json!({"status": "succeeded"}))),
        (404, json!({"title": "Not found", "status": 404})),
    ] {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(status).set_body_json(body.clone()))
            .mount(&server)
            .await;
        let registry = registry(&server.uri());
        let (replicate, credentials) = replicate(&registry);
        assert_eq!(
            replicate.cancel(&credentials, PREDICTION_ID).await,
            Ok(CancelOutcome::Cancelled),
            "{status} {body}"
        );
    }
    for (status, code, class) in [
        (401, CredentialsInvalid, Permanent),
        (503, ProviderUnavailable, Transient),
    ] {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(status))
            .mount(&server)
            .await;
        let registry = registry(&server.uri());
        let (replicate, credentials) = replicate(&registry);
        let err = replicate
            .cancel(&credentials, PREDICTION_ID)
            .await
            .expect_err("error");
        assert_class(&err, code, class, &status.to_string());
    }
}

// ---------------------------------------------------------------------------------------
// Create answers.
// ---------------------------------------------------------------------------------------

async fn submit_answered_with(
    model: &str,
    response: ResponseTemplate,
) -> Result<Submitted, JobError> {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(response)
        .mount(&server)
        .await;
    let (fields, image) = if model == "stability-ai/stable-video-diffusion" {
        (
            json!({"model": model, "image_url": "https://images.example/a.png"}),
            Some(input_png(16, 9)),
        )
    } else {
        (json!({"model": model, "prompt": "a fox"}), None)
    };
    submit(&registry(&server.uri()), fields, image.as_ref()).await
}

fn problem(status: u16, title: &str, detail: &str) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .insert_header("content-type", "application/problem+json")
        .set_body_json(json!({"title": title, "detail": detail, "status": status}))
}

#[tokio::test]
async fn create_answers_are_classified() {
    use ErrorCode::*;
    use RetryClass::*;
    let seedance = "bytedance/seedance-2.0";
    let svd = "stability-ai/stable-video-diffusion";
    let validation = ResponseTemplate::new(422).set_body_json(json!({
        "detail": "- input.duration: Must be less than or equal to 15\n", "status": 422,
        "title": "Input validation failed",
        "invalid_fields": [{"type": "number_lte", "field": "input.duration",
                            "description": "Must be less than or equal to 15"}]}));
    let required = ResponseTemplate::new(422).set_body_json(json!({
        "detail": "- input: prompt is required\n", "status": 422, "title": "Input validation failed",
        "invalid_fields": [{"type": "required", "field": "input", "description": "prompt is required"}]}));
    let cases: Vec<(&str, &str, ResponseTemplate, ErrorCode, RetryClass, &str)> = vec![
        (
            "bad token 401",
            seedance,
            problem(
                401,
                "Unauthenticated",
                "You did not pass a valid authentication token",
            ),
            CredentialsInvalid,
            Permanent,
            "Replicate rejected the key (HTTP 401): You did not pass a valid authentication token",
        ),
        (
            "403",
            seedance,
            ResponseTemplate::new(403),
            CredentialsInvalid,
            Permanent,
            "HTTP 403",
        ),
        (
            "no credit",
            seedance,
            problem(
                402,
                "Insufficient credit",
                "You have insufficient credit to run this model. Go to https://replicate.com/account/billing#billing to purchase credit.",
            ),
            InsufficientCredits,
            Permanent,
            "(HTTP 402): You have insufficient credit to run this model.",
        ),
        (
            "model gone",
            seedance,
            problem(404, "Not found", "Not found."),
            ModelRetired,
            Permanent,
            "Replicate has no such model (HTTP 404); it was removed or renamed: Not found.",
        ),
        (
            "version gone",
            svd,
            problem(
                422,
                "Invalid version or not permitted",
                "The specified version does not exist (or perhaps you don't have permission to use it?)",
            ),
            ModelRetired,
            Permanent,
            "Replicate refused the model's version (HTTP 422): The specified version does not exist",
        ),
        (
            "input validation",
            seedance,
            validation,
            InvalidRequest,
            Permanent,
            "Replicate refused input `duration` (HTTP 422), filled from the request's `duration_seconds`: - input.duration: Must be less than or equal to 15",
        ),
        (
            "a required input",
            seedance,
            required,
            InvalidRequest,
            Permanent,
            "Replicate refused input `input` (HTTP 422): - input: prompt is required",
        ),
        (
            "400",
            seedance,
            problem(400, "Invalid JSON", "The request body is not valid JSON"),
            InvalidRequest,
            Permanent,
            "Replicate refused the request (HTTP 400): The request body is not valid JSON",
        ),
        (
            "429 with Retry-After",
            seedance,
            ResponseTemplate::new(429)
                .insert_header("retry-after", "7")
                .set_body_json(
                    json!({"detail": "Request was throttled. Your rate limit resets in ~30s."}),
                ),
            ProviderUnavailable,
            RetryAfter(Duration::from_secs(7)),
            "Replicate is throttling this token (HTTP 429): Request was throttled.",
        ),
        (
            "429, the wait in the text",
            seedance,
            ResponseTemplate::new(429).set_body_json(
                json!({"detail": "Request was throttled. Your rate limit resets in ~30s."}),
            ),
            ProviderUnavailable,
            RetryAfter(Duration::from_secs(30)),
            "resets in ~30s",
        ),
        (
            "429, the earlier wording",
            seedance,
            ResponseTemplate::new(429).set_body_json(
                json!({"detail": "Request was throttled. Expected available in 1 second."}),
            ),
            ProviderUnavailable,
            RetryAfter(Duration::from_secs(1)),
            "Expected available in 1 second.",
        ),
        (
            "429, plain text",
            seedance,
            ResponseTemplate::new(429).set_body_string("throttled; resets in ~5s"),
            ProviderUnavailable,
            RetryAfter(Duration::from_secs(5)),
            "HTTP 429",
        ),
        (
            "429 without a hint",
            seedance,
            ResponseTemplate::new(429),
            ProviderUnavailable,
            RetryAfter(Duration::from_secs(60)),
            "HTTP 429",
        ),
        (
            "500",
            seedance,
            ResponseTemplate::new(500),
            ProviderUnavailable,
            Transient,
            "HTTP 500",
        ),
        (
            "502",
            seedance,
            ResponseTemplate::new(502),
            ProviderUnavailable,
            Transient,
            "HTTP 502",
        ),
        (
            "503",
            svd,
            ResponseTemplate::new(503),
            ProviderUnavailable,
            Transient,
            "HTTP 503",
        ),
        (
            "504: a gateway gave up, the prediction may exist",
            seedance,
            ResponseTemplate::new(504),
            SubmitOutcomeUnknown,
            Permanent,
            "504 Gateway Timeout",
        ),
        (
            "201 without id",
            seedance,
            ResponseTemplate::new(201).set_body_json(json!({"status": "starting"})),
            SubmitOutcomeUnknown,
            Permanent,
            "no prediction id",
        ),
        (
            "201 not json",
            svd,
            ResponseTemplate::new(201).set_body_string("ok"),
            SubmitOutcomeUnknown,
            Permanent,
            "no prediction id",
        ),
        (
            "201 empty id",
            seedance,
            ResponseTemplate::new(201).set_body_json(prediction(json!({"id": ""}))),
            SubmitOutcomeUnknown,
            Permanent,
            "no prediction id",
        ),
        (
            "201 with an id that is not one path segment",
            seedance,
            ResponseTemplate::new(201).set_body_json(prediction(json!({"id": ".."}))),
            SubmitOutcomeUnknown,
            Permanent,
            "no prediction id",
        ),
    ];
    for (case, model, response, code, class, text) in cases {
        let err = submit_answered_with(model, response).await.expect_err(case);
        assert_class(&err, code, class, case);
        assert!(err.message.contains(text), "{case}: {}", err.message);
    }

    // Retry-After as an HTTP date, two minutes ahead (second resolution, and time passes).
    let in_two_minutes = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
    let err = submit_answered_with(
        seedance,
        ResponseTemplate::new(429).insert_header("retry-after", in_two_minutes.as_str()),
    )
    .await
    .expect_err("429");
    let RetryAfter(wait) = err.class else {
        panic!("{err:?}")
    };
    assert!(
        (Duration::from_secs(115)..=Duration::from_secs(120)).contains(&wait),
        "{wait:?}"
    );
}

#[tokio::test]
async fn provider_text_is_sanitized() {
    let err = submit_answered_with(
        "bytedance/seedance-2.0",
        problem(
            422,
            "Input validation failed",
            &format!("token {REPLICATE_TOKEN} is\nnot allowed"),
        ),
    )
    .await
    .expect_err("422");
    assert!(!err.message.contains(REPLICATE_TOKEN), "{}", err.message);
    assert!(
        err.message.ends_with("token [REDACTED] is not allowed"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn a_create_whose_answer_is_lost_is_never_retried() {
    let server = MockServer::start().await;
    mount_post(
        &server,
        SEEDANCE_PATH,
        created().set_delay(Duration::from_secs(10)),
    )
    .await;
    let fields = json!({"model": "bytedance/seedance-2.0", "prompt": "a fox"});
    assert_a_timed_out_submit_is_outcome_unknown(&server, async |registry| {
        submit(registry, fields.clone(), None).await
    })
    .await;

    // Replicate reads the whole create, then the connection closes without an answer.
    let request = assert_a_cut_submit_is_outcome_unknown_but_a_refused_one_is_not(
        "Replicate",
        REPLICATE_TOKEN,
        async |registry| submit(registry, fields.clone(), None).await,
    )
    .await;
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("POST", SEEDANCE_PATH)
    );
    let body: Value = serde_json::from_slice(&request.body).expect("the whole JSON body");
    assert_eq!(body["input"]["prompt"], "a fox");
}

// ---------------------------------------------------------------------------------------
// Output download.
// ---------------------------------------------------------------------------------------

/// A delivery URL at a fresh mock answering `response`.
async fn download_answered_with(
    response: ResponseTemplate,
) -> (Result<byok_providers::Video, JobError>, MockServer) {
    support::download_answered_with(replicate, "/xezq/abc/tmpvideo.mp4", response).await
}

#[tokio::test]
async fn the_output_is_downloaded_without_the_token() {
    // No Authorization: Replicate's delivery URLs need none, and the token stays home.
    assert_the_output_is_downloaded_without_credentials(replicate, "/xezq/abc/tmpvideo.mp4").await;
}

#[tokio::test]
async fn output_answers_are_classified() {
    use ErrorCode::*;
    use RetryClass::*;
    let mp4 = fake_mp4(100);
    let (video, _server) = download_answered_with(
        ResponseTemplate::new(200).set_body_raw(mp4.clone(), "application/octet-stream"),
    )
    .await;
    assert_eq!(
        video.expect("an MP4 by its bytes").content_type,
        "video/mp4"
    );
    let refused: Vec<(&str, ResponseTemplate, ErrorCode, RetryClass)> = vec![
        (
            "an image, not a video",
            ResponseTemplate::new(200).set_body_raw(vec![0u8; 64], "image/webp"),
            ProviderUnavailable,
            Permanent,
        ),
        (
            "deleted after an hour",
            ResponseTemplate::new(404),
            ProviderUnavailable,
            Transient,
        ),
        (
            "delivery down",
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
    assert_downloads_fail(replicate, "/xezq/abc/tmpvideo.mp4", refused).await;
}

#[tokio::test]
async fn output_urls_follow_the_private_network_policy() {
    // On loopback, on a metadata address, over http, with credentials in the URL.
    assert_output_urls_are_refused(
        replicate,
        &[
            "http://127.0.0.1:9/out.mp4",
            "https://169.254.169.254/latest/",
            "https://[::1]/out.mp4",
            "http://replicate.delivery/out.mp4",
            "https://user:pw@replicate.delivery/out.mp4",
        ],
    )
    .await;
}

// ---------------------------------------------------------------------------------------
// The lifecycle against the simulator.
// ---------------------------------------------------------------------------------------

fn sim_credentials(adapter: &dyn VideoProvider, token: &str) -> Credentials {
    credentials(adapter, &json!({ "api_key": token }))
}

#[tokio::test]
async fn jobs_run_to_video_bytes_at_the_simulator() {
    let sim = sim_with(
        SimConfig {
            render_time: Duration::from_millis(150),
            ..SimConfig::default()
        },
        Clock::system(),
    )
    .await;
    let registry = sim_registry(&sim);
    let adapter = registry.get(ProviderId::REPLICATE).unwrap();
    let credentials = sim_credentials(&*adapter, "sim_replicate_lifecycle");
    assert_eq!(
        adapter.check_credentials(&credentials).await,
        CredentialCheck::Valid
    );
    let small = input_png(1024, 576);
    // Inline, and its data URL, which the prediction echoes in its `input`, is far larger than
    // an error answer: the create's answer and every poll must still be read whole.
    let medium = noise_png(250, 250);
    assert!(
        (100 * 1024..=256 * 1024).contains(&medium.bytes.len()),
        "{}",
        medium.bytes.len()
    );
    let large = noise_png(300, 300);
    let cases: Vec<(Value, Option<&InputImage>)> = vec![
        (
            json!({"model": "bytedance/seedance-2.0", "prompt": "a lighthouse at dusk",
                   "aspect_ratio": "21:9", "duration_seconds": 12, "seed": 9}),
            None,
        ),
        (
            json!({"model": "bytedance/seedance-2.0-fast", "prompt": "a slow dolly-in",
                   "image_url": "https://example.com/a.png", "resolution": "480p"}),
            Some(&small),
        ),
        (
            json!({"model": "bytedance/seedance-2.0", "prompt": "a slow dolly-in",
                   "image_url": "https://example.com/b.png"}),
            Some(&medium),
        ),
        // Over 256 KB: uploaded with the files API, and the simulator checks that the file
        // named in the input is the token's own.
        (
            json!({"model": "stability-ai/stable-video-diffusion",
                   "image_url": "https://example.com/a.png"}),
            Some(&large),
        ),
    ];
    for (fields, image) in cases {
        let id = submit_at_sim(&*adapter, &credentials, fields.clone(), image)
            .await
            .unwrap_or_else(|e| panic!("{fields}: {e}"));
        let (status, _) = poll_to_end(&*adapter, &credentials, &id).await;
        let RemoteStatus::Succeeded(output, usage) = status else {
            panic!("{fields}: ended {status:?}");
        };
        assert!(matches!(output, VideoOutput::Urls(_)), "{output:?}");
        assert!(
            usage.compute_ms.is_some_and(|ms| ms > 0),
            "{fields}: the compute time was kept: {usage:?}"
        );
        let video = adapter
            .fetch_video(&credentials, &output)
            .await
            .expect("downloaded");
        assert!(is_mp4(&video.bytes), "{fields}: an MP4 came back");
    }
    let stats = sim.stats().await;
    let key = stats
        .replicate
        .for_api_key("sim_replicate_lifecycle")
        .expect("the key's stats");
    assert_eq!(key.counters.accepted, 4);
    assert_eq!(
        key.counters.rejected, 0,
        "the simulator accepted every create"
    );
    assert!(key.counters.polls >= 3);
    assert_eq!(stats.replicate.totals.unauthorized, 0);
}

#[tokio::test]
async fn a_prediction_is_cancelled_at_the_simulator() {
    let sim = sim_with(
        SimConfig {
            render_time: Duration::from_secs(600),
            ..SimConfig::default()
        },
        Clock::system(),
    )
    .await;
    let registry = sim_registry(&sim);
    let adapter = registry.get(ProviderId::REPLICATE).unwrap();
    let credentials = sim_credentials(&*adapter, "sim_cancel");
    let id = submit_at_sim(
        &*adapter,
        &credentials,
        json!({"model": "bytedance/seedance-2.0", "prompt": "a cat"}),
        None,
    )
    .await
    .expect("created");
    assert_eq!(
        adapter.poll(&credentials, &id).await,
        Ok(RemoteStatus::Queued)
    );
    assert_eq!(
        adapter.cancel(&credentials, &id).await,
        Ok(CancelOutcome::Cancelled)
    );
    assert_eq!(
        adapter.poll(&credentials, &id).await,
        Ok(RemoteStatus::Cancelled),
        "the prediction is canceled at Replicate"
    );
    // Again: still fine, nothing more happens.
    assert_eq!(
        adapter.cancel(&credentials, &id).await,
        Ok(CancelOutcome::Cancelled)
    );
    assert_eq!(sim.stats().await.replicate.totals.cancels, 2);
}

#[tokio::test]
async fn throttling_moderation_failures_and_bad_tokens_at_the_simulator_are_classified() {
    let sim = sim_with(
        SimConfig {
            render_time: Duration::ZERO,
            retry_after: Duration::from_secs(3),
            ..SimConfig::default()
        },
        Clock::system(),
    )
    .await;
    let registry = sim_registry(&sim);
    let adapter = registry.get(ProviderId::REPLICATE).unwrap();
    let cat = json!({"model": "bytedance/seedance-2.0", "prompt": "a cat"});

    // A throttled token: one 429 whose only hint is "resets in ~3s", then it goes through.
    let throttled = sim_credentials(&*adapter, "sim_throttled_replicate");
    let err = submit_at_sim(&*adapter, &throttled, cat.clone(), None)
        .await
        .expect_err("throttled");
    assert_class(
        &err,
        ErrorCode::ProviderUnavailable,
        RetryClass::RetryAfter(Duration::from_secs(3)),
        "sim_throttled",
    );
    submit_at_sim(&*adapter, &throttled, cat.clone(), None)
        .await
        .expect("the second create goes through");

    let credentials = sim_credentials(&*adapter, "sim_outcomes");
    let id = submit_at_sim(
        &*adapter,
        &credentials,
        json!({"model": "bytedance/seedance-2.0", "prompt": "please sim:moderate this"}),
        None,
    )
    .await
    .expect("created");
    let RemoteStatus::Failed(err) = adapter.poll(&credentials, &id).await.expect("polled") else {
        panic!("moderated")
    };
    assert_class(
        &err,
        ErrorCode::ContentRejected,
        RetryClass::Permanent,
        "moderation",
    );

    sim.set_config(SimConfig {
        failure_rate: 1.0,
        ..sim.config()
    })
    .expect("knobs");
    let id = submit_at_sim(&*adapter, &credentials, cat.clone(), None)
        .await
        .expect("created");
    let RemoteStatus::Failed(err) = adapter.poll(&credentials, &id).await.expect("polled") else {
        panic!("failed")
    };
    assert_class(
        &err,
        ErrorCode::ProviderUnavailable,
        RetryClass::Transient,
        "interrupted at Replicate",
    );

    let bad = sim_credentials(&*adapter, "r8_not_a_simulator_token");
    let err = submit_at_sim(&*adapter, &bad, cat, None)
        .await
        .expect_err("refused");
    assert_class(
        &err,
        ErrorCode::CredentialsInvalid,
        RetryClass::Permanent,
        "bad token",
    );
    assert!(matches!(
        adapter.check_credentials(&bad).await,
        CredentialCheck::Rejected { .. }
    ));
    let stats = sim.stats().await;
    assert_eq!(stats.replicate.totals.throttled, 1);
    assert_eq!(stats.replicate.totals.unauthorized, 2);
}

#[tokio::test]
async fn an_output_not_copied_within_the_hour_is_gone_for_good() {
    let clock = Clock::manual();
    let sim = sim_with(
        SimConfig {
            render_time: Duration::from_secs(10),
            ..SimConfig::default()
        },
        clock.clone(),
    )
    .await;
    let registry = sim_registry(&sim);
    let adapter = registry.get(ProviderId::REPLICATE).unwrap();
    let credentials = sim_credentials(&*adapter, "sim_slow_worker");
    let id = submit_at_sim(
        &*adapter,
        &credentials,
        json!({"model": "bytedance/seedance-2.0", "prompt": "a cat"}),
        None,
    )
    .await
    .expect("created");
    assert_eq!(
        adapter.poll(&credentials, &id).await,
        Ok(RemoteStatus::Queued)
    );
    clock.advance(Duration::from_secs(5));
    assert!(matches!(
        adapter.poll(&credentials, &id).await,
        Ok(RemoteStatus::Running { progress: Some(p) }) if (0.4..=0.6).contains(&p)
    ));
    clock.advance(Duration::from_secs(5));
    let Ok(RemoteStatus::Succeeded(output, _)) = adapter.poll(&credentials, &id).await else {
        panic!("succeeded")
    };
    clock.advance(Duration::from_secs(3600));
    let err = adapter
        .fetch_video(&credentials, &output)
        .await
        .expect_err("deleted");
    assert_class(
        &err,
        ErrorCode::ProviderUnavailable,
        RetryClass::Transient,
        "the download is refused; the next poll decides",
    );
    let err = adapter.poll(&credentials, &id).await.expect_err("removed");
    assert_class(
        &err,
        ErrorCode::ProviderUnavailable,
        RetryClass::Permanent,
        "data removed",
    );
}
