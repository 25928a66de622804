//! Replicate's token check (`GET /v1/account`), its credentials and its catalogue's wire data.

use std::time::Duration;

use byok_providers::{CredentialCheck, ProviderId, Registry, RegistryError};
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{self, assert_exact_headers, only_request, registry};

/// A Replicate-shaped token (`r8_` + 37 characters).
pub const REPLICATE_TOKEN: &str = "r8_Q2xBv7ZkT0pLmN4sW8yR1cF6hJ3dG5aE9uI0o";

async fn check(registry: &Registry) -> CredentialCheck {
    support::check_key(
        registry,
        ProviderId::REPLICATE,
        &json!({"api_key": REPLICATE_TOKEN}),
    )
    .await
}

/// Mounts `response` for the token check and runs the check once.
async fn check_answered_with(response: ResponseTemplate) -> (CredentialCheck, MockServer) {
    support::key_check_answered_with(
        ProviderId::REPLICATE,
        &json!({"api_key": REPLICATE_TOKEN}),
        "GET",
        "/v1/account",
        response,
    )
    .await
}

fn unauthenticated(status: u16, detail: &str) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .insert_header("content-type", "application/problem+json")
        .set_body_json(json!({"title": "Unauthenticated", "detail": detail, "status": status}))
}

#[tokio::test]
async fn a_valid_token_sends_exactly_the_documented_request() {
    let (outcome, server) = check_answered_with(ResponseTemplate::new(200).set_body_json(
        json!({"type": "user", "username": "acme", "name": "Acme", "github_url": null}),
    ))
    .await;
    assert_eq!(outcome, CredentialCheck::Valid);
    let request = only_request(&server).await;
    assert_eq!(request.method.as_str(), "GET");
    assert_eq!(request.url.query(), None);
    assert!(request.body.is_empty());
    assert_exact_headers(
        &request,
        &[
            ("authorization", &format!("Bearer {REPLICATE_TOKEN}")),
            ("accept", "application/json"),
        ],
    );
}

#[tokio::test]
async fn the_base_url_path_prefix_is_kept() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/replicate/v1/account"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"type": "organization"})))
        .expect(1)
        .mount(&server)
        .await;
    let registry = registry(&format!("{}/replicate/", server.uri()));
    assert_eq!(check(&registry).await, CredentialCheck::Valid);
}

#[tokio::test]
async fn a_refused_token_is_rejected_in_replicates_words() {
    let (outcome, _server) = check_answered_with(unauthenticated(
        401,
        "You did not pass a valid authentication token",
    ))
    .await;
    assert_eq!(
        outcome,
        CredentialCheck::Rejected {
            reason: "Replicate rejected the token (HTTP 401): You did not pass a valid \
                     authentication token"
                .into()
        }
    );
    let (outcome, _server) = check_answered_with(unauthenticated(
        403,
        &format!("Token {REPLICATE_TOKEN} is disabled"),
    ))
    .await;
    let CredentialCheck::Rejected { reason } = outcome else {
        panic!("expected Rejected, got {outcome:?}");
    };
    assert_eq!(
        reason,
        "Replicate rejected the token (HTTP 403): Token [REDACTED] is disabled"
    );
}

#[tokio::test]
async fn answers_that_say_nothing_about_the_token_give_no_verdict() {
    for (case, response) in support::no_verdict_answers() {
        let (outcome, _server) = check_answered_with(response).await;
        assert!(
            matches!(outcome, CredentialCheck::Unavailable { .. }),
            "{case}: {outcome:?}"
        );
    }
    let (outcome, _server) = check_answered_with(ResponseTemplate::new(429).set_body_json(
        json!({"detail": "Request was throttled. Your rate limit resets in ~30s."}),
    ))
    .await;
    assert_eq!(
        outcome,
        CredentialCheck::Unavailable {
            reason: "Replicate is rate limiting requests (HTTP 429); try again later: Request \
                     was throttled. Your rate limit resets in ~30s."
                .into()
        }
    );
    let registry = registry(&format!("http://127.0.0.1:{}", support::closed_port()));
    let outcome = check(&registry).await;
    let CredentialCheck::Unavailable { reason } = outcome else {
        panic!("expected Unavailable, got {outcome:?}");
    };
    assert!(
        reason.starts_with("Replicate could not be reached"),
        "{reason}"
    );
}

