//! Veo's key check: the service-account JWT-bearer exchange, verified by a token endpoint
//! that checks the signature and claims the way Google does.

use std::time::Duration;

use aws_lc_rs::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use byok_providers::{CredentialCheck, Credentials, ProviderId, Registry};
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::support::{
    self, CLIENT_EMAIL, PRIVATE_KEY_ID, TestKey, assert_exact_headers, only_request, registry,
    service_account,
};

pub const ACCESS_TOKEN: &str = "ya29.c.b0Aaekm1KX-test-access-token";
const FORM_PREFIX: &str =
    "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=";

/// A token endpoint that accepts only assertions signed by `public_key` with the claims
/// google-auth sends; otherwise answers like Google (400 `invalid_grant`).
pub struct GoogleTokenEndpoint {
    pub public_key: Vec<u8>,
    pub kid: Option<String>,
    pub expires_in: Value,
}

impl GoogleTokenEndpoint {
    pub fn new(key: &TestKey, kid: Option<&str>) -> Self {
        GoogleTokenEndpoint {
            public_key: key.public_der(),
            kid: kid.map(str::to_owned),
            expires_in: json!(3599),
        }
    }

    /// Why the request is not what Google accepts, if it is not.
    fn problem(&self, request: &Request) -> Option<String> {
        let content_type = request.headers.get("content-type")?.to_str().ok()?;
        if content_type != "application/x-www-form-urlencoded" {
            return Some(format!("content-type {content_type}"));
        }
        let body = std::str::from_utf8(&request.body).ok()?;
        if !body.starts_with(FORM_PREFIX) {
            return Some("grant_type missing or not first".into());
        }
        let form: Vec<(String, String)> = url::form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect();
        let names: Vec<&str> = form.iter().map(|(k, _)| k.as_str()).collect();
        if names != ["grant_type", "assertion"] {
            return Some(format!("form fields {names:?}"));
        }
        if form[0].1 != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
            return Some("grant_type value".into());
        }
        let jwt = &form[1].1;
        let parts: Vec<&str> = jwt.split('.').collect();
        let [header, claims, signature] = parts[..] else {
            return Some("not a JWT".into());
        };
        let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
        let signed = format!("{header}.{claims}");
        if UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &self.public_key)
            .verify(signed.as_bytes(), &signature)
            .is_err()
        {
            return Some("Invalid JWT Signature.".into());
        }
        let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).ok()?).ok()?;
        let mut expected_header = json!({"alg": "RS256", "typ": "JWT"});
        if let Some(kid) = &self.kid {
            expected_header["kid"] = kid.as_str().into();
        }
        if header != expected_header {
            return Some(format!("JWT header {header}"));
        }
        let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).ok()?).ok()?;
        let now = chrono::Utc::now().timestamp();
        let iat = claims["iat"].as_i64()?;
        let exp = claims["exp"].as_i64()?;
        let fields: Vec<&str> = claims.as_object()?.keys().map(String::as_str).collect();
        let checks = [
            (claims["iss"] == CLIENT_EMAIL, "iss"),
            (
                claims["aud"] == "https://oauth2.googleapis.com/token",
                "aud",
            ),
            (
                claims["scope"] == "https://www.googleapis.com/auth/cloud-platform",
                "scope",
            ),
            (exp - iat == 3600, "exp - iat"),
            ((iat - now).abs() <= 5, "iat"),
            (fields.len() == 5, "extra claims"),
        ];
        checks
            .iter()
            .find(|(ok, _)| !ok)
            .map(|(_, what)| format!("Invalid JWT: bad {what}"))
    }
}

impl Respond for GoogleTokenEndpoint {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        match self.problem(request) {
            None => ResponseTemplate::new(200).set_body_json(json!({
                "access_token": ACCESS_TOKEN,
                "expires_in": self.expires_in,
                "token_type": "Bearer",
            })),
            Some(problem) => ResponseTemplate::new(400).set_body_json(json!({
                "error": "invalid_grant",
                "error_description": problem,
            })),
        }
    }
}

/// Veo credentials whose `token_uri` is `{server}/token`.
fn credentials(
    registry: &Registry,
    key: &TestKey,
    kid: Option<&str>,
    server: &MockServer,
) -> Credentials {
    let sa = service_account(key, kid, &format!("{}/token", server.uri()));
    registry
        .get(ProviderId::VEO)
        .unwrap()
        .parse_credentials(&json!({"service_account": sa}))
        .expect("valid credentials")
}

async fn check(registry: &Registry, credentials: &Credentials) -> CredentialCheck {
    registry
        .get(ProviderId::VEO)
        .unwrap()
        .check_credentials(credentials)
        .await
}

