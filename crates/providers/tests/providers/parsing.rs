//! `parse_credentials`, `to_plaintext`, `hint` and redacted `Debug`.

use aws_lc_rs::encoding::AsDer;
use byok_providers::{CredentialsError, CredentialsKind, ProviderId, Registry};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use crate::support::{
    CLIENT_EMAIL, PRIVATE_KEY_ID, PROJECT_ID, RUNWAY_KEY, STABILITY_KEY, TestKey, registry,
    service_account,
};

const TOKEN_URI: &str = "https://oauth2.googleapis.com/token";

fn local() -> Registry {
    registry("http://127.0.0.1:1")
}

fn parse_err(registry: &Registry, id: ProviderId, raw: &Value) -> CredentialsError {
    match registry.get(id).unwrap().parse_credentials(raw) {
        Ok(credentials) => panic!("{raw} parsed as {credentials:?}"),
        Err(err) => err,
    }
}

fn assert_field(err: &CredentialsError, field: &str, message_part: &str) {
    assert_eq!(err.field, field, "{err}");
    assert!(err.message.contains(message_part), "{err}");
    assert_eq!(err.to_string(), format!("{}: {}", err.field, err.message));
}

#[test]
fn api_key_fields_are_checked_by_name() {
    let registry = local();
    for id in [ProviderId::RUNWAY, ProviderId::STABILITY] {
        let cases = [
            (json!({}), "api_key", "is required"),
            (json!({"api_key": null}), "api_key", "is required"),
            (json!({"api_key": ""}), "api_key", "must not be empty"),
            (json!({"api_key": 42}), "api_key", "must be a string"),
            (
                json!({"api_key": ["key_abc"]}),
                "api_key",
                "must be a string",
            ),
            (json!({"api_key": "key_abc\n"}), "api_key", "whitespace"),
            (json!({"api_key": "key abc"}), "api_key", "whitespace"),
            (json!({"api_key": "key_é"}), "api_key", "printable ASCII"),
            (
                json!({"api_key": "key_\u{0}"}),
                "api_key",
                "printable ASCII",
            ),
            (
                json!({"api_key": "k".repeat(513)}),
                "api_key",
                "at most 512",
            ),
            (
                json!({"api_key": "k", "organization_id": 7}),
                "organization_id",
                "must be a string",
            ),
            (
                json!({"api_key": "k", "organization_id": "org 1"}),
                "organization_id",
                "whitespace",
            ),
            (
                json!({"api_key": "k", "organisation_id": "org-1"}),
                "organisation_id",
                "unknown field",
            ),
            (json!("key_abc"), "credentials", "must be a JSON object"),
            (json!(null), "credentials", "must be a JSON object"),
        ];
        for (raw, field, message) in cases {
            assert_field(&parse_err(&registry, id, &raw), field, message);
        }
        let max = registry
            .get(id)
            .unwrap()
            .parse_credentials(&json!({"api_key": "k".repeat(512)}));
        assert!(max.is_ok(), "512 characters are accepted");
    }
}

#[test]
fn error_messages_never_repeat_the_submitted_key() {
    let registry = local();
    let secret = "key_SECRETSECRETSECRET";
    for raw in [
        json!({"api_key": format!("{secret} ")}),
        json!({"api_key": format!("{secret}é")}),
        json!({ secret: "x" }),
    ] {
        let err = parse_err(&registry, ProviderId::RUNWAY, &raw);
        assert!(!err.to_string().contains(secret), "{err}");
        assert!(!format!("{err:?}").contains(secret), "{err:?}");
    }
}

