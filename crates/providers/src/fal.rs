//! fal.ai's queue API (docs/provider-protocols.md §8): API-key credentials
//! (`Authorization: Key …`), checked by minting a storage token at fal's REST host; generation
//! with `POST {queue}/{app}`, `GET …/requests/{id}/status`, `GET …/requests/{id}` (the result)
//! and `PUT …/requests/{id}/cancel`; outputs downloaded from fal's CDN URLs.
//!
//! fal hosts many vendors' models ("apps"), each with its own input field names: which app
//! serves a catalogue model and how its inputs are named is data (`[models.wire]` in
//! `catalogue/fal.toml`), read and checked when the registry is built ([`AppWire`]).
//!
//! **The provider job id** is the path of fal's `response_url` below the queue host:
//! `owner/alias/requests/{request_id}` (`workflows/owner/alias/requests/{id}` for namespaced
//! apps). fal's follow-up URLs name the app's owner and alias only, never its sub-path, so this
//! is all a poll or a cancel needs; it is parsed and checked ([`RequestRef`]) before any URL is
//! built from it, and the URLs are always built on the configured base URL: the
//! `status_url`/`response_url`/`cancel_url` of fal's answers are never followed, so the key is
//! never sent to a host an answer names.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use byok_core::{ErrorCode, JobError, Mode, ModelSpec, ProviderUsage, Requirement};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_LENGTH, HeaderValue};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{Map, Value};
use url::Url;

use crate::classify::{self, Answer};
use crate::credentials::{self, api_key_of};
use crate::data_uri;
use crate::download::OutputDownloads;
use crate::fetch::ImageWork;
use crate::generation::internal;
use crate::http::{self, Body};
use crate::pace::Outbound;
use crate::registry::{ProviderSpec, Setup};
use crate::{
    CancelOutcome, CredentialCheck, CredentialField, Credentials, CredentialsError,
    GenerationRequest, InputImage, ProviderDescriptor, ProviderId, RegistryError, RemoteStatus,
    SavedVideo, SubmitRequest, Submitted, ValidatedRequest, ValidationError, VideoOutput,
    VideoProvider,
};

const DISPLAY_NAME: &str = "fal.ai";

/// fal's REST host: storage tokens (the key check). The official client's `REST_URL`.
pub(crate) const REST_URL: &str = "https://rest.fal.ai";

/// The key check: what the official client calls before every upload, with `{}` as the body.
const KEY_CHECK_PATH: &str = "/storage/auth/token";
const KEY_CHECK_QUERY: &str = "storage_type=fal-cdn-v3";

/// The path beside a simulator's `/fal` that stands for the REST host (crates/sim/README.md).
const SIMULATOR_FAL_PREFIX: &str = "/fal";
const SIMULATOR_REST_PREFIX: &str = "/fal-rest";

/// Namespaces that put one more segment before an app's owner (the official client's
/// `APP_NAMESPACES`).
const APP_NAMESPACES: [&str; 2] = ["workflows", "comfy"];

/// The longest segment of an app id or request id we accept (fal's ids are UUIDs and short
/// names; the bound keeps a hostile answer from growing our rows and URLs).
const MAX_SEGMENT_LEN: usize = 128;

/// The largest image sent inline as a data URI. fal documents no limit for JSON inputs
/// (UNVERIFIED); 10 MB keeps submits of reasonable size, and larger images are re-encoded.
const MAX_DATA_URI_BYTES: usize = 10_000_000;

/// Longest side of an image re-encoded to fit [`MAX_DATA_URI_BYTES`]: more than any of the
/// catalogue's apps renders (1080p).
const SHRUNK_MAX_SIDE: u32 = 2048;

/// The fal adapter.
#[derive(Debug)]
pub(crate) struct FalProvider {
    descriptor: ProviderDescriptor,
    catalogue: byok_core::Catalogue,
    /// The queue host (`providers.fal.base_url`).
    base_url: Url,
    /// The REST host of the key check (see [`rest_base_for`]).
    rest_url: Url,
    http: reqwest::Client,
    /// Output downloads from fal's CDN URLs, under the network policy of user URLs.
    downloads: OutputDownloads,
    /// Paced sends (`providers.fal.max_requests_per_second`); `downloads` waits on
    /// the same pace.
    outbound: Outbound,
    /// Where a large input image is re-encoded (see [`inline_image`]).
    images: ImageWork,
    /// Each catalogue model's app per mode, checked.
    apps: HashMap<(String, Mode), App>,
}

/// The registry's entry for fal.
pub(crate) const SPEC: ProviderSpec = ProviderSpec {
    id: ProviderId::FAL,
    display_name: DISPLAY_NAME,
    description: "Video models of many vendors (Kling, MiniMax Hailuo, Luma Ray, Stable Video \
                  Diffusion, …) through fal.ai's queue API (queue.fal.run), billed to your fal \
                  account. Requests over your account's concurrency wait in fal's own queue.",
    icon: "fal",
    credential_fields: &[CredentialField {
        name: Cow::Borrowed("api_key"),
        label: Cow::Borrowed("API key"),
        required: true,
        secret: true,
        kind: Cow::Borrowed("string"),
        description: Cow::Borrowed(
            "A fal API key (`key_id:key_secret`) from fal.ai/dashboard/keys.",
        ),
    }],
    catalogue: include_str!("../catalogue/fal.toml"),
    build: |setup| Ok(Arc::new(FalProvider::new(setup)?)),
};

impl FalProvider {
    pub(crate) fn new(setup: Setup<'_>) -> Result<Self, RegistryError> {
        // fal's files live as long as the object lifecycle of the account says
        // (docs/provider-protocols.md §8.3): gone is gone, so a refused URL is final.
        let downloads = OutputDownloads::new(&setup, "fal", None)?;
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
        let base_url = http::parse_base_url(ProviderId::FAL, &options.base_url)?;
        let apps = apps_of(&catalogue)?;
        Ok(FalProvider {
            descriptor,
            catalogue,
            rest_url: rest_base_for(&base_url),
            base_url,
            http,
            downloads,
            outbound: Outbound::new(pace, DISPLAY_NAME, request_timeout),
            images,
            apps,
        })
    }
}

