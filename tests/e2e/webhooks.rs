//! Webhooks end to end: real `byok` processes on PostgreSQL + Redis (and SQLite), the
//! simulator, and a receiver that verifies every delivery with the official Python
//! `standardwebhooks` package (tests/e2e/webhook_receiver.py).

use std::path::PathBuf;
use std::time::Duration;

use byok_client::{
    ApiErrorCode, BatchRequest, BatchStatus, GenerationRequest, ListJobs, NewWebhookEndpoint,
    ProviderId,
};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::deploy::{DeployOptions, Deployment};
use crate::helpers::poll_until;

const REQUIREMENTS: &str = "standardwebhooks==1.1.0\n";

/// The Python receiver, killed on drop.
struct Receiver {
    dir: tempfile::TempDir,
    base: String,
    _child: tokio::process::Child,
}

impl Receiver {
    /// `None` (after a SKIPPED line) without python3, pip or PyPI.
    async fn start() -> Option<Receiver> {
        let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("byok-webhooks-python");
        let built =
            tokio::task::spawn_blocking(move || byok_testing::python_venv(&venv, REQUIREMENTS))
                .await
                .unwrap();
        let python = match built {
            Ok(python) => python,
            Err(why) => {
                byok_testing::skip_or_fail("standardwebhooks", &why, "python3 with pip");
                return None;
            }
        };
        let dir = tempfile::tempdir().unwrap();
        let port = byok_testing::free_port();
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/e2e/webhook_receiver.py"
        );
        let child = tokio::process::Command::new(python)
            .arg(script)
            .arg(port.to_string())
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let address = format!("127.0.0.1:{port}").parse().unwrap();
        assert!(
            tokio::task::spawn_blocking(move || {
                byok_testing::wait_for_tcp(address, Duration::from_secs(20))
            })
            .await
            .unwrap(),
            "the receiver never listened"
        );
        Some(Receiver {
            dir,
            base: format!("http://127.0.0.1:{port}/hooks"),
            _child: child,
        })
    }

    fn url(&self, name: &str) -> String {
        format!("{}/{name}", self.base)
    }

    fn set(&self, what: &str, name: &str, value: &str) {
        let dir = self.dir.path().join(what);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), value).unwrap();
    }

    fn secret(&self, name: &str, secret: &str) {
        self.set("secrets", name, secret);
    }

    fn mode(&self, name: &str, mode: &str) {
        self.set("mode", name, mode);
    }

    /// Every request so far, in arrival order.
    fn seen(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.path().join("seen.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Waits until `cond` holds on what was seen (up to `deadline`); returns it either way.
    async fn wait(&self, deadline: Duration, cond: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        poll_until(deadline, async || Some(self.seen()).filter(|s| cond(s)))
            .await
            .unwrap_or_else(|| self.seen())
    }
}

fn options() -> DeployOptions {
    DeployOptions {
        render_time: Duration::from_millis(300),
        extra_env: vec![(
            "BYOK__WEBHOOKS__RETRY_SCHEDULE".into(),
            "300ms, 300ms, 300ms, 300ms, 300ms, 300ms, 300ms, 300ms, 300ms, 300ms".into(),
        )],
        ..DeployOptions::default()
    }
}

fn runway_job(user: Uuid) -> Value {
    json!({ "user_id": user, "provider": "runway", "model": "gen4.5", "prompt": "a lighthouse", "duration_seconds": 5 })
}

async fn create_endpoint(d: &Deployment, url: &str, events: &[&str]) -> (String, String) {
    let made = d
        .client()
        .create_webhook(&NewWebhookEndpoint {
            url: url.to_owned(),
            events: events.iter().map(|e| e.parse().unwrap()).collect(),
            description: String::new(),
        })
        .await
        .unwrap();
    (made.endpoint.id.to_string(), made.secret)
}

/// The types delivered (answered 2xx) for `subject`, in arrival order.
fn delivered(seen: &[Value], endpoint: &str, subject: &str) -> Vec<String> {
    seen.iter()
        .filter(|s| s["endpoint"] == endpoint && s["answered"] == 204)
        .filter(|s| s["data"]["id"] == subject)
        .map(|s| s["type"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn deliveries_reach_a_verifying_receiver_in_order_through_an_outage_a_dead_key_and_a_410() {
    let Some(receiver) = Receiver::start().await else {
        return;
    };
    let Some(d) = Deployment::distributed(options()).await else {
        return;
    };
    let (endpoint, secret) = create_endpoint(
        &d,
        &receiver.url("main"),
        &[
            "job.running",
            "job.progress",
            "job.succeeded",
            "job.failed",
            "credential.invalidated",
        ],
    )
    .await;
    receiver.secret("main", &secret);
    let user = Uuid::new_v4();
    d.put_credentials(user, "runway", json!({ "api_key": "sim_webhooks_key_01" }))
        .await;

    // Every job of a run produces its events, in order per job, none missing.
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(d.enqueue(runway_job(user)).await);
    }
    let jobs = d.wait_final(&ids, Duration::from_secs(60)).await;
    let seen = receiver
        .wait(Duration::from_secs(30), |s| {
            ids.iter().all(|id| {
                delivered(s, "main", id).last().map(String::as_str) == Some("job.succeeded")
            })
        })
        .await;
    assert!(seen.iter().all(|s| s["verified"] == true), "{seen:?}");
    for (id, job) in ids.iter().zip(&jobs) {
        let types = delivered(&seen, "main", id);
        assert_eq!(
            types.first().map(String::as_str),
            Some("job.running"),
            "{id}: {types:?}"
        );
        assert_eq!(
            types.last().map(String::as_str),
            Some("job.succeeded"),
            "{id}: {types:?}"
        );
        assert!(
            types[1..types.len() - 1]
                .iter()
                .all(|t| t == "job.progress"),
            "{id}: {types:?}"
        );
        let succeeded = seen
            .iter()
            .find(|s| s["data"]["id"] == *id && s["type"] == "job.succeeded")
            .unwrap();
        assert_eq!(
            succeeded["data"], *job,
            "the data is the job as the API shows it"
        );
    }

    // The receiver is down for a while: deliveries are retried, then all arrive, each
    // attempt of one event with the same webhook-id.
    receiver.mode("main", "down");
    let during = vec![
        d.enqueue(runway_job(user)).await,
        d.enqueue(runway_job(user)).await,
    ];
    receiver
        .wait(Duration::from_secs(60), |s| {
            s.iter().filter(|r| r["answered"] == 503).count() >= 6
        })
        .await;
    receiver.mode("main", "ok");
    let seen = receiver
        .wait(Duration::from_secs(60), |s| {
            during.iter().all(|id| {
                let types = delivered(s, "main", id);
                types.contains(&"job.running".to_owned())
                    && types.contains(&"job.succeeded".to_owned())
            })
        })
        .await;
    // Retried events may overtake each other (as with every webhook sender): none is
    // missing, and the payloads' timestamps put them back in order.
    for id in &during {
        let types = delivered(&seen, "main", id);
        assert!(types.contains(&"job.running".to_owned()), "{id}: {types:?}");
        assert!(
            types.contains(&"job.succeeded".to_owned()),
            "{id}: {types:?}"
        );
    }
    let delivered_ids: Vec<&str> = seen
        .iter()
        .filter(|s| s["answered"] == 204)
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    let failed: Vec<&Value> = seen.iter().filter(|s| s["answered"] == 503).collect();
    assert!(failed.len() >= 6);
    for attempt in failed {
        assert!(
            delivered_ids.contains(&attempt["id"].as_str().unwrap()),
            "a failed attempt's webhook-id {} arrived later: {attempt}",
            attempt["id"]
        );
    }

    // A user's key revoked at the provider: credential.invalidated, with no key material.
    let revoked_user = Uuid::new_v4();
    let revoked_key = "sim_webhooks_revoked_02";
    d.put_credentials(revoked_user, "runway", json!({ "api_key": revoked_key }))
        .await;
    d.sim
        .inject_fault(byok_sim::Fault {
            provider: "runway".into(),
            status: 401,
            body: r#"{"error":"Invalid API key"}"#.into(),
            content_type: "application/json".into(),
            count: 1,
        })
        .unwrap();
    let doomed = d.enqueue(runway_job(revoked_user)).await;
    let failed_job = d
        .wait_final(std::slice::from_ref(&doomed), Duration::from_secs(60))
        .await;
    assert_eq!(
        failed_job[0]["error"]["code"], "credentials_invalid",
        "{failed_job:?}"
    );
    let seen = receiver
        .wait(Duration::from_secs(30), |s| {
            s.iter().any(|r| r["type"] == "credential.invalidated")
        })
        .await;
    let invalidated = seen
        .iter()
        .find(|r| r["type"] == "credential.invalidated")
        .expect("credential.invalidated arrived");
    assert_eq!(invalidated["verified"], true);
    assert_eq!(invalidated["data"]["user_id"], json!(revoked_user));
    assert_eq!(invalidated["data"]["provider"], "runway");
    assert!(invalidated["data"]["credential_hint"].is_string());
    assert!(!invalidated.to_string().contains(revoked_key));
    assert!(!invalidated.to_string().contains("sim_webhooks"));

    // 410 Gone disables the endpoint.
    receiver.mode("main", "gone");
    d.enqueue(runway_job(user)).await;
    let endpoint: Uuid = endpoint.parse().unwrap();
    let disabled = poll_until(Duration::from_secs(60), async || {
        let endpoint = d.client().get_webhook(endpoint).await.unwrap();
        (!endpoint.enabled).then_some(endpoint)
    })
    .await
    .expect("the endpoint was disabled");
    assert_eq!(
        disabled.disabled_reason.as_deref(),
        Some("the receiver answered 410 Gone")
    );
}

#[tokio::test]
async fn a_worker_killed_mid_delivery_still_delivers_with_the_same_webhook_id() {
    let Some(receiver) = Receiver::start().await else {
        return;
    };
    let Some(mut d) = Deployment::distributed(DeployOptions {
        workers: 1,
        ..options()
    })
    .await
    else {
        return;
    };
    let (_, secret) = create_endpoint(&d, &receiver.url("kill"), &["job.succeeded"]).await;
    receiver.secret("kill", &secret);
    // The first attempt of each event gets no answer: the worker is mid-delivery, the
    // job's final transition committed, when it is killed.
    receiver.mode("kill", "hang-once");
    let user = Uuid::new_v4();
    d.put_credentials(user, "runway", json!({ "api_key": "sim_webhooks_kill_01" }))
        .await;
    let id = d.enqueue(runway_job(user)).await;
    let hung = receiver
        .wait(Duration::from_secs(60), |s| {
            s.iter().any(|r| r["answered"] == "hang")
        })
        .await;
    let first = hung
        .iter()
        .find(|r| r["answered"] == "hang")
        .expect("the first attempt reached the receiver")
        .clone();
    d.kill_worker(0).await;
    d.start_worker();
    let seen = receiver
        .wait(Duration::from_secs(60), |s| {
            delivered(s, "kill", &id).contains(&"job.succeeded".to_owned())
        })
        .await;
    let delivered: Vec<&Value> = seen.iter().filter(|r| r["answered"] == 204).collect();
    assert_eq!(delivered.len(), 1, "{seen:?}");
    assert_eq!(
        delivered[0]["id"], first["id"],
        "the same webhook-id after the kill"
    );
    assert_eq!(delivered[0]["verified"], true);
}

#[tokio::test]
async fn a_jobs_own_webhook_url_gets_its_events_signed_with_the_project_secret_embedded() {
    let Some(receiver) = Receiver::start().await else {
        return;
    };
    let d = Deployment::embedded(options()).await;
    let secret = d.client().rotate_job_webhook_secret().await.unwrap();
    receiver.secret("job", &secret.secret);
    let user = Uuid::new_v4();
    d.put_credentials(user, "runway", json!({ "api_key": "sim_webhooks_job_01" }))
        .await;
    let mut body = runway_job(user);
    body["webhook_url"] = json!(receiver.url("job"));
    let id = d.enqueue(body).await;
    d.expect_success(&id, "run", Duration::from_secs(60)).await;
    let seen = receiver
        .wait(Duration::from_secs(30), |s| {
            delivered(s, "job", &id).last().map(String::as_str) == Some("job.succeeded")
        })
        .await;
    let types = delivered(&seen, "job", &id);
    assert_eq!(
        types.first().map(String::as_str),
        Some("job.running"),
        "{types:?}"
    );
    assert_eq!(
        types.last().map(String::as_str),
        Some("job.succeeded"),
        "{types:?}"
    );
    assert!(seen.iter().all(|s| s["verified"] == true), "{seen:?}");
}

/// A batch of 200 with 3 bad jobs is refused whole, naming exactly those 3, and stores
/// nothing; a valid batch of 200 then runs to the end and its endpoint hears
/// `batch.completed` exactly once, verified by the official library.
#[tokio::test]
async fn a_batch_is_refused_whole_naming_its_bad_jobs_then_completes_with_one_event() {
    let Some(receiver) = Receiver::start().await else {
        return;
    };
    let Some(d) = Deployment::distributed(options()).await else {
        return;
    };
    let (endpoint, secret) =
        create_endpoint(&d, &receiver.url("batches"), &["batch.completed"]).await;
    receiver.secret("batches", &secret);
    // Four users with a key each, fifty jobs each; and one user with none.
    let users: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
    for (n, user) in users.iter().enumerate() {
        d.put_credentials(
            *user,
            "runway",
            json!({ "api_key": format!("sim_batch_key_{n}") }),
        )
        .await;
    }
    let keyless = Uuid::new_v4();
    let job = |i: usize| GenerationRequest {
        prompt: Some(format!("shot {i}")),
        duration_seconds: Some(5),
        ..GenerationRequest::new(users[i % users.len()], ProviderId::RUNWAY, "gen4.5")
    };
    let mut bad = BatchRequest {
        jobs: (0..200).map(job).collect(),
        metadata: json!({ "campaign": "e2e" }),
    };
    bad.jobs[17].model = "no-such-model".into();
    bad.jobs[88].duration_seconds = Some(600);
    bad.jobs[150] = GenerationRequest {
        prompt: Some("no key".into()),
        ..GenerationRequest::new(keyless, ProviderId::RUNWAY, "gen4.5")
    };
    let refused = d.client().create_batch(&bad, None).await.unwrap_err();
    assert_eq!(
        refused.code(),
        Some(ApiErrorCode::InvalidRequest),
        "{refused}"
    );
    let items = refused.details()["items"].as_array().unwrap().clone();
    let indexes: Vec<u64> = items.iter().map(|i| i["index"].as_u64().unwrap()).collect();
    assert_eq!(indexes, [17, 88, 150], "{items:?}");
    assert_eq!(items[2]["code"], "credentials_missing", "{items:?}");
    for user in users.iter().chain([&keyless]) {
        let page = d
            .client()
            .list_jobs(*user, &ListJobs::default())
            .await
            .unwrap();
        assert!(page.jobs.is_empty(), "nothing stored: {page:?}");
    }

    let good = BatchRequest {
        jobs: (0..200).map(job).collect(),
        metadata: json!({ "campaign": "e2e" }),
    };
    let created = d.client().create_batch(&good, None).await.unwrap();
    assert_eq!(created.batch.total, 200);
    let id = created.batch.id;
    let done = poll_until(Duration::from_secs(120), async || {
        let batch = d.client().get_batch(id).await.unwrap();
        (batch.status == BatchStatus::Completed).then_some(batch)
    })
    .await
    .expect("the batch completes");
    assert_eq!(done.counts.succeeded, 200, "{done:?}");
    let seen = receiver
        .wait(Duration::from_secs(30), |s| {
            s.iter().any(|r| r["type"] == "batch.completed")
        })
        .await;
    let completed: Vec<&Value> = seen
        .iter()
        .filter(|r| r["type"] == "batch.completed")
        .collect();
    assert_eq!(completed.len(), 1, "exactly one batch.completed: {seen:?}");
    assert_eq!(completed[0]["verified"], true);
    assert_eq!(completed[0]["data"]["id"], id.to_string());
    assert_eq!(
        completed[0]["data"],
        serde_json::to_value(&done).unwrap(),
        "the batch as GET /v1/batches/{{id}} shows it"
    );
    // And the outbox holds exactly one for it.
    let deliveries = d
        .client()
        .webhook_deliveries(endpoint.parse().unwrap(), &Default::default())
        .await
        .unwrap();
    assert_eq!(deliveries.deliveries.len(), 1, "{deliveries:?}");
    assert_eq!(deliveries.deliveries[0].subject_id, Some(id));
}
