//! `GET /metrics` on the API and on a worker (`worker.metrics_listen`):
//! valid Prometheus text format, and figures that match what happened.

use std::collections::BTreeMap;
use std::time::Duration;

use byok_client::{GenerationRequest, JobStatus, ProviderId};
use serde_json::json;
use uuid::Uuid;

use crate::deploy::{DeployOptions, Deployment};

/// One sample line: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the Prometheus text format (0.0.4) strictly: every line is a
/// `# HELP`, a `# TYPE` or a sample of a declared family, names and label
/// names are valid, label values are quoted with escapes, values are floats.
fn parse(text: &str) -> Vec<Sample> {
    let valid_name = |n: &str| {
        !n.is_empty()
            && n.chars().enumerate().all(|(i, c)| {
                c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
            })
    };
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap();
            assert!(valid_name(name), "bad HELP: {line}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap_or(""));
            assert!(valid_name(name), "bad TYPE: {line}");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "bad TYPE: {line}"
            );
            assert!(
                types.insert(name.to_owned(), kind.to_owned()).is_none(),
                "TYPE twice: {line}"
            );
            continue;
        }
        assert!(!line.starts_with('#'), "unknown comment: {line}");
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value: {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((name, rest)) => (
                name,
                parse_labels(
                    rest.strip_suffix('}').unwrap_or_else(|| panic!("{line}")),
                    line,
                ),
            ),
        };
        assert!(valid_name(name), "bad sample name: {line}");
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|f| types.get(*f).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(name);
        assert!(types.contains_key(family), "sample without TYPE: {line}");
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    samples
}

fn parse_labels(body: &str, line: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut chars = body.chars().peekable();
    while chars.peek().is_some() {
        let name: String = chars.by_ref().take_while(|c| *c != '=').collect();
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad label in {line}"
        );
        assert_eq!(chars.next(), Some('"'), "unquoted label value in {line}");
        let mut value = String::new();
        loop {
            match chars.next() {
                Some('\\') => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(c @ ('\\' | '"')) => value.push(c),
                    other => panic!("bad escape {other:?} in {line}"),
                },
                Some('"') => break,
                Some(c) => value.push(c),
                None => panic!("unterminated label value in {line}"),
            }
        }
        labels.insert(name, value);
        match chars.next() {
            None | Some(',') => {}
            Some(c) => panic!("unexpected {c:?} in {line}"),
        }
    }
    labels
}

/// The value of the sample `name` whose labels include `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

async fn scrape(url: &str) -> Vec<Sample> {
    let response = reqwest::get(url).await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    parse(&response.text().await.unwrap())
}

#[test]
fn the_parser_refuses_what_prometheus_refuses() {
    let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\",y=\"q\\\"\"} 3\n";
    assert_eq!(parse(good)[0].labels["y"], "q\"");
    for bad in [
        "a_total 1\n",
        "# TYPE a counter\na{x=1} 2\n",
        "# TYPE a counter\na one\n",
        "# TYPE 1a counter\n",
    ] {
        assert!(
            std::panic::catch_unwind(|| parse(bad)).is_err(),
            "{bad:?} was accepted"
        );
    }
}

#[tokio::test]
async fn api_and_worker_metrics_tell_what_happened() {
    let Some(d) = Deployment::distributed(DeployOptions {
        workers: 1,
        ..DeployOptions::default()
    })
    .await
    else {
        return;
    };
    let user = Uuid::new_v4();
    d.put_credentials(user, "runway", json!({ "api_key": "sim_metrics_key" }))
        .await;
    let job = |prompt: &str| GenerationRequest {
        prompt: Some(prompt.to_owned()),
        ..GenerationRequest::new(user, ProviderId::RUNWAY, "gen4.5")
    };
    let ids = vec![
        d.submit(&job("one")).await,
        d.submit(&job("two")).await,
        d.submit(&job("please sim:moderate this")).await,
    ];
    let jobs = d.wait_all_final(&ids, Duration::from_secs(30)).await;
    assert!(
        jobs.iter()
            .all(|j| j.status != JobStatus::Queued && j.status != JobStatus::Running),
        "{jobs:?}"
    );

    let api = scrape(&format!("{}/metrics", d.api)).await;
    assert_eq!(
        value(&api, "byok_jobs_enqueued_total", &[("provider", "runway")]),
        Some(3.0)
    );
    let namespace = d.env_value("BYOK__QUEUE__NAMESPACE");
    for state in ["pending", "scheduled", "running", "dead"] {
        assert!(
            value(
                &api,
                "byok_queue_items",
                &[("queue", &namespace), ("state", state)]
            )
            .is_some(),
            "{state}"
        );
    }
    assert_eq!(
        value(&api, "byok_jobs_live", &[("status", "running")]),
        Some(0.0)
    );

    let worker = scrape(&d.worker_metrics[0]).await;
    let finished = |outcome, code| {
        value(
            &worker,
            "byok_jobs_finished_total",
            &[("provider", "runway"), ("outcome", outcome), ("code", code)],
        )
    };
    assert_eq!(finished("succeeded", ""), Some(2.0));
    assert_eq!(finished("failed", "content_rejected"), Some(1.0));
    let submits = value(
        &worker,
        "byok_provider_call_duration_seconds_count",
        &[
            ("provider", "runway"),
            ("call", "submit"),
            ("outcome", "ok"),
        ],
    );
    assert_eq!(submits, Some(3.0));
    assert!(
        value(
            &worker,
            "byok_provider_call_duration_seconds_count",
            &[("call", "poll")]
        )
        .unwrap_or(0.0)
            >= 3.0
    );
    assert_eq!(
        value(
            &worker,
            "byok_job_duration_seconds_count",
            &[("provider", "runway"), ("outcome", "succeeded")]
        ),
        Some(2.0)
    );
    assert_eq!(
        value(
            &worker,
            "byok_job_duration_seconds_bucket",
            &[
                ("provider", "runway"),
                ("outcome", "succeeded"),
                ("le", "+Inf")
            ]
        ),
        Some(2.0)
    );
    assert_eq!(
        value(&worker, "byok_worker_steps_in_flight", &[]),
        Some(0.0)
    );
    assert!(
        value(&worker, "byok_queue_items", &[("state", "pending")]).is_some(),
        "workers report queue depth too"
    );
    let health = reqwest::get(d.worker_metrics[0].replace("/metrics", "/healthz"))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn json_logs_are_one_object_per_line_carrying_the_request_id() {
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", byok_testing::free_port());
    let log = dir.path().join("stderr.log");
    let env = [
        ("BYOK__API__LISTEN", listen.as_str()),
        ("BYOK_LOG_FORMAT", "json"),
        // Requests are logged at debug (one line each would be noise at
        // thousands a second); errors inside a request log at their level.
        ("RUST_LOG", "info,tower_http=debug"),
    ];
    let mut server = crate::helpers::byok(dir.path(), &env)
        .arg("run")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let base = format!("http://{listen}");
    assert!(
        crate::helpers::wait_until_ready(&format!("{base}/readyz"), Duration::from_secs(30)).await
    );
    let response = reqwest::Client::new()
        .get(format!("{base}/v1/providers"))
        .header("x-request-id", "trace-me-7f3a")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["x-request-id"], "trace-me-7f3a");
    crate::helpers::terminate(server.id().unwrap());
    server.wait().await.unwrap();

    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .all(|l| l["timestamp"].is_string() && l["level"].is_string()),
        "{text}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.to_string().contains("trace-me-7f3a")),
        "a log line of the request carries its id:\n{text}"
    );
}
