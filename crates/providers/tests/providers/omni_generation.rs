//! Gemini Omni through the Google adapter (`veo`), Vertex AI's Interactions API: the exact
//! requests at a mock (method, path, query, headers, body), every answer class and every
//! interaction status with its code and retry class, the create sent once, the token
//! refreshed once on a 401, the catalogue's wire data checked at start-up; then whole jobs
//! against the simulator, cancel and a throttled service account included.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use byok_core::{Catalogue, ErrorCode, RetryClass};
use byok_providers::{
    CancelOutcome, InputImage, JobError, ProviderId, Registry, RegistryError, RemoteStatus,
    SubmitRequest, ValidatedRequest, Video, VideoOutput, VideoProvider,
};
use serde_json::{Value, json};
use wiremock::ResponseTemplate;

use crate::support::FetchVideo as _;
use crate::support::GoogleFixture as Fixture;
use crate::support::{
    self, SequentialTokens, assert_class, assert_exact_headers, generation_request, google_tokens,
    json_answer, json_body, rpc_error, video_bytes,
};
use crate::veo::ACCESS_TOKEN;

const MODEL: &str = "gemini-omni-1.2-flash";
const PREVIEW_MODEL: &str = "gemini-omni-1.1-flash-preview";
const ID: &str = "ChAzN2Y4OTlhNzAwZTczMDYzEAgaATAqBG1haW4";
/// Omni runs in `global` whatever the credentials say (they say `us-central1` here).
const CREATE_PATH: &str = "/v1beta1/projects/example-project/locations/global/interactions";
const NAME: &str = "projects/example-project/locations/global/interactions/ChAzN2Y4OTlhNzAwZTczMDYzEAgaATAqBG1haW4";
const GCS_URI: &str = "gs://omni-out/jobs/42/sample_0.mp4";
const GCS_PATH: &str = "/storage/storage/v1/b/omni-out/o/jobs%2F42%2Fsample_0.mp4";

/// What a case expects: a value, or the code and retry class of an error or a failed job.
type Expected<T> = Result<T, (ErrorCode, RetryClass)>;

fn item_path() -> String {
    format!("{CREATE_PATH}/{ID}")
}

fn cancel_path() -> String {
    format!("{CREATE_PATH}/{ID}/cancel")
}

/// Gemini Omni's calls on the fixture's adapter, for the interaction `NAME`.
trait OmniCalls {
    async fn submit(
        &self,
        request: &ValidatedRequest,
        image: Option<&InputImage>,
    ) -> Result<String, JobError>;
    async fn poll(&self) -> Result<RemoteStatus, JobError>;
}

impl OmniCalls for Fixture {
    async fn submit(
        &self,
        request: &ValidatedRequest,
        image: Option<&InputImage>,
    ) -> Result<String, JobError> {
        self.veo
            .submit(&self.credentials, SubmitRequest { request, image })
            .await
            .map(|s| s.provider_job_id)
    }

    async fn poll(&self) -> Result<RemoteStatus, JobError> {
        self.veo.poll(&self.credentials, NAME).await
    }
}

fn validated(veo: &dyn VideoProvider, fields: Value) -> ValidatedRequest {
    veo.validate(&generation_request("veo", fields))
        .expect("valid request")
}

fn text_request(veo: &dyn VideoProvider) -> ValidatedRequest {
    validated(
        veo,
        json!({"model": MODEL, "prompt": "a lighthouse at dusk"}),
    )
}

fn created(status: &str) -> ResponseTemplate {
    json_answer(
        200,
        json!({"id": ID, "status": status, "model": MODEL, "created": "2026-12-03T10:00:00Z"}),
    )
}

fn completed_inline(bytes: &[u8]) -> Value {
    json!({"id": ID, "status": "completed", "steps": [
        {"type": "model_output", "content": [
            {"type": "video", "data": STANDARD.encode(bytes), "mime_type": "video/mp4"}]}],
        "usage": {"total_output_tokens": 46336}})
}

// ---------------------------------------------------------------------------------------
// Conformance: the exact requests
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn text_to_video_create_is_exactly_the_documented_request() {
    let f = Fixture::start().await;
    f.mount("POST", CREATE_PATH, created("queued")).await;
    let request = validated(
        f.veo.as_ref(),
        json!({"model": MODEL, "prompt": "A neon hologram of a cat", "duration_seconds": 12,
               "aspect_ratio": "9:16", "resolution": "1080p"}),
    );
    let name = f.submit(&request, None).await.expect("created");
    assert_eq!(name, NAME);

    let sent = f.requests_to(CREATE_PATH).await;
    assert_eq!(sent.len(), 1);
    let sent = &sent[0];
    assert_eq!(sent.method.as_str(), "POST");
    assert_eq!(sent.url.query(), None);
    assert_exact_headers(
        sent,
        &[
            ("authorization", &format!("Bearer {ACCESS_TOKEN}")),
            ("content-type", "application/json"),
            ("accept", "application/json"),
            ("content-length", &sent.body.len().to_string()),
        ],
    );
    assert_eq!(
        json_body(sent),
        json!({
            "model": MODEL, "background": true, "store": true,
            "input": [{"type": "user_input", "content": [
                {"type": "text", "text": "A neon hologram of a cat"}]}],
            "generation_config": {"video_config": {"task": "text_to_video"}},
            "response_format": {"type": "video", "duration": "12s", "aspect_ratio": "9:16",
                                "resolution": "1080p", "delivery": "inline"},
        })
    );
    assert_eq!(f.token_requests().await, 1);
}

