//! HTTP plumbing shared by the adapters: bounded body reads, reason sanitising, transport
//! error descriptions and base-URL handling.
//!
//! Everything a provider sends back is untrusted: bodies are read up to
//! [`MAX_BODY_BYTES`] and no further, and any text copied from them into a reason goes
//! through [`sanitize`] (secrets redacted, control characters removed, length capped).

use std::error::Error as StdError;
use std::time::Duration;

use byok_core::ProviderId;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderMap};
use serde_json::Value;
use url::Url;
use zeroize::{Zeroize, Zeroizing};

use crate::CredentialCheck;
use crate::pace::Pace;
use crate::registry::RegistryError;

/// The most bytes read from any provider response. Key-check answers are tiny; anything
/// bigger is not what we asked for, and reading it all would let a hostile endpoint make
/// us buffer without limit.
pub(crate) const MAX_BODY_BYTES: usize = 64 * 1024;

/// The most characters of a provider's own text copied into a reason.
pub(crate) const MAX_REASON_CHARS: usize = 300;

/// `User-Agent` of every provider call.
pub(crate) const USER_AGENT: &str = concat!("byok/", env!("CARGO_PKG_VERSION"));

/// What stands in for a secret found in provider text.
const REDACTED: &str = "[REDACTED]";

/// A response body read up to [`MAX_BODY_BYTES`]. Wiped on drop because some bodies
/// (token responses) carry secrets.
pub(crate) struct Body {
    pub(crate) bytes: Zeroizing<Vec<u8>>,
    /// The provider sent more than [`MAX_BODY_BYTES`]; `bytes` holds the first part only.
    pub(crate) truncated: bool,
}

impl Body {
    /// The body as JSON, if it is complete and well-formed JSON.
    pub(crate) fn json(&self) -> Option<Value> {
        if self.truncated {
            return None;
        }
        serde_json::from_slice(&self.bytes).ok()
    }
}

/// Reads at most [`MAX_BODY_BYTES`] of `response`'s body.
pub(crate) async fn read_capped(response: reqwest::Response) -> Result<Body, reqwest::Error> {
    read_up_to(response, MAX_BODY_BYTES).await
}

