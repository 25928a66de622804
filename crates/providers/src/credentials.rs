//! Parsed, validated provider credentials: how they are parsed from JSON, shown as a
//! hint, written back as the plaintext that gets sealed, and what a key check returns.
//!
//! Secrets live in [`SecretString`]s and every `Debug` here is written by hand so that
//! none of them can end up in a log line. Error messages name the offending field and
//! never repeat the submitted value.

use std::fmt;

use byok_core::{JobError, ProviderId};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde_json::{Map, Value};
use url::Url;
use zeroize::Zeroizing;

use crate::generation::internal;
use crate::{http, net, vertex};

/// Vertex AI region used when the credentials name none.
pub(crate) const DEFAULT_LOCATION: &str = "us-central1";
/// Longest accepted API key.
const MAX_API_KEY_LEN: usize = 512;
/// Longest accepted organization id.
const MAX_ORGANIZATION_ID_LEN: usize = 256;
/// Longest accepted service-account JSON given as a string (real ones are ~2.4 KB).
const MAX_SERVICE_ACCOUNT_JSON_LEN: usize = 64 * 1024;
/// Longest accepted PEM private key (an 8192-bit PKCS#8 key is ~6.5 KB).
const MAX_PRIVATE_KEY_LEN: usize = 16 * 1024;
/// Longest accepted short string (email, key id, project id).
const MAX_SHORT_LEN: usize = 256;
/// Longest accepted `token_uri`.
const MAX_URL_LEN: usize = 2048;

/// Parsed, validated credentials of one provider. `Debug` is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    provider: ProviderId,
    kind: CredentialsKind,
}

/// What the credentials consist of.
#[derive(Clone)]
pub enum CredentialsKind {
    /// Runway and Stability. `api_key` is any non-empty string of 1..=512 printable ASCII
    /// characters without whitespace: its exact format is the provider's business, and
    /// the simulator's `sim_…` keys must pass too.
    ApiKey {
        /// The key, sent as `Authorization: Bearer <api_key>`.
        api_key: SecretString,
        /// Stability: sent as the `Organization` header. Runway: kept for reference only
        /// (its keys are already scoped to one organization).
        organization_id: Option<String>,
    },
    /// A provider declared by a definition: its credential fields, every value secret.
    Fields {
        /// `(name, value)` in the definition's order; an optional field not given is absent.
        values: Vec<(String, SecretString)>,
    },
    /// Veo on Vertex AI.
    ServiceAccount {
        /// The service-account key.
        account: ServiceAccountKey,
        /// The Vertex AI region, e.g. `us-central1`.
        location: String,
    },
}

/// The parts of a Google service-account JSON key that byok uses. `Debug` is redacted for
/// `private_key`.
#[derive(Clone)]
pub struct ServiceAccountKey {
    /// The account, e.g. `renderer@my-project.iam.gserviceaccount.com`; the JWT `iss`.
    pub client_email: String,
    /// The key's id; the JWT header's `kid` when present.
    pub private_key_id: Option<String>,
    /// PEM-encoded RSA private key (PKCS#8, or PKCS#1 as google-auth also accepts).
    pub private_key: SecretString,
    /// Where the signed assertion is exchanged for an access token.
    pub token_uri: Url,
    /// The Google Cloud project whose Vertex AI is called (and billed).
    pub project_id: String,
}

/// A field of submitted or stored credentials that is missing or malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct CredentialsError {
    /// The offending field, e.g. `api_key`, `service_account.private_key`, `location`;
    /// `credentials` when the problem is the object itself.
    pub field: String,
    /// What is wrong, without the submitted value.
    pub message: String,
}

impl CredentialsError {
    pub(crate) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        CredentialsError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The provider's verdict on a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialCheck {
    /// The provider accepted the key.
    Valid,
    /// The provider said the key is bad (401/403, Google `invalid_grant`, …), or the
    /// credentials cannot work in this deployment (a `token_uri` the private-network policy
    /// refuses). `reason` carries the provider's own message, sanitised, e.g.
    /// "Runway rejected the key (HTTP 401): Invalid API key".
    Rejected {
        /// Why, safe to show to the key's owner.
        reason: String,
    },
    /// No verdict: network error, timeout, 429, 5xx, unexpected body. The key must not be
    /// marked invalid.
    Unavailable {
        /// Why, safe to show to the key's owner.
        reason: String,
    },
}