async fn check_answered_with(response: ResponseTemplate) -> (CredentialCheck, MockServer) {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(response)
        .expect(1)
        .mount(&server)
        .await;
    let registry = registry(&server.uri());
    let key = TestKey::shared();
    let outcome = check(
        &registry,
        &credentials(&registry, key, Some(PRIVATE_KEY_ID), &server),
    )
    .await;
    (outcome, server)
}

/// The assertion the adapter sent, from the recorded request.
fn assertion_of(request: &Request) -> String {
    url::form_urlencoded::parse(&request.body)
        .find(|(k, _)| k == "assertion")
        .map(|(_, v)| v.into_owned())
        .expect("assertion in form")
}

#[tokio::test]
async fn a_correctly_signed_assertion_is_exchanged_and_valid() {
    for kid in [Some(PRIVATE_KEY_ID), None] {
        let server = MockServer::start().await;
        let key = TestKey::generate();
        Mock::given(method("POST"))
            .and(path("/token"))
            .respond_with(GoogleTokenEndpoint::new(&key, kid))
            .expect(1)
            .mount(&server)
            .await;
        let registry = registry(&server.uri());
        let outcome = check(&registry, &credentials(&registry, &key, kid, &server)).await;
        assert_eq!(outcome, CredentialCheck::Valid, "kid {kid:?}");

        let request = only_request(&server).await;
        assert_exact_headers(
            &request,
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("accept", "application/json"),
                ("content-length", &request.body.len().to_string()),
            ],
        );
    }
}

#[tokio::test]
async fn expires_in_as_a_string_is_accepted() {
    let server = MockServer::start().await;
    let key = TestKey::generate();
    let mut endpoint = GoogleTokenEndpoint::new(&key, Some(PRIVATE_KEY_ID));
    endpoint.expires_in = json!("3599");
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(endpoint)
        .expect(1)
        .mount(&server)
        .await;
    let registry = registry(&server.uri());
    let outcome = check(
        &registry,
        &credentials(&registry, &key, Some(PRIVATE_KEY_ID), &server),
    )
    .await;
    assert_eq!(outcome, CredentialCheck::Valid);
}

#[tokio::test]
async fn an_assertion_signed_by_another_key_is_rejected_with_googles_description() {
    let server = MockServer::start().await;
    let trusted = TestKey::generate();
    let other = TestKey::generate();
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(GoogleTokenEndpoint::new(&trusted, Some(PRIVATE_KEY_ID)))
        .expect(1)
        .mount(&server)
        .await;
    let registry = registry(&server.uri());
    let outcome = check(
        &registry,
        &credentials(&registry, &other, Some(PRIVATE_KEY_ID), &server),
    )
    .await;
    assert_eq!(
        outcome,
        CredentialCheck::Rejected {
            reason: "Google rejected the service account key (HTTP 400, invalid_grant): \
                     Invalid JWT Signature."
                .into()
        }
    );
}

#[tokio::test]
async fn an_echoed_assertion_is_redacted() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(|request: &Request| {
            let assertion = assertion_of(request);
            let signature = assertion.rsplit('.').next().unwrap().to_owned();
            ResponseTemplate::new(400).set_body_json(json!({
                "error": "invalid_grant",
                "error_description": format!("bad assertion {assertion} (signature {signature})"),
            }))
        })
        .expect(1)
        .mount(&server)
        .await;
    let registry = registry(&server.uri());
    let key = TestKey::generate();
    let outcome = check(&registry, &credentials(&registry, &key, None, &server)).await;
    let CredentialCheck::Rejected { reason } = &outcome else {
        panic!("expected Rejected, got {outcome:?}");
    };
    let assertion = assertion_of(&only_request(&server).await);
    let signature = assertion.rsplit('.').next().unwrap();
    assert!(!reason.contains(&signature[..20]), "{reason}");
    assert!(reason.contains("bad assertion [REDACTED]"), "{reason}");
}

#[tokio::test]
async fn oauth_errors_about_the_client_reject_the_key() {
    for (status, body) in [
        (
            401,
            json!({"error": "invalid_client", "error_description": "The OAuth client was not found."}),
        ),
        (
            400,
            json!({"error": "unauthorized_client", "error_description": "Client is unauthorized to retrieve access tokens using this method."}),
        ),
        (401, json!({})),
        (403, Value::Null),
    ] {
        let response = ResponseTemplate::new(status);
        let response = if body.is_null() {
            response
        } else {
            response.set_body_json(&body)
        };
        let (outcome, _server) = check_answered_with(response).await;
        let CredentialCheck::Rejected { reason } = &outcome else {
            panic!("{status} {body}: expected Rejected, got {outcome:?}");
        };
        assert!(
            reason.starts_with("Google rejected the service account key (HTTP"),
            "{reason}"
        );
        if let Some(description) = body.get("error_description").and_then(Value::as_str) {
            assert!(reason.ends_with(description), "{reason}");
        }
    }
}