/// Reads at most `limit` bytes of `response`'s body; `truncated` when there was more.
pub(crate) async fn read_up_to(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Body, reqwest::Error> {
    // Sized once from the announced length (at most MAX_BODY_BYTES up front), and grown by
    // hand beyond that, so that no reallocation leaves an unwiped copy behind.
    let capacity = response
        .content_length()
        .and_then(|len| usize::try_from(len).ok())
        .map_or(MAX_BODY_BYTES, |len| len)
        .min(limit);
    let mut bytes = Zeroizing::new(Vec::with_capacity(capacity));
    let mut truncated = false;
    while let Some(chunk) = response.chunk().await? {
        let room = limit - bytes.len();
        let take = chunk.len().min(room);
        if bytes.len() + take > bytes.capacity() {
            let wanted = (bytes.len() + take).max(bytes.capacity() * 2).min(limit);
            let mut grown = Zeroizing::new(Vec::with_capacity(wanted));
            grown.extend_from_slice(&bytes);
            // The old buffer is wiped as it drops.
            bytes = grown;
        }
        bytes.extend_from_slice(&chunk[..take]);
        if chunk.len() > room {
            truncated = true;
            break;
        }
    }
    Ok(Body { bytes, truncated })
}

/// The largest video (or inline video answer, e.g. Vertex's base64) read from a provider.
pub(crate) const MAX_VIDEO_BYTES: usize = 512 * 1024 * 1024;

/// Reads a large body (a video, a poll answer carrying one) up to `limit` bytes;
/// `Ok(None)` when the provider sent more than that. Not wiped on drop: videos are
/// not secrets, and zeroing hundreds of megabytes would cost for nothing.
pub(crate) async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Option<Vec<u8>>, reqwest::Error> {
    if response
        .content_length()
        .is_some_and(|len| len > limit as u64)
    {
        return Ok(None);
    }
    // The declared length is the provider's word: reserve at most 1 MiB on it, so a
    // hostile `Content-Length` cannot make us allocate hundreds of megabytes up front;
    // the buffer grows with what really arrives.
    let capacity = response
        .content_length()
        .and_then(|len| usize::try_from(len).ok())
        .unwrap_or(64 * 1024)
        .min(limit)
        .min(1024 * 1024);
    let mut bytes = Vec::with_capacity(capacity);
    while let Some(chunk) = response.chunk().await? {
        if bytes.len() + chunk.len() > limit {
            return Ok(None);
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(Some(bytes))
}

/// What [`save_limited`] wrote.
pub(crate) struct Saved {
    /// Bytes written.
    pub(crate) size: u64,
    /// The first (up to) 8 bytes, for sniffing an MP4 `ftyp` box.
    pub(crate) head: Vec<u8>,
}

/// Why [`save_limited`] stopped.
pub(crate) enum SaveError {
    /// The provider sent (or announced) more than the limit.
    TooLarge,
    /// The body could not be read (the connection broke, a timeout).
    Read(reqwest::Error),
    /// The file could not be written.
    Write(std::io::Error),
}

/// Bytes of a download gathered in memory before they are written: a body this size or
/// smaller (most outputs of the simulator, previews, short clips) is written with one
/// blocking call that creates the file and writes it; a larger one goes out in blocks of
/// this size. Each blocking call is a hand-off to Tokio's blocking pool and back, which
/// costs more than the write of a small block itself.
const WRITE_BLOCK: usize = 256 * 1024;

/// Streams a large body (a video) into `dest` (created, or truncated; its directory is
/// made when missing), up to `limit` bytes: the counterpart of [`read_limited`] that never
/// holds more than [`WRITE_BLOCK`] of the body in memory. On an error `dest` may hold part
/// of the body; the caller removes it.
pub(crate) async fn save_limited(
    mut response: reqwest::Response,
    limit: usize,
    dest: &std::path::Path,
) -> Result<Saved, SaveError> {
    if response
        .content_length()
        .is_some_and(|len| len > limit as u64)
    {
        return Err(SaveError::TooLarge);
    }
    let expected = response
        .content_length()
        .map_or(WRITE_BLOCK, |len| (len as usize).min(WRITE_BLOCK));
    let mut block = Vec::with_capacity(expected);
    // Opened when the first block is written: a small body is one blocking call in all.
    let mut file: Option<std::fs::File> = None;
    let mut size: u64 = 0;
    let mut head = Vec::with_capacity(8);
    while let Some(chunk) = response.chunk().await.map_err(SaveError::Read)? {
        if size + chunk.len() as u64 > limit as u64 {
            return Err(SaveError::TooLarge);
        }
        if head.len() < 8 {
            let take = (8 - head.len()).min(chunk.len());
            head.extend_from_slice(&chunk[..take]);
        }
        size += chunk.len() as u64;
        block.extend_from_slice(&chunk);
        if block.len() >= WRITE_BLOCK {
            (file, block) = write_block(file, dest, block).await?;
        }
    }
    if file.is_none() || !block.is_empty() {
        write_block(file, dest, block).await?;
    }
    Ok(Saved { size, head })
}

/// Writes `block` to `file` (created at `dest` when `None`) on the blocking pool; returns
/// the file and the emptied block, to be filled again.
async fn write_block(
    file: Option<std::fs::File>,
    dest: &std::path::Path,
    mut block: Vec<u8>,
) -> Result<(Option<std::fs::File>, Vec<u8>), SaveError> {
    use std::io::Write as _;
    let dest = dest.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut file = match file {
            Some(file) => file,
            None => create_file(&dest)?,
        };
        file.write_all(&block)?;
        block.clear();
        Ok((Some(file), block))
    })
    .await
    .unwrap_or_else(|e| Err(std::io::Error::other(e)))
    .map_err(SaveError::Write)
}

/// Creates (or truncates) the file `dest`, making its directory first when it is missing
/// (a scratch directory removed while the worker runs). Blocking.
pub(crate) fn create_file(dest: &std::path::Path) -> std::io::Result<std::fs::File> {
    match std::fs::File::create(dest) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = dest.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::File::create(dest)
        }
        created => created,
    }
}

