//! Reading `output.url`.

use std::path::PathBuf;

use crate::VideoStoreError;

/// Where the videos go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Location {
    /// An absolute directory.
    Local(PathBuf),
    /// A bucket and an optional key prefix (no leading or trailing `/`).
    S3 {
        bucket: String,
        prefix: Option<String>,
    },
}

fn bad(url: &str, why: &str) -> VideoStoreError {
    VideoStoreError::Config(format!("`{}` {why}", redact_userinfo(url)))
}

/// Parses `file:///abs/dir`, `file://relative/dir`, a bare path or `s3://bucket[/prefix]`.
/// Relative directories are made absolute against the current directory now.
pub(crate) fn parse(raw: &str) -> Result<Location, VideoStoreError> {
    let url = raw.trim();
    if url.is_empty() {
        return Err(VideoStoreError::Config(
            "is empty: give a directory, file:///dir or s3://bucket/prefix".to_owned(),
        ));
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return local(url, url);
    };
    match scheme.to_ascii_lowercase().as_str() {
        "file" => {
            if rest.starts_with('/') {
                let parsed =
                    url::Url::parse(url).map_err(|e| bad(url, &format!("is not a URL ({e})")))?;
                if parsed.query().is_some() || parsed.fragment().is_some() {
                    return Err(bad(url, "must not have a query or fragment"));
                }
                let path = parsed
                    .to_file_path()
                    .map_err(|()| bad(url, "is not a usable file URL"))?;
                local(url, &path.to_string_lossy())
            } else if let Some(path) = rest.strip_prefix("localhost/") {
                local(url, &format!("/{path}"))
            } else {
                // Not a standard file URL (it would name a host); read as a relative path.
                local(url, rest)
            }
        }
        "s3" | "s3a" => s3(url, rest),
        other => Err(bad(
            url,
            &format!(
                "has the unsupported scheme `{other}`: use a directory, file:// or s3:// \
                 (S3-compatible services take s3:// with AWS_ENDPOINT_URL)"
            ),
        )),
    }
}

fn local(url: &str, path: &str) -> Result<Location, VideoStoreError> {
    if path.is_empty() {
        return Err(bad(url, "names no directory"));
    }
    if path.contains('\0') {
        return Err(bad(url, "contains a NUL character"));
    }
    let dir = std::path::absolute(path)
        .map_err(|e| bad(url, &format!("cannot be made an absolute path ({e})")))?;
    Ok(Location::Local(dir))
}

fn s3(url: &str, rest: &str) -> Result<Location, VideoStoreError> {
    if rest.contains(['?', '#']) {
        return Err(bad(url, "must not have a query or fragment"));
    }
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    if authority.contains('@') {
        return Err(bad(
            url,
            "must not contain credentials: they come from the AWS variables",
        ));
    }
    let bucket = authority;
    // S3's bucket naming rules (general purpose buckets).
    let valid = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
        && bucket.ends_with(|c: char| c.is_ascii_alphanumeric())
        && !bucket.contains("..");
    if bucket.is_empty() {
        return Err(bad(url, "names no bucket (s3://bucket[/prefix])"));
    }
    if !valid {
        return Err(bad(
            url,
            &format!(
                "has an invalid bucket name `{bucket}` (3–63 lowercase letters, digits, dots \
                 and hyphens)"
            ),
        ));
    }
    let prefix = path.trim_matches('/');
    let prefix = if prefix.is_empty() {
        None
    } else {
        for segment in prefix.split('/') {
            if segment.is_empty() || segment == "." || segment == ".." {
                return Err(bad(url, "has an empty, `.` or `..` segment in its prefix"));
            }
            if segment.chars().any(char::is_control) {
                return Err(bad(url, "has a control character in its prefix"));
            }
        }
        Some(prefix.to_owned())
    };
    Ok(Location::S3 {
        bucket: bucket.to_owned(),
        prefix,
    })
}

/// `url` with any `user:password@` replaced, for messages and `Debug`.
pub(crate) fn redact_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://[REDACTED]@{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3(bucket: &str, prefix: Option<&str>) -> Location {
        Location::S3 {
            bucket: bucket.to_owned(),
            prefix: prefix.map(str::to_owned),
        }
    }

    #[test]
    fn urls_name_a_directory_or_a_bucket() {
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            parse("/var/lib/byok/videos").unwrap(),
            Location::Local("/var/lib/byok/videos".into())
        );
        assert_eq!(
            parse("byok-data/videos").unwrap(),
            Location::Local(cwd.join("byok-data/videos"))
        );
        assert_eq!(
            parse("file:///srv/my%20videos").unwrap(),
            Location::Local("/srv/my videos".into())
        );
        assert_eq!(
            parse("file://byok-data/videos").unwrap(),
            Location::Local(cwd.join("byok-data/videos"))
        );
        assert_eq!(
            parse("file://localhost/srv/v").unwrap(),
            Location::Local("/srv/v".into())
        );
        assert_eq!(parse("s3://videos").unwrap(), s3("videos", None));
        assert_eq!(parse("s3://videos/").unwrap(), s3("videos", None));
        assert_eq!(
            parse("s3://my.videos-1/byok/out/").unwrap(),
            s3("my.videos-1", Some("byok/out"))
        );
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        for (url, expected) in [
            ("", "is empty"),
            ("s3://", "names no bucket"),
            ("s3:///prefix", "names no bucket"),
            ("s3://Videos", "invalid bucket name `Videos`"),
            ("s3://ab", "invalid bucket name"),
            ("s3://videos/a//b", "empty, `.` or `..` segment"),
            ("s3://videos/../b", "empty, `.` or `..` segment"),
            ("s3://videos/p?x=1", "must not have a query"),
            ("gs://videos", "unsupported scheme `gs`"),
            (
                "https://s3.amazonaws.com/videos",
                "unsupported scheme `https`",
            ),
        ] {
            let err = parse(url).unwrap_err().to_string();
            assert!(err.contains(expected), "{url}: {err}");
        }
    }

    #[test]
    fn credentials_in_the_url_are_refused_and_never_repeated() {
        let err = parse("s3://AKIAEXAMPLE:hunter2@videos/p")
            .unwrap_err()
            .to_string();
        assert!(err.contains("must not contain credentials"), "{err}");
        assert!(
            !err.contains("hunter2") && !err.contains("AKIAEXAMPLE"),
            "{err}"
        );
        assert_eq!(
            redact_userinfo("s3://a:b@videos/p"),
            "s3://[REDACTED]@videos/p"
        );
        assert_eq!(redact_userinfo("/dir/a@b"), "/dir/a@b");
    }
}
