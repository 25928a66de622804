//! Google Veo on Vertex AI (docs/provider-protocols.md §3b).
//!
//! **Credentials**: a service-account key, checked by exchanging it for an access token
//! (see [`crate::vertex`]).
//!
//! **Generation** (docs/provider-protocols.md §3.6–3.8), every call with
//! `Authorization: Bearer <access token>` from the shared [`TokenSource`]:
//!
//! - submit: `POST {base}/v1/projects/{project}/locations/{location}/publishers/google/models/{model}:predictLongRunning`
//!   → `{"name": "projects/…/operations/<id>"}`, the job's provider id;
//! - poll: `POST {base}/v1/{operation name up to /operations/}:fetchPredictOperation` with
//!   `{"operationName": <name>}` → a `google.longrunning.Operation`;
//! - output: inline `bytesBase64Encoded` in the operation, or `gcsUri` objects downloaded
//!   with the GCS JSON API (`GET {storage}/storage/v1/b/{bucket}/o/{object}?alt=media`);
//! - cancel: none documented for `predictLongRunning`, so [`CancelOutcome::NotSupported`].
//!
//! A call answered 401 is retried once with a freshly exchanged token (the cached one may
//! have been revoked or expired early); a second 401 is `credentials_invalid`.
//!
//! The models whose catalogue entry says `[models.wire] api = "interactions"` (Gemini Omni)
//! are served by Vertex AI's Interactions API instead: [`crate::interactions`] speaks it with
//! this adapter's tokens, pacing and error classification.

use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_PAD_INDIFFERENT};
use byok_core::{ErrorCode, JobError, Mode};
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap};
use reqwest::{Method, StatusCode};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use url::Url;

use crate::classify::{self, Answer, DEFAULT_THROTTLE_WAIT};
use crate::credentials::{self, DEFAULT_LOCATION};
use crate::generation::{internal, write_error};
use crate::http::{self, MAX_BODY_BYTES, MAX_VIDEO_BYTES, SaveError};
use crate::interactions::{self, InteractionName};
use crate::pace::Outbound;
use crate::registry::{ProviderSpec, Setup};
use crate::vertex::{AccessToken, TokenError, TokenSource};
use crate::{
    CancelOutcome, CredentialCheck, CredentialField, Credentials, CredentialsError,
    CredentialsKind, InputImage, ProviderDescriptor, ProviderId, RegistryError, RemoteStatus,
    SavedVideo, ServiceAccountKey, SubmitRequest, Submitted, Video, VideoOutput, VideoProvider,
};

/// The real Cloud Storage host (GCS JSON API).
pub(crate) const DEFAULT_STORAGE_URL: &str = "https://storage.googleapis.com";
const LOCATION_PLACEHOLDER: &str = "{location}";
/// Vertex AI's host after the region in Google's base URL (`{location}-aiplatform.googleapis.com`).
const GOOGLE_VERTEX_HOST: &str = "aiplatform.googleapis.com";
/// Vertex AI's multi-regional locations, which have hosts of their own (google-genai
/// `_MULTI_REGIONAL_LOCATIONS`).
const MULTI_REGIONS: [&str; 2] = ["us", "eu"];
/// The path prefix under which a simulator serves Vertex AI; its Cloud Storage sits next
/// to it under `/storage` (see [`storage_base_for`]).
const SIMULATOR_VERTEX_PREFIX: &str = "/vertex";
/// Who answered, in messages.
pub(crate) const VERTEX: &str = "Vertex AI";
const STORAGE: &str = "Cloud Storage";
/// Longest operation name accepted from Vertex AI (real ones are ~150 characters).
const MAX_OPERATION_NAME_LEN: usize = 1024;
/// Cloud Storage limits: bucket names 3–222 characters, object names 1–1024 bytes.
const MAX_BUCKET_LEN: usize = 222;
const MAX_OBJECT_LEN: usize = 1024;

/// The Veo adapter.
#[derive(Debug)]
pub(crate) struct VeoProvider {
    descriptor: ProviderDescriptor,
    catalogue: byok_core::Catalogue,
    /// `providers.veo.base_url`, possibly containing `{location}`.
    base_url_template: String,
    /// Where `gcsUri` outputs are downloaded from (see [`storage_base_for`]).
    storage_base: Url,
    tokens: Arc<TokenSource>,
    /// For Vertex AI and Cloud Storage: configured (trusted) hosts, redirects not
    /// followed, `request_timeout` per request.
    pub(crate) http: reqwest::Client,
    pub(crate) request_timeout: Duration,
    allow_private_networks: bool,
    /// Token endpoints allowed besides Google's.
    token_uri_allowlist: Vec<Url>,
    /// `providers.veo.max_requests_per_second`: Vertex AI and Cloud Storage requests
    /// (not the token exchanges, which go to Google's OAuth endpoint and are cached).
    pub(crate) outbound: Outbound,
    /// The models served by the Interactions API (from their `[models.wire]`).
    interactions: interactions::Routes,
}

/// The registry's entry for Google Veo.
pub(crate) const SPEC: ProviderSpec = ProviderSpec {
    id: ProviderId::VEO,
    display_name: "Google Veo",
    description: "Google's Veo and Gemini Omni video models on Vertex AI, called \
                  with a Google Cloud service account and billed to its project.",
    icon: "veo",
    credential_fields: &[
        CredentialField {
            name: Cow::Borrowed("service_account"),
            label: Cow::Borrowed("Service account key (JSON)"),
            required: true,
            secret: true,
            kind: Cow::Borrowed("json"),
            description: Cow::Borrowed(
                "The JSON key file of a service account that has the \
                          Vertex AI User role in the project to bill (the file \
                          as an object, or its text).",
            ),
        },
        CredentialField {
            name: Cow::Borrowed("location"),
            label: Cow::Borrowed("Location"),
            required: false,
            secret: false,
            kind: Cow::Borrowed("string"),
            description: Cow::Borrowed("Vertex AI region to run in; default us-central1."),
        },
    ],
    catalogue: include_str!("../catalogue/veo.toml"),
    build: |setup| Ok(Arc::new(VeoProvider::new(setup)?)),
};

impl VeoProvider {
    pub(crate) fn new(setup: Setup<'_>) -> Result<Self, RegistryError> {
        // The registry's client for configured hosts: Google APIs do not redirect, and the
        // base URLs are configuration, so no private-network policy applies.
        let base_url_template = setup.options.base_url.trim().to_owned();
        let interactions = interactions::Routes::of(&setup.catalogue)?;
        let provider = VeoProvider {
            descriptor: setup.descriptor,
            catalogue: setup.catalogue,
            storage_base: storage_base_for(&base_url_template)?,
            base_url_template,
            tokens: setup.tokens,
            http: setup.http,
            request_timeout: setup.request_timeout,
            allow_private_networks: setup.allow_private_networks,
            token_uri_allowlist: setup.token_uri_allowlist,
            outbound: Outbound::new(setup.pace, VERTEX, setup.request_timeout),
            interactions,
        };
        // Validate the template as it will be used.
        provider
            .base_url_for(DEFAULT_LOCATION)
            .map_err(|e| match e {
                RegistryError::BadBaseUrl { reason, .. } => RegistryError::BadBaseUrl {
                    provider: ProviderId::VEO,
                    reason: format!("{reason} (with {LOCATION_PLACEHOLDER} = {DEFAULT_LOCATION})"),
                },
                other => other,
            })?;
        Ok(provider)
    }

