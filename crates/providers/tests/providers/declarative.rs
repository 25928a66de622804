//! Declarative provider definitions: loading, every refusal (file, provider, field),
//! rendering (JSON escaping), reading answers, and the two shipped definitions against the
//! simulator.

use std::path::{Path, PathBuf};
use std::time::Duration;

use byok_core::{ErrorCode, GenerationRequest, JobError, ProviderId, RetryClass};
use byok_providers::declarative::{Definition, DefinitionError, load_dir};
use byok_providers::{RemoteStatus, VideoOutput};
use byok_sim::SimConfig;
use serde_json::{Value, json};

const GOOD: &str = r#"
id = "acme"
display_name = "Acme Video"
description = "A test provider."
icon = "acme"
base_url = "https://api.acme.example/v1"
poll_interval_secs = 5

[[credential_fields]]
name = "api_key"
label = "API key"
description = "The key."
required = true

[auth.header]
name = "X-Key"
value = "Key {{ api_key }}"

[key_check]
method = "GET"
path = "/me"
valid = [200]
invalid = [401, 403]

[submit]
method = "POST"
path = "/models/{{ wire.path }}/jobs"
body = '''
{"prompt": {{ prompt }}, "negative": {{ negative_prompt }}, "image": {{ image }},
 "seconds": {{ duration_seconds }}, "size": {{ format }}, "seed": {{ seed }}}
'''
job_id = "/job/id"

[poll]
method = "GET"
path = "/jobs/{id}"
state = "/status"
progress = "/percent"
progress_scale = 100
video_url = "/outputs/0/url"
failure_code = "/error/code"
failure_message = "/error/message"

[poll.states]
PENDING = "queued"
RUNNING = "running"
DONE = "succeeded"
FAILED = "failed"
CANCELED = "cancelled"

[poll.failure_codes]
NSFW = { code = "content_rejected" }
OOM = { code = "provider_unavailable", retry = "transient" }

[errors]
message = "/error/message"

[errors.status.409]
code = "invalid_request"

[rate_limit]
per_minute = 5
per_hour = 50

[[models]]
id = "m1"
display_name = "M1"
modes = ["text_to_video", "image_to_video"]
durations = [5]
default_duration = 5
negative_prompt = true
seed_max = 100
formats = [{ aspect_ratio = "16:9", resolution = "720p", wire = "1280x720" }]

[models.prompt]
text_to_video = "required"
image_to_video = "optional"
max_chars = 1000

[models.wire]
path = "acme/m1"
"#;

fn good() -> Definition {
    Definition::parse(GOOD, "acme.toml").unwrap()
}

/// Parses `text` expecting a refusal.
fn refused(text: &str) -> DefinitionError {
    let e = Definition::parse(text, "acme.toml").expect_err("the definition must be refused");
    let shown = e.to_string();
    assert!(shown.contains("acme.toml"), "{shown}");
    assert!(shown.contains(&e.field), "{shown}");
    e
}

fn assert_refused(text: &str, field: &str, says: &str) {
    let e = refused(text);
    assert_eq!(e.file, PathBuf::from("acme.toml"));
    assert_eq!(e.provider.as_deref(), Some("acme"), "{e}");
    assert_eq!(e.field, field, "{e}");
    assert!(e.message.contains(says), "{e}");
}

#[test]
fn a_good_definition_loads() {
    let d = good();
    assert_eq!(d.id, "acme");
    assert_eq!(d.catalogue().models[0].id, "m1");
    assert_eq!(d.submit_path("m1").unwrap(), "/models/acme/m1/jobs");
    assert_eq!(d.poll_path("a/b c"), "/jobs/a%2Fb%20c");
    assert_eq!(d.cancel_path("x"), None);
    let fields = [("api_key".to_owned(), "k1".to_owned())].into();
    assert_eq!(
        d.render_auth_value(&fields).unwrap().as_deref(),
        Some("Key k1")
    );
}

#[test]
fn unknown_fields_are_refused_with_their_path() {
    assert_refused(
        &GOOD.replace("state = \"/status\"", "state = \"/status\"\nstat = \"/x\""),
        "poll.stat",
        "unknown field",
    );
    assert_refused(&format!("colour = 1\n{GOOD}"), "colour", "unknown field");
}

