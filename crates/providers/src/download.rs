//! Downloading a finished video from a URL named in a provider's answer: Runway's signed CDN
//! URLs, fal's CDN files and Replicate's delivery URLs, for the adapters whose outputs are
//! [`VideoOutput::Urls`]. One implementation, so that the network policy, the size cap and
//! the type check of provider URLs cannot drift apart between adapters; each adapter passes
//! its name (for messages) and what a refused URL means at its provider ([`Expired`]).
//!
//! The URL came from a provider answer, so it is untrusted input:
//!
//! - the private-network policy of user URLs applies (IP literals here, the public-only
//!   resolver of [`net::client_builder`] at connect time), on every hop of at most
//!   [`MAX_REDIRECTS`] redirects, which are followed by hand so that each is checked again;
//! - no `Authorization` is sent: these URLs are signed or public, and the key stays home;
//! - the video is streamed into the caller's file ([`http::save_limited`]) up to
//!   [`MAX_VIDEO_BYTES`], never held in memory; reads must progress within the request
//!   timeout, the whole download within [`DOWNLOAD_TIMEOUT`];
//! - messages name the host only: the URL may carry a signature.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use byok_core::{ErrorCode, JobError};
use reqwest::header::{ACCEPT, LOCATION};
use url::Url;

use crate::generation::{internal, write_error};
use crate::http::{self, MAX_VIDEO_BYTES, SaveError, USER_AGENT};
use crate::pace::Pace;
use crate::registry::Setup;
use crate::{RegistryError, SavedVideo, VideoOutput, net};

/// Redirects followed when downloading an output (each hop checked again).
const MAX_REDIRECTS: usize = 3;

/// Time limit for one output download as a whole; reads must also progress within the
/// request timeout.
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// The message of a 403, 404 or 410 from an output URL's host, given the host and the
/// status, for a provider whose refused URLs are worth another round after a fresh poll.
pub(crate) type Expired = fn(host: &str, status: u16) -> String;

/// How one adapter downloads its outputs: the client of user URLs, the provider's pace and
/// the words of the adapter's messages.
#[derive(Debug)]
pub(crate) struct OutputDownloads {
    /// No redirects, no default credential and, when strict, https only, the public-only
    /// resolver and no proxy ([`net::client_builder`]).
    client: reqwest::Client,
    /// `fetch.allow_private_networks`.
    allow_private_networks: bool,
    /// The provider's pace (`providers.<id>.max_requests_per_second`): downloads wait their
    /// turn like every other request to the provider.
    pace: Pace,
    /// The provider as messages name it (`Runway` → "Runway's output URL was refused").
    provider: Arc<str>,
    /// What a 403/404/410 means: `Some`, transient with this message (the next poll may give
    /// the file again); `None`, permanent like any other unexpected status (gone is gone).
    expired: Option<Expired>,
}

impl OutputDownloads {
    /// The downloads of the adapter that `setup` builds, named `provider` in messages.
    pub(crate) fn new(
        setup: &Setup<'_>,
        provider: impl Into<Arc<str>>,
        expired: Option<Expired>,
    ) -> Result<OutputDownloads, RegistryError> {
        // Output URLs are provider answers, i.e. untrusted: the client of user URLs, without
        // any default credential. Reads must progress within the request timeout; the whole
        // download within DOWNLOAD_TIMEOUT.
        let client = net::client_builder(setup.allow_private_networks)
            .user_agent(USER_AGENT)
            .connect_timeout(setup.request_timeout)
            .read_timeout(setup.request_timeout)
            .timeout(DOWNLOAD_TIMEOUT)
            .build()
            .map_err(RegistryError::HttpClient)?;
        Ok(OutputDownloads {
            client,
            allow_private_networks: setup.allow_private_networks,
            pace: setup.pace.clone(),
            provider: provider.into(),
            expired,
        })
    }

    /// [`crate::VideoProvider::fetch_output`] of an adapter whose outputs are URLs: the first
    /// non-empty URL is downloaded into `dest`; an inline video is written out; a Cloud
    /// Storage output is a caller bug.
    pub(crate) async fn fetch_output(
        &self,
        output: &VideoOutput,
        dest: &Path,
    ) -> Result<SavedVideo, JobError> {
        let provider = &*self.provider;
        match output {
            VideoOutput::Urls(urls) => {
                let first = urls
                    .iter()
                    .find(|u| !u.trim().is_empty())
                    .ok_or_else(|| internal(&format!("{provider}'s output has no URL")))?;
                self.download(first, dest).await
            }
            VideoOutput::Inline(video) => video.save(dest).await,
            VideoOutput::Gcs(_) => Err(internal(&format!(
                "a Google Cloud Storage output was given to the {provider} adapter"
            ))),
        }
    }

