//! A [`VideoProvider`] built from a [`Definition`]: the same pacing, classification,
//! downloads and credential handling as the adapters written in Rust, driven by the
//! definition's requests, pointers and tables.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use byok_core::{Catalogue, ErrorCode, JobError, Mode, ProviderId};
use minijinja::Environment;
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, HeaderMap, HeaderName, HeaderValue};
use secrecy::ExposeSecret;
use serde_json::Value;
use url::Url;
use zeroize::Zeroize;

use super::template::text_env;
use super::{Auth, Definition, Method};
use crate::classify::{self, Answer, MAX_THROTTLE_WAIT};
use crate::credentials::{self, CredentialsKind};
use crate::data_uri;
use crate::download::{Expired, OutputDownloads};
use crate::fetch::ImageWork;
use crate::generation::internal;
use crate::http::{self, Body};
use crate::pace::Outbound;
use crate::registry::{Setup, Text};
use crate::vertex::TokenSource;
use crate::{
    CancelOutcome, CredentialCheck, CredentialField, Credentials, CredentialsError, RegistryError,
    RegistryOptions, RemoteStatus, SavedVideo, SubmitRequest, Submitted, VideoOutput,
    VideoProvider,
};

/// The largest input image sent inline, as a data URI (most video APIs accept 10 MB).
const MAX_DATA_URI_BYTES: usize = 10_000_000;
/// Longest side of an input image re-encoded to fit [`MAX_DATA_URI_BYTES`].
const SHRUNK_MAX_SIDE: u32 = 2048;
/// The most of a submit or poll answer read: some APIs echo the request, inline input
/// image included, in their answers (Replicate's do too).
const MAX_ANSWER_BYTES: usize = 8 * 1024 * 1024;
/// The name of the auth value's compiled template.
const AUTH_TEMPLATE: &str = "auth";

/// The adapter of one declared provider.
pub(crate) struct DeclarativeProvider {
    id: ProviderId,
    definition: Arc<Definition>,
    descriptor: crate::ProviderDescriptor,
    catalogue: Catalogue,
    base_url: Url,
    http: reqwest::Client,
    /// The definition's fixed headers and `Accept: application/json`, parsed once.
    headers: HeaderMap,
    /// The auth value's template, compiled once (header and query auth).
    auth_template: Option<Environment<'static>>,
    /// `errors.wait_header`, parsed once.
    wait_header: Option<HeaderName>,
    /// `(name, required)` of each credential field, in the definition's order.
    fields: Vec<(String, bool)>,
    outbound: Outbound,
    downloads: OutputDownloads,
    images: ImageWork,
}

impl std::fmt::Debug for DeclarativeProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeclarativeProvider")
            .field("id", &self.id)
            .field("base_url", &self.base_url.as_str())
            .finish_non_exhaustive()
    }
}

/// Builds the adapter of `definition` (declared in `options`).
pub(crate) fn build(
    definition: &Arc<Definition>,
    options: &RegistryOptions,
    http: reqwest::Client,
    tokens: Arc<TokenSource>,
) -> Result<Arc<dyn VideoProvider>, RegistryError> {
    let id: ProviderId = definition.id.parse().map_err(|_| {
        RegistryError::BadDefinition(format!("provider `{}` was not declared", definition.id))
    })?;
    let text = Text {
        display_name: Cow::Owned(definition.display_name.clone()),
        description: Cow::Owned(definition.description.clone()),
        icon: Cow::Owned(definition.icon.clone()),
        credential_fields: definition
            .credential_fields
            .iter()
            .map(|f| CredentialField {
                name: Cow::Owned(f.name.clone()),
                label: Cow::Owned(f.label.clone()),
                required: f.required,
                secret: true,
                kind: Cow::Borrowed("string"),
                description: Cow::Owned(f.description.clone()),
            })
            .collect(),
    };
    let defined = || Ok(definition.catalogue());
    let setup = Setup::of(id, text, defined, options, http, tokens)?;
    Ok(Arc::new(DeclarativeProvider::new(
        id,
        Arc::clone(definition),
        setup,
    )?))
}

