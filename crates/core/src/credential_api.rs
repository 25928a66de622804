//! The bodies of the credential routes (`/v1/users/{user_id}/providers…`), shared by the
//! server and clients. None of them ever carries a stored key back: only hints.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// Body of `PUT …/credentials`.
// No derived `Debug`: `credentials` is the user's secret.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::ToSchema),
    schema(example = json!({ "credentials": { "api_key": "key_0123456789abcdef" }, "validate": true }))
)]
#[serde(deny_unknown_fields)]
pub struct PutCredentials {
    /// The provider's fields, as its `credential_fields` in `GET /v1/providers`
    /// name them: `api_key` (Runway, Stability), `service_account` (Veo: the
    /// service-account JSON, as an object or a string).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub credentials: Value,
    /// Ask the provider before storing (default true).
    #[serde(default = "default_true")]
    #[cfg_attr(feature = "openapi", schema(default = true))]
    pub validate: bool,
}

fn default_true() -> bool {
    true
}

impl PutCredentials {
    /// `credentials`, checked with the provider before they are stored.
    pub fn new(credentials: Value) -> Self {
        PutCredentials {
            credentials,
            validate: true,
        }
    }

    /// Stores without asking the provider first.
    pub fn without_validation(mut self) -> Self {
        self.validate = false;
        self
    }
}

impl std::fmt::Debug for PutCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PutCredentials")
            .field("credentials", &"[redacted]")
            .field("validate", &self.validate)
            .finish()
    }
}

/// What a user's credential for one provider looks like from outside.
/// Never a secret: only a hint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CredentialSummary {
    #[cfg_attr(feature = "openapi", schema(value_type = crate::ProviderId))]
    pub provider: String,
    /// Whether a key is stored.
    pub connected: bool,
    /// Whether the stored key passed its latest check (false when none is stored).
    pub is_valid: bool,
    /// A hint at the stored key, e.g. `key_…9f2c`: never the key.
    #[cfg_attr(feature = "openapi", schema(required))]
    pub credential_hint: Option<String>,
    /// When the provider last accepted the key.
    #[cfg_attr(feature = "openapi", schema(required))]
    pub validated_at: Option<DateTime<Utc>>,
    /// Why the latest check failed.
    #[cfg_attr(feature = "openapi", schema(required))]
    pub last_error: Option<String>,
    #[cfg_attr(feature = "openapi", schema(required))]
    pub created_at: Option<DateTime<Utc>>,
    #[cfg_attr(feature = "openapi", schema(required))]
    pub updated_at: Option<DateTime<Utc>>,
}

impl CredentialSummary {
    /// The summary of a provider for which the user has no stored key.
    pub fn not_connected(provider: impl Into<String>) -> Self {
        CredentialSummary {
            provider: provider.into(),
            connected: false,
            is_valid: false,
            credential_hint: None,
            validated_at: None,
            last_error: None,
            created_at: None,
            updated_at: None,
        }
    }
}

/// The body of `GET /v1/users/{user_id}/providers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CredentialList {
    pub user_id: Uuid,
    /// One summary per provider, in listing order (`connected: false` when none is stored).
    pub providers: Vec<CredentialSummary>,
}

/// The verdict of `POST …/test`, next to the updated summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CredentialTest {
    #[serde(flatten)]
    pub summary: CredentialSummary,
    pub check: CredentialCheckOutcome,
}

/// `valid`, `rejected` (by the provider) or `unreadable` (the stored value
/// cannot be opened for this user and provider).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = CheckResult))]
#[serde(rename_all = "lowercase")]
pub enum CredentialCheckResult {
    Valid,
    Rejected,
    Unreadable,
}

/// The verdict of a key check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = CredentialCheck))]
#[serde(deny_unknown_fields)]
pub struct CredentialCheckOutcome {
    pub result: CredentialCheckResult,
    /// Why not `valid`.
    #[cfg_attr(feature = "openapi", schema(required))]
    pub reason: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_put_body_keeps_its_secret_out_of_debug_and_validates_by_default() {
        let body: PutCredentials =
            serde_json::from_str(r#"{"credentials":{"api_key":"key_secret_123"}}"#).unwrap();
        assert!(body.validate);
        assert!(!format!("{body:?}").contains("key_secret_123"));
        let unchecked =
            PutCredentials::new(serde_json::json!({"api_key": "k"})).without_validation();
        assert_eq!(serde_json::to_value(&unchecked).unwrap()["validate"], false);
    }

    #[test]
    fn a_test_verdict_reads_back_flattened() {
        let json = serde_json::json!({
            "provider": "runway", "connected": true, "is_valid": false,
            "credential_hint": "key_…9f2c", "validated_at": null, "last_error": "401",
            "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
            "check": { "result": "rejected", "reason": "401" },
        });
        let test: CredentialTest = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(test.check.result, CredentialCheckResult::Rejected);
        assert_eq!(test.summary.provider, "runway");
        assert_eq!(serde_json::to_value(&test).unwrap(), json);
    }
}

/// The body of `POST /v1/users/{user_id}/providers/{provider}/connect-links`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewConnectLink {
    /// Where the page sends the user once the key is stored: one of the project's return
    /// URLs, or a URL under one (same scheme, host and port; the path within its path).
    #[cfg_attr(
        feature = "openapi",
        schema(example = "https://app.example.com/settings/keys")
    )]
    pub return_url: String,
}

/// A "connect your key" link (docs/connect.md): send the user to `url`.
// No derived `Debug`: `url` carries the link's secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConnectLinkView {
    /// The page, with the link's secret in it: give it to this user only. It works once,
    /// until `expires_at`.
    pub url: String,
    /// When it stops working (15 minutes after it was made).
    pub expires_at: DateTime<Utc>,
    /// The user whose key it stores.
    pub user_id: Uuid,
    /// The provider.
    pub provider: String,
    /// Where the user goes afterwards.
    pub return_url: String,
}

impl std::fmt::Debug for ConnectLinkView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL up to its secret (the last path segment).
        let shown = self.url.rsplit_once('/').map_or("…", |(before, _)| before);
        f.debug_struct("ConnectLinkView")
            .field("url", &format_args!("{shown}/…"))
            .field("expires_at", &self.expires_at)
            .field("user_id", &self.user_id)
            .field("provider", &self.provider)
            .field("return_url", &self.return_url)
            .finish()
    }
}

#[cfg(test)]
mod connect_link_tests {
    use super::*;

    #[test]
    fn a_links_debug_leaves_out_its_secret() {
        let link = ConnectLinkView {
            url: "https://keys.example.com/connect/runway/u/SECRETsecret".into(),
            expires_at: Utc::now(),
            user_id: Uuid::nil(),
            provider: "runway".into(),
            return_url: "https://app.example.com".into(),
        };
        let shown = format!("{link:?}");
        assert!(!shown.contains("SECRETsecret"), "{shown}");
        assert!(
            shown.contains("https://keys.example.com/connect/runway/u/…"),
            "{shown}"
        );
    }
}
