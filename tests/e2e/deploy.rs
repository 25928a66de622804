//! A whole deployment for end-to-end tests: real `byok api` and `byok worker`
//! processes (or one `byok run`) on real PostgreSQL and Redis (or SQLite),
//! talking to the provider simulator, which runs inside the test so its
//! statistics can be read directly. Tests talk to the API as a producer does,
//! with `byok-client` ([`Deployment::client`]); raw requests ([`Deployment::req`])
//! are for what a client would never send.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use byok_client::{Client, CredentialSummary, GenerationRequest, IdempotencyKey, JobView};
use byok_sim::{RunningSim, SimConfig, Simulator};
use serde_json::Value;
use uuid::Uuid;

use crate::helpers::{byok, poll_until, run, terminate, wait_until_ready};

/// The encryption key ring of test deployments.
pub const KEYS: &str = "1:5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";

/// How a test wants its deployment.
#[derive(Debug, Clone)]
pub struct DeployOptions {
    /// Worker processes to start (distributed shape).
    pub workers: usize,
    /// `worker.concurrency`.
    pub concurrency: u32,
    /// The simulator's render time.
    pub render_time: Duration,
    /// Runway's per-key limits.
    pub runway_per_minute: u32,
    /// `providers.*.poll_interval`.
    pub poll_interval: &'static str,
    /// `worker.shutdown_grace`.
    pub shutdown_grace: &'static str,
    /// The simulator's `video_padding_bytes`: how much larger its videos are.
    pub video_padding_bytes: u64,
    /// More variables for every process (after the base ones, so they win).
    pub extra_env: Vec<(String, String)>,
    /// Give each process an `output.dir` of its own, so no directory is shared.
    pub separate_output_dirs: bool,
    /// The `byok.toml` every process reads (settings environment variables cannot say,
    /// such as `[[providers.<id>.prices]]`); empty: none.
    pub config: &'static str,
}

impl Default for DeployOptions {
    fn default() -> Self {
        DeployOptions {
            workers: 2,
            concurrency: 16,
            render_time: Duration::from_millis(300),
            runway_per_minute: 1000,
            poll_interval: "200ms",
            shutdown_grace: "10s",
            video_padding_bytes: 0,
            extra_env: Vec::new(),
            separate_output_dirs: false,
            config: "",
        }
    }
}

/// A running deployment. Processes are killed when it is dropped.
pub struct Deployment {
    pub dir: tempfile::TempDir,
    pub env: Vec<(String, String)>,
    pub api: String,
    pub token: String,
    pub sim: RunningSim,
    pub http: reqwest::Client,
    /// The producer's client: the API with `token`, set once the token exists.
    client: Option<Client>,
    pub workers: Vec<Option<tokio::process::Child>>,
    /// The metrics URL of each worker.
    pub worker_metrics: Vec<String>,
    api_process: Option<tokio::process::Child>,
    separate_output_dirs: bool,
    /// Processes started by [`Deployment::spawn_api`], killed when dropped.
    #[allow(dead_code)] // held for Drop
    held_processes: Vec<tokio::process::Child>,
    /// The Redis Cluster of a deployment made by [`Deployment::distributed_on_cluster`].
    pub cluster: Option<byok_testing::TestCluster>,
    /// Kept alive for the deployment's lifetime.
    _services: Vec<Box<dyn std::any::Any + Send>>,
}

impl std::fmt::Debug for Deployment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deployment")
            .field("api", &self.api)
            .finish_non_exhaustive()
    }
}

async fn simulator(options: &DeployOptions) -> RunningSim {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    Simulator::new(SimConfig {
        render_time: options.render_time,
        video_padding_bytes: options.video_padding_bytes,
        stability_requests_per_10s: 0,
        fal_concurrency: 0,
        ..SimConfig::default()
    })
    .start(listener)
    .await
    .unwrap()
}

/// The provider definitions that ship with byok (Luma, Synthesia).
pub const DEFINITIONS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../providers/definitions");