#[test]
fn templates_with_unknown_variables_are_refused() {
    assert_refused(
        &GOOD.replace("{{ seed }}", "{{ sede }}"),
        "submit.body",
        "`sede`",
    );
    // Only in a branch a full request does not take: still found.
    assert_refused(
        &GOOD.replace(
            "{{ seed }}",
            "{% if not seed %}{{ nothing }}{% else %}1{% endif %}",
        ),
        "submit.body",
        "`nothing`",
    );
    // A wire key the model lacks.
    assert_refused(
        &GOOD.replace("{{ prompt }}", "{{ wire.missing }}"),
        "submit.body",
        "m1",
    );
    assert_refused(
        &GOOD.replace("Key {{ api_key }}", "Key {{ token }}"),
        "auth.header.value",
        "`token`",
    );
    assert_refused(
        &GOOD.replace("/models/{{ wire.path }}/jobs", "/models/{{ prompt }}"),
        "submit.path",
        "`prompt`",
    );
}

#[test]
fn a_body_that_would_not_escape_is_refused() {
    // `|safe` bypasses the JSON escaping: the load-time probe's quotes break it.
    assert_refused(
        &GOOD.replace("{{ prompt }}", "\"{{ prompt|safe }}\""),
        "submit.body",
        "not JSON",
    );
}

#[test]
fn states_must_be_ours_and_include_succeeded() {
    assert_refused(
        &GOOD.replace("DONE = \"succeeded\"", "DONE = \"finished\""),
        "poll.states.DONE",
        "not a state",
    );
    assert_refused(
        &GOOD.replace("DONE = \"succeeded\"", "DONE = \"running\""),
        "poll.states",
        "succeeded",
    );
}

#[test]
fn http_needs_allow_http() {
    let http = GOOD.replace("https://api.acme.example", "http://127.0.0.1:9");
    assert_refused(&http, "base_url", "https");
    let allowed = http.replace("icon = \"acme\"", "icon = \"acme\"\nallow_http = true");
    assert!(Definition::parse(&allowed, "acme.toml").is_ok());
}

#[test]
fn pointers_must_be_rfc_6901() {
    assert_refused(
        &GOOD.replace("job_id = \"/job/id\"", "job_id = \"job.id\""),
        "submit.job_id",
        "JSON pointer",
    );
    assert_refused(
        &GOOD.replace("video_url = \"/outputs/0/url\"", "video_url = \"/a~2b\""),
        "poll.video_url",
        "~0",
    );
}

#[test]
fn built_in_ids_and_bad_ids_are_refused() {
    let e = refused(&GOOD.replace("id = \"acme\"", "id = \"runway\""));
    assert_eq!(
        (e.provider.as_deref(), e.field.as_str()),
        (Some("runway"), "id")
    );
    assert!(e.message.contains("built-in"), "{e}");
    assert!(ProviderId::RUNWAY.is_built_in());
    let e = refused(&GOOD.replace("id = \"acme\"", "id = \"Acme!\""));
    assert_eq!(e.field, "id");
    let e = refused(&GOOD.replace("id = \"acme\"", "id = \"definitions_dir\""));
    assert!(e.message.contains("reserved"), "{e}");
}

#[test]
fn incoherent_catalogues_and_other_fields_are_refused() {
    assert_refused(
        &GOOD.replace("default_duration = 5", "default_duration = 7"),
        "models",
        "default_duration",
    );
    assert_refused(
        &GOOD.replace("[errors.status.409]", "[errors.status.209]"),
        "errors.status.209",
        "400 to 599",
    );
    assert_refused(
        &GOOD.replace("path = \"/jobs/{id}\"", "path = \"/jobs\""),
        "poll.path",
        "{id}",
    );
    assert_refused(
        &GOOD.replace("code = \"content_rejected\"", "code = \"naughty\""),
        "poll.failure_codes.NSFW.code",
        "unknown variant",
    );
    assert_refused(
        &GOOD.replace("per_minute = 5", "per_minute = 0"),
        "rate_limit.per_minute",
        "at least 1",
    );
}

#[test]
fn an_unreadable_file_names_itself() {
    let e = Definition::load("/nonexistent/acme.toml").unwrap_err();
    assert_eq!(e.provider, None);
    assert!(e.to_string().contains("/nonexistent/acme.toml"), "{e}");
    let e = Definition::parse("id = \"acme\"\nnot toml", "x.toml").unwrap_err();
    assert_eq!(e.provider, None);
}

