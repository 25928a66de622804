//! The finish phase: the provider says the video is ready; download it,
//! keep it in the video store, and mark the job succeeded.

use std::path::{Path, PathBuf};

use byok_core::{ErrorCode, JobResult, JobStatus, ProviderUsage, RetryClass};
use byok_metrics::{Call, metrics};
use byok_providers::VideoOutput;
use uuid::Uuid;

use crate::backoff::jittered;
use crate::pipeline::finished;
use crate::step::{Next, Step, later};

impl Step<'_> {
    pub(crate) async fn finish(&self, output: &VideoOutput, usage: ProviderUsage) -> Next {
        let job = self.job;
        // The video goes to a local file first, streamed, never whole in
        // memory; the store then takes it from there (uploaded in parts to
        // object storage, renamed into place in a local directory). Whatever
        // the store did not move is removed however this step ends.
        let scratch = self.pipeline.videos.scratch_dir();
        let mut download = Download::new(scratch, job.id);
        let fetched = metrics()
            .time_call(
                self.provider,
                Call::Download,
                self.adapter
                    .fetch_output(self.credentials(), output, download.path()),
            )
            .await;
        let saved = match fetched {
            Ok(saved) => saved,
            // The adapter could not write the file: its one transient `internal`.
            Err(error)
                if error.class == RetryClass::Transient && error.code == ErrorCode::Internal =>
            {
                return self.our_trouble("could not write the download", &error);
            }
            // As for polls: the video is paid for, and the provider keeps it
            // for a day or more. Download again later; job_timeout bounds it.
            Err(error) if error.class == RetryClass::Transient => {
                tracing::warn!(error = %error, "video download failed; trying again later");
                return later(jittered(self.pacing.poll_interval));
            }
            Err(error) => return self.job_error(error).await,
        };
        let kept = self
            .pipeline
            .videos
            .put_file(job.id, download.path(), &saved.content_type)
            .await;
        match kept {
            Ok(_) => {}
            // The store is down or slow: not the job's fault and not an
            // attempt. The provider keeps the video; come back as for a poll
            // (the next poll finds it done and downloads it again), bounded
            // by worker.job_timeout.
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %e, "the video store is unavailable; trying again later");
                return later(jittered(self.pacing.poll_interval));
            }
            Err(e) => return self.our_trouble("could not store the video", &e),
        }
        // A local store renamed the file into place; object storage took a copy.
        download.moved = scratch.is_some();
        drop(download);
        let result = JobResult {
            provider_urls: match output {
                VideoOutput::Urls(urls) => urls.clone(),
                VideoOutput::Gcs(uris) => uris.clone(),
                VideoOutput::Inline(_) => Vec::new(),
            },
            bytes: saved.size,
            content_type: saved.content_type,
            note: saved.note,
            provider_usage: usage,
        };
        match self.pipeline.steps.succeed(job.id, &result).await {
            Ok(applied) => {
                tracing::info!(bytes = result.bytes, "succeeded");
                if applied {
                    finished(job, JobStatus::Succeeded, None);
                }
                // It cost its list price: no need to read its usage row back.
                if let Err(e) = self
                    .pipeline
                    .budgets
                    .settle_succeeded(job.id, job.estimated_cost)
                    .await
                {
                    tracing::warn!(error = %e, "could not settle the job's budget hold");
                }
                Ok(())
            }
            Err(e) => self.store_trouble(&e),
        }
    }

    /// A full disk or a refusing store is ours to fix, not the provider's:
    /// retry with backoff (an attempt); the provider keeps the result for a
    /// day or two.
    fn our_trouble(&self, what: &str, error: &dyn std::fmt::Display) -> Next {
        tracing::error!(error = %error, "{what}");
        self.retry(format!("{what}: {error}"))
    }
}

/// A download's local file, `.<job id>.<random>.partial` in the store's
/// scratch directory (the video directory of a local store, so the video is
/// renamed into place rather than copied) or in `<temp dir>/byok-downloads`;
/// removed when dropped unless the store moved it. The adapter creates it (and
/// the directory, when missing). The random part keeps two deliveries of one
/// job (a duplicate, a worker that lost its lease) out of each other's file.
struct Download {
    path: PathBuf,
    /// Renamed into the store: nothing left to remove.
    moved: bool,
}

impl Download {
    fn new(scratch: Option<&Path>, job_id: Uuid) -> Download {
        let dir = match scratch {
            Some(dir) => dir.to_owned(),
            None => std::env::temp_dir().join("byok-downloads"),
        };
        let path = dir.join(format!(".{job_id}.{}.partial", Uuid::new_v4().simple()));
        Download { path, moved: false }
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Download {
    fn drop(&mut self) {
        // Gone already when the adapter failed before creating it.
        if !self.moved {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
