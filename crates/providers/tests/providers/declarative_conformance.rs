//! The declared providers against the simulator, as `sim_lifecycle` runs the built-in
//! adapters: Luma and Synthesia (the shipped definitions) and Acme (the simulator's own
//! test API, `crates/sim/definitions/acme.toml`), each declared in a [`Registry`] and
//! driven through its adapter over real HTTP on loopback.
//!
//! For each: a whole job to video bytes with what the simulator received (its per-key
//! counters, every request it saw, the body it echoes); every class of answer (a valid, a
//! rejected and an unanswered key; 4xx refused; 5xx transient; 429 with the provider's
//! wait; an unknown state and an unreadable body transient; a 2xx without a job id and a
//! 504 `submit_outcome_unknown`; an unknown job id); the jobs' failures; cancel; and
//! throttling. Answers no protocol gives on its own (a gateway's 5xx, a 200 that is not
//! JSON) come from the simulator's faults; the definition-side ones (a pointer that
//! misses, a state not mapped) from a definition changed for the case. The simulator's
//! clock is stepped by hand: nothing waits.

use std::path::{Path, PathBuf};
use std::time::Duration;

use byok_core::{ErrorCode, JobError, RetryClass};
use byok_providers::declarative::{Auth, Definition, NamedTemplate};
use byok_providers::{
    CancelOutcome, CredentialCheck, Credentials, ProviderId, Registry, RegistryOptions,
    RemoteStatus, VideoOutput, VideoProvider,
};
use byok_sim::{Clock, Fault, ProviderStats, RunningSim, SimConfig, Stats};
use serde_json::{Value, json};

use crate::sim_lifecycle::{sim_with, submit};
use crate::support::FetchVideo as _;
use crate::support::{Adapter, adapter, assert_class, generation_request, input_png, is_mp4};

/// How long every simulated job renders (the clock is stepped by hand).
const RENDER: Duration = Duration::from_secs(10);
/// The wait every simulated 429 names.
const WAIT: Duration = Duration::from_secs(3);
/// The wait of a 429 that names none.
const DEFAULT_WAIT: Duration = Duration::from_secs(60);

/// A declared provider under test.
#[derive(Debug, Clone, Copy)]
struct Subject {
    /// The definition's id, also its name in the simulator's stats and faults.
    id: &'static str,
    /// Its definition file.
    file: &'static str,
    /// Where the simulator serves it.
    url: fn(&RunningSim) -> String,
    /// A text-to-video request of its catalogue.
    text: fn() -> Value,
    /// An image-to-video one, when it has that mode.
    image: Option<fn() -> Value>,
    /// Whether a poll right after the submit says queued (else running).
    starts_queued: bool,
    /// The progress a poll halfway through the render reports.
    halfway: Option<f64>,
    /// The top-level fields of the rendered body the simulator echoes when asked for the
    /// job, at `echo` in its answer (`None`: every field).
    echoed: Option<&'static [&'static str]>,
    echo: &'static str,
    /// Words of the provider's own failure text for a moderated job.
    moderation_text: &'static str,
    /// Whether the definition has a cancel.
    cancels: bool,
}

fn subjects() -> [Subject; 3] {
    [
        Subject {
            id: "luma",
            file: "definitions/luma.toml",
            url: RunningSim::luma_url,
            text: || {
                json!({"model": "ray-3.2", "prompt": "a lighthouse at dusk", "aspect_ratio": "21:9",
                       "resolution": "1080p", "duration_seconds": 10})
            },
            image: Some(|| {
                json!({"model": "ray-3.2", "prompt": "a slow dolly-in",
                       "image_url": "https://example.com/a.png"})
            }),
            starts_queued: true,
            halfway: None,
            // A generation shows its model and type, not the rest of the create.
            echoed: Some(&["model", "type"]),
            echo: "",
            moderation_text: "content guidelines",
            cancels: false,
        },
        Subject {
            id: "synthesia",
            file: "definitions/synthesia.toml",
            url: RunningSim::synthesia_url,
            text: || {
                json!({"model": "mia", "prompt": "Hello from the \"conformance\" suite",
                       "aspect_ratio": "9:16"})
            },
            image: None,
            starts_queued: false,
            halfway: None,
            // A video echoes its create body.
            echoed: None,
            echo: "",
            // No failure text: the state stands as the code.
            moderation_text: "(rejected)",
            cancels: true,
        },
        Subject {
            id: "acme",
            file: "../sim/definitions/acme.toml",
            url: RunningSim::acme_url,
            text: || {
                json!({"model": "acme-swift", "prompt": "a red fox, {\"x\": 1} \\ ünïcode",
                       "negative_prompt": "blur", "seed": 42, "aspect_ratio": "9:16",
                       "duration_seconds": 8})
            },
            image: Some(
                || json!({"model": "acme-swift", "image_url": "https://example.com/a.png"}),
            ),
            starts_queued: true,
            halfway: Some(0.5),
            echoed: None,
            echo: "/data/request",
            moderation_text: "content moderation",
            cancels: true,
        },
    ]
}

