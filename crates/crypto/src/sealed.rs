//! Parsing of the stored text forms of a sealed credential.
//!
//! ```text
//! v2:<key_id>:<base64url nonce(12)>:<base64url ciphertext‖tag(16)>   current: bound to the project
//! v1:<key_id>:<base64url nonce(12)>:<base64url ciphertext‖tag(16)>   before projects
//! <hex iv(16)>:<hex tag(16)>:<hex ciphertext>                         the seed's legacy form
//! ```
//! Every stored row is untrusted input: parsing checks lengths and
//! alphabets before any allocation proportional to the input.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::CryptoError;
use crate::key_ring::is_valid_key_id;

/// Sealed values longer than this are refused without being decoded. A
/// service-account JSON, the largest credential, seals to about 3 KiB.
pub(crate) const MAX_SEALED_LEN: usize = 64 * 1024;
pub(crate) const NONCE_LEN: usize = 12;
pub(crate) const TAG_LEN: usize = 16;
pub(crate) const LEGACY_IV_LEN: usize = 16;

/// Which format a stored value is in, without opening it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SealedFormat {
    /// `v2:` sealed under the named key id, bound to (project, user, provider).
    V2 {
        /// The key id the value names.
        key_id: String,
    },
    /// `v1:` sealed under the named key id, bound to (user, provider): made
    /// before projects existed.
    V1 {
        /// The key id the value names.
        key_id: String,
    },
    /// The seed's `hex(iv):hex(tag):hex(data)` form (no AAD).
    Legacy,
}

impl SealedFormat {
    /// Recognises the format of a stored value (and checks it is well formed).
    pub fn of(sealed: &str) -> Result<SealedFormat, CryptoError> {
        Ok(match Parsed::parse(sealed)? {
            Parsed::Aead {
                version: Version::V2,
                key_id,
                ..
            } => SealedFormat::V2 {
                key_id: key_id.to_owned(),
            },
            Parsed::Aead {
                version: Version::V1,
                key_id,
                ..
            } => SealedFormat::V1 {
                key_id: key_id.to_owned(),
            },
            Parsed::Legacy { .. } => SealedFormat::Legacy,
        })
    }
}

/// The AES-GCM formats, which differ only in their AAD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Version {
    V1,
    V2,
}

/// A stored value split into its parts.
pub(crate) enum Parsed<'a> {
    Aead {
        version: Version,
        key_id: &'a str,
        nonce: [u8; NONCE_LEN],
        /// Ciphertext followed by the 16-byte tag.
        ciphertext_and_tag: Vec<u8>,
    },
    Legacy {
        iv: [u8; LEGACY_IV_LEN],
        tag: [u8; TAG_LEN],
        ciphertext: Vec<u8>,
    },
}

impl<'a> Parsed<'a> {
    pub(crate) fn parse(sealed: &'a str) -> Result<Parsed<'a>, CryptoError> {
        if sealed.len() > MAX_SEALED_LEN {
            return Err(CryptoError::Malformed("longer than 64 KiB"));
        }
        if let Some(rest) = sealed.strip_prefix("v2:") {
            return parse_aead(Version::V2, rest);
        }
        if let Some(rest) = sealed.strip_prefix("v1:") {
            return parse_aead(Version::V1, rest);
        }
        if sealed.starts_with('v') {
            return Err(CryptoError::Malformed("unsupported format version"));
        }
        parse_legacy(sealed)
    }
}

fn parse_aead(version: Version, rest: &str) -> Result<Parsed<'_>, CryptoError> {
    let mut parts = rest.split(':');
    let (Some(key_id), Some(nonce), Some(body), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(CryptoError::Malformed(
            "expected v2:<key_id>:<nonce>:<ciphertext>",
        ));
    };
    if !is_valid_key_id(key_id) {
        return Err(CryptoError::Malformed("invalid key id"));
    }
    let nonce = decode_b64_exact::<NONCE_LEN>(nonce).ok_or(CryptoError::Malformed(
        "nonce is not 12 bytes of unpadded base64url",
    ))?;
    let ciphertext_and_tag = URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|_| CryptoError::Malformed("ciphertext is not unpadded base64url"))?;
    if ciphertext_and_tag.len() < TAG_LEN {
        return Err(CryptoError::Malformed("ciphertext shorter than the tag"));
    }
    Ok(Parsed::Aead {
        version,
        key_id,
        nonce,
        ciphertext_and_tag,
    })
}

fn parse_legacy(sealed: &str) -> Result<Parsed<'_>, CryptoError> {
    let mut parts = sealed.split(':');
    let (Some(iv), Some(tag), Some(data), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(CryptoError::Malformed(
            "neither v2:…, v1:… nor the legacy hex(iv):hex(tag):hex(data) form",
        ));
    };
    let iv = decode_hex_exact::<LEGACY_IV_LEN>(iv)
        .ok_or(CryptoError::Malformed("legacy iv is not 16 bytes of hex"))?;
    let tag = decode_hex_exact::<TAG_LEN>(tag)
        .ok_or(CryptoError::Malformed("legacy tag is not 16 bytes of hex"))?;
    let ciphertext =
        hex::decode(data).map_err(|_| CryptoError::Malformed("legacy data is not hex"))?;
    Ok(Parsed::Legacy {
        iv,
        tag,
        ciphertext,
    })
}

fn decode_b64_exact<const N: usize>(text: &str) -> Option<[u8; N]> {
    // Unpadded base64url of N bytes is exactly ceil(4N/3) characters; checking
    // first keeps a hostile value from costing a large decode.
    if text.len() != (4 * N).div_ceil(3) {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
    bytes.try_into().ok()
}

fn decode_hex_exact<const N: usize>(text: &str) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

/// Encodes bytes as unpadded base64url, the alphabet of the `v1` and `v2` formats.
pub(crate) fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}
