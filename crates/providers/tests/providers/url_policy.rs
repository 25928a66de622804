//! The private-network policy for the service account's `token_uri`.
//!
//! With `allow_private_networks = false`: a non-https `token_uri` or an IP literal outside
//! the public internet is a `CredentialsError` on `service_account.token_uri` at parse
//! time; a DNS name that resolves only to non-public addresses is `Rejected` at check
//! time (the credentials cannot work in this deployment), with no connection made.
//! Credentials parsed under a permissive policy are still refused by a strict check.

use std::io::ErrorKind;
use std::net::TcpListener;

use byok_providers::{CredentialCheck, ProviderId};
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer};

use crate::support::{
    PRIVATE_KEY_ID, TestKey, registry_allowing, service_account, strict_registry,
    strict_registry_allowing,
};
use crate::veo::GoogleTokenEndpoint;

/// A listener that records whether anything connected to it.
struct Tripwire(TcpListener);

impl Tripwire {
    fn new() -> Tripwire {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        Tripwire(listener)
    }

    fn port(&self) -> u16 {
        self.0.local_addr().expect("addr").port()
    }

    /// Panics if a connection was made. A TCP connect completes in the kernel (into the
    /// accept backlog) before the client could go on, so after the check returned any
    /// attempt is visible here without waiting.
    fn assert_untouched(&self) {
        match self.0.accept() {
            Err(err) if err.kind() == ErrorKind::WouldBlock => {}
            Ok((_, peer)) => panic!("something connected from {peer}"),
            Err(err) => panic!("accept failed: {err}"),
        }
    }
}

#[test]
fn http_and_private_ip_literals_are_refused_at_parse_time() {
    let registry = strict_registry();
    let veo = registry.get(ProviderId::VEO).unwrap();
    let key = TestKey::generate();
    for (token_uri, message) in [
        ("http://oauth2.googleapis.com/token", "only https"),
        (
            "https://127.0.0.1/token",
            "127.0.0.1 is not a public address",
        ),
        (
            "https://169.254.169.254/computeMetadata/v1/",
            "169.254.169.254 is not a public address",
        ),
        ("https://[::1]/", "[::1] is not a public address"),
        ("https://10.0.0.8:8443/token", "not a public address"),
        ("https://[fd00::1]/token", "not a public address"),
        ("https://[::ffff:192.168.1.1]/token", "not a public address"),
        (
            "https://0x7f.0.0.1/token",
            "127.0.0.1 is not a public address",
        ),
    ] {
        let raw = json!({"service_account": service_account(&key, None, token_uri)});
        let err = veo.parse_credentials(&raw).unwrap_err();
        assert_eq!(err.field, "service_account.token_uri", "{token_uri}: {err}");
        assert!(err.message.contains(message), "{token_uri}: {err}");
    }
    let google = json!({"service_account": service_account(&key, None, "https://oauth2.googleapis.com/token")});
    assert!(veo.parse_credentials(&google).is_ok());
}

#[tokio::test]
async fn a_name_resolving_to_loopback_is_rejected_without_connecting() {
    let tripwire = Tripwire::new();
    let key = TestKey::generate();
    let token_uri = format!("https://localhost:{}/token", tripwire.port());
    let registry = strict_registry_allowing(&[&token_uri]);
    let veo = registry.get(ProviderId::VEO).unwrap();
    let credentials = veo
        .parse_credentials(&json!({"service_account": service_account(&key, None, &token_uri)}))
        .expect("names pass the parse-time check");

    let outcome = veo.check_credentials(&credentials).await;
    assert_eq!(
        outcome,
        CredentialCheck::Rejected {
            reason: "service_account.token_uri is refused: localhost resolves only to \
                     non-public addresses (fetch.allow_private_networks is false)"
                .into()
        }
    );
    tripwire.assert_untouched();
}

#[tokio::test]
async fn credentials_parsed_permissively_are_still_refused_by_a_strict_check() {
    let tripwire = Tripwire::new();
    let key = TestKey::generate();
    for token_uri in [
        format!("https://127.0.0.1:{}/token", tripwire.port()),
        format!("http://127.0.0.1:{}/token", tripwire.port()),
        format!("https://[::ffff:127.0.0.1]:{}/token", tripwire.port()),
    ] {
        let permissive = registry_allowing("http://127.0.0.1:1", &[&token_uri]);
        let credentials = permissive
            .get(ProviderId::VEO)
            .unwrap()
            .parse_credentials(&json!({"service_account": service_account(&key, None, &token_uri)}))
            .expect("allowed when private networks are allowed");

        let outcome = strict_registry()
            .get(ProviderId::VEO)
            .unwrap()
            .check_credentials(&credentials)
            .await;
        let CredentialCheck::Rejected { reason } = &outcome else {
            panic!("{token_uri}: expected Rejected, got {outcome:?}");
        };
        assert!(
            reason.starts_with("service_account.token_uri is refused: "),
            "{reason}"
        );
        tripwire.assert_untouched();
    }
}

#[tokio::test]
async fn loopback_works_when_private_networks_are_allowed() {
    let server = MockServer::start().await;
    let key = TestKey::generate();
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(GoogleTokenEndpoint::new(&key, Some(PRIVATE_KEY_ID)))
        .expect(2)
        .mount(&server)
        .await;
    let port = server.address().port();
    let uris = [
        format!("http://127.0.0.1:{port}/token"),
        format!("http://localhost:{port}/token"),
    ];
    let registry = registry_allowing(&server.uri(), &[&uris[0], &uris[1]]);
    let veo = registry.get(ProviderId::VEO).unwrap();
    for token_uri in uris {
        let raw =
            json!({"service_account": service_account(&key, Some(PRIVATE_KEY_ID), &token_uri)});
        let credentials = veo.parse_credentials(&raw).unwrap();
        assert_eq!(
            veo.check_credentials(&credentials).await,
            CredentialCheck::Valid,
            "{token_uri}"
        );
    }
}

#[test]
fn only_googles_token_endpoint_and_configured_ones_are_accepted() {
    let key = TestKey::generate();
    let raw = |token_uri: &str| json!({"service_account": service_account(&key, None, token_uri)});
    let registry = strict_registry_allowing(&["https://sts.example.com/oauth/token"]);
    let veo = registry.get(ProviderId::VEO).unwrap();
    for accepted in [
        "https://oauth2.googleapis.com/token",
        "HTTPS://OAuth2.googleapis.com:443/token",
        "https://sts.example.com/oauth/token",
    ] {
        assert!(veo.parse_credentials(&raw(accepted)).is_ok(), "{accepted}");
    }
    for refused in [
        "https://attacker.example/token",
        "https://oauth2.googleapis.com/token/",
        "https://oauth2.googleapis.com.attacker.example/token",
        "https://sts.example.com/oauth/token?next=https://attacker.example",
    ] {
        let err = veo.parse_credentials(&raw(refused)).unwrap_err();
        assert_eq!(err.field, "service_account.token_uri", "{refused}");
        assert!(
            err.message.contains("providers.veo.token_uri_allowlist"),
            "{refused}: {err}"
        );
    }
}
