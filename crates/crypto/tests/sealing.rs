//! Behaviour of the key ring as the rest of the system relies on it.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use byok_core::{DEFAULT_PROJECT_ID, ProjectUser, ProviderId};
use byok_crypto::{
    CryptoError, KeyId, KeyRing, KeyRingError, SealContext, SealedFormat, generate_key_hex,
};
use proptest::prelude::*;
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

const KEY_A: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const KEY_B: &str = "2222222222222222222222222222222222222222222222222222222222222222";

fn ring(spec: &str) -> KeyRing {
    KeyRing::parse(&SecretString::from(spec)).expect("valid ring")
}

fn user_a() -> Uuid {
    Uuid::parse_str("0b6c1d2e-3f40-4a5b-8c6d-7e8f90a1b2c3").unwrap()
}

fn user_b() -> Uuid {
    Uuid::parse_str("9a8b7c6d-5e4f-4a3b-9c2d-1e0f00112233").unwrap()
}

fn project_p() -> Uuid {
    Uuid::parse_str("0195f0c0-1111-7222-8333-444455556666").unwrap()
}

fn project_q() -> Uuid {
    Uuid::parse_str("0195f0c0-9999-7888-8777-666655554444").unwrap()
}

fn ctx(user: Uuid, provider: ProviderId) -> SealContext {
    SealContext::new(ProjectUser::new(project_p(), user), provider)
}

fn ctx_in(project: Uuid, user: Uuid, provider: ProviderId) -> SealContext {
    SealContext::new(ProjectUser::new(project, user), provider)
}

/// A `v1:` value as builds before projects sealed them, made here from the
/// format's definition (AES-256-GCM, AAD without a project) rather than by
/// the ring, which only seals `v2` now.
fn seal_v1(key_id: &str, key_hex: &str, context: &SealContext, plaintext: &[u8]) -> String {
    use aes_gcm::aead::{Aead, KeyInit, Payload};
    let cipher = aes_gcm::Aes256Gcm::new_from_slice(&hex::decode(key_hex).unwrap()).unwrap();
    let nonce = [7u8; 12];
    let aad = byok_crypto::canonical_aad_v1(context, key_id);
    let body = cipher
        .encrypt(
            &nonce.into(),
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        )
        .unwrap();
    format!(
        "v1:{key_id}:{}:{}",
        URL_SAFE_NO_PAD.encode(nonce),
        URL_SAFE_NO_PAD.encode(body)
    )
}

const SECRET: &[u8] = br#"{"api_key":"key_0123456789abcdef"}"#;

#[test]
fn seal_then_open_round_trips_and_hides_the_plaintext() {
    let ring = ring(&format!("2:{KEY_A},1:{KEY_B}"));
    let c = ctx(user_a(), ProviderId::RUNWAY);
    let sealed = ring.seal(&c, SECRET).unwrap();

    assert!(
        sealed.starts_with("v2:2:"),
        "sealed under the primary: {sealed}"
    );
    assert!(!sealed.contains("key_0123456789abcdef"));
    assert_eq!(
        ring.open(&c, &sealed).unwrap().expose_secret().as_slice(),
        SECRET
    );
    assert_eq!(
        SealedFormat::of(&sealed).unwrap(),
        SealedFormat::V2 { key_id: "2".into() }
    );
}

#[test]
fn the_same_plaintext_seals_differently_each_time() {
    let ring = ring(&format!("1:{KEY_A}"));
    let c = ctx(user_a(), ProviderId::RUNWAY);
    assert_ne!(
        ring.seal(&c, SECRET).unwrap(),
        ring.seal(&c, SECRET).unwrap()
    );
}

/// Rebuilds a v2 value after `edit` changed its decoded nonce or body.
fn tamper(sealed: &str, edit: impl FnOnce(&mut Vec<u8>, &mut Vec<u8>)) -> String {
    let parts: Vec<&str> = sealed.split(':').collect();
    let mut nonce = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    let mut body = URL_SAFE_NO_PAD.decode(parts[3]).unwrap();
    edit(&mut nonce, &mut body);
    format!(
        "v2:{}:{}:{}",
        parts[1],
        URL_SAFE_NO_PAD.encode(&nonce),
        URL_SAFE_NO_PAD.encode(&body)
    )
}

