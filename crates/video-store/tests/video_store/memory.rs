//! `put_file` streams: a 50 MB upload must not grow the process's peak RSS by 32 MB.
//!
//! The measurement runs in a child process (this test binary again, running only
//! `child_uploads_50_mb`), so that the other tests of the binary, running in parallel
//! threads, cannot move its RSS. The parent starts the S3 server and writes the file
//! (in 64 KiB pieces); the child reads its VmRSS, resets its peak (`/proc/self/clear_refs`),
//! uploads, and compares VmHWM with the starting RSS.

use std::process::Command;

use byok_video_store::{VideoStore, VideoStoreConfig};
use object_store::ObjectStoreExt as _;
use object_store::path::Path as Key;
use uuid::Uuid;

use crate::support::{raw_client, s3_server, source_file};

const SIZE: u64 = 50 * 1000 * 1000;
const BOUND: u64 = 32 * 1000 * 1000;
const CHILD: &str = "memory::child_uploads_50_mb";

/// A field of /proc/self/status in bytes (`VmRSS:   12345 kB`).
fn status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
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
    let exe = std::env::current_exe().expect("the test binary");
    let output = Command::new(exe)
        .args([
            CHILD,
            "--exact",
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("BYOK_MEMORY_CHILD_FILE", &path)
        .env(
            "BYOK_MEMORY_CHILD_URL",
            format!("s3://{}/memory", server.bucket),
        )
        .env("BYOK_MEMORY_CHILD_JOB", job.to_string())
        .envs(server.env())
        .output()
        .expect("the child runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the child failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("1 passed"), "the child test ran:\n{stdout}");
    eprintln!(
        "{}",
        stdout
            .lines()
            .filter(|l| l.contains("RSS"))
            .collect::<Vec<_>>()
            .join("\n")
    );

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

    let _ = std::fs::write("/proc/self/clear_refs", "5"); // resets VmHWM where allowed
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