#[tokio::test]
async fn image_to_video_sends_the_image_inline_with_its_type_and_the_defaults() {
    let f = Fixture::start().await;
    f.mount("POST", CREATE_PATH, created("queued")).await;
    let request = validated(
        f.veo.as_ref(),
        json!({"model": PREVIEW_MODEL, "prompt": "animate this", "image_url": "https://images.example/a.jpg"}),
    );
    let image = InputImage {
        bytes: b"\xff\xd8\xff\xe0 some jpeg \x00\x01".to_vec(),
        content_type: "image/jpeg".into(),
        width: 1280,
        height: 720,
    };
    f.submit(&request, Some(&image)).await.expect("created");
    let sent = f.requests_to(CREATE_PATH).await;
    assert_eq!(
        json_body(&sent[0]),
        json!({
            "model": PREVIEW_MODEL, "background": true, "store": true,
            "input": [{"type": "user_input", "content": [
                {"type": "text", "text": "animate this"},
                {"type": "image", "data": STANDARD.encode(&image.bytes), "mime_type": "image/jpeg"}]}],
            "generation_config": {"video_config": {"task": "image_to_video"}},
            "response_format": {"type": "video", "duration": "8s", "aspect_ratio": "16:9",
                                "resolution": "720p", "delivery": "inline"},
        })
    );
}

#[tokio::test]
async fn a_create_answer_echoing_a_large_input_is_read_whole() {
    let f = Fixture::start().await;
    let echoed = STANDARD.encode(vec![7u8; 3 * 1024 * 1024]);
    f.mount(
        "POST",
        CREATE_PATH,
        json_answer(
            200,
            json!({"status": "in_progress", "steps": [{"type": "user_input", "content": [
                {"type": "image", "data": echoed, "mime_type": "image/png"}]}], "id": ID}),
        ),
    )
    .await;
    let name = f.submit(&text_request(f.veo.as_ref()), None).await;
    assert_eq!(name.as_deref(), Ok(NAME));
}

#[tokio::test]
async fn poll_gets_the_interaction_without_its_input() {
    let f = Fixture::start().await;
    f.mount(
        "GET",
        &item_path(),
        json_answer(200, json!({"id": ID, "status": "in_progress"})),
    )
    .await;
    assert_eq!(f.poll().await, Ok(RemoteStatus::Running { progress: None }));
    let sent = f.requests_to(&item_path()).await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].method.as_str(), "GET");
    assert_eq!(
        sent[0].url.query(),
        Some("stream=false&include_input=false")
    );
    assert_exact_headers(
        &sent[0],
        &[
            ("authorization", &format!("Bearer {ACCESS_TOKEN}")),
            ("accept", "application/json"),
        ],
    );
    assert!(sent[0].body.is_empty());
}

#[tokio::test]
async fn cancel_posts_to_the_cancel_method_without_a_body() {
    let f = Fixture::start().await;
    f.mount(
        "POST",
        &cancel_path(),
        json_answer(200, json!({"id": ID, "status": "cancelled"})),
    )
    .await;
    assert_eq!(
        f.veo.cancel(&f.credentials, NAME).await,
        Ok(CancelOutcome::Cancelled)
    );
    let sent = f.requests_to(&cancel_path()).await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].method.as_str(), "POST");
    assert_eq!(sent[0].url.query(), None);
    assert!(sent[0].body.is_empty());
    assert_exact_headers(
        &sent[0],
        &[
            ("authorization", &format!("Bearer {ACCESS_TOKEN}")),
            ("accept", "application/json"),
            ("content-length", "0"),
        ],
    );
}

