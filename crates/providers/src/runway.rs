//! Runway's developer API (docs/provider-protocols.md §1): API-key credentials, checked with
//! `GET /v1/organization`; generation with `POST /v1/text_to_video` or
//! `/v1/image_to_video`, `GET /v1/tasks/{id}` and `DELETE /v1/tasks/{id}`; outputs
//! downloaded from Runway's signed CDN URLs.

use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;

use byok_core::{ErrorCode, JobError, Mode};
use reqwest::StatusCode;
use reqwest::header::ACCEPT;
use secrecy::ExposeSecret;
use serde_json::{Map, Value};
use url::Url;

use crate::classify::{self, Answer};
use crate::credentials::{self, api_key_of};
use crate::data_uri;
use crate::download::{Expired, OutputDownloads};
use crate::fetch::ImageWork;
use crate::generation::internal;
use crate::http::{self, Body};
use crate::pace::Outbound;
use crate::registry::{ProviderSpec, Setup};
use crate::{
    CancelOutcome, CredentialCheck, CredentialField, Credentials, CredentialsError, InputImage,
    ProviderDescriptor, ProviderId, RegistryError, RemoteStatus, SavedVideo, SubmitRequest,
    Submitted, VideoOutput, VideoProvider,
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
    /// Output downloads from Runway's signed CDN URLs, under the network policy of user URLs.
    downloads: OutputDownloads,
    /// Paced sends (`providers.runway.max_requests_per_second`); `downloads` waits on
    /// the same pace.
    outbound: Outbound,
    /// Where a large input image is re-encoded (see [`prompt_image`]).
    images: ImageWork,
}

/// The registry's entry for Runway.
pub(crate) const SPEC: ProviderSpec = ProviderSpec {
    id: ProviderId::RUNWAY,
    display_name: "Runway ML",
    description: "Runway's Gen-4 video models through the Runway developer API \
                  (api.dev.runwayml.com), billed to your Runway organization.",
    icon: "runway",
    credential_fields: &[
        CredentialField {
            name: Cow::Borrowed("api_key"),
            label: Cow::Borrowed("API key"),
            required: true,
            secret: true,
            kind: Cow::Borrowed("string"),
            description: Cow::Borrowed("A developer API key (key_…) from dev.runwayml.com."),
        },
        CredentialField {
            name: Cow::Borrowed("organization_id"),
            label: Cow::Borrowed("Organization ID"),
            required: false,
            secret: false,
            kind: Cow::Borrowed("string"),
            description: Cow::Borrowed(
                "Optional, for your reference; Runway keys already \
                          belong to one organization.",
            ),
        },
    ],
    catalogue: include_str!("../catalogue/runway.toml"),
    build: |setup| Ok(Arc::new(RunwayProvider::new(setup)?)),
};

impl RunwayProvider {
    pub(crate) fn new(setup: Setup<'_>) -> Result<Self, RegistryError> {
        // Signed URLs expire (24–48 h) and are then refused; a fresh poll of the task gives
        // fresh URLs, so a refused one is worth another round.
        let expired: Expired = |host, status| {
            format!(
                "Runway's output URL at {host} was refused (HTTP {status}); it has probably \
                 expired: poll the task again for fresh URLs"
            )
        };
        let downloads = OutputDownloads::new(&setup, DISPLAY_NAME, Some(expired))?;
        let Setup {
            options,
            descriptor,
            catalogue,
            http,
            request_timeout,
            pace,
            images,
            ..
        } = setup;
        Ok(RunwayProvider {
            descriptor,
            catalogue,
            base_url: http::parse_base_url(ProviderId::RUNWAY, &options.base_url)?,
            http,
            downloads,
            outbound: Outbound::new(pace, DISPLAY_NAME, request_timeout),
            images,
        })
    }
}

#[async_trait::async_trait]
impl VideoProvider for RunwayProvider {
    fn id(&self) -> ProviderId {
        ProviderId::RUNWAY
    }

    fn descriptor(&self) -> &ProviderDescriptor {
        &self.descriptor
    }

    fn catalogue(&self) -> &byok_core::Catalogue {
        &self.catalogue
    }

    fn parse_credentials(&self, raw: &Value) -> Result<Credentials, CredentialsError> {
        credentials::parse_api_key(ProviderId::RUNWAY, raw)
    }

    async fn check_credentials(&self, credentials: &Credentials) -> CredentialCheck {
        let (api_key, _) = match api_key_of(credentials, ProviderId::RUNWAY) {
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
        match answer.body.json().as_ref().and_then(http::job_id_of) {
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

    /// The first output URL, downloaded without any credential (the URL is signed).
    async fn fetch_output(
        &self,
        _credentials: &Credentials,
        output: &VideoOutput,
        dest: &Path,
    ) -> Result<SavedVideo, JobError> {
        self.downloads.fetch_output(output, dest).await
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
}

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

/// The API key of Runway credentials; other credentials are a caller bug.
fn api_key(credentials: &Credentials) -> Result<&secrecy::SecretString, JobError> {
    credentials::job_api_key(credentials, ProviderId::RUNWAY, DISPLAY_NAME).map(|(key, _)| key)
}

/// The fetched image as a data URI ([`data_uri::fitted`]), so that Runway never has to reach
/// the user's URL (its URL rules are stricter than ours, and what we checked is what is
/// used). An image whose URI would exceed [`MAX_DATA_URI_BYTES`] is re-encoded within
/// [`SHRUNK_MAX_SIDE`] pixels a side; only when even that is too big is it refused as
/// `invalid_request`.
async fn prompt_image(images: &ImageWork, image: &InputImage) -> Result<String, JobError> {
    data_uri::fitted(images, image, MAX_DATA_URI_BYTES, SHRUNK_MAX_SIDE)
        .await?
        .ok_or_else(|| {
            JobError::permanent(
                ErrorCode::InvalidRequest,
                format!(
                    "the input image is too large for Runway: even re-encoded at {SHRUNK_MAX_SIDE} pixels it exceeds \
                     Runway's 5 MB limit for inline images"
                ),
            )
        })
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
            Ok(RemoteStatus::Succeeded(
                VideoOutput::Urls(urls),
                byok_core::ProviderUsage::NONE,
            ))
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
        .map(http::dotted_path)
        .unwrap_or_default()
}

fn first_issue_is_model(json: &Value) -> bool {
    json.get("issues")
        .and_then(Value::as_array)
        .and_then(|issues| issues.first())
        .is_some_and(|issue| issue_path(issue) == "model")
}

/// Maps the answer of `GET /v1/organization`: 200 with a JSON object is valid; 401 and 403
/// reject the key; anything else gives no verdict ([`http::key_check_verdict`]; a 400 there
/// is typically a version header Runway no longer accepts).
fn classify(status: StatusCode, body: &Body, secret: &str) -> CredentialCheck {
    let json = body.json();
    let detail = json
        .as_ref()
        .and_then(error_text)
        .map(|text| http::sanitize(text, &[secret]));
    let accepted = (status == StatusCode::OK).then(|| json.as_ref().is_some_and(Value::is_object));
    http::key_check_verdict(
        &http::KeyCheckWords {
            provider: DISPLAY_NAME,
            credential: "key",
            after_throttle: "try again later",
        },
        status,
        accepted,
        detail,
    )
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
