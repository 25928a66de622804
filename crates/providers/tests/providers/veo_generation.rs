//! Veo's generation half against a mock Vertex AI: the exact requests (method, path,
//! headers, body with JSON integers), the classification of every answer class, the
//! access-token cache and the refresh-once-on-401 rule, and a job's whole life from
//! submit to the downloaded video.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use byok_core::{ErrorCode, RetryClass};
use byok_providers::{
    CancelOutcome, GenerationRequest, InputImage, JobError, ProviderId, RemoteStatus,
    SubmitRequest, ValidatedRequest, Video, VideoOutput, VideoProvider,
};
use serde_json::{Value, json};
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, Request, ResponseTemplate};

use crate::support::FetchVideo as _;
use crate::support::GoogleFixture as Fixture;
use crate::support::{
    self, SequentialTokens, assert_exact_headers, google_tokens, json_answer, json_body, rpc_error,
    video_bytes,
};
use crate::veo::ACCESS_TOKEN;

const MODEL: &str = "veo-3.1-generate-001";
const FAST_MODEL: &str = "veo-3.1-fast-generate-001";
const OPERATION: &str = "projects/example-project/locations/us-central1/publishers/google/models/veo-3.1-generate-001/operations/0f8a1b2c-3d4e-5f60-7182-93a4b5c6d7e8";
const GCS_URI: &str = "gs://byok-out/jobs/42/sample_0.mp4";
/// `GCS_URI` through the GCS JSON API, under the storage base derived from a base URL
/// without `{location}` (`{base}/storage`): the object name is one encoded segment.
const GCS_PATH: &str = "/storage/storage/v1/b/byok-out/o/jobs%2F42%2Fsample_0.mp4";

fn submit_path(model: &str) -> String {
    format!(
        "/v1/projects/example-project/locations/us-central1/publishers/google/models/{model}:predictLongRunning"
    )
}

fn poll_path(model: &str) -> String {
    format!(
        "/v1/projects/example-project/locations/us-central1/publishers/google/models/{model}:fetchPredictOperation"
    )
}

/// Veo's calls on the fixture's adapter.
trait VeoCalls {
    async fn submit(
        &self,
        request: &ValidatedRequest,
    ) -> Result<byok_providers::Submitted, JobError>;
    async fn poll(&self, name: &str) -> Result<RemoteStatus, JobError>;
}

impl VeoCalls for Fixture {
    async fn submit(
        &self,
        request: &ValidatedRequest,
    ) -> Result<byok_providers::Submitted, JobError> {
        self.veo
            .submit(
                &self.credentials,
                SubmitRequest {
                    request,
                    image: None,
                },
            )
            .await
    }

    async fn poll(&self, name: &str) -> Result<RemoteStatus, JobError> {
        self.veo.poll(&self.credentials, name).await
    }
}

/// A neutral Veo request (`POST /v1/jobs` body) with `fields` merged in.
fn generation_request(fields: Value) -> GenerationRequest {
    let mut request = json!({"user_id": "0190b6a0-5a4e-7c3e-9a51-3f7c2d1e0a9b", "provider": "veo"});
    let Value::Object(fields) = fields else {
        panic!("fields must be an object");
    };
    for (k, v) in fields {
        request[k.as_str()] = v;
    }
    serde_json::from_value(request).expect("request shape")
}

/// A neutral request for `model`, with `fields` merged in, validated through the trait.
fn validated(veo: &dyn VideoProvider, model: &str, mut fields: Value) -> ValidatedRequest {
    fields["model"] = model.into();
    veo.validate(&generation_request(fields))
        .expect("valid request")
}

fn text_request(veo: &dyn VideoProvider) -> ValidatedRequest {
    validated(
        veo,
        MODEL,
        json!({"prompt": "A neon hologram of a cat driving at top speed"}),
    )
}

fn bearer(request: &Request) -> &str {
    request
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("<none>")
}

fn done_inline(bytes: &[u8]) -> Value {
    json!({"name": OPERATION, "done": true, "response": {
        "@type": "type.googleapis.com/cloud.ai.large_models.vision.GenerateVideoResponse",
        "raiMediaFilteredCount": 0,
        "videos": [{"bytesBase64Encoded": STANDARD.encode(bytes), "mimeType": "video/mp4"}],
    }})
}