// ---------------------------------------------------------------------------------------
// The catalogue's wire data: which app serves a model, and its input field names.
// ---------------------------------------------------------------------------------------

/// `[models.wire]`: one app per mode the model offers.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelWire {
    text_to_video: Option<AppWire>,
    image_to_video: Option<AppWire>,
}

/// `[models.wire.<mode>]`: the app and the names of its input fields (catalogue/fal.toml).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct AppWire {
    /// fal's endpoint id, `owner/alias[/path]`.
    app: String,
    prompt: Option<String>,
    image: Option<String>,
    #[serde(default)]
    image_as: ImageAs,
    duration: Option<String>,
    duration_format: Option<DurationFormat>,
    aspect_ratio: Option<String>,
    resolution: Option<String>,
    negative_prompt: Option<String>,
    seed: Option<String>,
}

/// How the input image is handed to the app.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ImageAs {
    /// The image the worker fetched and checked, inline (`data:<type>;base64,…`): fal never
    /// reaches the producer's URL, and what we checked is what is used.
    #[default]
    DataUri,
    /// The producer's URL as given (for an app that takes no data URI): fal fetches it.
    Url,
}

/// How a length is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum DurationFormat {
    /// `"5"`.
    String,
    /// `5`.
    Integer,
    /// `"5s"`.
    SecondsSuffix,
}

impl DurationFormat {
    fn write(self, seconds: u32) -> Value {
        match self {
            DurationFormat::String => Value::String(seconds.to_string()),
            DurationFormat::Integer => Value::from(seconds),
            DurationFormat::SecondsSuffix => Value::String(format!("{seconds}s")),
        }
    }
}

/// A checked app of one model and mode.
#[derive(Debug, Clone)]
struct App {
    /// Where submits go: the endpoint id's segments (`fal-ai`, `kling-video`, `v2.1`, …).
    path: Vec<String>,
    /// Where its requests live: `[namespace,] owner, alias` (no sub-path).
    queue_root: Vec<String>,
    wire: AppWire,
}

impl App {
    /// Our request field for one of the app's input fields, for error messages.
    fn neutral_name(&self, fal_field: &str) -> Option<&'static str> {
        let w = &self.wire;
        [
            (&w.prompt, "prompt"),
            (&w.image, "image_url"),
            (&w.duration, "duration_seconds"),
            (&w.aspect_ratio, "aspect_ratio"),
            (&w.resolution, "resolution"),
            (&w.negative_prompt, "negative_prompt"),
            (&w.seed, "seed"),
        ]
        .into_iter()
        .find(|(name, _)| name.as_deref() == Some(fal_field))
        .map(|(_, neutral)| neutral)
    }
}

/// Reads and checks every model's `[models.wire]`.
fn apps_of(
    catalogue: &byok_core::Catalogue,
) -> Result<HashMap<(String, Mode), App>, RegistryError> {
    let mut apps = HashMap::new();
    for model in &catalogue.models {
        let bad = |reason: String| RegistryError::BadCatalogue {
            provider: ProviderId::FAL,
            reason: format!("model `{}`: {reason}", model.id),
        };
        let wire: ModelWire = serde_json::from_value(Value::Object(model.wire.clone()))
            .map_err(|e| bad(format!("wire: {e}")))?;
        for (mode, name, app) in [
            (Mode::TextToVideo, "text_to_video", wire.text_to_video),
            (Mode::ImageToVideo, "image_to_video", wire.image_to_video),
        ] {
            let offered = model.modes.contains(&mode);
            match (offered, app) {
                (true, None) => return Err(bad(format!("wire.{name} is missing"))),
                (false, Some(_)) => {
                    return Err(bad(format!(
                        "wire.{name} is given but the model does not offer {name}"
                    )));
                }
                (false, None) => {}
                (true, Some(app)) => {
                    let checked = check_app(model, mode, app)
                        .map_err(|reason| bad(format!("wire.{name}.{reason}")))?;
                    apps.insert((model.id.clone(), mode), checked);
                }
            }
        }
    }
    Ok(apps)
}

/// Checks one app against its model: a well-formed endpoint id, well-formed and distinct
/// field names, and a field for every part of a request the model accepts (and none for what
/// it refuses). Errors start with the wire key they are about.
fn check_app(model: &ModelSpec, mode: Mode, wire: AppWire) -> Result<App, String> {
    let path = parse_app_id(&wire.app).map_err(|why| format!("app: {why}"))?;
    let queue_root = queue_root_of(&path);
    let fields = [
        ("prompt", &wire.prompt),
        ("image", &wire.image),
        ("duration", &wire.duration),
        ("aspect_ratio", &wire.aspect_ratio),
        ("resolution", &wire.resolution),
        ("negative_prompt", &wire.negative_prompt),
        ("seed", &wire.seed),
    ];
    let mut seen: Vec<&str> = Vec::new();
    for (key, name) in fields {
        if let Some(name) = name {
            if !is_field_name(name) {
                return Err(format!("{key}: `{name}` is not an input field name"));
            }
            if seen.contains(&name.as_str()) {
                return Err(format!("{key}: `{name}` is used twice"));
            }
            seen.push(name);
        }
    }
    let prompt_rule = match mode {
        Mode::TextToVideo => model.prompt.text_to_video,
        Mode::ImageToVideo => model.prompt.image_to_video,
    };
    need(
        "prompt",
        prompt_rule != Requirement::Unsupported,
        &wire.prompt,
    )?;
    need("image", mode == Mode::ImageToVideo, &wire.image)?;
    need("duration", !model.durations.is_empty(), &wire.duration)?;
    need(
        "duration_format",
        wire.duration.is_some(),
        &wire.duration_format,
    )?;
    need(
        "negative_prompt",
        model.negative_prompt,
        &wire.negative_prompt,
    )?;
    need("seed", model.seed_max.is_some(), &wire.seed)?;
    // A choice of shapes needs a field to send it in, unless the shape follows the image
    // (then the request may not name one: see `validate`).
    let offered: Vec<_> = model
        .formats
        .iter()
        .filter(|f| f.modes.is_empty() || f.modes.contains(&mode))
        .collect();
    let distinct = |values: Vec<Option<&str>>| {
        let mut unique = values;
        unique.sort_unstable();
        unique.dedup();
        unique.len()
    };
    let aspects = distinct(
        offered
            .iter()
            .map(|f| Some(f.aspect_ratio.as_str()))
            .collect(),
    );
    let resolutions = distinct(offered.iter().map(|f| f.resolution.as_deref()).collect());
    if !model.format_from_image && aspects > 1 && wire.aspect_ratio.is_none() {
        return Err("aspect_ratio: the model offers several aspect ratios but names no field to send one in".into());
    }
    if !model.format_from_image && resolutions > 1 && wire.resolution.is_none() {
        return Err(
            "resolution: the model offers several resolutions but names no field to send one in"
                .into(),
        );
    }
    Ok(App {
        path,
        queue_root,
        wire,
    })
}

