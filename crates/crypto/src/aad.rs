//! The associated data that binds a sealed credential to its row.

use byok_core::{DEFAULT_PROJECT_ID, ProjectUser, ProviderId};
use uuid::Uuid;

/// The purpose label, first field of every AAD. A value sealed for another
/// purpose (should one ever exist) can never be opened as a credential.
const PURPOSE_V1: &str = "byok.credentials";
/// The `v2` label: a different label as well as a different field list, so
/// no `v1` AAD can ever equal a `v2` one.
const PURPOSE_V2: &str = "byok.credentials.v2";

/// Whose credential a sealed value is: the row it belongs to.
///
/// Sealing binds the ciphertext to this context; opening with any other
/// context fails authentication. That is what stops a sealed value copied
/// into another project's, user's or provider's row (SQL injection, a bad
/// migration, an insider) from spending the original owner's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealContext {
    /// The project the user belongs to.
    pub project_id: Uuid,
    /// The user who owns the key.
    pub user_id: Uuid,
    /// The provider the key is for.
    pub provider: ProviderId,
}

impl SealContext {
    /// The context of the credential row `(project, user, provider)`.
    pub fn new(owner: ProjectUser, provider: ProviderId) -> Self {
        Self {
            project_id: owner.project_id,
            user_id: owner.user_id,
            provider,
        }
    }

    /// Whether a `v1` value, which names no project, may open here: `v1`
    /// values were all sealed before projects existed, and those rows all
    /// moved into the default project. One found in any other project was
    /// copied there.
    pub(crate) fn admits_v1(&self) -> bool {
        self.project_id == DEFAULT_PROJECT_ID
    }
}

/// The canonical AAD of the current `v2` format (docs/security-model.md):
/// the length-prefixed encoding of (`"byok.credentials.v2"`, project_id,
/// user_id, provider, key_id).
///
/// Each field is its UTF-8 bytes preceded by their length as a 4-byte
/// big-endian integer; UUIDs are lowercase hyphenated
/// (`67e55044-10b1-426f-9247-bb680e5fe0c8`), `provider` its stable name.
/// Length prefixes make the encoding injective: no two different tuples
/// produce the same bytes, which plain concatenation cannot promise.
///
/// This is a stored format: changing it makes every sealed value unreadable.
pub fn canonical_aad(context: &SealContext, key_id: &str) -> Vec<u8> {
    let project_id = context.project_id.hyphenated().to_string();
    let user_id = context.user_id.hyphenated().to_string();
    encode(&[
        PURPOSE_V2.as_bytes(),
        project_id.as_bytes(),
        user_id.as_bytes(),
        context.provider.as_str().as_bytes(),
        key_id.as_bytes(),
    ])
}

/// The AAD of the `v1` format, which predates projects: (`"byok.credentials"`,
/// user_id, provider, key_id), encoded as [`canonical_aad`] encodes.
pub fn canonical_aad_v1(context: &SealContext, key_id: &str) -> Vec<u8> {
    let user_id = context.user_id.hyphenated().to_string();
    encode(&[
        PURPOSE_V1.as_bytes(),
        user_id.as_bytes(),
        context.provider.as_str().as_bytes(),
        key_id.as_bytes(),
    ])
}

/// The purpose label of a webhook signing secret's AAD: never equal to a credential's, so
/// neither can be opened as the other.
const PURPOSE_WEBHOOK_SECRET: &str = "byok.webhook-secret.v2";

/// Whose webhook signing secret a sealed value is: a project's endpoint, or (with no
/// endpoint) the project's secret for jobs' own `webhook_url`s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebhookSecretContext {
    /// The project the secret belongs to.
    pub project_id: Uuid,
    /// The endpoint; `None` for the project's job-webhook secret.
    pub endpoint_id: Option<Uuid>,
}

/// The AAD of a webhook signing secret: (`"byok.webhook-secret.v2"`, project_id, endpoint id
/// or `project`, key_id), encoded as [`canonical_aad`] encodes. A stored format.
pub fn webhook_secret_aad(context: &WebhookSecretContext, key_id: &str) -> Vec<u8> {
    let project_id = context.project_id.hyphenated().to_string();
    let owner = context
        .endpoint_id
        .map_or_else(|| "project".to_owned(), |id| id.hyphenated().to_string());
    encode(&[
        PURPOSE_WEBHOOK_SECRET.as_bytes(),
        project_id.as_bytes(),
        owner.as_bytes(),
        key_id.as_bytes(),
    ])
}

fn encode(fields: &[&[u8]]) -> Vec<u8> {
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

    fn encoded(fields: &[&str]) -> Vec<u8> {
        let mut expected = Vec::new();
        for field in fields {
            expected.extend_from_slice(&(field.len() as u32).to_be_bytes());
            expected.extend_from_slice(field.as_bytes());
        }
        expected
    }

    fn context() -> SealContext {
        SealContext::new(
            ProjectUser::new(
                Uuid::parse_str("0195F0C0-1111-7222-8333-444455556666").unwrap(),
                Uuid::parse_str("67E55044-10B1-426F-9247-BB680E5FE0C8").unwrap(),
            ),
            ProviderId::RUNWAY,
        )
    }

    #[test]
    fn encoding_is_exactly_as_documented() {
        assert_eq!(
            canonical_aad(&context(), "2"),
            encoded(&[
                "byok.credentials.v2",
                "0195f0c0-1111-7222-8333-444455556666",
                "67e55044-10b1-426f-9247-bb680e5fe0c8",
                "runway",
                "2",
            ])
        );
        assert_eq!(
            canonical_aad_v1(&context(), "2"),
            encoded(&[
                "byok.credentials",
                "67e55044-10b1-426f-9247-bb680e5fe0c8",
                "runway",
                "2",
            ])
        );
    }

    #[test]
    fn field_boundaries_matter() {
        // Without length prefixes, ("ab","c") and ("a","bc") would collide.
        let ctx = context();
        assert_ne!(canonical_aad(&ctx, "12"), canonical_aad(&ctx, "1"));
        let elsewhere = SealContext {
            project_id: Uuid::nil(),
            ..ctx
        };
        assert_ne!(canonical_aad(&ctx, "1"), canonical_aad(&elsewhere, "1"));
    }
}