impl DeclarativeProvider {
    fn new(
        id: ProviderId,
        definition: Arc<Definition>,
        setup: Setup<'_>,
    ) -> Result<DeclarativeProvider, RegistryError> {
        let bad =
            |reason: String| RegistryError::BadDefinition(format!("provider `{id}`: {reason}"));
        // Output URLs are usually presigned for a while; a refused one is worth a fresh poll.
        let expired: Expired = |host, status| {
            format!(
                "the output URL at {host} was refused (HTTP {status}); it has probably \
                 expired: poll the job again for a fresh one"
            )
        };
        let name = definition.display_name.clone();
        let downloads = OutputDownloads::new(&setup, name.clone(), Some(expired))?;
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        for (header, value) in &definition.headers {
            // Checked at load; checked again rather than trusted.
            let header = HeaderName::from_bytes(header.as_bytes())
                .map_err(|_| bad(format!("header `{header}` is not a valid name")))?;
            let value = HeaderValue::from_str(value)
                .map_err(|_| bad(format!("header `{header}` has an invalid value")))?;
            headers.insert(header, value);
        }
        let auth_template = match &definition.auth {
            Auth::Bearer(_) => None,
            Auth::Header(t) | Auth::Query(t) => {
                let mut env = text_env();
                env.add_template_owned(AUTH_TEMPLATE, t.value.clone())
                    .map_err(|e| bad(format!("the auth value does not compile: {}", e.kind())))?;
                Some(env)
            }
        };
        let wait_header = definition
            .errors
            .wait_header
            .as_deref()
            .map(|h| {
                HeaderName::from_bytes(h.as_bytes())
                    .map_err(|_| bad(format!("errors.wait_header `{h}` is not a header name")))
            })
            .transpose()?;
        let fields = definition
            .credential_fields
            .iter()
            .map(|f| (f.name.clone(), f.required))
            .collect();
        // An answer that carries the video itself may be as large as a video, base64-encoded.
        let answer_limit = if definition.poll.video_base64.is_some() {
            http::MAX_VIDEO_BYTES / 3 * 4 + MAX_ANSWER_BYTES
        } else {
            MAX_ANSWER_BYTES
        };
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
        Ok(DeclarativeProvider {
            id,
            base_url: http::parse_base_url(id, &options.base_url)?,
            definition,
            descriptor,
            catalogue,
            http,
            headers,
            auth_template,
            wait_header,
            fields,
            outbound: Outbound::new(pace, name, request_timeout).with_answer_limit(answer_limit),
            downloads,
            images,
        })
    }

    /// The definition's name for messages.
    fn name(&self) -> &str {
        &self.definition.display_name
    }

