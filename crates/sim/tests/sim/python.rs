//! The providers' official Python clients (`runwayml`, `google-auth`,
//! `google-genai` in Vertex mode), unchanged, against an in-process
//! simulator (crates/sim/README.md). The scripts are in `tests/python/`.
//!
//! The clients are installed from PyPI (versions pinned in
//! `tests/python/requirements.txt`) into a virtualenv under the cargo target
//! directory, created once and reused until the requirements change. Without
//! python3, pip or PyPI the tests are skipped loudly (a failure under
//! `BYOK_TEST_SERVICES=required`).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use byok_sim::SimConfig;

use crate::helpers::{png, start};

const REQUIREMENTS: &str = include_str!("../python/requirements.txt");

fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python")
}

/// The virtualenv's python, or why there is none.
fn venv_python() -> &'static Result<PathBuf, String> {
    static VENV: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    VENV.get_or_init(|| {
        let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("byok-sim-python");
        byok_testing::python_venv(&venv, REQUIREMENTS)
    })
}

/// The python to run the scripts with, or `None` after reporting the skip.
async fn python() -> Option<PathBuf> {
    let venv = tokio::task::spawn_blocking(venv_python).await.unwrap();
    match venv {
        Ok(python) => Some(python.clone()),
        Err(why) => {
            byok_testing::skip_or_fail("python clients", why, "python3 with pip (and PyPI access)");
            None
        }
    }
}

/// A PNG of `width` x `height` in `dir`, for a client to send as its input image.
fn png_file(dir: &tempfile::TempDir, width: u32, height: u32) -> PathBuf {
    let image = dir.path().join("frame.png");
    std::fs::write(&image, png(width, height)).unwrap();
    image
}

/// The client re-sent by itself a create the simulator answered 429: two submits, one
/// throttled, one accepted, for one job (byok's adapters never re-send a create).
fn assert_resent_once(counters: &byok_sim::Counters) {
    assert_eq!(
        (counters.submits, counters.throttled, counters.accepted),
        (2, 1, 1),
        "{counters:?}"
    );
}

/// Runs `script` with `env`; panics with its output unless it exits 0.
async fn run(python: &Path, script: &str, env: &[(&str, &str)]) -> String {
    let mut command = tokio::process::Command::new(python);
    command
        .arg(scripts().join(script))
        .envs(env.iter().copied())
        // Nothing from the test's environment may redirect the clients.
        .env("NO_PROXY", "*")
        .env("no_proxy", "*")
        .env_remove("RUNWAYML_BASE_URL")
        .env_remove("RUNWAYML_API_SECRET")
        .env_remove("GOOGLE_GENAI_API_VERSION")
        .env_remove("GOOGLE_GENAI_USE_VERTEXAI")
        .env_remove("GOOGLE_API_KEY")
        .env_remove("GEMINI_API_KEY")
        .env_remove("GOOGLE_APPLICATION_CREDENTIALS")
        .env_remove("FAL_KEY_ID")
        .env_remove("FAL_KEY_SECRET")
        .env_remove("FAL_RUN_HOST")
        .env_remove("LUMA_CUSTOM_HEADERS")
        .env_remove("SSL_CERT_DIR")
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(180), command.output())
        .await
        .expect("the script finishes within 3 minutes")
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{script} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn config() -> SimConfig {
    SimConfig {
        // Long enough that the clients see running states, short enough
        // for a quick test.
        render_time: Duration::from_millis(150),
        retry_after: Duration::from_secs(1),
        ..SimConfig::default()
    }
}

#[tokio::test]
async fn runwayml_works_unchanged() {
    let Some(python) = python().await else {
        return;
    };
    let sim = start(config()).await;
    let dir = tempfile::tempdir().unwrap();
    let image = png_file(&dir, 1280, 720);
    let out = run(
        &python,
        "runway_client.py",
        &[
            ("SIM_URL", sim.base_url()),
            ("PNG_FILE", image.to_str().unwrap()),
        ],
    )
    .await;
    assert!(out.contains("runwayml ok"), "{out}");
    let stats = sim.stats().await;
    let key = stats.runway.for_api_key("sim_python_runway").unwrap();
    assert_eq!(key.counters.accepted, 4);
    assert_eq!(key.counters.cancels, 1);
    let throttled = stats.runway.for_api_key("sim_throttled_python").unwrap();
    assert_eq!(
        (throttled.counters.throttled, throttled.counters.accepted),
        (1, 1)
    );
}

