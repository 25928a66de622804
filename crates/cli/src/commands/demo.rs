//! `byok demo`: the whole system on one machine with nothing installed.
//!
//! It starts the provider simulator and the embedded shape (API + worker on
//! SQLite) in a temporary directory of its own, removed when it ends, whatever
//! `DATABASE_URL`, `REDIS_URL` or the configuration say: a demo never touches
//! a real installation. Then it drives the real HTTP API as a producer
//! would: stores simulator keys for a demo user (each checked with the
//! simulated provider), enqueues a job per live provider and input kind plus
//! one the provider moderates and one whose key gets throttled, asks for a
//! retired model (refused at enqueue), shows each job live, prints what
//! became of them, revokes its token, and exits 0 only when every job ended
//! as expected.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use secrecy::ExposeSecret as _;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::table::Table;
use byok_app::{Roles, Running};

/// The longest the demo waits for its jobs.
const DEADLINE: Duration = Duration::from_secs(120);

/// One scripted job: what it is, what to send, and how it must end.
struct Scripted {
    label: &'static str,
    input: &'static str,
    body: Value,
    expect: Expect,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Succeeded,
    Failed(&'static str),
    /// The API refuses the job at enqueue with this code: nothing is stored or sent.
    Refused(&'static str),
}

impl Expect {
    fn describe(self) -> String {
        match self {
            Expect::Succeeded => "succeeded".to_owned(),
            Expect::Failed(code) => format!("failed ({code})"),
            Expect::Refused(code) => format!("refused ({code})"),
        }
    }
}

/// What became of a scripted job: its last state, or the API's refusal.
enum Outcome {
    Enqueued(String),
    Refused(Value),
}

pub async fn run(config: Option<&Path>) -> anyhow::Result<ExitCode> {
    let sim_config = byok_sim::SimConfig {
        render_time: Duration::from_secs(3),
        ..byok_sim::SimConfig::default()
    };
    let home = std::env::temp_dir().join(format!("byok-demo-{}", Uuid::new_v4().simple()));
    let outcome = run_in(config, sim_config, &home).await;
    // The directory held a generated key and the users' sealed keys: gone
    // with the demo, whatever its outcome.
    if let Err(e) = std::fs::remove_dir_all(&home)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        eprintln!("byok demo: could not remove {}: {e}", home.display());
    }
    outcome
}

async fn run_in(
    config: Option<&Path>,
    sim_config: byok_sim::SimConfig,
    home: &Path,
) -> anyhow::Result<ExitCode> {
    let (settings, sim) = super::simulate::start_with(
        config,
        sim_config,
        &super::simulate::Home::Private(home.to_path_buf()),
    )
    .await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot open a port for the API")?;
    let output_dir = settings.output.dir.clone();
    let system = byok_app::start(settings, Roles::both(listener)).await?;
    let images = ImageServer::start().await?;
    eprintln!(
        "byok demo: API at http://{}, simulated providers at {}, data in {} (removed at the end)",
        api_address(&system)?,
        sim.base_url(),
        home.display()
    );

    let outcome = script(&system, &sim, &images.url, &output_dir).await;
    images.stop();
    let stopped = system.stop().await;
    sim.shutdown().await;
    stopped?;
    outcome
}

#[allow(clippy::print_stdout)]
fn api_address(system: &Running) -> anyhow::Result<std::net::SocketAddr> {
    system
        .api_address()
        .context("the demo's API has no address")
}

async fn script(
    system: &Running,
    sim: &byok_sim::RunningSim,
    image_url: &str,
    output_dir: &Path,
) -> anyhow::Result<ExitCode> {
    let store = system.system().store();
    let (record, token) = store
        .tokens()
        .create(&byok_store::NewToken::new(
            "byok demo",
            byok_core::DEFAULT_PROJECT_ID,
        ))
        .await
        .context("cannot create the demo's producer token")?;
    let outcome = drive(system, sim, image_url, output_dir, token.expose_secret()).await;
    // Revoked whatever happened: the token must not outlive the demo.
    store
        .tokens()
        .revoke(record.id)
        .await
        .context("cannot revoke the demo's token")?;
    outcome
}

async fn drive(
    system: &Running,
    sim: &byok_sim::RunningSim,
    image_url: &str,
    output_dir: &Path,
    token: &str,
) -> anyhow::Result<ExitCode> {
    let api = Api {
        http: reqwest::Client::new(),
        base: format!("http://{}", api_address(system)?),
        token: token.to_owned(),
    };

    // A demo user with a key for every provider, and a second user whose
    // Runway key the simulator throttles once.
    let user = Uuid::new_v4();
    let throttled_user = Uuid::new_v4();
    let account = sim
        .new_service_account("byok-demo")
        .context("cannot create a simulated service account")?;
    for (who, provider, credentials) in [
        (user, "runway", json!({ "api_key": "sim_demo_runway_key" })),
        (
            user,
            "stability",
            json!({ "api_key": "sim_demo_stability_key" }),
        ),
        (user, "veo", json!({ "service_account": account })),
        (user, "fal", json!({ "api_key": "sim_demo_fal_key" })),
        (
            user,
            "replicate",
            json!({ "api_key": "sim_demo_replicate_key" }),
        ),
        (
            throttled_user,
            "runway",
            json!({ "api_key": "sim_throttled_demo_key" }),
        ),
    ] {
        api.put_credentials(who, provider, credentials).await?;
    }

    let jobs = scripted_jobs(user, throttled_user, image_url);
    let mut outcomes = Vec::new();
    for job in &jobs {
        outcomes.push(
            api.enqueue(&job.body)
                .await
                .with_context(|| format!("enqueueing {}", job.label))?,
        );
    }

    let finals = follow(&api, &jobs, &outcomes).await?;
    print_results(&jobs, &finals, output_dir)
}

fn scripted_jobs(user: Uuid, throttled_user: Uuid, image_url: &str) -> Vec<Scripted> {
    let job = |fields: Value| {
        let mut body = json!({ "user_id": user });
        if let Value::Object(fields) = fields {
            for (k, v) in fields {
                body[k] = v;
            }
        }
        body
    };
    vec![
        Scripted {
            label: "Runway, text",
            input: "text",
            body: job(
                json!({ "provider": "runway", "model": "gen4.5", "prompt": "a lighthouse at dusk, waves breaking below", "duration_seconds": 5, "aspect_ratio": "16:9" }),
            ),
            expect: Expect::Succeeded,
        },
        Scripted {
            label: "Runway, image",
            input: "image",
            body: job(
                json!({ "provider": "runway", "model": "gen4_turbo", "prompt": "the camera slowly pushes in", "image_url": image_url, "duration_seconds": 5 }),
            ),
            expect: Expect::Succeeded,
        },
        Scripted {
            label: "Veo, text",
            input: "text",
            body: job(
                json!({ "provider": "veo", "model": "veo-3.1-fast-generate-001", "prompt": "a paper boat drifting down a rainy street", "duration_seconds": 4 }),
            ),
            expect: Expect::Succeeded,
        },
        Scripted {
            label: "Veo, image",
            input: "image",
            body: job(
                json!({ "provider": "veo", "model": "veo-3.1-generate-001", "prompt": "the colours slowly swirl", "image_url": image_url, "duration_seconds": 6 }),
            ),
            expect: Expect::Succeeded,
        },
        Scripted {
            label: "Omni, text",
            input: "text",
            body: job(
                json!({ "provider": "veo", "model": OMNI_MODEL, "prompt": "a hot-air balloon rising over a misty valley", "duration_seconds": 4 }),
            ),
            expect: Expect::Succeeded,
        },
        Scripted {
            label: "fal Kling, image",
            input: "image",
            body: job(
                json!({ "provider": "fal", "model": FAL_MODEL, "prompt": "leaves drift across the frame", "image_url": image_url }),
            ),
            expect: Expect::Succeeded,
        },
        Scripted {
            label: "Replicate, text",
            input: "text",
            body: job(
                json!({ "provider": "replicate", "model": REPLICATE_MODEL, "prompt": "a fox trotting through fresh snow" }),
            ),
            expect: Expect::Succeeded,
        },
        Scripted {
            label: "Runway, moderated",
            input: "text",
            body: job(
                json!({ "provider": "runway", "model": "gen4.5", "prompt": "something the provider refuses (sim:moderate)" }),
            ),
            expect: Expect::Failed("content_rejected"),
        },
        Scripted {
            label: "Runway, throttled key",
            input: "text",
            body: json!({ "user_id": throttled_user, "provider": "runway", "model": "gen4.5", "prompt": "a storm rolling over the hills" }),
            expect: Expect::Succeeded,
        },
        Scripted {
            label: "Stability, retired",
            input: "image",
            body: job(
                json!({ "provider": "stability", "model": "stable-video-diffusion", "image_url": image_url }),
            ),
            expect: Expect::Refused("model_retired"),
        },
    ]
}

/// The models the demo runs on the newer providers (their catalogues' first video models).
const OMNI_MODEL: &str = "gemini-omni-1.2-flash";
const FAL_MODEL: &str = "kling-v2.1-master";
const REPLICATE_MODEL: &str = "bytedance/seedance-2.0-fast";

/// Shows every enqueued job live until all are final; returns their last state (for a
/// refused job, the API's answer).
async fn follow(api: &Api, jobs: &[Scripted], outcomes: &[Outcome]) -> anyhow::Result<Vec<Value>> {
    let bars = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10));
    let style = ProgressStyle::with_template("{prefix:<22} [{bar:30}] {pos:>3}%  {msg}")
        .context("progress bar template")?
        .progress_chars("=> ");
    let mut shown: Vec<ProgressBar> = jobs
        .iter()
        .map(|job| {
            let bar = bars.add(ProgressBar::new(100));
            bar.set_style(style.clone());
            bar.set_prefix(job.label);
            bar.set_message("queued");
            bar
        })
        .collect();
    let started = Instant::now();
    loop {
        let mut states = Vec::new();
        for outcome in outcomes {
            states.push(match outcome {
                Outcome::Enqueued(id) => api.job(id).await?,
                Outcome::Refused(answer) => answer.clone(),
            });
        }
        for (bar, job) in shown.iter_mut().zip(&states) {
            if let Some(code) = job["error"]["code"].as_str().filter(|_| is_refusal(job)) {
                if !bar.is_finished() {
                    bar.abandon_with_message(format!("refused ({code})"));
                }
                continue;
            }
            let status = job["status"].as_str().unwrap_or("?");
            let progress = match status {
                "succeeded" => 1.0,
                _ => job["progress"].as_f64().unwrap_or(0.0),
            };
            bar.set_position((progress * 100.0).round() as u64);
            let message = match job["error"]["code"].as_str() {
                Some(code) => format!("{status} ({code})"),
                None => status.to_owned(),
            };
            bar.set_message(message);
            if is_final(job) && !bar.is_finished() {
                bar.finish();
            }
        }
        if states.iter().all(is_final) {
            return Ok(states);
        }
        if started.elapsed() > DEADLINE {
            for bar in &shown {
                bar.abandon();
            }
            return Ok(states);
        }
        // The API is the producer's only window on a job; asking it a few
        // times a second is what a producer would do too.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn is_final(job: &Value) -> bool {
    is_refusal(job)
        || matches!(
            job["status"].as_str(),
            Some("succeeded" | "failed" | "cancelled")
        )
}

