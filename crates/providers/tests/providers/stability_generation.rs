//! Stability AI's generation half: multipart `POST /v2beta/image-to-video` with the
//! input image fitted to 1024x576, 576x1024 or 768x768, `GET …/result/{id}` (202, then
//! 200 with the MP4), no cancel. Requests are asserted exactly (the multipart body is
//! parsed by the test); every answer class of docs/provider-protocols.md §2.4, §2.5 and §6
//! is mapped.

use std::time::{Duration, SystemTime};

use byok_core::{ErrorCode, RetryClass};
use byok_providers::{
    CancelOutcome, InputImage, JobError, ProviderId, Registry, RemoteStatus, Submitted, Video,
    VideoOutput,
};
use image::{GenericImageView, ImageFormat, Rgb, RgbImage};
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::FetchVideo as _;
use crate::support::{
    self, Adapter, FormPart, STABILITY_KEY, adapter,
    assert_a_cut_submit_is_outcome_unknown_but_a_refused_one_is_not,
    assert_a_timed_out_submit_is_outcome_unknown, assert_class, assert_exact_headers,
    assert_no_requests, fake_mp4, generation_request, input_png, only_request, parse_multipart,
    registry, strict_registry, validate_and_submit,
};

const GENERATION_ID: &str = "a6dc6c6e20acda010fe14d71f180658f2896ed9b4ec25aa99a6ff06c796987c4";
const SUBMIT_PATH: &str = "/v2beta/image-to-video";

fn stability(registry: &Registry, organization: Option<&str>) -> Adapter {
    let mut raw = json!({"api_key": STABILITY_KEY});
    if let Some(org) = organization {
        raw["organization_id"] = org.into();
    }
    adapter(registry, ProviderId::STABILITY, &raw)
}

async fn submit(
    registry: &Registry,
    organization: Option<&str>,
    fields: Value,
    image: &InputImage,
) -> Result<Submitted, JobError> {
    let (stability, credentials) = stability(registry, organization);
    let mut fields = fields;
    fields["model"] = "stable-video-diffusion".into();
    fields["image_url"] = "https://images.example/a.png".into();
    validate_and_submit(stability.as_ref(), &credentials, fields, Some(image)).await
}

async fn accepting_server() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(SUBMIT_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": GENERATION_ID})))
        .mount(&server)
        .await;
    server
}

/// The parts of the one submit the server received.
async fn sent_parts(server: &MockServer) -> (wiremock::Request, Vec<FormPart>) {
    let request = only_request(server).await;
    let content_type = request
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .expect("content type")
        .to_owned();
    let parts = parse_multipart(&content_type, &request.body);
    (request, parts)
}

fn image_part(parts: &[FormPart]) -> &FormPart {
    let images: Vec<&FormPart> = parts.iter().filter(|p| p.name == "image").collect();
    assert_eq!(images.len(), 1, "exactly one image part");
    images[0]
}

fn png_dimensions(bytes: &[u8]) -> (u32, u32) {
    assert_eq!(
        image::guess_format(bytes).expect("format"),
        ImageFormat::Png
    );
    image::load_from_memory_with_format(bytes, ImageFormat::Png)
        .expect("a PNG")
        .dimensions()
}

// ---------------------------------------------------------------------------------------
// Conformance.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn submit_sends_a_multipart_form_with_the_fitted_image_and_the_seed() {
    let server = accepting_server().await;
    let submitted = submit(
        &registry(&server.uri()),
        Some("org-123"),
        json!({"seed": 42}),
        &input_png(1920, 1080),
    )
    .await
    .expect("submitted");
    assert_eq!(submitted.provider_job_id, GENERATION_ID);

    let (request, parts) = sent_parts(&server).await;
    assert_eq!(request.method.as_str(), "POST");
    assert_eq!(request.url.path(), SUBMIT_PATH);
    assert_eq!(request.url.query(), None);
    let content_type = request
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert_exact_headers(
        &request,
        &[
            ("authorization", &format!("Bearer {STABILITY_KEY}")),
            ("accept", "application/json"),
            ("organization", "org-123"),
            ("content-type", content_type),
            ("content-length", &request.body.len().to_string()),
        ],
    );
    assert!(
        content_type.starts_with("multipart/form-data; boundary="),
        "{content_type}"
    );

    // Exactly two parts: the image file and the seed as text. cfg_scale and
    // motion_bucket_id are left to the provider's defaults.
    let names: Vec<&str> = parts.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["image", "seed"]);
    let image = image_part(&parts);
    assert_eq!(image.filename.as_deref(), Some("image.png"));
    assert_eq!(image.content_type.as_deref(), Some("image/png"));
    assert_eq!(png_dimensions(&image.data), (1024, 576));
    let seed = &parts[1];
    assert_eq!(seed.filename, None);
    assert_eq!(seed.content_type, None);
    assert_eq!(seed.data, b"42");
}