// ---------------------------------------------------------------------------------------
// Conformance: the exact requests
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn text_to_video_submit_is_exactly_the_documented_request() {
    let f = Fixture::start().await;
    f.mount(
        "POST",
        &submit_path(MODEL),
        ResponseTemplate::new(200).set_body_json(json!({"name": OPERATION})),
    )
    .await;
    let request = validated(
        f.veo.as_ref(),
        MODEL,
        json!({"prompt": "A neon hologram of a cat", "negative_prompt": "cartoon", "seed": 42,
               "duration_seconds": 6, "aspect_ratio": "16:9", "resolution": "720p"}),
    );
    let submitted = f.submit(&request).await.expect("submitted");
    assert_eq!(submitted.provider_job_id, OPERATION);

    let sent = f.requests_to(&submit_path(MODEL)).await;
    assert_eq!(sent.len(), 1);
    let sent = &sent[0];
    assert_eq!(sent.method.as_str(), "POST");
    assert_exact_headers(
        sent,
        &[
            ("authorization", &format!("Bearer {ACCESS_TOKEN}")),
            ("content-type", "application/json"),
            ("accept", "application/json"),
            ("content-length", &sent.body.len().to_string()),
        ],
    );
    let body = json_body(sent);
    assert_eq!(
        body,
        json!({
            "instances": [{"prompt": "A neon hologram of a cat"}],
            "parameters": {"aspectRatio": "16:9", "durationSeconds": 6, "resolution": "720p",
                           "negativePrompt": "cartoon", "seed": 42, "sampleCount": 1,
                           "generateAudio": false},
        })
    );
    let parameters = &body["parameters"];
    assert!(
        parameters["durationSeconds"].is_u64(),
        "durationSeconds is a JSON integer"
    );
    assert!(parameters["seed"].is_u64(), "seed is a JSON integer");
    assert!(
        parameters["sampleCount"].is_u64(),
        "sampleCount is a JSON integer"
    );
    assert!(
        parameters["aspectRatio"].is_string(),
        "aspectRatio is a string"
    );
    assert!(parameters["generateAudio"].is_boolean());
    assert_eq!(f.token_requests().await, 1);
}

#[tokio::test]
async fn unset_fields_are_left_out_and_defaults_filled_in() {
    let f = Fixture::start().await;
    f.mount(
        "POST",
        &submit_path(MODEL),
        ResponseTemplate::new(200).set_body_json(json!({"name": OPERATION})),
    )
    .await;
    f.submit(&text_request(f.veo.as_ref()))
        .await
        .expect("submitted");
    let body = json_body(&f.requests_to(&submit_path(MODEL)).await[0]);
    assert_eq!(
        body,
        json!({
            "instances": [{"prompt": "A neon hologram of a cat driving at top speed"}],
            "parameters": {"aspectRatio": "16:9", "durationSeconds": 8, "resolution": "720p",
                           "sampleCount": 1, "generateAudio": false},
        })
    );
}

#[tokio::test]
async fn image_to_video_submit_sends_the_image_inline() {
    let f = Fixture::start().await;
    f.mount(
        "POST",
        &submit_path(FAST_MODEL),
        ResponseTemplate::new(200).set_body_json(json!({"name": OPERATION})),
    )
    .await;
    let request = validated(
        f.veo.as_ref(),
        FAST_MODEL,
        json!({"image_url": "https://images.example/cat.png", "aspect_ratio": "9:16", "resolution": "1080p"}),
    );
    let image = InputImage {
        bytes: b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR some image data \xff\xfe".to_vec(),
        content_type: "image/png".into(),
        width: 720,
        height: 1280,
    };
    f.veo
        .submit(
            &f.credentials,
            SubmitRequest {
                request: &request,
                image: Some(&image),
            },
        )
        .await
        .expect("submitted");

    let sent = f.requests_to(&submit_path(FAST_MODEL)).await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].method.as_str(), "POST");
    assert_eq!(bearer(&sent[0]), format!("Bearer {ACCESS_TOKEN}"));
    assert_eq!(
        json_body(&sent[0]),
        json!({
            "instances": [{"image": {"bytesBase64Encoded": STANDARD.encode(&image.bytes), "mimeType": "image/png"}}],
            "parameters": {"aspectRatio": "9:16", "durationSeconds": 8, "resolution": "1080p",
                           "sampleCount": 1, "generateAudio": false},
        })
    );
}

#[tokio::test]
async fn poll_posts_fetch_predict_operation_on_the_operations_model() {
    let f = Fixture::start().await;
    let name = OPERATION.replace(MODEL, FAST_MODEL);
    f.mount(
        "POST",
        &poll_path(FAST_MODEL),
        ResponseTemplate::new(200).set_body_json(json!({"name": name})),
    )
    .await;
    assert_eq!(f.poll(&name).await, Ok(RemoteStatus::Queued));

    let sent = f.requests_to(&poll_path(FAST_MODEL)).await;
    assert_eq!(sent.len(), 1, "the path comes from the operation name");
    assert_eq!(sent[0].method.as_str(), "POST");
    assert_exact_headers(
        &sent[0],
        &[
            ("authorization", &format!("Bearer {ACCESS_TOKEN}")),
            ("content-type", "application/json"),
            ("accept", "application/json"),
            ("content-length", &sent[0].body.len().to_string()),
        ],
    );
    assert_eq!(json_body(&sent[0]), json!({"operationName": name}));
}