fn base_env(
    sim: &RunningSim,
    options: &DeployOptions,
    dir: &std::path::Path,
    listen: &str,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![
        ("BYOK__ENCRYPTION__KEYS", KEYS.to_owned()),
        ("BYOK__API__LISTEN", listen.to_owned()),
        ("BYOK__WORKER__CONCURRENCY", options.concurrency.to_string()),
        (
            "BYOK__WORKER__SHUTDOWN_GRACE",
            options.shutdown_grace.to_owned(),
        ),
        ("BYOK__QUEUE__VISIBILITY_TIMEOUT", "3s".to_owned()),
        (
            "BYOK__OUTPUT__DIR",
            dir.join("videos").display().to_string(),
        ),
        ("BYOK__FETCH__ALLOW_PRIVATE_NETWORKS", "true".to_owned()),
        ("BYOK__PROVIDERS__RUNWAY__BASE_URL", sim.runway_url()),
        ("BYOK__PROVIDERS__STABILITY__BASE_URL", sim.stability_url()),
        ("BYOK__PROVIDERS__VEO__BASE_URL", sim.vertex_url()),
        ("BYOK__PROVIDERS__FAL__BASE_URL", sim.fal_url()),
        ("BYOK__PROVIDERS__REPLICATE__BASE_URL", sim.replicate_url()),
        ("BYOK__PROVIDERS__VEO__TOKEN_URI_ALLOWLIST", sim.token_url()),
        (
            "BYOK__PROVIDERS__RUNWAY__RATE_LIMIT__PER_MINUTE",
            options.runway_per_minute.to_string(),
        ),
        (
            "BYOK__PROVIDERS__RUNWAY__RATE_LIMIT__PER_HOUR",
            (options.runway_per_minute * 60).to_string(),
        ),
        (
            "BYOK__PROVIDERS__STABILITY__RATE_LIMIT__PER_MINUTE",
            "1000".to_owned(),
        ),
        (
            "BYOK__PROVIDERS__STABILITY__RATE_LIMIT__PER_HOUR",
            "60000".to_owned(),
        ),
        (
            "BYOK__PROVIDERS__VEO__RATE_LIMIT__PER_MINUTE",
            "1000".to_owned(),
        ),
        (
            "BYOK__PROVIDERS__VEO__RATE_LIMIT__PER_HOUR",
            "60000".to_owned(),
        ),
        (
            "BYOK__PROVIDERS__FAL__RATE_LIMIT__PER_MINUTE",
            "1000".to_owned(),
        ),
        (
            "BYOK__PROVIDERS__FAL__RATE_LIMIT__PER_HOUR",
            "60000".to_owned(),
        ),
        (
            "BYOK__PROVIDERS__REPLICATE__RATE_LIMIT__PER_MINUTE",
            "1000".to_owned(),
        ),
        (
            "BYOK__PROVIDERS__REPLICATE__RATE_LIMIT__PER_HOUR",
            "60000".to_owned(),
        ),
        // The shipped provider definitions, pointed at the simulator like the built-in
        // providers: every deployment of these tests loads declared providers.
        (
            "BYOK__PROVIDERS__DEFINITIONS_DIR",
            DEFINITIONS_DIR.to_owned(),
        ),
        ("BYOK__PROVIDERS__LUMA__BASE_URL", sim.luma_url()),
        ("BYOK__PROVIDERS__SYNTHESIA__BASE_URL", sim.synthesia_url()),
        ("RUST_LOG", "info".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    for provider in [
        "RUNWAY",
        "STABILITY",
        "VEO",
        "FAL",
        "REPLICATE",
        "LUMA",
        "SYNTHESIA",
    ] {
        env.push((
            format!("BYOK__PROVIDERS__{provider}__POLL_INTERVAL"),
            options.poll_interval.to_owned(),
        ));
    }
    for provider in ["LUMA", "SYNTHESIA"] {
        env.push((
            format!("BYOK__PROVIDERS__{provider}__RATE_LIMIT__PER_MINUTE"),
            "1000".to_owned(),
        ));
        env.push((
            format!("BYOK__PROVIDERS__{provider}__RATE_LIMIT__PER_HOUR"),
            "60000".to_owned(),
        ));
    }
    env.extend(options.extra_env.iter().cloned());
    env
}

/// The deployment's directory (every process's working directory), with its `byok.toml`.
fn config_dir(options: &DeployOptions) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    if !options.config.is_empty() {
        std::fs::write(dir.path().join("byok.toml"), options.config).unwrap();
    }
    dir
}

impl Deployment {
    /// PostgreSQL + Redis + `byok api` + `options.workers` × `byok worker`;
    /// `None` (after a SKIPPED line) when the services are missing.
    pub async fn distributed(options: DeployOptions) -> Option<Deployment> {
        let redis = byok_testing::test_redis().await?;
        let (url, namespace) = (redis.url.clone(), redis.namespace.clone());
        Deployment::distributed_on(options, &url, &namespace, Box::new(redis)).await
    }

    /// [`Deployment::distributed`] with its queue, limiter and budgets on a Redis Cluster of
    /// its own (three primaries, three replicas), which the test may kill nodes of.
    pub async fn distributed_on_cluster(options: DeployOptions) -> Option<Deployment> {
        let cluster = byok_testing::spawn_redis_cluster()?;
        let url = cluster.url.clone();
        let mut deployment =
            Deployment::distributed_on(options, &url, "byok-e2e", Box::new(())).await?;
        deployment.cluster = Some(cluster);
        Some(deployment)
    }

    async fn distributed_on(
        options: DeployOptions,
        redis_url: &str,
        namespace: &str,
        redis: Box<dyn std::any::Any + Send>,
    ) -> Option<Deployment> {
        let db = byok_testing::test_database().await?;
        let url = db.url.clone();
        let services: Vec<Box<dyn std::any::Any + Send>> = vec![Box::new(db), redis];
        Some(Deployment::distributed_with(options, &url, redis_url, namespace, services).await)
    }

    /// The distributed shape on a database and a Redis the caller provides (and may stop
    /// and start again): `database_url` is migrated here. `services` are kept alive with
    /// the deployment.
    pub async fn distributed_with(
        options: DeployOptions,
        database_url: &str,
        redis_url: &str,
        namespace: &str,
        services: Vec<Box<dyn std::any::Any + Send>>,
    ) -> Deployment {
        let sim = simulator(&options).await;
        let dir = config_dir(&options);
        let listen = format!("127.0.0.1:{}", byok_testing::free_port());
        let mut env = base_env(&sim, &options, dir.path(), &listen);
        env.push(("DATABASE_URL".into(), database_url.to_owned()));
        env.push(("REDIS_URL".into(), redis_url.to_owned()));
        env.push(("BYOK__QUEUE__NAMESPACE".into(), namespace.to_owned()));
        let mut deployment = Deployment::assemble(dir, env, &listen, sim, services).await;
        deployment.separate_output_dirs = options.separate_output_dirs;
        let migrated = run(deployment.dir.path(), &deployment.env_refs(), &["migrate"]).await;
        assert_eq!(migrated.code, 0, "{}", migrated.stderr);
        deployment.set_token().await;
        deployment.api_process = Some(deployment.spawn("api", &["api"]));
        for _ in 0..options.workers {
            deployment.start_worker();
        }
        deployment.wait_ready().await;
        deployment
    }

    /// One `byok run` process on a SQLite file: the embedded shape.
    pub async fn embedded(options: DeployOptions) -> Deployment {
        let sim = simulator(&options).await;
        let dir = config_dir(&options);
        let listen = format!("127.0.0.1:{}", byok_testing::free_port());
        let mut env = base_env(&sim, &options, dir.path(), &listen);
        env.push((
            "BYOK__DATABASE__URL".into(),
            format!("sqlite://{}/data/byok.db", dir.path().display()),
        ));
        let mut deployment = Deployment::assemble(dir, env, &listen, sim, Vec::new()).await;
        deployment.set_token().await;
        deployment.api_process = Some(deployment.spawn("run", &["run"]));
        deployment.wait_ready().await;
        deployment
    }

    async fn assemble(
        dir: tempfile::TempDir,
        env: Vec<(String, String)>,
        listen: &str,
        sim: RunningSim,
        services: Vec<Box<dyn std::any::Any + Send>>,
    ) -> Deployment {
        Deployment {
            dir,
            env,
            api: format!("http://{listen}"),
            token: String::new(),
            sim,
            http: reqwest::Client::new(),
            client: None,
            workers: Vec::new(),
            worker_metrics: Vec::new(),
            api_process: None,
            separate_output_dirs: false,
            held_processes: Vec::new(),
            cluster: None,
            _services: services,
        }
    }

    /// The value of one of the processes' environment variables.
    pub fn env_value(&self, name: &str) -> String {
        self.env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{name} is not set"))
    }

    pub fn env_refs(&self) -> Vec<(&str, &str)> {
        self.env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    /// A producer token from `byok token create`, and the client that uses it.
    async fn set_token(&mut self) {
        let out = run(
            self.dir.path(),
            &self.env_refs(),
            &["token", "create", "--name", "e2e"],
        )
        .await;
        assert_eq!(out.code, 0, "{}", out.stderr);
        self.token = out.stdout.lines().next().unwrap().to_owned();
        self.client = Some(Client::new(&self.api, &self.token).unwrap());
    }

    /// Starts `byok <args>` with its output appended to `<dir>/<name>.log` (a process
    /// started again under the same name goes on in the same file).
    fn spawn(&self, name: &str, args: &[&str]) -> tokio::process::Child {
        self.spawn_with(name, args, &[])
    }

    /// [`Deployment::spawn`] with variables of its own.
    fn spawn_with(&self, name: &str, args: &[&str], env: &[(&str, &str)]) -> tokio::process::Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(name))
            .unwrap();
        let own_output = self.output_dir_of(name).display().to_string();
        let own: &[(&str, &str)] = if self.separate_output_dirs {
            &[("BYOK__OUTPUT__DIR", own_output.as_str())]
        } else {
            &[]
        };
        byok(self.dir.path(), &self.env_refs())
            .envs(own.iter().copied())
            .envs(env.iter().copied())
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap()
    }

    /// With `separate_output_dirs`, the `output.dir` of process `name`.
    pub fn output_dir_of(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}-videos"))
    }

    /// The process id of worker `index`.
    pub fn worker_pid(&self, index: usize) -> u32 {
        self.workers[index]
            .as_ref()
            .and_then(tokio::process::Child::id)
            .expect("a running worker")
    }

    /// One more `byok api` process, named `name`, with `env` on top of the
    /// deployment's, on a port of its own; returns its base URL.
    pub async fn spawn_api(&mut self, name: &str, env: &[(&str, &str)]) -> String {
        let listen = format!("127.0.0.1:{}", byok_testing::free_port());
        let mut env = env.to_vec();
        env.push(("BYOK__API__LISTEN", &listen));
        let child = self.spawn_with(name, &["api"], &env);
        self.held_processes.push(child);
        let base = format!("http://{listen}");
        assert!(
            wait_until_ready(&format!("{base}/readyz"), Duration::from_secs(30)).await,
            "{name} never became ready:\n{}",
            self.log_tail(name)
        );
        base
    }

    fn log_path(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }

    /// The last lines a process logged (for failure messages).
    pub fn log_tail(&self, name: &str) -> String {
        let text = std::fs::read_to_string(self.log_path(name)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Starts one more worker process; returns its index.
    /// Each worker serves its metrics on a port of its own
    /// (`worker_metrics[index]`).
    pub fn start_worker(&mut self) -> usize {
        let index = self.workers.len();
        let metrics = format!("127.0.0.1:{}", byok_testing::free_port());
        self.workers.push(None);
        self.worker_metrics
            .push(format!("http://{metrics}/metrics"));
        self.restart_worker(index);
        index
    }

    /// Starts worker `index` again (after [`Deployment::kill_worker`], or after it exited),
    /// with its metrics on the same port and its log going on in the same file.
    pub fn restart_worker(&mut self, index: usize) {
        assert!(self.workers[index].is_none(), "worker {index} is running");
        let metrics = self.worker_metrics[index]
            .trim_start_matches("http://")
            .trim_end_matches("/metrics")
            .to_owned();
        let child = self.spawn_with(
            &format!("worker-{index}"),
            &["worker"],
            &[("BYOK__WORKER__METRICS_LISTEN", &metrics)],
        );
        self.workers[index] = Some(child);
    }

    /// kill -9 of worker `index`.
    pub async fn kill_worker(&mut self, index: usize) {
        let mut child = self.workers[index].take().expect("running worker");
        child.start_kill().unwrap();
        let _ = child.wait().await;
    }

    /// SIGTERM to worker `index`; returns how long it took to exit and its status.
    pub async fn terminate_worker(
        &mut self,
        index: usize,
        deadline: Duration,
    ) -> (Duration, std::process::ExitStatus) {
        let mut child = self.workers[index].take().expect("running worker");
        let started = Instant::now();
        terminate(child.id().unwrap());
        let status = tokio::time::timeout(deadline, child.wait())
            .await
            .expect("worker exits")
            .unwrap();
        (started.elapsed(), status)
    }

    async fn wait_ready(&self) {
        if !wait_until_ready(&format!("{}/readyz", self.api), Duration::from_secs(30)).await {
            panic!(
                "the API never became ready:\n{}",
                self.log_tail("api") + &self.log_tail("run")
            );
        }
    }

    /// An authenticated request, for what a client would never send (malformed bodies,
    /// protocol details); everything else goes through [`Deployment::client`].
    pub fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.api))
            .bearer_auth(&self.token)
    }

    /// The producer's client of the API (the deployment's token).
    pub fn client(&self) -> &Client {
        self.client.as_ref().expect("the deployment has its token")
    }

    /// Stores a key for `user` (checked against the simulator).
    pub async fn put_credentials(
        &self,
        user: Uuid,
        provider: &str,
        credentials: Value,
    ) -> CredentialSummary {
        let body = byok_client::PutCredentials::new(credentials);
        self.client()
            .put_credentials(user, provider, &body)
            .await
            .unwrap_or_else(|e| panic!("storing a {provider} key: {e}"))
    }

    /// Enqueues `request` (with an `Idempotency-Key` of its own, as a producer should);
    /// returns its id.
    pub async fn submit(&self, request: &GenerationRequest) -> Uuid {
        let key = IdempotencyKey::random();
        self.client()
            .create_job(request, Some(&key))
            .await
            .unwrap_or_else(|e| panic!("enqueueing {request:?}: {e}"))
            .job
            .id
    }

    /// The job `id`.
    pub async fn job_view(&self, id: Uuid) -> JobView {
        self.client()
            .get_job(id)
            .await
            .unwrap_or_else(|e| panic!("reading job {id}: {e}"))
    }

    /// Waits until `cond` holds on the jobs (or `deadline` passes); returns them.
    pub async fn wait_until<F: Fn(&[JobView]) -> bool>(
        &self,
        ids: &[Uuid],
        deadline: Duration,
        cond: F,
    ) -> Vec<JobView> {
        let read_jobs = async || {
            let mut jobs = Vec::new();
            for id in ids {
                jobs.push(self.job_view(*id).await);
            }
            jobs
        };
        match poll_until(deadline, async || {
            Some(read_jobs().await).filter(|j| cond(j))
        })
        .await
        {
            Some(jobs) => jobs,
            None => read_jobs().await,
        }
    }

    /// Waits until every job is final (or `deadline` passes); returns them.
    pub async fn wait_all_final(&self, ids: &[Uuid], deadline: Duration) -> Vec<JobView> {
        self.wait_until(ids, deadline, |jobs| {
            jobs.iter().all(|j| j.status.is_terminal())
        })
        .await
    }

    /// Waits until job `id` is final and asserts that it succeeded (showing the last
    /// lines of `process`'s log when not); returns the job.
    pub async fn expect_succeeded(&self, id: Uuid, process: &str, deadline: Duration) -> JobView {
        let job = self.wait_all_final(&[id], deadline).await.remove(0);
        assert_eq!(
            job.status,
            byok_client::JobStatus::Succeeded,
            "{job:?}\n{}",
            self.log_tail(process)
        );
        job
    }

    /// Downloads the video of job `id` into the deployment's directory; its bytes.
    pub async fn video(&self, id: Uuid) -> Vec<u8> {
        let path = self.dir.path().join(format!("downloaded-{id}.mp4"));
        self.client()
            .download_video(id, &path)
            .await
            .unwrap_or_else(|e| panic!("downloading the video of {id}: {e}"));
        std::fs::read(&path).unwrap()
    }

    // The same calls with jobs as JSON (as the API serialises them), for tests that compare
    // JSON documents.

    /// Enqueues the JSON `body` (a `GenerationRequest`; a provider the deployment defines
    /// is declared in this process first); returns the job's id.
    pub async fn enqueue(&self, body: Value) -> String {
        if let Some(provider) = body["provider"].as_str() {
            byok_client::provider_id(provider).unwrap();
        }
        let request: GenerationRequest =
            serde_json::from_value(body).expect("a job body this client can send");
        self.submit(&request).await.to_string()
    }

    /// [`Deployment::wait_all_final`], the jobs as JSON.
    pub async fn wait_final(&self, ids: &[String], deadline: Duration) -> Vec<Value> {
        let ids: Vec<Uuid> = ids.iter().map(|id| id.parse().unwrap()).collect();
        self.wait_all_final(&ids, deadline)
            .await
            .iter()
            .map(|job| serde_json::to_value(job).unwrap())
            .collect()
    }

    /// [`Deployment::expect_succeeded`], the job as JSON.
    pub async fn expect_success(&self, id: &str, process: &str, deadline: Duration) -> Value {
        let job = self
            .expect_succeeded(id.parse().unwrap(), process, deadline)
            .await;
        serde_json::to_value(job).unwrap()
    }
}