#[test]
fn any_single_bit_flip_in_nonce_ciphertext_or_tag_fails() {
    let ring = ring(&format!("1:{KEY_A}"));
    let c = ctx(user_a(), ProviderId::RUNWAY);
    let sealed = ring.seal(&c, SECRET).unwrap();
    let (nonce_len, body_len) = {
        let parts: Vec<&str> = sealed.split(':').collect();
        (
            URL_SAFE_NO_PAD.decode(parts[2]).unwrap().len(),
            URL_SAFE_NO_PAD.decode(parts[3]).unwrap().len(),
        )
    };
    assert_eq!(nonce_len, 12);
    assert_eq!(
        body_len,
        SECRET.len() + 16,
        "ciphertext followed by a 16-byte tag"
    );

    let mut checked = 0;
    for bit in 0..nonce_len * 8 {
        let bad = tamper(&sealed, |n, _| n[bit / 8] ^= 1 << (bit % 8));
        assert_eq!(ring.open(&c, &bad).unwrap_err(), CryptoError::Unauthentic);
        checked += 1;
    }
    // The body covers both the ciphertext and the trailing tag.
    for bit in 0..body_len * 8 {
        let bad = tamper(&sealed, |_, b| b[bit / 8] ^= 1 << (bit % 8));
        assert_eq!(ring.open(&c, &bad).unwrap_err(), CryptoError::Unauthentic);
        checked += 1;
    }
    assert_eq!(checked, (12 + SECRET.len() + 16) * 8);
}

#[test]
fn truncated_or_extended_bodies_fail() {
    let ring = ring(&format!("1:{KEY_A}"));
    let c = ctx(user_a(), ProviderId::RUNWAY);
    let sealed = ring.seal(&c, SECRET).unwrap();
    let shorter = tamper(&sealed, |_, b| {
        b.pop();
    });
    let longer = tamper(&sealed, |_, b| b.push(0));
    assert_eq!(
        ring.open(&c, &shorter).unwrap_err(),
        CryptoError::Unauthentic
    );
    assert_eq!(
        ring.open(&c, &longer).unwrap_err(),
        CryptoError::Unauthentic
    );
}

#[test]
fn a_value_is_bound_to_its_project_user_provider_and_key_id() {
    // Both ids carry the same key bytes, so only the AAD can tell them apart.
    let ring = ring(&format!("2:{KEY_A},1:{KEY_A}"));
    let owner = ctx(user_a(), ProviderId::RUNWAY);
    let sealed = ring.seal(&owner, SECRET).unwrap();

    let other_user = ctx(user_b(), ProviderId::RUNWAY);
    let other_provider = ctx(user_a(), ProviderId::STABILITY);
    // The same user id in another project is another user.
    for other_project in [project_q(), DEFAULT_PROJECT_ID] {
        assert_eq!(
            ring.open(
                &ctx_in(other_project, user_a(), ProviderId::RUNWAY),
                &sealed
            )
            .unwrap_err(),
            CryptoError::Unauthentic
        );
    }
    assert_eq!(
        ring.open(&other_user, &sealed).unwrap_err(),
        CryptoError::Unauthentic
    );
    assert_eq!(
        ring.open(&other_provider, &sealed).unwrap_err(),
        CryptoError::Unauthentic
    );

    let relabelled = sealed.replacen("v2:2:", "v2:1:", 1);
    assert_eq!(
        ring.open(&owner, &relabelled).unwrap_err(),
        CryptoError::Unauthentic
    );
    // Relabelled as the older format: another AAD, so it fails too.
    let relabelled = sealed.replacen("v2:", "v1:", 1);
    let in_default = ctx_in(DEFAULT_PROJECT_ID, user_a(), ProviderId::RUNWAY);
    assert_eq!(
        ring.open(&in_default, &relabelled).unwrap_err(),
        CryptoError::Unauthentic
    );
    assert_eq!(
        ring.open(&owner, &relabelled).unwrap_err(),
        CryptoError::Unauthentic
    );
    assert!(ring.open(&owner, &sealed).is_ok());
}

