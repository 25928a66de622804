//! A whole deployment for end-to-end tests: real `byok api` and `byok worker`
//! processes (or one `byok run`) on real PostgreSQL and Redis (or SQLite),
//! talking to the provider simulator, which runs inside the test so its
//! statistics can be read directly.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use byok_sim::{RunningSim, SimConfig, Simulator};
use serde_json::{Value, json};

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
    pub workers: Vec<Option<tokio::process::Child>>,
    /// The metrics URL of each worker.
    pub worker_metrics: Vec<String>,
    api_process: Option<tokio::process::Child>,
    separate_output_dirs: bool,
    /// Processes started by [`Deployment::spawn_api`], killed when dropped.
    #[allow(dead_code)] // held for Drop
    held_processes: Vec<tokio::process::Child>,
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

impl Deployment {
    /// PostgreSQL + Redis + `byok api` + `options.workers` × `byok worker`;
    /// `None` (after a SKIPPED line) when the services are missing.
    pub async fn distributed(options: DeployOptions) -> Option<Deployment> {
        let db = byok_testing::test_database().await?;
        let redis = byok_testing::test_redis().await?;
        let sim = simulator(&options).await;
        let dir = tempfile::tempdir().unwrap();
        let listen = format!("127.0.0.1:{}", byok_testing::free_port());
        let mut env = base_env(&sim, &options, dir.path(), &listen);
        env.push(("DATABASE_URL".into(), db.url.clone()));
        env.push(("REDIS_URL".into(), redis.url.clone()));
        env.push(("BYOK__QUEUE__NAMESPACE".into(), redis.namespace.clone()));
        let mut deployment =
            Deployment::assemble(dir, env, &listen, sim, vec![Box::new(db), Box::new(redis)]).await;
        deployment.separate_output_dirs = options.separate_output_dirs;
        let migrated = run(deployment.dir.path(), &deployment.env_refs(), &["migrate"]).await;
        assert_eq!(migrated.code, 0, "{}", migrated.stderr);
        deployment.token = deployment.create_token().await;
        deployment.api_process = Some(deployment.spawn("api", &["api"]));
        for _ in 0..options.workers {
            deployment.start_worker();
        }
        deployment.wait_ready().await;
        Some(deployment)
    }

    /// One `byok run` process on a SQLite file: the embedded shape.
    pub async fn embedded(options: DeployOptions) -> Deployment {
        let sim = simulator(&options).await;
        let dir = tempfile::tempdir().unwrap();
        let listen = format!("127.0.0.1:{}", byok_testing::free_port());
        let mut env = base_env(&sim, &options, dir.path(), &listen);
        env.push((
            "BYOK__DATABASE__URL".into(),
            format!("sqlite://{}/data/byok.db", dir.path().display()),
        ));
        let mut deployment = Deployment::assemble(dir, env, &listen, sim, Vec::new()).await;
        deployment.token = deployment.create_token().await;
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
            workers: Vec::new(),
            worker_metrics: Vec::new(),
            api_process: None,
            separate_output_dirs: false,
            held_processes: Vec::new(),
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

    async fn create_token(&self) -> String {
        let out = run(
            self.dir.path(),
            &self.env_refs(),
            &["token", "create", "--name", "e2e"],
        )
        .await;
        assert_eq!(out.code, 0, "{}", out.stderr);
        out.stdout.lines().next().unwrap().to_owned()
    }

    /// Starts `byok <args>` with its output in `<dir>/<name>.log`.
    fn spawn(&self, name: &str, args: &[&str]) -> tokio::process::Child {
        self.spawn_with(name, args, &[])
    }

    /// [`Deployment::spawn`] with variables of its own.
    fn spawn_with(&self, name: &str, args: &[&str], env: &[(&str, &str)]) -> tokio::process::Child {
        let log = std::fs::File::create(self.log_path(name)).unwrap();
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
        let child = self.spawn_with(
            &format!("worker-{index}"),
            &["worker"],
            &[("BYOK__WORKER__METRICS_LISTEN", &metrics)],
        );
        self.workers.push(Some(child));
        self.worker_metrics
            .push(format!("http://{metrics}/metrics"));
        index
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

    /// An authenticated request.
    pub fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.api))
            .bearer_auth(&self.token)
    }

    /// Stores a key for `user` (checked against the simulator).
    pub async fn put_credentials(&self, user: uuid::Uuid, provider: &str, credentials: Value) {
        let response = self
            .req(
                reqwest::Method::PUT,
                &format!("/v1/users/{user}/providers/{provider}/credentials"),
            )
            .json(&json!({ "credentials": credentials }))
            .send()
            .await
            .unwrap();
        let status = response.status();
        assert_eq!(status, 200, "{}", response.text().await.unwrap());
    }

    /// Enqueues a job; returns its id.
    pub async fn enqueue(&self, body: Value) -> String {
        let response = self
            .req(reqwest::Method::POST, "/v1/jobs")
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let job: Value = response.json().await.unwrap();
        assert_eq!(status, 202, "{job}");
        job["id"].as_str().unwrap().to_owned()
    }

    pub async fn job(&self, id: &str) -> Value {
        self.req(reqwest::Method::GET, &format!("/v1/jobs/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Waits until every job is final (or `deadline` passes); returns them.
    pub async fn wait_final(&self, ids: &[String], deadline: Duration) -> Vec<Value> {
        self.wait_jobs(ids, deadline, |jobs| {
            jobs.iter().all(|j| {
                matches!(
                    j["status"].as_str(),
                    Some("succeeded" | "failed" | "cancelled")
                )
            })
        })
        .await
    }

    /// Waits until job `id` is final and asserts that it succeeded (showing the
    /// last lines of `process`'s log when not); returns the job.
    pub async fn expect_success(&self, id: &str, process: &str, deadline: Duration) -> Value {
        let done = self.wait_final(&[id.to_owned()], deadline).await;
        let job = &done[0];
        assert_eq!(
            job["status"],
            "succeeded",
            "{job}\n{}",
            self.log_tail(process)
        );
        job.clone()
    }

    /// Waits until `cond` holds on the jobs (or `deadline` passes).
    pub async fn wait_jobs<F: Fn(&[Value]) -> bool>(
        &self,
        ids: &[String],
        deadline: Duration,
        cond: F,
    ) -> Vec<Value> {
        let read_jobs = async || {
            let mut jobs = Vec::new();
            for id in ids {
                jobs.push(self.job(id).await);
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