#[tokio::test]
async fn google_auth_refreshes_against_the_token_endpoint() {
    let Some(python) = python().await else {
        return;
    };
    let sim = start(config()).await;
    let dir = tempfile::tempdir().unwrap();
    let trusted = dir.path().join("trusted.json");
    let account = sim.new_service_account("py-auth").unwrap();
    std::fs::write(&trusted, account.to_string()).unwrap();
    let untrusted = dir.path().join("untrusted.json");
    let stranger = byok_sim::generate_service_account(sim.base_url(), "py-auth", None).unwrap();
    std::fs::write(&untrusted, stranger.to_string()).unwrap();
    let out = run(
        &python,
        "google_auth_client.py",
        &[
            ("SA_FILE", trusted.to_str().unwrap()),
            ("UNTRUSTED_FILE", untrusted.to_str().unwrap()),
        ],
    )
    .await;
    assert!(out.contains("google-auth ok"), "{out}");
    let stats = sim.stats().await;
    let email = account["client_email"].as_str().unwrap();
    assert_eq!(stats.vertex.keys[email].counters.tokens, 1);
}

#[tokio::test]
async fn google_genai_generates_videos_in_vertex_mode() {
    let Some(python) = python().await else {
        return;
    };
    let sim = start(config()).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("account.json");
    let account = sim.new_service_account("py-genai").unwrap();
    std::fs::write(&file, account.to_string()).unwrap();
    let image = png_file(&dir, 1280, 720);
    let out = run(
        &python,
        "genai_client.py",
        &[
            ("SIM_URL", sim.base_url()),
            ("SA_FILE", file.to_str().unwrap()),
            ("PROJECT", "py-genai"),
            ("PNG_FILE", image.to_str().unwrap()),
        ],
    )
    .await;
    assert!(out.contains("google-genai ok"), "{out}");
    let stats = sim.stats().await;
    let key = &stats.vertex.keys[account["client_email"].as_str().unwrap()];
    assert_eq!(key.counters.accepted, 3);
    assert!(key.counters.polls >= 3);
}

#[tokio::test]
async fn google_genai_creates_polls_and_cancels_omni_interactions_in_vertex_mode() {
    let Some(python) = python().await else {
        return;
    };
    let sim = start(config()).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("account.json");
    let account = sim.new_service_account("py-omni").unwrap();
    std::fs::write(&file, account.to_string()).unwrap();
    let throttled_file = dir.path().join("throttled.json");
    let throttled = sim
        .new_service_account_with_id("py-omni", Some("sim-throttled-py"))
        .unwrap();
    std::fs::write(&throttled_file, throttled.to_string()).unwrap();
    let image = png_file(&dir, 1280, 720);
    let out = run(
        &python,
        "genai_interactions.py",
        &[
            ("SIM_URL", sim.base_url()),
            ("SA_FILE", file.to_str().unwrap()),
            ("THROTTLED_SA_FILE", throttled_file.to_str().unwrap()),
            ("PROJECT", "py-omni"),
            ("PNG_FILE", image.to_str().unwrap()),
        ],
    )
    .await;
    assert!(out.contains("google-genai interactions ok"), "{out}");
    let stats = sim.stats().await;
    let key = &stats.vertex.keys[account["client_email"].as_str().unwrap()];
    // Text, image (to Cloud Storage), moderated, cancelled; the two refused creates.
    assert_eq!((key.counters.accepted, key.counters.rejected), (4, 2));
    assert_eq!(key.counters.cancels, 2);
    assert!(key.counters.polls >= 3);
    // The client re-sent the create the simulator answered 429: two creates for one
    // interaction, which byok's adapter never does.
    let throttled = &stats.vertex.keys[throttled["client_email"].as_str().unwrap()];
    assert_resent_once(&throttled.counters);
}