#[tokio::test]
async fn no_seed_no_organization_no_part_no_header() {
    let server = accepting_server().await;
    submit(
        &registry(&server.uri()),
        None,
        json!({}),
        &input_png(768, 768),
    )
    .await
    .expect("submitted");
    let (request, parts) = sent_parts(&server).await;
    assert_eq!(parts.len(), 1);
    assert_eq!(parts[0].name, "image");
    assert!(request.headers.get("organization").is_none());
}

#[tokio::test]
async fn images_are_fitted_to_the_nearest_size_or_the_requested_one() {
    let cases = [
        ((1920, 1080), json!({}), (1024, 576)),
        ((1080, 1920), json!({}), (576, 1024)),
        ((1000, 1000), json!({}), (768, 768)),
        ((1024, 576), json!({}), (1024, 576)),
        ((640, 480), json!({}), (768, 768)), // 4:3 is nearer 1:1 than 16:9
        ((300, 900), json!({}), (576, 1024)),
        // A requested aspect ratio overrides the nearest choice.
        ((1920, 1080), json!({"aspect_ratio": "1:1"}), (768, 768)),
        ((1000, 1000), json!({"aspect_ratio": "9:16"}), (576, 1024)),
        ((1080, 1920), json!({"aspect_ratio": "16:9"}), (1024, 576)),
    ];
    for ((width, height), fields, expected) in cases {
        let server = accepting_server().await;
        submit(
            &registry(&server.uri()),
            None,
            fields.clone(),
            &input_png(width, height),
        )
        .await
        .unwrap_or_else(|e| panic!("{width}x{height} {fields}: {e}"));
        let (_, parts) = sent_parts(&server).await;
        assert_eq!(
            png_dimensions(&image_part(&parts).data),
            expected,
            "{width}x{height} {fields}"
        );
    }
}

#[tokio::test]
async fn fitting_scales_to_cover_and_crops_the_center() {
    // 2048x576: red outer quarters, green middle half. Covering 1024x576 needs no
    // scaling (576 high), so the crop keeps exactly the green middle.
    let striped = RgbImage::from_fn(2048, 576, |x, _| {
        if (512..1536).contains(&x) {
            Rgb([0, 255, 0])
        } else {
            Rgb([255, 0, 0])
        }
    });
    let mut bytes = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(striped)
        .write_to(&mut bytes, ImageFormat::Jpeg)
        .expect("encode");
    let input = InputImage {
        bytes: bytes.into_inner(),
        content_type: "image/jpeg".into(),
        width: 2048,
        height: 576,
    };
    let server = accepting_server().await;
    submit(&registry(&server.uri()), None, json!({}), &input)
        .await
        .expect("submitted");
    let (_, parts) = sent_parts(&server).await;
    let fitted = image::load_from_memory(&image_part(&parts).data)
        .expect("png")
        .to_rgb8();
    assert_eq!(fitted.dimensions(), (1024, 576));
    for (x, y) in [(2, 2), (1021, 2), (512, 288), (2, 573), (1021, 573)] {
        let Rgb([r, g, _]) = *fitted.get_pixel(x, y);
        assert!(
            g > 200 && r < 60,
            "pixel {x},{y} = {r},{g}: the red edges must be cropped away"
        );
    }
}

#[tokio::test]
async fn unusable_images_are_invalid_requests_and_nothing_is_sent() {
    let server = MockServer::start().await;
    let not_an_image = InputImage {
        bytes: b"%PDF-1.7 not an image".to_vec(),
        content_type: "image/png".into(),
        width: 100,
        height: 100,
    };
    let mut huge = input_png(8, 8);
    huge.width = 10_000;
    huge.height = 5_000;
    for (case, image) in [("not an image", not_an_image), ("over 40 MP", huge)] {
        let err = submit(&registry(&server.uri()), None, json!({}), &image)
            .await
            .expect_err(case);
        assert_class(&err, ErrorCode::InvalidRequest, RetryClass::Permanent, case);
    }
    assert_no_requests(&server).await;
}

// ---------------------------------------------------------------------------------------
// Poll.
// ---------------------------------------------------------------------------------------

async fn poll_answered_with(
    response: ResponseTemplate,
) -> (Result<RemoteStatus, JobError>, MockServer) {
    let at = format!("/v2beta/image-to-video/result/{GENERATION_ID}");
    support::poll_answered_with(|r| stability(r, None), &at, GENERATION_ID, response).await
}

