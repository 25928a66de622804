//! The versioned key ring: seal under the primary key, open under any key
//! the ring holds, re-seal old values under the primary.

use std::fmt;

use aes_gcm::aead::consts::U12;
use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use secrecy::{ExposeSecret, SecretBox, SecretString};
use zeroize::Zeroizing;

use crate::aad::{
    SealContext, WebhookSecretContext, canonical_aad, canonical_aad_v1, webhook_secret_aad,
};
use crate::legacy::{LegacyKey, decode_key_hex};
use crate::sealed::{MAX_SEALED_LEN, NONCE_LEN, Parsed, TAG_LEN, Version, b64};
use crate::{CryptoError, KeyRingError};

/// An opened credential. The bytes live on the heap and are wiped when the
/// value is dropped; `Debug` prints `[REDACTED]`. Read them with
/// [`secrecy::ExposeSecret`], for as short a time as possible.
pub type Plaintext = SecretBox<Vec<u8>>;

/// The largest plaintext accepted for sealing, so that the sealed form
/// always stays under the size the parser accepts.
const MAX_PLAINTEXT_LEN: usize = (MAX_SEALED_LEN / 4) * 3 - 256;

/// A key id: 1 to 32 characters of `[A-Za-z0-9_-]`. It is written in clear
/// in every sealed value (`v2:<key_id>:…`) and bound into the AAD, so the
/// ring can pick the right key without trying each one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyId(String);

impl KeyId {
    /// Checks and wraps an id.
    pub fn new(id: &str) -> Option<KeyId> {
        is_valid_key_id(id).then(|| KeyId(id.to_owned()))
    }

    /// The id as written in sealed values.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub(crate) fn is_valid_key_id(id: &str) -> bool {
    (1..=32).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

struct RingKey {
    id: KeyId,
    cipher: Aes256Gcm,
}

/// The AES-256-GCM keys that seal users' provider credentials.
///
/// The first key of the configured list is the primary: every new value is
/// sealed under it. The others only open older values until `byok keys
/// rewrap` has re-sealed them, after which they can be removed from the
/// configuration (the Tink keyset / Vault key-version model).
///
/// Nonces are 96 random bits. NIST SP 800-38D caps random-nonce use at 2^32
/// encryptions per key; a credential is sealed once per save, so a deployment
/// would need billions of saves per key before rotation became urgent.
///
/// Values in the seed's legacy format carry no binding to their row at all.
/// The ring opens them only to re-seal them ([`KeyRing::reseal`], `byok keys
/// rewrap`), unless [`KeyRing::accept_legacy_everywhere`] was asked for.
pub struct KeyRing {
    keys: Vec<RingKey>,
    legacy: Option<LegacyKey>,
    legacy_everywhere: bool,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("primary", &self.primary_key_id())
            .field(
                "key_ids",
                &self.keys.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(),
            )
            .field("legacy_key", &self.legacy.is_some())
            .field("legacy_everywhere", &self.legacy_everywhere)
            .finish()
    }
}

impl KeyRing {
    /// Parses `encryption.keys`: `"<id>:<64 hex>[,<id>:<64 hex>…]"`, primary
    /// first. Errors name the position of the bad entry, never its key.
    pub fn parse(spec: &SecretString) -> Result<KeyRing, KeyRingError> {
        let mut keys: Vec<RingKey> = Vec::new();
        for (index, entry) in spec.expose_secret().split(',').enumerate() {
            let position = index + 1;
            let entry = entry.trim();
            if entry.is_empty() {
                return Err(if spec.expose_secret().trim().is_empty() {
                    KeyRingError::Empty
                } else {
                    KeyRingError::BadEntry {
                        position,
                        reason: "empty entry",
                    }
                });
            }
            let Some((id, hex_key)) = entry.split_once(':') else {
                return Err(KeyRingError::BadEntry {
                    position,
                    reason: "expected <id>:<64 hex>",
                });
            };
            let id = KeyId::new(id.trim()).ok_or(KeyRingError::BadEntry {
                position,
                reason: "key id must be 1-32 characters of A-Z a-z 0-9 _ -",
            })?;
            if keys.iter().any(|k| k.id == id) {
                return Err(KeyRingError::DuplicateId { position, id: id.0 });
            }
            let cipher = cipher_from_hex(hex_key).ok_or(KeyRingError::BadEntry {
                position,
                reason: "key must be 64 hex characters (32 bytes)",
            })?;
            keys.push(RingKey { id, cipher });
        }
        if keys.is_empty() {
            return Err(KeyRingError::Empty);
        }
        Ok(KeyRing {
            keys,
            legacy: None,
            legacy_everywhere: false,
        })
    }