impl Subject {
    /// What a poll right after the submit says.
    fn at_start(&self) -> RemoteStatus {
        if self.starts_queued {
            RemoteStatus::Queued
        } else {
            RemoteStatus::Running { progress: None }
        }
    }

    fn provider(&self) -> ProviderId {
        ProviderId::declare(self.id).expect("a valid id")
    }

    fn definition(&self) -> Definition {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(self.file);
        Definition::load(&path).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Its adapter in `registry` with the key `key`.
    fn adapter(&self, registry: &Registry, key: &str) -> Adapter {
        adapter(registry, self.provider(), &json!({ "api_key": key }))
    }

    /// Its requests seen by the simulator.
    fn stats<'a>(&self, stats: &'a Stats) -> &'a ProviderStats {
        match self.id {
            "luma" => &stats.luma,
            "synthesia" => &stats.synthesia,
            "acme" => &stats.acme,
            other => panic!("no stats for {other}"),
        }
    }

    /// How many requests the simulator has received for it.
    async fn requests(&self, sim: &RunningSim) -> usize {
        self.stats(&sim.stats().await).request_times_ms.len()
    }

    /// Its next request gets `status` with `body`, before any handler.
    fn fault(&self, sim: &RunningSim, status: u16, body: &str) {
        sim.inject_fault(Fault {
            body: body.to_owned(),
            ..Fault::new(self.id, status)
        })
        .expect("a valid fault");
    }

    /// `text` with another prompt.
    fn prompted(&self, prompt: &str) -> Value {
        let mut fields = (self.text)();
        fields["prompt"] = json!(prompt);
        fields
    }
}

/// A simulator whose clock moves only when told.
async fn simulator() -> (RunningSim, Clock) {
    let clock = Clock::manual();
    let sim = sim_with(
        SimConfig {
            render_time: RENDER,
            retry_after: WAIT,
            ..SimConfig::default()
        },
        clock.clone(),
    )
    .await;
    (sim, clock)
}

/// The three definitions, each changed by `change`, declared and pointed at `sim`.
fn registry_with(sim: &RunningSim, change: impl Fn(&mut Definition)) -> Registry {
    let mut options = RegistryOptions::defaults();
    for subject in subjects() {
        let mut definition = subject.definition();
        change(&mut definition);
        let id = options.declare(definition).expect("declared");
        options.provider_mut(id).unwrap().base_url = (subject.url)(sim);
    }
    options.allow_private_networks = true;
    options.request_timeout = Duration::from_secs(10);
    Registry::new(&options).expect("a registry")
}

fn registry(sim: &RunningSim) -> Registry {
    registry_with(sim, |_| {})
}

/// The body `fields` render to with `definition` (text to video).
fn rendered(definition: &Definition, subject: &Subject, fields: Value) -> Value {
    let request = generation_request(subject.id, fields);
    let validated = definition.catalogue().validate(&request).expect("valid");
    definition
        .render_submit(&validated, None)
        .expect("rendered")
}

