//! Runway's developer API (docs/provider-protocols.md §1): API-key credentials, checked with
//! `GET /v1/organization`; generation with `POST /v1/text_to_video` or
//! `/v1/image_to_video`, `GET /v1/tasks/{id}` and `DELETE /v1/tasks/{id}`; outputs
//! downloaded from Runway's signed CDN URLs.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use byok_core::{ErrorCode, JobError, Mode};
use image::codecs::jpeg::JpegEncoder;
use image::{DynamicImage, ImageFormat};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CONTENT_TYPE, LOCATION};
use secrecy::ExposeSecret;
use serde_json::{Map, Value};
use url::Url;

use crate::classify::{self, Answer};
use crate::credentials::{self, api_key_of};
use crate::fetch::ImageWork;
use crate::generation::write_error;
use crate::http::{self, Body, MAX_VIDEO_BYTES, SaveError, USER_AGENT};
use crate::pace::Outbound;
use crate::registry::{ProviderSpec, Setup};
use crate::{
    CancelOutcome, CredentialCheck, CredentialField, Credentials, CredentialsError, InputImage,
    ProviderDescriptor, ProviderId, RegistryError, RemoteStatus, SavedVideo, SubmitRequest,
    Submitted, VideoOutput, VideoProvider, fetch, net,
};

/// `X-Runway-Version`, required on every request; the SDK's default since 2024-11.
pub(crate) const API_VERSION: &str = "2024-11-06";
const DISPLAY_NAME: &str = "Runway";

/// The Runway adapter.
#[derive(Debug)]
pub(crate) struct RunwayProvider {
    descriptor: ProviderDescriptor,
    catalogue: byok_core::Catalogue,
    base_url: Url,
    http: reqwest::Client,
    /// For output downloads: the network policy of user URLs (see [`Self::download`]).
    download: reqwest::Client,
    /// `fetch.allow_private_networks`, for output URLs.
    allow_private_networks: bool,
    /// Paced sends (`providers.runway.max_requests_per_second`), downloads included.
    outbound: Outbound,
    /// Where a large input image is re-encoded (see [`prompt_image`]).
    images: ImageWork,
}

/// The registry's entry for Runway.
pub(crate) const SPEC: ProviderSpec = ProviderSpec {
    id: ProviderId::Runway,
    display_name: "Runway ML",
    description: "Runway's Gen-4 video models through the Runway developer API \
                  (api.dev.runwayml.com), billed to your Runway organization.",
    icon: "runway",
    credential_fields: &[
        CredentialField {
            name: "api_key",
            label: "API key",
            required: true,
            secret: true,
            kind: "string",
            description: "A developer API key (key_…) from dev.runwayml.com.",
        },
        CredentialField {
            name: "organization_id",
            label: "Organization ID",
            required: false,
            secret: false,
            kind: "string",
            description: "Optional, for your reference; Runway keys already \
                          belong to one organization.",
        },
    ],
    catalogue: include_str!("../catalogue/runway.toml"),
    build: |setup| Ok(Arc::new(RunwayProvider::new(setup)?)),
};

impl RunwayProvider {
    pub(crate) fn new(setup: Setup<'_>) -> Result<Self, RegistryError> {
        let Setup {
            options,
            descriptor,
            catalogue,
            http,
            allow_private_networks,
            request_timeout,
            pace,
            images,
            ..
        } = setup;
        // Output URLs are provider answers, i.e. untrusted: the client of user URLs
        // (no redirects, and when strict: https only, public-only resolver, no proxy),
        // without any default credential. Reads must progress within the request
        // timeout; the whole download within DOWNLOAD_TIMEOUT.
        let download = net::client_builder(allow_private_networks)
            .user_agent(USER_AGENT)
            .connect_timeout(request_timeout)
            .read_timeout(request_timeout)
            .timeout(DOWNLOAD_TIMEOUT)
            .build()
            .map_err(RegistryError::HttpClient)?;
        Ok(RunwayProvider {
            descriptor,
            catalogue,
            base_url: http::parse_base_url(ProviderId::Runway, &options.base_url)?,
            http,
            download,
            allow_private_networks,
            outbound: Outbound::new(pace, DISPLAY_NAME, request_timeout),
            images,
        })
    }
}

