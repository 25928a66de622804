//! The associated data that binds a sealed credential to its row.

use byok_core::ProviderId;
use uuid::Uuid;

/// The purpose label, first field of every AAD. A value sealed for another
/// purpose (should one ever exist) can never be opened as a credential.
const PURPOSE: &str = "byok.credentials";

/// Whose credential a sealed value is: the row it belongs to.
///
/// Sealing binds the ciphertext to this context; opening with any other
/// context fails authentication. That is what stops a sealed value copied
/// into another user's or another provider's row (SQL injection, a bad
/// migration, an insider) from spending the original owner's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealContext {
    /// The user who owns the key.
    pub user_id: Uuid,
    /// The provider the key is for.
    pub provider: ProviderId,
}

impl SealContext {
    /// The context of the credential row `(user_id, provider)`.
    pub fn new(user_id: Uuid, provider: ProviderId) -> Self {
        Self { user_id, provider }
    }
}

/// The canonical AAD (docs/security-model.md): the length-prefixed encoding of
/// (`"byok.credentials"`, user_id, provider, key_id).
///
/// Each field is its UTF-8 bytes preceded by their length as a 4-byte
/// big-endian integer; `user_id` is the lowercase hyphenated UUID
/// (`67e55044-10b1-426f-9247-bb680e5fe0c8`), `provider` its stable name.
/// Length prefixes make the encoding injective: no two different tuples
/// produce the same bytes, which plain concatenation cannot promise.
///
/// This is a stored format: changing it makes every sealed value unreadable.
pub fn canonical_aad(context: &SealContext, key_id: &str) -> Vec<u8> {
    let user_id = context.user_id.hyphenated().to_string();
    let fields: [&[u8]; 4] = [
        PURPOSE.as_bytes(),
        user_id.as_bytes(),
        context.provider.as_str().as_bytes(),
        key_id.as_bytes(),
    ];
    let mut out = Vec::with_capacity(fields.iter().map(|f| 4 + f.len()).sum());
    for field in fields {
        // Every field is far below 4 GiB: the key id is at most 32 bytes.
        let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(field);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_is_exactly_as_documented() {
        let ctx = SealContext::new(
            Uuid::parse_str("67E55044-10B1-426F-9247-BB680E5FE0C8").unwrap(),
            ProviderId::Runway,
        );
        let aad = canonical_aad(&ctx, "2");
        let mut expected = Vec::new();
        for field in [
            "byok.credentials",
            "67e55044-10b1-426f-9247-bb680e5fe0c8",
            "runway",
            "2",
        ] {
            expected.extend_from_slice(&(field.len() as u32).to_be_bytes());
            expected.extend_from_slice(field.as_bytes());
        }
        assert_eq!(aad, expected);
    }

    #[test]
    fn field_boundaries_matter() {
        // Without length prefixes, ("ab","c") and ("a","bc") would collide.
        let ctx = SealContext::new(Uuid::nil(), ProviderId::Veo);
        assert_ne!(canonical_aad(&ctx, "12"), canonical_aad(&ctx, "1"));
    }
}
