//! Google's OAuth token endpoint (`POST /oauth2/token`), docs/provider-protocols.md §3.9:
//! the JWT-bearer grant of service accounts, checked against the accounts
//! the simulator trusts.
//!
//! The assertion must be an RS256 JWT signed by a trusted account's key
//! (found by `iss` = `client_email`; `kid`, when present, must be its
//! `private_key_id`), with `aud` the Google token URL (the simulator's own
//! token URL is accepted too), a `scope`, `exp - iat <= 3600`, `iat` at most
//! 5 minutes in the future and `exp` not past. Failures are RFC 6749 400s.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use aws_lc_rs::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use base64::Engine as _;
use serde_json::{Value, json};

use crate::clock::ms;
use crate::http::random_hex;
use crate::service_account::{Trusted, parse};
use crate::state::{Shared, Token, lock};
use crate::stats::{Event, Provider};

/// The audience google-auth puts in every assertion, whatever `token_uri` is.
pub(crate) const GOOGLE_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";
/// The older token URL, still accepted by Google as an audience.
const LEGACY_TOKEN_URL: &str = "https://www.googleapis.com/oauth2/v4/token";
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const SHORT_LIVED: &str = "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.";
const BAD_SIGNATURE: &str = "Invalid JWT Signature.";
/// Allowed clock skew for `iat` in the future.
const SKEW_SECS: i64 = 300;

/// The service accounts the simulator trusts: those added in process, and
/// the JSON files of the `--service-accounts` directory. Files are read at
/// start and again whenever an unknown (or unverifiable) `iss` arrives, so
/// accounts written while the simulator runs are trusted without a restart.
/// A file removed while running stays trusted until restart.
#[derive(Debug)]
pub(crate) struct TrustStore {
    dir: Option<PathBuf>,
    accounts: RwLock<HashMap<String, Arc<Trusted>>>,
    /// Files already read, with the (mtime, length) they had, so a rescan
    /// reads only new or changed files. Held for the whole scan, which
    /// also keeps two scans from running at once.
    seen: Mutex<HashMap<PathBuf, (Option<SystemTime>, u64)>>,
}

impl TrustStore {
    pub fn new(dir: Option<PathBuf>) -> TrustStore {
        TrustStore {
            dir,
            accounts: RwLock::new(HashMap::new()),
            seen: Mutex::new(HashMap::new()),
        }
    }

    pub fn dir(&self) -> Option<&std::path::Path> {
        self.dir.as_deref()
    }

    pub fn get(&self, client_email: &str) -> Option<Arc<Trusted>> {
        self.accounts
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(client_email)
            .cloned()
    }

    pub fn trust(&self, account: Trusted) {
        self.accounts
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(account.client_email.clone(), Arc::new(account));
    }

    /// Every trusted account, sorted by email.
    pub fn list(&self) -> Vec<Arc<Trusted>> {
        let mut all: Vec<_> = self
            .accounts
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        all.sort_by(|a, b| a.client_email.cmp(&b.client_email));
        all
    }

    /// Reads new and changed `*.json` files of the directory (blocking IO);
    /// returns how many accounts were added or replaced. Unreadable files
    /// are logged and skipped.
    pub fn rescan(&self) -> usize {
        let Some(dir) = &self.dir else {
            return 0;
        };
        let mut seen = lock(&self.seen);
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) => {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot read the service-account directory");
                }
                return 0;
            }
        };
        let mut changed = 0;
        for entry in entries.flatten() {
            let path = entry.path();
            let is_json = path.extension().is_some_and(|e| e == "json");
            let hidden = path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'));
            if !is_json || hidden {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            let stamp = (meta.modified().ok(), meta.len());
            if seen.get(&path) == Some(&stamp) {
                continue;
            }
            seen.insert(path.clone(), stamp);
            let parsed = std::fs::read(&path)
                .map_err(crate::SimError::from)
                .and_then(|bytes| {
                    serde_json::from_slice::<Value>(&bytes)
                        .map_err(|e| crate::SimError::ServiceAccount(e.to_string()))
                })
                .and_then(|json| parse(&json));
            match parsed {
                Ok(account) => {
                    tracing::info!(client_email = %account.client_email, file = %path.display(), "trusting service account");
                    self.trust(account);
                    changed += 1;
                }
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "skipping a file that is not a usable service account");
                }
            }
        }
        changed
    }
}