#[async_trait::async_trait]
impl VideoProvider for RunwayProvider {
    fn id(&self) -> ProviderId {
        ProviderId::Runway
    }

    fn descriptor(&self) -> &ProviderDescriptor {
        &self.descriptor
    }

    fn catalogue(&self) -> &byok_core::Catalogue {
        &self.catalogue
    }

    fn parse_credentials(&self, raw: &Value) -> Result<Credentials, CredentialsError> {
        credentials::parse_api_key(ProviderId::Runway, raw)
    }

    async fn check_credentials(&self, credentials: &Credentials) -> CredentialCheck {
        let (api_key, _) = match api_key_of(credentials, ProviderId::Runway) {
            Ok(parts) => parts,
            Err(check) => return check,
        };
        let secret = api_key.expose_secret();
        let request = self
            .http
            .get(http::endpoint(&self.base_url, "/v1/organization"))
            .bearer_auth(secret)
            .header("X-Runway-Version", API_VERSION)
            .header(ACCEPT, "application/json");
        match self.outbound.check(request, &[secret]).await {
            Ok((status, body)) => classify(status, &body, secret),
            Err(check) => check,
        }
    }
    async fn submit(
        &self,
        credentials: &Credentials,
        request: SubmitRequest<'_>,
    ) -> Result<Submitted, JobError> {
        let secret = api_key(credentials)?.expose_secret();
        let validated = request.request;
        let format = validated.format.as_ref().ok_or_else(|| {
            internal("the validated request has no format (Runway always needs a ratio)")
        })?;
        let (path, prompt_image) = match validated.mode {
            Mode::TextToVideo => ("/v1/text_to_video", None),
            Mode::ImageToVideo => {
                let image = request.image.ok_or_else(|| {
                    internal("an image-to-video job reached submit without its fetched image")
                })?;
                (
                    "/v1/image_to_video",
                    Some(prompt_image(&self.images, image).await?),
                )
            }
        };
        // camelCase on the wire; numbers are JSON integers (docs/provider-protocols.md §1.2).
        let mut body = Map::new();
        body.insert("model".into(), validated.model.clone().into());
        if let Some(prompt) = &validated.prompt {
            body.insert("promptText".into(), prompt.clone().into());
        }
        if let Some(uri) = prompt_image {
            body.insert("promptImage".into(), uri.into());
        }
        body.insert("ratio".into(), format.wire.clone().into());
        if let Some(duration) = validated.duration_seconds {
            body.insert("duration".into(), duration.into());
        }
        if let Some(seed) = validated.seed {
            body.insert("seed".into(), seed.into());
        }
        // The catalogue only lets a negative prompt through for models that take one.
        if let Some(negative) = &validated.negative_prompt {
            body.insert("negativePrompt".into(), negative.clone().into());
        }
        let request = self
            .http
            .post(http::endpoint(&self.base_url, path))
            .bearer_auth(secret)
            .header("X-Runway-Version", API_VERSION)
            .header(ACCEPT, "application/json")
            .json(&Value::Object(body));
        let answer = self.outbound.submit(request, &[secret]).await?;
        if !answer.status.is_success() {
            return Err(classify_answer(Call::Submit, &answer, secret));
        }
        // The task exists (and is billed) once Runway said 2xx: an answer we cannot read
        // is an unknown outcome, never a reason to submit again.
        match answer.body.json().as_ref().and_then(task_id) {
            Some(id) => Ok(Submitted {
                provider_job_id: id,
            }),
            None => Err(JobError::submit_outcome_unknown(format!(
                "Runway accepted the submit (HTTP {}) but its answer carries no task id; \
                 it is not re-sent, because it may have created a billable task",
                answer.status.as_u16()
            ))),
        }
    }