impl Credentials {
    pub(crate) fn new(provider: ProviderId, kind: CredentialsKind) -> Self {
        Credentials { provider, kind }
    }

    /// Whose credentials these are.
    pub fn provider(&self) -> ProviderId {
        self.provider
    }

    /// What the credentials consist of.
    pub fn kind(&self) -> &CredentialsKind {
        &self.kind
    }

    /// Short non-secret hint for display.
    ///
    /// API keys: the first segment up to and including the first `_` or `-` (if one is
    /// among the first 5 characters) + `…` + the last 4 characters, e.g. `key_…9f2c`,
    /// `sk-…9f2c`; keys shorter than 12 characters show only `…` + the last 2.
    /// Service accounts: `<client_email> (key …<last 4 of private_key_id>)`, or just the
    /// email when there is no key id.
    pub fn hint(&self) -> String {
        match &self.kind {
            CredentialsKind::ApiKey { api_key, .. } => api_key_hint(api_key.expose_secret()),
            // The definition's first field is its key (a required one: checked at load).
            CredentialsKind::Fields { values } => values
                .first()
                .map_or_else(|| "…".to_owned(), |(_, v)| api_key_hint(v.expose_secret())),
            CredentialsKind::ServiceAccount { account, .. } => match &account.private_key_id {
                Some(id) => format!("{} (key …{})", account.client_email, last_chars(id, 4)),
                None => account.client_email.clone(),
            },
        }
    }

    /// Canonical JSON bytes of these credentials, the plaintext that gets sealed and
    /// stored. `parse_credentials(&serde_json::from_slice(&to_plaintext())?)` gives back
    /// equal credentials. Service accounts are stored as an object holding only the fields
    /// byok uses (plus `type`), not the whole key file.
    pub fn to_plaintext(&self) -> Zeroizing<Vec<u8>> {
        match &self.kind {
            CredentialsKind::ApiKey {
                api_key,
                organization_id,
            } => {
                let plain = ApiKeyPlain {
                    api_key: api_key.expose_secret(),
                    organization_id: organization_id.as_deref(),
                };
                serialize(
                    &plain,
                    &[plain.api_key, plain.organization_id.unwrap_or("")],
                )
            }
            CredentialsKind::Fields { values } => {
                let plain = FieldsPlain(values);
                let strings: Vec<&str> = values
                    .iter()
                    .flat_map(|(k, v)| [k.as_str(), v.expose_secret()])
                    .collect();
                serialize(&plain, &strings)
            }
            CredentialsKind::ServiceAccount { account, location } => {
                let plain = ServiceAccountPlain {
                    service_account: AccountPlain {
                        kind: "service_account",
                        project_id: &account.project_id,
                        private_key_id: account.private_key_id.as_deref(),
                        private_key: account.private_key.expose_secret(),
                        client_email: &account.client_email,
                        token_uri: account.token_uri.as_str(),
                    },
                    location,
                };
                let a = &plain.service_account;
                serialize(
                    &plain,
                    &[
                        a.project_id,
                        a.private_key_id.unwrap_or(""),
                        a.private_key,
                        a.client_email,
                        a.token_uri,
                        plain.location,
                    ],
                )
            }
        }
    }
}

#[derive(Serialize)]
struct ApiKeyPlain<'a> {
    api_key: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    organization_id: Option<&'a str>,
}

/// A declared provider's fields as one JSON object, in the definition's order.
struct FieldsPlain<'a>(&'a [(String, SecretString)]);

impl Serialize for FieldsPlain<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in self.0 {
            map.serialize_entry(name, value.expose_secret())?;
        }
        map.end()
    }
}

#[derive(Serialize)]
struct ServiceAccountPlain<'a> {
    service_account: AccountPlain<'a>,
    location: &'a str,
}

