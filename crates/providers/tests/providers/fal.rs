//! fal's key check: `POST {rest}/storage/auth/token?storage_type=fal-cdn-v3`, the call the
//! official client makes before every upload. Against wiremock the base URL is the mock's
//! root, so the REST host is `{mock}/fal-rest` (the simulator rule of crates/providers/README.md).

use std::time::Duration;

use byok_providers::{CredentialCheck, ProviderId, Registry};
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{self, assert_exact_headers, closed_port, only_request, registry};

/// A fal-shaped key (`key_id:key_secret`) ending in `9f2c`.
pub const FAL_KEY: &str =
    "3f9a1c2e-5b7d-4e8f-9a0b-1c2d3e4f5a6b:0123456789abcdef0123456789abcdef9f2c";

const CHECK_PATH: &str = "/fal-rest/storage/auth/token";

async fn check(registry: &Registry) -> CredentialCheck {
    support::check_key(registry, ProviderId::FAL, &json!({"api_key": FAL_KEY})).await
}

/// Mounts `response` for the key check and runs the check once.
async fn check_answered_with(response: ResponseTemplate) -> (CredentialCheck, MockServer) {
    support::key_check_answered_with(
        ProviderId::FAL,
        &json!({"api_key": FAL_KEY}),
        "POST",
        CHECK_PATH,
        response,
    )
    .await
}

fn token_answer() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "token": "eyJhbGciOiJIUzI1NiJ9.e30.c2lnbmF0dXJl",
        "token_type": "Bearer",
        "base_url": "https://v3.fal.media",
        "expires_at": "2026-12-03T17:00:00+00:00",
    }))
}

#[tokio::test]
async fn a_valid_key_sends_exactly_what_the_official_client_sends() {
    let (outcome, server) = check_answered_with(token_answer()).await;
    assert_eq!(outcome, CredentialCheck::Valid);
    let request = only_request(&server).await;
    assert_eq!(request.method.as_str(), "POST");
    assert_eq!(request.url.path(), CHECK_PATH);
    assert_eq!(request.url.query(), Some("storage_type=fal-cdn-v3"));
    assert_eq!(request.body, b"{}");
    assert_exact_headers(
        &request,
        &[
            ("authorization", &format!("Key {FAL_KEY}")),
            ("accept", "application/json"),
            ("content-type", "application/json"),
            ("content-length", "2"),
        ],
    );
}

#[tokio::test]
async fn rejected_keys_carry_fals_reason_without_the_key() {
    let cases = [
        (
            401,
            json!({"detail": "Unauthorized"}),
            "fal rejected the key (HTTP 401): Unauthorized",
        ),
        (
            403,
            json!({"detail": format!("Key {FAL_KEY} is not allowed")}),
            "fal rejected the key (HTTP 403): Key [REDACTED] is not allowed",
        ),
        (
            403,
            json!({"detail": "User is locked. Reason: Admin lock. Please contact support@fal.ai"}),
            "fal rejected the key (HTTP 403): User is locked. Reason: Admin lock. Please contact support@fal.ai",
        ),
    ];
    for (status, body, reason) in cases {
        let (outcome, _server) =
            check_answered_with(ResponseTemplate::new(status).set_body_json(body)).await;
        assert_eq!(
            outcome,
            CredentialCheck::Rejected {
                reason: reason.to_owned()
            }
        );
    }
}

#[tokio::test]
async fn a_key_whose_account_ran_out_of_credit_is_still_a_valid_key() {
    // fal locks an account whose balance is exhausted and answers 403 with this text
    // (docs/provider-protocols.md §8.5): fal knows the key, its jobs fail for credits.
    for text in [
        "User is locked. Reason: Exhausted balance. Top up your balance at fal.ai/dashboard/billing.",
        "User is locked. Reason: TOP_UP.",
    ] {
        let (outcome, _server) = check_answered_with(
            ResponseTemplate::new(403).set_body_json(json!({ "detail": text })),
        )
        .await;
        assert_eq!(outcome, CredentialCheck::Valid, "{text}");
    }
}

#[tokio::test]
async fn answers_that_say_nothing_about_the_key_give_no_verdict() {
    let mut cases = support::no_verdict_answers();
    cases.push((
        "200 without token",
        ResponseTemplate::new(200).set_body_json(json!({"token_type": "Bearer"})),
    ));
    cases.push((
        "200 empty token",
        ResponseTemplate::new(200).set_body_json(json!({"token": ""})),
    ));
    for (case, response) in cases {
        let (outcome, _server) = check_answered_with(response).await;
        assert!(
            matches!(outcome, CredentialCheck::Unavailable { .. }),
            "{case}: {outcome:?}"
        );
    }
}

#[tokio::test]
async fn an_unreachable_host_gives_no_verdict() {
    let registry = registry(&format!("http://127.0.0.1:{}", closed_port()));
    let CredentialCheck::Unavailable { reason } = check(&registry).await else {
        panic!("an unreachable host is no verdict")
    };
    assert!(
        reason.starts_with("fal.ai could not be reached"),
        "{reason}"
    );
    assert!(!reason.contains(FAL_KEY), "{reason}");
}