    async fn poll(
        &self,
        credentials: &Credentials,
        provider_job_id: &str,
    ) -> Result<RemoteStatus, JobError> {
        let secret = api_key(credentials)?.expose_secret();
        let request = self
            .http
            .get(self.task_url(provider_job_id)?)
            .bearer_auth(secret)
            .header("X-Runway-Version", API_VERSION)
            .header(ACCEPT, "application/json");
        let answer = self.outbound.idempotent(request, &[secret]).await?;
        match answer.status.as_u16() {
            200..=299 => {}
            // Deleted (by anyone holding the key) or expired: nothing left to wait for.
            404 => {
                return Err(JobError::permanent(
                    ErrorCode::ProviderUnavailable,
                    "Runway no longer knows this task (HTTP 404): it was deleted or has expired",
                ));
            }
            _ => return Err(classify_answer(Call::Poll, &answer, secret)),
        }
        let json = answer.body.json().filter(Value::is_object).ok_or_else(|| {
            JobError::transient(
                ErrorCode::ProviderUnavailable,
                "Runway answered the task poll with an unreadable body",
            )
        })?;
        task_status(&json, secret)
    }

    async fn cancel(
        &self,
        credentials: &Credentials,
        provider_job_id: &str,
    ) -> Result<CancelOutcome, JobError> {
        let secret = api_key(credentials)?.expose_secret();
        let request = self
            .http
            .delete(self.task_url(provider_job_id)?)
            .bearer_auth(secret)
            .header("X-Runway-Version", API_VERSION)
            .header(ACCEPT, "*/*");
        let answer = self.outbound.idempotent(request, &[secret]).await?;
        match answer.status.as_u16() {
            // 204 No Content is the documented answer; any 2xx means done.
            200..=299 => Ok(CancelOutcome::Cancelled),
            // Already deleted: the task cannot run (or bill) any more, which is what a
            // cancel is for. A second cancel of the same job lands here too.
            404 => Ok(CancelOutcome::Cancelled),
            _ => Err(classify_answer(Call::Cancel, &answer, secret)),
        }
    }

    async fn fetch_output(
        &self,
        _credentials: &Credentials,
        output: &VideoOutput,
        dest: &Path,
    ) -> Result<SavedVideo, JobError> {
        match output {
            VideoOutput::Urls(urls) => {
                let first = urls
                    .iter()
                    .find(|u| !u.trim().is_empty())
                    .ok_or_else(|| internal("Runway's output has no URL"))?;
                self.download(first, dest).await
            }
            VideoOutput::Inline(video) => video.save(dest).await,
            VideoOutput::Gcs(_) => Err(internal(
                "a Google Cloud Storage output was given to the Runway adapter",
            )),
        }
    }
}

impl RunwayProvider {
    /// `{base}/v1/tasks/{id}`, the id as one percent-encoded path segment (it came from
    /// a provider answer and must not be able to change the path).
    fn task_url(&self, id: &str) -> Result<Url, JobError> {
        if id.is_empty() {
            return Err(internal("empty Runway task id"));
        }
        let mut url = http::endpoint(&self.base_url, "/v1/tasks");
        url.path_segments_mut()
            .map_err(|()| internal("the Runway base URL cannot take a path"))?
            .push(id);
        Ok(url)
    }

