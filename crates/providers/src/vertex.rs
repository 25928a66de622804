//! Google service-account authentication for Vertex AI: the OAuth 2.0 JWT-bearer flow
//! exactly as `google-auth` does it (docs/provider-protocols.md §3.9), and a per-account
//! access-token cache.
//!
//! 1. A JWT is built with header `{"alg":"RS256","typ":"JWT","kid":<private_key_id>}`
//!    (no `kid` without a key id) and claims `iss` = client_email, `scope` =
//!    [`CLOUD_PLATFORM_SCOPE`], `aud` = [`TOKEN_AUDIENCE`] (google-auth hard-codes this
//!    even when `token_uri` differs), `iat` = now, `exp` = now + 3600; each part
//!    base64url without padding, signed RS256 (RSASSA-PKCS1-v1_5 with SHA-256).
//! 2. It is POSTed to the key's `token_uri` as
//!    `grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=<JWT>`.
//! 3. `200 {"access_token","expires_in"}` is a token (`expires_in` may be a number or a
//!    string). RFC 6749 errors `invalid_grant`, `invalid_client`, `unauthorized_client`
//!    (and any 401/403) reject the key; 408/429/5xx, transport errors and
//!    `server_error`-like codes give no verdict.
//!
//! `token_uri` is user input, so requests to it follow the private-network policy of
//! [`crate::net`].
//!
//! [`TokenSource`] caches one token per service account until [`REFRESH_MARGIN`] before it
//! expires, makes concurrent callers for the same account share one exchange, and lets a
//! caller that got a 401 with a cached token [`invalidate`](TokenSource::invalidate) it
//! and fetch once more.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use aws_lc_rs::digest;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeyPair as RsaKeyPair;
use aws_lc_rs::signature::RSA_PKCS1_SHA256;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde_json::Value;
use zeroize::Zeroizing;

use crate::http::{self, Body, USER_AGENT};
use crate::{CredentialCheck, ServiceAccountKey, net};

/// The OAuth scope requested: everything the account's IAM roles allow on Google Cloud.
pub const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// The JWT `aud` claim. google-auth always uses this value, whatever the `token_uri`.
pub const TOKEN_AUDIENCE: &str = "https://oauth2.googleapis.com/token";
/// `exp - iat` of the assertion; Google refuses longer ones.
pub const ASSERTION_LIFETIME: Duration = Duration::from_secs(3600);
/// A cached token is replaced when it has less than this left, so that a request started
/// with it does not fail half-way for expiry.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(60);

/// The form body up to the assertion (RFC 7523 grant type, percent-encoded as
/// google-auth's `urlencode` does).
const FORM_PREFIX: &str =
    "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=";
/// A token endpoint claiming a longer lifetime is not believed beyond this: Google's
/// tokens live an hour, and a token endpoint that says otherwise is not trusted to keep a
/// token in this process's memory any longer.
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
/// Longest access token accepted (Google's are ~200 bytes).
const MAX_ACCESS_TOKEN_LEN: usize = 8 * 1024;
/// The most accounts the cache holds. When it is full, entries that are neither fresh
/// nor in use are dropped before a new one is added; when none can be dropped, the new
/// account's token is fetched without being cached, so the memory stays bounded however
/// many service accounts pass through.
const MAX_CACHED_ACCOUNTS: usize = 4096;

const PKCS8_BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
const PKCS8_END: &str = "-----END PRIVATE KEY-----";
const PKCS1_BEGIN: &str = "-----BEGIN RSA PRIVATE KEY-----";
const PKCS1_END: &str = "-----END RSA PRIVATE KEY-----";