/// The job as the simulator remembers it, read with `definition`'s poll request (so
/// with its auth and headers) straight from the simulator.
async fn remembered(
    sim: &RunningSim,
    subject: &Subject,
    definition: &Definition,
    key: &str,
    job: &str,
) -> Value {
    let mut url: reqwest::Url = format!("{}{}", (subject.url)(sim), definition.poll_path(job))
        .parse()
        .expect("a URL");
    // Every field named, the optional ones empty: `render_auth_value` leaves a field it is
    // not given undefined, which a strict template refuses.
    let mut fields: std::collections::BTreeMap<String, String> = definition
        .credential_fields
        .iter()
        .map(|f| (f.name.clone(), String::new()))
        .collect();
    fields.insert("api_key".to_owned(), key.to_owned());
    let value = definition.render_auth_value(&fields).unwrap();
    if let (Auth::Query(t), Some(value)) = (&definition.auth, &value) {
        url.query_pairs_mut().append_pair(&t.name, value);
    }
    let mut request = reqwest::Client::new().get(url);
    for (name, value) in &definition.headers {
        request = request.header(name, value);
    }
    request = match (&definition.auth, value) {
        (Auth::Bearer(_), _) => request.bearer_auth(key),
        (Auth::Header(t), Some(value)) => request.header(&t.name, value),
        (Auth::Query(_), Some(_)) => request,
        (_, None) => unreachable!("header and query auth have a value"),
    };
    let answer = request.send().await.expect("answered");
    assert_eq!(
        answer.status(),
        200,
        "{}: the job is remembered",
        subject.id
    );
    answer.json().await.expect("JSON")
}

fn failed(status: Result<RemoteStatus, JobError>, case: &str) -> JobError {
    match status {
        Ok(RemoteStatus::Failed(e)) => e,
        other => panic!("{case}: expected a failed job, got {other:?}"),
    }
}

#[tokio::test]
async fn every_declared_provider_runs_a_job_to_video_bytes() {
    let (sim, clock) = simulator().await;
    let registry = registry(&sim);
    for subject in subjects() {
        let case = subject.id;
        let key = format!("sim_{case}_lifecycle");
        let (adapter, creds) = subject.adapter(&registry, &key);
        let id = submit(&*adapter, &creds, (subject.text)(), None)
            .await
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_eq!(
            adapter.poll(&creds, &id).await,
            Ok(subject.at_start()),
            "{case}"
        );
        clock.advance(RENDER / 2);
        assert_eq!(
            adapter.poll(&creds, &id).await,
            Ok(RemoteStatus::Running {
                progress: subject.halfway
            }),
            "{case}: halfway"
        );
        clock.advance(RENDER / 2);
        let Ok(RemoteStatus::Succeeded(output, _)) = adapter.poll(&creds, &id).await else {
            panic!("{case}: succeeded")
        };
        assert!(
            matches!(&output, VideoOutput::Urls(urls) if urls.len() == 1),
            "{case}"
        );
        let video = adapter
            .fetch_video(&creds, &output)
            .await
            .expect("downloaded");
        assert!(is_mp4(&video.bytes), "{case}: an MP4 came back");
        let stamp = format!("byok-sim {id}");
        assert!(
            video
                .bytes
                .windows(stamp.len())
                .any(|w| w == stamp.as_bytes()),
            "{case}: the video of this job"
        );

        // What the simulator received: one create and three gets with this exact key (a
        // key it could not read would count as unauthorized), the download, and nothing
        // else (no retry, no stray call).
        let stats = sim.stats().await;
        let seen = subject.stats(&stats);
        let counters = &seen.for_api_key(&key).expect("the key's stats").counters;
        assert_eq!(
            (
                counters.submits,
                counters.accepted,
                counters.rejected,
                counters.throttled,
                counters.polls,
                counters.cancels,
                counters.unauthorized
            ),
            (1, 1, 0, 0, 3, 0, 0),
            "{case}: {counters:?}"
        );
        assert_eq!(seen.totals.unauthorized, 0, "{case}");
        assert_eq!(
            seen.request_times_ms.len(),
            5,
            "{case}: create, 3 polls, download"
        );

        // The body it received is the one the definition renders.
        let definition = subject.definition();
        let body = rendered(&definition, &subject, (subject.text)());
        let job = remembered(&sim, &subject, &definition, &key, &id).await;
        let echo = job.pointer(subject.echo).expect("the echo");
        let fields: Vec<&str> = match subject.echoed {
            Some(fields) => fields.to_vec(),
            None => body
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect(),
        };
        for field in fields {
            assert_eq!(echo[field], body[field], "{case}: `{field}` as received");
        }

        // Image to video: the inline image is accepted as the definition sends it.
        if let Some(image) = subject.image {
            let id = submit(&*adapter, &creds, image(), Some(&input_png(1280, 720)))
                .await
                .unwrap_or_else(|e| panic!("{case} image: {e}"));
            assert_eq!(adapter.poll(&creds, &id).await, Ok(subject.at_start()));
            if subject.id == "acme" {
                // Acme echoes the image it decoded by its type, size and digest.
                let job = remembered(&sim, &subject, &definition, &key, &id).await;
                let echoed = &job["data"]["request"]["input"]["image"];
                assert_eq!(echoed["media_type"], "image/png", "{job}");
                assert!(echoed["bytes"].as_u64().is_some_and(|n| n > 0), "{job}");
            }
            let accepted = subject
                .stats(&sim.stats().await)
                .for_api_key(&key)
                .unwrap()
                .counters
                .accepted;
            assert_eq!(accepted, 2, "{case}: the image job was created");
        }
    }
}

