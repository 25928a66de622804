//! `byok sim` as a process: it serves the provider protocols, and
//! `--new-service-account` writes an account the running simulator trusts.

use std::time::Duration;

use aws_lc_rs::rsa::KeyPair;
use aws_lc_rs::signature::RSA_PKCS1_SHA256;
use base64::Engine as _;
use serde_json::{Value, json};

use crate::helpers::{byok, run, terminate, wait_until_ready};

/// An RS256 assertion for `account`, as google-auth makes it.
fn assertion(account: &Value) -> String {
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let pem: String = account["private_key"]
        .as_str()
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(pem)
        .unwrap();
    let key = KeyPair::from_pkcs8(&der).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": account["private_key_id"]});
    let claims = json!({
        "iss": account["client_email"], "aud": "https://oauth2.googleapis.com/token",
        "scope": "https://www.googleapis.com/auth/cloud-platform", "iat": now, "exp": now + 3600,
    });
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let mut signature = vec![0; key.public_modulus_len()];
    key.sign(
        &RSA_PKCS1_SHA256,
        &aws_lc_rs::rand::SystemRandom::new(),
        input.as_bytes(),
        &mut signature,
    )
    .unwrap();
    format!("{input}.{}", b64(&signature))
}

#[tokio::test]
async fn byok_sim_serves_runway_and_trusts_new_service_accounts() {
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", byok_testing::free_port());
    let base = format!("http://{listen}");
    let mut sim = byok(dir.path(), &[])
        .args(["sim", "--listen", &listen, "--render-time", "0s"])
        .spawn()
        .unwrap();
    assert!(
        wait_until_ready(&format!("{base}/_sim/stats"), Duration::from_secs(20)).await,
        "the simulator never answered"
    );
    let client = reqwest::Client::new();

    let created = client
        .post(format!("{base}/runway/v1/text_to_video"))
        .bearer_auth("sim_e2e")
        .header("X-Runway-Version", "2024-11-06")
        .json(&json!({"model": "veo3.1_fast", "promptText": "a harbour at dawn", "ratio": "1280:720"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200);
    let id = created.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let task: Value = client
        .get(format!("{base}/runway/v1/tasks/{id}"))
        .bearer_auth("sim_e2e")
        .header("X-Runway-Version", "2024-11-06")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(task["status"], "SUCCEEDED", "{task}");
    assert_eq!(task["output"][0], format!("{base}/files/{id}.mp4"));

    // Written by a second `byok sim` into the running one's default trusted
    // directory (byok-data/sim-service-accounts), then used at once.
    let written = run(
        dir.path(),
        &[],
        &[
            "sim",
            "--new-service-account",
            "accounts/veo.json",
            "--listen",
            &listen,
            "--project-id",
            "e2e-project",
        ],
    )
    .await;
    assert_eq!(written.code, 0, "{}", written.stderr);
    let account: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("accounts/veo.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        written.stdout.trim(),
        account["client_email"].as_str().unwrap()
    );
    assert_eq!(account["type"], "service_account");
    assert_eq!(account["project_id"], "e2e-project");
    let token_uri = account["token_uri"].as_str().unwrap();
    assert_eq!(token_uri, format!("{base}/oauth2/token"));

    let token: Value = client
        .post(token_uri)
        .form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", assertion(&account).as_str()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access_token = token["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("{token}"));
    let operation = client
        .post(format!(
            "{base}/vertex/v1/projects/e2e-project/locations/us-central1/publishers/google/models/veo-3.1-generate-001:predictLongRunning"
        ))
        .bearer_auth(access_token)
        .json(&json!({"instances": [{"prompt": "a harbour at dawn"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(operation.status(), 200);

    terminate(sim.id().unwrap());
    let status = tokio::time::timeout(Duration::from_secs(10), sim.wait())
        .await
        .expect("exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "{status:?}");
}
