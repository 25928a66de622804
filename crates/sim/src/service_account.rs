//! Service-account JSON files, as Google issues them (docs/provider-protocols.md §3.9):
//! making fresh ones (RSA 2048, PKCS#8 PEM) and reading the public key back
//! out of one.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::KeyPair as _;
use base64::Engine as _;
use serde_json::{Value, json};

use crate::SimError;
use crate::http::random_hex;

const PEM_BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
const PEM_END: &str = "-----END PRIVATE KEY-----";

/// A fresh service-account JSON with every field Google's files have.
/// `token_uri` is `{public_url}/oauth2/token`, the simulator's token
/// endpoint; `client_email` is `{account_id}@{project_id}.iam.gserviceaccount.com`.
///
/// `account_id` defaults to `sim-` and 8 random hex characters. An account
/// id starting with `sim-throttled` gets one 429 on its first Vertex
/// submit. Ids are lowercase letters, digits and `-` (6–30, as Google's).
///
/// The simulator trusts the account only once it is in its trust: write it
/// into the `--service-accounts` directory ([`save_service_account`]) or
/// use [`RunningSim::new_service_account`](crate::RunningSim::new_service_account).
pub fn generate_service_account(
    public_url: &str,
    project_id: &str,
    account_id: Option<&str>,
) -> Result<Value, SimError> {
    let account_id = match account_id {
        Some(id) => id.to_owned(),
        None => format!("sim-{}", random_hex(4)),
    };
    let valid_id = (6..=30).contains(&account_id.len())
        && account_id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && account_id.starts_with(|c: char| c.is_ascii_lowercase());
    if !valid_id {
        return Err(SimError::ServiceAccount(format!(
            "account id `{account_id}`: use 6 to 30 lowercase letters, digits or `-`, starting with a letter"
        )));
    }
    let valid_project = !project_id.is_empty()
        && project_id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !valid_project {
        return Err(SimError::ServiceAccount(format!(
            "project id `{project_id}`: use lowercase letters, digits or `-`"
        )));
    }
    let key = KeyPair::generate(KeySize::Rsa2048)
        .map_err(|_| SimError::ServiceAccount("RSA key generation failed".to_owned()))?;
    let pkcs8 = key
        .as_der()
        .map_err(|_| SimError::ServiceAccount("PKCS#8 export failed".to_owned()))?;
    let email = format!("{account_id}@{project_id}.iam.gserviceaccount.com");
    let client_id: String = (0..21)
        .map(|i| {
            let digit = rand::random_range(if i == 0 { 1..10 } else { 0..10 });
            char::from(b'0' + digit)
        })
        .collect();
    let public_url = public_url.trim_end_matches('/');
    Ok(json!({
        "type": "service_account",
        "project_id": project_id,
        "private_key_id": random_hex(20),
        "private_key": pem(pkcs8.as_ref()),
        "client_email": email,
        "client_id": client_id,
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": format!("{public_url}/oauth2/token"),
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": format!(
            "https://www.googleapis.com/robot/v1/metadata/x509/{}",
            email.replace('@', "%40")
        ),
        "universe_domain": "googleapis.com",
    }))
}

/// Writes `account` into the trusted directory `dir` (created if needed) as
/// `<account id>-<key id prefix>.json`, readable by the owner only, and
/// returns the path. The file appears atomically (written aside, then
/// renamed), so a running simulator never reads half of it.
pub fn save_service_account(account: &Value, dir: &Path) -> Result<PathBuf, SimError> {
    let parsed = parse(account)?;
    std::fs::create_dir_all(dir)?;
    let account_id = parsed
        .client_email
        .split('@')
        .next()
        .unwrap_or("account")
        .to_owned();
    let key_id: String = parsed.private_key_id.chars().take(8).collect();
    let path = dir.join(format!("{account_id}-{key_id}.json"));
    write_private(&path, account)?;
    Ok(path)
}