#[tokio::test]
async fn every_class_of_answer_is_classified() {
    let (sim, _clock) = simulator().await;
    let plain = registry(&sim);
    // A body with a field no API knows: each simulator refuses unknown fields.
    let unknown_field = registry_with(&sim, |d| {
        d.submit.body = d.submit.body.replacen('{', "{\"colour\": \"red\",", 1);
    });
    let no_job_id = registry_with(&sim, |d| d.submit.job_id = "/no/job/id".to_owned());
    // Every state a job is in before it ends, no longer mapped.
    let unmapped = registry_with(&sim, |d| {
        d.poll
            .states
            .retain(|_, ours| ours != "queued" && ours != "running");
    });
    let transient = |e: &JobError, case: &str| {
        assert_class(
            e,
            ErrorCode::ProviderUnavailable,
            RetryClass::Transient,
            case,
        );
    };
    for subject in subjects() {
        let case = |what: &str| format!("{}: {what}", subject.id);
        let key = format!("sim_{}_classes", subject.id);
        let (adapter, creds) = subject.adapter(&plain, &key);

        // The key check: a verdict only when the provider gives one.
        assert_eq!(
            adapter.check_credentials(&creds).await,
            CredentialCheck::Valid
        );
        let (_, bad) = subject.adapter(&plain, "not_a_simulator_key");
        let CredentialCheck::Rejected { reason } = adapter.check_credentials(&bad).await else {
            panic!("{}", case("a bad key is rejected"))
        };
        assert!(reason.contains("HTTP 401"), "{reason}");
        subject.fault(&sim, 503, "<html>busy</html>");
        assert!(
            matches!(
                adapter.check_credentials(&creds).await,
                CredentialCheck::Unavailable { .. }
            ),
            "{}",
            case("a 503 says nothing of the key")
        );

        // Submits refused, failed or lost.
        let text = (subject.text)();
        let e = refusal(&*adapter, &bad, text.clone()).await;
        assert_class(
            &e,
            ErrorCode::CredentialsInvalid,
            RetryClass::Permanent,
            &case("bad key"),
        );
        let (refusing, refusing_creds) = subject.adapter(&unknown_field, &key);
        let e = refusal(&*refusing, &refusing_creds, text.clone()).await;
        assert_class(
            &e,
            ErrorCode::InvalidRequest,
            RetryClass::Permanent,
            &case("4xx"),
        );
        assert!(e.message.contains("colour"), "the provider's message: {e}");
        subject.fault(&sim, 503, "<html>Service Unavailable</html>");
        let e = refusal(&*adapter, &creds, text.clone()).await;
        transient(&e, &case("503 at submit"));
        subject.fault(&sim, 504, "");
        let e = refusal(&*adapter, &creds, text.clone()).await;
        assert_class(
            &e,
            ErrorCode::SubmitOutcomeUnknown,
            RetryClass::Permanent,
            &case("504 at submit"),
        );
        subject.fault(&sim, 429, "");
        let e = refusal(&*adapter, &creds, text.clone()).await;
        assert_class(
            &e,
            ErrorCode::ProviderUnavailable,
            RetryClass::RetryAfter(DEFAULT_WAIT),
            &case("429 without a wait"),
        );
        let (lost, lost_creds) = subject.adapter(&no_job_id, &key);
        let e = refusal(&*lost, &lost_creds, text.clone()).await;
        assert_class(
            &e,
            ErrorCode::SubmitOutcomeUnknown,
            RetryClass::Permanent,
            &case("2xx without a job id"),
        );
        let accepted = |stats: &Stats| {
            subject
                .stats(stats)
                .for_api_key(&key)
                .map(|k| (k.counters.accepted, k.counters.rejected))
        };
        assert_eq!(
            accepted(&sim.stats().await),
            Some((1, 1)),
            "{}",
            case("the job without an id exists; the unknown field was refused")
        );

        // Polls.
        let id = submit(&*adapter, &creds, text, None)
            .await
            .expect("created");
        subject.fault(&sim, 502, "<html>Bad Gateway</html>");
        transient(
            &adapter.poll(&creds, &id).await.unwrap_err(),
            &case("502 at poll"),
        );
        subject.fault(&sim, 200, "<html>maintenance</html>");
        let e = adapter.poll(&creds, &id).await.unwrap_err();
        transient(&e, &case("an unreadable body"));
        assert!(e.message.contains("unreadable"), "{e}");
        let (unknown, unknown_creds) = subject.adapter(&unmapped, &key);
        let e = unknown.poll(&unknown_creds, &id).await.unwrap_err();
        transient(&e, &case("an unknown state"));
        assert!(e.message.contains("unknown state"), "{e}");
        let e = adapter.poll(&creds, "no-such-job").await.unwrap_err();
        assert_class(
            &e,
            ErrorCode::ProviderUnavailable,
            RetryClass::Permanent,
            &case("an unknown job"),
        );
        assert_eq!(adapter.poll(&creds, &id).await, Ok(subject.at_start()));

        let stats = sim.stats().await;
        let bad = subject.stats(&stats).for_api_key("not_a_simulator_key");
        assert_eq!(
            bad.map(|k| k.counters.unauthorized),
            Some(2),
            "{}",
            case("the bad key reached the provider twice")
        );
        assert_eq!(
            subject
                .stats(&stats)
                .for_api_key(&key)
                .unwrap()
                .counters
                .unauthorized,
            0
        );
    }
}