#[test]
fn v1_values_open_only_in_the_default_project_and_rewrap_to_v2() {
    let ring = ring(&format!("2:{KEY_A},1:{KEY_B}"));
    let at_home = ctx_in(DEFAULT_PROJECT_ID, user_a(), ProviderId::VEO);
    let v1 = seal_v1("1", KEY_B, &at_home, SECRET);
    assert_eq!(
        SealedFormat::of(&v1).unwrap(),
        SealedFormat::V1 { key_id: "1".into() }
    );
    assert_eq!(
        ring.open(&at_home, &v1).unwrap().expose_secret().as_slice(),
        SECRET
    );
    // Every v1 row moved into the default project; one found elsewhere was
    // copied there.
    let copied = ctx_in(project_p(), user_a(), ProviderId::VEO);
    assert_eq!(
        ring.open(&copied, &v1).unwrap_err(),
        CryptoError::Unauthentic
    );
    assert_eq!(
        ring.reseal(&copied, &v1).unwrap_err(),
        CryptoError::Unauthentic
    );
    assert!(
        !ring.is_current(&v1),
        "v1 under the primary key is still old"
    );
    let v1_primary = seal_v1("2", KEY_A, &at_home, SECRET);
    assert!(!ring.is_current(&v1_primary));

    let upgraded = ring
        .reseal(&at_home, &v1)
        .unwrap()
        .expect("v1 is never current");
    assert!(upgraded.starts_with("v2:2:"), "{upgraded}");
    assert_eq!(
        ring.open(&at_home, &upgraded)
            .unwrap()
            .expose_secret()
            .as_slice(),
        SECRET
    );
}

#[test]
fn an_unknown_key_id_is_a_clear_error() {
    let old = ring(&format!("7:{KEY_A}"));
    let c = ctx(user_a(), ProviderId::VEO);
    let sealed = old.seal(&c, SECRET).unwrap();
    let new = ring(&format!("8:{KEY_B}"));
    let err = new.open(&c, &sealed).unwrap_err();
    assert_eq!(err, CryptoError::UnknownKeyId("7".into()));
    assert!(err.to_string().contains("key id `7`"), "{err}");
}

#[test]
fn values_sealed_under_an_older_key_open_and_reseal_under_the_primary() {
    let c = ctx(user_a(), ProviderId::STABILITY);
    let sealed_old = ring(&format!("1:{KEY_B}")).seal(&c, SECRET).unwrap();
    let rotated = ring(&format!("2:{KEY_A},1:{KEY_B}"));

    assert!(!rotated.is_current(&sealed_old));
    let resealed = rotated.reseal(&c, &sealed_old).unwrap().expect("changed");
    assert!(resealed.starts_with("v2:2:"));
    assert!(rotated.is_current(&resealed));
    assert_eq!(
        rotated
            .open(&c, &resealed)
            .unwrap()
            .expose_secret()
            .as_slice(),
        SECRET
    );
    assert_eq!(rotated.reseal(&c, &resealed).unwrap(), None, "idempotent");
    // Once rewrapped, the old key can leave the ring.
    let retired = ring(&format!("2:{KEY_A}"));
    assert!(retired.open(&c, &resealed).is_ok());
}

#[test]
fn reseal_refuses_a_current_value_that_does_not_authenticate() {
    let ring = ring(&format!("1:{KEY_A}"));
    let sealed = ring
        .seal(&ctx(user_a(), ProviderId::RUNWAY), SECRET)
        .unwrap();
    let err = ring
        .reseal(&ctx(user_b(), ProviderId::RUNWAY), &sealed)
        .unwrap_err();
    assert_eq!(err, CryptoError::Unauthentic);
}

#[derive(serde::Deserialize)]
struct LegacyFixture {
    key_hex: String,
    vectors: Vec<LegacyVector>,
}

#[derive(serde::Deserialize)]
struct LegacyVector {
    plaintext: String,
    sealed: String,
}

fn legacy_fixture() -> LegacyFixture {
    // Produced by Python's `cryptography` (fixtures/make_legacy_vectors.py),
    // an implementation that shares no code with ours.
    serde_json::from_str(include_str!("fixtures/legacy_vectors.json")).unwrap()
}

