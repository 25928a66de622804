//! The S3-compatible backend: object_store's `AmazonS3`.

use std::fmt;
use std::io::Read as _;
use std::path::Path;
use std::time::Duration;

use futures::StreamExt as _;
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as Key;
use object_store::signer::Signer as _;
use object_store::{
    Attribute, Attributes, BackoffConfig, ClientOptions, ObjectStore as _, ObjectStoreExt as _,
    PutMultipartOptions, PutOptions, PutPayload, RetryConfig,
};
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::error::{s3_code, store_error, without_body};
use crate::location::redact_userinfo;
use crate::{StoredVideo, VideoStoreConfig, VideoStoreError, file_name};

/// S3's smallest part (all but the last).
const MIN_PART: usize = 5 * 1024 * 1024;
/// S3's most parts in one upload.
const MAX_PARTS: u64 = 10_000;
/// Parts uploading at once: at most this many parts are in memory (the next is read only
/// when a slot is free).
const PARTS_IN_FLIGHT: usize = 2;

pub(crate) struct S3Store {
    store: AmazonS3,
    bucket: String,
    prefix: Option<String>,
    /// `scheme://host[:port]` of a configured endpoint, for `Debug`.
    endpoint: Option<String>,
    region: String,
    presign: bool,
    presign_ttl: Duration,
    multipart_threshold: usize,
}

/// Transport settings. No overall request timeout: a video streamed to a slow client may
/// take minutes; a stalled connection is cut by the read timeout instead.
fn client_options() -> ClientOptions {
    ClientOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_read_timeout(Duration::from_secs(30))
        .with_timeout_disabled()
}

/// object_store retries 5xx, 429 and transport errors itself; a few quick retries absorb a
/// blip, and longer outages go back to the caller as transient errors (the worker retries
/// the job step with its own backoff).
fn retry_config() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            base: 2.0,
        },
        max_retries: 3,
        retry_timeout: Duration::from_secs(30),
    }
}