/// The error of a submit that must fail.
async fn refusal(adapter: &dyn VideoProvider, creds: &Credentials, fields: Value) -> JobError {
    submit(adapter, creds, fields, None)
        .await
        .expect_err("the submit fails")
}

/// A JSON object holding `value` at the RFC 6901 `pointer` (of object members only).
fn at_pointer(pointer: &str, value: Value) -> Value {
    pointer
        .trim_start_matches('/')
        .split('/')
        .rev()
        .fold(value, |inner, key| json!({ key: inner }))
}

/// Answers larger than an error body (some APIs echo the request, inline image included) are
/// read whole up to 8 MiB; beyond that a poll is unreadable (transient) and a submit's
/// outcome unknown.
#[tokio::test]
async fn large_answers_are_read_up_to_eight_mebibytes() {
    let (sim, _clock) = simulator().await;
    let registry = registry(&sim);
    let padding = "x".repeat(300 * 1024);
    let too_much = "x".repeat(9 * 1024 * 1024);
    for subject in subjects() {
        let definition = subject.definition();
        let (adapter, creds) = subject.adapter(&registry, &format!("sim_{}_large", subject.id));
        let running = definition
            .poll
            .states
            .iter()
            .find(|(_, ours)| *ours == "running")
            .map(|(theirs, _)| theirs.clone())
            .expect("a running state");
        let answer = |padding: &str| {
            let mut answer = at_pointer(&definition.poll.state, json!(running));
            answer["padding"] = json!(padding);
            answer.to_string()
        };
        let fault = |status: u16, body: String| {
            sim.inject_fault(Fault {
                body,
                content_type: "application/json".to_owned(),
                ..Fault::new(subject.id, status)
            })
            .expect("a valid fault");
        };

        fault(200, answer(&padding));
        let status = adapter.poll(&creds, "job-1").await;
        assert!(
            matches!(status, Ok(RemoteStatus::Running { .. })),
            "{}: {status:?}",
            subject.id
        );
        fault(200, answer(&too_much));
        let error = adapter.poll(&creds, "job-1").await.unwrap_err();
        assert_class(
            &error,
            ErrorCode::ProviderUnavailable,
            RetryClass::Transient,
            subject.id,
        );

        let mut created = at_pointer(&definition.submit.job_id, json!("job-large"));
        created["padding"] = json!(padding);
        fault(201, created.to_string());
        let id = submit(&*adapter, &creds, (subject.text)(), None).await;
        assert_eq!(id.as_deref(), Ok("job-large"), "{}", subject.id);
    }
}

