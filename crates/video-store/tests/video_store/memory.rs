//! `put_file` streams: a 50 MB upload must not grow the process's peak RSS by 32 MB.
//!
//! The measurement runs in a child process (this test binary again, running only
//! `child_uploads_50_mb`), so that the other tests of the binary, running in parallel
//! threads, cannot move its RSS. The parent starts the S3 server and writes the file
//! (in 64 KiB pieces); the child reads its VmRSS, resets its peak (`/proc/self/clear_refs`),
//! uploads, and compares VmHWM with the starting RSS.

use byok_video_store::{VideoStore, VideoStoreConfig};
use object_store::ObjectStoreExt as _;
use object_store::path::Path as Key;
use uuid::Uuid;

use crate::support::{raw_client, s3_server, source_file};

const SIZE: u64 = 50 * 1000 * 1000;
const BOUND: u64 = 32 * 1000 * 1000;
const CHILD: &str = "memory::child_uploads_50_mb";

/// A field of /proc/self/status in bytes.
fn status_bytes(field: &str) -> u64 {
    byok_testing::proc_status_bytes(None, field)
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

#[tokio::test]
async fn uploading_50_mb_stays_within_the_memory_bound() {
    if !std::path::Path::new("/proc/self/status").exists() {
        eprintln!("SKIPPED: no /proc/self/status to read the RSS from");
        return;
    }
    let Some(server) = s3_server().await else {
        return;
    };
    let (_dir, path) = source_file(SIZE);
    let job = Uuid::new_v4();
    let mut env = server.env();
    env.extend([
        (
            "BYOK_MEMORY_CHILD_FILE".to_owned(),
            path.display().to_string(),
        ),
        (
            "BYOK_MEMORY_CHILD_URL".to_owned(),
            format!("s3://{}/memory", server.bucket),
        ),
        ("BYOK_MEMORY_CHILD_JOB".to_owned(), job.to_string()),
    ]);
    byok_testing::run_child_test(CHILD, &env);

    // The upload really happened, in parts.
    let meta = raw_client(&server)
        .head(&Key::from(format!("memory/{job}.mp4")))
        .await
        .expect("stored");
    assert_eq!(meta.size, SIZE);
    assert!(
        meta.e_tag
            .unwrap_or_default()
            .trim_matches('"')
            .ends_with("-10"),
        "ten 5 MiB parts"
    );
}

/// Run by the test above in a process of its own; does nothing when run directly.
#[tokio::test]
#[ignore = "run in a child process by uploading_50_mb_stays_within_the_memory_bound"]
async fn child_uploads_50_mb() {
    let Ok(file) = std::env::var("BYOK_MEMORY_CHILD_FILE") else {
        eprintln!("not started by uploading_50_mb_stays_within_the_memory_bound: nothing to do");
        return;
    };
    let url = std::env::var("BYOK_MEMORY_CHILD_URL").unwrap();
    let job: Uuid = std::env::var("BYOK_MEMORY_CHILD_JOB")
        .unwrap()
        .parse()
        .unwrap();
    let env = std::env::vars().filter(|(k, _)| k.starts_with("AWS_"));
    let store = VideoStore::open_with_env(&VideoStoreConfig::new(url), env).unwrap();
    // Connections, TLS-free as they are, and the runtime's threads exist before measuring.
    store.ping().await.expect("ping");

    byok_testing::reset_peak_rss();
    let before = status_bytes("VmRSS");
    let stored = store
        .put_file(job, file.as_ref(), "video/mp4")
        .await
        .expect("uploaded");
    assert_eq!(stored, SIZE);
    let peak = status_bytes("VmHWM");
    let growth = peak.saturating_sub(before);
    println!(
        "RSS before {:.1} MB, peak {:.1} MB: growth {:.1} MB for a {} MB upload",
        before as f64 / 1e6,
        peak as f64 / 1e6,
        growth as f64 / 1e6,
        SIZE / 1_000_000
    );
    assert!(growth < BOUND, "the peak RSS grew by {growth} bytes");
}
