#![doc = include_str!("../README.md")]

mod auth;
mod batch;
mod batches;
mod budgets;
mod connect;
mod credentials;
mod dashboard;
mod error;
mod events;
mod extract;
mod health;
mod jobs;
mod limits;
mod openapi;
mod pages;
mod projects;
mod providers;
mod recent;
mod routing;
mod server;
mod usage;
mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Request};
use axum::routing::{get, post};
use byok_budgets::Budgets;
use byok_core::{ProjectUser, ProviderId};
use byok_crypto::KeyRing;
use byok_providers::{ImageFetcher, Registry};
use byok_queue::{Engine, Producer};
use byok_ratelimit::RateLimiter;
use byok_store::{ApiToken, KeyValidity, Store, StoreError};
use byok_video_store::VideoStore;
use sha2::{Digest as _, Sha256};

use crate::batch::{EnqueuedMarks, JobInserts};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

pub use byok_metrics::CONTENT_TYPE as METRICS_CONTENT_TYPE;
pub use error::{ApiError, ApiErrorCode};
pub use health::metrics_text;
pub use jobs::IDEMPOTENCY_KEY_HEADER;
pub use limits::EdgeLimits;
pub use server::{ServeOptions, serve};

use crate::jobs::JobsSetup;
pub use openapi::{EXAMPLE_USER_ID, openapi};

/// The header carrying each request's id, echoed on every response.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The parts the API runs on. `byok-app` assembles them from the settings;
/// in `byok run` the store, key ring, registry, queue and fetcher are shared
/// with the worker in the same process.
#[derive(Debug)]
pub struct ApiParts {
    /// Jobs, credentials and tokens.
    pub store: Store,
    /// Seals and opens users' keys.
    pub key_ring: Arc<KeyRing>,
    /// The provider adapters (key checks, validation, the listing).
    pub providers: Arc<Registry>,
    /// Where job ids are pushed; also asked by readiness and `/metrics`.
    pub engine: Arc<dyn Engine>,
    /// Checks `image_url` against the fetch policy at enqueue.
    pub fetcher: Arc<ImageFetcher>,
    /// The budgets: checked at enqueue, set and read by their routes, settled on cancel.
    pub budgets: Budgets,
    /// The per-key rate limits the workers take permits from; the dashboard reads them.
    pub limiter: Arc<dyn RateLimiter>,
    /// Where workers keep finished videos; `GET /v1/jobs/{id}/video` reads
    /// (or presigns) from it.
    pub videos: VideoStore,
    /// `api.max_body_bytes`: larger bodies get 413.
    pub max_body_bytes: usize,
    /// `api.max_batch_body_bytes`: the same for `POST /v1/batches`.
    pub max_batch_body_bytes: usize,
    /// `api.rate_limit`, `api.auth_failure_limit`, `api.trusted_proxies`.
    pub edge_limits: EdgeLimits,
    /// `api.request_timeout`: a request whose response has not started by then gets
    /// 503 `timeout`.
    pub request_timeout: Duration,
    /// Serve `GET /metrics` on this router (false when `api.metrics_listen` moves it to a
    /// listener of its own).
    pub serve_metrics: bool,
    /// `api.public_url`: the base of "connect your key" links.
    pub public_url: Option<String>,
    /// `api.cache_ttl`: how long a token lookup and a user's "has a valid key" answer are
    /// reused (zero: never).
    pub cache_ttl: Duration,
}

/// Everything the handlers share. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
    jobs: Arc<JobsSetup>,
    /// The jobs route's two writes, batched across requests.
    job_inserts: JobInserts,
    enqueued_marks: EnqueuedMarks,
}