/// Whether `bytes` start like an ISO base media file (MP4): a box size, then `ftyp`. For
/// videos served as `application/octet-stream` or without a type ([`Saved::head`]).
pub(crate) fn has_ftyp(bytes: &[u8]) -> bool {
    bytes.get(4..8) == Some(b"ftyp".as_slice())
}

/// The essence of a `Content-Type` value: the media type without parameters, lowercased
/// (`Video/MP4; codecs=…` → `video/mp4`).
pub(crate) fn essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// The [`essence`] of an answer's `Content-Type`; `None` when it has none (or an empty or
/// non-ASCII one).
pub(crate) fn media_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(essence)
        .filter(|v| !v.is_empty())
}

/// Makes provider text safe to put into a reason: every occurrence of each secret is
/// replaced by `[REDACTED]`, control characters become spaces, runs of whitespace
/// collapse, and the result is cut to [`MAX_REASON_CHARS`] characters.
///
/// Redaction happens before truncation so that a secret straddling the cut cannot leave
/// a readable prefix behind.
pub(crate) fn sanitize(text: &str, secrets: &[&str]) -> String {
    let mut redacted = text.to_owned();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        if redacted.contains(secret) {
            redacted = redacted.replace(secret, REDACTED);
        }
    }
    let mut collapsed = String::with_capacity(redacted.len());
    let mut pending_space = false;
    for c in redacted.chars() {
        if c.is_whitespace() || c.is_control() {
            pending_space = !collapsed.is_empty();
            continue;
        }
        if pending_space {
            collapsed.push(' ');
            pending_space = false;
        }
        collapsed.push(c);
    }
    redacted.zeroize();
    if collapsed.chars().count() <= MAX_REASON_CHARS {
        return collapsed;
    }
    let mut out: String = collapsed.chars().take(MAX_REASON_CHARS - 1).collect();
    out.push('…');
    out
}

/// Sends a key-check request and reads the (capped) answer. A request that got no HTTP
/// answer is `Err(Unavailable)`, with a reason naming `display_name`.
pub(crate) async fn send_check(
    pace: &Pace,
    request: reqwest::RequestBuilder,
    display_name: &str,
    timeout: Duration,
    secrets: &[&str],
) -> Result<(StatusCode, Body), CredentialCheck> {
    let unavailable = |err: &reqwest::Error| CredentialCheck::Unavailable {
        reason: sanitize(
            &format!(
                "{display_name} could not be reached: {}",
                describe_transport_error(err, timeout)
            ),
            secrets,
        ),
    };
    let response = pace.send(request).await.map_err(|e| unavailable(&e))?;
    let status = response.status();
    let body = read_capped(response).await.map_err(|e| unavailable(&e))?;
    Ok((status, body))
}

/// How a provider's key check is worded in its reasons.
pub(crate) struct KeyCheckWords {
    /// The provider (`Runway rejected the key (HTTP 401)`).
    pub(crate) provider: &'static str,
    /// What the credential is called: `key`, or Replicate's `token`.
    pub(crate) credential: &'static str,
    /// The advice after a 429 (`try again later`).
    pub(crate) after_throttle: &'static str,
}

/// The verdict of an API-key check's answer, for the adapters whose check is one request
/// (not Veo's token exchange).
///
/// `accepted` is the adapter's reading of a success: `Some(true)` for the answer its check
/// expects (`Valid`), `Some(false)` for a success of another shape (no verdict: not what the
/// check returns), `None` for anything that is not a success. Then 401 and 403 reject the
/// key, and everything else gives no verdict: 429 and 5xx are transient, and other statuses
/// (400 for a header the provider no longer accepts, 404 for a wrong base URL, a redirect,
/// …) say something about our request, not the key. Marking a working key invalid would stop
/// its owner's jobs, so only the statuses that unambiguously mean "bad key" reject it.
/// `detail` is the provider's own text, sanitised.
pub(crate) fn key_check_verdict(
    words: &KeyCheckWords,
    status: StatusCode,
    accepted: Option<bool>,
    detail: Option<String>,
) -> CredentialCheck {
    let KeyCheckWords {
        provider,
        credential,
        after_throttle,
    } = words;
    let code = status.as_u16();
    match (accepted, code) {
        (Some(true), _) => CredentialCheck::Valid,
        (Some(false), _) => CredentialCheck::Unavailable {
            reason: format!(
                "{provider} answered the {credential} check with an unexpected body (HTTP {code})"
            ),
        },
        (None, 401 | 403) => CredentialCheck::Rejected {
            reason: with_detail(
                format!("{provider} rejected the {credential} (HTTP {code})"),
                detail,
            ),
        },
        (None, 429) => CredentialCheck::Unavailable {
            reason: with_detail(
                format!("{provider} is rate limiting requests (HTTP 429); {after_throttle}"),
                detail,
            ),
        },
        (None, _) => CredentialCheck::Unavailable {
            reason: with_detail(
                format!("{provider} answered the {credential} check with HTTP {code}"),
                detail,
            ),
        },
    }
}