impl S3Store {
    pub(crate) fn open(
        config: &VideoStoreConfig,
        bucket: String,
        prefix: Option<String>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<S3Store, VideoStoreError> {
        let mut builder = AmazonS3Builder::new().with_client_options(client_options());
        for (name, value) in env {
            if !name.starts_with("AWS_") {
                continue;
            }
            // The variables object_store knows (AmazonS3Builder::from_env reads the same);
            // others (AWS_PROFILE, …) are not ours to reject.
            if let Ok(key) = name.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
                builder = builder.with_config(key, value);
            }
        }
        let endpoint = builder
            .get_config_value(&AmazonS3ConfigKey::S3Endpoint)
            .or_else(|| builder.get_config_value(&AmazonS3ConfigKey::Endpoint))
            .filter(|e| !e.trim().is_empty());
        let endpoint = match endpoint {
            None => None,
            Some(raw) => {
                let url = url::Url::parse(raw.trim()).map_err(|e| {
                    VideoStoreError::Config(format!(
                        "AWS_ENDPOINT_URL `{}` is not a URL ({e})",
                        redact_userinfo(&raw)
                    ))
                })?;
                if !url.username().is_empty() || url.password().is_some() {
                    return Err(VideoStoreError::Config(
                        "AWS_ENDPOINT_URL must not contain a user name or password".to_owned(),
                    ));
                }
                let shown = match (url.scheme(), url.host_str()) {
                    ("http" | "https", Some(host)) => match url.port() {
                        Some(port) => format!("{}://{host}:{port}", url.scheme()),
                        None => format!("{}://{host}", url.scheme()),
                    },
                    _ => {
                        return Err(VideoStoreError::Config(format!(
                            "AWS_ENDPOINT_URL `{raw}` must be an http:// or https:// URL with a host"
                        )));
                    }
                };
                if url.scheme() == "http" {
                    // A MinIO or test server on plain http: allowed because it was asked for.
                    builder = builder.with_allow_http(true);
                }
                Some(shown)
            }
        };
        let region = builder
            .get_config_value(&AmazonS3ConfigKey::Region)
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| "us-east-1".to_owned());
        let store = builder
            .with_bucket_name(&bucket)
            .with_retry(retry_config())
            .build()
            .map_err(|e| {
                VideoStoreError::Config(format!(
                    "the S3 settings are unusable: {}",
                    without_body(&e.to_string())
                ))
            })?;
        Ok(S3Store {
            store,
            bucket,
            prefix,
            endpoint,
            region,
            presign: config.presign,
            presign_ttl: config.presign_ttl,
            multipart_threshold: config.multipart_threshold,
        })
    }

    pub(crate) fn fmt_debug(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VideoStore")
            .field("location", &self.display())
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("presign", &self.presign)
            .finish()
    }

    /// `s3://bucket[/prefix]`.
    fn display(&self) -> String {
        match &self.prefix {
            Some(prefix) => format!("s3://{}/{prefix}", self.bucket),
            None => format!("s3://{}", self.bucket),
        }
    }

    fn key(&self, job_id: Uuid) -> Key {
        let name = file_name(job_id);
        match &self.prefix {
            Some(prefix) => Key::from(format!("{prefix}/{name}")),
            None => Key::from(name),
        }
    }

    /// `s3://bucket/key`, for messages.
    fn shown(&self, key: &Key) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    pub(crate) async fn put_file(
        &self,
        job_id: Uuid,
        path: &Path,
        content_type: &str,
    ) -> Result<u64, VideoStoreError> {
        let key = self.key(job_id);
        let shown = self.shown(&key);
        let file = std::fs::File::open(path).map_err(|e| VideoStoreError::source(path, e))?;
        let size = file
            .metadata()
            .map_err(|e| VideoStoreError::source(path, e))?
            .len();
        let attributes = Attributes::from_iter([(Attribute::ContentType, content_type.to_owned())]);
        if size <= self.multipart_threshold as u64 {
            let (_, bytes) = read_part(file, path, size).await?;
            let options = PutOptions {
                attributes,
                ..PutOptions::default()
            };
            self.store
                .put_opts(&key, PutPayload::from(bytes), options)
                .await
                .map_err(|e| store_error("storing the video at", &shown, &e))?;
            return Ok(size);
        }

        let part_size =
            MIN_PART.max(usize::try_from(size.div_ceil(MAX_PARTS)).unwrap_or(usize::MAX));
        let options = PutMultipartOptions {
            attributes,
            ..PutMultipartOptions::default()
        };
        let mut upload = self
            .store
            .put_multipart_opts(&key, options)
            .await
            .map_err(|e| store_error("starting the upload of", &shown, &e))?;
        let uploaded = async {
            let mut in_flight = JoinSet::new();
            let mut file = file;
            let mut left = size;
            while left > 0 {
                // A slot first, then the read: at most PARTS_IN_FLIGHT parts are in
                // memory at once (reading a part from the local file takes milliseconds,
                // so waiting for the slot first costs no upload time).
                while in_flight.len() >= PARTS_IN_FLIGHT {
                    join_part(&mut in_flight, &shown).await?;
                }
                let want = left.min(part_size as u64);
                let (back, bytes) = read_part(file, path, want).await?;
                file = back;
                left -= want;
                in_flight.spawn(upload.put_part(PutPayload::from(bytes)));
            }
            while !in_flight.is_empty() {
                join_part(&mut in_flight, &shown).await?;
            }
            Ok::<(), VideoStoreError>(())
        }
        .await;
        if let Err(e) = uploaded {
            if let Err(abort) = upload.abort().await {
                // Parts left behind cost storage until the bucket's lifecycle rule
                // (AbortIncompleteMultipartUpload) removes them.
                tracing::warn!(object = %shown, error = %store_error("aborting the upload of", &shown, &abort), "a failed upload could not be aborted");
            }
            return Err(e);
        }
        upload
            .complete()
            .await
            .map_err(|e| store_error("completing the upload of", &shown, &e))?;
        Ok(size)
    }

    pub(crate) async fn get(&self, job_id: Uuid) -> Result<Option<StoredVideo>, VideoStoreError> {
        let key = self.key(job_id);
        let shown = self.shown(&key);
        let found = match self.store.get(&key).await {
            Ok(found) => found,
            // A missing bucket is a 404 too, but not a missing video.
            Err(e @ object_store::Error::NotFound { .. })
                if s3_code(&e.to_string()) != Some("NoSuchBucket") =>
            {
                return Ok(None);
            }
            Err(e) => return Err(store_error("reading the video at", &shown, &e)),
        };
        let size = found.meta.size;
        let stream = found
            .into_stream()
            .map(move |chunk| chunk.map_err(|e| store_error("reading the video at", &shown, &e)))
            .boxed();
        Ok(Some(StoredVideo { size, stream }))
    }

    pub(crate) async fn presigned_url(
        &self,
        job_id: Uuid,
    ) -> Result<Option<url::Url>, VideoStoreError> {
        if !self.presign {
            return Ok(None);
        }
        let key = self.key(job_id);
        let url = self
            .store
            .signed_url(http::Method::GET, &key, self.presign_ttl)
            .await
            .map_err(|e| store_error("signing a URL for", &self.shown(&key), &e))?;
        Ok(Some(url))
    }

    pub(crate) async fn ping(&self) -> Result<(), VideoStoreError> {
        // Lists a prefix that holds nothing: one cheap request that fails when the bucket
        // is missing (a HEAD could not tell a missing bucket from a missing object) or the
        // credentials are refused.
        let probe = match &self.prefix {
            Some(prefix) => Key::from(format!("{prefix}/.byok-ping")),
            None => Key::from(".byok-ping"),
        };
        match self.store.list(Some(&probe)).next().await {
            None | Some(Ok(_)) => Ok(()),
            Some(Err(e)) => Err(store_error("reaching", &self.display(), &e)),
        }
    }
}

/// Reads the next `len` bytes of `file` on a blocking thread, handing the file back.
async fn read_part(
    file: std::fs::File,
    path: &Path,
    len: u64,
) -> Result<(std::fs::File, bytes::Bytes), VideoStoreError> {
    let owned = path.to_owned();
    // Allocated here rather than on the blocking thread: each blocking thread may get its
    // own allocator arena, and memory freed in one is not reused by another.
    let mut buffer = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    let read = tokio::task::spawn_blocking(move || {
        let mut file = file;
        (&mut file).take(len).read_to_end(&mut buffer)?;
        if (buffer.len() as u64) < len {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the file got shorter while it was uploaded",
            ));
        }
        Ok((file, bytes::Bytes::from(buffer)))
    })
    .await
    .map_err(|e| VideoStoreError::source(&owned, std::io::Error::other(e)))?;
    read.map_err(|e| VideoStoreError::source(&owned, e))
}

async fn join_part(
    in_flight: &mut JoinSet<object_store::Result<()>>,
    shown: &str,
) -> Result<(), VideoStoreError> {
    match in_flight.join_next().await {
        None | Some(Ok(Ok(()))) => Ok(()),
        Some(Ok(Err(e))) => Err(store_error("uploading a part of", &shown, &e)),
        Some(Err(join)) => Err(VideoStoreError::Storage {
            message: format!("uploading a part of {shown}: the upload task failed: {join}"),
            transient: false,
        }),
    }
}
