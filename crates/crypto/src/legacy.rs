//! The seed's legacy format: AES-256-GCM with a 16-byte IV, no AAD, one key.
//!
//! The seed (a Node.js service) sealed credentials with
//! `createCipheriv('aes-256-gcm', key, randomBytes(16))` and stored
//! `hex(iv):hex(tag):hex(ciphertext)`. GCM with a 16-byte IV derives its
//! counter block through GHASH, so it needs the 16-byte nonce variant of
//! `AesGcm`; a 12-byte-nonce cipher would not open these values.
//!
//! This module only opens: nothing new is ever written in this format.
//! `byok keys rewrap` re-seals legacy rows as `v1:` values bound by AAD.

use aes_gcm::aead::consts::U16;
use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::aes::Aes256;
use aes_gcm::{AesGcm, Nonce};
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use crate::{CryptoError, KeyRingError};

type LegacyCipher = AesGcm<Aes256, U16>;

/// The single seed key (`ENCRYPTION_KEY`), ready to open legacy values.
#[derive(Clone)]
pub(crate) struct LegacyKey {
    cipher: LegacyCipher,
}

impl std::fmt::Debug for LegacyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LegacyKey(..)")
    }
}

impl LegacyKey {
    pub(crate) fn from_hex(hex_key: &SecretString) -> Result<Self, KeyRingError> {
        let bytes = decode_key_hex(hex_key.expose_secret()).ok_or(KeyRingError::BadLegacyKey)?;
        let cipher =
            LegacyCipher::new_from_slice(&bytes[..]).map_err(|_| KeyRingError::BadLegacyKey)?;
        Ok(Self { cipher })
    }

    /// Opens `ciphertext` authenticated by `tag` under `iv`, with no AAD.
    pub(crate) fn open(
        &self,
        iv: &[u8; 16],
        tag: &[u8; 16],
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let mut buffer = Zeroizing::new(Vec::with_capacity(ciphertext.len() + tag.len()));
        buffer.extend_from_slice(ciphertext);
        buffer.extend_from_slice(tag);
        let nonce = Nonce::<U16>::from(*iv);
        self.cipher
            .decrypt_in_place(&nonce, b"", &mut *buffer)
            .map_err(|_| CryptoError::Unauthentic)?;
        Ok(buffer)
    }
}

/// Decodes 64 hex characters into a zeroized 32-byte key.
pub(crate) fn decode_key_hex(text: &str) -> Option<Zeroizing<[u8; 32]>> {
    let mut key = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(text.trim(), &mut key[..]).ok()?;
    Some(key)
}