#[tokio::test]
async fn a_slow_host_gives_no_verdict() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(CHECK_PATH))
        .respond_with(token_answer().set_delay(Duration::from_secs(10)))
        .mount(&server)
        .await;
    let options = support::options(&server.uri(), true, Duration::from_millis(200));
    let outcome = check(&Registry::new(&options).expect("registry")).await;
    assert!(
        matches!(&outcome, CredentialCheck::Unavailable { reason } if reason.contains("no answer within")),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn credentials_are_one_api_key_and_nothing_else() {
    let registry = registry("http://127.0.0.1:9");
    let fal = registry.get(ProviderId::FAL).unwrap();
    let credentials = fal.parse_credentials(&json!({"api_key": FAL_KEY})).unwrap();
    let hint = credentials.hint();
    assert!(hint.ends_with("…9f2c") && hint.len() < 12, "{hint}");
    assert!(!format!("{credentials:?}").contains("0123456789abcdef"));
    let err = fal
        .parse_credentials(&json!({"api_key": FAL_KEY, "organization_id": "org"}))
        .unwrap_err();
    assert_eq!(err.field, "organization_id");
    let err = fal.parse_credentials(&json!({})).unwrap_err();
    assert_eq!(err.field, "api_key");
}

#[test]
fn the_catalogues_wire_data_is_checked_when_the_registry_is_built() {
    fn model(wire: serde_json::Value, extra: serde_json::Value) -> serde_json::Value {
        let mut model = json!({
            "id": "m1", "display_name": "M1", "modes": ["image_to_video"],
            "prompt": {"text_to_video": "unsupported", "image_to_video": "required", "max_chars": 100},
            "durations": [5, 10], "default_duration": 5, "format_from_image": true,
            "formats": [{"aspect_ratio": "16:9", "wire": "16:9"}],
        });
        model["wire"] = wire;
        if let (Some(model), serde_json::Value::Object(extra)) = (model.as_object_mut(), extra) {
            model.extend(extra);
        }
        model
    }
    let good = json!({"image_to_video": {"app": "fal-ai/kling-video/v2.1/master/image-to-video",
        "prompt": "prompt", "image": "image_url", "duration": "duration", "duration_format": "string"}});
    let with = |key: &str, value: serde_json::Value| {
        let mut wire = good.clone();
        wire["image_to_video"][key] = value;
        wire
    };
    let without = |key: &str| {
        let mut wire = good.clone();
        wire["image_to_video"].as_object_mut().unwrap().remove(key);
        wire
    };
    let cases = [
        (model(good.clone(), json!({})), None),
        (
            model(json!({}), json!({})),
            Some("wire.image_to_video is missing"),
        ),
        (
            model(with("promt", json!("prompt")), json!({})),
            Some("unknown field `promt`"),
        ),
        (
            model(with("app", json!("kling")), json!({})),
            Some("wire.image_to_video.app: `kling` is not an app id"),
        ),
        (
            model(with("app", json!("fal-ai/../x")), json!({})),
            Some("unusable segment"),
        ),
        (
            model(with("image", json!("Image URL")), json!({})),
            Some("wire.image_to_video.image: `Image URL` is not an input field name"),
        ),
        (
            model(with("image", json!("prompt")), json!({})),
            Some("`prompt` is used twice"),
        ),
        (
            model(without("duration_format"), json!({})),
            Some("wire.image_to_video.duration_format is missing"),
        ),
        (
            model(with("duration_format", json!("minutes")), json!({})),
            Some("unknown variant `minutes`"),
        ),
        (
            model(without("prompt"), json!({})),
            Some("wire.image_to_video.prompt is missing"),
        ),
        (
            model(good.clone(), json!({"negative_prompt": true})),
            Some("wire.image_to_video.negative_prompt is missing"),
        ),
        (
            model(with("seed", json!("seed")), json!({})),
            Some("wire.image_to_video.seed is given but the model takes none"),
        ),
        (
            model(
                good.clone(),
                json!({"format_from_image": false, "formats": [
                {"aspect_ratio": "16:9", "wire": "16:9"}, {"aspect_ratio": "9:16", "wire": "9:16"}]}),
            ),
            Some("several aspect ratios"),
        ),
        (
            model(
                json!({"image_to_video": good["image_to_video"].clone(),
                         "text_to_video": {"app": "a/b", "prompt": "prompt"}}),
                json!({}),
            ),
            Some("wire.text_to_video is given but the model does not offer text_to_video"),
        ),
    ];
    for (model, expected) in cases {
        let mut options = byok_providers::RegistryOptions::defaults();
        options.provider_mut(ProviderId::FAL).unwrap().models = Some(with_builtin_models(model));
        match (Registry::new(&options), expected) {
            (Ok(_), None) => {}
            (Err(err), Some(expected)) => {
                let err = err.to_string();
                assert!(
                    err.starts_with("providers.fal.models: model `m1`: "),
                    "{err}"
                );
                assert!(err.contains(expected), "{err} / {expected}");
            }
            (Ok(_), Some(expected)) => panic!("accepted, expected {expected}"),
            (Err(err), None) => panic!("refused: {err}"),
        }
    }
}

/// fal's built-in catalogue with `model` added: other providers' catalogues name fal's models
/// as alternatives, and those must stay available.
pub fn with_builtin_models(model: serde_json::Value) -> byok_providers::Catalogue {
    let builtin = Registry::new(&byok_providers::RegistryOptions::defaults())
        .expect("the built-in registry")
        .get(ProviderId::FAL)
        .unwrap()
        .catalogue()
        .clone();
    let mut catalogue = builtin;
    catalogue
        .models
        .insert(0, serde_json::from_value(model).expect("a model"));
    catalogue
}
