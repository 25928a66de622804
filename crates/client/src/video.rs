//! A succeeded job's video: `GET /v1/jobs/{id}/video`, streamed or written to a file.

use std::fmt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::{Stream, StreamExt as _};
use reqwest::Method;
use tokio::io::AsyncWriteExt as _;
use uuid::Uuid;

use crate::{Client, ClientError};

/// The bytes of a video as they arrive: a [`Stream`] of chunks. A body cut short is an
/// error item ([`ClientError::Transport`] or [`ClientError::Truncated`]), never a silent
/// end.
pub struct VideoStream {
    content_length: Option<u64>,
    chunks: Pin<Box<dyn Stream<Item = Result<Bytes, ClientError>> + Send>>,
}

impl fmt::Debug for VideoStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VideoStream")
            .field("content_length", &self.content_length)
            .finish_non_exhaustive()
    }
}

impl VideoStream {
    /// The video's size in bytes, when the answer said (`Content-Length`).
    pub fn content_length(&self) -> Option<u64> {
        self.content_length
    }
}

impl Stream for VideoStream {
    type Item = Result<Bytes, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.chunks.as_mut().poll_next(cx)
    }
}

/// Where the stream stands: the answer still being read and the bytes counted so far.
struct Reading {
    response: reqwest::Response,
    expected: Option<u64>,
    received: u64,
}

impl Client {
    /// The video of a succeeded job, as a stream of chunks. Before the body starts the call
    /// is retried like any read (a 503 from the video store); a body cut in the middle is
    /// not resumed. With presigned downloads (`output.presign`) the API answers a redirect
    /// to the object store, which is followed without the token. A job that has not
    /// succeeded is a 404 `not_found` whose `details.status` says what it is.
    pub async fn video_stream(&self, id: Uuid) -> Result<VideoStream, ClientError> {
        let id = id.to_string();
        let response = self
            .call(Method::GET, &["v1", "jobs", &id, "video"])
            .streaming()
            .send()
            .await?;
        let expected = response.content_length();
        let reading = Reading {
            response,
            expected,
            received: 0,
        };
        let chunks = futures::stream::try_unfold(reading, |mut reading| async move {
            match reading
                .response
                .chunk()
                .await
                .map_err(ClientError::Transport)?
            {
                Some(chunk) => {
                    reading.received += chunk.len() as u64;
                    Ok(Some((chunk, reading)))
                }
                None => match reading.expected {
                    Some(expected) if expected != reading.received => Err(ClientError::Truncated {
                        expected,
                        received: reading.received,
                    }),
                    _ => Ok(None),
                },
            }
        });
        Ok(VideoStream {
            content_length: expected,
            chunks: Box::pin(chunks),
        })
    }

    /// Writes the video of a succeeded job to `path` and returns its size. The bytes go to
    /// `<path>.part` first, renamed to `path` once complete, so `path` never holds part of a
    /// video; on any error the partial file is removed.
    pub async fn download_video(&self, id: Uuid, path: &Path) -> Result<u64, ClientError> {
        let mut stream = self.video_stream(id).await?;
        let part = part_path(path);
        let written = async {
            let mut file = tokio::fs::File::create(&part).await?;
            let mut size = 0u64;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk?;
                file.write_all(&chunk).await?;
                size += chunk.len() as u64;
            }
            file.sync_all().await?;
            tokio::fs::rename(&part, path).await?;
            Ok::<u64, ClientError>(size)
        }
        .await;
        if written.is_err() {
            // Best effort: the error that matters is the one being returned.
            let _ = tokio::fs::remove_file(&part).await;
        }
        written
    }
}

fn part_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    path.with_file_name(name)
}
