//! `byok-bench crypto`: credential seal + open pairs per second on one core
//! with `byok-crypto`'s `KeyRing` (a random nonce from the OS, the AAD of
//! the user, provider and key id, the `v1:<key id>:<nonce>:<ciphertext>`
//! text form, zeroized buffers), for a Vertex service-account JSON (the
//! largest credential a user stores, about 2.3 KB) and a Runway API key.
//! The baseline is the bare AES-256-GCM seal + open of the same bytes with
//! the same AAD and the same kind of nonce, without the text form: what the
//! cipher alone costs.

use std::hint::black_box;
use std::time::{Duration, Instant};

use aes_gcm::aead::consts::U12;
use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use byok_core::ProviderId;
use byok_crypto::{SealContext, canonical_aad};
use serde_json::json;

use crate::common::progress;
use crate::system::KEYS;
use crate::{Options, report};

/// A Vertex AI service-account key file, in the size of a real one (an RSA
/// 2048 private key in PKCS#8 PEM is most of it).
fn service_account() -> Vec<u8> {
    let body: String = (0..1624)
        .map(|i| {
            let c = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"[i % 64];
            if i % 64 == 63 { '\n' } else { c as char }
        })
        .collect();
    json!({
        "type": "service_account",
        "project_id": "bench-project-123456",
        "private_key_id": "0123456789abcdef0123456789abcdef01234567",
        "private_key": format!("-----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY-----\n"),
        "client_email": "byok-bench@bench-project-123456.iam.gserviceaccount.com",
        "client_id": "123456789012345678901",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": "https://oauth2.googleapis.com/token",
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": "https://www.googleapis.com/robot/v1/metadata/x509/byok-bench%40bench-project-123456.iam.gserviceaccount.com",
        "universe_domain": "googleapis.com",
        "location": "us-central1",
    })
    .to_string()
    .into_bytes()
}

fn api_key() -> Vec<u8> {
    json!({ "api_key": "key_0f9e8d7c6b5a49382716059483726150f9e8d7c6b5a4938271605948372615" })
        .to_string()
        .into_bytes()
}

/// Runs `pair` for about `duration`; pairs per second.
fn rate(duration: Duration, mut pair: impl FnMut()) -> f64 {
    // Warm-up.
    for _ in 0..1000 {
        pair();
    }
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < duration {
        for _ in 0..256 {
            pair();
        }
        n += 256;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn measure(plaintext: &[u8], duration: Duration) -> anyhow::Result<(f64, f64, usize)> {
    let ring = byok_crypto::KeyRing::parse(&secrecy::SecretString::from(KEYS))?;
    let context = SealContext::new(
        byok_core::ProjectUser::new(uuid::Uuid::now_v7(), uuid::Uuid::new_v4()),
        ProviderId::VEO,
    );
    let sealed_len = ring.seal(&context, plaintext)?.len();
    let ours = rate(duration, || {
        let sealed = ring.seal(&context, black_box(plaintext)).expect("seal");
        let opened = ring.open(&context, &sealed).expect("open");
        black_box(opened);
    });
    let cipher = Aes256Gcm::new_from_slice(&[0x5a; 32]).map_err(|_| anyhow::anyhow!("key"))?;
    let aad = canonical_aad(&context, "1");
    let bare = rate(duration, || {
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).expect("rng");
        let nonce = Nonce::<U12>::from(nonce);
        let mut buffer = Vec::with_capacity(plaintext.len() + 16);
        buffer.extend_from_slice(black_box(plaintext));
        cipher
            .encrypt_in_place(&nonce, &aad, &mut buffer)
            .expect("encrypt");
        cipher
            .decrypt_in_place(&nonce, &aad, &mut buffer)
            .expect("decrypt");
        black_box(buffer);
    });
    Ok((ours, bare, sealed_len))
}

pub fn run(options: &Options) -> anyhow::Result<()> {
    let duration = if options.quick {
        Duration::from_millis(400)
    } else {
        Duration::from_secs(3)
    };
    let (sa, key) = (service_account(), api_key());
    let (ours, bare, sealed_len) = measure(&sa, duration)?;
    let (ours_key, bare_key, _) = measure(&key, duration)?;
    progress(&format!(
        "crypto: {} B service account: {ours:.0} pairs/s (bare AES-GCM {bare:.0}); {} B API key: {ours_key:.0} (bare {bare_key:.0})",
        sa.len(),
        key.len()
    ));
    let result = json!({
        "name": "crypto",
        "value": ours.round(),
        "unit": "seal+open/s",
        "plaintext_bytes": sa.len(),
        "sealed_bytes": sealed_len,
        "baseline": bare.round(),
        "baseline_name": "bare AES-256-GCM seal+open, same bytes, AAD and nonce source",
        "ratio": ours / bare,
        "api_key": ours_key.round(),
        "api_key_bytes": key.len(),
        "api_key_baseline": bare_key.round(),
        "threads": 1,
    });
    let human = format!(
        "crypto    {ours:>9.0} seal+open/s for a {} B service account (bare AES-GCM {bare:.0}/s → ratio {:.2}); {ours_key:.0}/s for a {} B API key (bare {bare_key:.0}/s); one core",
        sa.len(),
        ours / bare,
        key.len()
    );
    report(options, &result, &human);
    Ok(())
}
