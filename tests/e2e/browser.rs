//! The pages people use, in a real browser: headless Chromium (Debian's package) driven by
//! Playwright for Python, against a real `byok run` with the simulator. With
//! `BYOK_DOCS_SCREENSHOTS=1` the screenshots are written into `docs/images/` (the ones the
//! docs show); otherwise into a temporary directory.

use std::path::{Path, PathBuf};

use byok_client::ProviderId;
use byok_queue::Engine as _;
use serde_json::Value;
use uuid::Uuid;

use crate::deploy::{DeployOptions, Deployment};
use crate::helpers::run;

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/e2e")
        .join(name)
}

fn screenshots(scratch: &Path) -> PathBuf {
    if std::env::var_os("BYOK_DOCS_SCREENSHOTS").is_some() {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/images")
    } else {
        scratch.to_owned()
    }
}

/// Playwright's python and the Chromium it drives (`None` after a SKIPPED line).
async fn browser_tools() -> Option<(PathBuf, PathBuf)> {
    let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("byok-browser-python");
    tokio::task::spawn_blocking(move || byok_testing::browser(&venv))
        .await
        .unwrap()
}

/// What a browser script printed, once it exited well.
fn seen(out: &std::process::Output) -> Value {
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Link → page → a key the simulator refuses (its reason shown, nothing stored) → a `sim_`
/// key stored → back to the app; the link refused afterwards, and an edited one too.
#[tokio::test]
async fn a_user_connects_a_key_on_the_page_in_a_real_browser() {
    let Some((python, chromium)) = browser_tools().await else {
        return;
    };
    let d = Deployment::embedded(DeployOptions::default()).await;
    let back = format!("{}/healthz", d.api);
    let set = run(
        d.dir.path(),
        &d.env_refs(),
        &["project", "return-urls", "--project", "default", &back],
    )
    .await;
    assert_eq!(set.code, 0, "{}", set.stderr);
    let user = Uuid::new_v4();
    let link = d
        .client()
        .create_connect_link(user, ProviderId::RUNWAY.as_str(), &back)
        .await
        .unwrap();

    let shots = tempfile::tempdir().unwrap();
    let shots_dir = screenshots(shots.path());
    std::fs::create_dir_all(&shots_dir).unwrap();
    let good = "sim_connected_in_a_browser_0001";
    let bad = "not_a_simulator_key_0001";
    let out = tokio::process::Command::new(&python)
        .arg(script("browser_connect.py"))
        .arg(&chromium)
        .arg(&link.url)
        .arg(&back)
        .arg(bad)
        .arg(good)
        .arg(&shots_dir)
        .output()
        .await
        .unwrap();
    let seen = seen(&out);
    assert_eq!(seen["title"], "Connect your Runway ML key", "{seen}");
    assert_eq!(
        seen["fields"],
        serde_json::json!([["api_key", "password"], ["organization_id", "text"]]),
        "{seen}"
    );
    let rejection = seen["rejection"].as_str().unwrap();
    assert!(
        rejection.contains("The key was not accepted") && rejection.contains("Invalid API key"),
        "the simulator's reason: {rejection}"
    );
    assert_eq!(seen["rejected_page_has_key"], false, "never the key back");
    assert_eq!(seen["rejected_field_value"], "");
    let returned = seen["returned_to"].as_str().unwrap();
    assert!(
        returned.starts_with(&format!("{back}?byok_connected=runway")),
        "{returned}"
    );
    assert_eq!(seen["reused"], "This link does not work");
    assert_eq!(
        seen["third_party_requests"],
        serde_json::json!([]),
        "{seen}"
    );
    assert_eq!(
        seen["refused"],
        serde_json::json!([]),
        "no CSP violation: {seen}"
    );
    for name in ["connect-page", "connect-rejected", "connect-invalid"] {
        assert!(shots_dir.join(format!("{name}.png")).is_file(), "{name}");
    }

    // Stored: checked with the simulator, the hint only.
    let stored = d
        .client()
        .get_credentials(user, ProviderId::RUNWAY.as_str())
        .await
        .unwrap();
    assert!(
        stored.is_valid && stored.validated_at.is_some(),
        "{stored:?}"
    );
    assert!(
        !stored
            .credential_hint
            .as_deref()
            .unwrap_or_default()
            .contains(good)
    );

    // A link edited to another user, in the browser's way (a plain GET), does not work.
    let other = link
        .url
        .replace(&user.to_string(), &Uuid::new_v4().to_string());
    let edited = reqwest::get(&other).await.unwrap();
    assert_eq!(edited.status(), 404);

    // A link past its 15 minutes: another user's fresh link, its expiry moved into the past
    // in the database (as time would), is refused with the same page and stores nothing.
    let late_user = Uuid::new_v4();
    let late = d
        .client()
        .create_connect_link(late_user, ProviderId::RUNWAY.as_str(), &back)
        .await
        .unwrap();
    let db =
        sqlx::SqlitePool::connect(&format!("sqlite://{}/data/byok.db", d.dir.path().display()))
            .await
            .unwrap();
    let moved = sqlx::query(
        "UPDATE connect_links SET expires_at = '2000-01-01 00:00:00+00:00' WHERE user_id = ?1",
    )
    .bind(late_user.to_string())
    .execute(&db)
    .await
    .unwrap();
    assert_eq!(moved.rows_affected(), 1);
    db.close().await;
    let expired = reqwest::get(&late.url).await.unwrap();
    assert_eq!(expired.status(), 404);
    assert!(
        expired
            .text()
            .await
            .unwrap()
            .contains("This link does not work")
    );
    let posted = reqwest::Client::new()
        .post(&late.url)
        .form(&[("api_key", good)])
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 404, "an expired link takes no key");
    assert!(
        d.client()
            .get_credentials(late_user, ProviderId::RUNWAY.as_str())
            .await
            .is_err(),
        "nothing stored"
    );
}