#[test]
fn api_key_credentials_round_trip_and_hint() {
    let registry = local();
    for (id, key, hint) in [
        (ProviderId::RUNWAY, RUNWAY_KEY, "key_…9f2c"),
        (ProviderId::STABILITY, STABILITY_KEY, "sk-…9f2c"),
        (ProviderId::RUNWAY, "sim_abc", "…bc"),
    ] {
        let provider = registry.get(id).unwrap();
        for raw in [
            json!({"api_key": key}),
            json!({"api_key": key, "organization_id": "org-42"}),
            json!({"api_key": key, "organization_id": ""}),
        ] {
            let credentials = provider.parse_credentials(&raw).unwrap();
            assert_eq!(credentials.provider(), id);
            assert_eq!(credentials.hint(), hint);
            let plaintext = credentials.to_plaintext();
            let reparsed: Value = serde_json::from_slice(&plaintext).unwrap();
            assert_eq!(provider.parse_credentials(&reparsed).unwrap(), credentials);
            let CredentialsKind::ApiKey {
                api_key,
                organization_id,
            } = credentials.kind()
            else {
                panic!("api key credentials");
            };
            assert_eq!(api_key.expose_secret(), key);
            let expected_org = raw["organization_id"].as_str().filter(|s| !s.is_empty());
            assert_eq!(organization_id.as_deref(), expected_org);
            assert_eq!(
                reparsed.get("organization_id").and_then(Value::as_str),
                expected_org
            );

            let debug = format!("{credentials:?}");
            assert!(!debug.contains(key), "{debug}");
            assert!(!debug.contains(&key[4..]), "{debug}");
            assert!(debug.contains("[REDACTED]"), "{debug}");
        }
    }
}

#[test]
fn other_providers_credentials_are_not_equal() {
    let registry = local();
    let raw = json!({"api_key": RUNWAY_KEY});
    let runway = registry
        .get(ProviderId::RUNWAY)
        .unwrap()
        .parse_credentials(&raw)
        .unwrap();
    let stability = registry
        .get(ProviderId::STABILITY)
        .unwrap()
        .parse_credentials(&raw)
        .unwrap();
    assert_ne!(runway, stability);
    let other_key = registry
        .get(ProviderId::RUNWAY)
        .unwrap()
        .parse_credentials(&json!({"api_key": STABILITY_KEY}))
        .unwrap();
    assert_ne!(runway, other_key);
}

#[test]
fn service_account_as_object_or_string_parses_and_round_trips() {
    let registry = local();
    let veo = registry.get(ProviderId::VEO).unwrap();
    let key = TestKey::generate();
    let sa = service_account(&key, Some(PRIVATE_KEY_ID), TOKEN_URI);

    let from_object = veo
        .parse_credentials(&json!({"service_account": sa}))
        .unwrap();
    let from_string = veo
        .parse_credentials(&json!({"service_account": sa.to_string(), "location": "us-central1"}))
        .unwrap();
    assert_eq!(from_object, from_string, "location defaults to us-central1");
    assert_eq!(from_object.provider(), ProviderId::VEO);

    let CredentialsKind::ServiceAccount { account, location } = from_object.kind() else {
        panic!("service account credentials");
    };
    assert_eq!(location, "us-central1");
    assert_eq!(account.client_email, CLIENT_EMAIL);
    assert_eq!(account.private_key_id.as_deref(), Some(PRIVATE_KEY_ID));
    assert_eq!(account.private_key.expose_secret(), key.pem);
    assert_eq!(account.token_uri.as_str(), TOKEN_URI);
    assert_eq!(account.project_id, PROJECT_ID);

    // Stored form: only the fields byok uses, plus `type`.
    let stored: Value = serde_json::from_slice(&from_object.to_plaintext()).unwrap();
    assert_eq!(
        stored,
        json!({
            "service_account": {
                "type": "service_account",
                "project_id": PROJECT_ID,
                "private_key_id": PRIVATE_KEY_ID,
                "private_key": key.pem,
                "client_email": CLIENT_EMAIL,
                "token_uri": TOKEN_URI,
            },
            "location": "us-central1",
        })
    );
    assert_eq!(veo.parse_credentials(&stored).unwrap(), from_object);

    let elsewhere = veo
        .parse_credentials(&json!({"service_account": sa, "location": "europe-west4"}))
        .unwrap();
    assert_ne!(elsewhere, from_object);
    let stored: Value = serde_json::from_slice(&elsewhere.to_plaintext()).unwrap();
    assert_eq!(stored["location"], "europe-west4");
    assert_eq!(veo.parse_credentials(&stored).unwrap(), elsewhere);
}

