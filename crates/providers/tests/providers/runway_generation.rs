//! Runway's generation half: `POST /v1/{text,image}_to_video`, `GET /v1/tasks/{id}`,
//! `DELETE /v1/tasks/{id}` and the output download, against wiremock. Requests are
//! asserted exactly; every answer class of docs/provider-protocols.md §1.5, §1.6 and §6 is
//! mapped to its code and retry class.

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use byok_core::{ErrorCode, RetryClass};
use byok_providers::{
    CancelOutcome, InputImage, JobError, ProviderId, Registry, RemoteStatus, Submitted, VideoOutput,
};
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::FetchVideo as _;
use crate::support::{
    self, Adapter, RUNWAY_KEY, adapter,
    assert_a_cut_submit_is_outcome_unknown_but_a_refused_one_is_not,
    assert_a_non_image_is_refused_before_sending, assert_a_timed_out_submit_is_outcome_unknown,
    assert_class, assert_downloads_fail, assert_exact_headers, assert_output_urls_are_refused,
    assert_the_output_is_downloaded_without_credentials, fake_mp4, generation_request, input_png,
    json_body, mount, noise_png, only_request, registry, strict_registry, validate_and_submit,
};

const TASK_ID: &str = "17f20503-6c24-4c16-946b-35dbbce2af2f";

fn runway(registry: &Registry) -> Adapter {
    adapter(
        registry,
        ProviderId::RUNWAY,
        &json!({"api_key": RUNWAY_KEY}),
    )
}

/// Validates `fields` for Runway and submits them with `image`.
async fn submit(
    registry: &Registry,
    fields: Value,
    image: Option<&InputImage>,
) -> Result<Submitted, JobError> {
    let (runway, credentials) = runway(registry);
    validate_and_submit(runway.as_ref(), &credentials, fields, image).await
}

async fn mount_submit(server: &MockServer, endpoint: &str, response: ResponseTemplate) {
    mount(server, "POST", endpoint, response).await;
}

fn submit_headers(request: &wiremock::Request) {
    assert_exact_headers(
        request,
        &[
            ("authorization", &format!("Bearer {RUNWAY_KEY}")),
            ("x-runway-version", "2024-11-06"),
            ("content-type", "application/json"),
            ("accept", "application/json"),
            ("content-length", &request.body.len().to_string()),
        ],
    );
}

// ---------------------------------------------------------------------------------------
// Conformance: the requests as Runway documents them.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn text_to_video_sends_camel_case_json_with_integers() {
    let server = MockServer::start().await;
    mount_submit(
        &server,
        "/v1/text_to_video",
        ResponseTemplate::new(200).set_body_json(json!({"id": TASK_ID})),
    )
    .await;

    let submitted = submit(
        &registry(&server.uri()),
        json!({"model": "gen4.5", "prompt": "a red fox in snow", "duration_seconds": 7,
               "aspect_ratio": "9:16", "seed": 42}),
        None,
    )
    .await
    .expect("submitted");
    assert_eq!(submitted.provider_job_id, TASK_ID);

    let request = only_request(&server).await;
    assert_eq!(request.method.as_str(), "POST");
    assert_eq!(request.url.path(), "/v1/text_to_video");
    assert_eq!(request.url.query(), None);
    submit_headers(&request);
    // Value equality tells 7 from "7": duration and seed are JSON integers, ratio a string.
    assert_eq!(
        json_body(&request),
        json!({"model": "gen4.5", "promptText": "a red fox in snow", "ratio": "720:1280",
               "duration": 7, "seed": 42})
    );
}

#[tokio::test]
async fn image_to_video_sends_the_fetched_image_as_a_data_uri() {
    let server = MockServer::start().await;
    mount_submit(
        &server,
        "/v1/image_to_video",
        ResponseTemplate::new(200).set_body_json(json!({"id": TASK_ID})),
    )
    .await;
    let image = input_png(40, 30);

    submit(
        &registry(&server.uri()),
        json!({"model": "gen4_turbo", "image_url": "https://images.example/a.png"}),
        Some(&image),
    )
    .await
    .expect("submitted");

    let request = only_request(&server).await;
    assert_eq!(request.url.path(), "/v1/image_to_video");
    submit_headers(&request);
    let body = json_body(&request);
    // Defaults from the catalogue: 16:9 720p and 5 s; no prompt given, none sent.
    assert_eq!(
        body,
        json!({"model": "gen4_turbo", "ratio": "1280:720", "duration": 5,
               "promptImage": format!("data:image/png;base64,{}", STANDARD.encode(&image.bytes))})
    );
    // The URI decodes to exactly the bytes that were fetched and checked.
    let uri = body["promptImage"].as_str().expect("string");
    let b64 = uri
        .strip_prefix("data:image/png;base64,")
        .expect("data URI prefix");
    assert_eq!(STANDARD.decode(b64).expect("base64"), image.bytes);
}

