//! [`VideoStoreError`] and the mapping of storage failures onto it.
//!
//! Messages are built here rather than passed through: object_store's own text can carry
//! an S3 error body (whose `SignatureDoesNotMatch` form repeats the access key id and the
//! string that was signed). What reaches a message is the operation, the object, an HTTP
//! status with S3's error `<Code>`, or the innermost transport error (e.g. "Connection
//! refused (os error 111)").

use std::error::Error as StdError;
use std::fmt;
use std::path::{Path, PathBuf};

/// Why a video could not be stored or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VideoStoreError {
    /// The store's configuration (`output.url`, the AWS variables) is unusable. Permanent.
    #[error("{0}")]
    Config(String),
    /// The local file handed to [`crate::VideoStore::put_file`] could not be read. Permanent
    /// as far as the store is concerned: it is the caller's file.
    #[error("cannot read {}: {source}", path.display())]
    Source {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The storage failed; [`VideoStoreError::is_transient`] says whether a retry may help.
    #[error("{message}")]
    Storage {
        /// What failed and why, without secrets.
        message: String,
        /// A network error, a timeout, 5xx, 429 or a full disk: worth retrying.
        transient: bool,
    },
}

impl VideoStoreError {
    /// Whether retrying later may succeed: network errors, timeouts, HTTP 5xx/429/408 and
    /// local I/O errors other than permissions and bad paths. Configuration errors, refused
    /// credentials (401/403) and unreadable source files are permanent.
    pub fn is_transient(&self) -> bool {
        match self {
            VideoStoreError::Storage { transient, .. } => *transient,
            VideoStoreError::Config(_) | VideoStoreError::Source { .. } => false,
        }
    }

    pub(crate) fn source(path: &Path, source: std::io::Error) -> VideoStoreError {
        VideoStoreError::Source {
            path: path.to_owned(),
            source,
        }
    }
}

/// A local I/O failure while `operation` on `what`.
pub(crate) fn io_error(
    operation: &str,
    what: &dyn fmt::Display,
    error: &std::io::Error,
) -> VideoStoreError {
    use std::io::ErrorKind::*;
    let transient = !matches!(
        error.kind(),
        PermissionDenied
            | NotFound
            | InvalidInput
            | InvalidFilename
            | NotADirectory
            | IsADirectory
            | ReadOnlyFilesystem
            | Unsupported
    );
    VideoStoreError::Storage {
        message: format!("{operation} {what}: {error}"),
        transient,
    }
}

/// An object_store failure while `operation` on `what` (a path or `s3://bucket/key`).
pub(crate) fn store_error(
    operation: &str,
    what: &dyn fmt::Display,
    error: &object_store::Error,
) -> VideoStoreError {
    let (summary, transient) = summarize(error);
    VideoStoreError::Storage {
        message: format!("{operation} {what}: {summary}"),
        transient,
    }
}

/// A short description of `error` and whether it is transient.
fn summarize(error: &object_store::Error) -> (String, bool) {
    use object_store::Error as E;
    let text = error.to_string();
    let code = s3_code(&text).map(|c| format!(", {c}")).unwrap_or_default();
    if s3_code(&text) == Some("NoSuchBucket") {
        return (
            "the bucket does not exist (HTTP 404, NoSuchBucket)".to_owned(),
            false,
        );
    }
    match error {
        E::NotFound { .. } => ("not found".to_owned(), false),
        E::PermissionDenied { .. } => (
            format!(
                "access denied (HTTP 403{code}): check the credentials and that they may \
                 read, write and list the bucket"
            ),
            false,
        ),
        E::Unauthenticated { .. } => (format!("not authenticated (HTTP 401{code})"), false),
        E::Precondition { .. } => (format!("precondition failed (HTTP 412{code})"), false),
        E::AlreadyExists { .. } => (format!("conflict (HTTP 409{code})"), false),
        E::UnknownConfigurationKey { key, .. } => {
            (format!("unknown configuration key `{key}`"), false)
        }
        E::NotSupported { .. } | E::NotImplemented { .. } => {
            (format!("not supported: {}", without_body(&text)), false)
        }
        _ => {
            if let Some(transport) = transport_error(error) {
                return (transport, true);
            }
            if s3_code(&text) == Some("NoSuchBucket") {
                return (
                    "the bucket does not exist (HTTP 404, NoSuchBucket)".to_owned(),
                    false,
                );
            }
            if let Some(status) = http_status(&text) {
                let transient = status >= 500 || status == 429 || status == 408;
                return (format!("HTTP {status}{code}"), transient);
            }
            if text.contains("Server returned error response") {
                // S3 answered 200 with an error body (InternalError, SlowDown).
                let code = s3_code(&text).unwrap_or("an error");
                return (format!("the storage answered {code}"), true);
            }
            (without_body(&text), false)
        }
    }
}

