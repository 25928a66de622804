//! Input images that weigh little and decode to a lot: many of them at once must not
//! take a worker down. The worker is a real `byok worker` process; the images are served
//! from this test on loopback (the deployment allows private networks), so the API's
//! precheck of the URL passes and every job reaches the worker, which fetches the bytes.

use std::time::Duration;

use axum::http::header::CONTENT_TYPE;
use byok_client::{ErrorCode, GenerationRequest, JobStatus, ProviderId};
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{ExtendedColorType, ImageEncoder};
use serde_json::json;
use uuid::Uuid;

use crate::deploy::{DeployOptions, Deployment};

/// Jobs with the bomb, submitted at once.
const JOBS: usize = 20;
/// The bomb: 36 megapixels, under the 40-megapixel cap, so only the decoded-size budget
/// stops it.
const SIDE: u32 = 6000;
/// What the worker's peak resident memory must stay under.
const RSS_LIMIT_BYTES: u64 = 512 * 1024 * 1024;

/// A `side` x `side` PNG of one flat colour at 16 bits per RGBA channel: 8 bytes a
/// pixel decoded, next to nothing encoded.
fn flat_rgba16_png(side: u32) -> Vec<u8> {
    let raw = vec![0x40u8; side as usize * side as usize * 8];
    let mut png = Vec::new();
    PngEncoder::new_with_quality(&mut png, CompressionType::Best, FilterType::Up)
        .write_image(&raw, side, side, ExtendedColorType::Rgba16)
        .expect("encode");
    png
}

/// Serves `/bomb.png` and `/small.png` on loopback; returns the base URL.
async fn serve_images(bomb: Vec<u8>, small: Vec<u8>) -> String {
    let png = |bytes: Vec<u8>| async move { ([(CONTENT_TYPE, "image/png")], bytes) };
    let app = axum::Router::new()
        .route("/bomb.png", axum::routing::get(move || png(bomb.clone())))
        .route("/small.png", axum::routing::get(move || png(small.clone())));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

#[tokio::test]
async fn many_decompression_bombs_at_once_fail_cleanly_in_bounded_memory() {
    let Some(d) = Deployment::distributed(DeployOptions {
        workers: 1,
        concurrency: 32,
        ..DeployOptions::default()
    })
    .await
    else {
        return;
    };
    let bomb = tokio::task::spawn_blocking(|| flat_rgba16_png(SIDE))
        .await
        .unwrap();
    assert!(bomb.len() < 512 * 1024, "the bomb is {} bytes", bomb.len());
    let small = flat_rgba16_png(64);
    let images = serve_images(bomb.clone(), small).await;
    let user = Uuid::new_v4();
    d.put_credentials(user, "runway", json!({ "api_key": "sim_image_bombs" }))
        .await;
    let job = |image: &str| GenerationRequest {
        image_url: Some(format!("{images}/{image}")),
        ..GenerationRequest::new(user, ProviderId::RUNWAY, "gen4_turbo")
    };

    let worker = d.worker_pid(0);
    let idle = byok_testing::proc_status_bytes(Some(worker), "VmRSS").expect("VmRSS");
    let request = job("bomb.png");
    let ids = futures::future::join_all((0..JOBS).map(|_| d.submit(&request))).await;
    let jobs = d.wait_all_final(&ids, Duration::from_secs(120)).await;
    let peak = byok_testing::proc_status_bytes(Some(worker), "VmHWM").expect("VmHWM");
    eprintln!(
        "worker RSS: {} MiB idle, peak {} MiB for {JOBS} jobs with a {} byte PNG of {SIDE}x{SIDE} at 16-bit RGBA",
        idle >> 20,
        peak >> 20,
        bomb.len()
    );
    for job in &jobs {
        assert_eq!(
            job.status,
            JobStatus::Failed,
            "{job:?}\n{}",
            d.log_tail("worker-0")
        );
        let error = job.error.as_ref().unwrap();
        assert_eq!(error.code, ErrorCode::InvalidRequest, "{job:?}");
        assert!(
            error.message.contains(
                "6000x6000 at 8 bytes per pixel decodes to 275 MiB, more than the 128 MiB budget"
            ),
            "{job:?}"
        );
        assert_eq!(job.attempts, 1, "refused for good at once: {job:?}");
    }
    assert!(
        peak < RSS_LIMIT_BYTES,
        "the worker's peak RSS was {} MiB (idle {} MiB)",
        peak >> 20,
        idle >> 20
    );

    // The same worker process is alive and still makes videos from images.
    let control = d.submit(&job("small.png")).await;
    d.expect_succeeded(control, "worker-0", Duration::from_secs(60))
        .await;
    assert_eq!(d.worker_pid(0), worker);
}