/// Appends `": <detail>"` when there is a detail.
pub(crate) fn with_detail(prefix: String, detail: Option<String>) -> String {
    match detail {
        Some(detail) if !detail.is_empty() => format!("{prefix}: {detail}"),
        _ => prefix,
    }
}

/// A short description of why a request got no HTTP answer.
///
/// Uses the innermost cause (e.g. "Connection refused (os error 111)") rather than
/// reqwest's own message, which repeats the whole URL.
pub(crate) fn describe_transport_error(err: &reqwest::Error, timeout: Duration) -> String {
    if err.is_timeout() {
        return format!("no answer within {}", format_duration(timeout));
    }
    let root = root_cause(err);
    if err.is_connect() {
        format!("could not connect: {root}")
    } else {
        format!("request failed: {root}")
    }
}

fn root_cause(err: &(dyn StdError + 'static)) -> String {
    let mut current = err;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

fn format_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

/// Overwrites every string inside `value` (not object keys) before it is dropped; used for
/// JSON that held secrets.
pub fn wipe_json(value: &mut Value) {
    match value {
        Value::String(s) => s.zeroize(),
        Value::Array(items) => items.iter_mut().for_each(wipe_json),
        Value::Object(map) => map.values_mut().for_each(wipe_json),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// Parsed JSON whose strings are wiped on drop; for JSON that held secrets (a token
/// answer, a service-account key given as a string).
pub(crate) struct WipedJson(pub(crate) Option<Value>);

impl Drop for WipedJson {
    fn drop(&mut self) {
        if let Some(value) = self.0.as_mut() {
            wipe_json(value);
        }
    }
}

/// A configured provider base URL: absolute http(s), a host, no credentials, query or
/// fragment (endpoint paths are appended to it).
pub(crate) fn parse_base_url(provider: ProviderId, raw: &str) -> Result<Url, RegistryError> {
    let bad = |reason: &str| RegistryError::BadBaseUrl {
        provider,
        reason: reason.to_owned(),
    };
    let url = Url::parse(raw.trim()).map_err(|e| bad(&format!("`{raw}` is not a URL ({e})")))?;
    if !url.username().is_empty() || url.password().is_some() {
        // Not echoed: it would print the credentials.
        return Err(bad("must not contain user name or password"));
    }
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad(&format!("`{raw}` must be an http or https URL")));
    }
    if url.host().is_none() {
        return Err(bad(&format!("`{raw}` has no host")));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad(&format!("`{raw}` must not have a query or fragment")));
    }
    Ok(url)
}

/// `base` with `path` (starting with `/`) appended to its path.
pub(crate) fn endpoint(base: &Url, path: &str) -> Url {
    let mut url = base.clone();
    let joined = format!("{}{}", base.path().trim_end_matches('/'), path);
    url.set_path(&joined);
    url
}

/// `base` with `segments` appended to its path, each percent-encoded as one segment (a `/`
/// inside one becomes `%2F`), so that no part taken from an id can change the path.
pub(crate) fn with_segments(base: &Url, segments: &[&str]) -> Url {
    let mut url = base.clone();
    // Base URLs are absolute http(s) URLs with a host, which always have a path.
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(segments);
    }
    url
}