#[tokio::test]
async fn negative_prompt_is_sent_where_the_model_takes_one() {
    let server = MockServer::start().await;
    mount_submit(
        &server,
        "/v1/text_to_video",
        ResponseTemplate::new(200).set_body_json(json!({"id": TASK_ID})),
    )
    .await;
    submit(
        &registry(&server.uri()),
        json!({"model": "veo3.1", "prompt": "city at night", "negative_prompt": "rain",
               "aspect_ratio": "16:9", "resolution": "1080p", "duration_seconds": 6}),
        None,
    )
    .await
    .expect("submitted");
    assert_eq!(
        json_body(&only_request(&server).await),
        json!({"model": "veo3.1", "promptText": "city at night", "negativePrompt": "rain",
               "ratio": "1920:1080", "duration": 6})
    );
}

#[tokio::test]
async fn an_image_too_big_for_a_data_uri_is_re_encoded_below_runways_limit() {
    // Noise does not compress: a 1500x1200 noise PNG is ~5.4 MB, whose data URI would
    // exceed Runway's 5 MB.
    let image = noise_png(1500, 1200);
    assert!(
        image.bytes.len() / 3 * 4 > 5_000_000,
        "the test image must be too big: {}",
        image.bytes.len()
    );

    let server = MockServer::start().await;
    mount_submit(
        &server,
        "/v1/image_to_video",
        ResponseTemplate::new(200).set_body_json(json!({"id": TASK_ID})),
    )
    .await;
    submit(
        &registry(&server.uri()),
        json!({"model": "gen4_turbo", "image_url": "https://images.example/a.png"}),
        Some(&image),
    )
    .await
    .expect("submitted");

    let body = json_body(&only_request(&server).await);
    let uri = body["promptImage"].as_str().expect("string");
    assert!(uri.len() <= 5_000_000, "{} bytes", uri.len());
    let jpeg = STANDARD
        .decode(
            uri.strip_prefix("data:image/jpeg;base64,")
                .expect("re-encoded as JPEG"),
        )
        .expect("base64");
    let decoded =
        image::load_from_memory_with_format(&jpeg, image::ImageFormat::Jpeg).expect("a JPEG");
    // 1500x1200 is within the 2048-pixel bound: same size, only re-encoded.
    assert_eq!((decoded.width(), decoded.height()), (1500, 1200));
}

#[tokio::test]
async fn an_input_that_is_not_an_image_is_refused_before_sending() {
    assert_a_non_image_is_refused_before_sending(async |registry, image| {
        submit(
            registry,
            json!({"model": "gen4_turbo", "image_url": "https://images.example/a.png"}),
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
        .and(path(format!("/v1/tasks/{TASK_ID}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": TASK_ID, "status": "PENDING",
                                                                         "createdAt": "2026-07-01T12:00:00.000Z"})))
        .expect(1)
        .mount(&server)
        .await;
    let registry = registry(&server.uri());
    let (runway, credentials) = runway(&registry);
    assert_eq!(
        runway.poll(&credentials, TASK_ID).await,
        Ok(RemoteStatus::Queued)
    );
    let request = only_request(&server).await;
    assert_eq!(request.method.as_str(), "GET");
    assert!(request.body.is_empty());
    assert_exact_headers(
        &request,
        &[
            ("authorization", &format!("Bearer {RUNWAY_KEY}")),
            ("x-runway-version", "2024-11-06"),
            ("accept", "application/json"),
        ],
    );

    let server = MockServer::start().await;
    Mock::given(method("DELETE"))
        .and(path(format!("/v1/tasks/{TASK_ID}")))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    let registry = support::registry(&server.uri());
    let (runway, credentials) = self::runway(&registry);
    assert_eq!(
        runway.cancel(&credentials, TASK_ID).await,
        Ok(CancelOutcome::Cancelled)
    );
    let request = only_request(&server).await;
    assert_eq!(request.method.as_str(), "DELETE");
    assert!(request.body.is_empty());
    assert_exact_headers(
        &request,
        &[
            ("authorization", &format!("Bearer {RUNWAY_KEY}")),
            ("x-runway-version", "2024-11-06"),
            ("accept", "*/*"),
        ],
    );
}

#[tokio::test]
async fn a_task_id_cannot_change_the_path() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"status": "PENDING"})))
        .mount(&server)
        .await;
    let registry = registry(&server.uri());
    let (runway, credentials) = runway(&registry);
    runway
        .poll(&credentials, "../organization?x=1")
        .await
        .expect("polled");
    let request = only_request(&server).await;
    assert_eq!(request.url.path(), "/v1/tasks/..%2Forganization%3Fx=1");
    assert_eq!(request.url.query(), None);
}