#[test]
fn load_dir_reads_toml_files_in_order_with_unique_ids() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("b.toml"), GOOD).unwrap();
    std::fs::write(
        dir.path().join("a.toml"),
        GOOD.replace("id = \"acme\"", "id = \"acme-two\""),
    )
    .unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a definition").unwrap();
    let loaded = load_dir(dir.path()).unwrap();
    let ids: Vec<&str> = loaded.iter().map(|(_, d)| d.id.as_str()).collect();
    assert_eq!(ids, ["acme-two", "acme"]);
    assert_eq!(loaded[0].0, dir.path().join("a.toml"));

    std::fs::write(dir.path().join("c.toml"), GOOD).unwrap();
    let e = load_dir(dir.path()).unwrap_err();
    assert_eq!(e.file, dir.path().join("c.toml"));
    assert_eq!(
        (e.provider.as_deref(), e.field.as_str()),
        (Some("acme"), "id")
    );
    assert!(e.message.contains("b.toml"), "{e}");
}

fn validated(d: &Definition, request: Value) -> byok_core::ValidatedRequest {
    let request: GenerationRequest = serde_json::from_value(request).unwrap();
    d.catalogue().validate(&request).unwrap()
}

fn request(provider: &str, model: &str, prompt: &str) -> Value {
    json!({
        "user_id": "0b6c1d2e-3f40-4a5b-8c6d-7e8f90a1b2c3",
        "provider": provider, "model": model, "prompt": prompt,
    })
}

#[test]
fn rendering_escapes_hostile_prompts() {
    let d = good();
    let prompt = "a \"quoted\" }, \"seed\": 99, {{ seed }} \\ \n end";
    let mut r = request("runway", "m1", prompt);
    r["negative_prompt"] = json!("</x>");
    let body = d.render_submit(&validated(&d, r), None).unwrap();
    assert_eq!(body["prompt"], prompt);
    assert_eq!(body["negative"], "</x>");
    assert_eq!(body["seed"], Value::Null);
    assert_eq!(body["image"], Value::Null);
    assert_eq!(body["seconds"], 5);
    assert_eq!(body["size"], "1280x720");

    let mut r = request("runway", "m1", "x");
    r["image_url"] = json!("https://example.com/a.png");
    r["seed"] = json!(7);
    let uri = "data:image/png;base64,AAAA";
    let body = d.render_submit(&validated(&d, r), Some(uri)).unwrap();
    assert_eq!(
        (body["image"].as_str(), body["seed"].as_u64()),
        (Some(uri), Some(7))
    );
}

#[test]
fn rendering_failures_are_internal_errors() {
    let d = good();
    let mut v = validated(&d, request("runway", "m1", "x"));
    v.model = "nope".into();
    let e = d.render_submit(&v, None).unwrap_err();
    assert_eq!(
        (e.code, e.class),
        (ErrorCode::Internal, RetryClass::Permanent)
    );
    let v = validated(&d, request("runway", "m1", "x"));
    let e = d.render_submit(&v, Some("not a data uri")).unwrap_err();
    assert_eq!(e.code, ErrorCode::Internal);
}