/// A wire key must be given exactly when the model needs it.
fn need<T>(key: &str, needed: bool, value: &Option<T>) -> Result<(), String> {
    match (needed, value.is_some()) {
        (true, false) => Err(format!("{key} is missing: the model takes one")),
        (false, true) => Err(format!("{key} is given but the model takes none")),
        _ => Ok(()),
    }
}

/// `[a-z][a-z0-9_]*`, at most 64 characters: the shape of fal's input field names.
fn is_field_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// An endpoint id (`owner/alias[/path…]`, with one more leading segment for a namespace) as
/// its segments. Legacy `123-name` ids are not accepted: the catalogue names apps as fal's
/// cards do today.
fn parse_app_id(id: &str) -> Result<Vec<String>, String> {
    let segments: Vec<&str> = id.split('/').collect();
    let minimum = if APP_NAMESPACES.contains(&segments[0]) {
        3
    } else {
        2
    };
    if segments.len() < minimum {
        return Err(format!("`{id}` is not an app id (owner/alias[/path])"));
    }
    if let Some(bad) = segments.iter().find(|s| !is_id_segment(s)) {
        return Err(format!("`{id}` has an unusable segment `{bad}`"));
    }
    Ok(segments.into_iter().map(str::to_owned).collect())
}

/// `[namespace,] owner, alias`: the official client's `from_request_id` prefix.
fn queue_root_of(path: &[String]) -> Vec<String> {
    let len = if APP_NAMESPACES.contains(&path[0].as_str()) {
        3
    } else {
        2
    };
    path[..len].to_vec()
}

/// One segment of an app id or a request id: a plain path segment ([`http::plain_segment`]:
/// it needs no encoding and cannot change the path), bounded.
fn is_id_segment(segment: &str) -> bool {
    segment.len() <= MAX_SEGMENT_LEN && http::plain_segment(segment, false)
}

// ---------------------------------------------------------------------------------------
// The provider job id.
// ---------------------------------------------------------------------------------------

/// A request at fal's queue: `[namespace/]owner/alias/requests/{request_id}`, the path of
/// its `response_url` below the queue host.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RequestRef {
    queue_root: Vec<String>,
    request_id: String,
}

impl RequestRef {
    /// Parses a provider job id; anything else is a caller bug (`internal`): the id was
    /// written by [`RequestRef::job_id`] at submit.
    fn parse(job_id: &str) -> Result<RequestRef, JobError> {
        let bad = || {
            internal(&format!(
                "`{}` is not a fal request id",
                http::sanitize(job_id, &[])
            ))
        };
        let segments: Vec<&str> = job_id.split('/').collect();
        let root_len = if segments.first().is_some_and(|s| APP_NAMESPACES.contains(s)) {
            3
        } else {
            2
        };
        if segments.len() != root_len + 2
            || segments[root_len] != "requests"
            || !segments.iter().all(|s| is_id_segment(s))
        {
            return Err(bad());
        }
        Ok(RequestRef {
            queue_root: segments[..root_len]
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            request_id: segments[root_len + 1].to_owned(),
        })
    }

    fn job_id(&self) -> String {
        format!("{}/requests/{}", self.queue_root.join("/"), self.request_id)
    }

    /// `{base}/{root}/requests/{id}[/{tail}]`.
    fn url(&self, base: &Url, tail: Option<&str>) -> Url {
        let mut segments: Vec<&str> = self.queue_root.iter().map(String::as_str).collect();
        segments.extend(["requests", self.request_id.as_str()]);
        segments.extend(tail);
        http::with_segments(base, &segments)
    }
}

/// Where the key check goes.
///
/// fal's own REST host, `https://rest.fal.ai`, when `providers.fal.base_url` is fal's (its host
/// is `fal.run` or under it, or fal's backup domain `falrun.com`). Otherwise the base URL is a
/// simulator's, which serves each emulated host under a path prefix of one address: the REST
/// host is then `{base_url without a trailing /fal}/fal-rest` (`http://127.0.0.1:9000/fal` →
/// `http://127.0.0.1:9000/fal-rest`). One setting per provider, as for Veo's Cloud Storage.
fn rest_base_for(base: &Url) -> Url {
    let fal_host = base.host_str().is_some_and(|h| {
        ["fal.run", "falrun.com"]
            .iter()
            .any(|d| h == *d || h.ends_with(&format!(".{d}")))
    });
    if fal_host && let Ok(rest) = Url::parse(REST_URL) {
        return rest;
    }
    let path = base.path().trim_end_matches('/');
    let prefix = path.strip_suffix(SIMULATOR_FAL_PREFIX).unwrap_or(path);
    let mut rest = base.clone();
    rest.set_path(&format!("{prefix}{SIMULATOR_REST_PREFIX}"));
    rest
}

// ---------------------------------------------------------------------------------------
// The adapter.
// ---------------------------------------------------------------------------------------

#[async_trait::async_trait]
impl VideoProvider for FalProvider {
    fn id(&self) -> ProviderId {
        ProviderId::FAL
    }

    fn descriptor(&self) -> &ProviderDescriptor {
        &self.descriptor
    }

    fn catalogue(&self) -> &byok_core::Catalogue {
        &self.catalogue
    }

    fn parse_credentials(&self, raw: &Value) -> Result<Credentials, CredentialsError> {
        credentials::parse_api_key_only(ProviderId::FAL, raw)
    }

