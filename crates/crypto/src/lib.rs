#![doc = include_str!("../README.md")]

mod aad;
mod error;
mod key_ring;
mod legacy;
mod sealed;

pub use aad::{
    SealContext, WebhookSecretContext, canonical_aad, canonical_aad_v1, webhook_secret_aad,
};
pub use error::{CryptoError, KeyRingError};
pub use key_ring::{KeyId, KeyRing, Plaintext, generate_key_hex};
pub use sealed::SealedFormat;
