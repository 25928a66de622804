//! Starting simulators, images, multipart bodies and signed JWTs for tests.

use std::time::Duration;

use aws_lc_rs::rsa::KeyPair;
use aws_lc_rs::signature::RSA_PKCS1_SHA256;
use base64::Engine as _;
use byok_sim::{Clock, RunningSim, SimConfig, Simulator};
use serde_json::{Value, json};

/// Knobs for tests: jobs finish at once unless a test says otherwise.
pub fn fast() -> SimConfig {
    SimConfig {
        render_time: Duration::ZERO,
        ..SimConfig::default()
    }
}

/// A simulator on a free loopback port.
pub async fn start(config: SimConfig) -> RunningSim {
    start_with(Simulator::new(config)).await
}

pub async fn start_with(simulator: Simulator) -> RunningSim {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    simulator.start(listener).await.unwrap()
}

/// A simulator on a manual clock, with jobs that take `render` to finish.
pub async fn start_manual(render: Duration) -> RunningSim {
    let config = SimConfig {
        render_time: render,
        ..SimConfig::default()
    };
    start_with(Simulator::new(config).clock(Clock::manual())).await
}

pub fn client() -> reqwest::Client {
    reqwest::Client::new()
}

/// A PNG of the given size.
pub fn png(width: u32, height: u32) -> Vec<u8> {
    let mut out = Vec::new();
    image::RgbImage::from_fn(width, height, |x, y| image::Rgb([x as u8, y as u8, 128]))
        .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

/// A JPEG of the given size.
pub fn jpeg(width: u32, height: u32) -> Vec<u8> {
    let mut out = Vec::new();
    image::RgbImage::new(width, height)
        .write_to(
            &mut std::io::Cursor::new(&mut out),
            image::ImageFormat::Jpeg,
        )
        .unwrap();
    out
}

/// A data URI of a small PNG.
pub fn png_data_uri() -> String {
    format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(png(64, 36))
    )
}

/// A `multipart/form-data` body written by hand: (content type, body).
pub fn multipart(parts: &[(&str, Option<&str>, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "----byok-sim-test-boundary-7MA4YWxkTrZu0gW";
    let mut body = Vec::new();
    for (name, file_name, data) in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        match file_name {
            Some(file) => body.extend_from_slice(
                format!(
                    "Content-Disposition: form-data; name=\"{name}\"; filename=\"{file}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
                )
                .as_bytes(),
            ),
            None => body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
            ),
        }
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The claims google-auth puts in its assertion (docs/provider-protocols.md §3.9), for
/// `account` at unix time `now`.
pub fn claims(account: &Value, now: i64) -> Value {
    json!({
        "iss": account["client_email"],
        "scope": "https://www.googleapis.com/auth/cloud-platform",
        "aud": "https://oauth2.googleapis.com/token",
        "iat": now,
        "exp": now + 3600,
    })
}

/// An RS256 JWT over `claims`, signed with `account`'s private key, with
/// `kid` = its `private_key_id` (as google-auth does).
pub fn sign(account: &Value, claims: &Value) -> String {
    let pem = account["private_key"].as_str().unwrap();
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap();
    let key = KeyPair::from_pkcs8(&der).unwrap();
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": account["private_key_id"]});
    let input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let mut signature = vec![0; key.public_modulus_len()];
    let rng = aws_lc_rs::rand::SystemRandom::new();
    key.sign(&RSA_PKCS1_SHA256, &rng, input.as_bytes(), &mut signature)
        .unwrap();
    format!("{input}.{}", b64url(&signature))
}

/// POSTs an assertion to the token endpoint the account names.
pub async fn exchange(account: &Value, assertion: &str) -> reqwest::Response {
    client()
        .post(account["token_uri"].as_str().unwrap())
        .form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", assertion),
        ])
        .send()
        .await
        .unwrap()
}

/// An access token for `account`, through the token endpoint.
pub async fn access_token(account: &Value, now: i64) -> String {
    let response = exchange(account, &sign(account, &claims(account, now))).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}