#[derive(Serialize)]
struct AccountPlain<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    project_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    private_key_id: Option<&'a str>,
    private_key: &'a str,
    client_email: &'a str,
    token_uri: &'a str,
}

/// Serialises into a buffer sized up front for the worst case (every byte escaped as
/// `\u00XX`), so the buffer never reallocates and leaves an unwiped copy behind.
fn serialize<T: Serialize>(value: &T, strings: &[&str]) -> Zeroizing<Vec<u8>> {
    let capacity = 256 + strings.iter().map(|s| s.len() * 6).sum::<usize>();
    let mut buf = Zeroizing::new(Vec::with_capacity(capacity));
    // Writing structs of strings into a Vec cannot fail: there is no I/O and no map with
    // non-string keys.
    serde_json::to_writer(&mut *buf, value).expect("serialising strings into a Vec cannot fail");
    buf
}

fn api_key_hint(key: &str) -> String {
    if key.chars().count() < 12 {
        return format!("…{}", last_chars(key, 2));
    }
    let prefix = key
        .char_indices()
        .take(5)
        .find(|(_, c)| *c == '_' || *c == '-')
        .map_or("", |(i, c)| &key[..i + c.len_utf8()]);
    format!("{prefix}…{}", last_chars(key, 4))
}

/// The last `n` characters of `s` (all of it when shorter).
fn last_chars(s: &str, n: usize) -> &str {
    s.char_indices()
        .rev()
        .nth(n.saturating_sub(1))
        .map_or(s, |(i, _)| &s[i..])
}

impl PartialEq for CredentialsKind {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (
                CredentialsKind::ApiKey {
                    api_key: a,
                    organization_id: ao,
                },
                CredentialsKind::ApiKey {
                    api_key: b,
                    organization_id: bo,
                },
            ) => a.expose_secret() == b.expose_secret() && ao == bo,
            (
                CredentialsKind::ServiceAccount {
                    account: a,
                    location: al,
                },
                CredentialsKind::ServiceAccount {
                    account: b,
                    location: bl,
                },
            ) => a == b && al == bl,
            (CredentialsKind::Fields { values: a }, CredentialsKind::Fields { values: b }) => {
                a.len() == b.len()
                    && a.iter().zip(b).all(|((an, av), (bn, bv))| {
                        an == bn && av.expose_secret() == bv.expose_secret()
                    })
            }
            _ => false,
        }
    }
}

impl Eq for CredentialsKind {}

impl PartialEq for ServiceAccountKey {
    fn eq(&self, other: &Self) -> bool {
        self.client_email == other.client_email
            && self.private_key_id == other.private_key_id
            && self.private_key.expose_secret() == other.private_key.expose_secret()
            && self.token_uri == other.token_uri
            && self.project_id == other.project_id
    }
}

impl Eq for ServiceAccountKey {}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("provider", &self.provider)
            .field("kind", &self.kind)
            .finish()
    }
}

impl fmt::Debug for CredentialsKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CredentialsKind::ApiKey {
                api_key: _,
                organization_id,
            } => f
                .debug_struct("ApiKey")
                .field("api_key", &"[REDACTED]")
                .field("organization_id", organization_id)
                .finish(),
            CredentialsKind::Fields { values } => f
                .debug_struct("Fields")
                .field(
                    "names",
                    &values.iter().map(|(name, _)| name).collect::<Vec<_>>(),
                )
                .field("values", &"[REDACTED]")
                .finish(),
            CredentialsKind::ServiceAccount { account, location } => f
                .debug_struct("ServiceAccount")
                .field("account", account)
                .field("location", location)
                .finish(),
        }
    }
}

impl fmt::Debug for ServiceAccountKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccountKey")
            .field("client_email", &self.client_email)
            .field("private_key_id", &self.private_key_id)
            .field("private_key", &"[REDACTED]")
            .field("token_uri", &self.token_uri.as_str())
            .field("project_id", &self.project_id)
            .finish()
    }
}