    /// The values of these credentials, or the check's answer for another provider's.
    fn values<'c>(
        &self,
        credentials: &'c Credentials,
    ) -> Option<&'c [(String, secrecy::SecretString)]> {
        match credentials.kind() {
            CredentialsKind::Fields { values } if credentials.provider() == self.id => Some(values),
            _ => None,
        }
    }

    /// A request of `method` to `path` (after the base URL; may carry a query), with the
    /// definition's headers and the credentials put where the definition says. Returns it
    /// with every secret that must not appear in a message.
    fn request(
        &self,
        method: Method,
        path: &str,
        values: &[(String, secrecy::SecretString)],
    ) -> Result<(reqwest::RequestBuilder, Secrets), JobError> {
        let mut url = self.url(path);
        let mut secrets = Secrets(
            values
                .iter()
                .map(|(_, v)| v.expose_secret().to_owned())
                .collect(),
        );
        let method = match method {
            Method::Get => reqwest::Method::GET,
            Method::Post => reqwest::Method::POST,
            Method::Put => reqwest::Method::PUT,
            Method::Patch => reqwest::Method::PATCH,
            Method::Delete => reqwest::Method::DELETE,
        };
        let rendered = match (&self.definition.auth, &self.auth_template) {
            (Auth::Bearer(_), _) | (_, None) => None,
            (_, Some(env)) => Some(self.render_auth(env, values)?),
        };
        if let (Auth::Query(t), Some(value)) = (&self.definition.auth, &rendered) {
            url.query_pairs_mut().append_pair(&t.name, value);
        }
        let mut request = self.http.request(method, url).headers(self.headers.clone());
        match &self.definition.auth {
            Auth::Bearer(b) => {
                let token = values
                    .iter()
                    .find(|(name, _)| *name == b.field)
                    .map(|(_, v)| v.expose_secret())
                    .ok_or_else(|| {
                        internal(&format!("{} credentials lack `{}`", self.id, b.field))
                    })?;
                // The formatted copy of the key is wiped once the header holds it.
                let bearer = zeroize::Zeroizing::new(format!("Bearer {token}"));
                let mut value = HeaderValue::from_str(&bearer)
                    .map_err(|_| internal("the key cannot be sent in a header"))?;
                value.set_sensitive(true);
                request = request.header(reqwest::header::AUTHORIZATION, value);
            }
            Auth::Header(t) => {
                let rendered = rendered.as_deref().unwrap_or_default();
                let mut value = HeaderValue::from_str(rendered)
                    .map_err(|_| internal("the key cannot be sent in a header"))?;
                value.set_sensitive(true);
                request = request.header(t.name.as_str(), value);
            }
            Auth::Query(_) => {}
        }
        if let Some(value) = rendered {
            secrets.0.push(value);
        }
        Ok((request, secrets))
    }

    /// The auth value from the credential fields. Copies of the secrets are wiped after.
    fn render_auth(
        &self,
        env: &Environment<'static>,
        values: &[(String, secrecy::SecretString)],
    ) -> Result<String, JobError> {
        let mut context: BTreeMap<&str, String> = values
            .iter()
            .map(|(k, v)| (k.as_str(), v.expose_secret().to_owned()))
            .collect();
        // Optional fields not given are empty, not undefined.
        for (name, _) in &self.fields {
            context.entry(name.as_str()).or_default();
        }
        let rendered = env
            .get_template(AUTH_TEMPLATE)
            .and_then(|t| t.render(&context))
            .map_err(|_| internal(&format!("the auth value of {} could not be made", self.id)));
        for value in context.values_mut() {
            value.zeroize();
        }
        rendered
    }

    /// `base_url` + `path`, whose query (if any) is kept.
    fn url(&self, path: &str) -> Url {
        let (path, query) = match path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path, None),
        };
        let mut url = http::endpoint(&self.base_url, path);
        url.set_query(query);
        url
    }

    /// How long a throttled answer says to wait: the standard headers, else the
    /// definition's `errors.wait_header` (seconds).
    fn wait(&self, headers: &HeaderMap) -> Option<Duration> {
        classify::retry_after(headers, SystemTime::now()).or_else(|| {
            let name = self.wait_header.as_ref()?;
            let seconds: f64 = headers.get(name)?.to_str().ok()?.trim().parse().ok()?;
            (seconds.is_finite() && seconds >= 0.0)
                .then(|| Duration::from_secs_f64(seconds).min(MAX_THROTTLE_WAIT))
        })
    }

    /// The error of a failed answer, classified by the definition.
    fn failed(&self, answer: &Answer, secrets: &Secrets) -> JobError {
        let body = answer.body.json();
        let mut error = self.definition.classify_status(
            answer.status.as_u16(),
            body.as_ref(),
            self.wait(&answer.headers),
        );
        error.message = http::sanitize(&error.message, &secrets.as_strs());
        error
    }
}

/// A job id to put in a path: one the worker recorded, so never empty unless a caller erred.
fn require_job_id(job_id: &str) -> Result<(), JobError> {
    if job_id.is_empty() {
        return Err(internal("an empty provider job id"));
    }
    Ok(())
}

/// Copies of the secrets of one request, for scrubbing messages; wiped when dropped.
struct Secrets(Vec<String>);

