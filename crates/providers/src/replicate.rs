//! Replicate's predictions API (docs/provider-protocols.md §9): an API token, checked with
//! `GET /v1/account`; predictions created with `POST /v1/models/{owner}/{name}/predictions`
//! (official models) or `POST /v1/predictions` naming a `version` (community models), followed
//! with `GET /v1/predictions/{id}` and cancelled with `POST /v1/predictions/{id}/cancel`. Input
//! images go inline as data URLs up to 256 KB and through the files API (`POST /v1/files`) above
//! that, as Replicate advises. Outputs are downloaded from the URLs the prediction lists, with
//! the network policy of user URLs; Replicate deletes them an hour after the prediction ends, so
//! the worker copies them at once.
//!
//! Which route and input fields a model takes is data: the catalogue's `[models.wire]`
//! (see `catalogue/replicate.toml`), checked when the adapter is built.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use byok_core::{ErrorCode, JobError, Mode, ModelSpec, Requirement, ValidatedRequest};
use image::ImageFormat;
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CONTENT_LENGTH};
use reqwest::multipart::{Form, Part};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{Map, Value};
use url::Url;
use zeroize::Zeroizing;

use crate::classify::{self, Answer, DEFAULT_THROTTLE_WAIT, MAX_THROTTLE_WAIT};
use crate::credentials::{self, api_key_of};
use crate::data_uri;
use crate::download::{Expired, OutputDownloads};
use crate::generation::internal;
use crate::http::{self, Body};
use crate::pace::Outbound;
use crate::registry::{ProviderSpec, Setup};
use crate::{
    CancelOutcome, CredentialCheck, CredentialField, Credentials, CredentialsError, InputImage,
    ProviderDescriptor, ProviderId, RegistryError, RemoteStatus, SavedVideo, SubmitRequest,
    Submitted, VideoOutput, VideoProvider,
};

const DISPLAY_NAME: &str = "Replicate";

/// The largest input file sent inline as a data URL. Replicate's API reference: "Use a data
/// URL when you have a small file <= 256kb … Use an HTTP URL when you have a large file >
/// 256kb" (docs/provider-protocols.md §9.2); larger images are uploaded with the files API.
const MAX_DATA_URL_FILE_BYTES: usize = 256 * 1024;

/// The most bytes read of a successful answer. A prediction echoes its `input`, where an inline
/// image is a data URL of up to ~350 KB, and carries what the model printed (`logs`): far more
/// than the [`http::MAX_BODY_BYTES`] an error answer is read up to. Cut short, a create's answer
/// would lose the id of a prediction that exists (and bills), and every poll of it would be
/// unreadable.
const MAX_ANSWER_BYTES: usize = 8 * 1024 * 1024;

/// How much of a prediction's `logs` is searched for a progress bar (the end of it: logs of a
/// long prediction can be large, and only the latest bar matters).
const PROGRESS_LOG_TAIL: usize = 4096;

/// Texts of a failed prediction that mean moderation refused the input or the output
/// (docs/provider-protocols.md §9.4): Seedance's "The input or output was flagged as sensitive
/// (E005)", the NSFW checkers of image and video models.
const MODERATION_MARKERS: &[&str] = &[
    "flagged as sensitive",
    "(e005)",
    "nsfw",
    "content policy",
    "safety",
    "moderation",
];

/// Texts of a failed prediction that Replicate attributes to its own infrastructure and
/// tells the caller to retry: "Prediction interrupted; please retry (code: PA)" and
/// "Director: unexpected error handling prediction (E9828)" (docs/provider-protocols.md §9.4).
const INFRASTRUCTURE_MARKERS: &[&str] = &[
    "prediction interrupted",
    "(code: pa)",
    "unexpected error handling prediction",
    "(e9828)",
];

/// The Replicate adapter.
#[derive(Debug)]
pub(crate) struct ReplicateProvider {
    descriptor: ProviderDescriptor,
    catalogue: byok_core::Catalogue,
    base_url: Url,
    http: reqwest::Client,
    /// Output downloads from Replicate's delivery URLs, under the network policy of user URLs.
    downloads: OutputDownloads,
    /// Paced sends (`providers.replicate.max_requests_per_second`); `downloads` waits on
    /// the same pace.
    outbound: Outbound,
    /// `request_timeout`, quoted in the messages of requests that got no answer.
    request_timeout: Duration,
    /// How each model of the catalogue is addressed, by model id.
    models: HashMap<String, ModelWire>,
}

/// The registry's entry for Replicate.
pub(crate) const SPEC: ProviderSpec = ProviderSpec {
    id: ProviderId::REPLICATE,
    display_name: "Replicate",
    description: "Video models of several vendors (ByteDance Seedance, Stable Video Diffusion, …) \
                  through Replicate's predictions API (api.replicate.com), billed to your \
                  Replicate account.",
    icon: "replicate",
    credential_fields: &[CredentialField {
        name: Cow::Borrowed("api_key"),
        label: Cow::Borrowed("API token"),
        required: true,
        secret: true,
        kind: Cow::Borrowed("string"),
        description: Cow::Borrowed(
            "A Replicate API token (r8_…) from replicate.com/account/api-tokens.",
        ),
    }],
    catalogue: include_str!("../catalogue/replicate.toml"),
    build: |setup| Ok(Arc::new(ReplicateProvider::new(setup)?)),
};