    /// The catalogue's checks, plus one the catalogue cannot express: where the video takes
    /// the input image's shape and the app has no input for it, the request may not name an
    /// aspect ratio or resolution (it would be silently ignored).
    fn validate(&self, request: &GenerationRequest) -> Result<ValidatedRequest, ValidationError> {
        let validated = self.catalogue.validate(request)?;
        let follows_image = self
            .catalogue
            .model(&validated.model)
            .is_some_and(|m| m.format_from_image);
        if let Some(app) = self.apps.get(&(validated.model.clone(), validated.mode))
            && follows_image
        {
            for (field, given, sent) in [
                (
                    "aspect_ratio",
                    &request.aspect_ratio,
                    &app.wire.aspect_ratio,
                ),
                ("resolution", &request.resolution, &app.wire.resolution),
            ] {
                if given.is_some() && sent.is_none() {
                    return Err(ValidationError {
                        field,
                        message: format!(
                            "model `{}` makes the video in the input image's shape: {field} is not supported",
                            validated.model
                        ),
                        allowed: Vec::new(),
                        retired: None,
                    });
                }
            }
        }
        Ok(validated)
    }

    async fn check_credentials(&self, credentials: &Credentials) -> CredentialCheck {
        let (api_key, _) = match api_key_of(credentials, ProviderId::FAL) {
            Ok(parts) => parts,
            Err(check) => return check,
        };
        let secret = api_key.expose_secret();
        let Ok(authorization) = key_header(secret) else {
            return CredentialCheck::Rejected {
                reason: "the key cannot be sent in an HTTP header".to_owned(),
            };
        };
        let mut url = http::endpoint(&self.rest_url, KEY_CHECK_PATH);
        url.set_query(Some(KEY_CHECK_QUERY));
        let request = self
            .http
            .post(url)
            .header(AUTHORIZATION, authorization)
            .header(ACCEPT, "application/json")
            .json(&Value::Object(Map::new()));
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
        let app = self
            .apps
            .get(&(validated.model.clone(), validated.mode))
            .ok_or_else(|| {
                internal(&format!(
                    "model `{}` has no fal app for this mode",
                    validated.model
                ))
            })?;
        let input = self.input(app, validated, request.image).await?;
        let segments: Vec<&str> = app.path.iter().map(String::as_str).collect();
        let request = self
            .http
            .post(http::with_segments(&self.base_url, &segments))
            .header(AUTHORIZATION, key_header(secret)?)
            .header(ACCEPT, "application/json")
            .json(&Value::Object(input));
        let answer = self.outbound.submit(request, &[secret]).await?;
        if !answer.status.is_success() {
            return Err(classify_answer(Call::Submit, &answer, Some(app), secret));
        }
        // The request is queued (and will be billed) once fal said 2xx: an answer we cannot
        // read is an unknown outcome, never a reason to submit again.
        let json = answer.body.json();
        let Some(request_id) = json.as_ref().and_then(request_id_of) else {
            return Err(JobError::submit_outcome_unknown(format!(
                "fal accepted the submit (HTTP {}) but its answer carries no usable request_id; \
                 it is not re-sent, because it may have queued a billable request",
                answer.status.as_u16()
            )));
        };
        let reference = RequestRef {
            queue_root: app.queue_root.clone(),
            request_id,
        };
        warn_if_elsewhere(json.as_ref(), &reference);
        Ok(Submitted {
            provider_job_id: reference.job_id(),
        })
    }

    async fn poll(
        &self,
        credentials: &Credentials,
        provider_job_id: &str,
    ) -> Result<RemoteStatus, JobError> {
        let secret = api_key(credentials)?.expose_secret();
        let reference = RequestRef::parse(provider_job_id)?;
        let mut url = reference.url(&self.base_url, Some("status"));
        // No logs: we show none, and they make the answer larger with every poll.
        url.set_query(Some("logs=0"));
        let answer = self.get(url, secret).await?;
        match answer.status.as_u16() {
            200..=299 => {}
            404 => return Err(gone()),
            _ => return Err(classify_answer(Call::Status, &answer, None, secret)),
        }
        let json = answer.body.json().filter(Value::is_object).ok_or_else(|| {
            JobError::transient(
                ErrorCode::ProviderUnavailable,
                "fal answered the status poll with an unreadable body",
            )
        })?;
        match json
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or_default()
        {
            // Waiting in fal's queue: over the account's concurrency, fal queues rather than
            // refuses (docs/provider-protocols.md §8.6). The job stays `running` for us.
            "IN_QUEUE" => Ok(RemoteStatus::Queued),
            // fal reports no progress, only logs.
            "IN_PROGRESS" => Ok(RemoteStatus::Running { progress: None }),
            "COMPLETED" => {
                // COMPLETED does not mean success: a request fal gave up on completes with
                // `error`/`error_type`, and its result holds no video.
                if let Some(failure) = completed_error(&json, secret) {
                    return Ok(RemoteStatus::Failed(failure));
                }
                let usage = ProviderUsage::from_compute_seconds(
                    json.get("metrics")
                        .and_then(|m| m.get("inference_time"))
                        .and_then(Value::as_f64),
                );
                self.result(&reference, secret, usage).await
            }
            other => Err(JobError::transient(
                ErrorCode::ProviderUnavailable,
                format!(
                    "fal reports an unknown request status `{}`",
                    http::sanitize(other, &[secret])
                ),
            )),
        }
    }

    async fn cancel(
        &self,
        credentials: &Credentials,
        provider_job_id: &str,
    ) -> Result<CancelOutcome, JobError> {
        let secret = api_key(credentials)?.expose_secret();
        let reference = RequestRef::parse(provider_job_id)?;
        let request = self
            .http
            .put(reference.url(&self.base_url, Some("cancel")))
            .header(AUTHORIZATION, key_header(secret)?)
            .header(ACCEPT, "application/json")
            // `Content-Length: 0`, as the official client (httpx) sends a bodiless PUT:
            // proxies may refuse a PUT without a length (411).
            .header(CONTENT_LENGTH, "0");
        let answer = self.outbound.idempotent(request, &[secret]).await?;
        cancel_outcome(&answer, secret)
    }

    /// The video URL of the result, downloaded without the key (fal's CDN URLs need none).
    async fn fetch_output(
        &self,
        _credentials: &Credentials,
        output: &VideoOutput,
        dest: &Path,
    ) -> Result<SavedVideo, JobError> {
        self.downloads.fetch_output(output, dest).await
    }
}

