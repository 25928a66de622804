//! A download streams into its file: 50 MB from the simulator (a real HTTP server, with
//! `video_padding_bytes`) must not grow the process's peak RSS by 32 MB.
//!
//! Measured in a child process (this test binary again, running only
//! `child_downloads_50_mb`), so that the other tests of the binary, running in parallel
//! threads, cannot move its RSS. The child starts the simulator in process (it streams the
//! padding from a static buffer), runs a Runway job to its end, reads its VmRSS, resets its
//! peak (`/proc/self/clear_refs`), downloads, and compares VmHWM with the starting RSS.

use std::time::Duration;

use byok_providers::{ProviderId, RemoteStatus, VideoOutput};
use byok_sim::SimConfig;
use serde_json::json;

use crate::sim_lifecycle::{credentials, poll_to_end, registry, sim, submit};

const PADDING: u64 = 50 * 1000 * 1000;
const BOUND: u64 = 32 * 1000 * 1000;
const CHILD: &str = "download_memory::child_downloads_50_mb";

/// A field of /proc/self/status in bytes.
fn status_bytes(field: &str) -> u64 {
    byok_testing::proc_status_bytes(None, field)
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

#[test]
fn downloading_50_mb_stays_within_the_memory_bound() {
    if !std::path::Path::new("/proc/self/status").exists() {
        eprintln!("SKIPPED: no /proc/self/status to read the RSS from");
        return;
    }
    let env = [("BYOK_DOWNLOAD_MEMORY_CHILD".to_owned(), "1".to_owned())];
    byok_testing::run_child_test(CHILD, &env);
}

/// Run by the test above in a process of its own; does nothing when run directly.
#[tokio::test]
#[ignore = "run in a child process by downloading_50_mb_stays_within_the_memory_bound"]
async fn child_downloads_50_mb() {
    if std::env::var_os("BYOK_DOWNLOAD_MEMORY_CHILD").is_none() {
        eprintln!("not started by downloading_50_mb_stays_within_the_memory_bound: nothing to do");
        return;
    }
    let sim = sim(Duration::ZERO).await;
    sim.set_config(SimConfig {
        render_time: Duration::ZERO,
        video_padding_bytes: PADDING,
        ..SimConfig::default()
    })
    .unwrap();
    let registry = registry(&sim);
    let runway = registry.get(ProviderId::RUNWAY).unwrap();
    let creds = credentials(&*runway, &json!({ "api_key": "sim_runway_large" }));
    let id = submit(
        &*runway,
        &creds,
        json!({ "model": "gen4.5", "prompt": "a very long take", "aspect_ratio": "16:9" }),
        None,
    )
    .await
    .unwrap();
    let (status, _) = poll_to_end(&*runway, &creds, &id).await;
    let RemoteStatus::Succeeded(output, _) = status else {
        panic!("the job ended {status:?}");
    };
    assert!(matches!(output, VideoOutput::Urls(_)), "{output:?}");
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("video.mp4");

    byok_testing::reset_peak_rss();
    let before = status_bytes("VmRSS");
    let saved = runway
        .fetch_output(&creds, &output, &dest)
        .await
        .expect("downloaded");
    let peak = status_bytes("VmHWM");

    let on_disk = std::fs::metadata(&dest).unwrap().len();
    assert_eq!(saved.size, on_disk);
    assert!(
        saved.size > PADDING,
        "the whole padded video: {}",
        saved.size
    );
    assert_eq!(saved.content_type, "video/mp4");
    let mut head = [0u8; 8];
    std::io::Read::read_exact(&mut std::fs::File::open(&dest).unwrap(), &mut head).unwrap();
    assert_eq!(&head[4..8], b"ftyp");
    let growth = peak.saturating_sub(before);
    println!(
        "RSS before {:.1} MB, peak {:.1} MB: growth {:.1} MB for a {:.1} MB download",
        before as f64 / 1e6,
        peak as f64 / 1e6,
        growth as f64 / 1e6,
        saved.size as f64 / 1e6
    );
    assert!(growth < BOUND, "the peak RSS grew by {growth} bytes");
}