    /// The Vertex AI base URL for `location`: `{location}` in the configured base URL is
    /// replaced by it, with google-genai's two exceptions (docs/provider-protocols.md §3.6):
    /// the `global` location has no regional host, so there `{location}-` is dropped
    /// (`https://aiplatform.googleapis.com`), and the multi-regions `us` and `eu` have
    /// their own hosts (`https://aiplatform.us.rep.googleapis.com`).
    pub(crate) fn base_url_for(&self, location: &str) -> Result<Url, RegistryError> {
        let template = &self.base_url_template;
        let regional_host = format!("{LOCATION_PLACEHOLDER}-{GOOGLE_VERTEX_HOST}");
        let url = if location == "global" {
            template
                .replace(&format!("{LOCATION_PLACEHOLDER}-"), "")
                .replace(LOCATION_PLACEHOLDER, location)
        } else if MULTI_REGIONS.contains(&location) && template.contains(&regional_host) {
            template
                .replace(
                    &regional_host,
                    &format!("aiplatform.{location}.rep.googleapis.com"),
                )
                .replace(LOCATION_PLACEHOLDER, location)
        } else {
            template.replace(LOCATION_PLACEHOLDER, location)
        };
        http::parse_base_url(ProviderId::VEO, &url)
    }

    /// `{base}/v1/projects/{project}/locations/{location}/publishers/google/models/{model}:{method}`.
    fn model_url(
        &self,
        account: &ServiceAccountKey,
        location: &str,
        model: &str,
        method: &str,
    ) -> Result<Url, JobError> {
        let base = self.base_url(location)?;
        let last = format!("{model}:{method}");
        Ok(http::with_segments(
            &base,
            &[
                "v1",
                "projects",
                &account.project_id,
                "locations",
                location,
                "publishers",
                "google",
                "models",
                &last,
            ],
        ))
    }

    pub(crate) fn base_url(&self, location: &str) -> Result<Url, JobError> {
        // The template was checked at start-up and locations are `[a-z0-9-]{1,40}`, so
        // this cannot fail in practice; if it does, it is our configuration's fault.
        self.base_url_for(location)
            .map_err(|e| internal(&format!("no usable Vertex AI URL: {e}")))
    }

    /// A Vertex AI call (Veo's and the Interactions API's) as every one is sent: the access
    /// token and `Accept: application/json`.
    pub(crate) fn vertex_request(
        &self,
        method: Method,
        url: &Url,
        token: &AccessToken,
    ) -> reqwest::RequestBuilder {
        self.http
            .request(method, url.clone())
            .bearer_auth(token.secret().expose_secret())
            .header(ACCEPT, "application/json")
    }

    /// Makes one Vertex AI (or Cloud Storage) call with the account's access token, and
    /// **refreshes once on 401**: the cached token is forgotten, a new one is exchanged
    /// and the call is made again. Whatever the second attempt answers (a second 401
    /// included, which the caller classifies as `credentials_invalid`) is returned, with
    /// the token it was made with (for redaction).
    ///
    /// Retrying a submit after a 401 is safe: an unauthenticated request is refused
    /// before Vertex AI creates anything.
    pub(crate) async fn authorized<R, F, Fut>(
        &self,
        account: &ServiceAccountKey,
        mut call: F,
    ) -> Result<(R, AccessToken), JobError>
    where
        R: Answered,
        F: FnMut(AccessToken) -> Fut,
        Fut: Future<Output = Result<R, JobError>>,
    {
        let token = self.tokens.token(account).await.map_err(token_error)?;
        let answer = call(token.clone()).await?;
        if answer.status() != StatusCode::UNAUTHORIZED {
            return Ok((answer, token));
        }
        self.tokens.invalidate(account);
        let token = self.tokens.token(account).await.map_err(token_error)?;
        let answer = call(token.clone()).await?;
        Ok((answer, token))
    }

    /// Sends a repeatable request whose answer may be large (a poll carrying the video
    /// inline, a download): a success is read up to [`MAX_VIDEO_BYTES`], anything else up
    /// to [`MAX_BODY_BYTES`] (an error body is small; more is not an error body). With
    /// [`Expect::Video`], a success serving `video/*` is left unread in
    /// [`LargeAnswer::video`], to be streamed into a file, and a success that is not
    /// `video/*` is read only up to [`MAX_BODY_BYTES`]: it is reported, not kept.
    /// Transport failures are transient.
    async fn send_large(
        &self,
        request: reqwest::RequestBuilder,
        provider: &str,
        expect: Expect,
        token: &AccessToken,
    ) -> Result<LargeAnswer, JobError> {
        let failed = |err: &reqwest::Error| self.unreachable(provider, err, token);
        let response = self.outbound.send(request).await.map_err(|e| failed(&e))?;
        let status = response.status();
        let headers = response.headers().clone();
        if matches!(expect, Expect::Video) && status.is_success() && video_type(&headers).is_some()
        {
            return Ok(LargeAnswer {
                status,
                headers,
                body: None,
                video: Some(response),
            });
        }
        let limit = match expect {
            _ if !status.is_success() => MAX_BODY_BYTES,
            Expect::Video => MAX_BODY_BYTES,
            Expect::Json => MAX_VIDEO_BYTES,
        };
        let body = http::read_limited(response, limit)
            .await
            .map_err(|e| failed(&e))?;
        Ok(LargeAnswer {
            status,
            headers,
            body,
            video: None,
        })
    }

    /// A poll of Vertex AI (Veo's `fetchPredictOperation`, an Interactions get): `request`
    /// sent with the account's token, refreshed once on 401, and its answer read up to
    /// [`MAX_VIDEO_BYTES`] because it may carry the video inline. A success goes to `parse`,
    /// any other answer to `refused` to be classified, each with the secrets to redact.
    pub(crate) async fn poll_large(
        &self,
        account: &ServiceAccountKey,
        request: impl Fn(&AccessToken) -> reqwest::RequestBuilder,
        refused: impl FnOnce(&LargeAnswer, &[&str]) -> JobError,
        parse: impl FnOnce(&[u8], &[&str]) -> Result<RemoteStatus, JobError>,
    ) -> Result<RemoteStatus, JobError> {
        let (answer, token) = self
            .authorized(account, |token| {
                let request = request(&token);
                async move { self.send_large(request, VERTEX, Expect::Json, &token).await }
            })
            .await?;
        let secrets = [token.secret().expose_secret()];
        if !answer.status.is_success() {
            return Err(refused(&answer, &secrets));
        }
        match &answer.body {
            Some(bytes) => parse(bytes, &secrets),
            None => Err(too_large(VERTEX)),
        }
    }