/// Why a `private_key` PEM is unusable. Messages never include key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum KeyError {
    #[error("must be a PEM block starting with {PKCS8_BEGIN}")]
    NotPem,
    #[error("is an encrypted key; service-account keys are not encrypted")]
    Encrypted,
    #[error("has no {0} line")]
    NoEnd(&'static str),
    #[error("is not valid base64 inside the PEM block")]
    Base64,
    #[error("is not a usable RSA private key of 2048 to 8192 bits ({0})")]
    NotRsa(&'static str),
}

/// Parses a PEM RSA private key: PKCS#8 (`BEGIN PRIVATE KEY`, what Google issues) or
/// PKCS#1 (`BEGIN RSA PRIVATE KEY`, which google-auth also accepts). Literal `\n`
/// sequences are read as newlines: keys that went through an environment variable or a
/// double JSON encoding often arrive that way.
pub(crate) fn parse_private_key(pem: &str) -> Result<RsaKeyPair, KeyError> {
    let normalized = Zeroizing::new(pem.replace("\\n", "\n"));
    let text = normalized.trim();
    let (body, pkcs8) = if let Some(rest) = text.strip_prefix(PKCS8_BEGIN) {
        (
            rest.strip_suffix(PKCS8_END)
                .ok_or(KeyError::NoEnd(PKCS8_END))?,
            true,
        )
    } else if let Some(rest) = text.strip_prefix(PKCS1_BEGIN) {
        (
            rest.strip_suffix(PKCS1_END)
                .ok_or(KeyError::NoEnd(PKCS1_END))?,
            false,
        )
    } else if text.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
        return Err(KeyError::Encrypted);
    } else {
        return Err(KeyError::NotPem);
    };
    let mut b64 = Zeroizing::new(String::with_capacity(body.len()));
    b64.extend(body.chars().filter(|c| !c.is_ascii_whitespace()));
    let mut der = Zeroizing::new(Vec::with_capacity(b64.len() / 4 * 3 + 3));
    STANDARD
        .decode_vec(b64.as_bytes(), &mut der)
        .map_err(|_| KeyError::Base64)?;
    let parsed = if pkcs8 {
        RsaKeyPair::from_pkcs8(&der)
    } else {
        RsaKeyPair::from_der(&der)
    };
    parsed.map_err(|e| KeyError::NotRsa(e.description_()))
}

#[derive(Serialize)]
struct JwtHeader<'a> {
    alg: &'static str,
    typ: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    kid: Option<&'a str>,
}

#[derive(Serialize)]
struct JwtClaims<'a> {
    iss: &'a str,
    scope: &'static str,
    aud: &'static str,
    iat: i64,
    exp: i64,
}

/// Builds and signs the JWT-bearer assertion for `account`, issued at `issued_at` (Unix
/// seconds). The assertion is itself a credential (it buys tokens for an hour), hence
/// the `SecretString`.
pub(crate) fn sign_assertion(
    account: &ServiceAccountKey,
    key: &RsaKeyPair,
    issued_at: i64,
) -> Result<SecretString, aws_lc_rs::error::Unspecified> {
    let header = JwtHeader {
        alg: "RS256",
        typ: "JWT",
        kid: account.private_key_id.as_deref(),
    };
    let claims = JwtClaims {
        iss: &account.client_email,
        scope: CLOUD_PLATFORM_SCOPE,
        aud: TOKEN_AUDIENCE,
        iat: issued_at,
        // ASSERTION_LIFETIME is 3600 and fits any i64.
        exp: issued_at + ASSERTION_LIFETIME.as_secs() as i64,
    };
    // Serialising structs of strings and integers cannot fail.
    let header = serde_json::to_vec(&header).map_err(|_| aws_lc_rs::error::Unspecified)?;
    let claims = serde_json::to_vec(&claims).map_err(|_| aws_lc_rs::error::Unspecified)?;
    let mut jwt = Zeroizing::new(String::with_capacity(
        (header.len() + claims.len() + key.public_modulus_len()) * 4 / 3 + 16,
    ));
    URL_SAFE_NO_PAD.encode_string(&header, &mut jwt);
    jwt.push('.');
    URL_SAFE_NO_PAD.encode_string(&claims, &mut jwt);
    let mut signature = vec![0u8; key.public_modulus_len()];
    key.sign(
        &RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        jwt.as_bytes(),
        &mut signature,
    )?;
    jwt.push('.');
    URL_SAFE_NO_PAD.encode_string(&signature, &mut jwt);
    Ok(SecretString::from(jwt.as_str()))
}

/// An OAuth access token for Vertex AI calls (`Authorization: Bearer <token>`). `Debug`
/// is redacted.
#[derive(Clone)]
pub struct AccessToken {
    token: SecretString,
    expires_at: Instant,
}

impl AccessToken {
    /// The bearer token.
    pub fn secret(&self) -> &SecretString {
        &self.token
    }

    /// When the token endpoint said it expires, measured from when the request was sent.
    pub fn expires_at(&self) -> Instant {
        self.expires_at
    }

    /// Whether the token has more than `margin` left at `now`.
    fn is_fresh(&self, now: Instant, margin: Duration) -> bool {
        now.checked_add(margin)
            .is_some_and(|deadline| deadline < self.expires_at)
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("token", &"[REDACTED]")
            .field(
                "expires_in",
                &self.expires_at.saturating_duration_since(Instant::now()),
            )
            .finish()
    }
}