struct Inner {
    store: Store,
    budgets: Budgets,
    limiter: Arc<dyn RateLimiter>,
    routing_history: routing::RoutingHistory,
    key_ring: Arc<KeyRing>,
    providers: Arc<Registry>,
    engine: Arc<dyn Engine>,
    max_body_bytes: usize,
    max_batch_body_bytes: usize,
    edge: Arc<limits::Edge>,
    request_timeout: Duration,
    serve_metrics: bool,
    public_url: Option<String>,
    /// Tokens by the SHA-256 of their secret (`recent.rs`).
    recent_tokens: recent::Recent<[u8; 32], ApiToken>,
    /// Users known to have a valid key for a provider (`recent.rs`).
    recent_keys: recent::Recent<ProjectUser, Vec<ProviderId>>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("store", &self.inner.store.backend())
            .field("key_ring", &self.inner.key_ring)
            .field("max_body_bytes", &self.inner.max_body_bytes)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// The state on `parts`. Called inside a Tokio runtime: it starts the
    /// tasks that store new jobs and note pushed ones as enqueued, in
    /// batches across requests.
    pub fn new(parts: ApiParts) -> Self {
        let ApiParts {
            store,
            key_ring,
            providers,
            engine,
            fetcher,
            budgets,
            limiter,
            videos,
            max_body_bytes,
            max_batch_body_bytes,
            edge_limits,
            request_timeout,
            serve_metrics,
            public_url,
            cache_ttl,
        } = parts;
        let jobs = JobsSetup {
            producer: Producer::new(Arc::clone(&engine)),
            fetcher,
            videos,
        };
        Self {
            job_inserts: JobInserts::start(
                store.clone(),
                jobs.producer.clone(),
                jobs::PUSH_TIMEOUT,
            ),
            enqueued_marks: EnqueuedMarks::start(store.clone()),
            jobs: Arc::new(jobs),
            inner: Arc::new(Inner {
                store,
                budgets,
                limiter,
                routing_history: routing::RoutingHistory::default(),
                key_ring,
                providers,
                engine,
                max_body_bytes,
                max_batch_body_bytes,
                edge: limits::Edge::start(edge_limits),
                request_timeout,
                serve_metrics,
                public_url,
                recent_tokens: recent::Recent::new(cache_ttl, RECENT_CAPACITY),
                recent_keys: recent::Recent::new(cache_ttl, RECENT_CAPACITY),
            }),
        }
    }

    pub(crate) fn jobs(&self) -> &JobsSetup {
        &self.jobs
    }

    pub(crate) fn job_inserts(&self) -> &JobInserts {
        &self.job_inserts
    }

    pub(crate) fn enqueued_marks(&self) -> &EnqueuedMarks {
        &self.enqueued_marks
    }

    pub(crate) fn store(&self) -> &Store {
        &self.inner.store
    }

    pub(crate) fn public_url(&self) -> Option<&str> {
        self.inner.public_url.as_deref()
    }

    pub(crate) fn budgets(&self) -> &Budgets {
        &self.inner.budgets
    }

    pub(crate) fn limiter(&self) -> &dyn RateLimiter {
        &*self.inner.limiter
    }

    pub(crate) fn routing_history(&self) -> &routing::RoutingHistory {
        &self.inner.routing_history
    }

    /// The URL policy: image URLs and webhook receivers are checked by it.
    pub(crate) fn fetcher(&self) -> &ImageFetcher {
        &self.jobs.fetcher
    }

    pub(crate) fn key_ring(&self) -> &KeyRing {
        &self.inner.key_ring
    }

    pub(crate) fn providers(&self) -> &Registry {
        &self.inner.providers
    }

    pub(crate) fn engine(&self) -> &dyn Engine {
        self.inner.engine.as_ref()
    }

    pub(crate) fn edge(&self) -> &limits::Edge {
        &self.inner.edge
    }

    /// The active token whose secret is `presented`, from the recent answers or the store.
    pub(crate) async fn authenticate(
        &self,
        presented: &str,
    ) -> Result<Option<ApiToken>, StoreError> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        if let Some(token) = self.inner.recent_tokens.get(&digest) {
            return Ok(Some(token));
        }
        let token = self.store().tokens().authenticate(presented).await?;
        if let Some(token) = &token {
            self.inner.recent_tokens.put(digest, token.clone());
        }
        Ok(token)
    }

    /// Whether `owner` has a key for `provider` and whether it is valid: a valid one from
    /// the recent answers, anything else from the store.
    pub(crate) async fn key_validity(
        &self,
        owner: ProjectUser,
        provider: ProviderId,
    ) -> Result<Option<KeyValidity>, StoreError> {
        let valid = KeyValidity {
            is_valid: true,
            last_error: None,
        };
        if self
            .inner
            .recent_keys
            .get(&owner)
            .is_some_and(|providers| providers.contains(&provider))
        {
            return Ok(Some(valid));
        }
        let read = self.store().credentials().validity(owner, provider).await?;
        if read.as_ref().is_some_and(|k| k.is_valid) {
            let mut providers = self.inner.recent_keys.get(&owner).unwrap_or_default();
            providers.push(provider);
            self.inner.recent_keys.put(owner, providers);
        }
        Ok(read)
    }

    /// `owner`'s keys changed through this process (stored, replaced, checked, deleted):
    /// the next answer comes from the store.
    pub(crate) fn keys_changed(&self, owner: ProjectUser) {
        self.inner.recent_keys.forget(&owner);
    }
}