    /// Downloads an output URL. The URL came from a provider answer, so it is
    /// untrusted input: the private-network policy of user URLs applies (IP literals
    /// here, the public-only resolver at connect time), on every redirect hop too; no
    /// `Authorization` is sent (the URL is signed); the size is capped at
    /// [`MAX_VIDEO_BYTES`] while streaming into `dest`. Messages name the host only: the
    /// URL carries a signature.
    async fn download(&self, raw: &str, dest: &Path) -> Result<SavedVideo, JobError> {
        let mut url = Url::parse(raw.trim()).map_err(|_| {
            JobError::permanent(
                ErrorCode::ProviderUnavailable,
                "Runway returned an output that is not a URL",
            )
        })?;
        let mut redirects = 0;
        loop {
            check_output_url(&url, self.allow_private_networks)?;
            let host = url.host_str().unwrap_or_default().to_owned();
            let request = self
                .download
                .get(url.clone())
                .header(ACCEPT, "video/mp4, video/*, application/octet-stream");
            let response = self
                .outbound
                .send(request)
                .await
                .map_err(|e| download_error(&host, &e))?;
            let status = response.status().as_u16();
            if matches!(status, 301 | 302 | 303 | 307 | 308) && redirects < MAX_DOWNLOAD_REDIRECTS {
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
            return match status {
                200..=299 => save_video(&host, response, dest).await,
                // Signed URLs expire (24–48 h) and are then refused; a fresh poll of the
                // task gives fresh URLs, so this is worth another round.
                403 | 404 | 410 => Err(JobError::transient(
                    ErrorCode::ProviderUnavailable,
                    format!(
                        "Runway's output URL at {host} was refused (HTTP {status}); it has probably \
                         expired: poll the task again for fresh URLs"
                    ),
                )),
                408 | 429 | 500..=599 => Err(JobError::transient(
                    ErrorCode::ProviderUnavailable,
                    format!("the download of Runway's output from {host} failed (HTTP {status})"),
                )),
                _ => Err(JobError::permanent(
                    ErrorCode::ProviderUnavailable,
                    format!("the download of Runway's output from {host} answered HTTP {status}"),
                )),
            };
        }
    }
}

/// Redirects followed when downloading an output (each hop checked again).
const MAX_DOWNLOAD_REDIRECTS: usize = 3;

/// Time limit for one output download as a whole; reads must also progress within the
/// request timeout.
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// Runway's limit for a data URI (`promptImage`, "≤5 MB encoded", docs/provider-protocols.md §1.2);
/// decimal megabytes assumed, the smaller reading (UNVERIFIED).
pub(crate) const MAX_DATA_URI_BYTES: usize = 5_000_000;

/// Longest side of an image re-encoded to fit [`MAX_DATA_URI_BYTES`]: Runway's largest
/// output is 1920 pixels wide, so nothing is lost that the video could show.
const SHRUNK_MAX_SIDE: u32 = 2048;

/// Which call an HTTP answer belongs to (a 404 means different things).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Submit,
    Poll,
    Cancel,
}

fn internal(message: &str) -> JobError {
    JobError::permanent(ErrorCode::Internal, format!("internal error: {message}"))
}

/// The API key of Runway credentials; other credentials are a caller bug.
fn api_key(credentials: &Credentials) -> Result<&secrecy::SecretString, JobError> {
    api_key_of(credentials, ProviderId::Runway)
        .map(|(key, _)| key)
        .map_err(|_| {
            internal(&format!(
                "{} credentials were given to the Runway adapter",
                credentials.provider()
            ))
        })
}

/// The fetched image as a data URI (`data:<type>;base64,…`), so that Runway never has to
/// reach the user's URL (its URL rules are stricter than ours, and what we checked is
/// what is used). An image whose URI would exceed [`MAX_DATA_URI_BYTES`] is re-encoded
/// as a JPEG of at most [`SHRUNK_MAX_SIDE`] pixels a side (quality 90, then lower);
/// only when even that is too big is it refused as `invalid_request`. The re-encoding
/// runs in an `images` turn.
async fn prompt_image(images: &ImageWork, image: &InputImage) -> Result<String, JobError> {
    // The type comes from the bytes, not from a field someone may have set by hand.
    let mime = match image::guess_format(&image.bytes) {
        Ok(format @ (ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::WebP)) => {
            fetch::mime_of(format)
        }
        _ => {
            return Err(JobError::permanent(
                ErrorCode::InvalidRequest,
                "the input image is not a PNG, JPEG or WebP image",
            ));
        }
    };
    if data_uri_len(mime, image.bytes.len()) <= MAX_DATA_URI_BYTES {
        return Ok(data_uri(mime, &image.bytes));
    }
    let shrunk = images
        .decode(image.bytes.clone(), |_, _, decoded| shrink(decoded))
        .await
        .map_err(|e| e.to_job_error())??;
    Ok(data_uri("image/jpeg", &shrunk))
}