    /// A request to `provider` that got no (complete) answer: transient.
    fn unreachable(&self, provider: &str, err: &reqwest::Error, token: &AccessToken) -> JobError {
        let what = http::describe_transport_error(err, self.request_timeout);
        JobError::transient(
            ErrorCode::ProviderUnavailable,
            format!(
                "{provider} could not be reached: {}",
                http::sanitize(&what, &[token.secret().expose_secret()])
            ),
        )
    }

    /// Downloads `gs://bucket/object` with the GCS JSON API into `dest`.
    async fn download(
        &self,
        account: &ServiceAccountKey,
        uri: &str,
        dest: &Path,
    ) -> Result<SavedVideo, JobError> {
        let (bucket, object) = parse_gcs_uri(uri).ok_or_else(|| {
            JobError::permanent(
                ErrorCode::ProviderUnavailable,
                "the video's Cloud Storage location is not a usable gs://bucket/object URI",
            )
        })?;
        let mut url = http::with_segments(
            &self.storage_base,
            &["storage", "v1", "b", bucket, "o", object],
        );
        url.set_query(Some("alt=media"));
        let (answer, token) = self
            .authorized(account, |token| {
                let request = self
                    .http
                    .get(url.clone())
                    .bearer_auth(token.secret().expose_secret());
                async move {
                    self.send_large(request, STORAGE, Expect::Video, &token)
                        .await
                }
            })
            .await?;
        let secrets = [token.secret().expose_secret()];
        if !answer.status.is_success() {
            return Err(classify_answer(
                Call::Download,
                answer.status,
                &answer.headers,
                answer.json().as_ref(),
                &secrets,
            ));
        }
        let Some(content_type) = video_type(&answer.headers) else {
            let got = answer
                .headers
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map_or_else(
                    || "no content type".to_owned(),
                    |v| http::sanitize(v, &secrets),
                );
            return Err(JobError::permanent(
                ErrorCode::ProviderUnavailable,
                format!(
                    "{STORAGE} sent {got} instead of a video (HTTP {})",
                    answer.status.as_u16()
                ),
            ));
        };
        let Some(response) = answer.video else {
            return Err(internal("a video answer was read instead of saved"));
        };
        let saved = match http::save_limited(response, MAX_VIDEO_BYTES, dest).await {
            Ok(saved) => saved,
            Err(SaveError::TooLarge) => return Err(too_large(STORAGE)),
            Err(SaveError::Read(e)) => return Err(self.unreachable(STORAGE, &e, &token)),
            Err(SaveError::Write(e)) => return Err(write_error(dest, &e)),
        };
        if saved.size == 0 {
            return Err(JobError::permanent(
                ErrorCode::ProviderUnavailable,
                format!("{STORAGE} sent an empty video"),
            ));
        }
        Ok(SavedVideo {
            size: saved.size,
            content_type,
            note: None,
        })
    }
}

#[async_trait::async_trait]
impl VideoProvider for VeoProvider {
    fn id(&self) -> ProviderId {
        ProviderId::VEO
    }

    fn descriptor(&self) -> &ProviderDescriptor {
        &self.descriptor
    }

    fn catalogue(&self) -> &byok_core::Catalogue {
        &self.catalogue
    }

    fn parse_credentials(&self, raw: &Value) -> Result<Credentials, CredentialsError> {
        credentials::parse_service_account(
            raw,
            self.allow_private_networks,
            &self.token_uri_allowlist,
        )
    }

    /// Exchanges the key for a new access token (never a cached one, so a key revoked
    /// since the last exchange is noticed); the new token then serves jobs from the cache.
    ///
    /// A successful exchange proves the key is live. It does not prove the account may
    /// use Vertex AI in `project_id`: that shows as 403 `PERMISSION_DENIED` on submit.
    async fn check_credentials(&self, credentials: &Credentials) -> CredentialCheck {
        match credentials.kind() {
            CredentialsKind::ServiceAccount { account, .. }
                if credentials.provider() == ProviderId::VEO =>
            {
                match self.tokens.fetch_fresh(account).await {
                    Ok(_) => CredentialCheck::Valid,
                    Err(err) => err.into(),
                }
            }
            _ => credentials::wrong_provider(credentials, ProviderId::VEO),
        }
    }

    /// `POST …/models/{model}:predictLongRunning` with the body of [`submit_body`]; the
    /// operation name Vertex AI answers with is the provider job id. A model of the
    /// Interactions API is created there instead ([`interactions::submit`]).
    async fn submit(
        &self,
        credentials: &Credentials,
        request: SubmitRequest<'_>,
    ) -> Result<Submitted, JobError> {
        let (account, location) = service_account_of(credentials)?;
        let model = request.request.model.as_str();
        if let Some(route) = self.interactions.model(model) {
            return interactions::submit(self, account, location, route, &request).await;
        }
        let body = submit_body(&request)?;
        let url = self.model_url(account, location, model, "predictLongRunning")?;
        let (answer, token) = self
            .authorized(account, |token| {
                let request = self.vertex_request(Method::POST, &url, &token).json(&body);
                async move {
                    self.outbound
                        .submit(request, &[token.secret().expose_secret()])
                        .await
                }
            })
            .await?;
        let json = answer.body.json();
        if answer.status.is_success() {
            // Vertex AI accepted the request, so the job may exist (and be billed) even
            // when its name is unreadable: never re-send it.
            let name = json
                .as_ref()
                .and_then(|j| j.get("name"))
                .and_then(Value::as_str)
                .filter(|name| operation_resource(name).is_some());
            return match name {
                Some(name) => Ok(Submitted {
                    provider_job_id: name.to_owned(),
                }),
                None => Err(JobError::submit_outcome_unknown(format!(
                    "{VERTEX} accepted the submit (HTTP {}) but its answer has no usable \
                     operation name; it is not re-sent, because it may have created a \
                     billable job",
                    answer.status.as_u16()
                ))),
            };
        }
        Err(classify_answer(
            Call::Submit { model },
            answer.status,
            &answer.headers,
            json.as_ref(),
            &[token.secret().expose_secret()],
        ))
    }

    /// `POST {operation name up to /operations/}:fetchPredictOperation` with
    /// `{"operationName": <name>}`; the name embeds the project, location and model, so
    /// nothing else is needed. See [`parse_operation`] for the answer.
    async fn poll(
        &self,
        credentials: &Credentials,
        provider_job_id: &str,
    ) -> Result<RemoteStatus, JobError> {
        let (account, location) = service_account_of(credentials)?;
        if let Some(name) = InteractionName::parse(provider_job_id) {
            return interactions::poll(self, account, &name).await;
        }
        let resource = operation_resource(provider_job_id)
            .ok_or_else(|| internal("the job's provider id is not a Vertex AI operation name"))?;
        let mut segments: Vec<&str> = std::iter::once("v1").chain(resource.split('/')).collect();
        let last = format!(
            "{}:fetchPredictOperation",
            segments.pop().unwrap_or_default()
        );
        segments.push(&last);
        let url = http::with_segments(&self.base_url(location)?, &segments);
        let body = json!({ "operationName": provider_job_id });
        self.poll_large(
            account,
            |token| self.vertex_request(Method::POST, &url, token).json(&body),
            |answer, secrets| {
                classify_answer(
                    Call::Poll,
                    answer.status,
                    &answer.headers,
                    answer.json().as_ref(),
                    secrets,
                )
            },
            parse_operation,
        )
        .await
    }

