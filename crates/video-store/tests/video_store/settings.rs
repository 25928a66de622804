//! Bad settings give clear errors; `Debug` shows no secret.

use std::time::Duration;

use byok_video_store::{VideoStore, VideoStoreConfig, VideoStoreError};

fn open(url: &str, env: &[(&str, &str)]) -> Result<VideoStore, VideoStoreError> {
    VideoStore::open_with_env(
        &VideoStoreConfig::new(url),
        env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    )
}

#[test]
fn bad_urls_name_the_problem() {
    for (url, expected) in [
        ("", "is empty"),
        ("s3://", "names no bucket"),
        ("s3://Bad_Bucket/x", "invalid bucket name `Bad_Bucket`"),
        ("s3://videos/a//b", "empty, `.` or `..` segment"),
        ("gs://videos/x", "unsupported scheme `gs`"),
        ("ftp://host/dir", "unsupported scheme `ftp`"),
    ] {
        let err = open(url, &[]).unwrap_err();
        assert!(matches!(err, VideoStoreError::Config(_)), "{url}: {err:?}");
        assert!(!err.is_transient());
        assert!(err.to_string().contains(expected), "{url}: {err}");
    }
    let err = open("s3://AKIAOPEN:s3cr3t@videos", &[]).unwrap_err();
    assert!(
        err.to_string().contains("must not contain credentials"),
        "{err}"
    );
    assert!(!format!("{err} {err:?}").contains("s3cr3t"));
}

#[test]
fn bad_endpoints_and_ttls_are_refused() {
    let err = open(
        "s3://videos",
        &[("AWS_ENDPOINT_URL", "ftp://127.0.0.1:9000")],
    )
    .unwrap_err();
    assert!(err.to_string().contains("AWS_ENDPOINT_URL"), "{err}");
    let err = open("s3://videos", &[("AWS_ENDPOINT_URL", "not a url")]).unwrap_err();
    assert!(err.to_string().contains("is not a URL"), "{err}");
    let err = open(
        "s3://videos",
        &[("AWS_ENDPOINT_URL", "http://user:pw0rd@127.0.0.1:9000")],
    )
    .unwrap_err();
    assert!(!err.to_string().contains("pw0rd"), "{err}");

    let mut config = VideoStoreConfig::new("s3://videos");
    config.presign = true;
    config.presign_ttl = Duration::from_secs(8 * 24 * 3600);
    let err = VideoStore::open_with_env(&config, []).unwrap_err();
    assert!(err.to_string().contains("at most 7 days"), "{err}");
}

#[test]
fn debug_shows_the_location_and_no_secret() {
    let store = open(
        "s3://videos/byok/out",
        &[
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:9000/"),
            ("AWS_REGION", "eu-west-3"),
            ("AWS_ACCESS_KEY_ID", "AKIAVISIBLEID"),
            ("AWS_SECRET_ACCESS_KEY", "very-secret-key"),
            ("AWS_SESSION_TOKEN", "very-secret-token"),
        ],
    )
    .expect("open");
    let debug = format!("{store:?}");
    assert!(debug.contains("s3://videos/byok/out"), "{debug}");
    assert!(debug.contains("http://127.0.0.1:9000"), "{debug}");
    assert!(debug.contains("eu-west-3"), "{debug}");
    for secret in ["AKIAVISIBLEID", "very-secret-key", "very-secret-token"] {
        assert!(!debug.contains(secret), "{debug}");
    }
    let config = VideoStoreConfig::new("s3://user:pass@videos");
    assert!(!format!("{config:?}").contains("pass"), "{config:?}");
}
