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
//! as expected. It talks to the API with `byok-client`, as a Rust producer would.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use byok_client::{
    ApiErrorCode, Client, ClientError, GenerationRequest, IdempotencyKey, JobStatus, JobView,
    ProviderId, PutCredentials,
};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use secrecy::ExposeSecret as _;
use serde_json::json;
use uuid::Uuid;

use crate::table::Table;
use byok_app::{Roles, Running};

/// The longest the demo waits for its jobs.
const DEADLINE: Duration = Duration::from_secs(120);

/// One scripted job: what it is, what to send, and how it must end.
struct Scripted {
    label: &'static str,
    input: &'static str,
    request: GenerationRequest,
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

/// What became of a scripted job: its id, or the code of the API's refusal.
enum Outcome {
    Enqueued(Uuid),
    Refused(ApiErrorCode),
}

/// A scripted job as last seen: the job, or the API's refusal at enqueue.
#[derive(Clone)]
enum State {
    Job(Box<JobView>),
    Refused(ApiErrorCode),
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
    let api = Client::builder(&format!("http://{}", api_address(system)?), token)
        .user_agent(concat!("byok-demo/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("cannot make the demo's API client")?;

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
        api.put_credentials(who, provider, &PutCredentials::new(credentials))
            .await
            .with_context(|| format!("storing the demo's {provider} key"))?;
    }

    let jobs = scripted_jobs(user, throttled_user, image_url);
    let mut outcomes = Vec::new();
    for job in &jobs {
        outcomes.push(
            enqueue(&api, &job.request)
                .await
                .with_context(|| format!("enqueueing {}", job.label))?,
        );
    }

    let finals = follow(&api, &jobs, &outcomes).await?;
    print_results(&jobs, &finals, output_dir)
}

/// Enqueues `request`: the job's id, or the code of the API's refusal when it answered 422
/// (the demo expects one); any other error ends the demo. Each job gets an
/// `Idempotency-Key`, as a producer's should, so the client may retry it safely.
async fn enqueue(api: &Client, request: &GenerationRequest) -> anyhow::Result<Outcome> {
    match api
        .create_job(request, Some(&IdempotencyKey::random()))
        .await
    {
        Ok(enqueued) => Ok(Outcome::Enqueued(enqueued.job.id)),
        Err(ClientError::Api { status, code, .. })
            if status == reqwest::StatusCode::UNPROCESSABLE_ENTITY =>
        {
            Ok(Outcome::Refused(code))
        }
        Err(e) => Err(e.into()),
    }
}

fn scripted_jobs(user: Uuid, throttled_user: Uuid, image_url: &str) -> Vec<Scripted> {
    let job = |provider: ProviderId, model: &str, prompt: Option<&str>| GenerationRequest {
        prompt: prompt.map(str::to_owned),
        ..GenerationRequest::new(user, provider, model)
    };
    let image = Some(image_url.to_owned());
    vec![
        Scripted {
            label: "Runway, text",
            input: "text",
            request: GenerationRequest {
                duration_seconds: Some(5),
                aspect_ratio: Some("16:9".into()),
                ..job(
                    ProviderId::RUNWAY,
                    "gen4.5",
                    Some("a lighthouse at dusk, waves breaking below"),
                )
            },
            expect: Expect::Succeeded,
        },
        Scripted {
            label: "Runway, image",
            input: "image",
            request: GenerationRequest {
                image_url: image.clone(),
                duration_seconds: Some(5),
                ..job(
                    ProviderId::RUNWAY,
                    "gen4_turbo",
                    Some("the camera slowly pushes in"),
                )
            },
            expect: Expect::Succeeded,
        },
        Scripted {
            label: "Veo, text",
            input: "text",
            request: GenerationRequest {
                duration_seconds: Some(4),
                ..job(
                    ProviderId::VEO,
                    "veo-3.1-fast-generate-001",
                    Some("a paper boat drifting down a rainy street"),
                )
            },
            expect: Expect::Succeeded,
        },
        Scripted {
            label: "Veo, image",
            input: "image",
            request: GenerationRequest {
                image_url: image.clone(),
                duration_seconds: Some(6),
                ..job(
                    ProviderId::VEO,
                    "veo-3.1-generate-001",
                    Some("the colours slowly swirl"),
                )
            },
            expect: Expect::Succeeded,
        },
        Scripted {
            label: "Omni, text",
            input: "text",
            request: GenerationRequest {
                duration_seconds: Some(4),
                ..job(
                    ProviderId::VEO,
                    OMNI_MODEL,
                    Some("a hot-air balloon rising over a misty valley"),
                )
            },
            expect: Expect::Succeeded,
        },
        Scripted {
            label: "fal Kling, image",
            input: "image",
            request: GenerationRequest {
                image_url: image.clone(),
                ..job(
                    ProviderId::FAL,
                    FAL_MODEL,
                    Some("leaves drift across the frame"),
                )
            },
            expect: Expect::Succeeded,
        },
        Scripted {
            label: "Replicate, text",
            input: "text",
            request: job(
                ProviderId::REPLICATE,
                REPLICATE_MODEL,
                Some("a fox trotting through fresh snow"),
            ),
            expect: Expect::Succeeded,
        },
        Scripted {
            label: "Runway, moderated",
            input: "text",
            request: job(
                ProviderId::RUNWAY,
                "gen4.5",
                Some("something the provider refuses (sim:moderate)"),
            ),
            expect: Expect::Failed("content_rejected"),
        },
        Scripted {
            label: "Runway, throttled key",
            input: "text",
            request: GenerationRequest {
                prompt: Some("a storm rolling over the hills".into()),
                ..GenerationRequest::new(throttled_user, ProviderId::RUNWAY, "gen4.5")
            },
            expect: Expect::Succeeded,
        },
        Scripted {
            label: "Stability, retired",
            input: "image",
            request: GenerationRequest {
                image_url: image,
                ..job(ProviderId::STABILITY, "stable-video-diffusion", None)
            },
            expect: Expect::Refused("model_retired"),
        },
    ]
}

/// The models the demo runs on the newer providers (their catalogues' first video models).
const OMNI_MODEL: &str = "gemini-omni-1.2-flash";
const FAL_MODEL: &str = "kling-v2.1-master";
const REPLICATE_MODEL: &str = "bytedance/seedance-2.0-fast";

/// Shows every enqueued job live until all are final; returns their last state (for a
/// refused job, the API's refusal).
async fn follow(
    api: &Client,
    jobs: &[Scripted],
    outcomes: &[Outcome],
) -> anyhow::Result<Vec<State>> {
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
                Outcome::Enqueued(id) => State::Job(Box::new(api.get_job(*id).await?)),
                Outcome::Refused(code) => State::Refused(*code),
            });
        }
        for (bar, state) in shown.iter_mut().zip(&states) {
            let job = match state {
                State::Refused(code) => {
                    if !bar.is_finished() {
                        bar.abandon_with_message(format!("refused ({code})"));
                    }
                    continue;
                }
                State::Job(job) => job,
            };
            let progress = match job.status {
                JobStatus::Succeeded => 1.0,
                _ => job.progress.unwrap_or(0.0),
            };
            bar.set_position((progress * 100.0).round() as u64);
            let message = match &job.error {
                Some(error) => format!("{} ({})", job.status, error.code.as_str()),
                None => job.status.to_string(),
            };
            bar.set_message(message);
            if job.status.is_terminal() && !bar.is_finished() {
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

fn is_final(state: &State) -> bool {
    match state {
        State::Refused(_) => true,
        State::Job(job) => job.status.is_terminal(),
    }
}

#[allow(clippy::print_stdout)]
fn print_results(
    jobs: &[Scripted],
    finals: &[State],
    output_dir: &Path,
) -> anyhow::Result<ExitCode> {
    let mut table = Table::new([
        "JOB", "PROVIDER", "MODEL", "INPUT", "STATUS", "EXPECTED", "TIME", "VIDEO",
    ]);
    let mut unexpected = Vec::new();
    for (job, state) in jobs.iter().zip(finals) {
        let (actual, output, time) = match state {
            State::Refused(code) => (format!("refused ({code})"), "-".to_owned(), "-".to_owned()),
            State::Job(done) => {
                let actual = match (&done.error, done.status) {
                    (Some(error), JobStatus::Failed) => {
                        format!("failed ({})", error.code.as_str())
                    }
                    _ => done.status.to_string(),
                };
                let video = output_dir.join(format!("{}.mp4", done.id));
                let output = match std::fs::metadata(&video) {
                    Ok(meta) if done.status == JobStatus::Succeeded && meta.is_file() => {
                        format!("{:.1} MB mp4", meta.len() as f64 / 1e6)
                    }
                    _ => "-".to_owned(),
                };
                (actual, output, elapsed(done))
            }
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
            job.request.provider.to_string(),
            job.request.model.clone(),
            job.input.to_owned(),
            actual,
            if ok {
                "yes".to_owned()
            } else {
                format!("NO: {}", job.expect.describe())
            },
            time,
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
fn elapsed(job: &JobView) -> String {
    match job.finished_at {
        Some(finished) => format!(
            "{:.1}s",
            (finished - job.created_at).num_milliseconds() as f64 / 1000.0
        ),
        None => "-".to_owned(),
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