/// An API error answer (`{"error": …}`) rather than a job.
fn is_refusal(job: &Value) -> bool {
    job.get("status").is_none() && job.get("error").is_some()
}

#[allow(clippy::print_stdout)]
fn print_results(
    jobs: &[Scripted],
    finals: &[Value],
    output_dir: &Path,
) -> anyhow::Result<ExitCode> {
    let mut table = Table::new([
        "JOB", "PROVIDER", "MODEL", "INPUT", "STATUS", "EXPECTED", "TIME", "VIDEO",
    ]);
    let mut unexpected = Vec::new();
    for (job, state) in jobs.iter().zip(finals) {
        let status = state["status"].as_str().unwrap_or("?");
        let code = state["error"]["code"].as_str();
        let actual = match code {
            Some(code) if is_refusal(state) => format!("refused ({code})"),
            Some(code) if status == "failed" => format!("failed ({code})"),
            _ => status.to_owned(),
        };
        let video = output_dir.join(format!("{}.mp4", state["id"].as_str().unwrap_or_default()));
        let output = match std::fs::metadata(&video) {
            Ok(meta) if status == "succeeded" && meta.is_file() => {
                format!("{:.1} MB mp4", meta.len() as f64 / 1e6)
            }
            _ => "-".to_owned(),
        };
        let ok =
            actual == job.expect.describe() && (job.expect != Expect::Succeeded || output != "-");
        if !ok {
            unexpected.push(format!(
                "{}: {actual}, expected {}",
                job.label,
                job.expect.describe()
            ));
        }
        table.row(vec![
            job.label.to_owned(),
            job.body["provider"].as_str().unwrap_or("?").to_owned(),
            job.body["model"].as_str().unwrap_or("?").to_owned(),
            job.input.to_owned(),
            actual,
            if ok {
                "yes".to_owned()
            } else {
                format!("NO: {}", job.expect.describe())
            },
            elapsed(state),
            output,
        ]);
    }
    println!();
    print!("{}", table.render());
    println!();
    if unexpected.is_empty() {
        println!("all {} jobs ended as expected", jobs.len());
        println!(
            "next: `byok run --simulate` keeps this running for your own requests (README, HTTP API)"
        );
        Ok(ExitCode::SUCCESS)
    } else {
        for line in &unexpected {
            eprintln!("unexpected: {line}");
        }
        Ok(ExitCode::FAILURE)
    }
}