// ---------------------------------------------------------------------------------------
// Poll answers.
// ---------------------------------------------------------------------------------------

async fn poll_answered_with(response: ResponseTemplate) -> Result<RemoteStatus, JobError> {
    let at = format!("/v1/tasks/{TASK_ID}");
    support::poll_answered_with(runway, &at, TASK_ID, response)
        .await
        .0
}

fn task(fields: Value) -> ResponseTemplate {
    let mut body = json!({"id": TASK_ID, "createdAt": "2026-07-01T12:00:00.000Z"});
    let Value::Object(fields) = fields else {
        panic!("fields must be an object")
    };
    for (k, v) in fields {
        body[k] = v;
    }
    ResponseTemplate::new(200).set_body_json(body)
}

#[tokio::test]
async fn task_states_map_to_remote_statuses() {
    let running = |progress: Option<f64>| Ok(RemoteStatus::Running { progress });
    let cases: Vec<(Value, Result<RemoteStatus, JobError>)> = vec![
        (json!({"status": "PENDING"}), Ok(RemoteStatus::Queued)),
        (json!({"status": "THROTTLED"}), Ok(RemoteStatus::Queued)),
        (
            json!({"status": "RUNNING", "progress": 0.42}),
            running(Some(0.42)),
        ),
        (
            json!({"status": "RUNNING", "progress": 0}),
            running(Some(0.0)),
        ),
        (
            json!({"status": "RUNNING", "progress": 1.7}),
            running(Some(1.0)),
        ),
        (
            json!({"status": "RUNNING", "progress": -3}),
            running(Some(0.0)),
        ),
        (
            json!({"status": "RUNNING", "progress": "42%"}),
            running(None),
        ),
        (
            json!({"status": "RUNNING", "progress": null}),
            running(None),
        ),
        (json!({"status": "RUNNING"}), running(None)),
        (
            json!({"status": "SUCCEEDED", "output": ["https://cdn.example/a.mp4?_jwt=x", "https://cdn.example/b.mp4"]}),
            Ok(RemoteStatus::Succeeded(
                VideoOutput::Urls(vec![
                    "https://cdn.example/a.mp4?_jwt=x".into(),
                    "https://cdn.example/b.mp4".into(),
                ]),
                byok_core::ProviderUsage::NONE,
            )),
        ),
        (json!({"status": "CANCELLED"}), Ok(RemoteStatus::Cancelled)),
    ];
    for (fields, expected) in cases {
        assert_eq!(
            poll_answered_with(task(fields.clone())).await,
            expected,
            "{fields}"
        );
    }
}