#[tokio::test]
async fn gcs_outputs_are_downloaded_with_the_json_api() {
    let f = Fixture::start().await;
    let bytes = video_bytes();
    Mock::given(method("GET"))
        .and(path(GCS_PATH))
        .and(query_param("alt", "media"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(bytes.clone(), "video/mp4"))
        .mount(&f.server)
        .await;
    let video = f
        .veo
        .fetch_video(&f.credentials, &VideoOutput::Gcs(vec![GCS_URI.into()]))
        .await
        .expect("downloaded");
    assert_eq!(
        video,
        Video {
            bytes,
            content_type: "video/mp4".into(),
            note: None
        }
    );

    let sent = f.requests_to(GCS_PATH).await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].method.as_str(), "GET");
    assert_eq!(sent[0].url.query(), Some("alt=media"));
    assert_exact_headers(
        &sent[0],
        &[
            ("authorization", &format!("Bearer {ACCESS_TOKEN}")),
            ("accept", "*/*"),
        ],
    );
}

#[tokio::test]
async fn downloads_that_are_not_videos_are_refused() {
    let f = Fixture::start().await;
    f.mount(
        "GET",
        GCS_PATH,
        ResponseTemplate::new(200).set_body_raw("<html>sign in</html>", "text/html"),
    )
    .await;
    let err = f
        .veo
        .fetch_video(&f.credentials, &VideoOutput::Gcs(vec![GCS_URI.into()]))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code, err.class),
        (ErrorCode::ProviderUnavailable, RetryClass::Permanent),
        "{err}"
    );
    assert!(err.message.contains("text/html"), "{err}");

    let err = f
        .veo
        .fetch_video(
            &f.credentials,
            &VideoOutput::Gcs(vec!["gs://byok-out/".into()]),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::ProviderUnavailable, "{err}");
    let err = f
        .veo
        .fetch_video(
            &f.credentials,
            &VideoOutput::Urls(vec!["https://cdn.example/v.mp4".into()]),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::Internal, "{err}");
    assert_eq!(
        f.requests_to(GCS_PATH).await.len(),
        1,
        "bad URIs make no request"
    );
}

#[tokio::test]
async fn cancel_is_not_supported_and_makes_no_request() {
    let f = Fixture::start().await;
    assert_eq!(
        f.veo.cancel(&f.credentials, OPERATION).await,
        Ok(CancelOutcome::NotSupported)
    );
    assert!(f.server.received_requests().await.unwrap().is_empty());
}

// ---------------------------------------------------------------------------------------
// Classification
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum Stage {
    Submit,
    Poll,
}

struct Case {
    name: &'static str,
    stage: Stage,
    /// The token endpoint's answer; `None` is Google's, issuing `ACCESS_TOKEN`.
    token: Option<ResponseTemplate>,
    /// Vertex AI's answer to the submit or poll.
    answer: ResponseTemplate,
    /// How many times Vertex AI is called.
    calls: usize,
    code: ErrorCode,
    class: RetryClass,
}

fn case(
    name: &'static str,
    stage: Stage,
    answer: ResponseTemplate,
    code: ErrorCode,
    class: RetryClass,
) -> Case {
    Case {
        name,
        stage,
        token: None,
        answer,
        calls: 1,
        code,
        class,
    }
}

fn failed_operation(code: i64, message: &str) -> ResponseTemplate {
    json_answer(
        200,
        json!({"name": OPERATION, "done": true, "error": {"code": code, "message": message}}),
    )
}

const TIMEOUT_FOR_DELAYS: Duration = Duration::from_millis(300);