#[test]
fn answers_are_read_by_pointer() {
    let d = good();
    assert_eq!(d.job_id(&json!({"job": {"id": "j-1"}})).unwrap(), "j-1");
    assert_eq!(d.job_id(&json!({"job": {"id": 42}})).unwrap(), "42");
    let e = d.job_id(&json!({"id": "j-1"})).unwrap_err();
    assert_eq!(e.code, ErrorCode::SubmitOutcomeUnknown);

    let read = |v: Value| d.read_poll(&v).map(|r| r.status);
    assert_eq!(
        read(json!({"status": "PENDING"})).unwrap(),
        RemoteStatus::Queued
    );
    assert_eq!(
        read(json!({"status": "RUNNING", "percent": 40})).unwrap(),
        RemoteStatus::Running {
            progress: Some(0.4)
        }
    );
    assert_eq!(
        read(json!({"status": "RUNNING"})).unwrap(),
        RemoteStatus::Running { progress: None }
    );
    match read(json!({"status": "DONE", "outputs": [{"url": "https://cdn/v.mp4"}]})).unwrap() {
        RemoteStatus::Succeeded(VideoOutput::Urls(urls), _) => {
            assert_eq!(urls, ["https://cdn/v.mp4"]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        read(json!({"status": "CANCELED"})).unwrap(),
        RemoteStatus::Cancelled
    );
    // Done without a video, no state, an unknown state: asked again.
    for answer in [
        json!({"status": "DONE", "outputs": []}),
        json!({}),
        json!({"status": "WEIRD"}),
    ] {
        let e = read(answer).unwrap_err();
        assert_eq!(
            (e.code, e.class),
            (ErrorCode::ProviderUnavailable, RetryClass::Transient)
        );
    }
    let failed = |code: &str| match read(
        json!({"status": "FAILED", "error": {"code": code, "message": "why"}}),
    ) {
        Ok(RemoteStatus::Failed(e)) => e,
        other => panic!("{other:?}"),
    };
    let e = failed("NSFW");
    assert_eq!(
        (e.code, e.class),
        (ErrorCode::ContentRejected, RetryClass::Permanent)
    );
    assert!(e.message.contains("why"), "{}", e.message);
    let e = failed("OOM");
    assert_eq!(
        (e.code, e.class),
        (ErrorCode::ProviderUnavailable, RetryClass::Transient)
    );
    let e = failed("OTHER");
    assert_eq!(
        (e.code, e.class),
        (ErrorCode::ProviderUnavailable, RetryClass::Permanent)
    );
}

#[test]
fn statuses_are_classified_over_the_common_table() {
    let d = good();
    let body = json!({"error": {"message": "busy"}});
    let e = d.classify_status(409, Some(&body), None);
    assert_eq!(
        (e.code, e.class),
        (ErrorCode::InvalidRequest, RetryClass::Permanent)
    );
    assert!(e.message.contains("busy"));
    let e = d.classify_status(429, None, Some(Duration::from_secs(3)));
    assert_eq!(e.class, RetryClass::RetryAfter(Duration::from_secs(3)));
    let e = d.classify_status(429, None, None);
    assert_eq!(e.class, RetryClass::RetryAfter(Duration::from_secs(60)));
    let cases: [(u16, ErrorCode, RetryClass); 6] = [
        (401, ErrorCode::CredentialsInvalid, RetryClass::Permanent),
        (402, ErrorCode::InsufficientCredits, RetryClass::Permanent),
        (404, ErrorCode::ModelRetired, RetryClass::Permanent),
        (422, ErrorCode::InvalidRequest, RetryClass::Permanent),
        (503, ErrorCode::ProviderUnavailable, RetryClass::Transient),
        (418, ErrorCode::ProviderUnavailable, RetryClass::Permanent),
    ];
    for (status, code, class) in cases {
        let e: JobError = d.classify_status(status, None, None);
        assert_eq!((e.code, e.class), (code, class), "{status}");
    }
}

fn shipped(name: &str) -> Definition {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("definitions")
        .join(name);
    Definition::load(path).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn the_shipped_definitions_load() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("definitions");
    let ids: Vec<String> = load_dir(dir)
        .unwrap()
        .into_iter()
        .map(|(_, d)| d.id)
        .collect();
    assert_eq!(ids, ["luma", "synthesia"]);
}

/// The definition pointed at the simulator (`http` allowed for it).
fn at(mut d: Definition, base_url: String) -> Definition {
    d.base_url = base_url;
    d.allow_http = true;
    d
}

#[tokio::test]
async fn the_shipped_definitions_render_what_the_simulator_accepts() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim = byok_sim::start(
        SimConfig {
            render_time: Duration::from_millis(10),
            ..SimConfig::default()
        },
        listener,
    )
    .await
    .unwrap();
    let client = reqwest::Client::new();
    let key = "sim_declarative_key";
    let hostile = "a \"lighthouse\" at dusk, {\"x\": 1} \\ ünïcode";

    // Luma: text to video, then image to video (a base64 start frame).
    let luma = at(shipped("luma.toml"), sim.luma_url());
    let mut r = request("runway", "ray-3.2", hostile);
    r["aspect_ratio"] = json!("21:9");
    r["resolution"] = json!("1080p");
    r["duration_seconds"] = json!(10);
    let body = luma.render_submit(&validated(&luma, r), None).unwrap();
    assert_eq!(
        body["video"],
        json!({"duration": "10s", "resolution": "1080p"})
    );
    let mut r = request("runway", "ray-3.2", hostile);
    r["image_url"] = json!("https://example.com/a.png");
    let png = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";
    let image_body = luma.render_submit(&validated(&luma, r), Some(png)).unwrap();
    assert_eq!(
        image_body["video"]["start_frame"]["media_type"],
        "image/png"
    );
    for body in [body, image_body] {
        let answer = client
            .post(format!(
                "{}{}",
                luma.base_url,
                luma.submit_path("ray-3.2").unwrap()
            ))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = answer.status();
        let answer: Value = answer.json().await.unwrap();
        assert_eq!(status, 201, "{answer}");
        let id = luma.job_id(&answer).unwrap();
        let polled: Value = client
            .get(format!("{}{}", luma.base_url, luma.poll_path(&id)))
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        luma.read_poll(&polled).unwrap();
    }
    // Its key check: 404 for a valid key, 401 for a wrong one.
    for (key, expected) in [(key, 404), ("wrong", 401)] {
        let status = client
            .get(format!("{}{}", luma.base_url, luma.key_check.path))
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, expected);
    }

    // Synthesia: the prompt is the script, the avatar comes from the model.
    let synthesia = at(shipped("synthesia.toml"), sim.synthesia_url());
    let fields = [("api_key".to_owned(), key.to_owned())].into();
    let auth = synthesia.render_auth_value(&fields).unwrap().unwrap();
    assert_eq!(auth, key);
    let mut r = request("runway", "mia", hostile);
    r["aspect_ratio"] = json!("9:16");
    let body = synthesia
        .render_submit(&validated(&synthesia, r), None)
        .unwrap();
    assert_eq!(body["input"][0]["avatar"], "mia_costume1_cameraA");
    assert_eq!(body["input"][0]["scriptText"], hostile);
    let answer = client
        .post(format!(
            "{}{}",
            synthesia.base_url,
            synthesia.submit_path("mia").unwrap()
        ))
        .header("Authorization", &auth)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = answer.status();
    let answer: Value = answer.json().await.unwrap();
    assert_eq!(status, 200, "{answer}");
    let id = synthesia.job_id(&answer).unwrap();
    let finished = byok_testing::poll_until("the Synthesia video to finish", async || {
        let polled: Value = client
            .get(format!(
                "{}{}",
                synthesia.base_url,
                synthesia.poll_path(&id)
            ))
            .header("Authorization", &auth)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        match synthesia.read_poll(&polled).unwrap().status {
            RemoteStatus::Running { .. } | RemoteStatus::Queued => None,
            done => Some(done),
        }
    })
    .await;
    assert!(
        matches!(finished, RemoteStatus::Succeeded(VideoOutput::Urls(_), _)),
        "{finished:?}"
    );
    let status = client
        .get(format!(
            "{}{}",
            synthesia.base_url, synthesia.key_check.path
        ))
        .header("Authorization", &auth)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
}