fn data_uri_len(mime: &str, bytes: usize) -> usize {
    "data:;base64,".len() + mime.len() + bytes.div_ceil(3) * 4
}

fn data_uri(mime: &str, bytes: &[u8]) -> String {
    format!("data:{mime};base64,{}", BASE64.encode(bytes))
}

/// Re-encodes an image too big for a data URI (see [`prompt_image`]), scaled down to fit
/// [`SHRUNK_MAX_SIDE`] when larger. Transparency is dropped (JPEG has none).
fn shrink(image: DynamicImage) -> Result<Vec<u8>, JobError> {
    let (width, height) = (image.width(), image.height());
    let (to_width, to_height) = fit_within(width, height, SHRUNK_MAX_SIDE);
    let rgb = DynamicImage::ImageRgb8(fetch::scale_to_rgb8(
        image,
        (0, 0, width, height),
        to_width,
        to_height,
    ));
    for quality in [90, 80, 70] {
        let mut out = Vec::new();
        rgb.write_with_encoder(JpegEncoder::new_with_quality(&mut out, quality))
            .map_err(|e| internal(&format!("could not encode the input image: {e}")))?;
        if data_uri_len("image/jpeg", out.len()) <= MAX_DATA_URI_BYTES {
            return Ok(out);
        }
    }
    Err(JobError::permanent(
        ErrorCode::InvalidRequest,
        format!(
            "the input image is too large for Runway: even re-encoded at {SHRUNK_MAX_SIDE} pixels it exceeds \
             Runway's 5 MB limit for inline images"
        ),
    ))
}

/// `width` x `height` scaled down, aspect kept, to at most `max_side` pixels a side;
/// unchanged when it fits.
fn fit_within(width: u32, height: u32, max_side: u32) -> (u32, u32) {
    if width <= max_side && height <= max_side {
        return (width, height);
    }
    let ratio = f64::from(max_side) / f64::from(width.max(height));
    let scaled = |side: u32| ((f64::from(side) * ratio).round() as u32).clamp(1, max_side);
    (scaled(width), scaled(height))
}

/// `{"id": "<task uuid>"}` → the id, if it is a sane one.
fn task_id(json: &Value) -> Option<String> {
    let id = json.get("id")?.as_str()?.trim();
    (!id.is_empty() && id.len() <= 256 && !id.chars().any(char::is_control)).then(|| id.to_owned())
}

