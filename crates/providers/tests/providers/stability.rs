//! Stability AI's key check: `GET /v1/user/balance`.

use std::time::Duration;

use byok_providers::{CredentialCheck, ProviderId, Registry};
use serde_json::{Value, json};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{self, STABILITY_KEY, assert_exact_headers, only_request, registry};

async fn check(registry: &Registry, credentials: Value) -> CredentialCheck {
    support::check_key(registry, ProviderId::STABILITY, &credentials).await
}

async fn check_answered_with(response: ResponseTemplate) -> (CredentialCheck, MockServer) {
    support::key_check_answered_with(
        ProviderId::STABILITY,
        &json!({"api_key": STABILITY_KEY}),
        "GET",
        "/v1/user/balance",
        response,
    )
    .await
}

fn balance() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({"credits": 0.07903292496944721}))
}

#[tokio::test]
async fn valid_key_sends_exactly_the_documented_request() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/user/balance"))
        .and(header(
            "authorization",
            format!("Bearer {STABILITY_KEY}").as_str(),
        ))
        .and(header("accept", "application/json"))
        .respond_with(balance())
        .expect(1)
        .mount(&server)
        .await;

    let outcome = check(&registry(&server.uri()), json!({"api_key": STABILITY_KEY})).await;
    assert_eq!(outcome, CredentialCheck::Valid);

    let request = only_request(&server).await;
    assert_eq!(request.url.query(), None);
    assert_exact_headers(
        &request,
        &[
            ("authorization", &format!("Bearer {STABILITY_KEY}")),
            ("accept", "application/json"),
        ],
    );
}

#[tokio::test]
async fn organization_is_sent_when_set() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/user/balance"))
        .and(header("organization", "org-123abc"))
        .respond_with(balance())
        .expect(1)
        .mount(&server)
        .await;

    let outcome = check(
        &registry(&server.uri()),
        json!({"api_key": STABILITY_KEY, "organization_id": "org-123abc"}),
    )
    .await;
    assert_eq!(outcome, CredentialCheck::Valid);
    assert_exact_headers(
        &only_request(&server).await,
        &[
            ("authorization", &format!("Bearer {STABILITY_KEY}")),
            ("accept", "application/json"),
            ("organization", "org-123abc"),
        ],
    );
}

#[tokio::test]
async fn unauthorized_is_rejected_with_the_errors_list() {
    let (outcome, _server) = check_answered_with(ResponseTemplate::new(401).set_body_json(json!({
        "id": "9f8e7d", "name": "unauthorized",
        "errors": ["Missing or invalid API key", "see https://platform.stability.ai/account/keys"]
    })))
    .await;
    assert_eq!(
        outcome,
        CredentialCheck::Rejected {
            reason: "Stability AI rejected the key (HTTP 401): Missing or invalid API key; \
                     see https://platform.stability.ai/account/keys"
                .into()
        }
    );
}

#[tokio::test]
async fn v1_message_and_name_shapes_are_understood() {
    let (outcome, _server) = check_answered_with(
        ResponseTemplate::new(401).set_body_json(json!({"message": "Incorrect API key provided"})),
    )
    .await;
    assert_eq!(
        outcome,
        CredentialCheck::Rejected {
            reason: "Stability AI rejected the key (HTTP 401): Incorrect API key provided".into()
        }
    );
    let (outcome, _server) = check_answered_with(
        ResponseTemplate::new(403).set_body_json(json!({"id": "1", "name": "permission_denied"})),
    )
    .await;
    assert_eq!(
        outcome,
        CredentialCheck::Rejected {
            reason: "Stability AI rejected the key (HTTP 403): permission_denied".into()
        }
    );
}

#[tokio::test]
async fn an_echoed_key_is_redacted() {
    let (outcome, _server) = check_answered_with(ResponseTemplate::new(401).set_body_json(
        json!({"name": "unauthorized", "errors": [format!("key {STABILITY_KEY} is revoked")]}),
    ))
    .await;
    let CredentialCheck::Rejected { reason } = outcome else {
        panic!("expected Rejected, got {outcome:?}");
    };
    assert_eq!(
        reason,
        "Stability AI rejected the key (HTTP 401): key [REDACTED] is revoked"
    );
}

#[tokio::test]
async fn transient_and_unexpected_answers_give_no_verdict() {
    let mut answers = support::no_verdict_answers();
    answers.push((
        "200 without credits",
        ResponseTemplate::new(200).set_body_json(json!({"balance": 3})),
    ));
    answers.push((
        "200 credits as text",
        ResponseTemplate::new(200).set_body_json(json!({"credits": "3"})),
    ));
    for (case, response) in answers {
        let (outcome, server) = check_answered_with(response).await;
        let CredentialCheck::Unavailable { reason } = &outcome else {
            panic!("{case}: expected Unavailable, got {outcome:?}");
        };
        assert!(reason.starts_with("Stability AI"), "{case}: {reason}");
        assert!(!reason.contains(STABILITY_KEY), "{case}: {reason}");
        assert_eq!(server.received_requests().await.unwrap().len(), 1, "{case}");
    }
}

#[tokio::test]
async fn rate_limit_reason_keeps_stabilitys_text() {
    let (outcome, _server) = check_answered_with(ResponseTemplate::new(429).set_body_json(json!({
        "id": "1", "name": "rate_limit_exceeded",
        "errors": ["You have made more than 150 requests in 10 seconds"]
    })))
    .await;
    assert_eq!(
        outcome,
        CredentialCheck::Unavailable {
            reason: "Stability AI is rate limiting requests (HTTP 429); try again in a minute: \
                     You have made more than 150 requests in 10 seconds"
                .into()
        }
    );
}

#[tokio::test]
async fn connection_refused_gives_no_verdict() {
    let registry = registry(&format!("http://127.0.0.1:{}", support::closed_port()));
    let outcome = check(&registry, json!({"api_key": STABILITY_KEY})).await;
    let CredentialCheck::Unavailable { reason } = &outcome else {
        panic!("expected Unavailable, got {outcome:?}");
    };
    assert!(
        reason.starts_with("Stability AI could not be reached: could not connect"),
        "{reason}"
    );
}

#[tokio::test]
async fn timeout_gives_no_verdict() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/user/balance"))
        .respond_with(balance().set_delay(Duration::from_secs(30)))
        .mount(&server)
        .await;
    let options = support::options(&server.uri(), true, Duration::from_millis(200));
    let outcome = check(
        &Registry::new(&options).unwrap(),
        json!({"api_key": STABILITY_KEY}),
    )
    .await;
    assert_eq!(
        outcome,
        CredentialCheck::Unavailable {
            reason: "Stability AI could not be reached: no answer within 200 ms".into()
        }
    );
}
