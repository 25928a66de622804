#![doc = include_str!("../README.md")]

mod error;
mod location;
mod s3;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt as _;
use futures::stream::BoxStream;
use object_store::ObjectStoreExt as _;
use object_store::local::LocalFileSystem;
use uuid::Uuid;

pub use error::VideoStoreError;

use crate::error::{io_error, store_error};
use crate::location::Location;

/// The default [`VideoStoreConfig::multipart_threshold`]: 8 MiB.
pub const DEFAULT_MULTIPART_THRESHOLD: usize = 8 * 1024 * 1024;

/// The default [`VideoStoreConfig::presign_ttl`]: one hour.
pub const DEFAULT_PRESIGN_TTL: Duration = Duration::from_secs(3600);

/// The longest presigned URL S3 accepts (SigV4): seven days.
pub const MAX_PRESIGN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Where and how finished videos are kept.
#[derive(Clone)]
pub struct VideoStoreConfig {
    /// `file:///abs/dir`, `file://relative/dir`, a bare path, or `s3://bucket[/prefix]`.
    pub url: String,
    /// Hand out presigned GET URLs (S3 only).
    pub presign: bool,
    /// How long a presigned URL stays valid (at most [`MAX_PRESIGN_TTL`]).
    pub presign_ttl: Duration,
    /// Files larger than this are uploaded to S3 in parts; smaller ones in one request.
    pub multipart_threshold: usize,
}

impl VideoStoreConfig {
    /// `url` with the defaults: no presigning, a one-hour TTL, an 8 MiB threshold.
    pub fn new(url: impl Into<String>) -> VideoStoreConfig {
        VideoStoreConfig {
            url: url.into(),
            presign: false,
            presign_ttl: DEFAULT_PRESIGN_TTL,
            multipart_threshold: DEFAULT_MULTIPART_THRESHOLD,
        }
    }
}

impl fmt::Debug for VideoStoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VideoStoreConfig")
            .field("url", &location::redact_userinfo(&self.url))
            .field("presign", &self.presign)
            .field("presign_ttl", &self.presign_ttl)
            .field("multipart_threshold", &self.multipart_threshold)
            .finish()
    }
}

/// A stored video: its size and its bytes as a stream.
pub struct StoredVideo {
    /// Bytes in the stream.
    pub size: u64,
    /// The bytes; an error ends it (the connection to the storage broke).
    pub stream: BoxStream<'static, Result<Bytes, VideoStoreError>>,
}

impl fmt::Debug for StoredVideo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredVideo")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// Where finished videos are kept: a local directory or an S3-compatible bucket.
/// Cheap to clone; clones share connections.
#[derive(Clone)]
pub struct VideoStore {
    backend: Arc<Backend>,
}

enum Backend {
    Local(LocalDir),
    S3(s3::S3Store),
}

struct LocalDir {
    /// Absolute.
    dir: PathBuf,
    fs: LocalFileSystem,
}

impl fmt::Debug for VideoStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.backend {
            Backend::Local(local) => f
                .debug_struct("VideoStore")
                .field("dir", &local.dir)
                .finish(),
            Backend::S3(s3) => s3.fmt_debug(f),
        }
    }
}

/// Bytes read from a local video per chunk of the stream.
const LOCAL_CHUNK: usize = 64 * 1024;

impl VideoStore {
    /// Opens the store `config.url` names, reading the S3 settings from the standard AWS
    /// variables of the process environment (see the crate documentation). No network call
    /// and no file-system change: a bad bucket or missing directory shows at first use (or
    /// at [`VideoStore::ping`]).
    pub fn open(config: &VideoStoreConfig) -> Result<VideoStore, VideoStoreError> {
        VideoStore::open_with_env(
            config,
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
        )
    }

    /// [`VideoStore::open`] with `env` in place of the process environment: only its `AWS_*`
    /// variables are read. For tests and for callers that hold the settings elsewhere.
    pub fn open_with_env(
        config: &VideoStoreConfig,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<VideoStore, VideoStoreError> {
        if config.presign && config.presign_ttl.is_zero() {
            return Err(VideoStoreError::Config(
                "presign_ttl must be longer than zero".to_owned(),
            ));
        }
        if config.presign && config.presign_ttl > MAX_PRESIGN_TTL {
            return Err(VideoStoreError::Config(format!(
                "presign_ttl must be at most 7 days (S3's limit), got {} s",
                config.presign_ttl.as_secs()
            )));
        }
        let backend = match location::parse(&config.url)? {
            Location::Local(dir) => Backend::Local(LocalDir {
                dir,
                fs: LocalFileSystem::new(),
            }),
            Location::S3 { bucket, prefix } => {
                Backend::S3(s3::S3Store::open(config, bucket, prefix, env)?)
            }
        };
        Ok(VideoStore {
            backend: Arc::new(backend),
        })
    }

    /// Stores the video of `job_id` from the local file `path`, streamed: S3 uploads above
    /// the multipart threshold go in parts of at least 5 MiB, two at a time, so at most
    /// three parts are in memory; a local directory gets a copy made by the kernel. Readers
    /// never see a partial video: the local copy is written under a temporary name and
    /// renamed, an S3 object appears when its upload completes. A video already stored for
    /// the job is replaced. Returns the bytes stored.
    pub async fn put_file(
        &self,
        job_id: Uuid,
        path: &Path,
        content_type: &str,
    ) -> Result<u64, VideoStoreError> {
        match &*self.backend {
            Backend::Local(local) => local.put_file(job_id, path).await,
            Backend::S3(s3) => s3.put_file(job_id, path, content_type).await,
        }
    }

    /// The stored video of `job_id`, or `None` when there is none.
    pub async fn get(&self, job_id: Uuid) -> Result<Option<StoredVideo>, VideoStoreError> {
        match &*self.backend {
            Backend::Local(local) => local.get(job_id).await,
            Backend::S3(s3) => s3.get(job_id).await,
        }
    }

    /// A presigned GET URL of the video of `job_id`, valid for `presign_ttl`; `None` when the
    /// backend cannot presign (a local directory) or `presign` is off. The URL's query string
    /// is a credential: hand it to the one client it is for, never log it. No request is
    /// made: the URL is signed whether or not the video exists.
    pub async fn presigned_url(&self, job_id: Uuid) -> Result<Option<url::Url>, VideoStoreError> {
        match &*self.backend {
            Backend::Local(_) => Ok(None),
            Backend::S3(s3) => s3.presigned_url(job_id).await,
        }
    }

    /// Where a caller should write a file it will hand to [`VideoStore::put_file`]: the
    /// video directory itself for a local store (the file is then renamed into place, not
    /// copied), `None` for object storage (any local directory will do).
    pub fn scratch_dir(&self) -> Option<&Path> {
        match &*self.backend {
            Backend::Local(local) => Some(&local.dir),
            Backend::S3(_) => None,
        }
    }

    /// A cheap reachability check for readiness probes: the local directory exists or can be
    /// created; the bucket answers a HEAD with the configured credentials.
    pub async fn ping(&self) -> Result<(), VideoStoreError> {
        match &*self.backend {
            Backend::Local(local) => local.ping().await,
            Backend::S3(s3) => s3.ping().await,
        }
    }
}

/// `<job id>.mp4`: the file or object name of a job's video.
fn file_name(job_id: Uuid) -> String {
    format!("{job_id}.mp4")
}

/// Which side of a move into the directory failed.
enum Moving {
    Source(std::io::Error),
    Target(std::io::Error),
}

impl LocalDir {
    fn path_of(&self, job_id: Uuid) -> PathBuf {
        self.dir.join(file_name(job_id))
    }