    /// Vertex AI documents no cancel for `predictLongRunning` operations
    /// (docs/provider-protocols.md §3.6–3.8; google-genai has none for Vertex videos either), so no
    /// request is made: the operation runs to its end and the worker ignores its result.
    /// Interactions have one ([`interactions::cancel`]).
    async fn cancel(
        &self,
        credentials: &Credentials,
        provider_job_id: &str,
    ) -> Result<CancelOutcome, JobError> {
        match InteractionName::parse(provider_job_id) {
            Some(name) => {
                let (account, _) = service_account_of(credentials)?;
                interactions::cancel(self, account, &name).await
            }
            None => Ok(CancelOutcome::NotSupported),
        }
    }

    /// Inline videos are returned as they are; for `gs://` outputs the first object is
    /// downloaded (one video is requested per job: `sampleCount` 1).
    async fn fetch_output(
        &self,
        credentials: &Credentials,
        output: &VideoOutput,
        dest: &Path,
    ) -> Result<SavedVideo, JobError> {
        match output {
            VideoOutput::Inline(video) => video.save(dest).await,
            VideoOutput::Gcs(uris) => {
                let (account, _) = service_account_of(credentials)?;
                let uri = uris.first().ok_or_else(|| {
                    JobError::permanent(
                        ErrorCode::ProviderUnavailable,
                        format!("{VERTEX} finished without naming a video object"),
                    )
                })?;
                self.download(account, uri, dest).await
            }
            VideoOutput::Urls(_) => Err(internal(
                "Veo outputs are inline or in Cloud Storage, never URLs",
            )),
        }
    }
}

/// The service account and location of Veo credentials; anything else is a caller bug.
fn service_account_of(credentials: &Credentials) -> Result<(&ServiceAccountKey, &str), JobError> {
    match credentials.kind() {
        CredentialsKind::ServiceAccount { account, location }
            if credentials.provider() == ProviderId::VEO =>
        {
            Ok((account, location))
        }
        _ => {
            tracing::error!(given = %credentials.provider(), "credentials of another provider were given to the veo adapter");
            Err(internal(&format!(
                "{} credentials were given to the veo adapter",
                credentials.provider()
            )))
        }
    }
}

/// A failed token exchange. A rejected key (`invalid_grant`, …) will not start working
/// on a retry; no verdict (unreachable, 5xx, 429) is transient. The reasons are already
/// sanitised by [`crate::vertex`].
fn token_error(err: TokenError) -> JobError {
    match err {
        TokenError::Rejected { reason } => {
            JobError::permanent(ErrorCode::CredentialsInvalid, reason)
        }
        TokenError::Unavailable { reason } => {
            JobError::transient(ErrorCode::ProviderUnavailable, reason)
        }
    }
}

/// The `predictLongRunning` body (docs/provider-protocols.md §3.7): only the fields that are
/// set, with integers as JSON integers.
///
/// ```json
/// {"instances": [{"prompt": "…", "image": {"bytesBase64Encoded": "…", "mimeType": "image/png"}}],
///  "parameters": {"aspectRatio": "16:9", "durationSeconds": 8, "resolution": "720p",
///                 "negativePrompt": "…", "seed": 42, "sampleCount": 1, "generateAudio": false}}
/// ```
///
/// Not sent: `storageUri` (the video comes back inline), `personGeneration` (Vertex's
/// default, `allow_adult`, is the only value every Veo 3.1 mode accepts), `enhancePrompt`.
fn submit_body(submit: &SubmitRequest<'_>) -> Result<Value, JobError> {
    let request = submit.request;
    let mut instance = Map::new();
    if let Some(prompt) = &request.prompt {
        instance.insert("prompt".into(), prompt.as_str().into());
    }
    if let Some(image) = image_of(submit)? {
        instance.insert(
            "image".into(),
            json!({
                "bytesBase64Encoded": STANDARD.encode(&image.bytes),
                "mimeType": image.content_type,
            }),
        );
    }

    let mut parameters = Map::new();
    if let Some(format) = &request.format {
        parameters.insert("aspectRatio".into(), format.wire.as_str().into());
        if let Some(resolution) = &format.resolution {
            parameters.insert("resolution".into(), resolution.as_str().into());
        }
    }
    if let Some(duration) = request.duration_seconds {
        parameters.insert("durationSeconds".into(), duration.into());
    }
    if let Some(negative) = &request.negative_prompt {
        parameters.insert("negativePrompt".into(), negative.as_str().into());
    }
    if let Some(seed) = request.seed {
        // Vertex's seed is a uint32. The built-in catalogue caps it there; a configured
        // catalogue might not, and a silently wrapped seed would not reproduce anything.
        let seed = u32::try_from(seed).map_err(|_| {
            JobError::permanent(
                ErrorCode::InvalidRequest,
                "seed: Veo takes seeds from 0 to 4294967295",
            )
        })?;
        parameters.insert("seed".into(), seed.into());
    }
    // One video per job: the job stores one result.
    parameters.insert("sampleCount".into(), 1.into());
    // UNVERIFIED which Veo 3 models *require* `generateAudio` (docs/provider-protocols.md
    // §3.7: Google's documentation marks it required for some Veo 3 models). Sent
    // explicitly, it is present wherever it is required, and `false` asks for the cheaper,
    // silent output. (Whether every Veo 3.1 model honours `false` is UNVERIFIED too: the
    // Gemini API documents their audio as always on.)
    parameters.insert("generateAudio".into(), false.into());

    Ok(json!({ "instances": [instance], "parameters": parameters }))
}

/// The input image of a Vertex AI submit (Veo's and the Interactions API's): the fetched image
/// of an image-to-video request, none for text-to-video. An image that does not match the
/// mode is our bug, `internal`.
pub(crate) fn image_of<'a>(submit: &SubmitRequest<'a>) -> Result<Option<&'a InputImage>, JobError> {
    match (submit.request.mode, submit.image) {
        (Mode::ImageToVideo, Some(image)) => Ok(Some(image)),
        (Mode::TextToVideo, None) => Ok(None),
        (Mode::ImageToVideo, None) => {
            Err(internal("an image-to-video request came without its image"))
        }
        (Mode::TextToVideo, Some(_)) => Err(internal("a text-to-video request came with an image")),
    }
}

