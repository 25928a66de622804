//! Stability AI's hosted API (docs/provider-protocols.md §2): API-key credentials, checked with
//! `GET /v1/user/balance`; image-to-video with a multipart
//! `POST /v2beta/image-to-video` (the input image fitted to one of the three sizes the
//! model takes) and `GET /v2beta/image-to-video/result/{id}`, which returns the MP4
//! itself when done. There is no cancel.

use std::borrow::Cow;
use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use byok_core::{ErrorCode, JobError, ValidatedRequest};
use image::{DynamicImage, ImageFormat};
use reqwest::StatusCode;
use reqwest::header::ACCEPT;
use reqwest::multipart::{Form, Part};
use secrecy::ExposeSecret;
use serde_json::Value;
use url::Url;

use crate::classify::{self, Answer};
use crate::credentials::{self, api_key_of};
use crate::fetch::ImageWork;
use crate::generation::internal;
use crate::http::{self, Body, MAX_VIDEO_BYTES};
use crate::pace::Outbound;
use crate::registry::{ProviderSpec, Setup};
use crate::{
    CancelOutcome, CredentialCheck, CredentialField, Credentials, CredentialsError, InputImage,
    ProviderDescriptor, ProviderId, RegistryError, RemoteStatus, SavedVideo, SubmitRequest,
    Submitted, Video, VideoOutput, VideoProvider, fetch,
};

const DISPLAY_NAME: &str = "Stability AI";

/// The Stability AI adapter.
#[derive(Debug)]
pub(crate) struct StabilityProvider {
    descriptor: ProviderDescriptor,
    catalogue: byok_core::Catalogue,
    base_url: Url,
    http: reqwest::Client,
    request_timeout: Duration,
    /// Paced sends (`providers.stability.max_requests_per_second`).
    outbound: Outbound,
    /// Where input images are fitted (see [`fit_image`]).
    images: ImageWork,
}

/// The registry's entry for Stability AI.
pub(crate) const SPEC: ProviderSpec = ProviderSpec {
    id: ProviderId::STABILITY,
    display_name: "Stability AI",
    description: "Stability AI's hosted API (Stable Video Diffusion \
                  image-to-video), billed to your Stability credits.",
    icon: "stability",
    credential_fields: &[
        CredentialField {
            name: Cow::Borrowed("api_key"),
            label: Cow::Borrowed("API key"),
            required: true,
            secret: true,
            kind: Cow::Borrowed("string"),
            description: Cow::Borrowed(
                "An API key (sk-…) from platform.stability.ai/account/keys.",
            ),
        },
        CredentialField {
            name: Cow::Borrowed("organization_id"),
            label: Cow::Borrowed("Organization ID"),
            required: false,
            secret: false,
            kind: Cow::Borrowed("string"),
            description: Cow::Borrowed(
                "Optional (org-…): sent as the Organization header to \
                          bill an organization other than your default one.",
            ),
        },
    ],
    catalogue: include_str!("../catalogue/stability.toml"),
    build: |setup| Ok(Arc::new(StabilityProvider::new(setup)?)),
};

impl StabilityProvider {
    pub(crate) fn new(setup: Setup<'_>) -> Result<Self, RegistryError> {
        Ok(StabilityProvider {
            base_url: http::parse_base_url(ProviderId::STABILITY, &setup.options.base_url)?,
            descriptor: setup.descriptor,
            catalogue: setup.catalogue,
            http: setup.http,
            request_timeout: setup.request_timeout,
            outbound: Outbound::new(setup.pace, DISPLAY_NAME, setup.request_timeout),
            images: setup.images,
        })
    }
}

#[async_trait::async_trait]
impl VideoProvider for StabilityProvider {
    fn id(&self) -> ProviderId {
        ProviderId::STABILITY
    }

    fn descriptor(&self) -> &ProviderDescriptor {
        &self.descriptor
    }

    fn catalogue(&self) -> &byok_core::Catalogue {
        &self.catalogue
    }

    fn parse_credentials(&self, raw: &Value) -> Result<Credentials, CredentialsError> {
        credentials::parse_api_key(ProviderId::STABILITY, raw)
    }