/// Why no access token was obtained. Reasons are sanitised and safe to show the key's
/// owner.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The token endpoint refused the service account (`invalid_grant`, 401, …), or its
    /// `token_uri` is refused by the private-network policy. Retrying will not help.
    #[error("{reason}")]
    Rejected {
        /// Why.
        reason: String,
    },
    /// No verdict: transport error, timeout, 408/429/5xx or an unexpected answer.
    #[error("{reason}")]
    Unavailable {
        /// Why.
        reason: String,
    },
}

impl From<TokenError> for CredentialCheck {
    fn from(err: TokenError) -> Self {
        match err {
            TokenError::Rejected { reason } => CredentialCheck::Rejected { reason },
            TokenError::Unavailable { reason } => CredentialCheck::Unavailable { reason },
        }
    }
}

type Slot = Arc<tokio::sync::Mutex<Option<AccessToken>>>;

/// Exchanges service-account keys for access tokens and caches them per account.
///
/// Cheap to share (`Arc<TokenSource>`); one per process is enough.
pub struct TokenSource {
    http: reqwest::Client,
    allow_private_networks: bool,
    request_timeout: Duration,
    /// Keyed by a SHA-256 over the account's identity *and* private key, so a rotated key
    /// never gets the old key's token and the map holds no secret.
    slots: Mutex<HashMap<[u8; 32], Slot>>,
    /// [`MAX_CACHED_ACCOUNTS`], smaller in tests.
    max_cached: usize,
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cached = self
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        f.debug_struct("TokenSource")
            .field("allow_private_networks", &self.allow_private_networks)
            .field("request_timeout", &self.request_timeout)
            .field("cached_accounts", &cached)
            .finish_non_exhaustive()
    }
}

impl TokenSource {
    /// A token source whose requests time out after `request_timeout` and whose
    /// `token_uri`s follow the private-network policy ([`crate::net`]).
    pub fn new(
        allow_private_networks: bool,
        request_timeout: Duration,
    ) -> Result<TokenSource, reqwest::Error> {
        let http = net::client_builder(allow_private_networks)
            .user_agent(USER_AGENT)
            .timeout(request_timeout)
            .build()?;
        Ok(TokenSource {
            http,
            allow_private_networks,
            request_timeout,
            slots: Mutex::new(HashMap::new()),
            max_cached: MAX_CACHED_ACCOUNTS,
        })
    }

    /// The per-request timeout of token exchanges; the Veo adapter uses the same one for
    /// its Vertex AI calls.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// A token for `account`: the cached one while it has more than [`REFRESH_MARGIN`]
    /// left, else a new one from the token endpoint. Concurrent calls for the same
    /// account wait for one exchange instead of making one each.
    pub async fn token(&self, account: &ServiceAccountKey) -> Result<AccessToken, TokenError> {
        let slot = self.slot(account);
        let mut cached = slot.lock().await;
        if let Some(token) = cached.as_ref()
            && token.is_fresh(Instant::now(), REFRESH_MARGIN)
        {
            return Ok(token.clone());
        }
        let result = self.exchange(account).await;
        *cached = result.as_ref().ok().cloned();
        result
    }

    /// Always exchanges the key for a new token (what the credential check uses: a cached
    /// token would not notice a key that was revoked since). A new token replaces the
    /// cached one; a failure clears it.
    pub async fn fetch_fresh(
        &self,
        account: &ServiceAccountKey,
    ) -> Result<AccessToken, TokenError> {
        let slot = self.slot(account);
        let mut cached = slot.lock().await;
        let result = self.exchange(account).await;
        *cached = result.as_ref().ok().cloned();
        result
    }

