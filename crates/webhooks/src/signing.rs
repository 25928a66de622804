//! Signing as the Standard Webhooks specification says
//! (https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md):
//! the content signed is `{webhook-id}.{webhook-timestamp}.{body}`, the signature is
//! HMAC-SHA256 under the endpoint's secret, sent as `v1,<base64>` in `webhook-signature`
//! (several, space-separated, while a secret is being rotated); the secret is shown as
//! `whsec_<base64 of its bytes>`. Receivers verify with the official libraries (the
//! `standardwebhooks` packages, Svix's), so every choice here follows the specification and
//! nothing is added to it.

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

/// The prefix of a secret's text form.
const PREFIX: &str = "whsec_";
/// The signature scheme of the specification: symmetric, HMAC-SHA256.
const SCHEME: &str = "v1";
/// The fewest bytes of a secret (the specification: 24 to 64).
pub const MIN_SECRET_BYTES: usize = 24;
/// The most bytes of a secret.
pub const MAX_SECRET_BYTES: usize = 64;
/// How far a delivery's timestamp may be from the verifier's clock, either way (the
/// official libraries' tolerance): older deliveries are refused as replays.
pub const TOLERANCE: Duration = Duration::from_secs(5 * 60);
/// The size of a secret made by [`SigningSecret::generate`].
const GENERATED_BYTES: usize = 32;

/// An endpoint's signing secret. `Debug` shows nothing of it; its bytes are wiped on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningSecret(Zeroizing<Vec<u8>>);

/// Why a text is not a signing secret (the text itself is never repeated).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// Not `whsec_` followed by base64.
    #[error("a signing secret is `whsec_` followed by base64")]
    Format,
    /// Too short or too long.
    #[error("a signing secret holds {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes")]
    Length,
    /// The system's random source failed.
    #[error("the system's random source failed")]
    Random,
}

/// Why a delivery does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// `webhook-timestamp` is not whole seconds since the epoch.
    #[error("webhook-timestamp is not a number of seconds")]
    BadTimestamp,
    /// The timestamp is more than [`TOLERANCE`] in the past.
    #[error("the delivery is too old")]
    TooOld,
    /// The timestamp is more than [`TOLERANCE`] in the future.
    #[error("the delivery's timestamp is in the future")]
    TooNew,
    /// No `v1` signature in `webhook-signature` matches any of the secrets.
    #[error("no signature matches")]
    NoMatch,
}

impl SigningSecret {
    /// A fresh random secret of 32 bytes.
    pub fn generate() -> Result<SigningSecret, SecretError> {
        let mut bytes = Zeroizing::new(vec![0u8; GENERATED_BYTES]);
        getrandom::fill(&mut bytes[..]).map_err(|_| SecretError::Random)?;
        Ok(SigningSecret(bytes))
    }

    /// Reads a secret's text form, `whsec_<base64>`.
    pub fn parse(text: &str) -> Result<SigningSecret, SecretError> {
        let encoded = text.strip_prefix(PREFIX).ok_or(SecretError::Format)?;
        let bytes = Zeroizing::new(STANDARD.decode(encoded).map_err(|_| SecretError::Format)?);
        if !(MIN_SECRET_BYTES..=MAX_SECRET_BYTES).contains(&bytes.len()) {
            return Err(SecretError::Length);
        }
        Ok(SigningSecret(bytes))
    }

    /// The text form, `whsec_<base64>`: shown to the endpoint's owner once, and what is
    /// sealed for storage.
    pub fn to_text(&self) -> Zeroizing<String> {
        Zeroizing::new(format!("{PREFIX}{}", STANDARD.encode(&self.0[..])))
    }

    fn mac(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
        // HMAC takes keys of any length: this cannot fail.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0[..])
            .expect("HMAC accepts a key of any length");
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// The `webhook-signature` value of one delivery: `v1,<base64 HMAC-SHA256>` over
    /// `{msg_id}.{timestamp}.{body}`.
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        let tag = self.mac(msg_id, timestamp, body).finalize().into_bytes();
        format!("{SCHEME},{}", STANDARD.encode(tag))
    }
}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningSecret([redacted])")
    }
}