#[tokio::test]
async fn every_answer_class_maps_to_its_code_and_retry_class() {
    use ErrorCode::*;
    use RetryClass::{Permanent, RetryAfter, Transient};
    use Stage::{Poll, Submit};

    let retry_info = json!({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED",
        "message": "Quota exceeded for aiplatform.googleapis.com/online_prediction_requests_per_base_model",
        "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "41s"}]}});
    let exhausted = rpc_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded");
    let slow = || json_answer(200, json!({"name": OPERATION})).set_delay(Duration::from_secs(5));
    let cases = vec![
        // Bad key: the token exchange refuses the service account; Vertex is never called.
        Case {
            token: Some(json_answer(
                400,
                json!({"error": "invalid_grant", "error_description": "Invalid JWT Signature."}),
            )),
            calls: 0,
            ..case(
                "token invalid_grant",
                Submit,
                json_answer(200, json!({"name": OPERATION})),
                CredentialsInvalid,
                Permanent,
            )
        },
        Case {
            token: Some(json_answer(
                503,
                json!({"error": "temporarily_unavailable"}),
            )),
            calls: 0,
            ..case(
                "token endpoint down",
                Submit,
                json_answer(200, json!({"name": OPERATION})),
                ProviderUnavailable,
                Transient,
            )
        },
        // Bad key: 401 with the first token and with the refreshed one.
        Case {
            calls: 2,
            ..case(
                "401 twice",
                Submit,
                json_answer(
                    401,
                    rpc_error(
                        401,
                        "UNAUTHENTICATED",
                        "Request had invalid authentication credentials.",
                    ),
                ),
                CredentialsInvalid,
                Permanent,
            )
        },
        Case {
            calls: 2,
            ..case(
                "401 twice on poll",
                Poll,
                json_answer(401, rpc_error(401, "UNAUTHENTICATED", "bad token")),
                CredentialsInvalid,
                Permanent,
            )
        },
        case(
            "403 API disabled",
            Submit,
            json_answer(
                403,
                rpc_error(
                    403,
                    "PERMISSION_DENIED",
                    "Vertex AI API has not been used in project example-project",
                ),
            ),
            CredentialsInvalid,
            Permanent,
        ),
        // Validation.
        case(
            "400 invalid argument",
            Submit,
            json_answer(
                400,
                rpc_error(
                    400,
                    "INVALID_ARGUMENT",
                    "durationSeconds must be 8 with 1080p",
                ),
            ),
            InvalidRequest,
            Permanent,
        ),
        case(
            "400 on poll",
            Poll,
            json_answer(
                400,
                rpc_error(400, "INVALID_ARGUMENT", "bad operation name"),
            ),
            InvalidRequest,
            Permanent,
        ),
        // No credits: Vertex AI has no such answer (docs/provider-protocols.md §6 "—"; billing
        // is the project's); running out of quota is a 429, the rate-limit rows below.
        // Rate limits: RetryInfo wins over Retry-After, which wins over the default.
        case(
            "429 RetryInfo",
            Submit,
            json_answer(429, retry_info.clone()).insert_header("retry-after", "7"),
            ProviderUnavailable,
            RetryAfter(Duration::from_secs(41)),
        ),
        case(
            "429 Retry-After",
            Submit,
            json_answer(429, exhausted.clone()).insert_header("retry-after", "7"),
            ProviderUnavailable,
            RetryAfter(Duration::from_secs(7)),
        ),
        case(
            "429 retry-after-ms",
            Submit,
            json_answer(429, exhausted.clone()).insert_header("retry-after-ms", "2500"),
            ProviderUnavailable,
            RetryAfter(Duration::from_millis(2500)),
        ),
        // retry-after-ms is the finer header and wins over Retry-After, as in the SDKs;
        // RetryInfo in the body still wins over both.
        case(
            "429 retry-after-ms and Retry-After",
            Submit,
            json_answer(429, exhausted.clone())
                .insert_header("retry-after-ms", "2500")
                .insert_header("retry-after", "7"),
            ProviderUnavailable,
            RetryAfter(Duration::from_millis(2500)),
        ),
        case(
            "429 RetryInfo and retry-after-ms",
            Submit,
            json_answer(429, retry_info.clone()).insert_header("retry-after-ms", "2500"),
            ProviderUnavailable,
            RetryAfter(Duration::from_secs(41)),
        ),
        case(
            "429 neither",
            Submit,
            json_answer(429, exhausted.clone()),
            ProviderUnavailable,
            RetryAfter(Duration::from_secs(60)),
        ),
        case(
            "429 on poll",
            Poll,
            json_answer(429, retry_info),
            ProviderUnavailable,
            RetryAfter(Duration::from_secs(41)),
        ),
        // Moderation: a done operation with filtered media and no video.
        case(
            "RAI filtered",
            Poll,
            json_answer(
                200,
                json!({"name": OPERATION, "done": true, "response": {
            "raiMediaFilteredCount": 1, "raiMediaFilteredReasons": ["The prompt was blocked by a safety filter."]}}),
            ),
            ContentRejected,
            Permanent,
        ),
        // Transient.
        case(
            "500",
            Submit,
            json_answer(
                500,
                rpc_error(500, "INTERNAL", "Internal error encountered."),
            ),
            ProviderUnavailable,
            Transient,
        ),
        case(
            "503",
            Submit,
            json_answer(
                503,
                rpc_error(503, "UNAVAILABLE", "The service is currently unavailable."),
            ),
            ProviderUnavailable,
            Transient,
        ),
        case(
            // A gateway gave up waiting: the operation may exist behind it.
            "504",
            Submit,
            ResponseTemplate::new(504).set_body_string("<html>Gateway Timeout</html>"),
            SubmitOutcomeUnknown,
            Permanent,
        ),
        case(
            "504 on poll",
            Poll,
            ResponseTemplate::new(504).set_body_string("<html>Gateway Timeout</html>"),
            ProviderUnavailable,
            Transient,
        ),
        case(
            "503 on poll",
            Poll,
            json_answer(503, rpc_error(503, "UNAVAILABLE", "try again")),
            ProviderUnavailable,
            Transient,
        ),
        case("poll timeout", Poll, slow(), ProviderUnavailable, Transient),
        case(
            "poll 200 garbage",
            Poll,
            ResponseTemplate::new(200).set_body_string("<html>oops</html>"),
            ProviderUnavailable,
            Transient,
        ),
        // Model retired.
        case(
            "404 on submit",
            Submit,
            json_answer(
                404,
                rpc_error(
                    404,
                    "NOT_FOUND",
                    "Publisher Model `veo-3.1-generate-001` is no longer available.",
                ),
            ),
            ModelRetired,
            Permanent,
        ),
        case(
            "404 on poll",
            Poll,
            json_answer(404, rpc_error(404, "NOT_FOUND", "Operation not found")),
            ProviderUnavailable,
            Permanent,
        ),
        // Unknown submit outcome: sent, answer lost or unreadable.
        case(
            "submit timeout",
            Submit,
            slow(),
            SubmitOutcomeUnknown,
            Permanent,
        ),
        case(
            "200 garbage",
            Submit,
            ResponseTemplate::new(200).set_body_string("<html>ok</html>"),
            SubmitOutcomeUnknown,
            Permanent,
        ),
        case(
            "200 without name",
            Submit,
            json_answer(200, json!({"done": false})),
            SubmitOutcomeUnknown,
            Permanent,
        ),
        case(
            "200 name not an operation",
            Submit,
            json_answer(200, json!({"name": "projects/p/../operations"})),
            SubmitOutcomeUnknown,
            Permanent,
        ),
        // Operations that failed at Vertex AI after acceptance (google.rpc.Status, gRPC codes).
        case(
            "op INVALID_ARGUMENT",
            Poll,
            failed_operation(3, "Unsupported resolution"),
            InvalidRequest,
            Permanent,
        ),
        case(
            "op PERMISSION_DENIED",
            Poll,
            failed_operation(7, "denied"),
            CredentialsInvalid,
            Permanent,
        ),
        case(
            "op RESOURCE_EXHAUSTED",
            Poll,
            failed_operation(8, "Resource exhausted"),
            ProviderUnavailable,
            Transient,
        ),
        case(
            "op INTERNAL",
            Poll,
            failed_operation(13, "Internal error"),
            ProviderUnavailable,
            Transient,
        ),
        case(
            "op NOT_FOUND",
            Poll,
            failed_operation(5, "not found"),
            ProviderUnavailable,
            Permanent,
        ),
    ];

    for c in cases {
        let timeout = if c.name.ends_with("timeout") {
            TIMEOUT_FOR_DELAYS
        } else {
            Duration::from_secs(10)
        };
        let f = match c.token {
            Some(token) => Fixture::with_tokens(token, timeout).await,
            None => Fixture::with_tokens(google_tokens(3599), timeout).await,
        };
        let target = match c.stage {
            Submit => submit_path(MODEL),
            Poll => poll_path(MODEL),
        };
        f.mount("POST", &target, c.answer).await;
        let err = match c.stage {
            Submit => match f.submit(&text_request(f.veo.as_ref())).await {
                Err(err) => err,
                Ok(submitted) => panic!("{}: submitted {submitted:?}", c.name),
            },
            Poll => match f.poll(OPERATION).await {
                Ok(RemoteStatus::Failed(err)) | Err(err) => err,
                Ok(status) => panic!("{}: polled {status:?}", c.name),
            },
        };
        assert_eq!(
            (err.code, err.class),
            (c.code, c.class),
            "{}: {err}",
            c.name
        );
        assert_eq!(
            f.requests_to(&target).await.len(),
            c.calls,
            "{}: Vertex AI calls",
            c.name
        );
        assert!(!err.message.contains(ACCESS_TOKEN), "{}: {err}", c.name);
        assert!(!err.message.is_empty(), "{}", c.name);
    }

    // Retry-After as an HTTP date, two minutes ahead (second resolution, and time passes),
    // on submit and on poll. The date is made just before the request: the wait is
    // measured from when the answer arrives.
    for stage in [Submit, Poll] {
        let f = Fixture::start().await;
        let target = match stage {
            Submit => submit_path(MODEL),
            Poll => poll_path(MODEL),
        };
        let in_two_minutes =
            httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(120));
        f.mount(
            "POST",
            &target,
            json_answer(429, exhausted.clone())
                .insert_header("retry-after", in_two_minutes.as_str()),
        )
        .await;
        let err = match stage {
            Submit => f
                .submit(&text_request(f.veo.as_ref()))
                .await
                .expect_err("429 on submit"),
            Poll => f.poll(OPERATION).await.expect_err("429 on poll"),
        };
        assert_eq!(err.code, ProviderUnavailable, "{err}");
        let RetryAfter(wait) = err.class else {
            panic!("{err:?}")
        };
        assert!(
            (Duration::from_secs(115)..=Duration::from_secs(120)).contains(&wait),
            "{wait:?}"
        );
    }
}

#[tokio::test]
async fn a_submit_that_cannot_connect_is_transient() {
    let unreachable = format!("http://127.0.0.1:{}", support::closed_port());
    let f = Fixture::at(&unreachable, Duration::from_secs(10)).await;
    let err = f.submit(&text_request(f.veo.as_ref())).await.unwrap_err();
    assert_eq!(
        (err.code, err.class),
        (ErrorCode::ProviderUnavailable, RetryClass::Transient),
        "{err}"
    );
    assert!(
        err.message
            .starts_with("Vertex AI could not be reached: could not connect"),
        "{err}"
    );
}

#[tokio::test]
async fn a_submit_cut_off_after_it_was_sent_is_outcome_unknown_but_a_refused_one_is_not() {
    // The token comes from the mock; Vertex AI reads the whole submit, then the
    // connection closes without an answer. The timeout is long: it is the cut
    // connection, not a timeout, that loses the answer.
    let vertex = support::HangUpServer::start().await;
    let f = Fixture::at(&vertex.base_url, Duration::from_secs(30)).await;
    let err = f.submit(&text_request(f.veo.as_ref())).await.unwrap_err();
    assert_eq!(
        (err.code, err.class),
        (ErrorCode::SubmitOutcomeUnknown, RetryClass::Permanent),
        "{err}"
    );
    assert!(
        err.message
            .starts_with("the submit to Vertex AI was sent but its answer was lost")
            && !err.message.contains("no answer within"),
        "{err}"
    );
    assert!(!err.message.contains(ACCESS_TOKEN), "{err}");
    // Vertex AI got the complete request, exactly once (no refresh-and-retry: only a
    // 401 answer is retried): the operation may exist.
    let requests = vertex.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let request = &requests[0];
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("POST", submit_path(MODEL).as_str())
    );
    assert_eq!(
        request.header("authorization"),
        Some(format!("Bearer {ACCESS_TOKEN}").as_str())
    );
    let body: Value = serde_json::from_slice(&request.body).expect("the whole JSON body");
    assert_eq!(
        body["instances"],
        json!([{"prompt": "A neon hologram of a cat driving at top speed"}])
    );
    assert_eq!(f.token_requests().await, 1);

    // Nothing listening: refused before a byte was sent, so trying again is safe.
    let unreachable = format!("http://127.0.0.1:{}", support::closed_port());
    let f = Fixture::at(&unreachable, Duration::from_secs(30)).await;
    let err = f.submit(&text_request(f.veo.as_ref())).await.unwrap_err();
    assert_eq!(
        (err.code, err.class),
        (ErrorCode::ProviderUnavailable, RetryClass::Transient),
        "{err}"
    );
}