/// The resource path of an operation name: `projects/P/locations/L/publishers/google/models/M`
/// of `projects/P/locations/L/publishers/google/models/M/operations/ID`, as google-genai's
/// `operation_name.rpartition('/operations/')[0]`.
///
/// The name comes from the provider (and back from the store), and becomes our request
/// path, so it must look like one: at most [`MAX_OPERATION_NAME_LEN`] characters, every
/// segment non-empty, not `.`/`..`, of unreserved URL characters (and `:` inside the
/// project part, which domain-scoped project ids contain), ending in `models/<model>`
/// before `/operations/<id>`.
fn operation_resource(name: &str) -> Option<&str> {
    if name.is_empty() || name.len() > MAX_OPERATION_NAME_LEN {
        return None;
    }
    let (resource, id) = name.rsplit_once("/operations/")?;
    let segments: Vec<&str> = resource.split('/').collect();
    let [.., models, model] = segments[..] else {
        return None;
    };
    let well_formed = models == "models"
        && http::plain_segment(model, false)
        && http::plain_segment(id, false)
        && segments.iter().all(|s| http::plain_segment(s, true));
    well_formed.then_some(resource)
}

/// Where `gcsUri` outputs are downloaded from.
///
/// Google's host, `https://storage.googleapis.com`, when `providers.veo.base_url` is a
/// Google one (it has the `{location}` placeholder, or its host is under
/// `googleapis.com`). Otherwise the base URL is a simulator's, which serves each emulated
/// host under a path prefix of one address: Cloud Storage is then
/// `{base_url without a trailing /vertex}/storage` (`http://127.0.0.1:9000/vertex` →
/// `http://127.0.0.1:9000/storage`). This keeps one setting per provider instead of a
/// storage URL that only tests would ever change.
fn storage_base_for(template: &str) -> Result<Url, RegistryError> {
    let google = || http::parse_base_url(ProviderId::VEO, DEFAULT_STORAGE_URL);
    if template.contains(LOCATION_PLACEHOLDER) {
        return google();
    }
    let base = http::parse_base_url(ProviderId::VEO, template)?;
    if base
        .host_str()
        .is_some_and(|h| h == "googleapis.com" || h.ends_with(".googleapis.com"))
    {
        return google();
    }
    let path = base.path().trim_end_matches('/');
    let prefix = path.strip_suffix(SIMULATOR_VERTEX_PREFIX).unwrap_or(path);
    let mut storage = base.clone();
    storage.set_path(&format!("{prefix}/storage"));
    Ok(storage)
}

/// Splits `gs://bucket/object`. Bucket names are Google's `[a-z0-9._-]{3,222}`; object
/// names any 1–1024 bytes without control characters (they are percent-encoded as one
/// path segment).
pub(crate) fn parse_gcs_uri(uri: &str) -> Option<(&str, &str)> {
    let (bucket, object) = uri.strip_prefix("gs://")?.split_once('/')?;
    let bucket_ok = (3..=MAX_BUCKET_LEN).contains(&bucket.len())
        && bucket.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
        });
    let object_ok =
        (1..=MAX_OBJECT_LEN).contains(&object.len()) && !object.chars().any(char::is_control);
    (bucket_ok && object_ok).then_some((bucket, object))
}

/// The `video/*` media type of an answer, lowercased and without parameters.
fn video_type(headers: &HeaderMap) -> Option<String> {
    http::media_type(headers)
        .filter(|essence| essence.starts_with("video/") && essence.len() > "video/".len())
}

fn too_large(provider: &str) -> JobError {
    // Re-reading would fetch the same bytes again: permanent.
    JobError::permanent(
        ErrorCode::ProviderUnavailable,
        format!(
            "{provider} sent a video larger than {} MiB, which is not kept",
            MAX_VIDEO_BYTES / (1024 * 1024)
        ),
    )
}

/// A `google.longrunning.Operation` as `fetchPredictOperation` returns it. Only what is
/// read is declared; the video's base64 is borrowed from the body rather than copied
/// (it may be hundreds of megabytes).
#[derive(Deserialize)]
struct Operation<'a> {
    #[serde(default)]
    done: Option<Value>,
    #[serde(default)]
    error: Option<Value>,
    #[serde(default, borrow)]
    response: Option<OperationResponse<'a>>,
}

/// `response` of a done operation (G-SDK `_GenerateVideosResponse_from_vertex`).
#[derive(Deserialize, Default)]
struct OperationResponse<'a> {
    #[serde(default, rename = "raiMediaFilteredCount")]
    rai_media_filtered_count: Option<Value>,
    #[serde(default, rename = "raiMediaFilteredReasons")]
    rai_media_filtered_reasons: Option<Value>,
    #[serde(default, borrow)]
    videos: Option<Vec<OperationVideo<'a>>>,
}

#[derive(Deserialize)]
struct OperationVideo<'a> {
    /// Empty when absent. A plain `Cow` field (not an `Option`) so that serde borrows it
    /// from the body instead of copying it.
    #[serde(default, borrow, rename = "bytesBase64Encoded")]
    bytes_base64_encoded: Cow<'a, str>,
    #[serde(default, rename = "gcsUri")]
    gcs_uri: Option<Value>,
    #[serde(default, rename = "mimeType")]
    mime_type: Option<Value>,
}