#[tokio::test]
async fn poll_sends_exactly_the_documented_request() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!(
            "/v2beta/image-to-video/result/{GENERATION_ID}"
        )))
        .respond_with(
            ResponseTemplate::new(202)
                .set_body_json(json!({"id": GENERATION_ID, "status": "in-progress"})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let registry = registry(&server.uri());
    let (stability, credentials) = stability(&registry, Some("org-9"));
    assert_eq!(
        stability.poll(&credentials, GENERATION_ID).await,
        Ok(RemoteStatus::Running { progress: None })
    );
    let request = only_request(&server).await;
    assert_eq!(request.method.as_str(), "GET");
    assert!(request.body.is_empty());
    assert_exact_headers(
        &request,
        &[
            ("authorization", &format!("Bearer {STABILITY_KEY}")),
            ("accept", "video/*"),
            ("organization", "org-9"),
        ],
    );
}

#[tokio::test]
async fn finished_results_carry_the_video_and_the_finish_reason() {
    let mp4 = fake_mp4(5000);
    let video = |note: Option<&str>| {
        Ok(RemoteStatus::Succeeded(
            VideoOutput::Inline(Video {
                bytes: mp4.clone(),
                content_type: "video/mp4".into(),
                note: note.map(str::to_owned),
            }),
            byok_core::ProviderUsage::NONE,
        ))
    };
    let b64 = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(&mp4)
    };
    let cases: Vec<(&str, ResponseTemplate, Result<RemoteStatus, JobError>)> = vec![
        (
            "success",
            ResponseTemplate::new(200)
                .set_body_raw(mp4.clone(), "video/mp4")
                .insert_header("finish-reason", "SUCCESS")
                .insert_header("seed", "343940597"),
            video(None),
        ),
        // A success with blurred frames, and charged: a video with a note.
        (
            "filtered",
            ResponseTemplate::new(200)
                .set_body_raw(mp4.clone(), "video/mp4")
                .insert_header("finish-reason", "CONTENT_FILTERED"),
            video(Some("CONTENT_FILTERED")),
        ),
        (
            "no reason",
            ResponseTemplate::new(200).set_body_raw(mp4.clone(), "video/mp4"),
            video(None),
        ),
        (
            "json form",
            ResponseTemplate::new(200).set_body_raw(
                serde_json::to_vec(
                    &json!({"video": b64, "finish_reason": "CONTENT_FILTERED", "seed": 1}),
                )
                .expect("json"),
                "application/json; type=video/mp4",
            ),
            video(Some("CONTENT_FILTERED")),
        ),
    ];
    for (case, response, expected) in cases {
        assert_eq!(poll_answered_with(response).await.0, expected, "{case}");
    }
}

#[tokio::test]
async fn poll_errors_are_classified() {
    use ErrorCode::*;
    use RetryClass::*;
    let cases: Vec<(&str, ResponseTemplate, ErrorCode, RetryClass)> = vec![
        (
            "404 expired or other key",
            ResponseTemplate::new(404)
                .set_body_json(json!({"name": "not_found", "errors": ["not found"]})),
            ProviderUnavailable,
            Permanent,
        ),
        (
            "401",
            ResponseTemplate::new(401)
                .set_body_json(json!({"name": "unauthorized", "errors": ["bad key"]})),
            CredentialsInvalid,
            Permanent,
        ),
        (
            "429",
            ResponseTemplate::new(429),
            ProviderUnavailable,
            RetryAfter(Duration::from_secs(60)),
        ),
        (
            "500",
            ResponseTemplate::new(500)
                .set_body_json(json!({"name": "internal_error", "errors": ["oops"]})),
            ProviderUnavailable,
            Transient,
        ),
        (
            "200 html",
            ResponseTemplate::new(200).set_body_raw("<html>", "text/html"),
            ProviderUnavailable,
            Permanent,
        ),
        (
            "200 empty",
            ResponseTemplate::new(200).set_body_raw(Vec::new(), "video/mp4"),
            ProviderUnavailable,
            Transient,
        ),
        (
            "200 json without video",
            ResponseTemplate::new(200).set_body_json(json!({"finish_reason": "SUCCESS"})),
            ProviderUnavailable,
            Transient,
        ),
    ];
    for (case, response, code, class) in cases {
        let err = poll_answered_with(response).await.0.expect_err(case);
        assert_class(&err, code, class, case);
    }
}

// ---------------------------------------------------------------------------------------
// Submit answers: the §6 matrix for Stability.
// ---------------------------------------------------------------------------------------