    /// Forgets the cached token of `account`, e.g. after Vertex answered 401 to it; the
    /// next [`token`](Self::token) call exchanges the key again.
    pub fn invalidate(&self, account: &ServiceAccountKey) {
        let key = cache_key(account);
        self.slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&key);
    }

    fn slot(&self, account: &ServiceAccountKey) -> Slot {
        let key = cache_key(account);
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = slots.get(&key) {
            return Arc::clone(slot);
        }
        if slots.len() >= self.max_cached {
            let now = Instant::now();
            slots.retain(|_, slot| {
                Arc::strong_count(slot) > 1
                    || slot.try_lock().map_or(true, |cached| {
                        cached
                            .as_ref()
                            .is_some_and(|t| t.is_fresh(now, REFRESH_MARGIN))
                    })
            });
            if slots.len() >= self.max_cached {
                // Every entry is fresh or in use: this account goes uncached (its
                // exchange still happens, once per call) rather than the map growing.
                return Slot::default();
            }
        }
        Arc::clone(slots.entry(key).or_default())
    }

    /// One JWT-bearer exchange, no cache.
    async fn exchange(&self, account: &ServiceAccountKey) -> Result<AccessToken, TokenError> {
        let rejected = |reason: String| TokenError::Rejected { reason };
        net::check_url(&account.token_uri, self.allow_private_networks)
            .map_err(|e| rejected(format!("service_account.token_uri is refused: {e}")))?;
        let key = parse_private_key(account.private_key.expose_secret())
            .map_err(|e| rejected(format!("service_account.private_key {e}")))?;
        let assertion =
            sign_assertion(account, &key, chrono::Utc::now().timestamp()).map_err(|_| {
                TokenError::Unavailable {
                    reason: "could not sign the token request".to_owned(),
                }
            })?;
        let secret = assertion.expose_secret();
        // The signature alone is also redacted, in case an endpoint echoes only that part.
        let signature = secret.rsplit('.').next().unwrap_or_default();
        let secrets = [secret, signature];

        let form = Zeroizing::new(format!("{FORM_PREFIX}{secret}"));
        let sent_at = Instant::now();
        let response = self
            .http
            .post(account.token_uri.clone())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(ACCEPT, "application/json")
            .body(form.as_bytes().to_vec())
            .send()
            .await;
        let host = account.token_uri.host_str().unwrap_or("token endpoint");
        let response = match response {
            Ok(response) => response,
            Err(err) => return Err(self.transport_error(&err, host, &secrets)),
        };
        let status = response.status();
        let body = match http::read_capped(response).await {
            Ok(body) => body,
            Err(err) => return Err(self.transport_error(&err, host, &secrets)),
        };
        classify_token_response(status, &body, sent_at, &secrets)
    }

    fn transport_error(&self, err: &reqwest::Error, host: &str, secrets: &[&str]) -> TokenError {
        if let Some(policy) = net::policy_violation(err) {
            return TokenError::Rejected {
                reason: format!("service_account.token_uri is refused: {policy}"),
            };
        }
        let what = http::describe_transport_error(err, self.request_timeout);
        TokenError::Unavailable {
            reason: http::sanitize(
                &format!("the token endpoint {host} could not be reached: {what}"),
                secrets,
            ),
        }
    }
}

fn classify_token_response(
    status: StatusCode,
    body: &Body,
    sent_at: Instant,
    secrets: &[&str],
) -> Result<AccessToken, TokenError> {
    let json = http::WipedJson(body.json());
    let json = json.0.as_ref();
    let code = status.as_u16();
    if status == StatusCode::OK {
        return parse_token(json, sent_at).map_err(|what| TokenError::Unavailable {
            reason: format!("the token endpoint sent an unexpected answer (HTTP 200, {what})"),
        });
    }
    let error = json
        .and_then(|j| j.get("error"))
        .and_then(Value::as_str)
        .map(|e| http::sanitize(e, secrets));
    let description = json
        .and_then(|j| j.get("error_description"))
        .and_then(Value::as_str)
        .map(|d| http::sanitize(d, secrets));
    let label = match &error {
        Some(error) => format!("HTTP {code}, {error}"),
        None => format!("HTTP {code}"),
    };
    let rejects_key = matches!(
        error.as_deref(),
        Some("invalid_grant" | "invalid_client" | "unauthorized_client")
    );
    let transient = matches!(
        error.as_deref(),
        Some("internal_failure" | "server_error" | "temporarily_unavailable")
    );
    let rejected = !transient && (rejects_key || matches!(code, 401 | 403)) && code < 500;
    if rejected {
        Err(TokenError::Rejected {
            reason: http::with_detail(
                format!("Google rejected the service account key ({label})"),
                description,
            ),
        })
    } else {
        // 400 with another error (invalid_request, invalid_scope, …) would be a bug of
        // ours, not a verdict on the key; 408/429/5xx are transient.
        Err(TokenError::Unavailable {
            reason: http::with_detail(
                format!("the token endpoint could not issue a token ({label})"),
                description,
            ),
        })
    }
}

