//! The S3 backend against moto, a real S3-compatible server.

use byok_testing::free_port;
use byok_video_store::{VideoStore, VideoStoreConfig};
use object_store::ObjectStoreExt as _;
use object_store::path::Path as Key;
use uuid::Uuid;

use crate::support::{
    assert_pattern, pattern, raw_client, read_all, s3_server, s3_store, source_file,
};

#[tokio::test]
async fn put_file_then_get_returns_the_same_bytes() {
    let Some(server) = s3_server().await else {
        return;
    };
    let store = s3_store(&server, Some("byok/videos"), |_| {});
    store.ping().await.expect("the bucket answers");
    let (_src, path) = source_file(100_000);
    let job = Uuid::new_v4();

    assert_eq!(
        store.put_file(job, &path, "video/mp4").await.unwrap(),
        100_000
    );
    let video = store.get(job).await.expect("get").expect("a video");
    assert_eq!(video.size, 100_000);
    assert_eq!(read_all(video).await.unwrap(), pattern(100_000));

    // The key is <prefix>/<job id>.mp4; below the threshold it is one PUT (no part count).
    let meta = raw_client(&server)
        .head(&Key::from(format!("byok/videos/{job}.mp4")))
        .await
        .expect("the object is where the key says");
    assert_eq!(meta.size, 100_000);
    let etag = meta.e_tag.expect("an ETag");
    assert!(!etag.contains('-'), "a single PUT: {etag}");
}

#[tokio::test]
async fn a_file_above_the_threshold_is_uploaded_in_parts() {
    let Some(server) = s3_server().await else {
        return;
    };
    let store = s3_store(&server, None, |_| {});
    // Over the 8 MiB threshold: parts of 5 MiB, 5 MiB and the rest.
    let len = 12 * 1024 * 1024 + 7;
    let (_src, path) = source_file(len);
    let job = Uuid::new_v4();

    assert_eq!(store.put_file(job, &path, "video/mp4").await.unwrap(), len);
    let meta = raw_client(&server)
        .head(&Key::from(format!("{job}.mp4")))
        .await
        .expect("stored");
    assert_eq!(meta.size, len);
    // S3 (and moto) give a multipart object the ETag `"<md5 of the part md5s>-<parts>"`.
    let etag = meta.e_tag.expect("an ETag");
    assert!(
        etag.trim_matches('"').ends_with("-3"),
        "three parts: {etag}"
    );
    assert_pattern(store.get(job).await.unwrap().expect("a video"), len).await;

    // A smaller threshold sends a small file in parts too (one short part is allowed).
    let store = s3_store(&server, None, |c| c.multipart_threshold = 1024);
    let (_small, path) = source_file(4096);
    let job = Uuid::new_v4();
    store.put_file(job, &path, "video/mp4").await.unwrap();
    let etag = raw_client(&server)
        .head(&Key::from(format!("{job}.mp4")))
        .await
        .unwrap()
        .e_tag
        .unwrap();
    assert!(etag.trim_matches('"').ends_with("-1"), "one part: {etag}");
    assert_eq!(
        read_all(store.get(job).await.unwrap().unwrap())
            .await
            .unwrap(),
        pattern(4096)
    );
}

#[tokio::test]
async fn a_missing_video_is_none() {
    let Some(server) = s3_server().await else {
        return;
    };
    let store = s3_store(&server, Some("p"), |_| {});
    assert!(store.get(Uuid::new_v4()).await.expect("no error").is_none());
}

#[tokio::test]
async fn presigned_urls_serve_the_video_to_a_plain_client() {
    let Some(server) = s3_server().await else {
        return;
    };
    let store = s3_store(&server, Some("signed"), |c| c.presign = true);
    let (_src, path) = source_file(70_000);
    let job = Uuid::new_v4();
    store.put_file(job, &path, "video/mp4").await.unwrap();

    let url = store.presigned_url(job).await.unwrap().expect("a URL");
    assert!(
        url.path().ends_with(&format!("/signed/{job}.mp4")),
        "{}",
        url.path()
    );
    let query = url.query().unwrap_or_default();
    assert!(
        query.contains("X-Amz-Signature=") && query.contains("X-Amz-Expires=3600"),
        "signed for an hour"
    );
    // No credentials of its own: the URL is the authorisation.
    let client = reqwest::Client::new();
    let response = client.get(url.clone()).send().await.expect("fetched");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "video/mp4",
        "stored with the video"
    );
    assert_eq!(
        response.bytes().await.unwrap().as_ref(),
        pattern(70_000).as_slice()
    );

    // (moto does not check signatures, so that the signature is right is not shown here:
    // object_store's signer is tested against AWS by its authors.)

    // Without presign (the default) there is no URL.
    let plain = s3_store(&server, Some("signed"), |_| {});
    assert_eq!(plain.presigned_url(job).await.unwrap(), None);
}

#[tokio::test]
async fn a_dead_endpoint_gives_transient_errors() {
    // A port nothing listens on: every call fails to connect, after object_store's few
    // quick retries.
    let port = free_port();
    let env = [
        ("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}")),
        ("AWS_ACCESS_KEY_ID", "byok-test".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "byok-test-secret".to_owned()),
        ("AWS_REGION", "us-east-1".to_owned()),
    ]
    .map(|(k, v)| (k.to_owned(), v));
    let store = VideoStore::open_with_env(&VideoStoreConfig::new("s3://videos/x"), env).unwrap();
    let (_src, path) = source_file(1000);
    let job = Uuid::new_v4();

    let put = store.put_file(job, &path, "video/mp4").await.unwrap_err();
    let get = store.get(job).await.unwrap_err();
    let ping = store.ping().await.unwrap_err();
    for err in [put, get, ping] {
        assert!(err.is_transient(), "{err}");
        let text = err.to_string();
        assert!(text.contains("could not connect"), "{text}");
        assert!(text.contains("s3://videos/x"), "names the object: {text}");
        assert!(!text.contains("byok-test-secret"), "{text}");
    }
}

#[tokio::test]
async fn a_missing_bucket_is_a_permanent_error() {
    let Some(server) = s3_server().await else {
        return;
    };
    let store = VideoStore::open_with_env(
        &VideoStoreConfig::new("s3://byok-no-such-bucket"),
        server.env(),
    )
    .unwrap();
    let err = store.ping().await.unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert!(
        err.to_string().contains("the bucket does not exist"),
        "{err}"
    );
    let (_src, path) = source_file(10);
    let err = store
        .put_file(Uuid::new_v4(), &path, "video/mp4")
        .await
        .unwrap_err();
    assert!(!err.is_transient(), "{err}");
    // Not "no video": the bucket itself is missing.
    let err = store.get(Uuid::new_v4()).await.unwrap_err();
    assert!(
        err.to_string().contains("the bucket does not exist"),
        "{err}"
    );
}
