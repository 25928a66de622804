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
    let image = dir.path().join("frame.png");
    std::fs::write(&image, png(1280, 720)).unwrap();
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
    let image = dir.path().join("frame.png");
    std::fs::write(&image, png(1280, 720)).unwrap();
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
