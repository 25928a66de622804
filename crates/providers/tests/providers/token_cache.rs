//! The Vertex access-token cache: one exchange per account while the token is fresh,
//! refetch inside the refresh margin, `invalidate()` forces a refetch.

use std::time::Duration;

use byok_providers::vertex::{REFRESH_MARGIN, TokenError, TokenSource};
use byok_providers::{CredentialsKind, ProviderId, ServiceAccountKey};
use secrecy::ExposeSecret;
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{PRIVATE_KEY_ID, TestKey, registry, service_account};
use crate::veo::{ACCESS_TOKEN, GoogleTokenEndpoint};

fn source() -> TokenSource {
    TokenSource::new(true, Duration::from_secs(10)).expect("token source")
}

fn account(key: &TestKey, server: &MockServer) -> ServiceAccountKey {
    let sa = service_account(
        key,
        Some(PRIVATE_KEY_ID),
        &format!("{}/token", server.uri()),
    );
    let credentials = registry(&server.uri())
        .get(ProviderId::VEO)
        .unwrap()
        .parse_credentials(&json!({"service_account": sa}))
        .expect("valid credentials");
    match credentials.kind() {
        CredentialsKind::ServiceAccount { account, .. } => account.clone(),
        other => panic!("unexpected {other:?}"),
    }
}

/// A verifying token endpoint that says tokens live `expires_in` seconds.
async fn endpoint(key: &TestKey, expires_in: u64) -> MockServer {
    let server = MockServer::start().await;
    let mut responder = GoogleTokenEndpoint::new(key, Some(PRIVATE_KEY_ID));
    responder.expires_in = json!(expires_in);
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(responder)
        .mount(&server)
        .await;
    server
}

async fn requests(server: &MockServer) -> usize {
    server.received_requests().await.expect("recording").len()
}

#[tokio::test]
async fn a_fresh_token_is_reused() {
    let key = TestKey::generate();
    let server = endpoint(&key, 3599).await;
    let tokens = source();
    let account = account(&key, &server);

    let first = tokens.token(&account).await.expect("token");
    let second = tokens.token(&account).await.expect("token");
    assert_eq!(first.secret().expose_secret(), ACCESS_TOKEN);
    assert_eq!(second.secret().expose_secret(), ACCESS_TOKEN);
    assert_eq!(
        first.expires_at(),
        second.expires_at(),
        "the same cached token"
    );
    assert_eq!(requests(&server).await, 1);
    assert!(!format!("{first:?} {tokens:?}").contains(ACCESS_TOKEN));
}

#[tokio::test]
async fn concurrent_callers_share_one_exchange() {
    let key = TestKey::generate();
    let server = endpoint(&key, 3599).await;
    let tokens = source();
    let account = account(&key, &server);
    let (a, b, c) = tokio::join!(
        tokens.token(&account),
        tokens.token(&account),
        tokens.token(&account)
    );
    assert!(a.is_ok() && b.is_ok() && c.is_ok());
    assert_eq!(requests(&server).await, 1);
}

#[tokio::test]
async fn a_token_inside_the_refresh_margin_is_refetched() {
    let key = TestKey::generate();
    let lifetime = REFRESH_MARGIN.as_secs() - 30;
    let server = endpoint(&key, lifetime).await;
    let tokens = source();
    let account = account(&key, &server);

    tokens.token(&account).await.expect("token");
    tokens.token(&account).await.expect("token");
    assert_eq!(requests(&server).await, 2);
}

#[tokio::test]
async fn invalidate_forces_a_refetch() {
    let key = TestKey::generate();
    let server = endpoint(&key, 3599).await;
    let tokens = source();
    let account = account(&key, &server);

    tokens.token(&account).await.expect("token");
    tokens.token(&account).await.expect("token");
    assert_eq!(requests(&server).await, 1);
    tokens.invalidate(&account);
    tokens.token(&account).await.expect("token");
    assert_eq!(requests(&server).await, 2);
    tokens.token(&account).await.expect("token");
    assert_eq!(requests(&server).await, 2);
}

#[tokio::test]
async fn fetch_fresh_always_exchanges_and_refills_the_cache() {
    let key = TestKey::generate();
    let server = endpoint(&key, 3599).await;
    let tokens = source();
    let account = account(&key, &server);

    tokens.token(&account).await.expect("token");
    tokens.fetch_fresh(&account).await.expect("token");
    assert_eq!(requests(&server).await, 2);
    tokens.token(&account).await.expect("token");
    assert_eq!(requests(&server).await, 2);
}

#[tokio::test]
async fn accounts_are_cached_separately_and_a_rotated_key_is_not_served_the_old_token() {
    let key = TestKey::generate();
    let rotated = TestKey::generate();
    let server = endpoint(&key, 3599).await;
    let tokens = source();
    let account = account(&key, &server);
    let mut rotated_account = account.clone();
    rotated_account.private_key = rotated.pem.clone().into();

    tokens.token(&account).await.expect("token");
    // Same email and key id, other private key: a separate exchange, which the endpoint
    // (trusting only the first key) refuses.
    let err = tokens.token(&rotated_account).await.unwrap_err();
    assert!(
        matches!(&err, TokenError::Rejected { reason } if reason.contains("Invalid JWT Signature.")),
        "{err:?}"
    );
    assert_eq!(requests(&server).await, 2);
}

#[tokio::test]
async fn failures_are_not_cached() {
    let key = TestKey::generate();
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(GoogleTokenEndpoint::new(&key, Some(PRIVATE_KEY_ID)))
        .mount(&server)
        .await;
    let tokens = source();
    let account = account(&key, &server);

    let err = tokens.token(&account).await.unwrap_err();
    assert!(matches!(err, TokenError::Unavailable { .. }), "{err:?}");
    tokens.token(&account).await.expect("second attempt");
    assert_eq!(requests(&server).await, 2);
}