/// Recent answers kept per kind (`recent.rs`): beyond it the oldest are dropped.
const RECENT_CAPACITY: usize = 100_000;

/// `handler`, refusing tokens without the scope operation `$op` needs
/// (`auth::ROUTE_SCOPES`).
macro_rules! scoped {
    ($handler:path, $op:literal) => {
        $handler.layer(axum::middleware::from_fn_with_state(
            auth::scope_of($op),
            auth::require_scope,
        ))
    };
}

/// The whole HTTP application.
pub fn app(state: AppState) -> Router {
    use axum::handler::Handler as _;
    let v1 = Router::new()
        .route(
            "/providers",
            get(scoped!(providers::list, "list_providers")),
        )
        .route("/projects", get(scoped!(projects::list, "list_projects")))
        .route(
            "/users/{user_id}/providers",
            get(scoped!(credentials::list, "list_credentials")),
        )
        .route(
            "/users/{user_id}/providers/{provider}",
            get(scoped!(credentials::get_one, "get_credentials"))
                .delete(scoped!(credentials::delete, "delete_credentials")),
        )
        .route(
            "/users/{user_id}/providers/{provider}/credentials",
            axum::routing::put(scoped!(credentials::put, "put_credentials")),
        )
        .route(
            "/users/{user_id}/providers/{provider}/test",
            post(scoped!(credentials::test, "test_credentials")),
        )
        .route(
            "/users/{user_id}/providers/{provider}/connect-links",
            post(scoped!(connect::create_link, "create_connect_link")),
        )
        .route("/jobs", post(scoped!(jobs::create, "create_job")))
        .route("/jobs/{job_id}", get(scoped!(jobs::get, "get_job")))
        .route(
            "/jobs/{job_id}/cancel",
            post(scoped!(jobs::cancel, "cancel_job")),
        )
        .route(
            "/jobs/{job_id}/video",
            get(scoped!(jobs::video, "get_job_video")),
        )
        // Streams past the request timeout below, which bounds only the time until the
        // response starts.
        .route(
            "/jobs/{job_id}/events",
            get(scoped!(events::stream, "stream_job_events")),
        )
        .route(
            "/users/{user_id}/jobs",
            get(scoped!(jobs::list, "list_jobs")),
        )
        // Up to 1,000 jobs: a limit of its own, over the one every other route has.
        .route(
            "/batches",
            post(scoped!(batches::create, "create_batch"))
                .layer(DefaultBodyLimit::max(state.inner.max_batch_body_bytes)),
        )
        .route(
            "/batches/{batch_id}",
            get(scoped!(batches::get, "get_batch")),
        )
        .route(
            "/batches/{batch_id}/jobs",
            get(scoped!(batches::jobs, "list_batch_jobs")),
        )
        .route(
            "/batches/{batch_id}/cancel",
            post(scoped!(batches::cancel, "cancel_batch")),
        )
        .route(
            "/webhooks",
            post(scoped!(webhooks::create, "create_webhook"))
                .get(scoped!(webhooks::list, "list_webhooks")),
        )
        .route(
            "/webhooks/job-secret",
            post(scoped!(
                webhooks::rotate_job_secret,
                "rotate_job_webhook_secret"
            )),
        )
        .route(
            "/webhooks/{webhook_id}",
            get(scoped!(webhooks::get_one, "get_webhook"))
                .patch(scoped!(webhooks::update, "update_webhook"))
                .delete(scoped!(webhooks::delete, "delete_webhook")),
        )
        .route(
            "/webhooks/{webhook_id}/rotate-secret",
            post(scoped!(webhooks::rotate_secret, "rotate_webhook_secret")),
        )
        .route(
            "/webhooks/{webhook_id}/deliveries",
            get(scoped!(webhooks::deliveries, "list_webhook_deliveries")),
        )
        .route(
            "/webhooks/deliveries/{delivery_id}/retry",
            post(scoped!(webhooks::retry, "retry_webhook_delivery")),
        )
        .route("/usage", get(scoped!(usage::project, "get_usage")))
        .route(
            "/budget",
            get(scoped!(budgets::project, "get_budget"))
                .put(scoped!(budgets::put_project, "put_budget"))
                .delete(scoped!(budgets::delete_project, "delete_budget")),
        )
        .route(
            "/users/{user_id}/budget",
            get(scoped!(budgets::user, "get_user_budget"))
                .put(scoped!(budgets::put_user, "put_user_budget"))
                .delete(scoped!(budgets::delete_user, "delete_user_budget")),
        )
        .route(
            "/users/{user_id}/usage",
            get(scoped!(usage::user, "get_user_usage")),
        )
        // route_layer: authentication runs only for matched routes, so an
        // unknown path is a 404 for everyone and a 401 never hides a 404.
        // It wraps the scope checks above: 401 before 403.
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ))
        // Until the response starts: a video's body streams past it. Only `/v1`
        // waits on anything a client controls; the probes bound their own waits.
        .route_layer(axum::middleware::from_fn_with_state(
            state.inner.request_timeout,
            limits::time_limit,
        ));

    let request_id = HeaderName::from_static(REQUEST_ID_HEADER);
    let max_body = state.inner.max_body_bytes;
    let mut router = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/openapi.json", get(openapi::openapi_json))
        // The "connect your key" page: no token, the link's secret is the capability.
        .route(
            "/connect/{provider}/{user_id}/{secret}",
            get(connect::page).post(connect::submit),
        )
        .route("/assets/connect.css", get(connect::style))
        // The operator dashboard (docs/dashboard.md): its own sessions, not tokens.
        .route("/dashboard", get(dashboard::overview))
        .route("/dashboard/overview/live", get(dashboard::overview_live))
        .route(
            "/dashboard/sign-in",
            get(dashboard::sign_in_page).post(dashboard::sign_in),
        )
        .route("/dashboard/sign-out", post(dashboard::sign_out))
        .route("/dashboard/queues", get(dashboard::queues))
        .route("/dashboard/queues/retry", post(dashboard::retry_items))
        .route("/dashboard/queues/retry-dead", post(dashboard::retry_dead))
        .route("/dashboard/queues/purge", post(dashboard::purge))
        .route("/dashboard/keys", get(dashboard::keys))
        .route("/dashboard/jobs", get(dashboard::jobs))
        .route("/dashboard/jobs/{job_id}", get(dashboard::job))
        .route("/dashboard/jobs/{job_id}/video", get(dashboard::job_video))
        .route(
            "/dashboard/jobs/{job_id}/cancel",
            post(dashboard::cancel_job),
        )
        .route("/dashboard/jobs/{job_id}/retry", post(dashboard::retry_job))
        .route("/assets/dashboard.css", get(dashboard::style))
        .route("/assets/dashboard.js", get(dashboard::script));
    if state.inner.serve_metrics {
        router = router.route("/metrics", get(health::metrics));
    }
    router
        .nest("/v1", v1)
        .fallback(health::not_found)
        .method_not_allowed_fallback(health::method_not_allowed)
        .with_state(state)
        .layer(DefaultBodyLimit::max(max_body))
        // Outermost first: assign the id, open the span with it, echo it on
        // the response, and turn panics into the JSON 500 inside the span.
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(request_id.clone(), MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
                        let id = req
                            .headers()
                            .get(REQUEST_ID_HEADER)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default();
                        tracing::info_span!(
                            "request",
                            method = %req.method(),
                            path = %connect::loggable_path(req.uri().path()),
                            request_id = %id,
                            token.id = tracing::field::Empty,
                        )
                    }),
                )
                .layer(PropagateRequestIdLayer::new(request_id))
                .layer(CatchPanicLayer::custom(health::panic_response)),
        )
}