#[test]
fn legacy_values_from_an_independent_implementation_open_and_rewrap_to_v2() {
    let fixture = legacy_fixture();
    let ring = ring(&format!("3:{KEY_A}"))
        .with_legacy_key(&SecretString::from(fixture.key_hex.as_str()))
        .unwrap();
    let accepting = self::ring(&format!("3:{KEY_A}"))
        .with_legacy_key(&SecretString::from(fixture.key_hex.as_str()))
        .unwrap()
        .accept_legacy_everywhere();
    assert_eq!(fixture.vectors.len(), 4);
    for v in &fixture.vectors {
        assert_eq!(SealedFormat::of(&v.sealed).unwrap(), SealedFormat::Legacy);
        let c = ctx(user_b(), ProviderId::RUNWAY);
        // Bound to nothing, legacy values open only to be re-sealed...
        let refused = ring.open(&c, &v.sealed).unwrap_err();
        assert_eq!(refused, CryptoError::LegacyNotAccepted);
        assert!(
            refused.to_string().contains("byok keys rewrap"),
            "{refused}"
        );
        // ...or, when the operator accepts that, for any row.
        let opened = accepting.open(&c, &v.sealed).unwrap();
        assert_eq!(opened.expose_secret().as_slice(), v.plaintext.as_bytes());

        let upgraded = ring
            .reseal(&c, &v.sealed)
            .unwrap()
            .expect("legacy is never current");
        assert!(upgraded.starts_with("v2:3:"));
        assert_eq!(
            ring.open(&c, &upgraded).unwrap().expose_secret().as_slice(),
            v.plaintext.as_bytes()
        );
        // ...and from then on the value is bound to its row.
        assert_eq!(
            ring.open(&ctx(user_a(), ProviderId::RUNWAY), &upgraded)
                .unwrap_err(),
            CryptoError::Unauthentic
        );
    }
}

#[test]
fn legacy_values_need_the_legacy_key_and_detect_tampering() {
    let fixture = legacy_fixture();
    let c = ctx(user_a(), ProviderId::RUNWAY);
    let sealed = &fixture.vectors[0].sealed;
    assert_eq!(
        ring(&format!("1:{KEY_A}")).open(&c, sealed).unwrap_err(),
        CryptoError::NoLegacyKey
    );

    let wrong_key = ring(&format!("1:{KEY_A}"))
        .with_legacy_key(&SecretString::from(KEY_B))
        .unwrap()
        .accept_legacy_everywhere();
    assert_eq!(
        wrong_key.open(&c, sealed).unwrap_err(),
        CryptoError::Unauthentic
    );

    let right_key = ring(&format!("1:{KEY_A}"))
        .with_legacy_key(&SecretString::from(fixture.key_hex.as_str()))
        .unwrap()
        .accept_legacy_everywhere();
    let mut flipped = sealed.clone().into_bytes();
    let last = flipped.len() - 1;
    flipped[last] = if flipped[last] == b'0' { b'1' } else { b'0' };
    let flipped = String::from_utf8(flipped).unwrap();
    assert_eq!(
        right_key.open(&c, &flipped).unwrap_err(),
        CryptoError::Unauthentic
    );
}

#[test]
fn key_ring_parsing_reports_the_position_and_never_the_key() {
    let cases = [
        ("", KeyRingError::Empty),
        ("  ", KeyRingError::Empty),
        (
            "1:abcd",
            KeyRingError::BadEntry {
                position: 1,
                reason: "key must be 64 hex characters (32 bytes)",
            },
        ),
        (
            &format!("1:{KEY_A},{KEY_B}") as &str,
            KeyRingError::BadEntry {
                position: 2,
                reason: "expected <id>:<64 hex>",
            },
        ),
        (
            &format!("a:b:{KEY_A}"),
            KeyRingError::BadEntry {
                position: 1,
                reason: "key must be 64 hex characters (32 bytes)",
            },
        ),
        (
            &format!("1:{KEY_A},1:{KEY_B}"),
            KeyRingError::DuplicateId {
                position: 2,
                id: "1".into(),
            },
        ),
        (
            &format!("1:{KEY_A},"),
            KeyRingError::BadEntry {
                position: 2,
                reason: "empty entry",
            },
        ),
    ];
    for (spec, expected) in cases {
        let err = KeyRing::parse(&SecretString::from(spec)).unwrap_err();
        assert_eq!(err, expected, "spec {spec:?}");
        let text = err.to_string();
        assert!(!text.contains(KEY_A) && !text.contains(KEY_B), "{text}");
    }
    let spaced = ring(&format!(" 2 : {KEY_A} , 1:{KEY_B} "));
    assert_eq!(spaced.key_ids().collect::<Vec<_>>(), ["2", "1"]);
}