impl Secrets {
    fn as_strs(&self) -> Vec<&str> {
        self.0.iter().map(String::as_str).collect()
    }
}

impl Drop for Secrets {
    fn drop(&mut self) {
        for secret in &mut self.0 {
            secret.zeroize();
        }
    }
}

#[async_trait::async_trait]
impl VideoProvider for DeclarativeProvider {
    fn id(&self) -> ProviderId {
        self.id
    }

    fn descriptor(&self) -> &crate::ProviderDescriptor {
        &self.descriptor
    }

    fn catalogue(&self) -> &Catalogue {
        &self.catalogue
    }

    fn parse_credentials(&self, raw: &Value) -> Result<Credentials, CredentialsError> {
        let fields: Vec<(&str, bool)> = self
            .fields
            .iter()
            .map(|(name, required)| (name.as_str(), *required))
            .collect();
        credentials::parse_fields(self.id, raw, &fields)
    }

    async fn check_credentials(&self, credentials: &Credentials) -> CredentialCheck {
        let Some(values) = self.values(credentials) else {
            return credentials::wrong_provider(credentials, self.id);
        };
        let check = &self.definition.key_check;
        let (request, secrets) = match self.request(check.method, &check.path, values) {
            Ok(built) => built,
            Err(e) => {
                return CredentialCheck::Unavailable { reason: e.message };
            }
        };
        let (status, body) = match self.outbound.check(request, &secrets.as_strs()).await {
            Ok(answer) => answer,
            Err(check) => return check,
        };
        key_check_verdict(
            self.name(),
            &check.valid,
            &check.invalid,
            status,
            self.detail(&body, &secrets),
        )
    }

    async fn submit(
        &self,
        credentials: &Credentials,
        request: SubmitRequest<'_>,
    ) -> Result<Submitted, JobError> {
        let values = self.job_values(credentials)?;
        let validated = request.request;
        let image = match validated.mode {
            Mode::TextToVideo => None,
            Mode::ImageToVideo => {
                let image = request.image.ok_or_else(|| {
                    internal("an image-to-video job reached submit without its fetched image")
                })?;
                let uri = data_uri::fitted(
                    &self.images,
                    image,
                    MAX_DATA_URI_BYTES,
                    SHRUNK_MAX_SIDE,
                )
                .await?
                .ok_or_else(|| {
                    JobError::permanent(
                        ErrorCode::InvalidRequest,
                        format!(
                            "the input image does not fit in {MAX_DATA_URI_BYTES} bytes even \
                                 re-encoded within {SHRUNK_MAX_SIDE} pixels a side"
                        ),
                    )
                })?;
                Some(uri)
            }
        };
        let body = self.definition.render_submit(validated, image.as_deref())?;
        let path = self.definition.submit_path(&validated.model)?;
        let (builder, secrets) = self.request(self.definition.submit.method, &path, values)?;
        let answer = self
            .outbound
            .submit(builder.json(&body), &secrets.as_strs())
            .await?;
        if !answer.status.is_success() {
            return Err(self.failed(&answer, &secrets));
        }
        // The job exists (and is billed) once the provider said 2xx: an answer we cannot
        // read is an unknown outcome, never a reason to submit again.
        let json = answer.body.json().unwrap_or(Value::Null);
        let provider_job_id = self.definition.job_id(&json)?;
        Ok(Submitted { provider_job_id })
    }