/// Seconds from enqueue to the final status.
fn elapsed(job: &Value) -> String {
    let parse = |field: &str| {
        job[field]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
    };
    match (parse("created_at"), parse("finished_at")) {
        (Some(created), Some(finished)) => {
            format!(
                "{:.1}s",
                (finished - created).num_milliseconds() as f64 / 1000.0
            )
        }
        _ => "-".to_owned(),
    }
}

/// The demo's client of the real API.
struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let response = request
            .bearer_auth(&self.token)
            .send()
            .await
            .context("the API did not answer")?;
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .context("the API answered something that is not JSON")?;
        anyhow::ensure!(status.is_success(), "the API answered {status}: {body}");
        Ok(body)
    }

    async fn put_credentials(
        &self,
        user: Uuid,
        provider: &str,
        credentials: Value,
    ) -> anyhow::Result<()> {
        let url = format!(
            "{}/v1/users/{user}/providers/{provider}/credentials",
            self.base
        );
        let body = json!({ "credentials": credentials, "validate": true });
        self.send(self.http.put(url).json(&body))
            .await
            .with_context(|| format!("storing the demo's {provider} key"))?;
        Ok(())
    }

    /// Enqueues `body`: the job's id, or the API's refusal when it answered 422 (the
    /// demo expects one); any other error ends the demo.
    async fn enqueue(&self, body: &Value) -> anyhow::Result<Outcome> {
        let response = self
            .http
            .post(format!("{}/v1/jobs", self.base))
            .json(body)
            .bearer_auth(&self.token)
            .send()
            .await
            .context("the API did not answer")?;
        let status = response.status();
        let answer: Value = response
            .json()
            .await
            .context("the API answered something that is not JSON")?;
        if status == reqwest::StatusCode::UNPROCESSABLE_ENTITY {
            return Ok(Outcome::Refused(answer));
        }
        anyhow::ensure!(status.is_success(), "the API answered {status}: {answer}");
        answer["id"]
            .as_str()
            .map(|id| Outcome::Enqueued(id.to_owned()))
            .context("the API answered a job without an id")
    }

    async fn job(&self, id: &str) -> anyhow::Result<Value> {
        self.send(self.http.get(format!("{}/v1/jobs/{id}", self.base)))
            .await
    }
}

/// Serves the demo's input image (a colour gradient PNG) on loopback, as a
/// producer's image URL would be served from its own storage.
struct ImageServer {
    url: String,
    task: tokio::task::JoinHandle<()>,
}

impl ImageServer {
    async fn start() -> anyhow::Result<ImageServer> {
        let png = gradient_png(1280, 720)?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/input.png", listener.local_addr()?);
        let app = axum::Router::new().route(
            "/input.png",
            axum::routing::get(move || {
                let png = png.clone();
                async move { ([(axum::http::header::CONTENT_TYPE, "image/png")], png) }
            }),
        );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(ImageServer { url, task })
    }

    fn stop(&self) {
        self.task.abort();
    }
}

fn gradient_png(width: u32, height: u32) -> anyhow::Result<Vec<u8>> {
    let image = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([
            (x * 255 / width) as u8,
            (y * 255 / height) as u8,
            (255 - x * 255 / width) as u8,
        ])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    image
        .write_to(&mut out, image::ImageFormat::Png)
        .context("cannot encode the demo image")?;
    Ok(out.into_inner())
}
