//! Runway's key check: `GET /v1/organization`.

use std::time::Duration;

use byok_providers::{CredentialCheck, ProviderId, Registry};
use serde_json::json;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{self, RUNWAY_KEY, assert_exact_headers, only_request, registry};

async fn check(registry: &Registry) -> CredentialCheck {
    support::check_key(
        registry,
        ProviderId::RUNWAY,
        &json!({"api_key": RUNWAY_KEY}),
    )
    .await
}

/// Mounts `response` for the key check and runs the check once.
async fn check_answered_with(response: ResponseTemplate) -> (CredentialCheck, MockServer) {
    support::key_check_answered_with(
        ProviderId::RUNWAY,
        &json!({"api_key": RUNWAY_KEY}),
        "GET",
        "/v1/organization",
        response,
    )
    .await
}

#[tokio::test]
async fn valid_key_sends_exactly_the_documented_request() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/organization"))
        .and(header(
            "authorization",
            format!("Bearer {RUNWAY_KEY}").as_str(),
        ))
        .and(header("x-runway-version", "2024-11-06"))
        .and(header("accept", "application/json"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "creditBalance": 5000,
            "tier": {"maxMonthlyCreditSpend": 10000, "models": {}},
            "usage": {"models": {}}
        })))
        .expect(1)
        .mount(&server)
        .await;

    assert_eq!(
        check(&registry(&server.uri())).await,
        CredentialCheck::Valid
    );

    let request = only_request(&server).await;
    assert_eq!(request.url.query(), None);
    assert!(request.body.is_empty());
    assert_exact_headers(
        &request,
        &[
            ("authorization", &format!("Bearer {RUNWAY_KEY}")),
            ("x-runway-version", "2024-11-06"),
            ("accept", "application/json"),
        ],
    );
}

#[tokio::test]
async fn base_url_path_prefix_is_kept() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/runway/v1/organization"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
        .expect(1)
        .mount(&server)
        .await;
    let registry = registry(&format!("{}/runway/", server.uri()));
    assert_eq!(check(&registry).await, CredentialCheck::Valid);
}

#[tokio::test]
async fn unauthorized_is_rejected_with_runways_message() {
    let (outcome, _server) = check_answered_with(
        ResponseTemplate::new(401).set_body_json(json!({"error": "Invalid API key"})),
    )
    .await;
    assert_eq!(
        outcome,
        CredentialCheck::Rejected {
            reason: "Runway rejected the key (HTTP 401): Invalid API key".into()
        }
    );
}

#[tokio::test]
async fn forbidden_is_rejected_and_an_echoed_key_is_redacted() {
    let (outcome, _server) = check_answered_with(ResponseTemplate::new(403).set_body_json(
        json!({"error": format!("Key {RUNWAY_KEY} belongs to a suspended organization")}),
    ))
    .await;
    let CredentialCheck::Rejected { reason } = outcome else {
        panic!("expected Rejected, got {outcome:?}");
    };
    assert_eq!(
        reason,
        "Runway rejected the key (HTTP 403): Key [REDACTED] belongs to a suspended organization"
    );
    assert!(!reason.contains(&RUNWAY_KEY[4..40]));
}

#[tokio::test]
async fn long_provider_text_is_truncated() {
    let (outcome, _server) = check_answered_with(
        ResponseTemplate::new(401).set_body_json(json!({"error": "x".repeat(5000)})),
    )
    .await;
    let CredentialCheck::Rejected { reason } = outcome else {
        panic!("expected Rejected, got {outcome:?}");
    };
    let copied = reason
        .strip_prefix("Runway rejected the key (HTTP 401): ")
        .unwrap();
    assert_eq!(copied.chars().count(), 300);
    assert!(copied.ends_with('…'));
}

#[tokio::test]
async fn unauthorized_without_a_body_is_still_rejected() {
    let (outcome, _server) = check_answered_with(ResponseTemplate::new(401)).await;
    assert_eq!(
        outcome,
        CredentialCheck::Rejected {
            reason: "Runway rejected the key (HTTP 401)".into()
        }
    );
}

#[tokio::test]
async fn transient_and_unexpected_answers_give_no_verdict() {
    for (case, response) in support::no_verdict_answers() {
        let (outcome, server) = check_answered_with(response).await;
        let CredentialCheck::Unavailable { reason } = &outcome else {
            panic!("{case}: expected Unavailable, got {outcome:?}");
        };
        assert!(reason.starts_with("Runway"), "{case}: {reason}");
        assert!(!reason.contains(RUNWAY_KEY), "{case}: {reason}");
        // Redirects are not followed: the one request is the key check itself.
        assert_eq!(server.received_requests().await.unwrap().len(), 1, "{case}");
    }
}

#[tokio::test]
async fn rate_limit_and_server_error_reasons_say_what_happened() {
    let (outcome, _server) = check_answered_with(
        ResponseTemplate::new(429).set_body_json(json!({"error": "Too many requests"})),
    )
    .await;
    assert_eq!(
        outcome,
        CredentialCheck::Unavailable {
            reason:
                "Runway is rate limiting requests (HTTP 429); try again later: Too many requests"
                    .into()
        }
    );
    let (outcome, _server) = check_answered_with(ResponseTemplate::new(500)).await;
    assert_eq!(
        outcome,
        CredentialCheck::Unavailable {
            reason: "Runway answered the key check with HTTP 500".into()
        }
    );
}

#[tokio::test]
async fn connection_refused_gives_no_verdict() {
    let registry = registry(&format!("http://127.0.0.1:{}", support::closed_port()));
    let outcome = check(&registry).await;
    let CredentialCheck::Unavailable { reason } = &outcome else {
        panic!("expected Unavailable, got {outcome:?}");
    };
    assert!(
        reason.starts_with("Runway could not be reached: could not connect"),
        "{reason}"
    );
}

#[tokio::test]
async fn timeout_gives_no_verdict() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/organization"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({}))
                .set_delay(Duration::from_secs(30)),
        )
        .mount(&server)
        .await;
    let options = support::options(&server.uri(), true, Duration::from_millis(200));
    let outcome = check(&Registry::new(&options).unwrap()).await;
    assert_eq!(
        outcome,
        CredentialCheck::Unavailable {
            reason: "Runway could not be reached: no answer within 200 ms".into()
        }
    );
}