#[tokio::test]
async fn cancel_answers_map_to_an_outcome_or_a_classified_error() {
    use ErrorCode::*;
    use RetryClass::{Permanent, Transient};
    let cases: Vec<(&str, ResponseTemplate, Expected<()>)> = vec![
        (
            "404 gone",
            json_answer(404, rpc_error(404, "NOT_FOUND", "Interaction not found")),
            Ok(()),
        ),
        (
            "400 already ended",
            json_answer(400, rpc_error(400, "FAILED_PRECONDITION", "not running")),
            Ok(()),
        ),
        (
            "400 already ended (Interactions shape)",
            json_answer(
                400,
                json!({"error": {"code": "failed_precondition", "message": "not running"}}),
            ),
            Ok(()),
        ),
        (
            "409 conflict",
            json_answer(409, rpc_error(409, "ABORTED", "ended")),
            Ok(()),
        ),
        (
            "400 other",
            json_answer(400, rpc_error(400, "INVALID_ARGUMENT", "bad id")),
            Err((InvalidRequest, Permanent)),
        ),
        (
            "403",
            json_answer(403, rpc_error(403, "PERMISSION_DENIED", "denied")),
            Err((CredentialsInvalid, Permanent)),
        ),
        (
            "503",
            ResponseTemplate::new(503),
            Err((ProviderUnavailable, Transient)),
        ),
    ];
    for (what, answer, expected) in cases {
        let f = Fixture::start().await;
        f.mount("POST", &cancel_path(), answer).await;
        match (f.veo.cancel(&f.credentials, NAME).await, expected) {
            (Ok(CancelOutcome::Cancelled), Ok(())) => {}
            (Err(e), Err((code, class))) => assert_class(&e, code, class, what),
            (got, want) => panic!("{what}: got {got:?}, want {want:?}"),
        }
    }
}