#[tokio::test]
async fn messages_carry_googles_text_without_the_access_token() {
    let f = Fixture::start().await;
    let echo = format!("Token {ACCESS_TOKEN} may not call this model");
    f.mount(
        "POST",
        &submit_path(MODEL),
        json_answer(400, rpc_error(400, "INVALID_ARGUMENT", &echo)),
    )
    .await;
    let err = f.submit(&text_request(f.veo.as_ref())).await.unwrap_err();
    assert_eq!(
        err.message,
        "Vertex AI refused the request (HTTP 400): INVALID_ARGUMENT: Token [REDACTED] may not call this model"
    );

    f.mount(
        "POST",
        &poll_path(MODEL),
        json_answer(
            403,
            rpc_error(
                403,
                "PERMISSION_DENIED",
                "Permission 'aiplatform.endpoints.predict' denied",
            ),
        ),
    )
    .await;
    let err = f.poll(OPERATION).await.unwrap_err();
    assert!(
        err.message
            .starts_with("Vertex AI denied the service account (HTTP 403, PERMISSION_DENIED)")
            && err
                .message
                .ends_with(": Permission 'aiplatform.endpoints.predict' denied"),
        "{err}"
    );
}

#[tokio::test]
async fn a_malformed_provider_job_id_is_refused_without_a_request() {
    let f = Fixture::start().await;
    let err = f
        .poll("projects/p/locations/l/operations/../../x")
        .await
        .unwrap_err();
    assert_eq!(
        (err.code, err.class),
        (ErrorCode::Internal, RetryClass::Permanent),
        "{err}"
    );
    assert!(f.server.received_requests().await.unwrap().is_empty());
}