    async fn poll(
        &self,
        credentials: &Credentials,
        provider_job_id: &str,
    ) -> Result<RemoteStatus, JobError> {
        let values = self.job_values(credentials)?;
        require_job_id(provider_job_id)?;
        let path = self.definition.poll_path(provider_job_id);
        let (builder, secrets) = self.request(self.definition.poll.method, &path, values)?;
        let answer = self
            .outbound
            .idempotent(builder, &secrets.as_strs())
            .await?;
        if !answer.status.is_success() {
            // A job the provider no longer knows has nothing left to wait for, unless the
            // definition says what its 404 means.
            if answer.status == StatusCode::NOT_FOUND
                && !self.definition.errors.status.contains_key("404")
            {
                return Err(JobError::permanent(
                    ErrorCode::ProviderUnavailable,
                    format!(
                        "{} no longer knows this job (HTTP 404): it was deleted or has expired",
                        self.name()
                    ),
                ));
            }
            return Err(self.failed(&answer, &secrets));
        }
        let json = answer.body.json().filter(Value::is_object).ok_or_else(|| {
            JobError::transient(
                ErrorCode::ProviderUnavailable,
                format!("{} answered the poll with an unreadable body", self.name()),
            )
        })?;
        let mut status = self.definition.read_poll(&json)?.status;
        if let RemoteStatus::Failed(error) = &mut status {
            error.message = http::sanitize(&error.message, &secrets.as_strs());
        }
        Ok(status)
    }

    async fn cancel(
        &self,
        credentials: &Credentials,
        provider_job_id: &str,
    ) -> Result<CancelOutcome, JobError> {
        let values = self.job_values(credentials)?;
        let (Some(cancel), Some(path)) = (
            self.definition.cancel.as_ref(),
            self.definition.cancel_path(provider_job_id),
        ) else {
            return Ok(CancelOutcome::NotSupported);
        };
        require_job_id(provider_job_id)?;
        let (builder, secrets) = self.request(cancel.method, &path, values)?;
        let answer = self
            .outbound
            .idempotent(builder, &secrets.as_strs())
            .await?;
        match answer.status.as_u16() {
            200..=299 => Ok(CancelOutcome::Cancelled),
            // Already gone: it cannot run (or bill) any more, which is what a cancel is for.
            // A second cancel of the same job lands here too.
            404 | 410 => Ok(CancelOutcome::Cancelled),
            _ => Err(self.failed(&answer, &secrets)),
        }
    }

    /// The video URL, downloaded without any credential (such URLs are signed or public).
    async fn fetch_output(
        &self,
        _credentials: &Credentials,
        output: &VideoOutput,
        dest: &Path,
    ) -> Result<SavedVideo, JobError> {
        self.downloads.fetch_output(output, dest).await
    }
}

impl DeclarativeProvider {
    /// The values of these credentials for a generation call; another provider's are a
    /// caller bug.
    fn job_values<'c>(
        &self,
        credentials: &'c Credentials,
    ) -> Result<&'c [(String, secrecy::SecretString)], JobError> {
        self.values(credentials)
            .ok_or_else(|| credentials::wrong_adapter(credentials, self.id.as_str()))
    }

    /// The provider's message in a key check's answer (`errors.message`), sanitised.
    fn detail(&self, body: &Body, secrets: &Secrets) -> Option<String> {
        let pointer = self.definition.errors.message.as_deref()?;
        let json = body.json()?;
        let text = json.pointer(pointer)?.as_str()?;
        Some(http::sanitize(text, &secrets.as_strs()))
    }
}

/// The verdict of a key check's answer: the definition's `valid` statuses accept the key,
/// its `invalid` ones reject it, and every other answer gives no verdict (a working key
/// marked invalid would stop its owner's jobs).
fn key_check_verdict(
    provider: &str,
    valid: &[u16],
    invalid: &[u16],
    status: StatusCode,
    detail: Option<String>,
) -> CredentialCheck {
    let code = status.as_u16();
    if valid.contains(&code) {
        CredentialCheck::Valid
    } else if invalid.contains(&code) {
        CredentialCheck::Rejected {
            reason: http::with_detail(format!("{provider} rejected the key (HTTP {code})"), detail),
        }
    } else if code == 429 {
        CredentialCheck::Unavailable {
            reason: http::with_detail(
                format!("{provider} is rate limiting requests (HTTP 429); try again later"),
                detail,
            ),
        }
    } else {
        CredentialCheck::Unavailable {
            reason: http::with_detail(
                format!("{provider} answered the key check with HTTP {code}"),
                detail,
            ),
        }
    }
}