#[tokio::test]
async fn a_veo_operation_still_has_no_cancel() {
    let f = Fixture::start().await;
    let operation = "projects/example-project/locations/us-central1/publishers/google/models/veo-3.1-generate-001/operations/1";
    assert_eq!(
        f.veo.cancel(&f.credentials, operation).await,
        Ok(CancelOutcome::NotSupported)
    );
    assert!(f.server.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_malformed_provider_job_id_is_refused_without_a_request() {
    let f = Fixture::start().await;
    for bad in [
        "projects/p/locations/global/interactions/../x",
        "projects/p/locations/global/interactions/a%2Fb/cancel",
    ] {
        let err = f.veo.poll(&f.credentials, bad).await.unwrap_err();
        assert_class(&err, ErrorCode::Internal, RetryClass::Permanent, bad);
    }
    assert!(f.server.received_requests().await.unwrap().is_empty());
}

// ---------------------------------------------------------------------------------------
// Every status of an interaction
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn every_interaction_status_maps_to_a_job_status() {
    use ErrorCode::*;
    use RetryClass::{Permanent, Transient};
    let bytes = video_bytes();
    // Google's words are kept, the access token in them is not.
    let failed = |code: &str| json!({"id": ID, "status": "failed", "errors": [{"code": code, "message": format!("why {ACCESS_TOKEN}")}]});
    // (what, answer, expected: Ok(status) | Err((code, class)) for a failed job or an error)
    let cases: Vec<(&str, Value, Expected<RemoteStatus>)> = vec![
        (
            "queued",
            json!({"id": ID, "status": "queued"}),
            Ok(RemoteStatus::Queued),
        ),
        (
            "in_progress",
            json!({"id": ID, "status": "in_progress"}),
            Ok(RemoteStatus::Running { progress: None }),
        ),
        (
            "idle",
            json!({"id": ID, "status": "idle"}),
            Ok(RemoteStatus::Queued),
        ),
        (
            "completed inline",
            completed_inline(&bytes),
            Ok(RemoteStatus::Succeeded(
                VideoOutput::Inline(Video {
                    bytes: bytes.clone(),
                    content_type: "video/mp4".into(),
                    note: None,
                }),
                byok_core::ProviderUsage::NONE,
            )),
        ),
        (
            "completed in Cloud Storage",
            json!({"id": ID, "status": "completed", "steps": [{"type": "model_output",
                "content": [{"type": "video", "uri": GCS_URI, "mime_type": "video/mp4"}]}]}),
            Ok(RemoteStatus::Succeeded(
                VideoOutput::Gcs(vec![GCS_URI.into()]),
                byok_core::ProviderUsage::NONE,
            )),
        ),
        (
            "cancelled",
            json!({"id": ID, "status": "cancelled"}),
            Ok(RemoteStatus::Cancelled),
        ),
        (
            "failed safety",
            failed("safety"),
            Err((ContentRejected, Permanent)),
        ),
        (
            "failed api_error",
            failed("api_error"),
            Err((ProviderUnavailable, Transient)),
        ),
        (
            "failed invalid_request",
            failed("invalid_request"),
            Err((InvalidRequest, Permanent)),
        ),
        (
            "failed, no reason",
            json!({"status": "failed"}),
            Err((ProviderUnavailable, Permanent)),
        ),
        (
            "incomplete",
            json!({"status": "incomplete"}),
            Err((ProviderUnavailable, Permanent)),
        ),
        (
            "budget_exceeded",
            json!({"status": "budget_exceeded"}),
            Err((InsufficientCredits, Permanent)),
        ),
        (
            "requires_action",
            json!({"status": "requires_action"}),
            Err((ProviderUnavailable, Permanent)),
        ),
        (
            "requires_continuation",
            json!({"status": "requires_continuation", "continuation_token": "abc"}),
            Err((ProviderUnavailable, Permanent)),
        ),
        (
            "completed with words only",
            json!({"status": "completed", "steps": [{"type": "model_output",
                "content": [{"type": "text", "text": format!("I can't make that, {ACCESS_TOKEN}.")}]}]}),
            Err((ContentRejected, Permanent)),
        ),
        (
            "completed without output (ask again)",
            json!({"status": "completed", "steps": [{"type": "user_input",
                "content": [{"type": "text", "text": "a cat"}]}]}),
            Err((ProviderUnavailable, Transient)),
        ),
        (
            "a new status",
            json!({"status": "dreaming"}),
            Err((ProviderUnavailable, Transient)),
        ),
        (
            "no status",
            json!({"id": ID}),
            Err((ProviderUnavailable, Transient)),
        ),
    ];
    for (what, answer, expected) in cases {
        let f = Fixture::start().await;
        f.mount("GET", &item_path(), json_answer(200, answer)).await;
        let got = f.poll().await;
        match (got, expected) {
            (Ok(status), Ok(want)) => assert_eq!(status, want, "{what}"),
            (Ok(RemoteStatus::Failed(e)) | Err(e), Err((code, class))) => {
                assert_class(&e, code, class, what);
                assert!(!e.message.contains(ACCESS_TOKEN), "{what}: {e}");
                if what.starts_with("failed ") && what != "failed, no reason" {
                    assert!(e.message.ends_with(": why [REDACTED]"), "{what}: {e}");
                }
            }
            (got, want) => panic!("{what}: got {got:?}, want {want:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// HTTP answers of the create and the get
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum Stage {
    Create,
    Get,
}

#[tokio::test]
async fn every_answer_class_maps_to_its_code_and_retry_class() {
    use ErrorCode::*;
    use RetryClass::{Permanent, RetryAfter, Transient};
    use Stage::{Create, Get};
    let retry_info = json!({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "Quota exceeded",
        "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "41s"}]}});
    let slow = || created("queued").set_delay(Duration::from_secs(5));
    // (what, stage, answer, calls, code, class)
    let cases: Vec<(&str, Stage, ResponseTemplate, usize, ErrorCode, RetryClass)> = vec![
        (
            "400 INVALID_ARGUMENT",
            Create,
            json_answer(
                400,
                rpc_error(400, "INVALID_ARGUMENT", "duration must be 3s to 15s"),
            ),
            1,
            InvalidRequest,
            Permanent,
        ),
        (
            "400 invalid_request (Interactions shape)",
            Create,
            json_answer(
                400,
                json!({"error": {"code": "invalid_request", "message": "bad"}}),
            ),
            1,
            InvalidRequest,
            Permanent,
        ),
        (
            "400 safety",
            Create,
            json_answer(
                400,
                json!({"error": {"code": "safety", "message": "Input blocked: safety"}}),
            ),
            1,
            ContentRejected,
            Permanent,
        ),
        (
            "401 twice",
            Create,
            json_answer(401, rpc_error(401, "UNAUTHENTICATED", "bad token")),
            2,
            CredentialsInvalid,
            Permanent,
        ),
        (
            "402 payment_required",
            Create,
            json_answer(
                402,
                json!({"error": {"code": "payment_required", "message": "no credit"}}),
            ),
            1,
            InsufficientCredits,
            Permanent,
        ),
        (
            "403 PERMISSION_DENIED",
            Create,
            json_answer(403, rpc_error(403, "PERMISSION_DENIED", "API disabled")),
            1,
            CredentialsInvalid,
            Permanent,
        ),
        (
            "404 model on create",
            Create,
            json_answer(
                404,
                rpc_error(404, "NOT_FOUND", "Publisher Model not found"),
            ),
            1,
            ModelRetired,
            Permanent,
        ),
        (
            "404 interaction on get",
            Get,
            json_answer(404, rpc_error(404, "NOT_FOUND", "Interaction not found")),
            1,
            ProviderUnavailable,
            Permanent,
        ),
        (
            "409 conflict",
            Create,
            json_answer(409, rpc_error(409, "ABORTED", "conflict")),
            1,
            ProviderUnavailable,
            Transient,
        ),
        (
            "416 out_of_range",
            Create,
            json_answer(
                416,
                json!({"error": {"code": "out_of_range", "message": "too long"}}),
            ),
            1,
            InvalidRequest,
            Permanent,
        ),
        (
            "429 RetryInfo",
            Create,
            json_answer(429, retry_info.clone()).insert_header("retry-after", "7"),
            1,
            ProviderUnavailable,
            RetryAfter(Duration::from_secs(41)),
        ),
        (
            "429 rate_limit_exceeded with Retry-After",
            Create,
            json_answer(
                429,
                json!({"error": {"code": "rate_limit_exceeded", "message": "slow down"}}),
            )
            .insert_header("retry-after", "7"),
            1,
            ProviderUnavailable,
            RetryAfter(Duration::from_secs(7)),
        ),
        (
            "429 on get",
            Get,
            json_answer(429, retry_info.clone()),
            1,
            ProviderUnavailable,
            RetryAfter(Duration::from_secs(41)),
        ),
        (
            "500",
            Create,
            ResponseTemplate::new(500),
            1,
            ProviderUnavailable,
            Transient,
        ),
        (
            "504 on create",
            Create,
            ResponseTemplate::new(504),
            1,
            SubmitOutcomeUnknown,
            Permanent,
        ),
        (
            "DEADLINE_EXCEEDED on create",
            Create,
            json_answer(
                500,
                rpc_error(500, "DEADLINE_EXCEEDED", "deadline exceeded"),
            ),
            1,
            SubmitOutcomeUnknown,
            Permanent,
        ),
        (
            "504 on get",
            Get,
            json_answer(
                504,
                rpc_error(504, "DEADLINE_EXCEEDED", "deadline exceeded"),
            ),
            1,
            ProviderUnavailable,
            Transient,
        ),
        (
            "503 on get",
            Get,
            json_answer(503, rpc_error(503, "UNAVAILABLE", "try later")),
            1,
            ProviderUnavailable,
            Transient,
        ),
        (
            "create timeout",
            Create,
            slow(),
            1,
            SubmitOutcomeUnknown,
            Permanent,
        ),
        (
            "200 garbage",
            Create,
            ResponseTemplate::new(200).set_body_string("<html>ok</html>"),
            1,
            SubmitOutcomeUnknown,
            Permanent,
        ),
        (
            "200 without id",
            Create,
            json_answer(200, json!({"status": "queued"})),
            1,
            SubmitOutcomeUnknown,
            Permanent,
        ),
        (
            "200 id that is no path segment",
            Create,
            json_answer(200, json!({"id": "../../x", "status": "queued"})),
            1,
            SubmitOutcomeUnknown,
            Permanent,
        ),
        (
            "200 unreadable on get",
            Get,
            ResponseTemplate::new(200).set_body_string("{\"status\": \"compl"),
            1,
            ProviderUnavailable,
            Transient,
        ),
    ];
    for (what, stage, answer, calls, code, class) in cases {
        let timeout = if what.ends_with("timeout") {
            Duration::from_millis(300)
        } else {
            Duration::from_secs(10)
        };
        let f = Fixture::with_tokens(google_tokens(3599), timeout).await;
        let (verb, target) = match stage {
            Create => ("POST", CREATE_PATH.to_owned()),
            Get => ("GET", item_path()),
        };
        f.mount(verb, &target, answer).await;
        let err = match stage {
            Create => f
                .submit(&text_request(f.veo.as_ref()), None)
                .await
                .map(|_| ()),
            Get => match f.poll().await {
                Ok(RemoteStatus::Failed(e)) => Err(e),
                Ok(status) => panic!("{what}: polled {status:?}"),
                Err(e) => Err(e),
            },
        }
        .expect_err(what);
        assert_class(&err, code, class, what);
        assert_eq!(f.requests_to(&target).await.len(), calls, "{what}: calls");
        assert!(!err.message.contains(ACCESS_TOKEN), "{what}: {err}");
    }
}

#[tokio::test]
async fn a_token_exchange_that_fails_sends_nothing() {
    for (answer, code, class) in [
        (
            json_answer(
                400,
                json!({"error": "invalid_grant", "error_description": "Invalid JWT Signature."}),
            ),
            ErrorCode::CredentialsInvalid,
            RetryClass::Permanent,
        ),
        (
            json_answer(503, json!({"error": "temporarily_unavailable"})),
            ErrorCode::ProviderUnavailable,
            RetryClass::Transient,
        ),
    ] {
        let f = Fixture::with_tokens(answer, Duration::from_secs(10)).await;
        f.mount("POST", CREATE_PATH, created("queued")).await;
        let err = f
            .submit(&text_request(f.veo.as_ref()), None)
            .await
            .unwrap_err();
        assert_class(&err, code, class, "token exchange");
        assert!(f.requests_to(CREATE_PATH).await.is_empty());
    }
}

#[tokio::test]
async fn messages_carry_googles_text_without_the_access_token() {
    let f = Fixture::start().await;
    let echo = format!("Token {ACCESS_TOKEN} may not call this model");
    f.mount(
        "POST",
        CREATE_PATH,
        json_answer(400, rpc_error(400, "INVALID_ARGUMENT", &echo)),
    )
    .await;
    let err = f
        .submit(&text_request(f.veo.as_ref()), None)
        .await
        .unwrap_err();
    assert_eq!(
        err.message,
        "Vertex AI refused the request (HTTP 400): INVALID_ARGUMENT: Token [REDACTED] may not call this model"
    );
}

// ---------------------------------------------------------------------------------------
// The create is sent once; a 401 refreshes the token once
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_create_cut_off_after_it_was_sent_is_outcome_unknown_and_never_resent() {
    let vertex = support::HangUpServer::start().await;
    let f = Fixture::at(&vertex.base_url, Duration::from_secs(30)).await;
    let err = f
        .submit(&text_request(f.veo.as_ref()), None)
        .await
        .unwrap_err();
    assert_class(
        &err,
        ErrorCode::SubmitOutcomeUnknown,
        RetryClass::Permanent,
        "cut",
    );
    assert!(
        err.message
            .starts_with("the submit to Vertex AI was sent but its answer was lost"),
        "{err}"
    );
    // Vertex AI got the whole create exactly once (google-genai would have sent it again).
    let requests = vertex.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(
        (requests[0].method.as_str(), requests[0].path.as_str()),
        ("POST", CREATE_PATH)
    );
    let body: Value = serde_json::from_slice(&requests[0].body).expect("the whole body");
    assert_eq!(body["model"], MODEL);

    // Nothing listening: refused before a byte was sent, so trying again is safe.
    let unreachable = format!("http://127.0.0.1:{}", support::closed_port());
    let f = Fixture::at(&unreachable, Duration::from_secs(30)).await;
    let err = f
        .submit(&text_request(f.veo.as_ref()), None)
        .await
        .unwrap_err();
    assert_class(
        &err,
        ErrorCode::ProviderUnavailable,
        RetryClass::Transient,
        "refused",
    );
}

#[tokio::test]
async fn a_401_refreshes_the_token_once_and_creates_with_the_new_one() {
    let f = Fixture::with_tokens(SequentialTokens::new(), Duration::from_secs(10)).await;
    f.mount_once(
        "POST",
        CREATE_PATH,
        json_answer(401, rpc_error(401, "UNAUTHENTICATED", "expired")),
    )
    .await;
    f.mount("POST", CREATE_PATH, created("queued")).await;
    f.mount(
        "GET",
        &item_path(),
        json_answer(200, json!({"status": "queued"})),
    )
    .await;
    assert_eq!(
        f.submit(&text_request(f.veo.as_ref()), None)
            .await
            .as_deref(),
        Ok(NAME)
    );
    let bearers: Vec<String> = f
        .requests_to(CREATE_PATH)
        .await
        .iter()
        .map(|r| r.headers["authorization"].to_str().unwrap().to_owned())
        .collect();
    assert_eq!(bearers, ["Bearer ya29.token-1", "Bearer ya29.token-2"]);
    // The refreshed token is cached for the poll.
    assert_eq!(f.poll().await, Ok(RemoteStatus::Queued));
    assert_eq!(f.token_requests().await, 2);
}

// ---------------------------------------------------------------------------------------
// A job's life at the mock
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn create_poll_until_completed_and_keep_the_inline_video() {
    let f = Fixture::start().await;
    let bytes = video_bytes();
    f.mount("POST", CREATE_PATH, created("queued")).await;
    f.mount_once(
        "GET",
        &item_path(),
        json_answer(200, json!({"id": ID, "status": "in_progress"})),
    )
    .await;
    f.mount(
        "GET",
        &item_path(),
        json_answer(200, completed_inline(&bytes)),
    )
    .await;
    let name = f.submit(&text_request(f.veo.as_ref()), None).await.unwrap();
    assert_eq!(f.poll().await, Ok(RemoteStatus::Running { progress: None }));
    let Ok(RemoteStatus::Succeeded(output, _)) = f.veo.poll(&f.credentials, &name).await else {
        panic!("expected a video")
    };
    let video = f.veo.fetch_video(&f.credentials, &output).await.unwrap();
    assert_eq!(video.bytes, bytes, "exactly the bytes Vertex AI sent");
    assert_eq!(video.content_type, "video/mp4");
}

#[tokio::test]
async fn a_gcs_output_is_downloaded_with_the_service_account() {
    let f = Fixture::start().await;
    let bytes = video_bytes();
    f.mount(
        "GET",
        &item_path(),
        json_answer(
            200,
            json!({"id": ID, "status": "completed", "steps": [{"type": "model_output",
                "content": [{"type": "video", "uri": GCS_URI, "mime_type": "video/mp4"}]}]}),
        ),
    )
    .await;
    f.mount(
        "GET",
        GCS_PATH,
        ResponseTemplate::new(200).set_body_raw(bytes.clone(), "video/mp4"),
    )
    .await;
    let Ok(RemoteStatus::Succeeded(output, _)) = f.poll().await else {
        panic!("expected a video")
    };
    let video = f.veo.fetch_video(&f.credentials, &output).await.unwrap();
    assert_eq!(video.bytes, bytes);
    let sent = f.requests_to(GCS_PATH).await;
    assert_eq!(sent[0].url.query(), Some("alt=media"));
    assert_eq!(
        sent[0].headers["authorization"],
        format!("Bearer {ACCESS_TOKEN}").as_str()
    );
}

// ---------------------------------------------------------------------------------------
// The catalogue
// ---------------------------------------------------------------------------------------

#[test]
fn validation_refuses_what_is_not_sent() {
    let registry = support::registry("http://127.0.0.1:1");
    let veo = registry.get(ProviderId::VEO).unwrap();
    let refused = |fields: Value| {
        veo.validate(&generation_request("veo", fields))
            .expect_err("refused")
    };
    let base = |extra: Value| {
        let mut fields = json!({"model": MODEL, "prompt": "a cat"});
        for (k, v) in extra.as_object().unwrap() {
            fields[k] = v.clone();
        }
        fields
    };
    assert_eq!(
        refused(base(json!({"negative_prompt": "blur"}))).field,
        "negative_prompt"
    );
    assert_eq!(refused(base(json!({"seed": 7}))).field, "seed");
    assert_eq!(
        refused(base(json!({"duration_seconds": 2}))).field,
        "duration_seconds"
    );
    assert_eq!(
        refused(base(json!({"duration_seconds": 16}))).field,
        "duration_seconds"
    );
    assert_eq!(
        refused(base(json!({"aspect_ratio": "1:1"}))).field,
        "aspect_ratio"
    );
    let preview =
        refused(json!({"model": PREVIEW_MODEL, "prompt": "a cat", "duration_seconds": 12}));
    assert_eq!(preview.field, "duration_seconds");
    assert_eq!(
        refused(json!({"model": MODEL, "image_url": "https://e.com/a.png"})).field,
        "prompt"
    );
    // What it takes.
    for fields in [
        base(json!({"duration_seconds": 3, "resolution": "360p"})),
        base(json!({"duration_seconds": 15, "aspect_ratio": "9:16", "resolution": "4k"})),
        base(json!({"image_url": "https://e.com/a.png"})),
    ] {
        veo.validate(&generation_request("veo", fields.clone()))
            .unwrap_or_else(|e| panic!("{fields}: {e}"));
    }
    let ids: Vec<&str> = veo
        .catalogue()
        .models
        .iter()
        .map(|m| m.id.as_str())
        .collect();
    assert_eq!(
        ids,
        [
            "veo-3.1-generate-001",
            "veo-3.1-fast-generate-001",
            "veo-3.1-lite-generate-001",
            MODEL,
            PREVIEW_MODEL
        ]
    );
}

/// A change to a catalogue entry.
type Change = Box<dyn Fn(&mut Value)>;

/// The built-in catalogue with `change` applied to the `gemini-omni-1.2-flash` entry.
fn catalogue_with(change: impl Fn(&mut Value)) -> Catalogue {
    let registry = support::registry("http://127.0.0.1:1");
    let mut catalogue =
        serde_json::to_value(registry.get(ProviderId::VEO).unwrap().catalogue()).unwrap();
    // `wire` is not serialised (listings never show it): put back the built-in one.
    for model in catalogue["models"].as_array_mut().unwrap() {
        if model["id"] == MODEL {
            model["wire"] = json!({"api": "interactions", "location": "global",
                                   "tasks": ["text_to_video", "image_to_video"]});
            change(model);
        }
    }
    serde_json::from_value(catalogue).unwrap()
}

#[test]
fn wire_data_is_checked_when_the_registry_is_built() {
    let build = |catalogue: Catalogue| {
        let mut options = support::options("http://127.0.0.1:1", true, Duration::from_secs(1));
        options.provider_mut(ProviderId::VEO).unwrap().models = Some(catalogue);
        Registry::new(&options)
    };
    assert!(build(catalogue_with(|_| {})).is_ok());
    let cases: Vec<(&str, Change)> = vec![
        (
            "wire: unknown field `fal_app`",
            Box::new(|m| m["wire"]["fal_app"] = json!("x")),
        ),
        (
            "wire: unknown variant `rest`",
            Box::new(|m| m["wire"]["api"] = json!("rest")),
        ),
        (
            "wire.location",
            Box::new(|m| m["wire"]["location"] = json!("Global!")),
        ),
        (
            "wire.tasks must list",
            Box::new(|m| m["wire"]["tasks"] = json!([])),
        ),
        (
            "wire.tasks has no `image_to_video`",
            Box::new(|m| m["wire"]["tasks"] = json!(["text_to_video", "extend"])),
        ),
        (
            "negative_prompt and seed_max",
            Box::new(|m| m["seed_max"] = json!(100)),
        ),
        (
            "wire.location is only for models with wire.api = \"interactions\"",
            Box::new(|m| m["wire"] = json!({"location": "global"})),
        ),
    ];
    for (expected, change) in cases {
        match build(catalogue_with(change)) {
            Err(RegistryError::BadCatalogue { provider, reason }) => {
                assert_eq!(provider, ProviderId::VEO);
                assert!(
                    reason.starts_with(&format!("model `{MODEL}`: ")) && reason.contains(expected),
                    "{expected}: {reason}"
                );
            }
            other => panic!("{expected}: {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Against the simulator
// ---------------------------------------------------------------------------------------

mod at_the_simulator {
    use std::time::Duration;

    use byok_core::{ErrorCode, RetryClass};
    use byok_providers::{CancelOutcome, Credentials, ProviderId, RemoteStatus, VideoProvider};
    use byok_sim::RunningSim;
    use serde_json::json;

    use crate::sim_lifecycle::{poll_to_end, registry, service_account_credentials, sim, submit};
    use crate::support::FetchVideo as _;
    use crate::support::input_png;

    /// Credentials of a new account of `sim-project`, naming a regional location: Omni's
    /// calls go to `global` all the same.
    fn omni_credentials(
        sim: &RunningSim,
        adapter: &dyn VideoProvider,
        account_id: Option<&str>,
    ) -> Credentials {
        service_account_credentials(sim, adapter, account_id, "europe-west4")
    }

    #[tokio::test]
    async fn text_and_image_jobs_run_to_video_bytes() {
        let sim = sim(Duration::from_millis(200)).await;
        let registry = registry(&sim);
        let veo = registry.get(ProviderId::VEO).unwrap();
        let creds = omni_credentials(&sim, &*veo, None);
        // A 1280x720 PNG: the create answer echoes it, far past 64 KiB.
        let image = input_png(1280, 720);
        for (fields, image) in [
            (
                json!({"model": "gemini-omni-1.2-flash", "prompt": "waves on a rocky shore",
                       "duration_seconds": 12, "resolution": "1080p"}),
                None,
            ),
            (
                json!({"model": "gemini-omni-1.1-flash-preview", "prompt": "animate this",
                       "image_url": "https://example.com/a.png", "aspect_ratio": "9:16"}),
                Some(&image),
            ),
        ] {
            let id = submit(&*veo, &creds, fields.clone(), image)
                .await
                .unwrap_or_else(|e| panic!("{fields}: {e}"));
            assert!(
                id.starts_with("projects/sim-project/locations/global/interactions/"),
                "{id}"
            );
            let (status, _) = poll_to_end(&*veo, &creds, &id).await;
            let RemoteStatus::Succeeded(output, _) = status else {
                panic!("{fields}: {status:?}")
            };
            let video = veo.fetch_video(&creds, &output).await.unwrap();
            assert_eq!(&video.bytes[4..8], b"ftyp");
            assert_eq!(video.content_type, "video/mp4");
        }
        let stats = sim.stats().await;
        assert_eq!(stats.vertex.totals.accepted, 2);
        assert_eq!(stats.vertex.totals.rejected, 0, "every create was accepted");
    }

    #[tokio::test]
    async fn cancel_stops_a_running_interaction() {
        let sim = sim(Duration::from_secs(30)).await;
        let registry = registry(&sim);
        let veo = registry.get(ProviderId::VEO).unwrap();
        let creds = omni_credentials(&sim, &*veo, None);
        let id = submit(
            &*veo,
            &creds,
            json!({"model": "gemini-omni-1.2-flash", "prompt": "a slow pan"}),
            None,
        )
        .await
        .unwrap();
        assert_eq!(veo.cancel(&creds, &id).await, Ok(CancelOutcome::Cancelled));
        assert_eq!(veo.poll(&creds, &id).await, Ok(RemoteStatus::Cancelled));
        // A second cancel finds it ended: still cancelled, not an error to retry.
        assert_eq!(veo.cancel(&creds, &id).await, Ok(CancelOutcome::Cancelled));
        assert_eq!(sim.stats().await.vertex.totals.cancels, 2);
    }

    #[tokio::test]
    async fn moderation_failures_and_a_throttled_account_are_classified() {
        let sim = sim(Duration::ZERO).await;
        let registry = registry(&sim);
        let veo = registry.get(ProviderId::VEO).unwrap();
        let omni = json!({"model": "gemini-omni-1.2-flash", "prompt": "a cat"});

        let creds = omni_credentials(&sim, &*veo, None);
        let id = submit(
            &*veo,
            &creds,
            json!({"model": "gemini-omni-1.2-flash", "prompt": "please sim:moderate this"}),
            None,
        )
        .await
        .unwrap();
        let (status, _) = poll_to_end(&*veo, &creds, &id).await;
        let RemoteStatus::Failed(error) = status else {
            panic!("{status:?}")
        };
        assert_eq!(
            (error.code, error.class),
            (ErrorCode::ContentRejected, RetryClass::Permanent),
            "{error}"
        );

        let throttled = omni_credentials(&sim, &*veo, Some("sim-throttled-omni"));
        let error = submit(&*veo, &throttled, omni.clone(), None)
            .await
            .unwrap_err();
        assert_eq!(
            (error.code, error.class),
            (
                ErrorCode::ProviderUnavailable,
                RetryClass::RetryAfter(Duration::from_secs(2))
            ),
            "{error}"
        );
        // Nothing was re-sent by the adapter; the next submit is the worker's.
        let email = "sim-throttled-omni@sim-project.iam.gserviceaccount.com";
        let stats = sim.stats().await;
        let key = &stats.vertex.keys[email];
        assert_eq!((key.counters.submits, key.counters.throttled), (1, 1));
        submit(&*veo, &throttled, omni, None)
            .await
            .expect("second try");
    }
}