/// Rescans the trusted directory off the async threads.
pub(crate) async fn rescan(shared: &Arc<Shared>) -> usize {
    if shared.trust.dir().is_none() {
        return 0;
    }
    let shared = Arc::clone(shared);
    tokio::task::spawn_blocking(move || shared.trust.rescan())
        .await
        .unwrap_or(0)
}

fn oauth_error(error: &str, description: &str) -> Response {
    let mut response = crate::http::json(
        StatusCode::BAD_REQUEST,
        &json!({"error": error, "error_description": description}),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `POST /oauth2/token`.
pub(crate) async fn token(
    State(shared): State<Arc<Shared>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Ok(body) = body else {
        return oauth_error("invalid_request", "The request body is too large.");
    };
    let mut grant_type = None;
    let mut assertion = None;
    for (name, value) in url::form_urlencoded::parse(&body) {
        match name.as_ref() {
            "grant_type" => grant_type = Some(value.into_owned()),
            "assertion" => assertion = Some(value.into_owned()),
            _ => {}
        }
    }
    let Some(grant_type) = grant_type else {
        return oauth_error("invalid_request", "Missing required parameter: grant_type");
    };
    if grant_type != JWT_BEARER {
        return oauth_error(
            "unsupported_grant_type",
            &format!("Invalid grant_type: {grant_type}"),
        );
    }
    let Some(assertion) = assertion else {
        return oauth_error("invalid_request", "Missing required parameter: assertion");
    };
    let account = match verify(&shared, &assertion).await {
        Ok(account) => account,
        Err(rejection) => {
            shared.record(
                Provider::Vertex,
                rejection.principal.as_deref(),
                Event::Unauthorized,
            );
            return oauth_error(rejection.error, &rejection.description);
        }
    };
    let config = shared.config();
    let access_token = format!("ya29.sim-{}", random_hex(32));
    let now = shared.now_ms();
    lock(&shared.tokens).insert(
        access_token.clone(),
        Token {
            client_email: account.client_email.clone(),
            project_id: account.project_id.clone(),
            expires_ms: now.saturating_add(ms(config.token_lifetime)),
        },
        now,
    );
    shared.record(Provider::Vertex, Some(&account.client_email), Event::Token);
    let mut response = crate::http::json(
        StatusCode::OK,
        &json!({
            "access_token": access_token,
            "expires_in": config.token_lifetime.as_secs(),
            "token_type": "Bearer",
        }),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Why an assertion was refused.
#[derive(Debug)]
struct Rejection {
    error: &'static str,
    description: String,
    /// The `iss`, when the assertion named one.
    principal: Option<String>,
}

fn reject(error: &'static str, description: &str, principal: Option<&str>) -> Rejection {
    Rejection {
        error,
        description: description.to_owned(),
        principal: principal.map(str::to_owned),
    }
}

/// A JWT taken apart.
#[derive(Debug)]
struct Jwt {
    header: Value,
    claims: Value,
    signed: String,
    signature: Vec<u8>,
}

fn decode_part(part: &str) -> Option<Vec<u8>> {
    // JWTs use unpadded base64url; tolerate padding.
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .ok()
}

fn split(assertion: &str) -> Option<Jwt> {
    let mut parts = assertion.split('.');
    let (h, c, s) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    Some(Jwt {
        header: serde_json::from_slice(&decode_part(h)?).ok()?,
        claims: serde_json::from_slice(&decode_part(c)?).ok()?,
        signed: format!("{h}.{c}"),
        signature: decode_part(s)?,
    })
}

fn signature_ok(account: &Trusted, jwt: &Jwt) -> bool {
    if let Some(kid) = jwt.header.get("kid").and_then(Value::as_str)
        && kid != account.private_key_id
    {
        return false;
    }
    UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &account.public_key)
        .verify(jwt.signed.as_bytes(), &jwt.signature)
        .is_ok()
}

async fn verify(shared: &Arc<Shared>, assertion: &str) -> Result<Arc<Trusted>, Rejection> {
    let Some(jwt) = split(assertion) else {
        return Err(reject("invalid_grant", BAD_SIGNATURE, None));
    };
    if jwt.header.get("alg").and_then(Value::as_str) != Some("RS256") {
        return Err(reject("invalid_grant", BAD_SIGNATURE, None));
    }
    let Some(iss) = jwt.claims.get("iss").and_then(Value::as_str) else {
        return Err(reject(
            "invalid_grant",
            "Invalid grant: account not found",
            None,
        ));
    };
    let mut account = shared.trust.get(iss).filter(|a| signature_ok(a, &jwt));
    if account.is_none() && rescan(shared).await > 0 {
        // A file may have been added, or replaced with a new key.
        account = shared.trust.get(iss).filter(|a| signature_ok(a, &jwt));
    }
    let Some(account) = account else {
        // The wording Google uses for a deleted or unknown account; not in
        // docs/provider-protocols.md.
        return Err(if shared.trust.get(iss).is_none() {
            reject(
                "invalid_grant",
                "Invalid grant: account not found",
                Some(iss),
            )
        } else {
            reject("invalid_grant", BAD_SIGNATURE, Some(iss))
        });
    };

    let own_token_url = format!("{}/oauth2/token", shared.public_url);
    let aud = jwt.claims.get("aud").and_then(Value::as_str);
    if !aud.is_some_and(|a| a == GOOGLE_TOKEN_URL || a == LEGACY_TOKEN_URL || a == own_token_url) {
        // Google's wording (not in docs/provider-protocols.md).
        return Err(reject(
            "invalid_grant",
            &format!(
                "Invalid JWT: Failed audience check. The right audience is {GOOGLE_TOKEN_URL}"
            ),
            Some(iss),
        ));
    }

    let now = shared.now_ms() / 1000;
    let iat = jwt.claims.get("iat").and_then(Value::as_i64);
    let exp = jwt.claims.get("exp").and_then(Value::as_i64);
    let timely = match (iat, exp) {
        (Some(iat), Some(exp)) => {
            exp > iat && exp - iat <= 3600 && iat <= now + SKEW_SECS && exp > now
        }
        _ => false,
    };
    if !timely {
        return Err(reject("invalid_grant", SHORT_LIVED, Some(iss)));
    }

    let scope = jwt.claims.get("scope").and_then(Value::as_str);
    if scope.is_none_or(|s| s.trim().is_empty()) {
        // Google's answer to an assertion with neither scope nor
        // target_audience (not in docs/provider-protocols.md).
        return Err(reject(
            "invalid_scope",
            "Invalid OAuth scope or ID token audience provided.",
            Some(iss),
        ));
    }
    Ok(account)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_assertions_do_not_split() {
        assert!(split("a.b").is_none());
        assert!(split("a.b.c.d").is_none());
        assert!(split("!!.!!.!!").is_none());
        let h = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256"}"#);
        let c = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"iss":"a"}"#);
        let jwt = split(&format!("{h}.{c}.AAAA")).unwrap();
        assert_eq!(jwt.claims["iss"], "a");
        assert_eq!(jwt.signed, format!("{h}.{c}"));
    }

    #[test]
    fn a_rescan_reads_only_new_files_and_skips_junk() {
        let dir = tempfile::tempdir().unwrap();
        let store = TrustStore::new(Some(dir.path().to_path_buf()));
        assert_eq!(store.rescan(), 0);
        std::fs::write(dir.path().join("junk.json"), "{not json").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "hello").unwrap();
        let account = crate::generate_service_account("http://x", "p", Some("sim-abcdef")).unwrap();
        crate::save_service_account(&account, dir.path()).unwrap();
        assert_eq!(store.rescan(), 1);
        assert_eq!(store.rescan(), 0, "nothing new");
        assert!(store.get("sim-abcdef@p.iam.gserviceaccount.com").is_some());
        assert_eq!(store.list().len(), 1);
    }
}
