//! The first run: `byok demo` and `byok run --simulate` in an empty folder,
//! with no configuration and no services (the test clears the environment).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{byok, poll_until, run, terminate, wait_until_ready};

#[tokio::test]
async fn the_demo_runs_every_provider_in_an_empty_folder_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    // A real installation's settings in the environment are not the demo's business.
    let env = [
        ("DATABASE_URL", "postgres://postgres@127.0.0.1:1/production"),
        ("REDIS_URL", "redis://127.0.0.1:1"),
    ];
    let out = tokio::time::timeout(Duration::from_secs(180), run(dir.path(), &env, &["demo"]))
        .await
        .expect("the demo finishes");
    assert_eq!(
        out.code, 0,
        "stdout:\n{}\nstderr:\n{}",
        out.stdout, out.stderr
    );
    let ignoring = out
        .stderr
        .lines()
        .find(|l| l.starts_with("byok demo: ignoring "))
        .unwrap_or_else(|| panic!("no word about the environment: {}", out.stderr));
    assert!(
        ignoring.contains("DATABASE_URL") && ignoring.contains("REDIS_URL"),
        "{ignoring}"
    );
    assert!(
        out.stdout.contains("all 10 jobs ended as expected"),
        "{}",
        out.stdout
    );
    let mut videos = 0;
    for row in [
        "Runway, text",
        "Runway, image",
        "Veo, text",
        "Veo, image",
        "Omni, text",
        "fal Kling, image",
        "Replicate, text",
        "Runway, moderated",
        "Runway, throttled key",
        "Stability, retired",
    ] {
        let line = out
            .stdout
            .lines()
            .find(|l| l.starts_with(row))
            .unwrap_or_else(|| panic!("no row {row}:\n{}", out.stdout));
        assert!(line.contains(" yes "), "{line}");
        videos += usize::from(line.contains(" MB mp4"));
    }
    assert_eq!(videos, 8, "{}", out.stdout);
    assert!(
        out.stdout.contains("failed (content_rejected)"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("refused (model_retired)"),
        "{}",
        out.stdout
    );
    // Its own temporary directory, removed at the end: nothing is left in
    // the folder it ran in, nor in the one it named.
    assert!(!dir.path().join("byok-data").exists());
    let home = out
        .stderr
        .split("data in ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .expect("the demo names its directory");
    assert!(home.contains("byok-demo-"), "{home}");
    assert!(
        !std::path::Path::new(home).exists(),
        "{home} is left behind"
    );
    eprintln!("demo took {:?}", started.elapsed());
}

#[tokio::test]
async fn run_simulate_serves_real_requests_against_the_in_process_simulator() {
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", byok_testing::free_port());
    let env = [("BYOK__API__LISTEN", listen.as_str())];
    let mut server = byok(dir.path(), &env)
        .args(["run", "--simulate"])
        .spawn()
        .unwrap();
    let base = format!("http://{listen}");
    assert!(
        wait_until_ready(&format!("{base}/readyz"), Duration::from_secs(30)).await,
        "never ready"
    );

    let token = run(dir.path(), &env, &["token", "create", "--name", "try"]).await;
    assert_eq!(token.code, 0, "{}", token.stderr);
    let token = token.stdout.lines().next().unwrap().to_owned();
    let http = reqwest::Client::new();
    let user = uuid::Uuid::new_v4();
    let stored = http
        .put(format!(
            "{base}/v1/users/{user}/providers/runway/credentials"
        ))
        .bearer_auth(&token)
        .json(&json!({ "credentials": { "api_key": "sim_try_it" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(stored.status(), 200, "the simulator checked the key");
    let refused = http
        .put(format!(
            "{base}/v1/users/{user}/providers/stability/credentials"
        ))
        .bearer_auth(&token)
        .json(&json!({ "credentials": { "api_key": "not_a_sim_key" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        refused.status(),
        422,
        "the simulator refuses keys as the provider would"
    );

    let job: Value = http
        .post(format!("{base}/v1/jobs"))
        .bearer_auth(&token)
        .json(&json!({ "user_id": user, "provider": "runway", "model": "gen4.5", "prompt": "a first try" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = job["id"].as_str().unwrap().to_owned();
    let read_job = async || -> Value {
        http.get(format!("{base}/v1/jobs/{id}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    };
    let succeeded = poll_until(Duration::from_secs(30), async || {
        let job = read_job().await;
        (job["status"] == "succeeded").then_some(job)
    })
    .await;
    assert!(succeeded.is_some(), "not succeeded: {}", read_job().await);
    let video = http
        .get(format!("{base}/v1/jobs/{id}/video"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(video.status(), 200);
    assert_eq!(&video.bytes().await.unwrap()[4..8], b"ftyp");

    terminate(server.id().unwrap());
    let status = tokio::time::timeout(Duration::from_secs(30), server.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
}