/// The API key (and organization id) of `credentials`, which must be `expected`'s.
///
/// Credentials of another provider are a caller bug, not a verdict on the key, so they
/// give `Unavailable` (a key must never be marked invalid because of our mistake).
pub(crate) fn api_key_of(
    credentials: &Credentials,
    expected: ProviderId,
) -> Result<(&SecretString, Option<&str>), CredentialCheck> {
    match &credentials.kind {
        CredentialsKind::ApiKey {
            api_key,
            organization_id,
        } if credentials.provider == expected => Ok((api_key, organization_id.as_deref())),
        _ => Err(wrong_provider(credentials, expected)),
    }
}

/// [`api_key_of`] for a generation call of `adapter` (the name in the message): credentials
/// of another provider are a caller bug there, `internal`, permanent.
pub(crate) fn job_api_key<'a>(
    credentials: &'a Credentials,
    expected: ProviderId,
    adapter: &str,
) -> Result<(&'a SecretString, Option<&'a str>), JobError> {
    api_key_of(credentials, expected).map_err(|_| wrong_adapter(credentials, adapter))
}

/// Credentials of another provider reached a generation call of `adapter`: a caller bug,
/// `internal`, permanent.
pub(crate) fn wrong_adapter(credentials: &Credentials, adapter: &str) -> JobError {
    internal(&format!(
        "{} credentials were given to the {adapter} adapter",
        credentials.provider()
    ))
}

/// The `Unavailable` answer for credentials handed to the wrong adapter.
pub(crate) fn wrong_provider(credentials: &Credentials, expected: ProviderId) -> CredentialCheck {
    tracing::error!(
        given = %credentials.provider,
        %expected,
        "credentials of one provider were checked by another provider's adapter"
    );
    CredentialCheck::Unavailable {
        reason: format!(
            "internal error: {} credentials were given to the {expected} adapter",
            credentials.provider
        ),
    }
}

// ---------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------

/// Parses `{"api_key": "…", "organization_id": "…"?}` (Runway, Stability).
pub(crate) fn parse_api_key(
    provider: ProviderId,
    raw: &Value,
) -> Result<Credentials, CredentialsError> {
    parse_key_fields(provider, raw, &["api_key", "organization_id"])
}

/// Parses `{"api_key": "…"}` (fal, Replicate: a key or token names its account by itself).
pub(crate) fn parse_api_key_only(
    provider: ProviderId,
    raw: &Value,
) -> Result<Credentials, CredentialsError> {
    parse_key_fields(provider, raw, &["api_key"])
}

fn parse_key_fields(
    provider: ProviderId,
    raw: &Value,
    fields: &[&str],
) -> Result<Credentials, CredentialsError> {
    let obj = as_object(raw)?;
    reject_unknown_fields(obj, fields)?;
    let api_key = required_str(obj, "api_key", "api_key")?;
    check_token_chars(api_key, MAX_API_KEY_LEN).map_err(|m| CredentialsError::new("api_key", m))?;
    let organization_id = optional_str(obj, "organization_id", "organization_id")?
        .map(|org| {
            check_token_chars(org, MAX_ORGANIZATION_ID_LEN)
                .map(|()| org.to_owned())
                .map_err(|m| CredentialsError::new("organization_id", m))
        })
        .transpose()?;
    Ok(Credentials::new(
        provider,
        CredentialsKind::ApiKey {
            api_key: SecretString::from(api_key),
            organization_id,
        },
    ))
}

/// Longest accepted value of a declared provider's credential field.
const MAX_FIELD_LEN: usize = 4096;

/// Parses a declared provider's credentials: an object of the definition's `fields`
/// (`(name, required)`), every value a string of 1 to 4096 characters without control
/// characters; unknown members are refused, as for the built-in providers.
pub(crate) fn parse_fields(
    provider: ProviderId,
    raw: &Value,
    fields: &[(&str, bool)],
) -> Result<Credentials, CredentialsError> {
    let obj = as_object(raw)?;
    let names: Vec<&str> = fields.iter().map(|(name, _)| *name).collect();
    reject_unknown_fields(obj, &names)?;
    let mut values = Vec::with_capacity(fields.len());
    for (name, required) in fields {
        let value = if *required {
            Some(required_str(obj, name, name)?)
        } else {
            optional_str(obj, name, name)?
        };
        let Some(value) = value else { continue };
        if value.len() > MAX_FIELD_LEN {
            return Err(CredentialsError::new(
                *name,
                format!("must be at most {MAX_FIELD_LEN} characters"),
            ));
        }
        if value.chars().any(char::is_control) {
            return Err(CredentialsError::new(
                *name,
                "must not contain control characters",
            ));
        }
        values.push(((*name).to_owned(), SecretString::from(value)));
    }
    Ok(Credentials::new(
        provider,
        CredentialsKind::Fields { values },
    ))
}

