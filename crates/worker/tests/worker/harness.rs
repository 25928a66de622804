//! One worker on a fresh SQLite file, talking to a wiremock Runway,
//! assembled by `byok-app` from settings as `byok worker` is.

use std::sync::Arc;
use std::time::Duration;

use byok_app::{Roles, Running};
use byok_core::{
    DEFAULT_PROJECT_ID, GenerationRequest, JobItem, ProjectUser, ProviderId, RateLimits,
};
use byok_crypto::SealContext;
use byok_queue::{Engine, Producer};
use byok_store::{Inserted, Job, NewCredential, NewJob, Store};
use secrecy::SecretString;
use serde_json::json;
use uuid::Uuid;
use wiremock::MockServer;

pub use byok_testing::poll_until;

pub const API_KEY: &str = "key_worker_test_1234567890abcdef";
pub const TASK_ID: &str = "17f20503-6c24-4c16-946b-35dbbce2af2f";

/// How a test wants its worker.
#[derive(Debug, Clone)]
pub struct Options {
    pub max_attempts: u32,
    pub request_timeout: Duration,
    pub per_minute: u32,
    /// Replaces Runway's catalogue (`providers.runway.models`).
    pub runway_models: Option<Vec<byok_core::ModelSpec>>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_attempts: 3,
            request_timeout: Duration::from_secs(5),
            per_minute: 1000,
            runway_models: None,
        }
    }
}

/// A running worker and everything around it. The worker stops when this
/// is dropped.
pub struct Harness {
    pub runway: MockServer,
    pub store: Store,
    pub engine: Arc<dyn Engine>,
    pub user: Uuid,
    pub output_dir: tempfile::TempDir,
    worker: Option<Running>,
    _sqlite: byok_testing::TestSqlite,
}

impl Harness {
    /// A worker for a user with a stored Runway key. Mount the provider's
    /// answers on `runway` before enqueueing.
    pub async fn start(options: Options) -> Harness {
        let sqlite = byok_testing::test_sqlite();
        let runway = MockServer::start().await;
        let output_dir = tempfile::tempdir().unwrap();

        let mut settings = byok_config::defaults();
        settings.database.url = SecretString::from(sqlite.url.as_str());
        settings.queue.namespace = "worker-test".to_owned();
        settings.queue.visibility_timeout = Duration::from_secs(5);
        settings.encryption.keys = Some(SecretString::from(format!("1:{}", "ab".repeat(32))));
        settings.output.dir = output_dir.path().to_owned();
        settings.fetch.allow_private_networks = true;
        settings.worker.max_attempts = options.max_attempts;
        settings.worker.request_timeout = options.request_timeout;
        settings.worker.retry_min_delay = Duration::from_millis(50);
        settings.worker.retry_max_delay = Duration::from_millis(200);
        settings.worker.concurrency = 8;
        settings.worker.shutdown_grace = Duration::from_secs(2);
        settings
            .providers
            .get_mut(ProviderId::RUNWAY)
            .unwrap()
            .base_url = runway.uri();
        settings
            .providers
            .get_mut(ProviderId::RUNWAY)
            .unwrap()
            .models = options.runway_models.clone();
        for id in ProviderId::BUILT_IN {
            let provider = settings.providers.get_mut(id).unwrap();
            provider.poll_interval = Duration::from_millis(50);
            provider.rate_limit = RateLimits {
                per_minute: options.per_minute,
                per_hour: options.per_minute * 60,
            };
        }
        let worker = byok_app::start(settings, Roles::worker("worker-test"))
            .await
            .expect("the worker starts");
        let system = worker.system();

        let user = Uuid::new_v4();
        let credentials = system
            .registry()
            .get(ProviderId::RUNWAY)
            .unwrap()
            .parse_credentials(&json!({ "api_key": API_KEY }))
            .unwrap();
        let sealed = system
            .key_ring()
            .seal(
                &SealContext::new(
                    ProjectUser::new(DEFAULT_PROJECT_ID, user),
                    ProviderId::RUNWAY,
                ),
                &credentials.to_plaintext(),
            )
            .unwrap();
        system
            .store()
            .credentials()
            .upsert(&NewCredential {
                owner: ProjectUser::new(DEFAULT_PROJECT_ID, user),
                provider: ProviderId::RUNWAY,
                sealed,
                credential_hint: credentials.hint(),
                validated_at: None,
            })
            .await
            .unwrap();

        Harness {
            runway,
            store: system.store().clone(),
            engine: Arc::clone(system.engine()),
            user,
            output_dir,
            worker: Some(worker),
            _sqlite: sqlite,
        }
    }