    /// A ring of one key, for a deployment configured with only the seed's
    /// `ENCRYPTION_KEY`.
    pub fn single(id: KeyId, hex_key: &SecretString) -> Result<KeyRing, KeyRingError> {
        let cipher = cipher_from_hex(hex_key.expose_secret()).ok_or(KeyRingError::BadEntry {
            position: 1,
            reason: "key must be 64 hex characters (32 bytes)",
        })?;
        Ok(KeyRing {
            keys: vec![RingKey { id, cipher }],
            legacy: None,
            legacy_everywhere: false,
        })
    }

    /// Adds the seed's single key, used only to open legacy-format values.
    pub fn with_legacy_key(mut self, hex_key: &SecretString) -> Result<KeyRing, KeyRingError> {
        self.legacy = Some(LegacyKey::from_hex(hex_key)?);
        Ok(self)
    }

    /// Lets [`KeyRing::open`] open legacy values wherever they are found
    /// (`encryption.accept_legacy`). Weaker: a legacy value copied into
    /// another user's row opens there, as it did in the seed's system.
    pub fn accept_legacy_everywhere(mut self) -> KeyRing {
        self.legacy_everywhere = true;
        self
    }

    /// The id new values are sealed under.
    pub fn primary_key_id(&self) -> &str {
        self.keys[0].id.as_str()
    }