impl ReplicateProvider {
    pub(crate) fn new(setup: Setup<'_>) -> Result<Self, RegistryError> {
        // Replicate deletes outputs an hour after the prediction ends. A refused URL is worth
        // another round: the next poll says whether the data was removed (then the job fails
        // for good) or lists the output again.
        let expired: Expired = |host, status| {
            format!(
                "Replicate's output at {host} was refused (HTTP {status}); it may have \
                 been deleted (Replicate keeps outputs for an hour)"
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
            ..
        } = setup;
        let models = catalogue
            .models
            .iter()
            .map(|model| {
                ModelWire::of(model)
                    .map(|wire| (model.id.clone(), wire))
                    .map_err(|reason| RegistryError::BadCatalogue {
                        provider: ProviderId::REPLICATE,
                        reason: format!("model `{}`: {reason}", model.id),
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(ReplicateProvider {
            descriptor,
            catalogue,
            base_url: http::parse_base_url(ProviderId::REPLICATE, &options.base_url)?,
            http,
            downloads,
            outbound: Outbound::new(pace, DISPLAY_NAME, request_timeout),
            request_timeout,
            models,
        })
    }
}

#[async_trait::async_trait]
impl VideoProvider for ReplicateProvider {
    fn id(&self) -> ProviderId {
        ProviderId::REPLICATE
    }

    fn descriptor(&self) -> &ProviderDescriptor {
        &self.descriptor
    }

    fn catalogue(&self) -> &byok_core::Catalogue {
        &self.catalogue
    }

    fn parse_credentials(&self, raw: &Value) -> Result<Credentials, CredentialsError> {
        credentials::parse_api_key_only(ProviderId::REPLICATE, raw)
    }

    async fn check_credentials(&self, credentials: &Credentials) -> CredentialCheck {
        let (api_key, _) = match api_key_of(credentials, ProviderId::REPLICATE) {
            Ok(parts) => parts,
            Err(check) => return check,
        };
        let secret = api_key.expose_secret();
        let request = self
            .http
            .get(http::endpoint(&self.base_url, "/v1/account"))
            .bearer_auth(secret)
            .header(ACCEPT, "application/json");
        match self.outbound.check(request, &[secret]).await {
            Ok((status, body)) => classify_check(status, &body, secret),
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
        let wire = self.models.get(&validated.model).ok_or_else(|| {
            internal(&format!(
                "model `{}` reached submit without its wire description",
                validated.model
            ))
        })?;
        let image = match validated.mode {
            Mode::TextToVideo => None,
            Mode::ImageToVideo => {
                let image = request.image.ok_or_else(|| {
                    internal("an image-to-video job reached submit without its fetched image")
                })?;
                Some(self.image_input(secret, image).await?)
            }
        };
        let mut body = Map::new();
        if let Some(version) = &wire.version {
            body.insert("version".into(), version.clone().into());
        }
        body.insert("input".into(), Value::Object(wire.input(validated, image)));
        // No `Prefer: wait`: the worker polls, and a create held open for up to a minute
        // would only widen the window in which its answer can be lost.
        let request = self
            .http
            .post(self.create_url(wire)?)
            .bearer_auth(secret)
            .header(ACCEPT, "application/json")
            .json(&Value::Object(body));
        let answer = self.send(request, secret, Call::Submit).await?;
        if !answer.status.is_success() {
            return Err(classify_answer(Call::Submit, &answer, secret, Some(wire)));
        }
        // The prediction exists (and bills) once Replicate said 2xx: an answer we cannot read
        // is an unknown outcome, never a reason to create it again. The id becomes a path
        // segment of every later call, so it must be a plain one (Replicate's are lowercase
        // base32): `..` would turn a poll into a listing of the account's predictions.
        let id = answer
            .body
            .json()
            .as_ref()
            .and_then(http::job_id_of)
            .filter(|id| http::plain_segment(id, false));
        match id {
            Some(id) => Ok(Submitted {
                provider_job_id: id,
            }),
            None => Err(JobError::submit_outcome_unknown(format!(
                "Replicate accepted the prediction (HTTP {}) but its answer carries no prediction \
                 id; it is not re-sent, because it may have created a billable prediction",
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
            .get(self.prediction_url(provider_job_id, None)?)
            .bearer_auth(secret)
            .header(ACCEPT, "application/json");
        let answer = self.send(request, secret, Call::Poll).await?;
        match answer.status.as_u16() {
            200..=299 => {}
            // Another account's prediction, or one Replicate no longer keeps: nothing to wait for.
            404 => {
                return Err(JobError::permanent(
                    ErrorCode::ProviderUnavailable,
                    "Replicate does not know this prediction (HTTP 404)",
                ));
            }
            _ => return Err(classify_answer(Call::Poll, &answer, secret, None)),
        }
        let json = answer.body.json().filter(Value::is_object).ok_or_else(|| {
            JobError::transient(
                ErrorCode::ProviderUnavailable,
                "Replicate answered the prediction poll with an unreadable body",
            )
        })?;
        prediction_status(&json, secret)
    }

    async fn cancel(
        &self,
        credentials: &Credentials,
        provider_job_id: &str,
    ) -> Result<CancelOutcome, JobError> {
        let secret = api_key(credentials)?.expose_secret();
        let request = self
            .http
            .post(self.prediction_url(provider_job_id, Some("cancel"))?)
            .bearer_auth(secret)
            .header(ACCEPT, "application/json")
            // An empty body, declared (`Content-Length: 0`), as the official client sends its
            // cancel: some front ends refuse a POST that declares no length.
            .header(CONTENT_LENGTH, "0");
        let answer = self.send(request, secret, Call::Cancel).await?;
        match answer.status.as_u16() {
            // The answer is the prediction: `canceled`, or already ended another way, in which
            // case nothing runs (or bills) any more either, which is what a cancel is for.
            200..=299 => Ok(CancelOutcome::Cancelled),
            // Unknown to Replicate: it cannot run. A second cancel of a job may land here.
            404 => Ok(CancelOutcome::Cancelled),
            _ => Err(classify_answer(Call::Cancel, &answer, secret, None)),
        }
    }

    /// The first output URL, downloaded without the token (Replicate's delivery URLs need
    /// none).
    async fn fetch_output(
        &self,
        _credentials: &Credentials,
        output: &VideoOutput,
        dest: &Path,
    ) -> Result<SavedVideo, JobError> {
        self.downloads.fetch_output(output, dest).await
    }
}

impl ReplicateProvider {
    /// Sends `request` (paced) and reads its answer: a success up to [`MAX_ANSWER_BYTES`], an
    /// error up to [`http::MAX_BODY_BYTES`]. A request that got no answer is transient when it
    /// never left (DNS, connect, TLS) or is safe to repeat; a create that left and lost its
    /// answer (a timeout, a cut connection, a body that cannot be read) is
    /// `submit_outcome_unknown`: the prediction may exist and bill, and Replicate has no
    /// idempotency key, so it is never re-sent. So is a create answered 504: a gateway in front
    /// of Replicate gave up waiting, which says nothing about whether the prediction was
    /// created behind it.
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        secret: &str,
        call: Call,
    ) -> Result<Answer, JobError> {
        let failed = |err: &reqwest::Error| {
            let what = http::sanitize(
                &http::describe_transport_error(err, self.request_timeout),
                &[secret],
            );
            if call == Call::Submit && !err.is_connect() {
                JobError::submit_outcome_unknown(format!(
                    "the submit to {DISPLAY_NAME} was sent but its answer was lost ({what}); it \
                     is not re-sent, because it may have created a billable job"
                ))
            } else {
                JobError::transient(
                    ErrorCode::ProviderUnavailable,
                    format!("{DISPLAY_NAME} could not be reached: {what}"),
                )
            }
        };
        let response = self.outbound.send(request).await.map_err(|e| failed(&e))?;
        let status = response.status();
        if call == Call::Submit && status == StatusCode::GATEWAY_TIMEOUT {
            return Err(JobError::submit_outcome_unknown(format!(
                "the submit to {DISPLAY_NAME} was answered 504 Gateway Timeout: a gateway gave \
                 up waiting for it, so the prediction may exist; it is not re-sent, because it \
                 may have created a billable prediction"
            )));
        }
        let headers = response.headers().clone();
        let body = if status.is_success() {
            match http::read_limited(response, MAX_ANSWER_BYTES).await {
                Ok(Some(bytes)) => Body {
                    bytes: Zeroizing::new(bytes),
                    truncated: false,
                },
                Ok(None) => Body {
                    bytes: Zeroizing::new(Vec::new()),
                    truncated: true,
                },
                Err(e) => return Err(failed(&e)),
            }
        } else {
            http::read_capped(response).await.map_err(|e| failed(&e))?
        };
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    /// The create route of `wire`'s model: `{base}/v1/predictions` for a version,
    /// `{base}/v1/models/{owner}/{name}/predictions` for an official model (each part one
    /// percent-encoded segment).
    fn create_url(&self, wire: &ModelWire) -> Result<Url, JobError> {
        if wire.version.is_some() {
            return Ok(http::endpoint(&self.base_url, "/v1/predictions"));
        }
        let (owner, name) = wire
            .model
            .split_once('/')
            .ok_or_else(|| internal("a model path without `/` passed the catalogue check"))?;
        let mut url = http::endpoint(&self.base_url, "/v1/models");
        url.path_segments_mut()
            .map_err(|()| internal("the Replicate base URL cannot take a path"))?
            .push(owner)
            .push(name)
            .push("predictions");
        Ok(url)
    }

    /// `{base}/v1/predictions/{id}` (and `/{action}`), the id as one percent-encoded path
    /// segment (it came from a provider answer and must not be able to change the path).
    fn prediction_url(&self, id: &str, action: Option<&str>) -> Result<Url, JobError> {
        if id.is_empty() {
            return Err(internal("empty Replicate prediction id"));
        }
        // A path segment `.` or `..` would be dropped (the URL would name the predictions
        // list, or the cancel of another id), not encoded.
        if matches!(id, "." | "..") {
            return Err(JobError::permanent(
                ErrorCode::ProviderUnavailable,
                "the stored Replicate prediction id is not a prediction id",
            ));
        }
        let mut url = http::endpoint(&self.base_url, "/v1/predictions");
        {
            let mut segments = url
                .path_segments_mut()
                .map_err(|()| internal("the Replicate base URL cannot take a path"))?;
            segments.push(id);
            if let Some(action) = action {
                segments.push(action);
            }
        }
        Ok(url)
    }

    /// The input image as Replicate takes it: a data URL when it is small enough (Replicate
    /// stores nothing), else the URL of a file uploaded to the user's account. Either way
    /// Replicate never reaches the user's own URL: what we checked is what is used.
    async fn image_input(&self, secret: &str, image: &InputImage) -> Result<String, JobError> {
        // The type comes from the bytes, not from a field someone may have set by hand.
        let (mime, extension) = match image::guess_format(&image.bytes) {
            Ok(ImageFormat::Png) => ("image/png", "png"),
            Ok(ImageFormat::Jpeg) => ("image/jpeg", "jpg"),
            Ok(ImageFormat::WebP) => ("image/webp", "webp"),
            _ => {
                return Err(JobError::permanent(
                    ErrorCode::InvalidRequest,
                    "the input image is not a PNG, JPEG or WebP image",
                ));
            }
        };
        if image.bytes.len() <= MAX_DATA_URL_FILE_BYTES {
            return Ok(data_uri::data_uri(mime, &image.bytes));
        }
        self.upload(secret, &image.bytes, mime, extension).await
    }

    /// Uploads an input file (`POST /v1/files`, multipart with the file as `content`, as both
    /// official clients send it) and returns its `urls.get`. An upload creates no prediction
    /// and bills nothing, so it is sent as a repeatable call: an answer lost in transit costs
    /// at most a second stored file, which Replicate expires.
    async fn upload(
        &self,
        secret: &str,
        bytes: &[u8],
        mime: &str,
        extension: &str,
    ) -> Result<String, JobError> {
        let part = Part::bytes(bytes.to_vec())
            .file_name(format!("input.{extension}"))
            .mime_str(mime)
            .map_err(|e| internal(&format!("multipart part: {e}")))?;
        let request = self
            .http
            .post(http::endpoint(&self.base_url, "/v1/files"))
            .bearer_auth(secret)
            .header(ACCEPT, "application/json")
            .multipart(Form::new().part("content", part));
        let answer = self.send(request, secret, Call::Upload).await?;
        if !answer.status.is_success() {
            return Err(classify_answer(Call::Upload, &answer, secret, None));
        }
        answer
            .body
            .json()
            .as_ref()
            .and_then(file_url)
            .ok_or_else(|| {
                JobError::transient(
                    ErrorCode::ProviderUnavailable,
                    format!(
                        "Replicate stored the input image (HTTP {}) but its answer carries no \
                         usable `urls.get`",
                        answer.status.as_u16()
                    ),
                )
            })
    }
}

// ---------------------------------------------------------------------------------------
// The catalogue's wire data
// ---------------------------------------------------------------------------------------

/// How the adapter addresses one model: `[models.wire]` of the catalogue.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelWire {
    /// `owner/name`.
    model: String,
    /// A version id (64 lowercase hex): the versioned create; absent: the official-model route.
    #[serde(default)]
    version: Option<String>,
    /// Which input field takes each neutral value.
    #[serde(default)]
    inputs: InputFields,
    /// Inputs sent as they are with every prediction of the model.
    #[serde(default)]
    extra_inputs: Map<String, Value>,
}

/// The model's input field for each neutral value it takes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct InputFields {
    #[serde(default)]
    prompt: Option<String>,
    #[serde(default)]
    negative_prompt: Option<String>,
    /// The first frame: a data URL or an uploaded file's URL.
    #[serde(default)]
    image: Option<String>,
    /// Whole seconds, an integer.
    #[serde(default)]
    duration: Option<String>,
    /// The chosen format's `wire`.
    #[serde(default)]
    format: Option<String>,
    /// The chosen format's `resolution`.
    #[serde(default)]
    resolution: Option<String>,
    #[serde(default)]
    seed: Option<String>,
}

impl InputFields {
    /// (the key under `inputs`, the neutral request's field, the model's input field).
    fn named(&self) -> [(&'static str, &'static str, Option<&str>); 7] {
        [
            ("prompt", "prompt", self.prompt.as_deref()),
            (
                "negative_prompt",
                "negative_prompt",
                self.negative_prompt.as_deref(),
            ),
            ("image", "image_url", self.image.as_deref()),
            ("duration", "duration_seconds", self.duration.as_deref()),
            ("format", "aspect_ratio", self.format.as_deref()),
            ("resolution", "resolution", self.resolution.as_deref()),
            ("seed", "seed", self.seed.as_deref()),
        ]
    }

    /// The neutral request's field that input `field` was filled from.
    fn neutral_of(&self, field: &str) -> Option<&'static str> {
        self.named()
            .into_iter()
            .find(|(_, _, input)| *input == Some(field))
            .map(|(_, neutral, _)| neutral)
    }
}

impl ModelWire {
    /// The wire data of `model`, checked against what the model's catalogue entry lets a
    /// request carry. The error names the field.
    fn of(model: &ModelSpec) -> Result<ModelWire, String> {
        let wire: ModelWire = serde_json::from_value(Value::Object(model.wire.clone()))
            .map_err(|e| format!("wire: {e}"))?;
        wire.check(model)?;
        Ok(wire)
    }

    fn check(&self, model: &ModelSpec) -> Result<(), String> {
        if !is_model_path(&self.model) {
            return Err(format!(
                "wire.model: `{}` is not a Replicate model name `owner/name`",
                http::sanitize(&self.model, &[])
            ));
        }
        if let Some(version) = &self.version
            && !is_version_id(version)
        {
            return Err("wire.version: must be a version id, 64 lowercase hex characters".into());
        }
        let mut seen: Vec<&str> = Vec::new();
        for (key, _, field) in self.inputs.named() {
            let Some(field) = field else { continue };
            if !is_input_name(field) {
                return Err(format!(
                    "wire.inputs.{key}: `{}` is not an input field name",
                    http::sanitize(field, &[])
                ));
            }
            if seen.contains(&field) {
                return Err(format!(
                    "wire.inputs.{key}: input `{field}` is already mapped"
                ));
            }
            seen.push(field);
        }
        for name in self.extra_inputs.keys() {
            if !is_input_name(name) {
                return Err(format!(
                    "wire.extra_inputs: `{}` is not an input field name",
                    http::sanitize(name, &[])
                ));
            }
            if seen.contains(&name.as_str()) {
                return Err(format!(
                    "wire.extra_inputs.{name}: the input is also mapped in wire.inputs"
                ));
            }
        }
        // Whatever the catalogue lets a request carry needs a field to go to, or it would be
        // dropped without a word.
        let takes_prompt = model.modes.iter().any(|mode| {
            let rule = match mode {
                Mode::TextToVideo => model.prompt.text_to_video,
                Mode::ImageToVideo => model.prompt.image_to_video,
            };
            rule != Requirement::Unsupported
        });
        let distinct = |values: Vec<Option<&str>>| {
            let mut values = values;
            values.sort_unstable();
            values.dedup();
            values.len()
        };
        let needs = [
            (takes_prompt, "prompt", "the model takes a prompt"),
            (
                model.modes.contains(&Mode::ImageToVideo),
                "image",
                "the model makes video from an image",
            ),
            (
                !model.durations.is_empty(),
                "duration",
                "the model has durations to choose",
            ),
            (
                model.negative_prompt,
                "negative_prompt",
                "the model takes a negative prompt",
            ),
            (model.seed_max.is_some(), "seed", "the model takes a seed"),
            (
                distinct(
                    model
                        .formats
                        .iter()
                        .map(|f| Some(f.wire.as_str()))
                        .collect(),
                ) > 1,
                "format",
                "the model has formats to choose",
            ),
            (
                distinct(
                    model
                        .formats
                        .iter()
                        .map(|f| f.resolution.as_deref())
                        .collect(),
                ) > 1,
                "resolution",
                "the model has resolutions to choose",
            ),
        ];
        for (needed, key, why) in needs {
            let mapped = self
                .inputs
                .named()
                .into_iter()
                .any(|(k, _, field)| k == key && field.is_some());
            if needed && !mapped {
                return Err(format!("wire.inputs.{key} is missing: {why}"));
            }
        }
        Ok(())
    }

    /// The prediction's `input` for `validated`, with `image` (a data URL or file URL) for
    /// image-to-video. Numbers are JSON integers, as the models' schemas declare them.
    fn input(&self, validated: &ValidatedRequest, image: Option<String>) -> Map<String, Value> {
        let mut input = self.extra_inputs.clone();
        let fields = &self.inputs;
        let mut put = |field: &Option<String>, value: Option<Value>| {
            if let (Some(field), Some(value)) = (field, value) {
                input.insert(field.clone(), value);
            }
        };
        put(&fields.prompt, validated.prompt.clone().map(Value::from));
        put(
            &fields.negative_prompt,
            validated.negative_prompt.clone().map(Value::from),
        );
        put(&fields.image, image.map(Value::from));
        put(
            &fields.duration,
            validated.duration_seconds.map(Value::from),
        );
        if let Some(format) = &validated.format {
            put(&fields.format, Some(Value::from(format.wire.clone())));
            put(
                &fields.resolution,
                format.resolution.clone().map(Value::from),
            );
        }
        put(&fields.seed, validated.seed.map(Value::from));
        input
    }
}

/// `owner/name`, each part a Replicate account or model name.
fn is_model_path(path: &str) -> bool {
    let part = |s: &str| {
        !s.is_empty()
            && s.len() <= 100
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && !s.starts_with('.')
    };
    matches!(path.split_once('/'), Some((owner, name)) if part(owner) && part(name))
}

fn is_version_id(version: &str) -> bool {
    version.len() == 64
        && version
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, 'a'..='f'))
}

fn is_input_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

// ---------------------------------------------------------------------------------------
// Answers
// ---------------------------------------------------------------------------------------

/// Which call an HTTP answer belongs to (a 404 or a 422 means different things).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Submit,
    Upload,
    Poll,
    Cancel,
}

/// `urls.get` of an uploaded file, if it is an http(s) URL of sane length.
fn file_url(json: &Value) -> Option<String> {
    let raw = json.get("urls")?.get("get")?.as_str()?.trim();
    let url = Url::parse(raw).ok()?;
    (matches!(url.scheme(), "https" | "http") && raw.len() <= 4096).then(|| raw.to_owned())
}

/// Maps a prediction (`GET /v1/predictions/{id}`, docs/provider-protocols.md §9.3).
fn prediction_status(json: &Value, secret: &str) -> Result<RemoteStatus, JobError> {
    let status = json
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or_default();
    match status {
        "starting" => Ok(RemoteStatus::Queued),
        "processing" => Ok(RemoteStatus::Running {
            progress: json
                .get("logs")
                .and_then(Value::as_str)
                .and_then(logs_progress),
        }),
        "succeeded" => succeeded(json),
        "failed" => Ok(RemoteStatus::Failed(prediction_failure(
            json.get("error"),
            secret,
        ))),
        "canceled" => Ok(RemoteStatus::Cancelled),
        // Its deadline (`Cancel-After`) passed before it started: nothing ran, and public
        // models do not bill an aborted prediction, so a new submit is a retry.
        "aborted" => Ok(RemoteStatus::Failed(JobError::transient(
            ErrorCode::ProviderUnavailable,
            "Replicate aborted the prediction before it started (its deadline passed)",
        ))),
        other => Err(JobError::transient(
            ErrorCode::ProviderUnavailable,
            format!(
                "Replicate reports an unknown prediction status `{}`",
                http::sanitize(other, &[secret])
            ),
        )),
    }
}

/// A `succeeded` prediction: its output URLs (a URI string or a list of them) and the compute
/// time Replicate measured (`metrics.predict_time`, seconds).
fn succeeded(json: &Value) -> Result<RemoteStatus, JobError> {
    // Removed is removed, whatever the answer still lists: a URL of deleted data would only
    // be refused, and the next poll would list it again.
    if json.get("data_removed").and_then(Value::as_bool) == Some(true) {
        return Err(JobError::permanent(
            ErrorCode::ProviderUnavailable,
            "Replicate has deleted the prediction's output (it keeps outputs for an hour after \
             the prediction ends)",
        ));
    }
    let output = json.get("output").unwrap_or(&Value::Null);
    let urls = output_urls(output);
    if urls.is_empty() {
        return Err(if output.is_null() {
            // Nothing to download yet; asking again is free.
            JobError::transient(
                ErrorCode::ProviderUnavailable,
                "Replicate reports the prediction succeeded but lists no output",
            )
        } else {
            JobError::permanent(
                ErrorCode::ProviderUnavailable,
                "Replicate's output for this prediction is not a file URL",
            )
        });
    }
    let predict_time = json
        .get("metrics")
        .and_then(|m| m.get("predict_time"))
        .and_then(Value::as_f64);
    Ok(RemoteStatus::Succeeded(
        VideoOutput::Urls(urls),
        byok_core::ProviderUsage::from_compute_seconds(predict_time),
    ))
}

/// The http(s) URLs of an output: one URI string, or a list of them (other items ignored).
fn output_urls(output: &Value) -> Vec<String> {
    let is_url = |s: &&str| {
        Url::parse(s)
            .ok()
            .is_some_and(|u| matches!(u.scheme(), "https" | "http"))
    };
    let items: Vec<&str> = match output {
        Value::String(s) => vec![s.as_str()],
        Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    items
        .into_iter()
        .map(str::trim)
        .filter(is_url)
        .map(str::to_owned)
        .collect()
}

/// The progress of a `processing` prediction from the last tqdm bar in its logs
/// (`" 45%|████▌     | 45/100 [00:01<00:01, 30.0it/s]"`), as the official client reads it
/// (RP-SDK `Prediction.Progress`): the percentage before `%`, then a `|…|` bar, then
/// `current/total`.
fn logs_progress(logs: &str) -> Option<f64> {
    let mut start = logs.len().saturating_sub(PROGRESS_LOG_TAIL);
    while !logs.is_char_boundary(start) {
        start += 1;
    }
    logs[start..]
        .split(['\n', '\r'])
        .rev()
        .find_map(|line| {
            let (percent, rest) = line.trim().split_once('%')?;
            let percent: u32 =
                (percent.len() <= 3 && !percent.is_empty()).then(|| percent.parse().ok())??;
            let rest = rest.trim_start().strip_prefix('|')?;
            let (_, counts) = rest.split_once('|')?;
            let (current, total) = counts.trim_start().split_once('/')?;
            let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
            let total = total.split(|c: char| !c.is_ascii_digit()).next()?;
            (digits(current) && digits(total)).then_some(percent)
        })
        .map(|percent| (f64::from(percent) / 100.0).clamp(0.0, 1.0))
}

/// Classifies a `failed` prediction by its `error` text (docs/provider-protocols.md §9.4):
///
/// * moderation (Seedance's "flagged as sensitive (E005)", NSFW checkers) → `content_rejected`,
///   permanent: the same input is refused again;
/// * the failures Replicate attributes to its infrastructure and tells to retry ("Prediction
///   interrupted; please retry (code: PA)", "unexpected error handling prediction (E9828)") →
///   transient: the worker submits again;
/// * anything else (the model's own error) → `provider_unavailable`, permanent, with the text:
///   an unknown failure is not blindly retried, each try may be billed.
fn prediction_failure(error: Option<&Value>, secret: &str) -> JobError {
    let text = match error {
        Some(Value::String(text)) => http::sanitize(text, &[secret]),
        None | Some(Value::Null) => String::new(),
        Some(other) => http::sanitize(&other.to_string(), &[secret]),
    };
    let lower = text.to_lowercase();
    let detail = (!text.is_empty()).then(|| text.clone());
    if MODERATION_MARKERS.iter().any(|m| lower.contains(m)) {
        JobError::permanent(
            ErrorCode::ContentRejected,
            http::with_detail("Replicate's model refused the content".to_owned(), detail),
        )
    } else if INFRASTRUCTURE_MARKERS.iter().any(|m| lower.contains(m)) {
        JobError::transient(
            ErrorCode::ProviderUnavailable,
            http::with_detail(
                "Replicate lost the prediction on its side".to_owned(),
                detail,
            ),
        )
    } else {
        JobError::permanent(
            ErrorCode::ProviderUnavailable,
            http::with_detail("the prediction failed at Replicate".to_owned(), detail),
        )
    }
}

/// A Replicate error body: RFC 7807 problem details `{type, title, status, detail}`, with
/// `invalid_fields: [{type, field, description}]` on an input validation 422
/// (docs/provider-protocols.md §9.4).
#[derive(Debug, Default)]
struct Problem {
    title: Option<String>,
    detail: Option<String>,
    /// The first invalid field (`input.duration`) and what is wrong with it.
    invalid_field: Option<(String, String)>,
}

impl Problem {
    fn of(body: &Body) -> Problem {
        let Some(json) = body.json() else {
            return Problem::default();
        };
        let text = |v: Option<&Value>| {
            v.and_then(Value::as_str)
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let invalid_field = json
            .get("invalid_fields")
            .and_then(Value::as_array)
            .and_then(|fields| fields.first())
            .and_then(|f| {
                Some((
                    f.get("field")?.as_str()?.trim().to_owned(),
                    text(f.get("description")).unwrap_or_default(),
                ))
            });
        Problem {
            title: text(json.get("title")),
            detail: text(json.get("detail")),
            invalid_field,
        }
    }

    /// `detail`, else `title`, sanitised.
    fn text(&self, secret: &str) -> Option<String> {
        self.detail
            .as_deref()
            .or(self.title.as_deref())
            .map(|t| http::sanitize(t, &[secret]))
            .filter(|t| !t.is_empty())
    }

    /// Whether this is the refusal of a versioned create whose version does not exist (or is
    /// not the token's to use): "Invalid version or not permitted".
    fn is_invalid_version(&self) -> bool {
        let title = self.title.as_deref().unwrap_or_default().to_lowercase();
        let detail = self.detail.as_deref().unwrap_or_default().to_lowercase();
        title.contains("invalid version") || detail.contains("version does not exist")
    }
}

/// Classifies an HTTP error answer of the generation calls (docs/provider-protocols.md §9.4):
///
/// * 401/403 → `credentials_invalid`; 402 → `insufficient_credits`;
/// * 404 on submit → `model_retired`: the model's path came from our catalogue, so Replicate no
///   longer serves it under that name; 404 or 410 on any other call → `provider_unavailable`,
///   permanent;
/// * 422 "Invalid version or not permitted" on submit → `model_retired` (the catalogue's
///   version is gone or not open to the token);
/// * 400, 413, 422 → `invalid_request`, naming the input Replicate names
///   (`invalid_fields[0].field`) and the request field it was filled from;
/// * 429 → retry after `Retry-After` if sent, else the wait in the text ("Your rate limit
///   resets in ~30s", "Expected available in 1 second"), else 60 s;
/// * 408, 5xx → transient (a create's 504 never gets here: [`ReplicateProvider::send`]);
///   everything else as [`classify::by_status`].
fn classify_answer(
    call: Call,
    answer: &Answer,
    secret: &str,
    wire: Option<&ModelWire>,
) -> JobError {
    let problem = Problem::of(&answer.body);
    let detail = problem.text(secret);
    let status = answer.status.as_u16();
    let with = |prefix: String| http::with_detail(prefix, detail.clone());
    match status {
        404 if call == Call::Submit => JobError::permanent(
            ErrorCode::ModelRetired,
            with("Replicate has no such model (HTTP 404); it was removed or renamed".to_owned()),
        ),
        // Not a model's route: the files API, a prediction or its cancel. Nothing names a model
        // here, so nothing says it is retired.
        404 | 410 if call != Call::Submit => JobError::permanent(
            ErrorCode::ProviderUnavailable,
            with(format!("Replicate has no such resource (HTTP {status})")),
        ),
        422 if call == Call::Submit && problem.is_invalid_version() => JobError::permanent(
            ErrorCode::ModelRetired,
            with("Replicate refused the model's version (HTTP 422)".to_owned()),
        ),
        400 | 413 | 422 => {
            let what = match call {
                Call::Upload => "the input image",
                _ => "the request",
            };
            let mut prefix = format!("Replicate refused {what} (HTTP {status})");
            if let Some((field, _)) = &problem.invalid_field {
                let input = field.strip_prefix("input.").unwrap_or(field);
                prefix = format!(
                    "Replicate refused input `{}` (HTTP {status})",
                    http::sanitize(input, &[secret])
                );
                if let Some(neutral) = wire.and_then(|w| w.inputs.neutral_of(input)) {
                    prefix.push_str(&format!(", filled from the request's `{neutral}`"));
                }
            }
            JobError::permanent(ErrorCode::InvalidRequest, with(prefix))
        }
        429 => {
            let raw = String::from_utf8_lossy(&answer.body.bytes);
            let wait = classify::retry_after(&answer.headers, SystemTime::now())
                .or_else(|| wait_in_text(problem.detail.as_deref().unwrap_or(&raw)))
                .unwrap_or(DEFAULT_THROTTLE_WAIT);
            JobError::retry_after(
                wait,
                with("Replicate is throttling this token (HTTP 429)".to_owned()),
            )
        }
        _ => classify::by_status(DISPLAY_NAME, answer.status, &answer.headers, detail),
    }
}

/// The wait in a 429's text: "Your rate limit resets in ~30s." (Replicate's rate-limit page
/// today) or "Expected available in 1 second." (its earlier wording). Capped like a header.
fn wait_in_text(text: &str) -> Option<Duration> {
    let lower = text.to_ascii_lowercase();
    ["resets in", "available in"]
        .into_iter()
        .find_map(|marker| {
            let at = lower.find(marker)?;
            let rest = lower[at + marker.len()..]
                .trim_start()
                .trim_start_matches('~')
                .trim_start();
            duration_prefix(rest)
        })
}

/// `30s`, `1 second`, `2 minutes`, `500ms` at the start of `text` (seconds when no unit).
fn duration_prefix(text: &str) -> Option<Duration> {
    let end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let value: f64 = text[..end].parse().ok()?;
    let unit = text[end..].trim_start();
    let secs = if unit.starts_with("ms") || unit.starts_with("milli") {
        value / 1000.0
    } else if unit.starts_with('m') {
        value * 60.0
    } else if unit.starts_with('h') {
        value * 3600.0
    } else {
        value
    };
    (secs.is_finite() && secs >= 0.0)
        .then(|| Duration::from_secs_f64(secs.min(MAX_THROTTLE_WAIT.as_secs_f64())))
}

/// Maps the answer of `GET /v1/account`: 200 with a JSON object is valid; 401 and 403
/// reject the token; anything else gives no verdict ([`http::key_check_verdict`]).
fn classify_check(status: StatusCode, body: &Body, secret: &str) -> CredentialCheck {
    let detail = Problem::of(body).text(secret);
    let accepted =
        (status == StatusCode::OK).then(|| body.json().as_ref().is_some_and(Value::is_object));
    http::key_check_verdict(
        &http::KeyCheckWords {
            provider: DISPLAY_NAME,
            credential: "token",
            after_throttle: "try again later",
        },
        status,
        accepted,
        detail,
    )
}

/// The API token of Replicate credentials; other credentials are a caller bug.
fn api_key(credentials: &Credentials) -> Result<&secrecy::SecretString, JobError> {
    credentials::job_api_key(credentials, ProviderId::REPLICATE, DISPLAY_NAME).map(|(key, _)| key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_waits_are_read_from_both_wordings() {
        let secs = |t: &str| wait_in_text(t).map(|d| d.as_secs_f64());
        assert_eq!(
            secs("Request was throttled. Your rate limit resets in ~30s."),
            Some(30.0)
        );
        assert_eq!(
            secs("Request was throttled. Expected available in 1 second."),
            Some(1.0)
        );
        assert_eq!(secs("resets in ~2 minutes"), Some(120.0));
        assert_eq!(secs("available in 500ms"), Some(0.5));
        assert_eq!(secs("resets in ~1.5s"), Some(1.5));
        assert_eq!(secs("Request was throttled."), None);
        assert_eq!(secs("resets in ~soon"), None);
        assert_eq!(
            wait_in_text("resets in ~99999999999s"),
            Some(MAX_THROTTLE_WAIT)
        );
    }

    #[test]
    fn progress_is_read_from_the_last_tqdm_bar() {
        let logs = "Using seed: 7\n 10%|█         | 1/10 [00:01<00:09]\n 45%|████▌     | 45/100 [00:01<00:01, 30.00it/s]";
        assert_eq!(logs_progress(logs), Some(0.45));
        let carriage = " 10%|█ | 1/10\r 60%|██████ | 6/10 [00:03<00:02]";
        assert_eq!(logs_progress(carriage), Some(0.6));
        assert_eq!(logs_progress("100%|██████████| 4/4"), Some(1.0));
        assert_eq!(logs_progress("loading weights\nstarting"), None);
        assert_eq!(logs_progress("50% done"), None);
        assert_eq!(logs_progress("1000%|x| 1/1"), None);
        assert_eq!(logs_progress(""), None);
        // Only the tail is read; a multi-byte character at the cut is stepped over.
        let long = format!("{}{}", "é".repeat(5000), "\n 20%|██ | 2/10");
        assert_eq!(logs_progress(&long), Some(0.2));
    }

    #[test]
    fn failures_are_classified_by_their_text() {
        let class = |t: &str| {
            let e = prediction_failure(Some(&Value::from(t)), "r8_secret");
            (e.code, e.is_retryable())
        };
        assert_eq!(
            class(
                "The input or output was flagged as sensitive. Please try again with different inputs. (E005)"
            ),
            (ErrorCode::ContentRejected, false)
        );
        assert_eq!(
            class("NSFW content detected. Try running it again, or try a different prompt."),
            (ErrorCode::ContentRejected, false)
        );
        assert_eq!(
            class("Prediction interrupted; please retry (code: PA)"),
            (ErrorCode::ProviderUnavailable, true)
        );
        assert_eq!(
            class("Director: unexpected error handling prediction (E9828)"),
            (ErrorCode::ProviderUnavailable, true)
        );
        assert_eq!(
            class("CUDA out of memory"),
            (ErrorCode::ProviderUnavailable, false)
        );
        let leaked = prediction_failure(Some(&Value::from("token r8_secret failed")), "r8_secret");
        assert!(!leaked.message.contains("r8_secret"), "{leaked}");
        let empty = prediction_failure(None, "r8_secret");
        assert_eq!(empty.message, "the prediction failed at Replicate");
    }

    fn spec(wire: Value) -> ModelSpec {
        let Value::Object(wire) = wire else {
            panic!("an object")
        };
        let mut model: ModelSpec = serde_json::from_value(serde_json::json!({
            "id": "acme/video",
            "display_name": "Video",
            "modes": ["text_to_video", "image_to_video"],
            "prompt": {"text_to_video": "required", "image_to_video": "optional", "max_chars": 100},
            "durations": [5, 10],
            "default_duration": 5,
            "seed_max": 10,
            "formats": [
                {"aspect_ratio": "16:9", "resolution": "720p", "wire": "16:9"},
                {"aspect_ratio": "9:16", "resolution": "720p", "wire": "9:16"}
            ]
        }))
        .expect("a model");
        model.wire = wire;
        model
    }

    #[test]
    fn wire_data_is_checked_against_the_model() {
        let full = serde_json::json!({"model": "acme/video", "inputs": {
            "prompt": "prompt", "image": "image", "duration": "duration",
            "format": "aspect_ratio", "seed": "seed"}});
        assert!(ModelWire::of(&spec(full.clone())).is_ok());
        let err = |wire: Value| ModelWire::of(&spec(wire)).expect_err("refused");
        let mut missing = full.clone();
        missing["inputs"]
            .as_object_mut()
            .expect("inputs")
            .remove("duration");
        assert_eq!(
            err(missing),
            "wire.inputs.duration is missing: the model has durations to choose"
        );
        let mut unknown = full.clone();
        unknown["modle"] = "x".into();
        assert!(err(unknown).contains("unknown field `modle`"));
        let mut bad_path = full.clone();
        bad_path["model"] = "video".into();
        assert!(err(bad_path).starts_with("wire.model:"));
        let mut bad_version = full.clone();
        bad_version["version"] = "ABC".into();
        assert!(err(bad_version).starts_with("wire.version:"));
        let mut twice = full.clone();
        twice["inputs"]["seed"] = "prompt".into();
        assert_eq!(
            err(twice),
            "wire.inputs.seed: input `prompt` is already mapped"
        );
        let mut clash = full.clone();
        clash["extra_inputs"] = serde_json::json!({"seed": 1});
        assert!(err(clash).starts_with("wire.extra_inputs.seed"));
        let mut bad_name = full;
        bad_name["inputs"]["prompt"] = "a b".into();
        assert!(err(bad_name).starts_with("wire.inputs.prompt:"));
        assert!(err(serde_json::json!({})).contains("missing field `model`"));
    }

    #[test]
    fn model_paths_versions_and_input_names() {
        assert!(is_model_path("bytedance/seedance-2.0"));
        assert!(is_model_path("stability-ai/stable-video-diffusion"));
        for bad in ["", "a", "a/", "/b", "a/b/c", "a/../b", "a b/c", "./x"] {
            assert!(!is_model_path(bad), "{bad}");
        }
        assert!(is_version_id(&"0123456789abcdef".repeat(4)));
        assert!(!is_version_id(&"0123456789ABCDEF".repeat(4)));
        assert!(!is_version_id("abc"));
        assert!(is_input_name("first_frame_image"));
        assert!(!is_input_name("9lives"));
        assert!(!is_input_name("input.image"));
    }
}