    /// Stores a text-to-video job for the harness's user, without queueing it.
    pub async fn store_job(&self, prompt: &str) -> Job {
        let request = GenerationRequest {
            prompt: Some(prompt.to_owned()),
            duration_seconds: Some(5),
            ..GenerationRequest::new(self.user, ProviderId::RUNWAY, "gen4.5")
        };
        let new = NewJob {
            project_id: DEFAULT_PROJECT_ID,
            user_id: self.user,
            provider: ProviderId::RUNWAY,
            model: "gen4.5".into(),
            request,
            metadata: json!({}),
            created_by_token: None,
            batch_id: None,
            idempotency: None,
            usage: Default::default(),
        };
        match self.store.jobs().insert(&new).await.unwrap() {
            Inserted::Created(job) => job,
            other => panic!("{other:?}"),
        }
    }

    /// Stores a job and queues it, as the API does.
    pub async fn enqueue(&self, prompt: &str) -> Job {
        let job = self.store_job(prompt).await;
        self.push(job.id).await;
        self.store.jobs().mark_enqueued(job.id).await.unwrap();
        job
    }

    pub async fn push(&self, id: Uuid) {
        Producer::<JobItem>::new(Arc::clone(&self.engine))
            .push(&id.to_string(), &JobItem { job_id: id }, Duration::ZERO)
            .await
            .unwrap();
    }

    pub async fn job(&self, id: Uuid) -> Job {
        self.store
            .jobs()
            .get(id)
            .await
            .unwrap()
            .expect("job exists")
    }

    /// Waits (up to 20 s) until `cond` holds on the job; returns it.
    pub async fn wait_for(&self, id: Uuid, what: &str, cond: impl Fn(&Job) -> bool) -> Job {
        poll_until(what, async || {
            let job = self.job(id).await;
            cond(&job).then_some(job)
        })
        .await
    }

    /// The statuses of the job's history, oldest first.
    pub async fn history(&self, id: Uuid) -> Vec<String> {
        let events = self.store.jobs().events(id).await.unwrap();
        events.into_iter().map(|e| e.status).collect()
    }

    pub async fn wait_final(&self, id: Uuid) -> Job {
        self.wait_for(id, "a final status", |j| j.status.is_terminal())
            .await
    }

    /// Requests the provider received with `method` on `path`.
    pub async fn requests(&self, method: &str, path: &str) -> Vec<wiremock::Request> {
        self.runway
            .received_requests()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.method.as_str() == method && r.url.path() == path)
            .collect()
    }

    /// The SQLite database of the store and the queue.
    pub fn sqlite_url(&self) -> &str {
        &self._sqlite.url
    }

    /// Stops the worker and waits for it. (Dropping the harness stops it
    /// too, without waiting: the stop signal's sender goes with it.)
    pub async fn stop(mut self) {
        if let Some(worker) = self.worker.take() {
            worker.stop().await.expect("the worker stops cleanly");
        }
    }
}

/// A Runway task that is `RUNNING` for `running_polls` polls, then
/// `SUCCEEDED` with an output URL on the mock that serves [`fake_mp4`].
pub async fn mount_finishing_task(h: &Harness, running_polls: u64) {
    use wiremock::matchers::{method, path};
    let task_path = format!("/v1/tasks/{TASK_ID}");
    if running_polls > 0 {
        wiremock::Mock::given(method("GET"))
            .and(path(task_path.as_str()))
            .respond_with(task(json!({ "status": "RUNNING", "progress": 0.5 })))
            .up_to_n_times(running_polls)
            .mount(&h.runway)
            .await;
    }
    let output = format!("{}/cdn/out.mp4?_jwt=signed", h.runway.uri());
    wiremock::Mock::given(method("GET"))
        .and(path(task_path.as_str()))
        .respond_with(task(json!({ "status": "SUCCEEDED", "output": [output] })))
        .mount(&h.runway)
        .await;
    wiremock::Mock::given(method("GET"))
        .and(path("/cdn/out.mp4"))
        .respond_with(wiremock::ResponseTemplate::new(200).set_body_raw(fake_mp4(), "video/mp4"))
        .mount(&h.runway)
        .await;
}

/// Runway's task resource with `fields`.
pub fn task(fields: serde_json::Value) -> wiremock::ResponseTemplate {
    let mut body = json!({ "id": TASK_ID, "createdAt": "2026-07-01T12:00:00.000Z" });
    if let serde_json::Value::Object(fields) = fields {
        for (k, v) in fields {
            body[k] = v;
        }
    }
    wiremock::ResponseTemplate::new(200).set_body_json(body)
}

/// A small MP4-looking file (an `ftyp` box and filler).
pub fn fake_mp4() -> Vec<u8> {
    let mut bytes = vec![0, 0, 0, 0x18];
    bytes.extend_from_slice(b"ftypisom\0\0\x02\0isomiso2");
    bytes.extend((0..4096u32).map(|i| (i % 251) as u8));
    bytes
}