impl FalProvider {
    /// A GET to the queue host with the key (status and result).
    async fn get(&self, url: Url, secret: &str) -> Result<Answer, JobError> {
        let request = self
            .http
            .get(url)
            .header(AUTHORIZATION, key_header(secret)?)
            .header(ACCEPT, "application/json");
        self.outbound.idempotent(request, &[secret]).await
    }

    /// The app's input: only the fields that are set, written as the app names and types
    /// them (catalogue/fal.toml).
    async fn input(
        &self,
        app: &App,
        validated: &ValidatedRequest,
        image: Option<&InputImage>,
    ) -> Result<Map<String, Value>, JobError> {
        let wire = &app.wire;
        let mut input = Map::new();
        let mut put = |field: &Option<String>, value: Option<Value>| {
            if let (Some(field), Some(value)) = (field, value) {
                input.insert(field.clone(), value);
            }
        };
        put(&wire.prompt, validated.prompt.clone().map(Value::from));
        put(
            &wire.negative_prompt,
            validated.negative_prompt.clone().map(Value::from),
        );
        if let (Some(format), Some(seconds)) = (wire.duration_format, validated.duration_seconds) {
            put(&wire.duration, Some(format.write(seconds)));
        }
        if let Some(format) = &validated.format {
            put(&wire.aspect_ratio, Some(format.wire.clone().into()));
            put(&wire.resolution, format.resolution.clone().map(Value::from));
        }
        put(&wire.seed, validated.seed.map(Value::from));
        if validated.mode == Mode::ImageToVideo {
            let value = match wire.image_as {
                ImageAs::DataUri => {
                    let image = image.ok_or_else(|| {
                        internal("an image-to-video job reached submit without its fetched image")
                    })?;
                    inline_image(&self.images, image).await?
                }
                ImageAs::Url => validated
                    .image_url
                    .clone()
                    .ok_or_else(|| internal("an image-to-video job has no image_url"))?,
            };
            put(&wire.image, Some(value.into()));
        }
        Ok(input)
    }