/// Whether `segment`, taken from a provider answer (an id, a resource name's part), is a
/// plain path segment: not empty, not `.` or `..`, only URL-unreserved characters (and `:`
/// when `colon`, which Google's domain-scoped project ids contain). It then needs no
/// encoding and cannot change the path it goes into.
pub(crate) fn plain_segment(segment: &str, colon: bool) -> bool {
    !segment.is_empty()
        && segment != "."
        && segment != ".."
        && segment.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(b, b'-' | b'.' | b'_' | b'~')
                || (colon && b == b':')
        })
}

/// `{"id": "…", …}` → the id of a created job, if it is a sane one to store: not empty
/// (after trimming), at most 256 bytes, no control characters.
pub(crate) fn job_id_of(json: &Value) -> Option<String> {
    let id = json.get("id")?.as_str()?.trim();
    (!id.is_empty() && id.len() <= 256 && !id.chars().any(char::is_control)).then(|| id.to_owned())
}

/// A validation error's location (`["promptImage", 0, "uri"]`) as `promptImage.0.uri`:
/// names and indices joined with `.`, anything else left out.
pub(crate) fn dotted_path<'a>(parts: impl IntoIterator<Item = &'a Value>) -> String {
    parts
        .into_iter()
        .filter_map(|p| match p {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// The first non-empty string among `candidates`.
pub(crate) fn first_text<'a>(
    candidates: impl IntoIterator<Item = Option<&'a str>>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .flatten()
        .map(str::trim)
        .find(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_redacts_before_truncating_and_strips_control_characters() {
        let secret = "key_SECRET_0123456789";
        let text = format!("bad key {secret}\r\n\tplease\u{7}retry");
        assert_eq!(
            sanitize(&text, &[secret]),
            "bad key [REDACTED] please retry"
        );

        // The secret straddles the 300-character cut: no prefix of it may survive.
        let long = format!("{}{secret}", "x".repeat(295));
        let out = sanitize(&long, &[secret]);
        assert!(!out.contains("key_SEC"), "{out}");
        assert_eq!(out.chars().count(), MAX_REASON_CHARS);
        assert!(out.ends_with('…'));

        let huge = "é".repeat(10_000);
        assert_eq!(sanitize(&huge, &[]).chars().count(), MAX_REASON_CHARS);
        assert_eq!(sanitize("  ", &[""]), "");
    }

    #[test]
    fn base_urls_are_checked_and_endpoints_appended() {
        let base = parse_base_url(ProviderId::RUNWAY, "http://127.0.0.1:9000/runway/").unwrap();
        assert_eq!(
            endpoint(&base, "/v1/organization").as_str(),
            "http://127.0.0.1:9000/runway/v1/organization"
        );
        let base = parse_base_url(ProviderId::RUNWAY, "https://api.dev.runwayml.com").unwrap();
        assert_eq!(
            endpoint(&base, "/v1/organization").as_str(),
            "https://api.dev.runwayml.com/v1/organization"
        );
        for bad in [
            "",
            "api.example",
            "ftp://x",
            "https://x/?a=1",
            "https://x/#f",
        ] {
            let err = parse_base_url(ProviderId::STABILITY, bad).unwrap_err();
            assert!(
                err.to_string().contains("providers.stability.base_url"),
                "{err}"
            );
        }
        let err = parse_base_url(ProviderId::VEO, "https://user:hunter2@x").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn urls_are_built_segment_by_segment() {
        let base = Url::parse("http://127.0.0.1:9000/vertex/").unwrap();
        assert_eq!(
            with_segments(&base, &["v1", "m:predictLongRunning"]).as_str(),
            "http://127.0.0.1:9000/vertex/v1/m:predictLongRunning"
        );
        let base = Url::parse("https://storage.googleapis.com").unwrap();
        assert_eq!(
            with_segments(&base, &["o", "a/b c?d#e%"]).as_str(),
            "https://storage.googleapis.com/o/a%2Fb%20c%3Fd%23e%25"
        );
    }

    #[test]
    fn wipe_json_clears_nested_strings() {
        let mut v = serde_json::json!({"a": ["secret", {"b": "secret"}], "n": 1});
        wipe_json(&mut v);
        assert_eq!(v, serde_json::json!({"a": ["", {"b": ""}], "n": 1}));
    }
}