#[test]
fn credentials_are_a_token_alone() {
    let registry = support::strict_registry();
    let replicate = registry.get(ProviderId::REPLICATE).unwrap();
    let credentials = replicate
        .parse_credentials(&json!({"api_key": REPLICATE_TOKEN}))
        .expect("a token");
    assert_eq!(credentials.provider(), ProviderId::REPLICATE);
    assert!(!format!("{credentials:?}").contains(REPLICATE_TOKEN));
    let err = replicate
        .parse_credentials(&json!({"api_key": REPLICATE_TOKEN, "organization_id": "acme"}))
        .expect_err("no organization");
    assert_eq!(err.field, "organization_id");
    let err = replicate
        .parse_credentials(&json!({}))
        .expect_err("a token is required");
    assert_eq!(err.field, "api_key");
}

/// A registry whose Replicate catalogue is `models` (as `providers.replicate.models`).
fn with_catalogue(models: &serde_json::Value) -> Result<Registry, RegistryError> {
    let mut options = support::options("https://unused.invalid", false, Duration::from_secs(5));
    options.provider_mut(ProviderId::REPLICATE).unwrap().models =
        Some(serde_json::from_value(json!({ "models": models })).expect("a catalogue"));
    Registry::new(&options)
}

fn model(wire: &serde_json::Value) -> serde_json::Value {
    json!({
        "id": "acme/video",
        "display_name": "Acme video",
        "modes": ["image_to_video"],
        "prompt": {"text_to_video": "unsupported", "image_to_video": "optional", "max_chars": 500},
        "formats": [{"aspect_ratio": "16:9", "wire": "16:9"}],
        "wire": wire,
    })
}

#[test]
fn a_configured_catalogue_is_checked_for_its_wire_data() {
    let registry = with_catalogue(&json!([model(&json!({
        "model": "acme/video",
        "version": "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "inputs": {"prompt": "prompt", "image": "first_frame_image"},
        "extra_inputs": {"prompt_optimizer": false},
    }))]))
    .expect("a coherent catalogue");
    let adapter = registry.get(ProviderId::REPLICATE).unwrap();
    let models = &adapter.catalogue().models;
    assert_eq!(models.len(), 1);
    // The wire data is for the adapter, not for listings.
    let listed = serde_json::to_value(&models[0]).expect("serialises");
    assert!(listed.get("wire").is_none(), "{listed}");

    let cases = [
        (
            json!({"inputs": {"prompt": "prompt", "image": "image"}}),
            "model `acme/video`: wire: missing field `model`",
        ),
        (
            json!({"model": "acme/video", "inputs": {"prompt": "prompt"}}),
            "model `acme/video`: wire.inputs.image is missing: the model makes video from an image",
        ),
        (
            json!({"model": "acme/video", "inputs": {"prompt": "prompt", "image": "image", "imgae": "x"}}),
            "model `acme/video`: wire: unknown field `imgae`",
        ),
        (
            json!({"model": "acme/video", "version": "latest", "inputs": {"prompt": "prompt", "image": "image"}}),
            "model `acme/video`: wire.version: must be a version id, 64 lowercase hex characters",
        ),
    ];
    for (wire, expected) in cases {
        let err = with_catalogue(&json!([model(&wire)])).expect_err("refused");
        let RegistryError::BadCatalogue { provider, reason } = &err else {
            panic!("{wire}: {err}");
        };
        assert_eq!(*provider, ProviderId::REPLICATE);
        assert!(reason.starts_with(expected), "{wire}: {reason}");
        assert!(
            err.to_string().starts_with("providers.replicate.models: "),
            "{err}"
        );
    }
}
