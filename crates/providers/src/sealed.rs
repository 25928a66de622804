//! Opening a user's sealed credential: the one place where stored ciphertext becomes
//! [`Credentials`]. The API (key tests) and the worker (every step that talks to a
//! provider) both come here, so the rules hold for both: the value opens only under the
//! AAD of its own (project, user, provider), the decrypted bytes live in a zeroizing buffer, and
//! the JSON parsed from them is wiped before this function returns, on every path.

use byok_core::ProjectUser;
use byok_crypto::{CryptoError, KeyRing, SealContext};
use secrecy::ExposeSecret as _;

use crate::http::WipedJson;
use crate::{Credentials, VideoProvider};

/// Why a stored credential could not be opened. Never holds key material: the crypto
/// error names the format or key id at most, and a malformed value names its field.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The value does not open under the key ring for this project, user and provider
    /// (tampered, sealed for someone else, under a key id the ring no longer has, or a
    /// legacy value outside `byok keys rewrap`).
    #[error(transparent)]
    Unreadable(#[from] CryptoError),
    /// It opened, but the plaintext is not JSON.
    #[error("the stored credential is not valid JSON")]
    NotJson,
    /// It opened as JSON, but the adapter does not accept its shape.
    #[error("the stored credential is malformed ({field})")]
    Malformed {
        /// The field the adapter refused.
        field: String,
    },
}

/// Opens `sealed`, stored for `owner` at `adapter`'s provider, into credentials.
///
/// Plaintext copies made here: the decrypted bytes (a [`byok_crypto::Plaintext`], wiped
/// on drop) and the parsed JSON tree (wiped on drop, error paths included). The returned
/// [`Credentials`] keep their secrets in `secrecy` types, wiped when dropped. One copy is
/// out of reach: for a string with escape sequences (a PEM private key's `\n`),
/// `serde_json` unescapes into an internal scratch buffer that it frees without wiping.
pub fn open_credentials(
    key_ring: &KeyRing,
    adapter: &dyn VideoProvider,
    owner: ProjectUser,
    sealed: &str,
) -> Result<Credentials, OpenError> {
    let plaintext = key_ring.open(&SealContext::new(owner, adapter.id()), sealed)?;
    let json = WipedJson(Some(
        serde_json::from_slice(plaintext.expose_secret()).map_err(|_| OpenError::NotJson)?,
    ));
    adapter
        .parse_credentials(json.0.as_ref().unwrap_or(&serde_json::Value::Null))
        .map_err(|e| OpenError::Malformed { field: e.field })
}