#[tokio::test]
async fn failed_jobs_are_classified_with_the_providers_reasons() {
    let (sim, clock) = simulator().await;
    let registry = registry(&sim);
    let run = async |subject: &Subject, fields: Value| {
        let (adapter, creds) = subject.adapter(&registry, &format!("sim_{}_failures", subject.id));
        let id = submit(&*adapter, &creds, fields, None)
            .await
            .expect("created");
        clock.advance(RENDER);
        adapter.poll(&creds, &id).await
    };
    for subject in subjects() {
        let e = failed(
            run(&subject, subject.prompted("please sim:moderate this")).await,
            subject.id,
        );
        assert_class(
            &e,
            ErrorCode::ContentRejected,
            RetryClass::Permanent,
            subject.id,
        );
        assert!(e.message.contains(subject.moderation_text), "{e}");
    }

    // Acme's other failure codes: mapped, and one left to `failure_default`; and a job
    // Acme cancelled itself.
    let acme = subjects()[2];
    let cases = [
        (
            "acme:no-credits",
            ErrorCode::InsufficientCredits,
            RetryClass::Permanent,
            "ran out of credits",
        ),
        (
            "acme:internal",
            ErrorCode::ProviderUnavailable,
            RetryClass::Transient,
            "INTERNAL_ERROR",
        ),
        (
            "acme:timeout",
            ErrorCode::ProviderUnavailable,
            RetryClass::Transient,
            "RENDER_TIMEOUT",
        ),
    ];
    for (marker, code, class, says) in cases {
        let e = failed(run(&acme, acme.prompted(marker)).await, marker);
        assert_class(&e, code, class, marker);
        assert!(e.message.contains(says), "{e}");
    }
    assert_eq!(
        run(&acme, acme.prompted("acme:canceled")).await,
        Ok(RemoteStatus::Cancelled)
    );

    // A render that failed at the provider: worth another try everywhere.
    sim.set_config(SimConfig {
        failure_rate: 1.0,
        ..sim.config()
    })
    .expect("knobs");
    for subject in subjects() {
        let e = failed(run(&subject, (subject.text)()).await, subject.id);
        assert_class(
            &e,
            ErrorCode::ProviderUnavailable,
            RetryClass::Transient,
            subject.id,
        );
    }
}

#[tokio::test]
async fn cancel_reaches_the_providers_that_have_one() {
    let (sim, clock) = simulator().await;
    let registry = registry(&sim);
    for subject in subjects() {
        let case = subject.id;
        let (adapter, creds) = subject.adapter(&registry, &format!("sim_{case}_cancel"));
        let id = submit(&*adapter, &creds, (subject.text)(), None)
            .await
            .expect("created");
        let before = subject.requests(&sim).await;
        let outcome = adapter.cancel(&creds, &id).await.expect("answered");
        let cancels = || async { subject.stats(&sim.stats().await).totals.cancels };
        if !subject.cancels {
            assert_eq!(outcome, CancelOutcome::NotSupported, "{case}");
            assert_eq!(
                subject.requests(&sim).await,
                before,
                "{case}: nothing was sent"
            );
            continue;
        }
        assert_eq!(outcome, CancelOutcome::Cancelled, "{case}");
        assert_eq!(
            cancels().await,
            1,
            "{case}: the cancel reached the provider"
        );
        clock.advance(RENDER);
        match adapter.poll(&creds, &id).await {
            // Acme keeps the video, cancelled.
            Ok(RemoteStatus::Cancelled) => {}
            // Synthesia's cancel is a delete: the video is gone.
            Err(e) => assert_class(
                &e,
                ErrorCode::ProviderUnavailable,
                RetryClass::Permanent,
                case,
            ),
            other => panic!("{case}: after a cancel, {other:?}"),
        }
        // Again, and for a job that never was: nothing left to run either way.
        assert_eq!(
            adapter.cancel(&creds, &id).await,
            Ok(CancelOutcome::Cancelled),
            "{case}"
        );
        assert_eq!(
            adapter.cancel(&creds, "no-such-job").await,
            Ok(CancelOutcome::Cancelled),
            "{case}"
        );
        assert_eq!(cancels().await, 3, "{case}");
    }
}

