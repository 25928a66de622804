//! Errors of sealing and of key-ring parsing. None of them carries key
//! material or plaintext: they are safe to log and to show.

/// Why a sealed value could not be opened or a value not sealed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// The stored text is not in any format this build reads.
    #[error("sealed value is malformed: {0}")]
    Malformed(&'static str),
    /// The value names a key id that the configured key ring does not hold.
    #[error("sealed value uses key id `{0}`, which is not in the configured key ring")]
    UnknownKeyId(String),
    /// The value is in the seed's legacy format, but no legacy key is configured.
    #[error(
        "sealed value is in the legacy format but no legacy key (ENCRYPTION_KEY) is configured"
    )]
    NoLegacyKey,
    /// The value is in the seed's legacy format, which binds it to nothing;
    /// such values open only to be re-sealed.
    #[error(
        "sealed value is in the legacy format, which opens only in `byok keys rewrap` (or everywhere with encryption.accept_legacy = true)"
    )]
    LegacyNotAccepted,
    /// Authentication failed: wrong key, altered bytes, or a value that belongs
    /// to another project, user or provider.
    #[error(
        "sealed value failed authentication (altered, sealed under another key, or sealed for another project, user or provider)"
    )]
    Unauthentic,
    /// The operating system's random number generator failed.
    #[error("the system random number generator failed")]
    Rng,
}

/// Why an `encryption.keys` (or `ENCRYPTION_KEY`) value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyRingError {
    /// No key at all.
    #[error("the key ring is empty; expected \"<id>:<64 hex>[,<id>:<64 hex>…]\"")]
    Empty,
    /// One entry of the list is not `<id>:<64 hex>`.
    #[error("key ring entry {position}: {reason}")]
    BadEntry {
        /// 1-based position in the comma-separated list.
        position: usize,
        /// What is wrong with it; never the key itself.
        reason: &'static str,
    },
    /// Two entries share an id.
    #[error("key ring entry {position}: key id `{id}` appears twice")]
    DuplicateId {
        /// 1-based position of the second occurrence.
        position: usize,
        /// The repeated id.
        id: String,
    },
    /// A single legacy key is not 64 hex characters.
    #[error("the legacy key must be 64 hex characters (32 bytes)")]
    BadLegacyKey,
}
