//! The client, its settings, and the one way every route module sends a request: [`Call`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use byok_core::ApiErrorResponse;
use bytes::Bytes;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, Response, StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::ClientError;
use crate::provider_ids::{self, Shape};
use crate::retry::{self, RetryPolicy};

/// The header that names a request in the server's logs; the client sends one per call (the
/// same on each retry of it) and reports the server's answer in errors.
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// The header of an answer that replays an `Idempotency-Key` used before.
pub(crate) const REPLAYED: &str = "idempotent-replayed";

/// A client of one byok API with one producer token. Cheap to clone (the connection pool is
/// shared); use one per token for the life of the program.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base: Url,
    /// `Bearer <token>`, marked sensitive: hyper and reqwest never print it.
    authorization: HeaderValue,
    timeout: Duration,
    retry: RetryPolicy,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.inner.base.as_str())
            .field("token", &"[redacted]")
            .field("timeout", &self.inner.timeout)
            .field("retry", &self.inner.retry)
            .finish()
    }
}

/// The settings of a [`Client`]: [`Client::builder`].
#[derive(Clone)]
pub struct ClientBuilder {
    base_url: String,
    token: String,
    timeout: Duration,
    connect_timeout: Duration,
    retry: RetryPolicy,
    user_agent: String,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("base_url", &self.base_url)
            .field("token", &"[redacted]")
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("retry", &self.retry)
            .field("user_agent", &self.user_agent)
            .finish()
    }
}

impl ClientBuilder {
    /// Each attempt's limit for a JSON call, from sending to the end of the answer (default
    /// 30 s). A video download has no overall limit (it may be large); a read that waits
    /// this long for bytes fails it.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The limit for opening a connection (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// When calls are retried ([`RetryPolicy::default`]; [`RetryPolicy::none`] never).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// The `User-Agent` (default `byok-client/<version>`); name your app in it.
    pub fn user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = user_agent.into();
        self
    }

    /// The client, or why these settings cannot make one ([`ClientError::Config`]).
    pub fn build(self) -> Result<Client, ClientError> {
        let base = Url::parse(&self.base_url).map_err(|e| {
            ClientError::Config(format!(
                "the base URL `{}` is not a URL: {e}",
                self.base_url
            ))
        })?;
        if !matches!(base.scheme(), "http" | "https")
            || base.cannot_be_a_base()
            || base.query().is_some()
            || base.fragment().is_some()
        {
            return Err(ClientError::Config(format!(
                "the base URL `{}` must be http(s)://host[:port][/path], without query or fragment",
                self.base_url
            )));
        }
        if self.token.is_empty() {
            return Err(ClientError::Config("the token is empty".to_owned()));
        }
        let mut authorization =
            HeaderValue::from_str(&format!("Bearer {}", self.token)).map_err(|_| {
                ClientError::Config("the token has characters a header cannot carry".to_owned())
            })?;
        authorization.set_sensitive(true);
        if self.retry.max_attempts == 0 {
            return Err(ClientError::Config(
                "retry.max_attempts must be at least 1 (the first attempt)".to_owned(),
            ));
        }
        let http = reqwest::Client::builder()
            .user_agent(self.user_agent)
            .connect_timeout(self.connect_timeout)
            // Per read, so that a download may take as long as it needs while it moves.
            .read_timeout(self.timeout)
            .build()
            .map_err(|e| ClientError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                base,
                authorization,
                timeout: self.timeout,
                retry: self.retry,
            }),
        })
    }
}

impl Client {
    /// A client of the API at `base_url` (e.g. `https://byok.example.com`) acting with
    /// `token` (`byok_…`), with the default settings.
    pub fn new(base_url: &str, token: &str) -> Result<Client, ClientError> {
        Client::builder(base_url, token).build()
    }

    /// Settings for a client of the API at `base_url` acting with `token`.
    pub fn builder(base_url: &str, token: &str) -> ClientBuilder {
        ClientBuilder {
            base_url: base_url.to_owned(),
            token: token.to_owned(),
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            user_agent: concat!("byok-client/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }

    /// The API's base URL.
    pub fn base_url(&self) -> &Url {
        &self.inner.base
    }

    /// A request to the route made of `segments` (each percent-encoded as one segment).
    pub(crate) fn call(&self, method: Method, segments: &[&str]) -> Call<'_> {
        let mut url = self.inner.base.clone();
        url.path_segments_mut()
            // The base was checked to be one in `build`.
            .expect("an http(s) URL has path segments")
            .pop_if_empty()
            .extend(segments);
        Call {
            client: self,
            method,
            url,
            body: None,
            headers: HeaderMap::new(),
            repeatable: true,
            timeout: Some(self.inner.timeout),
        }
    }
}

/// One logical call, sent once or, when it may be repeated, as often as the retry policy
/// says. Route modules build it with [`Client::call`], then send it with one of the
/// `send`/`json` methods.
pub(crate) struct Call<'a> {
    client: &'a Client,
    method: Method,
    url: Url,
    body: Option<Bytes>,
    headers: HeaderMap,
    repeatable: bool,
    timeout: Option<Duration>,
}

impl Call<'_> {
    /// Adds a query parameter.
    pub(crate) fn query(mut self, name: &str, value: &str) -> Self {
        self.url.query_pairs_mut().append_pair(name, value);
        self
    }

    /// A JSON body.
    pub(crate) fn json(mut self, body: &impl Serialize) -> Result<Self, ClientError> {
        let bytes = serde_json::to_vec(body)
            .map_err(|e| ClientError::Config(format!("the request does not serialise: {e}")))?;
        self.body = Some(Bytes::from(bytes));
        Ok(self)
    }