/// Sign in to the dashboard, see a job end live (the page is never reloaded), open its
/// timeline, retry a dead item, purge the dead with a typed confirmation, see the key's
/// limiter windows, sign out; a `dashboard:read` session sees no action button and its forged
/// action is refused; no page holds the key or a token.
#[tokio::test]
async fn an_operator_watches_a_job_end_live_on_the_dashboard_in_a_real_browser() {
    let Some((python, chromium)) = browser_tools().await else {
        return;
    };
    let d = Deployment::embedded(DeployOptions::default()).await;
    let token = |scopes: &'static str| {
        let dir = d.dir.path().to_owned();
        let env: Vec<(String, String)> = d.env.clone();
        async move {
            let env: Vec<(&str, &str)> =
                env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let made = run(
                &dir,
                &env,
                &["token", "create", "--name", scopes, "--scopes", scopes],
            )
            .await;
            assert_eq!(made.code, 0, "{}", made.stderr);
            made.stdout.trim().to_owned()
        }
    };
    let admin = token("admin").await;
    let reader = token("dashboard:read").await;
    let user = Uuid::new_v4();
    let key = "sim_dashboard_0001";
    d.put_credentials(user, "runway", serde_json::json!({ "api_key": key }))
        .await;
    // Two items no worker can read: the running worker moves them to dead.
    let queue = byok_queue::SqliteEngine::connect(
        &format!("sqlite://{}/data/byok.db", d.dir.path().display()),
        byok_queue::QueueConfig::new("byok"),
    )
    .await
    .unwrap();
    queue
        .push(&[
            byok_queue::NewItem::now("broken-1", "not a job"),
            byok_queue::NewItem::now("broken-2", "not a job"),
        ])
        .await
        .unwrap();
    crate::helpers::poll_until(std::time::Duration::from_secs(30), async || {
        (queue.stats().await.unwrap().dead == 2).then_some(())
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "the worker moved both to dead: {:?}\n{}",
            futures::executor::block_on(queue.stats()),
            d.log_tail("run")
        )
    });

    let shots = tempfile::tempdir().unwrap();
    let shots_dir = screenshots(shots.path());
    std::fs::create_dir_all(&shots_dir).unwrap();
    let signal = shots.path().join("go");
    let browser = tokio::process::Command::new(&python)
        .arg(script("browser_dashboard.py"))
        .arg(&chromium)
        .arg(&d.api)
        .arg(&admin)
        .arg(&reader)
        .arg(&signal)
        .arg(&shots_dir)
        .arg(key)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Once the browser shows the overview, a job is enqueued and runs.
    crate::helpers::poll_until(std::time::Duration::from_secs(30), async || {
        signal.exists().then_some(())
    })
    .await
    .expect("the browser signed in");
    let request = byok_client::GenerationRequest {
        prompt: Some("a lighthouse".into()),
        ..byok_client::GenerationRequest::new(user, ProviderId::RUNWAY, "gen4.5")
    };
    d.submit(&request).await;
    let out = browser.wait_with_output().await.unwrap();
    let seen = seen(&out);
    assert!(
        seen["signed_out_url"]
            .as_str()
            .unwrap()
            .ends_with("/dashboard/sign-in"),
        "{seen}"
    );
    assert_eq!(seen["heading"], "Overview", "{seen}");
    assert_eq!(seen["cookie_http_only"], true);
    assert_eq!(seen["cookie_same_site"], serde_json::json!(["Strict"]));
    assert!(
        seen["before"].as_str().unwrap().contains("succeeded 0"),
        "{seen}"
    );
    assert!(
        seen["after"].as_str().unwrap().contains("succeeded 1"),
        "{seen}"
    );
    assert!(
        seen["after_sign_out_url"]
            .as_str()
            .unwrap()
            .ends_with("/dashboard/sign-in")
    );
    assert!(
        seen["timeline"].as_u64().unwrap() >= 3,
        "queued, running, succeeded: {seen}"
    );
    assert_eq!(
        seen["prompt_visible_before"], false,
        "the prompt waits for a click"
    );
    assert_eq!(seen["prompt_visible_after"], true);
    assert_eq!(seen["video"], 1);
    assert_eq!(seen["read_only_label"], "read-only");
    assert_eq!(seen["read_only_retry_buttons"], 0);
    assert_eq!(seen["read_only_forged_status"], 403);
    assert_eq!(seen["admin_without_csrf_status"], 403, "{seen}");
    assert_eq!(seen["read_only_queue_buttons"], 0, "{seen}");
    assert_eq!(seen["dead_rows"], 2, "{seen}");
    assert!(
        seen["after_retry_url"]
            .as_str()
            .unwrap()
            .ends_with("/dashboard/queues?state=dead"),
        "{seen}"
    );
    assert_eq!(
        seen["retried_item_died_again_as_another_entry"], true,
        "the retried item went back to a worker: {seen}"
    );
    assert_eq!(seen["wrong_confirmation_heading"], "Purge not confirmed");
    assert_eq!(seen["dead_rows_after_refused_purge"], 2, "{seen}");
    assert_eq!(seen["dead_rows_after_purge"], 0, "{seen}");
    assert_eq!(seen["dead_tab_after_purge"], "dead 0", "{seen}");
    let keys = seen["keys_table"].as_str().unwrap();
    assert!(
        keys.contains("runway") && keys.contains("valid") && keys.contains("1 / "),
        "the key and the one submit of its job: {keys}"
    );
    assert_eq!(
        seen["secrets_on_pages"],
        serde_json::json!([]),
        "no page holds the key or a token: {seen}"
    );
    assert_eq!(
        seen["refused"],
        serde_json::json!([]),
        "no CSP violation: {seen}"
    );
    assert_eq!(
        seen["third_party_requests"],
        serde_json::json!([]),
        "{seen}"
    );
    for name in [
        "dashboard-sign-in",
        "dashboard-overview",
        "dashboard-jobs",
        "dashboard-job",
        "dashboard-queues",
        "dashboard-keys",
    ] {
        assert!(shots_dir.join(format!("{name}.png")).is_file(), "{name}");
    }
}