    /// Every key id, primary first.
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.id.as_str())
    }

    /// Seals `plaintext` for `context` under the primary key:
    /// `v2:<key_id>:<nonce>:<ciphertext‖tag>`.
    pub fn seal(&self, context: &SealContext, plaintext: &[u8]) -> Result<String, CryptoError> {
        self.seal_with(|key_id| canonical_aad(context, key_id), plaintext)
    }

    /// Seals a webhook signing secret for `context`, as [`KeyRing::seal`] seals credentials
    /// but bound to the endpoint (or the project) with an AAD of its own purpose.
    pub fn seal_webhook_secret(
        &self,
        context: &WebhookSecretContext,
        plaintext: &[u8],
    ) -> Result<String, CryptoError> {
        self.seal_with(|key_id| webhook_secret_aad(context, key_id), plaintext)
    }

    /// Opens a webhook signing secret sealed by [`KeyRing::seal_webhook_secret`] for the same
    /// context (`v2` only: nothing older ever held one).
    pub fn open_webhook_secret(
        &self,
        context: &WebhookSecretContext,
        sealed: &str,
    ) -> Result<Plaintext, CryptoError> {
        match Parsed::parse(sealed)? {
            Parsed::Aead {
                version: Version::V2,
                key_id,
                nonce,
                ciphertext_and_tag,
            } => {
                let key = self
                    .keys
                    .iter()
                    .find(|k| k.id.as_str() == key_id)
                    .ok_or_else(|| CryptoError::UnknownKeyId(key_id.to_owned()))?;
                let aad = webhook_secret_aad(context, key_id);
                let mut buffer = Zeroizing::new(ciphertext_and_tag);
                key.cipher
                    .decrypt_in_place(&Nonce::<U12>::from(nonce), &aad, &mut *buffer)
                    .map_err(|_| CryptoError::Unauthentic)?;
                Ok(into_plaintext(buffer))
            }
            _ => Err(CryptoError::Unauthentic),
        }
    }

    fn seal_with(
        &self,
        aad_for: impl FnOnce(&str) -> Vec<u8>,
        plaintext: &[u8],
    ) -> Result<String, CryptoError> {
        if plaintext.len() > MAX_PLAINTEXT_LEN {
            return Err(CryptoError::Malformed("plaintext larger than 48 KiB"));
        }
        let key = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|_| CryptoError::Rng)?;
        let aad = aad_for(key.id.as_str());
        // Capacity for the tag up front: a reallocation would leave a copy of
        // the plaintext behind in freed memory. After encryption the buffer
        // holds only ciphertext.
        let mut buffer = Zeroizing::new(Vec::with_capacity(plaintext.len() + TAG_LEN));
        buffer.extend_from_slice(plaintext);
        key.cipher
            .encrypt_in_place(&Nonce::<U12>::from(nonce), &aad, &mut *buffer)
            .map_err(|_| CryptoError::Malformed("plaintext too large for AES-GCM"))?;
        Ok(format!("v2:{}:{}:{}", key.id, b64(&nonce), b64(&buffer)))
    }

    /// Opens a stored value sealed for `context`: `v2`; `v1` in the default
    /// project only; legacy only when accepted everywhere.
    pub fn open(&self, context: &SealContext, sealed: &str) -> Result<Plaintext, CryptoError> {
        self.open_with(context, sealed, self.legacy_everywhere)
    }

    fn open_with(
        &self,
        context: &SealContext,
        sealed: &str,
        legacy_allowed: bool,
    ) -> Result<Plaintext, CryptoError> {
        let bytes = match Parsed::parse(sealed)? {
            Parsed::Aead {
                version,
                key_id,
                nonce,
                ciphertext_and_tag,
            } => {
                let key = self
                    .keys
                    .iter()
                    .find(|k| k.id.as_str() == key_id)
                    .ok_or_else(|| CryptoError::UnknownKeyId(key_id.to_owned()))?;
                let aad = match version {
                    Version::V2 => canonical_aad(context, key_id),
                    // A v1 value outside the default project was copied
                    // there: as unauthentic as one copied to another user.
                    Version::V1 if !context.admits_v1() => return Err(CryptoError::Unauthentic),
                    Version::V1 => canonical_aad_v1(context, key_id),
                };
                // Decrypting in a zeroizing buffer: whatever the outcome, the
                // bytes are wiped when it is dropped.
                let mut buffer = Zeroizing::new(ciphertext_and_tag);
                key.cipher
                    .decrypt_in_place(&Nonce::<U12>::from(nonce), &aad, &mut *buffer)
                    .map_err(|_| CryptoError::Unauthentic)?;
                buffer
            }
            Parsed::Legacy {
                iv,
                tag,
                ciphertext,
            } => {
                let legacy = self.legacy.as_ref().ok_or(CryptoError::NoLegacyKey)?;
                if !legacy_allowed {
                    return Err(CryptoError::LegacyNotAccepted);
                }
                legacy.open(&iv, &tag, &ciphertext)?
            }
        };
        Ok(into_plaintext(bytes))
    }

    /// Whether `sealed` is already a `v2` value under the primary key.
    pub fn is_current(&self, sealed: &str) -> bool {
        matches!(
            Parsed::parse(sealed),
            Ok(Parsed::Aead { version: Version::V2, key_id, .. }) if key_id == self.primary_key_id()
        )
    }

    /// Re-seals a stored value as `v2` under the primary key: `v1` and legacy
    /// values, and values under older keys. `Ok(None)` when it is already
    /// current, so running a rewrap twice changes nothing. Legacy values open
    /// here even when [`KeyRing::open`] refuses them: this is how they leave.
    pub fn reseal(
        &self,
        context: &SealContext,
        sealed: &str,
    ) -> Result<Option<String>, CryptoError> {
        if self.is_current(sealed) {
            // Still authenticate: a value that cannot be opened must not be
            // reported as healthy.
            self.open(context, sealed)?;
            return Ok(None);
        }
        let plaintext = self.open_with(context, sealed, true)?;
        self.seal(context, plaintext.expose_secret()).map(Some)
    }

    /// [`KeyRing::reseal`] for a webhook signing secret: re-sealed under the primary key
    /// when it is under another, `Ok(None)` when it is current (and opens).
    pub fn reseal_webhook_secret(
        &self,
        context: &WebhookSecretContext,
        sealed: &str,
    ) -> Result<Option<String>, CryptoError> {
        let plaintext = self.open_webhook_secret(context, sealed)?;
        if self.is_current(sealed) {
            return Ok(None);
        }
        self.seal_webhook_secret(context, plaintext.expose_secret())
            .map(Some)
    }
}