/// Reads a `fetchPredictOperation` answer (docs/provider-protocols.md §3.8):
///
/// - `done` absent or false: [`RemoteStatus::Queued`]. Vertex AI says nothing about an
///   operation before it is done (no state, no progress), so "accepted, not finished" is
///   all that is known; the job's own status is `running` either way once it has a
///   provider id.
/// - `error` (a `google.rpc.Status`): [`operation_error`].
/// - `response.videos[]` with `bytesBase64Encoded`: the first one, decoded, as
///   [`VideoOutput::Inline`]; with `gcsUri`: all of them as [`VideoOutput::Gcs`].
/// - no video and `raiMediaFilteredCount > 0` (or reasons): `content_rejected`,
///   permanent, with Google's reasons.
/// - done with neither: `provider_unavailable`, permanent.
///
/// An unreadable answer is transient (the next poll may read fine); an undecodable or
/// unusable video is permanent (polling again returns the same one).
fn parse_operation(bytes: &[u8], secrets: &[&str]) -> Result<RemoteStatus, JobError> {
    let operation: Operation<'_> = poll_object(bytes, "operation")?;
    if operation.done != Some(Value::Bool(true)) {
        return Ok(RemoteStatus::Queued);
    }
    if let Some(error) = &operation.error {
        return Ok(operation_error(error, secrets));
    }
    let response = operation.response.unwrap_or_default();
    let videos = response.videos.unwrap_or_default();
    let unusable = |what: &str| {
        JobError::permanent(ErrorCode::ProviderUnavailable, format!("{VERTEX} {what}"))
    };

    if let Some(video) = videos.iter().find(|v| !v.bytes_base64_encoded.is_empty()) {
        let encoded: &str = &video.bytes_base64_encoded;
        let content_type = inline_video_type(video.mime_type.as_ref())
            .ok_or_else(|| unusable("sent an output that is not a video (mimeType)"))?;
        let bytes = STANDARD_PAD_INDIFFERENT
            .decode(encoded.as_bytes())
            .map_err(|_| unusable("sent a video that is not valid base64"))?;
        if bytes.is_empty() {
            return Err(unusable("sent an empty video"));
        }
        return Ok(RemoteStatus::Succeeded(
            VideoOutput::Inline(Video {
                bytes,
                content_type,
                note: None,
            }),
            byok_core::ProviderUsage::NONE,
        ));
    }

    let uris: Vec<&str> = videos
        .iter()
        .filter_map(|v| v.gcs_uri.as_ref()?.as_str())
        .collect();
    if !uris.is_empty() {
        if uris.iter().any(|uri| parse_gcs_uri(uri).is_none()) {
            return Err(unusable(
                "named a video object that is not a usable gs://bucket/object URI",
            ));
        }
        return Ok(RemoteStatus::Succeeded(
            VideoOutput::Gcs(uris.into_iter().map(str::to_owned).collect()),
            byok_core::ProviderUsage::NONE,
        ));
    }

    let filtered = match &response.rai_media_filtered_count {
        Some(Value::Number(n)) => n.as_u64().unwrap_or(0),
        // int64 fields are strings in proto3 JSON; accept both.
        Some(Value::String(s)) => s.trim().parse().unwrap_or(0),
        _ => 0,
    };
    let reasons: Vec<&str> = match &response.rai_media_filtered_reasons {
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if filtered > 0 || !reasons.is_empty() {
        let message = format!(
            "{VERTEX}'s safety filters blocked the video ({} filtered)",
            filtered.max(1)
        );
        let detail = http::sanitize(&reasons.join("; "), secrets);
        return Ok(RemoteStatus::Failed(JobError::permanent(
            ErrorCode::ContentRejected,
            http::with_detail(message, Some(detail)),
        )));
    }
    Ok(RemoteStatus::Failed(JobError::permanent(
        ErrorCode::ProviderUnavailable,
        format!("{VERTEX} finished the operation without a video"),
    )))
}

/// A poll's 200 answer (an operation, an interaction: `what`) read as the JSON object `T`,
/// borrowing from `bytes`. An unreadable one is transient: the next poll may read fine.
pub(crate) fn poll_object<'a, T: Deserialize<'a>>(
    bytes: &'a [u8],
    what: &str,
) -> Result<T, JobError> {
    // serde would also read a struct from a JSON array; the answer is an object.
    if bytes.trim_ascii_start().first() != Some(&b'{') {
        return Err(unreadable_poll(what));
    }
    serde_json::from_slice(bytes).map_err(|_| unreadable_poll(what))
}

/// A poll's 200 answer that does not say what a `what` must (see [`poll_object`]).
pub(crate) fn unreadable_poll(what: &str) -> JobError {
    JobError::transient(
        ErrorCode::ProviderUnavailable,
        format!("{VERTEX} answered the poll with an unreadable {what} (HTTP 200)"),
    )
}

/// The type of an inline video from the answer's MIME type field: any `video/*`
/// (lowercased), MP4 when none is said; `None` for anything else, which is not a video.
pub(crate) fn inline_video_type(mime_type: Option<&Value>) -> Option<String> {
    match mime_type {
        None | Some(Value::Null) => Some("video/mp4".to_owned()),
        Some(Value::String(t)) if t.to_ascii_lowercase().starts_with("video/") => {
            Some(t.to_ascii_lowercase())
        }
        Some(_) => None,
    }
}

/// The name of a gRPC status code, for messages.
fn grpc_name(code: i64) -> Option<&'static str> {
    Some(match code {
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => return None,
    })
}

/// A done operation's `error` (`google.rpc.Status` with a gRPC code):
///
/// | code | outcome |
/// |---|---|
/// | 1 CANCELLED | [`RemoteStatus::Cancelled`] (someone cancelled it at Google) |
/// | 3 INVALID_ARGUMENT | `invalid_request`, permanent |
/// | 7 PERMISSION_DENIED, 16 UNAUTHENTICATED | `credentials_invalid`, permanent |
/// | 8 RESOURCE_EXHAUSTED | `provider_unavailable`, transient |
/// | 4 DEADLINE_EXCEEDED, 13 INTERNAL, 14 UNAVAILABLE | `provider_unavailable`, transient |
/// | 5 NOT_FOUND and the rest | `provider_unavailable`, permanent |
///
/// The operation failed after Vertex AI accepted it, so a transient class here means
/// "a new submit may work", which is the worker's choice; nothing is retried in place.
/// RESOURCE_EXHAUSTED is not a retry-after: the quota was checked (and passed) at
/// submit, the operation carries no `RetryInfo`, and the key is not being throttled now.
/// NOT_FOUND is not `model_retired`: the model was found when the submit was accepted,
/// and the request names no other resource (no input `gcsUri`, no `storageUri`), so the
/// operation lost something of Google's own.
pub(crate) fn operation_error(error: &Value, secrets: &[&str]) -> RemoteStatus {
    let code = error.get("code").and_then(Value::as_i64);
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .map(|m| http::sanitize(m, secrets));
    let label = match (code, code.and_then(grpc_name)) {
        (Some(code), Some(name)) => format!("code {code} {name}"),
        (Some(code), None) => format!("code {code}"),
        (None, _) => "no code".to_owned(),
    };
    let text = |what: &str| {
        http::with_detail(
            format!("the {VERTEX} operation {what} ({label})"),
            message.clone(),
        )
    };
    let error = match code {
        Some(1) => return RemoteStatus::Cancelled,
        Some(3) => JobError::permanent(ErrorCode::InvalidRequest, text("refused the request")),
        Some(7 | 16) => JobError::permanent(
            ErrorCode::CredentialsInvalid,
            text("was refused to the service account"),
        ),
        Some(4 | 8 | 13 | 14) => {
            JobError::transient(ErrorCode::ProviderUnavailable, text("failed"))
        }
        _ => JobError::permanent(ErrorCode::ProviderUnavailable, text("failed")),
    };
    RemoteStatus::Failed(error)
}

/// Which call an HTTP error answered; 404 means something different for each.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Call<'a> {
    Submit { model: &'a str },
    Poll,
    Download,
}