    /// Downloads an output URL into `dest` (see the module's rules).
    async fn download(&self, raw: &str, dest: &Path) -> Result<SavedVideo, JobError> {
        let provider = &*self.provider;
        let mut url = Url::parse(raw.trim()).map_err(|_| {
            JobError::permanent(
                ErrorCode::ProviderUnavailable,
                format!("{provider} returned an output that is not a URL"),
            )
        })?;
        let mut redirects = 0;
        loop {
            self.check_url(&url)?;
            let host = url.host_str().unwrap_or_default().to_owned();
            let request = self
                .client
                .get(url.clone())
                .header(ACCEPT, "video/mp4, video/*, application/octet-stream");
            let response = self
                .pace
                .send(request)
                .await
                .map_err(|e| self.transport_error(&host, &e))?;
            let status = response.status().as_u16();
            if matches!(status, 301 | 302 | 303 | 307 | 308) && redirects < MAX_REDIRECTS {
                let next = response
                    .headers()
                    .get(LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|location| url.join(location.trim()).ok());
                if let Some(next) = next {
                    redirects += 1;
                    url = next;
                    continue;
                }
            }
            return match (status, self.expired) {
                (200..=299, _) => self.save(&host, response, dest).await,
                (403 | 404 | 410, Some(expired)) => Err(JobError::transient(
                    ErrorCode::ProviderUnavailable,
                    expired(&host, status),
                )),
                (408 | 429 | 500..=599, _) => Err(JobError::transient(
                    ErrorCode::ProviderUnavailable,
                    format!(
                        "the download of {provider}'s output from {host} failed (HTTP {status})"
                    ),
                )),
                _ => Err(JobError::permanent(
                    ErrorCode::ProviderUnavailable,
                    format!(
                        "the download of {provider}'s output from {host} answered HTTP {status}"
                    ),
                )),
            };
        }
    }

    /// The policy for an output URL, checked before every hop.
    fn check_url(&self, url: &Url) -> Result<(), JobError> {
        let provider = &*self.provider;
        net::check_url(url, self.allow_private_networks).map_err(|e| {
            JobError::permanent(
                ErrorCode::ProviderUnavailable,
                format!("{provider}'s output URL was refused: {e}"),
            )
        })?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(JobError::permanent(
                ErrorCode::ProviderUnavailable,
                format!("{provider}'s output URL was refused: it contains a user name or password"),
            ));
        }
        Ok(())
    }

    /// A download that got no (complete) answer: a refusal by the resolver's policy is
    /// permanent, anything else transient.
    fn transport_error(&self, host: &str, err: &reqwest::Error) -> JobError {
        let provider = &*self.provider;
        if let Some(policy) = net::policy_violation(err) {
            return JobError::permanent(
                ErrorCode::ProviderUnavailable,
                format!("{provider}'s output URL was refused: {policy}"),
            );
        }
        JobError::transient(
            ErrorCode::ProviderUnavailable,
            format!(
                "the download of {provider}'s output from {host} failed: {}",
                http::describe_transport_error(err, DOWNLOAD_TIMEOUT)
            ),
        )
    }

    /// Saves a downloaded video into `dest`. The type check is lenient, because CDNs label
    /// files loosely: any `video/*` is taken as is; `application/octet-stream` or no type at
    /// all is taken when the bytes carry an MP4/ISO-BMFF `ftyp` box ([`http::has_ftyp`]),
    /// and then labelled `video/mp4`. Anything else (an HTML error page, JSON, an image from
    /// a model that made one) is refused.
    async fn save(
        &self,
        host: &str,
        response: reqwest::Response,
        dest: &Path,
    ) -> Result<SavedVideo, JobError> {
        let provider = &*self.provider;
        let declared = http::media_type(response.headers());
        let saved = match http::save_limited(response, MAX_VIDEO_BYTES, dest).await {
            Ok(saved) => saved,
            Err(SaveError::TooLarge) => {
                return Err(JobError::permanent(
                    ErrorCode::ProviderUnavailable,
                    format!(
                        "{provider}'s output at {host} is larger than {} MiB",
                        MAX_VIDEO_BYTES >> 20
                    ),
                ));
            }
            Err(SaveError::Read(e)) => return Err(self.transport_error(host, &e)),
            Err(SaveError::Write(e)) => return Err(write_error(dest, &e)),
        };
        if saved.size == 0 {
            return Err(JobError::transient(
                ErrorCode::ProviderUnavailable,
                format!("{provider}'s output at {host} was empty"),
            ));
        }
        let content_type = match declared.as_deref() {
            Some(video) if video.starts_with("video/") => video.to_owned(),
            None | Some("application/octet-stream") if http::has_ftyp(&saved.head) => {
                "video/mp4".to_owned()
            }
            other => {
                return Err(JobError::permanent(
                    ErrorCode::ProviderUnavailable,
                    format!(
                        "{provider}'s output at {host} is not a video (served as `{}`)",
                        http::sanitize(other.unwrap_or("nothing"), &[])
                    ),
                ));
            }
        };
        Ok(SavedVideo {
            size: saved.size,
            content_type,
            note: None,
        })
    }
}