/// Verifies a delivery as a receiver does: the timestamp within [`TOLERANCE`] of `now`
/// (seconds since the epoch), and some `v1` signature of the space-separated
/// `signature_header` made by one of `secrets` (several while a secret is rotated).
/// Signatures are compared in constant time.
pub fn verify(
    secrets: &[SigningSecret],
    msg_id: &str,
    timestamp_header: &str,
    signature_header: &str,
    body: &[u8],
    now: i64,
) -> Result<(), VerifyError> {
    let timestamp: i64 = timestamp_header
        .trim()
        .parse()
        .map_err(|_| VerifyError::BadTimestamp)?;
    let tolerance = TOLERANCE.as_secs() as i64;
    if timestamp < now.saturating_sub(tolerance) {
        return Err(VerifyError::TooOld);
    }
    if timestamp > now.saturating_add(tolerance) {
        return Err(VerifyError::TooNew);
    }
    let candidates: Vec<Vec<u8>> = signature_header
        .split(' ')
        .filter_map(|entry| entry.split_once(','))
        .filter(|(scheme, _)| *scheme == SCHEME)
        .filter_map(|(_, signature)| STANDARD.decode(signature).ok())
        .collect();
    for secret in secrets {
        let mac = secret.mac(msg_id, timestamp, body);
        if candidates
            .iter()
            .any(|candidate| mac.clone().verify_slice(candidate).is_ok())
        {
            return Ok(());
        }
    }
    Err(VerifyError::NoMatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the specification's reference implementations' tests: secret
    /// `whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw`, id `msg_p5jXN8AQM9LWM0D4loKWxJek`, timestamp
    /// 1614265330, body `{"test": 2432232314}`.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TIMESTAMP: i64 = 1_614_265_330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn the_specifications_example_signs_and_verifies() {
        let secrets = [SigningSecret::parse(SECRET).unwrap()];
        assert_eq!(secrets[0].sign(ID, TIMESTAMP, BODY), SIGNATURE);
        let ts = TIMESTAMP.to_string();
        assert_eq!(
            verify(&secrets, ID, &ts, SIGNATURE, BODY, TIMESTAMP),
            Ok(())
        );
        // Several signatures, one of them ours (a rotation), and other schemes, are fine.
        let several = format!("v1a,AAAA v1,bm90IGl0 {SIGNATURE}");
        assert_eq!(verify(&secrets, ID, &ts, &several, BODY, TIMESTAMP), Ok(()));
        assert_eq!(
            verify(&secrets, ID, &ts, SIGNATURE, b"{\"test\": 1}", TIMESTAMP),
            Err(VerifyError::NoMatch)
        );
        assert_eq!(
            verify(&secrets, "msg_other", &ts, SIGNATURE, BODY, TIMESTAMP),
            Err(VerifyError::NoMatch)
        );
        assert_eq!(
            verify(&secrets, ID, &ts, SIGNATURE, BODY, TIMESTAMP + 301),
            Err(VerifyError::TooOld)
        );
        assert_eq!(
            verify(&secrets, ID, &ts, SIGNATURE, BODY, TIMESTAMP - 301),
            Err(VerifyError::TooNew)
        );
        assert_eq!(
            verify(&secrets, ID, "soon", SIGNATURE, BODY, TIMESTAMP),
            Err(VerifyError::BadTimestamp)
        );
    }

    #[test]
    fn a_rotated_secret_still_verifies_with_the_old_one_listed() {
        let old = [SigningSecret::parse(SECRET).unwrap()];
        let new = [SigningSecret::generate().unwrap()];
        assert_ne!(old, new);
        let ts = TIMESTAMP.to_string();
        let both = format!(
            "{} {}",
            new[0].sign(ID, TIMESTAMP, BODY),
            old[0].sign(ID, TIMESTAMP, BODY)
        );
        assert_eq!(verify(&old, ID, &ts, &both, BODY, TIMESTAMP), Ok(()));
        assert_eq!(verify(&new, ID, &ts, &both, BODY, TIMESTAMP), Ok(()));
        let only_new = new[0].sign(ID, TIMESTAMP, BODY);
        assert_eq!(
            verify(&old, ID, &ts, &only_new, BODY, TIMESTAMP),
            Err(VerifyError::NoMatch)
        );
    }

    #[test]
    fn secrets_round_trip_and_bad_ones_are_refused_without_echo() {
        let secret = SigningSecret::generate().unwrap();
        let text = secret.to_text();
        assert!(text.starts_with("whsec_"));
        assert_eq!(SigningSecret::parse(&text).unwrap(), secret);
        assert_eq!(format!("{secret:?}"), "SigningSecret([redacted])");
        assert_eq!(
            SigningSecret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            Err(SecretError::Format)
        );
        assert_eq!(
            SigningSecret::parse("whsec_not base64!"),
            Err(SecretError::Format)
        );
        assert_eq!(
            SigningSecret::parse("whsec_c2hvcnQ="),
            Err(SecretError::Length)
        );
        let long = format!("whsec_{}", STANDARD.encode([7u8; 65]));
        assert_eq!(SigningSecret::parse(&long), Err(SecretError::Length));
    }
}