/// Reads `access_token` and `expires_in` (a number or a numeric string) of a 200 answer.
fn parse_token(json: Option<&Value>, sent_at: Instant) -> Result<AccessToken, &'static str> {
    let json = json.ok_or("not a JSON object")?;
    let token = match json.get("access_token") {
        Some(Value::String(t)) if !t.is_empty() => t,
        _ => return Err("no access_token"),
    };
    if token.len() > MAX_ACCESS_TOKEN_LEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("malformed access_token");
    }
    let seconds = match json.get("expires_in") {
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
        _ => return Err("no expires_in"),
    };
    let lifetime = match seconds {
        Some(s) if s.is_finite() && s >= 0.0 => {
            Duration::from_secs_f64(s.min(MAX_TOKEN_LIFETIME.as_secs_f64()))
        }
        _ => return Err("malformed expires_in"),
    };
    Ok(AccessToken {
        token: SecretString::from(token.as_str()),
        expires_at: sent_at + lifetime,
    })
}

/// Identity of a service-account key for the cache: length-prefixed fields, hashed.
fn cache_key(account: &ServiceAccountKey) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for part in [
        account.client_email.as_str(),
        account.private_key_id.as_deref().unwrap_or(""),
        account.token_uri.as_str(),
        account.private_key.expose_secret(),
    ] {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part.as_bytes());
    }
    let mut key = [0u8; 32];
    key.copy_from_slice(ctx.finish().as_ref());
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::rsa::KeySize;
    use aws_lc_rs::signature::{self, KeyPair as _, UnparsedPublicKey};

    fn pem(der: &[u8], label: &str) -> String {
        let b64 = STANDARD.encode(der);
        let mut out = format!("-----BEGIN {label}-----\n");
        for line in b64.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(line).unwrap());
            out.push('\n');
        }
        out.push_str(&format!("-----END {label}-----\n"));
        out
    }

    fn account(private_key: &str, kid: Option<&str>) -> ServiceAccountKey {
        ServiceAccountKey {
            client_email: "renderer@proj.iam.gserviceaccount.com".into(),
            private_key_id: kid.map(str::to_owned),
            private_key: SecretString::from(private_key),
            token_uri: "https://oauth2.googleapis.com/token".parse().unwrap(),
            project_id: "proj".into(),
        }
    }

    #[test]
    fn private_keys_parse_in_pkcs8_and_escaped_forms_and_errors_say_why() {
        let key = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
        let pkcs8 = pem(key.as_der().unwrap().as_ref(), "PRIVATE KEY");
        assert!(parse_private_key(&pkcs8).is_ok());
        assert!(parse_private_key(&pkcs8.replace('\n', "\\n")).is_ok());
        assert!(parse_private_key(&pkcs8.replace('\n', "\r\n")).is_ok());

        assert_eq!(parse_private_key("hello").unwrap_err(), KeyError::NotPem);
        assert_eq!(
            parse_private_key(&pkcs8.replace(PKCS8_END, "")).unwrap_err(),
            KeyError::NoEnd(PKCS8_END)
        );
        assert_eq!(
            parse_private_key(&format!("{PKCS8_BEGIN}\n!!!!\n{PKCS8_END}")).unwrap_err(),
            KeyError::Base64
        );
        assert!(matches!(
            parse_private_key(&format!("{PKCS8_BEGIN}\nAAAA\n{PKCS8_END}")).unwrap_err(),
            KeyError::NotRsa(_)
        ));
        assert_eq!(
            parse_private_key(
                "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----"
            )
            .unwrap_err(),
            KeyError::Encrypted
        );
    }

    #[test]
    fn assertion_has_google_auth_shape_and_verifies() {
        let key = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
        let pem = pem(key.as_der().unwrap().as_ref(), "PRIVATE KEY");
        for kid in [Some("abc123"), None] {
            let account = account(&pem, kid);
            let jwt = sign_assertion(&account, &key, 1_700_000_000).unwrap();
            let parts: Vec<&str> = jwt.expose_secret().split('.').collect();
            assert_eq!(parts.len(), 3);
            let header: Value =
                serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
            let mut expected = serde_json::json!({"alg": "RS256", "typ": "JWT"});
            if let Some(kid) = kid {
                expected["kid"] = kid.into();
            }
            assert_eq!(header, expected);
            let claims: Value =
                serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
            assert_eq!(
                claims,
                serde_json::json!({
                    "iss": "renderer@proj.iam.gserviceaccount.com",
                    "scope": CLOUD_PLATFORM_SCOPE,
                    "aud": TOKEN_AUDIENCE,
                    "iat": 1_700_000_000,
                    "exp": 1_700_003_600,
                })
            );
            let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
            let public = UnparsedPublicKey::new(
                &signature::RSA_PKCS1_2048_8192_SHA256,
                key.public_key().as_ref(),
            );
            let signed = format!("{}.{}", parts[0], parts[1]);
            public.verify(signed.as_bytes(), &signature).unwrap();
            assert!(public.verify(b"tampered", &signature).is_err());
        }
    }

    #[tokio::test]
    async fn the_cache_never_holds_more_than_its_cap() {
        let mut source = TokenSource::new(true, Duration::from_secs(1)).unwrap();
        source.max_cached = 3;
        let fresh = || AccessToken {
            token: SecretString::from("ya29.fresh"),
            expires_at: Instant::now() + Duration::from_secs(3000),
        };
        let pem = pem(
            RsaKeyPair::generate(KeySize::Rsa2048)
                .unwrap()
                .as_der()
                .unwrap()
                .as_ref(),
            "PRIVATE KEY",
        );
        let accounts: Vec<ServiceAccountKey> = (0..5)
            .map(|i| ServiceAccountKey {
                client_email: format!("r{i}@proj.iam.gserviceaccount.com"),
                ..account(&pem, None)
            })
            .collect();
        // Three accounts with fresh tokens fill the cache.
        for a in &accounts[..3] {
            *source.slot(a).lock().await = Some(fresh());
        }
        assert_eq!(source.slots.lock().unwrap().len(), 3);
        // A fourth gets a slot of its own, outside the cache.
        let outside = source.slot(&accounts[3]);
        *outside.lock().await = Some(fresh());
        assert_eq!(source.slots.lock().unwrap().len(), 3);
        assert!(!Arc::ptr_eq(&outside, &source.slot(&accounts[3])));
        // Once an entry is stale it makes room.
        *source.slot(&accounts[0]).lock().await = None;
        let inside = source.slot(&accounts[4]);
        assert_eq!(source.slots.lock().unwrap().len(), 3);
        assert!(Arc::ptr_eq(&inside, &source.slot(&accounts[4])));
    }

    #[test]
    fn token_answers_are_parsed_defensively() {
        let now = Instant::now();
        let ok = |v: Value| parse_token(Some(&v), now);
        let t = ok(serde_json::json!({"access_token": "ya29.x", "expires_in": 3599})).unwrap();
        assert_eq!(t.expires_at - now, Duration::from_secs(3599));
        let t = ok(serde_json::json!({"access_token": "ya29.x", "expires_in": "120"})).unwrap();
        assert_eq!(t.expires_at - now, Duration::from_secs(120));
        let t = ok(serde_json::json!({"access_token": "ya29.x", "expires_in": 1e300})).unwrap();
        assert_eq!(t.expires_at - now, MAX_TOKEN_LIFETIME);
        for bad in [
            serde_json::json!({"expires_in": 10}),
            serde_json::json!({"access_token": "", "expires_in": 10}),
            serde_json::json!({"access_token": 5, "expires_in": 10}),
            serde_json::json!({"access_token": "a b", "expires_in": 10}),
            serde_json::json!({"access_token": "x"}),
            serde_json::json!({"access_token": "x", "expires_in": -1}),
            serde_json::json!({"access_token": "x", "expires_in": "soon"}),
            serde_json::json!({"access_token": "x", "expires_in": [1]}),
            serde_json::json!([1, 2]),
        ] {
            assert!(ok(bad.clone()).is_err(), "{bad}");
        }
        assert!(parse_token(None, now).is_err());
    }

    #[test]
    fn freshness_respects_the_margin() {
        let now = Instant::now();
        let token = |secs| AccessToken {
            token: SecretString::from("t"),
            expires_at: now + Duration::from_secs(secs),
        };
        assert!(token(3600).is_fresh(now, REFRESH_MARGIN));
        assert!(!token(60).is_fresh(now, REFRESH_MARGIN));
        assert!(!token(30).is_fresh(now, REFRESH_MARGIN));
        assert!(!format!("{:?}", token(30)).contains("\"t\""));
    }

    #[test]
    fn cache_keys_change_with_the_private_key() {
        let a = account("-----BEGIN PRIVATE KEY-----A", Some("k"));
        let b = account("-----BEGIN PRIVATE KEY-----B", Some("k"));
        assert_ne!(cache_key(&a), cache_key(&b));
        assert_eq!(cache_key(&a), cache_key(&a.clone()));
    }
}