async fn submit_answered_with(response: ResponseTemplate) -> Result<Submitted, JobError> {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(SUBMIT_PATH))
        .respond_with(response)
        .mount(&server)
        .await;
    submit(
        &registry(&server.uri()),
        None,
        json!({}),
        &input_png(64, 36),
    )
    .await
}

fn v2_error(name: &str, errors: &[&str]) -> Value {
    json!({"id": "a1b2c3", "name": name, "errors": errors})
}

#[tokio::test]
async fn submit_answers_are_classified() {
    use ErrorCode::*;
    use RetryClass::*;
    let cases: Vec<(&str, ResponseTemplate, ErrorCode, RetryClass, &str)> = vec![
        (
            "bad key",
            ResponseTemplate::new(401)
                .set_body_json(v2_error("unauthorized", &["Incorrect API key"])),
            CredentialsInvalid,
            Permanent,
            "Stability AI rejected the key (HTTP 401): Incorrect API key",
        ),
        (
            "validation 400",
            ResponseTemplate::new(400).set_body_json(v2_error(
                "bad_request",
                &["image: is required", "seed: too big"],
            )),
            InvalidRequest,
            Permanent,
            "image: is required; seed: too big",
        ),
        (
            "validation 422",
            ResponseTemplate::new(422)
                .set_body_json(v2_error("invalid_dimensions", &["image: must be 1024x576"])),
            InvalidRequest,
            Permanent,
            "image: must be 1024x576",
        ),
        (
            "too large",
            ResponseTemplate::new(413),
            InvalidRequest,
            Permanent,
            "HTTP 413",
        ),
        (
            "no credits",
            ResponseTemplate::new(402).set_body_json(v2_error(
                "payment_required",
                &["You lack sufficient credits"],
            )),
            InsufficientCredits,
            Permanent,
            "You lack sufficient credits",
        ),
        (
            "moderation",
            ResponseTemplate::new(403).set_body_json(v2_error(
                "content_moderation",
                &["Your request was flagged by our content moderation system"],
            )),
            ContentRejected,
            Permanent,
            "flagged by our content moderation system",
        ),
        (
            "403 other",
            ResponseTemplate::new(403).set_body_json(v2_error("forbidden", &["no access"])),
            CredentialsInvalid,
            Permanent,
            "no access",
        ),
        (
            "retired 404",
            ResponseTemplate::new(404),
            ModelRetired,
            Permanent,
            "HTTP 404",
        ),
        (
            "retired 410",
            ResponseTemplate::new(410),
            ModelRetired,
            Permanent,
            "HTTP 410",
        ),
        (
            "rate limit, no header",
            ResponseTemplate::new(429).set_body_json(v2_error(
                "rate_limit_exceeded",
                &["You have made more than 150 requests in 10 seconds"],
            )),
            ProviderUnavailable,
            RetryAfter(Duration::from_secs(60)),
            "150 requests",
        ),
        (
            "rate limit retry-after-ms",
            ResponseTemplate::new(429).insert_header("retry-after-ms", "2500"),
            ProviderUnavailable,
            RetryAfter(Duration::from_millis(2500)),
            "HTTP 429",
        ),
        (
            "rate limit retry-after",
            ResponseTemplate::new(429).insert_header("retry-after", "30"),
            ProviderUnavailable,
            RetryAfter(Duration::from_secs(30)),
            "HTTP 429",
        ),
        (
            "500",
            ResponseTemplate::new(500),
            ProviderUnavailable,
            Transient,
            "HTTP 500",
        ),
        (
            "503",
            ResponseTemplate::new(503),
            ProviderUnavailable,
            Transient,
            "HTTP 503",
        ),
        (
            "200 without id",
            ResponseTemplate::new(200).set_body_json(json!({"status": "ok"})),
            SubmitOutcomeUnknown,
            Permanent,
            "no generation id",
        ),
        (
            "200 not json",
            ResponseTemplate::new(200).set_body_string("<html>"),
            SubmitOutcomeUnknown,
            Permanent,
            "no generation id",
        ),
    ];
    for (case, response, code, class, text) in cases {
        let err = submit_answered_with(response).await.expect_err(case);
        assert_class(&err, code, class, case);
        assert!(err.message.contains(text), "{case}: {}", err.message);
    }

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

    // The key never appears, even when echoed.
    let err = submit_answered_with(
        ResponseTemplate::new(400)
            .set_body_json(v2_error("bad_request", &[&format!("bad {STABILITY_KEY}")])),
    )
    .await
    .expect_err("400");
    assert!(
        !err.message.contains(STABILITY_KEY) && err.message.contains("[REDACTED]"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn a_submit_whose_answer_is_lost_is_never_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(SUBMIT_PATH))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"id": GENERATION_ID}))
                .set_delay(Duration::from_secs(10)),
        )
        .mount(&server)
        .await;
    assert_a_timed_out_submit_is_outcome_unknown(&server, async |registry| {
        submit(registry, None, json!({}), &input_png(64, 36)).await
    })
    .await;
}