// ---------------------------------------------------------------------------------------
// Access tokens: reuse, refresh margin, refresh once on 401
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn submits_and_polls_in_a_row_share_one_token() {
    let f = Fixture::start().await;
    f.mount(
        "POST",
        &submit_path(MODEL),
        json_answer(200, json!({"name": OPERATION})),
    )
    .await;
    f.mount(
        "POST",
        &poll_path(MODEL),
        json_answer(200, json!({"name": OPERATION})),
    )
    .await;
    let request = text_request(f.veo.as_ref());
    f.submit(&request).await.expect("first submit");
    f.submit(&request).await.expect("second submit");
    assert_eq!(f.poll(OPERATION).await, Ok(RemoteStatus::Queued));
    assert_eq!(f.poll(OPERATION).await, Ok(RemoteStatus::Queued));

    assert_eq!(f.token_requests().await, 1);
    let vertex: Vec<Request> = f
        .server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.url.path() != "/token")
        .collect();
    assert_eq!(vertex.len(), 4);
    for request in &vertex {
        assert_eq!(bearer(request), format!("Bearer {ACCESS_TOKEN}"));
    }
}

#[tokio::test]
async fn a_token_inside_the_refresh_margin_is_refetched() {
    // 30 s left is inside the 60 s refresh margin: every call exchanges again.
    let f = Fixture::with_tokens(google_tokens(30), Duration::from_secs(10)).await;
    f.mount(
        "POST",
        &submit_path(MODEL),
        json_answer(200, json!({"name": OPERATION})),
    )
    .await;
    let request = text_request(f.veo.as_ref());
    f.submit(&request).await.expect("first submit");
    f.submit(&request).await.expect("second submit");
    assert_eq!(f.token_requests().await, 2);
}