    async fn check_credentials(&self, credentials: &Credentials) -> CredentialCheck {
        let (api_key, organization_id) = match api_key_of(credentials, ProviderId::STABILITY) {
            Ok(parts) => parts,
            Err(check) => return check,
        };
        let secret = api_key.expose_secret();
        let mut request = self
            .http
            .get(http::endpoint(&self.base_url, "/v1/user/balance"))
            .bearer_auth(secret)
            .header(ACCEPT, "application/json");
        if let Some(organization_id) = organization_id {
            request = request.header("Organization", organization_id);
        }
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
        let (secret, organization_id) = api_key(credentials)?;
        let secret = secret.expose_secret();
        let validated = request.request;
        let image = request.image.ok_or_else(|| {
            internal("an image-to-video job reached submit without its fetched image")
        })?;
        let target = self.target_size(validated)?;
        let fitted = fit_image(&self.images, image, target).await?;
        tracing::debug!(
            from_width = image.width,
            from_height = image.height,
            width = fitted.width,
            height = fitted.height,
            "fitted the input image for Stability AI"
        );
        let part = Part::bytes(fitted.png)
            .file_name("image.png")
            .mime_str("image/png")
            .map_err(|e| internal(&format!("multipart part: {e}")))?;
        let mut form = Form::new().part("image", part);
        // Omitted unless given: the provider picks a random seed (0 on the wire means
        // the same). cfg_scale and motion_bucket_id are left to the provider's defaults
        // (1.8 and 127): the neutral request has nothing that maps onto them.
        if let Some(seed) = validated.seed {
            form = form.text("seed", seed.to_string());
        }
        let mut request = self
            .http
            .post(http::endpoint(&self.base_url, "/v2beta/image-to-video"))
            .bearer_auth(secret)
            .header(ACCEPT, "application/json")
            .multipart(form);
        if let Some(organization_id) = organization_id {
            request = request.header("Organization", organization_id);
        }
        let answer = self.outbound.submit(request, &[secret]).await?;
        if !answer.status.is_success() {
            return Err(classify_answer(Call::Submit, &answer, secret));
        }
        // 2xx: the generation exists; an answer we cannot read is an unknown outcome.
        match answer.body.json().as_ref().and_then(http::job_id_of) {
            Some(id) => Ok(Submitted {
                provider_job_id: id,
            }),
            None => Err(JobError::submit_outcome_unknown(format!(
                "Stability AI accepted the submit (HTTP {}) but its answer carries no generation id; \
                 it is not re-sent, because it may have started a billable generation",
                answer.status.as_u16()
            ))),
        }
    }

    async fn poll(
        &self,
        credentials: &Credentials,
        provider_job_id: &str,
    ) -> Result<RemoteStatus, JobError> {
        let (secret, organization_id) = api_key(credentials)?;
        let secret = secret.expose_secret();
        let mut url = http::endpoint(&self.base_url, "/v2beta/image-to-video/result");
        if provider_job_id.is_empty() {
            return Err(internal("empty Stability AI generation id"));
        }
        url.path_segments_mut()
            .map_err(|()| internal("the Stability AI base URL cannot take a path"))?
            .push(provider_job_id);
        let mut request = self
            .http
            .get(url)
            .bearer_auth(secret)
            .header(ACCEPT, "video/*");
        if let Some(organization_id) = organization_id {
            request = request.header("Organization", organization_id);
        }
        let unreachable = |err: &reqwest::Error| {
            JobError::transient(
                ErrorCode::ProviderUnavailable,
                format!(
                    "Stability AI could not be reached: {}",
                    http::sanitize(
                        &http::describe_transport_error(err, self.request_timeout),
                        &[secret]
                    )
                ),
            )
        };
        let response = self
            .outbound
            .send(request)
            .await
            .map_err(|e| unreachable(&e))?;
        let status = response.status();
        match status.as_u16() {
            // In progress ({"id","status":"in-progress"}). Stability does not tell queued
            // from rendering, so this is Running with no progress.
            202 => Ok(RemoteStatus::Running { progress: None }),
            200 => read_result(response, secret).await.map(|video| {
                RemoteStatus::Succeeded(VideoOutput::Inline(video), byok_core::ProviderUsage::NONE)
            }),
            // "the generation either does not exist or has expired" (results are kept
            // 24 h), or it was started with another key (the user replaced theirs):
            // either way it can never be fetched.
            404 | 410 => Err(JobError::permanent(
                ErrorCode::ProviderUnavailable,
                format!(
                    "Stability AI no longer has this generation (HTTP {}): it expired or was started with another API key",
                    status.as_u16()
                ),
            )),
            _ => {
                let headers = response.headers().clone();
                let body = http::read_capped(response)
                    .await
                    .map_err(|e| unreachable(&e))?;
                Err(classify_answer(
                    Call::Poll,
                    &Answer {
                        status,
                        headers,
                        body,
                    },
                    secret,
                ))
            }
        }
    }

