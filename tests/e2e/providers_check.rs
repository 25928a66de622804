//! `byok providers check`: the shipped definitions walked against the simulator, a
//! rejected key, a job the provider fails, and a definition that does not load.

use std::path::{Path, PathBuf};
use std::time::Duration;

use byok_sim::{RunningSim, SimConfig, Simulator};
use serde_json::Value;

use crate::helpers::{Output, run};

/// The definitions shipped with byok.
fn shipped(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../providers/definitions")
        .join(name)
}

/// A simulator whose jobs take long enough for a poll to see them running.
async fn simulator() -> RunningSim {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    Simulator::new(SimConfig {
        render_time: Duration::from_millis(400),
        ..SimConfig::default()
    })
    .start(listener)
    .await
    .unwrap()
}

/// `byok providers check FILE --against URL --poll-interval 50ms` with `extra` after it.
async fn check(dir: &Path, env: &[(&str, &str)], file: &Path, url: &str, extra: &[&str]) -> Output {
    let file = file.display().to_string();
    let mut args = vec![
        "providers",
        "check",
        &file,
        "--against",
        url,
        "--poll-interval",
        "50ms",
        "--timeout",
        "2m",
    ];
    args.extend_from_slice(extra);
    run(dir, env, &args).await
}

/// The JSON report, with each step's result by name.
fn report(out: &Output) -> (Value, Vec<(String, String)>) {
    let json: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", out.stdout, out.stderr));
    let steps = json["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["step"].as_str().unwrap().to_owned(),
                s["result"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    (json, steps)
}

fn step<'a>(json: &'a Value, name: &str) -> &'a Value {
    json["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == name)
        .unwrap_or_else(|| panic!("no step {name}: {json}"))
}

fn results(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

#[tokio::test]
async fn luma_passes_against_the_simulator_and_its_cancel_is_skipped() {
    let sim = simulator().await;
    let dir = tempfile::tempdir().unwrap();
    let key = "sim_providers_check_luma";
    let credentials = format!(r#"{{"api_key":"{key}"}}"#);
    let out = check(
        dir.path(),
        &[("BYOK_CHECK_CREDENTIALS", &credentials)],
        &shipped("luma.toml"),
        &sim.luma_url(),
        &["--json"],
    )
    .await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let (json, steps) = report(&out);
    assert_eq!(
        steps,
        results(&[
            ("definition", "pass"),
            ("key check", "pass"),
            ("submit", "pass"),
            ("poll", "pass"),
            ("download", "pass"),
            ("cancel", "skip"),
        ]),
        "{json}"
    );
    assert_eq!(json["passed"], true);
    assert_eq!(json["provider"], "luma");
    assert_eq!(json["model"], "ray-3.2", "the first available model");
    assert_eq!(step(&json, "cancel")["detail"], "skipped (no cancel)");
    let states = step(&json, "poll")["states"].as_array().unwrap().clone();
    assert_eq!(states.last().unwrap(), "succeeded", "{json}");
    assert!(
        states.len() >= 2,
        "a 400 ms render is seen unfinished: {json}"
    );
    let download = step(&json, "download")["detail"].as_str().unwrap();
    assert!(download.contains("ftyp"), "{download}");

    // What the simulator saw: the key check, one job, polled, no cancel.
    let stats = sim.stats().await;
    let seen = stats.luma.for_api_key(key).expect("the key reached Luma");
    assert_eq!(seen.counters.accepted, 1);
    assert!(seen.counters.polls >= 2);
    assert_eq!(seen.counters.cancels, 0);
    assert!(!out.stdout.contains(key) && !out.stderr.contains(key));
    sim.shutdown().await;
}

#[tokio::test]
async fn synthesia_passes_against_the_simulator_with_its_cancel() {
    let sim = simulator().await;
    let dir = tempfile::tempdir().unwrap();
    let key = "sim_providers_check_synthesia";
    std::fs::write(
        dir.path().join("synthesia.json"),
        format!(r#"{{"api_key":"{key}"}}"#),
    )
    .unwrap();
    let out = check(
        dir.path(),
        &[],
        &shipped("synthesia.toml"),
        &sim.synthesia_url(),
        &["--credentials-file", "synthesia.json", "--model", "mia"],
    )
    .await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    // The table: a header, one line per step, a summary.
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines[0].starts_with("STEP") && lines[0].contains("RESULT") && lines[0].contains("DETAIL"),
        "{}",
        out.stdout
    );
    for name in [
        "definition",
        "key check",
        "submit",
        "poll",
        "download",
        "cancel",
    ] {
        let line = lines
            .iter()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} line: {}", out.stdout));
        assert!(line.contains("PASS"), "{line}");
    }
    assert!(
        out.stdout.contains("synthesia against") && out.stdout.contains("6 passed, 0 failed"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("mia"), "{}", out.stdout);

    // Two jobs: the one that ran to the end, and the one deleted.
    let stats = sim.stats().await;
    let seen = stats
        .synthesia
        .for_api_key(key)
        .expect("the key reached Synthesia");
    assert_eq!(seen.counters.accepted, 2);
    assert_eq!(seen.counters.cancels, 1);
    assert!(!out.stdout.contains(key) && !out.stderr.contains(key));

    // --no-cancel leaves the second job out.
    let out = check(
        dir.path(),
        &[],
        &shipped("synthesia.toml"),
        &sim.synthesia_url(),
        &[
            "--credentials-file",
            "synthesia.json",
            "--no-cancel",
            "--json",
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let (json, _) = report(&out);
    assert_eq!(step(&json, "cancel")["result"], "skip");
    assert_eq!(step(&json, "cancel")["detail"], "skipped (--no-cancel)");
    let stats = sim.stats().await;
    assert_eq!(
        stats.synthesia.for_api_key(key).unwrap().counters.accepted,
        3
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn a_rejected_key_fails_the_key_check_without_showing_the_key() {
    let sim = simulator().await;
    let dir = tempfile::tempdir().unwrap();
    // The simulator accepts only keys starting `sim_`.
    let key = "lk-rejected-7f3a9c21e5";
    let credentials = format!(r#"{{"api_key":"{key}"}}"#);
    for extra in [&[][..], &["--json"][..]] {
        let mut args = vec!["--credentials", credentials.as_str()];
        args.extend_from_slice(extra);
        let out = check(
            dir.path(),
            &[],
            &shipped("luma.toml"),
            &sim.luma_url(),
            &args,
        )
        .await;
        assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
        assert!(!out.stdout.contains(key), "{}", out.stdout);
        assert!(!out.stderr.contains(key), "{}", out.stderr);
        if extra.is_empty() {
            let line = out
                .stdout
                .lines()
                .find(|l| l.starts_with("key check"))
                .unwrap();
            assert!(line.contains("FAIL"), "{line}");
            assert!(line.contains("credentials_invalid"), "{line}");
            assert!(line.contains("HTTP 401"), "{line}");
            continue;
        }
        let (json, steps) = report(&out);
        assert_eq!(
            steps,
            results(&[
                ("definition", "pass"),
                ("key check", "fail"),
                ("submit", "skip"),
                ("poll", "skip"),
                ("download", "skip"),
                ("cancel", "skip"),
            ]),
            "{json}"
        );
        assert_eq!(step(&json, "key check")["code"], "credentials_invalid");
        assert_eq!(
            step(&json, "submit")["detail"],
            "skipped (key check failed)"
        );
        assert_eq!(json["passed"], false);
    }
    let stats = sim.stats().await;
    assert_eq!(stats.luma.totals.accepted, 0, "nothing was submitted");
    assert_eq!(stats.luma.totals.unauthorized, 2);

    // No credentials at all: said, with the ways to give them.
    let out = check(
        dir.path(),
        &[],
        &shipped("luma.toml"),
        &sim.luma_url(),
        &["--json"],
    )
    .await;
    assert_eq!(out.code, 1);
    let (json, _) = report(&out);
    assert_eq!(step(&json, "key check")["code"], "credentials_missing");
    let detail = step(&json, "key check")["detail"].as_str().unwrap();
    assert!(detail.contains("BYOK_CHECK_CREDENTIALS"), "{detail}");
    sim.shutdown().await;
}

#[tokio::test]
async fn a_job_the_provider_fails_fails_the_poll_with_its_code() {
    let sim = simulator().await;
    let dir = tempfile::tempdir().unwrap();
    // The simulator moderates prompts holding its trigger (SimConfig::moderation_trigger);
    // Luma reports `content_moderated`, which the definition maps to `content_rejected`.
    let out = check(
        dir.path(),
        &[(
            "BYOK_CHECK_CREDENTIALS",
            r#"{"api_key":"sim_check_moderated"}"#,
        )],
        &shipped("luma.toml"),
        &sim.luma_url(),
        &["--prompt", "a harbour at dawn sim:moderate", "--json"],
    )
    .await;
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    let (json, steps) = report(&out);
    assert_eq!(
        steps,
        results(&[
            ("definition", "pass"),
            ("key check", "pass"),
            ("submit", "pass"),
            ("poll", "fail"),
            ("download", "skip"),
            ("cancel", "skip"),
        ]),
        "{json}"
    );
    let poll = step(&json, "poll");
    assert_eq!(poll["code"], "content_rejected", "{poll}");
    assert_eq!(poll["states"].as_array().unwrap().last().unwrap(), "failed");
    sim.shutdown().await;
}

#[tokio::test]
async fn a_bad_definition_is_named_by_file_provider_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(shipped("luma.toml")).unwrap();
    let broken = text.replace(r#"completed = "succeeded""#, r#"completed = "done""#);
    assert_ne!(broken, text);
    let file = dir.path().join("broken-luma.toml");
    std::fs::write(&file, broken).unwrap();
    // Nothing listens there: the walk must stop before any request.
    let url = format!("http://127.0.0.1:{}/luma/v1", byok_testing::free_port());
    for json in [false, true] {
        let extra: &[&str] = if json { &["--json"] } else { &[] };
        let out = check(
            dir.path(),
            &[("BYOK_CHECK_CREDENTIALS", r#"{"api_key":"sim_x"}"#)],
            &file,
            &url,
            extra,
        )
        .await;
        assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
        let detail = if json {
            let (report, steps) = report(&out);
            assert_eq!(steps[0], ("definition".to_owned(), "fail".to_owned()));
            assert!(steps[1..].iter().all(|(_, r)| r == "skip"), "{report}");
            step(&report, "definition")["detail"]
                .as_str()
                .unwrap()
                .to_owned()
        } else {
            out.stdout.clone()
        };
        for named in [
            file.display().to_string(),
            "provider `luma`".to_owned(),
            "field `poll.states.completed`".to_owned(),
        ] {
            assert!(detail.contains(&named), "{named} in {detail}");
        }
    }
}