/// Classifies a non-2xx answer of Vertex AI or Cloud Storage (`google.rpc.Status` bodies,
/// `{"error": {"code", "message", "status", "details"}}`; docs/provider-protocols.md §3.4,
/// §3.8, §6):
///
/// - 401 (already after one refresh, see [`VeoProvider::authorized`]): `credentials_invalid`;
/// - 403 `PERMISSION_DENIED` (API disabled, missing IAM role): `credentials_invalid`,
///   permanent: the worker marks the stored credential invalid, which is right, as only
///   the account's owner can fix it;
/// - 404: on submit `model_retired`; on poll the operation is unknown (expired, or of
///   another project) and on download the object is gone, both permanent
///   `provider_unavailable`;
/// - 429 `RESOURCE_EXHAUSTED`: retry-after `RetryInfo.retryDelay`, else the
///   `retry-after-ms` header, else `Retry-After` (seconds or HTTP date), else
///   [`DEFAULT_THROTTLE_WAIT`];
/// - the rest by [`classify::by_status`]: 400 `invalid_request`, 408/5xx transient, ….
///
/// Google's `status` and `message` go into the message, sanitised.
pub(crate) fn classify_answer(
    call: Call<'_>,
    status: StatusCode,
    headers: &HeaderMap,
    json: Option<&Value>,
    secrets: &[&str],
) -> JobError {
    let who = match call {
        Call::Download => STORAGE,
        Call::Submit { .. } | Call::Poll => VERTEX,
    };
    let code = status.as_u16();
    let error = json.and_then(|j| j.get("error"));
    let text = |field: &str| {
        error
            .and_then(|e| e.get(field))
            .and_then(Value::as_str)
            .map(|t| http::sanitize(t, secrets))
            .filter(|t| !t.is_empty())
    };
    let (rpc_status, message) = (text("status"), text("message"));
    let label = match &rpc_status {
        Some(s) => format!("HTTP {code}, {s}"),
        None => format!("HTTP {code}"),
    };
    let with = |prefix: String| http::with_detail(prefix, message.clone());
    match (code, call) {
        (401, _) => JobError::permanent(
            ErrorCode::CredentialsInvalid,
            with(format!(
                "{who} rejected the service account's access token, also a freshly issued one ({label})"
            )),
        ),
        (403, Call::Download) => JobError::permanent(
            ErrorCode::CredentialsInvalid,
            with(format!(
                "{who} denied the service account access to the video ({label})"
            )),
        ),
        (403, _) => JobError::permanent(
            ErrorCode::CredentialsInvalid,
            with(format!(
                "{who} denied the service account ({label}); the Vertex AI API must be enabled in \
                 the project and the account needs the Vertex AI User role"
            )),
        ),
        (404, Call::Submit { model }) => JobError::permanent(
            ErrorCode::ModelRetired,
            with(format!(
                "{who} does not serve the model `{model}` ({label})"
            )),
        ),
        (404, Call::Poll) => JobError::permanent(
            ErrorCode::ProviderUnavailable,
            with(format!("{who} does not know the operation ({label})")),
        ),
        (404, Call::Download) => JobError::permanent(
            ErrorCode::ProviderUnavailable,
            with(format!("the video is not in {who} ({label})")),
        ),
        (429, _) => {
            let wait = json
                .and_then(classify::google_retry_delay)
                .or_else(|| classify::retry_after(headers, SystemTime::now()))
                .unwrap_or(DEFAULT_THROTTLE_WAIT);
            JobError::retry_after(
                wait,
                with(format!("{who} is throttling the project ({label})")),
            )
        }
        _ => {
            let detail = match (rpc_status, message) {
                (Some(s), Some(m)) => Some(format!("{s}: {m}")),
                (s, m) => s.or(m),
            };
            classify::by_status(who, status, headers, detail)
        }
    }
}

/// What a download is expected to be.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// A JSON answer that may carry a video inline.
    Json,
    /// The video itself.
    Video,
}

/// An answer whose status decides the refresh-once rule.
pub(crate) trait Answered {
    fn status(&self) -> StatusCode;
}

impl Answered for Answer {
    fn status(&self) -> StatusCode {
        self.status
    }
}

/// An answer read with [`http::read_limited`]; `body` is `None` when it was over the limit
/// or left unread for streaming (`video`).
pub(crate) struct LargeAnswer {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Option<Vec<u8>>,
    /// With [`Expect::Video`], a success serving `video/*`: its body, not read yet.
    pub(crate) video: Option<reqwest::Response>,
}

impl LargeAnswer {
    pub(crate) fn json(&self) -> Option<Value> {
        serde_json::from_slice(self.body.as_deref()?).ok()
    }
}