    async fn put_file(&self, job_id: Uuid, source: &Path) -> Result<u64, VideoStoreError> {
        let target = self.path_of(job_id);
        // A source in this directory (see `VideoStore::scratch_dir`) is moved into place: one
        // rename, no copy. Like every write here it is not fsynced: a machine crash right after
        // may lose a video whose job reads succeeded (object storage has no such window).
        // Its size and the rename in one blocking call (each call is a hand-off to the
        // blocking pool and back).
        if source.parent() == Some(self.dir.as_path()) {
            let (from, to) = (source.to_owned(), target.clone());
            let moved = tokio::task::spawn_blocking(move || {
                let size = std::fs::metadata(&from).map_err(Moving::Source)?.len();
                std::fs::rename(&from, &to).map_err(Moving::Target)?;
                Ok(size)
            })
            .await
            .unwrap_or_else(|e| Err(Moving::Target(std::io::Error::other(e))));
            return moved.map_err(|e| match e {
                Moving::Source(e) => VideoStoreError::source(source, e),
                Moving::Target(e) => io_error("storing the video", &target.display(), &e),
            });
        }
        let from = tokio::fs::File::open(source)
            .await
            .map_err(|e| VideoStoreError::source(source, e))?
            .into_std()
            .await;
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(|e| io_error("creating the video directory", &self.dir.display(), &e))?;
        // A name of its own per upload: two deliveries of one job never write one file.
        let temporary = self.dir.join(format!(
            ".{}.{}.tmp",
            file_name(job_id),
            Uuid::new_v4().simple()
        ));
        let to = temporary.clone();
        let copied = tokio::task::spawn_blocking(move || {
            // std::io::copy between files is the kernel's copy (copy_file_range) on Linux.
            // Not std::fs::copy: the video gets the umask's permissions, not the source's
            // (a 0600 temporary file would hide it from an API running as another user).
            let mut from = from;
            let mut to = std::fs::File::create(&to)?;
            let size = std::io::copy(&mut from, &mut to)?;
            Ok::<u64, std::io::Error>(size)
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        let stored = match copied {
            Ok(size) => tokio::fs::rename(&temporary, &target).await.map(|()| size),
            Err(e) => Err(e),
        };
        stored.map_err(|e| {
            let _ = std::fs::remove_file(&temporary);
            io_error("storing the video", &target.display(), &e)
        })
    }

    async fn get(&self, job_id: Uuid) -> Result<Option<StoredVideo>, VideoStoreError> {
        let path = self.path_of(job_id);
        let location = object_store::path::Path::from_absolute_path(&path).map_err(|e| {
            VideoStoreError::Config(format!("{} is not a usable file path: {e}", path.display()))
        })?;
        let found = match self.fs.get(&location).await {
            Ok(found) => found,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(store_error("reading the video", &path.display(), &e)),
        };
        let size = found.meta.size;
        let stream = match found.payload {
            object_store::GetResultPayload::File(file, _) => {
                // object_store reads files in 8 KiB chunks; larger ones cost fewer wake-ups.
                let file = tokio::fs::File::from_std(file);
                let display = path.display().to_string();
                tokio_util::io::ReaderStream::with_capacity(file, LOCAL_CHUNK)
                    .map(move |chunk| {
                        chunk.map_err(|e| io_error("reading the video", &display, &e))
                    })
                    .boxed()
            }
            object_store::GetResultPayload::Stream(stream) => {
                let display = path.display().to_string();
                stream
                    .map(move |chunk| {
                        chunk.map_err(|e| store_error("reading the video", &display, &e))
                    })
                    .boxed()
            }
        };
        Ok(Some(StoredVideo { size, stream }))
    }

    async fn ping(&self) -> Result<(), VideoStoreError> {
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(|e| io_error("creating the video directory", &self.dir.display(), &e))?;
        Ok(())
    }
}
