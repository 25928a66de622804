//! Shared helpers: files on disk, reading a stored video back, the S3 server.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use byok_testing::S3Server;
use byok_video_store::{StoredVideo, VideoStore, VideoStoreConfig, VideoStoreError};
use futures::TryStreamExt as _;

/// The byte at `offset` of the test files: a pattern that repeats only every 251 bytes, so
/// a part stored twice, out of order or shifted shows.
pub fn byte_at(offset: u64) -> u8 {
    ((offset * 7 + offset / 4096) % 251) as u8
}

/// Writes `len` pattern bytes to `path` in 64 KiB pieces (never the whole file in memory).
pub fn write_pattern_file(path: &Path, len: u64) {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
    let mut piece = Vec::with_capacity(64 * 1024);
    let mut offset = 0u64;
    while offset < len {
        piece.clear();
        let end = (offset + 64 * 1024).min(len);
        piece.extend((offset..end).map(byte_at));
        file.write_all(&piece).expect("write");
        offset = end;
    }
    file.flush().expect("flush");
}

/// The whole pattern of `len` bytes, for comparisons of small files.
pub fn pattern(len: u64) -> Vec<u8> {
    (0..len).map(byte_at).collect()
}

/// A temporary directory and a pattern file of `len` bytes in it.
pub fn source_file(len: u64) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("download.mp4");
    write_pattern_file(&path, len);
    (dir, path)
}

/// Reads the stream to its end.
pub async fn read_all(video: StoredVideo) -> Result<Vec<u8>, VideoStoreError> {
    let mut bytes = Vec::with_capacity(usize::try_from(video.size).unwrap_or(0));
    let mut stream = video.stream;
    while let Some(chunk) = stream.try_next().await? {
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// Checks the stream against the pattern chunk by chunk, without holding it all.
pub async fn assert_pattern(video: StoredVideo, len: u64) {
    assert_eq!(video.size, len);
    let mut stream = video.stream;
    let mut offset = 0u64;
    while let Some(chunk) = stream.try_next().await.expect("a chunk") {
        for (i, b) in chunk.iter().enumerate() {
            let at = offset + i as u64;
            assert_eq!(*b, byte_at(at), "byte {at}");
        }
        offset += chunk.len() as u64;
    }
    assert_eq!(offset, len, "the stream ends at the size");
}

/// A moto server with a fresh bucket, or `None` after the SKIPPED line.
pub async fn s3_server() -> Option<S3Server> {
    tokio::task::spawn_blocking(byok_testing::s3_server)
        .await
        .expect("s3_server")
}

/// A store on the server's bucket (with `prefix`, if any).
pub fn s3_store(
    server: &S3Server,
    prefix: Option<&str>,
    edit: impl FnOnce(&mut VideoStoreConfig),
) -> VideoStore {
    let url = match prefix {
        Some(prefix) => format!("s3://{}/{prefix}", server.bucket),
        None => format!("s3://{}", server.bucket),
    };
    let mut config = VideoStoreConfig::new(url);
    edit(&mut config);
    VideoStore::open_with_env(&config, server.env()).expect("open the S3 store")
}

/// A plain object_store client on the same bucket, to look at what the server holds.
pub fn raw_client(server: &S3Server) -> object_store::aws::AmazonS3 {
    object_store::aws::AmazonS3Builder::new()
        .with_endpoint(&server.endpoint)
        .with_allow_http(true)
        .with_region(&server.region)
        .with_bucket_name(&server.bucket)
        .with_access_key_id(&server.access_key_id)
        .with_secret_access_key(&server.secret_access_key)
        .build()
        .expect("a raw client")
}