impl Answered for LargeAnswer {
    fn status(&self) -> StatusCode {
        self.status
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RegistryOptions;

    /// The real API host; `{location}` is replaced by the credentials' region.
    const DEFAULT_BASE_URL: &str = "https://{location}-aiplatform.googleapis.com";

    fn provider(base_url: &str) -> Result<VeoProvider, RegistryError> {
        let timeout = Duration::from_secs(1);
        let tokens = Arc::new(TokenSource::new(false, timeout).unwrap());
        let mut options = RegistryOptions::defaults();
        options.provider_mut(ProviderId::VEO).unwrap().base_url = base_url.to_owned();
        options.request_timeout = timeout;
        let http = crate::registry::trusted_client(timeout)?;
        VeoProvider::new(Setup::new(&SPEC, &options, http, tokens)?)
    }

    #[test]
    fn base_url_template_is_filled_per_location() {
        let veo = provider(DEFAULT_BASE_URL).unwrap();
        assert_eq!(
            veo.base_url_for("europe-west4").unwrap().as_str(),
            "https://europe-west4-aiplatform.googleapis.com/"
        );
        assert_eq!(
            veo.base_url_for("global").unwrap().as_str(),
            "https://aiplatform.googleapis.com/"
        );
        // google-genai's multi-regional hosts.
        assert_eq!(
            veo.base_url_for("us").unwrap().as_str(),
            "https://aiplatform.us.rep.googleapis.com/"
        );
        assert_eq!(
            veo.base_url_for("eu").unwrap().as_str(),
            "https://aiplatform.eu.rep.googleapis.com/"
        );
        let sim = provider("http://127.0.0.1:9000/vertex").unwrap();
        assert_eq!(
            sim.base_url_for("us-central1").unwrap().as_str(),
            "http://127.0.0.1:9000/vertex"
        );
        assert_eq!(
            sim.base_url_for("us").unwrap().as_str(),
            "http://127.0.0.1:9000/vertex"
        );
        let err = provider("https://{location}.x/?q").unwrap_err();
        assert!(
            err.to_string().starts_with("providers.veo.base_url"),
            "{err}"
        );
    }

    #[test]
    fn storage_is_googles_unless_the_base_url_is_a_simulators() {
        for (base, storage) in [
            (DEFAULT_BASE_URL, "https://storage.googleapis.com/"),
            (
                "https://us-central1-aiplatform.googleapis.com",
                "https://storage.googleapis.com/",
            ),
            (
                "http://127.0.0.1:9000/vertex",
                "http://127.0.0.1:9000/storage",
            ),
            (
                "http://127.0.0.1:9000/vertex/",
                "http://127.0.0.1:9000/storage",
            ),
            ("http://127.0.0.1:9000", "http://127.0.0.1:9000/storage"),
            (
                "http://sim.local/byok/vertex",
                "http://sim.local/byok/storage",
            ),
        ] {
            assert_eq!(
                provider(base).unwrap().storage_base.as_str(),
                storage,
                "{base}"
            );
        }
    }

    #[test]
    fn operation_names_are_split_like_google_genai_and_checked() {
        let name = "projects/p-1/locations/us-central1/publishers/google/models/veo-3.1-generate-001/operations/0f8a-11";
        assert_eq!(
            operation_resource(name),
            Some(
                "projects/p-1/locations/us-central1/publishers/google/models/veo-3.1-generate-001"
            )
        );
        assert!(
            operation_resource(
                "projects/example.com:p/locations/l/publishers/google/models/m/operations/1"
            )
            .is_some()
        );
        for bad in [
            "",
            "abc",
            "projects/p/locations/l/publishers/google/models/m",
            "projects/p/locations/l/publishers/google/models/m/operations/",
            "/operations/1",
            "projects/p/locations/l/publishers/google/models/m/operations/1/2",
            "projects/p/locations/l/publishers/google/models/m:x/operations/1",
            "projects/p/locations/l/publishers/google/datasets/m/operations/1",
            "projects/../locations/l/publishers/google/models/m/operations/1",
            "projects//locations/l/publishers/google/models/m/operations/1",
            "projects/p?x/locations/l/publishers/google/models/m/operations/1",
            "projects/p/locations/l/publishers/google/models/m/operations/1 2",
        ] {
            assert_eq!(operation_resource(bad), None, "{bad}");
        }
        let long = format!(
            "projects/{}/locations/l/publishers/google/models/m/operations/1",
            "p".repeat(1024)
        );
        assert_eq!(operation_resource(&long), None);
    }

    #[test]
    fn gcs_uris_are_split_and_checked() {
        assert_eq!(
            parse_gcs_uri("gs://my-bucket/out/sample_0.mp4"),
            Some(("my-bucket", "out/sample_0.mp4"))
        );
        for bad in [
            "",
            "gs://",
            "gs://bucket",
            "gs://bucket/",
            "gs://UPPER/x",
            "gs://a/x",
            "https://b/x",
            "gs://bucket/a\nb",
        ] {
            assert_eq!(parse_gcs_uri(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn operations_are_read_defensively() {
        let parse = |v: Value| parse_operation(v.to_string().as_bytes(), &["tok"]);
        assert_eq!(parse(json!({"name": "x"})), Ok(RemoteStatus::Queued));
        assert_eq!(
            parse(json!({"name": "x", "done": false})),
            Ok(RemoteStatus::Queued)
        );
        assert_eq!(parse(json!({"done": "yes"})), Ok(RemoteStatus::Queued));
        let video = parse(
            json!({"done": true, "response": {"videos": [{"bytesBase64Encoded": "AAEC", "mimeType": "video/mp4"}]}}),
        );
        assert_eq!(
            video,
            Ok(RemoteStatus::Succeeded(
                VideoOutput::Inline(Video {
                    bytes: vec![0, 1, 2],
                    content_type: "video/mp4".into(),
                    note: None
                }),
                byok_core::ProviderUsage::NONE
            ))
        );
        // The base64 is borrowed from the body, not copied.
        let body = br#"{"done": true, "response": {"videos": [{"bytesBase64Encoded": "AAEC"}]}}"#;
        let operation: Operation<'_> = serde_json::from_slice(body).unwrap();
        let videos = operation.response.unwrap().videos.unwrap();
        assert!(matches!(
            videos[0].bytes_base64_encoded,
            Cow::Borrowed("AAEC")
        ));
        // Unpadded base64 and no mimeType are fine.
        let RemoteStatus::Succeeded(VideoOutput::Inline(v), _) =
            parse(json!({"done": true, "response": {"videos": [{"bytesBase64Encoded": "AAE"}]}}))
                .unwrap()
        else {
            panic!("inline expected");
        };
        assert_eq!(
            (v.bytes, v.content_type.as_str()),
            (vec![0, 1], "video/mp4")
        );

        let rai = parse(json!({"done": true, "response": {"raiMediaFilteredCount": "2", "raiMediaFilteredReasons": ["tok was bad", "child"]}})).unwrap();
        let RemoteStatus::Failed(e) = rai else {
            panic!("{rai:?}")
        };
        assert_eq!(
            (e.code, e.class),
            (ErrorCode::ContentRejected, byok_core::RetryClass::Permanent)
        );
        assert!(
            e.message
                .ends_with("(2 filtered): [REDACTED] was bad; child"),
            "{}",
            e.message
        );

        let empty = parse(json!({"done": true, "response": {"videos": []}})).unwrap();
        assert!(
            matches!(empty, RemoteStatus::Failed(ref e) if e.code == ErrorCode::ProviderUnavailable && !e.is_retryable()),
            "{empty:?}"
        );

        for (bad, retryable) in [
            (
                json!({"done": true, "response": {"videos": [{"bytesBase64Encoded": "!!"}]}}),
                false,
            ),
            (
                json!({"done": true, "response": {"videos": [{"bytesBase64Encoded": "AAEC", "mimeType": "text/html"}]}}),
                false,
            ),
            (
                json!({"done": true, "response": {"videos": [{"gcsUri": "http://x/y"}]}}),
                false,
            ),
            (json!({"done": true, "response": {"videos": "many"}}), true),
            (json!([1, 2]), true),
        ] {
            let err = parse(bad.clone()).unwrap_err();
            assert_eq!(
                (err.code, err.is_retryable()),
                (ErrorCode::ProviderUnavailable, retryable),
                "{bad}"
            );
        }
        assert!(parse_operation(b"{\"done\": tr", &[]).is_err());
    }

    #[test]
    fn operation_errors_map_grpc_codes() {
        use byok_core::RetryClass::{Permanent, Transient};
        for (code, expected) in [
            (3, Some((ErrorCode::InvalidRequest, Permanent))),
            (7, Some((ErrorCode::CredentialsInvalid, Permanent))),
            (16, Some((ErrorCode::CredentialsInvalid, Permanent))),
            (8, Some((ErrorCode::ProviderUnavailable, Transient))),
            (4, Some((ErrorCode::ProviderUnavailable, Transient))),
            (13, Some((ErrorCode::ProviderUnavailable, Transient))),
            (14, Some((ErrorCode::ProviderUnavailable, Transient))),
            (5, Some((ErrorCode::ProviderUnavailable, Permanent))),
            (9, Some((ErrorCode::ProviderUnavailable, Permanent))),
            (99, Some((ErrorCode::ProviderUnavailable, Permanent))),
            (1, None),
        ] {
            let status = operation_error(&json!({"code": code, "message": "why tok"}), &["tok"]);
            match (status, expected) {
                (RemoteStatus::Failed(e), Some((c, class))) => {
                    assert_eq!((e.code, e.class), (c, class), "{code}");
                    assert!(e.message.ends_with("): why [REDACTED]"), "{}", e.message);
                }
                (RemoteStatus::Cancelled, None) => {}
                (other, _) => panic!("{code}: {other:?}"),
            }
        }
    }
}