#[tokio::test]
async fn replicate_runs_predictions_unchanged() {
    let Some(python) = python().await else {
        return;
    };
    let sim = start(config()).await;
    let dir = tempfile::tempdir().unwrap();
    // Over 256 KB would not matter to the client (it uploads any file it is given); a small
    // frame keeps the test quick.
    let image = png_file(&dir, 1024, 576);
    let base = sim.replicate_url();
    let out = run(
        &python,
        "replicate_client.py",
        &[
            // The client's own settings: its token and base URL from the environment.
            ("REPLICATE_API_TOKEN", "sim_python_replicate"),
            ("REPLICATE_BASE_URL", &base),
            ("REPLICATE_POLL_INTERVAL", "0.05"),
            ("SIM_URL", sim.base_url()),
            ("PNG_FILE", image.to_str().unwrap()),
        ],
    )
    .await;
    assert!(out.contains("replicate ok"), "{out}");
    let stats = sim.stats().await;
    let key = stats.replicate.for_api_key("sim_python_replicate").unwrap();
    // seedance, SVD by version, run, moderated run, the cancelled one.
    assert_eq!(key.counters.accepted, 5);
    assert_eq!(key.counters.cancels, 1);
    // The 422s (duration, unknown version) and the unknown model's 404.
    assert_eq!(key.counters.rejected, 3);
    let throttled = stats.replicate.for_api_key("sim_throttled_python").unwrap();
    assert_eq!(
        (throttled.counters.throttled, throttled.counters.accepted),
        (1, 1)
    );
    assert_eq!(stats.replicate.totals.unauthorized, 1);
}

#[tokio::test]
async fn fal_client_submits_polls_fetches_and_cancels_over_tls() {
    let Some(python) = python().await else {
        return;
    };
    // fal's client reaches its queue host only as `https://{FAL_QUEUE_RUN_HOST}/`: the
    // simulator's TLS listener serves it, and the client trusts the simulator's CA through
    // SSL_CERT_FILE, as httpx reads it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim = byok_sim::Simulator::new(config())
        .tls("127.0.0.1:0".parse().unwrap())
        .start(listener)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("sim-ca.pem");
    std::fs::write(&ca, sim.tls_ca_pem().unwrap()).unwrap();
    let image = png_file(&dir, 1280, 720);
    let queue_host = sim
        .tls_url()
        .unwrap()
        .trim_start_matches("https://")
        .to_owned();
    let out = run(
        &python,
        "fal_client.py",
        &[
            ("SIM_URL", sim.base_url()),
            ("FAL_KEY", "sim_python_fal"),
            ("FAL_QUEUE_RUN_HOST", &queue_host),
            ("SSL_CERT_FILE", ca.to_str().unwrap()),
            ("PNG_FILE", image.to_str().unwrap()),
        ],
    )
    .await;
    assert!(out.contains("fal-client ok"), "{out}");
    let stats = sim.stats().await;
    let key = stats.fal.for_api_key("sim_python_fal").unwrap();
    // Luma, Kling (subscribe), the cancelled one, the failing one, the moderated one and the
    // async one were queued; the bad duration was refused.
    assert_eq!((key.counters.accepted, key.counters.rejected), (6, 1));
    assert_eq!(key.counters.cancels, 2);
    assert!(key.counters.polls >= 6);
    // The client re-sends a submit answered 429 by itself: two submits for one request.
    let throttled = stats.fal.for_api_key("sim_throttled_python_fal").unwrap();
    assert_resent_once(&throttled.counters);
}

#[tokio::test]
async fn luma_agents_creates_polls_and_downloads_generations_unchanged() {
    let Some(python) = python().await else {
        return;
    };
    let sim = start(config()).await;
    let dir = tempfile::tempdir().unwrap();
    let image = png_file(&dir, 640, 360);
    let base = sim.luma_url();
    let out = run(
        &python,
        "luma_client.py",
        &[
            // The client's own settings: its key and base URL from the environment.
            ("LUMA_AGENTS_API_KEY", "sim_python_luma"),
            ("LUMA_BASE_URL", &base),
            ("SIM_URL", sim.base_url()),
            ("PNG_FILE", image.to_str().unwrap()),
        ],
    )
    .await;
    assert!(out.contains("luma-agents ok"), "{out}");
    let stats = sim.stats().await;
    let key = stats.luma.for_api_key("sim_python_luma").unwrap();
    // Text to video, image to video, the extension, the image, the moderated one; the 400
    // and the 422.
    assert_eq!((key.counters.accepted, key.counters.rejected), (5, 2));
    assert!(key.counters.polls >= 5);
    assert_eq!(stats.luma.totals.unauthorized, 1);
    let throttled = stats.luma.for_api_key("sim_throttled_python_luma").unwrap();
    assert_eq!(
        (throttled.counters.throttled, throttled.counters.accepted),
        (1, 1)
    );
    // The client re-sends a create answered 429 by itself: two submits for one generation.
    let retried = stats
        .luma
        .for_api_key("sim_throttled_python_luma_retry")
        .unwrap();
    assert_resent_once(&retried.counters);
}