#[tokio::test]
async fn throttled_submits_wait_what_the_provider_says_then_go_through() {
    let (sim, _clock) = simulator().await;
    let registry = registry(&sim);
    for subject in subjects() {
        let case = subject.id;
        // Luma's `Retry-After`, Synthesia's `RateLimit-Reset`, Acme's
        // `X-RateLimit-Reset-Seconds`: each definition's wait.
        let (adapter, creds) = subject.adapter(&registry, &format!("sim_throttled_{case}"));
        let e = refusal(&*adapter, &creds, (subject.text)()).await;
        assert_class(
            &e,
            ErrorCode::ProviderUnavailable,
            RetryClass::RetryAfter(WAIT),
            case,
        );
        submit(&*adapter, &creds, (subject.text)(), None)
            .await
            .unwrap_or_else(|e| panic!("{case}: the second try goes through: {e}"));
        let stats = sim.stats().await;
        let totals = &subject.stats(&stats).totals;
        assert_eq!((totals.throttled, totals.accepted), (1, 1), "{case}");
    }
    // Acme's two limiters: its API's header and its edge's standard one.
    let acme = subjects()[2];
    let (adapter, creds) = acme.adapter(&registry, "sim_acme_limits");
    for marker in ["acme:rate-limit", "acme:edge-limit"] {
        let e = refusal(&*adapter, &creds, acme.prompted(marker)).await;
        assert_class(
            &e,
            ErrorCode::ProviderUnavailable,
            RetryClass::RetryAfter(WAIT),
            marker,
        );
    }
}

#[tokio::test]
async fn acme_uses_every_part_of_its_definition() {
    let (sim, _clock) = simulator().await;
    let acme = subjects()[2];
    let registry = registry(&sim);
    let adapter = registry.get(acme.provider()).expect("declared");
    let definition = acme.definition();

    // The optional workspace goes into the key header only when given.
    for (workspace, echoed) in [(Some("team-7"), json!("team-7")), (None, Value::Null)] {
        let key = format!("sim_acme_workspace_{}", workspace.is_some());
        let mut raw = json!({ "api_key": key });
        if let Some(w) = workspace {
            raw["workspace"] = json!(w);
        }
        let creds = adapter.parse_credentials(&raw).expect("credentials");
        assert_eq!(
            adapter.check_credentials(&creds).await,
            CredentialCheck::Valid
        );
        let id = submit(&*adapter, &creds, (acme.text)(), None)
            .await
            .expect("created");
        let job = remembered(&sim, &acme, &definition, &key, &id).await;
        assert_eq!(job["data"]["workspace"], echoed);
    }

    // Acme takes the key as a query parameter too: the same calls with `[auth.query]`,
    // appended to the key check's own query.
    let by_query = registry_with(&sim, |d| {
        d.auth = Auth::Query(NamedTemplate {
            name: "api_key".to_owned(),
            value: "{{ api_key }}".to_owned(),
        });
    });
    let (query_adapter, creds) = acme.adapter(&by_query, "sim_acme_query");
    assert_eq!(
        query_adapter.check_credentials(&creds).await,
        CredentialCheck::Valid
    );
    let id = submit(&*query_adapter, &creds, (acme.text)(), None)
        .await
        .expect("created");
    assert_eq!(
        query_adapter.poll(&creds, &id).await,
        Ok(RemoteStatus::Queued)
    );
    let (_, bad) = acme.adapter(&by_query, "not_a_simulator_key");
    assert!(matches!(
        query_adapter.check_credentials(&bad).await,
        CredentialCheck::Rejected { .. }
    ));

    // The fixed version header: without it Acme refuses everything.
    let unversioned = registry_with(&sim, |d| d.headers.clear());
    let (bare, creds) = acme.adapter(&unversioned, "sim_acme_unversioned");
    assert!(matches!(
        bare.check_credentials(&creds).await,
        CredentialCheck::Unavailable { .. }
    ));
    let e = refusal(&*bare, &creds, (acme.text)()).await;
    assert_class(
        &e,
        ErrorCode::InvalidRequest,
        RetryClass::Permanent,
        "no version",
    );
    assert!(e.message.contains("Acme-Version"), "{e}");

    // Its own refusals, each with the message at `/error/message`.
    let cases = [
        (
            "sim_revoked_acme",
            (acme.text)(),
            ErrorCode::CredentialsInvalid,
            RetryClass::Permanent,
            "revoked",
        ),
        (
            "sim_broke_acme",
            (acme.text)(),
            ErrorCode::InsufficientCredits,
            RetryClass::Permanent,
            "no credits",
        ),
        (
            "sim_acme_refusals",
            acme.prompted("acme:blocked"),
            ErrorCode::ContentRejected,
            RetryClass::Permanent,
            "content policy",
        ),
        (
            "sim_acme_refusals",
            acme.prompted("acme:unavailable"),
            ErrorCode::ProviderUnavailable,
            RetryClass::Transient,
            "render farm",
        ),
    ];
    for (key, fields, code, class, says) in cases {
        let (adapter, creds) = acme.adapter(&registry, key);
        let e = refusal(&*adapter, &creds, fields).await;
        assert_class(&e, code, class, says);
        assert!(e.message.contains(says), "{e}");
    }
    let (_, revoked) = acme.adapter(&registry, "sim_revoked_acme");
    let CredentialCheck::Rejected { reason } = adapter.check_credentials(&revoked).await else {
        panic!("a revoked key is rejected")
    };
    assert!(
        reason.contains("HTTP 403") && reason.contains("revoked"),
        "{reason}"
    );

    // A format that allows one duration of the model's (Studio's 1080p: 8 s), and the
    // retired model, refused before anything is sent.
    let (studio, creds) = acme.adapter(&registry, "sim_acme_studio");
    submit(
        &*studio,
        &creds,
        json!({"model": "acme-studio", "prompt": "a city at night", "resolution": "1080p"}),
        None,
    )
    .await
    .expect("1080p in 8 s");
    assert!(
        studio
            .validate(&generation_request(
                "acme",
                json!({"model": "acme-classic", "prompt": "x"})
            ))
            .is_err()
    );
    let stats = sim.stats().await;
    let revoked = stats.acme.for_api_key("sim_revoked_acme").expect("seen");
    assert_eq!(revoked.counters.unauthorized, 2, "the revoked key, twice");
}