/// A transport failure (no complete HTTP answer) in `error`'s source chain, described by
/// its kind and innermost cause.
fn transport_error(error: &object_store::Error) -> Option<String> {
    use object_store::client::{HttpError, HttpErrorKind};
    let mut current: &(dyn StdError + 'static) = error;
    loop {
        if let Some(http) = current.downcast_ref::<HttpError>() {
            let what = match http.kind() {
                HttpErrorKind::Connect => "could not connect",
                HttpErrorKind::Timeout => "timed out",
                HttpErrorKind::Interrupted => "the connection was interrupted",
                HttpErrorKind::Decode => "the answer could not be read",
                _ => "the request failed",
            };
            let root = root_cause(http);
            return Some(if root.is_empty() {
                what.to_owned()
            } else {
                format!("{what}: {root}")
            });
        }
        current = current.source()?;
    }
}

fn root_cause(error: &(dyn StdError + 'static)) -> String {
    let mut current = error;
    while let Some(next) = current.source() {
        current = next;
    }
    without_body(&current.to_string())
}

/// The status of object_store's "Server returned non-2xx status code: 503 Service
/// Unavailable: …" (the status is not reachable through its public types).
pub(crate) fn http_status(text: &str) -> Option<u16> {
    const MARK: &str = "status code: ";
    let at = text.find(MARK)? + MARK.len();
    let digits = text.get(at..at + 3)?;
    digits
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| digits.parse().ok())
        .flatten()
}

/// S3's error code (`<Code>SlowDown</Code>`) when the text carries one.
pub(crate) fn s3_code(text: &str) -> Option<&str> {
    let start = text.find("<Code>")? + "<Code>".len();
    let len = text[start..].find("</Code>")?;
    let code = &text[start..start + len];
    (!code.is_empty() && code.len() <= 64 && code.bytes().all(|b| b.is_ascii_alphanumeric()))
        .then_some(code)
}

/// `text` up to any XML body (which may repeat the access key id and what was signed).
pub(crate) fn without_body(text: &str) -> String {
    let cut = text.find('<').unwrap_or(text.len());
    text[..cut].trim_end_matches([' ', ':']).trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_codes_are_read_from_object_store_text() {
        let text = "Generic S3 error: Error performing PUT http://127.0.0.1:9/b/k in 1ms - \
                    Server returned non-2xx status code: 503 Service Unavailable: \
                    <?xml version=\"1.0\"?><Error><Code>SlowDown</Code>\
                    <AWSAccessKeyId>AKIAEXAMPLE</AWSAccessKeyId></Error>";
        assert_eq!(http_status(text), Some(503));
        assert_eq!(s3_code(text), Some("SlowDown"));
        let cut = without_body(text);
        assert!(!cut.contains("AKIA"), "{cut}");
        assert!(cut.ends_with("503 Service Unavailable"), "{cut}");
        assert_eq!(http_status("status code: 4x"), None);
        assert_eq!(s3_code("<Code>a b</Code>"), None);
    }

    #[test]
    fn classification_of_object_store_errors() {
        let boxed = || Box::<dyn StdError + Send + Sync>::from("x");
        let (_, transient) = summarize(&object_store::Error::NotFound {
            path: "k".into(),
            source: boxed(),
        });
        assert!(!transient);
        let (message, transient) = summarize(&object_store::Error::PermissionDenied {
            path: "k".into(),
            source: Box::from("<Error><Code>AccessDenied</Code></Error>"),
        });
        assert!(!transient);
        assert!(message.contains("HTTP 403, AccessDenied"), "{message}");
        let (message, transient) = summarize(&object_store::Error::Generic {
            store: "S3",
            source: Box::from("Server returned non-2xx status code: 500 Internal Server Error: "),
        });
        assert!(transient);
        assert_eq!(message, "HTTP 500");
        let (_, transient) = summarize(&object_store::Error::Generic {
            store: "S3",
            source: Box::from("Server returned non-2xx status code: 400 Bad Request: "),
        });
        assert!(!transient);
        let (_, transient) = summarize(&object_store::Error::Generic {
            store: "S3",
            source: Box::from("Server returned error response: <Code>InternalError</Code>"),
        });
        assert!(transient);
    }
}
