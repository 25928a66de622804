//! The OpenAPI document against the real binary: the served document is
//! valid OpenAPI 3.1 (checked by `openapi-spec-validator`, which validates
//! against the official OpenAPI 3.1 JSON schema and resolves every `$ref`),
//! and a property-based fuzz run (`schemathesis`) with a valid token and a
//! user with stored simulator keys gets no 5xx, and only responses that
//! conform to the document: statuses, media types, headers and bodies.
//!
//! Both tools come from PyPI (pinned below) into a virtualenv under the cargo
//! target directory, created once and reused until the pins change. Without
//! python3, pip or PyPI the tests are skipped loudly (a failure under
//! `BYOK_TEST_SERVICES=required`).
//!
//! The run is bounded (`BYOK_FUZZ_EXAMPLES` cases per operation and phase,
//! default 30) and reproducible (`BYOK_FUZZ_SEED`, default fixed; any other
//! seed explores other inputs). A failure prints schemathesis' report with a
//! `curl` line reproducing each failing request.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::deploy::{DeployOptions, Deployment};

const REQUIREMENTS: &str = "schemathesis==4.32.5\nopenapi-spec-validator==0.9.0\n";
const HOOKS: &str = include_str!("api_fuzz_hooks.py");

const DEFAULT_EXAMPLES: u32 = 30;
const DEFAULT_SEED: u64 = 20261201;

/// The virtualenv's python, or why there is none.
fn venv_python() -> &'static Result<PathBuf, String> {
    static VENV: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    VENV.get_or_init(|| {
        let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("byok-api-fuzz-python");
        byok_testing::python_venv(&venv, REQUIREMENTS)
    })
}

/// The virtualenv's python, or `None` after reporting the skip.
async fn python() -> Option<PathBuf> {
    match tokio::task::spawn_blocking(venv_python).await.unwrap() {
        Ok(python) => Some(python.clone()),
        Err(why) => {
            byok_testing::skip_or_fail(
                "schemathesis and openapi-spec-validator",
                why,
                "python3 with pip (and PyPI access)",
            );
            None
        }
    }
}

/// The virtualenv's python in `dir`, which nothing in the test's
/// environment can redirect through a proxy. (Run as `python -m`: the
/// virtualenv was moved into place, so its scripts' `#!` lines are stale.)
fn python_in(python: &Path, dir: &Path) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(python);
    command
        .current_dir(dir)
        .env("NO_PROXY", "*")
        .env("no_proxy", "*")
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .env_remove("SCHEMATHESIS_HOOKS")
        .kill_on_drop(true);
    command
}

const VALIDATE: &str = r#"
import json, sys
from openapi_spec_validator import OpenAPIV31SpecValidator, validate
document = json.load(open(sys.argv[1]))
assert document["openapi"] == "3.1.0", document["openapi"]
validate(document, cls=OpenAPIV31SpecValidator)
print("valid OpenAPI 3.1:", len(document["paths"]), "paths,", len(document["components"]["schemas"]), "schemas")
"#;

#[tokio::test]
async fn the_served_document_is_valid_openapi_3_1() {
    let Some(python) = python().await else {
        return;
    };
    let d = Deployment::embedded(DeployOptions::default()).await;
    let document: Value = d
        .http
        .get(format!("{}/openapi.json", d.api))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let file = d.dir.path().join("openapi.json");
    std::fs::write(&file, document.to_string()).unwrap();
    let out = python_in(&python, d.dir.path())
        .args(["-c", VALIDATE])
        .arg(&file)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the served document is not valid OpenAPI 3.1:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("valid OpenAPI 3.1"), "{stdout}");
}

#[tokio::test]
async fn fuzzing_the_embedded_shape_finds_no_server_error() {
    let Some(python) = python().await else {
        return;
    };
    let d = Deployment::embedded(DeployOptions::default()).await;
    fuzz(&python, &d, "run").await;
}

#[tokio::test]
async fn fuzzing_the_distributed_shape_finds_no_server_error() {
    let Some(python) = python().await else {
        return;
    };
    let options = DeployOptions {
        workers: 1,
        ..DeployOptions::default()
    };
    let Some(d) = Deployment::distributed(options).await else {
        return;
    };
    fuzz(&python, &d, "api").await;
}

fn env_number<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, not {value:?}")),
        Err(_) => default,
    }
}