/// The definitions are the files named here: the simulator's own loads like the shipped
/// ones.
#[test]
fn the_acme_definition_loads_and_names_itself_a_test_provider() {
    let acme = subjects()[2].definition();
    assert_eq!(acme.id, "acme");
    let text =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(subjects()[2].file))
            .unwrap();
    assert!(
        text.starts_with("# Acme: NOT A REAL PROVIDER."),
        "{}",
        &text[..80]
    );
}

/// A provider that answers with the video itself: `poll.video_base64` instead of
/// `poll.video_url`. The bytes are decoded from the answer (a bare base64 string or a data
/// URI) and written out as they came; an answer whose video is not base64 is transient.
#[tokio::test]
async fn a_video_carried_in_the_answer_is_decoded_and_saved() {
    use base64::Engine as _;

    let (sim, _clock) = simulator().await;
    let registry = registry_with(&sim, |d| {
        if d.id == "acme" {
            d.poll.video_url = None;
            d.poll.video_base64 = Some("/data/video".to_owned());
        }
    });
    let acme = &subjects()[2];
    assert_eq!(acme.id, "acme");
    let (adapter, creds) = acme.adapter(&registry, "sim_acme_inline");
    let mp4 = crate::support::fake_mp4(300 * 1024);
    let encoded = base64::engine::general_purpose::STANDARD.encode(&mp4);
    let dir = tempfile::tempdir().unwrap();
    for video in [encoded.clone(), format!("data:video/mp4;base64,{encoded}")] {
        let answer =
            json!({ "data": { "id": "job-inline", "status": "SUCCEEDED", "video": video } });
        sim.inject_fault(Fault {
            body: answer.to_string(),
            content_type: "application/json".to_owned(),
            ..Fault::new("acme", 200)
        })
        .unwrap();
        let polled = adapter.poll(&creds, "job-inline").await;
        let Ok(RemoteStatus::Succeeded(output, _)) = polled else {
            panic!("succeeded with the video inline: {polled:?}")
        };
        assert!(matches!(output, VideoOutput::Inline(_)), "{output:?}");
        let dest = dir.path().join("video.mp4");
        let saved = adapter.fetch_output(&creds, &output, &dest).await.unwrap();
        assert_eq!(saved.size, mp4.len() as u64);
        assert_eq!(std::fs::read(&dest).unwrap(), mp4);
    }
    let answer =
        json!({ "data": { "id": "job-inline", "status": "SUCCEEDED", "video": "not base64!" } });
    sim.inject_fault(Fault {
        body: answer.to_string(),
        content_type: "application/json".to_owned(),
        ..Fault::new("acme", 200)
    })
    .unwrap();
    let error = adapter.poll(&creds, "job-inline").await.unwrap_err();
    assert_class(
        &error,
        ErrorCode::ProviderUnavailable,
        RetryClass::Transient,
        "undecodable video",
    );
}