#[tokio::test]
async fn a_submit_cut_off_after_it_was_sent_is_outcome_unknown_but_a_refused_one_is_not() {
    let request = assert_a_cut_submit_is_outcome_unknown_but_a_refused_one_is_not(
        "Stability AI",
        STABILITY_KEY,
        async |registry| submit(registry, None, json!({"seed": 7}), &input_png(64, 36)).await,
    )
    .await;
    // Stability got the complete form: the generation may exist.
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("POST", SUBMIT_PATH)
    );
    let parts = parse_multipart(
        request.header("content-type").expect("content type"),
        &request.body,
    );
    let names: Vec<&str> = parts.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["image", "seed"]);
    assert_eq!(png_dimensions(&image_part(&parts).data), (1024, 576));
}

// ---------------------------------------------------------------------------------------
// Cancel, lifecycle, validation.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn cancel_is_not_supported_and_sends_nothing() {
    let server = MockServer::start().await;
    let registry = registry(&server.uri());
    let (stability, credentials) = stability(&registry, None);
    assert_eq!(
        stability.cancel(&credentials, GENERATION_ID).await,
        Ok(CancelOutcome::NotSupported)
    );
    assert_no_requests(&server).await;
}

#[tokio::test]
async fn submit_poll_succeed_and_fetch_the_inline_video() {
    let server = accepting_server().await;
    let mp4 = fake_mp4(20_000);
    let result_path = format!("/v2beta/image-to-video/result/{GENERATION_ID}");
    Mock::given(method("GET"))
        .and(path(result_path.as_str()))
        .respond_with(
            ResponseTemplate::new(202)
                .set_body_json(json!({"id": GENERATION_ID, "status": "in-progress"})),
        )
        .up_to_n_times(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(result_path.as_str()))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_raw(mp4.clone(), "video/mp4")
                .insert_header("finish-reason", "SUCCESS"),
        )
        .mount(&server)
        .await;

    let registry = registry(&server.uri());
    let (stability, credentials) = stability(&registry, None);
    let submitted = submit(&registry, None, json!({"seed": 5}), &input_png(1280, 720))
        .await
        .expect("submitted");
    let id = submitted.provider_job_id;
    for _ in 0..2 {
        assert_eq!(
            stability.poll(&credentials, &id).await,
            Ok(RemoteStatus::Running { progress: None })
        );
    }
    let RemoteStatus::Succeeded(output, _) = stability.poll(&credentials, &id).await.expect("done")
    else {
        panic!("not succeeded")
    };
    let video = stability
        .fetch_video(&credentials, &output)
        .await
        .expect("inline");
    assert_eq!(video.bytes, mp4);
    assert_eq!(video.content_type, "video/mp4");
    assert_eq!(video.note, None);
    // Nothing is downloaded: the poll carried the video.
    assert_eq!(server.received_requests().await.expect("recorded").len(), 4);
}

#[test]
fn validate_checks_the_catalogue() {
    let registry = strict_registry();
    let stability = registry.get(ProviderId::STABILITY).unwrap();
    let base =
        json!({"model": "stable-video-diffusion", "image_url": "https://images.example/a.png"});
    let with = |extra: Value| {
        let mut fields = base.clone();
        for (k, v) in extra.as_object().expect("object") {
            fields[k] = v.clone();
        }
        generation_request("stability", fields)
    };

    let err = stability
        .validate(&with(json!({"prompt": "a fox"})))
        .expect_err("no prompt");
    assert_eq!(err.field, "prompt");
    let err = stability
        .validate(&with(json!({"duration_seconds": 4})))
        .expect_err("fixed length");
    assert_eq!(err.field, "duration_seconds");
    let err = stability
        .validate(&generation_request(
            "stability",
            json!({"model": "stable-video-diffusion", "prompt": "a fox"}),
        ))
        .expect_err("image required");
    assert_eq!(err.field, "image_url");

    let ok = stability.validate(&with(json!({}))).expect("valid");
    assert_eq!(ok.format, None, "the shape follows the image");
    let ok = stability
        .validate(&with(json!({"aspect_ratio": "9:16"})))
        .expect("valid");
    assert_eq!(ok.format.expect("format").wire, "576x1024");
}