#[tokio::test]
async fn a_401_refreshes_the_token_once_and_retries_with_the_new_one() {
    let f = Fixture::with_tokens(SequentialTokens::new(), Duration::from_secs(10)).await;
    f.mount_once(
        "POST",
        &submit_path(MODEL),
        json_answer(
            401,
            rpc_error(
                401,
                "UNAUTHENTICATED",
                "Request had invalid authentication credentials.",
            ),
        ),
    )
    .await;
    f.mount(
        "POST",
        &submit_path(MODEL),
        json_answer(200, json!({"name": OPERATION})),
    )
    .await;
    f.mount(
        "POST",
        &poll_path(MODEL),
        json_answer(200, json!({"name": OPERATION})),
    )
    .await;

    let submitted = f
        .submit(&text_request(f.veo.as_ref()))
        .await
        .expect("submitted after a refresh");
    assert_eq!(submitted.provider_job_id, OPERATION);
    assert_eq!(f.token_requests().await, 2);
    let submits = f.requests_to(&submit_path(MODEL)).await;
    let tokens: Vec<&str> = submits.iter().map(bearer).collect();
    assert_eq!(tokens, ["Bearer ya29.token-1", "Bearer ya29.token-2"]);

    // The refreshed token is cached: the next call makes no exchange.
    assert_eq!(f.poll(OPERATION).await, Ok(RemoteStatus::Queued));
    assert_eq!(f.token_requests().await, 2);
    assert_eq!(
        bearer(&f.requests_to(&poll_path(MODEL)).await[0]),
        "Bearer ya29.token-2"
    );
}

#[tokio::test]
async fn a_second_401_is_credentials_invalid_without_a_third_try() {
    let f = Fixture::with_tokens(SequentialTokens::new(), Duration::from_secs(10)).await;
    f.mount(
        "POST",
        &submit_path(MODEL),
        json_answer(
            401,
            rpc_error(
                401,
                "UNAUTHENTICATED",
                "Request had invalid authentication credentials.",
            ),
        ),
    )
    .await;
    let err = f.submit(&text_request(f.veo.as_ref())).await.unwrap_err();
    assert_eq!(
        (err.code, err.class),
        (ErrorCode::CredentialsInvalid, RetryClass::Permanent),
        "{err}"
    );
    assert!(err.message.contains("HTTP 401, UNAUTHENTICATED"), "{err}");
    assert!(!err.message.contains("ya29."), "{err}");
    assert_eq!(f.token_requests().await, 2);
    let tokens: Vec<String> = f
        .requests_to(&submit_path(MODEL))
        .await
        .iter()
        .map(|r| bearer(r).to_owned())
        .collect();
    assert_eq!(tokens, ["Bearer ya29.token-1", "Bearer ya29.token-2"]);
}