    /// Adds a header.
    pub(crate) fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.insert(name, value);
        self
    }

    /// A create call that is safe to retry only with an `Idempotency-Key`: with one the
    /// key is sent (and the call retried by the policy), without one it is sent once.
    pub(crate) fn idempotent_with(self, key: Option<&crate::IdempotencyKey>) -> Self {
        match key {
            Some(key) => {
                let value = HeaderValue::from_str(key.as_str())
                    .expect("an IdempotencyKey is visible ASCII");
                self.header(IDEMPOTENCY_KEY, value)
            }
            None => self.once(),
        }
    }

    /// Marks the call as one that must not be sent twice: a second attempt could do its
    /// work twice (a job enqueued twice) or answer differently (a cancel already made).
    pub(crate) fn once(mut self) -> Self {
        self.repeatable = false;
        self
    }

    /// No overall time limit (a video download); reads still time out.
    pub(crate) fn streaming(mut self) -> Self {
        self.timeout = None;
        self
    }

    /// Sends the call; the successful answer (2xx), or the error.
    pub(crate) async fn send(self) -> Result<Response, ClientError> {
        let inner = &self.client.inner;
        let policy = inner.retry;
        let request_id = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
            .expect("a UUID is a header value");
        let mut attempt = 1;
        loop {
            let mut request = inner
                .http
                .request(self.method.clone(), self.url.clone())
                .header(AUTHORIZATION, inner.authorization.clone())
                .header(REQUEST_ID, request_id.clone())
                .headers(self.headers.clone());
            if let Some(body) = &self.body {
                request = request
                    .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                    .body(body.clone());
            }
            if let Some(timeout) = self.timeout {
                request = request.timeout(timeout);
            }
            let may_retry = self.repeatable && attempt < policy.max_attempts;
            let wait = match request.send().await {
                Ok(response) if response.status().is_success() => return Ok(response),
                Ok(response) => {
                    let status = response.status();
                    let wait = retry::retry_after(response.headers())
                        .unwrap_or_else(|| policy.backoff_for(attempt));
                    // A wait past the cap is not taken: retrying sooner than the server
                    // said would be refused again, so the caller gets the answer now.
                    if !(may_retry && retry::is_retryable(status) && wait <= policy.max_delay) {
                        return Err(api_error(response).await);
                    }
                    tracing::debug!(
                        method = %self.method,
                        path = self.url.path(),
                        attempt,
                        status = status.as_u16(),
                        wait_ms = wait.as_millis() as u64,
                        "byok API answered a retryable status; retrying"
                    );
                    wait
                }
                // A connection that could not be made sent nothing: safe to repeat for
                // every call that may be repeated at all.
                Err(e) if may_retry && e.is_connect() => {
                    let wait = policy.backoff_for(attempt);
                    tracing::debug!(
                        method = %self.method,
                        path = self.url.path(),
                        attempt,
                        error = %e,
                        wait_ms = wait.as_millis() as u64,
                        "byok API not reachable; retrying"
                    );
                    wait
                }
                Err(e) => return Err(ClientError::Transport(e)),
            };
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// Sends the call and reads its JSON answer.
    pub(crate) async fn json_answer<T: DeserializeOwned>(self) -> Result<T, ClientError> {
        read_json(self.send().await?).await
    }

    /// Sends the call and reads its JSON answer of `shape`, declaring the provider ids it
    /// names that this process did not know ([`provider_ids`]).
    pub(crate) async fn json_with_providers<T: DeserializeOwned>(
        self,
        shape: Shape,
    ) -> Result<(T, HeaderMap), ClientError> {
        let response = self.send().await?;
        let (status, request_id) = (response.status(), request_id_of(&response));
        let headers = response.headers().clone();
        let bytes = response.bytes().await.map_err(ClientError::Transport)?;
        let decoded =
            provider_ids::decode(&bytes, shape).map_err(|source| ClientError::Decode {
                status,
                request_id,
                source,
            })?;
        Ok((decoded, headers))
    }
}

/// The JSON body of a successful answer.
pub(crate) async fn read_json<T: DeserializeOwned>(response: Response) -> Result<T, ClientError> {
    let (status, request_id) = (response.status(), request_id_of(&response));
    let bytes = response.bytes().await.map_err(ClientError::Transport)?;
    serde_json::from_slice(&bytes).map_err(|source| ClientError::Decode {
        status,
        request_id,
        source,
    })
}

pub(crate) fn request_id_of(response: &Response) -> Option<String> {
    response
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The error of an answer that is not a success.
async fn api_error(response: Response) -> ClientError {
    let status = response.status();
    let request_id = request_id_of(&response);
    let retry_after = retry::retry_after(response.headers());
    let bytes = match response.bytes().await {
        Ok(bytes) => bytes,
        Err(e) => return ClientError::Transport(e),
    };
    match serde_json::from_slice::<ApiErrorResponse>(&bytes) {
        Ok(ApiErrorResponse { error }) => ClientError::Api {
            status,
            code: error.code,
            message: error.message,
            details: error.details,
            request_id,
            retry_after,
        },
        Err(_) => ClientError::UnexpectedResponse {
            status,
            body: String::from_utf8_lossy(&bytes[..bytes.len().min(1024)]).into_owned(),
            request_id,
        },
    }
}

/// For responses whose status matters beyond success (`204`).
pub(crate) fn expect_status(response: &Response, expected: StatusCode) -> Result<(), ClientError> {
    if response.status() == expected {
        Ok(())
    } else {
        Err(ClientError::UnexpectedResponse {
            status: response.status(),
            body: format!("expected {expected}"),
            request_id: request_id_of(response),
        })
    }
}