/// Parses `{"service_account": <object or JSON string>, "location": "…"?}` (Veo).
/// The `token_uri` must be Google's or in `token_uri_allowlist`, and pass the
/// private-network policy (`allow_private_networks`, [`net::check_url`]).
pub(crate) fn parse_service_account(
    raw: &Value,
    allow_private_networks: bool,
    token_uri_allowlist: &[Url],
) -> Result<Credentials, CredentialsError> {
    const SA: &str = "service_account";
    let obj = as_object(raw)?;
    reject_unknown_fields(obj, &[SA, "location"])?;

    let not_an_object =
        || CredentialsError::new(SA, "must be a JSON object or a string containing one");
    let mut from_string = None;
    let account = match obj.get(SA) {
        None | Some(Value::Null) => return Err(CredentialsError::new(SA, "is required")),
        Some(Value::Object(map)) => map,
        Some(Value::String(text)) => {
            if text.trim().is_empty() {
                return Err(CredentialsError::new(SA, "must not be empty"));
            }
            if text.len() > MAX_SERVICE_ACCOUNT_JSON_LEN {
                return Err(CredentialsError::new(
                    SA,
                    format!("is longer than {MAX_SERVICE_ACCOUNT_JSON_LEN} bytes"),
                ));
            }
            // Only the position of a syntax error is reported: serde's messages can quote
            // the input, which holds the private key.
            let parsed: Value = serde_json::from_str(text).map_err(|e| {
                CredentialsError::new(
                    SA,
                    format!(
                        "is not valid JSON (line {}, column {})",
                        e.line(),
                        e.column()
                    ),
                )
            })?;
            from_string
                .insert(http::WipedJson(Some(parsed)))
                .0
                .as_ref()
                .and_then(Value::as_object)
                .ok_or_else(not_an_object)?
        }
        Some(_) => return Err(not_an_object()),
    };

    let kind = required_str(account, "type", "service_account.type")?;
    if kind != "service_account" {
        return Err(CredentialsError::new(
            "service_account.type",
            "must be \"service_account\"",
        ));
    }

    let client_email = required_str(account, "client_email", "service_account.client_email")?;
    check_email(client_email)
        .map_err(|m| CredentialsError::new("service_account.client_email", m))?;

    let private_key_id = optional_str(account, "private_key_id", "service_account.private_key_id")?;
    if let Some(id) = private_key_id {
        check_token_chars(id, MAX_SHORT_LEN)
            .map_err(|m| CredentialsError::new("service_account.private_key_id", m))?;
    }

    let private_key = required_str(account, "private_key", "service_account.private_key")?;
    if private_key.len() > MAX_PRIVATE_KEY_LEN {
        return Err(CredentialsError::new(
            "service_account.private_key",
            format!("is longer than {MAX_PRIVATE_KEY_LEN} bytes"),
        ));
    }
    vertex::parse_private_key(private_key)
        .map_err(|e| CredentialsError::new("service_account.private_key", e.to_string()))?;

    let token_uri = required_str(account, "token_uri", "service_account.token_uri")?;
    let token_uri = parse_token_uri(token_uri, allow_private_networks, token_uri_allowlist)
        .map_err(|m| CredentialsError::new("service_account.token_uri", m))?;

    let project_id = required_str(account, "project_id", "service_account.project_id")?;
    check_project_id(project_id)
        .map_err(|m| CredentialsError::new("service_account.project_id", m))?;

    let location = match optional_str(obj, "location", "location")? {
        None => DEFAULT_LOCATION.to_owned(),
        Some(location) if is_location(location) => location.to_owned(),
        Some(_) => {
            return Err(CredentialsError::new(
                "location",
                "must match ^[a-z0-9-]{1,40}$, e.g. \"us-central1\"",
            ));
        }
    };

    Ok(Credentials::new(
        ProviderId::VEO,
        CredentialsKind::ServiceAccount {
            account: ServiceAccountKey {
                client_email: client_email.to_owned(),
                private_key_id: private_key_id.map(str::to_owned),
                private_key: SecretString::from(private_key),
                token_uri,
                project_id: project_id.to_owned(),
            },
            location,
        },
    ))
}