#[tokio::test]
async fn failed_tasks_are_classified_by_failure_code() {
    use ErrorCode::*;
    use RetryClass::*;
    let cases = [
        ("SAFETY.INPUT.TEXT", ContentRejected, Permanent),
        ("SAFETY.INPUT.IMAGE", ContentRejected, Permanent),
        ("SAFETY.OUTPUT.VIDEO", ContentRejected, Permanent),
        (
            "INPUT_PREPROCESSING.SAFETY.TEXT",
            ContentRejected,
            Permanent,
        ),
        ("INTERNAL.BAD_OUTPUT.CODE01", ContentRejected, Permanent),
        ("ASSET.INVALID", InvalidRequest, Permanent),
        ("INTERNAL", ProviderUnavailable, Transient),
        (
            "INPUT_PREPROCESSING.INTERNAL",
            ProviderUnavailable,
            Transient,
        ),
        ("THIRD_PARTY.UNAVAILABLE", ProviderUnavailable, Transient),
        ("SOMETHING.NEW", ProviderUnavailable, Permanent),
    ];
    for (failure_code, code, class) in cases {
        let status = poll_answered_with(task(
            json!({"status": "FAILED", "failure": "Prompt text was rejected",
                                                    "failureCode": failure_code}),
        ))
        .await
        .expect("a FAILED task is an answer, not a poll error");
        let RemoteStatus::Failed(err) = status else {
            panic!("{failure_code}: {status:?}")
        };
        assert_class(&err, code, class, failure_code);
        assert!(err.message.contains(failure_code), "{}", err.message);
        assert!(
            err.message.ends_with("Prompt text was rejected"),
            "{}",
            err.message
        );
    }
    // No code at all: permanent, with Runway's text.
    let status = poll_answered_with(task(
        json!({"status": "FAILED", "failure": "Something broke"}),
    ))
    .await
    .expect("answer");
    let RemoteStatus::Failed(err) = status else {
        panic!("{status:?}")
    };
    assert_class(&err, ProviderUnavailable, Permanent, "no failureCode");
    assert_eq!(err.message, "Runway failed the task: Something broke");
}