/// Stores simulator keys for the document's example user, checks the NUL
/// regression, then runs schemathesis against the deployment's API.
async fn fuzz(python: &Path, d: &Deployment, api_log: &str) {
    let user: Uuid = byok_api::EXAMPLE_USER_ID.parse().unwrap();
    d.put_credentials(user, "runway", json!({ "api_key": "sim_fuzz_runway" }))
        .await;
    d.put_credentials(
        user,
        "stability",
        json!({ "api_key": "sim_fuzz_stability" }),
    )
    .await;
    let account = d.sim.new_service_account("byok-fuzz").unwrap();
    d.put_credentials(user, "veo", json!({ "service_account": account }))
        .await;

    refuses_nul_characters(d, user).await;

    // Where the steering hook sends jobs: every text-to-video model.
    let providers = d.client().providers().await.unwrap();
    let targets: Vec<Value> = providers
        .providers
        .iter()
        .flat_map(|p| {
            p.models
                .iter()
                .filter(|m| m.modes.contains(&byok_client::Mode::TextToVideo))
                .map(|m| json!({ "provider": p.id, "model": m.id }))
        })
        .collect();
    assert!(!targets.is_empty(), "no text-to-video model: {providers:?}");

    let dir = d.dir.path().join("fuzz");
    std::fs::create_dir_all(&dir).unwrap();
    let hooks = dir.join("hooks.py");
    std::fs::write(&hooks, HOOKS).unwrap();
    let junit = dir.join("junit.xml");
    let examples = env_number("BYOK_FUZZ_EXAMPLES", DEFAULT_EXAMPLES);
    let seed = env_number("BYOK_FUZZ_SEED", DEFAULT_SEED);
    let checks = [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    ];

    let started = Instant::now();
    let run = python_in(python, &dir)
        .args(["-m", "schemathesis.cli", "run"])
        .arg(format!("{}/openapi.json", d.api))
        .args(["--header", &format!("Authorization: Bearer {}", d.token)])
        .args(["--checks", &checks.join(",")])
        .args(["--max-examples", &examples.to_string()])
        .args(["--seed", &seed.to_string()])
        .args(["--workers", "1", "--request-timeout", "20"])
        .args(["--generation-database", "none", "--no-color"])
        .args(["--report", "junit", "--report-junit-path"])
        .arg(&junit)
        .env("SCHEMATHESIS_HOOKS", &hooks)
        .env("BYOK_FUZZ_USER", user.to_string())
        .env("BYOK_FUZZ_TARGETS", Value::from(targets).to_string())
        .output();
    let out = tokio::time::timeout(Duration::from_secs(240), run)
        .await
        .expect("schemathesis finishes within 4 minutes")
        .expect("schemathesis runs");
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "schemathesis: {examples} examples, seed {seed}, {:.1}s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        out.status.success(),
        "schemathesis found failures (seed {seed}):\n{report}\n--- {api_log} log ---\n{}",
        d.log_tail(api_log)
    );

    // It tested every documented operation but the document itself.
    let tested = std::fs::read_to_string(&junit).unwrap();
    let document = serde_json::to_value(byok_api::openapi()).unwrap();
    for (path, item) in document["paths"].as_object().unwrap() {
        if path == "/openapi.json" {
            continue;
        }
        for method in item.as_object().unwrap().keys() {
            let name = format!("testcase name=\"{} {path}\"", method.to_uppercase());
            assert!(tested.contains(&name), "{name} was not tested:\n{report}");
        }
    }
    assert!(report.contains(" passed"), "{report}");
}

/// PostgreSQL stores no U+0000 in text or JSONB: such a job used to be a
/// 500 there. It is a 422 naming the field, on every shape.
async fn refuses_nul_characters(d: &Deployment, user: Uuid) {
    for (extra, field) in [
        (
            json!({ "metadata": { "note": "a\u{0}b" } }),
            "metadata.note",
        ),
        (json!({ "metadata": { "a\u{0}": 1 } }), "metadata.a\\u{0}"),
        (
            json!({ "image_url": "https://127.0.0.1/frame\u{0}.png" }),
            "image_url",
        ),
    ] {
        let mut body = json!({
            "user_id": user,
            "provider": "runway",
            "model": "gen4.5",
            "prompt": "a lighthouse at dawn",
        });
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let response = d
            .req(Method::POST, "/v1/jobs")
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let answer: Value = response.json().await.unwrap();
        assert_eq!(
            (
                status.as_u16(),
                &answer["error"]["code"],
                &answer["error"]["details"]["field"]
            ),
            (422, &json!("invalid_request"), &json!(field)),
            "{body} -> {answer}"
        );
    }
}