    async fn cancel(
        &self,
        _credentials: &Credentials,
        _provider_job_id: &str,
    ) -> Result<CancelOutcome, JobError> {
        // No cancel endpoint exists (docs/provider-protocols.md §2.8): the generation runs to
        // its end and the worker ignores the result.
        Ok(CancelOutcome::NotSupported)
    }

    async fn fetch_output(
        &self,
        _credentials: &Credentials,
        output: &VideoOutput,
        dest: &std::path::Path,
    ) -> Result<SavedVideo, JobError> {
        match output {
            // The poll already carried the video.
            VideoOutput::Inline(video) => video.save(dest).await,
            VideoOutput::Urls(_) | VideoOutput::Gcs(_) => Err(internal(
                "Stability AI delivers videos inline; a URL output was given to its adapter",
            )),
        }
    }
}

impl StabilityProvider {
    /// The size to fit the input image to: the request's format when it named an
    /// aspect ratio, else `None` (the nearest of the model's formats, decided from the
    /// image). The sizes come from the catalogue (`wire = "1024x576"`).
    fn target_size(&self, request: &ValidatedRequest) -> Result<Target, JobError> {
        if let Some(format) = &request.format {
            let size = parse_size(&format.wire).ok_or_else(|| {
                internal(&format!(
                    "the Stability format `{}` is not WIDTHxHEIGHT",
                    format.wire
                ))
            })?;
            return Ok(Target::Exactly(size));
        }
        let model = self.catalogue.model(&request.model).ok_or_else(|| {
            internal(&format!(
                "no Stability model `{}` in the catalogue",
                request.model
            ))
        })?;
        let sizes: Vec<(u32, u32)> = model
            .formats
            .iter()
            .filter_map(|f| parse_size(&f.wire))
            .collect();
        if sizes.is_empty() {
            return Err(internal(
                "the Stability catalogue has no WIDTHxHEIGHT format",
            ));
        }
        Ok(Target::Nearest(sizes))
    }
}

/// Where an input image is fitted to.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    /// The size the request asked for.
    Exactly((u32, u32)),
    /// The one of these whose aspect ratio is nearest the image's.
    Nearest(Vec<(u32, u32)>),
}

/// A fitted input image.
#[derive(Debug)]
pub(crate) struct Fitted {
    /// PNG bytes of exactly `width` x `height`.
    pub(crate) png: Vec<u8>,
    pub(crate) width: u32,
    pub(crate) height: u32,
}

/// Fits the input image to a size Stability accepts (exactly 1024x576, 576x1024 or
/// 768x768, docs/provider-protocols.md §2.2) instead of refusing every other image: scaled to
/// cover the target and center-cropped (the center cut out, then scaled: see
/// [`fetch::scale_to_rgb8`]), encoded as an 8-bit RGB PNG (transparency is dropped; the
/// model takes none). An image that does not decode, has more than
/// [`fetch::MAX_IMAGE_PIXELS`] pixels or exceeds the decoded-size budget is
/// `invalid_request`. The work runs in an `images` turn.
pub(crate) async fn fit_image(
    images: &ImageWork,
    image: &InputImage,
    target: Target,
) -> Result<Fitted, JobError> {
    if u64::from(image.width) * u64::from(image.height) > fetch::MAX_IMAGE_PIXELS {
        return Err(JobError::permanent(
            ErrorCode::InvalidRequest,
            format!(
                "the input image ({}x{}) has more than {} megapixels",
                image.width,
                image.height,
                fetch::MAX_IMAGE_PIXELS / 1_000_000
            ),
        ));
    }
    images
        .decode(image.bytes.clone(), move |_, _, decoded| {
            fit(decoded, target)
        })
        .await
        .map_err(|e| e.to_job_error())?
}

/// [`fit_image`] on the decoded image.
fn fit(decoded: DynamicImage, target: Target) -> Result<Fitted, JobError> {
    let (from_width, from_height) = (decoded.width(), decoded.height());
    let (width, height) = match target {
        Target::Exactly(size) => size,
        Target::Nearest(sizes) => nearest_size(from_width, from_height, &sizes),
    };
    let center = cover_crop(from_width, from_height, width, height);
    let rgb = DynamicImage::ImageRgb8(fetch::scale_to_rgb8(decoded, center, width, height));
    if (rgb.width(), rgb.height()) != (width, height) {
        return Err(internal(&format!(
            "fitting gave {}x{} instead of {width}x{height}",
            rgb.width(),
            rgb.height()
        )));
    }
    let mut png = Cursor::new(Vec::new());
    rgb.write_to(&mut png, ImageFormat::Png)
        .map_err(|e| internal(&format!("could not encode the fitted image: {e}")))?;
    Ok(Fitted {
        png: png.into_inner(),
        width,
        height,
    })
}