#[test]
fn service_account_hints_and_debug() {
    let registry = local();
    let veo = registry.get(ProviderId::VEO).unwrap();
    let key = TestKey::generate();

    let with_kid = veo
        .parse_credentials(
            &json!({"service_account": service_account(&key, Some(PRIVATE_KEY_ID), TOKEN_URI)}),
        )
        .unwrap();
    assert_eq!(with_kid.hint(), format!("{CLIENT_EMAIL} (key …9a0b)"));
    let without_kid = veo
        .parse_credentials(&json!({"service_account": service_account(&key, None, TOKEN_URI)}))
        .unwrap();
    assert_eq!(without_kid.hint(), CLIENT_EMAIL);
    let stored: Value = serde_json::from_slice(&without_kid.to_plaintext()).unwrap();
    assert!(stored["service_account"].get("private_key_id").is_none());
    assert_eq!(veo.parse_credentials(&stored).unwrap(), without_kid);

    for credentials in [&with_kid, &without_kid] {
        let debug = format!("{credentials:?}");
        assert!(!debug.contains(key.pem_line()), "{debug}");
        assert!(!debug.contains("BEGIN PRIVATE KEY"), "{debug}");
        assert!(debug.contains(CLIENT_EMAIL), "{debug}");
        assert!(debug.contains("[REDACTED]"), "{debug}");
    }
}

#[test]
fn service_account_fields_are_checked_by_name() {
    let registry = local();
    let key = TestKey::generate();
    let sa = service_account(&key, Some(PRIVATE_KEY_ID), TOKEN_URI);
    let with = |field: &str, value: Value| {
        let mut sa = sa.clone();
        if value.is_null() {
            sa.as_object_mut().unwrap().remove(field);
        } else {
            sa[field] = value;
        }
        json!({"service_account": sa})
    };
    let cases = [
        (json!({}), "service_account", "is required"),
        (
            json!({"service_account": null}),
            "service_account",
            "is required",
        ),
        (
            json!({"service_account": 5}),
            "service_account",
            "JSON object",
        ),
        (
            json!({"service_account": ""}),
            "service_account",
            "must not be empty",
        ),
        (
            json!({"service_account": "[1,2]"}),
            "service_account",
            "JSON object",
        ),
        (
            json!({"service_account": "{\"type\": "}),
            "service_account",
            "not valid JSON (line 1",
        ),
        (
            json!({"service_account": sa, "region": "x"}),
            "region",
            "unknown field",
        ),
        (
            json!({"service_account": sa, "location": "US"}),
            "location",
            "^[a-z0-9-]{1,40}$",
        ),
        (
            json!({"service_account": sa, "location": 1}),
            "location",
            "must be a string",
        ),
        (
            json!({"service_account": sa, "location": "a".repeat(41)}),
            "location",
            "^[a-z0-9-]{1,40}$",
        ),
        (
            with("type", Value::Null),
            "service_account.type",
            "is required",
        ),
        (
            with("type", json!("authorized_user")),
            "service_account.type",
            "\"service_account\"",
        ),
        (
            with("client_email", Value::Null),
            "service_account.client_email",
            "is required",
        ),
        (
            with("client_email", json!("")),
            "service_account.client_email",
            "must not be empty",
        ),
        (
            with("client_email", json!(7)),
            "service_account.client_email",
            "must be a string",
        ),
        (
            with("client_email", json!("not-an-email")),
            "service_account.client_email",
            "email",
        ),
        (
            with("private_key_id", json!(12)),
            "service_account.private_key_id",
            "must be a string",
        ),
        (
            with("private_key", Value::Null),
            "service_account.private_key",
            "is required",
        ),
        (
            with("private_key", json!(true)),
            "service_account.private_key",
            "must be a string",
        ),
        (
            with("private_key", json!("hello")),
            "service_account.private_key",
            "PEM",
        ),
        (
            with(
                "private_key",
                json!("-----BEGIN PRIVATE KEY-----\nMIIBVQIBADANBg==\n-----END PRIVATE KEY-----\n"),
            ),
            "service_account.private_key",
            "RSA private key",
        ),
        (
            with(
                "private_key",
                json!(key.pem.replace("-----END PRIVATE KEY-----", "")),
            ),
            "service_account.private_key",
            "END PRIVATE KEY",
        ),
        (
            with("private_key", json!(key.pem.replacen('M', "*", 1))),
            "service_account.private_key",
            "base64",
        ),
        (
            with("token_uri", Value::Null),
            "service_account.token_uri",
            "is required",
        ),
        (
            with("token_uri", json!("not a url")),
            "service_account.token_uri",
            "not a valid URL",
        ),
        (
            with("token_uri", json!("ftp://example.com/token")),
            "service_account.token_uri",
            "http and https",
        ),
        (
            with("token_uri", json!("https://u:p@example.com/token")),
            "service_account.token_uri",
            "user name",
        ),
        (
            with("project_id", Value::Null),
            "service_account.project_id",
            "is required",
        ),
        (
            with("project_id", json!("Bad/Project")),
            "service_account.project_id",
            "lowercase",
        ),
    ];
    for (raw, field, message) in cases {
        let err = parse_err(&registry, ProviderId::VEO, &raw);
        assert_field(&err, field, message);
        assert!(!err.to_string().contains(key.pem_line()), "{err}");
    }
}

