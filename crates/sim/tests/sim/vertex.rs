//! Vertex AI and the OAuth token endpoint: docs/provider-protocols.md §3.6–3.9.

use std::time::Duration;

use base64::Engine as _;
use byok_sim::{SimConfig, Simulator};
use serde_json::{Value, json};

use crate::helpers::{
    access_token, claims, client, exchange, fast, png, sign, start, start_manual, start_with,
    unix_now,
};

const MODEL: &str = "veo-3.1-generate-001";

fn model_url(sim: &byok_sim::RunningSim, version: &str, project: &str, action: &str) -> String {
    format!(
        "{}/{version}/projects/{project}/locations/us-central1/publishers/google/models/{MODEL}:{action}",
        sim.vertex_url()
    )
}

async fn predict(
    sim: &byok_sim::RunningSim,
    token: &str,
    project: &str,
    body: &Value,
) -> reqwest::Response {
    client()
        .post(model_url(sim, "v1", project, "predictLongRunning"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn start_operation(
    sim: &byok_sim::RunningSim,
    token: &str,
    project: &str,
    body: &Value,
) -> String {
    let response = predict(sim, token, project, body).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["name"].as_str().unwrap().to_owned()
}

async fn fetch(sim: &byok_sim::RunningSim, token: &str, project: &str, name: &str) -> (u16, Value) {
    let response = client()
        .post(model_url(sim, "v1beta1", project, "fetchPredictOperation"))
        .bearer_auth(token)
        .json(&json!({ "operationName": name }))
        .send()
        .await
        .unwrap();
    (
        response.status().as_u16(),
        response.json().await.unwrap_or(Value::Null),
    )
}

/// Asserts a google.rpc.Status error.
async fn rpc_error(response: reqwest::Response, code: u16, status: &str) -> Value {
    assert_eq!(response.status(), code);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], code, "{body}");
    assert_eq!(body["error"]["status"], status, "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
    body
}

fn prompt(text: &str) -> Value {
    json!({"instances": [{"prompt": text}],
           "parameters": {"aspectRatio": "16:9", "durationSeconds": 8, "sampleCount": 1}})
}

#[tokio::test]
async fn a_valid_assertion_gets_a_token() {
    let sim = start(fast()).await;
    let account = sim.new_service_account("proj-a").unwrap();
    assert_eq!(account["token_uri"], sim.token_url());
    let response = exchange(&account, &sign(&account, &claims(&account, unix_now()))).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3599);
    assert!(body["access_token"].as_str().unwrap().len() > 20);

    // The simulator's own token URL is an accepted audience too.
    let mut own = claims(&account, unix_now());
    own["aud"] = json!(sim.token_url());
    assert_eq!(
        exchange(&account, &sign(&account, &own)).await.status(),
        200
    );

    let stats = sim.stats().await;
    let email = account["client_email"].as_str().unwrap();
    assert_eq!(stats.vertex.keys[email].counters.tokens, 2);
}

#[tokio::test]
async fn bad_assertions_are_refused_as_rfc_6749_errors() {
    let sim = start(fast()).await;
    let account = sim.new_service_account("proj-b").unwrap();
    let stranger = byok_sim::generate_service_account(sim.base_url(), "proj-b", None).unwrap();
    let now = unix_now();
    let with = |change: &dyn Fn(&mut Value)| {
        let mut c = claims(&account, now);
        change(&mut c);
        sign(&account, &c)
    };
    // Signed by another key, but claiming to be `account`.
    let mut forged = claims(&account, now);
    forged["iss"] = account["client_email"].clone();
    let mut stranger_as_account = stranger.clone();
    stranger_as_account["private_key_id"] = account["private_key_id"].clone();
    let forged = sign(&stranger_as_account, &forged);

    let cases: Vec<(&str, String, &str, &str)> = vec![
        (
            "forged signature",
            forged,
            "invalid_grant",
            "Invalid JWT Signature.",
        ),
        (
            "wrong audience",
            with(&|c| c["aud"] = json!("https://example.com/token")),
            "invalid_grant",
            "audience",
        ),
        (
            "expired",
            with(&|c| {
                c["iat"] = json!(now - 7200);
                c["exp"] = json!(now - 3600);
            }),
            "invalid_grant",
            "short-lived",
        ),
        (
            "too long-lived",
            with(&|c| c["exp"] = json!(now + 3601)),
            "invalid_grant",
            "short-lived",
        ),
        (
            "issued in the future",
            with(&|c| {
                c["iat"] = json!(now + 600);
                c["exp"] = json!(now + 1200);
            }),
            "invalid_grant",
            "short-lived",
        ),
        (
            "no scope",
            with(&|c| {
                c.as_object_mut().unwrap().remove("scope");
            }),
            "invalid_scope",
            "scope",
        ),
        (
            "unknown account",
            sign(&stranger, &claims(&stranger, now)),
            "invalid_grant",
            "account not found",
        ),
        (
            "garbage",
            "not.a.jwt".to_owned(),
            "invalid_grant",
            "Invalid JWT Signature.",
        ),
    ];
    for (case, assertion, error, description) in cases {
        let response = exchange(&account, &assertion).await;
        assert_eq!(response.status(), 400, "{case}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], error, "{case}: {body}");
        assert!(
            body["error_description"]
                .as_str()
                .unwrap()
                .contains(description),
            "{case}: {body}"
        );
    }

    let wrong_grant = client()
        .post(sim.token_url())
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_grant.status(), 400);
    let body: Value = wrong_grant.json().await.unwrap();
    assert_eq!(body["error"], "unsupported_grant_type");

    let no_assertion = client()
        .post(sim.token_url())
        .form(&[("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer")])
        .send()
        .await
        .unwrap();
    let body: Value = no_assertion.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request");

    let stats = sim.stats().await;
    assert_eq!(stats.vertex.totals.tokens, 0);
    assert_eq!(stats.vertex.totals.unauthorized, 8);
}

#[tokio::test]
async fn tokens_stop_working_after_their_lifetime() {
    let sim = start_manual(Duration::ZERO).await;
    sim.set_config(SimConfig {
        token_lifetime: Duration::from_secs(5),
        ..sim.config()
    })
    .unwrap();
    let account = sim.new_service_account("proj-c").unwrap();
    let response = exchange(&account, &sign(&account, &claims(&account, unix_now()))).await;
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["expires_in"], 5);
    let token = body["access_token"].as_str().unwrap();
    assert_eq!(
        predict(&sim, token, "proj-c", &prompt("a")).await.status(),
        200
    );
    sim.clock().advance(Duration::from_millis(4999));
    assert_eq!(
        predict(&sim, token, "proj-c", &prompt("a")).await.status(),
        200
    );
    sim.clock().advance(Duration::from_millis(1));
    rpc_error(
        predict(&sim, token, "proj-c", &prompt("a")).await,
        401,
        "UNAUTHENTICATED",
    )
    .await;
    // A fresh exchange works again.
    let fresh = access_token(&account, unix_now()).await;
    assert_eq!(
        predict(&sim, &fresh, "proj-c", &prompt("a")).await.status(),
        200
    );
}

