//! The generation half of an adapter: the values that travel through
//! submit, poll, cancel and output download.

use std::fmt;
use std::path::Path;

use byok_core::ValidatedRequest;

/// An input image, fetched and checked (see [`crate::fetch::ImageFetcher`]).
#[derive(Clone, PartialEq, Eq)]
pub struct InputImage {
    /// The encoded image, as fetched.
    pub bytes: Vec<u8>,
    /// `image/png`, `image/jpeg` or `image/webp`, from the content sniffed
    /// (not only the server's header).
    pub content_type: String,
    /// Pixel width.
    pub width: u32,
    /// Pixel height.
    pub height: u32,
}

impl fmt::Debug for InputImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InputImage")
            .field("bytes", &self.bytes.len())
            .field("content_type", &self.content_type)
            .field("width", &self.width)
            .field("height", &self.height)
            .finish()
    }
}

/// What an adapter submits: the validated request and, for image-to-video,
/// the fetched input image.
#[derive(Debug, Clone, Copy)]
pub struct SubmitRequest<'a> {
    /// Checked against the catalogue, defaults filled in.
    pub request: &'a ValidatedRequest,
    /// The input image (image-to-video only).
    pub image: Option<&'a InputImage>,
}

/// The provider accepted the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    /// The provider's id of the remote job (Runway task id, Stability
    /// generation id, Vertex operation name). The worker records it before
    /// anything else, so a crash never leads to a second submit.
    pub provider_job_id: String,
}

/// Where a remote job stands.
#[derive(Debug, Clone, PartialEq)]
pub enum RemoteStatus {
    /// Accepted, not started (Runway `PENDING`/`THROTTLED`, Stability 202,
    /// Vertex not `done`).
    Queued,
    /// Rendering; `progress` in 0..=1 when the provider says.
    Running {
        /// Fraction done.
        progress: Option<f64>,
    },
    /// Done: where the video is, and what the provider reported about the work.
    Succeeded(VideoOutput, byok_core::ProviderUsage),
    /// Done without a video, for the classified reason.
    Failed(byok_core::JobError),
    /// Cancelled at the provider.
    Cancelled,
}

/// Where a finished video is. Provider URLs expire (Runway 24–48 h), so the
/// worker copies the video at once with [`crate::VideoProvider::fetch_output`].
#[derive(Clone, PartialEq, Eq)]
pub enum VideoOutput {
    /// Downloadable URLs (Runway's signed CDN URLs).
    Urls(Vec<String>),
    /// The bytes came with the answer (Stability's result, Vertex's
    /// `bytesBase64Encoded`).
    Inline(Video),
    /// Objects in Google Cloud Storage (`gs://bucket/object`), downloaded
    /// with the job's Vertex credentials.
    Gcs(Vec<String>),
}

impl fmt::Debug for VideoOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VideoOutput::Urls(urls) => f.debug_tuple("Urls").field(&urls.len()).finish(),
            VideoOutput::Inline(video) => f.debug_tuple("Inline").field(video).finish(),
            VideoOutput::Gcs(uris) => f.debug_tuple("Gcs").field(uris).finish(),
        }
    }
}

/// A finished video.
#[derive(Clone, PartialEq, Eq)]
pub struct Video {
    /// The file.
    pub bytes: Vec<u8>,
    /// `video/mp4`.
    pub content_type: String,
    /// The provider's remark on the result, e.g. Stability's
    /// `CONTENT_FILTERED` (a success with blurred frames).
    pub note: Option<String>,
}

impl fmt::Debug for Video {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Video")
            .field("bytes", &self.bytes.len())
            .field("content_type", &self.content_type)
            .field("note", &self.note)
            .finish()
    }
}

/// A finished video written to the file the caller named (see
/// [`crate::VideoProvider::fetch_output`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedVideo {
    /// Bytes written.
    pub size: u64,
    /// `video/mp4` (any `video/*` the provider declared).
    pub content_type: String,
    /// The provider's remark on the result, e.g. Stability's
    /// `CONTENT_FILTERED` (a success with blurred frames).
    pub note: Option<String>,
}

impl Video {
    /// Writes this in-memory video (an inline output) to `dest`, replacing what is there.
    pub(crate) async fn save(&self, dest: &Path) -> Result<SavedVideo, byok_core::JobError> {
        let (bytes, path) = (self.bytes.clone(), dest.to_owned());
        tokio::task::spawn_blocking(move || {
            std::io::Write::write_all(&mut crate::http::create_file(&path)?, &bytes)
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
        .map_err(|e| write_error(dest, &e))?;
        Ok(SavedVideo {
            size: self.bytes.len() as u64,
            content_type: self.content_type.clone(),
            note: self.note.clone(),
        })
    }
}

/// A caller bug or a broken invariant of ours (credentials of another provider, a request
/// that skipped a step): `internal`, permanent, for every adapter in the same words.
pub(crate) fn internal(message: &str) -> byok_core::JobError {
    byok_core::JobError::permanent(
        byok_core::ErrorCode::Internal,
        format!("internal error: {message}"),
    )
}

/// A failure to write the caller's file: `internal`, transient (a full or unwritable disk
/// is ours to fix, and the provider keeps the video for a day or more).
pub(crate) fn write_error(dest: &Path, error: &std::io::Error) -> byok_core::JobError {
    byok_core::JobError::transient(
        byok_core::ErrorCode::Internal,
        format!("could not write the video to {}: {error}", dest.display()),
    )
}

/// What a cancel did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The provider cancelled (or deleted) the remote job.
    Cancelled,
    /// The provider has no cancel: the remote job runs to its end, and the
    /// worker ignores its result.
    NotSupported,
}