/// Maps a task (`GET /v1/tasks/{id}`, docs/provider-protocols.md §1.3).
fn task_status(json: &Value, secret: &str) -> Result<RemoteStatus, JobError> {
    let status = json
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or_default();
    match status {
        // THROTTLED: over the organization's concurrency limit, queued by Runway.
        "PENDING" | "THROTTLED" => Ok(RemoteStatus::Queued),
        "RUNNING" => Ok(RemoteStatus::Running {
            progress: json
                .get("progress")
                .and_then(Value::as_f64)
                .filter(|p| p.is_finite())
                .map(|p| p.clamp(0.0, 1.0)),
        }),
        "SUCCEEDED" => {
            let urls: Vec<String> = json
                .get("output")
                .and_then(Value::as_array)
                .map(|items| {
                    items
                        .iter()
                        .filter_map(Value::as_str)
                        .map(str::trim)
                        .filter(|u| !u.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            if urls.is_empty() {
                // Runway says fresh URLs come with a fresh GET; ask again.
                return Err(JobError::transient(
                    ErrorCode::ProviderUnavailable,
                    "Runway reports the task SUCCEEDED but lists no output URL",
                ));
            }
            Ok(RemoteStatus::Succeeded(VideoOutput::Urls(urls)))
        }
        "FAILED" => Ok(RemoteStatus::Failed(task_failure(
            json.get("failureCode").and_then(Value::as_str),
            json.get("failure").and_then(Value::as_str),
            secret,
        ))),
        "CANCELLED" => Ok(RemoteStatus::Cancelled),
        other => Err(JobError::transient(
            ErrorCode::ProviderUnavailable,
            format!(
                "Runway reports an unknown task status `{}`",
                http::sanitize(other, &[secret])
            ),
        )),
    }
}

/// Classifies a FAILED task by its `failureCode` (docs/provider-protocols.md §1.5):
///
/// * `SAFETY.*` (input and output moderation) and `INPUT_PREPROCESSING.SAFETY.*` →
///   `content_rejected`, permanent: Runway says not to retry the same input.
/// * `INTERNAL.BAD_OUTPUT.*` → `content_rejected`, permanent: Runway's quality check
///   refused the result ("may retry, not likely to succeed"; often text or graphics
///   in the input). Retrying would most likely fail again after another wait.
/// * `ASSET.INVALID` → `invalid_request`, permanent (fix the input).
/// * `INTERNAL` (and other `INTERNAL.*`), `INPUT_PREPROCESSING.INTERNAL`,
///   `THIRD_PARTY.UNAVAILABLE` (third-party sources only, UNVERIFIED) → transient.
/// * anything else, or no code → `provider_unavailable`, permanent, with Runway's text:
///   an unknown failure is not blindly retried (each try may be billed).
fn task_failure(code: Option<&str>, failure: Option<&str>, secret: &str) -> JobError {
    let code = code.map(str::trim).filter(|c| !c.is_empty());
    let text = failure
        .map(|f| http::sanitize(f, &[secret]))
        .filter(|f| !f.is_empty());
    let message = |what: &str| {
        let mut m = format!("Runway {what}");
        if let Some(code) = code {
            m.push_str(&format!(" ({})", http::sanitize(code, &[secret])));
        }
        if let Some(text) = &text {
            m.push_str(": ");
            m.push_str(text);
        }
        m
    };
    let Some(c) = code else {
        return JobError::permanent(ErrorCode::ProviderUnavailable, message("failed the task"));
    };
    let under = |prefix: &str| c == prefix || c.starts_with(&format!("{prefix}."));
    if under("SAFETY") || under("INPUT_PREPROCESSING.SAFETY") {
        JobError::permanent(
            ErrorCode::ContentRejected,
            message("moderation rejected the task"),
        )
    } else if under("INTERNAL.BAD_OUTPUT") {
        JobError::permanent(
            ErrorCode::ContentRejected,
            message("rejected the generated video"),
        )
    } else if under("ASSET.INVALID") {
        JobError::permanent(
            ErrorCode::InvalidRequest,
            message("could not use the input image"),
        )
    } else if under("INTERNAL")
        || under("INPUT_PREPROCESSING.INTERNAL")
        || under("THIRD_PARTY.UNAVAILABLE")
    {
        JobError::transient(
            ErrorCode::ProviderUnavailable,
            message("failed the task on its side"),
        )
    } else {
        JobError::permanent(ErrorCode::ProviderUnavailable, message("failed the task"))
    }
}

/// Classifies an HTTP error answer of the generation calls (docs/provider-protocols.md §1.6, §6):
///
/// * 400 whose text mentions credits ("You do not have enough credits…") →
///   `insufficient_credits`; a submit 400 whose first issue is on `model` →
///   `model_retired` (Runway reports unknown and retired models as validation
///   errors, and the model id came from our catalogue, so it is stale); any other 400
///   → `invalid_request`, with Runway's `error` and first issue;
/// * 401/403 → `credentials_invalid`;
/// * 404 on submit → `provider_unavailable`, permanent: the model is in the body, not
///   the path, so a 404 means the endpoint is not there (a wrong base URL), which no
///   retry and no other model fixes;
/// * 429 → retry after `retry-after-ms` / `Retry-After`, else 60 s (Runway's daily cap
///   and any header on it are UNVERIFIED);
/// * 408/5xx → transient; everything else as [`classify::by_status`].
fn classify_answer(call: Call, answer: &Answer, secret: &str) -> JobError {
    let json = answer.body.json();
    let status = answer.status.as_u16();
    let detail = json
        .as_ref()
        .and_then(error_detail)
        .map(|d| http::sanitize(&d, &[secret]));
    let with = |prefix: &str| http::with_detail(prefix.to_owned(), detail.clone());
    match status {
        400 => {
            let text = match json.as_ref().and_then(error_text) {
                Some(text) => text.to_owned(),
                None => String::from_utf8_lossy(&answer.body.bytes).into_owned(),
            };
            if text.to_lowercase().contains("credits") {
                JobError::permanent(
                    ErrorCode::InsufficientCredits,
                    with("Runway reports too few credits for this task (HTTP 400)"),
                )
            } else if call == Call::Submit && json.as_ref().is_some_and(first_issue_is_model) {
                JobError::permanent(
                    ErrorCode::ModelRetired,
                    with("Runway no longer accepts this model (HTTP 400)"),
                )
            } else {
                JobError::permanent(
                    ErrorCode::InvalidRequest,
                    with("Runway refused the request (HTTP 400)"),
                )
            }
        }
        404 if call == Call::Submit => JobError::permanent(
            ErrorCode::ProviderUnavailable,
            with("Runway has no such endpoint (HTTP 404); check providers.runway.base_url"),
        ),
        _ => classify::by_status(DISPLAY_NAME, answer.status, &answer.headers, detail),
    }
}

/// Runway's `error` text followed by the first validation issue
/// (`{"error":"Validation of body failed","issues":[{"path":["model"],"message":"…"}]}`).
fn error_detail(json: &Value) -> Option<String> {
    let error = error_text(json);
    let issue = json
        .get("issues")
        .and_then(Value::as_array)
        .and_then(|issues| issues.first())
        .and_then(|issue| {
            let message = issue.get("message").and_then(Value::as_str)?.trim();
            let path = issue_path(issue);
            Some(if path.is_empty() {
                message.to_owned()
            } else {
                format!("{path}: {message}")
            })
        });
    match (error, issue) {
        (Some(e), Some(i)) => Some(format!("{e}: {i}")),
        (Some(e), None) => Some(e.to_owned()),
        (None, i) => i,
    }
}

/// An issue's `path` (`["promptImage", 0, "uri"]`) as `promptImage.0.uri`.
fn issue_path(issue: &Value) -> String {
    issue
        .get("path")
        .and_then(Value::as_array)
        .map(|parts| {
            parts
                .iter()
                .filter_map(|p| match p {
                    Value::String(s) => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join(".")
        })
        .unwrap_or_default()
}

fn first_issue_is_model(json: &Value) -> bool {
    json.get("issues")
        .and_then(Value::as_array)
        .and_then(|issues| issues.first())
        .is_some_and(|issue| issue_path(issue) == "model")
}

/// The policy for an output URL (see [`RunwayProvider::download`]).
fn check_output_url(url: &Url, allow_private_networks: bool) -> Result<(), JobError> {
    net::check_url(url, allow_private_networks).map_err(|e| {
        JobError::permanent(
            ErrorCode::ProviderUnavailable,
            format!("Runway's output URL was refused: {e}"),
        )
    })?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(JobError::permanent(
            ErrorCode::ProviderUnavailable,
            "Runway's output URL was refused: it contains a user name or password",
        ));
    }
    Ok(())
}

fn download_error(host: &str, err: &reqwest::Error) -> JobError {
    if let Some(policy) = net::policy_violation(err) {
        return JobError::permanent(
            ErrorCode::ProviderUnavailable,
            format!("Runway's output URL was refused: {policy}"),
        );
    }
    JobError::transient(
        ErrorCode::ProviderUnavailable,
        format!(
            "the download of Runway's output from {host} failed: {}",
            http::describe_transport_error(err, DOWNLOAD_TIMEOUT)
        ),
    )
}

/// Saves a downloaded video into `dest`. The type check is lenient, because CDNs label
/// files loosely: any `video/*` is taken as is; `application/octet-stream` or no type at
/// all is taken when the bytes carry an MP4/ISO-BMFF `ftyp` box (bytes 4..8), and then
/// labelled `video/mp4`. Anything else (an HTML error page, JSON) is refused.
async fn save_video(
    host: &str,
    response: reqwest::Response,
    dest: &Path,
) -> Result<SavedVideo, JobError> {
    let declared = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|v| !v.is_empty());
    let saved = match http::save_limited(response, MAX_VIDEO_BYTES, dest).await {
        Ok(saved) => saved,
        Err(SaveError::TooLarge) => {
            return Err(JobError::permanent(
                ErrorCode::ProviderUnavailable,
                format!(
                    "Runway's output at {host} is larger than {} MiB",
                    MAX_VIDEO_BYTES >> 20
                ),
            ));
        }
        Err(SaveError::Read(e)) => return Err(download_error(host, &e)),
        Err(SaveError::Write(e)) => return Err(write_error(dest, &e)),
    };
    if saved.size == 0 {
        return Err(JobError::transient(
            ErrorCode::ProviderUnavailable,
            format!("Runway's output at {host} was empty"),
        ));
    }
    let content_type = match declared.as_deref() {
        Some(video) if video.starts_with("video/") => video.to_owned(),
        None | Some("application/octet-stream") if has_ftyp(&saved.head) => "video/mp4".to_owned(),
        other => {
            return Err(JobError::permanent(
                ErrorCode::ProviderUnavailable,
                format!(
                    "Runway's output at {host} is not a video (served as `{}`)",
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

/// Whether `bytes` start like an ISO base media file (MP4): a box size, then `ftyp`.
pub(crate) fn has_ftyp(bytes: &[u8]) -> bool {
    bytes.get(4..8) == Some(b"ftyp".as_slice())
}

/// Maps the answer of `GET /v1/organization`.
///
/// 200 with a JSON object is valid; 401 and 403 reject the key. Everything else gives no
/// verdict: 429 and 5xx are transient, and other 4xx (400 for a version header Runway no
/// longer accepts, 404 for a wrong base URL, …) say something about our request, not the
/// key. Marking a working key invalid would stop its owner's jobs, so only the statuses
/// that unambiguously mean "bad key" reject it.
fn classify(status: StatusCode, body: &Body, secret: &str) -> CredentialCheck {
    let json = body.json();
    let detail = json
        .as_ref()
        .and_then(error_text)
        .map(|text| http::sanitize(text, &[secret]));
    let code = status.as_u16();
    match code {
        200 if json.as_ref().is_some_and(Value::is_object) => CredentialCheck::Valid,
        200 => CredentialCheck::Unavailable {
            reason: "Runway answered the key check with an unexpected body (HTTP 200)".to_owned(),
        },
        401 | 403 => CredentialCheck::Rejected {
            reason: http::with_detail(format!("Runway rejected the key (HTTP {code})"), detail),
        },
        429 => CredentialCheck::Unavailable {
            reason: http::with_detail(
                "Runway is rate limiting requests (HTTP 429); try again later".to_owned(),
                detail,
            ),
        },
        _ => CredentialCheck::Unavailable {
            reason: http::with_detail(
                format!("Runway answered the key check with HTTP {code}"),
                detail,
            ),
        },
    }
}

/// Runway errors are `{"error": "…", …}` (docs/provider-protocols.md §1.6); tolerate `message` too.
fn error_text(json: &Value) -> Option<&str> {
    http::first_text([
        json.get("error").and_then(Value::as_str),
        json.get("error")
            .and_then(|e| e.get("message"))
            .and_then(Value::as_str),
        json.get("message").and_then(Value::as_str),
    ])
}