#[tokio::test]
async fn accounts_written_to_the_trusted_directory_are_trusted_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let before = byok_sim::generate_service_account("http://unused", "proj-d", None).unwrap();
    byok_sim::save_service_account(&before, dir.path()).unwrap();
    let sim = start_with(Simulator::new(fast()).service_accounts_dir(dir.path())).await;
    // Files written with another public URL still work: trust is by key.
    let mut before = before;
    before["token_uri"] = json!(sim.token_url());
    access_token(&before, unix_now()).await;

    let later =
        byok_sim::generate_service_account(sim.base_url(), "proj-d", Some("sim-later-1")).unwrap();
    assert_eq!(
        exchange(&later, &sign(&later, &claims(&later, unix_now())))
            .await
            .status(),
        400
    );
    byok_sim::save_service_account(&later, dir.path()).unwrap();
    access_token(&later, unix_now()).await;

    // The same account with a new key (a rotated file) replaces the old key.
    let rotated =
        byok_sim::generate_service_account(sim.base_url(), "proj-d", Some("sim-later-1")).unwrap();
    byok_sim::save_service_account(&rotated, dir.path()).unwrap();
    access_token(&rotated, unix_now()).await;

    // Accounts made through the handle are saved into the directory too.
    let made = sim.new_service_account("proj-d").unwrap();
    let files = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(files, 4);
    let listed: Value = client()
        .get(format!("{}/_sim/service-accounts", sim.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let emails: Vec<&str> = listed["service_accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["client_email"].as_str().unwrap())
        .collect();
    assert!(emails.contains(&made["client_email"].as_str().unwrap()));
    assert!(!listed.to_string().contains("PRIVATE KEY"));
}

#[tokio::test]
async fn an_operation_runs_to_done_with_inline_video_bytes() {
    let sim = start_manual(Duration::from_secs(20)).await;
    let account = sim.new_service_account("proj-e").unwrap();
    let token = access_token(&account, unix_now()).await;
    let name = start_operation(&sim, &token, "proj-e", &prompt("a lighthouse at dusk")).await;
    let prefix = format!(
        "projects/proj-e/locations/us-central1/publishers/google/models/{MODEL}/operations/"
    );
    let id = name
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{name}"));
    assert!(uuid::Uuid::parse_str(id).is_ok());

    let (status, running) = fetch(&sim, &token, "proj-e", &name).await;
    assert_eq!(status, 200);
    assert_eq!(running, json!({ "name": name }));

    sim.clock().advance(Duration::from_secs(20));
    let (_, done) = fetch(&sim, &token, "proj-e", &name).await;
    assert_eq!(done["done"], true);
    assert_eq!(done["name"], name.as_str());
    let response = &done["response"];
    assert_eq!(
        response["@type"],
        "type.googleapis.com/cloud.ai.large_models.vision.GenerateVideoResponse"
    );
    assert_eq!(response["raiMediaFilteredCount"], 0);
    let video = &response["videos"][0];
    assert_eq!(video["mimeType"], "video/mp4");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(video["bytesBase64Encoded"].as_str().unwrap())
        .unwrap();
    assert_eq!(&bytes[4..8], b"ftyp");
}

#[tokio::test]
async fn image_to_video_takes_inline_image_bytes() {
    let sim = start(fast()).await;
    let account = sim.new_service_account("proj-i").unwrap();
    let token = access_token(&account, unix_now()).await;
    let image = base64::engine::general_purpose::STANDARD.encode(png(64, 36));
    let body = json!({"instances": [{"prompt": "animate", "image": {"bytesBase64Encoded": image, "mimeType": "image/png"}}],
                      "parameters": {"aspectRatio": "9:16", "durationSeconds": 4, "resolution": "720p",
                                     "generateAudio": true, "seed": 7, "personGeneration": "allow_adult",
                                     "negativePrompt": "blur"}});
    let name = start_operation(&sim, &token, "proj-i", &body).await;
    let (_, done) = fetch(&sim, &token, "proj-i", &name).await;
    assert_eq!(done["done"], true, "{done}");
    // A JPEG labelled PNG is refused.
    let mut wrong = body.clone();
    wrong["instances"][0]["image"]["mimeType"] = json!("image/jpeg");
    rpc_error(
        predict(&sim, &token, "proj-i", &wrong).await,
        400,
        "INVALID_ARGUMENT",
    )
    .await;
}

#[tokio::test]
async fn storage_uri_outputs_are_downloadable_from_cloud_storage() {
    let sim = start_manual(Duration::from_secs(10)).await;
    let account = sim.new_service_account("proj-f").unwrap();
    let token = access_token(&account, unix_now()).await;
    let mut body = prompt("two takes");
    body["parameters"]["storageUri"] = json!("gs://sim-bucket/runs/");
    body["parameters"]["sampleCount"] = json!(2);
    let name = start_operation(&sim, &token, "proj-f", &body).await;
    let id = name.rsplit('/').next().unwrap().to_owned();
    let object = format!("runs/{id}/sample_1.mp4");
    let url = format!(
        "{}/storage/v1/b/sim-bucket/o/{}?alt=media",
        sim.storage_url(),
        object.replace('/', "%2F")
    );

    // Not written before the operation is done.
    let early = client().get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(early.status(), 404);

    sim.clock().advance(Duration::from_secs(10));
    let (_, done) = fetch(&sim, &token, "proj-f", &name).await;
    let videos = done["response"]["videos"].as_array().unwrap();
    assert_eq!(videos.len(), 2);
    assert_eq!(videos[1]["gcsUri"], format!("gs://sim-bucket/{object}"));
    assert!(videos[0].get("bytesBase64Encoded").is_none());

    let download = client().get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(download.status(), 200);
    assert_eq!(download.headers()["content-type"], "video/mp4");
    assert_eq!(&download.bytes().await.unwrap()[4..8], b"ftyp");

    // Unescaped slashes reach the same object.
    let plain = format!(
        "{}/storage/v1/b/sim-bucket/o/{object}?alt=media",
        sim.storage_url()
    );
    assert_eq!(
        client()
            .get(&plain)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let metadata: Value = client()
        .get(url.replace("?alt=media", ""))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(metadata["kind"], "storage#object");
    assert_eq!(metadata["name"], object.as_str());

    let anonymous = client().get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let other = sim.new_service_account("proj-f").unwrap();
    let other_token = access_token(&other, unix_now()).await;
    let denied = client()
        .get(&url)
        .bearer_auth(&other_token)
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 403);
    let body: Value = denied.json().await.unwrap();
    assert_eq!(body["error"]["code"], 403);
    let missing = client()
        .get(url.replace("sample_1", "sample_9"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn moderated_prompts_are_rai_filtered_and_failures_are_code_13() {
    let sim = start(fast()).await;
    let account = sim.new_service_account("proj-g").unwrap();
    let token = access_token(&account, unix_now()).await;
    let name = start_operation(&sim, &token, "proj-g", &prompt("sim:moderate me")).await;
    let (_, done) = fetch(&sim, &token, "proj-g", &name).await;
    assert_eq!(done["done"], true);
    assert_eq!(done["response"]["raiMediaFilteredCount"], 1);
    assert!(done["response"]["raiMediaFilteredReasons"][0].is_string());
    assert!(done["response"].get("videos").is_none());

    sim.set_config(SimConfig {
        failure_rate: 1.0,
        ..sim.config()
    })
    .unwrap();
    let name = start_operation(&sim, &token, "proj-g", &prompt("fine")).await;
    let (_, failed) = fetch(&sim, &token, "proj-g", &name).await;
    assert_eq!(failed["done"], true);
    assert_eq!(failed["error"]["code"], 13);
    assert!(failed.get("response").is_none());
}

#[tokio::test]
async fn bad_requests_get_google_rpc_errors() {
    let sim = start(fast()).await;
    let account = sim.new_service_account("proj-h").unwrap();
    let token = access_token(&account, unix_now()).await;

    for body in [
        json!({"instances": [{"prompt": "x"}], "parameters": {"durationSeconds": 5}}),
        json!({"instances": [{"prompt": "x"}], "parameters": {"resolution": "1080p", "durationSeconds": 4}}),
        json!({"instances": [{"prompt": "x"}], "parameters": {"sampleCount": 0}}),
        json!({"instances": []}),
        json!({"prompt": "x"}),
    ] {
        rpc_error(
            predict(&sim, &token, "proj-h", &body).await,
            400,
            "INVALID_ARGUMENT",
        )
        .await;
    }
    let not_json = client()
        .post(model_url(&sim, "v1", "proj-h", "predictLongRunning"))
        .bearer_auth(&token)
        .body("{")
        .send()
        .await
        .unwrap();
    rpc_error(not_json, 400, "INVALID_ARGUMENT").await;

    let retired = client()
        .post(
            model_url(&sim, "v1", "proj-h", "predictLongRunning")
                .replace(MODEL, "veo-2.0-generate-001"),
        )
        .bearer_auth(&token)
        .json(&prompt("x"))
        .send()
        .await
        .unwrap();
    let body = rpc_error(retired, 404, "NOT_FOUND").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("veo-2.0-generate-001")
    );

    rpc_error(
        predict(&sim, &token, "someone-elses-project", &prompt("x")).await,
        403,
        "PERMISSION_DENIED",
    )
    .await;
    rpc_error(
        predict(&sim, "ya29.made-up", "proj-h", &prompt("x")).await,
        401,
        "UNAUTHENTICATED",
    )
    .await;
    let no_token = client()
        .post(model_url(&sim, "v1", "proj-h", "predictLongRunning"))
        .json(&prompt("x"))
        .send()
        .await
        .unwrap();
    rpc_error(no_token, 401, "UNAUTHENTICATED").await;
    let wrong_version = client()
        .post(model_url(&sim, "v2", "proj-h", "predictLongRunning"))
        .bearer_auth(&token)
        .json(&prompt("x"))
        .send()
        .await
        .unwrap();
    rpc_error(wrong_version, 404, "NOT_FOUND").await;
    let (status, _) = fetch(
        &sim,
        &token,
        "proj-h",
        "projects/proj-h/locations/us-central1/publishers/google/models/veo-3.1-generate-001/operations/nope",
    )
    .await;
    assert_eq!(status, 404);

    let stats = sim.stats().await;
    let key = &stats.vertex.keys[account["client_email"].as_str().unwrap()];
    assert_eq!(key.counters.rejected, 7);
    assert_eq!(key.counters.accepted, 0);
}

#[tokio::test]
async fn operations_are_visible_only_to_their_service_account() {
    let sim = start(fast()).await;
    let mine = sim.new_service_account("proj-j").unwrap();
    let theirs = sim.new_service_account("proj-j").unwrap();
    let my_token = access_token(&mine, unix_now()).await;
    let their_token = access_token(&theirs, unix_now()).await;
    let name = start_operation(&sim, &my_token, "proj-j", &prompt("mine")).await;
    let (status, body) = fetch(&sim, &their_token, "proj-j", &name).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["status"], "NOT_FOUND");
    let (status, _) = fetch(&sim, &my_token, "proj-j", &name).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_sim_throttled_account_gets_one_429_with_retry_info() {
    let sim = start(fast()).await;
    let account = sim
        .new_service_account_with_id("proj-k", Some("sim-throttled-veo"))
        .unwrap();
    let token = access_token(&account, unix_now()).await;
    let body = rpc_error(
        predict(&sim, &token, "proj-k", &prompt("x")).await,
        429,
        "RESOURCE_EXHAUSTED",
    )
    .await;
    let details = &body["error"]["details"][0];
    assert_eq!(details["@type"], "type.googleapis.com/google.rpc.RetryInfo");
    assert_eq!(details["retryDelay"], "2s");
    assert_eq!(
        predict(&sim, &token, "proj-k", &prompt("x")).await.status(),
        200
    );
    let stats = sim.stats().await;
    let key = &stats.vertex.keys["sim-throttled-veo@proj-k.iam.gserviceaccount.com"];
    assert_eq!((key.counters.submits, key.counters.throttled), (2, 1));
}