/// The center of a `width` x `height` image with the aspect ratio of `to_width` x
/// `to_height`, as `(x, y, width, height)`: what scaling to cover the target and cropping
/// the center keeps.
fn cover_crop(width: u32, height: u32, to_width: u32, to_height: u32) -> (u32, u32, u32, u32) {
    let (w, h) = (u64::from(width), u64::from(height));
    let (tw, th) = (u64::from(to_width), u64::from(to_height));
    let (cw, ch) = if w * th > h * tw {
        ((h * tw + th / 2) / th, h)
    } else {
        (w, (w * th + tw / 2) / tw)
    };
    let (cw, ch) = (cw.clamp(1, w), ch.clamp(1, h));
    // Each is at most `width` or `height`: the conversions cannot fail.
    let narrow = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
    (
        narrow((w - cw) / 2),
        narrow((h - ch) / 2),
        narrow(cw),
        narrow(ch),
    )
}

/// The size whose aspect ratio is nearest `width:height`, compared on a log scale
/// (so 2:1 is as far from 1:1 as 1:2 is); the first listed wins a tie.
fn nearest_size(width: u32, height: u32, sizes: &[(u32, u32)]) -> (u32, u32) {
    let log_ratio = |w: u32, h: u32| (f64::from(w) / f64::from(h)).ln();
    let own = log_ratio(width, height);
    let mut best = sizes[0];
    for &size in &sizes[1..] {
        if (log_ratio(size.0, size.1) - own).abs() < (log_ratio(best.0, best.1) - own).abs() {
            best = size;
        }
    }
    best
}

/// `1024x576` → (1024, 576).
fn parse_size(wire: &str) -> Option<(u32, u32)> {
    let (w, h) = wire.split_once('x')?;
    let (w, h) = (w.trim().parse().ok()?, h.trim().parse().ok()?);
    (w > 0 && h > 0).then_some((w, h))
}

/// Reads a finished result (HTTP 200). Asked for `video/*`, Stability sends the MP4
/// with `finish-reason` (`SUCCESS` or `CONTENT_FILTERED`) in a header. The JSON form
/// (`{"video":"<base64>","finish_reason":…}`), which it sends for
/// `accept: application/json`, is read too. `CONTENT_FILTERED` is a success with
/// blurred frames, and charged (docs/provider-protocols.md §6 rule 4): it becomes the video's
/// `note`, as does any other reason than `SUCCESS`.
async fn read_result(response: reqwest::Response, secret: &str) -> Result<Video, JobError> {
    let content_type = http::media_type(response.headers()).unwrap_or_default();
    let header_reason = response
        .headers()
        .get("finish-reason")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let transient = |what: String| JobError::transient(ErrorCode::ProviderUnavailable, what);
    let read_error = |e: &reqwest::Error| {
        transient(format!(
            "the result of Stability AI could not be read: {}",
            http::sanitize(
                &http::describe_transport_error(e, Duration::ZERO),
                &[secret]
            )
        ))
    };
    let too_large = || {
        JobError::permanent(
            ErrorCode::ProviderUnavailable,
            format!(
                "Stability AI's video is larger than {} MiB",
                MAX_VIDEO_BYTES >> 20
            ),
        )
    };
    let (bytes, reason) = if content_type == "application/json" {
        let limit = MAX_VIDEO_BYTES / 3 * 4 + 64 * 1024;
        let raw = http::read_limited(response, limit)
            .await
            .map_err(|e| read_error(&e))?
            .ok_or_else(too_large)?;
        let json: Value = serde_json::from_slice(&raw)
            .map_err(|_| transient("Stability AI's result is unreadable JSON".to_owned()))?;
        let video = json
            .get("video")
            .and_then(Value::as_str)
            .and_then(|b64| BASE64.decode(b64.trim()).ok())
            .ok_or_else(|| {
                transient("Stability AI's JSON result carries no readable video".to_owned())
            })?;
        let reason = json
            .get("finish_reason")
            .and_then(Value::as_str)
            .map(str::to_owned);
        (video, reason.or(header_reason))
    } else {
        let bytes = http::read_limited(response, MAX_VIDEO_BYTES)
            .await
            .map_err(|e| read_error(&e))?
            .ok_or_else(too_large)?;
        let is_video = content_type.starts_with("video/")
            || (matches!(content_type.as_str(), "" | "application/octet-stream")
                && http::has_ftyp(&bytes));
        if !is_video {
            return Err(JobError::permanent(
                ErrorCode::ProviderUnavailable,
                format!(
                    "Stability AI answered the result with `{}` instead of a video",
                    http::sanitize(&content_type, &[secret])
                ),
            ));
        }
        (bytes, header_reason)
    };
    if bytes.is_empty() {
        return Err(transient("Stability AI's video was empty".to_owned()));
    }
    let note = reason
        .map(|r| http::sanitize(r.trim(), &[secret]))
        .filter(|r| !r.is_empty() && !r.eq_ignore_ascii_case("SUCCESS"));
    Ok(Video {
        bytes,
        content_type: "video/mp4".to_owned(),
        note,
    })
}