/// Writes JSON to `path` with mode 0600, atomically.
pub(crate) fn write_private(path: &Path, value: &Value) -> Result<(), SimError> {
    let text =
        serde_json::to_string_pretty(value).map_err(|e| SimError::ServiceAccount(e.to_string()))?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let aside = path.with_file_name(format!(".{file_name}.{}.tmp", random_hex(4)));
    {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let mut file = options.open(&aside)?;
        file.write_all(text.as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()?;
    }
    std::fs::rename(&aside, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&aside);
    })?;
    Ok(())
}

fn pem(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from(PEM_BEGIN);
    out.push('\n');
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(PEM_END);
    out.push('\n');
    out
}

/// What the simulator needs of a trusted account.
#[derive(Debug, Clone)]
pub(crate) struct Trusted {
    pub client_email: String,
    pub project_id: String,
    pub private_key_id: String,
    /// The RSA public key, DER `RSAPublicKey` (RFC 8017), as aws-lc-rs
    /// verifies with.
    pub public_key: Vec<u8>,
}

/// Reads a service-account JSON: its identity and the public half of its key.
pub(crate) fn parse(account: &Value) -> Result<Trusted, SimError> {
    let field = |name: &str| {
        account
            .get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| SimError::ServiceAccount(format!("`{name}` is missing")))
    };
    if field("type")? != "service_account" {
        return Err(SimError::ServiceAccount(
            "`type` is not `service_account`".to_owned(),
        ));
    }
    let pem = field("private_key")?;
    let body = pem
        .split_once(PEM_BEGIN)
        .and_then(|(_, rest)| rest.split_once(PEM_END))
        .map(|(body, _)| body)
        .ok_or_else(|| SimError::ServiceAccount("`private_key` is not a PKCS#8 PEM".to_owned()))?;
    let compact: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|_| SimError::ServiceAccount("`private_key` is not valid base64".to_owned()))?;
    let key = KeyPair::from_pkcs8(&der)
        .map_err(|_| SimError::ServiceAccount("`private_key` is not an RSA key".to_owned()))?;
    Ok(Trusted {
        client_email: field("client_email")?.to_owned(),
        project_id: field("project_id")?.to_owned(),
        private_key_id: account
            .get("private_key_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        public_key: key.public_key().as_ref().to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_account_has_googles_fields_and_parses_back() {
        let account =
            generate_service_account("http://127.0.0.1:9/", "demo-project", None).unwrap();
        for field in [
            "type",
            "project_id",
            "private_key_id",
            "private_key",
            "client_email",
            "client_id",
            "auth_uri",
            "token_uri",
            "auth_provider_x509_cert_url",
            "client_x509_cert_url",
            "universe_domain",
        ] {
            assert!(account[field].is_string(), "{field}");
        }
        assert_eq!(account["token_uri"], "http://127.0.0.1:9/oauth2/token");
        assert!(
            account["private_key"]
                .as_str()
                .unwrap()
                .starts_with("-----BEGIN PRIVATE KEY-----\n")
        );
        let email = account["client_email"].as_str().unwrap();
        assert!(
            email.starts_with("sim-") && email.ends_with("@demo-project.iam.gserviceaccount.com")
        );
        let trusted = parse(&account).unwrap();
        assert_eq!(trusted.client_email, email);
        assert!(trusted.public_key.len() > 256);
    }

    #[test]
    fn bad_ids_and_bad_files_are_refused() {
        assert!(generate_service_account("http://x", "p", Some("UPPER")).is_err());
        assert!(generate_service_account("http://x", "P q", None).is_err());
        assert!(parse(&json!({"type": "service_account"})).is_err());
        assert!(
            parse(&json!({"type": "service_account", "private_key": "nope",
                          "client_email": "a@b", "project_id": "p"}))
            .is_err()
        );
    }

    #[test]
    fn saving_writes_a_private_file() {
        let dir = tempfile::tempdir().unwrap();
        let account = generate_service_account("http://x", "p1", Some("sim-throttled-a")).unwrap();
        let path = save_service_account(&account, &dir.path().join("nested")).unwrap();
        let back: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(back, account);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(
            path.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("sim-throttled-a-")
        );
    }
}