#[tokio::test]
async fn transient_and_unexpected_answers_give_no_verdict() {
    let cases = [
        ("500", ResponseTemplate::new(500)),
        ("503 json", ResponseTemplate::new(503).set_body_json(json!({"error": "temporarily_unavailable"}))),
        ("429", ResponseTemplate::new(429).set_body_json(json!({"error": "rate_limit_exceeded"}))),
        ("400 server_error", ResponseTemplate::new(400).set_body_json(json!({"error": "server_error"}))),
        ("400 invalid_request", ResponseTemplate::new(400).set_body_json(json!({"error": "invalid_request", "error_description": "Missing required parameter: assertion"}))),
        ("400 html", ResponseTemplate::new(400).set_body_string("<html>bad</html>")),
        ("302", ResponseTemplate::new(302).insert_header("location", "https://elsewhere.invalid/token")),
        ("200 not json", ResponseTemplate::new(200).set_body_string("ok")),
        ("200 no token", ResponseTemplate::new(200).set_body_json(json!({"expires_in": 3599}))),
        ("200 no expiry", ResponseTemplate::new(200).set_body_json(json!({"access_token": ACCESS_TOKEN}))),
        ("200 bad expiry", ResponseTemplate::new(200).set_body_json(json!({"access_token": ACCESS_TOKEN, "expires_in": "soon"}))),
        ("200 huge", ResponseTemplate::new(200).set_body_string(format!("{{\"access_token\":\"{}\",\"expires_in\":1}}", "a".repeat(70 * 1024)))),
    ];
    for (case, response) in cases {
        let (outcome, server) = check_answered_with(response).await;
        let CredentialCheck::Unavailable { reason } = &outcome else {
            panic!("{case}: expected Unavailable, got {outcome:?}");
        };
        assert!(!reason.contains(ACCESS_TOKEN), "{case}: {reason}");
        assert_eq!(server.received_requests().await.unwrap().len(), 1, "{case}");
    }
}

#[tokio::test]
async fn unavailable_reasons_name_the_status_and_googles_text() {
    let (outcome, _server) = check_answered_with(ResponseTemplate::new(503).set_body_json(
        json!({"error": "temporarily_unavailable", "error_description": "Try again"}),
    ))
    .await;
    assert_eq!(
        outcome,
        CredentialCheck::Unavailable {
            reason: "the token endpoint could not issue a token (HTTP 503, temporarily_unavailable): Try again".into()
        }
    );
    let (outcome, _server) = check_answered_with(
        ResponseTemplate::new(200).set_body_json(json!({"access_token": ACCESS_TOKEN})),
    )
    .await;
    assert_eq!(
        outcome,
        CredentialCheck::Unavailable {
            reason: "the token endpoint sent an unexpected answer (HTTP 200, no expires_in)".into()
        }
    );
}

#[tokio::test]
async fn connection_refused_gives_no_verdict() {
    let port = support::closed_port();
    let token_uri = format!("http://127.0.0.1:{port}/token");
    let registry = support::registry_allowing("http://127.0.0.1:1", &[&token_uri]);
    let key = TestKey::generate();
    let sa = service_account(&key, None, &token_uri);
    let veo = registry.get(ProviderId::VEO).unwrap();
    let credentials = veo
        .parse_credentials(&json!({"service_account": sa}))
        .unwrap();
    let outcome = veo.check_credentials(&credentials).await;
    let CredentialCheck::Unavailable { reason } = &outcome else {
        panic!("expected Unavailable, got {outcome:?}");
    };
    assert!(
        reason.starts_with("the token endpoint 127.0.0.1 could not be reached: could not connect"),
        "{reason}"
    );
}

#[tokio::test]
async fn timeout_gives_no_verdict() {
    let server = MockServer::start().await;
    let key = TestKey::generate();
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"access_token": ACCESS_TOKEN, "expires_in": 3599}))
                .set_delay(Duration::from_secs(30)),
        )
        .mount(&server)
        .await;
    let options = support::options(&server.uri(), true, Duration::from_millis(200));
    let registry = Registry::new(&options).unwrap();
    let outcome = check(&registry, &credentials(&registry, &key, None, &server)).await;
    assert_eq!(
        outcome,
        CredentialCheck::Unavailable {
            reason: "the token endpoint 127.0.0.1 could not be reached: no answer within 200 ms"
                .into()
        }
    );
}

#[tokio::test]
async fn other_providers_credentials_give_no_verdict() {
    let registry = registry("http://127.0.0.1:1");
    let runway_credentials = registry
        .get(ProviderId::RUNWAY)
        .unwrap()
        .parse_credentials(&json!({"api_key": "key_abc"}))
        .unwrap();
    for id in [ProviderId::VEO, ProviderId::STABILITY] {
        let outcome = registry
            .get(id)
            .unwrap()
            .check_credentials(&runway_credentials)
            .await;
        assert!(
            matches!(outcome, CredentialCheck::Unavailable { .. }),
            "{id}: {outcome:?}"
        );
    }
}