// The chaos suite's handles on the processes (tests/chaos shares this harness); the e2e
// tests have no use for them.
#[allow(dead_code)]
impl Deployment {
    /// kill -9 of the `byok api` process (its address stays the deployment's).
    pub async fn kill_api(&mut self) {
        let mut child = self.api_process.take().expect("a running API");
        child.start_kill().unwrap();
        let _ = child.wait().await;
    }

    /// Starts the `byok api` process again on the deployment's address (after
    /// [`Deployment::kill_api`], or after it exited); does not wait for it.
    pub fn restart_api(&mut self) {
        assert!(self.api_process.is_none(), "the API is running");
        self.api_process = Some(self.spawn("api", &["api"]));
    }

    /// The processes (`api`, `worker-<i>`) that exited since the last look, with how they
    /// ended; each is left stopped, for the caller to start again or not.
    pub fn exited(&mut self) -> Vec<(String, std::process::ExitStatus)> {
        let mut gone = Vec::new();
        let mut look = |name: String, slot: &mut Option<tokio::process::Child>| {
            if let Some(status) = slot.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                *slot = None;
                gone.push((name, status));
            }
        };
        look("api".to_owned(), &mut self.api_process);
        for (index, worker) in self.workers.iter_mut().enumerate() {
            look(format!("worker-{index}"), worker);
        }
        gone
    }

    /// Whether the `byok api` process is running (neither killed nor seen exited).
    pub fn api_running(&self) -> bool {
        self.api_process.is_some()
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        for child in self
            .workers
            .iter_mut()
            .flatten()
            .chain(self.api_process.iter_mut())
        {
            let _ = child.start_kill();
        }
    }
}