#[tokio::test]
async fn poll_errors_are_classified() {
    use ErrorCode::*;
    use RetryClass::*;
    let cases: Vec<(&str, ResponseTemplate, ErrorCode, RetryClass)> = vec![
        (
            "404 gone",
            ResponseTemplate::new(404).set_body_json(json!({"error": "Not found"})),
            ProviderUnavailable,
            Permanent,
        ),
        (
            "401",
            ResponseTemplate::new(401).set_body_json(json!({"error": "Invalid API key"})),
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
            "502",
            ResponseTemplate::new(502),
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
            task(json!({"status": "DREAMING"})),
            ProviderUnavailable,
            Transient,
        ),
        (
            "SUCCEEDED without output",
            task(json!({"status": "SUCCEEDED", "output": []})),
            ProviderUnavailable,
            Transient,
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
    for (status, expected) in [
        (204, CancelOutcome::Cancelled),
        (200, CancelOutcome::Cancelled),
        (404, CancelOutcome::Cancelled),
    ] {
        let server = MockServer::start().await;
        Mock::given(method("DELETE"))
            .respond_with(ResponseTemplate::new(status))
            .mount(&server)
            .await;
        let registry = registry(&server.uri());
        let (runway, credentials) = runway(&registry);
        assert_eq!(
            runway.cancel(&credentials, TASK_ID).await,
            Ok(expected),
            "{status}"
        );
    }
    for (status, code, class) in [
        (401, CredentialsInvalid, Permanent),
        (503, ProviderUnavailable, Transient),
    ] {
        let server = MockServer::start().await;
        Mock::given(method("DELETE"))
            .respond_with(ResponseTemplate::new(status))
            .mount(&server)
            .await;
        let registry = registry(&server.uri());
        let (runway, credentials) = runway(&registry);
        let err = runway
            .cancel(&credentials, TASK_ID)
            .await
            .expect_err("error");
        assert_class(&err, code, class, &status.to_string());
    }
}

// ---------------------------------------------------------------------------------------
// Submit answers: the §6 matrix for Runway.
// ---------------------------------------------------------------------------------------

async fn submit_answered_with(response: ResponseTemplate) -> Result<Submitted, JobError> {
    let server = MockServer::start().await;
    mount_submit(&server, "/v1/text_to_video", response).await;
    submit(
        &registry(&server.uri()),
        json!({"model": "gen4.5", "prompt": "a fox"}),
        None,
    )
    .await
}

#[tokio::test]
async fn submit_answers_are_classified() {
    use ErrorCode::*;
    use RetryClass::*;
    let validation = json!({"error": "Validation of body failed",
        "issues": [{"code": "invalid_type", "expected": "string", "path": ["promptImage"],
                    "message": "Invalid input: expected string, received undefined"}],
        "docUrl": "https://docs.dev.runwayml.com/api"});
    let retired = json!({"error": "Validation of body failed",
        "issues": [{"code": "invalid_union_discriminator", "path": ["model"], "message": "Invalid discriminator value"}]});
    let cases: Vec<(&str, ResponseTemplate, ErrorCode, RetryClass, &str)> = vec![
        (
            "bad key 401",
            ResponseTemplate::new(401).set_body_json(json!({"error": "Invalid API key"})),
            CredentialsInvalid,
            Permanent,
            "Runway rejected the key (HTTP 401): Invalid API key",
        ),
        (
            "bad key 403",
            ResponseTemplate::new(403),
            CredentialsInvalid,
            Permanent,
            "HTTP 403",
        ),
        (
            "validation",
            ResponseTemplate::new(400).set_body_json(validation),
            InvalidRequest,
            Permanent,
            "Runway refused the request (HTTP 400): Validation of body failed: promptImage: Invalid input: expected string, received undefined",
        ),
        (
            "no credits",
            ResponseTemplate::new(400).set_body_json(
                json!({"error": "You do not have enough credits to run this task."}),
            ),
            InsufficientCredits,
            Permanent,
            "You do not have enough credits to run this task.",
        ),
        (
            "no credits, other case",
            ResponseTemplate::new(400).set_body_string("NOT ENOUGH CREDITS"),
            InsufficientCredits,
            Permanent,
            "HTTP 400",
        ),
        (
            "model retired",
            ResponseTemplate::new(400).set_body_json(retired),
            ModelRetired,
            Permanent,
            "model: Invalid discriminator value",
        ),
        (
            "wrong endpoint",
            ResponseTemplate::new(404),
            ProviderUnavailable,
            Permanent,
            "providers.runway.base_url",
        ),
        (
            "rate limit retry-after-ms",
            ResponseTemplate::new(429).insert_header("retry-after-ms", "1500"),
            ProviderUnavailable,
            RetryAfter(Duration::from_millis(1500)),
            "HTTP 429",
        ),
        (
            "rate limit retry-after seconds",
            ResponseTemplate::new(429).insert_header("retry-after", "7"),
            ProviderUnavailable,
            RetryAfter(Duration::from_secs(7)),
            "HTTP 429",
        ),
        (
            "rate limit default",
            ResponseTemplate::new(429).set_body_json(json!({"error": "Daily task limit reached"})),
            ProviderUnavailable,
            RetryAfter(Duration::from_secs(60)),
            "Daily task limit reached",
        ),
        (
            "500",
            ResponseTemplate::new(500),
            ProviderUnavailable,
            Transient,
            "HTTP 500",
        ),
        (
            "502",
            ResponseTemplate::new(502),
            ProviderUnavailable,
            Transient,
            "HTTP 502",
        ),
        (
            "503",
            ResponseTemplate::new(503),
            ProviderUnavailable,
            Transient,
            "HTTP 503",
        ),
        (
            // A gateway gave up waiting: the task may exist behind it.
            "504",
            ResponseTemplate::new(504),
            SubmitOutcomeUnknown,
            Permanent,
            "504 Gateway Timeout",
        ),
        (
            "200 without id",
            ResponseTemplate::new(200).set_body_json(json!({"task": TASK_ID})),
            SubmitOutcomeUnknown,
            Permanent,
            "no task id",
        ),
        (
            "200 not json",
            ResponseTemplate::new(200).set_body_string("ok"),
            SubmitOutcomeUnknown,
            Permanent,
            "no task id",
        ),
        (
            "200 empty id",
            ResponseTemplate::new(200).set_body_json(json!({"id": ""})),
            SubmitOutcomeUnknown,
            Permanent,
            "no task id",
        ),
    ];
    for (case, response, code, class, text) in cases {
        let err = submit_answered_with(response).await.expect_err(case);
        assert_class(&err, code, class, case);
        assert!(err.message.contains(text), "{case}: {}", err.message);
    }

    // Retry-After as an HTTP date, two minutes ahead (second resolution, and time passes).
    // (The date is made just before the request: the wait is measured from when it arrives.)
    let in_two_minutes = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
    let err = submit_answered_with(
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
        ResponseTemplate::new(400)
            .set_body_json(json!({"error": format!("key {RUNWAY_KEY} is\nnot allowed")})),
    )
    .await
    .expect_err("400");
    assert!(!err.message.contains(RUNWAY_KEY), "{}", err.message);
    assert!(
        err.message.ends_with("key [REDACTED] is not allowed"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn a_submit_whose_answer_is_lost_is_never_retried() {
    let server = MockServer::start().await;
    mount_submit(
        &server,
        "/v1/text_to_video",
        ResponseTemplate::new(200)
            .set_body_json(json!({"id": TASK_ID}))
            .set_delay(Duration::from_secs(10)),
    )
    .await;
    assert_a_timed_out_submit_is_outcome_unknown(&server, async |registry| {
        submit(
            registry,
            json!({"model": "gen4.5", "prompt": "a fox"}),
            None,
        )
        .await
    })
    .await;
}

#[tokio::test]
async fn a_submit_cut_off_after_it_was_sent_is_outcome_unknown_but_a_refused_one_is_not() {
    let request = assert_a_cut_submit_is_outcome_unknown_but_a_refused_one_is_not(
        "Runway",
        RUNWAY_KEY,
        async |registry| {
            submit(
                registry,
                json!({"model": "gen4.5", "prompt": "a fox", "duration_seconds": 5}),
                None,
            )
            .await
        },
    )
    .await;
    // Runway got the complete request: the task may exist.
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("POST", "/v1/text_to_video")
    );
    assert_eq!(
        request.header("authorization"),
        Some(format!("Bearer {RUNWAY_KEY}").as_str())
    );
    let body: Value = serde_json::from_slice(&request.body).expect("the whole JSON body");
    assert_eq!(
        body,
        json!({"model": "gen4.5", "promptText": "a fox", "ratio": "1280:720", "duration": 5})
    );
}

// ---------------------------------------------------------------------------------------
// Output download.
// ---------------------------------------------------------------------------------------

/// The output URL, signed, at a fresh mock answering `response`.
async fn download_answered_with(
    response: ResponseTemplate,
) -> (Result<byok_providers::Video, JobError>, MockServer) {
    support::download_answered_with(runway, "/cdn/out.mp4?_jwt=SIGNED", response).await
}

#[tokio::test]
async fn the_output_is_downloaded_without_credentials() {
    // No Authorization, no Runway headers: the signed URL is the only credential.
    let request =
        assert_the_output_is_downloaded_without_credentials(runway, "/cdn/out.mp4?_jwt=SIGNED")
            .await;
    assert_eq!(request.url.query(), Some("_jwt=SIGNED"));
}

/// A video of several write blocks (256 KiB each) lands whole, in a directory made for it:
/// the worker's scratch directory may have been removed while it ran.
#[tokio::test]
async fn a_video_of_many_blocks_is_written_whole_into_a_directory_made_for_it() {
    let mp4 = fake_mp4(700 * 1024 + 13);
    let server = MockServer::start().await;
    mount(
        &server,
        "GET",
        "/cdn/big.mp4",
        ResponseTemplate::new(200).set_body_raw(mp4.clone(), "video/mp4"),
    )
    .await;
    let (adapter, credentials) = runway(&registry(&server.uri()));
    let output = VideoOutput::Urls(vec![format!("{}/cdn/big.mp4", server.uri())]);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("gone").join("again").join("video.mp4");
    let saved = adapter
        .fetch_output(&credentials, &output, &dest)
        .await
        .expect("downloaded");
    assert_eq!(saved.size, mp4.len() as u64);
    assert_eq!(std::fs::read(&dest).unwrap(), mp4);

    // A second download into the same file replaces it: a shorter video leaves nothing behind.
    let short = fake_mp4(1000);
    server.reset().await;
    mount(
        &server,
        "GET",
        "/cdn/big.mp4",
        ResponseTemplate::new(200).set_body_raw(short.clone(), "video/mp4"),
    )
    .await;
    adapter
        .fetch_output(&credentials, &output, &dest)
        .await
        .expect("downloaded again");
    assert_eq!(std::fs::read(&dest).unwrap(), short);
}

#[tokio::test]
async fn output_content_types_are_checked_leniently() {
    let mp4 = fake_mp4(100);
    let ok: Vec<(&str, ResponseTemplate, &str)> = vec![
        (
            "video/mp4",
            ResponseTemplate::new(200).set_body_raw(mp4.clone(), "video/mp4"),
            "video/mp4",
        ),
        (
            "video/quicktime",
            ResponseTemplate::new(200).set_body_raw(mp4.clone(), "video/quicktime"),
            "video/quicktime",
        ),
        (
            "octet-stream + ftyp",
            ResponseTemplate::new(200).set_body_raw(mp4.clone(), "application/octet-stream"),
            "video/mp4",
        ),
        (
            "no type + ftyp",
            ResponseTemplate::new(200).set_body_bytes(mp4.clone()),
            "video/mp4",
        ),
    ];
    for (case, response, content_type) in ok {
        let video = download_answered_with(response)
            .await
            .0
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_eq!(video.bytes, mp4, "{case}");
        assert_eq!(video.content_type, content_type, "{case}");
    }
    use ErrorCode::*;
    use RetryClass::*;
    let refused: Vec<(&str, ResponseTemplate, ErrorCode, RetryClass)> = vec![
        (
            "html",
            ResponseTemplate::new(200).set_body_raw("<html>AccessDenied</html>", "text/html"),
            ProviderUnavailable,
            Permanent,
        ),
        (
            "octet-stream without ftyp",
            ResponseTemplate::new(200).set_body_raw(vec![0u8; 64], "application/octet-stream"),
            ProviderUnavailable,
            Permanent,
        ),
        (
            "expired signature",
            ResponseTemplate::new(403),
            ProviderUnavailable,
            Transient,
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
    assert_downloads_fail(runway, "/cdn/out.mp4?_jwt=SIGNED", refused).await;
}

#[tokio::test]
async fn output_urls_follow_the_private_network_policy() {
    assert_output_urls_are_refused(
        runway,
        &[
            "http://127.0.0.1:9/out.mp4",
            "https://169.254.169.254/latest/",
            "https://[::1]/out.mp4",
            "file:///etc/passwd",
        ],
    )
    .await;
}

// ---------------------------------------------------------------------------------------
// Lifecycle and validation.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn submit_poll_succeed_download_then_cancel() {
    let server = MockServer::start().await;
    let mp4 = fake_mp4(10_000);
    mount_submit(
        &server,
        "/v1/image_to_video",
        ResponseTemplate::new(200).set_body_json(json!({"id": TASK_ID})),
    )
    .await;
    let task_path = format!("/v1/tasks/{TASK_ID}");
    Mock::given(method("GET"))
        .and(path(task_path.as_str()))
        .respond_with(task(json!({"status": "RUNNING", "progress": 0.5})))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(task_path.as_str()))
        .respond_with(task(json!({"status": "SUCCEEDED", "output": [format!("{}/cdn/out.mp4?_jwt=abc", server.uri())]})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/cdn/out.mp4"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(mp4.clone(), "video/mp4"))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path(task_path.as_str()))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;

    let registry = registry(&server.uri());
    let (runway, credentials) = runway(&registry);
    let image = input_png(64, 36);
    let submitted = submit(
        &registry,
        json!({"model": "gen4_turbo", "prompt": "slow dolly-in", "image_url": "https://images.example/a.png", "seed": 7}),
        Some(&image),
    )
    .await
    .expect("submitted");
    assert_eq!(
        runway.poll(&credentials, &submitted.provider_job_id).await,
        Ok(RemoteStatus::Running {
            progress: Some(0.5)
        })
    );
    let RemoteStatus::Succeeded(output, _) = runway
        .poll(&credentials, &submitted.provider_job_id)
        .await
        .expect("polled")
    else {
        panic!("not succeeded")
    };
    let video = runway
        .fetch_video(&credentials, &output)
        .await
        .expect("downloaded");
    assert_eq!(video.bytes, mp4);
    assert_eq!(
        runway
            .cancel(&credentials, &submitted.provider_job_id)
            .await,
        Ok(CancelOutcome::Cancelled)
    );
}

#[test]
fn validate_checks_the_catalogue() {
    let registry = strict_registry();
    let runway = registry.get(ProviderId::RUNWAY).unwrap();

    let err = runway
        .validate(&generation_request(
            "runway",
            json!({"model": "gen4_turbo", "prompt": "a fox"}),
        ))
        .expect_err("gen4_turbo needs an image");
    assert_eq!(err.field, "image_url");

    let err = runway
        .validate(&generation_request(
            "runway",
            json!({"model": "gen4.5", "prompt": "a fox", "aspect_ratio": "4:3"}),
        ))
        .expect_err("4:3 is image-to-video only");
    assert_eq!(err.field, "aspect_ratio");
    assert_eq!(err.allowed, vec!["16:9".to_owned(), "9:16".to_owned()]);

    let ok = runway
        .validate(&generation_request(
            "runway",
            json!({"model": "gen4.5", "prompt": "a fox", "aspect_ratio": "9:16"}),
        ))
        .expect("valid");
    assert_eq!(ok.format.expect("format").wire, "720:1280");
}