fn as_object(raw: &Value) -> Result<&Map<String, Value>, CredentialsError> {
    raw.as_object()
        .ok_or_else(|| CredentialsError::new("credentials", "must be a JSON object"))
}

/// Unknown members are refused so that a typo in an optional field does not silently
/// drop it. The member name is echoed only when it looks like a field name: a user who
/// pasted a key where a name belongs must not see it repeated in an error or a log.
fn reject_unknown_fields(obj: &Map<String, Value>, known: &[&str]) -> Result<(), CredentialsError> {
    let Some(unknown) = obj.keys().find(|k| !known.contains(&k.as_str())) else {
        return Ok(());
    };
    let expected = known.join(", ");
    let looks_like_a_name = unknown.len() <= 40
        && unknown
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if looks_like_a_name && !unknown.is_empty() {
        Err(CredentialsError::new(
            unknown.as_str(),
            format!("unknown field; expected {expected}"),
        ))
    } else {
        Err(CredentialsError::new(
            "credentials",
            format!("has an unknown field; expected {expected}"),
        ))
    }
}

fn required_str<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    field: &str,
) -> Result<&'a str, CredentialsError> {
    match obj.get(key) {
        None | Some(Value::Null) => Err(CredentialsError::new(field, "is required")),
        Some(Value::String(s)) if s.is_empty() => {
            Err(CredentialsError::new(field, "must not be empty"))
        }
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(CredentialsError::new(field, "must be a string")),
    }
}

/// Absent, `null` and `""` all mean "not given" (forms send `""` for an empty optional
/// field); any other non-string is an error.
fn optional_str<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    field: &str,
) -> Result<Option<&'a str>, CredentialsError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(CredentialsError::new(field, "must be a string")),
    }
}

/// 1..=`max` printable ASCII characters, no whitespace.
fn check_token_chars(value: &str, max: usize) -> Result<(), String> {
    if value.len() > max {
        return Err(format!("must be at most {max} characters"));
    }
    if value.bytes().any(|b| b.is_ascii_whitespace()) {
        return Err("must not contain whitespace".to_owned());
    }
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("must contain only printable ASCII characters".to_owned());
    }
    Ok(())
}

fn check_email(email: &str) -> Result<(), String> {
    if email.len() > MAX_SHORT_LEN {
        return Err(format!("must be at most {MAX_SHORT_LEN} characters"));
    }
    let ok = match email.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.contains('@')
                && email.chars().all(|c| !c.is_whitespace() && !c.is_control())
        }
        None => false,
    };
    if ok {
        Ok(())
    } else {
        Err("must be an email address such as name@project.iam.gserviceaccount.com".to_owned())
    }
}

/// Google project ids: lowercase letters, digits and hyphens; legacy domain-scoped ids
/// add `example.com:` in front. Checked because the id becomes part of request paths.
fn check_project_id(id: &str) -> Result<(), String> {
    let ok = id.len() <= MAX_SHORT_LEN
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.' | ':'));
    if ok {
        Ok(())
    } else {
        Err("must contain only lowercase letters, digits, '-', '.' and ':'".to_owned())
    }
}