#[test]
fn debug_output_shows_ids_but_no_key_material() {
    let ring = ring(&format!("2:{KEY_A},1:{KEY_B}"))
        .with_legacy_key(&SecretString::from(KEY_B))
        .unwrap();
    let text = format!("{ring:?}");
    assert!(text.contains("\"2\"") && text.contains("\"1\""), "{text}");
    assert!(!text.contains("1111") && !text.contains("2222"), "{text}");

    let c = ctx(user_a(), ProviderId::RUNWAY);
    let opened = ring.open(&c, &ring.seal(&c, SECRET).unwrap()).unwrap();
    let shown = format!("{opened:?}");
    assert!(!shown.contains("key_0123"), "{shown}");
}

#[test]
fn generated_keys_are_fresh_64_hex_keys_the_ring_accepts() {
    let a = generate_key_hex().unwrap();
    let b = generate_key_hex().unwrap();
    for k in [&a, &b] {
        assert_eq!(k.expose_secret().len(), 64);
        assert!(k.expose_secret().bytes().all(|c| c.is_ascii_hexdigit()));
    }
    assert_ne!(a.expose_secret(), b.expose_secret());
    let single = KeyRing::single(KeyId::new("k1").unwrap(), &a).unwrap();
    assert_eq!(single.primary_key_id(), "k1");
}

#[test]
fn malformed_values_are_rejected_with_a_reason() {
    let ring = ring(&format!("1:{KEY_A}"));
    let c = ctx(user_a(), ProviderId::RUNWAY);
    for bad in [
        "",
        "v1:",
        "v1:1:abc",
        "v2:",
        "v2:1:abc",
        "v3:1:AAAAAAAAAAAAAAAA:AAAAAAAAAAAAAAAAAAAAAA",
        "v1:1:AAAAAAAAAAAAAAAA:AAAA",
        "v2:1:AAAAAAAAAAAAAAAA:AAAA",
        "v1:bad id:AAAAAAAAAAAAAAAA:AAAAAAAAAAAAAAAAAAAAAA",
        "v1:1:AAAAAAAAAAAAAAAA==:AAAAAAAAAAAAAAAAAAAAAA",
        "zz:00:00",
        "00:00:00",
        "not a sealed value",
    ] {
        assert!(
            matches!(ring.open(&c, bad), Err(CryptoError::Malformed(_))),
            "{bad:?} -> {:?}",
            ring.open(&c, bad).map(|_| ())
        );
    }
    let huge = format!("v1:1:AAAAAAAAAAAAAAAA:{}", "A".repeat(70_000));
    assert_eq!(
        ring.open(&c, &huge).unwrap_err(),
        CryptoError::Malformed("longer than 64 KiB")
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_garbage_never_panics(input in ".{0,300}") {
        let ring = ring(&format!("1:{KEY_A}"));
        let c = ctx(user_a(), ProviderId::RUNWAY);
        let _ = ring.open(&c, &input);
        let _ = ring.reseal(&c, &input);
        let _ = SealedFormat::of(&input);
        let _ = KeyRing::parse(&SecretString::from(input.as_str()));
    }

    #[test]
    fn well_shaped_garbage_never_panics_and_never_opens(
        key_id in "[A-Za-z0-9_-]{0,40}",
        nonce in proptest::collection::vec(any::<u8>(), 0..20),
        body in proptest::collection::vec(any::<u8>(), 0..80),
    ) {
        let ring = ring(&format!("1:{KEY_A}"));
        let c = ctx(user_a(), ProviderId::RUNWAY);
        for version in ["v1", "v2"] {
            let value = format!("{version}:{key_id}:{}:{}", URL_SAFE_NO_PAD.encode(&nonce), URL_SAFE_NO_PAD.encode(&body));
            prop_assert!(ring.open(&c, &value).is_err());
        }
        let legacy = format!("{}:{}:{}", hex::encode(&nonce), hex::encode(&body), hex::encode(&body));
        prop_assert!(ring.open(&c, &legacy).is_err());
    }

    #[test]
    fn any_plaintext_round_trips(plaintext in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let ring = ring(&format!("1:{KEY_A}"));
        let c = ctx(user_b(), ProviderId::VEO);
        let sealed = ring.seal(&c, &plaintext).unwrap();
        let opened = ring.open(&c, &sealed).unwrap();
        prop_assert_eq!(opened.expose_secret().as_slice(), plaintext.as_slice());
    }
}