/// Which call an HTTP answer belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Submit,
    Poll,
}

/// The API key and organization of Stability credentials; other credentials are a
/// caller bug.
fn api_key(credentials: &Credentials) -> Result<(&secrecy::SecretString, Option<&str>), JobError> {
    credentials::job_api_key(credentials, ProviderId::STABILITY, DISPLAY_NAME)
}

/// Classifies an HTTP error answer of the generation calls (docs/provider-protocols.md §2.4, §2.5,
/// §6): 400/413/422 `invalid_request` (with `errors[]`); 401 `credentials_invalid`;
/// 402 `insufficient_credits`; 403 with `name == "content_moderation"`
/// `content_rejected`, any other 403 `credentials_invalid`; 404/410 on submit
/// `model_retired` (Stability lists its video API as discontinued, §2.6, and a
/// retired endpoint answers so); 429 retry after the header if one is sent, else the
/// documented 60 s lockout; 408/5xx transient; the rest as [`classify::by_status`].
fn classify_answer(call: Call, answer: &Answer, secret: &str) -> JobError {
    let json = answer.body.json();
    let detail = json
        .as_ref()
        .and_then(error_text)
        .map(|d| http::sanitize(&d, &[secret]));
    let status = answer.status.as_u16();
    let name = json
        .as_ref()
        .and_then(|j| j.get("name"))
        .and_then(Value::as_str);
    match status {
        403 if name == Some("content_moderation") => JobError::permanent(
            ErrorCode::ContentRejected,
            http::with_detail(
                "Stability AI's moderation refused the request (HTTP 403)".to_owned(),
                detail,
            ),
        ),
        // On a poll, 404/410 are answered before this; anywhere else they are not a model.
        404 | 410 if call != Call::Submit => JobError::permanent(
            ErrorCode::ProviderUnavailable,
            http::with_detail(format!("Stability AI answered HTTP {status}"), detail),
        ),
        _ => classify::by_status(DISPLAY_NAME, answer.status, &answer.headers, detail),
    }
}

/// Maps the answer of `GET /v1/user/balance`: 200 `{"credits": <number>}` is valid, 401
/// and 403 reject the key (or the organization it was sent with); anything else gives no
/// verdict ([`http::key_check_verdict`]).
fn classify(status: StatusCode, body: &Body, secret: &str) -> CredentialCheck {
    let json = body.json();
    let detail = json
        .as_ref()
        .and_then(error_text)
        .map(|text| http::sanitize(&text, &[secret]));
    let has_credits = json
        .as_ref()
        .and_then(|j| j.get("credits"))
        .is_some_and(Value::is_number);
    http::key_check_verdict(
        &http::KeyCheckWords {
            provider: DISPLAY_NAME,
            credential: "key",
            // Stability documents a 60-second lockout after its rate limit.
            after_throttle: "try again in a minute",
        },
        status,
        (status == StatusCode::OK).then_some(has_credits),
        detail,
    )
}

/// Stability errors: v2beta `{"name","errors":[…]}`, v1 `{"name","message"}`
/// (docs/provider-protocols.md §2.4). Prefer the human text, fall back to the name.
fn error_text(json: &Value) -> Option<String> {
    let errors = json
        .get("errors")
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(Value::as_str)
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .take(5)
                .collect::<Vec<_>>()
                .join("; ")
        })
        .filter(|s| !s.is_empty());
    errors.or_else(|| {
        http::first_text([
            json.get("message").and_then(Value::as_str),
            json.get("name").and_then(Value::as_str),
        ])
        .map(str::to_owned)
    })
}
