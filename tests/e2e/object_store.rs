//! Finished videos in S3-compatible object storage (a real S3 server, moto,
//! on loopback): the API and the worker are separate processes that share no
//! directory, only the bucket.

use std::time::Duration;

use byok_client::{GenerationRequest, JobStatus, ProviderId};
use futures::StreamExt as _;
use serde_json::json;
use uuid::Uuid;

use crate::deploy::{DeployOptions, Deployment};
use crate::helpers::poll_until;

/// The simulator pads each video to over 50 MB.
const PADDING: u64 = 50 * 1024 * 1024;
/// What the worker may grow by while it downloads and uploads one such video.
const RSS_GROWTH_LIMIT_KIB: u64 = 32 * 1024;

fn status_kib(pid: u32, field: &str) -> u64 {
    byok_testing::proc_status_bytes(Some(pid), field)
        .unwrap_or_else(|| panic!("no {field} for process {pid}"))
        / 1024
}

async fn get_bytes(http: &reqwest::Client, url: &str, token: Option<&str>) -> (u16, Vec<u8>) {
    let mut request = http.get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.bytes().await.unwrap().to_vec())
}

fn no_videos_in(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir).map_or(true, |entries| {
        !entries
            .flatten()
            .any(|e| e.path().extension().is_some_and(|x| x == "mp4"))
    })
}

#[tokio::test]
async fn videos_go_to_object_storage_streamed_and_survive_the_store_being_down() {
    let Some(mut s3) = tokio::task::spawn_blocking(byok_testing::s3_server)
        .await
        .unwrap()
    else {
        return;
    };
    let mut extra_env = s3.env();
    extra_env.push((
        "BYOK__OUTPUT__URL".to_owned(),
        format!("s3://{}/videos", s3.bucket),
    ));
    let Some(mut d) = Deployment::distributed(DeployOptions {
        workers: 1,
        render_time: Duration::from_millis(300),
        video_padding_bytes: PADDING,
        extra_env,
        separate_output_dirs: true,
        ..DeployOptions::default()
    })
    .await
    else {
        return;
    };
    let user = Uuid::new_v4();
    d.put_credentials(user, "runway", json!({ "api_key": "sim_object_store" }))
        .await;
    let job = |prompt: &str| GenerationRequest {
        prompt: Some(prompt.to_owned()),
        duration_seconds: Some(5),
        ..GenerationRequest::new(user, ProviderId::RUNWAY, "gen4.5")
    };

    // 1. One 50 MB video, end to end, with the worker's memory watched. A first 50 MB job
    // warms the worker (its HTTP clients, connection pools, TLS roots and blocking threads
    // are made on first use, once per process, and the allocator keeps the part buffers it
    // freed for the next video): what is measured is what a video costs, not what starting
    // costs. A worker holding whole videos would still fail: glibc's malloc serves blocks
    // over 32 MiB with fresh mappings each time, so each 50 MB buffer grows RSS anew.
    // Writing 5 to clear_refs resets VmHWM to the current RSS (Linux 4.0+); where that is
    // refused the peak since start counts, which only makes the check stricter.
    let worker = d.worker_pid(0);
    let cold_kib = status_kib(worker, "VmRSS");
    let warm_up = d.submit(&job("a first, warming job")).await;
    d.expect_succeeded(warm_up, "worker-0", Duration::from_secs(120))
        .await;
    eprintln!(
        "worker RSS: {cold_kib} KiB before the first video, {} KiB after it",
        status_kib(worker, "VmRSS")
    );
    let _ = std::fs::write(format!("/proc/{worker}/clear_refs"), "5");
    let idle_kib = status_kib(worker, "VmRSS");
    let id = d.submit(&job("a lighthouse at dusk")).await;
    let done = d
        .expect_succeeded(id, "worker-0", Duration::from_secs(120))
        .await;
    let peak_kib = status_kib(worker, "VmHWM");
    let result = done.result.clone().unwrap();
    let bytes = result.stored.bytes;
    assert!(bytes > PADDING, "{result:?}");
    assert_eq!(result.video_url, format!("/v1/jobs/{id}/video"));

    // The bytes the API serves from the bucket are the simulator's.
    let served = d.video(id).await;
    let rendered_url = result
        .stored
        .provider_urls
        .first()
        .expect("Runway gives a URL");
    let (status, rendered) = get_bytes(&d.http, rendered_url, None).await;
    assert_eq!(status, 200);
    assert_eq!(served.len() as u64, bytes);
    assert!(
        served == rendered,
        "the stored video is the simulator's, byte for byte"
    );
    drop((served, rendered));
    eprintln!(
        "worker RSS: {idle_kib} KiB before the second video, peak {peak_kib} KiB for its {bytes} bytes"
    );
    assert!(
        peak_kib.saturating_sub(idle_kib) < RSS_GROWTH_LIMIT_KIB,
        "the worker grew from {idle_kib} KiB to a peak of {peak_kib} KiB for a {bytes} byte video"
    );
    // No process kept a local copy: the bucket is the only place.
    for process in ["api", "worker-0"] {
        assert!(
            no_videos_in(&d.output_dir_of(process)),
            "{process} wrote a local video"
        );
    }

    // 2. A second API with output.presign sends the client to the bucket.
    let presigning = d
        .spawn_api("api-presign", &[("BYOK__OUTPUT__PRESIGN", "true")])
        .await;
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let answer = no_redirects
        .get(format!("{presigning}/v1/jobs/{id}/video"))
        .bearer_auth(&d.token)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 302);
    let location = answer.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with(&s3.endpoint), "{location}");
    assert!(location.contains("X-Amz-Signature="), "{location}");
    let (status, presigned) = get_bytes(&d.http, &location, None).await;
    assert_eq!(status, 200);
    assert_eq!(presigned.len() as u64, bytes);
    drop(presigned);
    // The client follows the redirect to the bucket (without the token) and streams it.
    let client = byok_client::Client::new(&presigning, &d.token).unwrap();
    let mut stream = client.video_stream(id).await.unwrap();
    let mut received = 0;
    while let Some(chunk) = stream.next().await {
        received += chunk.unwrap().len() as u64;
    }
    assert_eq!(received, bytes);

    // 3. The store goes down while a job finishes: the job waits (no attempt
    //    counted, nothing failed), then completes once the store is back.
    s3.stop();
    let id = d.submit(&job("a harbour at night")).await;
    let waited = poll_until(Duration::from_secs(60), async || {
        let log = std::fs::read_to_string(d.dir.path().join("worker-0.log")).unwrap_or_default();
        (log.matches("the video store is unavailable").count() >= 2).then_some(())
    })
    .await;
    assert!(waited.is_some(), "{}", d.log_tail("worker-0"));
    let waiting = d.job_view(id).await;
    assert_eq!(waiting.status, JobStatus::Running, "{waiting:?}");
    assert_eq!(
        waiting.attempts, 1,
        "waiting for the store is not an attempt: {waiting:?}"
    );
    assert!(s3.restart(), "moto restarts on its port");
    let done = d
        .expect_succeeded(id, "worker-0", Duration::from_secs(120))
        .await;
    let served = d.video(id).await;
    assert_eq!(served.len() as u64, done.result.unwrap().stored.bytes);
}