#[test]
fn a_private_key_inside_invalid_json_is_not_echoed() {
    let registry = local();
    let key = TestKey::generate();
    let mut text = service_account(&key, None, TOKEN_URI).to_string();
    text.pop(); // drop the closing brace
    let err = parse_err(
        &registry,
        ProviderId::VEO,
        &json!({"service_account": text}),
    );
    assert_eq!(err.field, "service_account");
    assert!(!err.message.contains(key.pem_line()), "{err}");
    assert!(!err.message.contains("PRIVATE KEY"), "{err}");
}

#[test]
fn a_pkcs1_key_and_an_escaped_pem_are_accepted() {
    let registry = local();
    let veo = registry.get(ProviderId::VEO).unwrap();
    let key = TestKey::generate();

    let mut sa = service_account(&key, None, TOKEN_URI);
    sa["private_key"] = key.pem.replace('\n', "\\n").into();
    assert!(
        veo.parse_credentials(&json!({"service_account": sa}))
            .is_ok()
    );

    let pkcs8 = key.pair.as_der().unwrap();
    let pkcs1 = crate::support::pem(pkcs1_from_pkcs8(pkcs8.as_ref()), "RSA PRIVATE KEY");
    sa["private_key"] = pkcs1.clone().into();
    let credentials = veo
        .parse_credentials(&json!({"service_account": sa}))
        .unwrap();
    let CredentialsKind::ServiceAccount { account, .. } = credentials.kind() else {
        panic!("service account credentials");
    };
    assert_eq!(
        account.private_key.expose_secret(),
        pkcs1,
        "stored as given"
    );
}

/// The `RSAPrivateKey` inside a PKCS#8 `PrivateKeyInfo`
/// (SEQUENCE { INTEGER version, SEQUENCE algorithm, OCTET STRING privateKey }).
fn pkcs1_from_pkcs8(der: &[u8]) -> &[u8] {
    /// Splits one DER TLV off `input`: (tag, contents, rest).
    fn tlv(input: &[u8]) -> (u8, &[u8], &[u8]) {
        let tag = input[0];
        let (len, header) = match input[1] {
            n if n < 0x80 => (usize::from(n), 2),
            n => {
                let count = usize::from(n & 0x7f);
                let len = input[2..2 + count]
                    .iter()
                    .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
                (len, 2 + count)
            }
        };
        (tag, &input[header..header + len], &input[header + len..])
    }
    let (tag, info, _) = tlv(der);
    assert_eq!(tag, 0x30);
    let (tag, _version, rest) = tlv(info);
    assert_eq!(tag, 0x02);
    let (tag, _algorithm, rest) = tlv(rest);
    assert_eq!(tag, 0x30);
    let (tag, private_key, _) = tlv(rest);
    assert_eq!(tag, 0x04);
    private_key
}