#[tokio::test]
async fn a_401_on_a_download_refreshes_too() {
    let f = Fixture::with_tokens(SequentialTokens::new(), Duration::from_secs(10)).await;
    f.mount_once(
        "GET",
        GCS_PATH,
        json_answer(
            401,
            rpc_error(401, "UNAUTHENTICATED", "Invalid Credentials"),
        ),
    )
    .await;
    f.mount(
        "GET",
        GCS_PATH,
        ResponseTemplate::new(200).set_body_raw(vec![1u8, 2, 3], "video/mp4"),
    )
    .await;
    let video = f
        .veo
        .fetch_video(&f.credentials, &VideoOutput::Gcs(vec![GCS_URI.into()]))
        .await
        .expect("downloaded after a refresh");
    assert_eq!(video.bytes, [1, 2, 3]);
    assert_eq!(f.token_requests().await, 2);
    assert_eq!(f.requests_to(GCS_PATH).await.len(), 2);
}

// ---------------------------------------------------------------------------------------
// A job's life at the mock
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn submit_poll_until_done_and_fetch_the_inline_video() {
    let f = Fixture::start().await;
    let bytes = video_bytes();
    f.mount(
        "POST",
        &submit_path(MODEL),
        json_answer(200, json!({"name": OPERATION})),
    )
    .await;
    f.mount_once(
        "POST",
        &poll_path(MODEL),
        json_answer(200, json!({"name": OPERATION})),
    )
    .await;
    f.mount(
        "POST",
        &poll_path(MODEL),
        json_answer(200, done_inline(&bytes)),
    )
    .await;

    let submitted = f
        .submit(&text_request(f.veo.as_ref()))
        .await
        .expect("submitted");
    assert_eq!(
        f.poll(&submitted.provider_job_id).await,
        Ok(RemoteStatus::Queued)
    );
    let status = f.poll(&submitted.provider_job_id).await.expect("polled");
    let RemoteStatus::Succeeded(output, _) = status else {
        panic!("expected success, got {status:?}");
    };
    assert!(matches!(&output, VideoOutput::Inline(_)), "{output:?}");
    let video = f
        .veo
        .fetch_video(&f.credentials, &output)
        .await
        .expect("video");
    assert_eq!(video.bytes, bytes, "exactly the bytes Vertex AI sent");
    assert_eq!(video.content_type, "video/mp4");
    assert_eq!(f.token_requests().await, 1);
}

#[tokio::test]
async fn submit_poll_until_done_and_download_the_gcs_video() {
    let f = Fixture::start().await;
    let bytes = video_bytes();
    f.mount(
        "POST",
        &submit_path(MODEL),
        json_answer(200, json!({"name": OPERATION})),
    )
    .await;
    f.mount_once(
        "POST",
        &poll_path(MODEL),
        json_answer(200, json!({"name": OPERATION, "done": false})),
    )
    .await;
    f.mount(
        "POST",
        &poll_path(MODEL),
        json_answer(
            200,
            json!({"name": OPERATION, "done": true, "response": {
            "raiMediaFilteredCount": 0, "videos": [{"gcsUri": GCS_URI, "mimeType": "video/mp4"}]}}),
        ),
    )
    .await;
    Mock::given(method("GET"))
        .and(path(GCS_PATH))
        .and(query_param("alt", "media"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(bytes.clone(), "video/mp4"))
        .mount(&f.server)
        .await;

    let submitted = f
        .submit(&text_request(f.veo.as_ref()))
        .await
        .expect("submitted");
    assert_eq!(
        f.poll(&submitted.provider_job_id).await,
        Ok(RemoteStatus::Queued)
    );
    let status = f.poll(&submitted.provider_job_id).await.expect("polled");
    assert_eq!(
        status,
        RemoteStatus::Succeeded(
            VideoOutput::Gcs(vec![GCS_URI.into()]),
            byok_core::ProviderUsage::NONE
        )
    );
    let RemoteStatus::Succeeded(output, _) = status else {
        unreachable!()
    };
    let video = f
        .veo
        .fetch_video(&f.credentials, &output)
        .await
        .expect("video");
    assert_eq!(video.bytes, bytes);
    assert_eq!(f.requests_to(GCS_PATH).await.len(), 1);
}

// ---------------------------------------------------------------------------------------
// Validation through the trait
// ---------------------------------------------------------------------------------------

#[test]
fn validation_names_the_field_and_the_allowed_values() {
    let registry = support::registry("http://127.0.0.1:1");
    let veo = registry.get(ProviderId::VEO).unwrap();

    let err = veo
        .validate(&generation_request(json!({"model": MODEL, "prompt": "a cat", "resolution": "1080p", "duration_seconds": 4})))
        .unwrap_err();
    assert_eq!(err.field, "duration_seconds");
    assert_eq!(err.allowed, ["8"]);

    let err = veo
        .validate(&generation_request(
            json!({"model": "veo-2.0-generate-001", "prompt": "a cat"}),
        ))
        .unwrap_err();
    assert_eq!(err.field, "model");
    assert_eq!(
        err.allowed,
        [
            MODEL,
            FAST_MODEL,
            "veo-3.1-lite-generate-001",
            "gemini-omni-1.2-flash",
            "gemini-omni-1.1-flash-preview"
        ]
    );
}