    /// Fetches a COMPLETED request's result (the app's output) and finds its video.
    async fn result(
        &self,
        reference: &RequestRef,
        secret: &str,
        usage: ProviderUsage,
    ) -> Result<RemoteStatus, JobError> {
        let answer = self
            .get(reference.url(&self.base_url, None), secret)
            .await?;
        let status = answer.status.as_u16();
        if !answer.status.is_success() {
            return match status {
                404 => Err(gone()),
                // The app refused the input when it ran it (validation, moderation): the
                // request is over, without a video.
                400 | 422 => Ok(RemoteStatus::Failed(classify_answer(
                    Call::Result,
                    &answer,
                    None,
                    secret,
                ))),
                // fal's own record of a request it gave up on (after its retries): a 5xx
                // request error, with `error_type`, in the body or the header. Any other
                // status (401, 403, 429, …) means what it says, whatever header comes with it.
                500..=599 if request_error_type(&answer).is_some() => {
                    let (kind, detail) = request_error(&answer);
                    let failure = failure_of(kind.as_deref(), detail.as_deref(), secret);
                    // fal bills no 5xx failure (docs/provider-protocols.md §8.5): a request
                    // error of a type we do not know is still one a new submit may cure, at
                    // no charge, so it is transient too.
                    Ok(RemoteStatus::Failed(
                        if failure.code == ErrorCode::ProviderUnavailable {
                            JobError::transient(failure.code, failure.message)
                        } else {
                            failure
                        },
                    ))
                }
                _ => Err(classify_answer(Call::Result, &answer, None, secret)),
            };
        }
        let json = answer.body.json().ok_or_else(|| {
            JobError::transient(
                ErrorCode::ProviderUnavailable,
                "fal answered the result request with an unreadable body",
            )
        })?;
        match video_url_of(&json) {
            Some(url) => Ok(RemoteStatus::Succeeded(VideoOutput::Urls(vec![url]), usage)),
            // The result is stored and will not change: asking again would not help.
            None => Ok(RemoteStatus::Failed(JobError::permanent(
                ErrorCode::ProviderUnavailable,
                "fal completed the request but its result holds no video URL",
            ))),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Reading fal's answers.
// ---------------------------------------------------------------------------------------

/// Which call an HTTP answer belongs to (a 404 or a 422 means different things).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Submit,
    Status,
    Result,
    Cancel,
}

/// The `request_id` of a submit answer, if it is one we can put in a URL.
fn request_id_of(json: &Value) -> Option<String> {
    let id = json.get("request_id")?.as_str()?.trim();
    is_id_segment(id).then(|| id.to_owned())
}

/// fal's answers carry the follow-up URLs; we build ours from the configured base and never
/// follow theirs. If theirs name another request path, fal has changed its scheme: say so in
/// the log, because our polls would then miss.
fn warn_if_elsewhere(json: Option<&Value>, reference: &RequestRef) {
    let Some(response_url) = json
        .and_then(|j| j.get("response_url"))
        .and_then(Value::as_str)
    else {
        return;
    };
    let ours = format!("/{}", reference.job_id());
    let same = Url::parse(response_url).is_ok_and(|u| u.path().ends_with(&ours));
    if !same {
        tracing::warn!(
            request = %reference.job_id(),
            "fal's submit answer names a response_url whose path differs from the one polled"
        );
    }
}

/// The video URL of an app's output: `video.url` (every app of the catalogue), else the
/// first `videos[].url`.
fn video_url_of(json: &Value) -> Option<String> {
    let url_of = |v: &Value| {
        v.get("url")
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_owned)
    };
    json.get("video").and_then(url_of).or_else(|| {
        json.get("videos")
            .and_then(Value::as_array)
            .and_then(|v| v.iter().find_map(url_of))
    })
}

/// The failure a COMPLETED status reports (`error`, `error_type`), if any.
fn completed_error(json: &Value, secret: &str) -> Option<JobError> {
    let text = |key: &str| {
        json.get(key)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
    };
    let (error, kind) = (text("error"), text("error_type"));
    if error.is_none() && kind.is_none() {
        return None;
    }
    Some(failure_of(kind, error, secret))
}

/// Classifies a request that ended without a video, by fal's `error_type`
/// (docs/provider-protocols.md §8.5):
///
/// * `content_policy_violation` → `content_rejected`, permanent (the same input fails again);
/// * the request errors of fal's reference — `request_timeout`, `startup_timeout`,
///   `runner_*`, `internal_error` — → `provider_unavailable`, transient: fal retried it up to
///   ten times on its side and does not bill 5xx failures, so a new submit is the worker's
///   choice, not a blind re-send;
/// * anything else, or none → `provider_unavailable`, permanent, with fal's text: an unknown
///   failure is not blindly retried (each try may be billed).
fn failure_of(kind: Option<&str>, detail: Option<&str>, secret: &str) -> JobError {
    let message = |what: &str| {
        let mut m = format!("fal {what}");
        if let Some(kind) = kind {
            m.push_str(&format!(" ({})", http::sanitize(kind, &[secret])));
        }
        if let Some(detail) = detail {
            m.push_str(": ");
            m.push_str(&http::sanitize(detail, &[secret]));
        }
        m
    };
    match kind.unwrap_or_default() {
        "content_policy_violation" => JobError::permanent(
            ErrorCode::ContentRejected,
            message("refused the content of the request"),
        ),
        "request_timeout" | "startup_timeout" | "internal_error" => JobError::transient(
            ErrorCode::ProviderUnavailable,
            message("gave up on the request"),
        ),
        k if k.starts_with("runner_") => JobError::transient(
            ErrorCode::ProviderUnavailable,
            message("gave up on the request"),
        ),
        _ => JobError::permanent(
            ErrorCode::ProviderUnavailable,
            message("failed the request"),
        ),
    }
}

/// `error_type` of a request-error answer: the `X-Fal-Error-Type` header, else the body's.
fn request_error_type(answer: &Answer) -> Option<String> {
    request_error(answer).0
}

/// (`error_type`, `detail`) of a request-error answer (`{"detail": "…", "error_type": "…"}`).
fn request_error(answer: &Answer) -> (Option<String>, Option<String>) {
    let json = answer.body.json();
    let header = answer
        .headers
        .get("x-fal-error-type")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned);
    let body_kind = json
        .as_ref()
        .and_then(|j| j.get("error_type"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let detail = json
        .as_ref()
        .and_then(|j| j.get("detail"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    (header.or(body_kind), detail)
}

/// fal's `detail`: a string, or FastAPI's list of `{loc, msg, type}` (the first item).
#[derive(Debug, Default)]
struct Detail {
    /// The input field (`loc` without its leading `body`), e.g. `duration` or `image_url.0`.
    field: Option<String>,
    text: Option<String>,
    kind: Option<String>,
}

fn detail_of(json: &Value) -> Detail {
    match json.get("detail") {
        Some(Value::String(text)) => Detail {
            text: Some(text.clone()),
            ..Detail::default()
        },
        Some(Value::Array(items)) => {
            let Some(first) = items.first() else {
                return Detail::default();
            };
            let field = first.get("loc").and_then(Value::as_array).map(|loc| {
                http::dotted_path(loc.iter().skip_while(|p| p.as_str() == Some("body")))
            });
            Detail {
                field: field.filter(|f| !f.is_empty()),
                text: first.get("msg").and_then(Value::as_str).map(str::to_owned),
                kind: first.get("type").and_then(Value::as_str).map(str::to_owned),
            }
        }
        _ => Detail::default(),
    }
}

/// `field (our request_field): text`, sanitised.
fn describe_detail(detail: &Detail, app: Option<&App>, secret: &str) -> Option<String> {
    let text = detail.text.as_deref().map(|t| http::sanitize(t, &[secret]));
    let field = detail.field.as_deref().map(|f| {
        let f = http::sanitize(f, &[secret]);
        let top = f.split('.').next().unwrap_or_default();
        match app.and_then(|a| a.neutral_name(top)) {
            Some(neutral) if neutral != top => format!("`{f}` (our `{neutral}`)"),
            _ => format!("`{f}`"),
        }
    });
    match (field, text) {
        (Some(f), Some(t)) => Some(format!("{f}: {t}")),
        (Some(f), None) => Some(f),
        (None, t) => t,
    }
}

/// Whether a 403's text is fal's account lock (`User is locked. Reason: …`).
fn locked_reason(text: &str) -> Option<&str> {
    let at = text.find("User is locked")?;
    Some(text[at..].trim())
}

/// Whether a lock is for money (`Exhausted balance`, `TOP_UP`): the key is good, the
/// account has no credit.
fn locked_for_balance(reason: &str) -> bool {
    let lower = reason.to_ascii_lowercase();
    lower.contains("exhausted balance") || lower.contains("top_up") || lower.contains("top up")
}

/// Classifies an HTTP error answer of the generation calls (docs/provider-protocols.md §8.5):
///
/// * 400/422 → `invalid_request` naming the input field (`detail[].loc`) and our request
///   field it came from; `type: content_policy_violation` → `content_rejected`;
/// * 401 → `credentials_invalid`; 403 `User is locked. Reason: Exhausted balance` (or
///   `TOP_UP`) → `insufficient_credits`; any other 403 (an account locked by fal, a key
///   without access) → `credentials_invalid`;
/// * 404 on submit → `model_retired`: the app is in the path and came from our catalogue,
///   so fal no longer serves it;
/// * 429 → retry after `retry-after-ms` / `Retry-After`, else 60 s;
/// * 408/5xx → transient; everything else as [`classify::by_status`].
fn classify_answer(call: Call, answer: &Answer, app: Option<&App>, secret: &str) -> JobError {
    let json = answer.body.json();
    let detail = json.as_ref().map(detail_of).unwrap_or_default();
    let described = describe_detail(&detail, app, secret).or_else(|| {
        // A plain-text or HTML error page: its start, sanitised.
        let text = String::from_utf8_lossy(&answer.body.bytes);
        Some(http::sanitize(&text, &[secret])).filter(|t| !t.is_empty() && json.is_none())
    });
    let with = |prefix: String| http::with_detail(prefix, described.clone());
    let status = answer.status.as_u16();
    match status {
        400 | 422 if detail.kind.as_deref() == Some("content_policy_violation") => {
            JobError::permanent(
                ErrorCode::ContentRejected,
                with(format!(
                    "fal's content checker refused the request (HTTP {status})"
                )),
            )
        }
        400 | 422 => JobError::permanent(
            ErrorCode::InvalidRequest,
            with(format!("fal refused the request (HTTP {status})")),
        ),
        403 => match detail.text.as_deref().and_then(locked_reason) {
            Some(reason) if locked_for_balance(reason) => JobError::permanent(
                ErrorCode::InsufficientCredits,
                with("fal has locked the account for its balance (HTTP 403)".to_owned()),
            ),
            Some(_) => JobError::permanent(
                ErrorCode::CredentialsInvalid,
                with("fal has locked the account (HTTP 403)".to_owned()),
            ),
            None => JobError::permanent(
                ErrorCode::CredentialsInvalid,
                with("fal refused the key (HTTP 403)".to_owned()),
            ),
        },
        404 if call == Call::Submit => JobError::permanent(
            ErrorCode::ModelRetired,
            with("fal no longer serves this app (HTTP 404)".to_owned()),
        ),
        _ => classify::by_status(DISPLAY_NAME, answer.status, &answer.headers, described),
    }
}

/// The request is gone: it expired at fal or belongs to another key (the user replaced
/// theirs). Nothing left to wait for.
fn gone() -> JobError {
    JobError::permanent(
        ErrorCode::ProviderUnavailable,
        "fal no longer knows this request (HTTP 404): it has expired or was made with another key",
    )
}

/// Maps a cancel's answer by the outcome fal names (`status`: `OK`,
/// `CANCELLATION_REQUESTED`, `ALREADY_COMPLETED`, `NOT_FOUND`; docs/provider-protocols.md
/// §8.3), then by HTTP status (fal's status code per outcome is UNVERIFIED):
///
/// * `OK` (removed from the queue), `CANCELLATION_REQUESTED` (the running app was signalled;
///   it may still finish) → `Cancelled`;
/// * `NOT_FOUND`, or a 404 → `Cancelled`: nothing is left to run or bill, which is what a
///   cancel wants; a second cancel lands here too;
/// * `ALREADY_COMPLETED` → `NotSupported`: too late, the request ran to its end (and was
///   billed); the worker ignores its result. Not an error: asking again cannot change it.
fn cancel_outcome(answer: &Answer, secret: &str) -> Result<CancelOutcome, JobError> {
    let outcome = answer
        .body
        .json()
        .as_ref()
        .and_then(|j| j.get("status"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    match (outcome.as_deref(), answer.status.as_u16()) {
        (Some("OK" | "CANCELLATION_REQUESTED" | "NOT_FOUND"), _) => Ok(CancelOutcome::Cancelled),
        (Some("ALREADY_COMPLETED"), _) => Ok(CancelOutcome::NotSupported),
        (_, 404) => Ok(CancelOutcome::Cancelled),
        (_, 200..=299) => Ok(CancelOutcome::Cancelled),
        _ => Err(classify_answer(Call::Cancel, answer, None, secret)),
    }
}

/// Maps the answer of the key check (`POST {rest}/storage/auth/token`).
///
/// 2xx with a `token` is valid. 401 rejects the key, and so does a 403 — except fal's
/// balance lock (`User is locked. Reason: Exhausted balance`), which says fal knows the key:
/// it is valid, and its jobs fail `insufficient_credits` until the owner tops up. Everything
/// else gives no verdict (429, 5xx, other 4xx: our request or base URL, not the key).
fn classify_check(status: StatusCode, body: &Body, secret: &str) -> CredentialCheck {
    let json = body.json();
    let detail = json
        .as_ref()
        .map(detail_of)
        .and_then(|d| d.text)
        .map(|t| http::sanitize(&t, &[secret]));
    let has_token = json
        .as_ref()
        .and_then(|j| j.get("token"))
        .and_then(Value::as_str)
        .is_some_and(|t| !t.is_empty());
    let locked_for_money = status == StatusCode::FORBIDDEN
        && detail
            .as_deref()
            .and_then(locked_reason)
            .is_some_and(locked_for_balance);
    if locked_for_money {
        tracing::info!("fal knows the key, but its account is locked for its balance");
        return CredentialCheck::Valid;
    }
    http::key_check_verdict(
        &http::KeyCheckWords {
            provider: "fal",
            credential: "key",
            after_throttle: "try again later",
        },
        status,
        status.is_success().then_some(has_token),
        detail,
    )
}

// ---------------------------------------------------------------------------------------
// Small helpers.
// ---------------------------------------------------------------------------------------

/// The API key of fal credentials; other credentials are a caller bug.
fn api_key(credentials: &Credentials) -> Result<&secrecy::SecretString, JobError> {
    credentials::job_api_key(credentials, ProviderId::FAL, "fal").map(|(key, _)| key)
}

/// `Authorization: Key <key>`, marked sensitive (kept out of reqwest's debug output); the
/// text it is made from is wiped.
fn key_header(secret: &str) -> Result<HeaderValue, JobError> {
    let text = zeroize::Zeroizing::new(format!("Key {secret}"));
    let mut value = HeaderValue::from_str(&text)
        .map_err(|_| internal("the fal key cannot be sent in an HTTP header"))?;
    value.set_sensitive(true);
    Ok(value)
}

/// The fetched image as a data URI ([`data_uri::fitted`]), so that fal never has to reach
/// the producer's URL, and what we checked is what is used. fal's client ships helpers that
/// make such URIs for file inputs (`fal_client.encode_image`), and fal's CDN page says models
/// accept them (docs/provider-protocols.md §8.2). An image whose URI would exceed
/// [`MAX_DATA_URI_BYTES`] is re-encoded within [`SHRUNK_MAX_SIDE`] pixels a side; only one
/// that still does not fit is refused as `invalid_request`.
async fn inline_image(images: &ImageWork, image: &InputImage) -> Result<String, JobError> {
    data_uri::fitted(images, image, MAX_DATA_URI_BYTES, SHRUNK_MAX_SIDE)
        .await?
        .ok_or_else(|| {
            JobError::permanent(
                ErrorCode::InvalidRequest,
                format!(
                    "the input image is too large to send inline, even re-encoded at {SHRUNK_MAX_SIDE} pixels"
                ),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_ids_split_into_submit_path_and_queue_root() {
        let path = parse_app_id("fal-ai/kling-video/v2.1/master/image-to-video").unwrap();
        assert_eq!(queue_root_of(&path), ["fal-ai", "kling-video"]);
        let path = parse_app_id("fal-ai/stable-video").unwrap();
        assert_eq!(queue_root_of(&path), ["fal-ai", "stable-video"]);
        let path = parse_app_id("workflows/someone/flow/run").unwrap();
        assert_eq!(queue_root_of(&path), ["workflows", "someone", "flow"]);
        for bad in [
            "",
            "fal-ai",
            "workflows/x",
            "fal-ai//x",
            "fal-ai/../x",
            "a/b c",
            "a/b?c=1",
        ] {
            assert!(parse_app_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn request_refs_round_trip_and_refuse_anything_else() {
        for id in [
            "fal-ai/kling-video/requests/764cabcf-b745-4b3e-ae38-1200304cf45b",
            "workflows/someone/flow/requests/abc",
        ] {
            assert_eq!(RequestRef::parse(id).unwrap().job_id(), id);
        }
        for bad in [
            "",
            "764cabcf",
            "fal-ai/kling-video/764cabcf",
            "fal-ai/kling-video/v2.1/requests/x",
            "fal-ai/kling-video/requests/",
            "fal-ai/kling-video/requests/a/b",
            "fal-ai/kling-video/requests/..",
            "fal-ai/kling-video/requests/a%2Fb",
            "fal-ai/kling-video/status/x",
        ] {
            let err = RequestRef::parse(bad).unwrap_err();
            assert_eq!(err.code, ErrorCode::Internal, "{bad}");
        }
        let base = Url::parse("http://127.0.0.1:9/fal").unwrap();
        let r = RequestRef::parse("fal-ai/kling-video/requests/r1").unwrap();
        assert_eq!(
            r.url(&base, Some("status")).as_str(),
            "http://127.0.0.1:9/fal/fal-ai/kling-video/requests/r1/status"
        );
    }

    #[test]
    fn the_rest_host_is_fals_unless_the_base_url_is_a_simulators() {
        for (base, rest) in [
            ("https://queue.fal.run", "https://rest.fal.ai/"),
            ("https://queue.falrun.com/", "https://rest.fal.ai/"),
            ("https://fal.run", "https://rest.fal.ai/"),
            (
                "http://127.0.0.1:9000/fal",
                "http://127.0.0.1:9000/fal-rest",
            ),
            (
                "http://127.0.0.1:9000/fal/",
                "http://127.0.0.1:9000/fal-rest",
            ),
            ("https://127.0.0.1:9443", "https://127.0.0.1:9443/fal-rest"),
            (
                "http://sim.local/byok/fal",
                "http://sim.local/byok/fal-rest",
            ),
            (
                "https://notfal.run.example",
                "https://notfal.run.example/fal-rest",
            ),
        ] {
            let base = Url::parse(base).unwrap();
            assert_eq!(rest_base_for(&base).as_str(), rest, "{base}");
        }
    }

    #[test]
    fn durations_are_written_as_the_app_types_them() {
        assert_eq!(DurationFormat::String.write(5), Value::from("5"));
        assert_eq!(DurationFormat::Integer.write(5), Value::from(5));
        assert_eq!(DurationFormat::SecondsSuffix.write(9), Value::from("9s"));
    }

    #[test]
    fn completed_errors_are_classified_by_error_type() {
        let e = |json: Value| completed_error(&json, "k");
        assert!(e(serde_json::json!({"status": "COMPLETED"})).is_none());
        assert!(
            e(serde_json::json!({"status": "COMPLETED", "error": null, "error_type": ""}))
                .is_none()
        );
        let timeout =
            e(serde_json::json!({"error": "Request timed out", "error_type": "request_timeout"}))
                .unwrap();
        assert_eq!(
            (timeout.code, timeout.is_retryable()),
            (ErrorCode::ProviderUnavailable, true)
        );
        let runner = e(serde_json::json!({"error_type": "runner_disconnected"})).unwrap();
        assert!(runner.is_retryable());
        let moderated =
            e(serde_json::json!({"error": "flagged", "error_type": "content_policy_violation"}))
                .unwrap();
        assert_eq!(
            (moderated.code, moderated.is_retryable()),
            (ErrorCode::ContentRejected, false)
        );
        let unknown = e(serde_json::json!({"error": "boom with k inside"})).unwrap();
        assert_eq!(
            (unknown.code, unknown.is_retryable()),
            (ErrorCode::ProviderUnavailable, false)
        );
        assert!(
            unknown.message.contains("[REDACTED]") && !unknown.message.contains(" k "),
            "{}",
            unknown.message
        );
    }

    #[test]
    fn video_urls_are_found_in_the_output() {
        let one = serde_json::json!({"video": {"url": " https://v3.fal.media/files/a/out.mp4 ", "content_type": "video/mp4"}});
        assert_eq!(
            video_url_of(&one).as_deref(),
            Some("https://v3.fal.media/files/a/out.mp4")
        );
        let list = serde_json::json!({"videos": [{"url": ""}, {"url": "https://x/y.mp4"}]});
        assert_eq!(video_url_of(&list).as_deref(), Some("https://x/y.mp4"));
        assert_eq!(
            video_url_of(&serde_json::json!({"video": "https://x"})),
            None
        );
        assert_eq!(video_url_of(&serde_json::json!({"images": []})), None);
    }

    #[test]
    fn locks_for_money_are_told_from_other_locks() {
        let balance = "User is locked. Reason: Exhausted balance. Top up your balance at fal.ai/dashboard/billing.";
        assert!(locked_reason(balance).is_some_and(locked_for_balance));
        assert!(locked_reason("User is locked. Reason: TOP_UP.").is_some_and(locked_for_balance));
        let admin = "User is locked. Reason: Admin lock. Please contact support@fal.ai";
        assert!(locked_reason(admin).is_some_and(|r| !locked_for_balance(r)));
        assert!(locked_reason("Forbidden").is_none());
    }
}
