//! The finish phase: the provider says the video is ready; download it, keep
//! it, and mark the job succeeded.

use byok_core::{JobStatus, RetryClass};
use byok_metrics::{Call, metrics};
use byok_providers::VideoOutput;
use uuid::Uuid;

use crate::backoff::jittered;
use crate::pipeline::finished;
use crate::step::{Next, Step, later};

impl Step<'_> {
    pub(crate) async fn finish(&self, output: &VideoOutput) -> Next {
        let job = self.job;
        let downloaded = metrics()
            .time_call(
                self.provider,
                Call::Download,
                self.adapter.fetch_output(self.credentials(), output),
            )
            .await;
        let video = match downloaded {
            Ok(video) => video,
            // As for polls: the video is paid for, and the provider keeps it
            // for a day or more. Download again later; job_timeout bounds it.
            Err(error) if error.class == RetryClass::Transient => {
                tracing::warn!(error = %error, "video download failed; trying again later");
                return later(jittered(self.pacing.poll_interval));
            }
            Err(error) => return self.job_error(error).await,
        };
        let bytes = video.bytes.len();
        if let Err(e) = self.write_video(job.id, &video.bytes).await {
            // A full or unwritable disk is ours to fix, not the provider's:
            // retry (the provider keeps the result for a day or two).
            tracing::error!(error = %e, "could not write the video to output.dir");
            return self.retry(format!("could not write the video: {e}"));
        }
        let provider_urls = match output {
            VideoOutput::Urls(urls) => urls.clone(),
            VideoOutput::Gcs(uris) => uris.clone(),
            VideoOutput::Inline(_) => Vec::new(),
        };
        let result = serde_json::json!({
            "video_url": format!("/v1/jobs/{}/video", job.id),
            "provider_urls": provider_urls,
            "bytes": bytes,
            "content_type": video.content_type,
            "note": video.note,
        });
        match self.pipeline.store.jobs().succeed(job.id, &result).await {
            Ok(applied) => {
                tracing::info!(bytes, "succeeded");
                if applied {
                    finished(job, JobStatus::Succeeded, None);
                }
                Ok(())
            }
            Err(e) => self.store_trouble(&e),
        }
    }

    /// Writes the video as `<output.dir>/<job id>.mp4`, atomically (a
    /// temporary file renamed into place), so a reader never sees half a file.
    async fn write_video(&self, job_id: Uuid, bytes: &[u8]) -> std::io::Result<()> {
        let dir = &self.pipeline.settings.output_dir;
        tokio::fs::create_dir_all(dir).await?;
        let path = dir.join(format!("{job_id}.mp4"));
        let partial = dir.join(format!(".{job_id}.mp4.partial"));
        tokio::fs::write(&partial, bytes).await?;
        tokio::fs::rename(&partial, &path).await
    }
}