fn cipher_from_hex(hex_key: &str) -> Option<Aes256Gcm> {
    let key = decode_key_hex(hex_key)?;
    Aes256Gcm::new_from_slice(&key[..]).ok()
}

fn into_plaintext(mut bytes: Zeroizing<Vec<u8>>) -> Plaintext {
    // Moving the Vec moves only its (pointer, length, capacity) header, so the
    // heap bytes stay where the zeroizing buffer had them: no copy escapes.
    let vec = std::mem::take(&mut *bytes);
    SecretBox::new(Box::new(vec))
}

/// A fresh 256-bit key as 64 lowercase hex characters, from the operating
/// system's random number generator (`byok keys generate`).
pub fn generate_key_hex() -> Result<SecretString, CryptoError> {
    let mut key = Zeroizing::new([0u8; 32]);
    getrandom::fill(&mut key[..]).map_err(|_| CryptoError::Rng)?;
    Ok(SecretString::from(hex::encode(&key[..])))
}

#[cfg(test)]
mod webhook_secret_tests {
    use byok_core::{ProjectUser, ProviderId};
    use secrecy::ExposeSecret as _;
    use uuid::Uuid;

    use super::*;

    fn ring() -> KeyRing {
        KeyRing::single(
            KeyId::new("k1").unwrap(),
            &SecretString::from("11".repeat(32)),
        )
        .unwrap()
    }

    #[test]
    fn a_webhook_secret_opens_only_for_its_own_endpoint_and_never_as_a_credential() {
        let ring = ring();
        let project = Uuid::now_v7();
        let endpoint = WebhookSecretContext {
            project_id: project,
            endpoint_id: Some(Uuid::now_v7()),
        };
        let sealed = ring.seal_webhook_secret(&endpoint, b"whsec_abc").unwrap();
        assert_eq!(
            ring.open_webhook_secret(&endpoint, &sealed)
                .unwrap()
                .expose_secret()
                .as_slice(),
            b"whsec_abc"
        );
        let other_endpoint = WebhookSecretContext {
            endpoint_id: Some(Uuid::now_v7()),
            ..endpoint
        };
        let project_secret = WebhookSecretContext {
            endpoint_id: None,
            ..endpoint
        };
        for wrong in [other_endpoint, project_secret] {
            assert!(matches!(
                ring.open_webhook_secret(&wrong, &sealed),
                Err(CryptoError::Unauthentic)
            ));
        }
        let credential =
            SealContext::new(ProjectUser::new(project, Uuid::nil()), ProviderId::RUNWAY);
        assert!(ring.open(&credential, &sealed).is_err());
        let sealed_credential = ring.seal(&credential, b"key").unwrap();
        assert!(
            ring.open_webhook_secret(&project_secret, &sealed_credential)
                .is_err()
        );
    }

    /// A rewrap moves a secret to the primary key with its content, leaves a current one
    /// alone, and refuses one sealed for another endpoint.
    #[test]
    fn a_webhook_secret_reseals_under_the_primary_key_once() {
        let old = ring();
        let both = KeyRing::parse(&SecretString::from(format!(
            "k2:{},k1:{}",
            "22".repeat(32),
            "11".repeat(32)
        )))
        .unwrap();
        let context = WebhookSecretContext {
            project_id: Uuid::now_v7(),
            endpoint_id: None,
        };
        let sealed = old.seal_webhook_secret(&context, b"whsec_xyz").unwrap();
        let resealed = both
            .reseal_webhook_secret(&context, &sealed)
            .unwrap()
            .expect("under an older key");
        assert!(resealed.starts_with("v2:k2:"), "{resealed}");
        assert_eq!(
            both.open_webhook_secret(&context, &resealed)
                .unwrap()
                .expose_secret()
                .as_slice(),
            b"whsec_xyz"
        );
        assert_eq!(
            both.reseal_webhook_secret(&context, &resealed).unwrap(),
            None
        );
        let elsewhere = WebhookSecretContext {
            endpoint_id: Some(Uuid::now_v7()),
            ..context
        };
        assert!(both.reseal_webhook_secret(&elsewhere, &sealed).is_err());
    }
}