#[test]
fn an_optional_credential_field_not_given_renders_empty() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../sim/definitions/acme.toml");
    let acme = Definition::load(path).unwrap();
    let only_key = std::collections::BTreeMap::from([("api_key".to_owned(), "k1".to_owned())]);
    assert_eq!(
        acme.render_auth_value(&only_key).unwrap().as_deref(),
        Some("k1")
    );
    let both = std::collections::BTreeMap::from([
        ("api_key".to_owned(), "k1".to_owned()),
        ("workspace".to_owned(), "w".to_owned()),
    ]);
    assert_eq!(
        acme.render_auth_value(&both).unwrap().as_deref(),
        Some("k1; workspace=w")
    );
}

#[test]
fn a_retired_model_may_point_at_another_model_of_its_own_provider() {
    let text = format!(
        "{GOOD}
[[models]]
id = \"m0\"
display_name = \"M0\"
modes = [\"text_to_video\"]
status = \"retired\"
formats = [{{ aspect_ratio = \"16:9\", wire = \"16:9\" }}]

[models.retirement]
date = \"2026-01-01\"
source = \"https://api.acme.example/changelog\"
alternatives = [{{ provider = \"selfref\", model = \"m1\" }}]

[models.prompt]
text_to_video = \"required\"
image_to_video = \"unsupported\"
max_chars = 100

[models.wire]
path = \"acme/m0\"
"
    )
    .replace("id = \"acme\"", "id = \"selfref\"");
    let definition = Definition::parse(&text, "selfref.toml").unwrap_or_else(|e| panic!("{e}"));
    let retired = definition.models.iter().find(|m| m.id == "m0").unwrap();
    let alternative = &retired.retirement.as_ref().unwrap().alternatives[0];
    assert_eq!(alternative.provider.as_str(), "selfref");
}

#[test]
fn the_video_is_at_a_url_or_in_the_answer_never_both_or_neither() {
    let both = GOOD.replace(
        "video_url = \"/outputs/0/url\"",
        "video_url = \"/outputs/0/url\"\nvideo_base64 = \"/video\"",
    );
    assert_refused(&both, "poll.video_base64", "not both");
    let neither = GOOD.replace("video_url = \"/outputs/0/url\"", "");
    assert_refused(&neither, "poll.video_url", "required");
    let inline = GOOD.replace(
        "video_url = \"/outputs/0/url\"",
        "video_base64 = \"/video\"",
    );
    let definition = Definition::parse(&inline, "acme.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(definition.poll.video_base64.as_deref(), Some("/video"));
}