/// A Vertex AI location as credentials (and a model's `wire.location`) may name one:
/// `[a-z0-9-]{1,40}`.
pub(crate) fn is_location(location: &str) -> bool {
    (1..=40).contains(&location.len())
        && location
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn parse_token_uri(
    raw: &str,
    allow_private_networks: bool,
    allowlist: &[Url],
) -> Result<Url, String> {
    if raw.len() > MAX_URL_LEN {
        return Err(format!("must be at most {MAX_URL_LEN} characters"));
    }
    let url = Url::parse(raw).map_err(|e| format!("is not a valid URL ({e})"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not contain a user name or password".to_owned());
    }
    net::check_url(&url, allow_private_networks).map_err(|e| e.to_string())?;
    // Compared as parsed URLs, so `HTTPS://OAuth2.googleapis.com:443/token` is Google's.
    let google = Url::parse(crate::options::GOOGLE_TOKEN_URI).ok();
    if google.as_ref() != Some(&url) && !allowlist.contains(&url) {
        return Err(format!(
            "must be Google's token endpoint ({}) or one listed in providers.veo.token_uri_allowlist",
            crate::options::GOOGLE_TOKEN_URI
        ));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(key: &str) -> Credentials {
        Credentials::new(
            ProviderId::RUNWAY,
            CredentialsKind::ApiKey {
                api_key: SecretString::from(key),
                organization_id: None,
            },
        )
    }

    #[test]
    fn api_key_hints() {
        let long = format!("key_{}9f2c", "a".repeat(124));
        assert_eq!(api(&long).hint(), "key_…9f2c");
        assert_eq!(api("sk-0123456789abcdef9f2c").hint(), "sk-…9f2c");
        assert_eq!(api("sim_valid_key_0001").hint(), "sim_…0001");
        // No separator among the first five characters: no prefix.
        assert_eq!(api("abcdefgh_ijkl9f2c").hint(), "…9f2c");
        assert_eq!(api("abcd-efghijkl").hint(), "abcd-…ijkl");
        assert_eq!(api("abcde-fghijkl").hint(), "…ijkl");
        // Short keys give away only two characters.
        assert_eq!(api("sim_abc").hint(), "…bc");
        assert_eq!(api("x").hint(), "…x");
        assert_eq!(api("key_1234567").hint(), "…67");
        assert_eq!(api("key_12345678").hint(), "key_…5678");
    }

    #[test]
    fn last_chars_is_char_safe() {
        assert_eq!(last_chars("héllo", 4), "éllo");
        assert_eq!(last_chars("ab", 4), "ab");
        assert_eq!(last_chars("", 4), "");
    }

    #[test]
    fn api_key_plaintext_is_canonical() {
        let creds = parse_api_key(
            ProviderId::STABILITY,
            &serde_json::json!({"organization_id": "org-1", "api_key": "sk-abc"}),
        )
        .unwrap();
        assert_eq!(
            creds.to_plaintext().as_slice(),
            br#"{"api_key":"sk-abc","organization_id":"org-1"}"#
        );
        let creds = parse_api_key(
            ProviderId::STABILITY,
            &serde_json::json!({"api_key": "sk-abc", "organization_id": null}),
        )
        .unwrap();
        assert_eq!(creds.to_plaintext().as_slice(), br#"{"api_key":"sk-abc"}"#);
    }

    #[test]
    fn locations_and_project_ids() {
        assert!(is_location("us-central1"));
        assert!(is_location("global"));
        assert!(!is_location("US-central1"));
        assert!(!is_location(&"a".repeat(41)));
        assert!(!is_location("us central1"));
        assert!(check_project_id("my-project-123").is_ok());
        assert!(check_project_id("example.com:my-project").is_ok());
        assert!(check_project_id("My_Project").is_err());
        assert!(check_project_id("a/../b").is_err());
    }

    #[test]
    fn unknown_field_names_are_echoed_only_when_they_look_like_names() {
        let obj = serde_json::json!({"api_key": "k", "organisation_id": "o"});
        let err = reject_unknown_fields(obj.as_object().unwrap(), &["api_key", "organization_id"])
            .unwrap_err();
        assert_eq!(err.field, "organisation_id");
        let secret = "sk-LOOKS-LIKE-A-PASTED-KEY-0123456789";
        let obj = serde_json::json!({ secret: "" });
        let err = reject_unknown_fields(obj.as_object().unwrap(), &["api_key"]).unwrap_err();
        assert_eq!(err.field, "credentials");
        assert!(!err.to_string().contains(secret));
    }
}
